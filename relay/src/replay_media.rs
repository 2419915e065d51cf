//! A replay's MP4 download and its poster.
//!
//! `GET /replay/ID/download.mp4?lang=TAG` (the video and one dialect) or `?lang=all` (every
//! dialect as a labelled audio track, the default): an ordinary progressive MP4 remuxed on
//! the fly from the recording's CMAF parts ([`recorder::mp4`]), streamed from disk with a
//! `Content-Length`, byte ranges (players seek in it), an ETag and immutable caching, and a
//! file name. The file's layout (its `moov`) is computed once per recording and dialect
//! choice and kept in a small cache, so the range requests of a seeking player cost only
//! the reads.
//!
//! `GET /replay/ID/poster.jpg`: the recording's poster ([`recorder::poster`]).

use std::sync::{Arc, Mutex, Weak};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use recorder::Recording;
use recorder::mp4::{Dialects, Download, Mp4Error};
use serde::Deserialize;
use serde_json::Value;

use crate::http::{ApiError, AppState};
use crate::replay::{blocking, media_response, not_modified, range, recording};

/// Bytes read from disk per step of a download's body.
const READ_STEP: u64 = 256 << 10;
/// Layouts kept: at most this many...
const CACHE_ENTRIES: usize = 16;
/// ...and this many bytes of `moov` (a two-hour lecture's is a few MiB).
const CACHE_BYTES: u64 = 96 << 20;

/// The download and poster routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/replay/{id}/download.mp4", get(download))
        .route("/replay/{id}/poster.jpg", get(poster))
}

/// Adds the `mp4` and `poster` links to a recording's API view (and `mp4` to each dialect).
pub fn add_links(rec: &Recording, view: &mut Value) {
    let live = rec.is_live();
    let id = &rec.id;
    let base = format!("/replay/{id}/download.mp4");
    if let Some(o) = view.as_object_mut() {
        let has_media = o
            .get("duration_s")
            .and_then(Value::as_f64)
            .is_some_and(|d| d > 0.0);
        o.insert(
            "mp4".into(),
            if live || !has_media {
                Value::Null
            } else {
                Value::String(base.clone())
            },
        );
        o.insert(
            "poster".into(),
            if recorder::poster::exists(rec) {
                Value::String(format!("/replay/{id}/poster.jpg"))
            } else {
                Value::Null
            },
        );
        if let Some(ds) = o.get_mut("dialects").and_then(Value::as_array_mut) {
            for d in ds {
                let url = match d.get("lang").and_then(Value::as_str) {
                    Some(lang) if !live && has_media => {
                        Value::String(format!("{base}?lang={lang}"))
                    }
                    _ => Value::Null,
                };
                if let Some(d) = d.as_object_mut() {
                    d.insert("mp4".into(), url);
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct DownloadQuery {
    lang: Option<String>,
}

/// One layout being computed or computed: concurrent first requests wait for one build.
type Slot = Arc<tokio::sync::OnceCell<Arc<Download>>>;

struct Entry {
    rec: Weak<Recording>,
    dialects: Dialects,
    slot: Slot,
}

/// Layouts of recent downloads, least recently used first.
static CACHE: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

fn slot(rec: &Arc<Recording>, dialects: &Dialects) -> Slot {
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache.retain(|e| e.rec.strong_count() > 0);
    if let Some(i) = cache
        .iter()
        .position(|e| e.rec.as_ptr() == Arc::as_ptr(rec) && e.dialects == *dialects)
    {
        let e = cache.remove(i);
        let slot = e.slot.clone();
        cache.push(e);
        return slot;
    }
    let slot = Slot::default();
    cache.push(Entry {
        rec: Arc::downgrade(rec),
        dialects: dialects.clone(),
        slot: slot.clone(),
    });
    // Oldest out first, beyond the count or the bytes.
    let mut bytes: u64 = cache
        .iter()
        .filter_map(|e| e.slot.get())
        .map(|d| d.head_len())
        .sum();
    while cache.len() > CACHE_ENTRIES || (bytes > CACHE_BYTES && cache.len() > 1) {
        let e = cache.remove(0);
        bytes -= e.slot.get().map_or(0, |d| d.head_len());
    }
    slot
}

fn forget(rec: &Arc<Recording>, dialects: &Dialects) {
    CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|e| !(e.rec.as_ptr() == Arc::as_ptr(rec) && e.dialects == *dialects));
}

fn mp4_error(e: Mp4Error) -> ApiError {
    match e {
        Mp4Error::Live => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        Mp4Error::NoDialect(_) | Mp4Error::Empty => ApiError::not_found(e.to_string()),
        Mp4Error::Damaged(_) => {
            tracing::error!("MP4 download: {e}");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
        Mp4Error::Io(ref io) if io.kind() == std::io::ErrorKind::NotFound => {
            ApiError::not_found("gone from the disk")
        }
        Mp4Error::Io(_) => {
            tracing::warn!("MP4 download: {e}");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "reading the recording failed",
            )
        }
    }
}

async fn layout(
    s: &AppState,
    rec: &Arc<Recording>,
    dialects: &Dialects,
) -> Result<Arc<Download>, ApiError> {
    let slot = slot(rec, dialects);
    let (hub, rec2, d2) = (s.hub.clone(), rec.clone(), dialects.clone());
    let r = slot
        .get_or_try_init(|| async move {
            tokio::task::spawn_blocking(move || {
                Download::build(&rec2, &d2, |tag| hub.config().dialect_rank(tag)).map(Arc::new)
            })
            .await
            .map_err(|_| Mp4Error::Damaged("building the MP4 layout failed".into()))?
        })
        .await
        .cloned();
    match r {
        Ok(d) => Ok(d),
        Err(e) => {
            forget(rec, dialects);
            Err(mp4_error(e))
        }
    }
}

/// Characters that stay as they are in an RFC 8187 `filename*` value.
fn attr_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b)
}

/// `Content-Disposition` for the download: an ASCII `filename` from the lecture's name, the
/// date and the dialect, and a UTF-8 `filename*` with its title and the dialect's name.
fn disposition(rec: &Recording, dialects: &Dialects) -> String {
    let meta = rec.meta();
    let date = meta
        .started
        .to_zoned_datetime(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d")
        .to_string();
    let (tag, name) = match dialects {
        Dialects::All => ("all".to_string(), None),
        Dialects::One(t) => (
            t.clone(),
            meta.renditions
                .iter()
                .find(|r| r.language.as_deref() == Some(t.as_str()))
                .map(|r| r.name.clone())
                .filter(|n| !n.is_empty()),
        ),
    };
    // The lecture's name is [A-Za-z0-9._-] and the tag a checked BCP-47 tag.
    let ascii = format!("{}-{date}-{tag}.mp4", meta.lecture);
    let mut pretty = meta.title.clone().unwrap_or_else(|| meta.lecture.clone());
    pretty.push(' ');
    pretty.push_str(&date);
    if let Some(n) = name {
        pretty.push(' ');
        pretty.push_str(&n);
    }
    pretty.push_str(".mp4");
    format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        rfc8187(&pretty)
    )
}

/// Percent-encodes `s` for an RFC 8187 extended parameter value.
fn rfc8187(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if attr_char(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /replay/ID/download.mp4[?lang=TAG|all]`
async fn download(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rec = recording(&s, &id)?;
    let dialects = match q.lang.as_deref() {
        None | Some("all") => Dialects::All,
        Some(tag) => Dialects::One(
            media::Language::parse(tag)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?
                .as_str()
                .to_string(),
        ),
    };
    if rec.is_live() {
        return Err(mp4_error(Mp4Error::Live));
    }
    let dl = layout(&s, &rec, &dialects).await?;
    let tag = match &dialects {
        Dialects::All => "all",
        Dialects::One(t) => t.as_str(),
    };
    let etag = format!("\"{id}/mp4-{tag}-{}\"", dl.len);
    let len = dl.len;
    let mut r = if not_modified(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        match range(&headers, len, &etag) {
            Err(()) => {
                let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return Ok(r);
            }
            Ok(Some((start, n))) => {
                let mut r =
                    (StatusCode::PARTIAL_CONTENT, body(dl, start, n).await?).into_response();
                if let Ok(v) =
                    HeaderValue::from_str(&format!("bytes {start}-{}/{len}", start + n - 1))
                {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
                r
            }
            Ok(None) => {
                let mut r = (StatusCode::OK, body(dl.clone(), 0, len).await?).into_response();
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                r
            }
        }
    };
    let kind = if rec.meta().renditions.iter().any(|r| r.is_video()) {
        "video/mp4"
    } else {
        "audio/mp4"
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&disposition(&rec, &dialects)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

/// Bytes `[start, start + n)` of the download, read from disk a step at a time as the
/// client takes them. The first step is read before answering, so the headers and the
/// first bytes leave together (and a small range is one write).
async fn body(dl: Arc<Download>, start: u64, n: u64) -> Result<Body, ApiError> {
    let end = start + n;
    let first = (n).min(READ_STEP);
    let d2 = dl.clone();
    let head = blocking(move || d2.read(start, first)).await?;
    if head.len() as u64 != first {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the recording changed under a download",
        ));
    }
    if first == n {
        return Ok(Body::from(head));
    }
    let rest = futures_util::stream::try_unfold(start + first, move |pos| {
        let dl = dl.clone();
        async move {
            if pos >= end {
                return Ok(None);
            }
            let step = (end - pos).min(READ_STEP);
            let data = tokio::task::spawn_blocking(move || dl.read(pos, step))
                .await
                .map_err(std::io::Error::other)??;
            if data.len() as u64 != step {
                return Err(std::io::Error::other(
                    "the recording changed under a download",
                ));
            }
            Ok::<_, std::io::Error>(Some((Bytes::from(data), pos + step)))
        }
    });
    let head =
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) });
    Ok(Body::from_stream(futures_util::StreamExt::chain(
        head, rest,
    )))
}

/// `GET /replay/ID/poster.jpg`
async fn poster(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rec = recording(&s, &id)?;
    if !rec.meta().renditions.iter().any(|r| r.is_video()) {
        return Err(ApiError::not_found(
            "this recording has no picture, so no poster",
        ));
    }
    let path = recorder::poster::path(&rec);
    let data = blocking(move || match std::fs::read(&path) {
        Ok(d) => Ok(Some(Bytes::from(d))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    })
    .await?
    .ok_or_else(|| ApiError::not_found("the poster is not made yet"))?;
    // Made once, never changed: its length names it well enough.
    let etag = format!("\"{id}/poster-{}\"", data.len());
    let len = data.len() as u64;
    Ok(
        media_response(&headers, &etag, "image/jpeg", len, move |o, l| {
            Ok(data.slice(o as usize..(o + l) as usize))
        })
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filename_star_keeps_only_attr_chars() {
        assert_eq!(rfc8187("农 a-b.mp4"), "%E5%86%9C%20a-b.mp4");
        assert_eq!(rfc8187("a\"b;c"), "a%22b%3Bc");
    }
}
