//! HTTPS and WSS built in: pages, the API, LL-HLS and WHEP over HTTPS with HSTS (and plain
//! HTTP beside it without HSTS), read by curl, ffmpeg and headless Chromium; the certificate
//! swapped on SIGHUP and on a file change for new connections while open ones carry on;
//! files that do not load leave the previous certificate in place and are logged.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::http_edge::*;
use common::*;

/// A relay with HTTPS on a loopback port of the OS's choosing, the certificate at
/// `cert`/`key`, files checked every `watch_ms`.
fn start_tls(cert: &Path, key: &Path, watch_ms: u64, extra: &str) -> Server {
    let s = Server::start(&format!(
        "[http.tls]\nlisten = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\nwatch_interval_ms = {watch_ms}\n{extra}",
        cert.display(),
        key.display()
    ));
    assert!(s.https.is_some(), "no https listener: {}", s.log());
    s
}

fn https_url(s: &Server, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", s.https.unwrap().port())
}

/// The files the relay is configured with, in the CA's directory.
fn live_files(ca: &TestCa) -> (PathBuf, PathBuf) {
    (ca.dir.join("live-cert.pem"), ca.dir.join("live-key.pem"))
}

#[test]
fn pages_api_and_hls_over_https_with_hsts_and_plain_http_without() {
    let ca = TestCa::new("pages");
    let (cert, key) = live_files(&ca);
    TestCa::install(&ca.issue("localhost", 1001), &cert, &key);
    let s = start_tls(&cert, &key, 5000, "");
    let _publisher = ffmpeg_publish(&s.rtmp_url("tls1"), "320x180", 25, 440);
    wait_for_segments(&s, "tls1", "video", 2);

    let hsts = "strict-transport-security: max-age=31536000";
    for path in [
        "/healthz",
        "/api/v1/streams/tls1",
        "/play/tls1",
        "/hls/tls1/index.m3u8",
    ] {
        // HTTP/2 by ALPN (curl offers it), and HTTP/1.1.
        for version in ["--http2", "--http1.1"] {
            let (status, head, _) = curl(&https_url(&s, path), Some(&ca.ca()), &[version]);
            assert_eq!(status, 200, "{path} {version}: {head}");
            assert!(head.contains(hsts), "{path} {version} over https: {head}");
            let want = if version == "--http2" {
                "http/2 "
            } else {
                "http/1.1 "
            };
            assert!(head.starts_with(want), "{path} {version}: {head}");
        }
        let (status, head, _) = curl(&s.url(path), None, &[]);
        assert_eq!(status, 200, "{path} over http: {head}");
        assert!(
            !head.contains("strict-transport-security"),
            "HSTS over plain HTTP on {path}: {head}"
        );
    }
    // A media playlist and its newest segment over HTTPS.
    let (_, _, body) = curl(
        &https_url(&s, "/hls/tls1/video/index.m3u8"),
        Some(&ca.ca()),
        &[],
    );
    let pl = m3u8_rs::parse_media_playlist_res(&body).expect("media playlist over https");
    let seg = &pl.segments.last().unwrap().uri;
    let (status, head, bytes) = curl(
        &https_url(&s, &format!("/hls/tls1/video/{seg}")),
        Some(&ca.ca()),
        &[],
    );
    assert_eq!(status, 200, "{head}");
    assert!(head.contains(hsts));
    assert!(bytes.len() > 1000, "segment of {} bytes", bytes.len());
    // A client that does not trust the certificate is refused by its own TLS stack.
    let out = output_within(
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "-o", "/dev/null"])
            .arg(https_url(&s, "/healthz")),
        Duration::from_secs(20),
    );
    assert!(!out.status.success());

    // ffmpeg, a real HLS client, verifying the certificate against the CA: decodes video and
    // audio over HTTPS.
    let out = output_within(
        Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-tls_verify", "1", "-ca_file"])
            .arg(ca.ca())
            .args(["-i", &https_url(&s, "/hls/tls1/index.m3u8")])
            .args(["-t", "3", "-f", "null", "-"]),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "ffmpeg over https: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With HTTPS off (the shipped default) there is no second listener.
    let plain = Server::start("");
    assert!(plain.https.is_none());
}

/// One TLS connection kept open (`openssl s_client`), to send requests on later.
struct OpenConnection {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl OpenConnection {
    fn new(addr: std::net::SocketAddr, ca: &Path) -> OpenConnection {
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-verify_return_error",
                "-servername",
                "localhost",
            ])
            .arg("-connect")
            .arg(addr.to_string())
            .arg("-CAfile")
            .arg(ca)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl (scripts/setup.sh)");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        OpenConnection { child, lines }
    }

    /// GET /healthz on this connection; true when a 200 comes back within 10 s.
    fn healthz(&mut self) -> bool {
        let stdin = self.child.stdin.as_mut().unwrap();
        if stdin
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .and_then(|_| stdin.flush())
            .is_err()
        {
            return false;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while let Ok(l) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        {
            // The previous body has no line end: it comes before the status line.
            if l.contains("HTTP/1.1 200") {
                return true;
            }
        }
        false
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn metric(s: &Server, line: &str) -> u64 {
    let text = get_text(&s.url("/metrics"));
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line} not in /metrics"))
}

#[test]
fn sighup_swaps_the_certificate_for_new_connections_while_open_ones_carry_on() {
    let ca = TestCa::new("hup");
    let (cert, key) = live_files(&ca);
    TestCa::install(&ca.issue("first", 1001), &cert, &key);
    // Files checked only every 10 minutes: the signal is what reloads here. The kept
    // connection waits between its requests longer than the default keep-alive allows.
    let s = start_tls(
        &cert,
        &key,
        600_000,
        "[http]\nheader_read_timeout_ms = 120000\n",
    );
    let addr = s.https.unwrap();
    let seen = served_certificate(addr, &ca.ca());
    assert!(
        seen.contains("CN=first") || seen.contains("CN = first"),
        "{seen}"
    );
    let mut old = OpenConnection::new(addr, &ca.ca());
    assert!(old.healthz(), "first request on the kept connection");

    TestCa::install(&ca.issue("second", 2002), &cert, &key);
    assert!(served_certificate(addr, &ca.ca()).contains("first"));
    let hup = |s: &Server| {
        assert!(
            Command::new("kill")
                .args(["-HUP", &s.pid().to_string()])
                .status()
                .unwrap()
                .success()
        );
    };
    hup(&s);
    let seen = wait_until(Duration::from_secs(10), "the new certificate", || {
        let c = served_certificate(addr, &ca.ca());
        c.contains("second").then_some(c)
    });
    assert!(seen.contains("serial=07D2"), "{seen}");
    assert!(
        old.healthz(),
        "the connection opened before the reload still serves"
    );
    assert!(
        s.log().contains("certificate reloaded (SIGHUP)"),
        "{}",
        s.log()
    );

    // A file that is not PEM: refused, logged, the second certificate stays.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    hup(&s);
    wait_until(Duration::from_secs(10), "the refusal logged", || {
        s.log().contains("no CERTIFICATE in the file").then_some(())
    });
    assert!(served_certificate(addr, &ca.ca()).contains("second"));
    // A certificate with someone else's key: refused, logged, the second certificate stays.
    let third = ca.issue("third", 3003);
    std::fs::copy(&third.0, &cert).unwrap();
    hup(&s);
    wait_until(Duration::from_secs(10), "the mismatch logged", || {
        s.log().contains("does the key belong").then_some(())
    });
    assert!(served_certificate(addr, &ca.ca()).contains("second"));
    assert!(old.healthz());
    assert_eq!(
        metric(&s, "jiangtang_tls_certificate_reloads_total{result=\"ok\"}"),
        1
    );
    assert_eq!(
        metric(
            &s,
            "jiangtang_tls_certificate_reloads_total{result=\"error\"}"
        ),
        2
    );
    // The relay still answers over both listeners.
    assert_eq!(curl(&https_url(&s, "/healthz"), Some(&ca.ca()), &[]).0, 200);
    assert_eq!(get(&s.url("/healthz")).0, 200);
}

#[test]
fn a_changed_file_is_picked_up_without_a_signal_and_a_half_written_one_is_not() {
    let ca = TestCa::new("watch");
    let (cert, key) = live_files(&ca);
    TestCa::install(&ca.issue("first", 1001), &cert, &key);
    let s = start_tls(&cert, &key, 300, "");
    let addr = s.https.unwrap();
    assert!(served_certificate(addr, &ca.ca()).contains("first"));
    // A renewal tool writing the files in place, key first.
    let second = ca.issue("second", 2002);
    TestCa::install(&second, &cert, &key);
    wait_until(Duration::from_secs(10), "the renewed certificate", || {
        served_certificate(addr, &ca.ca())
            .contains("second")
            .then_some(())
    });
    assert!(s.log().contains("certificate reloaded (file changed)"));
    // Half a PEM file (a copy cut short): refused and logged, the second stays.
    let pem = std::fs::read_to_string(&second.0).unwrap();
    std::fs::write(&cert, &pem[..pem.len() / 3]).unwrap();
    wait_until(Duration::from_secs(10), "the refusal logged", || {
        s.log().contains("keeping the previous one").then_some(())
    });
    assert!(served_certificate(addr, &ca.ca()).contains("second"));
    assert_eq!(curl(&https_url(&s, "/healthz"), Some(&ca.ca()), &[]).0, 200);
}

#[test]
fn a_certificate_that_does_not_load_stops_the_start_naming_the_file() {
    let ca = TestCa::new("bad");
    let (cert, key) = live_files(&ca);
    std::fs::write(&cert, "nothing\n").unwrap();
    std::fs::write(&key, "nothing\n").unwrap();
    let dir = std::env::temp_dir().join(format!("jt-badtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("c.toml");
    std::fs::write(
        &conf,
        format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[http.tls]\nlisten = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\n[demo]\nenabled = false\n[catalogue]\nenabled = false\n[rtmp]\nlisten = \"127.0.0.1:0\"\n[srt]\nenabled = false\n[webrtc]\nenabled = false\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let out = output_within(
        Command::new(env!("CARGO_BIN_EXE_jiangtang"))
            .env("NO_COLOR", "1")
            .current_dir(&dir)
            .args(["serve", "--config"])
            .arg(&conf),
        Duration::from_secs(30),
    );
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("[http.tls]") && err.contains("live-cert.pem"),
        "{err}"
    );
}

#[test]
fn chromium_plays_over_https_with_the_live_channel_over_wss_and_whep_and_whip_signalling() {
    let ca = TestCa::new("chromium");
    let (cert, key) = live_files(&ca);
    TestCa::install(&ca.issue("localhost", 1001), &cert, &key);
    let s = start_tls(&cert, &key, 5000, "");
    let _publisher = ffmpeg_publish(&s.rtmp_url("tls2"), "320x180", 25, 440);
    wait_for_segments(&s, "tls2", "video", 2);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "tests/node has no node_modules: run scripts/test.sh, which installs them"
    );
    let _browser = browser_lock();
    let out = output_within(
        Command::new("node").arg(dir.join("https.mjs")).args([
            &format!("https://localhost:{}", s.https.unwrap().port()),
            "tls2",
            &TestCa::spki_hash(&cert),
        ]),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "https.mjs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(r["hsts"], "max-age=31536000", "{r}");
    assert_eq!(r["page"]["secure"], true, "{r}");
    assert_eq!(r["page"]["protocol"], "https:", "{r}");
    assert_eq!(r["page"]["state"], "playing", "{r}");
    let channel = r["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["url"].as_str().unwrap().ends_with("/ws/tls2"))
        .unwrap_or_else(|| panic!("no live channel socket: {r}"));
    assert!(
        channel["url"].as_str().unwrap().starts_with("wss://"),
        "{r}"
    );
    assert!(channel["frames"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["whep"]["status"], 201, "{r}");
    assert_eq!(r["whep"]["applied"], true, "{r}");
    assert_eq!(r["whip"]["status"], 201, "{r}");
    assert_eq!(r["whip"]["applied"], true, "{r}");
    assert!(
        r["whip"]["deleteStatus"]
            .as_u64()
            .is_some_and(|s| (200..300).contains(&s)),
        "{r}"
    );
}
