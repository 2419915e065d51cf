//! SRT ingest: `srt://HOST:8890?streamid=publish:STREAM[:KEY]`, MPEG-TS inside, every audio
//! track a dialect.
//!
//! - [`streamid`]: which lecture a caller publishes, and its key (sans-IO).
//! - [`to_media`]: MPEG-TS to media events (sans-IO, on [`media::mpegts`]).
//! - [`driver`]: the libsrt listener on one thread (libsrt brings its own protocol threads):
//!   admission before the handshake completes, receive, stats, ends.

pub mod driver;
pub mod streamid;
pub mod to_media;

pub use driver::{SrtServer, start};

/// Fuzzing entry point: feeds `data` to the MPEG-TS mapper in pieces whose size comes from
/// the first byte, as SRT messages would arrive. Must never panic. Used by
/// `fuzz/fuzz_targets/srt_ts.rs` and the regression tests.
#[doc(hidden)]
pub fn fuzz_ts(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let piece = (split as usize * 7) % 1316 + 1;
    let mut m = to_media::TsToMedia::new();
    for chunk in rest.chunks(piece) {
        m.push(chunk);
        while m.poll().is_some() {}
    }
    m.finish();
    while m.poll().is_some() {}
}

/// Fuzzing entry point for SRT stream ids (arbitrary bytes, lossily as text, as libsrt hands
/// them over). Never panics; an accepted id names a valid lecture. Used by
/// `fuzz/fuzz_targets/srt_streamid.rs` and the regression tests.
#[doc(hidden)]
pub fn fuzz_streamid(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(id) = streamid::parse(&text) {
        assert!(
            media::sink::valid_stream_name(&id.stream),
            "accepted an invalid lecture name {:?}",
            id.stream
        );
    }
}
