//! HLS / Low-Latency HLS output.
//!
//! - [`packager`]: frames to CMAF parts, segments and playlists (pure state).
//! - [`multivariant`]: the multivariant playlist with one audio rendition per dialect.

pub mod multivariant;
pub mod packager;

#[cfg(test)]
mod prop_tests;
#[cfg(test)]
pub(crate) mod tests;
