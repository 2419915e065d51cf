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
//! - [`limits`]: per-address connection counts and the counters of limits hit.
//! - [`h264`], [`aac`]: codec configuration records and the facts they give.
//! - [`flv`]: FLV audio/video tag bodies as RTMP carries them.
//! - [`mpegts`]: MPEG-TS demultiplexing (SRT's payload).
//! - [`opus`]: Opus packet durations and Opus access units in MPEG-TS.
//! - [`fmp4`]: CMAF init segments and fragments.
//! - [`m3u8`]: HLS playlists with the Low-Latency tags.
//! - [`m3u8_read`]: reading an origin's playlists (an edge pulling a lecture).

pub mod aac;
pub mod admission;
pub mod encode;
pub mod flv;
pub mod fmp4;
pub mod fuzz_corpus;
pub mod h264;
pub mod limits;
pub mod m3u8;
pub mod m3u8_read;
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

/// Fuzzing entry point for the H.264 (`avcC`) and AAC (`AudioSpecificConfig`) configuration
/// records, and the round trip through what we write from them: an init segment made from an
/// accepted record must parse back with mp4-atom into the same codec facts. Never panics on
/// any input; a panic means the round trip broke.
#[doc(hidden)]
pub fn fuzz_config_records(data: &[u8]) {
    let b = bytes::Bytes::copy_from_slice(data);
    if let Ok(p) = h264::H264Params::from_record(b.clone()) {
        let _ = p.codec_string();
        let _ = p.is_idr(data);
        let track = model::TrackInfo::new(CodecParams::H264(p));
        if let Ok(init) = fmp4::init_segment(&track, None) {
            use mp4_atom::Decode;
            let mut buf = &init[..];
            mp4_atom::Ftyp::decode(&mut buf).expect("our ftyp parses back");
            let moov = mp4_atom::Moov::decode(&mut buf).expect("our moov parses back");
            assert_eq!(moov.trak.len(), 1, "one track written, one read");
        }
    }
    if let Ok(p) = aac::AacParams::from_config(b) {
        let _ = p.codec_string();
        let track = model::TrackInfo::new(CodecParams::Aac(p));
        let language = Language::parse("yue").ok();
        if let Ok(init) = fmp4::init_segment(&track, language.as_ref()) {
            use mp4_atom::Decode;
            let mut buf = &init[..];
            mp4_atom::Ftyp::decode(&mut buf).expect("our ftyp parses back");
            let moov = mp4_atom::Moov::decode(&mut buf).expect("our moov parses back");
            assert_eq!(moov.trak[0].mdia.mdhd.language, "yue");
        }
    }
}

/// Fuzzing entry point for the MPEG-TS demultiplexer alone: `data` is pushed in pieces whose
/// size comes from its first byte, every event is taken, then the stream is flushed.
/// Never panics.
#[doc(hidden)]
pub fn fuzz_mpegts(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let piece = (split as usize * 13) % 1500 + 1;
    let mut demux = mpegts::TsDemux::new();
    for chunk in rest.chunks(piece) {
        demux.push(chunk);
        while demux.poll().is_some() {}
    }
    demux.flush();
    while demux.poll().is_some() {}
}

/// Fuzzing entry point for the fMP4 fragment writer: samples described by `data` (one length
/// byte, flags and offsets per sample) are written as a fragment, which must parse back with
/// mp4-atom with the same sample count, sizes and sequence number. Never panics.
#[doc(hidden)]
pub fn fuzz_fmp4_fragment(data: &[u8]) {
    use mp4_atom::Decode;
    let mut samples = Vec::new();
    let mut rest = data;
    while let [len, flags, c0, c1, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        samples.push(fmp4::Sample {
            duration: u32::from(*flags) * 100,
            composition_offset: i32::from(i16::from_le_bytes([*c0, *c1])),
            keyframe: flags & 1 == 1,
            data: bytes::Bytes::copy_from_slice(&tail[..n]),
        });
        rest = &tail[n..];
    }
    let sequence = data.len() as u32 + 1;
    let Ok(frag) = fmp4::fragment(sequence, data.len() as u64 * 1000, &samples) else {
        return;
    };
    let mut buf = &frag[..];
    let moof = mp4_atom::Moof::decode(&mut buf).expect("our moof parses back");
    assert_eq!(moof.mfhd.sequence_number, sequence);
    let entries: usize = moof
        .traf
        .iter()
        .flat_map(|t| t.trun.iter())
        .map(|t| t.samples.len())
        .sum();
    assert_eq!(entries, samples.len());
    let mdat = mp4_atom::Mdat::decode(&mut buf).expect("our mdat parses back");
    let total: usize = samples.iter().map(|s| s.data.len()).sum();
    assert_eq!(mdat.data.len(), total);
}

/// Fuzzing entry point for what an edge reads from its origin: the first byte picks the
/// reader — playlists (both kinds), an init segment, or a fragment read with a real video
/// init. None may panic; a fragment's frames all lie inside the input.
#[doc(hidden)]
pub fn fuzz_edge_pull(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    match kind % 3 {
        0 => m3u8_read::fuzz(rest),
        1 => {
            let _ = fmp4::read_init(rest);
        }
        _ => {
            let track = model::TrackInfo::new(model::CodecParams::Aac(
                aac::AacParams::lc(48_000, 2).expect("LC at 48 kHz"),
            ));
            let init = fmp4::init_segment(&track, None).expect("our init segment");
            let init = fmp4::read_init(&init).expect("our init segment reads back");
            let mut next = 0;
            if let Ok(frames) = fmp4::read_fragment(rest, &init, &mut next) {
                let total: usize = frames.iter().map(|f| f.data.len()).sum();
                assert!(total <= rest.len());
            }
        }
    }
}
