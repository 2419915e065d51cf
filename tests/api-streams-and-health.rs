//! `GET /api/v1/streams` lists live lectures with their tracks; `/healthz` answers; publish
//! keys from the configuration are enforced.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn api_lists_lectures_with_track_details() {
    let s = Server::start("");
    let (status, _, body) = get(&s.url("/healthz"));
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["status"], "ok");
    let empty: serde_json::Value =
        serde_json::from_str(&get_text(&s.url("/api/v1/streams"))).unwrap();
    assert_eq!(empty["streams"].as_array().unwrap().len(), 0);

    let _p = ffmpeg_publish(&s.rtmp_url("api-test?lang=yue"), "640x360", 30, 440);
    wait_for_segments(&s, "api-test", "video", 3);
    wait_for_segments(&s, "api-test", "audio-yue", 3);
    let all: serde_json::Value =
        serde_json::from_str(&get_text(&s.url("/api/v1/streams"))).unwrap();
    let lecture = &all["streams"][0];
    assert_eq!(lecture["name"], "api-test");
    assert_eq!(lecture["status"], "live");
    assert_eq!(lecture["publisher"]["protocol"], "rtmp");
    assert!(
        lecture["publisher"]["remote"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(lecture["hls"], "/hls/api-test/index.m3u8");
    let tracks = lecture["tracks"].as_array().unwrap();
    let video = tracks.iter().find(|t| t["kind"] == "video").unwrap();
    assert_eq!(video["codec"], "H.264");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(640), Some(360))
    );
    let fps = video["fps"].as_f64().unwrap();
    assert!((fps - 30.0).abs() < 0.5, "fps {fps}");
    let vbps = video["bitrate"].as_u64().unwrap();
    assert!((200_000..2_000_000).contains(&vbps), "video bitrate {vbps}");
    let audio = tracks.iter().find(|t| t["kind"] == "audio").unwrap();
    assert_eq!(audio["codec"], "AAC");
    assert_eq!(audio["language"], "yue");
    assert_eq!(audio["name"], "粤语");
    assert_eq!(audio["sample_rate"], 48_000);
    assert_eq!(audio["channels"], 2);
    let abps = audio["bitrate"].as_u64().unwrap();
    assert!((40_000..120_000).contains(&abps), "audio bitrate {abps}");
    assert_eq!(get(&s.url("/api/v1/streams/nope")).0, 404);
    let health: serde_json::Value = serde_json::from_slice(&get(&s.url("/healthz")).2).unwrap();
    assert_eq!(health["live_lectures"], 1);
}

#[test]
fn publish_keys_are_enforced() {
    let s = Server::start(
        "[[lecture]]\nname = \"xihe\"\ntitle = \"西和讲堂 书法课\"\npublish_key = \"k3y-for-xihe-hall\"\nlanguage = \"yue\"\n",
    );
    // Without the key, and with a wrong one, ffmpeg is refused and gives up.
    for url in [s.rtmp_url("xihe"), s.rtmp_url("xihe?key=wrong-key-1234")] {
        let mut p = ffmpeg_publish(&url, "320x180", 25, 440);
        assert_eq!(
            p.wait(Duration::from_secs(10)),
            Some(false),
            "{url} was not refused"
        );
    }
    assert!(s.log().contains("publishing \"xihe\" needs a valid key"));
    assert_eq!(get(&s.url("/hls/xihe/index.m3u8")).0, 404);
    // With it, the lecture is live, with its configured title and dialect.
    let _p = ffmpeg_publish(
        &s.rtmp_url("xihe?key=k3y-for-xihe-hall"),
        "320x180",
        25,
        440,
    );
    wait_for_segments(&s, "xihe", "audio-yue", 1);
    let api: serde_json::Value =
        serde_json::from_str(&get_text(&s.url("/api/v1/streams/xihe"))).unwrap();
    assert_eq!(api["title"], "西和讲堂 书法课");
    // The key never shows up in the API or the logs.
    assert!(!get_text(&s.url("/api/v1/streams")).contains("k3y-for-xihe-hall"));
    assert!(!s.log().contains("k3y-for-xihe-hall"));
}
