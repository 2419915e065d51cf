//! An edge relay's input: lectures pulled from an origin relay (another jiangtang) over
//! HTTP, as the origin's LL-HLS renditions — the video and every dialect — part by part,
//! and published here like any source, so the edge's own viewers get WebRTC and LL-HLS
//! from it. One pull per lecture whatever the number of local viewers; edges chain (an
//! edge is an origin to the next). See ARCHITECTURE.md for why HTTP parts and not SRT.
//!
//! - [`interleave`]: the renditions' frames back in one decode-time order (sans-IO).
//! - the playlists and fragments are read by `media::m3u8_read` and `media::fmp4`.
//! - `driver`: the tokio glue: which lectures to pull, the HTTP requests, failover.

mod driver;
pub mod interleave;

pub use driver::{Edge, start};
