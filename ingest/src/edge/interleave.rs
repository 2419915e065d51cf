//! Frames of several tracks, each arriving in bursts (an LL-HLS part of each rendition at a
//! time), put back in one decode-time order before they reach the relay, as a publisher
//! that interleaves its tracks would send them (sans-IO).

use std::collections::VecDeque;

use media::{Frame, TrackId};

/// A track whose frames lag the newest one seen by more than this no longer holds the
/// others back (a rendition whose parts stopped coming).
const MAX_LAG_S: f64 = 1.5;

/// Interleaves frames of tracks by decode time.
#[derive(Debug, Default)]
pub struct Interleave {
    tracks: Vec<Queue>,
    newest: f64,
}

#[derive(Debug)]
struct Queue {
    id: TrackId,
    timescale: f64,
    frames: VecDeque<Frame>,
    /// Decode time (s) of the last frame pushed.
    last: Option<f64>,
}

impl Interleave {
    /// Adds track `id` whose timestamps count `timescale` per second.
    pub fn add_track(&mut self, id: TrackId, timescale: u32) {
        if self.tracks.iter().all(|t| t.id != id) {
            self.tracks.push(Queue {
                id,
                timescale: f64::from(timescale.max(1)),
                frames: VecDeque::new(),
                last: None,
            });
        }
    }

    /// Queues `frame` of track `id` (frames of one track come in decode order).
    pub fn push(&mut self, id: TrackId, frame: Frame) {
        if let Some(t) = self.tracks.iter_mut().find(|t| t.id == id) {
            let at = frame.dts as f64 / t.timescale;
            t.last = Some(at);
            self.newest = self.newest.max(at);
            t.frames.push_back(frame);
        }
    }

    /// The next frame in decode order, once no track that keeps up could still bring an
    /// earlier one.
    pub fn pop(&mut self) -> Option<(TrackId, Frame)> {
        let (i, at) = self
            .tracks
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.frames.front().map(|f| (i, f.dts as f64 / t.timescale)))
            .min_by(|a, b| a.1.total_cmp(&b.1))?;
        let newest = self.newest;
        let waiting_for_another = self.tracks.iter().any(|t| {
            t.frames.is_empty()
                && t.last
                    .is_none_or(|last| last < at && newest - last <= MAX_LAG_S)
        });
        if waiting_for_another && newest - at <= MAX_LAG_S {
            return None;
        }
        let t = &mut self.tracks[i];
        t.frames.pop_front().map(|f| (t.id, f))
    }

    /// Every frame still queued, in decode order (the source ended: nothing earlier can
    /// come any more).
    pub fn drain(&mut self) -> Vec<(TrackId, Frame)> {
        let mut out = Vec::new();
        loop {
            let next = self
                .tracks
                .iter()
                .enumerate()
                .filter_map(|(i, t)| t.frames.front().map(|f| (i, f.dts as f64 / t.timescale)))
                .min_by(|a, b| a.1.total_cmp(&b.1));
            let Some((i, _)) = next else { return out };
            let t = &mut self.tracks[i];
            if let Some(f) = t.frames.pop_front() {
                out.push((t.id, f));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(dts: i64) -> Frame {
        Frame {
            dts,
            pts: dts,
            keyframe: true,
            data: Bytes::new(),
        }
    }

    fn drain(i: &mut Interleave) -> Vec<(u32, i64)> {
        std::iter::from_fn(|| i.pop().map(|(t, f)| (t.0, f.dts))).collect()
    }

    #[test]
    fn bursts_of_two_tracks_come_out_in_time_order() {
        let mut i = Interleave::default();
        i.add_track(TrackId(1), 1000);
        i.add_track(TrackId(2), 100);
        for t in [0, 400, 800] {
            i.push(TrackId(1), frame(t));
        }
        // Nothing yet: track 2 might still bring something earlier.
        assert!(drain(&mut i).is_empty());
        for t in [0, 20, 40, 60, 80] {
            i.push(TrackId(2), frame(t));
        }
        assert_eq!(
            drain(&mut i),
            // 400 ms of track 1 and 40 of track 2's centiseconds are the same time.
            vec![
                (1, 0),
                (2, 0),
                (2, 20),
                (1, 400),
                (2, 40),
                (2, 60),
                (1, 800),
                (2, 80)
            ]
        );
    }

    #[test]
    fn a_track_that_stops_holds_the_others_back_only_briefly() {
        let mut i = Interleave::default();
        i.add_track(TrackId(1), 1000);
        i.add_track(TrackId(2), 1000);
        i.push(TrackId(2), frame(0));
        i.push(TrackId(1), frame(0));
        assert_eq!(drain(&mut i), vec![(1, 0), (2, 0)]);
        for t in (100..=1500).step_by(100) {
            i.push(TrackId(1), frame(t));
        }
        assert!(drain(&mut i).is_empty(), "track 2 may still catch up");
        let left = i.drain();
        assert_eq!(left.len(), 15);
        assert!(left.windows(2).all(|w| w[0].1.dts < w[1].1.dts));
        i.push(TrackId(1), frame(1600));
        i.push(TrackId(1), frame(1700));
        // Track 2 is 1.7 s behind now: it no longer holds track 1 back.
        assert_eq!(drain(&mut i), vec![(1, 1600), (1, 1700)]);
    }
}
