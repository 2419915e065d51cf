//! A throwaway PostgreSQL cluster for the tests of one test binary: Debian's `postgresql`
//! package, `initdb` in a temporary directory, the server on a free loopback port, one
//! fresh database per test. The server runs as the `postgres` user when the tests run as
//! root (it refuses root), and a watchdog stops it and removes its directory when the test
//! process is gone, however it ended.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A running cluster.
pub struct Cluster {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// Its directory.
    pub dir: PathBuf,
    /// The watchdog shell; it ends only after this process, so it is never waited for.
    _watchdog: std::process::Child,
}

/// Options for a cluster.
#[derive(Clone, Copy)]
pub struct Options {
    /// `fsync` on (benchmarks) or off (tests: they kill jiangtang, never the machine).
    pub fsync: bool,
}

fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/setup.sh installs Debian's postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The command line prefix that runs a server program as a user it accepts.
fn as_server_user() -> Vec<String> {
    if is_root() {
        [
            "setpriv",
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ]
        .map(String::from)
        .to_vec()
    } else {
        Vec::new()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(argv: &[String]) {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", argv[0]));
    assert!(
        out.status.success(),
        "{argv:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    /// Starts a cluster.
    pub fn start(opts: Options) -> Cluster {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!(
            "jiangtang-pg-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let prefix = as_server_user();
        if !prefix.is_empty() {
            run(&[
                "chown".into(),
                "postgres:postgres".into(),
                dir.display().to_string(),
            ]);
        }
        let data = dir.join("data");
        let mut initdb = prefix.clone();
        initdb.extend([
            bin.join("initdb").display().to_string(),
            "-D".into(),
            data.display().to_string(),
            "-A".into(),
            "trust".into(),
            "-U".into(),
            "postgres".into(),
            "-E".into(),
            "UTF8".into(),
            "--locale=C".into(),
            "--no-sync".into(),
        ]);
        run(&initdb);
        for attempt in 0..5 {
            let port = free_port();
            let mut server = prefix.clone();
            server.extend([
                bin.join("postgres").display().to_string(),
                "-D".into(),
                data.display().to_string(),
                "-p".into(),
                port.to_string(),
                "-k".into(),
                dir.display().to_string(),
                "-c".into(),
                "listen_addresses=127.0.0.1".into(),
                "-c".into(),
                "max_connections=300".into(),
                "-c".into(),
                format!("fsync={}", if opts.fsync { "on" } else { "off" }),
            ]);
            let quoted: Vec<String> = server.iter().map(|a| format!("'{a}'")).collect();
            // The watchdog: runs the server and stops it (and removes the directory) once
            // the test process is gone.
            let script = format!(
                "{} >{}/server.log 2>&1 & pg=$!; \
                 while kill -0 {parent} 2>/dev/null && kill -0 $pg 2>/dev/null; do sleep 1; done; \
                 kill -INT $pg 2>/dev/null; wait $pg; rm -rf '{}'",
                quoted.join(" "),
                dir.display(),
                dir.display(),
                parent = std::process::id(),
            );
            let mut watchdog = Command::new("sh")
                .args(["-c", &script])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start the PostgreSQL watchdog");
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                let ready = Command::new(bin.join("pg_isready"))
                    .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if ready {
                    return Cluster {
                        port,
                        dir,
                        _watchdog: watchdog,
                    };
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = watchdog.kill();
            let _ = watchdog.wait();
            eprintln!(
                "postgres did not start on port {port} (attempt {attempt}): {}",
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            );
        }
        panic!("could not start PostgreSQL");
    }

    /// A new empty database; its URL.
    pub fn database(&self) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run(&[
            bin_dir().join("psql").display().to_string(),
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            "postgres".into(),
            "-d".into(),
            "postgres".into(),
            "-q".into(),
            "-c".into(),
            format!("CREATE DATABASE {name}"),
        ]);
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(Path::new(&self.dir).join("server.log")).unwrap_or_default()
    }
}

/// The cluster shared by every test of this binary, started on first use.
pub fn shared() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start(Options { fsync: false }))
}
