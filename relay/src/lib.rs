//! jiangtang's relay: the hub of live lectures, the LL-HLS packager and the HTTP interface.
//!
//! # Layout
//! - [`hub`]: lectures, publishing sessions, grace periods; implements [`media::sink::Publish`].
//! - [`hls`]: LL-HLS packaging.
//! - [`http`]: the axum router: HLS, API, health.

pub mod hls;
pub mod http;
pub mod hub;

pub use hub::Hub;
