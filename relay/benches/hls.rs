//! LL-HLS packaging (`relay::hls::packager::Packager`) on a lecture in steady state: the
//! default settings (400 ms parts, 2 s segments, 6-segment window), 2.5 Mbit/s 25 fps video
//! with a keyframe each second and three AAC dialects, like the issue-11 load lecture.
//!
//! - `push_part`: the frames of one part (10 video frames, 19 AAC frames per dialect) pushed
//!   in time order; each rendition's part is cut and written as fMP4 on the way.
//! - `media_playlist/fresh`: the video rendition's media playlist rendered afresh, what the
//!   first request after every change (a new part) costs.
//! - `media_playlist/cached`: [`Packager::media_playlist_bytes`] when nothing changed since
//!   the last render, what every other request costs.
//!
//! `cargo bench -p relay --bench hls`

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use media::aac::AacParams;
use media::h264::H264Params;
use media::{CodecParams, Frame, Language, TrackInfo};
use relay::hls::packager::{Packager, RenditionIdx, Settings};

/// An SPS (High, level 3.1) and PPS, as an x264 encoder sends them.
const SPS: &[u8] = &[
    0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
    0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x83, 0x19, 0x60,
];
const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
const DIALECTS: [&str; 3] = ["cmn", "yue", "hak"];

/// A publisher feeding one packager, with its own clocks.
struct Lecture {
    p: Packager,
    video: RenditionIdx,
    audio: Vec<RenditionIdx>,
    vframe: u64,
    aframe: u64,
    key: Bytes,
    inter: Bytes,
    aac: Bytes,
}

impl Lecture {
    fn new() -> Self {
        let mut p = Packager::new(Settings::from_ms(400, 2000, 6), "bench".into());
        p.begin_session();
        let info = TrackInfo::new(CodecParams::H264(
            H264Params::from_sps_pps(SPS, PPS).expect("valid parameter sets"),
        ));
        let video = p.set_track("video", info, None, String::new());
        let audio = DIALECTS
            .iter()
            .map(|l| {
                let lang = Language::parse(l).unwrap();
                let mut info = TrackInfo::new(CodecParams::Aac(AacParams::lc(48_000, 2).unwrap()));
                info.language = Some(lang.clone());
                p.set_track(&format!("audio-{l}"), info, Some(lang), l.to_string())
            })
            .collect();
        let frame = |first: u8, len: usize| {
            let mut v = vec![0x5a; len];
            v[0] = first;
            Bytes::from(v)
        };
        Lecture {
            p,
            video,
            audio,
            vframe: 0,
            aframe: 0,
            key: frame(0x65, 60_000),
            inter: frame(0x41, 10_000),
            aac: frame(0x21, 170),
        }
    }

    /// Pushes the frames up to `ms` of media time (25 fps, 1024-sample AAC frames at
    /// 48 kHz); returns the bytes pushed.
    fn run_until(&mut self, ms: u64) -> usize {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut bytes = 0;
        loop {
            let vt = self.vframe * 40;
            let at = self.aframe * 1024 * 1000 / 48_000;
            if vt.min(at) >= ms {
                return bytes;
            }
            if vt <= at {
                let key = self.vframe.is_multiple_of(25);
                let dts = (vt * 90) as i64;
                let data = if key { &self.key } else { &self.inter }.clone();
                bytes += data.len();
                let frame = Frame {
                    dts,
                    pts: dts + 7200,
                    keyframe: key,
                    data,
                };
                self.p
                    .push(self.video, frame, t0 + Duration::from_millis(vt));
                self.vframe += 1;
            } else {
                let ts = (self.aframe * 1024) as i64;
                for &a in &self.audio {
                    bytes += self.aac.len();
                    let frame = Frame {
                        dts: ts,
                        pts: ts,
                        keyframe: true,
                        data: self.aac.clone(),
                    };
                    self.p.push(a, frame, t0 + Duration::from_millis(at));
                }
                self.aframe += 1;
            }
        }
    }

    /// Media time pushed so far, in ms.
    fn now_ms(&self) -> u64 {
        self.vframe * 40
    }
}

fn hls(c: &mut Criterion) {
    let mut g = c.benchmark_group("hls");
    g.measurement_time(Duration::from_secs(3)).sample_size(30);

    // A full window and then some: the playlist lists 6 segments with their parts.
    let mut lecture = Lecture::new();
    let first = lecture.p.version();
    let bytes = lecture.run_until(20_000);
    assert!(lecture.p.version() > first, "the packager made parts");
    let playlist = lecture.p.media_playlist(lecture.video).expect("a playlist");
    assert!(playlist.matches("#EXTINF").count() >= 6, "{playlist}");
    assert!(playlist.contains("#EXT-X-PART:"), "{playlist}");

    g.throughput(Throughput::Bytes((bytes / 50) as u64));
    g.bench_function("push_part", |b| {
        b.iter(|| {
            let until = lecture.now_ms() + 400;
            lecture.run_until(until)
        })
    });

    g.throughput(Throughput::Elements(1));
    let v = lecture.video;
    g.bench_function("media_playlist/fresh", |b| {
        b.iter(|| lecture.p.media_playlist(black_box(v)).unwrap())
    });
    let _ = lecture.p.media_playlist_bytes(v);
    g.bench_function("media_playlist/cached", |b| {
        b.iter(|| lecture.p.media_playlist_bytes(black_box(v)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, hls);
criterion_main!(benches);
