//! HLS / Low-Latency HLS output.
//!
//! - [`packager`]: frames to CMAF parts, segments and playlists (pure state).
//! - [`spool`]: the window's older segments in unnamed files instead of memory.
//! - [`multivariant`]: the multivariant playlist with one audio rendition per dialect.

pub mod multivariant;
pub mod packager;
pub mod spool;

#[cfg(test)]
mod prop_tests;
#[cfg(test)]
pub(crate) mod tests;
