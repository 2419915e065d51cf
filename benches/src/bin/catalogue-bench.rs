//! Catalogue benchmark: bookings per second under concurrency on SQLite and PostgreSQL,
//! and `GET /api/v1/lectures` and the front page `/` requests per second with 1,000
//! lectures in the catalogue, against the release binary. See BENCHMARKS.md.

#[path = "../../../catalogue/tests/support/pg.rs"]
mod pg;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use benches::proc::{Relay, cpu_seconds, rss_mib};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// The relay binary.
    #[arg(long, default_value = "target/release/jiangtang")]
    binary: String,
    /// Concurrent clients, comma-separated.
    #[arg(long, default_value = "1,16,64", value_delimiter = ',')]
    clients: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Databases: sqlite-full, sqlite-normal, postgres.
    #[arg(
        long,
        default_value = "sqlite-full,sqlite-normal,postgres",
        value_delimiter = ','
    )]
    databases: Vec<String>,
}

const CATEGORIES: [&str; 5] = ["theory", "education", "culture", "science", "fitness"];

struct Measured {
    ok: u64,
    errors: u64,
    latencies_us: Vec<u64>,
    cpu_pct: f64,
    elapsed: f64,
}

/// Runs `clients` loops of `request(client, i)` for `seconds`; returns what they did.
async fn load<F, Fut>(relay: &Relay, clients: usize, seconds: u64, request: F) -> Measured
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_seconds(relay.pid());
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (request, stop, errors) = (request.clone(), stop.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            // Bounded: stops at the deadline or after 10 million requests.
            while !stop.load(Ordering::Relaxed) && i < 10_000_000 {
                let t = Instant::now();
                if request(c, i).await {
                    lat.push(t.elapsed().as_micros() as u64);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies_us = Vec::new();
    for t in tasks {
        latencies_us.extend(t.await.unwrap_or_default());
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(relay.pid()) - cpu0;
    latencies_us.sort_unstable();
    Measured {
        ok: latencies_us.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        latencies_us,
        cpu_pct: 100.0 * cpu / elapsed,
        elapsed,
    }
}

fn pct(v: &[u64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * p) as usize] as f64 / 1000.0
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let s = r.status().as_u16();
    Ok((
        s,
        serde_json::from_str(&r.text().await?).unwrap_or(Value::Null),
    ))
}

fn row(what: &str, db: &str, clients: usize, m: &Measured, relay: &Relay) {
    println!(
        "| {what} | {db} | {clients} | {:.0} | {} | {:.1} | {:.1} | {:.0} | {:.1} |",
        m.ok as f64 / m.elapsed,
        m.errors,
        pct(&m.latencies_us, 0.5),
        pct(&m.latencies_us, 0.99),
        m.cpu_pct,
        rss_mib(relay.pid()),
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir =
        std::env::temp_dir().join(format!("jiangtang-catalogue-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut cluster = None;
    println!(
        "| what | database | clients | per second | errors | p50 ms | p99 ms | relay CPU % | relay RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for db in &args.databases {
        let mut env: Vec<(&str, String)> = vec![
            (
                "JIANGTANG_CATALOGUE_BOOKINGS_PER_MINUTE",
                "100000000".into(),
            ),
            ("JIANGTANG_CATALOGUE_MAX_CONNECTIONS", "16".into()),
        ];
        match db.as_str() {
            "sqlite-full" | "sqlite-normal" => {
                let file = dir.join(format!("{db}.db"));
                let _ = std::fs::remove_file(&file);
                env.push((
                    "JIANGTANG_CATALOGUE_DATABASE_PATH",
                    format!("\"{}\"", file.display()),
                ));
                let sync = if db == "sqlite-full" {
                    "full"
                } else {
                    "normal"
                };
                env.push((
                    "JIANGTANG_CATALOGUE_SQLITE_SYNCHRONOUS",
                    format!("\"{sync}\""),
                ));
            }
            "postgres" => {
                let c =
                    cluster.get_or_insert_with(|| pg::Cluster::start(pg::Options { fsync: true }));
                env.push((
                    "JIANGTANG_CATALOGUE_DATABASE_URL",
                    format!("\"{}\"", c.database()),
                ));
            }
            other => bail!("unknown database {other}"),
        }
        let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let relay = Relay::start_with(&args.binary, &env_ref)?;
        let base = format!("http://{}", relay.http);
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?;

        for &clients in &args.clients {
            let (s, l) = post(
                &http,
                &format!("{base}/api/v1/lectures"),
                json!({"title": "bench", "stream": format!("bench-{clients}"), "seats": 100000,
                       "starts_at": "2099-01-01T00:00:00Z", "ends_at": "2099-01-01T01:00:00Z"}),
            )
            .await?;
            if s != 201 {
                bail!("creating the lecture: {s} {l}");
            }
            let url = Arc::new(format!("{base}/api/v1/lectures/{}/bookings", l["id"]));
            let http2 = http.clone();
            let m = load(&relay, clients, args.seconds, move |c, i| {
                let (http, url) = (http2.clone(), url.clone());
                async move {
                    let body = json!({"person": format!("c{clients}-{c}-{i}"), "name": "测试"});
                    matches!(post(&http, &url, body).await, Ok((201, _)))
                }
            })
            .await;
            row("booking", db, clients, &m, &relay);
        }

        // The catalogue with 1,000 upcoming lectures, then the list as the front page asks.
        let have = http
            .get(format!("{base}/api/v1/lectures?limit=1000"))
            .send()
            .await?
            .text()
            .await?;
        let have = serde_json::from_str::<Value>(&have)?["lectures"]
            .as_array()
            .map_or(0, |a| a.len());
        let (_, hall) = post(
            &http,
            &format!("{base}/api/v1/halls"),
            json!({"name": "礼堂", "town": "城郊街"}),
        )
        .await?;
        for i in have..1000 {
            let start = 4_102_444_800 + i as i64 * 3600; // 2100-01-01 on, hourly
            let (s, b) = post(
                &http,
                &format!("{base}/api/v1/lectures"),
                json!({"title": format!("讲座 {i}"), "stream": format!("s{}", i % 50), "seats": 80,
                       "category": CATEGORIES[i % 5],
                       "hall_id": hall["id"], "speaker": "老师", "dialects": ["cmn", "yue"],
                       "starts_at": jiff_ts(start), "ends_at": jiff_ts(start + 5400)}),
            )
            .await?;
            if s != 201 {
                bail!("seeding: {s} {b}");
            }
        }
        for (what, path) in [
            ("list 100 of 1,000", "/api/v1/lectures"),
            ("list all 1,000", "/api/v1/lectures?limit=1000"),
            // The page people open: HTML of the first 200 upcoming, grouped by category.
            ("front page / of 1,000", "/"),
            ("front page, one category", "/?category=culture"),
        ] {
            for &clients in &args.clients {
                let url = Arc::new(format!("{base}{path}"));
                let http2 = http.clone();
                let m = load(&relay, clients, args.seconds, move |_, _| {
                    let (http, url) = (http2.clone(), url.clone());
                    async move {
                        match http.get(url.as_str()).send().await {
                            Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                            _ => false,
                        }
                    }
                })
                .await;
                row(what, db, clients, &m, &relay);
            }
        }
        drop(relay);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn jiff_ts(s: i64) -> String {
    jiff::Timestamp::from_second(s)
        .map(|t| t.to_string())
        .unwrap_or_default()
}
