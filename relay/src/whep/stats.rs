//! Counters of the WebRTC engine, shown at `/metrics`.

use std::fmt::Write as _;
use std::sync::Mutex;
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
}

/// Recent observations (last 1024) for percentiles.
#[derive(Debug, Default)]
pub struct Recent(Mutex<Vec<f64>>);

impl Recent {
    /// Records a value.
    pub fn observe(&self, v: f64) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if g.len() >= 1024 {
            g.remove(0);
        }
        g.push(v);
    }

    /// The `q` quantile of recent values.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        Some(v[((v.len() - 1) as f64 * q).round() as usize])
    }
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
    /// Datagrams sent.
    pub datagrams_sent: Counter,
    /// Datagrams dropped (socket buffer full, engine inbox full).
    pub datagrams_dropped: Counter,
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
    /// Frames the feeders lost because the engine fell behind.
    pub feed_lagged: Counter,
    /// Opus packets dropped because the engine's inbox was full.
    pub audio_dropped: Counter,
    /// GOP bursts sent to new viewers.
    pub gop_bursts: Counter,
    /// Dialect switches.
    pub dialect_switches: Counter,
    /// Connected to first keyframe written, ms.
    pub first_frame_ms: Recent,
    /// Dialect switch request to the first packet of the new dialect written, ms.
    pub switch_ms: Recent,
    /// A video frame's arrival at the relay to its RTP packets sent to a viewer, ms, not
    /// counting the hold that aligns it with the transcoded audio.
    pub frame_to_rtp_ms: Recent,
    /// Video held back to leave with its (transcoded) audio, ms.
    pub av_hold_ms: Recent,
}

impl Stats {
    /// Prometheus text exposition.
    pub fn render(&self, out: &mut String) {
        let counters: [(&str, &Counter, &str); 15] = [
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
            ("datagrams_sent", &self.datagrams_sent, "UDP datagrams sent"),
            (
                "datagrams_dropped",
                &self.datagrams_dropped,
                "UDP datagrams dropped",
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
        for (name, recent) in [
            ("first_frame_ms", &self.first_frame_ms),
            ("switch_ms", &self.switch_ms),
            ("frame_to_rtp_ms", &self.frame_to_rtp_ms),
            ("av_hold_ms", &self.av_hold_ms),
        ] {
            for (q, label) in [(0.5, "0.5"), (0.99, "0.99")] {
                if let Some(v) = recent.quantile(q) {
                    let _ = writeln!(
                        out,
                        "jiangtang_webrtc_{name}{{quantile=\"{label}\"}} {v:.1}"
                    );
                }
            }
        }
    }
}
