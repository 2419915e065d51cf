//! Places a contributed track (an interpreter's voice) on the lecture timeline by when it
//! arrives. Sans-IO: the caller says where "now" is on the lecture timeline
//! ([`crate::taps::Taps::lecture_time_at`]) for each frame.
//!
//! The contributor's own clock (its RTP timestamps) keeps the frames evenly spaced; arrival
//! times keep them next to the picture that arrived with them. Network jitter only ever
//! delays packets, so the *least* delayed recent packets show where the contributor's clock
//! really is against the lecture's: the offset follows the minimum over a short window, and
//! moves only when that disagrees by more than [`SOFT_CORRECTION`]. A sound card that runs
//! 0.1 % fast (3.6 s an hour) is thus pulled back by a frame or so every minute, and the
//! voice never drifts further from the picture than that threshold plus the jitter.

use std::collections::VecDeque;

use media::model::rescale;

/// Lecture ticks per second.
const TICKS: i64 = 90_000;
/// The window over which the least delayed arrival is taken: 2 s.
const WINDOW: i64 = 2 * TICKS;
/// A disagreement above this (60 ms) moves the offset. Above AAC's frame (21 ms) and the
/// encoder's timestamp tolerance (40 ms), so a correction is a clean drop or insertion of a
/// frame or two.
pub const SOFT_CORRECTION: i64 = 60 * TICKS / 1000;
/// A disagreement above this (1 s) is a new start (the contributor paused, the lecture's
/// publisher reconnected): re-anchor, at once when frames come early (network delay cannot
/// do that), else once it has lasted [`HARD_RESET_AFTER`] (a Wi-Fi stall releases a burst
/// of late packets whose own timestamps place them right).
pub const HARD_RESET: i64 = TICKS;
/// How long frames must keep arriving over [`HARD_RESET`] late before it is a new start.
pub const HARD_RESET_AFTER: i64 = TICKS / 2;

/// The aligner of one contributed track.
#[derive(Debug, Clone)]
pub struct Aligner {
    rate: u32,
    /// Lecture ticks minus source ticks.
    offset: Option<i64>,
    /// `(lecture time of arrival, how late it arrived against its placement)`.
    recent: VecDeque<(i64, i64)>,
    /// Since when (lecture time) frames have arrived over [`HARD_RESET`] late.
    late_since: Option<i64>,
    corrections: u64,
}

impl Aligner {
    /// An aligner for a source clock of `rate` Hz (48 000 for Opus).
    pub fn new(rate: u32) -> Self {
        Aligner {
            rate,
            offset: None,
            recent: VecDeque::new(),
            late_since: None,
            corrections: 0,
        }
    }

    /// How many times the offset was moved (drift or restarts).
    pub fn corrections(&self) -> u64 {
        self.corrections
    }

    /// Where a frame with source timestamp `source` (units of the rate) that arrived at
    /// lecture time `arrived` belongs, in the source's rate on the lecture timeline.
    pub fn place(&mut self, source: i64, arrived: i64) -> i64 {
        let s = rescale(source, self.rate, TICKS as u32);
        let offset = *self.offset.get_or_insert(arrived - s);
        let late = arrived - (s + offset);
        if late > HARD_RESET {
            let since = *self.late_since.get_or_insert(arrived);
            if arrived - since >= HARD_RESET_AFTER {
                self.re_anchor(arrived - s);
            }
        } else if late < -HARD_RESET {
            self.re_anchor(arrived - s);
        } else {
            self.late_since = None;
            self.recent.push_back((arrived, late));
            while self
                .recent
                .front()
                .is_some_and(|(at, _)| arrived - at > WINDOW)
            {
                self.recent.pop_front();
            }
            let spans = self
                .recent
                .front()
                .is_some_and(|(at, _)| arrived - at >= WINDOW / 2);
            let least = self.recent.iter().map(|(_, l)| *l).min().unwrap_or(0);
            if spans && least.abs() > SOFT_CORRECTION {
                self.offset = Some(offset + least);
                for (_, l) in self.recent.iter_mut() {
                    *l -= least;
                }
                self.corrections += 1;
            }
        }
        rescale(s + self.offset.unwrap_or(offset), TICKS as u32, self.rate)
    }

    fn re_anchor(&mut self, offset: i64) {
        self.offset = Some(offset);
        self.recent.clear();
        self.late_since = None;
        self.corrections += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny deterministic generator for network delays.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    /// One hour of 20 ms Opus packets from a sound card running `ppm` fast, over a network
    /// adding 10–70 ms of jitter: how far each placement is from where it belongs (its send
    /// time on the lecture clock plus the smallest network delay).
    fn worst_error(ppm: f64, start: i64) -> (i64, u64) {
        let mut a = Aligner::new(48_000);
        let mut rng = Lcg(42);
        let mut worst = 0i64;
        let packets = 3600 * 50;
        for i in 0..packets {
            // Sent at lecture time `sent` (90 kHz); the source's clock says i * 960 samples,
            // but its second is (1 - ppm/1e6) of a real one.
            let sent = start + i * 1800;
            let source = ((i * 960) as f64 * (1.0 + ppm / 1e6)).round() as i64 + 123_456;
            let delay = 900 + (rng.next() % 5400) as i64; // 10..70 ms
            let placed = a.place(source, sent + delay);
            let placed90 = rescale(placed, 48_000, 90_000);
            // After the first seconds, the placement tracks send time + minimum delay.
            if i > 50 * 5 {
                worst = worst.max((placed90 - (sent + 900)).abs());
            }
        }
        (worst, a.corrections())
    }

    #[test]
    fn one_hour_of_a_fast_sound_card_stays_within_100_ms() {
        for ppm in [-1000.0, -100.0, 0.0, 100.0, 1000.0] {
            let (worst, corrections) = worst_error(ppm, 10 * 90_000);
            eprintln!(
                "{ppm} ppm: worst {} ms, {corrections} corrections",
                worst / 90
            );
            assert!(
                worst < 100 * 90,
                "{ppm} ppm: {} ms off after an hour",
                worst / 90
            );
            if ppm.abs() >= 1000.0 {
                // 3.6 s of drift corrected in steps of about 60 ms.
                assert!(corrections > 40, "{ppm} ppm: {corrections} corrections");
            } else if ppm == 0.0 {
                assert!(corrections <= 1, "{corrections} corrections without drift");
            }
        }
    }

    #[test]
    fn a_pause_or_a_publisher_restart_re_anchors() {
        let mut a = Aligner::new(48_000);
        assert_eq!(a.place(0, 900_000), 480_000);
        assert_eq!(a.place(960, 901_800), 480_960);
        // The lecture's timeline moved on 5 s while the source's did not: once that has
        // lasted half a second, the voice is placed by its arrival again.
        let jump = 5 * 90_000;
        let mut last = 0;
        for i in 2..60i64 {
            last = a.place(i * 960, 900_000 + i * 1800 + jump);
        }
        assert_eq!(last, 480_000 + 59 * 960 + 5 * 48_000);
        assert_eq!(a.corrections(), 1);
        // Frames that come early (the source's clock jumped ahead) re-anchor at once.
        let p = a.place(59 * 960 + 10 * 48_000, 900_000 + 60 * 1800 + jump);
        assert_eq!(p, 480_000 + 60 * 960 + 5 * 48_000);
        assert_eq!(a.corrections(), 2);
    }

    #[test]
    fn a_burst_after_a_network_stall_keeps_its_own_timing() {
        let mut a = Aligner::new(48_000);
        for i in 0..100i64 {
            assert_eq!(a.place(i * 960, 900_000 + i * 1800), 480_000 + i * 960);
        }
        // 1.5 s of nothing, then those 75 packets and the next ones arrive within 100 ms.
        let back = 900_000 + 175 * 1800;
        for i in 100..200i64 {
            let arrived = back + (i - 100) * 120;
            assert_eq!(
                a.place(i * 960, arrived.max(900_000 + i * 1800)),
                480_000 + i * 960,
                "packet {i}"
            );
        }
        assert_eq!(a.corrections(), 0);
    }
}
