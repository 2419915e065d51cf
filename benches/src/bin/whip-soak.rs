//! A WHIP publisher that is not a browser, against the relay, with WebRTC viewers.
//!
//! ffmpeg loops a lecture file (H.264 + Opus) in real time as RTP to two ports, live777's
//! `whipinto` (a webrtc-rs WHIP client, built outside this repository: see
//! `scripts/whipinto-soak.sh`) publishes it to `/whip/soak`, and N viewers — str0m clients
//! doing real ICE, DTLS and SRTP on loopback, reassembling frames without decoding — count
//! the RTP packets of each kind that reach them. Optionally the relay, ffmpeg and whipinto run
//! pinned to one core (`--pin 0`), as in issue 13.
//!
//! A run passes when every viewer got video at ≥ 80 % of 25 fps and Opus at ≥ 80 % of 50
//! packets/s over the whole window, never went `--max-silence-ms` (2 s) without either, and
//! the relay logged no realignment or jump of a track. Bounded: `--runs` × (start-up ≤ 40 s
//! + `--seconds`).
//!
//!     scripts/whipinto-soak.sh --runs 4 --pin 0

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use benches::proc::Relay;
use clap::Parser;
use str0m::{Event, Input, Output};

#[derive(Parser)]
struct Args {
    /// The relay binary.
    #[arg(long, default_value = "target/debug/jiangtang")]
    relay: String,
    /// live777's `whipinto` binary.
    #[arg(long)]
    whipinto: PathBuf,
    /// The lecture file (H.264 + Opus); made with ffmpeg if absent: 60 s of 1280x720 25 fps
    /// H.264 at 2 Mbit/s (GOP 2 s, no B-frames: WebRTC carries none) and Opus, about 300
    /// RTP packets a second.
    #[arg(long)]
    file: Option<PathBuf>,
    /// WHEP viewers per run.
    #[arg(long, default_value_t = 20)]
    viewers: usize,
    /// Seconds measured per run, once every viewer is connected.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Runs, each with a fresh relay, ffmpeg and whipinto.
    #[arg(long, default_value_t = 4)]
    runs: usize,
    /// Pin the relay, ffmpeg and whipinto to these CPUs (`taskset -c LIST`).
    #[arg(long)]
    pin: Option<String>,
    /// Keep each run's relay and whipinto logs in this directory.
    #[arg(long)]
    logs: Option<PathBuf>,
    /// Longest a viewer may go without video or sound (ms) in a passing run.
    #[arg(long, default_value_t = 2000)]
    max_silence_ms: u64,
}

/// What one viewer received in the measured window.
#[derive(Default)]
struct Counts {
    video_packets: AtomicU64,
    audio_packets: AtomicU64,
    video_frames: AtomicU64,
    /// Longest time without a video frame / an audio packet (ms), from the window's start.
    video_gap_ms: AtomicU64,
    audio_gap_ms: AtomicU64,
    connected: AtomicU64,
}

/// A child process killed (and reaped) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pinned(pin: &Option<String>, program: &str) -> Command {
    match pin {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus, program]);
            c
        }
        None => Command::new(program),
    }
}

fn lecture_file(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(f) = &args.file {
        return Ok(f.clone());
    }
    let path = std::env::temp_dir().join("jiangtang-whip-soak-lecture-720p.mkv");
    if !path.exists() {
        let ok = Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-t", "60", "-c:v", "libx264", "-preset", "veryfast"])
            .args([
                "-g",
                "50",
                "-keyint_min",
                "50",
                "-sc_threshold",
                "0",
                "-bf",
                "0",
            ])
            .args(["-b:v", "2000k", "-maxrate", "2000k", "-bufsize", "4000k"])
            .args(["-pix_fmt", "yuv420p"])
            .args(["-c:a", "libopus", "-b:a", "64k", "-ac", "2"])
            .arg(&path)
            .status()?
            .success();
        if !ok {
            bail!("ffmpeg could not make the lecture file");
        }
    }
    Ok(path)
}

/// Two free even UDP ports on loopback (with their odd RTCP neighbours free too).
fn rtp_ports() -> anyhow::Result<(u16, u16)> {
    for _ in 0..200 {
        let probe = UdpSocket::bind("127.0.0.1:0")?;
        let p = probe.local_addr()?.port() & !1;
        drop(probe);
        if !(20_000..=65_000).contains(&p) {
            continue;
        }
        let held: Result<Vec<_>, _> = (p..p + 4)
            .map(|q| UdpSocket::bind(("127.0.0.1", q)))
            .collect();
        if held.is_ok() {
            return Ok((p, p + 2));
        }
    }
    bail!("no free RTP ports")
}

/// One viewer: offer, answer, then count until `until`.
async fn viewer(
    http: SocketAddr,
    c: Arc<Counts>,
    measure_from: Instant,
    until: Instant,
) -> anyhow::Result<()> {
    let benches::whep::Offered {
        mut rtc,
        socket,
        local,
        ..
    } = benches::whep::offer(http, "/whep/soak").await?;
    let mut buf = vec![0u8; 2048];
    let (mut last_video, mut last_audio) = (measure_from, measure_from);
    let gap = |slot: &AtomicU64, last: &mut Instant, now: Instant| {
        if now > measure_from {
            let ms = now.duration_since((*last).max(measure_from)).as_millis() as u64;
            slot.fetch_max(ms, Ordering::Relaxed);
            *last = now;
        }
    };
    loop {
        let timeout = loop {
            match rtc.poll_output()? {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Output::Event(Event::Connected) => {
                    c.connected.fetch_add(1, Ordering::Relaxed);
                }
                Output::Event(Event::MediaData(m)) => {
                    let now = Instant::now();
                    if now < measure_from || now > until {
                        continue;
                    }
                    let packets = (**m.seq_range.end()).saturating_sub(**m.seq_range.start()) + 1;
                    if m.params.spec().codec == str0m::format::Codec::H264 {
                        c.video_frames.fetch_add(1, Ordering::Relaxed);
                        c.video_packets.fetch_add(packets, Ordering::Relaxed);
                        gap(&c.video_gap_ms, &mut last_video, now);
                    } else {
                        c.audio_packets.fetch_add(packets, Ordering::Relaxed);
                        gap(&c.audio_gap_ms, &mut last_audio, now);
                    }
                }
                Output::Event(_) => {}
            }
        };
        let now = Instant::now();
        if now > until {
            // Silence up to the end of the window counts too.
            gap(&c.video_gap_ms, &mut last_video, until);
            gap(&c.audio_gap_ms, &mut last_audio, until);
            return Ok(());
        }
        let wait = timeout
            .saturating_duration_since(now)
            .min(Duration::from_millis(100));
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

/// What a run measured.
struct RunResult {
    connected: u64,
    video_fps: Vec<f64>,
    video_pps: Vec<f64>,
    audio_pps: Vec<f64>,
    video_gap_ms: u64,
    audio_gap_ms: u64,
    warnings: Vec<String>,
    /// Jumps viewers' RTP timelines went across (`/metrics`).
    timeline_jumps: u64,
    /// The engine's loss counters (`/metrics`): what the relay itself dropped under load.
    load: String,
}

impl RunResult {
    fn passed(&self, args: &Args, fps: f64) -> bool {
        self.connected as usize == args.viewers
            && self.video_fps.iter().all(|&f| f >= 0.8 * fps)
            && self.audio_pps.iter().all(|&a| a >= 0.8 * 50.0)
            && self.video_gap_ms < args.max_silence_ms
            && self.audio_gap_ms < args.max_silence_ms
            && self.warnings.is_empty()
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

async fn run(args: &Args, file: &Path, run: usize) -> anyhow::Result<RunResult> {
    let wrapper: Vec<String> = match &args.pin {
        Some(cpus) => vec!["taskset".into(), "-c".into(), cpus.clone()],
        None => Vec::new(),
    };
    let dir =
        std::env::temp_dir().join(format!("jiangtang-whip-soak-{}-{run}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // Recordings and the catalogue in the run's own folder, removed after it.
    let recordings = format!("\"{}\"", dir.join("recordings").display());
    let catalogue = format!("\"{}\"", dir.join("catalogue.db").display());
    let log_filter = std::env::var("WHIP_SOAK_RUST_LOG")
        .unwrap_or_else(|_| "warn,relay::whep::engine=info".into());
    let relay = Relay::start_logged(
        &args.relay,
        &wrapper,
        &[
            ("RUST_LOG", log_filter.as_str()),
            ("JIANGTANG_WEBRTC_MAX_VIEWERS", "2000"),
            ("JIANGTANG_WEBRTC_MAX_VIEWERS_PER_LECTURE", "2000"),
            ("JIANGTANG_RECORDING_DIR", recordings.as_str()),
            ("JIANGTANG_CATALOGUE_DATABASE_PATH", catalogue.as_str()),
        ],
    )?;
    let sdp = dir.join("lecture.sdp");
    let (vport, aport) = rtp_ports()?;
    let _ffmpeg = Proc(
        pinned(&args.pin, "ffmpeg")
            .args(["-nostdin", "-v", "error", "-re", "-stream_loop", "-1", "-i"])
            .arg(file)
            .args(["-map", "0:v:0", "-c", "copy", "-f", "rtp"])
            .arg(format!("rtp://127.0.0.1:{vport}"))
            .args(["-map", "0:a:0", "-c", "copy", "-f", "rtp"])
            .arg(format!("rtp://127.0.0.1:{aport}"))
            .arg("-sdp_file")
            .arg(&sdp)
            .stdin(Stdio::null())
            .spawn()
            .context("ffmpeg")?,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&sdp).is_ok_and(|s| s.contains("m=audio")) {
        if Instant::now() > deadline {
            bail!("ffmpeg wrote no SDP file");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let whip_log = std::fs::File::create(dir.join("whipinto.log"))?;
    let _whipinto = Proc(
        pinned(&args.pin, &args.whipinto.display().to_string())
            .arg("-i")
            .arg(&sdp)
            .arg("-w")
            .arg(format!("http://{}/whip/soak", relay.http))
            // Host candidates only: nothing leaves loopback.
            .args(["--ice-server", ""])
            .stdin(Stdio::null())
            .stdout(whip_log.try_clone()?)
            .stderr(whip_log)
            .spawn()
            .context("whipinto")?,
    );
    let live = relay.wait_live("soak").await;
    let keep_logs = |dir: &Path| -> anyhow::Result<()> {
        if let Some(logs) = &args.logs {
            std::fs::create_dir_all(logs)?;
            std::fs::write(
                logs.join(format!("relay-{run}.log")),
                relay
                    .log
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .join("\n"),
            )?;
            std::fs::copy(
                dir.join("whipinto.log"),
                logs.join(format!("whipinto-{run}.log")),
            )?;
        }
        Ok(())
    };
    if let Err(e) = live {
        keep_logs(&dir)?;
        return Err(e);
    }
    let counts: Vec<Arc<Counts>> = (0..args.viewers).map(|_| Arc::default()).collect();
    let measure_from = Instant::now() + Duration::from_secs(3 + args.viewers as u64 / 20);
    let until = measure_from + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for c in &counts {
        tasks.push(tokio::spawn(viewer(
            relay.http,
            c.clone(),
            measure_from,
            until,
        )));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            eprintln!("viewer: {e}");
        }
    }
    let secs = args.seconds as f64;
    let per =
        |f: fn(&Counts) -> u64| -> Vec<f64> { counts.iter().map(|c| f(c) as f64 / secs).collect() };
    let warnings: Vec<String> = relay
        .log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|l| {
            l.contains("realigned") || l.contains("moved forward") || l.contains("panicked")
        })
        .cloned()
        .collect();
    let metrics = reqwest::get(format!("http://{}/metrics", relay.http))
        .await?
        .text()
        .await?;
    let counter = |name: &str| -> u64 {
        let prefix = format!("jiangtang_webrtc_{name}_total ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let timeline_jumps = counter("timeline_jumps");
    // What the relay lost of the publisher's packets (str0m's ingress statistics).
    let api = reqwest::get(format!("http://{}/api/v1/streams/soak", relay.http))
        .await?
        .text()
        .await?;
    let api: serde_json::Value = serde_json::from_str(&api).unwrap_or_default();
    let transport = &api["input"]["transport"];
    let load = [
        "frames_skipped",
        "feed_lagged",
        "audio_dropped",
        "datagrams_dropped",
    ]
    .iter()
    .map(|n| format!("{n} {}", counter(n)))
    .chain([format!(
        "publisher's packets received {}, lost {}",
        transport["packets_received"], transport["packets_lost"]
    )])
    .collect::<Vec<_>>()
    .join(", ");
    keep_logs(&dir)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(RunResult {
        connected: counts
            .iter()
            .map(|c| c.connected.load(Ordering::Relaxed))
            .sum(),
        video_fps: per(|c| c.video_frames.load(Ordering::Relaxed)),
        video_pps: per(|c| c.video_packets.load(Ordering::Relaxed)),
        audio_pps: per(|c| c.audio_packets.load(Ordering::Relaxed)),
        video_gap_ms: counts
            .iter()
            .map(|c| c.video_gap_ms.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0),
        audio_gap_ms: counts
            .iter()
            .map(|c| c.audio_gap_ms.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0),
        warnings,
        timeline_jumps,
        load,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    str0m::crypto::from_feature_flags().install_process_default();
    let file = lecture_file(&args)?;
    println!(
        "whip-soak: {} runs, {} viewers, {} s each, {}",
        args.runs,
        args.viewers,
        args.seconds,
        match &args.pin {
            Some(c) => format!("relay, ffmpeg and whipinto pinned to CPU {c}"),
            None => "unpinned".into(),
        }
    );
    println!(
        "| run | connected | video fps per viewer (min) | video pkts/s (min) | audio pkts/s per viewer (min) | longest video / audio silence ms | realignments | viewers' timeline jumps | result |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut passed = 0;
    for i in 1..=args.runs {
        match run(&args, &file, i).await {
            Ok(r) => {
                let ok = r.passed(&args, 25.0);
                passed += ok as usize;
                println!(
                    "| {i} | {}/{} | {:.1} | {:.1} | {:.1} | {} / {} | {} | {} | {} |",
                    r.connected,
                    args.viewers,
                    min(&r.video_fps),
                    min(&r.video_pps),
                    min(&r.audio_pps),
                    r.video_gap_ms,
                    r.audio_gap_ms,
                    r.warnings.len(),
                    r.timeline_jumps,
                    if ok { "pass" } else { "FAIL" }
                );
                println!("    relay: {}", r.load);
                for w in r.warnings.iter().take(5) {
                    println!("    relay: {w}");
                }
            }
            Err(e) => println!("| {i} | – | – | – | – | – | – | – | FAIL: {e:#} |"),
        }
        // Let ports and sockets settle between runs.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!("\n{passed} of {} runs passed", args.runs);
    if passed != args.runs {
        std::process::exit(1);
    }
    Ok(())
}
