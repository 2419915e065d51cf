//! Who may publish and watch, as the relay asks it: the admissions the binary chains
//! (`media::admission::chain`) and the HTTP guard that puts playback tokens in front of
//! every HLS resource, replay and WHEP offer.
//!
//! The chain the binary builds is, in order: the configuration's demo lecture, the
//! catalogue, the file's `[[lecture]]` entries, and [`Unconfigured`] (the
//! `lectures.allow_unconfigured` rule, off by default). The first admission that knows a
//! name decides; a name nobody knows may not be published and may be watched (there is
//! nothing private about it).
//!
//! Playback tokens come as `?token=` (HLS players keep it because the guard appends it to
//! every URI of the playlists it answers) or as `Authorization: Bearer` (WHEP). They are
//! never logged: the relay logs no request URIs, and refusals name only the lecture and
//! the reason.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use media::admission::{Admission, Refusal, Verdict};
use serde_json::json;
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use crate::hub::Hub;

/// Lectures listed in the configuration file (`[[lecture]]`, and the demo): their publish
/// key, if they give one. A listed lecture without a key is open to any publisher, as the
/// file says; watching them needs no token (visibility needs the catalogue's tokens).
#[derive(Debug, Default)]
pub struct FileLectures {
    keys: HashMap<String, Option<String>>,
}

impl FileLectures {
    /// The given lectures.
    pub fn new<'a>(lectures: impl IntoIterator<Item = &'a config::LectureConfig>) -> Self {
        FileLectures {
            keys: lectures
                .into_iter()
                .map(|l| (l.name.clone(), l.publish_key.clone()))
                .collect(),
        }
    }
}

impl Admission for FileLectures {
    fn may_publish(&self, stream: &str, key: Option<&str>) -> Verdict {
        match self.keys.get(stream) {
            None => Verdict::NotMine,
            Some(None) => Verdict::Allow,
            Some(Some(expected)) => {
                let given = key.unwrap_or("");
                if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
                    Verdict::Allow
                } else {
                    Verdict::Deny(Refusal::BadKey)
                }
            }
        }
    }

    fn may_watch(&self, stream: &str, _token: Option<&str>) -> Verdict {
        if self.keys.contains_key(stream) {
            Verdict::Allow
        } else {
            Verdict::NotMine
        }
    }
}

/// The last word on names nobody else knows: publishing them only when
/// `lectures.allow_unconfigured` says so; watching them always.
#[derive(Debug, Clone, Copy)]
pub struct Unconfigured(pub bool);

impl Admission for Unconfigured {
    fn may_publish(&self, _stream: &str, _key: Option<&str>) -> Verdict {
        if self.0 {
            Verdict::Allow
        } else {
            Verdict::Deny(Refusal::UnknownStream)
        }
    }

    fn may_watch(&self, _stream: &str, _token: Option<&str>) -> Verdict {
        Verdict::Allow
    }
}

/// Relays chained to this one (`[edge]`): this edge's own pull from its origin may publish
/// any lecture here (the origin decided who may publish it) with the pull's key — a random
/// value the binary hands the pull at start, never the configured `edge.key`, which the
/// origins know — and edges presenting one of `edge.accept_keys` as their bearer token may
/// watch every public lecture (the guard refuses them lectures that need a playback token:
/// an edge cannot check its own viewers' tokens).
#[derive(Debug, Default)]
pub struct EdgeKeys {
    own: Option<String>,
    accepted: Vec<String>,
}

impl EdgeKeys {
    /// The keys of `config.edge`, and the key of this edge's own pull (`pull`, when it is
    /// an edge).
    pub fn new(config: &config::EdgeConfig, pull: Option<String>) -> Self {
        EdgeKeys {
            own: pull.filter(|_| config.is_edge()),
            accepted: config.accept_keys.clone(),
        }
    }
}

fn same(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Admission for EdgeKeys {
    fn may_publish(&self, _stream: &str, key: Option<&str>) -> Verdict {
        match (&self.own, key) {
            (Some(own), Some(key)) if same(own, key) => Verdict::Allow,
            _ => Verdict::NotMine,
        }
    }

    fn may_watch(&self, _stream: &str, token: Option<&str>) -> Verdict {
        match token {
            Some(t) if self.accepted.iter().any(|k| same(k, t)) => Verdict::Allow,
            _ => Verdict::NotMine,
        }
    }
}

/// The admissions the hub asks, in order.
pub type Chain = Vec<Arc<dyn Admission>>;

/// The chain a hub uses until the binary sets its own: the file's lectures, then the
/// `allow_unconfigured` rule.
pub fn from_config(config: &config::Config) -> Chain {
    vec![
        Arc::new(EdgeKeys::new(&config.edge, None)),
        Arc::new(FileLectures::new(&config.lecture)),
        Arc::new(Unconfigured(config.lectures.allow_unconfigured)),
    ]
}

/// Asks `chain` whether `stream` may be published with `key`; nobody knowing it is a
/// refusal.
pub fn may_publish(chain: &[Arc<dyn Admission>], stream: &str, key: Option<&str>) -> Verdict {
    let list: Vec<&dyn Admission> = chain.iter().map(|a| a.as_ref()).collect();
    match media::admission::chain(&list, |a| a.may_publish(stream, key)) {
        Verdict::NotMine => Verdict::Deny(Refusal::UnknownStream),
        v => v,
    }
}

/// Asks `chain` whether `stream` may be watched with `token`; nobody knowing it lets it
/// be watched.
pub fn may_watch(chain: &[Arc<dyn Admission>], stream: &str, token: Option<&str>) -> Verdict {
    let list: Vec<&dyn Admission> = chain.iter().map(|a| a.as_ref()).collect();
    match media::admission::chain(&list, |a| a.may_watch(stream, token)) {
        Verdict::NotMine => Verdict::Allow,
        v => v,
    }
}

/// A stable word for each refusal, for players to choose their message by.
pub fn refusal_code(r: Refusal) -> &'static str {
    match r {
        Refusal::UnknownStream => "unknown_stream",
        Refusal::BadKey => "bad_key",
        Refusal::TokenMissing => "token_missing",
        Refusal::TokenInvalid => "token_invalid",
        Refusal::TokenOtherLecture => "token_other_lecture",
        Refusal::TokenExpired => "token_expired",
    }
}

/// The answer to a viewer refused: 401 when no token was given, 403 when the one given
/// does not do; a JSON body with the reason in words and as a code.
pub fn refused(r: Refusal) -> Response {
    let status = match r {
        Refusal::TokenMissing => StatusCode::UNAUTHORIZED,
        _ => StatusCode::FORBIDDEN,
    };
    let mut resp = (
        status,
        axum::Json(json!({ "error": r.reason(), "reason": refusal_code(r) })),
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"playback\""),
        );
    }
    resp
}

/// What a request path asks to watch.
#[derive(Debug, PartialEq, Eq)]
enum Watched<'a> {
    /// `/hls/STREAM/...` and `POST /whep/STREAM`.
    Stream(&'a str),
    /// `/replay/ID/...`: a recording, whose lecture decides.
    Recording(&'a str),
}

fn watched<'a>(method: &Method, path: &'a str) -> Option<Watched<'a>> {
    let mut parts = path.strip_prefix('/')?.split('/');
    let first = parts.next()?;
    let second = parts.next()?;
    let rest = parts.count();
    match first {
        "hls" if rest >= 1 => Some(Watched::Stream(second)),
        "replay" if rest >= 1 => Some(Watched::Recording(second)),
        // The session resources below it are reached by their unguessable id.
        "whep" if rest == 0 && method == Method::POST => Some(Watched::Stream(second)),
        _ => None,
    }
}

/// The answer to an edge refused: 403, the reason in words and as a code (the edge logs
/// which setting to look at), never cached.
fn edge_refused(error: &str, reason: &str) -> Response {
    let mut resp = (
        StatusCode::FORBIDDEN,
        axum::Json(json!({ "error": error, "reason": reason })),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The header an edge relay names itself with when it pulls (`ingest::edge`): its requests
/// must carry one of `edge.accept_keys` as their bearer token.
pub const EDGE_HEADER: &str = "x-jiangtang-edge";
/// The header an edge reports its viewers and link with ([`crate::roster::EdgeReport`]).
pub const EDGE_REPORT_HEADER: &str = "x-jiangtang-edge-report";

/// The playback token of a request: `token=` in the query, else a bearer token.
fn token_of(req: &Request) -> Option<String> {
    let from_query = req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| v.to_string())
    });
    from_query.or_else(|| {
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string())
    })
}

/// Whether a token may go into playlist URIs as it is: tokens are `STREAM.EXPIRES.MAC`,
/// made of stream-name characters.
fn plain(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 512
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Most bytes of a playlist the guard rewrites (a long replay's VOD playlist is far below).
const MAX_PLAYLIST: usize = 32 << 20;

/// The guard in front of HLS, replays and WHEP offers ([`GuardLayer`]): asks the hub's
/// admission chain with the request's token, answers 401/403 itself when refused, and for
/// lectures that need a token carries it on: every URI in the playlists it passes gets
/// `token=`, and their caching becomes `private`.
///
/// A tower layer rather than `axum::middleware::from_fn` (a boxed future and a cloned inner
/// service on every request): a request it lets through unchanged, as every public
/// lecture's HLS, costs a path parse and one look at the admission chain.
#[derive(Clone)]
pub struct GuardLayer(pub Arc<Hub>);

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            hub: self.0.clone(),
            inner,
        }
    }
}

/// The service [`GuardLayer`] makes.
#[derive(Clone)]
pub struct Guard<S> {
    hub: Arc<Hub>,
    inner: S,
}

/// What the guard does with a request.
enum Decision {
    /// Not a lecture's media, or a lecture anyone may watch: as it is.
    Pass,
    /// Refused, with the answer.
    Refuse(Response),
    /// A lecture that needs a token, and this request's: the answer is made private and
    /// its playlist URIs carry the token.
    Protect(Option<String>),
}

fn decide(hub: &Hub, req: &Request) -> Decision {
    let Some(what) = watched(req.method(), req.uri().path()) else {
        return Decision::Pass;
    };
    let recording_lecture;
    let stream = match what {
        Watched::Stream(s) => s,
        Watched::Recording(id) => {
            match hub
                .recordings()
                .and_then(|lib| lib.get(id))
                .map(|r| r.contents().meta.lecture.clone())
            {
                Some(lecture) => {
                    recording_lecture = lecture;
                    recording_lecture.as_str()
                }
                // No such recording: the handler says so.
                None => return Decision::Pass,
            }
        }
    };
    let token = token_of(req);
    if let Some(edge) = req.headers().get(EDGE_HEADER) {
        // An edge relay pulling: its key, not a viewer's token, decides.
        let accepted = token
            .as_deref()
            .is_some_and(|t| hub.config().edge.accept_keys.iter().any(|k| same(k, t)));
        if accepted && hub.may_watch(stream, None) != Verdict::Allow {
            // A lecture that needs a playback token: the edge could not check its viewers'.
            info!(lecture = %stream, "edge refused: the lecture needs a playback token");
            return Decision::Refuse(edge_refused(
                "this lecture needs a playback token: edges do not carry it",
                "protected",
            ));
        }
        if accepted {
            let code = edge.to_str().ok().filter(|c| crate::roster::valid_code(c));
            if let Some(code) = code {
                let report = req
                    .headers()
                    .get(EDGE_REPORT_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(crate::roster::EdgeReport::parse)
                    .unwrap_or_default();
                hub.roster.edge_seen(stream, code, report);
            }
            return Decision::Pass;
        }
        let name: String = String::from_utf8_lossy(edge.as_bytes())
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
        // At most one line every 10 s: anybody can send the header.
        static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = LAST.load(std::sync::atomic::Ordering::Relaxed);
        if now >= last + 10
            && LAST
                .compare_exchange(
                    last,
                    now,
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                )
                .is_ok()
        {
            warn!(lecture = %stream, edge = %name, "edge refused: its key is not in edge.accept_keys");
        }
        return Decision::Refuse(edge_refused(
            "this relay does not accept that edge key (edge.accept_keys)",
            "bad_edge_key",
        ));
    }
    let verdict = hub.may_watch(stream, token.as_deref());
    if let Verdict::Deny(r) = verdict {
        // The lecture and the reason; never the token, nor the URI that carries it.
        info!(lecture = %stream, reason = r.reason(), "playback refused");
        return Decision::Refuse(refused(r));
    }
    // Whether the lecture needs a token at all (asked again only when one was given).
    let protected = match token {
        None => verdict != Verdict::Allow,
        Some(_) => hub.may_watch(stream, None) != Verdict::Allow,
    };
    if protected {
        Decision::Protect(token.filter(|t| plain(t)))
    } else {
        Decision::Pass
    }
}

impl<S> tower::Service<Request> for Guard<S>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Either<
        S::Future,
        futures_util::future::BoxFuture<'static, Result<Response, std::convert::Infallible>>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        use futures_util::future::Either;
        match decide(&self.hub, &req) {
            Decision::Pass => Either::Left(self.inner.call(req)),
            Decision::Refuse(r) => Either::Right(Box::pin(std::future::ready(Ok(r)))),
            Decision::Protect(token) => {
                let answer = self.inner.call(req);
                Either::Right(Box::pin(async move {
                    let Ok(response) = answer.await;
                    Ok(carry_token(response, token.as_deref()).await)
                }))
            }
        }
    }
}

/// Makes an answer for a token holder: private caching, and the token on every URI of a
/// playlist.
async fn carry_token(mut response: Response, token: Option<&str>) -> Response {
    let h = response.headers_mut();
    if let Some(cc) = h.get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()) {
        let private = cc.replace("public", "private");
        if let Ok(v) = HeaderValue::from_str(&private) {
            h.insert(header::CACHE_CONTROL, v);
        }
    }
    let is_playlist = h
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/vnd.apple.mpegurl"));
    let Some(token) = token.filter(|_| is_playlist && response.status() == StatusCode::OK) else {
        return response;
    };
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_PLAYLIST).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let text = String::from_utf8_lossy(&bytes);
    let out = with_token(&text, token);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(out))
}

fn append(uri: &str, token: &str) -> String {
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}token={token}")
}

/// `playlist` with `token=` on every URI: the lines that are URIs and every `URI="..."`
/// attribute (media renditions, maps, parts, preload hints, rendition reports).
pub fn with_token(playlist: &str, token: &str) -> String {
    let mut out = String::with_capacity(playlist.len() + 64);
    for line in playlist.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(b) => match b.strip_suffix('\r') {
                Some(b2) => (b2, "\r\n"),
                None => (b, "\n"),
            },
            None => (line, ""),
        };
        if body.is_empty() {
        } else if body.starts_with('#') {
            let mut rest = body;
            while let Some(at) = rest.find("URI=\"") {
                let start = at + 5;
                out.push_str(&rest[..start]);
                let Some(len) = rest[start..].find('"') else {
                    rest = &rest[start..];
                    break;
                };
                out.push_str(&append(&rest[start..start + len], token));
                rest = &rest[start + len..];
            }
            out.push_str(rest);
        } else {
            out.push_str(&append(body, token));
        }
        out.push_str(end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_keys_let_the_own_pull_publish_and_known_edges_watch() {
        let cfg: config::EdgeConfig = config::Config::from_toml_str_with_env(
            "[edge]\norigins = [\"http://o:1\"]\nkey = \"own-key-0123456789\"\naccept_keys = [\"their-key-0123456789\"]\n",
            std::iter::empty(),
        )
        .unwrap()
        .edge;
        let e = EdgeKeys::new(&cfg, Some("pull-0123456789abcdef".into()));
        assert_eq!(
            e.may_publish("x", Some("pull-0123456789abcdef")),
            Verdict::Allow
        );
        // The configured key (the origins know it) publishes nothing here.
        assert_eq!(
            e.may_publish("x", Some("own-key-0123456789")),
            Verdict::NotMine
        );
        assert_eq!(e.may_publish("x", None), Verdict::NotMine);
        assert_eq!(
            e.may_watch("x", Some("their-key-0123456789")),
            Verdict::Allow
        );
        assert_eq!(
            e.may_watch("x", Some("own-key-0123456789")),
            Verdict::NotMine
        );
        // Not an edge: no pull key.
        let mut not_edge = cfg.clone();
        not_edge.origins.clear();
        let e = EdgeKeys::new(&not_edge, Some("pull-0123456789abcdef".into()));
        assert_eq!(
            e.may_publish("x", Some("pull-0123456789abcdef")),
            Verdict::NotMine
        );
    }

    #[test]
    fn paths_that_are_guarded() {
        let get = Method::GET;
        assert_eq!(
            watched(&get, "/hls/xihe/index.m3u8"),
            Some(Watched::Stream("xihe"))
        );
        assert_eq!(
            watched(&get, "/hls/xihe/video/part-k-1-2.m4s"),
            Some(Watched::Stream("xihe"))
        );
        assert_eq!(
            watched(&get, "/replay/r1/audio-yue/seg-3.m4s"),
            Some(Watched::Recording("r1"))
        );
        assert_eq!(
            watched(&Method::POST, "/whep/xihe"),
            Some(Watched::Stream("xihe"))
        );
        assert_eq!(watched(&Method::PATCH, "/whep/xihe/abc"), None);
        assert_eq!(watched(&Method::POST, "/whip/xihe"), None);
        assert_eq!(watched(&get, "/api/v1/streams/xihe"), None);
        assert_eq!(watched(&get, "/hls/xihe"), None);
    }

    #[test]
    fn every_uri_gets_the_token() {
        let p = "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",URI=\"audio-cmn/index.m3u8\"\n\
                 #EXT-X-STREAM-INF:BANDWIDTH=1\nvideo/index.m3u8\n\
                 #EXT-X-MAP:URI=\"init-k-1.mp4\"\n\
                 #EXT-X-PART:DURATION=0.4,URI=\"part-k-1-0.m4s\",INDEPENDENT=YES\n\
                 #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-k-1-1.m4s\"\n\
                 #EXT-X-RENDITION-REPORT:URI=\"../audio-cmn/index.m3u8?x=1\",LAST-MSN=1\n\
                 seg-k-1.m4s\r\n";
        let out = with_token(p, "s.1.ab");
        assert!(out.contains("URI=\"audio-cmn/index.m3u8?token=s.1.ab\""));
        assert!(out.contains("\nvideo/index.m3u8?token=s.1.ab\n"));
        assert!(out.contains("URI=\"init-k-1.mp4?token=s.1.ab\""));
        assert!(out.contains("URI=\"part-k-1-0.m4s?token=s.1.ab\",INDEPENDENT=YES"));
        assert!(out.contains("URI=\"part-k-1-1.m4s?token=s.1.ab\""));
        assert!(out.contains("URI=\"../audio-cmn/index.m3u8?x=1&token=s.1.ab\",LAST-MSN=1"));
        assert!(out.ends_with("seg-k-1.m4s?token=s.1.ab\r\n"));
        assert!(out.starts_with("#EXTM3U\n#EXT-X-MEDIA"));
    }

    #[test]
    fn file_lectures_and_the_unconfigured_rule() {
        let cfg = config::Config::from_toml_str_with_env(
            "[[lecture]]\nname = \"keyed\"\npublish_key = \"hall-key-123\"\n[[lecture]]\nname = \"open\"\n",
            std::iter::empty(),
        )
        .unwrap();
        let mut chain = from_config(&cfg);
        assert_eq!(
            may_publish(&chain, "keyed", Some("hall-key-123")),
            Verdict::Allow
        );
        assert_eq!(
            may_publish(&chain, "keyed", Some("hall-key-12")),
            Verdict::Deny(Refusal::BadKey)
        );
        assert_eq!(may_publish(&chain, "open", None), Verdict::Allow);
        chain[1] = Arc::new(Unconfigured(false));
        assert_eq!(
            may_publish(&chain, "other", None),
            Verdict::Deny(Refusal::UnknownStream)
        );
        assert_eq!(may_watch(&chain, "other", None), Verdict::Allow);
        assert!(plain("xihe.2.1700000000.00ff") && !plain("a b") && !plain(""));
    }
}
