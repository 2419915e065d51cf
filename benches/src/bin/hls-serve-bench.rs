//! HLS serving per core: jiangtang against nginx-rtmp (Debian's nginx with
//! libnginx-mod-rtmp, `hls on`, one worker), each pinned to the same core in turn, `wrk` on
//! the other core, the same lecture published to both over RTMP in real time.
//!
//! For each server it measures, for `--seconds` with `--connections` keep-alive connections:
//! the video media playlist (no directives), the newest complete segment and the oldest one
//! listed (jiangtang's from its spool file; URLs read from the playlist at the start of each
//! phase), in requests/s and MB/s, with the server's
//! CPU over the phase (so per-core figures divide by what it actually used), and the RSS
//! with the one lecture. Bounded in time.
//!
//!     cargo build --release --locked && cargo run --release --locked -p benches --bin hls-serve-bench -- --seconds 10
//!
//! Needs nginx, libnginx-mod-rtmp and wrk (scripts/setup.sh installs them) and two cores.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use benches::encode_lecture;
use benches::proc::{Relay, cpu_seconds, rss_mib};
use benches::publisher::{SendLog, publish};
use clap::Parser;

#[derive(Parser, Clone)]
struct Args {
    /// The relay binary.
    #[arg(long, default_value = "target/release/jiangtang")]
    relay: String,
    /// nginx (with the RTMP module in /usr/lib/nginx/modules).
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: String,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// wrk connections.
    #[arg(long, default_value_t = 100)]
    connections: u32,
    /// The core the servers run on; wrk runs on the other.
    #[arg(long, default_value = "0")]
    server_cpu: String,
    /// The core wrk runs on.
    #[arg(long, default_value = "1")]
    client_cpu: String,
}

/// nginx with the RTMP module writing HLS into its folder and serving it over HTTP, one
/// process (no master), one worker.
struct Nginx {
    child: Child,
    rtmp: SocketAddr,
    http: SocketAddr,
}

impl Nginx {
    fn start(binary: &str, dir: &Path, cpu: &str) -> anyhow::Result<Nginx> {
        let free = || -> anyhow::Result<u16> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port())
        };
        let (rtmp_port, http_port) = (free()?, free()?);
        let hls = dir.join("hls");
        std::fs::create_dir_all(&hls)?;
        // The settings of nginx-rtmp's own HLS example: 2 s fragments (the GOP), a 10 s
        // playlist; the HTTP side as its README serves it, with sendfile and access log off
        // (as jiangtang logs no request either).
        let conf = format!(
            "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\n\
             daemon off; master_process off; worker_processes 1;\n\
             error_log stderr warn; pid {dir}/nginx.pid;\n\
             events {{ worker_connections 4096; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{rtmp_port}; chunk_size 4096;\n\
               application live {{ live on; hls on; hls_path {hls}; hls_fragment 2s;\n\
                 hls_playlist_length 10s; }} }} }}\n\
             http {{ access_log off; log_not_found off; sendfile on; tcp_nopush on; keepalive_requests 1000000;\n\
               types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}\n\
               server {{ listen 127.0.0.1:{http_port};\n\
                 location /hls {{ alias {hls}; add_header Cache-Control no-cache; }} }} }}\n",
            dir = dir.display(),
            hls = hls.display(),
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf)?;
        let child = Command::new("taskset")
            .args(["-c", cpu, binary, "-p", &dir.display().to_string(), "-c"])
            .arg(&path)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| {
                format!("starting {binary} (scripts/setup.sh installs nginx and libnginx-mod-rtmp)")
            })?;
        let rtmp = SocketAddr::from(([127, 0, 0, 1], rtmp_port));
        let http = SocketAddr::from(([127, 0, 0, 1], http_port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(rtmp).is_err() {
            if Instant::now() > deadline {
                bail!("nginx did not listen on {rtmp}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Nginx { child, rtmp, http })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch folder removed at the end.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What wrk measured.
struct Load {
    requests_per_s: f64,
    mb_per_s: f64,
    errors: u64,
    cpu_pct: f64,
}

/// Runs wrk on `url` for `seconds` on `cpu`, measuring `pid`'s CPU meanwhile.
fn wrk(url: &str, args: &Args, pid: u32) -> anyhow::Result<Load> {
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let out = Command::new("taskset")
        .args(["-c", &args.client_cpu, "wrk", "-t", "1"])
        .args(["-c", &args.connections.to_string()])
        .args(["-d", &format!("{}s", args.seconds)])
        .arg(url)
        .output()
        .context("running wrk (scripts/setup.sh installs it)")?;
    let cpu_pct = (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!(
            "wrk failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let field = |prefix: &str| -> Option<&str> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(str::trim)
    };
    let requests_per_s: f64 = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("wrk output: {text}"))?;
    let transfer = field("Transfer/sec:").unwrap_or("0B");
    let (num, unit) = transfer.split_at(transfer.find(|c: char| c.is_alphabetic()).unwrap_or(0));
    let scale = match unit {
        "GB" => 1024.0,
        "MB" => 1.0,
        "KB" => 1.0 / 1024.0,
        _ => 1.0 / 1048576.0,
    };
    let mb_per_s = num.parse::<f64>().unwrap_or(0.0) * scale;
    // "Non-2xx or 3xx responses: N" and socket errors.
    let mut errors = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if let Some(e) = field("Socket errors:") {
        errors += e
            .split(',')
            .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Ok(Load {
        requests_per_s,
        mb_per_s,
        errors,
        cpu_pct,
    })
}

/// The newest complete segment's URI in a media playlist.
fn newest_segment(playlist: &str) -> Option<String> {
    let lines: Vec<&str> = playlist.lines().collect();
    let i = lines.iter().rposition(|l| l.starts_with("#EXTINF"))?;
    lines[i + 1..]
        .iter()
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|s| s.to_string())
}

/// The segment `back` segments before the newest complete one in a media playlist.
fn segment_before_newest(playlist: &str, back: usize) -> Option<String> {
    let uris: Vec<&str> = playlist
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    uris.len()
        .checked_sub(back + 1)
        .map(|i| uris[i].to_string())
}

async fn text(url: &str) -> Option<String> {
    reqwest::get(url).await.ok()?.text().await.ok()
}

/// Waits until the playlist at `url` lists `n` segments.
async fn wait_segments(url: &str, n: usize) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(t) = text(url).await
            && t.matches("#EXTINF").count() >= n
        {
            return Ok(t);
        }
        if Instant::now() > deadline {
            bail!("no {n} segments at {url}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn row(server: &str, what: &str, l: &Load) {
    let per_core = |x: f64| x / (l.cpu_pct / 100.0).max(0.01);
    println!(
        "| {server} | {what} | {:.0} | {:.1} | {} | {:.0} | {:.0} | {:.1} |",
        l.requests_per_s,
        l.mb_per_s,
        l.errors,
        l.cpu_pct,
        per_core(l.requests_per_s),
        per_core(l.mb_per_s),
    );
}

/// Once the playlist `base` + `playlist` lists three segments: the playlist, then the newest
/// segment, each under wrk, a row each. Returns `pid`'s RSS with the lecture.
async fn measure(
    server: &str,
    base: &str,
    playlist: &str,
    args: &Args,
    pid: u32,
) -> anyhow::Result<f64> {
    let playlist = format!("{base}{playlist}");
    let pl = wait_segments(&playlist, 3).await?;
    let live = rss_mib(pid);
    row(server, "media playlist", &wrk(&playlist, args, pid)?);
    let pl = text(&playlist).await.unwrap_or(pl);
    let seg = newest_segment(&pl).context("a segment")?;
    // A player fetches the newest segment within a segment's time of its completion; past
    // 4 s it is no longer among jiangtang's newest two (hls.memory_segments), so the phase
    // is at most 4 s long, which keeps it what it says.
    let newest = Args {
        seconds: args.seconds.min(4),
        ..args.clone()
    };
    row(
        server,
        "newest segment",
        &wrk(&format!("{base}{seg}"), &newest, pid)?,
    );
    // Four back: behind jiangtang's two in memory (hls.memory_segments) and the one being
    // written, so read from its spool file; listed for 4-6 s more and kept 4 s after, so the
    // phase is at most 6 s long (a 404 would count as an error).
    let pl = text(&playlist).await.unwrap_or(pl);
    let seg = segment_before_newest(&pl, 3).context("four segments")?;
    let short = Args {
        seconds: args.seconds.min(6),
        ..args.clone()
    };
    row(
        server,
        "segment 4 back (spooled)",
        &wrk(&format!("{base}{seg}"), &short, pid)?,
    );
    Ok(live)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tags = Arc::new(benches::flv::read(&encode_lecture(2500)?)?);
    let end = Instant::now() + Duration::from_secs(60 + 8 * (args.seconds + 5));
    println!("## HLS serving per core: jiangtang and nginx-rtmp\n");
    println!(
        "Lecture: 1280x720 25 fps H.264 2.5 Mbit/s (GOP 2 s) + AAC over RTMP to each server; each server on core {}, wrk -t 1 -c {} on core {}, {} s per phase. Per core = measured ÷ the server's CPU share over the phase.\n",
        args.server_cpu, args.connections, args.client_cpu, args.seconds
    );
    println!(
        "| server | request | requests/s | MB/s | errors | server CPU % | requests/s per core | MB/s per core |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut rss = Vec::new();

    // jiangtang: level meters off (an HLS-only comparison; nginx-rtmp measures nothing).
    {
        let relay = Relay::start_logged(
            &args.relay,
            &["taskset".into(), "-c".into(), args.server_cpu.clone()],
            &[
                ("JIANGTANG_LECTURES_AUDIO_LEVELS", "false"),
                ("JIANGTANG_CATALOGUE_ENABLED", "false"),
                ("JIANGTANG_WEBRTC_ENABLED", "false"),
                ("JIANGTANG_RECORDING_ENABLED", "false"),
            ],
        )?;
        let pid = relay.pid();
        let idle = rss_mib(pid);
        let publisher = tokio::spawn(publish(
            relay.rtmp,
            "bench",
            tags.clone(),
            SendLog::default(),
            end,
        ));
        relay.wait_live("bench").await?;
        let base = format!("http://{}/hls/bench/video/", relay.http);
        let live = measure("jiangtang", &base, "index.m3u8", &args, pid).await?;
        rss.push(("jiangtang", idle, live));
        publisher.abort();
    }

    {
        let dir = std::env::temp_dir().join(format!("jt-hls-serve-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let scratch = Scratch(dir);
        let nginx = Nginx::start(&args.nginx, &scratch.0, &args.server_cpu)?;
        let pid = nginx.child.id();
        let idle = rss_mib(pid);
        let publisher = tokio::spawn(publish(
            nginx.rtmp,
            "bench",
            tags.clone(),
            SendLog::default(),
            end,
        ));
        let base = format!("http://{}/hls/", nginx.http);
        let live = measure("nginx-rtmp", &base, "bench.m3u8", &args, pid).await?;
        rss.push(("nginx-rtmp", idle, live));
        publisher.abort();
    }
    println!("\n| server | RSS idle MiB | RSS with the lecture MiB |\n|---|---|---|");
    for (server, idle, live) in rss {
        println!("| {server} | {idle:.1} | {live:.1} |");
    }
    Ok(())
}
