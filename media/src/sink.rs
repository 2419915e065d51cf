//! The seam between inputs and the relay: an input asks to publish a lecture and, when
//! allowed, gets a [`MediaSink`] to send [`MediaEvent`]s into. Dropping the sink ends the
//! publishing session.

use std::net::SocketAddr;

use crate::model::{Language, MediaEvent, TrackId};

/// Who wants to publish what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    /// Lecture (stream) name, already validated by [`valid_stream_name`].
    pub stream: String,
    /// Publishing key offered by the publisher (`?key=`), if any.
    pub key: Option<String>,
    /// Dialect asked for on the publish URL (`?lang=`), applied to its audio track.
    pub language: Option<Language>,
    /// Input protocol, for logs and the API: `rtmp`, `srt`, `whip`, `rtsp`, `demo`.
    pub protocol: &'static str,
    /// Remote address of the publisher, when it has one.
    pub remote: Option<SocketAddr>,
}

/// Why a publish request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Missing or wrong key.
    #[error("publishing {0:?} needs a valid key")]
    Unauthorized(String),
    /// Somebody is already publishing this lecture.
    #[error("lecture {0:?} is already being published")]
    AlreadyPublishing(String),
    /// The relay only accepts configured lectures and this is not one.
    #[error("unknown lecture {0:?}")]
    UnknownLecture(String),
    /// The relay is at its limit.
    #[error("too many live lectures")]
    TooManyLectures,
}

/// Why the relay refused an event; the input ends the session with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The event breaks a rule the relay needs (codec, track count, size).
    #[error("{0}")]
    Rejected(String),
    /// The lecture was ended or taken over; the session should close.
    #[error("publishing session closed: {0}")]
    Closed(String),
}

/// How the transport of a publishing session is doing, as its protocol measures it (SRT's
/// and WebRTC's retransmission machinery), for the lecture's health in the API.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TransportStats {
    /// Packets received, retransmissions included.
    pub packets_received: u64,
    /// Packets found missing (and asked for again).
    pub packets_lost: u64,
    /// Retransmitted packets received.
    pub packets_retransmitted: u64,
    /// Packets given up for good: a gap in the media.
    pub packets_dropped: u64,
    /// Round-trip time to the publisher.
    pub rtt_ms: Option<f64>,
    /// Receive buffer latency agreed with the publisher.
    pub latency_ms: Option<u64>,
}

/// Receives the events of one publishing session.
pub trait MediaSink: Send {
    /// Handles one event.
    fn handle(&mut self, event: MediaEvent) -> Result<(), SinkError>;

    /// Latest transport figures of the session (inputs that have them call this about once
    /// a second).
    fn transport(&mut self, _stats: TransportStats) {}

    /// Something went wrong with the input that did not end the session (damaged data,
    /// an unsupported track): shown as the lecture's last error.
    fn input_error(&mut self, _message: String) {}

    /// The Opus packets that audio track `track` was transcoded from, as the source sent
    /// them: `pts` at 48 kHz on the same timeline as the track's frames. Outputs that carry
    /// Opus (WebRTC viewers) take these instead of transcoding the track back; sinks
    /// without such outputs ignore them.
    fn opus(&mut self, _track: TrackId, _pts: i64, _data: &[u8]) {}

    /// The source says the lecture is over (an edge's origin ended it): when the sink is
    /// dropped the lecture ends at once instead of waiting for its publisher to return.
    fn finish(&mut self) {}
}

/// Grants publishing sessions.
pub trait Publish: Send + Sync {
    /// Starts a publishing session or says why not.
    fn publish(&self, request: PublishRequest) -> Result<Box<dyn MediaSink>, PublishError>;

    /// Whether [`Publish::publish`] would grant this request now, without starting a
    /// session: for protocols that must answer before their handshake completes (SRT).
    ///
    /// It runs on another library's thread (libsrt's receive thread, shared by every
    /// connection on the port), so it must answer at once: from the configuration and a
    /// snapshot, never waiting on a lock that work is done under. `publish` decides for good.
    fn check(&self, _request: &PublishRequest) -> Result<(), PublishError> {
        Ok(())
    }

    /// Whether somebody wants to watch `stream` now (a player asked for it within
    /// `within`, or is connected): inputs that pull on demand (cameras) start and stop by it.
    fn wanted(&self, _stream: &str, _within: std::time::Duration) -> bool {
        false
    }

    /// The lectures somebody here wants now (as [`Publish::wanted`] says) among those
    /// players asked for by name: what an edge pulls from its origin.
    fn demanded(&self, _within: std::time::Duration) -> Vec<String> {
        Vec::new()
    }

    /// What an edge learned from its origin about `stream`: its title, the programme's next
    /// lecture on it (title, start in Unix seconds), and display names of its dialects (tag,
    /// name) — shown to players here as the origin shows them.
    fn learned(
        &self,
        _stream: &str,
        _title: Option<String>,
        _next: Option<(String, i64)>,
        _dialects: Vec<(String, String)>,
    ) {
    }

    /// Who watches `stream` here, in all and by dialect where known (an edge reports it to
    /// its origin's roster).
    fn audience(&self, _stream: &str) -> (u32, std::collections::BTreeMap<String, u32>) {
        (0, Default::default())
    }
}

/// Longest lecture name.
pub const MAX_STREAM_NAME: usize = 128;

/// True for a usable lecture name: 1–128 of `A-Z a-z 0-9 . _ -`, not starting with `.`.
/// Names become parts of URLs and file names, so nothing else is allowed.
pub fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_STREAM_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names() {
        assert!(valid_stream_name("xihe-hall_2026.11"));
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a b",
            "a%2e",
            "名字",
            &"x".repeat(129),
        ] {
            assert!(!valid_stream_name(bad), "{bad:?}");
        }
    }
}
