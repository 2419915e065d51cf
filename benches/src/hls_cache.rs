//! nginx as `config/nginx/hls-cache.conf` ships it, run for a test or a benchmark, and an
//! LL-HLS player that follows one rendition's live edge part by part (shared by
//! `hls-cache-bench` and `tests/hls-behind-nginx-cache.rs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running nginx with the shipped cache configuration; stopped and its files removed
/// on drop.
pub struct NginxCache {
    child: Child,
    /// Where players reach it.
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl NginxCache {
    /// Starts `/usr/sbin/nginx` (one worker) in front of `origin` with the shipped file, its
    /// marked lines set for this run, and every line starting (after indentation) with one
    /// of `replace`'s prefixes replaced by the paired line.
    pub fn start(origin: SocketAddr, replace: &[(&str, &str)], tag: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("jt-nginx-cache-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("cache"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/nginx/hls-cache.conf"),
        )?;
        let mut marked = 0;
        let conf: String = shipped
            .lines()
            .map(|l| {
                let t = l.trim_start();
                let indent = &l[..l.len() - t.len()];
                if t.starts_with("proxy_cache_path /var/cache/nginx/jiangtang ") {
                    marked += 1;
                    return l.replace(
                        "/var/cache/nginx/jiangtang",
                        &dir.join("cache").display().to_string(),
                    );
                }
                let line = match t {
                    "server 127.0.0.1:8080;" => format!("server {origin};"),
                    "listen 8088;" => format!("listen 127.0.0.1:{port};"),
                    "access_log /var/log/nginx/jiangtang-cache.log jiangtang_cache;" => {
                        format!("access_log {}/access.log jiangtang_cache;", dir.display())
                    }
                    _ => {
                        return match replace.iter().find(|(p, _)| t.starts_with(p)) {
                            Some((_, new)) => format!("{indent}{new}"),
                            None => l.to_string(),
                        };
                    }
                };
                marked += 1;
                format!("{indent}{line}")
            })
            .collect::<Vec<_>>()
            .join("\n");
        if marked != 4 {
            bail!("config/nginx/hls-cache.conf: the marked lines moved ({marked} of 4 found)");
        }
        let main = format!(
            "daemon off; master_process off; worker_processes 1;\n\
             error_log {dir}/error.log warn; pid {dir}/nginx.pid;\n\
             events {{ worker_connections 8192; }}\n\
             http {{\n\
               client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;\n\
               fastcgi_temp_path {dir}/fastcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;\n\
               include {dir}/hls-cache.conf;\n\
             }}\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("hls-cache.conf"), conf)?;
        std::fs::write(dir.join("nginx.conf"), main)?;
        let child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .spawn()
            .context("nginx (scripts/setup.sh installs it)")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let nginx = NginxCache { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!("nginx did not listen on {addr}: {}", nginx.error_log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(nginx)
    }

    /// Every request nginx logged: its URI (with query) and whether it went to the origin
    /// (the log names the upstream, `-` when served from the cache).
    pub fn requests(&self) -> Vec<(String, bool)> {
        let log = std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        log.lines()
            .map(|l| {
                let uri = l
                    .split('"')
                    .nth(1)
                    .and_then(|r| r.split(' ').nth(1))
                    .unwrap_or("");
                let upstream = l
                    .split(" upstream=")
                    .nth(1)
                    .is_some_and(|u| !u.starts_with('-'));
                (uri.to_string(), upstream)
            })
            .collect()
    }

    /// nginx's error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for NginxCache {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `(msn, part)` of a media playlist's preload hint, and its URI.
fn hint(text: &str) -> Option<((u64, u64), String)> {
    let uri = text
        .lines()
        .find(|l| l.starts_with("#EXT-X-PRELOAD-HINT:"))?
        .split("URI=\"")
        .nth(1)?
        .split('"')
        .next()?
        .to_string();
    let mut it = uri.trim_end_matches(".m4s").rsplit('-');
    let p = it.next()?.parse().ok()?;
    let m = it.next()?.parse().ok()?;
    Some(((m, p), uri))
}

/// An LL-HLS player of the rendition at `base` (`http://HOST/hls/NAME/video/`): a blocking
/// reload for the hinted part, then the part, until `until` or a failure. Returns each part
/// it got as `(msn, part)` and when it had it, in order.
pub async fn follow(base: String, until: Instant) -> Vec<((u64, u64), Instant)> {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client");
    let get = |url: String| {
        let c = c.clone();
        async move {
            let r = c.get(&url).send().await.ok()?;
            if !r.status().is_success() {
                return None;
            }
            r.bytes().await.ok()
        }
    };
    let mut got = Vec::new();
    let Some(text) = get(format!("{base}index.m3u8")).await else {
        return got;
    };
    let Some(mut next) = hint(&String::from_utf8_lossy(&text)) else {
        return got;
    };
    while Instant::now() < until {
        let ((m, p), uri) = next.clone();
        let Some(text) = get(format!("{base}index.m3u8?_HLS_msn={m}&_HLS_part={p}")).await else {
            break;
        };
        let text = String::from_utf8_lossy(&text).to_string();
        if get(format!("{base}{uri}")).await.is_none() {
            break;
        }
        got.push(((m, p), Instant::now()));
        match hint(&text) {
            Some(h) => next = h,
            None => break,
        }
    }
    got
}

/// Whether `parts` follow each other without a gap (the next part of a segment, or the
/// first of the next).
pub fn gapless(parts: &[(u64, u64)]) -> bool {
    parts.windows(2).all(|w| {
        let ((m0, p0), (m1, p1)) = (w[0], w[1]);
        (m1 == m0 && p1 == p0 + 1) || (m1 == m0 + 1 && p1 == 0)
    })
}
