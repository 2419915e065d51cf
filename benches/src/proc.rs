//! The relay under test as a child process, and its CPU time and memory from /proc.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};

/// A running relay, killed on drop.
pub struct Relay {
    child: Child,
    /// HTTP address.
    pub http: SocketAddr,
    /// RTMP address.
    pub rtmp: SocketAddr,
    /// Its log lines (stderr), when started with [`Relay::start_logged`].
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Relay {
    /// Starts `binary serve` on loopback ports chosen by the OS, demo off.
    pub fn start(binary: &str) -> anyhow::Result<Relay> {
        Relay::start_with(binary, &[])
    }

    /// Like [`Relay::start`], with extra environment (configuration overrides) on top.
    pub fn start_with(binary: &str, env: &[(&str, &str)]) -> anyhow::Result<Relay> {
        Relay::spawn(Command::new(binary), env, false)
    }

    /// Like [`Relay::start_with`], run through `wrapper` (such as `taskset -c 0`) when it is
    /// not empty, keeping its log lines in [`Relay::log`] instead of passing them on.
    pub fn start_logged(
        binary: &str,
        wrapper: &[String],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Relay> {
        let cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        Relay::spawn(cmd, env, true)
    }

    fn spawn(mut cmd: Command, env: &[(&str, &str)], keep_log: bool) -> anyhow::Result<Relay> {
        let mut child = cmd
            .arg("serve")
            .env("JIANGTANG_HTTP_LISTEN", "127.0.0.1:0")
            .env("JIANGTANG_RTMP_LISTEN", "127.0.0.1:0")
            .env("JIANGTANG_WEBRTC_UDP_LISTEN", "127.0.0.1:0")
            .env("JIANGTANG_SRT_LISTEN", "127.0.0.1:0")
            .env("JIANGTANG_WEBRTC_MAX_VIEWERS", "2000")
            // Every load comes from this machine's one address: the per-lecture and
            // per-address caps would be what the benches measure.
            .env("JIANGTANG_WEBRTC_MAX_VIEWERS_PER_LECTURE", "2000")
            .env("JIANGTANG_RTMP_MAX_PER_ADDRESS", "1000")
            .env("JIANGTANG_SRT_MAX_PER_ADDRESS", "100")
            .env("JIANGTANG_DEMO_ENABLED", "false")
            // The benches publish names of their own.
            .env("JIANGTANG_LECTURES_ALLOW_UNCONFIGURED", "true")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(if keep_log {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut http, mut rtmp) = (None, None);
        while http.is_none() || rtmp.is_none() {
            let Some(line) = lines.next() else {
                bail!("relay exited before listening");
            };
            let line = line?;
            if let Some(a) = line.strip_prefix("jiangtang: http listening on ") {
                http = Some(a.parse()?);
            } else if let Some(a) = line.strip_prefix("jiangtang: rtmp listening on ") {
                rtmp = Some(a.parse()?);
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Ok(Relay {
            child,
            http: http.context("http")?,
            rtmp: rtmp.context("rtmp")?,
            log,
        })
    }

    /// Waits (up to 30 s) until `stream` has a complete video segment.
    pub async fn wait_live(&self, stream: &str) -> anyhow::Result<()> {
        let c = reqwest::Client::new();
        let url = format!("http://{}/hls/{stream}/video/index.m3u8", self.http);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if std::time::Instant::now() > deadline {
                bail!("{stream} never went live");
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            if let Ok(r) = c.get(&url).send().await
                && r.status().is_success()
                && r.text().await?.contains("seg-")
            {
                return Ok(());
            }
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) used so far by `pid`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Resident set size of `pid` in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
