//! 1 + X edges: the delay each edge hop adds, and what the origin sends per edge.
//!
//! Starts three release relays on loopback — an origin with the demo lecture (720p25 H.264
//! and three AAC dialects), an edge pulling from it and a second edge pulling from the
//! first — with a counting TCP proxy on each origin–edge link, plus nginx with the shipped
//! HLS cache configuration (`config/nginx/hls-cache.conf`) in front of the origin: the
//! HTTP cache a district would otherwise put at a town. Then, for `--seconds`:
//!
//! - LL-HLS: on each relay (and nginx) a player follows the video rendition by blocking
//!   reload and notes when each keyframe part (`INDEPENDENT=YES`) became available there;
//!   parts are matched across relays by their media bytes, so the delay of a hop is when
//!   the next relay had the same picture minus when the previous one had it.
//! - WebRTC: a str0m WHEP viewer on the origin and on each edge notes when each keyframe
//!   arrived (matched by its bytes): the delay a hop adds for WebRTC viewers.
//! - `--players` LL-HLS players on the last edge; the proxies count the bytes each origin
//!   sends its edge, compared with the lecture's bit rate (video and every dialect).
//!
//!     cargo build --release && cargo run --release -p benches --bin edge-bench -- --seconds 40 --players 50

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use benches::hls_cache::NginxCache;
use benches::proc::Relay;
use clap::Parser;
use str0m::{Event, Input, Output};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Args {
    /// The relay binary.
    #[arg(long, default_value = "target/release/jiangtang")]
    relay: String,
    /// Seconds measured.
    #[arg(long, default_value_t = 40)]
    seconds: u64,
    /// LL-HLS players on the last edge.
    #[arg(long, default_value_t = 50)]
    players: usize,
}

const KEY: &str = "bench-edge-key-0123456789";

/// When each picture (by a hash of its bytes) was first seen.
type Seen = Arc<Mutex<HashMap<u64, Instant>>>;

fn hash(data: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

/// A TCP proxy to `target` counting the bytes it brings back as they pass.
async fn counting_proxy(target: SocketAddr, down: Arc<AtomicU64>) -> anyhow::Result<SocketAddr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let down = down.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(target).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            down.fetch_add(n as u64, Ordering::Relaxed);
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                up.abort();
            });
        }
    });
    Ok(addr)
}

/// Follows `base` (`http://HOST/hls/demo/video/`) until `until`, noting when each keyframe
/// part was available (the first sample's bytes identify it across relays).
async fn watch_hls(base: String, until: Instant, seen: Seen) {
    let c = reqwest::Client::new();
    let get = |url: String| {
        let c = c.clone();
        async move {
            let r = c.get(&url).send().await.ok()?;
            r.status().is_success().then_some(())?;
            r.bytes().await.ok()
        }
    };
    let mut want: Option<(u64, u32)> = None;
    let mut init: Option<(String, media::fmp4::InitTrack)> = None;
    while Instant::now() < until {
        let url = match want {
            Some((m, p)) => format!("{base}index.m3u8?_HLS_msn={m}&_HLS_part={p}"),
            None => format!("{base}index.m3u8"),
        };
        let Some(text) = get(url).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(pl) = media::m3u8_read::read_media(&String::from_utf8_lossy(&text)) else {
            continue;
        };
        let now = Instant::now();
        let new: Vec<_> = match want {
            Some(w) => pl
                .parts
                .iter()
                .filter(|p| (p.msn, p.index) >= w)
                .cloned()
                .collect(),
            None => pl.parts.last().cloned().into_iter().collect(),
        };
        for p in new {
            want = Some((p.msn, p.index + 1));
            if !p.independent {
                continue;
            }
            if init.as_ref().is_none_or(|(m, _)| *m != p.map) {
                let Some(data) = get(format!("{base}{}", p.map)).await else {
                    continue;
                };
                let Ok(t) = media::fmp4::read_init(&data) else {
                    continue;
                };
                init = Some((p.map.clone(), t));
            }
            let Some(data) = get(format!("{base}{}", p.uri)).await else {
                continue;
            };
            let mut next = 0;
            let Some((_, track)) = &init else { continue };
            if let Ok(frames) = media::fmp4::read_fragment(&data, track, &mut next)
                && let Some(f) = frames.first()
            {
                seen.lock().unwrap().entry(hash(&f.data)).or_insert(now);
            }
        }
    }
}

/// A WHEP viewer of `demo` at `http` until `until`, noting when each keyframe arrived
/// (its last 2 KiB identify it: the slice data, whatever parameter sets precede it).
async fn watch_webrtc(http: SocketAddr, until: Instant, seen: Seen) -> anyhow::Result<()> {
    let benches::whep::Offered {
        mut rtc,
        socket,
        local,
        ..
    } = benches::whep::offer(http, "/whep/demo").await?;
    let mut buf = vec![0u8; 2048];
    loop {
        let timeout = loop {
            match rtc.poll_output()? {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Output::Event(Event::MediaData(m))
                    if m.params.spec().codec == str0m::format::Codec::H264
                        && media::h264::split_annexb(&m.data)
                            .any(|n| n.first().is_some_and(|b| b & 0x1f == 5)) =>
                {
                    let tail = &m.data[m.data.len().saturating_sub(2048)..];
                    seen.lock()
                        .unwrap()
                        .entry(hash(tail))
                        .or_insert_with(Instant::now);
                }
                Output::Event(_) => {}
            }
        };
        if Instant::now() > until {
            return Ok(());
        }
        let wait = timeout
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(50));
        let input = tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, source) = r?;
                benches::whep::receive(&buf[..n], source, local)?
            }
            _ = tokio::time::sleep(wait) => Input::Timeout(Instant::now()),
        };
        rtc.handle_input(input)?;
    }
}

/// Delays (ms) from `a` to `b` over the pictures both saw.
fn hop(a: &Seen, b: &Seen) -> Vec<f64> {
    let (a, b) = (a.lock().unwrap(), b.lock().unwrap());
    let mut v: Vec<f64> = a
        .iter()
        .filter_map(|(h, t)| Some(b.get(h)?.saturating_duration_since(*t).as_secs_f64() * 1000.0))
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

fn summary(v: &[f64]) -> String {
    if v.is_empty() {
        return "no picture matched".into();
    }
    format!(
        "{:.0} / {:.0} / {:.0} ms ({} pictures)",
        v[v.len() / 2],
        v[(v.len() * 9 / 10).min(v.len() - 1)],
        v[v.len() - 1],
        v.len()
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let origin = Relay::start_logged(
        &args.relay,
        &[],
        &[
            ("JIANGTANG_DEMO_ENABLED", "true"),
            ("JIANGTANG_EDGE_ACCEPT_KEYS", &format!("[\"{KEY}\"]")),
        ],
    )?;
    let to_edge1 = Arc::new(AtomicU64::new(0));
    let to_edge2 = Arc::new(AtomicU64::new(0));
    let p1 = counting_proxy(origin.http, to_edge1.clone()).await?;
    let edge_env = |origin: SocketAddr| {
        vec![
            (
                "JIANGTANG_EDGE_ORIGINS".to_string(),
                format!("[\"http://{origin}\"]"),
            ),
            ("JIANGTANG_EDGE_KEY".to_string(), KEY.to_string()),
            (
                "JIANGTANG_EDGE_ACCEPT_KEYS".to_string(),
                format!("[\"{KEY}\"]"),
            ),
            (
                "JIANGTANG_EDGE_ALWAYS".to_string(),
                "[\"demo\"]".to_string(),
            ),
        ]
    };
    let env1 = edge_env(p1);
    let env1: Vec<(&str, &str)> = env1.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let edge1 = Relay::start_logged(&args.relay, &[], &env1)?;
    let p2 = counting_proxy(edge1.http, to_edge2.clone()).await?;
    let env2 = edge_env(p2);
    let env2: Vec<(&str, &str)> = env2.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let edge2 = Relay::start_logged(&args.relay, &[], &env2)?;
    let nginx = NginxCache::start(origin.http, &[], "edge-bench")?;
    for r in [&origin, &edge1, &edge2] {
        r.wait_live("demo").await?;
    }
    // The lecture's bit rate: video and every dialect, as the origin advertises them.
    let multivariant = reqwest::get(format!("http://{}/hls/demo/index.m3u8", origin.http))
        .await?
        .text()
        .await?;
    let rates: Vec<f64> = multivariant
        .lines()
        .filter_map(|l| {
            let b = l.split("AVERAGE-BANDWIDTH=").nth(1)?;
            b.split(',').next()?.parse().ok()
        })
        .collect();
    // The video variant's figure covers video + its default audio; add the other dialects.
    let dialects = multivariant.matches("TYPE=AUDIO").count() as f64;
    let (video_and_audio, audio) = (
        rates.first().copied().unwrap_or(0.0),
        rates.get(1).copied().unwrap_or(0.0),
    );
    let lecture_bps = video_and_audio + audio * (dialects - 1.0).max(0.0);

    let until = Instant::now() + Duration::from_secs(args.seconds);
    let hls: Vec<Seen> = (0..4).map(|_| Seen::default()).collect();
    let rtc: Vec<Seen> = (0..3).map(|_| Seen::default()).collect();
    let mut tasks = Vec::new();
    for (seen, host) in hls
        .iter()
        .zip([origin.http, edge1.http, edge2.http, nginx.addr])
    {
        tasks.push(tokio::spawn(watch_hls(
            format!("http://{host}/hls/demo/video/"),
            until,
            seen.clone(),
        )));
    }
    let mut viewers = Vec::new();
    for (seen, host) in rtc.iter().zip([origin.http, edge1.http, edge2.http]) {
        viewers.push(tokio::spawn(watch_webrtc(host, until, seen.clone())));
    }
    for i in 0..args.players {
        let base = if i % 2 == 0 { "video" } else { "audio-yue" };
        tasks.push(tokio::spawn({
            let url = format!("http://{}/hls/demo/{base}/", edge2.http);
            async move {
                benches::hls_cache::follow(url, until).await;
            }
        }));
    }
    // Bytes are counted while the measurement runs, after every pull started.
    let (b1, b2, t0) = (
        to_edge1.load(Ordering::Relaxed),
        to_edge2.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep_until(until.into()).await;
    let secs = t0.elapsed().as_secs_f64();
    let (e1, e2) = (
        (to_edge1.load(Ordering::Relaxed) - b1) as f64 * 8.0 / secs,
        (to_edge2.load(Ordering::Relaxed) - b2) as f64 * 8.0 / secs,
    );
    for t in tasks {
        let _ = t.await;
    }
    for v in viewers {
        if let Err(e) = v.await? {
            eprintln!("a WebRTC viewer failed: {e}");
        }
    }
    println!(
        "## Edges: {} s, {} LL-HLS players on the second edge\n",
        args.seconds, args.players
    );
    println!("Delay a hop adds, p50 / p90 / max (keyframe pictures matched by their bytes):\n");
    println!("| hop | LL-HLS (part available) | WebRTC (keyframe received) |");
    println!("|---|---|---|");
    println!(
        "| origin → edge 1 (jiangtang) | {} | {} |",
        summary(&hop(&hls[0], &hls[1])),
        summary(&hop(&rtc[0], &rtc[1]))
    );
    println!(
        "| edge 1 → edge 2 (jiangtang) | {} | {} |",
        summary(&hop(&hls[1], &hls[2])),
        summary(&hop(&rtc[1], &rtc[2]))
    );
    println!(
        "| origin → nginx cache (shipped hls-cache.conf) | {} | — |",
        summary(&hop(&hls[0], &hls[3]))
    );
    println!(
        "\nThe lecture: {:.2} Mbit/s (video and {} dialects). Sent by the origin to edge 1: {:.2} Mbit/s ({:.2}×); by edge 1 to edge 2: {:.2} Mbit/s ({:.2}×), with {} players behind edge 2.",
        lecture_bps / 1e6,
        dialects,
        e1 / 1e6,
        e1 / lecture_bps,
        e2 / 1e6,
        e2 / lecture_bps,
        args.players
    );
    Ok(())
}
