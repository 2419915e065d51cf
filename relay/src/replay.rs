//! Replays over HTTP: every recording as HLS (`/replay/ID/index.m3u8`: VOD once the lecture
//! is over, EVENT while it is still recorded), served from disk with byte ranges, ETags and
//! immutable caching so a CDN can carry it; and the recordings API (`/api/v1/recordings`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use recorder::{Library, Recording};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::info;

use crate::http::{ApiError, AppState};

/// The replay and recordings routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/recordings", get(list))
        .route("/api/v1/recordings/{id}", get(one).delete(delete))
        .route("/replay/{id}/index.m3u8", get(multivariant))
        .route("/replay/{id}/{rendition}/{file}", get(rendition_file))
        .merge(crate::replay_media::router())
}

fn library(s: &AppState) -> Result<&Arc<Library>, ApiError> {
    s.hub
        .recordings()
        .ok_or_else(|| ApiError::not_found("this relay keeps no recordings"))
}

pub(crate) fn recording(s: &AppState, id: &str) -> Result<Arc<Recording>, ApiError> {
    library(s)?
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("no recording {id:?}")))
}

/// Runs blocking disk work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "reading the recording failed",
            )
        })?
        .map_err(|e| {
            tracing::warn!("reading a recording: {e}");
            match e.kind() {
                std::io::ErrorKind::NotFound => ApiError::not_found("gone from the disk"),
                _ => ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "reading the recording failed",
                ),
            }
        })
}

/// The API view of a recording.
pub fn describe(rec: &Recording) -> Value {
    let mut view = describe_recording(rec);
    crate::replay_media::add_links(rec, &mut view);
    view
}

fn describe_recording(rec: &Recording) -> Value {
    let c = rec.contents();
    let m = &c.meta;
    let ts = |t: jiff::Timestamp| t.to_string();
    let dialects: Vec<Value> = m
        .renditions
        .iter()
        .filter(|r| !r.is_video())
        .map(|r| json!({ "lang": r.language, "name": r.name, "default": r.language.as_deref() == Some(m.default_language.as_str()) }))
        .collect();
    json!({
        "id": rec.id,
        "lecture": m.lecture,
        "title": m.title,
        "state": m.state.as_str(),
        "started": ts(m.started),
        "ended": m.ended.map(ts),
        "duration_s": c.duration().map(|d| (d * 1000.0).round() / 1000.0),
        "dialects": dialects,
        "has_video": m.renditions.iter().any(|r| r.is_video()),
        "hls": format!("/replay/{}/index.m3u8", rec.id),
        "reason": m.reason,
        "interruptions": m.interruptions.iter().map(|i| json!({
            "from": ts(i.from),
            "to": i.to.map(ts),
            "reason": i.reason,
        })).collect::<Vec<_>>(),
        "retention_days": m.retention_days,
    })
}

/// A short view of a recording, for a lecture's state: enough to start watching it.
pub fn brief(rec: &Recording) -> Value {
    let c = rec.contents();
    json!({
        "id": rec.id,
        "state": c.meta.state.as_str(),
        "live": c.live,
        "started": c.meta.started.to_string(),
        "duration_s": c.duration().map(|d| (d * 1000.0).round() / 1000.0),
        "hls": format!("/replay/{}/index.m3u8", rec.id),
        "reason": c.meta.reason,
    })
}

/// The finished recordings of lecture `name` that can be replayed, newest first (at most
/// `max`).
pub fn replays_of(library: &Library, name: &str, max: usize) -> Vec<Value> {
    library
        .list()
        .iter()
        .rev()
        .filter(|r| {
            let c = r.contents();
            c.meta.lecture == name && !c.live && c.duration().is_some_and(|d| d > 0.0)
        })
        .take(max)
        .map(|r| brief(r))
        .collect()
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    lecture: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

fn timestamp(v: Option<&str>, name: &str) -> Result<Option<jiff::Timestamp>, ApiError> {
    v.map(|t| {
        t.parse::<jiff::Timestamp>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("{name} must be an RFC 3339 time, e.g. 2026-12-01T19:30:00+08:00"),
            )
        })
    })
    .transpose()
}

/// `GET /api/v1/recordings[?lecture=NAME][&from=T][&to=T]`: recordings started in that
/// time range, oldest first.
async fn list(State(s): State<AppState>, Query(q): Query<ListQuery>) -> Result<Response, ApiError> {
    let (from, to) = (
        timestamp(q.from.as_deref(), "from")?,
        timestamp(q.to.as_deref(), "to")?,
    );
    let lib = library(&s)?;
    let mut out: Vec<Value> = lib
        .list()
        .iter()
        .filter(|r| {
            let c = r.contents();
            q.lecture.as_deref().is_none_or(|l| c.meta.lecture == l)
                && from.is_none_or(|f| c.meta.started >= f)
                && to.is_none_or(|t| c.meta.started <= t)
        })
        .map(|r| describe(r))
        .collect();
    if q.lecture.is_none() {
        // Folders that cannot be read are reported, not hidden.
        for (id, why) in lib.damaged() {
            out.push(
                json!({ "id": id, "state": "failed", "reason": format!("unreadable: {why}") }),
            );
        }
    }
    let mut r = axum::Json(json!({ "recordings": out })).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

/// `GET /api/v1/recordings/ID`
async fn one(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let rec = recording(&s, &id)?;
    let mut r = axum::Json(describe(&rec)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

/// `DELETE /api/v1/recordings/ID`: with the operator token (or the lecture's publish key)
/// as a bearer token.
async fn delete(
    State(s): State<AppState>,
    Path(id): Path<String>,
    peer: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rec = recording(&s, &id)?;
    let lecture = rec.contents().meta.lecture.clone();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !crate::channel::operator_allowed(
        s.hub.config(),
        &lecture,
        bearer,
        crate::channel::on_this_machine(peer.map(|p| p.0.0.ip()), &headers),
    ) {
        info!(recording = %id, "recording deletion refused: no valid operator token");
        let mut r = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "deleting a recording needs the operator token or the lecture's publish key as a bearer token",
        )
        .into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Ok(r);
    }
    let lib = library(&s)?.clone();
    let id2 = id.clone();
    tokio::task::spawn_blocking(move || lib.delete(&id2))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "deleting failed"))?
        .map_err(|e| match e {
            recorder::store::DeleteError::NotFound(_) => ApiError::not_found(e.to_string()),
            recorder::store::DeleteError::Live(_) => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            recorder::store::DeleteError::Io(..) => {
                tracing::error!("{e}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "deleting the recording failed",
                )
            }
        })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The recording's renditions: from memory, or read from its indexes on the blocking pool
/// the first time.
async fn renditions_of(
    rec: &Arc<Recording>,
) -> Result<Arc<std::collections::BTreeMap<String, recorder::store::Rendition>>, ApiError> {
    if let Some(r) = rec.cached_renditions() {
        return Ok(r);
    }
    let r2 = rec.clone();
    blocking(move || r2.renditions()).await
}

pub(crate) fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

fn playlist_response(p: recorder::store::Playlist, live: bool, headers: &HeaderMap) -> Response {
    let etag = p.etag;
    // A recording in progress grows every segment; a finished one never changes.
    let cache = if live {
        "public, max-age=1"
    } else {
        "public, max-age=86400"
    };
    let mut r = if not_modified(headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, p.text).into_response()
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.apple.mpegurl"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    r
}

/// `GET /replay/ID/index.m3u8`
async fn multivariant(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rec = recording(&s, &id)?;
    let renditions = renditions_of(&rec).await?;
    let live = rec.is_live();
    let config = s.hub.config();
    // "" cannot be a rendition's id: the multivariant playlist's key.
    let p = rec
        .playlist("", |c| {
            let renditions = c.renditions.as_deref().unwrap_or(&*renditions);
            recorder::playlist::multivariant(&c.meta, renditions, |tag| config.dialect_rank(tag))
        })
        .ok_or_else(|| ApiError::not_found("the recording has no media yet"))?;
    Ok(playlist_response(p, live, &headers))
}

/// A file of a recorded rendition.
#[derive(Debug, PartialEq, Eq)]
enum File {
    Playlist,
    Init(u32),
    Segment(u64),
}

fn parse_file(file: &str) -> Option<File> {
    if file == "index.m3u8" {
        return Some(File::Playlist);
    }
    if let Some(v) = file
        .strip_prefix("init-")
        .and_then(|f| f.strip_suffix(".mp4"))
    {
        return v.parse().ok().map(File::Init);
    }
    file.strip_prefix("seg-")
        .and_then(|f| f.strip_suffix(".m4s"))
        .and_then(|m| m.parse().ok())
        .map(File::Segment)
}

/// `GET /replay/ID/RENDITION/{index.m3u8, init-V.mp4, seg-N.m4s}`
async fn rendition_file(
    State(s): State<AppState>,
    Path((id, rendition, file)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rec = recording(&s, &id)?;
    let kind = {
        let c = rec.contents();
        let r = c
            .meta
            .renditions
            .iter()
            .find(|r| r.id == rendition)
            .ok_or_else(|| ApiError::not_found(format!("no rendition {rendition:?}")))?;
        if r.is_video() {
            "video/mp4"
        } else {
            "audio/mp4"
        }
    };
    let file = parse_file(&file).ok_or_else(|| ApiError::not_found(format!("no file {file:?}")))?;
    let renditions = renditions_of(&rec).await?;
    let rend = renditions
        .get(&rendition)
        .ok_or_else(|| ApiError::not_found("the rendition has no media yet"))?;
    match file {
        File::Playlist => {
            let live = rec.is_live();
            let p = rec
                .playlist(&rendition, |c| {
                    let renditions = c.renditions.as_deref().unwrap_or(&*renditions);
                    recorder::playlist::media(&c.meta, renditions, &rendition, c.live)
                })
                .ok_or_else(|| ApiError::not_found("the rendition has no media yet"))?;
            Ok(playlist_response(p, live, &headers))
        }
        File::Init(v) => {
            if !rend.inits.contains(&v) {
                return Err(ApiError::not_found("no such init segment"));
            }
            let etag = format!("\"{id}/{rendition}/init-{v}\"");
            let r2 = rec.clone();
            let rn = rendition.clone();
            let data = blocking(move || r2.init(&rn, v)).await?;
            let len = data.len() as u64;
            Ok(media_response(&headers, &etag, kind, len, move |o, l| {
                Ok(data.slice(o as usize..(o + l) as usize))
            })
            .await)
        }
        File::Segment(msn) => {
            let seg = rend
                .segments
                .iter()
                .find(|x| x.msn == msn && !x.gap && x.len > 0)
                .ok_or_else(|| ApiError::not_found("no such segment"))?
                .clone();
            // While recording, only whole segments (those in the EVENT playlist) are served.
            if rec.is_live() && !seg.complete {
                return Err(ApiError::not_found("the segment is still being recorded"));
            }
            let etag = format!("\"{id}/{rendition}/{msn}\"");
            let (rec2, rn) = (rec.clone(), rendition.clone());
            Ok(media_response(&headers, &etag, kind, seg.len, move |o, l| {
                rec2.read_media(&rn, seg.offset + o, l)
            })
            .await)
        }
    }
}

/// Parses a single `Range: bytes=...` against a resource of `len` bytes: `Ok(None)` for no
/// (or an ignored, multi-part) range, `Err(())` for one that cannot be satisfied.
pub(crate) fn range(headers: &HeaderMap, len: u64, etag: &str) -> Result<Option<(u64, u64)>, ()> {
    let Some(v) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    // If-Range with another validator: the whole resource.
    if let Some(ir) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok())
        && ir.trim() != etag
    {
        return Ok(None);
    }
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len - 1)
        }
        (s, "") => (s.parse().map_err(|_| ())?, len.saturating_sub(1)),
        (s, e) => {
            let (s, e): (u64, u64) = (s.parse().map_err(|_| ())?, e.parse().map_err(|_| ())?);
            (s, e.min(len.saturating_sub(1)))
        }
    };
    if len == 0 || start >= len || start > end {
        return Err(());
    }
    Ok(Some((start, end - start + 1)))
}

/// A media file (immutable): 304 for a matching ETag, 206 for a range, 416 for a range
/// that cannot be satisfied.
pub(crate) async fn media_response(
    headers: &HeaderMap,
    etag: &str,
    kind: &'static str,
    len: u64,
    read: impl FnOnce(u64, u64) -> std::io::Result<Bytes> + Send + 'static,
) -> Response {
    let mut r = if not_modified(headers, etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        match range(headers, len, etag) {
            Err(()) => {
                let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return r;
            }
            Ok(Some((start, n))) => match blocking(move || read(start, n)).await {
                Ok(data) => {
                    let mut r = (StatusCode::PARTIAL_CONTENT, data).into_response();
                    if let Ok(v) =
                        HeaderValue::from_str(&format!("bytes {start}-{}/{len}", start + n - 1))
                    {
                        r.headers_mut().insert(header::CONTENT_RANGE, v);
                    }
                    r
                }
                Err(e) => return e.into_response(),
            },
            Ok(None) => match blocking(move || read(0, len)).await {
                Ok(data) => (StatusCode::OK, data).into_response(),
                Err(e) => return e.into_response(),
            },
        }
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_range(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn ranges() {
        let e = "\"x\"";
        assert_eq!(range(&HeaderMap::new(), 100, e), Ok(None));
        assert_eq!(range(&with_range("bytes=0-9"), 100, e), Ok(Some((0, 10))));
        assert_eq!(range(&with_range("bytes=90-"), 100, e), Ok(Some((90, 10))));
        assert_eq!(range(&with_range("bytes=-5"), 100, e), Ok(Some((95, 5))));
        assert_eq!(
            range(&with_range("bytes=50-500"), 100, e),
            Ok(Some((50, 50)))
        );
        assert_eq!(range(&with_range("bytes=0-1,5-6"), 100, e), Ok(None));
        assert_eq!(range(&with_range("bytes=100-"), 100, e), Err(()));
        assert_eq!(range(&with_range("bytes=9-3"), 100, e), Err(()));
        assert_eq!(range(&with_range("bytes=-0"), 100, e), Err(()));
        assert_eq!(range(&with_range("bytes=x-3"), 100, e), Err(()));
        let mut h = with_range("bytes=0-9");
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"other\""));
        assert_eq!(range(&h, 100, e), Ok(None));
    }

    #[test]
    fn file_names() {
        assert_eq!(parse_file("index.m3u8"), Some(File::Playlist));
        assert_eq!(parse_file("init-2.mp4"), Some(File::Init(2)));
        assert_eq!(parse_file("seg-17.m4s"), Some(File::Segment(17)));
        for bad in [
            "seg-x.m4s",
            "../recording.json",
            "init-1.m4s",
            "media.m4s",
            "index.txt",
        ] {
            assert_eq!(parse_file(bad), None, "{bad}");
        }
    }
}
