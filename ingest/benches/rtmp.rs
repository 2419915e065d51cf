//! RTMP ingest: the sans-IO server session (handshake, chunk reassembly, commands) fed a
//! publisher's byte stream, alone and with the FLV → media mapping the driver does after it.
//!
//! The stream is 2 s of a 2.5 Mbit/s lecture at 25 fps (a ≈ 60 KB keyframe each second, ≈ 10 KB
//! P-frames) with AAC-LC audio, chunked at 128 bytes (GStreamer's `rtmp2sink`, the protocol's
//! default) and at 4096 (ffmpeg, OBS). Its sequence headers and frames come from ffmpeg's
//! recorded publish (`src/rtmp/testdata/ffmpeg-5.1-publish.bin`), each video frame grown to
//! its size with an H.264 filler-data NAL unit, so the mapping sees real parameter sets and
//! slices. It is fed in 64 KiB reads, as the driver's socket reads deliver it.
//!
//! `cargo bench -p ingest --bench rtmp`

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ingest::rtmp::amf0::{self, Amf0};
use ingest::rtmp::chunk::{ChunkEncoder, Limits, Message};
use ingest::rtmp::handshake::PACKET;
use ingest::rtmp::session::{ServerSession, SessionEvent};
use ingest::rtmp::to_media::FlvToMedia;

const FFMPEG: &[u8] = include_bytes!("../src/rtmp/testdata/ffmpeg-5.1-publish.bin");

/// Bytes per socket read.
const READ: usize = 64 * 1024;
/// Seconds of media in the stream.
const SECONDS: u32 = 2;
const KEYFRAME_BYTES: usize = 60_000;
const PFRAME_BYTES: usize = 10_000;

/// FLV tag bodies of the recorded publish: (video, audio), sequence headers first.
fn recorded_tags() -> (Vec<Bytes>, Vec<Bytes>) {
    let mut s = ServerSession::new([7u8; PACKET], Limits::default());
    let (mut video, mut audio) = (Vec::new(), Vec::new());
    s.handle_bytes(FFMPEG).expect("the capture replays");
    while let Some(ev) = s.poll_event() {
        match ev {
            SessionEvent::PublishRequested { .. } => s.accept_publish().expect("publish"),
            SessionEvent::Video { data, .. } => video.push(data),
            SessionEvent::Audio { data, .. } => audio.push(data),
            _ => {}
        }
    }
    (video, audio)
}

/// `body` (an AVC NALU tag with 4-byte lengths) grown to `size` bytes by a filler-data NAL.
fn grow(body: &Bytes, size: usize) -> Bytes {
    let mut out = body.to_vec();
    if size > out.len() + 5 {
        let nal = size - out.len() - 4;
        out.extend_from_slice(&(nal as u32).to_be_bytes());
        out.push(12); // filler data
        out.resize(size, 0xff);
    }
    out.into()
}

fn command(csid: u32, stream_id: u32, values: &[Amf0]) -> Message {
    let mut body = Vec::new();
    for v in values {
        amf0::encode(v, &mut body);
    }
    Message {
        csid,
        timestamp: 0,
        type_id: 20,
        stream_id,
        payload: body.into(),
    }
}

/// A whole publishing connection's client-to-server bytes at `chunk_size`.
fn publish_stream(chunk_size: usize) -> Vec<u8> {
    let (video, audio) = recorded_tags();
    let is_key = |b: &Bytes| b[0] >> 4 == 1 && b[1] == 1;
    let is_inter = |b: &Bytes| b[0] >> 4 == 2 && b[1] == 1;
    let key = video.iter().find(|b| is_key(b)).expect("a keyframe");
    let inter = video.iter().find(|b| is_inter(b)).expect("a P-frame");
    let (video_config, audio_config) = (video[0].clone(), audio[0].clone());
    assert_eq!(&video_config[..2], &[0x17, 0], "AVC sequence header first");
    let aac: Vec<&Bytes> = audio.iter().filter(|b| b[1] == 1).collect();

    // Plain handshake: C0, C1, C2.
    let mut out = vec![3u8];
    out.extend_from_slice(&[0u8; 2 * PACKET]);
    let mut enc = ChunkEncoder::new();
    let mut buf = BytesMut::new();
    let connect = amf0::object([
        ("app", Amf0::String("live".into())),
        ("type", Amf0::String("nonprivate".into())),
        ("tcUrl", Amf0::String("rtmp://127.0.0.1/live".into())),
    ]);
    let str_ = |s: &str| Amf0::String(s.into());
    enc.encode(
        &command(3, 0, &[str_("connect"), Amf0::Number(1.0), connect]),
        &mut buf,
    );
    enc.encode(
        &Message {
            csid: 2,
            timestamp: 0,
            type_id: 1,
            stream_id: 0,
            payload: Bytes::copy_from_slice(&(chunk_size as u32).to_be_bytes()),
        },
        &mut buf,
    );
    enc.set_chunk_size(chunk_size);
    enc.encode(
        &command(3, 0, &[str_("createStream"), Amf0::Number(2.0), Amf0::Null]),
        &mut buf,
    );
    enc.encode(
        &command(
            8,
            1,
            &[
                str_("publish"),
                Amf0::Number(3.0),
                Amf0::Null,
                str_("bench"),
                str_("live"),
            ],
        ),
        &mut buf,
    );
    let media = |csid, type_id, timestamp, payload: Bytes| Message {
        csid,
        timestamp,
        type_id,
        stream_id: 1,
        payload,
    };
    enc.encode(&media(6, 9, 0, video_config), &mut buf);
    enc.encode(&media(4, 8, 0, audio_config), &mut buf);
    // 25 fps video and 1024-sample frames at 48 kHz, interleaved in time order.
    let (mut v, mut a) = (0u32, 0u32);
    loop {
        let vt = v * 40;
        let at = a * 1024 * 1000 / 48_000;
        if vt.min(at) >= SECONDS * 1000 {
            break;
        }
        if vt <= at {
            let body = if v.is_multiple_of(25) {
                grow(key, KEYFRAME_BYTES)
            } else {
                grow(inter, PFRAME_BYTES)
            };
            enc.encode(&media(6, 9, vt, body), &mut buf);
            v += 1;
        } else {
            let body = aac[a as usize % aac.len()].clone();
            enc.encode(&media(4, 8, at, body), &mut buf);
            a += 1;
        }
    }
    out.extend_from_slice(&buf);
    out
}

/// Feeds the stream to a new session as the driver does; with `map`, through the FLV →
/// media mapping too. Returns the media events (frames and tracks) that came out.
fn ingest(stream: &[u8], map: bool) -> usize {
    let mut s = ServerSession::new([7u8; PACKET], Limits::default());
    let mut mapper = FlvToMedia::new(None);
    let mut media = 0;
    for read in stream.chunks(READ) {
        s.handle_bytes(read).expect("valid stream");
        while let Some(ev) = s.poll_event() {
            match ev {
                SessionEvent::PublishRequested { .. } => s.accept_publish().expect("publish"),
                SessionEvent::Video { timestamp, data } => {
                    if map {
                        media += mapper.video(timestamp, data).expect("video").is_some() as usize;
                    } else {
                        media += black_box(data.len()).min(1);
                    }
                }
                SessionEvent::Audio { timestamp, data } => {
                    if map {
                        media += mapper.audio(timestamp, data).expect("audio").is_some() as usize;
                    } else {
                        media += black_box(data.len()).min(1);
                    }
                }
                _ => {}
            }
        }
        while let Some(out) = s.poll_transmit() {
            black_box(out);
        }
    }
    media
}

fn rtmp(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtmp");
    g.measurement_time(Duration::from_secs(3)).sample_size(20);
    for chunk_size in [128, 4096] {
        let stream = publish_stream(chunk_size);
        // Every frame comes out (the sequence headers map to tracks).
        let frames = SECONDS as usize * (25 + 47);
        let got = ingest(&stream, true);
        assert!(got >= frames, "{got} media events, expected ≥ {frames}");
        g.throughput(Throughput::Bytes(stream.len() as u64));
        g.bench_function(format!("session/chunk{chunk_size}"), |b| {
            b.iter(|| ingest(black_box(&stream), false))
        });
        g.bench_function(format!("session+to_media/chunk{chunk_size}"), |b| {
            b.iter(|| ingest(black_box(&stream), true))
        });
    }
    g.finish();
}

criterion_group!(benches, rtmp);
criterion_main!(benches);
