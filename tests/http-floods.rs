//! The HTTP edge's limits against the binary, at and over each (connections in total and
//! per address, request head size, the head and TLS handshake deadline, idleness), and a
//! flood: 10,000 idle TCP connections from many loopback addresses and a slowloris run
//! (Debian's slowhttptest) while ffmpeg publishes over RTMP and HLS viewers play, with the
//! relay's heap and RSS watched and back near the baseline once everyone has left.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::http_edge::*;
use common::*;

fn metrics(s: &Server) -> String {
    get_text(&s.url("/metrics"))
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

fn src(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// A connection from `from` that got a 200 for /healthz and stays open (keep-alive).
fn served(s: &Server, from: Ipv4Addr) -> TcpStream {
    let mut c = connect_from(from, s.http).expect("connect");
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 512];
    let n = c.read(&mut buf).unwrap_or(0);
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "from {from}: {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    c
}

/// A connection from `from` that the relay closes without serving.
fn refused(s: &Server, from: Ipv4Addr) -> bool {
    let Some(mut c) = connect_from(from, s.http) else {
        return true;
    };
    let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    matches!(c.read(&mut buf), Ok(0) | Err(_))
}

#[test]
fn connections_capped_per_address_and_in_total_at_and_over() {
    let s = Server::start(
        "[http]\nmax_connections = 12\nmax_per_address = 5\nheader_read_timeout_ms = 60000\n",
    );
    // Five from one address: all served and kept; the sixth is closed unserved.
    let mut a: Vec<_> = (0..5).map(|_| served(&s, src(2))).collect();
    assert!(
        refused(&s, src(2)),
        "a sixth connection from 127.0.0.2 was served"
    );
    // Other addresses are not affected: 5 + 2 more make the total of 12.
    let b: Vec<_> = (0..5).map(|_| served(&s, src(3))).collect();
    let c: Vec<_> = (0..2).map(|_| served(&s, src(4))).collect();
    assert!(refused(&s, src(5)), "a 13th connection was served");
    // The kept connections still serve.
    for k in &mut a {
        k.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 16];
        k.read_exact(&mut buf).unwrap();
        assert_eq!(&buf[..12], b"HTTP/1.1 200");
    }
    // Closing them gives the slots back.
    drop(a);
    let again = wait_until(Duration::from_secs(5), "a slot for 127.0.0.2", || {
        connect_from(src(2), s.http).and_then(|mut c| {
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .ok()?;
            c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            let mut buf = [0u8; 12];
            c.read_exact(&mut buf).ok()?;
            (&buf == b"HTTP/1.1 200").then_some(c)
        })
    });
    drop(again);
    std::thread::sleep(Duration::from_millis(300));
    let m = metrics(&s);
    assert_eq!(
        metric(
            &m,
            "jiangtang_http_connections_refused_total{reason=\"address\"}"
        ),
        1.0,
        "{m}"
    );
    // The first tries for a slot may come before the relay has seen the five closes.
    assert!(
        metric(
            &m,
            "jiangtang_http_connections_refused_total{reason=\"total\"}"
        ) >= 1.0,
        "{m}"
    );
    // 7 kept + this one.
    assert_eq!(metric(&m, "jiangtang_http_connections"), 8.0, "{m}");
    assert!(
        s.log()
            .contains("http.max_per_address (5) for 127.0.0.2 reached"),
        "{}",
        s.log()
    );
    assert!(
        s.log().contains("http.max_connections (12) reached"),
        "{}",
        s.log()
    );
    drop((b, c));
}

/// Sends a request whose head is `size` bytes long; returns the status line (or "closed").
fn head_of(s: &Server, size: usize) -> String {
    let start = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ";
    let pad = size - start.len() - 4;
    let mut req = start.as_bytes().to_vec();
    req.extend(std::iter::repeat_n(b'a', pad));
    req.extend(b"\r\n\r\n");
    assert_eq!(req.len(), size);
    let mut c = TcpStream::connect(s.http).unwrap();
    let _ = c.write_all(&req);
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).to_string();
    text.lines().next().unwrap_or("closed").to_string()
}

#[test]
fn request_heads_up_to_the_limit_served_over_it_431() {
    let s = Server::start("[http]\nmax_header_bytes = 8192\n");
    assert!(head_of(&s, 8000).starts_with("HTTP/1.1 200"));
    assert_eq!(
        head_of(&s, 8300),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    assert_eq!(
        head_of(&s, 100_000),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    let s = Server::start("[http]\nmax_header_bytes = 32768\n");
    assert!(head_of(&s, 32000).starts_with("HTTP/1.1 200"));
    assert_eq!(
        head_of(&s, 33_000),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
}

/// Seconds until the relay closes `c`, writing `trickle` every 200 ms meanwhile (at most 10 s).
fn closed_after(c: &mut TcpStream, trickle: &[u8]) -> f64 {
    let t0 = Instant::now();
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 1024];
    while t0.elapsed() < Duration::from_secs(10) {
        match c.read(&mut buf) {
            Ok(0) => return t0.elapsed().as_secs_f64(),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return t0.elapsed().as_secs_f64(),
        }
        if !trickle.is_empty() && c.write_all(trickle).is_err() {
            return t0.elapsed().as_secs_f64();
        }
    }
    f64::INFINITY
}

#[test]
fn heads_that_never_finish_handshakes_that_never_start_and_idle_connections_are_closed() {
    let ca = TestCa::new("slow");
    let pair = ca.issue("localhost", 7);
    let s = Server::start(&format!(
        "[hls]\nblock_timeout_ms = 2000\n[http]\nheader_read_timeout_ms = 1500\nidle_timeout_ms = 2500\n[http.tls]\nlisten = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\n",
        pair.0.display(),
        pair.1.display()
    ));
    let within = |t: f64, lo: f64, hi: f64, what: &str| {
        assert!(
            t >= lo && t <= hi,
            "{what}: closed after {t:.2} s, expected {lo}..{hi}"
        );
    };
    // Nothing sent at all.
    let mut silent = TcpStream::connect(s.http).unwrap();
    within(
        closed_after(&mut silent, b""),
        1.2,
        3.0,
        "silent connection",
    );
    // Slowloris: a head that grows by a header line every 200 ms and never ends.
    let mut slow = TcpStream::connect(s.http).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    within(
        closed_after(&mut slow, b"X-a: b\r\n"),
        1.2,
        3.0,
        "slowloris connection",
    );
    // A kept-alive connection, idle after its request: the head deadline again.
    let mut kept = TcpStream::connect(s.http).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    within(
        closed_after(&mut kept, b""),
        1.2,
        3.0,
        "kept-alive idle connection",
    );
    // HTTPS: a TCP connection that never says ClientHello.
    let mut tls = TcpStream::connect(s.https.unwrap()).unwrap();
    within(
        closed_after(&mut tls, b""),
        1.2,
        3.0,
        "TLS connection without a handshake",
    );
    // A request whose declared body never comes (WHEP offer, body read by the handler): no
    // byte moves, closed after the idle time.
    let mut body = TcpStream::connect(s.http).unwrap();
    body.write_all(
        b"POST /whep/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: 5000\r\n\r\nv=0\r\n",
    )
    .unwrap();
    within(
        closed_after(&mut body, b""),
        2.2,
        4.5,
        "declared body never sent",
    );
    // A client that keeps asking is not cut off.
    let t0 = Instant::now();
    let mut busy = TcpStream::connect(s.http).unwrap();
    busy.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while t0.elapsed() < Duration::from_secs(4) {
        busy.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 512];
        let n = busy.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        std::thread::sleep(Duration::from_millis(500));
    }
    let m = metrics(&s);
    assert!(
        metric(
            &m,
            "jiangtang_http_connections_timed_out_total{reason=\"header\"}"
        ) >= 4.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "jiangtang_http_connections_timed_out_total{reason=\"idle\"}"
        ) >= 1.0,
        "{m}"
    );
}

/// Heap allocated by the relay (jemalloc) in MiB.
fn heap_mib(s: &Server) -> f64 {
    metric(&metrics(s), "jiangtang_heap_allocated_bytes") / 1048576.0
}

/// When each new segment arrived (s, msn), and the transport errors met.
type ViewerLog = (Vec<(f64, u64)>, Vec<String>);

/// A viewer fetching the newest video segment as the playlist advances, from an address of
/// its own (127.0.0.250: the slowloris run shares 127.0.0.1 and meets its per-address cap);
/// records when each new segment arrived and every transport error (retried 300 ms later, as
/// a player does). Bounded by `stop` and 240 s.
fn hls_viewer(
    s: &Server,
    stream: &str,
    origin: Instant,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<ViewerLog> {
    let url = s.url(&format!("/hls/{stream}/video/index.m3u8"));
    let base = s.url(&format!("/hls/{stream}/video/"));
    let from = Some(std::net::Ipv4Addr::new(127, 0, 0, 250).into());
    std::thread::spawn(move || {
        let t0 = origin;
        let mut got = Vec::new();
        let mut errors = Vec::new();
        let mut last = None;
        while !stop.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(240) {
            match try_get_with(&url, &[], from) {
                Ok((200, _, body)) => {
                    if let Ok(pl) = m3u8_rs::parse_media_playlist_res(&body) {
                        let msn = pl.media_sequence + pl.segments.len() as u64 - 1;
                        if last != Some(msn) {
                            let uri = &pl.segments.last().unwrap().uri;
                            match try_get_with(&format!("{base}{uri}"), &[], from) {
                                Ok((200, _, seg)) if !seg.is_empty() => {
                                    got.push((t0.elapsed().as_secs_f64(), msn));
                                    last = Some(msn);
                                }
                                Ok(_) => {}
                                Err(e) => {
                                    errors.push(format!("{:.1} s {e}", t0.elapsed().as_secs_f64()))
                                }
                            }
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => errors.push(format!("{:.1} s {e}", t0.elapsed().as_secs_f64())),
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        (got, errors)
    })
}

/// Longest wait between new segments seen by the viewer within `[from, to]` seconds.
fn longest_gap(got: &[(f64, u64)], from: f64, to: f64) -> f64 {
    let times: Vec<f64> = got
        .iter()
        .map(|g| g.0)
        .filter(|t| *t >= from && *t <= to)
        .collect();
    let mut gap = times.first().map_or(to - from, |t| t - from);
    for w in times.windows(2) {
        gap = gap.max(w[1] - w[0]);
    }
    gap.max(times.last().map_or(0.0, |t| to - t))
}

#[test]
fn ten_thousand_idle_connections_and_slowloris_while_a_lecture_streams() {
    let fds = raise_open_files_limit();
    assert!(
        fds >= 12_000,
        "open files limit {fds}: the flood needs 12000"
    );
    // Per address 2000: the slowloris run from one address is held off by the head
    // deadline, not by the address cap; the idle flood comes from 40 addresses. The head
    // deadline at 30 s: on this shared 2-core machine opening 10,000 connections may take
    // longer than the default 15 s, and all of them are to be open at once.
    let s = Server::start("[http]\nmax_per_address = 2000\nheader_read_timeout_ms = 30000\n");
    assert!(s.log().contains("open files limit"), "{}", s.log());
    let _publisher = ffmpeg_publish(&s.rtmp_url("flood"), "320x180", 25, 440);
    wait_for_segments(&s, "flood", "video", 3);
    let stop = Arc::new(AtomicBool::new(false));
    // Every time in seconds from here.
    let t_start = Instant::now();
    let viewer = hls_viewer(&s, "flood", t_start, stop.clone());
    // A second viewer: ffmpeg reading the lecture over HLS for the whole run.
    let hls = s.url("/hls/flood/index.m3u8");
    let ffmpeg_viewer = std::thread::spawn(move || {
        output_within(
            Command::new("ffmpeg").args([
                "-nostdin", "-v", "error", "-i", &hls, "-t", "90", "-f", "null", "-",
            ]),
            Duration::from_secs(180),
        )
    });
    // Let the playlist window fill, then take the baseline.
    std::thread::sleep(Duration::from_secs(12));
    let t_base = t_start.elapsed().as_secs_f64();
    let (heap0, rss0) = (heap_mib(&s), s.rss_mib());
    let samples = Arc::new(Mutex::new(Vec::<(f64, f64, f64)>::new()));
    let sample = |s: &Server| {
        let (h, r) = (heap_mib(s), s.rss_mib());
        samples
            .lock()
            .unwrap()
            .push((t_start.elapsed().as_secs_f64(), h, r));
        (h, r)
    };
    let api_ok = |s: &Server| {
        let t = Instant::now();
        let (status, _, _) = get(&s.url("/api/v1/streams/flood"));
        assert_eq!(status, 200);
        t.elapsed().as_secs_f64()
    };

    // 1. 10,000 idle connections from 127.0.0.2..127.0.0.41, 250 each.
    let t = Instant::now();
    let idle = idle_connections(s.http, 10_000, 250);
    let opened_in = t.elapsed().as_secs_f64();
    eprintln!("{} idle connections opened in {opened_in:.1} s", idle.len());
    assert!(
        idle.len() >= 9_500,
        "only {} idle connections opened",
        idle.len()
    );
    // The relay holds them all at once: every one was accepted (its accept queue drains
    // behind the flood on two busy cores) before the first reached its head deadline.
    let mut peak: f64 = 0.0;
    let deadline = Instant::now() + Duration::from_secs(25);
    let held = loop {
        let n = metric(&metrics(&s), "jiangtang_http_connections");
        peak = peak.max(n);
        if n >= 9_500.0 || Instant::now() > deadline {
            break (n >= 9_500.0).then_some(n);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let open_now = held.unwrap_or_else(|| {
        panic!(
            "the relay held at most {peak} of {} connections at once; opening them took \
             {opened_in:.1} s\n{}",
            idle.len(),
            metrics(&s)
                .lines()
                .filter(|l| l.starts_with("jiangtang_http"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    let (heap_flood, rss_flood) = sample(&s);
    let mut api_worst: f64 = api_ok(&s);
    // Held a while, then the head deadline (30 s from each accept) closes them all.
    let closed = wait_until(
        Duration::from_secs(45),
        "the idle connections closed",
        || {
            api_worst = api_worst.max(api_ok(&s));
            sample(&s);
            let n = metric(&metrics(&s), "jiangtang_http_connections");
            (n < 50.0).then_some(n)
        },
    );
    let t_idle_end = t_start.elapsed().as_secs_f64();
    // Every one of ours is closed by the relay, none by us. The gauge above allows a few
    // still open: those the relay accepted last (its accept queue drains behind the flood on
    // two busy cores) have their 30 s from a later accept, so give them the time the
    // opening took and some.
    for c in &idle {
        c.set_nonblocking(true).unwrap();
    }
    let open_of_ours = || {
        idle.iter()
            .filter(|c| {
                let mut b = [0u8; 1];
                matches!(c.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            })
            .count()
    };
    let slack = Duration::from_secs_f64(opened_in + 15.0);
    let deadline = Instant::now() + slack;
    let mut still_open = open_of_ours();
    while still_open > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        still_open = open_of_ours();
    }
    assert_eq!(
        still_open, 0,
        "connections the relay left open {slack:?} past the head deadline"
    );
    drop(idle);
    eprintln!("idle flood from {t_base:.1} s to {t_idle_end:.1} s");

    // 2. slowloris: 1500 connections from 127.0.0.1 sending a header line every 10 s for
    // 45 s; the relay cuts each 30 s after its accept, slowhttptest opens new ones.
    let report = std::env::temp_dir().join(format!("jt-slowloris-{}", std::process::id()));
    let slowloris = {
        let url = s.url("/healthz");
        let report = report.clone();
        std::thread::spawn(move || {
            output_within(
                Command::new("slowhttptest")
                    .args([
                        "-H", "-c", "1500", "-r", "500", "-i", "10", "-x", "24", "-p", "3", "-l",
                        "45", "-g", "-o",
                    ])
                    .arg(&report)
                    .args(["-u", &url]),
                Duration::from_secs(80),
            )
        })
    };
    let mut peak_slow = 0.0f64;
    while !slowloris.is_finished() {
        api_worst = api_worst.max(api_ok(&s));
        let (h, _) = sample(&s);
        peak_slow = peak_slow.max(h);
        std::thread::sleep(Duration::from_secs(1));
    }
    let slow_out = slowloris.join().unwrap();
    let slow_text = String::from_utf8_lossy(&slow_out.stdout).to_string();
    let t_slow_end = t_start.elapsed().as_secs_f64();
    let m = metrics(&s);
    let timed_out = metric(
        &m,
        "jiangtang_http_connections_timed_out_total{reason=\"header\"}",
    );

    // 3. Everyone gone: the heap comes back within 5 % of the baseline (jemalloc decays).
    let back = wait_until(
        Duration::from_secs(40),
        "the heap back near the baseline",
        || {
            let (h, _) = sample(&s);
            (h <= heap0 * 1.05).then_some(h)
        },
    );
    let rss_end = s.rss_mib();
    stop.store(true, Ordering::Relaxed);
    let (got, viewer_errors) = viewer.join().unwrap();
    let ff = ffmpeg_viewer.join().unwrap();
    eprintln!("the HLS viewer's transport errors: {viewer_errors:?}");

    let report_csv = std::fs::read_to_string(report.with_extension("csv")).unwrap_or_default();
    let _ = std::fs::remove_file(report.with_extension("csv"));
    let _ = std::fs::remove_file(report.with_extension("html"));
    eprintln!(
        "flood figures: baseline heap {heap0:.1} MiB rss {rss0:.1} MiB; {} idle connections opened in {opened_in:.1} s, {open_now} held: heap {heap_flood:.1} MiB rss {rss_flood:.1} MiB; closed by the head deadline (left {closed}); slowloris 1500: peak heap {peak_slow:.1} MiB, {timed_out} timed out in all; after: heap {back:.1} MiB rss {rss_end:.1} MiB; API worst {api_worst:.3} s",
        10_000
    );
    eprintln!("slowhttptest:\n{slow_text}\n{report_csv}");
    eprintln!(
        "samples (s, heap MiB, rss MiB): {:?}",
        samples.lock().unwrap()
    );

    // Service intact: segments kept coming during both floods, the API answered.
    let gap = longest_gap(&got, t_base, t_slow_end);
    eprintln!("longest wait for a segment during the floods: {gap:.1} s");
    assert!(
        gap < 8.0,
        "the HLS viewer waited {gap:.1} s for a segment: {got:?}"
    );
    // A liveness bound (debug build on two cores shared with the floods and other work):
    // the latency figures are the benchmark's (BENCHMARKS.md, http-flood).
    assert!(api_worst < 5.0, "the API took {api_worst:.2} s");
    assert!(
        ff.status.success(),
        "ffmpeg viewer: {}",
        String::from_utf8_lossy(&ff.stderr)
    );
    // Memory bounded: under 16 KiB of heap per idle connection, and slowloris adds little.
    assert!(
        heap_flood - heap0 < 10_000.0 * 16.0 / 1024.0,
        "heap {heap0:.1} -> {heap_flood:.1} MiB with 10,000 connections"
    );
    assert!(
        rss_flood - rss0 < 400.0,
        "RSS {rss0:.1} -> {rss_flood:.1} MiB"
    );
    // A slowloris connection holds hyper's HTTP/1 read and write buffers (8 KiB each at
    // least) besides the task: measured about 32 KiB; bounded at 40 KiB.
    assert!(
        peak_slow - heap0 < 1500.0 * 40.0 / 1024.0,
        "slowloris heap {heap0:.1} -> {peak_slow:.1} MiB"
    );
    assert!(timed_out >= 1000.0, "only {timed_out} slow heads timed out");
}
