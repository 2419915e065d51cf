//! HLS behind a cache: Debian's nginx with the shipped `config/nginx/hls-cache.conf` in
//! front of the relay, and many LL-HLS players (blocking playlist reloads for each next
//! part, then the part, for the video and a dialect) behind it. Every player follows the
//! live edge part by part without a gap, and the origin is asked once for each blocking
//! reload, part and segment however many players ask nginx: counted from nginx's own log,
//! where each request says whether it went upstream. A finished lecture's replay read by many
//! viewers through nginx is read from the origin once, file by file, and arrives intact.
//! And the cache, though it connects from loopback, does not make its clients operators.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use benches::hls_cache::{NginxCache, follow, gapless};
use common::replay::recordings;
use common::*;

const PLAYERS: usize = 40;
const SECONDS: u64 = 10;

#[test]
fn many_players_behind_nginx_cost_the_origin_one_request_per_part() {
    let s = Server::start(
        "[[lecture]]\nname = \"hall\"\nlanguage = \"cmn\"\n[lectures]\nallow_unconfigured = true\n",
    );
    let _lecture = ffmpeg_publish(&s.rtmp_url("hall"), "320x180", 25, 440);
    wait_for_segments(&s, "hall", "video", 2);
    wait_for_segments(&s, "hall", "audio-cmn", 2);
    let nginx = NginxCache::start(s.http, &[], "test").unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let until = Instant::now() + Duration::from_secs(SECONDS);
    let runs: Vec<Vec<(u64, u64)>> = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..PLAYERS {
            let rendition = if i % 2 == 0 { "video" } else { "audio-cmn" };
            let base = format!("http://{}/hls/hall/{rendition}/", nginx.addr);
            tasks.push(tokio::spawn(follow(base, until)));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap().into_iter().map(|(p, _)| p).collect());
        }
        out
    });

    // Every player followed the live edge part by part: no part skipped.
    for (i, run) in runs.iter().enumerate() {
        assert!(
            run.len() >= (SECONDS as usize * 1000 / 400) / 2,
            "player {i} got {} parts in {SECONDS} s: {run:?}\n{}",
            run.len(),
            nginx.error_log()
        );
        assert!(gapless(run), "player {i} skipped a part: {run:?}");
    }

    // The origin was asked once per resource: nginx logs each request with the upstream it
    // used ("-" when served from its cache). The playlists asked for before the players
    // started following (plain reloads) may expire and be asked again; blocking reloads,
    // parts and segments never.
    let log = nginx.requests();
    let requests = log.len();
    let mut upstream: HashMap<String, usize> = HashMap::new();
    for (uri, went_up) in log {
        if went_up {
            *upstream.entry(uri).or_default() += 1;
        }
    }
    let fetched_twice: Vec<_> = upstream
        .iter()
        .filter(|(u, n)| **n > 1 && (u.contains("_HLS_msn") || u.ends_with(".m4s")))
        .collect();
    assert!(
        fetched_twice.is_empty(),
        "asked of the origin more than once: {fetched_twice:?}"
    );
    let parts = upstream.keys().filter(|u| u.contains("/part-")).count();
    let origin_requests: usize = upstream.values().sum();
    eprintln!(
        "{requests} requests to nginx from {PLAYERS} players, {origin_requests} to the origin ({parts} parts)"
    );
    assert!(
        parts >= 2 * (SECONDS as usize * 1000 / 400) / 2,
        "{parts} parts"
    );
    // Each part costs the origin about two requests (the blocking reload and the part)
    // whatever the number of players.
    assert!(
        origin_requests <= parts * 2 + 20,
        "{origin_requests} origin requests for {parts} parts"
    );
    assert!(
        requests >= PLAYERS * parts / 2,
        "{requests} requests for {parts} parts"
    );
}

#[test]
fn a_replay_behind_nginx_is_read_from_the_origin_once() {
    let s = Server::start("[lectures]\ngrace_period_s = 1\n");
    let mut p = ffmpeg_publish_args(&s.rtmp_url("past"), "320x180", 25, 440, &["-t", "6"]);
    assert_eq!(
        p.wait(Duration::from_secs(30)),
        Some(true),
        "ffmpeg published"
    );
    let rec = wait_until(Duration::from_secs(30), "the recording complete", || {
        recordings(&s, "past")
            .into_iter()
            .find(|r| r["state"] == "complete")
    });
    let id = rec["id"].as_str().unwrap().to_string();
    let nginx = NginxCache::start(s.http, &[], "replay").unwrap();

    // What a player of the replay reads: the playlists, the init section, every segment.
    let mut paths = vec![
        format!("/replay/{id}/index.m3u8"),
        format!("/replay/{id}/video/index.m3u8"),
    ];
    let vod = get_text(&s.url(&paths[1]));
    for l in vod.lines() {
        if let Some(uri) = l.strip_prefix("#EXT-X-MAP:URI=\"") {
            paths.push(format!("/replay/{id}/video/{}", uri.trim_end_matches('"')));
        } else if !l.starts_with('#') && !l.is_empty() {
            paths.push(format!("/replay/{id}/video/{l}"));
        }
    }
    assert!(paths.len() >= 5, "{vod}");
    let origin: Vec<Vec<u8>> = paths.iter().map(|p| get(&s.url(p)).2).collect();
    let before = nginx.requests().len();
    let viewers: Vec<_> = (0..20)
        .map(|_| {
            let (paths, cache) = (paths.clone(), nginx.addr);
            std::thread::spawn(move || {
                paths
                    .iter()
                    .map(|p| {
                        let (status, _, body) = get(&format!("http://{cache}{p}"));
                        assert_eq!(status, 200, "{p}");
                        body
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for v in viewers {
        assert_eq!(
            v.join().unwrap(),
            origin,
            "a viewer read something else than the origin has"
        );
    }
    let log = nginx.requests();
    assert_eq!(log.len() - before, 20 * paths.len());
    for p in &paths {
        let up = log.iter().filter(|(u, up)| *up && u == p).count();
        assert_eq!(up, 1, "{p} asked of the origin {up} times");
    }
}

#[test]
fn clients_of_the_cache_on_this_machine_are_not_operators() {
    // No operator token and a lecture without a key: the operator routes answer clients on
    // this machine. nginx on the same machine connects from loopback too, for anyone.
    let s = Server::start("[[lecture]]\nname = \"hall\"\nlanguage = \"cmn\"\n");
    let nginx = NginxCache::start(s.http, &[], "operator").unwrap();
    let path = "/api/v1/streams/hall/questions";
    let (direct, _, body) = get(&format!("http://{}{path}", s.http));
    assert_eq!(direct, 200, "{}", String::from_utf8_lossy(&body));
    let (proxied, _, body) = get(&format!("http://{}{path}", nginx.addr));
    assert_eq!(proxied, 401, "{}", String::from_utf8_lossy(&body));
    // The same holds for whatever proxy names its client, however it does.
    for (name, value) in [
        ("forwarded", "for=198.51.100.7"),
        ("x-real-ip", "198.51.100.7"),
        ("via", "1.1 cache"),
    ] {
        let (st, _, _) = get_with(&format!("http://{}{path}", s.http), &[(name, value)]);
        assert_eq!(st, 401, "{name}");
    }
}
