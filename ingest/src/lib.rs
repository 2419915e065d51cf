//! jiangtang's inputs. Each protocol module holds a sans-IO state machine, its mapping to the
//! media model (`to_media`) and one `driver` that owns the sockets.
//!
//! # Layout
//! - [`edge`]: lectures pulled from an origin relay (this relay an edge of it).
//! - [`rtmp`]: RTMP publishers (OBS, ffmpeg, hardware encoders).
//! - [`rtsp`]: IP cameras pulled over RTSP.
//! - [`srt`]: SRT publishers (hardware encoders, OBS, ffmpeg): MPEG-TS, a dialect per
//!   audio track.

pub mod edge;
pub mod rtmp;
pub mod rtsp;
pub mod srt;
