//! The web player's cost to a viewer: the size of `/player.js` (raw and gzip, as served) and
//! the time from opening `/play/demo` to the first frame in headless Chromium, in each mode
//! (auto = WebRTC, LL-HLS, audio only), each run in a fresh browser context (empty cache).
//!
//! Starts `target/release/jiangtang` with its demo lecture and drives Debian's Chromium
//! through `tests/node/player.mjs ttff` (install with `scripts/test.sh` first). Bounded:
//! `--runs` page loads per mode, each with a 30 s limit.
//!
//!     cargo build --release && cargo run --release -p benches --bin player-bench -- --runs 7

use std::process::Command;

use anyhow::{Context, bail};
use benches::proc::Relay;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// The relay binary.
    #[arg(long, default_value = "target/release/jiangtang")]
    relay: String,
    /// Page loads per mode.
    #[arg(long, default_value_t = 7)]
    runs: u32,
    /// Budget for `/player.js` as served with gzip, KiB (the bench fails above it).
    #[arg(long, default_value_t = 210)]
    budget_gzip_kib: usize,
    /// The player driver script.
    #[arg(long, default_value = "tests/node/player.mjs")]
    driver: String,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let relay = Relay::start_with(&args.relay, &[("JIANGTANG_DEMO_ENABLED", "true")])?;
    relay.wait_live("demo").await?;
    let c = reqwest::Client::new();

    // The bundle as a browser receives it.
    let url = format!("http://{}/player.js", relay.http);
    let raw = c.get(&url).send().await?.bytes().await?.len();
    let gz = c.get(&url).header("accept-encoding", "gzip").send().await?;
    let encoding = gz
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let gz = gz.bytes().await?.len();
    println!("/player.js: {raw} bytes raw, {gz} bytes with content-encoding {encoding:?}");
    if encoding.as_deref() != Some("gzip") {
        bail!("/player.js was not served with gzip");
    }
    if gz > args.budget_gzip_kib * 1024 {
        bail!(
            "/player.js is {} KiB gzip, over its budget of {} KiB",
            gz / 1024,
            args.budget_gzip_kib
        );
    }

    let out = Command::new("node")
        .arg(&args.driver)
        .args([
            "ttff",
            &format!("http://{}", relay.http),
            "demo",
            "/tmp",
            &args.runs.to_string(),
        ])
        .output()
        .context("running node (install with scripts/test.sh)")?;
    if !out.status.success() {
        bail!(
            "player driver failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("driver output: {}", String::from_utf8_lossy(&out.stdout)))?;
    if r["errors"].as_array().is_some_and(|e| !e.is_empty()) {
        bail!("page errors: {}", r["errors"]);
    }
    println!(
        "| mode asked | engine used | runs | first frame median | p90 | min | max | bytes fetched (median) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for mode in ["auto", "hls", "audio"] {
        let runs = r["ttff"][mode].as_array().context("no runs")?;
        let mut ms: Vec<f64> = runs.iter().filter_map(|x| x["ms"].as_f64()).collect();
        let mut bytes: Vec<f64> = runs
            .iter()
            .filter_map(|x| x["transferred"].as_f64())
            .collect();
        ms.sort_by(f64::total_cmp);
        bytes.sort_by(f64::total_cmp);
        if ms.is_empty() {
            bail!("no measurements for {mode}");
        }
        println!(
            "| {mode} | {} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} KiB |",
            runs[0]["mode"].as_str().unwrap_or("?"),
            ms.len(),
            percentile(&ms, 0.5),
            percentile(&ms, 0.9),
            ms[0],
            ms[ms.len() - 1],
            percentile(&bytes, 0.5) / 1024.0,
        );
    }
    drop(relay);
    Ok(())
}
