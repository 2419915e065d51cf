//! RTMP ingest: `rtmp://HOST:1935/live/STREAM[?key=SECRET&lang=yue]`.
//!
//! - [`handshake`], [`chunk`], [`amf0`], [`session`]: the sans-IO protocol.
//! - [`to_media`]: FLV tag bodies to media events.
//! - [`driver`]: the TCP listener and per-connection tasks.

pub mod amf0;
pub mod chunk;
pub mod driver;
pub mod handshake;
pub mod session;
pub mod to_media;

pub use driver::serve;

#[cfg(test)]
mod tests;

/// Fuzzing entry point: feeds `data` to a server session in pieces whose sizes come from the
/// data itself, accepting every publish and mapping all media, the way the driver does.
/// Must never panic. Used by `fuzz/fuzz_targets/rtmp_session.rs` and the regression tests.
#[doc(hidden)]
pub fn fuzz_session(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let piece = (split as usize % 64) + 1;
    // A valid handshake first, so the fuzzer spends its time past it.
    let mut input = vec![3u8];
    input.extend_from_slice(&[0u8; 2 * handshake::PACKET]);
    input.extend_from_slice(rest);
    let mut session =
        session::ServerSession::new([0u8; handshake::PACKET], chunk::Limits::default());
    let mut mapper = to_media::FlvToMedia::new(None);
    for chunk in input.chunks(piece) {
        if session.handle_bytes(chunk).is_err() {
            return;
        }
        while let Some(ev) = session.poll_event() {
            let ok = match ev {
                session::SessionEvent::PublishRequested { .. } => session.accept_publish().is_ok(),
                session::SessionEvent::Video { timestamp, data } => {
                    mapper.video(timestamp, data).is_ok()
                }
                session::SessionEvent::Audio { timestamp, data } => {
                    mapper.audio(timestamp, data).is_ok()
                }
                _ => true,
            };
            if !ok {
                return;
            }
        }
        while session.poll_transmit().is_some() {}
    }
}
