//! Shared harness of the end-to-end tests: the real `jiangtang` binary on ports chosen by the
//! OS, real publishers (ffmpeg, gst-launch-1.0) and real players (ffprobe, ffmpeg, Chromium).
#![allow(dead_code)]

pub mod floods;
pub mod hooks;
pub mod http_edge;
pub mod replay;
pub mod rtmp;
pub mod whep;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running relay. Killed on drop.
pub struct Server {
    child: Child,
    /// HTTP address.
    pub http: SocketAddr,
    /// HTTPS address, when `[http.tls]` is configured.
    pub https: Option<SocketAddr>,
    /// RTMP address.
    pub rtmp: SocketAddr,
    /// WebRTC media addresses.
    pub webrtc: Vec<SocketAddr>,
    /// SRT address (UDP), when SRT is on.
    pub srt: Option<SocketAddr>,
    log: Arc<Mutex<String>>,
    _dir: tempdir::Dir,
}

mod tempdir {
    use std::path::PathBuf;

    /// A directory removed on drop.
    pub struct Dir(pub PathBuf);

    impl Dir {
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(format!(
                "jiangtang-test-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Server {
    /// Starts the relay with `extra` TOML on top of test defaults (loopback, OS ports, no
    /// demo unless asked).
    pub fn start(extra: &str) -> Server {
        Server::start_in(None, extra)
    }

    /// Like [`Server::start`], inside `netns` when given (its addresses are then only
    /// reachable from inside it: run the peers with [`Netns::command`]).
    pub fn start_in(netns: Option<&Netns>, extra: &str) -> Server {
        Server::launch(netns, extra, "127.0.0.1:0")
    }

    /// Like [`Server::start`], run through `wrapper` (a program and its arguments that
    /// end by executing the command after them, e.g. `unshare --mount ... sh -c '...' sh`),
    /// so the relay's pid is the wrapper's.
    pub fn start_wrapped(wrapper: &[&str], extra: &str) -> Server {
        Server::launch_with(None, wrapper, extra, "127.0.0.1:0")
    }

    /// Like [`Server::start_in`], with HTTP on every address of the namespace, so that
    /// peers in another namespace linked to it ([`Netns::link`]) reach it too. `http` stays
    /// a loopback address for the tests' own requests.
    pub fn start_reachable_in(netns: &Netns, extra: &str) -> Server {
        Server::launch(Some(netns), extra, "0.0.0.0:0")
    }

    fn launch(netns: Option<&Netns>, extra: &str, http_listen: &str) -> Server {
        Server::launch_with(netns, &[], extra, http_listen)
    }

    fn launch_with(
        netns: Option<&Netns>,
        wrapper: &[&str],
        extra: &str,
        http_listen: &str,
    ) -> Server {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("jiangtang.toml");
        std::fs::write(&path, extra).unwrap();
        let bin = env!("CARGO_BIN_EXE_jiangtang");
        let mut cmd = match (netns, wrapper.split_first()) {
            (Some(ns), _) => ns.command(bin),
            (None, Some((program, args))) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            (None, None) => Command::new(bin),
        };
        // Loopback only, on ports the OS picks; the demo only where a test asks for it. In a
        // namespace of the test's own, WebRTC takes its non-loopback address (browsers
        // gather no loopback candidates).
        let udp = if netns.is_some() {
            "0.0.0.0:0"
        } else {
            "127.0.0.1:0"
        };
        cmd.env("JIANGTANG_HTTP_LISTEN", http_listen)
            .env("JIANGTANG_RTMP_LISTEN", "127.0.0.1:0")
            .env("JIANGTANG_WEBRTC_UDP_LISTEN", udp)
            .env("JIANGTANG_SRT_LISTEN", "127.0.0.1:0");
        if !extra.contains("[demo]") {
            cmd.env("JIANGTANG_DEMO_ENABLED", "false");
        }
        // Tests publish to names of their own choosing: open unless the test decides
        // (the shipped default denies names nobody configured).
        if !extra.contains("allow_unconfigured") {
            cmd.env("JIANGTANG_LECTURES_ALLOW_UNCONFIGURED", "true");
        }
        // The catalogue's SQLite file lives with the test, unless the test says where.
        if !extra.contains("database_path") && !extra.contains("database_url") {
            cmd.env(
                "JIANGTANG_CATALOGUE_DATABASE_PATH",
                format!("\"{}\"", dir.0.join("catalogue.db").display()),
            );
        }
        // Recordings go with the test too (not into the working directory, the package).
        if !(extra.contains("[recording]") && extra.contains("dir =")) {
            cmd.env(
                "JIANGTANG_RECORDING_DIR",
                format!("\"{}\"", dir.0.join("recordings").display()),
            );
        }
        // A test that reads debug lines says so in its config (a TOML comment).
        if extra.contains("# test: RUST_LOG=debug") {
            cmd.env("TEST_RELAY_RUST_LOG", "debug");
        }
        cmd.args(["serve", "--config"]).arg(&path);
        Server::run(
            cmd,
            dir,
            !extra.contains("[webrtc]\nenabled = false"),
            !extra.contains("[srt]\nenabled = false"),
            true,
        )
    }

    /// `jiangtang serve` exactly as the README's first command runs it: no config file, no
    /// overrides, the default ports and the demo. Inside `netns`, so the default ports are
    /// free whatever else runs on this machine.
    pub fn start_as_shipped_in(netns: &Netns) -> Server {
        let mut cmd = netns.command(env!("CARGO_BIN_EXE_jiangtang"));
        let dir = tempdir::Dir::new();
        // The shipped default puts the catalogue in ./jiangtang.db: here, the test's own.
        cmd.arg("serve").current_dir(&dir.0);
        Server::run(cmd, dir, true, true, false)
    }

    fn run(
        mut cmd: Command,
        dir: tempdir::Dir,
        wants_webrtc: bool,
        wants_srt: bool,
        loopback_http: bool,
    ) -> Server {
        let level = cmd
            .get_envs()
            .find(|(k, _)| *k == "TEST_RELAY_RUST_LOG")
            .and_then(|(_, v)| v)
            .map_or("info".to_string(), |v| v.to_string_lossy().into_owned());
        let mut child = cmd
            .env("RUST_LOG", level)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start jiangtang");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut http, mut rtmp, mut webrtc, mut srt) = (None, None, Vec::new(), None);
        let mut https = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.is_none()
            || rtmp.is_none()
            || (wants_webrtc && webrtc.is_empty())
            || (wants_srt && srt.is_none())
        {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("relay did not start: {}", log.lock().unwrap()));
            if let Some(a) = line.strip_prefix("jiangtang: https listening on ") {
                https = Some(a.parse().unwrap());
            } else if let Some(a) = line.strip_prefix("jiangtang: http listening on ") {
                let mut addr: SocketAddr = a.parse().unwrap();
                if addr.ip().is_unspecified() && loopback_http {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                http = Some(addr);
            } else if let Some(a) = line.strip_prefix("jiangtang: rtmp listening on ") {
                rtmp = Some(a.parse().unwrap());
            } else if let Some(a) = line.strip_prefix("jiangtang: webrtc listening on udp ") {
                webrtc.push(a.parse().unwrap());
            } else if let Some(a) = line.strip_prefix("jiangtang: srt listening on udp ") {
                srt = Some(a.parse().unwrap());
            }
        }
        Server {
            child,
            http: http.unwrap(),
            https,
            rtmp: rtmp.unwrap(),
            webrtc,
            srt,
            log,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT` + path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// `rtmp://127.0.0.1:PORT/live/` + rest.
    pub fn rtmp_url(&self, rest: &str) -> String {
        format!("rtmp://{}/live/{}", self.rtmp, rest)
    }

    /// Everything the relay logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Process id of the relay.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the relay in MiB.
    pub fn rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// Kills the relay with SIGKILL, as a crash or the OOM killer would, and waits for it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `timeout` for the relay to exit: its exit status, or
    /// none if it is still running.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A network namespace of the test's own, deleted on drop: loopback, plus an interface
/// with [`Netns::ADDRESS`] (browsers gather ICE candidates only on non-loopback interfaces).
/// Nothing in it reaches outside. Needs root.
pub struct Netns {
    /// Its name, for `ip netns exec`.
    pub name: String,
}

impl Netns {
    /// Creates it with loopback up, or `None` when not root (the caller skips, loudly).
    pub fn new(tag: &str) -> Option<Netns> {
        if !is_root() {
            return None;
        }
        let name = format!("jt-{tag}-{}", std::process::id());
        // Left over from a run that was killed; usually there is none.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        let ip = |args: &[&str]| {
            run_ok(Command::new("ip").args(["-n", &ns.name]).args(args));
        };
        ip(&["link", "set", "lo", "up"]);
        // A veth pair with both ends inside (this kernel has no dummy interfaces).
        ip(&["link", "add", "jt0", "type", "veth", "peer", "name", "jt1"]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", Netns::ADDRESS),
            "dev",
            "jt0",
        ]);
        ip(&["link", "set", "jt0", "up"]);
        ip(&["link", "set", "jt1", "up"]);
        Some(ns)
    }

    /// The namespace's own non-loopback address.
    pub const ADDRESS: &'static str = "10.99.0.1";

    /// A default route over the namespace's own veth pair, which leads nowhere outside it.
    /// Firefox gathers ICE candidates only on the default route's interface: without one
    /// it has none, and it pairs none with a loopback address either.
    pub fn default_route(&self) {
        run_ok(
            Command::new("ip").args(["-n", &self.name, "route", "add", "default", "dev", "jt0"]),
        );
    }

    /// Links this namespace to `other` with a veth pair: this side `10.99.1.1`, theirs
    /// `10.99.1.2`. With `kbit`, what this side sends over the link is limited to that rate
    /// (a token bucket, as a slow uplink would): a viewer behind a poor link.
    pub fn link(&self, other: &Netns, kbit: Option<u32>) {
        run_ok(Command::new("ip").args([
            "-n",
            &self.name,
            "link",
            "add",
            "jtl",
            "type",
            "veth",
            "peer",
            "name",
            "jtr",
            "netns",
            &other.name,
        ]));
        let ip = |ns: &str, args: &[&str]| run_ok(Command::new("ip").args(["-n", ns]).args(args));
        ip(&self.name, &["addr", "add", "10.99.1.1/24", "dev", "jtl"]);
        ip(&other.name, &["addr", "add", "10.99.1.2/24", "dev", "jtr"]);
        ip(&self.name, &["link", "set", "jtl", "up"]);
        ip(&other.name, &["link", "set", "jtr", "up"]);
        if let Some(kbit) = kbit {
            run_ok(self.command("tc").args([
                "qdisc",
                "add",
                "dev",
                "jtl",
                "root",
                "tbf",
                "rate",
                &format!("{kbit}kbit"),
                "burst",
                "16kb",
                "latency",
                "100ms",
            ]));
        }
    }

    /// Links this namespace to `other` with a veth pair on subnet `10.99.N.0/24`: this side
    /// `10.99.N.1` (interface `jlN`), theirs `10.99.N.2` (`jrN`), so a namespace can have
    /// several links (a chain of relays). With `kbit`, each side sends at most that rate.
    pub fn link_via(&self, other: &Netns, n: u8, kbit: Option<u32>) {
        assert!(n >= 2, "subnet 1 is link()'s");
        let (ours, theirs) = (format!("jl{n}"), format!("jr{n}"));
        run_ok(Command::new("ip").args([
            "-n",
            &self.name,
            "link",
            "add",
            &ours,
            "type",
            "veth",
            "peer",
            "name",
            &theirs,
            "netns",
            &other.name,
        ]));
        let ip = |ns: &str, args: &[&str]| run_ok(Command::new("ip").args(["-n", ns]).args(args));
        ip(
            &self.name,
            &["addr", "add", &format!("10.99.{n}.1/24"), "dev", &ours],
        );
        ip(
            &other.name,
            &["addr", "add", &format!("10.99.{n}.2/24"), "dev", &theirs],
        );
        ip(&self.name, &["link", "set", &ours, "up"]);
        ip(&other.name, &["link", "set", &theirs, "up"]);
        if let Some(kbit) = kbit {
            for (ns, dev) in [(self, &ours), (other, &theirs)] {
                run_ok(ns.command("tc").args([
                    "qdisc",
                    "add",
                    "dev",
                    dev,
                    "root",
                    "tbf",
                    "rate",
                    &format!("{kbit}kbit"),
                    "burst",
                    "32kb",
                    "latency",
                    "200ms",
                ]));
            }
        }
    }

    /// Loads an nftables ruleset inside the namespace.
    pub fn nft(&self, rules: &str) {
        use std::io::Write;
        let mut c = self
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft (installed by scripts/setup.sh)");
        c.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
        assert!(c.wait().unwrap().success(), "nft refused: {rules}");
    }

    /// `program` to be run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn run_ok(c: &mut Command) {
    let st = c.status().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(st.success(), "{c:?} failed");
}

/// Held while a test drives Chromium: browser timing (A/V sync, frame pacing) is what some
/// tests measure, so two browsers must not compete for the two cores.
pub fn browser_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Proc {
    /// Stops it now.
    pub fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Waits for it to exit by itself (up to `timeout`), returning its success.
    pub fn wait(&mut self, timeout: Duration) -> Option<bool> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.0.try_wait().unwrap() {
                return Some(s.success());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// ffmpeg publishing a test lecture in real time over RTMP: `size` test pattern at `fps`
/// with a keyframe every 2 s, and a sine tone of `tone_hz` as AAC.
pub fn ffmpeg_publish(url: &str, size: &str, fps: u32, tone_hz: u32) -> Proc {
    ffmpeg_publish_args(url, size, fps, tone_hz, &[])
}

/// Like [`ffmpeg_publish`] with extra output arguments.
pub fn ffmpeg_publish_args(url: &str, size: &str, fps: u32, tone_hz: u32, extra: &[&str]) -> Proc {
    let gop = (fps * 2).to_string();
    let child = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-re"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={size}:rate={fps}"),
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("sine=frequency={tone_hz}:sample_rate=48000"),
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args([
            "-g",
            &gop,
            "-keyint_min",
            &gop,
            "-pix_fmt",
            "yuv420p",
            "-b:v",
            "600k",
        ])
        .args(["-c:a", "aac", "-b:a", "64k", "-ac", "2"])
        .args(extra)
        .args(["-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg (install with scripts/setup.sh)");
    Proc(child)
}

/// ffmpeg sending testsrc2 and one sine tone per `(language, Hz)` as MPEG-TS over SRT.
pub fn ffmpeg_srt(url: &str, tones: &[(&str, u32)], extra_in: &[&str]) -> Command {
    let mut c = Command::new("ffmpeg");
    c.args(["-nostdin", "-loglevel", "error", "-re"])
        .args(extra_in)
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25"]);
    for (_, hz) in tones {
        c.args([
            "-f",
            "lavfi",
            "-i",
            &format!("sine=frequency={hz}:sample_rate=48000"),
        ]);
    }
    c.args(["-map", "0:v"]);
    for i in 0..tones.len() {
        c.args(["-map", &format!("{}:a", i + 1)]);
    }
    c.args([
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
    ])
    .args([
        "-g",
        "50",
        "-keyint_min",
        "50",
        "-pix_fmt",
        "yuv420p",
        "-b:v",
        "500k",
    ])
    .args(["-c:a", "aac", "-b:a", "64k", "-ac", "1"]);
    for (i, (lang, _)) in tones.iter().enumerate() {
        c.args([&format!("-metadata:s:a:{i}"), &format!("language={lang}")]);
    }
    c.args(["-f", "mpegts", url]);
    c.stdin(Stdio::null()).stdout(Stdio::null());
    c
}

pub fn srt_url(s: &Server, streamid: &str, extra: &str) -> String {
    format!(
        "srt://{}?streamid={streamid}&latency=300000{extra}",
        s.srt.expect("SRT listening")
    )
}

/// A request with a body: status, headers, body.
pub fn send(
    method: &str,
    url: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    send_with(method, url, content_type, body, &[])
}

/// [`send`] with extra request headers.
pub fn send_with(
    method: &str,
    url: &str,
    content_type: Option<&str>,
    body: &[u8],
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let mut req = client
            .request(method.parse().unwrap(), url)
            .body(body.to_vec());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.unwrap().to_vec();
        (status, headers, body)
    })
}

/// GET `url`: status, headers, body.
pub fn get(url: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    get_with(url, &[])
}

/// GET `url` with extra request headers: status, headers, body (as sent: no decompression).
pub fn get_with(url: &str, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    try_get_with(url, headers, None).unwrap_or_else(|e| panic!("request: {e}"))
}

/// GET `url` with extra request headers, from `local` if given; a transport error (refused,
/// reset, timed out) is returned, for clients that retry as a real player does.
pub fn try_get_with(
    url: &str,
    headers: &[(&str, &str)],
    local: Option<std::net::IpAddr>,
) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .local_address(local)
            .build()
            .unwrap();
        let mut req = client.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.map_err(|e| format!("{url}: {e:?}"))?;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r
            .bytes()
            .await
            .map_err(|e| format!("{url}: {e:?}"))?
            .to_vec();
        Ok((status, headers, body))
    })
}

/// GET `url` as text, asserting 200.
pub fn get_text(url: &str) -> String {
    let (status, _, body) = get(url);
    let text = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "GET {url}: {text}");
    text
}

/// Polls `f` every 200 ms until it returns `Some` or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the lecture's media playlist `rendition` lists at least `n` segments.
pub fn wait_for_segments(
    s: &Server,
    stream: &str,
    rendition: &str,
    n: usize,
) -> m3u8_rs::MediaPlaylist {
    let url = s.url(&format!("/hls/{stream}/{rendition}/index.m3u8"));
    wait_until(
        Duration::from_secs(40),
        &format!("{n} segments of {rendition}"),
        || {
            let (status, _, body) = get(&url);
            if status != 200 {
                return None;
            }
            let pl = m3u8_rs::parse_media_playlist_res(&body).ok()?;
            (pl.segments.len() >= n).then_some(pl)
        },
    )
}

/// The value of an attribute in a playlist tag line (`KEY=value` or `KEY="value"`).
pub fn attr<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("{key}=");
    let mut rest = line;
    loop {
        let i = rest.find(&pat)?;
        let before = rest[..i].chars().last();
        let after = &rest[i + pat.len()..];
        if matches!(before, None | Some(':') | Some(',')) {
            return Some(if let Some(q) = after.strip_prefix('"') {
                &q[..q.find('"')?]
            } else {
                &after[..after.find(',').unwrap_or(after.len())]
            });
        }
        rest = after;
    }
}

/// Runs a command to completion, killing it (and failing the test) after `timeout`, so a
/// player that hangs on a bad stream cannot hang the suite.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (install with scripts/setup.sh)"));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Runs `ffprobe` on `input` (URL or file) with JSON output of streams and format.
pub fn ffprobe(input: &str, extra: &[&str]) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .args(extra)
        .arg(input)
        .output()
        .expect("ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {input}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Writes `parts` into one file in a temp directory and returns its path.
pub fn write_temp(name: &str, parts: &[&[u8]]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("jt-{}-{name}", std::process::id()));
    let mut all = Vec::new();
    for part in parts {
        all.extend_from_slice(part);
    }
    std::fs::write(&p, all).unwrap();
    p
}

/// Decodes `seconds` of audio from `url` to mono 16-bit PCM at 16 kHz with ffmpeg.
pub fn decode_pcm(url: &str, seconds: f64) -> Vec<i16> {
    decode_pcm_in(None, url, seconds)
}

/// Like [`decode_pcm`], with ffmpeg run inside `netns` when given.
pub fn decode_pcm_in(netns: Option<&Netns>, url: &str, seconds: f64) -> Vec<i16> {
    let mut cmd = match netns {
        Some(ns) => ns.command("ffmpeg"),
        None => Command::new("ffmpeg"),
    };
    let out = cmd
        .args([
            "-nostdin",
            "-v",
            "error",
            "-i",
            url,
            "-t",
            &seconds.to_string(),
        ])
        .args(["-vn", "-ac", "1", "-ar", "16000", "-f", "s16le", "-"])
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success(),
        "decode {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// Dominant frequency of a tone in 16 kHz PCM, by counting zero crossings of the louder
/// half of the signal (robust enough for the pure tones the tests send).
pub fn tone_hz(pcm: &[i16]) -> f64 {
    let crossings = pcm.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    crossings as f64 / 2.0 / (pcm.len() as f64 / 16_000.0)
}

/// Reads whatever the peer sends until it closes (or `timeout`); returns true if it closed.
pub fn closed_by_peer(stream: &mut std::net::TcpStream, timeout: Duration) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Runs the Node.js script `script` of `tests/node` (inside `netns` when given) and reads the
/// JSON it prints; the caller holds [`browser_lock`] when the script drives a browser.
pub fn node_in(
    netns: Option<&Netns>,
    script: &str,
    args: &[&str],
    timeout: Duration,
) -> serde_json::Value {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "tests/node has no node_modules: run scripts/test.sh, which installs them"
    );
    let mut cmd = match netns {
        Some(ns) => ns.command("node"),
        None => Command::new("node"),
    };
    let out = output_within(cmd.arg(dir.join(script)).args(args), timeout);
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{script}: no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `target/test-screenshots/` (created), where browser tests leave their screenshots.
pub fn screenshot_dir() -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.display().to_string()
}

/// Adds console operator `name` with `password` to the catalogue of the configuration file
/// `config`, as an operator would; panics with the command's stderr if it refuses.
pub fn add_operator(config: &std::path::Path, name: &str, password: &str) {
    let out = try_add_operator(config, name, password);
    assert!(
        out.status.success(),
        "operator add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `jiangtang operator add NAME --config CONFIG`, the password on stdin.
pub fn try_add_operator(
    config: &std::path::Path,
    name: &str,
    password: &str,
) -> std::process::Output {
    use std::io::Write;
    let mut cli = Command::new(env!("CARGO_BIN_EXE_jiangtang"))
        .args(["operator", "add", name, "--config"])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that fails before reading says why on stderr, not with a broken pipe here.
    let _ = writeln!(cli.stdin.take().unwrap(), "{password}");
    cli.wait_with_output().unwrap()
}

/// Writes `toml` and a catalogue database in `dir` as `dir/jiangtang.toml`: its path and text.
pub fn catalogue_config(dir: &std::path::Path, toml: &str) -> (PathBuf, String) {
    let text = format!(
        "{toml}[catalogue]\ndatabase_path = \"{}\"\n",
        dir.join("catalogue.db").display()
    );
    let path = dir.join("jiangtang.toml");
    std::fs::write(&path, &text).unwrap();
    (path, text)
}

/// A new directory under the system's temporary one, named for `label`, this process and
/// the moment.
pub fn scratch_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "jiangtang-{label}-{}-{}",
        std::process::id(),
        jiff::Timestamp::now().as_nanosecond()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
