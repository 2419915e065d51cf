//! jiangtang's pages, rendered on the server so they work in any browser, WeChat's in-app
//! one included, with a little script where it helps (countdowns, the camera at the door,
//! the live dashboard):
//!
//! - `/`: live now, upcoming by category and town with seats left, replays.
//! - `/lectures/ID`: one occurrence: countdown and booking before, the player during, the
//!   replay after. `/tickets/CODE`: a booking with its QR code.
//! - `/admin/...`: the operator console (login, halls, lectures, series, bookings and
//!   check-ins, the live dashboard, questions, sub-venues asking back, how to stream and key
//!   rotation) and `/admin/checkin/ID`, the door's phone page.
//!
//! Chinese by default, English with `?ui=en`. Nothing from the database or a request
//! reaches the HTML unescaped ([`esc`]); every page carries a strict Content-Security-Policy
//! (scripts and styles from `/assets/` only). The pages read the catalogue directly and
//! learn what is live from the binary through [`Live`].

mod admin;
mod i18n;
mod public;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use catalogue::Catalogue;

pub use i18n::Ui;

/// A recording, as the pages list it.
#[derive(Debug, Clone)]
pub struct Replay {
    /// Recording id (`/replay/ID/index.m3u8`).
    pub id: String,
    /// The stream it was recorded from.
    pub stream: String,
    /// Title at the time.
    pub title: Option<String>,
    /// When it started.
    pub started: jiff::Timestamp,
    /// Length in seconds, when known.
    pub duration_s: Option<f64>,
}

/// What the operator does with a sub-venue asking back (its camera and microphone sent to
/// the main hall): accept a raised hand, broadcast the site to everyone, take it off air,
/// end it. Ids are the relay's ask ids, except `question` (the raised hand's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AskRequest {
    /// Invite the site whose raised hand is `question` to send its camera and microphone.
    Accept {
        /// The raised hand's id in the lecture's questions.
        question: u64,
    },
    /// Put the ask on air: every viewer sees and hears the site (one at a time).
    Broadcast(u64),
    /// Take the ask off air: viewers get the lecture hall again; the main hall still sees it.
    OffAir(u64),
    /// End the ask: the site stops sending.
    End(u64),
}

/// What the pages learn from the relay: what is live, the recordings, the questions.
pub trait Live: Send + Sync + 'static {
    /// Streams with a publisher sending now.
    fn live_streams(&self) -> Vec<String>;
    /// Recordings, newest first.
    fn replays(&self) -> Vec<Replay>;
    /// Questions and raised hands of a stream's live channel (JSON array).
    fn questions(&self, stream: &str) -> serde_json::Value;
    /// The stream's roster of sub-venues (as `GET /api/v1/streams/NAME/sites`).
    fn sites(&self, stream: &str) -> serde_json::Value;
    /// The stream's asks back: `{"asks":[{"id","question","from","state","since","video",
    /// "audio","preview","preview_token"}],"on_air":ID|null}`.
    fn asks(&self, stream: &str) -> serde_json::Value;
    /// Does `action` on the stream's asks; the ask as JSON, or an HTTP status and why not.
    fn ask(&self, stream: &str, action: AskRequest) -> Result<serde_json::Value, (u16, String)>;
}

/// The pages' shared state.
#[derive(Clone)]
pub struct Site {
    catalogue: Catalogue,
    live: Arc<dyn Live>,
    /// The RTMP and SRT ports publishers use (as bound: the configuration may say 0).
    ports: Arc<std::sync::RwLock<(Option<u16>, Option<u16>)>>,
}

impl Site {
    /// Pages over `catalogue`, with what is live from `live`.
    pub fn new(catalogue: Catalogue, live: Arc<dyn Live>, config: &config::Config) -> Site {
        let port =
            |enabled: bool, a: std::net::SocketAddr| (enabled && a.port() != 0).then_some(a.port());
        Site {
            catalogue,
            live,
            ports: Arc::new(std::sync::RwLock::new((
                port(config.rtmp.enabled, config.rtmp.listen),
                port(config.srt.enabled, config.srt.listen),
            ))),
        }
    }

    /// The ports RTMP and SRT listen on, once bound (for "how to stream").
    pub fn set_ports(&self, rtmp: Option<u16>, srt: Option<u16>) {
        let mut p = self.ports.write().unwrap_or_else(|e| e.into_inner());
        if rtmp.is_some() {
            p.0 = rtmp;
        }
        if srt.is_some() {
            p.1 = srt;
        }
    }

    pub(crate) fn ports(&self) -> (Option<u16>, Option<u16>) {
        *self.ports.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The routes: `/`, `/lectures/...`, `/tickets/...`, `/admin/...`, `/assets/...`.
    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(public::front))
            .route("/lectures/{id}", get(public::lecture))
            .route("/lectures/{id}/book", post(public::book))
            .route("/tickets/{code}", get(public::ticket))
            .route("/tickets/{code}/qr.svg", get(public::ticket_qr))
            .route("/tickets/{code}/cancel", post(public::cancel))
            .route("/assets/site.css", get(|| asset("text/css", CSS)))
            .route("/assets/site.js", get(|| asset("text/javascript", JS)))
            .merge(admin::router())
            .with_state(self)
    }
}

const CSS: &str = include_str!("../assets/site.css");
const JS: &str = include_str!("../assets/site.js");

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&format!("{content_type}; charset=utf-8"))
            .unwrap_or(HeaderValue::from_static("text/plain")),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

/// Escapes text for HTML (content and quoted attributes).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a URL query value.
pub fn url_enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The policy of every page: nothing inline, nothing from elsewhere; the player comes in
/// an iframe of `/play/...` (its own page and policy).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; media-src 'self' blob:; frame-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'; object-src 'none'";

/// A whole page: the layout around `body`.
pub(crate) fn page(ui: Ui, title: &str, body: &str, status: StatusCode) -> Response {
    let t = ui.t();
    let other = match ui {
        Ui::Zh => "<a href=\"?ui=en\" class=\"lang\" hreflang=\"en\">English</a>",
        Ui::En => "<a href=\"?ui=zh\" class=\"lang\" hreflang=\"zh\">中文</a>",
    };
    let html = format!(
        "<!doctype html>\n<html lang=\"{lang}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title} · {site}</title>\n<link rel=\"stylesheet\" href=\"/assets/site.css\">\n\
         <script src=\"/assets/site.js\" defer></script>\n</head>\n<body>\n\
         <header class=\"top\"><a href=\"/{home}\" class=\"brand\">{site}</a>{other}</header>\n\
         <main>\n{body}\n</main>\n</body>\n</html>\n",
        lang = ui.html_lang(),
        title = esc(title),
        site = t.site,
        home = ui.query(""),
    );
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    r
}

/// A page with a message only (errors, confirmations).
pub(crate) fn message(ui: Ui, status: StatusCode, title: &str, text: &str) -> Response {
    page(
        ui,
        title,
        &format!(
            "<section class=\"card\"><h1>{}</h1><p>{}</p><p><a href=\"/{}\">{}</a></p></section>",
            esc(title),
            esc(text),
            ui.query(""),
            ui.t().back_home
        ),
        status,
    )
}

/// A redirect after a form (303 See Other).
pub(crate) fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The host (with its port, if any) the browser used, for the WHIP address.
pub(crate) fn request_authority(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
        .collect()
}

/// The host (without port) the browser used, for the "how to stream" addresses.
pub(crate) fn request_host(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    // [v6]:port, name:port, name
    let bare = if let Some(rest) = host.strip_prefix('[') {
        format!("[{}]", rest.split(']').next().unwrap_or(""))
    } else {
        host.rsplit_once(':')
            .map_or(host.to_string(), |(h, _)| h.to_string())
    };
    bare.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
        .collect()
}

/// A time as the district reads it: in the catalogue's time zone.
pub(crate) fn local(c: &Catalogue, t: jiff::Timestamp) -> jiff::ZonedDateTime {
    t.to_zoned_datetime(c.settings().timezone.clone())
}

/// The client's address (for the booking and login limits).
pub(crate) struct Peer(pub std::net::IpAddr);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip()),
        ))
    }
}

/// `2026-12-01 19:30`.
pub(crate) fn when(c: &Catalogue, t: Option<jiff::Timestamp>) -> String {
    t.map(|t| local(c, t).strftime("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
        assert_eq!(url_enc("西 a&b"), "%E8%A5%BF%20a%26b");
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "relay.example:8080".parse().unwrap());
        assert_eq!(request_host(&h), "relay.example");
        h.insert(header::HOST, "[::1]:8080".parse().unwrap());
        assert_eq!(request_host(&h), "[::1]");
        h.insert(header::HOST, "a\"b".parse().unwrap());
        assert_eq!(request_host(&h), "ab");
    }
}
