//! WebRTC on every core: viewers spread over several engines (`webrtc.shards`), each on its
//! own UDP port; every viewer plays whichever engine holds it, a dialect switch and DELETE
//! reach the right engine, and each dialect is transcoded to Opus once for all engines.
//! The throughput of two engines against one is a benchmark (BENCHMARKS.md, whep-bench).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::whep::Viewer;
use common::*;

/// The value of a metric line `name value`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn engine_sessions(s: &Server) -> Vec<f64> {
    let m = get_text(&s.url("/metrics"));
    (0..3)
        .map(|k| {
            metric(
                &m,
                &format!("jiangtang_webrtc_engine_sessions{{engine=\"{k}\"}}"),
            )
            .unwrap_or(-1.0)
        })
        .collect()
}

#[test]
fn viewers_spread_over_three_engines_each_plays_and_opus_is_made_once_per_dialect() {
    let s = Server::start("[webrtc]\nshards = 3\n");
    // Three engines, three ports.
    let mut ports: Vec<u16> = s.webrtc.iter().map(|a| a.port()).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 3, "{:?}", s.webrtc);
    let _lecture = common::replay::srt_lecture(&s, "cores", &[("cmn", 440), ("yue", 660)], 120);
    wait_for_segments(&s, "cores", "video", 1);
    wait_for_segments(&s, "cores", "audio-yue", 1);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let viewers: Vec<Viewer> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..6 {
            v.push(Viewer::start(s.http, "cores").await);
        }
        v
    });
    // Two on each engine: the session id names its engine.
    let mut by_engine = BTreeMap::<String, usize>::new();
    for v in &viewers {
        let id = v.location.rsplit('/').next().unwrap();
        *by_engine.entry(id[..2].to_string()).or_default() += 1;
    }
    assert_eq!(
        by_engine,
        BTreeMap::from([("00".into(), 2), ("01".into(), 2), ("02".into(), 2)])
    );
    assert_eq!(engine_sessions(&s), [2.0, 2.0, 2.0]);
    // Every viewer gets picture and sound from its engine.
    wait_until(Duration::from_secs(20), "every viewer playing", || {
        viewers
            .iter()
            .all(|v| v.connected() && v.video_frames() > 25 && v.audio_frames() > 50)
            .then_some(())
    });
    // Both dialects transcoded (a switch is heard at once), each once for all three engines.
    let m = get_text(&s.url("/metrics"));
    assert_eq!(
        metric(&m, "jiangtang_webrtc_opus_transcoders"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        s.log().matches("opus encoder started").count(),
        2,
        "{}",
        s.log()
    );

    // A dialect switch and the session's state reach the engine that holds it.
    let last = &viewers[5].location;
    let (status, _, body) = send(
        "POST",
        &s.url(&format!("{last}/dialect")),
        Some("application/json"),
        br#"{"lang":"yue"}"#,
    );
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
    let info: serde_json::Value = serde_json::from_str(&get_text(&s.url(last))).unwrap();
    assert_eq!(info["lang"], "yue", "{info}");
    assert_eq!(info["connected"], true, "{info}");
    let before = viewers[5].audio_frames();
    wait_until(Duration::from_secs(10), "sound after the switch", || {
        (viewers[5].audio_frames() > before + 50).then_some(())
    });
    // An id no engine could hold is no session.
    let (status, _, _) = get(&s.url("/whep/cores/ff0123456789abcdef0123456789abcd"));
    assert_eq!(status, 404);

    // Everyone leaves: every engine empties and the transcoders stop.
    for v in &viewers {
        let (status, _, _) = send("DELETE", &s.url(&v.location), None, b"");
        assert_eq!(status, 200);
    }
    drop(viewers);
    wait_until(Duration::from_secs(10), "the engines empty", || {
        (engine_sessions(&s) == [0.0, 0.0, 0.0]).then_some(())
    });
    wait_until(Duration::from_secs(10), "the transcoders stopped", || {
        let m = get_text(&s.url("/metrics"));
        (metric(&m, "jiangtang_webrtc_opus_transcoders") == Some(0.0)).then_some(())
    });
    // And come back for the next viewer.
    let again = rt.block_on(Viewer::start(s.http, "cores"));
    wait_until(Duration::from_secs(20), "a new viewer playing", || {
        (again.video_frames() > 25 && again.audio_frames() > 50).then_some(())
    });
}
