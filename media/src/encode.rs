//! The seam to transcoders: the relay asks for an encoder (AAC to Opus for WebRTC; Opus or
//! G.711 to AAC for HLS; a smaller picture of the lecture's video for weak links) without
//! knowing how it is built. `transcode` implements it with GStreamer.

use std::sync::Arc;

use bytes::Bytes;

use crate::aac::AacParams;
use crate::h264::H264Params;

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

/// One H.264 access unit out of a video transcoder (a rung of the ladder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFrame {
    /// Decode time, 90 kHz, on the input's timeline (equal to `pts`: no B-frames).
    pub dts: i64,
    /// Presentation time, 90 kHz: exactly that of the input frame this picture was made from.
    pub pts: i64,
    /// An IDR picture; exactly where the input has one.
    pub keyframe: bool,
    /// 4-byte length-prefixed NAL units, without SPS, PPS or access unit delimiters.
    pub data: Bytes,
    /// The output's SPS/PPS (the same `Arc` until they change).
    pub params: Arc<H264Params>,
}

/// One step of the video ladder: a smaller picture next to the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LadderRung {
    /// Picture width in pixels (even).
    pub width: u32,
    /// Picture height in pixels (even).
    pub height: u32,
    /// Target bitrate, kbit/s.
    pub kbps: u32,
}

/// A running video encoder. Frames come out through the callback given at creation, on
/// whatever thread the encoder uses.
pub trait VideoEncoder: Send {
    /// Feeds one H.264 frame of the source (length-prefixed NAL units as [`crate::Frame`]
    /// carries them), its times in `timescale` units.
    fn push(&mut self, frame: &crate::Frame, timescale: u32) -> Result<(), String>;
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

    /// A rung of the video ladder: H.264 `source` frames pushed in are decoded, scaled to
    /// `rung` (keeping the picture's aspect, with black borders where it differs) and
    /// encoded again, with a keyframe exactly at each of the source's keyframes and nowhere
    /// else; the frames come out through `on_frame`.
    fn video_rung(
        &self,
        _source: &H264Params,
        _rung: &LadderRung,
        _on_frame: Box<dyn FnMut(VideoFrame) + Send>,
    ) -> Result<Box<dyn VideoEncoder>, String> {
        Err("no video transcoder here".into())
    }
}
