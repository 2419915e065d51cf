//! WebRTC (WHEP) fan-out of one lecture to N viewers on loopback.
//!
//! Starts `target/release/jiangtang`, publishes a 720p25 H.264 2.5 Mbit/s + AAC lecture over
//! RTMP in real time, then for each viewer count N connects N non-decoding viewers — str0m
//! clients that do real ICE, DTLS and SRTP on their own UDP sockets, reassemble frames and
//! count them — and reports the relay's CPU and memory per viewer, frame loss and gaps, the
//! time from connecting to the first video frame, and the latency from the publisher sending
//! a frame to a viewer having it. Bounded in viewers and time.
//!
//!     cargo build --release && cargo run --release -p benches --bin whep-bench -- --viewers 25,100,200 --seconds 15
//!
//! Engines and cores: `--shards N` sets `webrtc.shards`, `--relay-cpus 0` runs the relay
//! under `taskset -c 0`. A cheap load generator: `--sample N` fully processes (SRTP, frame
//! reassembly) one viewer in N; the others, once DTLS is up, only read each RTP header
//! (sequence numbers travel in clear) to count packets, bytes and losses, and hand STUN and
//! DTLS to str0m, so consent checks go on. Loss is counted for every viewer from the
//! sequence numbers, in the measured window.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use benches::proc::{Relay, cpu_seconds, rss_mib};
use benches::publisher::{SendLog, publish};
use clap::Parser;
use str0m::{Event, Input, Output};

#[derive(Parser)]
struct Args {
    /// The relay binary.
    #[arg(long, default_value = "target/release/jiangtang")]
    relay: String,
    /// Viewer counts to measure, comma separated.
    #[arg(long, default_value = "25,100,200", value_delimiter = ',')]
    viewers: Vec<usize>,
    /// Seconds of steady state measured per count.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Video bitrate of the lecture in kbit/s.
    #[arg(long, default_value_t = 2500)]
    kbps: u32,
    /// `webrtc.shards` of the relay (0: one engine per core it may use).
    #[arg(long, default_value_t = 0)]
    shards: usize,
    /// Run the relay under `taskset -c CPUS` (e.g. `0`).
    #[arg(long)]
    relay_cpus: Option<String>,
    /// Fully process one viewer in this many; the rest count RTP headers only.
    #[arg(long, default_value_t = 1)]
    sample: usize,
    /// Viewers joining per second.
    #[arg(long, default_value_t = 100)]
    join_rate: u32,
    /// Read one datagram per system call, not a sender's batch at once (UDP GRO): the
    /// loopback then cuts every GSO send apart on the relay's core, as a NIC without
    /// segmentation offload would.
    #[arg(long)]
    no_gro: bool,
    /// Watch a WHEP server someone else started and feeds (e.g. live777, with a WHIP
    /// publisher), instead of starting the relay and publishing: its WHEP URL. Needs
    /// `--attach-pid`; the relay's own figures (heap, latency) are read if it serves them.
    #[arg(long, requires = "attach_pid")]
    attach: Option<String>,
    /// The attached server's process, whose CPU and memory are measured.
    #[arg(long)]
    attach_pid: Option<u32>,
}

#[derive(Default)]
struct ViewerStats {
    video_frames: AtomicU64,
    audio_frames: AtomicU64,
    gaps: AtomicU64,
    connected: AtomicU64,
    first_frame_ms: Mutex<Vec<f64>>,
    /// RTP packets and bytes received in the window (every viewer, from the headers).
    packets: AtomicU64,
    bytes: AtomicU64,
    /// RTP packets missing by sequence number in the window.
    lost: AtomicU64,
    /// Viewers whose session left `connected`-ness (ICE consent or DTLS) before the end.
    dropped: AtomicU64,
}

/// Receive accounting of one RTP stream from its clear-text header.
#[derive(Default, Clone, Copy)]
struct Seq {
    first: Option<u64>,
    highest: u64,
    received: u64,
}

impl Seq {
    fn note(&mut self, seq: u16) {
        // Extend to 64 bits around the highest seen.
        let ext = match self.first {
            None => {
                self.first = Some(seq as u64 + (1 << 32));
                self.highest = seq as u64 + (1 << 32);
                self.received = 1;
                return;
            }
            Some(_) => {
                let base = self.highest & !0xffff;
                let mut c = base | seq as u64;
                if c + 0x8000 < self.highest {
                    c += 0x1_0000;
                } else if c > self.highest + 0x8000 {
                    c -= 0x1_0000;
                }
                c
            }
        };
        self.highest = self.highest.max(ext);
        self.received += 1;
    }

    fn lost(&self) -> u64 {
        match self.first {
            Some(f) => (self.highest - f + 1).saturating_sub(self.received),
            None => 0,
        }
    }
}

/// The SSRC and sequence number of an SRTP (not SRTCP) datagram.
fn rtp_header(d: &[u8]) -> Option<(u32, u16)> {
    if d.len() < 12 || !(128..192).contains(&d[0]) || (200..=206).contains(&d[1]) {
        return None;
    }
    Some((
        u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
        u16::from_be_bytes([d[2], d[3]]),
    ))
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn encode_lecture(kbps: u32) -> anyhow::Result<Vec<u8>> {
    let path = std::env::temp_dir().join(format!("jiangtang-bench-{kbps}.flv"));
    if !path.exists() {
        let ok = std::process::Command::new("ffmpeg")
            .args([
                "-nostdin",
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=1280x720:rate=25",
            ])
            .args([
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
                "-t",
                "30",
            ])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-tune",
                "zerolatency",
                "-g",
                "50",
            ])
            .args([
                "-b:v",
                &format!("{kbps}k"),
                "-maxrate",
                &format!("{kbps}k"),
                "-bufsize",
                &format!("{}k", kbps * 2),
            ])
            .args([
                "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-f", "flv",
            ])
            .arg(&path)
            .status()?
            .success();
        if !ok {
            bail!("ffmpeg failed");
        }
    }
    Ok(std::fs::read(path)?)
}

/// One viewer: offer, answer, then receive until `until`.
async fn viewer(
    http: SocketAddr,
    path: Arc<str>,
    stats: Arc<ViewerStats>,
    until: Instant,
    measure_from: Instant,
    full: bool,
    gro: bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let benches::whep::Offered {
        mut rtc,
        socket,
        local,
        ..
    } = benches::whep::offer(http, &path).await?;
    // With GRO the kernel hands over the relay's GSO send to this viewer (a frame's packets)
    // as one buffer of `stride`-sized datagrams: one system call where there were dozens.
    let socket = if gro {
        Socket::Gro(relay::whep::udp::Udp::new(socket)?)
    } else {
        Socket::Plain(socket)
    };
    let mut buf = vec![0u8; if gro { 65_536 } else { 2048 }];
    let mut connected_at: Option<Instant> = None;
    let mut got_video = false;
    let mut streams: std::collections::HashMap<u32, Seq> = Default::default();
    let count_losses = |streams: &std::collections::HashMap<u32, Seq>| {
        stats.lost.fetch_add(
            streams.values().map(|s| s.lost()).sum::<u64>(),
            Ordering::Relaxed,
        );
    };
    loop {
        let timeout = loop {
            match rtc.poll_output()? {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    socket.send(t.destination, &t.contents);
                }
                Output::Event(e) => match e {
                    Event::Connected => {
                        connected_at = Some(Instant::now());
                        stats.connected.fetch_add(1, Ordering::Relaxed);
                    }
                    Event::IceConnectionStateChange(str0m::IceConnectionState::Disconnected)
                        if connected_at.is_some() =>
                    {
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                        count_losses(&streams);
                        bail!("disconnected");
                    }
                    Event::MediaData(m) => {
                        let now = Instant::now();
                        let video = m.params.spec().codec == str0m::format::Codec::H264;
                        if video {
                            if !got_video {
                                got_video = true;
                                if let Some(c) = connected_at {
                                    stats
                                        .first_frame_ms
                                        .lock()
                                        .expect("lock")
                                        .push((now - c).as_secs_f64() * 1000.0);
                                }
                            }
                            if now >= measure_from {
                                stats.video_frames.fetch_add(1, Ordering::Relaxed);
                                if !m.contiguous {
                                    stats.gaps.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        } else if now >= measure_from {
                            stats.audio_frames.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {}
                },
            }
        };
        if Instant::now() > until {
            count_losses(&streams);
            return Ok(());
        }
        if connected_at.is_none() && started.elapsed() > Duration::from_secs(20) {
            bail!("never connected");
        }
        let wait = timeout
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        let received = tokio::select! {
            r = socket.recv(&mut buf) => Some(r?),
            _ = tokio::time::sleep(wait) => None,
        };
        let Some((n, stride, source)) = received else {
            rtc.handle_input(Input::Timeout(Instant::now()))?;
            continue;
        };
        let now = Instant::now();
        for d in buf[..n].chunks(stride.max(1)) {
            let rtp = rtp_header(d);
            if let Some((ssrc, seq)) = rtp
                && now >= measure_from
                && now <= until
            {
                streams.entry(ssrc).or_default().note(seq);
                stats.packets.fetch_add(1, Ordering::Relaxed);
                stats.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
            // A light viewer leaves media to the counters above once DTLS is up.
            if rtp.is_some() && !full && connected_at.is_some() {
                continue;
            }
            rtc.handle_input(benches::whep::receive(d, source, local)?)?;
        }
    }
}

/// A viewer's socket: plain reads of one datagram each, or the relay's own [`Udp`] reading
/// a batch of one sender's datagrams (GRO).
///
/// [`Udp`]: relay::whep::udp::Udp
enum Socket {
    Plain(tokio::net::UdpSocket),
    Gro(relay::whep::udp::Udp),
}

impl Socket {
    /// Sends one datagram now if the send buffer has room (str0m retransmits what is lost).
    fn send(&self, to: SocketAddr, contents: &[u8]) {
        let _ = match self {
            Socket::Plain(s) => s.try_send_to(contents, to).map(drop),
            Socket::Gro(u) => u.send(to, contents, None),
        };
    }

    /// Waits for what the relay sent. Returns the bytes read, the size of each datagram in
    /// them (the last may be shorter) and the sender.
    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<(usize, usize, SocketAddr)> {
        match self {
            Socket::Plain(s) => {
                let (n, source) = s.recv_from(buf).await?;
                Ok((n, n, source))
            }
            Socket::Gro(u) => {
                let mut meta = [quinn_udp::RecvMeta::default()];
                u.recv(&mut [std::io::IoSliceMut::new(buf)], &mut meta)
                    .await?;
                Ok((meta[0].len, meta[0].stride, meta[0].addr))
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    str0m::crypto::from_feature_flags().install_process_default();
    // The lecture lasts the whole run: each count's ramp, window and reaping (see below).
    let run: u64 = args
        .viewers
        .iter()
        .map(|&n| ramp(n).as_secs() + args.seconds + 20)
        .sum();
    let end = Instant::now() + Duration::from_secs(30 + run);
    let (pid, http, path, own) = match (&args.attach, args.attach_pid) {
        (Some(url), Some(pid)) => {
            let url = reqwest::Url::parse(url)?;
            let http = url
                .socket_addrs(|| Some(80))?
                .into_iter()
                .next()
                .context("the WHEP URL's address")?;
            (pid, http, url.path().to_string(), None)
        }
        _ => {
            let tags = Arc::new(benches::flv::read(&encode_lecture(args.kbps)?)?);
            let shards = args.shards.to_string();
            let wrapper: Vec<String> = match &args.relay_cpus {
                Some(cpus) => vec!["taskset".into(), "-c".into(), cpus.clone()],
                None => Vec::new(),
            };
            let relay = Relay::start_logged(
                &args.relay,
                &wrapper,
                &[("JIANGTANG_WEBRTC_SHARDS", shards.as_str())],
            )?;
            let log: SendLog = Arc::default();
            let publisher = tokio::spawn(publish(relay.rtmp, "bench", tags, log, end));
            relay.wait_live("bench").await?;
            (
                relay.pid(),
                relay.http,
                "/whep/bench".to_string(),
                Some((relay, publisher)),
            )
        }
    };
    let path: Arc<str> = path.into();
    let metric = |text: &str, name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    // An attached server that is not jiangtang has none of its figures: they read NaN.
    let metrics = || async {
        reqwest::get(format!("http://{http}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    };

    println!("## WebRTC (WHEP) fan-out\n");
    match &args.attach {
        Some(url) => println!("Server: {url} (process {pid}), fed by whoever started it."),
        None => println!(
            "Lecture: 1280x720 25 fps H.264 {} kbit/s (GOP 2 s, no B-frames) + AAC 128 kbit/s → Opus 64 kbit/s.",
            args.kbps
        ),
    }
    println!(
        "Viewers: str0m clients on loopback (ICE, DTLS, SRTP, frame reassembly; no decoding; one in {} fully, the rest counting RTP headers; {}), joining at {}/s, {} s measured per count after all connected. Relay: webrtc.shards = {} (0: one per core), cpus {}.\n",
        args.sample,
        if args.no_gro {
            "one datagram per read"
        } else {
            "reading with GRO"
        },
        args.join_rate,
        args.seconds,
        args.shards,
        args.relay_cpus.as_deref().unwrap_or("all")
    );
    println!(
        "| viewers | connected | relay CPU % | core-ms per viewer-second | relay RSS MiB | RSS growth per viewer KiB | heap MiB | heap per viewer KiB | video fps per full viewer | audio pkts/s per full viewer | RTP pkts/s per viewer | Mbit/s per viewer | loss % | sessions dropped | gaps | first frame p50 / p99 ms | frame in → RTP out p50 / p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let cpu0 = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_cpu = (cpu_seconds(pid) - cpu0) / 5.0 * 100.0;
    let m0 = metrics().await.unwrap_or_default();
    let heap_idle = metric(&m0, "jiangtang_heap_allocated_bytes") / 1048576.0;
    let rss_idle = rss_mib(pid);
    println!(
        "| 0 | – | {idle_cpu:.1} | – | {rss_idle:.1} | – | {heap_idle:.1} | – | – | – | – | – | – | – | – | – | – |"
    );

    for &n in &args.viewers {
        let stats = Arc::new(ViewerStats::default());
        let measure_from = Instant::now() + ramp(n);
        let until = measure_from + Duration::from_secs(args.seconds);
        let mut tasks = Vec::new();
        let gap = Duration::from_secs_f64(1.0 / args.join_rate.max(1) as f64);
        for i in 0..n {
            tasks.push(tokio::spawn(viewer(
                http,
                path.clone(),
                stats.clone(),
                until,
                measure_from,
                i % args.sample.max(1) == 0,
                !args.no_gro,
            )));
            tokio::time::sleep(gap).await;
        }
        tokio::time::sleep_until(measure_from.into()).await;
        let cpu_a = cpu_seconds(pid);
        let t_a = Instant::now();
        let rss = rss_mib(pid);
        let m_a = metrics().await.unwrap_or_default();
        let heap = metric(&m_a, "jiangtang_heap_allocated_bytes") / 1048576.0;
        tokio::time::sleep_until(until.into()).await;
        let cpu = (cpu_seconds(pid) - cpu_a) / t_a.elapsed().as_secs_f64() * 100.0;
        let m = metrics().await.unwrap_or_default();
        // Quantiles of this window alone: the difference of the histogram's two scrapes.
        let lat = |q| window_quantile(&m_a, &m, "jiangtang_webrtc_frame_to_rtp_ms", q);
        let (lat50, lat99) = (lat(0.5), lat(0.99));
        let mut failed = 0;
        for t in tasks {
            if !matches!(t.await, Ok(Ok(()))) {
                failed += 1;
            }
        }
        let secs = args.seconds as f64;
        let connected = stats.connected.load(Ordering::Relaxed);
        let full = n.div_ceil(args.sample.max(1)).min(connected as usize);
        let per = |v: u64| v as f64 / secs / connected.max(1) as f64;
        let per_full = |v: u64| v as f64 / secs / full.max(1) as f64;
        let mut first = stats.first_frame_ms.lock().expect("lock").clone();
        let (packets, lost) = (
            stats.packets.load(Ordering::Relaxed),
            stats.lost.load(Ordering::Relaxed),
        );
        println!(
            "| {n} | {connected}{} | {cpu:.0} | {:.3} | {rss:.1} | {:.0} | {heap:.1} | {:.0} | {:.1} | {:.1} | {:.0} | {:.2} | {:.3} | {} | {} | {:.0} / {:.0} | {lat50:.2} / {lat99:.2} |",
            if failed > 0 {
                format!(" ({failed} failed)")
            } else {
                String::new()
            },
            // % of a core per viewer is core-centiseconds per second: ×10 for core-ms.
            (cpu - idle_cpu) / n as f64 * 10.0,
            (rss - rss_idle) * 1024.0 / n as f64,
            (heap - heap_idle) * 1024.0 / n as f64,
            per_full(stats.video_frames.load(Ordering::Relaxed)),
            per_full(stats.audio_frames.load(Ordering::Relaxed)),
            per(packets),
            per(stats.bytes.load(Ordering::Relaxed)) * 8.0 / 1e6,
            lost as f64 * 100.0 / (packets + lost).max(1) as f64,
            stats.dropped.load(Ordering::Relaxed),
            stats.gaps.load(Ordering::Relaxed),
            percentile(&mut first, 0.5),
            percentile(&mut first, 0.99),
        );
        // Let the relay reap the sessions before the next count.
        tokio::time::sleep(Duration::from_secs(12)).await;
    }
    if let Some((relay, publisher)) = own {
        publisher.abort();
        drop(relay);
    }
    Ok(())
}

/// The time `n` viewers are given to join and settle before the window.
fn ramp(n: usize) -> Duration {
    Duration::from_secs(5 + n as u64 / 20)
}

/// Cumulative bucket counts `(le, count)` of a Prometheus histogram in `text`.
fn buckets(text: &str, name: &str) -> Vec<(f64, u64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.parse().ok()?))
        })
        .collect()
}

/// The `q` quantile (a bucket's upper bound) of what histogram `name` recorded between the
/// scrapes `before` and `after`.
fn window_quantile(before: &str, after: &str, name: &str, q: f64) -> f64 {
    let (a, b) = (buckets(before, name), buckets(after, name));
    let counts: Vec<(f64, u64)> = b
        .iter()
        .map(|&(le, n)| {
            let was = a.iter().find(|x| x.0 == le).map_or(0, |x| x.1);
            (le, n.saturating_sub(was))
        })
        .collect();
    let total = counts.last().map_or(0, |x| x.1);
    if total == 0 {
        return f64::NAN;
    }
    let rank = ((total as f64 * q).ceil() as u64).max(1);
    counts
        .iter()
        .find(|x| x.1 >= rank)
        .map_or(f64::NAN, |x| x.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_from_sequence_numbers_across_the_wrap_and_reordering() {
        let mut s = Seq::default();
        for seq in [65533u16, 65534, 65535, 0, 2, 1, 5] {
            s.note(seq);
        }
        // 65533..=5 is 9 numbers; 3 and 4 never came.
        assert_eq!(s.received, 7);
        assert_eq!(s.lost(), 2);
        assert_eq!(Seq::default().lost(), 0);
    }

    #[test]
    fn only_rtp_headers_are_read() {
        let mut rtp = [0u8; 12];
        rtp[0] = 0x80;
        rtp[1] = 96;
        rtp[2..4].copy_from_slice(&7u16.to_be_bytes());
        rtp[8..12].copy_from_slice(&42u32.to_be_bytes());
        assert_eq!(rtp_header(&rtp), Some((42, 7)));
        let mut rtcp = rtp;
        rtcp[1] = 200;
        assert_eq!(rtp_header(&rtcp), None);
        // STUN and DTLS start below 128.
        assert_eq!(rtp_header(&[0u8; 20]), None);
        assert_eq!(rtp_header(&[22u8; 20]), None);
        assert_eq!(rtp_header(&rtp[..11]), None);
    }
}
