//! A recording written, read back as playlists, and recovered after the relay was killed
//! halfway through writing a part.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use media::aac::AacParams;
use media::fmp4::{self, Sample};
use media::{CodecParams, Language, TrackInfo};
use recorder::{Event, Library, PartMeta, RecordingConfig, RenditionMeta, State};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "recorder-test-{tag}-{}-{}",
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

fn config(dir: &TempDir) -> RecordingConfig {
    RecordingConfig {
        dir: dir.0.clone(),
        retention_days: 30,
        min_free_bytes: 0,
        max_pending_bytes: 64 << 20,
    }
}

fn audio(lang: &str) -> (TrackInfo, Bytes, RenditionMeta) {
    let mut info = TrackInfo::new(CodecParams::Aac(AacParams::lc(48_000, 2).unwrap()));
    let l = Language::parse(lang).unwrap();
    info.language = Some(l.clone());
    let init = fmp4::init_segment(&info, Some(&l)).unwrap();
    let meta = RenditionMeta::of(&format!("audio-{lang}"), &info, Some(lang), lang);
    (info, init, meta)
}

/// One 400 ms AAC part (about 19 frames) starting at `t` samples.
fn audio_part(seq: u32, t: u64) -> Bytes {
    let samples: Vec<Sample> = (0..19)
        .map(|_| Sample {
            duration: 1024,
            composition_offset: 0,
            keyframe: true,
            data: Bytes::from_static(&[0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c]),
        })
        .collect();
    fmp4::fragment(seq, t, &samples).unwrap()
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// Sends `segments` segments of five parts for each rendition, from `first_msn`.
fn send_segments(rec: &recorder::Recorder, renditions: &[&str], first_msn: u64, segments: u64) {
    for msn in first_msn..first_msn + segments {
        for index in 0..5u32 {
            for (n, r) in renditions.iter().enumerate() {
                let seq = (msn * 5 + index as u64) as u32 * 8 + n as u32;
                rec.send(Event::Part {
                    rendition: Arc::from(*r),
                    part: PartMeta {
                        msn,
                        index,
                        duration: 19.0 * 1024.0 / 48_000.0,
                        independent: true,
                        gap: false,
                        discontinuity: false,
                        dseq: 0,
                        init_version: 0,
                        segment_pdt: t0() + Duration::from_secs(2 * msn),
                    },
                    data: audio_part(seq, (msn * 5 + index as u64) * 19 * 1024),
                });
            }
        }
        for r in renditions {
            rec.send(Event::SegmentEnd {
                rendition: Arc::from(*r),
                msn,
            });
        }
    }
}

fn start(lib: &Library, langs: &[&str]) -> recorder::Recorder {
    let rec = lib
        .start("xihe", Some("西和讲堂".into()), "cmn", None)
        .unwrap();
    for l in langs {
        let (_, init, meta) = audio(l);
        rec.send(Event::Init {
            rendition: Arc::from(format!("audio-{l}").as_str()),
            version: 0,
            data: init,
            track: meta,
        });
    }
    rec
}

#[test]
fn a_finished_recordings_playlists_are_rendered_once_a_growing_ones_each_time() {
    let dir = TempDir::new("playlists");
    let lib = Library::open(config(&dir));
    let rec = start(&lib, &["cmn"]);
    let recording = rec.recording().clone();
    send_segments(&rec, &["audio-cmn"], 0, 2);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while recording.cached_renditions().is_none_or(|r| {
        r.get("audio-cmn")
            .is_none_or(|r| r.segments.iter().filter(|s| s.complete).count() < 2)
    }) {
        assert!(std::time::Instant::now() < deadline, "segments written");
        std::thread::sleep(Duration::from_millis(20));
    }
    let renders = std::cell::Cell::new(0);
    let render = |c: &recorder::store::Contents| {
        renders.set(renders.get() + 1);
        let r = c.renditions.as_deref().unwrap();
        recorder::playlist::media(&c.meta, r, "audio-cmn", c.live)
    };
    // Being written: it grows, so every request renders it.
    let a = recording.playlist("audio-cmn", render).unwrap();
    let b = recording.playlist("audio-cmn", render).unwrap();
    assert_eq!(renders.get(), 2);
    assert_eq!(a.etag, b.etag);
    assert!(
        !std::str::from_utf8(&a.text)
            .unwrap()
            .contains("#EXT-X-ENDLIST")
    );
    rec.send(Event::Ended);
    assert!(lib.wait_idle(Duration::from_secs(5)));
    // Finished: rendered once more, then the same bytes every time.
    let done = recording.playlist("audio-cmn", render).unwrap();
    let again = recording.playlist("audio-cmn", render).unwrap();
    assert_eq!(renders.get(), 3);
    assert!(
        std::str::from_utf8(&done.text)
            .unwrap()
            .ends_with("#EXT-X-ENDLIST\n")
    );
    assert_ne!(done.etag, a.etag);
    assert_eq!((done.text, done.etag), (again.text, again.etag));
    // Keys are separate playlists.
    assert!(recording.playlist("other", |_| None).is_none());
}

#[test]
fn a_recording_reads_back_as_vod_with_its_dialects() {
    let dir = TempDir::new("vod");
    let lib = Library::open(config(&dir));
    let rec = start(&lib, &["cmn", "yue"]);
    let recording = rec.recording().clone();
    send_segments(&rec, &["audio-cmn", "audio-yue"], 0, 3);
    // A dialect that joins later (an interpreter) is laid out from the start, as gaps.
    let (_, init, meta) = audio("hak");
    rec.send(Event::Init {
        rendition: Arc::from("audio-hak"),
        version: 0,
        data: init,
        track: meta,
    });
    send_segments(&rec, &["audio-cmn", "audio-yue", "audio-hak"], 3, 2);
    rec.send(Event::Ended);
    assert!(lib.wait_idle(Duration::from_secs(5)));
    let meta = recording.meta();
    assert_eq!(meta.state, State::Complete);
    assert_eq!(meta.renditions.len(), 3);
    let duration = meta.duration_s.unwrap();
    assert!(
        (duration - 5.0 * 5.0 * 19.0 * 1024.0 / 48_000.0).abs() < 1e-3,
        "{duration}"
    );

    // Read again from disk by a new library (a restart).
    drop(lib);
    let lib = Library::open(config(&dir));
    let r = lib.get(&recording.id).unwrap();
    assert_eq!(r.meta().state, State::Complete);
    let renditions = r.renditions().unwrap();
    let master = recorder::playlist::multivariant(&r.meta(), &renditions, |_| 0).unwrap();
    for l in ["cmn", "yue", "hak"] {
        assert!(master.contains(&format!("LANGUAGE=\"{l}\"")), "{master}");
    }
    assert!(master.contains("LANGUAGE=\"cmn\",DEFAULT=YES"), "{master}");
    let hak = recorder::playlist::media(&r.meta(), &renditions, "audio-hak", false).unwrap();
    let pl = m3u8_rs::parse_media_playlist_res(hak.as_bytes()).unwrap();
    assert_eq!(pl.segments.len(), 5, "{hak}");
    assert!(hak.contains("#EXT-X-PLAYLIST-TYPE:VOD"));
    assert!(hak.ends_with("#EXT-X-ENDLIST\n"));
    assert_eq!(hak.matches("#EXT-X-GAP").count(), 3, "{hak}");
    // Every listed segment's bytes are one run of whole fragments.
    let cmn = &renditions["audio-cmn"];
    for s in &cmn.segments {
        let data = r.read_media("audio-cmn", s.offset, s.len).unwrap();
        let mut buf = &data[..];
        let mut n = 0;
        while !buf.is_empty() {
            use mp4_atom::Decode as _;
            mp4_atom::Moof::decode(&mut buf).unwrap();
            mp4_atom::Mdat::decode(&mut buf).unwrap();
            n += 1;
        }
        assert_eq!(n, 5);
    }
}

#[test]
fn a_killed_writer_loses_at_most_the_part_in_progress() {
    let dir = TempDir::new("crash");
    let lib = Library::open(config(&dir));
    let rec = start(&lib, &["cmn"]);
    let recording = rec.recording().clone();
    send_segments(&rec, &["audio-cmn"], 0, 2);
    // Two more parts of a third segment, not ended.
    for index in 0..2 {
        rec.send(Event::Part {
            rendition: Arc::from("audio-cmn"),
            part: PartMeta {
                msn: 2,
                index,
                duration: 0.405,
                independent: true,
                gap: false,
                discontinuity: false,
                dseq: 0,
                init_version: 0,
                segment_pdt: t0() + Duration::from_secs(4),
            },
            data: audio_part(100 + index, (10 + index as u64) * 19 * 1024),
        });
    }
    // Let the writer take everything, then "kill" the relay: what the disk holds is what a
    // killed process leaves (recording.json still says `recording`), plus the half of a
    // part and of its index line that it was writing.
    let written = || {
        recording
            .contents()
            .renditions
            .as_ref()
            .and_then(|r| {
                r.get("audio-cmn")
                    .map(|r| r.segments.iter().map(|s| s.parts).sum::<u32>())
            })
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while written() < 12 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(written(), 12);
    let folder = recording.dir().to_path_buf();
    let snapshot = std::fs::read(folder.join("recording.json")).unwrap();
    std::mem::forget(rec); // never ends: the writer thread is left blocked, as in a crash
    std::mem::forget(lib);
    let rdir = folder.join("audio-cmn");
    let media_len = std::fs::metadata(rdir.join("media.m4s")).unwrap().len();
    {
        use std::io::Write as _;
        let mut m = std::fs::OpenOptions::new()
            .append(true)
            .open(rdir.join("media.m4s"))
            .unwrap();
        m.write_all(&audio_part(999, 0)[..100]).unwrap();
        let mut i = std::fs::OpenOptions::new()
            .append(true)
            .open(rdir.join("index.txt"))
            .unwrap();
        i.write_all(b"P 2 2 99999 4").unwrap();
    }
    std::fs::write(folder.join("recording.json"), &snapshot).unwrap();
    // A second, unreadable recording beside it is reported, not fatal.
    std::fs::create_dir(dir.0.join("20260101T000000Z-broken")).unwrap();
    std::fs::write(
        dir.0.join("20260101T000000Z-broken/recording.json"),
        b"{ not json",
    )
    .unwrap();

    let lib = Library::open(config(&dir));
    assert_eq!(lib.damaged().len(), 1, "{:?}", lib.damaged());
    let r = lib.get(&recording.id).unwrap();
    let meta = r.meta();
    assert_eq!(meta.state, State::Recovered);
    assert!(meta.ended.is_some());
    let renditions = r.renditions().unwrap();
    let segs = &renditions["audio-cmn"].segments;
    assert_eq!(segs.len(), 3);
    assert!(segs[..2].iter().all(|s| s.complete && s.parts == 5));
    assert_eq!((segs[2].parts, segs[2].complete), (2, false));
    // The half-written part is gone from the disk too.
    assert_eq!(
        std::fs::metadata(rdir.join("media.m4s")).unwrap().len(),
        media_len
    );
    let text = recorder::playlist::media(&meta, &renditions, "audio-cmn", false).unwrap();
    assert_eq!(
        m3u8_rs::parse_media_playlist_res(text.as_bytes())
            .unwrap()
            .segments
            .len(),
        3
    );
    // Recovering again changes nothing.
    drop(lib);
    let lib = Library::open(config(&dir));
    assert_eq!(lib.get(&recording.id).unwrap().meta(), meta);
}

#[test]
fn retention_deletes_only_what_is_old_enough() {
    let dir = TempDir::new("retention");
    let lib = Library::open(config(&dir));
    let mut ids = Vec::new();
    for days in [None, Some(365)] {
        let rec = lib.start("xihe", None, "cmn", days).unwrap();
        send_segments(&rec, &["audio-cmn"], 0, 1);
        ids.push(rec.recording().id.clone());
        rec.send(Event::Ended);
        std::thread::sleep(Duration::from_millis(1100)); // ids are per second
    }
    assert!(lib.wait_idle(Duration::from_secs(5)));
    let now = jiff::Timestamp::now();
    assert!(lib.expire(now).is_empty());
    // Forty days on: the first (30-day default) goes, the one kept for a year stays.
    let later = now + jiff::SignedDuration::from_hours(40 * 24);
    assert_eq!(lib.expire(later), vec![ids[0].clone()]);
    assert!(lib.get(&ids[0]).is_none() && !dir.0.join(&ids[0]).exists());
    assert!(lib.get(&ids[1]).is_some());
    // A recording being written is never deleted.
    let live = lib.start("live", None, "cmn", Some(1)).unwrap();
    let far = now + jiff::SignedDuration::from_hours(400 * 24);
    assert_eq!(lib.expire(far), vec![ids[1].clone()]);
    assert!(lib.get(&live.recording().id).is_some());
    assert!(matches!(
        lib.delete(&live.recording().id),
        Err(recorder::store::DeleteError::Live(_))
    ));
}
