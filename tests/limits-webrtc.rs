//! WebRTC limits against the real binary, at the limit and one beyond: the SDP offer's size
//! (`webrtc.max_offer_bytes`, and a declared 1 GiB never sent), WHEP viewers per lecture
//! (`webrtc.max_viewers_per_lecture`) and WHIP publishers (`webrtc.max_publishers`).

mod common;

use std::io::{Read, Write};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::floods::limit_hits;
use common::*;
use str0m::media::{Direction, MediaKind};

fn crypto() {
    static CRYPTO: OnceLock<()> = OnceLock::new();
    CRYPTO.get_or_init(|| str0m::crypto::from_feature_flags().install_process_default());
}

/// A viewer's offer (video and audio to receive), as a browser makes it.
fn viewer_offer() -> String {
    crypto();
    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    api.apply().expect("an offer").0.to_sdp_string()
}

/// A publisher's offer (Opus and H.264 to send).
fn publisher_offer() -> String {
    crypto();
    let mut rtc = str0m::Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_h264(true)
        .build(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    api.apply().expect("an offer").0.to_sdp_string()
}

/// `offer` grown to exactly `len` bytes with session-level attributes nobody reads.
fn padded(offer: &str, len: usize) -> String {
    let at = offer.find("\r\nm=").expect("an m-line") + 2;
    let (session, media) = offer.split_at(at);
    let mut pad = String::new();
    let mut left = len - offer.len();
    while left > 0 {
        // "a=x-pad:" + filler + "\r\n", at least 11 bytes; the last line takes the rest.
        let line = if left >= 200 + 11 { 200 } else { left - 10 };
        pad.push_str("a=x-pad:");
        pad.push_str(&"p".repeat(line.max(1)));
        pad.push_str("\r\n");
        left = len - offer.len() - pad.len();
        if left < 11 && left > 0 {
            // Move the remainder into the last line.
            let cut = pad.len() - 2;
            pad.insert_str(cut, &"p".repeat(left));
            left = 0;
        }
    }
    let out = format!("{session}{pad}{media}");
    assert_eq!(out.len(), len);
    out
}

#[test]
fn offer_size_and_viewers_per_lecture_at_and_over() {
    const LIMIT: usize = 8192;
    let s = Server::start(&format!(
        "[webrtc]\nmax_viewers = 10\nmax_viewers_per_lecture = 2\nmax_offer_bytes = {LIMIT}\n"
    ));
    let _w1 = ffmpeg_publish(&s.rtmp_url("w1"), "320x180", 25, 440);
    let _w2 = ffmpeg_publish(&s.rtmp_url("w2"), "320x180", 25, 660);
    wait_for_segments(&s, "w1", "video", 1);
    wait_for_segments(&s, "w2", "video", 1);
    let offer = viewer_offer();
    let post = |stream: &str, body: &str| {
        let (st, h, b) = send(
            "POST",
            &s.url(&format!("/whep/{stream}")),
            Some("application/sdp"),
            body.as_bytes(),
        );
        (st, h, String::from_utf8_lossy(&b).into_owned())
    };

    // The offer at exactly the limit: answered.
    let (st, _, body) = post("w1", &padded(&offer, LIMIT));
    assert_eq!(st, 201, "{body}");
    // One byte over: 413, logged and counted.
    let (st, _, body) = post("w2", &padded(&offer, LIMIT + 1));
    assert_eq!(st, 413, "{body}");
    wait_until(Duration::from_secs(5), "the refusal logged", || {
        s.log()
            .contains(&format!("body over {LIMIT} bytes (webrtc.max_offer_bytes)"))
            .then_some(())
    });
    // Declared far beyond and never sent: refused by its Content-Length at once.
    let mut c = std::net::TcpStream::connect(s.http).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        c,
        "POST /whep/w2 HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: 1073741824\r\n\r\nv=0\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    c.read_exact(&mut head).expect("an answer before the body");
    assert_eq!(&head[9..12], b"413");
    assert_eq!(limit_hits(&s, "sdp_offer"), 2);

    // Viewers per lecture: w1 has one; a second is the limit; a third gets 503 and the
    // LL-HLS address, while w2 still takes viewers.
    let (st, _, body) = post("w1", &offer);
    assert_eq!(st, 201, "{body}");
    let (st, h, body) = post("w1", &offer);
    assert_eq!(st, 503, "{body}");
    assert_eq!(h["retry-after"], "10");
    assert!(body.contains("/hls/w1/index.m3u8"), "{body}");
    wait_until(Duration::from_secs(5), "the refusal logged", || {
        s.log()
            .contains("2 WebRTC viewers of this lecture (webrtc.max_viewers_per_lecture)")
            .then_some(())
    });
    let (st, _, body) = post("w2", &offer);
    assert_eq!(st, 201, "{body}");
    assert_eq!(limit_hits(&s, "whep_viewers_per_lecture"), 1);
    assert_eq!(limit_hits(&s, "whep_viewers"), 0);
    let api: serde_json::Value =
        serde_json::from_str(&get_text(&s.url("/api/v1/streams/w1"))).unwrap();
    eprintln!("w1 viewers: {}", api["viewers"]);
}

#[test]
fn whip_publishers_at_and_over() {
    let s = Server::start("[webrtc]\nmax_publishers = 2\n");
    let offer = publisher_offer();
    let post = |stream: &str| {
        let (st, _, b) = send(
            "POST",
            &s.url(&format!("/whip/{stream}")),
            Some("application/sdp"),
            offer.as_bytes(),
        );
        (st, String::from_utf8_lossy(&b).into_owned())
    };
    // Two publishers (ICE never completes: they hold their places until connect_timeout).
    for name in ["p1", "p2"] {
        let (st, body) = post(name);
        assert_eq!(st, 201, "{body}");
    }
    // The third: 503 with where to publish instead, logged and counted.
    let (st, body) = post("p3");
    assert_eq!(st, 503, "{body}");
    assert!(body.contains("publish over RTMP or SRT"), "{body}");
    wait_until(Duration::from_secs(5), "the refusal logged", || {
        s.log()
            .contains("WHIP offer refused: too many WebRTC publishers")
            .then_some(())
    });
    assert_eq!(limit_hits(&s, "whip_publishers"), 1);
    // Once the two that never connected are reclaimed, a publisher gets in again.
    wait_until(Duration::from_secs(30), "a place given back", || {
        (post("p4").0 == 201).then_some(())
    });
}
