//! A long soak of the relay: one lecture with three dialects for a configurable time, viewers
//! joining and leaving over HLS and WebRTC, an interpreter coming and going, and a chaos event
//! every few minutes. It reports the relay's RSS and heap slope, open file descriptors,
//! threads and runtime tasks, and every error it saw (scripts/soak.sh; issue 12 item 7).
//!
//! - The lecture: ffmpeg publishes over SRT (MPEG-TS) a 640×360 25 fps picture with two
//!   dialects (`cmn`, `yue`); an interpreter on the `/interpret/soak` page (headless
//!   Chromium, tests/node/whip.mjs) adds `hak` for a minute every few minutes.
//! - Viewers: HLS viewers fetch the media playlists and every new segment of the picture and
//!   one dialect, as a player does; WebRTC viewers are str0m clients doing real ICE, DTLS and
//!   SRTP on loopback, counting the media they get. Each stays a random time, then leaves and
//!   another joins.
//! - Chaos, in turn: the publisher killed (-9) and back 3 s later; every WebRTC viewer leaving
//!   at once and as many joining within a second; garbage (random datagrams at the WebRTC
//!   port, random bytes at the RTMP port); the publisher restarted with its clock 1000 s
//!   ahead; the interpreter's browser killed mid-sentence.
//! - Every `--sample-s`, a sample: VmRSS, jemalloc's allocated bytes, open descriptors,
//!   threads, tasks alive (`/metrics`), viewers on air. At the end every viewer leaves and,
//!   after 30 s, a last sample is compared with the first one taken with no viewers.
//!
//! Bounded: `--minutes` plus at most 2 minutes of start and wind-down; loopback only.
//!
//!     scripts/soak.sh --minutes 60

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use benches::proc::{Relay, rss_mib};
use clap::Parser;
use str0m::{Event, Input, Output};

#[derive(Parser)]
struct Args {
    /// The relay binary.
    #[arg(long, default_value = "target/release/jiangtang")]
    relay: String,
    /// Minutes of soak (after start-up).
    #[arg(long, default_value_t = 60)]
    minutes: u64,
    /// HLS viewers kept on air.
    #[arg(long, default_value_t = 20)]
    hls_viewers: usize,
    /// WebRTC viewers kept on air.
    #[arg(long, default_value_t = 30)]
    webrtc_viewers: usize,
    /// Seconds between chaos events.
    #[arg(long, default_value_t = 180)]
    chaos_s: u64,
    /// Seconds between interpreter sessions (each about a minute long); 0 for none.
    #[arg(long, default_value_t = 300)]
    interpreter_s: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10)]
    sample_s: u64,
    /// Write the report (Markdown) here as well as to stdout.
    #[arg(long)]
    report: Option<PathBuf>,
}

/// A child process killed (and reaped) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A small xorshift generator: the soak needs variety, not statistics.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// What went wrong, by kind, and the chaos events made.
#[derive(Default)]
struct Tally {
    errors: Mutex<BTreeMap<String, u64>>,
    events: Mutex<Vec<String>>,
    hls_segments: AtomicU64,
    hls_sessions: AtomicU64,
    webrtc_sessions: AtomicU64,
    webrtc_connected: AtomicU64,
    webrtc_media_packets: AtomicU64,
    interpreter_sessions: AtomicU64,
    /// Until when (ms from `start`) viewers may see a gap: the publisher is away, or back
    /// for less than 10 s.
    calm_after_ms: AtomicU64,
    start: Option<Instant>,
}

impl Tally {
    fn disturbed(&self) -> bool {
        let now = self.start.map_or(0, |s| s.elapsed().as_millis() as u64);
        now < self.calm_after_ms.load(Ordering::Relaxed)
    }

    fn disturb_until(&self, at: Option<Instant>) {
        let ms = match (at, self.start) {
            (Some(at), Some(s)) => at.duration_since(s).as_millis() as u64,
            _ => u64::MAX,
        };
        self.calm_after_ms.store(ms, Ordering::Relaxed);
    }

    fn error(&self, kind: impl Into<String>) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind.into())
            .or_default() += 1;
    }

    fn event(&self, start: Instant, what: &str) {
        let line = format!("{:>6.0} s  {what}", start.elapsed().as_secs_f64());
        eprintln!("soak: {line}");
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }
}

fn free_udp_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The lecture over SRT: a picture and two dialects, `offset` seconds added to its clock.
fn publisher(srt: u16, offset: u64) -> anyhow::Result<Proc> {
    let child = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-f", "lavfi", "-i", "sine=frequency=660:sample_rate=48000"])
        .args(["-map", "0:v", "-map", "1:a", "-map", "2:a"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args(["-g", "50", "-pix_fmt", "yuv420p", "-b:v", "800k"])
        .args(["-c:a", "aac", "-b:a", "64k"])
        .args([
            "-metadata:s:a:0",
            "language=cmn",
            "-metadata:s:a:1",
            "language=yue",
        ])
        .args(["-output_ts_offset", &offset.to_string()])
        .args(["-f", "mpegts"])
        .arg(format!(
            "srt://127.0.0.1:{srt}?streamid=publish:soak&latency=200"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("ffmpeg")?;
    Ok(Proc(child))
}

/// One HLS viewer: the picture's and one dialect's playlists every second, each new segment
/// once, until `until` or `stop`.
async fn hls_viewer(
    http: SocketAddr,
    lang: &str,
    until: Instant,
    stop: Arc<AtomicBool>,
    t: Arc<Tally>,
) {
    t.hls_sessions.fetch_add(1, Ordering::Relaxed);
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut seen: std::collections::HashSet<String> = Default::default();
    let renditions = ["video".to_string(), format!("audio-{lang}")];
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        for r in &renditions {
            let base = format!("http://{http}/hls/soak/{r}/");
            let text = match c.get(format!("{base}index.m3u8")).send().await {
                Ok(resp) if resp.status().is_success() => resp.text().await.unwrap_or_default(),
                Ok(resp) => {
                    if !t.disturbed() {
                        t.error(format!("hls: playlist {r} answered {}", resp.status()));
                    }
                    continue;
                }
                Err(e) => {
                    t.error(format!("hls: playlist {r}: {}", kind_of(&e)));
                    continue;
                }
            };
            let mut gap = false;
            for line in text.lines() {
                // A GAP segment is a hole the playlist owns up to (404 by design): skipped.
                if line.starts_with("#EXT-X-GAP") {
                    gap = true;
                }
                if line.starts_with('#') || line.is_empty() {
                    continue;
                }
                let uri = line;
                let key = format!("{r}/{uri}");
                if std::mem::take(&mut gap) || seen.contains(&key) {
                    continue;
                }
                match c.get(format!("{base}{uri}")).send().await {
                    Ok(resp) if resp.status().is_success() => {
                        let _ = resp.bytes().await;
                        t.hls_segments.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(resp) => t.error(format!("hls: segment answered {}", resp.status())),
                    Err(e) => t.error(format!("hls: segment: {}", kind_of(&e))),
                }
                seen.insert(key);
            }
        }
        if seen.len() > 10_000 {
            seen.clear();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn kind_of(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "request"
    }
}

/// One WebRTC viewer: offer, answer, then media until `until` or `stop`. Errors if it does
/// not connect within 10 s, or if it goes 5 s without media while the lecture is undisturbed.
async fn webrtc_viewer(
    http: SocketAddr,
    until: Instant,
    stop: Arc<AtomicBool>,
    t: Arc<Tally>,
) -> anyhow::Result<()> {
    t.webrtc_sessions.fetch_add(1, Ordering::Relaxed);
    let benches::whep::Offered {
        mut rtc,
        socket,
        local,
        location,
    } = benches::whep::offer(http, "/whep/soak").await?;
    let started = Instant::now();
    let mut connected = false;
    let mut last_media = Instant::now();
    let mut buf = vec![0u8; 2048];
    let result = loop {
        let timeout = loop {
            match rtc.poll_output()? {
                Output::Timeout(t) => break t,
                Output::Transmit(x) => {
                    let _ = socket.try_send_to(&x.contents, x.destination);
                }
                Output::Event(Event::Connected) => {
                    connected = true;
                    last_media = Instant::now();
                    t.webrtc_connected.fetch_add(1, Ordering::Relaxed);
                }
                Output::Event(Event::MediaData(_)) => {
                    last_media = Instant::now();
                    t.webrtc_media_packets.fetch_add(1, Ordering::Relaxed);
                }
                Output::Event(Event::IceConnectionStateChange(
                    str0m::IceConnectionState::Disconnected,
                )) => break Instant::now(),
                Output::Event(_) => {}
            }
        };
        let now = Instant::now();
        if now > until || stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        if !connected && now > started + Duration::from_secs(10) {
            break Err(anyhow::anyhow!("not connected within 10 s"));
        }
        if t.disturbed() {
            last_media = now;
        } else if connected && now > last_media + Duration::from_secs(5) {
            break Err(anyhow::anyhow!("5 s without media"));
        }
        let wait = timeout
            .saturating_duration_since(now)
            .clamp(Duration::from_millis(1), Duration::from_millis(100));
        let input = tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, source) = r?;
                benches::whep::receive(&buf[..n], source, local)?
            }
            _ = tokio::time::sleep(wait) => Input::Timeout(Instant::now()),
        };
        rtc.handle_input(input)?;
    };
    // Leaving politely, as a player does (a lost viewer is reclaimed by consent timeouts).
    if let Some(l) = location {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let _ = client.delete(format!("http://{http}{l}")).send().await;
    }
    result
}

/// One sample of the relay's health.
#[derive(Clone, Copy, Default)]
struct Sample {
    t_s: f64,
    rss_mib: f64,
    heap_mib: f64,
    fds: u64,
    threads: u64,
    tasks: u64,
    hls: usize,
    webrtc: usize,
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

async fn sample(relay: &Relay, start: Instant, hls: usize, webrtc: usize) -> Sample {
    let pid = relay.pid();
    let metrics = reqwest::get(format!("http://{}/metrics", relay.http))
        .await
        .ok();
    let text = match metrics {
        Some(r) => r.text().await.unwrap_or_default(),
        None => String::new(),
    };
    let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Threads:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    Sample {
        t_s: start.elapsed().as_secs_f64(),
        rss_mib: rss_mib(pid),
        heap_mib: metric(&text, "jiangtang_heap_allocated_bytes").unwrap_or(0.0) / 1048576.0,
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64),
        threads,
        tasks: metric(&text, "jiangtang_tasks_alive").unwrap_or(0.0) as u64,
        hls,
        webrtc,
    }
}

/// Least-squares slope of `y` over `x`, per hour.
fn slope_per_hour(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den * 3600.0 }
}

/// The interpreter for about `seconds`: the real page in headless Chromium.
fn interpreter(http: SocketAddr, seconds: u64, dir: &std::path::Path) -> anyhow::Result<Proc> {
    let node = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/node");
    if !node.join("node_modules/playwright-core").exists() {
        bail!("tests/node has no node_modules (scripts/setup.sh installs them)");
    }
    let wav = dir.join("interpreter.wav");
    if !wav.exists() {
        let ok = Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "error", "-f", "lavfi", "-i"])
            .arg("sine=frequency=550:sample_rate=48000:duration=30")
            .arg(&wav)
            .status()?
            .success();
        if !ok {
            bail!("ffmpeg made no interpreter sound");
        }
    }
    let child = Command::new("node")
        .arg(node.join("whip.mjs"))
        .arg("interpret")
        .arg(format!("http://{http}"))
        .args(["soak", "hak", "", &seconds.to_string()])
        .arg(&wav)
        .arg(dir)
        // Its own process group, so a kill reaches the browser too.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("node")?;
    Ok(Proc(child))
}

/// Random bytes at the RTMP port and the WebRTC port: each must be refused without harm.
async fn garbage(relay: &Relay, webrtc: u16, rng: &mut Rng) {
    use tokio::io::AsyncWriteExt as _;
    for _ in 0..10 {
        if let Ok(Ok(mut s)) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(relay.rtmp),
        )
        .await
        {
            let junk: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
            let _ = tokio::time::timeout(Duration::from_secs(2), s.write_all(&junk)).await;
        }
    }
    if let Ok(u) = UdpSocket::bind("127.0.0.1:0") {
        for i in 0..1000 {
            let len = 20 + (rng.next() % 1200) as usize;
            let mut junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Some that look like STUN, DTLS and RTP to reach the deeper parsers.
            junk[0] = [0x00, 0x16, 0x80, 0x90][i % 4];
            let _ = u.send_to(&junk, ("127.0.0.1", webrtc));
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Not the pid alone: in a PID namespace of its own every soak is pid 1.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("jiangtang-soak-{}-{stamp}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = soak(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = result?;
    println!("{report}");
    if let Some(p) = &args.report {
        std::fs::write(p, &report)?;
    }
    Ok(())
}

async fn soak(args: &Args, dir: &std::path::Path) -> anyhow::Result<String> {
    let (srt, webrtc) = (free_udp_port()?, free_udp_port()?);
    let recordings = format!("\"{}\"", dir.join("recordings").display());
    let catalogue = format!("\"{}\"", dir.join("catalogue.db").display());
    let srt_listen = format!("127.0.0.1:{srt}");
    let webrtc_listen = format!("127.0.0.1:{webrtc}");
    let relay = Relay::start_logged(
        &args.relay,
        &[],
        &[
            ("RUST_LOG", "warn"),
            ("JIANGTANG_SRT_LISTEN", srt_listen.as_str()),
            ("JIANGTANG_WEBRTC_UDP_LISTEN", webrtc_listen.as_str()),
            ("JIANGTANG_RECORDING_DIR", recordings.as_str()),
            ("JIANGTANG_RECORDING_MIN_FREE_MB", "256"),
            ("JIANGTANG_CATALOGUE_DATABASE_PATH", catalogue.as_str()),
        ],
    )?;
    let start = Instant::now();
    let t = Arc::new(Tally {
        start: Some(start),
        ..Tally::default()
    });
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()));
    // The first sample, before anything streams or watches: the baseline the end is held to.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_before = sample(&relay, start, 0, 0).await;
    let mut publisher_proc = Some(publisher(srt, 0)?);
    relay.wait_live("soak").await?;
    t.event(start, "lecture live (SRT: picture, cmn, yue)");

    let end = Instant::now() + Duration::from_secs(args.minutes * 60);
    let stop_all = Arc::new(AtomicBool::new(false));
    let mut hls: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let mut rtc: Vec<(Arc<AtomicBool>, tokio::task::JoinHandle<anyhow::Result<()>>)> = Vec::new();
    let mut samples = Vec::new();
    let mut next_sample = Instant::now();
    let mut next_chaos = Instant::now() + Duration::from_secs(args.chaos_s);
    let mut next_interpreter = Instant::now() + Duration::from_secs(60.min(args.interpreter_s));
    let mut interp: Option<(Proc, Instant)> = None;
    let mut kill_interpreter_at: Option<Instant> = None;
    let mut chaos_turn = 0usize;
    let mut publisher_back: Option<(Instant, u64)> = None;
    let mut publisher_offset = 0;
    let langs = ["cmn", "yue", "hak"];

    while Instant::now() < end {
        let now = Instant::now();
        // Viewers leave on their own (their time is up); new ones fill the places.
        hls.retain(|h| !h.is_finished());
        let mut kept = Vec::new();
        for (stop, h) in rtc.drain(..) {
            if h.is_finished() {
                match h.await {
                    Ok(Ok(())) => {}
                    // Refusals while the publisher is away are what a player should get.
                    Ok(Err(e)) if t.disturbed() => {
                        t.error(format!("(publisher away, expected) webrtc viewer: {e}"))
                    }
                    Ok(Err(e)) => t.error(format!("webrtc viewer: {e}")),
                    Err(e) => t.error(format!("webrtc viewer task: {e}")),
                }
            } else {
                kept.push((stop, h));
            }
        }
        rtc = kept;
        while hls.len() < args.hls_viewers {
            let until = now + Duration::from_secs(rng.range(20, 300));
            let lang = langs[(rng.next() % 2) as usize];
            hls.push(tokio::spawn(hls_viewer(
                relay.http,
                lang,
                until,
                stop_all.clone(),
                t.clone(),
            )));
        }
        // Joining over a few seconds rather than all in one instant, except in a storm.
        if rtc.len() < args.webrtc_viewers {
            let until = now + Duration::from_secs(rng.range(20, 300));
            let stop = Arc::new(AtomicBool::new(false));
            let h = tokio::spawn(webrtc_viewer(relay.http, until, stop.clone(), t.clone()));
            rtc.push((stop, h));
        }

        if let Some((at, offset)) = publisher_back
            && now >= at
        {
            publisher_proc = Some(publisher(srt, offset)?);
            publisher_offset = offset;
            publisher_back = None;
            t.event(start, &format!("publisher back (clock +{offset} s)"));
            // Viewers are held to "no gap" again once the lecture has had time to return.
            t.disturb_until(Some(now + Duration::from_secs(10)));
        }
        // An encoder whose connection is refused or lost tries again, as hardware does.
        if let Some(p) = &mut publisher_proc
            && let Ok(Some(status)) = p.0.try_wait()
        {
            t.disturb_until(None);
            t.event(start, &format!("publisher exited ({status}), again in 2 s"));
            publisher_proc = None;
            publisher_back = Some((now + Duration::from_secs(2), publisher_offset));
        }

        if now >= next_chaos {
            next_chaos = now + Duration::from_secs(args.chaos_s);
            match chaos_turn % 5 {
                0 => {
                    t.disturb_until(None);
                    if let Some(mut p) = publisher_proc.take() {
                        let _ = p.0.kill();
                    }
                    t.event(start, "chaos: publisher killed (-9)");
                    publisher_back = Some((now + Duration::from_secs(3), 0));
                }
                1 => {
                    let n = rtc.len();
                    for (stop, _) in &rtc {
                        stop.store(true, Ordering::Relaxed);
                    }
                    for (_, h) in rtc.drain(..) {
                        let _ = h.await;
                    }
                    for _ in 0..n {
                        let until = Instant::now() + Duration::from_secs(rng.range(20, 300));
                        let stop = Arc::new(AtomicBool::new(false));
                        let h =
                            tokio::spawn(webrtc_viewer(relay.http, until, stop.clone(), t.clone()));
                        rtc.push((stop, h));
                        tokio::time::sleep(Duration::from_millis(1000 / n.max(1) as u64)).await;
                    }
                    t.event(
                        start,
                        &format!("chaos: {n} WebRTC viewers left and {n} joined within 1 s"),
                    );
                }
                2 => {
                    garbage(&relay, webrtc, &mut rng).await;
                    t.event(start, "chaos: 10 RTMP connections of random bytes, 1000 random datagrams at WebRTC");
                }
                3 => {
                    t.disturb_until(None);
                    publisher_proc.take();
                    let offset = 1000 * (chaos_turn as u64 / 5 + 1);
                    t.event(start, "chaos: publisher restarted with its clock ahead");
                    publisher_back = Some((now + Duration::from_millis(500), offset));
                }
                _ => {
                    // An interpreter who vanishes mid-sentence: on air now (or already),
                    // the browser killed 20 s later.
                    if interp.is_none() {
                        match interpreter(relay.http, 60, dir) {
                            Ok(p) => {
                                t.interpreter_sessions.fetch_add(1, Ordering::Relaxed);
                                interp = Some((p, now + Duration::from_secs(120)));
                            }
                            Err(e) => t.error(format!("interpreter: {e}")),
                        }
                    }
                    kill_interpreter_at = Some(now + Duration::from_secs(20));
                    t.event(
                        start,
                        "chaos: interpreter on air, its browser to be killed in 20 s",
                    );
                }
            }
            chaos_turn += 1;
        }

        if args.interpreter_s > 0 && now >= next_interpreter && interp.is_none() {
            next_interpreter = now + Duration::from_secs(args.interpreter_s);
            match interpreter(relay.http, 60, dir) {
                Ok(p) => {
                    t.interpreter_sessions.fetch_add(1, Ordering::Relaxed);
                    t.event(start, "interpreter on air (hak)");
                    interp = Some((p, now + Duration::from_secs(120)));
                }
                Err(e) => t.error(format!("interpreter: {e}")),
            }
        }
        if let Some(at) = kill_interpreter_at
            && now >= at
        {
            kill_interpreter_at = None;
            if let Some((mut p, _)) = interp.take() {
                let _ = nix_kill_group(&mut p);
                t.event(start, "chaos: interpreter's browser killed");
            }
        }
        if let Some((p, _)) = &mut interp
            && let Ok(Some(status)) = p.0.try_wait()
        {
            let mut out = String::new();
            if let Some(o) = p.0.stdout.as_mut() {
                use std::io::Read as _;
                let _ = o.read_to_string(&mut out);
            }
            let ok = status.success()
                && serde_json::from_str::<serde_json::Value>(&out)
                    .is_ok_and(|v| v["errors"] == serde_json::json!([]));
            if !ok {
                t.error(format!(
                    "interpreter session: {}",
                    out.chars().take(200).collect::<String>()
                ));
            }
            interp = None;
            t.event(start, "interpreter left");
        } else if let Some((p, deadline)) = &mut interp
            && Instant::now() > *deadline
        {
            t.error("interpreter session: over 2 min");
            let _ = nix_kill_group(p);
            interp = None;
        }

        if now >= next_sample {
            next_sample = now + Duration::from_secs(args.sample_s);
            let s = sample(&relay, start, hls.len(), rtc.len()).await;
            if !relay_alive(&relay) {
                bail!("the relay exited during the soak");
            }
            samples.push(s);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Everyone leaves; the relay should return to where it was.
    stop_all.store(true, Ordering::Relaxed);
    for (stop, _) in &rtc {
        stop.store(true, Ordering::Relaxed);
    }
    for (_, h) in rtc.drain(..) {
        if let Ok(Err(e)) = h.await {
            t.error(format!("webrtc viewer: {e}"));
        }
    }
    for h in hls.drain(..) {
        let _ = h.await;
    }
    if let Some((mut p, _)) = interp.take() {
        let _ = nix_kill_group(&mut p);
    }
    drop(publisher_proc.take());
    t.event(start, "everyone left, the publisher stopped");
    tokio::time::sleep(Duration::from_secs(30)).await;
    let idle_after = sample(&relay, start, 0, 0).await;
    let log = relay.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(report(args, &t, &samples, idle_before, idle_after, &log))
}

/// The log without its terminal colours.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The relay runs (a zombie, exited but not yet reaped, does not).
fn relay_alive(relay: &Relay) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", relay.pid())).is_ok_and(|stat| {
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next());
        !matches!(state, Some("Z" | "X") | None)
    })
}

/// Kills a child's whole process group (the node script and its browser). Not through the
/// `kill` program: procps-ng 4.0.2's `kill -9 -PGID` signals `-` and the first digit only
/// (strace: `kill -9 -46` calls `kill(-4, SIGKILL)`), which for a group id starting with 1
/// is every process the user may kill.
fn nix_kill_group(p: &mut Proc) -> std::io::Result<()> {
    if let Some(pgid) = rustix::process::Pid::from_raw(p.0.id() as i32) {
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    }
    p.0.kill()
}

fn report(
    args: &Args,
    t: &Tally,
    samples: &[Sample],
    before: Sample,
    after: Sample,
    log: &[String],
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# jiangtang soak: {} min, {} HLS + {} WebRTC viewers kept on air, chaos every {} s\n",
        args.minutes, args.hls_viewers, args.webrtc_viewers, args.chaos_s
    );
    // Slopes after the first 10 minutes (or the second half of a shorter run): warm-up
    // (buffers, caches, the GOP cache, the first recordings' segments) is not a leak.
    let warm = (args.minutes as f64 * 60.0 / 2.0).min(600.0);
    let rss: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.t_s >= warm)
        .map(|s| (s.t_s, s.rss_mib))
        .collect();
    let heap: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.t_s >= warm)
        .map(|s| (s.t_s, s.heap_mib))
        .collect();
    let max = |f: fn(&Sample) -> f64| samples.iter().map(f).fold(0.0, f64::max);
    let _ = writeln!(out, "| figure | value |\n|---|---|");
    let _ = writeln!(
        out,
        "| RSS slope after warm-up | {:+.2} MiB/h |",
        slope_per_hour(&rss)
    );
    let _ = writeln!(
        out,
        "| heap slope after warm-up | {:+.2} MiB/h |",
        slope_per_hour(&heap)
    );
    let _ = writeln!(
        out,
        "| RSS idle before / max / idle after | {:.1} / {:.1} / {:.1} MiB |",
        before.rss_mib,
        max(|s| s.rss_mib),
        after.rss_mib
    );
    let _ = writeln!(
        out,
        "| heap idle before / max / idle after | {:.1} / {:.1} / {:.1} MiB |",
        before.heap_mib,
        max(|s| s.heap_mib),
        after.heap_mib
    );
    let _ = writeln!(
        out,
        "| open descriptors idle before / max / idle after | {} / {} / {} |",
        before.fds,
        max(|s| s.fds as f64),
        after.fds
    );
    let _ = writeln!(
        out,
        "| threads idle before / max / idle after | {} / {} / {} |",
        before.threads,
        max(|s| s.threads as f64),
        after.threads
    );
    let _ = writeln!(
        out,
        "| tasks idle before / max / idle after | {} / {} / {} |",
        before.tasks,
        max(|s| s.tasks as f64),
        after.tasks
    );
    let _ = writeln!(
        out,
        "| HLS viewer sessions / segments fetched | {} / {} |",
        t.hls_sessions.load(Ordering::Relaxed),
        t.hls_segments.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "| WebRTC viewer sessions / connected / media events | {} / {} / {} |",
        t.webrtc_sessions.load(Ordering::Relaxed),
        t.webrtc_connected.load(Ordering::Relaxed),
        t.webrtc_media_packets.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "| interpreter sessions | {} |",
        t.interpreter_sessions.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "\n## Errors seen by the soak's clients\n");
    let errors = t.errors.lock().unwrap_or_else(|e| e.into_inner());
    if errors.is_empty() {
        let _ = writeln!(out, "none");
    }
    for (k, n) in errors.iter() {
        let _ = writeln!(out, "- {n} × {k}");
    }
    let _ = writeln!(out, "\n## Relay log: warnings and errors, by kind\n");
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    for l in log
        .iter()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
    {
        // The timestamp first, then the level: group by what follows the level.
        let what = l
            .split_once("WARN")
            .or_else(|| l.split_once("ERROR"))
            .map_or(l.as_str(), |(_, r)| r)
            .trim();
        // Numbers (ports, versions, ids) vary; the kind is the words around them.
        let mut what: String = strip_ansi(what).chars().take(110).collect();
        what = what
            .split(|c: char| c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("N");
        *kinds.entry(what).or_default() += 1;
    }
    if kinds.is_empty() {
        let _ = writeln!(out, "none");
    }
    for (k, n) in &kinds {
        let _ = writeln!(out, "- {n} × `{k}`");
    }
    let _ = writeln!(out, "\n## Events\n");
    for e in t.events.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = writeln!(out, "- {e}");
    }
    let _ = writeln!(out, "\n## Samples (every 5 min)\n");
    let _ = writeln!(
        out,
        "| t (min) | RSS MiB | heap MiB | fds | threads | tasks | HLS | WebRTC |\n|---|---|---|---|---|---|---|---|"
    );
    let mut next = 0.0;
    for s in samples {
        if s.t_s >= next {
            next = s.t_s + 300.0;
            let _ = writeln!(
                out,
                "| {:.0} | {:.1} | {:.1} | {} | {} | {} | {} | {} |",
                s.t_s / 60.0,
                s.rss_mib,
                s.heap_mib,
                s.fds,
                s.threads,
                s.tasks,
                s.hls,
                s.webrtc
            );
        }
    }
    out
}
