//! The HTTP edge: our own accept loop over hyper-util, serving the router over plain HTTP
//! and, when `[http.tls]` has a certificate, over HTTPS (rustls) on a second listener.
//!
//! Both listeners share one set of connection slots: `http.max_connections` in total and
//! `http.max_per_address` per client address (IPv6 by /64). A connection over either cap is
//! closed at once, counted in `/metrics` and logged (at most one line per reason every 10 s).
//! A connection must finish its TLS handshake and its first request head within
//! `http.header_read_timeout_ms` (hyper then applies the same bound to every later request
//! head, which also ends kept-alive HTTP/1.1 connections left idle that long); one that
//! moves no byte either way for `http.idle_timeout_ms` is closed (HTTP/2, slow readers).
//! Request heads are bounded by `http.max_header_bytes` (HTTP/1.1 answers 431).
//!
//! The certificate is read from PEM files and swapped in for new handshakes on SIGHUP or
//! when a file's modification time changes; connections already open keep theirs. A file
//! that does not load (bad PEM, key not matching) leaves the previous certificate in place
//! and is logged.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::http::{HeaderValue, header};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

/// Limits and counters shared by the plain and the TLS listener.
pub struct Edge {
    limits: Limits,
    slots: Mutex<Slots>,
    /// Counters for `/metrics`.
    pub stats: Stats,
    refusal_log: [RateLimitedLog; 2],
    builder: auto::Builder<TokioExecutor>,
    hsts: Option<HeaderValue>,
    started: Instant,
    /// Connections in hyper's hands (not yet upgraded or closed).
    serving: AtomicU64,
}

/// Counts a connection in [`Edge::serving`] while it lives.
struct Serving<'a>(&'a AtomicU64);

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `[http]` limits, in the units the loop uses.
#[derive(Clone, Debug)]
struct Limits {
    max_connections: usize,
    max_per_address: usize,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

#[derive(Default)]
struct Slots {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// Counters of the edge, rendered into `/metrics`.
#[derive(Default)]
pub struct Stats {
    open: AtomicU64,
    accepted: AtomicU64,
    refused_total: AtomicU64,
    refused_address: AtomicU64,
    closed_header_timeout: AtomicU64,
    closed_idle: AtomicU64,
    tls_handshake_failed: AtomicU64,
    cert_reloads: AtomicU64,
    cert_reload_errors: AtomicU64,
}

impl Stats {
    /// Appends the counters in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP jiangtang_http_connections HTTP and HTTPS connections open\n\
             # TYPE jiangtang_http_connections gauge\n\
             jiangtang_http_connections {}",
            get(&self.open)
        );
        let _ = writeln!(
            out,
            "# HELP jiangtang_http_connections_accepted_total HTTP and HTTPS connections accepted\n\
             # TYPE jiangtang_http_connections_accepted_total counter\n\
             jiangtang_http_connections_accepted_total {}",
            get(&self.accepted)
        );
        let _ = writeln!(
            out,
            "# HELP jiangtang_http_connections_refused_total connections closed at accept: over http.max_connections (total) or http.max_per_address (address)\n\
             # TYPE jiangtang_http_connections_refused_total counter\n\
             jiangtang_http_connections_refused_total{{reason=\"total\"}} {}\n\
             jiangtang_http_connections_refused_total{{reason=\"address\"}} {}",
            get(&self.refused_total),
            get(&self.refused_address)
        );
        let _ = writeln!(
            out,
            "# HELP jiangtang_http_connections_timed_out_total connections closed for slowness: no complete first request head (and TLS handshake) within http.header_read_timeout_ms, or no byte moved for http.idle_timeout_ms\n\
             # TYPE jiangtang_http_connections_timed_out_total counter\n\
             jiangtang_http_connections_timed_out_total{{reason=\"header\"}} {}\n\
             jiangtang_http_connections_timed_out_total{{reason=\"idle\"}} {}",
            get(&self.closed_header_timeout),
            get(&self.closed_idle)
        );
        let _ = writeln!(
            out,
            "# HELP jiangtang_tls_handshakes_failed_total TLS handshakes that failed\n\
             # TYPE jiangtang_tls_handshakes_failed_total counter\n\
             jiangtang_tls_handshakes_failed_total {}",
            get(&self.tls_handshake_failed)
        );
        let _ = writeln!(
            out,
            "# HELP jiangtang_tls_certificate_reloads_total certificate reloads (SIGHUP or a file changed)\n\
             # TYPE jiangtang_tls_certificate_reloads_total counter\n\
             jiangtang_tls_certificate_reloads_total{{result=\"ok\"}} {}\n\
             jiangtang_tls_certificate_reloads_total{{result=\"error\"}} {}",
            get(&self.cert_reloads),
            get(&self.cert_reload_errors)
        );
    }
}

/// A log line at most every 10 s, with the count of events since the last one.
struct RateLimitedLog {
    last: Mutex<(Option<Instant>, u64)>,
}

impl RateLimitedLog {
    fn new() -> Self {
        RateLimitedLog {
            last: Mutex::new((None, 0)),
        }
    }

    /// Counts one event; returns how many to report when a line is due.
    fn due(&self) -> Option<u64> {
        let mut l = self.last.lock().unwrap_or_else(|e| e.into_inner());
        l.1 += 1;
        let now = Instant::now();
        if l.0
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            let n = l.1;
            *l = (Some(now), 0);
            Some(n)
        } else {
            None
        }
    }
}

/// The address a client is counted under: IPv4 as is, IPv6 by its /64 (one host may hold a
/// whole /64), IPv4-mapped IPv6 as the IPv4 address. (The live channel counts the same way.)
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Why a connection was not given a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    Total,
    Address,
}

/// A connection's place under the caps; given back on drop.
struct Slot {
    edge: Arc<Edge>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.edge.slots.lock().unwrap_or_else(|e| e.into_inner());
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_address.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                s.per_address.remove(&self.key);
            }
        }
        self.edge.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Edge {
    /// The edge for `config`'s `[http]` section.
    pub fn new(config: &config::HttpConfig) -> Arc<Edge> {
        let limits = Limits {
            max_connections: config.max_connections,
            max_per_address: config.max_per_address,
            header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
        };
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            // A head larger than the buffer is refused with 431.
            .max_buf_size(config.max_header_bytes)
            .max_headers(100);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(config.max_header_bytes as u32)
            .max_concurrent_streams(200);
        let hsts = (config.tls.hsts_max_age_s > 0).then(|| {
            HeaderValue::from_str(&format!("max-age={}", config.tls.hsts_max_age_s))
                .expect("digits are a header value")
        });
        Arc::new(Edge {
            limits,
            slots: Mutex::new(Slots::default()),
            stats: Stats::default(),
            refusal_log: [RateLimitedLog::new(), RateLimitedLog::new()],
            builder,
            hsts,
            started: Instant::now(),
            serving: AtomicU64::new(0),
        })
    }

    fn take_slot(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let key = address_key(ip);
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if s.total >= self.limits.max_connections {
            return Err(Refused::Total);
        }
        let n = s.per_address.entry(key).or_insert(0);
        if *n >= self.limits.max_per_address {
            return Err(Refused::Address);
        }
        *n += 1;
        s.total += 1;
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            edge: self.clone(),
            key,
        })
    }

    fn refused(&self, why: Refused, peer: SocketAddr) {
        let (counter, log, what) = match why {
            Refused::Total => (
                &self.stats.refused_total,
                &self.refusal_log[0],
                format!("http.max_connections ({})", self.limits.max_connections),
            ),
            Refused::Address => (
                &self.stats.refused_address,
                &self.refusal_log[1],
                format!(
                    "http.max_per_address ({}) for {}",
                    self.limits.max_per_address,
                    address_key(peer.ip())
                ),
            ),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = log.due() {
            warn!("http: refused {n} connection(s) in the last 10 s: {what} reached");
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Accepts connections on `listener` until `stop` resolves, each served by `app` (over
    /// TLS when `tls` is given). Connections open at `stop` are shut down gracefully.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        app: Router,
        stop: impl Future<Output = ()> + Send + 'static,
    ) {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::pin!(stop);
        let accept_errors = RateLimitedLog::new();
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut stop => break,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors (EMFILE) and the like: wait rather than spin.
                        if let Some(n) = accept_errors.due() {
                            warn!("http: accept failed ({n} in the last 10 s): {e}");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let slot = match self.take_slot(peer.ip()) {
                Ok(s) => s,
                Err(why) => {
                    self.refused(why, peer);
                    drop(stream);
                    continue;
                }
            };
            self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            let (edge, app, tls, stop) = (self.clone(), app.clone(), tls.clone(), stop_rx.clone());
            tokio::spawn(async move {
                edge.connection(stream, peer, slot, tls, app, stop).await;
            });
        }
        let _ = stop_tx.send(true);
        // Like axum's graceful shutdown: requests in flight finish (the caller bounds the
        // wait); upgraded WebSockets are the live channel's to close.
        while self.serving.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        slot: Slot,
        tls: Option<tokio_rustls::TlsAcceptor>,
        app: Router,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let accepted = Instant::now();
        let activity = Arc::new(Activity {
            last_ms: AtomicU64::new(self.now_ms()),
            requested: AtomicBool::new(false),
        });
        let io = Watched {
            inner: stream,
            activity: activity.clone(),
            edge: self.clone(),
            _slot: slot,
        };
        match tls {
            None => {
                self.http(io, peer, false, app, activity, accepted, stop)
                    .await
            }
            Some(acceptor) => {
                let deadline = accepted + self.limits.header_read_timeout;
                match tokio::time::timeout_at(deadline.into(), acceptor.accept(io)).await {
                    Ok(Ok(tls_io)) => {
                        self.http(tls_io, peer, true, app, activity, accepted, stop)
                            .await
                    }
                    Ok(Err(_)) => {
                        self.stats
                            .tls_handshake_failed
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        self.stats
                            .closed_header_timeout
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn http<I>(
        self: &Arc<Self>,
        io: I,
        peer: SocketAddr,
        secure: bool,
        app: Router,
        activity: Arc<Activity>,
        accepted: Instant,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let hsts = if secure { self.hsts.clone() } else { None };
        let seen = activity.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            seen.requested.store(true, Ordering::Relaxed);
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            // Pages that write absolute addresses learn the scheme here.
            req.extensions_mut().insert(if secure {
                axum::http::uri::Scheme::HTTPS
            } else {
                axum::http::uri::Scheme::HTTP
            });
            // HTTP/2 carries the host in `:authority`, not in Host: handlers read Host.
            if !req.headers().contains_key(header::HOST)
                && let Some(a) = req.uri().authority()
                && let Ok(v) = HeaderValue::from_str(a.as_str())
            {
                req.headers_mut().insert(header::HOST, v);
            }
            let (app, hsts) = (app.clone(), hsts.clone());
            async move {
                let mut resp = tower::ServiceExt::oneshot(app, req).await?;
                if let Some(v) = hsts {
                    resp.headers_mut()
                        .entry(header::STRICT_TRANSPORT_SECURITY)
                        .or_insert(v);
                }
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        self.serving.fetch_add(1, Ordering::Relaxed);
        let _serving = Serving(&self.serving);
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut shutting_down = false;
        loop {
            // Until the first request head: the header deadline from accept; then idleness.
            let deadline = if activity.requested.load(Ordering::Relaxed) {
                let last = activity.last_ms.load(Ordering::Relaxed);
                self.started + Duration::from_millis(last) + self.limits.idle_timeout
            } else {
                accepted + self.limits.header_read_timeout
            };
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r
                        && e.downcast_ref::<hyper::Error>().is_some_and(|e| e.is_timeout())
                    {
                        self.stats.closed_header_timeout.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let requested = activity.requested.load(Ordering::Relaxed);
                    let idle_since = self.started
                        + Duration::from_millis(activity.last_ms.load(Ordering::Relaxed));
                    if !requested {
                        self.stats.closed_header_timeout.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    if idle_since + self.limits.idle_timeout <= Instant::now() {
                        self.stats.closed_idle.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                _ = stop.wait_for(|s| *s), if !shutting_down => {
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// When a connection last moved a byte, and whether a request head has arrived.
struct Activity {
    last_ms: AtomicU64,
    requested: AtomicBool,
}

/// A TCP stream that notes its activity and holds the connection's slot (also while it
/// serves an upgraded WebSocket).
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
    edge: Arc<Edge>,
    _slot: Slot,
}

impl Watched {
    fn touch(&self) {
        self.activity
            .last_ms
            .store(self.edge.now_ms(), Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The certificate new TLS handshakes get; swapped by [`CertStore::reload`].
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Reads a PEM certificate chain and private key, checking that they belong together.
fn load_pair(
    cert: &std::path::Path,
    key: &std::path::Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no CERTIFICATE in the file", cert.display()));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    CertifiedKey::from_der(chain, key_der, provider).map_err(|e| {
        format!(
            "{} with {}: {e} (does the key belong to the certificate?)",
            cert.display(),
            key.display()
        )
    })
}

/// SHA-256 of the leaf certificate, as operators compare it (`openssl x509 -fingerprint -sha256`).
fn fingerprint(ck: &CertifiedKey) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(ck.cert[0].as_ref());
    d.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn mtimes(store: &CertStore) -> (Option<SystemTime>, Option<SystemTime>) {
    let m = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (m(&store.cert), m(&store.key))
}

impl CertStore {
    /// Loads the pair named in `[http.tls]`; an error names the file and what is wrong.
    pub fn open(tls: &config::TlsConfig) -> anyhow::Result<Arc<CertStore>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let ck = load_pair(&tls.cert, &tls.key, &provider).map_err(anyhow::Error::msg)?;
        info!(
            "tls: certificate {} loaded (chain of {}, SHA-256 {})",
            tls.cert.display(),
            ck.cert.len(),
            fingerprint(&ck)
        );
        Ok(Arc::new(CertStore {
            current: RwLock::new(Arc::new(ck)),
            cert: tls.cert.clone(),
            key: tls.key.clone(),
            provider,
        }))
    }

    /// Reads the files again; on success new handshakes get the new certificate, on
    /// failure the old one stays and the reason is logged.
    pub fn reload(&self, why: &str, stats: &Stats) {
        match load_pair(&self.cert, &self.key, &self.provider) {
            Ok(ck) => {
                info!(
                    "tls: certificate reloaded ({why}): chain of {}, SHA-256 {}",
                    ck.cert.len(),
                    fingerprint(&ck)
                );
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ck);
                stats.cert_reloads.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                warn!("tls: certificate not reloaded ({why}), keeping the previous one: {e}");
                stats.cert_reload_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The acceptor for the HTTPS listener: TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 by ALPN.
    pub fn acceptor(self: &Arc<Self>) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
        let mut sc = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(sc)))
    }

    /// Reloads on SIGHUP and when either file's modification time changes (checked every
    /// `every`); runs until the process ends.
    pub async fn watch(self: Arc<Self>, edge: Arc<Edge>, every: Duration) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!("tls: no SIGHUP handler ({e}); reloading on file changes only");
                None
            }
        };
        let mut seen = mtimes(&self);
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let why = tokio::select! {
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
                _ = tick.tick() => {
                    let now = mtimes(&self);
                    if now == seen {
                        continue;
                    }
                    "file changed"
                }
            };
            seen = mtimes(&self);
            self.reload(why, &edge.stats);
        }
    }
}

/// Raises this process's soft limit on open files to the hard limit (each connection is a
/// descriptor) and logs both; warns when the connection cap does not fit under it.
pub fn raise_open_files_limit(max_connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    let mut after = before;
    if after.current != after.maximum {
        after.current = after.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, after) {
            warn!("open files limit not raised: {e}");
            after = before;
        }
    }
    let show = |v: Option<u64>| v.map_or("unlimited".to_string(), |n| n.to_string());
    info!(
        "open files limit {} (was {}, hard limit {})",
        show(after.current),
        show(before.current),
        show(after.maximum)
    );
    // Beside HTTP: RTMP, SRT, WebRTC sockets, recordings, the database.
    if let Some(n) = after.current
        && (n as usize) < max_connections + 1024
    {
        warn!(
            "open files limit {n} is below http.max_connections ({max_connections}) + 1024: \
             raise it (ulimit -n, LimitNOFILE=) or lower http.max_connections"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(total: usize, per: usize) -> Arc<Edge> {
        let mut c = config::Config::defaults().unwrap().http;
        c.max_connections = total;
        c.max_per_address = per;
        Edge::new(&c)
    }

    #[test]
    fn slots_are_capped_in_total_and_per_address_and_given_back() {
        let e = edge(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = e.take_slot(a).unwrap();
        let _s2 = e.take_slot(a).unwrap();
        assert_eq!(e.take_slot(a).err(), Some(Refused::Address));
        let _s3 = e.take_slot(b).unwrap();
        assert_eq!(e.take_slot(b).err(), Some(Refused::Total));
        drop(s1);
        let _s4 = e.take_slot(a).unwrap();
        assert_eq!(e.stats.open.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let e = edge(10, 1);
        let _s = e.take_slot("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert_eq!(
            e.take_slot("2001:db8:1:2:ffff::9".parse().unwrap()).err(),
            Some(Refused::Address)
        );
        assert!(e.take_slot("2001:db8:1:3::1".parse().unwrap()).is_ok());
        let _v4 = e.take_slot("192.0.2.7".parse().unwrap()).unwrap();
        assert_eq!(
            e.take_slot("::ffff:192.0.2.7".parse().unwrap()).err(),
            Some(Refused::Address)
        );
    }

    #[test]
    fn refusal_lines_are_rate_limited() {
        let l = RateLimitedLog::new();
        assert_eq!(l.due(), Some(1));
        assert_eq!(l.due(), None);
        assert_eq!(l.due(), None);
    }
}
