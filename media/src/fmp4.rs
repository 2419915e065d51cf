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
}
