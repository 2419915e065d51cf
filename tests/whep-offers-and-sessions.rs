//! WHEP from a Rust client (str0m as the browser side): bad offers get clear errors, the
//! session resource behaves, capacity is enforced, and offers that never complete ICE are
//! all reclaimed with memory back to where it was.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use str0m::media::{Direction, MediaKind};

fn offer(rtc: str0m::Rtc, video: bool, audio: bool) -> String {
    static CRYPTO: OnceLock<()> = OnceLock::new();
    CRYPTO.get_or_init(|| str0m::crypto::from_feature_flags().install_process_default());
    let mut rtc = rtc;
    let mut api = rtc.sdp_api();
    if video {
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    }
    if audio {
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    }
    let (offer, _pending) = api.apply().expect("an offer");
    offer.to_sdp_string()
}

fn browser_like_offer() -> String {
    offer(str0m::Rtc::builder().build(Instant::now()), true, true)
}

/// An offer to receive `n` audio tracks (each its own m-line).
fn offer_of_m_lines(n: usize) -> String {
    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    let mut api = rtc.sdp_api();
    for _ in 0..n {
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    }
    api.apply().expect("an offer").0.to_sdp_string()
}

/// A trickle-ICE fragment of `n` host candidates.
fn candidates(n: usize) -> String {
    let mut frag =
        String::from("a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef0123456789\r\na=mid:0\r\n");
    for i in 0..n {
        frag.push_str(&format!(
            "a=candidate:{i} 1 udp 2130706431 10.0.{}.{} 50000 typ host\r\n",
            i / 250,
            i % 250 + 1
        ));
    }
    frag
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)))
}

fn lecture(s: &Server, name: &str) -> Proc {
    let p = ffmpeg_publish(&s.rtmp_url(&format!("{name}?lang=yue")), "320x180", 25, 440);
    wait_for_segments(s, name, "video", 1);
    p
}

#[test]
fn bad_offers_get_clear_errors() {
    let s = Server::start("");
    let _p = lecture(&s, "w1");
    let url = s.url("/whep/w1");
    let good = browser_like_offer();

    let (status, headers, body) = send("POST", &url, Some("application/sdp"), good.as_bytes());
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    assert!(
        headers["location"]
            .to_str()
            .unwrap()
            .starts_with("/whep/w1/")
    );
    assert_eq!(headers["content-type"], "application/sdp");
    let answer = String::from_utf8(body).unwrap();
    assert!(answer.contains("a=ice-lite"), "{answer}");
    assert!(
        answer.contains("H264/90000") && answer.contains("opus/48000"),
        "{answer}"
    );
    // The candidate of the engine the offer went to: one of ours.
    assert!(
        answer.contains("a=candidate:")
            && s.webrtc.iter().any(|a| answer.contains(&format!(
                " {} {} typ host",
                a.ip(),
                a.port()
            ))),
        "{answer} {:?}",
        s.webrtc
    );

    // (path, content type, body, expected status, text the error must contain)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "/whep/w1",
            Some("text/plain"),
            good.clone().into_bytes(),
            415,
            "application/sdp",
        ),
        (
            "/whep/w1",
            Some("application/sdp"),
            b"v=0\r\nthis is not sdp\r\n".to_vec(),
            400,
            "malformed SDP",
        ),
        (
            "/whep/w1",
            Some("application/sdp"),
            vec![0xff, 0xfe, 0x00],
            400,
            "UTF-8",
        ),
        (
            "/whep/w1",
            Some("application/sdp"),
            "a=x\r\n".repeat(20_000).into_bytes(),
            413,
            "",
        ),
        (
            "/whep/nope",
            Some("application/sdp"),
            good.clone().into_bytes(),
            404,
            "no live lecture",
        ),
        // Media sections cost the engine for the session's life: a few are enough.
        (
            "/whep/w1",
            Some("application/sdp"),
            offer_of_m_lines(9).into_bytes(),
            400,
            "9 m-lines; at most 8",
        ),
        (
            "/whep/w1",
            Some("application/sdp"),
            offer_of_m_lines(60).into_bytes(),
            400,
            "60 m-lines",
        ),
        (
            "/whep/w1?lang=hak",
            Some("application/sdp"),
            good.clone().into_bytes(),
            400,
            "no dialect hak",
        ),
        (
            "/whep/w1?lang=../x",
            Some("application/sdp"),
            good.clone().into_bytes(),
            400,
            "invalid language",
        ),
    ];
    for (path, ct, body, expected, says) in cases {
        let (status, _, answer) = send("POST", &s.url(path), ct, &body);
        assert_eq!(
            status,
            expected,
            "{path}: {}",
            String::from_utf8_lossy(&answer)
        );
        if !says.is_empty() {
            let text = String::from_utf8_lossy(&answer);
            assert!(text.contains(says), "{path}: {text}");
        }
    }

    // Only codecs we cannot send (VP8 video, PCMU audio).
    let vp8 = offer(
        str0m::Rtc::builder()
            .clear_codecs()
            .enable_vp8(true)
            .enable_pcmu(true, false)
            .build(Instant::now()),
        true,
        true,
    );
    let (status, _, body) = send("POST", &url, Some("application/sdp"), vp8.as_bytes());
    assert_eq!(status, 406, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("neither H.264"));

    // CORS preflight for a player on another origin.
    let (status, headers, _) = send("OPTIONS", &url, None, b"");
    assert!(status == 200 || status == 204, "{status}");
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert_eq!(headers["accept-post"], "application/sdp");

    // Each refusal left a log line with its reason; the relay and the lecture are fine.
    for reason in [
        "WHEP offer refused: malformed SDP",
        "WHEP offer refused: the offer has neither H.264",
        "WHEP offer refused: no live lecture",
    ] {
        assert!(s.log().contains(reason), "log lacks {reason:?}");
    }
    assert_eq!(get(&s.url("/healthz")).0, 200);
}

#[test]
fn session_resource_delete_patch_dialect_and_etag() {
    let s = Server::start("");
    let _p = lecture(&s, "w2");
    let (status, headers, _) = send(
        "POST",
        &s.url("/whep/w2"),
        Some("application/sdp"),
        browser_like_offer().as_bytes(),
    );
    assert_eq!(status, 201);
    let location = headers["location"].to_str().unwrap().to_string();
    let etag = headers["etag"].to_str().unwrap().to_string();
    let api = json(&get(&s.url("/api/v1/streams/w2")).2);
    assert_eq!(api["webrtc_viewers"]["yue"], 1);

    let info = json(&get(&s.url(&location)).2);
    assert_eq!(info["lang"], "yue");
    assert_eq!(info["connected"], false);

    let frag = "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef0123456789\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n";
    let patch = |tag: Option<&str>, body: &str, ct: &str| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut r = reqwest::Client::new()
                .patch(s.url(&location))
                .header("content-type", ct)
                .body(body.to_string());
            if let Some(t) = tag {
                r = r.header("if-match", t);
            }
            r.send().await.unwrap().status().as_u16()
        })
    };
    assert_eq!(
        patch(Some(&etag), frag, "application/trickle-ice-sdpfrag"),
        204
    );
    assert_eq!(
        patch(Some("\"other\""), frag, "application/trickle-ice-sdpfrag"),
        412
    );
    assert_eq!(patch(None, frag, "application/sdp"), 415);
    assert_eq!(
        patch(
            None,
            "a=ice-ufrag:new\r\na=ice-pwd:newnewnewnewnewnewnewnew\r\n",
            "application/trickle-ice-sdpfrag"
        ),
        501
    );
    assert_eq!(
        patch(
            None,
            "a=candidate:garbage\r\n",
            "application/trickle-ice-sdpfrag"
        ),
        400
    );
    // Candidates are taken (and, ICE-lite, not used) up to a cap per PATCH.
    assert_eq!(
        patch(None, &candidates(64), "application/trickle-ice-sdpfrag"),
        204
    );
    assert_eq!(
        patch(None, &candidates(65), "application/trickle-ice-sdpfrag"),
        400
    );

    let (status, _, body) = send(
        "POST",
        &s.url(&format!("{location}/dialect")),
        Some("application/json"),
        br#"{"lang":"cmn"}"#,
    );
    assert_eq!(
        status,
        400,
        "cmn is not in this lecture: {}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, _) = send(
        "POST",
        &s.url(&format!("{location}/dialect")),
        Some("application/json"),
        b"{oops",
    );
    assert_eq!(status, 400);

    assert_eq!(send("DELETE", &s.url(&location), None, b"").0, 200);
    assert_eq!(send("DELETE", &s.url(&location), None, b"").0, 404);
    assert_eq!(get(&s.url(&location)).0, 404);
    assert_eq!(patch(None, frag, "application/trickle-ice-sdpfrag"), 404);
    wait_until(Duration::from_secs(5), "the viewer count to drop", || {
        let api = json(&get(&s.url("/api/v1/streams/w2")).2);
        (api["webrtc_viewers"]["yue"] == 0).then_some(())
    });
}

#[test]
fn capacity_is_enforced_with_503() {
    let s = Server::start("[webrtc]\nmax_viewers = 3\n");
    let _p = lecture(&s, "w3");
    let offer = browser_like_offer();
    for _ in 0..3 {
        assert_eq!(
            send(
                "POST",
                &s.url("/whep/w3"),
                Some("application/sdp"),
                offer.as_bytes()
            )
            .0,
            201
        );
    }
    let (status, headers, body) = send(
        "POST",
        &s.url("/whep/w3"),
        Some("application/sdp"),
        offer.as_bytes(),
    );
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "10");
    assert!(String::from_utf8_lossy(&body).contains("/hls/w3/index.m3u8"));
}

#[test]
fn thousand_offers_that_never_connect_are_reclaimed() {
    let s = Server::start(
        "[webrtc]\nmax_viewers = 2000\nmax_viewers_per_lecture = 2000\nconnect_timeout_ms = 2000\n",
    );
    let _p = lecture(&s, "w4");
    let offer = browser_like_offer();
    let metric = |name: &str| -> u64 {
        let text = get_text(&s.url("/metrics"));
        text.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    };
    let metrics = |name: &str| metric(&format!("jiangtang_webrtc_{name}_total"));
    let heap_mib = || metric("jiangtang_heap_allocated_bytes") as f64 / 1048576.0;
    std::thread::sleep(Duration::from_secs(1));
    let baseline = s.rss_mib();
    let heap_baseline = heap_mib();
    let mut heaps = Vec::new();
    let mut rss_after = Vec::new();
    for round in 1..=3u64 {
        let started = Instant::now();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let created = rt.block_on(async {
            let client = reqwest::Client::new();
            let mut ok = 0;
            for _ in 0..20 {
                let mut tasks = Vec::new();
                for _ in 0..50 {
                    let req = client
                        .post(s.url("/whep/w4"))
                        .header("content-type", "application/sdp")
                        .body(offer.clone())
                        .send();
                    tasks.push(tokio::spawn(req));
                }
                for t in tasks {
                    if t.await.unwrap().unwrap().status() == 201 {
                        ok += 1;
                    }
                }
            }
            ok
        });
        drop(rt);
        assert_eq!(created, 1000);
        let peak = s.rss_mib();
        let heap_peak = heap_mib();
        wait_until(Duration::from_secs(20), "all sessions reclaimed", || {
            (metrics("sessions_ended") >= 1000 * round).then_some(())
        });
        eprintln!("round {round}: reclaimed after {:?}", started.elapsed());
        assert_eq!(metrics("sessions_timed_out"), 1000 * round);
        std::thread::sleep(Duration::from_secs(1));
        let heap_after = heap_mib();
        eprintln!(
            "round {round}: heap in use {heap_baseline:.1} -> {heap_peak:.1} with 1000 pending offers -> {heap_after:.1} MiB; RSS {baseline:.1} -> {peak:.1} -> {:.1} MiB",
            s.rss_mib()
        );
        heaps.push(heap_after);
        rss_after.push(s.rss_mib());
    }
    let api = json(&get(&s.url("/api/v1/streams/w4")).2);
    assert_eq!(api["webrtc_viewers"]["yue"], 0);
    // Every reclaimed session gave its memory back: the heap in use is at its baseline
    // after each burst (a few MiB of caches and logs aside), not growing burst by burst.
    for h in &heaps {
        assert!(
            *h < heap_baseline + 4.0,
            "heap not back to baseline: {heap_baseline:.1} -> {heaps:?} MiB"
        );
    }
    // The first burst maps code and libraries (DTLS, the Opus encoders) once; after it the
    // process does not grow from burst to burst.
    assert!(
        rss_after[2] < rss_after[0] + 10.0,
        "RSS grows burst after burst: {rss_after:?} MiB"
    );
    // The lecture kept going throughout.
    assert_eq!(get(&s.url("/healthz")).0, 200);
}
