//! A viewer's RTP timeline of one m-line, sans-IO: the lecture's timeline, shifted so that it
//! stays continuous when the track's lecture time jumps.
//!
//! A track's lecture time can jump: the packager realigns a dialect whose clock ran more
//! than 10 s from the picture's, a publisher reconnects, a clock jumps. Sent as is, a jump
//! back would look like packets the viewer already has (the engine would skip everything
//! until the lecture caught up with where it had been: seconds of silence, or for ever
//! when it happens again), and a jump ahead would ask the browser's jitter buffer to wait
//! for media far in the future. So each viewer's line goes on from where it was, by the
//! wall clock, while the wall clock passed with each frame (what RTCP sender reports carry)
//! still says where it belongs: lip sync stays with the lecture's timeline.

use std::time::Instant;

/// Ahead of the last packet by more than the wall clock since then plus this many seconds,
/// a track's lecture time has jumped rather than paused.
pub const MAX_LEAP_S: i64 = 5;

/// One m-line of one viewer.
#[derive(Debug, Default, Clone)]
pub struct RtpLine {
    /// Added to lecture time to make this viewer's RTP time.
    shift: i64,
    /// Decode time of the last media admitted (lecture time + shift) and when.
    last: Option<(i64, Instant)>,
    jumps: u32,
}

impl RtpLine {
    /// Media at decode time `dts` on the lecture timeline (`rate` Hz; `frame` its nominal
    /// length), about to be sent at `now`: `None` if the viewer already has what it covers
    /// (at most `overlap` behind the last admitted: a GOP burst's frames coming again live,
    /// a dialect switch's overlap), else the shift to add to its timestamps. Further back
    /// than `overlap`, or further ahead than the wall clock allows, the line goes on from
    /// where it was.
    pub fn admit(
        &mut self,
        dts: i64,
        rate: u32,
        frame: i64,
        overlap: i64,
        now: Instant,
    ) -> Option<i64> {
        let t = dts + self.shift;
        if let Some((last, at)) = self.last {
            let elapsed = (now.saturating_duration_since(at).as_secs_f64() * rate as f64) as i64;
            let jumped = if t <= last {
                last - t > overlap
            } else {
                t - last > elapsed + MAX_LEAP_S * rate as i64
            };
            if t <= last && !jumped {
                return None;
            }
            if jumped {
                self.shift += last + elapsed.max(frame) - t;
                self.jumps += 1;
            }
        }
        self.last = Some((dts + self.shift, now));
        Some(self.shift)
    }

    /// Records media sent outside [`RtpLine::admit`] (a GOP burst) at decode time `dts`.
    pub fn sent(&mut self, dts: i64, now: Instant) {
        self.last = Some((dts + self.shift, now));
    }

    /// The current shift.
    pub fn shift(&self) -> i64 {
        self.shift
    }

    /// How many jumps the line went across.
    pub fn jumps(&self) -> u32 {
        self.jumps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const RATE: u32 = 48_000;
    const FRAME: i64 = 960;

    /// Opus packets every 20 ms of wall clock from `start`, their lecture time from `pts`.
    fn run(line: &mut RtpLine, start: Instant, pts: impl Iterator<Item = i64>) -> Vec<Option<i64>> {
        pts.enumerate()
            .map(|(i, p)| {
                let now = start + Duration::from_millis(20 * i as u64);
                line.admit(p, RATE, FRAME, RATE as i64, now).map(|s| p + s)
            })
            .collect()
    }

    #[test]
    fn steady_media_keeps_the_lecture_timeline() {
        let mut line = RtpLine::default();
        let out = run(
            &mut line,
            Instant::now(),
            (0..100).map(|i| 480_000 + i * FRAME),
        );
        assert!(
            out.iter()
                .enumerate()
                .all(|(i, r)| *r == Some(480_000 + i as i64 * FRAME))
        );
        assert_eq!(line.jumps(), 0);
    }

    #[test]
    fn a_realignment_back_keeps_the_viewer_fed_and_moving_forward() {
        // 2 s of a dialect, then the packager moves it back 10 s (it had run ahead of the
        // picture): every packet after the jump is sent, the RTP time going on from where it
        // was, 20 ms a packet.
        let start = Instant::now();
        let mut line = RtpLine::default();
        let before = run(&mut line, start, (0..100).map(|i| 960_000 + i * FRAME));
        let jump_at = start + Duration::from_millis(2_000);
        let after = run(
            &mut line,
            jump_at,
            (0..500).map(|i| 960_000 - 480_000 + 100 * FRAME + i * FRAME),
        );
        assert!(after.iter().all(|r| r.is_some()), "packets skipped");
        let all: Vec<i64> = before.into_iter().chain(after).flatten().collect();
        assert!(all.windows(2).all(|w| w[1] - w[0] == FRAME), "{all:?}");
        assert_eq!(line.jumps(), 1);
    }

    #[test]
    fn a_jump_ahead_goes_on_by_the_wall_clock_but_a_pause_keeps_its_length() {
        let start = Instant::now();
        let mut line = RtpLine::default();
        line.admit(0, RATE, FRAME, 48_000, start).unwrap();
        // A dialect quiet for 30 s comes back 30 s later: a pause, kept.
        let back = start + Duration::from_secs(30);
        assert_eq!(line.admit(30 * 48_000, RATE, FRAME, 48_000, back), Some(0));
        // An hour ahead 20 ms later: a jump, the line goes on one packet later.
        let t = 30 * 48_000 + 3600 * 48_000;
        let s = line
            .admit(t, RATE, FRAME, 48_000, back + Duration::from_millis(20))
            .unwrap();
        assert_eq!(t + s, 30 * 48_000 + FRAME);
        assert_eq!(line.jumps(), 1);
    }

    #[test]
    fn what_the_viewer_has_is_not_sent_twice() {
        // A GOP burst sent up to 2 s, then the same frames arriving live: skipped; the next
        // new frame goes on without a shift.
        let start = Instant::now();
        let mut line = RtpLine::default();
        line.sent(2 * 90_000, start);
        for i in 0..25 {
            let dts = 90_000 + i * 3600;
            assert_eq!(line.admit(dts, 90_000, 3600, 10 * 90_000, start), None);
        }
        assert_eq!(
            line.admit(2 * 90_000 + 3600, 90_000, 3600, 10 * 90_000, start),
            Some(0)
        );
        assert_eq!(line.jumps(), 0);
    }
}
