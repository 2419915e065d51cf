//! Replay serving of the real relay on loopback, side by side with nginx serving the same
//! bytes from the same disk as a static file server.
//!
//! Records a 720p25 H.264 2.5 Mbit/s lecture with three AAC dialects (a file ffmpeg encodes
//! once, sent over SRT in real time), lets it end, then runs load phases against the
//! relay's replay routes and against nginx (one process, `master_process off`, sendfile) on
//! the recording's own files:
//!
//! - **playlist**: the video media playlist (nginx: the same text as a file);
//! - **segments**: random whole segments, `/replay/ID/video/seg-N.m4s` (nginx: the same
//!   byte range of `video/media.m4s` with a `Range` header, as a CDN origin would serve a
//!   byte-range playlist);
//! - **mp4 ranges**: random 1 MiB ranges of the MP4 download, as a seeking player asks
//!   (nginx: of the same MP4 saved as a file);
//! - **mp4 whole**: the whole MP4 download, remuxed on the fly (nginx: the saved file).
//!
//! Each server's CPU time comes from /proc, so requests and bytes per second per core are
//! the work divided by the CPU the server itself used (the load generator shares the two
//! cores). Prints a Markdown table. Bounded in time and count.
//!
//!     cargo build --release && cargo run --release -p benches --bin replay-bench -- --clients 50 --seconds 10

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use benches::proc::cpu_seconds;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// The relay binary.
    #[arg(long, default_value = "target/release/jiangtang")]
    relay: String,
    /// nginx.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: String,
    /// Concurrent clients per phase.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of lecture recorded.
    #[arg(long, default_value_t = 60)]
    lecture: u64,
}

/// The lecture: 720p25 2.5 Mbit/s H.264 and three dialects as AAC, in MPEG-TS.
fn encode_lecture(seconds: u64) -> anyhow::Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("jiangtang-replay-bench-{seconds}.ts"));
    if path.exists() {
        return Ok(path);
    }
    let mut c = Command::new("ffmpeg");
    c.args(["-nostdin", "-v", "error", "-y"]).args([
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=25",
    ]);
    for hz in [440, 660, 880] {
        c.args([
            "-f",
            "lavfi",
            "-i",
            &format!("sine=frequency={hz}:sample_rate=48000"),
        ]);
    }
    c.args(["-map", "0:v", "-map", "1:a", "-map", "2:a", "-map", "3:a"])
        .args(["-t", &seconds.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "50",
            "-keyint_min",
            "50",
        ])
        .args(["-b:v", "2500k", "-maxrate", "2500k", "-bufsize", "5000k"])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k"]);
    for (i, lang) in ["cmn", "yue", "hak"].iter().enumerate() {
        c.args([&format!("-metadata:s:a:{i}"), &format!("language={lang}")]);
    }
    let status = c.arg(&path).status().context("ffmpeg")?;
    if !status.success() {
        bail!("ffmpeg failed to encode the lecture");
    }
    Ok(path)
}

/// The relay with recording on, into `dir`.
struct Relay {
    child: Child,
    http: String,
    srt: String,
}

impl Relay {
    fn start(binary: &str, dir: &Path) -> anyhow::Result<Relay> {
        use std::io::BufRead as _;
        let mut child = Command::new(binary)
            .arg("serve")
            .env("JIANGTANG_HTTP_LISTEN", "127.0.0.1:0")
            .env("JIANGTANG_RTMP_LISTEN", "127.0.0.1:0")
            .env("JIANGTANG_WEBRTC_UDP_LISTEN", "127.0.0.1:0")
            .env("JIANGTANG_SRT_LISTEN", "127.0.0.1:0")
            .env("JIANGTANG_DEMO_ENABLED", "false")
            .env("JIANGTANG_LECTURES_GRACE_PERIOD_S", "1")
            // The bench publishes a name of its own, without a key.
            .env("JIANGTANG_LECTURES_ALLOW_UNCONFIGURED", "true")
            .env("JIANGTANG_RECORDING_ENABLED", "true")
            .env("JIANGTANG_RECORDING_DIR", format!("\"{}\"", dir.display()))
            .env("JIANGTANG_RECORDING_MIN_FREE_MB", "0")
            .env(
                "JIANGTANG_CATALOGUE_DATABASE_PATH",
                format!("\"{}\"", dir.join("catalogue.db").display()),
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {binary}"))?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let (mut http, mut srt) = (None, None);
        while http.is_none() || srt.is_none() {
            let Some(line) = lines.next() else {
                bail!("relay exited before listening");
            };
            let line = line?;
            if let Some(a) = line.strip_prefix("jiangtang: http listening on ") {
                http = Some(a.to_string());
            } else if let Some(a) = line.strip_prefix("jiangtang: srt listening on udp ") {
                srt = Some(a.to_string());
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Ok(Relay {
            child,
            http: http.context("http")?,
            srt: srt.context("srt")?,
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx serving `root` on a free loopback port, one process.
struct Nginx {
    child: Child,
    addr: String,
}

impl Nginx {
    fn start(binary: &str, root: &Path, work: &Path) -> anyhow::Result<Nginx> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let conf = work.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\n\
                 error_log {work}/nginx-error.log warn;\npid {work}/nginx.pid;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 1000000;\n\
                   client_body_temp_path {work}/body;\n  proxy_temp_path {work}/proxy;\n\
                   fastcgi_temp_path {work}/fastcgi;\n  uwsgi_temp_path {work}/uwsgi;\n  scgi_temp_path {work}/scgi;\n\
                   types {{ application/vnd.apple.mpegurl m3u8; video/mp4 mp4 m4s; }}\n\
                   server {{\n    listen 127.0.0.1:{port};\n    root {root};\n\
                     location / {{ add_header Cache-Control \"public, max-age=31536000, immutable\"; }}\n  }}\n}}\n",
                work = work.display(),
                root = root.display(),
            ),
        )?;
        let child = Command::new(binary)
            .args(["-c"])
            .arg(&conf)
            .args(["-p"])
            .arg(work)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {binary} (install it with scripts/setup.sh)"))?;
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            if Instant::now() > deadline {
                bail!("nginx did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Nginx { child, addr })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request of a phase: a URL and, for a range, its header value.
#[derive(Clone)]
struct Req {
    url: String,
    range: Option<String>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

/// `clients` loops of requests from `reqs` (each client starting at its own place) for
/// `seconds`; the server's CPU over that time.
async fn load(reqs: Arc<Vec<Req>>, clients: usize, seconds: u64, pid: u32) -> (Arc<Counters>, f64) {
    let counters = Arc::new(Counters::default());
    let until = Instant::now() + Duration::from_secs(seconds);
    let cpu0 = cpu_seconds(pid);
    let mut tasks = Vec::new();
    for n in 0..clients {
        let (reqs, counters) = (reqs.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client");
            // A simple generator per client: a different order for each.
            let mut x =
                0x9e37_79b9_7f4a_7c15u64 ^ (n as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            while Instant::now() < until {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let r = &reqs[(x % reqs.len() as u64) as usize];
                let mut q = c.get(&r.url);
                if let Some(range) = &r.range {
                    q = q.header("range", range);
                }
                match q.send().await {
                    Ok(resp) if resp.status().is_success() => {
                        let mut resp = resp;
                        let mut n = 0u64;
                        loop {
                            match resp.chunk().await {
                                Ok(Some(b)) => n += b.len() as u64,
                                Ok(None) => break,
                                Err(_) => {
                                    counters.errors.fetch_add(1, Ordering::Relaxed);
                                    break;
                                }
                            }
                        }
                        counters.requests.fetch_add(1, Ordering::Relaxed);
                        counters.bytes.fetch_add(n, Ordering::Relaxed);
                    }
                    _ => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (counters, cpu_seconds(pid) - cpu0)
}

/// `(msn, offset, len)` of every segment of a rendition, from its index.
fn segments(index: &str) -> Vec<(u64, u64, u64)> {
    let mut out: Vec<(u64, u64, u64)> = Vec::new();
    for line in index.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.first() != Some(&"P") || f.len() < 5 {
            continue;
        }
        let (Ok(msn), Ok(offset), Ok(len)) = (f[1].parse(), f[3].parse(), f[4].parse()) else {
            continue;
        };
        if len == 0 {
            continue;
        }
        match out.last_mut() {
            Some(s) if s.0 == msn => s.2 = offset + len - s.1,
            _ => out.push((msn, offset, len)),
        }
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ts = encode_lecture(args.lecture)?;
    let work = std::env::temp_dir().join(format!("jiangtang-replay-bench-{}", std::process::id()));
    let dir = work.join("recordings");
    std::fs::create_dir_all(&dir)?;
    let _cleanup = Cleanup(work.clone());
    let relay = Relay::start(&args.relay, &dir)?;
    let pid = relay.child.id();

    // Record the lecture: sent in real time, then it ends.
    eprintln!("recording {} s of lecture...", args.lecture);
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-re", "-i"])
        .arg(&ts)
        .args(["-map", "0", "-c", "copy", "-f", "mpegts"])
        .arg(format!(
            "srt://{}?streamid=publish:bench&latency=300000",
            relay.srt
        ))
        .status()
        .context("ffmpeg")?;
    if !status.success() {
        bail!("ffmpeg could not publish the lecture");
    }
    let c = reqwest::Client::new();
    let api = format!("http://{}/api/v1/recordings?lecture=bench", relay.http);
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        if Instant::now() > deadline {
            bail!("the recording did not complete");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let text = c.get(&api).send().await?.text().await?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        if let Some(r) = v["recordings"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["state"] == "complete"))
        {
            break r["id"].as_str().context("id")?.to_string();
        }
    };
    let base = format!("http://{}/replay/{id}", relay.http);
    let rec_dir = dir.join(&id);
    let segs = segments(&std::fs::read_to_string(rec_dir.join("video/index.txt"))?);
    let playlist = c
        .get(format!("{base}/video/index.m3u8"))
        .send()
        .await?
        .text()
        .await?;
    // The first request computes the MP4's layout (reads every part's moof); later ones
    // find it cached.
    let t = Instant::now();
    let head = c
        .get(format!("{base}/download.mp4?lang=all"))
        .header("range", "bytes=0-0")
        .send()
        .await?;
    let cold_ms = t.elapsed().as_secs_f64() * 1000.0;
    head.bytes().await?;
    let t = Instant::now();
    c.get(format!("{base}/download.mp4?lang=all"))
        .header("range", "bytes=0-0")
        .send()
        .await?
        .bytes()
        .await?;
    let warm_ms = t.elapsed().as_secs_f64() * 1000.0;
    let mp4 = c
        .get(format!("{base}/download.mp4?lang=all"))
        .send()
        .await?
        .bytes()
        .await?;
    // nginx serves the recording folder, plus the same playlist and MP4 as files.
    let static_root = work.join("static");
    std::fs::create_dir_all(&static_root)?;
    std::os::unix::fs::symlink(&rec_dir, static_root.join("rec"))?;
    std::fs::write(static_root.join("video.m3u8"), &playlist)?;
    std::fs::write(static_root.join("all.mp4"), &mp4)?;
    let nginx = Nginx::start(&args.nginx, &static_root, &work)?;
    let nbase = format!("http://{}", nginx.addr);
    let npid = nginx.child.id();

    let mib = 1u64 << 20;
    let ranges: Vec<(u64, u64)> = (0..256u64)
        .map(|i| {
            let start = (i * 7919 * 65_537) % (mp4.len() as u64 - mib);
            (start, start + mib - 1)
        })
        .collect();
    let phases: Vec<(&str, Vec<Req>, Vec<Req>)> = vec![
        (
            "playlist",
            vec![Req {
                url: format!("{base}/video/index.m3u8"),
                range: None,
            }],
            vec![Req {
                url: format!("{nbase}/video.m3u8"),
                range: None,
            }],
        ),
        (
            "segments",
            segs.iter()
                .map(|(msn, _, _)| Req {
                    url: format!("{base}/video/seg-{msn}.m4s"),
                    range: None,
                })
                .collect(),
            segs.iter()
                .map(|(_, off, len)| Req {
                    url: format!("{nbase}/rec/video/media.m4s"),
                    range: Some(format!("bytes={off}-{}", off + len - 1)),
                })
                .collect(),
        ),
        (
            "mp4 1 MiB ranges",
            ranges
                .iter()
                .map(|(a, b)| Req {
                    url: format!("{base}/download.mp4?lang=all"),
                    range: Some(format!("bytes={a}-{b}")),
                })
                .collect(),
            ranges
                .iter()
                .map(|(a, b)| Req {
                    url: format!("{nbase}/all.mp4"),
                    range: Some(format!("bytes={a}-{b}")),
                })
                .collect(),
        ),
        (
            "mp4 whole",
            vec![Req {
                url: format!("{base}/download.mp4?lang=all"),
                range: None,
            }],
            vec![Req {
                url: format!("{nbase}/all.mp4"),
                range: None,
            }],
        ),
    ];
    // ftyp is 32 bytes; the moov follows it.
    let moov = mp4
        .get(36..40)
        .filter(|k| *k == b"moov")
        .and_then(|_| mp4.get(32..36))
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    println!(
        "Recording: {} s, {} video segments, MP4 (video + 3 dialects) {:.1} MB with a {:.0} KiB moov; \
         first MP4 request (layout computed) {cold_ms:.1} ms, next (cached) {warm_ms:.1} ms; \
         {} clients, {} s per phase.\n",
        args.lecture,
        segs.len(),
        mp4.len() as f64 / 1e6,
        f64::from(moov) / 1024.0,
        args.clients,
        args.seconds
    );
    println!(
        "| phase | server | requests/s | MB/s | errors | server CPU % | requests/s per core | MB/s per core |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, relay_reqs, nginx_reqs) in phases {
        for (server, reqs, p) in [("jiangtang", relay_reqs, pid), ("nginx", nginx_reqs, npid)] {
            let (counters, cpu) = load(Arc::new(reqs), args.clients, args.seconds, p).await;
            let s = args.seconds as f64;
            let requests = counters.requests.load(Ordering::Relaxed) as f64;
            let bytes = counters.bytes.load(Ordering::Relaxed) as f64;
            let core = cpu.max(1e-3);
            println!(
                "| {name} | {server} | {:.0} | {:.1} | {} | {:.0} | {:.0} | {:.1} |",
                requests / s,
                bytes / s / 1e6,
                counters.errors.load(Ordering::Relaxed),
                cpu / s * 100.0,
                requests / core,
                bytes / core / 1e6,
            );
        }
    }
    drop(nginx);
    drop(relay);
    Ok(())
}

/// Removes the bench's folder at the end.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
