//! What recording costs: the relay's CPU with N lectures published over RTMP in real time,
//! recording off and on, and the same with nginx-rtmp (`record all`, FLV files), the relay a
//! district would otherwise run, in the same run on the same machine. Prints a Markdown
//! table. Bounded in time.
//!
//!     cargo build --release && cargo run --release -p benches --bin record-bench -- --lectures 1,4 --seconds 20

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use benches::encode_lecture;
use benches::proc::{Relay, cpu_seconds, rss_mib};
use benches::publisher::publish;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// The relay binary.
    #[arg(long, default_value = "target/release/jiangtang")]
    relay: String,
    /// Lectures published at once, comma separated.
    #[arg(long, default_value = "1,4", value_delimiter = ',')]
    lectures: Vec<usize>,
    /// Seconds measured per phase (after 4 s of warm-up).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Video bitrate of each lecture in kbit/s.
    #[arg(long, default_value_t = 2500)]
    kbps: u32,
    /// nginx (with the RTMP module in /usr/lib/nginx/modules).
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: String,
}

/// A fresh folder under the temp folder, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> anyhow::Result<Scratch> {
        let p = std::env::temp_dir().join(format!(
            "jiangtang-record-bench-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(p) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// nginx with the RTMP module, one process (no master), on a port of its own.
struct Nginx {
    child: Child,
    rtmp: std::net::SocketAddr,
}

impl Nginx {
    fn start(binary: &str, dir: &Path, record: bool) -> anyhow::Result<Nginx> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let rec_dir = dir.join("rec");
        std::fs::create_dir_all(&rec_dir)?;
        let record = if record {
            format!(
                "record all; record_path {}; record_unique on;",
                rec_dir.display()
            )
        } else {
            "record off;".into()
        };
        let conf = format!(
            "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\n\
             daemon off; master_process off; worker_processes 1;\n\
             error_log stderr warn; pid {dir}/nginx.pid;\n\
             events {{ worker_connections 1024; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096;\n\
               application live {{ live on; {record} }} }} }}\n",
            dir = dir.display()
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf)?;
        let child = Command::new(binary)
            .args(["-p", &dir.display().to_string(), "-c"])
            .arg(&path)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| {
                format!("starting {binary} (scripts/setup.sh installs nginx and libnginx-mod-rtmp)")
            })?;
        let rtmp = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(rtmp).is_err() {
            if Instant::now() > deadline {
                bail!("nginx did not listen on {rtmp}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Nginx { child, rtmp })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Row {
    server: &'static str,
    lectures: usize,
    recording: bool,
    cpu_pct: f64,
    rss: f64,
    written_mb_s: f64,
}

/// Publishes `n` lectures to `rtmp` for warm-up + `seconds`, and measures `pid` over the
/// last `seconds`: CPU %, and MB/s that appeared under `written` (when given).
async fn measure(
    rtmp: std::net::SocketAddr,
    pid: u32,
    n: usize,
    seconds: u64,
    tags: Arc<Vec<benches::flv::Tag>>,
    written: Option<&Path>,
) -> anyhow::Result<(f64, f64, f64)> {
    let warm = Duration::from_secs(4);
    let until = Instant::now() + warm + Duration::from_secs(seconds) + Duration::from_secs(1);
    let mut publishers = Vec::new();
    for i in 0..n {
        let tags = tags.clone();
        publishers.push(tokio::spawn(async move {
            publish(
                rtmp,
                &format!("lecture{i}"),
                tags,
                Default::default(),
                until,
            )
            .await
        }));
    }
    tokio::time::sleep(warm).await;
    let (cpu0, bytes0, t0) = (
        cpu_seconds(pid),
        written.map_or(0, dir_bytes),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (cpu1, bytes1, dt) = (
        cpu_seconds(pid),
        written.map_or(0, dir_bytes),
        t0.elapsed().as_secs_f64(),
    );
    let rss = rss_mib(pid);
    for p in publishers {
        p.await??;
    }
    Ok((
        100.0 * (cpu1 - cpu0) / dt,
        rss,
        (bytes1.saturating_sub(bytes0)) as f64 / dt / 1e6,
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tags = Arc::new(benches::flv::read(&encode_lecture(args.kbps)?)?);
    let mut rows = Vec::new();
    for &n in &args.lectures {
        for recording in [false, true] {
            let scratch = Scratch::new("jiangtang")?;
            let rec_dir = scratch.0.join("recordings");
            let relay = Relay::start_with(
                &args.relay,
                &[
                    (
                        "JIANGTANG_RECORDING_ENABLED",
                        if recording { "true" } else { "false" },
                    ),
                    (
                        "JIANGTANG_RECORDING_DIR",
                        &format!("\"{}\"", rec_dir.display()),
                    ),
                    ("JIANGTANG_RECORDING_MIN_FREE_MB", "0"),
                    ("JIANGTANG_LECTURES_AUDIO_LEVELS", "false"),
                    ("JIANGTANG_CATALOGUE_ENABLED", "false"),
                ],
            )?;
            let (cpu_pct, rss, mb_s) = measure(
                relay.rtmp,
                relay.pid(),
                n,
                args.seconds,
                tags.clone(),
                recording.then_some(rec_dir.as_path()),
            )
            .await?;
            rows.push(Row {
                server: "jiangtang",
                lectures: n,
                recording,
                cpu_pct,
                rss,
                written_mb_s: mb_s,
            });
            drop(relay);

            let scratch = Scratch::new("nginx")?;
            let nginx = Nginx::start(&args.nginx, &scratch.0, recording)?;
            let (cpu_pct, rss, mb_s) = measure(
                nginx.rtmp,
                nginx.child.id(),
                n,
                args.seconds,
                tags.clone(),
                recording.then(|| scratch.0.join("rec")).as_deref(),
            )
            .await?;
            rows.push(Row {
                server: "nginx-rtmp",
                lectures: n,
                recording,
                cpu_pct,
                rss,
                written_mb_s: mb_s,
            });
        }
    }
    println!("| server | lectures | recording | CPU % of a core | RSS MiB | written MB/s |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.2} | {:.1} | {:.2} |",
            r.server,
            r.lectures,
            if r.recording { "on" } else { "off" },
            r.cpu_pct,
            r.rss,
            r.written_mb_s
        );
    }
    println!();
    println!(
        "| server | lectures | recording's extra CPU, core-ms per lecture-second | per MB written |"
    );
    println!("|---|---|---|---|");
    for pair in rows.chunks(4) {
        for (off, on) in [(&pair[0], &pair[2]), (&pair[1], &pair[3])] {
            let extra = 10.0 * (on.cpu_pct - off.cpu_pct) / on.lectures as f64;
            println!(
                "| {} | {} | {:.2} | {:.2} |",
                on.server,
                on.lectures,
                extra,
                10.0 * (on.cpu_pct - off.cpu_pct) / on.written_mb_s.max(1e-9)
            );
        }
    }
    Ok(())
}
