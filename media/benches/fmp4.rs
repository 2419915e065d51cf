//! fMP4 (CMAF) part writing: `media::fmp4::fragment`, the `moof` + `mdat` of one LL-HLS part
//! that the packager writes per rendition each time a part closes.
//!
//! A part is the default 400 ms (`hls.part_target_ms`): 10 frames of a 2.5 Mbit/s 25 fps
//! lecture (the first part of a segment starts with a ≈ 60 KB keyframe, the others hold only
//! ≈ 10 KB P-frames, with B-frame composition offsets), and 19 AAC frames of a 64 kbit/s
//! dialect (≈ 170 bytes each).
//!
//! `cargo bench -p media --bench fmp4`

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use media::fmp4::{Sample, fragment};

fn video_part(keyframe: bool) -> Vec<Sample> {
    (0..10)
        .map(|i| {
            let key = keyframe && i == 0;
            Sample {
                duration: 3600,
                composition_offset: if i % 3 == 0 { 7200 } else { 0 },
                keyframe: key,
                data: Bytes::from(vec![i as u8; if key { 60_000 } else { 10_000 }]),
            }
        })
        .collect()
}

fn audio_part() -> Vec<Sample> {
    (0..19)
        .map(|i| Sample {
            duration: 1024,
            composition_offset: 0,
            keyframe: true,
            data: Bytes::from(vec![i as u8; 170]),
        })
        .collect()
}

fn fmp4(c: &mut Criterion) {
    let mut g = c.benchmark_group("fmp4_part");
    g.measurement_time(Duration::from_secs(3)).sample_size(30);
    for (name, samples) in [
        ("video_keyframe", video_part(true)),
        ("video_inter", video_part(false)),
        ("audio", audio_part()),
    ] {
        let bytes: usize = samples.iter().map(|s| s.data.len()).sum();
        let out = fragment(7, 123_456_789, &samples).expect("a fragment");
        assert!(out.len() > bytes, "the part holds every sample");
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(name, |b| {
            let mut seq = 0u32;
            b.iter(|| {
                seq += 1;
                fragment(seq, u64::from(seq) * 36_000, black_box(&samples)).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, fmp4);
criterion_main!(benches);
