//! HTTP interface: HLS playlists and media from memory, the lecture API, health.
//!
//! Caching: media (init segments, segments, parts) have URLs that are never reused, so they
//! are `immutable`; playlists are cached briefly, blocking-reload answers for a few target
//! durations (RFC 8216bis Appendix B.1), and errors not at all, so a CDN can sit in front.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use media::TrackKind;
use serde_json::{Value, json};
use tokio::time::Instant;
use tower_http::cors::{Any, CorsLayer};

use crate::hls::multivariant;
use crate::hls::packager::Readiness;
use crate::hls::spool::Media;
use crate::hub::{Hub, Lecture, Status};

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The hub.
    pub hub: Arc<Hub>,
}

/// The relay's routes: `/hls/...`, `/api/v1/...`, `/healthz`.
pub fn router(hub: Arc<Hub>) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([axum::http::Method::GET, axum::http::Method::HEAD])
        .allow_headers(Any)
        .max_age(Duration::from_secs(600));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/streams", get(list_streams))
        .route("/api/v1/dialects", get(list_dialects))
        .route("/api/v1/streams/{name}", get(get_stream))
        .route(
            "/api/v1/streams/{name}/questions",
            get(crate::channel::questions),
        )
        .route("/api/v1/streams/{name}/sites", get(crate::channel::sites))
        .route(
            "/api/v1/streams/{name}/asks",
            get(crate::ask::api_list).post(crate::ask::api_accept),
        )
        .route(
            "/api/v1/streams/{name}/asks/{id}",
            axum::routing::delete(crate::ask::api_end),
        )
        .route(
            "/api/v1/streams/{name}/asks/{id}/broadcast",
            post(crate::ask::api_broadcast).delete(crate::ask::api_broadcast),
        )
        .route(
            "/api/v1/streams/{name}/state",
            get(crate::channel::state_api),
        )
        .route("/ws/{name}", get(crate::channel::upgrade))
        .route("/hls/{stream}/index.m3u8", get(multivariant_playlist))
        .route("/hls/{stream}/{rendition}/{file}", get(rendition_file))
        .merge(crate::replay::router())
        // Playback tokens for lectures that need them, on every HLS and replay resource.
        .layer(crate::admission::GuardLayer(hub.clone()))
        .layer(cors)
        .with_state(AppState { hub })
}

/// An error answered as JSON `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// An error with a status and a message for the client.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message for the client.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, what)
    }

    fn bad_request(what: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, what)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    }
}

async fn healthz(State(s): State<AppState>) -> Response {
    let live = s
        .hub
        .list()
        .iter()
        .filter(|l| l.status() == Status::Live)
        .count();
    let mut r = axum::Json(json!({ "status": "ok", "live_lectures": live })).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /api/v1/dialects`: the dialects this relay names, in the order players list them.
async fn list_dialects(State(s): State<AppState>) -> Response {
    let list: Vec<Value> = s
        .hub
        .config()
        .dialects
        .iter()
        .map(|(lang, name)| json!({ "lang": lang, "name": name }))
        .collect();
    axum::Json(json!({ "dialects": list })).into_response()
}

async fn list_streams(State(s): State<AppState>) -> Response {
    let mut streams: Vec<Value> = s.hub.list().iter().map(|l| describe(&s.hub, l)).collect();
    // Lectures known in advance that are not live: scheduled or idle.
    for c in &s.hub.config().lecture {
        if s.hub.lecture(&c.name).is_none()
            && let Some(st) = crate::channel::state(&s.hub, &c.name)
        {
            streams.push(schedule_view(&st));
        }
    }
    let mut r = axum::Json(json!({ "streams": streams })).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn get_stream(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let body = match s.hub.lecture(&name) {
        Some(l) => describe(&s.hub, &l),
        None => match (
            s.hub.config().lecture(&name),
            crate::channel::state(&s.hub, &name),
        ) {
            (Some(_), Some(st)) => schedule_view(&st),
            _ => return Err(ApiError::not_found(format!("no lecture {name:?}"))),
        },
    };
    let mut r = axum::Json(body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

/// The API view of a lecture that is not live.
fn schedule_view(st: &Value) -> Value {
    json!({
        "name": st["lecture"],
        "title": st["title"],
        "status": st["status"],
        "starts_at": st["starts_at"],
        "hls": st["hls"],
        "whep": st["whep"],
        "tracks": [],
        "replays": st["replays"],
    })
}

/// The API view of a lecture.
fn describe(hub: &Hub, l: &Lecture) -> Value {
    let status = match l.status() {
        Status::Live => "live",
        Status::Reconnecting { .. } => "reconnecting",
        Status::Ended { .. } => "ended",
    };
    let publisher = l.publisher().map(|p| {
        json!({
            "protocol": p.protocol,
            "remote": p.remote.map(|a| a.to_string()),
            "since": humantime::format_rfc3339_millis(p.since).to_string(),
        })
    });
    let health = l.health();
    let input = json!({
        "keyframe_interval_s": health.keyframe_interval_s,
        // An encoder whose network dropped shows here long before its connection times out.
        "silent_ms": l.silent_for().map(|d| d.as_millis() as u64),
        "errors": health.errors,
        "last_error": health.last_error.as_ref().map(|(at, m)| json!({
            "at": humantime::format_rfc3339_millis(*at).to_string(),
            "message": m,
        })),
        "transport": health.transport.as_ref().map(|t| json!({
            "packets_received": t.packets_received,
            "packets_lost": t.packets_lost,
            "packets_retransmitted": t.packets_retransmitted,
            "packets_dropped": t.packets_dropped,
            "rtt_ms": t.rtt_ms,
            "latency_ms": t.latency_ms,
        })),
    });
    let hls = l.hls();
    let tracks: Vec<Value> = hls
        .renditions()
        .iter()
        .map(|r| {
            let rates = r.rates();
            let mut t = json!({
                "id": r.id,
                "kind": match r.kind() { TrackKind::Video => "video", TrackKind::Audio => "audio" },
                "codec": r.info.codec.name(),
                "codec_string": r.info.codec.codec_string(),
                "bitrate": rates.map(|x| x.0),
                "playlist": format!("/hls/{}/{}/index.m3u8", l.name, r.id),
            });
            match &r.info.codec {
                media::CodecParams::H264(h) => {
                    t["width"] = json!(h.width);
                    t["height"] = json!(h.height);
                    t["fps"] = json!(
                        rates
                            .map(|x| (x.1 * 100.0).round() / 100.0)
                            .or(h.fps_milli.map(|f| f as f64 / 1000.0))
                    );
                }
                media::CodecParams::Aac(a) => {
                    // A reading older than a few seconds means nothing is arriving.
                    let level = r
                        .language
                        .as_ref()
                        .and_then(|lang| health.levels.get(lang.as_str()))
                        .filter(|(_, at)| at.elapsed() < Duration::from_secs(5))
                        .map(|(lv, _)| {
                            json!({
                                "rms_db": (lv.rms_db * 10.0).round() / 10.0,
                                "peak_db": (lv.peak_db * 10.0).round() / 10.0,
                            })
                        });
                    t["level"] = json!(level);
                    t["contributed"] = json!(r.lecture_clock);
                    t["language"] = json!(r.language.as_ref().map(|x| x.to_string()));
                    t["name"] = json!(r.name);
                    t["default"] = json!(r.language.as_ref() == Some(&l.default_language));
                    t["sample_rate"] = json!(a.sample_rate);
                    t["channels"] = json!(a.channel_count());
                }
            }
            t
        })
        .collect();
    json!({
        "name": l.name,
        "title": l.title.clone().or_else(|| hub.learned_title(&l.name)),
        "starts_at": hub.config().lecture(&l.name).and_then(|c| c.starts_at).map(|t| t.to_string()),
        "live_channel": hub.questions.connections(&l.name),
        "status": status,
        "started": humantime::format_rfc3339_millis(l.started).to_string(),
        "sessions": l.sessions(),
        "publisher": publisher,
        "input": input,
        "hls": format!("/hls/{}/index.m3u8", l.name),
        "whep": format!("/whep/{}", l.name),
        "webrtc_viewers": l.webrtc_viewers(),
        "contributors": l.contributors(),
        "tracks": tracks,
        "recording": l.recording().map(|r| crate::replay::brief(&r)),
    })
}

fn block_timeout(s: &AppState) -> Duration {
    Duration::from_millis(s.hub.config().hls.block_timeout_ms)
}

fn playlist_response(body: impl Into<Bytes>, cache: &str) -> Response {
    let body: Bytes = body.into();
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.apple.mpegurl"),
    );
    if let Ok(v) = HeaderValue::from_str(cache) {
        h.insert(header::CACHE_CONTROL, v);
    }
    r
}

/// A segment's or part's bytes: at hand, or read from the spool off the runtime's threads.
async fn read_media(media: Media, lecture: &str) -> Result<Bytes, ApiError> {
    if let Some(b) = media.at_hand() {
        return Ok(b);
    }
    let read = tokio::task::spawn_blocking(move || media.read()).await;
    read.map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|e| {
            // A failing disk fails every read: said at the 1st, 2nd, 4th, 8th... failure.
            static FAILED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = FAILED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::error!(lecture, "HLS spool read: {e} ({n} failed reads so far)");
            }
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the segment could not be read",
            )
        })
}

fn media_response(body: Bytes, kind: TrackKind) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(match kind {
            TrackKind::Video => "video/mp4",
            TrackKind::Audio => "audio/mp4",
        }),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    r
}

fn lecture(s: &AppState, name: &str) -> Result<Arc<Lecture>, ApiError> {
    s.hub
        .lecture(name)
        .ok_or_else(|| ApiError::not_found(format!("no lecture {name:?}")))
}

/// On an edge, a lecture its first viewer asks for is being pulled from the origin: waits
/// (until `deadline`) for it to start here rather than answering 404 at once.
async fn pulled(s: &AppState, name: &str, deadline: Instant) -> Result<Arc<Lecture>, ApiError> {
    let mut events = s.hub.subscribe();
    loop {
        if let Some(l) = s.hub.lecture(name) {
            return Ok(l);
        }
        tokio::select! {
            e = events.recv() => match e {
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return lecture(s, name),
            },
            _ = tokio::time::sleep_until(deadline) => return lecture(s, name),
        }
    }
}

/// Waits until `check` gives an answer or the deadline passes; `check` runs with the
/// packager locked and is re-run after every change.
async fn wait_for<T>(
    l: &Lecture,
    deadline: Instant,
    mut check: impl FnMut(&crate::hls::packager::Packager) -> Option<T>,
) -> Option<T> {
    let mut rx = l.subscribe();
    loop {
        rx.mark_unchanged();
        if let Some(v) = check(&l.hls()) {
            return Some(v);
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return None },
            _ = tokio::time::sleep_until(deadline) => return None,
        }
    }
}

async fn multivariant_playlist(
    State(s): State<AppState>,
    Path(stream): Path<String>,
) -> Result<Response, ApiError> {
    s.hub.note_demand(&stream);
    let deadline = Instant::now() + block_timeout(&s);
    let l = match s.hub.lecture(&stream) {
        Some(l) => l,
        None if s.hub.config().edge.is_edge() => pulled(&s, &stream, deadline).await?,
        None => lecture(&s, &stream)?,
    };
    let default = l.default_language.to_string();
    let config = s.hub.config();
    let text = wait_for(&l, deadline, |p| {
        multivariant::render(p, &default, |tag| config.dialect_rank(tag))
    })
    .await
    .ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("lecture {stream:?} has no media yet"),
        )
    })?;
    Ok(playlist_response(text, "no-cache"))
}

/// Delivery directives of a blocking playlist reload.
#[derive(Debug, Default, PartialEq, Eq)]
struct Directives {
    msn: Option<u64>,
    part: Option<u32>,
}

/// Fuzzing entry point for an HLS request's query directives (`_HLS_msn`, `_HLS_part`;
/// `_HLS_skip` and the rest are ignored) and the rendition file name it asks for (text up to
/// the first `?`). Never panics; a part directive is never accepted without its msn.
#[doc(hidden)]
pub fn fuzz_hls_query(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (file, query) = match text.split_once('?') {
        Some((f, q)) => (f, Some(q)),
        None => (&*text, None),
    };
    if let Ok(d) = parse_directives(query) {
        assert!(d.part.is_none() || d.msn.is_some());
    }
    let _ = parse_file(file, "i1");
}

fn parse_directives(query: Option<&str>) -> Result<Directives, ApiError> {
    let mut d = Directives::default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "_HLS_msn" => {
                d.msn = Some(
                    v.parse()
                        .map_err(|_| ApiError::bad_request("bad _HLS_msn"))?,
                )
            }
            "_HLS_part" => {
                d.part = Some(
                    v.parse()
                        .map_err(|_| ApiError::bad_request("bad _HLS_part"))?,
                )
            }
            _ => {}
        }
    }
    if d.part.is_some() && d.msn.is_none() {
        return Err(ApiError::bad_request("_HLS_part without _HLS_msn"));
    }
    Ok(d)
}

/// What a file name in a rendition directory asks for.
#[derive(Debug, PartialEq, Eq)]
enum FileRequest {
    Playlist,
    Init(u32),
    Segment(u64),
    Part(u64, u32),
}

fn parse_file(file: &str, instance: &str) -> Option<FileRequest> {
    if file == "index.m3u8" {
        return Some(FileRequest::Playlist);
    }
    let (stem, ext) = file.rsplit_once('.')?;
    let mut it = stem.split('-');
    let kind = it.next()?;
    if it.next()? != instance {
        return None;
    }
    let a = it.next()?;
    let b = it.next();
    if it.next().is_some() {
        return None;
    }
    match (kind, ext, b) {
        ("init", "mp4", None) => Some(FileRequest::Init(a.parse().ok()?)),
        ("seg", "m4s", None) => Some(FileRequest::Segment(a.parse().ok()?)),
        ("part", "m4s", Some(b)) => Some(FileRequest::Part(a.parse().ok()?, b.parse().ok()?)),
        _ => None,
    }
}

async fn rendition_file(
    State(s): State<AppState>,
    Path((stream, rendition, file)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    s.hub.note_demand(&stream);
    let l = lecture(&s, &stream)?;
    let (r, kind, instance, target) = {
        let hls = l.hls();
        let r = hls
            .rendition_by_id(&rendition)
            .ok_or_else(|| ApiError::not_found(format!("no rendition {rendition:?}")))?;
        (
            r,
            hls.renditions()[r].kind(),
            hls.instance().to_string(),
            hls.target_duration(),
        )
    };
    let request = parse_file(&file, &instance)
        .ok_or_else(|| ApiError::not_found(format!("no file {file:?}")))?;
    let deadline = Instant::now() + block_timeout(&s);
    match request {
        FileRequest::Playlist => {
            let d = parse_directives(query.as_deref())?;
            let Some(msn) = d.msn else {
                let text = wait_for(&l, deadline, |p| {
                    p.has_media(r).then(|| p.media_playlist_bytes(r)).flatten()
                })
                .await
                .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no media yet"))?;
                let cache = format!("public, max-age={}", (target / 2).max(1));
                return Ok(playlist_response(text, &cache));
            };
            let answer = wait_for(&l, deadline, |p| match p.blocking_ready(r, msn, d.part) {
                Readiness::Ready => Some(Ok(p.media_playlist_bytes(r))),
                Readiness::TooFarAhead => Some(Err(())),
                Readiness::Wait => None,
            })
            .await;
            match answer {
                Some(Ok(Some(text))) => {
                    let cache = format!("public, max-age={}", 6 * target);
                    Ok(playlist_response(text, &cache))
                }
                Some(Ok(None)) => Err(ApiError::not_found("rendition gone")),
                Some(Err(())) => Err(ApiError::bad_request(
                    "_HLS_msn/_HLS_part too far beyond the live edge",
                )),
                // Timed out (the publisher is reconnecting, most likely): RFC 8216bis
                // 6.2.5.2 asks for 503; a playlist without the part asked for would break
                // the blocking-reload contract (Apple's players reject it, -15410). Players
                // retry, and ours keep retrying through a publisher gap.
                None => Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the requested segment or part is not available yet",
                )),
            }
        }
        FileRequest::Init(v) => {
            let data = l.hls().init(r, v);
            data.map(|d| media_response(d, kind))
                .ok_or_else(|| ApiError::not_found("no such init segment"))
        }
        FileRequest::Segment(msn) => {
            let data = l.hls().segment(r, msn);
            let data = data.ok_or_else(|| ApiError::not_found("no such segment"))?;
            Ok(media_response(read_media(data, &l.name).await?, kind))
        }
        FileRequest::Part(msn, idx) => {
            // A preload-hinted part is held until it exists (RFC 8216bis 6.2.6).
            let data = wait_for(&l, deadline, |p| {
                if let Some(d) = p.part(r, msn, idx) {
                    Some(Some(d))
                } else if p.part_upcoming(r, msn, idx) {
                    None
                } else {
                    Some(None)
                }
            })
            .await
            .flatten();
            let data = data.ok_or_else(|| ApiError::not_found("no such part"))?;
            Ok(media_response(read_media(data, &l.name).await?, kind))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(parse_file("index.m3u8", "k"), Some(FileRequest::Playlist));
        assert_eq!(parse_file("init-k-2.mp4", "k"), Some(FileRequest::Init(2)));
        assert_eq!(
            parse_file("seg-k-17.m4s", "k"),
            Some(FileRequest::Segment(17))
        );
        assert_eq!(
            parse_file("part-k-17-3.m4s", "k"),
            Some(FileRequest::Part(17, 3))
        );
        for bad in [
            "seg-other-17.m4s",
            "seg-k-17.mp4",
            "part-k-17.m4s",
            "part-k-1-2-3.m4s",
            "seg-k--1.m4s",
            "../../etc/passwd",
            "seg-k-99999999999999999999999.m4s",
        ] {
            assert_eq!(parse_file(bad, "k"), None, "{bad}");
        }
    }

    #[test]
    fn directives() {
        assert_eq!(parse_directives(None).unwrap(), Directives::default());
        assert_eq!(
            parse_directives(Some("_HLS_msn=5&_HLS_part=2")).unwrap(),
            Directives {
                msn: Some(5),
                part: Some(2)
            }
        );
        assert!(parse_directives(Some("_HLS_part=2")).is_err());
        assert!(parse_directives(Some("_HLS_msn=-1")).is_err());
        assert!(parse_directives(Some("_HLS_msn=x")).is_err());
    }
}
