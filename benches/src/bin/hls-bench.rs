//! HLS load and live-edge delay of the real relay on loopback.
//!
//! Starts `target/release/jiangtang`, publishes a 720p25 H.264 2.5 Mbit/s + AAC lecture over
//! RTMP in real time (a file ffmpeg encodes once), then for each client count runs three
//! load phases — playlist polling, part fetching, and LL-HLS players (blocking reload +
//! parts, video and audio) — while a watcher measures the relay-added live-edge delay: from
//! the moment the publisher sent the frame that completes a part to the moment a blocking
//! playlist reload lists that part. Prints a Markdown report. Bounded in time and count.
//!
//!     cargo build --release && cargo run --release -p benches --bin hls-bench -- --clients 50,200,500 --seconds 10

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use benches::encode_lecture;
use benches::proc::{Relay, cpu_seconds, rss_mib};
use benches::publisher::{SendLog, publish};
use clap::Parser;
use mp4_atom::Decode;

#[derive(Parser)]
struct Args {
    /// The relay binary.
    #[arg(long, default_value = "target/release/jiangtang")]
    relay: String,
    /// Concurrent clients per phase, comma separated.
    #[arg(long, default_value = "50,200,500", value_delimiter = ',')]
    clients: Vec<usize>,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Video bitrate of the published lecture in kbit/s.
    #[arg(long, default_value_t = 2500)]
    kbps: u32,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client")
}

/// `(last msn, last part)` and hint of a media playlist.
fn edge(text: &str) -> Option<((u64, u64), String)> {
    let pos = |uri: &str| -> Option<(u64, u64)> {
        let mut it = uri.trim_end_matches(".m4s").rsplit('-');
        let p = it.next()?.parse().ok()?;
        let m = it.next()?.parse().ok()?;
        Some((m, p))
    };
    let uri_of = |l: &str| {
        l.split("URI=\"")
            .nth(1)
            .and_then(|u| u.split('"').next())
            .map(str::to_string)
    };
    let last = text
        .lines()
        .filter(|l| l.starts_with("#EXT-X-PART:"))
        .filter_map(uri_of)
        .next_back()?;
    let hint = text
        .lines()
        .find(|l| l.starts_with("#EXT-X-PRELOAD-HINT:"))
        .and_then(uri_of)?;
    Some((pos(&last)?, hint))
}

/// `(tfdt, total duration)` of the first fragment in `data`.
fn fragment_times(data: &[u8]) -> Option<(u64, u64)> {
    let mut buf = data;
    let moof = mp4_atom::Moof::decode(&mut buf).ok()?;
    let traf = moof.traf.first()?;
    let d: u64 = traf
        .trun
        .first()?
        .samples
        .iter()
        .map(|e| e.duration.unwrap_or(0) as u64)
        .sum();
    Some((traf.tfdt.as_ref()?.base_media_decode_time, d))
}

/// Watches the live edge with blocking reloads; returns delays in ms of
/// (closing frame sent → part listed, first frame of the part sent → part listed).
async fn watch_edge(base: String, offset: i64, log: SendLog, until: Instant) -> Vec<(f64, f64)> {
    let c = client();
    let mut out = Vec::new();
    let Ok(text) = c.get(format!("{base}index.m3u8")).send().await else {
        return out;
    };
    let Ok(text) = text.text().await else {
        return out;
    };
    let Some((_, mut hint)) = edge(&text) else {
        return out;
    };
    while Instant::now() < until {
        let mut it = hint.trim_end_matches(".m4s").rsplit('-');
        let (Some(p), Some(m)) = (
            it.next().and_then(|v| v.parse::<u64>().ok()),
            it.next().and_then(|v| v.parse::<u64>().ok()),
        ) else {
            break;
        };
        let url = format!("{base}index.m3u8?_HLS_msn={m}&_HLS_part={p}");
        let Ok(r) = c.get(url).send().await else {
            continue;
        };
        let listed = Instant::now();
        let Ok(text) = r.text().await else { continue };
        let Some((last, next_hint)) = edge(&text) else {
            continue;
        };
        if last != (m, p) && last.0 == m {
            // Not the part we asked for (e.g. we fell behind); resync without measuring.
            hint = next_hint;
            continue;
        }
        let part_url = format!("{base}{hint}");
        hint = next_hint;
        let Ok(part) = c.get(part_url).send().await else {
            continue;
        };
        let Ok(part) = part.bytes().await else {
            continue;
        };
        let Some((tfdt, dur)) = fragment_times(&part) else {
            continue;
        };
        let start_ms = ((tfdt as i64 - offset) / 90) as u32;
        let end_ms = ((tfdt as i64 + dur as i64 - offset) / 90) as u32;
        let log = log.lock().expect("lock");
        if let (Some(first), Some(closing)) = (log.get(&start_ms), log.get(&end_ms)) {
            out.push((
                listed.saturating_duration_since(*closing).as_secs_f64() * 1000.0,
                listed.saturating_duration_since(*first).as_secs_f64() * 1000.0,
            ));
        }
    }
    out
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Playlists,
    Parts,
    Players,
}

async fn load(
    phase: Phase,
    n: usize,
    base: String,
    audio: String,
    until: Instant,
    recent: Arc<Mutex<Vec<String>>>,
) -> Arc<Counters> {
    let counters = Arc::new(Counters::default());
    let mut tasks = Vec::new();
    for i in 0..n {
        let (base, audio, counters, recent) = (
            base.clone(),
            audio.clone(),
            counters.clone(),
            recent.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let c = client();
            let fetch = |url: String| {
                let c = c.clone();
                let counters = counters.clone();
                async move {
                    match c.get(url).send().await {
                        Ok(r) if r.status().is_success() => match r.bytes().await {
                            Ok(b) => {
                                counters.requests.fetch_add(1, Ordering::Relaxed);
                                counters.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                                Some(b)
                            }
                            Err(_) => {
                                counters.errors.fetch_add(1, Ordering::Relaxed);
                                None
                            }
                        },
                        _ => {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                            None
                        }
                    }
                }
            };
            match phase {
                Phase::Playlists => {
                    while Instant::now() < until {
                        fetch(format!("{base}index.m3u8")).await;
                    }
                }
                Phase::Parts => {
                    let mut k = i;
                    while Instant::now() < until {
                        let uri = {
                            let r = recent.lock().expect("lock");
                            if r.is_empty() {
                                None
                            } else {
                                Some(r[k % r.len()].clone())
                            }
                        };
                        k += 7;
                        match uri {
                            Some(u) => {
                                fetch(format!("{base}{u}")).await;
                            }
                            None => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                }
                Phase::Players => {
                    // An LL-HLS player: follow the video and one dialect part by part.
                    let mut hints: Vec<(String, String)> = Vec::new();
                    for b in [&base, &audio] {
                        if let Some(t) = fetch(format!("{b}index.m3u8")).await
                            && let Some((_, h)) = edge(&String::from_utf8_lossy(&t))
                        {
                            hints.push((b.clone(), h));
                        }
                    }
                    while Instant::now() < until && !hints.is_empty() {
                        for (b, hint) in hints.iter_mut() {
                            let mut it = hint.trim_end_matches(".m4s").rsplit('-');
                            let (Some(p), Some(m)) =
                                (it.next().map(str::to_string), it.next().map(str::to_string))
                            else {
                                continue;
                            };
                            if let Some(t) =
                                fetch(format!("{b}index.m3u8?_HLS_msn={m}&_HLS_part={p}")).await
                            {
                                fetch(format!("{b}{hint}")).await;
                                if let Some((_, h)) = edge(&String::from_utf8_lossy(&t)) {
                                    *hint = h;
                                }
                            }
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    counters
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let flv = encode_lecture(args.kbps)?;
    let tags = Arc::new(benches::flv::read(&flv)?);
    let relay = Relay::start(&args.relay)?;
    let pid = relay.pid();
    let log: SendLog = Arc::default();
    let total = Duration::from_secs(20 + args.seconds * 3 * args.clients.len() as u64 + 30);
    let end = Instant::now() + total;
    let publisher = tokio::spawn(publish(relay.rtmp, "bench", tags, log.clone(), end));

    let base = format!("http://{}/hls/bench/video/", relay.http);
    let audio = format!("http://{}/hls/bench/audio-cmn/", relay.http);
    let c = client();
    // Wait for three segments, then calibrate lecture time against publisher time with the
    // first segment, which starts at the first keyframe (publisher timestamp 0).
    let deadline = Instant::now() + Duration::from_secs(30);
    let offset = loop {
        if Instant::now() > deadline {
            bail!("no segments from the relay");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(r) = c.get(format!("{base}index.m3u8")).send().await else {
            continue;
        };
        let text = r.text().await?;
        let segs: Vec<&str> = text.lines().filter(|l| l.starts_with("seg-")).collect();
        if segs.len() >= 3 && segs[0].ends_with("-0.m4s") {
            let seg = c
                .get(format!("{base}{}", segs[0]))
                .send()
                .await?
                .bytes()
                .await?;
            break fragment_times(&seg).context("segment 0")?.0 as i64;
        }
    };

    let recent: Arc<Mutex<Vec<String>>> = Arc::default();
    {
        let (recent, base) = (recent.clone(), base.clone());
        tokio::spawn(async move {
            let c = client();
            loop {
                if let Ok(r) = c.get(format!("{base}index.m3u8")).send().await
                    && let Ok(t) = r.text().await
                {
                    let parts: Vec<String> = t
                        .lines()
                        .filter_map(|l| l.strip_prefix("#EXT-X-PART:"))
                        .filter_map(|l| {
                            l.split("URI=\"")
                                .nth(1)?
                                .split('"')
                                .next()
                                .map(str::to_string)
                        })
                        .collect();
                    *recent.lock().expect("lock") = parts;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    println!("## HLS load and live-edge delay\n");
    println!(
        "Lecture: 1280x720 25 fps H.264 {} kbit/s (GOP 2 s) + AAC 128 kbit/s, parts 400 ms, segments 2 s.",
        args.kbps
    );
    println!(
        "Relay: `{}`, {} s per phase; load generator and relay share this machine ({} CPUs).\n",
        args.relay,
        args.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Idle: publishing only.
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let cpu0 = cpu_seconds(pid);
    let mut idle = watch_edge(base.clone(), offset, log.clone(), until).await;
    let idle_cpu = (cpu_seconds(pid) - cpu0) / args.seconds as f64 * 100.0;
    println!(
        "| phase | clients | requests/s | MB/s out | errors | relay CPU % | relay RSS MiB | delay p50 ms (closing frame → part listed) | p99 | delay p50 ms (first frame of part → listed) | p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut first: Vec<f64> = idle.iter().map(|d| d.1).collect();
    let mut closing: Vec<f64> = idle.drain(..).map(|d| d.0).collect();
    println!(
        "| publish only | 0 | – | – | – | {idle_cpu:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
        rss_mib(pid),
        percentile(&mut closing, 0.5),
        percentile(&mut closing, 0.99),
        percentile(&mut first, 0.5),
        percentile(&mut first, 0.99)
    );

    for &n in &args.clients {
        for phase in [Phase::Playlists, Phase::Parts, Phase::Players] {
            let until = Instant::now() + Duration::from_secs(args.seconds);
            let cpu0 = cpu_seconds(pid);
            let started = Instant::now();
            let watcher = tokio::spawn(watch_edge(base.clone(), offset, log.clone(), until));
            let counters = load(phase, n, base.clone(), audio.clone(), until, recent.clone()).await;
            let secs = started.elapsed().as_secs_f64();
            let cpu = (cpu_seconds(pid) - cpu0) / secs * 100.0;
            let delays = watcher.await.unwrap_or_default();
            let mut closing: Vec<f64> = delays.iter().map(|d| d.0).collect();
            let mut first: Vec<f64> = delays.iter().map(|d| d.1).collect();
            println!(
                "| {phase:?} | {n} | {:.0} | {:.1} | {} | {cpu:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                counters.requests.load(Ordering::Relaxed) as f64 / secs,
                counters.bytes.load(Ordering::Relaxed) as f64 / secs / 1e6,
                counters.errors.load(Ordering::Relaxed),
                rss_mib(pid),
                percentile(&mut closing, 0.5),
                percentile(&mut closing, 0.99),
                percentile(&mut first, 0.5),
                percentile(&mut first, 0.99)
            );
        }
    }
    publisher.abort();
    drop(relay);
    Ok(())
}
