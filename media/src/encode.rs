//! The seam to audio transcoders: the relay asks for an encoder (AAC to Opus for WebRTC)
//! without knowing how it is built. `transcode` implements it with GStreamer.

use bytes::Bytes;

use crate::aac::AacParams;

/// One encoded audio packet: presentation time in the output timescale and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Presentation time (48 kHz for Opus).
    pub pts: i64,
    /// Encoded bytes.
    pub data: Bytes,
}

/// A running audio encoder. Packets come out through the callback given at creation, on
/// whatever thread the encoder uses.
pub trait AudioEncoder: Send {
    /// Feeds one input frame with its presentation time in `timescale` units.
    fn push(&mut self, pts: i64, timescale: u32, data: &[u8]) -> Result<(), String>;
}

/// Creates encoders.
pub trait Transcoders: Send + Sync {
    /// An AAC to Opus (48 kHz, 20 ms frames) encoder.
    fn aac_to_opus(
        &self,
        aac: &AacParams,
        on_packet: Box<dyn FnMut(Packet) + Send>,
    ) -> Result<Box<dyn AudioEncoder>, String>;
}
