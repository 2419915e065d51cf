//! 1 + X: an origin and two chained edges (district → town → village), each a separate
//! relay in a network namespace of its own, linked by veth pairs with `tc tbf` rate limits
//! and nftables random drops on the village's line. Viewers on the last edge — headless
//! Chromium over WebRTC (WHEP) and the web player over LL-HLS — hear the dialect they chose
//! while the district–town link is cut for 30 s and restored, and keep their sessions.

mod common;

use std::time::{Duration, Instant};

use common::*;

const TOWN_KEY: &str = "town-edge-key-0123456789";
const VILLAGE_KEY: &str = "village-edge-key-0123456789";

/// GET inside `ns` (the relays' loopback addresses are only reachable from there).
fn curl_in(ns: &Netns, url: &str) -> Option<String> {
    let out = ns
        .command("curl")
        .args(["-sf", "--max-time", "10", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// The dialect's tone, decoded from the relay's LL-HLS rendition inside `ns`.
fn tone_in(ns: &Netns, base: &str, lang: &str) -> f64 {
    tone_hz(&decode_pcm_in(
        Some(ns),
        &format!("{base}/hls/demo/audio-{lang}/index.m3u8"),
        3.0,
    ))
}

#[test]
fn viewers_on_the_second_edge_hear_their_dialect_through_a_cut_origin_link() {
    let (Some(hall), Some(town), Some(village)) = (
        Netns::new("edgeh"),
        Netns::new("edget"),
        Netns::new("edgev"),
    ) else {
        eprintln!("SKIPPED: network namespaces need root (CI runs as root)");
        return;
    };
    // The district's line to the town, and a poorer one to the village that also drops 1 %
    // of packets each way (TCP repairs the relays' pull; WebRTC its own).
    hall.link_via(&town, 2, Some(20_000));
    town.link_via(&village, 3, Some(6_000));
    village.nft(
        "table inet loss {
           chain i { type filter hook input priority 0; iifname \"jr3\" numgen random mod 100 < 1 drop; }
           chain o { type filter hook output priority 0; oifname \"jr3\" numgen random mod 100 < 1 drop; }
         }",
    );
    let origin = Server::start_reachable_in(
        &hall,
        &format!(
            "[demo]\nenabled = true\nwidth = 320\nheight = 180\nfps = 25\nkeyframe_interval = 25\nvideo_kbps = 500\n\
             [edge]\naccept_keys = [\"{TOWN_KEY}\"]\n"
        ),
    );
    // The edges accept nothing they were not told of: only their pull publishes there.
    let town_relay = Server::start_reachable_in(
        &town,
        &format!(
            "[lectures]\nallow_unconfigured = false\n\
             [edge]\norigins = [\"http://10.99.2.1:{}\"]\nkey = \"{TOWN_KEY}\"\naccept_keys = [\"{VILLAGE_KEY}\"]\n",
            origin.http.port()
        ),
    );
    let village_relay = Server::start_reachable_in(
        &village,
        &format!(
            "[lectures]\nallow_unconfigured = false\n\
             [edge]\norigins = [\"http://10.99.3.1:{}\"]\nkey = \"{VILLAGE_KEY}\"\n",
            town_relay.http.port()
        ),
    );
    let base = format!("http://{}", village_relay.http);

    // The first viewer's request starts the pulls down the chain; the multivariant lists
    // every dialect with its language and name.
    let multivariant = wait_until(
        Duration::from_secs(30),
        "the lecture on the village edge",
        || curl_in(&village, &format!("{base}/hls/demo/index.m3u8")),
    );
    for (lang, name) in [("cmn", "普通话"), ("yue", "粤语"), ("hak", "客家话")] {
        assert!(
            multivariant.contains(&format!("NAME=\"{name}\",LANGUAGE=\"{lang}\"")),
            "{lang} missing: {multivariant}"
        );
    }
    // ffmpeg plays whole segments: wait for two.
    wait_until(
        Duration::from_secs(20),
        "segments on the village edge",
        || {
            curl_in(&village, &format!("{base}/hls/demo/audio-hak/index.m3u8"))
                .filter(|p| p.matches("#EXTINF").count() >= 2)
        },
    );
    for (lang, hz) in [("yue", 660.0), ("hak", 880.0)] {
        let heard = tone_in(&village, &base, lang);
        assert!(
            (heard - hz).abs() < 15.0,
            "{lang}: {heard} Hz heard, {hz} sent"
        );
    }
    // The village edge's source is its pull from the town.
    let api = curl_in(&village, &format!("{base}/api/v1/streams/demo")).unwrap();
    assert!(api.contains("\"protocol\":\"edge\""), "{api}");

    // Two viewers on the village edge for the whole cut: WebRTC in Chromium (Hakka), and
    // the web player forced to LL-HLS.
    let shots = screenshot_dir();
    let _browser = browser_lock();
    let watch_s = 58;
    let (webrtc, hls, marked) = std::thread::scope(|scope| {
        let webrtc = scope.spawn(|| {
            node_in(
                Some(&village),
                "whep-play.mjs",
                &[&base, "demo", "hak", "", &watch_s.to_string(), &shots],
                Duration::from_secs(150),
            )
        });
        let hls = scope.spawn(|| {
            node_in(
                Some(&village),
                "hls-watch.mjs",
                &[
                    &format!("{base}/play/demo?mode=hls"),
                    &watch_s.to_string(),
                    &shots,
                ],
                Duration::from_secs(150),
            )
        });
        std::thread::sleep(Duration::from_secs(12));
        // The district–town line goes dead both ways (no reset: packets vanish).
        town.nft(
            "table inet cut {
               chain i { type filter hook input priority 0; iifname \"jr2\" drop; }
               chain o { type filter hook output priority 0; oifname \"jr2\" drop; }
             }",
        );
        let cut = Instant::now();
        std::thread::sleep(Duration::from_secs(30));
        assert!(
            town.command("nft")
                .args(["delete", "table", "inet", "cut"])
                .status()
                .unwrap()
                .success()
        );
        eprintln!("link restored after {:?}", cut.elapsed());
        // The town's renditions show where its pull came back (a new session there); the
        // village's timeline, fed from the town's, runs on.
        let town_video = town_relay.url("/hls/demo/video/index.m3u8");
        let marked = (0..25).any(|_| {
            std::thread::sleep(Duration::from_secs(1));
            curl_in(&town, &town_video).is_some_and(|p| p.contains("#EXT-X-DISCONTINUITY"))
        });
        (webrtc.join().unwrap(), hls.join().unwrap(), marked)
    });

    for (name, log) in [("town", town_relay.log()), ("village", village_relay.log())] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("edge") || l.contains("session"))
            .collect();
        eprintln!("--- {name}:\n{}", lines.join("\n"));
    }
    // WebRTC: connected all along (no new offer), the picture stalled in the cut and came
    // back, and the dialect is still Hakka.
    assert_eq!(webrtc["errors"], serde_json::json!([]), "{webrtc}");
    assert_eq!(webrtc["status"], 201, "{webrtc}");
    let samples = webrtc["samples"].as_array().unwrap();
    assert!(
        samples.iter().all(|x| x["state"] == "connected"),
        "{webrtc}"
    );
    let decoded: Vec<f64> = samples.iter().map(|x| f(&x["framesDecoded"])).collect();
    // Samples come every 0.5 s: the picture stood still for most of the 30 s cut.
    let still = decoded.windows(2).filter(|w| w[1] == w[0]).count();
    eprintln!("WebRTC frames decoded: {decoded:?}");
    assert!(still >= 30, "the cut is not visible: {decoded:?}");
    let tail = &decoded[decoded.len() - 6..];
    assert!(
        tail.windows(2).all(|w| w[1] > w[0]),
        "video did not resume: {decoded:?}"
    );
    assert!(
        (f(&webrtc["hzEnd"]) - 880.0).abs() < 25.0,
        "Hakka not heard at the end: {webrtc}"
    );

    // LL-HLS: the same page played before the cut and again after it, by itself.
    assert_eq!(hls["errors"], serde_json::json!([]), "{hls}");
    let hs = hls["samples"].as_array().unwrap();
    eprintln!("LL-HLS player: {hs:?}");
    let t = |s: &serde_json::Value| f(&s["t"]);
    let before = hs
        .iter()
        .filter(|s| f(&s["wall"]) < 12.0)
        .map(t)
        .fold(0.0, f64::max);
    assert!(before > 2.0, "LL-HLS did not play before the cut: {hls}");
    let end = hs.iter().rev().take(6).collect::<Vec<_>>();
    assert!(
        end.windows(2).all(|w| t(w[0]) > t(w[1])),
        "LL-HLS did not play again after the cut: {hls}"
    );
    assert_eq!(end[0]["state"], "playing", "{hls}");
    assert!(
        marked,
        "no EXT-X-DISCONTINUITY on the town edge after the cut"
    );
    let heard = tone_in(&village, &base, "hak");
    assert!(
        (heard - 880.0).abs() < 15.0,
        "hak after the cut: {heard} Hz"
    );

    // The town saw its pull fail and come back; each relay pulled the lecture once at a
    // time, whatever the number of viewers behind it.
    let town_log = town_relay.log();
    assert!(town_log.contains("pull failed"), "{town_log}");
    eprintln!(
        "town: {} pull sessions, village: {}",
        town_log.matches("pulling from the origin").count(),
        village_relay
            .log()
            .matches("pulling from the origin")
            .count()
    );
    for (name, log) in [("town", &town_log), ("village", &village_relay.log())] {
        assert!(!log.contains("panicked"), "{name}: {log}");
    }
}

#[test]
fn edges_fail_over_pull_on_schedule_stop_when_idle_and_need_the_right_key() {
    let now = jiff::Timestamp::now();
    let at = |s: i64| {
        now.checked_add(jiff::SignedDuration::from_secs(s))
            .unwrap()
            .to_string()
    };
    // A private lesson (playback tokens) beside the demo: edges may not carry it.
    let origin = Server::start(&format!(
        "[demo]\nenabled = true\nwidth = 320\nheight = 180\nfps = 25\nkeyframe_interval = 25\nvideo_kbps = 300\n\
         [edge]\naccept_keys = [\"{TOWN_KEY}\"]\n\
         [[lecture]]\nname = \"board\"\npublish_key = \"board-key-123\"\nvisibility = \"private\"\nstarts_at = \"{}\"\nends_at = \"{}\"\n",
        at(-600),
        at(7200)
    ));
    let good = origin.url("");
    // The programme has the lecture starting in 30 s, in the town of Xihe.
    let (code, _, body) = send(
        "POST",
        &origin.url("/api/v1/halls"),
        Some("application/json"),
        serde_json::json!({"name": "西和讲堂", "town": "西和"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    let hall: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let (code, _, body) = send(
        "POST",
        &origin.url("/api/v1/lectures"),
        Some("application/json"),
        serde_json::json!({"title": "书法课", "stream": "demo", "hall_id": hall["id"],
                           "starts_at": at(30), "ends_at": at(3600)})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    // The first origin listed is down: the edge fails over to the second. It stops pulling
    // 2 s after its last viewer.
    let failover = Server::start(&format!(
        "[lectures]\nallow_unconfigured = false\n\
         [edge]\norigins = [\"http://127.0.0.1:9\", \"{good}\"]\nkey = \"{TOWN_KEY}\"\nidle_stop_s = 2\n"
    ));
    // Pulls the lecture with nobody watching (a kiosk's hall).
    let always = Server::start(&format!(
        "[edge]\norigins = [\"{good}\"]\nkey = \"{TOWN_KEY}\"\nalways = [\"demo\"]\n"
    ));
    // Pulls what the programme says is about to start in its town, and what is not.
    let scheduled = Server::start(&format!(
        "[edge]\norigins = [\"{good}\"]\nkey = \"{TOWN_KEY}\"\nschedule_towns = [\"西和\"]\nschedule_lead_s = 60\n"
    ));
    let elsewhere = Server::start(&format!(
        "[edge]\norigins = [\"{good}\"]\nkey = \"{TOWN_KEY}\"\nschedule_towns = [\"石门\"]\n"
    ));
    // A key the origin does not know.
    let stranger = Server::start(&format!(
        "[edge]\norigins = [\"{good}\"]\nkey = \"not-the-town-key-0123\"\n"
    ));

    let playlist = wait_until(
        Duration::from_secs(30),
        "the lecture through failover",
        || {
            let (code, _, body) = get(&failover.url("/hls/demo/index.m3u8"));
            (code == 200).then(|| String::from_utf8_lossy(&body).into_owned())
        },
    );
    assert!(playlist.contains("LANGUAGE=\"hak\""), "{playlist}");
    assert!(
        failover.log().contains("http://127.0.0.1:9/"),
        "{}",
        failover.log()
    );

    let state = |s: &Server| {
        let (code, _, body) = get(&s.url("/api/v1/streams/demo"));
        (code == 200).then(|| serde_json::from_slice::<serde_json::Value>(&body).unwrap())
    };
    wait_until(
        Duration::from_secs(20),
        "the always-pulled lecture live",
        || state(&always).filter(|v| v["status"] == "live"),
    );

    wait_until(
        Duration::from_secs(20),
        "the scheduled lecture live",
        || state(&scheduled).filter(|v| v["status"] == "live"),
    );
    assert!(state(&elsewhere).is_none(), "another town's edge pulled it");

    // Nobody watches on the failover edge any more: its pull stops and the lecture ends
    // there (no hold: the edge stopped by itself).
    wait_until(Duration::from_secs(20), "the idle pull stopped", || {
        state(&failover).filter(|v| v["status"] == "ended")
    });
    assert!(failover.log().contains("nobody here watches it any more"));
    // The always-pulled one is still live.
    assert_eq!(state(&always).unwrap()["status"], "live");

    // The edge shows the origin's title for the lecture (what a kiosk there shows).
    let title = wait_until(
        Duration::from_secs(10),
        "the origin's title on the edge",
        || state(&always).and_then(|v| v["title"].as_str().map(str::to_string)),
    );
    assert_eq!(title, "演示讲堂 · Demo lecture");
    // A private lesson is not carried by edges: the origin refuses, the edge says why.
    let (code, _, _) = get(&always.url("/hls/board/index.m3u8"));
    assert_eq!(code, 404);
    wait_until(
        Duration::from_secs(10),
        "the protected refusal logged",
        || {
            always
                .log()
                .contains("the origin does not let edges carry this lecture")
                .then_some(())
        },
    );
    assert!(
        origin
            .log()
            .contains("edge refused: the lecture needs a playback token")
    );

    // The stranger's viewer gets nothing; both sides say why.
    let (code, _, _) = get(&stranger.url("/hls/demo/index.m3u8"));
    assert_eq!(code, 404);
    wait_until(Duration::from_secs(10), "the refusal logged", || {
        stranger
            .log()
            .contains("the origin refused this edge (HTTP 403)")
            .then_some(())
    });
    assert!(
        origin
            .log()
            .contains("edge refused: its key is not in edge.accept_keys")
    );
}

#[test]
fn the_origin_lists_its_sites_with_viewers_dialects_and_link_and_flags_those_gone() {
    let origin = Server::start(&format!(
        "[demo]\nenabled = true\nwidth = 320\nheight = 180\nfps = 25\nkeyframe_interval = 25\nvideo_kbps = 300\n\
         [edge]\naccept_keys = [\"{TOWN_KEY}\"]\n\
         [[site]]\ncode = \"town-xihe\"\nname = \"西和镇文化站\"\ntown = \"西和\"\nkind = \"town_institute\"\n\
         [[site]]\ncode = \"school-1\"\nname = \"西和小学\"\ntown = \"西和\"\nkind = \"school\"\ndialect = \"yue\"\n\
         [[site]]\ncode = \"shimen\"\nname = \"石门村\"\ntown = \"西和\"\nkind = \"village_station\"\n"
    ));
    let mut town = Some(Server::start(&format!(
        "[edge]\norigins = [\"{}\"]\nkey = \"{TOWN_KEY}\"\nalways = [\"demo\"]\nsite = \"town-xihe\"\n",
        origin.url("")
    )));
    let town_http = town.as_ref().unwrap().http;
    let roster = || -> serde_json::Value {
        serde_json::from_str(&get_text(&origin.url("/api/v1/streams/demo/sites"))).unwrap()
    };
    let site = |v: &serde_json::Value, code: &str| -> serde_json::Value {
        v["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["code"] == code)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    };
    // Before anything connects, the registered sites are listed as absent.
    assert_eq!(site(&roster(), "shimen")["status"], "absent");

    // Two WebRTC viewers on the town's edge, in two dialects.
    let rt = tokio::runtime::Runtime::new().unwrap();
    wait_until(
        Duration::from_secs(20),
        "the lecture on the town edge",
        || {
            let (code, _, _) = get(&format!("http://{town_http}/hls/demo/video/index.m3u8"));
            (code == 200).then_some(())
        },
    );
    let viewers: Vec<common::whep::Viewer> = ["yue", "hak"]
        .iter()
        .map(|l| {
            rt.block_on(common::whep::Viewer::start_at(
                town_http,
                &format!("/whep/demo?lang={l}"),
            ))
        })
        .collect();
    let town_site = wait_until(Duration::from_secs(20), "the town with its viewers", || {
        let s = site(&roster(), "town-xihe");
        (s["status"] == "connected"
            && s["viewers"] == 2
            && s["link"]["kbps"].as_f64().is_some_and(|k| k > 50.0))
        .then_some(s)
    });
    assert_eq!(town_site["name"], "西和镇文化站");
    assert_eq!(town_site["via"], "edge");
    assert_eq!(town_site["dialects"]["yue"], 1, "{town_site}");
    assert_eq!(town_site["dialects"]["hak"], 1, "{town_site}");
    assert!(
        town_site["link"]["rtt_ms"].as_f64().is_some(),
        "{town_site}"
    );

    // A classroom's player opened as a site, in Chromium, reports itself over its channel.
    let shots = screenshot_dir();
    let page = origin.url("/play/demo?site=school-1&mode=hls&lang=yue");
    let player = {
        let _browser = browser_lock();
        std::thread::scope(|scope| {
            let watcher = scope.spawn(|| {
                node_in(
                    None,
                    "hls-watch.mjs",
                    &[&page, "16", &shots],
                    Duration::from_secs(90),
                )
            });
            let school = wait_until(
                Duration::from_secs(40),
                "the school's player on the roster",
                || {
                    let s = site(&roster(), "school-1");
                    (s["status"] == "connected"
                        && s["modes"][0] == "hls"
                        && s["dialects"]["yue"] == 1)
                        .then_some(s)
                },
            );
            (school, watcher.join().unwrap())
        })
    };
    let (school, watch) = player;
    assert_eq!(watch["errors"], serde_json::json!([]), "{watch}");
    assert_eq!(school["via"], "player");
    assert_eq!(school["viewers"], 1);
    assert!(school["link"]["kbps"].as_f64().is_some(), "{school}");

    // The town's edge goes away: flagged as dropped out (after 15 s without a word), its
    // viewers no longer counted; the school's page closed too.
    drop(viewers);
    town.take();
    let gone = wait_until(Duration::from_secs(40), "the town flagged", || {
        let v = roster();
        (site(&v, "town-xihe")["status"] == "dropped"
            && site(&v, "school-1")["status"] == "dropped")
            .then_some(v)
    });
    assert_eq!(gone["connected"], 0, "{gone}");
    assert_eq!(gone["viewers"], 0, "{gone}");
}
