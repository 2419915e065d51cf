//! jiangtang's media model and IO-free containers.
//!
//! Every input maps *to* this model and every output maps *from* it. Nothing here does IO,
//! reads the clock or spawns tasks, so all of it is unit-testable and fuzzable.
//!
//! # Layout
//! - [`model`]: tracks, frames, languages, events.
//! - [`sink`]: the publish seam between inputs and the relay.
//! - [`admission`]: the seam that decides who may publish and who may watch.
//! - [`encode`]: the seam to audio transcoders (AAC to Opus).
//! - [`h264`], [`aac`]: codec configuration records and the facts they give.
//! - [`flv`]: FLV audio/video tag bodies as RTMP carries them.
//! - [`mpegts`]: MPEG-TS demultiplexing (SRT's payload).
//! - [`opus`]: Opus packet durations and Opus access units in MPEG-TS.
//! - [`fmp4`]: CMAF init segments and fragments.
//! - [`m3u8`]: HLS playlists with the Low-Latency tags.

pub mod aac;
pub mod admission;
pub mod encode;
pub mod flv;
pub mod fmp4;
pub mod h264;
pub mod m3u8;
pub mod model;
pub mod mpegts;
pub mod opus;
pub mod sink;

pub use model::{CodecParams, Frame, Language, MediaEvent, TrackId, TrackInfo, TrackKind};

/// Fuzzing entry point for the FLV tag and codec configuration parsers. Must never panic.
#[doc(hidden)]
pub fn fuzz_flv_tag(data: &[u8]) {
    let b = bytes::Bytes::copy_from_slice(data);
    if let Ok(flv::VideoTag::AvcConfig(record)) = flv::parse_video(b.clone())
        && let Ok(p) = h264::H264Params::from_record(record)
    {
        let _ = fmp4::init_segment(&model::TrackInfo::new(CodecParams::H264(p.clone())), None);
        let _ = p.is_idr(data);
    }
    if let Ok(flv::AudioTag::AacConfig(config)) = flv::parse_audio(b.clone())
        && let Ok(p) = aac::AacParams::from_config(config)
    {
        let _ = fmp4::init_segment(&model::TrackInfo::new(CodecParams::Aac(p)), None);
    }
    let _ = h264::H264Params::from_record(b);
    let _ = h264::annexb_to_avcc(data);
}
