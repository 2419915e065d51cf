//! What an nginx cache in front of the relay adds to LL-HLS, and what it saves the origin:
//! `config/nginx/hls-cache.conf` as shipped, and the same with a short cache-lock timeout
//! or no cache lock (the alternatives to nginx's 500 ms lock timer), each with `--players` LL-HLS players of
//! the video behind nginx and `--direct` players on the origin as the reference. Every
//! player follows the live edge part by part (a blocking reload for the next part, then the
//! part); for each part, the delay is when a player behind the cache had it minus when the
//! first direct player had it. The origin's requests are counted from nginx's log (each
//! request names the upstream it used, "-" when served from the cache).
//!
//!     cargo build --release --locked && cargo run --release --locked -p benches --bin hls-cache-bench -- --players 200 --seconds 20
//!
//! Needs nginx (scripts/setup.sh installs it). Bounded in players and time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::encode_lecture;
use benches::hls_cache::{NginxCache, follow, gapless};
use benches::proc::Relay;
use benches::publisher::{SendLog, publish};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// The relay binary.
    #[arg(long, default_value = "target/release/jiangtang")]
    relay: String,
    /// Players behind nginx.
    #[arg(long, default_value_t = 200)]
    players: usize,
    /// Players on the origin (the reference).
    #[arg(long, default_value_t = 4)]
    direct: usize,
    /// Seconds per configuration.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tags = Arc::new(benches::flv::read(&encode_lecture(2500)?)?);
    let relay = Relay::start_with(
        &args.relay,
        &[
            ("JIANGTANG_CATALOGUE_ENABLED", "false"),
            ("JIANGTANG_WEBRTC_ENABLED", "false"),
            ("JIANGTANG_RECORDING_ENABLED", "false"),
            // Every player behind nginx comes from 127.0.0.1, and so do they all when the
            // reference runs them on the origin.
            ("JIANGTANG_HTTP_MAX_PER_ADDRESS", "4096"),
        ],
    )?;
    let end = Instant::now() + Duration::from_secs(30 + 6 * (args.seconds + 10));
    let publisher = tokio::spawn(publish(relay.rtmp, "bench", tags, SendLog::default(), end));
    relay.wait_live("bench").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "## LL-HLS through nginx: {} players behind it, {} on the origin, {} s per configuration (parts of 400 ms)\n",
        args.players, args.direct, args.seconds
    );
    println!(
        "| configuration | players with every part | delay vs origin p50 / p90 / p99 / max (ms) | requests to nginx | to the origin | origin requests per part |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, cache) in [
        ("no nginx: every player on the origin", None),
        (
            "shipped (cache lock, 10 s timeout)",
            Some(("on", "10s", "shipped")),
        ),
        ("cache lock, 100 ms timeout", Some(("on", "100ms", "short"))),
        ("cache lock, 450 ms timeout", Some(("on", "450ms", "part"))),
        ("no cache lock", Some(("off", "10s", "nolock"))),
    ] {
        let nginx = match cache {
            Some((lock, timeout, tag)) => Some(NginxCache::start(
                relay.http,
                &[
                    (
                        "proxy_cache_lock_timeout ",
                        &format!("proxy_cache_lock_timeout {timeout};"),
                    ),
                    ("proxy_cache_lock ", &format!("proxy_cache_lock {lock};")),
                ],
                tag,
            )?),
            None => None,
        };
        let until = Instant::now() + Duration::from_secs(args.seconds);
        let mut tasks = Vec::new();
        for i in 0..args.direct + args.players {
            let host = match &nginx {
                Some(n) if i >= args.direct => n.addr,
                _ => relay.http,
            };
            tasks.push(tokio::spawn(follow(
                format!("http://{host}/hls/bench/video/"),
                until,
            )));
        }
        let mut runs = Vec::new();
        for t in tasks {
            runs.push(t.await?);
        }
        let mut first: HashMap<(u64, u64), Instant> = HashMap::new();
        for run in &runs[..args.direct] {
            for (part, at) in run {
                first
                    .entry(*part)
                    .and_modify(|t| *t = (*t).min(*at))
                    .or_insert(*at);
            }
        }
        let mut delays = Vec::new();
        let mut complete = 0;
        for run in &runs[args.direct..] {
            let parts: Vec<(u64, u64)> = run.iter().map(|(p, _)| *p).collect();
            if gapless(&parts) && run.len() >= (args.seconds as usize * 1000 / 400) * 3 / 4 {
                complete += 1;
            }
            for (part, at) in run {
                if let Some(t) = first.get(part) {
                    delays.push(at.saturating_duration_since(*t).as_secs_f64() * 1000.0);
                }
            }
        }
        let parts = first.len().max(1);
        let (requests, origin) = match &nginx {
            Some(n) => {
                let r = n.requests();
                (r.len(), r.iter().filter(|(_, up)| *up).count())
            }
            None => {
                let n = runs[args.direct..].iter().map(|r| 2 * r.len()).sum();
                (n, n)
            }
        };
        println!(
            "| {name} | {complete} of {} | {:.0} / {:.0} / {:.0} / {:.0} | {requests} | {origin} | {:.1} |",
            args.players,
            percentile(&mut delays, 0.5),
            percentile(&mut delays, 0.9),
            percentile(&mut delays, 0.99),
            percentile(&mut delays, 1.0),
            origin as f64 / parts as f64
        );
    }
    publisher.abort();
    Ok(())
}
