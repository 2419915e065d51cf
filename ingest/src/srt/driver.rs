//! The SRT listener: one thread waits on libsrt's epoll for the listener and every
//! publisher, and feeds what arrives through [`TsToMedia`] into the relay.
//!
//! Callers are admitted or refused inside libsrt's handshake (stream id, key, passphrase,
//! limits), so a refused encoder gets an SRT reject code, not a connection that opens and
//! drops. A thread, not a tokio task: libsrt's calls are synchronous, and this one thread
//! never blocks on anything but libsrt's epoll.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use config::Config;
use libsrt::{
    Admission, CallerRequest, Listener, ListenerOptions, Poller, Ready, Recv, RejectCode, Socket,
    SocketId, SrtError,
};
use media::encode::{AacFrame, AudioEncoder, AudioSource, Transcoders};
use media::limits::{self, AddressSlot, Limit, PerAddress};
use media::sink::{MediaSink, Publish, PublishError, PublishRequest, TransportStats};
use media::{Language, MediaEvent, TrackId};
use tracing::{info, warn};

use super::streamid::{self, StreamIdError};
use super::to_media::{Notice, TsOutput, TsToMedia};

/// A publisher that sends no MPEG-TS program (PAT/PMT with H.264 or AAC) within this time,
/// or no audio or video for this long once it has, is disconnected: a silent connection
/// (libsrt's keepalives hold it open) must not hold the lecture from its real publisher.
const INPUT_TIMEOUT: Duration = Duration::from_secs(10);
/// Refused callers logged at most this many times per [`NOTICE_EVERY`] (anyone can send
/// handshakes; a flood of them must not flood the log).
const REFUSALS_LOGGED: u32 = 20;
/// How often transport statistics are read and reported.
const STATS_EVERY: Duration = Duration::from_secs(1);
/// After the first notice of a kind, at most one log line per kind this often.
const NOTICE_EVERY: Duration = Duration::from_secs(10);
/// After a failed accept the listener is left alone this long, so a failure that persists
/// neither spins the thread every publisher shares nor floods the log.
const ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// A running SRT listener; dropping it stops the thread and closes every connection.
pub struct SrtServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SrtServer {
    /// The UDP address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for SrtServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The log of refused callers, throttled.
#[derive(Default)]
struct Refusals {
    window: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl Refusals {
    fn log(&mut self, peer: Option<SocketAddr>, stream: &str, why: &dyn std::fmt::Display) {
        let now = Instant::now();
        if self
            .window
            .is_none_or(|w| now.duration_since(w) >= NOTICE_EVERY)
        {
            if self.suppressed > 0 {
                warn!(
                    "srt: {} more callers refused in the last {} s (not logged one by one)",
                    self.suppressed,
                    NOTICE_EVERY.as_secs()
                );
            }
            *self = Refusals {
                window: Some(now),
                ..Default::default()
            };
        }
        if self.logged < REFUSALS_LOGGED {
            self.logged += 1;
            warn!(remote = ?peer, stream, "srt caller refused: {why}");
        } else {
            self.suppressed += 1;
        }
    }
}

/// Failed accepts: when to try again, and a log of them throttled like [`Refusals`].
#[derive(Default)]
struct AcceptErrors {
    paused_until: Option<Instant>,
    window: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    /// Notes a failure at `now`; returns whether to log it (the first of each
    /// [`NOTICE_EVERY`], with how many were not logged since).
    fn failed(&mut self, now: Instant) -> Option<u64> {
        self.paused_until = Some(now + ACCEPT_PAUSE);
        if self
            .window
            .is_some_and(|w| now.duration_since(w) < NOTICE_EVERY)
        {
            self.suppressed += 1;
            return None;
        }
        self.window = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }

    /// Whether accepting is paused at `now`.
    fn paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|t| now < t)
    }

    /// Ends a pause that is over at `now`; returns whether there was one.
    fn resume(&mut self, now: Instant) -> bool {
        if self.paused_until.is_some() && !self.paused(now) {
            self.paused_until = None;
            true
        } else {
            false
        }
    }
}

fn reject_code(e: &PublishError) -> RejectCode {
    match e {
        PublishError::Unauthorized(_) => RejectCode::UNAUTHORIZED,
        PublishError::AlreadyPublishing(_) => RejectCode::CONFLICT,
        PublishError::UnknownLecture(_) => RejectCode::NOT_FOUND,
        PublishError::TooManyLectures => RejectCode::OVERLOAD,
    }
}

fn request(id: &streamid::StreamId, peer: Option<SocketAddr>) -> PublishRequest {
    PublishRequest {
        stream: id.stream.clone(),
        key: id.key.clone(),
        language: None,
        protocol: "srt",
        remote: peer,
    }
}

/// Decides about one caller during its handshake, on libsrt's receive thread (shared by
/// every connection on the port): it waits on nothing, [`Publish::check`] answers from a
/// snapshot.
fn admit(
    caller: CallerRequest<'_>,
    publish: &dyn Publish,
    config: &Config,
    connections: &AtomicUsize,
    per_address: &PerAddress,
    refusals: &std::sync::Mutex<Refusals>,
) -> Admission {
    let peer = caller.peer;
    let refused = |stream: &str, why: &dyn std::fmt::Display| {
        refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log(peer, stream, why)
    };
    let id = match streamid::parse(caller.stream_id) {
        Ok(id) => id,
        Err(e) => {
            // Never the key a malformed id may still carry.
            let shown: String = media::admission::redact(caller.stream_id)
                .chars()
                .take(80)
                .collect();
            refused(&shown, &e);
            let code = match e {
                StreamIdError::NotPublish(_) => RejectCode::BAD_MODE,
                _ => RejectCode::BAD_REQUEST,
            };
            return Admission::Reject(code);
        }
    };
    if connections.load(Ordering::Relaxed) >= config.srt.max_connections {
        limits::hit(Limit::SrtConnections);
        let why = format!(
            "{} publishers already (srt.max_connections)",
            config.srt.max_connections
        );
        refused(&id.stream, &why);
        return Admission::Reject(RejectCode::OVERLOAD);
    }
    if let Some(p) = peer
        && per_address.count(p.ip()) >= config.srt.max_per_address
    {
        limits::hit(Limit::SrtPerAddress);
        let why = format!(
            "{} publishers from this address already (srt.max_per_address)",
            config.srt.max_per_address
        );
        refused(&id.stream, &why);
        return Admission::Reject(RejectCode::OVERLOAD);
    }
    if let Err(e) = publish.check(&request(&id, peer)) {
        refused(&id.stream, &e);
        return Admission::Reject(reject_code(&e));
    }
    Admission::Accept {
        passphrase: config.srt_passphrase(&id.stream).map(str::to_string),
    }
}

/// Binds the listener (`config.srt.listen`) and starts its thread; `transcoders` turn Opus
/// audio tracks into AAC.
pub fn start(
    config: Arc<Config>,
    publish: Arc<dyn Publish>,
    transcoders: Arc<dyn Transcoders>,
) -> Result<SrtServer, SrtError> {
    let connections = Arc::new(AtomicUsize::new(0));
    let opts = ListenerOptions {
        latency_ms: config.srt.latency_ms,
        peer_idle_timeout_ms: config.srt.idle_timeout_ms,
        backlog: 64,
    };
    let per_address = PerAddress::new(config.srt.max_per_address);
    let (p, c, n, a) = (
        publish.clone(),
        config.clone(),
        connections.clone(),
        per_address.clone(),
    );
    let refusals = std::sync::Mutex::new(Refusals::default());
    let listener = Listener::bind(
        config.srt.listen,
        &opts,
        Box::new(move |caller| admit(caller, p.as_ref(), &c, &n, &a, &refusals)),
    )?;
    let addr = listener.local_addr()?;
    let poller = Poller::new()?;
    poller.add(listener.id())?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("srt".into())
        .spawn(move || {
            Driver {
                listener,
                poller,
                publish,
                transcoders,
                conns: HashMap::new(),
                connections,
                max_connections: config.srt.max_connections,
                per_address,
                accept_errors: AcceptErrors::default(),
            }
            .run(&stop2)
        })
        .map_err(|e| SrtError {
            code: -1,
            message: format!("cannot start the SRT thread: {e}"),
        })?;
    Ok(SrtServer {
        addr,
        stop,
        thread: Some(thread),
    })
}

/// An Opus track's transcoder and where its AAC goes.
struct OpusTrack {
    encoder: Box<dyn AudioEncoder>,
}

/// AAC frames from a connection's Opus transcoders: `(track, language, frame)`.
type AacOut = (TrackId, Option<Language>, AacFrame);

struct Conn {
    socket: Socket,
    peer: Option<SocketAddr>,
    stream: String,
    sink: Box<dyn MediaSink>,
    ts: TsToMedia,
    opus: HashMap<TrackId, Option<OpusTrack>>,
    aac_tx: std::sync::mpsc::SyncSender<AacOut>,
    aac_rx: std::sync::mpsc::Receiver<AacOut>,
    aac_announced: std::collections::HashSet<TrackId>,
    opened: Instant,
    /// When it last sent audio or video, and how many PES it had sent then.
    last_media: (Instant, u64),
    bytes: u64,
    notices: NoticeLog,
    closing: Option<String>,
    /// Its place in the per-address count, given back with the connection.
    _address: Option<AddressSlot>,
}

/// Rate-limited logging of notices, per kind.
#[derive(Default)]
struct NoticeLog {
    kinds: HashMap<&'static str, (Instant, u64)>,
}

impl NoticeLog {
    fn note(&mut self, stream: &str, n: &Notice, now: Instant) {
        match self.kinds.get_mut(n.kind) {
            None => {
                warn!(stream, "srt input: {}", n.message);
                self.kinds.insert(n.kind, (now, 0));
            }
            Some((last, suppressed)) => {
                if now.duration_since(*last) >= NOTICE_EVERY {
                    let more = if *suppressed > 0 {
                        format!(" ({suppressed} more like it since the last report)")
                    } else {
                        String::new()
                    };
                    warn!(stream, "srt input: {}{more}", n.message);
                    *last = now;
                    *suppressed = 0;
                } else {
                    *suppressed += 1;
                }
            }
        }
    }
}

/// Drops a connection that sends nothing usable; reports its transport figures.
fn check_input(c: &mut Conn, now: Instant) {
    if !c.ts.has_program() {
        if now.duration_since(c.opened) >= INPUT_TIMEOUT {
            limits::hit(Limit::SrtIdle);
            c.closing = Some(format!(
                "no MPEG-TS program with H.264 or AAC in {} s ({} bytes received): send MPEG-TS (ffmpeg: -f mpegts)",
                INPUT_TIMEOUT.as_secs(),
                c.bytes
            ));
        }
        return;
    }
    let pes = c.ts.pes_received();
    if pes != c.last_media.1 {
        c.last_media = (now, pes);
    } else if now.duration_since(c.last_media.0) >= INPUT_TIMEOUT {
        limits::hit(Limit::SrtIdle);
        c.closing = Some(format!(
            "no audio or video for {} s",
            INPUT_TIMEOUT.as_secs()
        ));
        return;
    }
    if let Ok(s) = c.socket.stats() {
        c.sink.transport(TransportStats {
            packets_received: s.packets_received.max(0) as u64,
            packets_lost: s.packets_lost.max(0) as u64,
            packets_retransmitted: s.packets_retransmitted.max(0) as u64,
            packets_dropped: s.packets_dropped.max(0) as u64,
            rtt_ms: Some(s.rtt_ms),
            latency_ms: Some(s.latency_ms.max(0) as u64),
        });
    }
}

/// Reads what `c` has sent and forwards it as media.
fn receive(c: &mut Conn, buf: &mut [u8], transcoders: &dyn Transcoders) {
    loop {
        match c.socket.recv(buf) {
            Ok(Recv::Data(n)) => {
                c.bytes += n as u64;
                c.ts.push(&buf[..n]);
                forward(c, transcoders);
                if c.closing.is_some() {
                    return;
                }
            }
            Ok(Recv::WouldBlock) => return,
            Ok(Recv::Closed) => {
                c.closing
                    .get_or_insert_with(|| "publisher disconnected".into());
                return;
            }
            Err(e) => {
                c.closing
                    .get_or_insert_with(|| format!("receive failed: {e}"));
                return;
            }
        }
    }
}

/// Runs `f` on one connection so that a bug met while handling it (a panic) drops that
/// publisher, with an error in the log, instead of ending the thread every SRT publisher
/// shares.
fn contained(c: &mut Conn, f: impl FnOnce(&mut Conn)) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut *c))).is_err() {
        tracing::error!(stream = %c.stream, "srt: publisher failed inside the relay (a bug); dropped");
        c.closing = Some("internal error in the relay".into());
    }
}

struct Driver {
    listener: Listener,
    poller: Poller,
    publish: Arc<dyn Publish>,
    transcoders: Arc<dyn Transcoders>,
    conns: HashMap<SocketId, Conn>,
    connections: Arc<AtomicUsize>,
    max_connections: usize,
    per_address: Arc<PerAddress>,
    accept_errors: AcceptErrors,
}

impl Driver {
    fn run(mut self, stop: &AtomicBool) {
        let mut ready = Vec::new();
        let mut buf = vec![0u8; 2048];
        let mut last_stats = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            ready.clear();
            // Transcoded audio comes back on other threads: look for it often then.
            let transcoding = self.conns.values().any(|c| !c.opus.is_empty());
            let wait = Duration::from_millis(if transcoding { 20 } else { 200 });
            if let Err(e) = self.poller.wait(wait, &mut ready) {
                warn!("srt: waiting failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            for r in &ready {
                self.on_ready(r, &mut buf);
            }
            for c in self.conns.values_mut() {
                contained(c, forward_aac);
            }
            let now = Instant::now();
            if self.accept_errors.resume(now) {
                // Watch the listener again; what waits is accepted at its next readiness.
                if let Err(e) = self.poller.add(self.listener.id()) {
                    self.accept_failed(&e, now);
                }
            }
            if now.duration_since(last_stats) >= STATS_EVERY {
                last_stats = now;
                self.tick(now);
            }
            self.reap();
        }
        for c in self.conns.values_mut() {
            c.closing
                .get_or_insert_with(|| "relay shutting down".into());
        }
        self.reap();
    }

    fn on_ready(&mut self, r: &Ready, buf: &mut [u8]) {
        if r.id == self.listener.id() {
            if !self.accept_errors.paused(Instant::now()) {
                self.accept_all();
            }
            return;
        }
        let Some(c) = self.conns.get_mut(&r.id) else {
            // Closed already; libsrt may still report it once.
            self.poller.remove(r.id);
            return;
        };
        let transcoders = self.transcoders.as_ref();
        contained(c, |c| receive(c, buf, transcoders));
        if r.error && c.closing.is_none() {
            c.closing = Some("connection broken".into());
        }
    }

    fn accept_all(&mut self) {
        loop {
            let (socket, peer) = match self.listener.accept() {
                Ok(Some(x)) => x,
                Ok(None) => return,
                Err(e) => {
                    self.accept_failed(&e, Instant::now());
                    return;
                }
            };
            // Admission counts only accepted connections, so a burst of handshakes can pass
            // it together: the limit is held here.
            if self.conns.len() >= self.max_connections {
                limits::hit(Limit::SrtConnections);
                warn!(remote = ?peer, "srt caller dropped: {} publishers already (srt.max_connections)", self.max_connections);
                continue;
            }
            let address_slot = match peer.map(|p| self.per_address.take(p.ip())) {
                Some(None) => {
                    limits::hit(Limit::SrtPerAddress);
                    warn!(remote = ?peer, "srt caller dropped: {} publishers from this address already (srt.max_per_address)", self.per_address.cap());
                    continue;
                }
                Some(slot) => slot,
                None => None,
            };
            let sid = socket.stream_id();
            let Ok(id) = streamid::parse(&sid) else {
                // Admission refused it already; a caller cannot get here without one.
                continue;
            };
            match self.publish.publish(request(&id, peer)) {
                Ok(sink) => {
                    if let Err(e) = self.poller.add(socket.id()) {
                        warn!(stream = %id.stream, "srt: cannot watch the connection: {e}");
                        continue;
                    }
                    let latency = socket.stats().map(|s| s.latency_ms).unwrap_or(0);
                    info!(stream = %id.stream, remote = ?peer, latency_ms = latency, "srt publisher connected");
                    self.connections.fetch_add(1, Ordering::Relaxed);
                    let (aac_tx, aac_rx) = std::sync::mpsc::sync_channel(1024);
                    self.conns.insert(
                        socket.id(),
                        Conn {
                            socket,
                            peer,
                            stream: id.stream,
                            sink,
                            ts: TsToMedia::new(),
                            opus: HashMap::new(),
                            aac_tx,
                            aac_rx,
                            aac_announced: Default::default(),
                            opened: Instant::now(),
                            last_media: (Instant::now(), 0),
                            bytes: 0,
                            notices: NoticeLog::default(),
                            closing: None,
                            _address: address_slot,
                        },
                    );
                }
                // Between admission and now somebody else started publishing it.
                Err(e) => {
                    warn!(stream = %id.stream, remote = ?peer, "srt publisher dropped after the handshake: {e}")
                }
            }
        }
    }

    /// Stops watching the listener for [`ACCEPT_PAUSE`] and logs the failure, throttled.
    fn accept_failed(&mut self, e: &SrtError, now: Instant) {
        self.poller.remove(self.listener.id());
        if let Some(suppressed) = self.accept_errors.failed(now) {
            let more = if suppressed > 0 {
                format!(" ({suppressed} more since the last report)")
            } else {
                String::new()
            };
            warn!(
                "srt accept failed: {e}{more}; new publishers wait {} ms",
                ACCEPT_PAUSE.as_millis()
            );
        }
    }

    fn tick(&mut self, now: Instant) {
        for c in self.conns.values_mut() {
            if c.closing.is_none() {
                contained(c, |c| check_input(c, now));
            }
        }
    }

    fn reap(&mut self) {
        let done: Vec<SocketId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.closing.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            let Some(mut c) = self.conns.remove(&id) else {
                continue;
            };
            self.poller.remove(id);
            let transcoders = self.transcoders.as_ref();
            contained(&mut c, |c| {
                c.ts.finish();
                forward(c, transcoders);
                // Let the transcoders finish what they hold, briefly, then stop them.
                c.opus.clear();
                forward_aac(c);
            });
            let why = c.closing.take().unwrap_or_default();
            info!(stream = %c.stream, remote = ?c.peer, bytes = c.bytes, "srt publisher gone: {why}");
            self.connections.fetch_sub(1, Ordering::Relaxed);
            // Dropping the sink ends the publishing session; dropping the socket closes it.
        }
    }
}

/// Hands everything the mapper produced to the relay (Opus through its transcoder).
fn forward(c: &mut Conn, transcoders: &dyn Transcoders) {
    let now = Instant::now();
    while let Some(x) = c.ts.poll() {
        match x {
            TsOutput::Media(event) => {
                if let MediaEvent::Track { id, .. } = &event {
                    // A track that was Opus (a PID switching codec) no longer is.
                    c.opus.remove(id);
                    c.aac_announced.remove(id);
                }
                if let Err(e) = c.sink.handle(event) {
                    c.closing = Some(e.to_string());
                    return;
                }
            }
            TsOutput::Opus(f) => {
                let slot = c.opus.entry(f.track).or_insert_with(|| {
                    let tx = c.aac_tx.clone();
                    let (track, language) = (f.track, f.language.clone());
                    let on_frame = Box::new(move |aac: AacFrame| {
                        let _ = tx.try_send((track, language.clone(), aac));
                    });
                    match transcoders.to_aac(&AudioSource::Opus { channels: 2 }, on_frame) {
                        Ok(encoder) => Some(OpusTrack { encoder }),
                        Err(e) => {
                            warn!(stream = %c.stream, "srt input: cannot transcode Opus: {e}");
                            None
                        }
                    }
                });
                if let Some(t) = slot
                    && let Err(e) = t.encoder.push(f.pts.max(0), 48_000, &f.data)
                {
                    c.sink.input_error(format!("Opus to AAC: {e}"));
                }
            }
            TsOutput::Notice(n) => {
                c.notices.note(&c.stream, &n, now);
                c.sink.input_error(n.message);
            }
        }
    }
}

/// Hands the AAC that the Opus transcoders produced to the relay.
fn forward_aac(c: &mut Conn) {
    while let Ok((track, language, frame)) = c.aac_rx.try_recv() {
        if c.aac_announced.insert(track) {
            let mut info = media::TrackInfo::new(media::CodecParams::Aac(frame.params.clone()));
            info.language = language;
            if let Err(e) = c.sink.handle(MediaEvent::Track { id: track, info }) {
                c.closing = Some(e.to_string());
                return;
            }
        }
        let event = MediaEvent::Frame {
            track,
            frame: media::Frame {
                dts: frame.pts,
                pts: frame.pts,
                keyframe: true,
                data: frame.data,
            },
        };
        if let Err(e) = c.sink.handle(event) {
            c.closing = Some(e.to_string());
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_accept_pauses_the_listener_and_is_logged_once_per_window() {
        let t = Instant::now();
        let mut a = AcceptErrors::default();
        assert!(!a.paused(t));
        assert_eq!(a.failed(t), Some(0), "the first failure is logged");
        assert!(a.paused(t + ACCEPT_PAUSE - Duration::from_millis(1)));
        assert!(!a.resume(t + ACCEPT_PAUSE / 2));
        assert!(a.resume(t + ACCEPT_PAUSE));
        assert!(!a.paused(t + ACCEPT_PAUSE));
        assert!(!a.resume(t + ACCEPT_PAUSE), "nothing to resume");

        // A failure that persists for a minute, with the thread waking every 10 ms: accept is
        // tried about once a second, and logged once per NOTICE_EVERY with the count left out.
        let (mut tried, mut logged, mut left_out) = (0, 0, 0);
        let mut now = t + ACCEPT_PAUSE;
        while now < t + Duration::from_secs(61) {
            a.resume(now);
            if !a.paused(now) {
                tried += 1;
                if let Some(n) = a.failed(now) {
                    logged += 1;
                    left_out += n;
                }
            }
            now += Duration::from_millis(10);
        }
        assert!((55..=61).contains(&tried), "{tried} accepts in a minute");
        assert_eq!(logged, 6);
        assert_eq!(left_out + logged, tried);
    }
}
