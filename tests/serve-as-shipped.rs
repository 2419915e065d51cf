//! The README's first command runs `jiangtang serve` with no config file: this starts it
//! exactly so, on the default ports (inside a network namespace of the test's own, so they
//! are free), and checks what the README promises there: the demo lecture live with its three
//! dialects at :8080, the player page, and RTMP publishing on :1935 — of a lecture in the
//! programme, with its key (names nobody configured are refused).

mod common;

use std::time::Duration;

use common::*;

fn curl(ns: &Netns, url: &str) -> Option<String> {
    let out = ns
        .command("curl")
        .args(["-sf", "--max-time", "5", url])
        .output()
        .expect("curl (installed by scripts/setup.sh)");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn serve_without_a_config_file_runs_the_demo_on_the_default_ports() {
    let Some(ns) = Netns::new("shipped") else {
        eprintln!("SKIPPED: a network namespace needs root (CI runs as root)");
        return;
    };
    let s = Server::start_as_shipped_in(&ns);
    assert_eq!(s.http.to_string(), "0.0.0.0:8080");
    assert_eq!(s.rtmp.to_string(), "0.0.0.0:1935");
    // One WebRTC engine per core, on consecutive ports from 8189.
    let engines = std::thread::available_parallelism().map_or(1, |n| n.get()) as u16;
    let mut ports: Vec<u16> = s.webrtc.iter().map(|a| a.port()).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(
        ports,
        (8189..8189 + engines).collect::<Vec<_>>(),
        "{:?}",
        s.webrtc
    );
    let master = wait_until(Duration::from_secs(30), "the demo's playlist", || {
        curl(&ns, "http://127.0.0.1:8080/hls/demo/index.m3u8")
    });
    for (lang, name) in [("cmn", "普通话"), ("yue", "粤语"), ("hak", "客家话")] {
        assert!(
            master.contains(&format!("NAME=\"{name}\",LANGUAGE=\"{lang}\"")),
            "{master}"
        );
    }
    assert!(master.contains("RESOLUTION=1280x720"), "{master}");
    let page = curl(&ns, "http://127.0.0.1:8080/play/demo").expect("the player page");
    assert!(page.contains("<jiangtang-player"), "{page}");
    assert!(curl(&ns, "http://127.0.0.1:8080/healthz").is_some());
    // The programme, in ./jiangtang.db as shipped.
    let categories =
        curl(&ns, "http://127.0.0.1:8080/api/v1/categories").expect("the catalogue's API");
    assert!(categories.contains("理论宣讲"), "{categories}");

    // OBS's and ffmpeg's default RTMP port. Deny by default: a name nobody configured is
    // refused; a lecture of the programme publishes with its own key.
    let publish = |url: &str| {
        Proc(
            ns.command("ffmpeg")
                .args(["-nostdin", "-loglevel", "error", "-re"])
                .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25"])
                .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
                .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "50"])
                .args(["-pix_fmt", "yuv420p", "-c:a", "aac"])
                .args(["-f", "flv", url])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("ffmpeg"),
        )
    };
    let mut refused = publish("rtmp://127.0.0.1/live/hall");
    assert_eq!(
        refused.wait(Duration::from_secs(20)),
        Some(false),
        "an unconfigured name is refused"
    );
    // The operator API answers loopback clients when no operator token is set, but not what
    // a reverse proxy on this machine forwards for someone else.
    let create = |extra: &[&str]| {
        ns.command("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5"])
            .args(["-H", "content-type: application/json"])
            .args(extra)
            .args([
                "-d",
                r#"{"title":"讲堂","stream":"hall","starts_at":"2099-01-01T11:00:00Z","ends_at":"2099-01-01T12:00:00Z"}"#,
                "http://127.0.0.1:8080/api/v1/lectures",
            ])
            .output()
            .unwrap()
    };
    let forwarded = create(&["-H", "x-forwarded-for: 203.0.113.9"]);
    assert_eq!(String::from_utf8_lossy(&forwarded.stdout), "401");
    let created = create(&[]);
    assert!(
        String::from_utf8_lossy(&created.stdout).starts_with('2'),
        "{created:?}"
    );
    let key: serde_json::Value = serde_json::from_str(
        &curl(&ns, "http://127.0.0.1:8080/api/v1/stream-keys/hall").expect("the stream key"),
    )
    .unwrap();
    let key = key["publish_key"].as_str().unwrap();
    let mut publisher = publish(&format!("rtmp://127.0.0.1/live/hall?key={key}"));
    let listed = wait_until(Duration::from_secs(30), "the published lecture", || {
        curl(&ns, "http://127.0.0.1:8080/hls/hall/video/index.m3u8")
            .filter(|t| t.contains("#EXTINF"))
    });
    assert!(listed.contains("#EXT-X-PART:"), "{listed}");
    publisher.stop();
}
