//! jiangtang's media model and IO-free containers.
//!
//! Every input maps *to* this model and every output maps *from* it. Nothing here does IO,
//! reads the clock or spawns tasks, so all of it is unit-testable and fuzzable.
//!
//! # Layout
//! - [`model`]: tracks, frames, languages, events.
//! - [`sink`]: the publish seam between inputs and the relay.
//! - [`h264`], [`aac`]: codec configuration records and the facts they give.
//! - [`flv`]: FLV audio/video tag bodies as RTMP carries them.
//! - [`fmp4`]: CMAF init segments and fragments.
//! - [`m3u8`]: HLS playlists with the Low-Latency tags.

pub mod aac;
pub mod flv;
pub mod fmp4;
pub mod h264;
pub mod m3u8;
pub mod model;
pub mod sink;

pub use model::{CodecParams, Frame, Language, MediaEvent, TrackId, TrackInfo, TrackKind};
