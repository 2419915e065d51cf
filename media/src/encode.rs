//! The seam to audio transcoders: the relay asks for an encoder (AAC to Opus for WebRTC;
//! Opus or G.711 to AAC for HLS) without knowing how it is built. `transcode` implements it
//! with GStreamer.

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

/// Audio an input receives that HLS cannot carry, to be made AAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioSource {
    /// Opus packets (WebRTC publishers), 48 kHz.
    Opus {
        /// 1 or 2.
        channels: u8,
    },
    /// G.711 (IP cameras).
    G711 {
        /// μ-law (PCMU) or A-law (PCMA).
        law: G711Law,
        /// Samples per second (8000 for RTP's PCMU/PCMA).
        rate: u32,
        /// Channels, usually 1.
        channels: u8,
    },
}

/// The two G.711 companding laws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum G711Law {
    /// PCMU.
    Mu,
    /// PCMA.
    A,
}

/// One AAC access unit out of a transcoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacFrame {
    /// Presentation time at the output's sample rate ([`AacParams::sample_rate`], 48 kHz), on
    /// the input's timeline.
    pub pts: i64,
    /// The raw access unit.
    pub data: Bytes,
    /// The configuration it belongs to (the same for every frame of one encoder).
    pub params: AacParams,
}

/// One reading of a track's sound level, over about a second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    /// RMS level of the loudest channel, dBFS (-120 for digital silence).
    pub rms_db: f64,
    /// Peak level, dBFS.
    pub peak_db: f64,
}

/// Creates encoders.
pub trait Transcoders: Send + Sync {
    /// A meter of an AAC track's level: frames pushed in, a [`Level`] about every second of
    /// audio out through `on_level`.
    fn level_meter(
        &self,
        _aac: &AacParams,
        _on_level: Box<dyn FnMut(Level) + Send>,
    ) -> Result<Box<dyn AudioEncoder>, String> {
        Err("no level meter here".into())
    }

    /// An encoder of `source` to AAC-LC at 48 kHz; frames come out through `on_frame`.
    fn to_aac(
        &self,
        source: &AudioSource,
        on_frame: Box<dyn FnMut(AacFrame) + Send>,
    ) -> Result<Box<dyn AudioEncoder>, String>;

    /// An AAC to Opus (48 kHz, 20 ms frames) encoder.
    fn aac_to_opus(
        &self,
        aac: &AacParams,
        on_packet: Box<dyn FnMut(Packet) + Send>,
    ) -> Result<Box<dyn AudioEncoder>, String>;
}
