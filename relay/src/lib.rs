//! jiangtang's relay: the hub of live lectures, the LL-HLS packager and the HTTP interface.
//!
//! # Layout
//! - [`hub`]: lectures, publishing sessions, grace periods; implements [`media::sink::Publish`].
//! - [`hls`]: LL-HLS packaging.
//! - [`http`]: the axum router: HLS, API, health.
//! - [`admission`]: who may publish and watch (the chain the binary builds), and the
//!   playback-token guard in front of HLS, replays and WHEP.
//! - [`align`]: places contributed tracks (interpreters) on the lecture timeline by arrival.
//! - [`channel`]: the live channel (WebSocket): lecture state pushes, questions, raised hands.
//! - [`replay`]: recordings as HLS from disk, and the recordings API.
//! - [`replay_media`]: a replay's MP4 download (remuxed on the fly) and its poster.
//! - [`taps`]: frames on the lecture timeline for other outputs, with a GOP cache.
//! - [`whep`]: WebRTC playback (WHEP) with in-session dialect switching.

pub mod admission;
pub mod align;
pub mod ask;
pub mod channel;
pub mod hls;
pub mod http;
pub mod hub;
pub(crate) mod ladder;
pub mod replay;
pub mod replay_media;
pub mod roster;
pub mod taps;
pub mod whep;

pub use hub::Hub;
