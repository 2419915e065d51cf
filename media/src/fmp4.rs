//! Fragmented MP4 (CMAF) for HLS: one init segment per track and `moof`+`mdat` fragments.
//!
//! Each HLS rendition is a single-track CMAF track file, so every function here writes one
//! track with id [`TRACK_ID`]. Box encoding is done by `mp4-atom`; this module decides the
//! contents (sample flags, timing, data offsets).

use bytes::{BufMut, Bytes, BytesMut};
use mp4_atom::{Atom, Encode};

use crate::model::{CodecParams, Language, TrackInfo};

/// The track id used in every init segment and fragment we write.
pub const TRACK_ID: u32 = 1;

/// Sample flags of a sync sample: `sample_depends_on = 2` (depends on no other sample).
pub const FLAGS_SYNC: u32 = 0x0200_0000;
/// Sample flags of a non-sync sample: `sample_depends_on = 1`, `sample_is_non_sync_sample`.
pub const FLAGS_NON_SYNC: u32 = 0x0101_0000;

/// Errors while writing boxes.
#[derive(Debug, thiserror::Error)]
#[error("fmp4: {0}")]
pub struct Fmp4Error(String);

impl From<mp4_atom::Error> for Fmp4Error {
    fn from(e: mp4_atom::Error) -> Self {
        Fmp4Error(e.to_string())
    }
}

/// One sample of a fragment.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Duration in the track timescale.
    pub duration: u32,
    /// Composition offset (pts - dts) in the track timescale.
    pub composition_offset: i32,
    /// A sync sample (IDR picture, any audio frame).
    pub keyframe: bool,
    /// Coded payload.
    pub data: Bytes,
}

/// Writes the init segment (`ftyp` + `moov`) of a single-track CMAF track file.
pub fn init_segment(track: &TrackInfo, language: Option<&Language>) -> Result<Bytes, Fmp4Error> {
    let ftyp = mp4_atom::Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands: vec![b"iso6".into(), b"cmfc".into(), b"mp41".into()],
    };
    let lang = language.map_or("und", |l| l.iso639_3()).to_string();
    let (handler, codec, tkhd_size, vmhd, smhd, volume) = match &track.codec {
        CodecParams::H264(p) => {
            let mut rec = &p.record[..];
            let avcc = mp4_atom::Avcc::decode_body(&mut rec)?;
            let avc1 = mp4_atom::Avc1 {
                visual: mp4_atom::Visual {
                    data_reference_index: 1,
                    width: p.width.min(u16::MAX as u32) as u16,
                    height: p.height.min(u16::MAX as u32) as u16,
                    ..Default::default()
                },
                avcc,
                ..Default::default()
            };
            (
                b"vide",
                mp4_atom::Codec::from(avc1),
                (p.width, p.height),
                Some(mp4_atom::Vmhd::default()),
                None,
                0u8,
            )
        }
        CodecParams::Aac(p) => {
            let mp4a = mp4_atom::Mp4a {
                audio: mp4_atom::Audio {
                    data_reference_index: 1,
                    channel_count: p.channel_count(),
                    sample_size: 16,
                    sample_rate: (p.sample_rate.min(u16::MAX as u32) as u16).into(),
                },
                esds: mp4_atom::Esds {
                    es_desc: mp4_atom::esds::EsDescriptor {
                        es_id: 1,
                        dec_config: mp4_atom::esds::DecoderConfig {
                            object_type_indication: 0x40,
                            stream_type: 0x05,
                            up_stream: 0,
                            dec_specific: Some(mp4_atom::esds::DecoderSpecific {
                                profile: p.object_type,
                                freq_index: 0,
                                chan_conf: p.channels,
                                raw: p.config.to_vec(),
                            }),
                            ..Default::default()
                        },
                        ..Default::default()
                    },
                },
                btrt: None,
                taic: None,
            };
            (
                b"soun",
                mp4_atom::Codec::from(mp4a),
                (0, 0),
                None,
                Some(mp4_atom::Smhd::default()),
                1u8,
            )
        }
    };
    let moov = mp4_atom::Moov {
        mvhd: mp4_atom::Mvhd {
            timescale: 1000,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: TRACK_ID + 1,
            ..Default::default()
        },
        mvex: Some(mp4_atom::Mvex {
            mehd: None,
            trex: vec![mp4_atom::Trex {
                track_id: TRACK_ID,
                default_sample_description_index: 1,
                ..Default::default()
            }],
        }),
        trak: vec![mp4_atom::Trak {
            tkhd: mp4_atom::Tkhd {
                track_id: TRACK_ID,
                enabled: true,
                in_movie: true,
                volume: volume.into(),
                width: (tkhd_size.0.min(u16::MAX as u32) as u16).into(),
                height: (tkhd_size.1.min(u16::MAX as u32) as u16).into(),
                ..Default::default()
            },
            mdia: mp4_atom::Mdia {
                mdhd: mp4_atom::Mdhd {
                    timescale: track.timescale,
                    language: lang,
                    ..Default::default()
                },
                hdlr: mp4_atom::Hdlr {
                    handler: handler.into(),
                    name: "jiangtang".into(),
                },
                minf: mp4_atom::Minf {
                    vmhd,
                    smhd,
                    dinf: mp4_atom::Dinf {
                        dref: mp4_atom::Dref {
                            entries: vec![mp4_atom::Url::default().into()],
                        },
                    },
                    stbl: mp4_atom::Stbl {
                        stsd: mp4_atom::Stsd {
                            codecs: vec![codec],
                        },
                        stco: Some(mp4_atom::Stco::default()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            },
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut out = Vec::with_capacity(1024);
    ftyp.encode(&mut out)?;
    moov.encode(&mut out)?;
    Ok(Bytes::from(out))
}

/// Writes one fragment (`moof` + `mdat`) holding `samples`, which start at decode time
/// `base_decode_time`. `sequence` is the `mfhd` sequence number (1-based, increasing).
pub fn fragment(
    sequence: u32,
    base_decode_time: u64,
    samples: &[Sample],
) -> Result<Bytes, Fmp4Error> {
    let entries = samples
        .iter()
        .map(|s| mp4_atom::TrunEntry {
            duration: Some(s.duration),
            size: Some(s.data.len() as u32),
            flags: Some(if s.keyframe {
                FLAGS_SYNC
            } else {
                FLAGS_NON_SYNC
            }),
            cts: Some(s.composition_offset as i64),
        })
        .collect::<Vec<_>>();
    let mut moof = mp4_atom::Moof {
        mfhd: mp4_atom::Mfhd {
            sequence_number: sequence,
        },
        traf: vec![mp4_atom::Traf {
            tfhd: mp4_atom::Tfhd {
                track_id: TRACK_ID,
                default_base_is_moof: true,
                ..Default::default()
            },
            tfdt: Some(mp4_atom::Tfdt {
                base_media_decode_time: base_decode_time,
            }),
            trun: vec![mp4_atom::Trun {
                data_offset: Some(0),
                samples: mp4_atom::TrunSamples::Explicit(entries),
            }],
            ..Default::default()
        }],
    };
    let mut probe = Vec::with_capacity(256);
    moof.encode(&mut probe)?;
    let moof_len = probe.len();
    moof.traf[0].trun[0].data_offset = Some((moof_len + 8) as i32);

    let payload: usize = samples.iter().map(|s| s.data.len()).sum();
    let mut out = BytesMut::with_capacity(moof_len + 8 + payload);
    let mut head = Vec::with_capacity(moof_len);
    moof.encode(&mut head)?;
    debug_assert_eq!(head.len(), moof_len);
    out.put_slice(&head);
    out.put_u32((payload + 8) as u32);
    out.put_slice(b"mdat");
    for s in samples {
        out.put_slice(&s.data);
    }
    Ok(out.freeze())
}

/// A track read back from a CMAF track file's init segment: what [`read_fragment`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitTrack {
    /// The track as the media model has it (language from `mdhd`, if it names one).
    pub info: TrackInfo,
    /// The `trex` defaults of the track.
    pub defaults: mp4_atom::Trex,
}

/// Longest init segment read (ours are about 1 KiB).
const MAX_INIT: usize = 64 << 10;

/// Reads a single-track init segment (`ftyp` + `moov`, as [`init_segment`] writes and any
/// CMAF packager does) holding H.264 or AAC.
pub fn read_init(data: &[u8]) -> Result<InitTrack, Fmp4Error> {
    use mp4_atom::Decode;
    if data.len() > MAX_INIT {
        return Err(Fmp4Error(format!("init segment of {} bytes", data.len())));
    }
    let mut pos = 0usize;
    let moov = loop {
        if pos >= data.len() {
            return Err(Fmp4Error("init segment without moov".into()));
        }
        let (kind, size, _) = box_header(&data[pos..])?;
        let end = pos
            .checked_add(size)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| Fmp4Error(format!("box at byte {pos} runs past the data")))?;
        if &kind == b"moov" {
            break mp4_atom::Moov::decode(&mut &data[pos..end])?;
        }
        pos = end;
    };
    let [trak] = &moov.trak[..] else {
        return Err(Fmp4Error(format!(
            "init segment with {} tracks (one expected)",
            moov.trak.len()
        )));
    };
    let defaults = moov
        .mvex
        .as_ref()
        .and_then(|m| m.trex.iter().find(|t| t.track_id == trak.tkhd.track_id))
        .cloned()
        .unwrap_or_default();
    let codec = match trak.mdia.minf.stbl.stsd.codecs.first() {
        Some(mp4_atom::Codec::Avc1(avc1)) => {
            let mut record = Vec::with_capacity(128);
            avc1.avcc.encode_body(&mut record)?;
            CodecParams::H264(
                crate::h264::H264Params::from_record(Bytes::from(record))
                    .map_err(|e| Fmp4Error(format!("avcC: {e}")))?,
            )
        }
        Some(mp4_atom::Codec::Mp4a(mp4a)) => {
            let raw = mp4a
                .esds
                .es_desc
                .dec_config
                .dec_specific
                .as_ref()
                .map(|d| d.raw.clone())
                .unwrap_or_default();
            CodecParams::Aac(
                crate::aac::AacParams::from_config(Bytes::from(raw))
                    .map_err(|e| Fmp4Error(format!("esds: {e}")))?,
            )
        }
        Some(other) => {
            return Err(Fmp4Error(format!(
                "unsupported sample entry {:?}",
                std::mem::discriminant(other)
            )));
        }
        None => return Err(Fmp4Error("init segment without a sample entry".into())),
    };
    let timescale = trak.mdia.mdhd.timescale;
    if timescale == 0 {
        return Err(Fmp4Error("timescale 0".into()));
    }
    let language = match trak.mdia.mdhd.language.as_str() {
        "und" | "" => None,
        tag => Language::parse(tag).ok(),
    };
    Ok(InitTrack {
        info: TrackInfo {
            codec,
            timescale,
            language,
        },
        defaults,
    })
}

/// Most samples read from one fragment (a 2 s part of 60 fps video has 120).
const MAX_SAMPLES: usize = 10_000;

/// Reads the samples of a chunk of `moof` + `mdat` pairs (an LL-HLS part or a segment of a
/// CMAF track file) of `track` as frames, timestamps in the track's timescale. Pairs without
/// a `tfdt` continue from `next_dts` (updated to where the chunk ends).
pub fn read_fragment(
    data: &[u8],
    track: &InitTrack,
    next_dts: &mut i64,
) -> Result<Vec<crate::model::Frame>, Fmp4Error> {
    use mp4_atom::Decode;
    let mut frames = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let (kind, size, _) = box_header(&data[pos..])?;
        let end = pos
            .checked_add(size)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| Fmp4Error(format!("box at byte {pos} runs past the data")))?;
        if &kind != b"moof" {
            pos = end;
            continue;
        }
        let moof = mp4_atom::Moof::decode(&mut &data[pos..end])?;
        let moof_start = pos;
        // The mdat follows the moof; data offsets count from the moof (default-base-is-moof).
        let (mkind, msize, mheader) = box_header(data.get(end..).unwrap_or_default())?;
        if &mkind != b"mdat" {
            return Err(Fmp4Error(format!("no mdat after the moof at byte {pos}")));
        }
        let mdat_end = end
            .checked_add(msize)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| Fmp4Error("mdat runs past the data".into()))?;
        let mdat_start = end + mheader;
        for traf in &moof.traf {
            let tfhd = &traf.tfhd;
            let base = match tfhd.base_data_offset {
                Some(b) => usize::try_from(b)
                    .map_err(|_| Fmp4Error("base data offset out of range".into()))?,
                None => moof_start,
            };
            let mut dts = match &traf.tfdt {
                Some(t) => i64::try_from(t.base_media_decode_time)
                    .map_err(|_| Fmp4Error("decode time out of range".into()))?,
                None => *next_dts,
            };
            let mut at = mdat_start;
            for trun in &traf.trun {
                if let Some(o) = trun.data_offset {
                    at = base
                        .checked_add_signed(o as isize)
                        .ok_or_else(|| Fmp4Error("bad data offset".into()))?;
                }
                for s in trun.samples.iter() {
                    if frames.len() >= MAX_SAMPLES {
                        return Err(Fmp4Error("too many samples".into()));
                    }
                    let duration = s
                        .duration
                        .or(tfhd.default_sample_duration)
                        .unwrap_or(track.defaults.default_sample_duration);
                    let size = s
                        .size
                        .or(tfhd.default_sample_size)
                        .unwrap_or(track.defaults.default_sample_size)
                        as usize;
                    let flags = s
                        .flags
                        .or(tfhd.default_sample_flags)
                        .unwrap_or(track.defaults.default_sample_flags);
                    let cts = s.cts.unwrap_or(0);
                    let stop = at
                        .checked_add(size)
                        .filter(|&e| at >= mdat_start && e <= mdat_end)
                        .ok_or_else(|| Fmp4Error("a sample lies outside its mdat".into()))?;
                    frames.push(crate::model::Frame {
                        dts,
                        pts: dts.saturating_add(cts),
                        keyframe: flags & 0x0001_0000 == 0,
                        data: Bytes::copy_from_slice(&data[at..stop]),
                    });
                    at = stop;
                    dts = dts.saturating_add(i64::from(duration));
                }
            }
            *next_dts = dts;
        }
        pos = mdat_end;
    }
    Ok(frames)
}

/// A box's type, total size and header length at the start of `data`.
fn box_header(data: &[u8]) -> Result<([u8; 4], usize, usize), Fmp4Error> {
    let short = || Fmp4Error("truncated box header".into());
    let head: &[u8; 8] = data
        .get(..8)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(short)?;
    let kind = [head[4], head[5], head[6], head[7]];
    let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as u64;
    let (size, header) = match size {
        1 => {
            let large: &[u8; 8] = data
                .get(8..16)
                .and_then(|h| h.try_into().ok())
                .ok_or_else(short)?;
            (u64::from_be_bytes(*large), 16)
        }
        0 => (data.len() as u64, 8),
        n => (n, 8),
    };
    if size < header as u64 {
        return Err(Fmp4Error(format!("box size {size} below its header")));
    }
    let size = usize::try_from(size).map_err(|_| Fmp4Error("box too large".into()))?;
    Ok((kind, size, header))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aac::AacParams;
    use crate::h264::H264Params;
    use mp4_atom::Decode;

    fn video_track() -> TrackInfo {
        TrackInfo::new(CodecParams::H264(
            H264Params::from_sps_pps(crate::h264::tests::SPS_720P, crate::h264::tests::PPS)
                .unwrap(),
        ))
    }

    #[test]
    fn init_segments_decode() {
        let init = init_segment(&video_track(), None).unwrap();
        let mut buf = &init[..];
        let ftyp = mp4_atom::Ftyp::decode(&mut buf).unwrap();
        assert_eq!(ftyp.major_brand, b"iso6".into());
        let moov = mp4_atom::Moov::decode(&mut buf).unwrap();
        assert_eq!(moov.trak[0].mdia.mdhd.timescale, 90_000);
        assert_eq!(moov.trak[0].tkhd.width, 1280.into());

        let aac = TrackInfo::new(CodecParams::Aac(AacParams::lc(48_000, 2).unwrap()));
        let lang = Language::parse("yue").unwrap();
        let init = init_segment(&aac, Some(&lang)).unwrap();
        let mut buf = &init[..];
        mp4_atom::Ftyp::decode(&mut buf).unwrap();
        let moov = mp4_atom::Moov::decode(&mut buf).unwrap();
        assert_eq!(moov.trak[0].mdia.mdhd.language, "yue");
        assert_eq!(moov.trak[0].mdia.mdhd.timescale, 48_000);
        let mp4_atom::Codec::Mp4a(mp4a) = &moov.trak[0].mdia.minf.stbl.stsd.codecs[0] else {
            panic!("not mp4a")
        };
        assert_eq!(
            mp4a.esds
                .es_desc
                .dec_config
                .dec_specific
                .as_ref()
                .unwrap()
                .raw,
            vec![0x11, 0x90]
        );
    }

    #[test]
    fn fragments_point_at_their_data() {
        let samples = vec![
            Sample {
                duration: 3000,
                composition_offset: 0,
                keyframe: true,
                data: Bytes::from_static(b"first"),
            },
            Sample {
                duration: 3000,
                composition_offset: -3000,
                keyframe: false,
                data: Bytes::from_static(b"second!"),
            },
        ];
        let frag = fragment(7, 123_456, &samples).unwrap();
        let mut buf = &frag[..];
        let moof = mp4_atom::Moof::decode(&mut buf).unwrap();
        assert_eq!(moof.mfhd.sequence_number, 7);
        let traf = &moof.traf[0];
        assert_eq!(traf.tfdt.as_ref().unwrap().base_media_decode_time, 123_456);
        let trun = &traf.trun[0];
        let offset = trun.data_offset.unwrap() as usize;
        assert_eq!(&frag[offset..offset + 5], b"first");
        assert_eq!(&frag[offset + 5..], b"second!");
        let e1 = trun.samples.get(1).unwrap();
        assert_eq!(e1.cts, Some(-3000));
        assert_eq!(e1.flags, Some(FLAGS_NON_SYNC));
    }

    #[test]
    fn init_segments_read_back_as_the_tracks_they_were_written_from() {
        let video = video_track();
        let read = read_init(&init_segment(&video, None).unwrap()).unwrap();
        assert_eq!(read.info, video);
        let mut audio = TrackInfo::new(CodecParams::Aac(AacParams::lc(48_000, 2).unwrap()));
        let yue = Language::parse("yue").unwrap();
        let read = read_init(&init_segment(&audio, Some(&yue)).unwrap()).unwrap();
        audio.language = Some(yue);
        assert_eq!(read.info, audio);
        assert!(read_init(b"").is_err());
        assert!(read_init(&init_segment(&video, None).unwrap()[..40]).is_err());
    }

    #[test]
    fn fragments_read_back_as_the_frames_they_were_written_from() {
        let track = read_init(&init_segment(&video_track(), None).unwrap()).unwrap();
        let samples: Vec<Sample> = (0..5u8)
            .map(|i| Sample {
                duration: 3600,
                composition_offset: if i == 0 { 0 } else { 7200 },
                keyframe: i == 0,
                data: Bytes::from(vec![i; 100 + i as usize]),
            })
            .collect();
        let mut chunk = fragment(1, 90_000, &samples[..2]).unwrap().to_vec();
        chunk.extend_from_slice(&fragment(2, 90_000 + 7200, &samples[2..]).unwrap());
        let mut next = 0;
        let frames = read_fragment(&chunk, &track, &mut next).unwrap();
        assert_eq!(frames.len(), 5);
        for (i, (f, s)) in frames.iter().zip(&samples).enumerate() {
            assert_eq!(f.dts, 90_000 + 3600 * i as i64);
            assert_eq!(f.pts - f.dts, i64::from(s.composition_offset));
            assert_eq!(f.keyframe, s.keyframe);
            assert_eq!(f.data, s.data);
        }
        assert_eq!(next, 90_000 + 5 * 3600);
        // Damaged: cut short, or the mdat's size pointing past the data.
        assert!(read_fragment(&chunk[..chunk.len() - 1], &track, &mut next).is_err());
        let mut lying = fragment(1, 0, &samples[..1]).unwrap().to_vec();
        let at = lying.len() - 8 - 100;
        lying[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(read_fragment(&lying, &track, &mut next).is_err());
    }
}
