//! WebRTC: playback over WHEP (`POST /whep/STREAM[?lang=yue]`) and ingest over WHIP
//! (`POST /whip/STREAM[?lang=yue]`, see [`whip`]).
//!
//! - [`engine`]: one engine per core (`webrtc.shards`), each a task owning its share of
//!   the viewers' and publishers' `str0m::Rtc` and its own UDP port (`udp_listen`'s port
//!   + k). An offer goes to the engine with the fewest sessions; the session id names it.
//! - [`opus_feed`]: each dialect transcoded to Opus once for all engines.
//! - [`whip_media`]: what WHIP publishers send, as media events (sans-IO).
//! - [`stats`]: its counters.
//!
//! The session resource (`Location: /whep/STREAM/ID`) takes `DELETE` (end), `PATCH` with
//! `application/trickle-ice-sdpfrag` (trickled candidates), `GET` (state as JSON) and
//! `POST /whep/STREAM/ID/dialect` with `{"lang":"yue"}` (switch the dialect heard, no
//! renegotiation). See `docs/protocols/whep.md`.

pub mod engine;
#[cfg(test)]
mod engine_tests;
pub mod opus_feed;
pub mod rtp_line;
pub mod stats;
pub mod tcp;
pub mod udp;
pub mod whip;
pub mod whip_media;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use config::Config;
use media::TrackKind;
use serde::Deserialize;
use str0m::change::SdpOffer;
use str0m::{Candidate, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tower_http::cors::{Any, CorsLayer};
use tracing::{info, warn};

use crate::http::ApiError;
use crate::hub::{Hub, Lecture, Status};
use engine::{Command, Engine, NewSession, Shared};
use media::limits::Limit;
use stats::Stats;

/// Most lines accepted in an SDP offer (Janus's cap after an OSS-Fuzz timeout).
const MAX_SDP_LINES: usize = 10_000;
/// Most media sections (`m=` lines) in an offer: viewers and publishers need two (video,
/// audio); every further one costs the engine for the session's life.
const MAX_M_LINES: usize = 8;
/// Most candidates in one trickle-ICE PATCH (a browser gathers a handful).
const MAX_TRICKLE_CANDIDATES: usize = 64;
/// Video packets each viewer keeps for retransmission (about 2 s at 2.5 Mbit/s).
pub(crate) const SEND_BUFFER_VIDEO: usize = 500;
/// Longest a handler waits for the engine (room in its queue, then its answer): it answers
/// in microseconds unless it is stuck, and a request must not hang with it.
const ENGINE_WAIT: Duration = Duration::from_secs(5);

/// The WHEP and WHIP service.
pub struct Whep {
    shards: Vec<Shard>,
    hub: Arc<Hub>,
    candidates: Vec<SocketAddr>,
    /// Counters for `/metrics` (every engine's together).
    pub stats: Arc<Stats>,
    opus: Arc<opus_feed::OpusFeeds>,
}

/// One engine as the HTTP side sees it.
struct Shard {
    commands: mpsc::Sender<Command>,
    /// Its announced addresses.
    candidates: Vec<SocketAddr>,
    /// Its ICE-TCP addresses (passive candidates).
    tcp_candidates: Vec<SocketAddr>,
    /// Sessions it holds or has been handed.
    load: Arc<AtomicUsize>,
}

/// One engine's ports, from [`bind`].
#[derive(Default)]
pub struct ShardPorts {
    /// UDP sockets by the address announced for them.
    pub udp: HashMap<SocketAddr, Arc<udp::Udp>>,
    /// ICE-TCP listeners, each with the port it feeds.
    pub tcp: Vec<(tokio::net::TcpListener, Arc<tcp::TcpPort>)>,
}

/// Every engine's ports.
pub type ShardSockets = Vec<ShardPorts>;

/// Binds the WebRTC UDP ports, `webrtc.engines()` of them (one per engine, consecutive
/// from `udp_listen`'s port, or any free ones for port 0): each on the given address, or,
/// for an unspecified address, on each IPv4 address of this machine. Returns each engine's
/// sockets by the address announced to viewers.
pub async fn bind(config: &config::WebrtcConfig) -> std::io::Result<ShardSockets> {
    let mut shards = Vec::new();
    for k in 0..config.engines() {
        let port = match config.udp_listen.port() {
            0 => 0,
            p => p + k as u16,
        };
        let listen = SocketAddr::new(config.udp_listen.ip(), port);
        let udp = bind_one(config, listen).await?;
        let mut tcp = Vec::new();
        if config.tcp {
            let per_engine = (config.max_tcp_connections / config.engines().max(1)).max(1);
            for (announced, socket) in &udp {
                let local = socket.local_addr()?;
                // The UDP port's number, else any free one.
                let listener = match tokio::net::TcpListener::bind(local).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!("ICE-TCP: {local} taken ({e}); listening on another port");
                        tokio::net::TcpListener::bind(SocketAddr::new(local.ip(), 0)).await?
                    }
                };
                let bound = listener.local_addr()?;
                let announced = SocketAddr::new(announced.ip(), bound.port());
                tcp.push((listener, tcp::TcpPort::new(announced, per_engine)));
            }
        }
        shards.push(ShardPorts { udp, tcp });
    }
    Ok(shards)
}

/// One engine's sockets on `listen`.
async fn bind_one(
    config: &config::WebrtcConfig,
    listen: SocketAddr,
) -> std::io::Result<HashMap<SocketAddr, Arc<udp::Udp>>> {
    let ips: Vec<IpAddr> = if listen.ip().is_unspecified() {
        let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
            .unwrap_or_default()
            .into_iter()
            .filter(|i| !i.is_loopback() && i.ip().is_ipv4())
            .map(|i| i.ip())
            .collect();
        ips.sort();
        ips.dedup();
        if ips.is_empty() {
            ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        ips
    } else {
        vec![listen.ip()]
    };
    let mut port = listen.port();
    let mut out = HashMap::new();
    for (i, ip) in ips.iter().enumerate() {
        let socket = UdpSocket::bind(SocketAddr::new(*ip, port)).await?;
        let bound = socket.local_addr()?;
        let asked = config.socket_buffer_kib * 1024;
        udp::report_buffers(bound, asked, udp::size_buffers(&socket, asked));
        port = bound.port();
        let announced = match config.public_ips.get(i).or(config.public_ips.last()) {
            Some(public) => SocketAddr::new(*public, port),
            None => bound,
        };
        out.insert(announced, Arc::new(udp::Udp::new(socket)?));
    }
    Ok(out)
}

/// Every [`udp::REPORT_EVERY`]: the datagrams the kernel dropped on our sockets into
/// `/metrics`, and one log line when any datagram was lost in or out. Ends when the last
/// other holder of the sockets (the engine) is gone.
async fn watch_losses(sockets: Vec<Arc<udp::Udp>>, stats: Arc<Stats>) {
    let kernel_total = |s: &[Arc<udp::Udp>]| -> u64 {
        s.iter()
            .filter_map(|s| udp::kernel_receive_drops(s.as_ref()))
            .sum()
    };
    let mut kernel_before = kernel_total(&sockets);
    let (mut in_before, mut out_before) = (
        stats.datagrams_dropped_in.get(),
        stats.datagrams_dropped_out.get(),
    );
    loop {
        tokio::time::sleep(udp::REPORT_EVERY).await;
        if sockets.iter().all(|s| Arc::strong_count(s) == 1) {
            return;
        }
        let kernel = kernel_total(&sockets);
        let (inbound, outbound) = (
            stats.datagrams_dropped_in.get(),
            stats.datagrams_dropped_out.get(),
        );
        let losses = udp::Losses {
            kernel: kernel.saturating_sub(kernel_before),
            inbound: inbound - in_before,
            outbound: outbound - out_before,
        };
        stats.kernel_receive_drops.add(losses.kernel);
        if let Some(line) = losses.describe(udp::REPORT_EVERY) {
            warn!("{line}");
        }
        (kernel_before, in_before, out_before) = (kernel, inbound, outbound);
    }
}

/// Installs str0m's crypto provider (aws-lc-rs) as the process default, once; every `Rtc`
/// needs it.
pub fn install_crypto() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| str0m::crypto::from_feature_flags().install_process_default());
}

impl Whep {
    /// Starts one engine on each shard's `sockets` (from [`bind`]).
    pub fn start(
        sockets: ShardSockets,
        hub: Arc<Hub>,
        transcoders: Arc<dyn media::encode::Transcoders>,
    ) -> Arc<Whep> {
        Whep::start_with(sockets, hub, transcoders, engine::MAINTAIN_EVERY)
    }

    /// [`Whep::start`] with the engines' maintenance every `maintain_every`.
    pub(crate) fn start_with(
        sockets: ShardSockets,
        hub: Arc<Hub>,
        transcoders: Arc<dyn media::encode::Transcoders>,
        maintain_every: Duration,
    ) -> Arc<Whep> {
        install_crypto();
        let stats = Arc::new(Stats::default());
        let opus = Arc::new(opus_feed::OpusFeeds::new(
            transcoders.clone(),
            stats.clone(),
        ));
        tokio::spawn(watch_losses(
            sockets
                .iter()
                .flat_map(|s| s.udp.values().cloned())
                .collect(),
            stats.clone(),
        ));
        let shared = Shared {
            hub: hub.clone(),
            transcoders,
            opus: opus.clone(),
            stats: stats.clone(),
            connect_timeout: Duration::from_millis(hub.config().webrtc.connect_timeout_ms),
            maintain_every,
        };
        let shards: Vec<Shard> = sockets
            .into_iter()
            .map(|ports| {
                let mut candidates: Vec<SocketAddr> = ports.udp.keys().copied().collect();
                candidates.sort();
                let mut tcp_candidates: Vec<SocketAddr> =
                    ports.tcp.iter().map(|(_, p)| p.announced).collect();
                tcp_candidates.sort();
                let load = Arc::new(AtomicUsize::new(0));
                let handles = Engine::start(ports.udp, ports.tcp, shared.clone(), load.clone());
                Shard {
                    commands: handles.commands,
                    candidates,
                    tcp_candidates,
                    load,
                }
            })
            .collect();
        let mut candidates: Vec<SocketAddr> =
            shards.iter().flat_map(|s| s.candidates.clone()).collect();
        candidates.sort();
        Arc::new(Whep {
            shards,
            hub,
            candidates,
            stats,
            opus,
        })
    }

    /// The engine with the fewest sessions, counted in at once (so that offers arriving
    /// together spread); the count goes back if the session is not handed over.
    fn pick(&self) -> Picked<'_> {
        let (index, shard) = self
            .shards
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| s.load.load(Ordering::Relaxed))
            .expect("at least one engine");
        shard.load.fetch_add(1, Ordering::Relaxed);
        Picked {
            index,
            shard,
            handed: false,
        }
    }

    /// The engine holding session `id` (its first two hex digits, [`Picked::session_id`]).
    fn shard_of(&self, id: &str) -> Option<&Shard> {
        let k = usize::from_str_radix(id.get(..2)?, 16).ok()?;
        self.shards.get(k)
    }

    /// Sessions held by each engine.
    pub fn engine_loads(&self) -> Vec<usize> {
        self.shards
            .iter()
            .map(|s| s.load.load(Ordering::Relaxed))
            .collect()
    }

    /// Dialects being transcoded to Opus now (once each, whatever the engines).
    pub fn opus_transcoders(&self) -> usize {
        self.opus.running()
    }

    /// Prometheus text: the counters of every engine together, then each engine's sessions
    /// and the Opus transcoders running.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        self.stats.render(out);
        out.push_str("# HELP jiangtang_webrtc_engine_sessions Viewers and publishers held by each WebRTC engine (one per core)
# TYPE jiangtang_webrtc_engine_sessions gauge
");
        for (k, n) in self.engine_loads().iter().enumerate() {
            let _ = writeln!(
                out,
                "jiangtang_webrtc_engine_sessions{{engine=\"{k}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP jiangtang_webrtc_opus_transcoders Dialects fed to WebRTC viewers as Opus now, once each for every engine (transcoded from AAC, or a WebRTC source's own passed through)\n# TYPE jiangtang_webrtc_opus_transcoders gauge\njiangtang_webrtc_opus_transcoders {}",
            self.opus_transcoders()
        );
    }

    /// Makes the engine fail (a panic) where `fault` says, once.
    #[cfg(test)]
    pub(crate) async fn fault(&self, fault: engine::Fault) {
        for shard in &self.shards {
            let (reply, armed) = oneshot::channel();
            let _ = shard.commands.send(Command::Fault { fault, reply }).await;
            armed.await.expect("engine armed");
        }
    }

    /// The announced media addresses.
    pub fn candidates(&self) -> &[SocketAddr] {
        &self.candidates
    }

    /// The ICE-TCP addresses announced (passive candidates), every engine's.
    pub fn tcp_candidates(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self
            .shards
            .iter()
            .flat_map(|s| s.tcp_candidates.clone())
            .collect();
        v.sort();
        v
    }

    /// WHIP publishers currently held by the engine.
    pub fn publishers(&self) -> u64 {
        self.stats
            .publishers_started
            .get()
            .saturating_sub(self.stats.publishers_ended.get())
    }

    /// Viewers currently held by the engine.
    pub fn viewers(&self) -> u64 {
        self.stats
            .sessions_started
            .get()
            .saturating_sub(self.stats.sessions_ended.get())
    }

    /// The WHEP routes.
    pub fn router(self: &Arc<Self>) -> Router {
        let cors = CorsLayer::new()
            .allow_origin(Any)
            .allow_methods([
                axum::http::Method::POST,
                axum::http::Method::PATCH,
                axum::http::Method::DELETE,
                axum::http::Method::GET,
                axum::http::Method::OPTIONS,
            ])
            .allow_headers([
                header::CONTENT_TYPE,
                header::IF_MATCH,
                header::AUTHORIZATION,
            ])
            .expose_headers([
                header::LOCATION,
                header::ETAG,
                header::LINK,
                header::HeaderName::from_static("accept-patch"),
                header::HeaderName::from_static("accept-post"),
            ])
            .max_age(Duration::from_secs(600));
        let limit = self.hub.config().webrtc.max_offer_bytes;
        Router::new()
            .route("/whep/{stream}", post(offer).options(options))
            .route(
                "/whep/{stream}/ask/{id}",
                post(ask_preview).options(options),
            )
            .route(
                "/whep/{stream}/{id}",
                get(info).patch(patch).delete(delete).options(options),
            )
            .route(
                "/whep/{stream}/{id}/dialect",
                post(dialect).options(options),
            )
            .route("/whip/{stream}", post(whip::offer).options(options))
            .route(
                "/whip/{stream}/{id}",
                get(info).patch(patch).delete(delete).options(options),
            )
            .layer(DefaultBodyLimit::max(limit))
            .layer(axum::middleware::from_fn_with_state(limit, offer_size))
            // Playback tokens for lectures that need them, before an offer costs anything.
            .layer(crate::admission::GuardLayer(self.hub.clone()))
            // Outermost: the CORS layer answers OPTIONS itself, and WHEP clients read these
            // from that answer too.
            .layer(cors)
            .layer(axum::middleware::map_response(advertise))
            .with_state(self.clone())
    }
}

async fn options() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Adds what WHEP clients look for on every answer of the endpoint.
async fn advertise(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.entry("accept-post")
        .or_insert(HeaderValue::from_static("application/sdp"));
    h.entry("accept-patch")
        .or_insert(HeaderValue::from_static("application/trickle-ice-sdpfrag"));
    r
}

#[derive(Deserialize)]
struct OfferQuery {
    lang: Option<String>,
}

fn content_type_is(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

fn live_lecture(hub: &Hub, stream: &str) -> Result<Arc<Lecture>, ApiError> {
    match hub.lecture(stream) {
        Some(l) if !matches!(l.status(), Status::Ended { .. }) => Ok(l),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no live lecture {stream:?}"),
        )),
    }
}

fn engine_stopped() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "WebRTC engine stopped")
}

fn engine_busy() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "WebRTC engine did not answer in time",
    )
}

/// An engine chosen for a new session.
struct Picked<'a> {
    index: usize,
    shard: &'a Shard,
    handed: bool,
}

impl Picked<'_> {
    /// A new session id: the engine's number in two hex digits, then 120 random bits.
    fn session_id(&self) -> String {
        format!("{:02x}{:030x}", self.index, rand::random::<u128>() >> 8)
    }

    /// An `Rtc` from `config` with this engine's UDP addresses as its candidates.
    fn new_rtc(&self, config: str0m::RtcConfig) -> Result<Rtc, ApiError> {
        let mut rtc = config.build(Instant::now());
        for c in &self.shard.candidates {
            let candidate = Candidate::host(*c, "udp")
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            rtc.add_local_candidate(candidate);
        }
        // After UDP: ICE prefers UDP pairs; these serve networks that drop UDP.
        for c in &self.shard.tcp_candidates {
            let candidate = Candidate::builder()
                .tcp()
                .host(*c)
                .tcptype(str0m::net::TcpType::Passive)
                .build()
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            rtc.add_local_candidate(candidate);
        }
        Ok(rtc)
    }

    /// Hands the session over: from here the engine counts it out when it ends.
    fn send(mut self, permit: mpsc::Permit<'_, Command>, command: Command) {
        self.handed = true;
        permit.send(command);
    }
}

impl Drop for Picked<'_> {
    fn drop(&mut self) {
        if !self.handed {
            self.shard.load.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Room for one command in the engine's queue, waiting at most [`ENGINE_WAIT`].
async fn reserve<'a>(picked: &Picked<'a>) -> Result<mpsc::Permit<'a, Command>, ApiError> {
    match tokio::time::timeout(ENGINE_WAIT, picked.shard.commands.reserve()).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_)) => Err(engine_stopped()),
        Err(_) => {
            tracing::warn!("WebRTC engine queue full for {ENGINE_WAIT:?}; request refused");
            Err(engine_busy())
        }
    }
}

/// Dialects a lecture offers, in rendition order.
fn dialects(l: &Lecture) -> Vec<String> {
    l.hls()
        .renditions()
        .iter()
        .filter(|r| r.kind() == TrackKind::Audio)
        .filter_map(|r| r.language.as_ref().map(|x| x.to_string()))
        .collect()
}

/// Picks the dialect: the one asked for if the lecture has it, else the lecture's default
/// (or its first dialect). Before the lecture has sound, one of the dialects configured
/// (`[dialects]`) may be asked for; nothing else, so viewers cannot make the relay keep
/// state for tags that will never come.
fn pick_dialect(l: &Lecture, config: &Config, asked: Option<&str>) -> Result<String, ApiError> {
    let available = dialects(l);
    match asked {
        Some(lang) => {
            let lang = media::Language::parse(lang)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
            let expected =
                lang == l.default_language || config.dialects.contains_key(lang.as_str());
            if available.iter().any(|d| d == lang.as_str()) || (available.is_empty() && expected) {
                Ok(lang.to_string())
            } else {
                Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    if available.is_empty() {
                        format!("lecture has no dialect {lang} (it has no sound yet)")
                    } else {
                        format!(
                            "lecture has no dialect {lang}; it has {}",
                            available.join(", ")
                        )
                    },
                ))
            }
        }
        None => {
            let default = l.default_language.to_string();
            if available.is_empty() || available.contains(&default) {
                Ok(default)
            } else {
                Ok(available[0].clone())
            }
        }
    }
}

async fn offer(
    State(w): State<Arc<Whep>>,
    Path(stream): Path<String>,
    Query(q): Query<OfferQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    w.hub.note_demand(&stream);
    match answer_offer(&w, &stream, q, &headers, &body).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(lecture = %stream, status = e.status().as_u16(), "WHEP offer refused: {}", e.message());
            e.into_response()
        }
    }
}

async fn answer_offer(
    w: &Arc<Whep>,
    stream: &str,
    q: OfferQuery,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    if !content_type_is(headers, "application/sdp") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must be Content-Type: application/sdp",
        ));
    }
    let lecture = live_lecture(&w.hub, stream)?;
    let lang = pick_dialect(&lecture, w.hub.config(), q.lang.as_deref())?;
    viewer_session(w, stream, lecture, lang, body).await
}

/// `POST /whep/STREAM/ask/ID`: the operator's preview of a class speaking back
/// ([`crate::ask`]), with the ask's preview token or an operator's credential.
async fn ask_preview(
    State(w): State<Arc<Whep>>,
    Path((stream, id)): Path<(String, u64)>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let operator = crate::channel::operator_allowed(
        w.hub.config(),
        &stream,
        bearer,
        crate::channel::on_this_machine(peer.map(|p| p.0.0.ip()), &headers),
    );
    let answer = async {
        if !content_type_is(&headers, "application/sdp") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the offer must be Content-Type: application/sdp",
            ));
        }
        let feed = crate::ask::feed_for_preview(&w.hub, &stream, id, bearer, operator)?;
        let lang = feed.default_language.to_string();
        viewer_session(&w, &stream, feed, lang, &body).await
    };
    match answer.await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(lecture = %stream, ask = id, status = e.status().as_u16(), "ask-back preview refused: {}", e.message());
            e.into_response()
        }
    }
}

/// A WebRTC viewer of `lecture` in dialect `lang`, answered.
async fn viewer_session(
    w: &Arc<Whep>,
    stream: &str,
    lecture: Arc<Lecture>,
    lang: String,
    body: &[u8],
) -> Result<Response, ApiError> {
    let webrtc = &w.hub.config().webrtc;
    if w.viewers() >= webrtc.max_viewers as u64 {
        if media::limits::hit_logged(Limit::WhepViewers, Instant::now()) {
            tracing::warn!(lecture = %stream, "WHEP offer refused: {} WebRTC viewers (webrtc.max_viewers)", webrtc.max_viewers);
        }
        return Ok(at_capacity(stream));
    }
    if lecture.webrtc_viewers().values().sum::<usize>() >= webrtc.max_viewers_per_lecture {
        if media::limits::hit_logged(Limit::WhepViewersPerLecture, Instant::now()) {
            tracing::warn!(lecture = %stream, "WHEP offer refused: {} WebRTC viewers of this lecture (webrtc.max_viewers_per_lecture)", webrtc.max_viewers_per_lecture);
        }
        return Ok(at_capacity(stream));
    }
    let offer = parse_offer(body)?;
    let picked = w.pick();
    // The receiver's reports, each second: the round trip sizes its retransmission history,
    // and where a smaller picture exists, the loss decides who gets it.
    let config = viewer_config().set_stats_interval(Some(Duration::from_secs(1)));
    let mut rtc = picked.new_rtc(config)?;
    let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("offer not acceptable: {e}"),
        )
    })?;
    let answer = answer_sdp(&answer.to_sdp_string());
    if !h264_mode1_negotiated(&answer) && !negotiated(&answer, "opus/48000") {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "the offer has neither H.264 (packetization-mode 1) video nor Opus audio to receive",
        ));
    }
    // Room in the engine's queue first: from the count below to the handover nothing may
    // wait (a request dropped while waiting would leave its count taken for ever).
    let permit = reserve(&picked).await?;
    // Counted here, not when the engine takes it, so back-to-back offers see each other.
    if !w
        .stats
        .sessions_started
        .inc_within(&w.stats.sessions_ended, webrtc.max_viewers as u64)
    {
        if media::limits::hit_logged(Limit::WhepViewers, Instant::now()) {
            tracing::warn!(lecture = %stream, "WHEP offer refused: {} WebRTC viewers (webrtc.max_viewers)", webrtc.max_viewers);
        }
        return Ok(at_capacity(stream));
    }
    // Counted before the answer goes out, so the API already shows the viewer; the engine
    // takes the session from here on and leaves the count when it removes it.
    if !lecture.webrtc_join_within(&lang, webrtc.max_viewers_per_lecture) {
        w.stats.sessions_ended.inc();
        if media::limits::hit_logged(Limit::WhepViewersPerLecture, Instant::now()) {
            tracing::warn!(lecture = %stream, "WHEP offer refused: {} WebRTC viewers of this lecture (webrtc.max_viewers_per_lecture)", webrtc.max_viewers_per_lecture);
        }
        return Ok(at_capacity(stream));
    }
    let id = picked.session_id();
    info!(lecture = %stream, session = %id, dialect = %lang, "WHEP viewer offered");
    picked.send(
        permit,
        Command::Add(Box::new(NewSession {
            id: id.clone(),
            rtc,
            lecture,
            lang,
        })),
    );
    Ok(created(answer, &format!("/whep/{stream}/{id}"), &id))
}

/// A trickle-ICE fragment (RFC 8840): how many candidates it carries, each checked, within
/// the limit on their number. ICE restarts (new credentials) are refused.
fn parse_trickle(body: &[u8]) -> Result<usize, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "the fragment is not UTF-8 text"))?;
    if text
        .lines()
        .any(|l| l.starts_with("a=ice-ufrag:") || l.starts_with("a=ice-pwd:"))
        && !text.lines().any(|l| l.starts_with("a=candidate:"))
    {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "ICE restarts are not supported; start a new session",
        ));
    }
    let candidates: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("a="))
        .filter(|c| c.starts_with("candidate:"))
        .take(MAX_TRICKLE_CANDIDATES + 1)
        .collect();
    if candidates.len() > MAX_TRICKLE_CANDIDATES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("a PATCH carries at most {MAX_TRICKLE_CANDIDATES} candidates"),
        ));
    }
    // Checked, so a client learns its fragment is broken, but not used: we are ICE-lite.
    for c in &candidates {
        Candidate::from_sdp_string(c)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad candidate: {e}")))?;
    }
    Ok(candidates.len())
}

/// Fuzzing entry point for what reads WHIP/WHEP bodies before str0m takes them: an SDP offer
/// (then answered by a real ICE-lite str0m instance) or, when the first byte is odd, a
/// trickle-ICE fragment. Never panics.
#[doc(hidden)]
pub fn fuzz_sdp(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    if kind & 1 == 1 {
        let _ = parse_trickle(body);
    } else if let Ok(offer) = parse_offer(body) {
        install_crypto();
        let mut rtc = codecs().build(Instant::now());
        if let Ok(c) = Candidate::host(([127, 0, 0, 1], 8189).into(), "udp") {
            rtc.add_local_candidate(c);
        }
        if let Ok(answer) = rtc.sdp_api().accept_offer(offer) {
            let _ = answer_sdp(&answer.to_sdp_string());
        }
    }
}

/// An offer's SDP, within the limits on its size: lines, media sections.
fn parse_offer(body: &[u8]) -> Result<SdpOffer, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "the offer is not UTF-8 text"))?;
    if text.lines().count() > MAX_SDP_LINES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the offer has too many lines",
        ));
    }
    let m_lines = text.lines().filter(|l| l.starts_with("m=")).count();
    if m_lines > MAX_M_LINES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the offer has {m_lines} m-lines; at most {MAX_M_LINES} are accepted"),
        ));
    }
    SdpOffer::from_sdp_string(text)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("malformed SDP offer: {e}")))
}

/// `201 Created` for an accepted offer (WHEP or WHIP): the SDP answer, the session
/// resource's `Location` and `ETag`, and that it takes trickle ICE.
fn created(answer: String, location: &str, id: &str) -> Response {
    let mut r = (StatusCode::CREATED, answer).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{id}\"")) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        "accept-patch",
        HeaderValue::from_static("application/trickle-ice-sdpfrag"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Holds offers and trickle fragments to `webrtc.max_offer_bytes`: a declared
/// `Content-Length` over it gets 413 at once (no waiting for a body that may never come, no
/// buffer of that size), a longer body without one gets 413 from [`DefaultBodyLimit`] when it
/// passes the limit; both are logged and counted.
async fn offer_size(
    State(limit): State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let path = req.uri().path().to_string();
    let refused = |r: Response| {
        if media::limits::hit_logged(Limit::SdpOffer, Instant::now()) {
            tracing::warn!(%path, "WebRTC request refused: body over {limit} bytes (webrtc.max_offer_bytes)");
        }
        r
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return refused(
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {limit} bytes"),
            )
            .into_response(),
        );
    }
    let r = next.run(req).await;
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return refused(r);
    }
    r
}

/// The answer to an offer when WebRTC is full: 503 naming the LL-HLS URL instead.
fn at_capacity(stream: &str) -> Response {
    let mut r = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("WebRTC is at capacity; watch /hls/{stream}/index.m3u8"),
    )
    .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
    r
}

/// The configuration of every WHEP viewer's `Rtc`: ICE-lite, H.264 and Opus only, the video
/// retransmission buffer, audio sender reports each second, and no transport-wide congestion
/// control. Public for the fan-out benchmark (`relay/benches/whep_fanout.rs`), which installs
/// str0m's crypto provider with [`install_crypto`] first.
pub fn viewer_config() -> str0m::RtcConfig {
    codecs()
        .set_extension_map(viewer_extensions())
        .set_send_buffer_video(SEND_BUFFER_VIDEO)
        // Sender reports are what browsers lip-sync on: send them often for audio too.
        .set_rtcp_report_interval_audio(Duration::from_secs(1))
}

/// The RTP header extensions offered to viewers: str0m's standard set (Chrome's ids) less
/// the two that only feed a sender's bandwidth estimate, transport-wide sequence numbers and
/// absolute send time. A viewer's bitrate is the lecture's, never estimated from its feedback
/// (a lossy viewer is moved to a smaller picture by its receiver reports), so they would only
/// cost: for TWCC str0m keeps a record of every packet sent (~90 KiB per viewer at 2.5
/// Mbit/s) and parses each viewer's feedback every 50-100 ms; absolute send time is a clock
/// reading and 3 bytes written into every packet. Publishers keep both: their browser's
/// encoder adapts to them.
fn viewer_extensions() -> str0m::rtp::ExtensionMap {
    use str0m::rtp::Extension;
    let mut exts = str0m::rtp::ExtensionMap::empty();
    for (id, ext) in [
        (1, Extension::AudioLevel),
        (4, Extension::RtpMid),
        (10, Extension::RtpStreamId),
        (11, Extension::RepairedRtpStreamId),
        (13, Extension::VideoOrientation),
    ] {
        exts.set(id, ext);
    }
    exts
}

/// What every session's `Rtc` starts from: ICE-lite (we have public addresses, browsers do
/// the checks), H.264 and Opus only.
fn codecs() -> str0m::RtcConfig {
    Rtc::builder()
        .set_ice_lite(true)
        .clear_codecs()
        .enable_h264(true)
        .enable_opus(true, false)
}

/// Puts every track of the answer in one MediaStream: browsers only lip-sync audio and video
/// that share a stream id (`a=msid:<stream> <track>`), and str0m gives each m-line its own.
fn one_media_stream(answer: &str) -> String {
    let Some(first) = answer
        .lines()
        .find_map(|l| l.strip_prefix("a=msid:"))
        .and_then(|v| v.split_whitespace().next())
        .map(str::to_string)
    else {
        return answer.to_string();
    };
    let mut out = String::with_capacity(answer.len());
    for line in answer.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("a=msid:") {
            let track = rest.split_whitespace().nth(1).unwrap_or("-");
            out.push_str(&format!("a=msid:{first} {track}\r\n"));
        } else if line.starts_with("a=ssrc:") && line.contains(" msid:") {
            let (head, tail) = line.split_once(" msid:").expect("checked");
            let track = tail.split_whitespace().nth(1).unwrap_or("-");
            out.push_str(&format!("{head} msid:{first} {track}\r\n"));
        } else if line.starts_with("a=msid-semantic:") {
            out.push_str(&format!("a=msid-semantic: WMS {first}\r\n"));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// The answer as a viewer gets it (see [`one_media_stream`], [`candidates_in_bundle`]).
fn answer_sdp(answer: &str) -> String {
    candidates_in_bundle(&one_media_stream(answer))
}

/// Moves the answer's ICE candidates into the m-section that tags its BUNDLE group (the
/// group's first mid, RFC 8843). str0m writes them into the first m-section even when it
/// rejected that one (`m=video 0` for a browser that offers no H.264, e.g. Firefox without
/// its OpenH264 plugin); browsers read candidates only from the bundled sections, so ICE
/// would have nothing to check and the viewer would wait for its timeout.
fn candidates_in_bundle(answer: &str) -> String {
    let Some(group) = answer
        .lines()
        .find_map(|l| l.strip_prefix("a=group:BUNDLE "))
        .map(|m| m.split_whitespace().collect::<Vec<_>>())
    else {
        return answer.to_string();
    };
    let Some(tag) = group.first() else {
        return answer.to_string();
    };
    // The session part, then one entry per m-section, each line with its line ending.
    let mut sections: Vec<Vec<&str>> = vec![Vec::new()];
    for line in answer.split_inclusive('\n') {
        if line.starts_with("m=") {
            sections.push(Vec::new());
        }
        sections.last_mut().expect("never empty").push(line);
    }
    let mid = |s: &[&str]| {
        s.iter()
            .find_map(|l| l.trim_end().strip_prefix("a=mid:"))
            .map(str::to_string)
    };
    let is_candidate =
        |l: &str| l.starts_with("a=candidate:") || l.starts_with("a=end-of-candidates");
    let Some(target) = (1..sections.len()).find(|&i| mid(&sections[i]).as_deref() == Some(*tag))
    else {
        return answer.to_string();
    };
    let mut moved: Vec<&str> = Vec::new();
    for (i, section) in sections.iter_mut().enumerate().skip(1) {
        let bundled = mid(section).is_some_and(|m| group.contains(&m.as_str()));
        if i == target || bundled {
            continue;
        }
        section.retain(|l| {
            if is_candidate(l) {
                moved.push(l);
                false
            } else {
                true
            }
        });
    }
    if moved.is_empty() {
        return answer.to_string();
    }
    let section = &mut sections[target];
    moved.retain(|l| !section.contains(l));
    // Where str0m puts them: right after the connection line (or the m= line).
    let at = section
        .iter()
        .position(|l| l.starts_with("c="))
        .map_or(1, |i| i + 1);
    section.splice(at..at, moved);
    sections.concat().concat()
}

/// Whether the answer has an active m-line with this codec.
fn negotiated(answer: &str, rtpmap: &str) -> bool {
    let mut active = false;
    for line in answer.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            active = m.split_whitespace().nth(1).is_some_and(|port| port != "0");
        } else if active && line.starts_with("a=rtpmap:") && line.contains(rtpmap) {
            return true;
        }
    }
    false
}

/// Whether an active m-line of the answer carries H.264 with packetization-mode 1 (FU-A
/// fragmentation; mode 0 cannot carry frames larger than one packet, which is every
/// keyframe).
fn h264_mode1_negotiated(answer: &str) -> bool {
    let mut active = false;
    let mut h264 = Vec::new();
    let mut mode1 = Vec::new();
    for line in answer.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            if active && h264.iter().any(|pt| mode1.contains(pt)) {
                return true;
            }
            active = m.split_whitespace().nth(1).is_some_and(|port| port != "0");
            h264.clear();
            mode1.clear();
        } else if let Some(rest) = line.strip_prefix("a=rtpmap:") {
            if let Some((pt, codec)) = rest.split_once(' ')
                && codec.starts_with("H264/90000")
            {
                h264.push(pt.to_string());
            }
        } else if let Some(rest) = line.strip_prefix("a=fmtp:")
            && let Some((pt, params)) = rest.split_once(' ')
            && params
                .split(';')
                .any(|p| p.trim() == "packetization-mode=1")
        {
            mode1.push(pt.to_string());
        }
    }
    active && h264.iter().any(|pt| mode1.contains(pt))
}

/// Sends the engine holding session `id` a command and waits for its answer, together at
/// most [`ENGINE_WAIT`]. `None` if no engine could hold that id.
async fn ask<T>(
    w: &Whep,
    id: &str,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<Option<T>, ApiError> {
    let Some(shard) = w.shard_of(id) else {
        return Ok(None);
    };
    let (tx, rx) = oneshot::channel();
    let asked = async {
        shard
            .commands
            .send(make(tx))
            .await
            .map_err(|_| engine_stopped())?;
        rx.await.map_err(|_| engine_stopped())
    };
    match tokio::time::timeout(ENGINE_WAIT, asked).await {
        Ok(answer) => answer.map(Some),
        Err(_) => {
            tracing::warn!("WebRTC engine did not answer within {ENGINE_WAIT:?}");
            Err(engine_busy())
        }
    }
}

/// [`ask`] for the commands answered "does the session exist": `Err(no_session())` when not.
async fn ask_session(
    w: &Whep,
    id: &str,
    make: impl FnOnce(oneshot::Sender<bool>) -> Command,
) -> Result<(), ApiError> {
    match ask(w, id, make).await? {
        Some(true) => Ok(()),
        _ => Err(no_session()),
    }
}

fn no_session() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such WHEP session")
}

async fn delete(
    State(w): State<Arc<Whep>>,
    Path((_stream, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    ask_session(&w, &id.clone(), |reply| Command::Remove { id, reply }).await?;
    Ok(StatusCode::OK.into_response())
}

async fn info(
    State(w): State<Arc<Whep>>,
    Path((_stream, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    ask(&w, &id.clone(), |reply| Command::Info { id, reply })
        .await?
        .flatten()
        .map(|v| axum::Json(v).into_response())
        .ok_or_else(no_session)
}

async fn patch(
    State(w): State<Arc<Whep>>,
    Path((_stream, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !content_type_is(&headers, "application/trickle-ice-sdpfrag") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "PATCH takes application/trickle-ice-sdpfrag",
        ));
    }
    if let Some(tag) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok())
        && tag != "*"
        && tag.trim_matches('"') != id
    {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "ETag does not match",
        ));
    }
    let count = parse_trickle(&body)?;
    ask_session(&w, &id.clone(), |reply| Command::Candidates {
        id,
        count,
        reply,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct DialectBody {
    lang: String,
}

async fn dialect(
    State(w): State<Arc<Whep>>,
    Path((stream, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: DialectBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"lang\":\"yue\"}}: {e}"),
        )
    })?;
    let lecture = live_lecture(&w.hub, &stream)?;
    let lang = pick_dialect(&lecture, w.hub.config(), Some(&b.lang))?;
    ask_session(&w, &id.clone(), |reply| Command::Dialect {
        id,
        lang,
        reply,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer `server` gives a browser-like offer (str0m's standard extensions, TWCC and
    /// absolute send time among them) to receive video and audio.
    fn answer_to_a_browser(mut server: Rtc) -> String {
        install_crypto();
        let mut client = Rtc::builder().build(Instant::now());
        let mut change = client.sdp_api();
        for kind in [
            str0m::media::MediaKind::Video,
            str0m::media::MediaKind::Audio,
        ] {
            change.add_media(kind, str0m::media::Direction::RecvOnly, None, None, None);
        }
        let (offer, _) = change.apply().expect("an offer");
        let offer_sdp = offer.to_sdp_string();
        assert!(offer_sdp.contains("transport-wide-cc") && offer_sdp.contains("abs-send-time"));
        server
            .sdp_api()
            .accept_offer(offer)
            .expect("answered")
            .to_sdp_string()
    }

    #[test]
    fn viewers_are_not_offered_bandwidth_estimation_extensions_publishers_are() {
        let viewer = answer_to_a_browser(viewer_config().build(Instant::now()));
        assert!(!viewer.contains("transport-wide-cc"), "{viewer}");
        assert!(!viewer.contains("abs-send-time"), "{viewer}");
        // What a browser needs to bind our streams to its m-lines stays.
        assert!(
            viewer.contains("urn:ietf:params:rtp-hdrext:sdes:mid"),
            "{viewer}"
        );
        // The configuration a WHIP publisher gets keeps both: its encoder adapts to them.
        let publisher = answer_to_a_browser(codecs().build(Instant::now()));
        assert!(publisher.contains("transport-wide-cc"), "{publisher}");
    }

    #[test]
    fn answer_tracks_share_one_stream() {
        let answer = "v=0\r\na=msid-semantic: WMS aaa bbb\r\nm=video 9 X 96\r\na=msid:aaa t1\r\na=ssrc:1 msid:aaa t1\r\nm=audio 9 X 111\r\na=msid:bbb t2\r\na=ssrc:2 msid:bbb t2\r\na=ssrc:2 cname:x\r\n";
        let out = one_media_stream(answer);
        assert!(out.contains("a=msid-semantic: WMS aaa\r\n"));
        assert!(out.contains("a=msid:aaa t2\r\n"));
        assert!(out.contains("a=ssrc:2 msid:aaa t2\r\n"));
        assert!(out.contains("a=ssrc:2 cname:x\r\n"));
        assert!(!out.contains("bbb"));
    }

    #[test]
    fn h264_needs_packetization_mode_1() {
        let m = |fmtp: &str| {
            format!(
                "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 {fmtp}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"
            )
        };
        assert!(h264_mode1_negotiated(&m(
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
        )));
        assert!(!h264_mode1_negotiated(&m(
            "packetization-mode=0;profile-level-id=42e01f"
        )));
        assert!(!h264_mode1_negotiated(&m("profile-level-id=42e01f")));
        let inactive = "v=0\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n";
        assert!(!h264_mode1_negotiated(inactive));
        let last = "v=0\r\nm=audio 9 X 111\r\nm=video 9 X 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n";
        assert!(h264_mode1_negotiated(last));
    }

    /// Each m-section of an SDP text: its mid, its port and its lines.
    fn sections(sdp: &str) -> Vec<(String, String, Vec<&str>)> {
        let mut out: Vec<(String, String, Vec<&str>)> = Vec::new();
        for line in sdp.lines() {
            if let Some(m) = line.strip_prefix("m=") {
                let port = m.split_whitespace().nth(1).unwrap_or("").to_string();
                out.push((String::new(), port, Vec::new()));
            }
            if let Some(s) = out.last_mut() {
                if let Some(mid) = line.strip_prefix("a=mid:") {
                    s.0 = mid.to_string();
                }
                s.2.push(line);
            }
        }
        out
    }

    fn bundle(sdp: &str) -> Vec<&str> {
        sdp.lines()
            .find_map(|l| l.strip_prefix("a=group:BUNDLE "))
            .map(|m| m.split_whitespace().collect())
            .unwrap_or_default()
    }

    /// The answer a viewer's offer gets, as `answer_offer` makes it.
    fn answer_for(offer: &str) -> String {
        install_crypto();
        let mut rtc = codecs().build(Instant::now());
        rtc.add_local_candidate(Candidate::host("127.0.0.1:8189".parse().unwrap(), "udp").unwrap());
        let offer = SdpOffer::from_sdp_string(offer).unwrap();
        let answer = rtc.sdp_api().accept_offer(offer).unwrap();
        answer_sdp(&answer.to_sdp_string())
    }

    /// Every candidate line of the answer sits in a bundled m-section, and the first one of
    /// the group (where browsers look) has them all.
    fn assert_candidates_bundled(answer: &str) {
        let group = bundle(answer);
        let sections = sections(answer);
        let is_candidate = |l: &&str| l.starts_with("a=candidate:");
        for (mid, _, lines) in &sections {
            assert!(
                group.contains(&mid.as_str()) || !lines.iter().any(is_candidate),
                "a candidate in m-section {mid}, outside the BUNDLE group {group:?}:\n{answer}"
            );
        }
        let tag = sections
            .iter()
            .find(|(mid, _, _)| Some(&mid.as_str()) == group.first())
            .expect("the BUNDLE group names an m-section");
        assert!(
            tag.2.iter().any(is_candidate),
            "no candidate in the bundle's first m-section:\n{answer}"
        );
    }

    #[test]
    fn candidates_move_out_of_rejected_sections() {
        let answer = "v=0\r\na=group:BUNDLE 1 2\r\nm=video 0 X 0\r\nc=IN IP4 0.0.0.0\r\na=candidate:a 1 udp 1 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\na=mid:0\r\nm=audio 9 X 111\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\nm=audio 9 X 111\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\n";
        let out = candidates_in_bundle(answer);
        assert_eq!(
            out,
            "v=0\r\na=group:BUNDLE 1 2\r\nm=video 0 X 0\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\nm=audio 9 X 111\r\nc=IN IP4 0.0.0.0\r\na=candidate:a 1 udp 1 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\na=mid:1\r\nm=audio 9 X 111\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\n"
        );
        // Already where browsers look, or no BUNDLE group to go by: left as it is.
        assert_eq!(candidates_in_bundle(&out), out);
        let unbundled = answer.replace("a=group:BUNDLE 1 2\r\n", "");
        assert_eq!(candidates_in_bundle(&unbundled), unbundled);
    }

    #[test]
    fn firefox_without_h264_is_answered_with_sound_and_reachable_candidates() {
        // Firefox ESR as Debian ships it: VP8, VP9 and AV1, no H.264 (no OpenH264 plugin).
        let answer = answer_for(include_str!("testdata/firefox-esr-153-offer.sdp"));
        let sections = sections(&answer);
        assert_eq!(
            sections
                .iter()
                .map(|(mid, port, _)| (mid.as_str(), port.as_str()))
                .collect::<Vec<_>>(),
            [("0", "0"), ("1", "9")],
            "video rejected, audio accepted:\n{answer}"
        );
        assert_eq!(bundle(&answer), ["1"]);
        assert!(negotiated(&answer, "opus/48000"), "{answer}");
        assert!(!h264_mode1_negotiated(&answer), "{answer}");
        assert_candidates_bundled(&answer);
    }

    #[test]
    fn firefox_with_openh264_is_answered_with_h264_mode_1() {
        let answer = answer_for(include_str!("testdata/firefox-esr-153-openh264-offer.sdp"));
        assert_eq!(bundle(&answer), ["0", "1"]);
        assert!(h264_mode1_negotiated(&answer), "{answer}");
        assert!(
            answer.contains("\r\nm=video 9 UDP/TLS/RTP/SAVPF 126 ")
                && answer.contains("a=rtpmap:126 H264/90000"),
            "Firefox's packetization-mode 1 type first:\n{answer}"
        );
        assert!(negotiated(&answer, "opus/48000"), "{answer}");
        assert_candidates_bundled(&answer);
    }

    #[test]
    fn negotiated_codecs_in_active_lines_only() {
        let answer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 H264/90000\r\n";
        assert!(negotiated(answer, "opus/48000"));
        assert!(!negotiated(answer, "H264/90000"));
    }
}
