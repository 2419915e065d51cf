//! Counters of the WebRTC engine, shown at `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Adds one unless that would take it past `limit` more than `other` (a count of things
    /// started past a count of those ended): an admission that two racing requests cannot
    /// both win.
    pub fn inc_within(&self, other: &Counter, limit: u64) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                (v.saturating_sub(other.get()) < limit).then_some(v + 1)
            })
            .is_ok()
    }
}

/// A histogram of milliseconds in fixed log-spaced buckets: recording is one atomic add, so
/// it can sit on per-viewer, per-frame paths. Exposed as a Prometheus histogram; a reader
/// that wants a window (a benchmark) takes the difference of two scrapes.
#[derive(Debug)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS],
    /// Sum of observations in microseconds.
    sum_us: AtomicU64,
}

const BUCKETS: usize = 64;
/// Upper bound of the first bucket, ms; each next one is [`GROWTH`] times larger
/// (0.05 ms … about 60 s, then +Inf).
const FIRST: f64 = 0.05;
const GROWTH: f64 = 1.25;

/// Upper bound (ms) of bucket `i`; the last is unbounded.
pub fn bucket_bound(i: usize) -> f64 {
    if i + 1 >= BUCKETS {
        f64::INFINITY
    } else {
        FIRST * GROWTH.powi(i as i32)
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records a value in ms.
    pub fn observe(&self, ms: f64) {
        let ms = if ms.is_finite() { ms.max(0.0) } else { 0.0 };
        let i = if ms <= FIRST {
            0
        } else {
            ((ms / FIRST).ln() / GROWTH.ln()).ceil() as usize
        };
        self.counts[i.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((ms * 1000.0) as u64, Ordering::Relaxed);
    }

    /// Observations per bucket so far.
    pub fn snapshot(&self) -> [u64; BUCKETS] {
        std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }

    /// The `q` quantile of everything recorded (the upper bound of its bucket).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        quantile_of(&self.snapshot(), q)
    }
}

/// The `q` quantile of bucket counts (as from [`Histogram::snapshot`], or the difference of
/// two), as the upper bound of the bucket it falls in.
pub fn quantile_of(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64 * q).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(bucket_bound(i));
        }
    }
    None
}

/// Everything the engine counts.
#[derive(Debug, Default)]
pub struct Stats {
    /// WHEP sessions created.
    pub sessions_started: Counter,
    /// Sessions removed for any reason.
    pub sessions_ended: Counter,
    /// Sessions that never connected.
    pub sessions_timed_out: Counter,
    /// Sessions closed because the engine failed (panicked) while handling them.
    pub sessions_failed: Counter,
    /// Times the engine failed outside any one session and was restarted without its
    /// sessions.
    pub engine_restarts: Counter,
    /// Datagrams dropped because parsing or matching them failed (panicked).
    pub datagrams_failed: Counter,
    /// Trickled remote candidates received (and not used: we are ICE-lite).
    pub candidates_ignored: Counter,
    /// WHIP publishers (and interpreters) accepted.
    pub publishers_started: Counter,
    /// WHIP publishers removed.
    pub publishers_ended: Counter,
    /// Datagrams sent.
    pub datagrams_sent: Counter,
    /// Datagrams dropped (socket buffer full, engine inbox full).
    pub datagrams_dropped: Counter,
    /// Of those, received but dropped because the engine's queue was full.
    pub datagrams_dropped_in: Counter,
    /// Of those, not sent because the socket's send buffer was full.
    pub datagrams_dropped_out: Counter,
    /// Datagrams the kernel dropped on receive (the socket's buffer was full).
    pub kernel_receive_drops: Counter,
    /// ICE-TCP connections accepted.
    pub tcp_connections: Counter,
    /// ICE-TCP frames received (STUN, DTLS, RTP, RTCP).
    pub tcp_frames_received: Counter,
    /// Datagrams str0m could not parse.
    pub bad_datagrams: Counter,
    /// Datagrams no session claimed.
    pub unmatched_datagrams: Counter,
    /// Video frames written to viewers.
    pub video_frames: Counter,
    /// Opus packets written to viewers.
    pub audio_packets: Counter,
    /// Frames skipped for viewers waiting for a keyframe (slow or lossy viewers).
    pub frames_skipped: Counter,
    /// PLI/FIR received from viewers.
    pub keyframe_requests: Counter,
    /// Viewers moved to the lecture's smallest picture for their link's loss.
    pub moved_to_small: Counter,
    /// Viewers moved back to the source's picture.
    pub moved_to_source: Counter,
    /// Frames the feeders lost because the engine fell behind.
    pub feed_lagged: Counter,
    /// Opus packets dropped because the engine's inbox was full.
    pub audio_dropped: Counter,
    /// A WebRTC source's own Opus packets passed to viewers as they came (not transcoded).
    pub opus_passed_through: Counter,
    /// GOP bursts sent to new viewers.
    pub gop_bursts: Counter,
    /// Dialect switches.
    pub dialect_switches: Counter,
    /// Jumps of a track's lecture time (a realignment, a clock that jumped) a viewer's RTP
    /// timeline went across without a pause.
    pub timeline_jumps: Counter,
    /// Connected to first keyframe written, ms.
    pub first_frame_ms: Histogram,
    /// Dialect switch request to the first packet of the new dialect written, ms.
    pub switch_ms: Histogram,
    /// A video frame's arrival at the relay to its RTP packets sent to a viewer, ms, not
    /// counting the hold that aligns it with the transcoded audio.
    pub frame_to_rtp_ms: Histogram,
    /// Video held back to leave with its (transcoded) audio, ms.
    pub av_hold_ms: Histogram,
}

impl Stats {
    /// Prometheus text exposition.
    pub fn render(&self, out: &mut String) {
        let counters: [(&str, &Counter, &str); 30] = [
            (
                "publishers_started",
                &self.publishers_started,
                "WHIP publishers and interpreters accepted",
            ),
            (
                "publishers_ended",
                &self.publishers_ended,
                "WHIP publishers and interpreters removed",
            ),
            (
                "sessions_started",
                &self.sessions_started,
                "WHEP sessions created",
            ),
            (
                "sessions_ended",
                &self.sessions_ended,
                "WHEP sessions removed",
            ),
            (
                "sessions_timed_out",
                &self.sessions_timed_out,
                "WHEP sessions that never connected",
            ),
            (
                "sessions_failed",
                &self.sessions_failed,
                "WHEP sessions closed after a failure inside the engine",
            ),
            (
                "engine_restarts",
                &self.engine_restarts,
                "WebRTC engine restarts after a failure outside one session",
            ),
            (
                "datagrams_failed",
                &self.datagrams_failed,
                "UDP datagrams dropped after a failure parsing or matching them",
            ),
            (
                "candidates_ignored",
                &self.candidates_ignored,
                "trickled ICE candidates received and not used (ICE-lite)",
            ),
            ("datagrams_sent", &self.datagrams_sent, "UDP datagrams sent"),
            (
                "tcp_connections",
                &self.tcp_connections,
                "ICE-TCP connections accepted (networks that drop UDP)",
            ),
            (
                "tcp_frames_received",
                &self.tcp_frames_received,
                "ICE-TCP frames received",
            ),
            (
                "datagrams_dropped",
                &self.datagrams_dropped,
                "UDP datagrams dropped",
            ),
            (
                "datagrams_dropped_in",
                &self.datagrams_dropped_in,
                "UDP datagrams received and dropped: the engine's queue was full",
            ),
            (
                "datagrams_dropped_out",
                &self.datagrams_dropped_out,
                "UDP datagrams not sent: the socket's send buffer was full",
            ),
            (
                "kernel_receive_drops",
                &self.kernel_receive_drops,
                "UDP datagrams the kernel dropped on receive (socket buffer full)",
            ),
            (
                "bad_datagrams",
                &self.bad_datagrams,
                "UDP datagrams that were not STUN/DTLS/RTP",
            ),
            (
                "unmatched_datagrams",
                &self.unmatched_datagrams,
                "UDP datagrams no session claimed",
            ),
            (
                "video_frames",
                &self.video_frames,
                "video frames written to viewers",
            ),
            (
                "audio_packets",
                &self.audio_packets,
                "Opus packets written to viewers",
            ),
            (
                "timeline_jumps",
                &self.timeline_jumps,
                "jumps of a track's lecture time viewers' RTP timelines went across",
            ),
            (
                "frames_skipped",
                &self.frames_skipped,
                "frames skipped while a viewer waits for a keyframe",
            ),
            (
                "keyframe_requests",
                &self.keyframe_requests,
                "PLI/FIR from viewers",
            ),
            (
                "moved_to_small",
                &self.moved_to_small,
                "viewers moved to the lecture's smallest picture for their link's loss",
            ),
            (
                "moved_to_source",
                &self.moved_to_source,
                "viewers moved back to the source's picture",
            ),
            (
                "feed_lagged",
                &self.feed_lagged,
                "frames lost because the engine fell behind",
            ),
            (
                "audio_dropped",
                &self.audio_dropped,
                "Opus packets dropped at the engine inbox",
            ),
            (
                "opus_passed_through",
                &self.opus_passed_through,
                "a WebRTC source's own Opus packets passed to viewers as they came, not transcoded",
            ),
            (
                "gop_bursts",
                &self.gop_bursts,
                "GOP bursts sent to new viewers",
            ),
            (
                "dialect_switches",
                &self.dialect_switches,
                "dialect switches",
            ),
        ];
        for (name, c, help) in counters {
            let _ = writeln!(out, "# HELP jiangtang_webrtc_{name}_total {help}");
            let _ = writeln!(out, "# TYPE jiangtang_webrtc_{name}_total counter");
            let _ = writeln!(out, "jiangtang_webrtc_{name}_total {}", c.get());
        }
        for (name, h, help) in [
            (
                "first_frame_ms",
                &self.first_frame_ms,
                "connected to first keyframe written, ms",
            ),
            (
                "switch_ms",
                &self.switch_ms,
                "dialect switch request to the new dialect's first packet, ms",
            ),
            (
                "frame_to_rtp_ms",
                &self.frame_to_rtp_ms,
                "video frame arrival to its RTP packets sent, per viewer, ms",
            ),
            (
                "av_hold_ms",
                &self.av_hold_ms,
                "video held back to leave with its audio, ms",
            ),
        ] {
            let counts = h.snapshot();
            let _ = writeln!(out, "# HELP jiangtang_webrtc_{name} {help}");
            let _ = writeln!(out, "# TYPE jiangtang_webrtc_{name} histogram");
            let mut cumulative = 0;
            for (i, c) in counts.iter().enumerate() {
                cumulative += c;
                let le = bucket_bound(i);
                if le.is_finite() {
                    let _ = writeln!(
                        out,
                        "jiangtang_webrtc_{name}_bucket{{le=\"{le:.3}\"}} {cumulative}"
                    );
                } else {
                    let _ = writeln!(
                        out,
                        "jiangtang_webrtc_{name}_bucket{{le=\"+Inf\"}} {cumulative}"
                    );
                }
            }
            let sum = h.sum_us.load(Ordering::Relaxed) as f64 / 1000.0;
            let _ = writeln!(out, "jiangtang_webrtc_{name}_sum {sum:.3}");
            let _ = writeln!(out, "jiangtang_webrtc_{name}_count {cumulative}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_within_a_bucket() {
        let h = Histogram::default();
        for i in 1..=1000 {
            h.observe(i as f64 / 10.0); // 0.1 .. 100 ms
        }
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((50.0..=50.0 * GROWTH).contains(&p50), "{p50}");
        assert!((99.0..=99.0 * GROWTH).contains(&p99), "{p99}");
        h.observe(1e9);
        h.observe(f64::NAN);
        assert_eq!(h.snapshot().iter().sum::<u64>(), 1002);
        assert_eq!(quantile_of(&[0; BUCKETS], 0.5), None);
        let mut out = String::new();
        let stats = Stats::default();
        stats.switch_ms.observe(3.0);
        stats.render(&mut out);
        assert!(out.contains("jiangtang_webrtc_switch_ms_count 1"), "{out}");
        assert!(out.contains("jiangtang_webrtc_switch_ms_bucket{le=\"+Inf\"} 1"));
    }
}
