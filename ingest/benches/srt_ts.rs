//! SRT ingest's MPEG-TS path: the demultiplexer (`media::mpegts::TsDemux`) alone, and with
//! the mapping to the media model the SRT driver runs (`ingest::srt::to_media::TsToMedia`:
//! ADTS split, timestamp unwrapping, one track per dialect).
//!
//! The stream is the committed fixture `media/testdata/three-dialects.ts` (ffmpeg's MPEG-TS
//! as an SRT encoder sends it: H.264 with B-frames and three AAC dialects, 2 s), fed in
//! 1316-byte pieces, the payload of one SRT data packet (7 TS packets).
//!
//! `cargo bench -p ingest --bench srt_ts`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ingest::srt::to_media::{TsOutput, TsToMedia};
use media::mpegts::{TsDemux, TsEvent};

const TS: &[u8] = include_bytes!("../../media/testdata/three-dialects.ts");
/// One SRT packet's payload.
const PIECE: usize = 7 * 188;

/// Demultiplexes the stream; returns the PES count.
fn demux(ts: &[u8]) -> usize {
    let mut d = TsDemux::new();
    let mut pes = 0;
    for piece in ts.chunks(PIECE) {
        d.push(piece);
        while let Some(ev) = d.poll() {
            pes += matches!(ev, TsEvent::Pes { .. }) as usize;
        }
    }
    d.flush();
    while let Some(ev) = d.poll() {
        pes += matches!(ev, TsEvent::Pes { .. }) as usize;
    }
    pes
}

/// Maps the stream to media events; returns how many came out.
fn to_media(ts: &[u8]) -> usize {
    let mut m = TsToMedia::new();
    let mut n = 0;
    for piece in ts.chunks(PIECE) {
        m.push(piece);
        while let Some(out) = m.poll() {
            n += matches!(out, TsOutput::Media(_)) as usize;
        }
    }
    m.finish();
    while let Some(out) = m.poll() {
        n += matches!(out, TsOutput::Media(_)) as usize;
    }
    n
}

fn srt_ts(c: &mut Criterion) {
    // 2 s: 50 video access units, and about 94 AAC frames per dialect in fewer PES.
    let pes = demux(TS);
    assert!(pes >= 50 + 3, "{pes} PES");
    let media = to_media(TS);
    assert!(media >= 50 + 3 * 90, "{media} media events");
    let mut g = c.benchmark_group("srt_ts");
    g.measurement_time(Duration::from_secs(3)).sample_size(20);
    g.throughput(Throughput::Bytes(TS.len() as u64));
    g.bench_function("demux", |b| b.iter(|| demux(black_box(TS))));
    g.bench_function("demux+to_media", |b| b.iter(|| to_media(black_box(TS))));
    g.finish();
}

criterion_group!(benches, srt_ts);
criterion_main!(benches);
