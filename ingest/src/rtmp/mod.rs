//! RTMP ingest: `rtmp://HOST:1935/live/STREAM[?key=SECRET&lang=yue]`.
//!
//! - [`handshake`], [`chunk`], [`amf0`], [`session`]: the sans-IO protocol.
//! - [`to_media`]: FLV tag bodies to media events.
//! - [`driver`]: the TCP listener and per-connection tasks.

pub mod amf0;
pub mod chunk;
pub mod driver;
pub mod handshake;
pub mod session;
pub mod to_media;

pub use driver::serve;

#[cfg(test)]
mod tests;
