//! A WebRTC source's Opus reaches WebRTC viewers as it was sent: no Opus → AAC → Opus round
//! trip (a generation of loss and a transcoder per dialect saved), while HLS still gets the
//! AAC made from it. The publisher and interpreter are str0m peers sending Opus packets each
//! unlike any other, so a viewer can tell the very packets sent from a transcoder's. When the
//! lecture's source changes to one without Opus (the hall moves from a browser to OBS over
//! RTMP), a viewer who stays hears its AAC transcoded again.

mod common;

use std::time::Duration;

use common::floods::metric;
use common::whep::{OpusPublisher, Viewer};
use common::*;

/// Waits until the viewer holds `n` Opus packets, and returns them.
fn heard(viewer: &Viewer, n: usize) -> Vec<Vec<u8>> {
    wait_until(Duration::from_secs(20), "the viewer hearing Opus", || {
        let got = viewer.opus();
        (got.len() >= n).then_some(got)
    })
}

#[test]
fn a_whip_publishers_opus_reaches_webrtc_viewers_as_it_was_sent() {
    let s = Server::start("[[lecture]]\nname = \"hall\"\npublish_key = \"hall-key-123\"\n");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let publisher = rt.block_on(OpusPublisher::start(s.http, "/whip/hall", "hall-key-123"));
    // HLS has the sound, as AAC transcoded from the publisher's Opus.
    wait_for_segments(&s, "hall", "audio-cmn", 2);
    let viewer = rt.block_on(Viewer::start(s.http, "hall"));
    let got = heard(&viewer, 150);
    assert!(publisher.connected());
    let foreign = got.iter().filter(|p| !publisher.has_sent(p)).count();
    assert_eq!(
        foreign,
        0,
        "{foreign} of {} packets heard were not the publisher's (transcoded?); it sent {}",
        got.len(),
        publisher.sent()
    );
    // In order, none twice.
    let numbers: Vec<u64> = got
        .iter()
        .map(|p| u64::from_be_bytes(p[1..9].try_into().unwrap()))
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    assert!(metric(&s, "jiangtang_webrtc_opus_passed_through_total") >= 150.0);
    assert!(!s.log().contains("opus encoder started"), "{}", s.log());
    assert!(
        s.log()
            .contains("passed through to WebRTC viewers as it came"),
        "{}",
        s.log()
    );

    // The hall moves to OBS over RTMP (AAC): the viewer stays and hears it transcoded.
    let (status, _, _) = send("DELETE", &s.url(&publisher.location), None, b"");
    assert_eq!(status, 200);
    publisher.stop();
    let _obs = ffmpeg_publish(&s.rtmp_url("hall?key=hall-key-123"), "320x180", 25, 440);
    let before = viewer.opus().len();
    wait_until(
        Duration::from_secs(30),
        "the viewer hearing the RTMP publisher's sound, transcoded",
        || {
            let all = viewer.opus();
            (all[before..]
                .iter()
                .filter(|p| !publisher.has_sent(p))
                .count()
                >= 50)
                .then_some(())
        },
    );
    let log = s.log();
    assert!(
        log.contains("the source's own Opus stopped: transcoding the dialect's AAC again"),
        "{log}"
    );
    assert_eq!(log.matches("opus encoder started").count(), 1, "{log}");
}

#[test]
fn an_interpreters_opus_passes_through_beside_a_transcoded_dialect() {
    let s = Server::start(
        "[[lecture]]\nname = \"xihe\"\npublish_key = \"hall-key-123\"\nlanguage = \"cmn\"\n",
    );
    let _lecture = ffmpeg_publish(&s.rtmp_url("xihe?key=hall-key-123"), "320x180", 25, 440);
    wait_for_segments(&s, "xihe", "video", 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let interpreter = rt.block_on(OpusPublisher::start(
        s.http,
        "/whip/xihe?lang=yue",
        "hall-key-123",
    ));
    wait_for_segments(&s, "xihe", "audio-yue", 1);
    let yue = rt.block_on(Viewer::start_at(s.http, "/whep/xihe?lang=yue"));
    let cmn = rt.block_on(Viewer::start_at(s.http, "/whep/xihe?lang=cmn"));
    let got = heard(&yue, 150);
    let foreign = got.iter().filter(|p| !interpreter.has_sent(p)).count();
    assert_eq!(
        foreign,
        0,
        "{foreign} of {} packets of yue were not the interpreter's",
        got.len()
    );
    // The RTMP publisher's Mandarin is AAC: transcoded, once.
    let cmn_heard = heard(&cmn, 50);
    assert!(cmn_heard.iter().all(|p| !interpreter.has_sent(p)));
    assert_eq!(
        s.log().matches("opus encoder started").count(),
        1,
        "{}",
        s.log()
    );
}
