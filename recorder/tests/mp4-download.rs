//! The MP4 download's layout, read back box by box: a dialect that joined late starts with
//! an empty edit, time lost to a failed write stays on the timeline (the sample before it
//! lasts through it), every chunk offset points at the part's own sample bytes, the default
//! dialect is the first and only enabled audio track, and any byte range reads what the
//! whole file holds there.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use media::aac::AacParams;
use media::fmp4::{self, Sample};
use media::{CodecParams, Language, TrackInfo};
use mp4_atom::Decode as _;
use recorder::mp4::{Dialects, Download, Mp4Error};
use recorder::{Event, Library, PartMeta, RecordingConfig, RenditionMeta};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "recorder-mp4-{tag}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const FRAMES: u64 = 19;
const PARTS: u64 = 5;

/// The payload of one synthetic AAC frame: unique per rendition, segment, part and frame,
/// so a chunk offset pointing anywhere else is caught.
fn frame(lang: u8, msn: u64, part: u64, i: u64) -> Bytes {
    Bytes::from(vec![
        lang,
        msn as u8,
        part as u8,
        i as u8,
        0x5a,
        lang ^ 0xff,
    ])
}

fn part(lang: u8, msn: u64, index: u64) -> Bytes {
    let samples: Vec<Sample> = (0..FRAMES)
        .map(|i| Sample {
            duration: 1024,
            composition_offset: 0,
            keyframe: true,
            data: frame(lang, msn, index, i),
        })
        .collect();
    let t = (msn * PARTS + index) * FRAMES * 1024;
    fmp4::fragment((msn * PARTS + index) as u32 + 1, t, &samples).unwrap()
}

fn init(rec: &recorder::Recorder, lang: &str, name: &str) {
    let mut info = TrackInfo::new(CodecParams::Aac(AacParams::lc(48_000, 2).unwrap()));
    let l = Language::parse(lang).unwrap();
    info.language = Some(l.clone());
    rec.send(Event::Init {
        rendition: Arc::from(format!("audio-{lang}").as_str()),
        version: 0,
        data: fmp4::init_segment(&info, Some(&l)).unwrap(),
        track: RenditionMeta::of(&format!("audio-{lang}"), &info, Some(lang), name),
    });
}

fn segments(rec: &recorder::Recorder, langs: &[&str], msns: std::ops::Range<u64>) {
    for msn in msns {
        for index in 0..PARTS {
            for l in langs {
                rec.send(Event::Part {
                    rendition: Arc::from(format!("audio-{l}").as_str()),
                    part: PartMeta {
                        msn,
                        index: index as u32,
                        duration: FRAMES as f64 * 1024.0 / 48_000.0,
                        independent: true,
                        gap: false,
                        discontinuity: false,
                        dseq: 0,
                        init_version: 0,
                        segment_pdt: SystemTime::UNIX_EPOCH + Duration::from_secs(2 * msn),
                    },
                    data: part(l.as_bytes()[0], msn, index),
                });
            }
        }
        for l in langs {
            rec.send(Event::SegmentEnd {
                rendition: Arc::from(format!("audio-{l}").as_str()),
                msn,
            });
        }
    }
}

/// Decodes the file's `moov` (our own `elng` and `udta/name` boxes are skipped by
/// mp4-atom, which does not know them).
fn moov(file: &[u8]) -> mp4_atom::Moov {
    let mut buf = file;
    mp4_atom::Ftyp::decode(&mut buf).unwrap();
    mp4_atom::Moov::decode(&mut buf).unwrap()
}

fn rank(tag: &str) -> usize {
    ["cmn", "yue", "hak"]
        .iter()
        .position(|t| *t == tag)
        .unwrap_or(usize::MAX)
}

#[test]
fn the_layout_points_at_every_part_and_keeps_the_timeline() {
    let dir = TempDir::new("layout");
    let lib = Library::open(RecordingConfig {
        dir: dir.0.clone(),
        retention_days: 0,
        min_free_bytes: 0,
        max_pending_bytes: 64 << 20,
    });
    let rec = lib
        .start("xihe", Some("西和讲堂".into()), "yue", None)
        .unwrap();
    let recording = rec.recording().clone();
    init(&rec, "cmn", "普通话");
    init(&rec, "yue", "粤语");
    segments(&rec, &["cmn", "yue"], 0..3);
    // An interpreter joins at segment 3.
    init(&rec, "hak", "客家话");
    segments(&rec, &["cmn", "yue", "hak"], 3..5);
    // Segments 5 and 6 never reached the disk (it was full); writing resumed at 7.
    segments(&rec, &["cmn", "yue", "hak"], 7..9);

    // Not while it is being written.
    assert!(matches!(
        Download::build(&recording, &Dialects::All, rank),
        Err(Mp4Error::Live)
    ));
    rec.send(Event::Ended);
    assert!(lib.wait_idle(Duration::from_secs(5)));

    let dl = Download::build(&recording, &Dialects::All, rank).unwrap();
    let file = dl.read(0, dl.len).unwrap();
    assert_eq!(file.len() as u64, dl.len);
    let langs: Vec<_> = dl.tracks.iter().map(|t| t.mdhd_language.as_str()).collect();
    assert_eq!(langs, ["yue", "cmn", "hak"], "the default dialect first");
    let names: Vec<_> = dl.tracks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["粤语", "普通话", "客家话"]);
    let segment = (PARTS * FRAMES * 1024) as f64 / 48_000.0;
    assert!(
        (dl.duration - 9.0 * segment).abs() < 1e-3,
        "{}",
        dl.duration
    );

    let moov = moov(&file);
    assert_eq!(moov.trak.len(), 3);
    let mdat_start = dl.head_len();
    for (n, trak) in moov.trak.iter().enumerate() {
        let lang = dl.tracks[n].language.clone().unwrap();
        assert_eq!(trak.mdia.mdhd.language, lang);
        assert_eq!(trak.mdia.hdlr.name, dl.tracks[n].name);
        assert_eq!(
            trak.tkhd.enabled,
            n == 0,
            "only the default dialect is enabled"
        );
        assert_eq!(trak.tkhd.alternate_group, 1);
        let stbl = &trak.mdia.minf.stbl;
        let sizes = match &stbl.stsz.samples {
            mp4_atom::StszSamples::Identical { count, size } => vec![*size; *count as usize],
            mp4_atom::StszSamples::Different { sizes } => sizes.clone(),
        };
        let msns: Vec<u64> = if lang == "hak" {
            vec![3, 4, 7, 8]
        } else {
            vec![0, 1, 2, 3, 4, 7, 8]
        };
        assert_eq!(sizes.len() as u64, msns.len() as u64 * PARTS * FRAMES);
        // One chunk per part, each holding that part's frames in order.
        let offsets = &stbl.stco.as_ref().unwrap().entries;
        assert_eq!(offsets.len() as u64, msns.len() as u64 * PARTS);
        assert_eq!(stbl.stsc.entries.len(), 1);
        assert_eq!(stbl.stsc.entries[0].samples_per_chunk as u64, FRAMES);
        let mut k = 0;
        for (c, &off) in offsets.iter().enumerate() {
            let (msn, index) = (msns[c / PARTS as usize], c as u64 % PARTS);
            assert!(u64::from(off) >= mdat_start);
            let mut at = off as usize;
            for i in 0..FRAMES {
                let want = frame(lang.as_bytes()[0], msn, index, i);
                assert_eq!(
                    &file[at..at + sizes[k] as usize],
                    &want[..],
                    "{lang} {msn}.{index}.{i}"
                );
                at += sizes[k] as usize;
                k += 1;
            }
        }
        // Durations: 1024 each, except the frame before the lost segments, which lasts
        // through them, so the track ends where the lecture did.
        let total: u64 = stbl
            .stts
            .entries
            .iter()
            .map(|e| u64::from(e.sample_count) * u64::from(e.sample_delta))
            .sum();
        let first = if lang == "hak" { 3 } else { 0 };
        assert_eq!(total, (9 - first) * PARTS * FRAMES * 1024, "{lang}");
        assert!(
            stbl.stts
                .entries
                .iter()
                .any(|e| e.sample_delta == 1024 + 2 * (PARTS * FRAMES * 1024) as u32)
        );
        assert_eq!(trak.mdia.mdhd.duration, total);
        // The interpreter starts three segments in: an empty edit first.
        let edits = trak.edts.as_ref().and_then(|e| e.elst.as_ref());
        if lang == "hak" {
            let e = &edits.unwrap().entries;
            assert_eq!(e[0].media_time, None);
            let ms = (3.0 * segment * 1000.0).round() as u64;
            assert_eq!(e[0].segment_duration, ms);
            assert_eq!(e[1].media_time, Some(0));
        } else {
            assert!(edits.is_none(), "{lang}");
        }
    }
    // The chunks are interleaved in time: every track's first chunk comes before any
    // track's tenth.
    let firsts: Vec<u32> = moov
        .trak
        .iter()
        .filter(|t| t.mdia.mdhd.language != "hak")
        .map(|t| t.mdia.minf.stbl.stco.as_ref().unwrap().entries[0])
        .collect();
    let tenth = moov.trak[0].mdia.minf.stbl.stco.as_ref().unwrap().entries[9];
    assert!(firsts.iter().all(|&f| f < tenth));

    // Ranges read what the whole file holds there, across head, chunks and files.
    for (from, len) in [
        (0, 10),
        (100, 5000),
        (dl.head_len() - 3, 50),
        (dl.len - 7, 100),
    ] {
        let part = dl.read(from, len).unwrap();
        let to = (from + len).min(dl.len) as usize;
        assert_eq!(part, &file[from as usize..to]);
    }

    // One dialect: only its track, enabled.
    let one = Download::build(&recording, &Dialects::One("hak".into()), rank).unwrap();
    assert_eq!(one.tracks.len(), 1);
    let moov = self::moov(&one.read(0, one.len).unwrap());
    assert!(moov.trak[0].tkhd.enabled);
    assert_eq!(moov.trak[0].mdia.mdhd.language, "hak");
    assert!(matches!(
        Download::build(&recording, &Dialects::One("eng".into()), rank),
        Err(Mp4Error::NoDialect(_))
    ));
}
