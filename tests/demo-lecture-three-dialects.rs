//! The built-in demo lecture: a moving test picture and three dialect tracks, cmn 普通话,
//! yue 粤语, hak 客家话, each a tone of its own pitch.

mod common;

use common::*;

#[test]
fn demo_lecture_has_three_audibly_different_dialects() {
    let s = Server::start(
        "[demo]\nenabled = true\nwidth = 320\nheight = 180\nfps = 25\nkeyframe_interval = 50\nvideo_kbps = 400\n",
    );
    wait_for_segments(&s, "demo", "video", 2);
    for d in ["cmn", "yue", "hak"] {
        wait_for_segments(&s, "demo", &format!("audio-{d}"), 2);
    }
    let master = get_text(&s.url("/hls/demo/index.m3u8"));
    let pl = m3u8_rs::parse_master_playlist_res(master.as_bytes()).unwrap();
    let dialects: Vec<_> = pl
        .alternatives
        .iter()
        .map(|a| (a.language.clone().unwrap(), a.name.clone(), a.default))
        .collect();
    assert_eq!(
        dialects,
        [
            ("cmn".to_string(), "普通话".to_string(), true),
            ("yue".to_string(), "粤语".to_string(), false),
            ("hak".to_string(), "客家话".to_string(), false),
        ]
    );
    let res = pl.variants[0].resolution.unwrap();
    assert_eq!((res.width, res.height), (320, 180));

    // Each dialect is a different tone: 440, 660 and 880 Hz by default.
    for (d, expected) in [("cmn", 440.0), ("yue", 660.0), ("hak", 880.0)] {
        let pcm = decode_pcm(&s.url(&format!("/hls/demo/audio-{d}/index.m3u8")), 2.0);
        let hz = tone_hz(&pcm);
        assert!(
            (hz - expected).abs() < 15.0,
            "{d}: heard {hz} Hz, expected {expected}"
        );
    }

    // The picture moves: two decoded frames a second apart differ.
    let out = output_within(
        std::process::Command::new("ffmpeg")
            .args([
                "-nostdin",
                "-v",
                "error",
                "-i",
                &s.url("/hls/demo/video/index.m3u8"),
            ])
            .args([
                "-t",
                "2",
                "-vf",
                "fps=1,scale=64:36",
                "-f",
                "rawvideo",
                "-pix_fmt",
                "gray",
                "-",
            ]),
        std::time::Duration::from_secs(60),
    );
    assert!(out.status.success());
    let frames: Vec<&[u8]> = out.stdout.chunks(64 * 36).collect();
    assert!(frames.len() >= 2);
    assert_ne!(frames[0], frames[1], "the demo picture is frozen");

    let api: serde_json::Value =
        serde_json::from_str(&get_text(&s.url("/api/v1/streams/demo"))).unwrap();
    assert_eq!(api["publisher"]["protocol"], "demo");
    assert_eq!(api["title"], "演示讲堂 · Demo lecture");
}
