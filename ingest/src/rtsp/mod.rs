//! RTSP pull: IP cameras listed as `[[camera]]` become lectures, over retina (TCP
//! interleaved or UDP, basic and digest auth), while their pull mode wants them.
//!
//! - [`to_media`]: depacketized frames to media events (sans-IO).
//! - [`driver`]: one task per camera: timeouts, reconnects with backoff, G.711 to AAC.

pub mod driver;
pub mod to_media;

pub use driver::{Cameras, start};
