//! Helpers for the HTTP edge's tests: a throwaway certificate authority made with the
//! `openssl` command (scripts/setup.sh installs it), HTTPS requests with `curl --cacert`,
//! the certificate a new TLS connection is shown (`openssl s_client`), and many idle TCP
//! connections from several loopback addresses.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::output_within;

/// A certificate authority in a directory of its own (removed on drop), issuing leaf
/// certificates for `localhost` and 127.0.0.1.
pub struct TestCa {
    /// The directory with `ca.pem` and the issued files.
    pub dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = output_within(
        Command::new("openssl").current_dir(dir).args(args),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCa {
    /// A new CA (P-256, valid two days).
    pub fn new(tag: &str) -> TestCa {
        let dir = std::env::temp_dir().join(format!(
            "jiangtang-ca-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=jiangtang test CA",
            ],
        );
        std::fs::write(
            dir.join("leaf.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        TestCa { dir }
    }

    /// The CA certificate, for `curl --cacert` and `openssl s_client -CAfile`.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues a leaf with common name `cn` and `serial`: returns (chain PEM, key PEM), the
    /// chain being the leaf followed by the CA, as certbot's fullchain.pem is.
    pub fn issue(&self, cn: &str, serial: u32) -> (PathBuf, PathBuf) {
        let (key, csr, crt, chain) = (
            format!("{cn}.key"),
            format!("{cn}.csr"),
            format!("{cn}.crt"),
            format!("{cn}.chain.pem"),
        );
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &serial.to_string(),
                "-days",
                "2",
                "-out",
                &crt,
                "-extfile",
                "leaf.ext",
            ],
        );
        let mut all = std::fs::read(self.dir.join(&crt)).unwrap();
        all.extend(std::fs::read(self.ca()).unwrap());
        std::fs::write(self.dir.join(&chain), all).unwrap();
        (self.dir.join(chain), self.dir.join(key))
    }

    /// Copies an issued pair over `cert` and `key` as a renewal does: each file written
    /// aside and renamed into place.
    pub fn install(pair: &(PathBuf, PathBuf), cert: &Path, key: &Path) {
        for (from, to) in [(&pair.1, key), (&pair.0, cert)] {
            let tmp = to.with_extension("tmp");
            std::fs::copy(from, &tmp).unwrap();
            std::fs::rename(&tmp, to).unwrap();
        }
    }

    /// Base64 SHA-256 of a certificate's public key, for Chromium's
    /// `--ignore-certificate-errors-spki-list`.
    pub fn spki_hash(cert: &Path) -> String {
        let out = output_within(
            Command::new("sh").arg("-c").arg(format!(
                "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
                cert.display()
            )),
            Duration::from_secs(30),
        );
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A GET with curl: (status, lower-case response headers as one string, body). `ca` verifies
/// the server for `https://` URLs.
pub fn curl(url: &str, ca: Option<&Path>, extra: &[&str]) -> (u16, String, Vec<u8>) {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "20", "-D", "/dev/stderr", "-o", "-"]);
    if let Some(ca) = ca {
        c.arg("--cacert").arg(ca);
    }
    c.args(extra).arg(url);
    let out = output_within(&mut c, Duration::from_secs(30));
    let head = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(out.status.success(), "curl {url}: {head}");
    let status = head
        .lines()
        .rfind(|l| l.starts_with("http/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, out.stdout)
}

/// The subject and serial of the certificate a new TLS connection to `addr` is shown, after
/// verifying it against `ca` (fails the test if it does not verify).
pub fn served_certificate(addr: SocketAddr, ca: &Path) -> String {
    let out = output_within(
        Command::new("sh").arg("-c").arg(format!(
            "openssl s_client -connect {addr} -servername localhost -CAfile '{}' -verify_return_error </dev/null 2>/dev/null | openssl x509 -noout -subject -serial",
            ca.display()
        )),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "openssl s_client {addr}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Raises this process's open files soft limit to its hard limit; returns the new limit.
pub fn raise_open_files_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    l.current = l.maximum;
    let _ = setrlimit(Resource::Nofile, l);
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Opens up to `n` TCP connections to `to` from four threads, spread over source addresses
/// 127.0.0.2, 127.0.0.3, ... with at most `per_source` from each; returns those the kernel
/// completed (the server may close them later). Bounded in count and time (60 s).
pub fn idle_connections(to: SocketAddr, n: usize, per_source: usize) -> Vec<TcpStream> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let sources = n.div_ceil(per_source);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                for k in (t..sources).step_by(4) {
                    let [hi, lo] = ((k + 2) as u16).to_be_bytes();
                    let from = Ipv4Addr::new(127, 0, hi, lo);
                    for _ in 0..per_source.min(n - k * per_source) {
                        if std::time::Instant::now() > deadline {
                            return v;
                        }
                        if let Some(s) = connect_from(from, to) {
                            v.push(s);
                        }
                    }
                }
                v
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

/// A TCP connection from the local address `src` to `to`.
pub fn connect_from(src: Ipv4Addr, to: SocketAddr) -> Option<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    s.bind(&SocketAddr::new(src.into(), 0).into()).ok()?;
    s.connect_timeout(&to.into(), Duration::from_secs(2)).ok()?;
    Some(s.into())
}
