//! No secret reaches the log (issue 12 item 6): publish keys sent in every place an encoder
//! may put them — an RTMP publish name's query, an RTMP app and tcUrl, an SRT stream id in
//! both syntaxes, refused for a wrong key or a wrong mode — never appear in the relay's log,
//! even at debug level, while the refusals themselves are logged.

mod common;

use std::time::Duration;

use common::rtmp::RawClient;
use common::*;
use ingest::rtmp::amf0::{self, Amf0};

const RIGHT_KEY: &str = "hall-key-SECRET-0001";

#[test]
fn keys_are_never_logged_even_at_debug_level() {
    let s = Server::start(&format!(
        "# test: RUST_LOG=debug\n\
         [lectures]\nallow_unconfigured = false\n\n\
         [[lecture]]\nname = \"xihe\"\npublish_key = \"{RIGHT_KEY}\"\n\n\
         [[lecture]]\nname = \"srtl\"\npublish_key = \"srt-key-SECRET-0002\"\n"
    ));

    // RTMP, a wrong key in the publish name's query (as OBS sends "xihe?key=...").
    let mut wrong = ffmpeg_publish(
        &s.rtmp_url("xihe?key=wrong-SECRET-0003"),
        "320x180",
        25,
        440,
    );
    assert_eq!(wrong.wait(Duration::from_secs(20)), Some(false), "refused");

    // RTMP, a key in the application name and the tcUrl (a mistyped server URL).
    let mut c = RawClient::connect(s.rtmp);
    let text = |x: &str| Amf0::String(x.into());
    c.command(
        0,
        &[
            text("connect"),
            Amf0::Number(1.0),
            amf0::object([
                ("app", text("live?key=app-SECRET-0004")),
                ("tcUrl", text("rtmp://127.0.0.1/live?key=app-SECRET-0004")),
            ]),
        ],
    )
    .unwrap();
    // It never publishes: closed at the handshake timeout (10 s).
    assert!(closed_by_peer(&mut c.stream, Duration::from_secs(30)));

    // SRT: a playback (request) id carrying the key, and a wrong key in the short form.
    for id in [
        "#!::r=srtl,m=request,s=srt-SECRET-0005",
        "publish:srtl:wrong-SECRET-0006",
    ] {
        let mut ff = Proc(
            ffmpeg_srt(&srt_url(&s, id, "&timeout=3000000"), &[("cmn", 440)], &[])
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        assert_eq!(
            ff.wait(Duration::from_secs(20)),
            Some(false),
            "{id} refused"
        );
    }

    // And the right key publishes (the refusals above were not for want of a lecture).
    let _ok = ffmpeg_publish(
        &s.rtmp_url(&format!("xihe?key={RIGHT_KEY}")),
        "320x180",
        25,
        440,
    );
    wait_for_segments(&s, "xihe", "video", 1);

    let log = s.log();
    for said in [
        "rtmp connect",
        "tc_url=rtmp://127.0.0.1/live?key=***",
        "did not publish",
        "needs a valid key",
        "srt caller refused",
    ] {
        assert!(log.contains(said), "the log should say {said:?}:\n{log}");
    }
    assert!(
        !log.contains("SECRET"),
        "a key reached the log:\n{}",
        log.lines()
            .filter(|l| l.contains("SECRET"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
