//! Hostile and broken RTMP clients are disconnected with a logged reason while a real
//! lecture on the same relay keeps going.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::rtmp::RawClient;
use common::*;
use ingest::rtmp::chunk::types;

fn last_msn(s: &Server) -> u64 {
    let pl = wait_for_segments(s, "good", "video", 1);
    pl.media_sequence + pl.segments.len() as u64
}

#[test]
fn malformed_rtmp_closes_only_that_connection() {
    let mut s = Server::start("[rtmp]\nhandshake_timeout_ms = 1500\n");
    let _good = ffmpeg_publish(&s.rtmp_url("good"), "320x180", 25, 440);
    let start = last_msn(&s);

    let closed = |stream: &mut TcpStream, what: &str| {
        assert!(
            closed_by_peer(stream, Duration::from_secs(4)),
            "{what}: connection left open"
        );
    };

    // Not RTMP at all.
    let mut c = TcpStream::connect(s.rtmp).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    closed(&mut c, "HTTP request");

    // Encrypted RTMP (version 6) is not supported.
    let mut c = TcpStream::connect(s.rtmp).unwrap();
    c.write_all(&[6u8; 1537]).unwrap();
    closed(&mut c, "RTMPE");

    // Connects and says nothing.
    let mut c = TcpStream::connect(s.rtmp).unwrap();
    closed(&mut c, "silent client");

    // Chunk size with the top bit set.
    let mut c = RawClient::connect(s.rtmp);
    c.message(
        2,
        types::SET_CHUNK_SIZE,
        0,
        0,
        &0x8000_0000u32.to_be_bytes(),
    )
    .unwrap();
    closed(&mut c.stream, "chunk size 2^31");

    // A message declaring 16 MiB.
    let mut c = RawClient::connect(s.rtmp);
    c.raw(&[6, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0])
        .unwrap();
    closed(&mut c.stream, "16 MiB message");

    // A connect whose AMF is garbage.
    let mut c = RawClient::connect(s.rtmp);
    c.message(3, types::COMMAND_AMF0, 0, 0, &[0x02, 0xff, 0xff, b'c'])
        .unwrap();
    closed(&mut c.stream, "bad AMF");

    // 10,000 nested objects.
    let mut c = RawClient::connect(s.rtmp);
    let mut deep = Vec::new();
    for _ in 0..10_000 {
        deep.extend_from_slice(&[0x03, 0, 1, b'a']);
    }
    let _ = c.message(3, types::COMMAND_AMF0, 0, 0, &deep);
    closed(&mut c.stream, "deep AMF");

    // Publishing, then a truncated video tag.
    let mut c = RawClient::connect(s.rtmp);
    let answer = c.publish("broken1");
    assert!(String::from_utf8_lossy(&answer).contains("NetStream.Publish.Start"));
    c.message(6, types::VIDEO, 1, 0, &[0x17, 0, 0]).unwrap();
    closed(&mut c.stream, "truncated FLV video tag");

    // Publishing, then an AVC configuration that is not one.
    let mut c = RawClient::connect(s.rtmp);
    c.publish("broken2");
    c.message(
        6,
        types::VIDEO,
        1,
        0,
        &[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f, 0xff, 0xe1, 0x7f, 0xff],
    )
    .unwrap();
    closed(&mut c.stream, "bad AVC configuration");

    // Publishing a codec we do not carry.
    let mut c = RawClient::connect(s.rtmp);
    c.publish("broken3");
    c.message(4, types::AUDIO, 1, 0, &[0x2f, 1, 2, 3]).unwrap();
    closed(&mut c.stream, "MP3 audio");

    // Stream names that could be paths are refused at publish.
    let mut c = RawClient::connect(s.rtmp);
    let answer = c.publish("../../etc/passwd");
    assert!(String::from_utf8_lossy(&answer).contains("NetStream.Publish.BadName"));
    closed(&mut c.stream, "path as stream name");

    // Someone else trying to publish the live lecture is refused; the lecture is untouched.
    let mut c = RawClient::connect(s.rtmp);
    let answer = c.publish("good");
    assert!(String::from_utf8_lossy(&answer).contains("NetStream.Publish.BadName"));
    closed(&mut c.stream, "second publisher");

    // The relay is alive, the good lecture kept going and the reasons are in the log.
    assert!(s.alive());
    assert_eq!(get(&s.url("/healthz")).0, 200);
    wait_until(
        Duration::from_secs(10),
        "the good lecture to advance",
        || (last_msn(&s) > start + 1).then_some(()),
    );
    let log = s.log();
    for reason in [
        "unsupported RTMP version 71",
        "unsupported RTMP version 6",
        "did not publish within the handshake timeout",
        "invalid chunk size 2147483648",
        "above the limit",
        "AMF0 in command",
        "AMF0 nesting deeper than 16",
        "truncated FLV video tag",
        "bad AVCDecoderConfigurationRecord",
        "unsupported audio codec MP3",
        "stream names are 1-128",
        "is already being published",
    ] {
        assert!(log.contains(reason), "log lacks {reason:?}:\n{log}");
    }
    // Sessions that never produced media leave nothing behind.
    wait_until(
        Duration::from_secs(3),
        "broken lectures to be dropped",
        || {
            let api = get_text(&s.url("/api/v1/streams"));
            (!api.contains("broken")).then_some(())
        },
    );
}
