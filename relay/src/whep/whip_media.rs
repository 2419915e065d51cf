//! WHIP (WebRTC) publishers → media model, sans-IO: what str0m depacketized, as plain
//! values, becomes media events.
//!
//! - Video: H.264 access units in Annex B become length-prefixed NAL units; SPS and PPS
//!   (sent in-band before keyframes by browsers and OBS) become the configuration. After a
//!   gap the video waits for a keyframe (and the engine asks for one).
//! - Time: each RTP stream has its own random clock; RTCP sender reports map both onto the
//!   sender's wall clock, which is the common clock of the session's tracks (lip sync as
//!   RTP intends). Frames before a track's first sender report have no place yet and are
//!   dropped; that is the first second or so.

use std::time::SystemTime;

use bytes::Bytes;
use media::h264::{self, H264Params};
use media::{CodecParams, Frame, MediaEvent, TrackId, TrackInfo};

/// Track id of a WHIP publisher's video.
pub const VIDEO: TrackId = TrackId(0);
/// Track id of its audio (after transcoding to AAC).
pub const AUDIO: TrackId = TrackId(1);

/// A track's sender report: the sender's wall clock at an RTP timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderClock {
    /// NTP time of the report.
    pub ntp: SystemTime,
    /// RTP timestamp of the same instant.
    pub rtp: u64,
    /// RTP packets the sender had sent on the stream when it made the report.
    pub packets: u32,
}

/// A sender report whose RTP time is further than this (seconds) from the media it first
/// arrives with describes some other timeline: reports come every few seconds, so a fresh
/// one is close to the packets that follow it.
pub const MAX_REPORT_DISTANCE_S: i64 = 10;

/// A sender report the clock would not use, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedReport {
    /// The track it was about.
    pub track: TrackId,
    /// Why it cannot place that track's media.
    pub reason: String,
}

/// One track's reports: the one in use and the last one seen.
#[derive(Debug, Default, Clone)]
struct TrackReports {
    adopted: Option<SenderClock>,
    seen: Option<SenderClock>,
}

/// The session's common clock: sender wall-clock time since the first report used, in any
/// track's rate.
///
/// A report is used only if it can describe the track's media: the sender had sent packets
/// on the stream when it made it, and its RTP time is within [`MAX_REPORT_DISTANCE_S`] of
/// the packets it arrives with. webrtc-rs (live777's `whipinto`, and publishers built on it)
/// sends a report as soon as DTLS is up, before any packet, with an RTP time counted from
/// zero instead of the stream's random base: trusted, it would put that track thousands of
/// seconds away from the other, and move it back a second later.
#[derive(Debug, Default, Clone)]
pub struct CommonClock {
    epoch: Option<SystemTime>,
    tracks: Vec<(TrackId, TrackReports)>,
    refused: Vec<RefusedReport>,
}

impl CommonClock {
    /// Time of RTP timestamp `rtp` of track `track` (`rate` Hz) whose latest report is `sr`,
    /// in `rate` units on the common clock; `None` while the track has no usable report.
    pub fn place(
        &mut self,
        track: TrackId,
        rtp: u64,
        rate: u32,
        sr: Option<SenderClock>,
    ) -> Option<i64> {
        let i = match self.tracks.iter().position(|(t, _)| *t == track) {
            Some(i) => i,
            None => {
                self.tracks.push((track, TrackReports::default()));
                self.tracks.len() - 1
            }
        };
        let reports = &mut self.tracks[i].1;
        if let Some(sr) = sr
            && reports.seen != Some(sr)
        {
            reports.seen = Some(sr);
            match usable(sr, rtp, rate) {
                Ok(()) => reports.adopted = Some(sr),
                Err(reason) => self.refused.push(RefusedReport { track, reason }),
            }
        }
        let sr = reports.adopted?;
        let epoch = *self.epoch.get_or_insert(sr.ntp);
        let since = match sr.ntp.duration_since(epoch) {
            Ok(d) => d.as_nanos() as i64,
            Err(e) => -(e.duration().as_nanos() as i64),
        };
        Some((since as i128 * rate as i128 / 1_000_000_000) as i64 + rtp_distance(rtp, sr.rtp))
    }

    /// Reports refused since the last call (for the log).
    pub fn take_refused(&mut self) -> Vec<RefusedReport> {
        std::mem::take(&mut self.refused)
    }
}

/// `rtp - from` in RTP units: RTP timestamps are 32-bit and a report is recent, so the
/// difference is small.
fn rtp_distance(rtp: u64, from: u64) -> i64 {
    (rtp as i64).wrapping_sub(from as i64) as i32 as i64
}

/// Whether report `sr`, first seen with a packet of RTP time `rtp`, can place the track.
fn usable(sr: SenderClock, rtp: u64, rate: u32) -> Result<(), String> {
    if sr.packets == 0 {
        return Err("sent before any packet, its RTP time belongs to none".into());
    }
    let distance = rtp_distance(rtp, sr.rtp);
    if distance.abs() > MAX_REPORT_DISTANCE_S * rate.max(1) as i64 {
        return Err(format!(
            "its RTP time is {:.0} s from the packets that follow it",
            distance as f64 / rate.max(1) as f64
        ));
    }
    Ok(())
}

/// Maps a WHIP publisher's video.
#[derive(Debug, Default)]
pub struct WhipVideo {
    params: Option<H264Params>,
    waiting_keyframe: bool,
    started: bool,
}

/// What became of a video frame.
#[derive(Debug, PartialEq, Eq)]
pub enum VideoOutcome {
    /// Events for the sink (a new configuration and/or the frame).
    Events(Vec<MediaEvent>),
    /// Not usable until a keyframe comes: ask the publisher for one.
    NeedKeyframe,
}

impl WhipVideo {
    /// Takes an access unit (Annex B) presented at `pts` (90 kHz, common clock); `contiguous`
    /// is false after lost packets.
    pub fn frame(&mut self, pts: i64, data: &[u8], contiguous: bool) -> VideoOutcome {
        let mut out = Vec::new();
        let (mut sps, mut pps, mut idr) = (None, None, false);
        for nal in h264::split_annexb(data) {
            match nal[0] & 0x1f {
                7 => sps = Some(nal),
                8 => pps = Some(nal),
                5 => idr = true,
                _ => {}
            }
        }
        if let (Some(sps), Some(pps)) = (sps, pps)
            && self
                .params
                .as_ref()
                .is_none_or(|p| p.sps != sps || p.pps != pps)
            && let Ok(p) = H264Params::from_sps_pps(sps, pps)
        {
            self.params = Some(p.clone());
            out.push(MediaEvent::Track {
                id: VIDEO,
                info: TrackInfo::new(CodecParams::H264(p)),
            });
        }
        if !contiguous && !idr {
            self.waiting_keyframe = true;
        }
        if self.params.is_none() || ((self.waiting_keyframe || !self.started) && !idr) {
            return if out.is_empty() {
                VideoOutcome::NeedKeyframe
            } else {
                VideoOutcome::Events(out)
            };
        }
        self.waiting_keyframe = false;
        self.started = true;
        let data = h264::annexb_to_avcc_without_parameter_sets(data);
        if !data.is_empty() {
            out.push(MediaEvent::Frame {
                track: VIDEO,
                frame: Frame {
                    dts: pts,
                    pts,
                    keyframe: idr,
                    data,
                },
            });
        }
        VideoOutcome::Events(out)
    }
}

/// An AAC frame from the Opus transcoder as a media event.
pub fn aac_frame(pts: i64, data: Bytes) -> MediaEvent {
    MediaEvent::Frame {
        track: AUDIO,
        frame: Frame {
            dts: pts,
            pts,
            keyframe: true,
            data,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn report(ntp: SystemTime, rtp: u64, packets: u32) -> Option<SenderClock> {
        Some(SenderClock { ntp, rtp, packets })
    }

    #[test]
    fn sender_reports_put_both_tracks_on_one_clock() {
        let mut c = CommonClock::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(c.place(VIDEO, 5000, 90_000, None), None);
        // Video: RTP 1_000_000 at t0. Audio: RTP 77 at t0 + 20 ms.
        let v = c.place(VIDEO, 1_000_000 + 9000, 90_000, report(t0, 1_000_000, 10));
        assert_eq!(v, Some(9000), "100 ms after the epoch");
        let a = c.place(
            AUDIO,
            77 + 4800,
            48_000,
            report(t0 + Duration::from_millis(20), 77, 10),
        );
        assert_eq!(a, Some(960 + 4800), "120 ms after the epoch");
        // Across the 32-bit wrap.
        let w = c.place(VIDEO, 100, 90_000, report(t0, u32::MAX as u64 - 99, 20));
        assert_eq!(w, Some(200));
        assert!(c.take_refused().is_empty());
    }

    /// What live777's `whipinto` (webrtc-rs 0.20) sent, from a capture of a session with
    /// ffmpeg's RTP as its input: a report for each stream as soon as DTLS was up, before
    /// any packet, its RTP time counted from zero (0.405 s × rate) rather than from the
    /// stream's base; the next reports, a second later, are right. Trusting the first put
    /// the audio 18,987 s ahead and the video 8,778 s behind the lecture's start, so the
    /// packager dropped every later frame as before the session's start.
    #[test]
    fn whipinto_reports_sent_before_any_packet_place_nothing() {
        let at = |us: u64| SystemTime::UNIX_EPOCH + Duration::from_micros(us);
        let mut c = CommonClock::default();
        let (early_a, early_v) = (
            report(at(1_796_568_953_512_782), 19_463, 0),
            report(at(1_796_568_953_512_783), 36_500, 0),
        );
        // str0m extends the second video report's 32-bit RTP time from the first one's,
        // into the previous wrap: 3_505_024_635 - 2^32.
        let (good_a, good_v) = (
            report(at(1_796_568_954_513_772), 911_425_895, 49),
            report(at(1_796_568_954_513_772), 18_446_744_072_919_608_955, 25),
        );
        for k in 0..50u64 {
            assert_eq!(c.place(AUDIO, 911_378_754 + k * 960, 48_000, early_a), None);
            if k % 2 == 0 {
                let rtp = 3_504_937_968 + k / 2 * 3600;
                assert_eq!(c.place(VIDEO, rtp, 90_000, early_v), None);
            }
        }
        let refused = c.take_refused();
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(
            refused
                .iter()
                .all(|r| r.reason.contains("before any packet"))
        );
        let mut audio = Vec::new();
        let mut video = Vec::new();
        for k in 0..100u64 {
            audio.push(
                c.place(AUDIO, 911_426_754 + k * 960, 48_000, good_a)
                    .expect("placed"),
            );
            if k % 2 == 0 {
                let rtp = 3_505_027_968 + k / 2 * 3600;
                video.push(c.place(VIDEO, rtp, 90_000, good_v).expect("placed"));
            }
        }
        // Both start within a frame or two of the reports' instant, and move as their RTP
        // time does.
        assert_eq!(audio[0], 859, "17.9 ms after the epoch");
        assert_eq!(video[0], 3333, "37 ms after the epoch");
        assert!(audio.windows(2).all(|w| w[1] - w[0] == 960));
        assert!(video.windows(2).all(|w| w[1] - w[0] == 3600));
        assert!(c.take_refused().is_empty());
    }

    #[test]
    fn a_report_far_from_its_packets_is_not_used() {
        let mut c = CommonClock::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000);
        assert_eq!(
            c.place(AUDIO, 48_960, 48_000, report(t0, 48_000, 50)),
            Some(960)
        );
        // A report whose RTP time is 20,000 s from the packets (a sender that mixed up its
        // streams' bases): the one in use stays, so the track does not jump.
        let wild = report(t0 + Duration::from_secs(1), 48_000 + 20_000 * 48_000, 100);
        assert_eq!(c.place(AUDIO, 96_960, 48_000, wild), Some(48_960));
        let refused = c.take_refused();
        assert_eq!(refused.len(), 1);
        assert!(refused[0].reason.contains("-19999 s"), "{refused:?}");
        // The next sensible report is used.
        let next = report(t0 + Duration::from_secs(2), 144_000, 150);
        assert_eq!(c.place(AUDIO, 144_960, 48_000, next), Some(96_960));
    }

    #[test]
    fn video_starts_at_a_keyframe_and_waits_again_after_loss() {
        let sps = [
            0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00,
            0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x83, 0x19, 0x60,
        ];
        let pps = [0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
        let mut key = vec![0, 0, 0, 1];
        key.extend_from_slice(&sps);
        key.extend_from_slice(&[0, 0, 0, 1]);
        key.extend_from_slice(&pps);
        key.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88, 0x84]);
        let delta = [0, 0, 0, 1, 0x41, 0x9a, 0x02];
        let mut v = WhipVideo::default();
        assert_eq!(v.frame(0, &delta, true), VideoOutcome::NeedKeyframe);
        let VideoOutcome::Events(ev) = v.frame(3000, &key, true) else {
            panic!()
        };
        assert_eq!(ev.len(), 2, "configuration and frame");
        let MediaEvent::Frame { frame, .. } = &ev[1] else {
            panic!()
        };
        assert!(frame.keyframe);
        assert_eq!(
            &frame.data[..],
            &[0, 0, 0, 3, 0x65, 0x88, 0x84],
            "SPS/PPS left out"
        );
        assert!(matches!(v.frame(6000, &delta, true), VideoOutcome::Events(e) if e.len() == 1));
        assert_eq!(v.frame(9000, &delta, false), VideoOutcome::NeedKeyframe);
        assert_eq!(v.frame(12000, &delta, true), VideoOutcome::NeedKeyframe);
        let VideoOutcome::Events(ev) = v.frame(15000, &key, true) else {
            panic!()
        };
        assert_eq!(ev.len(), 1, "same configuration: only the frame");
    }
}
