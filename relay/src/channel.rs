//! The live channel of a lecture: `GET /ws/NAME` upgrades to a WebSocket on which the relay
//! pushes the lecture's state (scheduled, live, reconnecting, ended; title; dialects) as it
//! changes and viewer counts every few seconds, and a classroom can send a text question or
//! raise its hand. The lecture's operator reads those at `GET /api/v1/streams/NAME/questions`.
//!
//! Everything a client sends is bounded: 4 KiB per message, a token bucket of messages,
//! 500 characters per question, 64 per sender name, control characters removed. Messages are
//! stored as plain text and never rendered as HTML by anything we ship.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::ws::{Message, WebSocket};
use axum::extract::{Path, State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{debug, info};

use crate::http::{ApiError, AppState};
use crate::hub::{Hub, Status};

/// Largest message a client may send.
pub const MAX_MESSAGE: usize = 4 * 1024;
/// Longest question.
pub const MAX_QUESTION_CHARS: usize = 500;
/// Longest sender name.
pub const MAX_FROM_CHARS: usize = 64;
/// Questions kept per lecture.
pub const MAX_KEPT: usize = 1000;
/// Live-channel connections the relay accepts.
pub const MAX_CONNECTIONS: usize = 20_000;
/// How often viewer counts are pushed.
const VIEWERS_EVERY: Duration = Duration::from_secs(5);

/// A question or a raised hand.
#[derive(Debug, Clone, Serialize)]
pub struct Question {
    /// Increasing id.
    pub id: u64,
    /// When it arrived (RFC 3339).
    pub at: String,
    /// `question` or `hand`.
    pub kind: &'static str,
    /// Who sent it (a classroom's name), as given.
    pub from: Option<String>,
    /// The question text (none for a raised hand).
    pub text: Option<String>,
}

/// Questions by lecture, and live-channel connection counts.
#[derive(Debug, Default)]
pub struct Questions {
    by_lecture: Mutex<HashMap<String, VecDeque<Question>>>,
    next: AtomicU64,
    connections: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
}

impl Questions {
    fn add(
        &self,
        lecture: &str,
        kind: &'static str,
        from: Option<String>,
        text: Option<String>,
    ) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let q = Question {
            id,
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            kind,
            from,
            text,
        };
        let mut map = self.by_lecture.lock().unwrap_or_else(|e| e.into_inner());
        let list = map.entry(lecture.to_string()).or_default();
        if list.len() >= MAX_KEPT {
            list.pop_front();
        }
        list.push_back(q);
        id
    }

    /// The questions of a lecture, oldest first.
    pub fn list(&self, lecture: &str) -> Vec<Question> {
        self.by_lecture
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(lecture)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Open live-channel connections of a lecture.
    pub fn connections(&self, lecture: &str) -> usize {
        *self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(lecture)
            .unwrap_or(&0)
    }

    fn join(&self, lecture: &str) -> bool {
        if self.total.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        *self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(lecture.to_string())
            .or_default() += 1;
        true
    }

    fn leave(&self, lecture: &str) {
        self.total.fetch_sub(1, Ordering::Relaxed);
        let mut map = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(lecture) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(lecture);
            }
        }
    }
}

/// The public state of a lecture, whether or not it is live: what players show.
pub fn state(hub: &Hub, name: &str) -> Option<Value> {
    let configured = hub.config().lecture(name);
    let live = hub.lecture(name);
    let title = live
        .as_ref()
        .and_then(|l| l.title.clone())
        .or_else(|| configured.and_then(|c| c.title.clone()));
    let starts_at = configured.and_then(|c| c.starts_at).map(|t| t.to_string());
    let status = match live.as_ref().map(|l| l.status()) {
        // Published, but nothing playable yet: players wait instead of guessing the tracks.
        Some(Status::Live) if !live.as_ref().is_some_and(|l| l.has_media()) => "starting",
        Some(Status::Live) => "live",
        Some(Status::Reconnecting { .. }) => "reconnecting",
        Some(Status::Ended { .. }) => "ended",
        None => {
            if configured.is_none() && !hub.config().lectures.allow_unconfigured {
                return None;
            }
            match configured.and_then(|c| c.starts_at) {
                Some(t) if t > jiff::Timestamp::now() => "scheduled",
                _ => "idle",
            }
        }
    };
    let default = live
        .as_ref()
        .map(|l| l.default_language.to_string())
        .or_else(|| configured.and_then(|c| c.language.clone()))
        .unwrap_or_else(|| hub.config().lectures.default_language.clone());
    let mut dialects = live.as_ref().map(|l| l.dialects()).unwrap_or_default();
    // The configured order (普通话, 粤语, 客家话), as in the multivariant playlist.
    dialects.sort_by_key(|(lang, _)| hub.config().dialect_rank(lang));
    let dialects: Vec<Value> = dialects
        .into_iter()
        .map(|(lang, dname)| json!({ "lang": lang, "name": dname, "default": lang == default }))
        .collect();
    Some(json!({
        "type": "state",
        "lecture": name,
        "status": status,
        "title": title,
        "starts_at": starts_at,
        "dialects": dialects,
        "has_video": live.as_ref().is_some_and(|l| l.has_video()),
        "hls": format!("/hls/{name}/index.m3u8"),
        "whep": format!("/whep/{name}"),
    }))
}

/// `GET /ws/NAME`
pub async fn upgrade(
    State(s): State<AppState>,
    Path(name): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    s.hub.note_demand(&name);
    if !media::sink::valid_stream_name(&name) || state(&s.hub, &name).is_none() {
        return ApiError::new(StatusCode::NOT_FOUND, format!("no lecture {name:?}"))
            .into_response();
    }
    let hub = s.hub.clone();
    ws.max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| async move {
            if !hub.questions.join(&name) {
                debug!(lecture = %name, "live channel refused: too many connections");
                return;
            }
            run(hub.clone(), &name, socket).await;
            hub.questions.leave(&name);
        })
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Question { text: String, from: Option<String> },
    Hand { from: Option<String> },
}

/// Plain text: no control characters, trimmed, at most `max` characters.
fn clean(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(max + 1)
        .collect::<String>()
        .trim()
        .to_string()
}

/// A token bucket: `burst` messages, refilled one per `every`.
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    const BURST: f64 = 3.0;
    const EVERY: Duration = Duration::from_secs(2);

    fn take(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.last).as_secs_f64() / Self::EVERY.as_secs_f64();
        self.tokens = (self.tokens + refill).min(Self::BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

async fn send(socket: &mut WebSocket, v: &Value) -> bool {
    socket
        .send(Message::Text(v.to_string().into()))
        .await
        .is_ok()
}

async fn run(hub: Arc<Hub>, name: &str, mut socket: WebSocket) {
    let mut events = hub.subscribe();
    let mut tick = tokio::time::interval(VIEWERS_EVERY);
    let mut bucket = Bucket {
        tokens: Bucket::BURST,
        last: Instant::now(),
    };
    let mut strikes = 0;
    let Some(initial) = state(&hub, name) else {
        return;
    };
    if !send(&mut socket, &initial).await {
        return;
    }
    loop {
        tokio::select! {
            ev = events.recv() => {
                let relevant = match ev {
                    Ok(e) => &*e.lecture == name,
                    // Missed some: re-send the state anyway.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                    Err(_) => return,
                };
                if relevant {
                    let Some(st) = state(&hub, name) else { return };
                    if !send(&mut socket, &st).await {
                        return;
                    }
                }
            }
            _ = tick.tick() => {
                let webrtc: usize = hub
                    .lecture(name)
                    .map(|l| l.webrtc_viewers().values().sum())
                    .unwrap_or(0);
                let v = json!({ "type": "viewers", "webrtc": webrtc, "live_channel": hub.questions.connections(name) });
                if !send(&mut socket, &v).await {
                    return;
                }
            }
            msg = socket.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None => return,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        debug!(lecture = %name, "live channel closed: {e}");
                        return;
                    }
                };
                let reply = if !bucket.take(Instant::now()) {
                    strikes += 1;
                    json!({ "type": "error", "error": "too many messages: wait a little" })
                } else {
                    match serde_json::from_str::<ClientMessage>(&text) {
                        Ok(ClientMessage::Question { text, from }) => {
                            let text = clean(&text, MAX_QUESTION_CHARS);
                            if text.is_empty() {
                                json!({ "type": "error", "error": "empty question" })
                            } else if text.chars().count() > MAX_QUESTION_CHARS {
                                strikes += 1;
                                json!({ "type": "error", "error": format!("questions are at most {MAX_QUESTION_CHARS} characters") })
                            } else {
                                let from = from.map(|f| clean(&f, MAX_FROM_CHARS)).filter(|f| !f.is_empty());
                                let from = from.map(|f| f.chars().take(MAX_FROM_CHARS).collect());
                                let id = hub.questions.add(name, "question", from, Some(text));
                                info!(lecture = %name, id, "question received");
                                json!({ "type": "ack", "id": id })
                            }
                        }
                        Ok(ClientMessage::Hand { from }) => {
                            let from = from
                                .map(|f| clean(&f, MAX_FROM_CHARS).chars().take(MAX_FROM_CHARS).collect::<String>())
                                .filter(|f| !f.is_empty());
                            let id = hub.questions.add(name, "hand", from, None);
                            info!(lecture = %name, id, "hand raised");
                            json!({ "type": "ack", "id": id })
                        }
                        Err(e) => {
                            strikes += 1;
                            json!({ "type": "error", "error": format!("not understood: {e}") })
                        }
                    }
                };
                if !send(&mut socket, &reply).await {
                    return;
                }
                if strikes >= 10 {
                    info!(lecture = %name, "live channel closed: too many bad or too frequent messages");
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            }
        }
    }
}

/// Whether a request may read a lecture's questions: it carries the operator token or the
/// lecture's publish key as a bearer token, or, when neither is configured, comes from this
/// machine.
fn operator_allowed(
    config: &config::Config,
    lecture: &str,
    bearer: Option<&str>,
    peer: Option<std::net::IpAddr>,
) -> bool {
    use subtle::ConstantTimeEq;
    let matches = |secret: &str| {
        !secret.is_empty()
            && bearer.is_some_and(|b| bool::from(b.as_bytes().ct_eq(secret.as_bytes())))
    };
    let key = config
        .lecture(lecture)
        .and_then(|l| l.publish_key.as_deref())
        .unwrap_or("");
    let token = config.http.operator_token.as_str();
    if matches(token) || matches(key) {
        return true;
    }
    token.is_empty() && key.is_empty() && peer.is_some_and(|ip| ip.is_loopback())
}

/// `GET /api/v1/streams/NAME/questions`
pub async fn questions(
    State(s): State<AppState>,
    Path(name): Path<String>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    if state(&s.hub, &name).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no lecture {name:?}"),
        ));
    }
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !operator_allowed(s.hub.config(), &name, bearer, peer.map(|p| p.0.0.ip())) {
        info!(lecture = %name, "questions refused: no valid operator token");
        let mut r = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "reading questions needs the operator token or the lecture's publish key as a bearer token",
        )
        .into_response();
        r.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        return Ok(r);
    }
    Ok(axum::Json(json!({ "questions": s.hub.questions.list(&name) })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cleaned_and_bounded() {
        assert_eq!(clean("  hi\u{0}\u{7}\n there ", 10), "hi there");
        assert_eq!(clean(&"字".repeat(600), 500).chars().count(), 501);
        assert_eq!(
            clean("<script>alert(1)</script>", 100),
            "<script>alert(1)</script>"
        );
    }

    #[test]
    fn bucket_limits_rate() {
        let t = Instant::now();
        let mut b = Bucket {
            tokens: Bucket::BURST,
            last: t,
        };
        assert!(b.take(t) && b.take(t) && b.take(t));
        assert!(!b.take(t));
        assert!(b.take(t + Duration::from_secs(2)));
        assert!(!b.take(t + Duration::from_secs(2)));
    }

    #[test]
    fn operator_needs_a_token_unless_open_and_local() {
        let cfg = |extra: &str| {
            config::Config::from_toml_str_with_env(
                &format!("{extra}\n[[lecture]]\nname = \"k\"\npublish_key = \"hall-key-123\"\n"),
                std::iter::empty(),
            )
            .unwrap()
        };
        let lo = Some(std::net::IpAddr::from([127, 0, 0, 1]));
        let far = Some(std::net::IpAddr::from([192, 0, 2, 7]));
        let open = cfg("");
        assert!(operator_allowed(&open, "free", None, lo));
        assert!(!operator_allowed(&open, "free", None, far));
        assert!(!operator_allowed(&open, "free", None, None));
        assert!(!operator_allowed(&open, "k", None, lo), "keyed lecture");
        assert!(operator_allowed(&open, "k", Some("hall-key-123"), far));
        assert!(!operator_allowed(&open, "k", Some("hall-key-12"), far));
        let tok = cfg("[http]\noperator_token = \"operator-token-0123\"");
        assert!(!operator_allowed(&tok, "free", None, lo));
        assert!(operator_allowed(
            &tok,
            "free",
            Some("operator-token-0123"),
            far
        ));
        assert!(operator_allowed(
            &tok,
            "k",
            Some("operator-token-0123"),
            far
        ));
        assert!(!operator_allowed(&tok, "free", Some(""), far));
    }

    #[test]
    fn questions_are_bounded() {
        let q = Questions::default();
        for i in 0..(MAX_KEPT + 5) {
            q.add("a", "question", None, Some(format!("{i}")));
        }
        let l = q.list("a");
        assert_eq!(l.len(), MAX_KEPT);
        assert_eq!(l[0].text.as_deref(), Some("5"));
    }
}
