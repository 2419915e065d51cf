//! The HTTP edge under a connection flood and slowloris, side by side with nginx.
//!
//! For each server (the release relay, then Debian's nginx as one process serving a small
//! file, both with their default timeouts), in one run:
//!
//! 1. **idle**: `--connections` TCP connections that never send a byte, from loopback
//!    addresses 127.0.0.2.. (`--per-source` each, under the relay's per-address cap), held
//!    `--hold` seconds; RSS before, while held, and after they are closed; the worst time
//!    for a probe request meanwhile.
//! 2. **slowloris**: Debian's `slowhttptest -H` with `--slow` connections from 127.0.0.1
//!    for `--seconds` (a header line every 10 s); peak RSS, the worst probe, and what
//!    slowhttptest reports.
//!
//! The relay runs with `http.max_per_address = 2000` (slowhttptest probes from the address
//! it attacks from). Prints a Markdown table. Bounded in count and time; loopback only.
//!
//!     cargo build --release && cargo run --release -p benches --bin http-flood -- --connections 10000 --seconds 30

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use benches::proc::{Relay, rss_mib};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// The relay binary.
    #[arg(long, default_value = "target/release/jiangtang")]
    relay: String,
    /// nginx.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: String,
    /// Idle connections.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Idle connections per source address.
    #[arg(long, default_value_t = 250)]
    per_source: usize,
    /// Seconds the idle connections are held.
    #[arg(long, default_value_t = 10)]
    hold: u64,
    /// slowloris connections.
    #[arg(long, default_value_t = 1500)]
    slow: usize,
    /// Seconds of slowloris.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
}

/// nginx serving one small file on a free loopback port, one process, default timeouts.
struct Nginx {
    child: Child,
    addr: SocketAddr,
}

impl Nginx {
    fn start(binary: &str, work: &Path) -> anyhow::Result<Nginx> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        std::fs::create_dir_all(work.join("root"))?;
        std::fs::write(work.join("root/healthz"), "{\"status\":\"ok\"}\n")?;
        let conf = work.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\nworker_rlimit_nofile 20000;\n\
                 error_log {work}/nginx-error.log crit;\npid {work}/nginx.pid;\n\
                 events {{ worker_connections 19000; }}\n\
                 http {{\n  access_log off;\n\
                   client_body_temp_path {work}/body;\n  proxy_temp_path {work}/proxy;\n\
                   fastcgi_temp_path {work}/fastcgi;\n  uwsgi_temp_path {work}/uwsgi;\n  scgi_temp_path {work}/scgi;\n\
                   server {{\n    listen 127.0.0.1:{port};\n    root {work}/root;\n  }}\n}}\n",
                work = work.display(),
            ),
        )?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(work)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {binary} (install it with scripts/setup.sh)"))?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
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

/// One GET /healthz on a new connection: seconds to the status line (None: failed in 10 s).
fn probe(addr: SocketAddr) -> Option<f64> {
    let t = Instant::now();
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut buf = [0u8; 12];
    c.read_exact(&mut buf).ok()?;
    (&buf == b"HTTP/1.1 200").then(|| t.elapsed().as_secs_f64())
}

/// Opens `n` idle connections from 127.0.0.2.., `per` per address, from four threads.
fn flood(to: SocketAddr, n: usize, per: usize) -> Vec<TcpStream> {
    let sources = n.div_ceil(per);
    let deadline = Instant::now() + Duration::from_secs(60);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                for k in (t..sources).step_by(4) {
                    let [hi, lo] = ((k + 2) as u16).to_be_bytes();
                    let from = Ipv4Addr::new(127, 0, hi, lo);
                    for _ in 0..per.min(n - k * per) {
                        if Instant::now() > deadline {
                            return v;
                        }
                        let s = socket2::Socket::new(
                            socket2::Domain::IPV4,
                            socket2::Type::STREAM,
                            None,
                        );
                        if let Ok(s) = s
                            && s.bind(&SocketAddr::new(from.into(), 0).into()).is_ok()
                            && s.connect_timeout(&to.into(), Duration::from_secs(2))
                                .is_ok()
                        {
                            v.push(s.into());
                        }
                    }
                }
                v
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap_or_default())
        .collect()
}

/// Connections the server has closed among `conns`.
fn closed_by_server(conns: &[TcpStream]) -> usize {
    conns
        .iter()
        .filter(|c| {
            let _ = c.set_nonblocking(true);
            let mut b = [0u8; 1];
            !matches!(c.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count()
}

struct Row {
    server: &'static str,
    rss0: f64,
    opened: usize,
    open_s: f64,
    rss_idle: f64,
    closed_during_hold: usize,
    probe_idle: f64,
    rss_after_idle: f64,
    rss_slow: f64,
    probe_slow: f64,
    probes_failed: usize,
    slow_summary: String,
    rss_end: f64,
}

fn run(server: &'static str, pid: u32, addr: SocketAddr, a: &Args) -> anyhow::Result<Row> {
    let rss0 = rss_mib(pid);
    let t = Instant::now();
    let conns = flood(addr, a.connections, a.per_source);
    let open_s = t.elapsed().as_secs_f64();
    let opened = conns.len();
    let mut worst: f64 = 0.0;
    let mut failed = 0;
    let mut rss_idle: f64 = 0.0;
    let hold_end = Instant::now() + Duration::from_secs(a.hold);
    while Instant::now() < hold_end {
        match probe(addr) {
            Some(s) => worst = worst.max(s),
            None => failed += 1,
        }
        rss_idle = rss_idle.max(rss_mib(pid));
        std::thread::sleep(Duration::from_millis(500));
    }
    let closed_during_hold = closed_by_server(&conns);
    drop(conns);
    std::thread::sleep(Duration::from_secs(3));
    let rss_after_idle = rss_mib(pid);
    let probe_idle = worst;

    let report =
        std::env::temp_dir().join(format!("jt-http-flood-{server}-{}", std::process::id()));
    let mut slow = Command::new("slowhttptest")
        .args([
            "-H",
            "-c",
            &a.slow.to_string(),
            "-r",
            "500",
            "-i",
            "10",
            "-x",
            "24",
            "-p",
            "3",
        ])
        .args(["-l", &a.seconds.to_string(), "-g", "-o"])
        .arg(&report)
        .args(["-u", &format!("http://{addr}/healthz")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("slowhttptest (scripts/setup.sh installs it)")?;
    let deadline = Instant::now() + Duration::from_secs(a.seconds + 30);
    let (mut rss_slow, mut probe_slow): (f64, f64) = (0.0, 0.0);
    while slow.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = slow.kill();
            break;
        }
        match probe(addr) {
            Some(s) => probe_slow = probe_slow.max(s),
            None => failed += 1,
        }
        rss_slow = rss_slow.max(rss_mib(pid));
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = slow.wait();
    // The CSV: seconds, closed, pending, connected, service available (per second).
    let csv = std::fs::read_to_string(report.with_extension("csv")).unwrap_or_default();
    let _ = std::fs::remove_file(report.with_extension("csv"));
    let _ = std::fs::remove_file(report.with_extension("html"));
    let rows: Vec<Vec<u64>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').filter_map(|v| v.trim().parse().ok()).collect())
        .filter(|r: &Vec<u64>| r.len() >= 5)
        .collect();
    let max_connected = rows.iter().map(|r| r[3]).max().unwrap_or(0);
    let unavailable = rows.iter().filter(|r| r[4] == 0).count();
    let closed = rows.last().map_or(0, |r| r[1]);
    let slow_summary = format!(
        "{max_connected} connected at most, {closed} closed by the server, service unavailable {unavailable} of {} s",
        rows.len()
    );
    std::thread::sleep(Duration::from_secs(5));
    Ok(Row {
        server,
        rss0,
        opened,
        open_s,
        rss_idle,
        closed_during_hold,
        probe_idle,
        rss_after_idle,
        rss_slow,
        probe_slow,
        probes_failed: failed,
        slow_summary,
        rss_end: rss_mib(pid),
    })
}

fn raise_nofile() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    l.current = l.maximum;
    let _ = setrlimit(Resource::Nofile, l);
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    raise_nofile();
    let mut rows = Vec::new();
    {
        // slowhttptest attacks and probes from one address: with the 256-per-address cap
        // the cap would refuse its probe too; 2000 leaves the head deadline to do the work.
        let relay = Relay::start_with(
            &a.relay,
            &[
                ("JIANGTANG_CATALOGUE_ENABLED", "false"),
                ("JIANGTANG_HTTP_MAX_PER_ADDRESS", "2000"),
            ],
        )?;
        rows.push(run("jiangtang", relay.pid(), relay.http, &a)?);
    }
    let work = std::env::temp_dir().join(format!("jt-http-flood-nginx-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    {
        let nginx = Nginx::start(&a.nginx, &work)?;
        rows.push(run("nginx", nginx.child.id(), nginx.addr, &a)?);
    }
    let _ = std::fs::remove_dir_all(&work);
    println!(
        "| server | RSS before MiB | idle connections opened (s) | RSS with them MiB | closed by the server within {} s | worst probe s | RSS after MiB | slowloris {} conns, {} s: peak RSS MiB | worst probe s | slowhttptest | probes failed | RSS at end MiB |",
        a.hold, a.slow, a.seconds
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.1} | {} ({:.1}) | {:.1} | {} | {:.3} | {:.1} | {:.1} | {:.3} | {} | {} | {:.1} |",
            r.server,
            r.rss0,
            r.opened,
            r.open_s,
            r.rss_idle,
            r.closed_during_hold,
            r.probe_idle,
            r.rss_after_idle,
            r.rss_slow,
            r.probe_slow,
            r.slow_summary,
            r.probes_failed,
            r.rss_end
        );
    }
    Ok(())
}
