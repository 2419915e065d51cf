//! The web player: `GET /play/STREAM` (a page to embed in an iframe) and `GET /player.js`
//! (the bundle: hls.js and our glue, built from `web/` by `scripts/build-web.sh`).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::OnceLock;

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

static BUNDLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/player.js"));

/// Whether the bundle was built into this binary.
pub const HAS_BUNDLE: bool = cfg!(player_bundle);

/// Routes of the player.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/player.js",
            get(player_js).layer(tower_http::compression::CompressionLayer::new().gzip(true)),
        )
        .route("/play/{stream}", get(play_page))
        .route("/interpret/{stream}", get(interpret_page))
        // Browsers ask for it on every page; answer without a logged 404.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
}

fn etag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let mut h = DefaultHasher::new();
        BUNDLE.hash(&mut h);
        // Weak: the same tag stands for the gzip and the identity encoding of one bundle.
        format!("W/\"{:016x}\"", h.finish())
    })
}

/// Whether an `If-None-Match` value names `tag` (weak comparison, lists and `*`).
fn none_match(header: &[u8], tag: &str) -> bool {
    let bare = tag.trim_start_matches("W/");
    std::str::from_utf8(header).is_ok_and(|h| {
        h.split(',')
            .map(|t| t.trim())
            .any(|t| t == "*" || t.trim_start_matches("W/") == bare)
    })
}

async fn player_js(headers: HeaderMap) -> Response {
    if !HAS_BUNDLE {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            "console.error('jiangtang: the player bundle was not built into this binary; run scripts/build-web.sh and rebuild');\n",
        )
            .into_response();
    }
    let tag = etag();
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| none_match(v.as_bytes(), tag))
    {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, tag), (header::CACHE_CONTROL, "no-cache")],
        )
            .into_response();
    }
    let mut r = (StatusCode::OK, BUNDLE).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(header::ETAG, HeaderValue::from_static(tag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `/play/NAME?lang=&mode=&autoplay=&muted=&ui=&token=&replay=&site=&kiosk=`
#[derive(Debug, Default, serde::Deserialize)]
pub struct PlayQuery {
    lang: Option<String>,
    /// A recording to play (its id) instead of the live lecture.
    #[serde(default)]
    replay: Option<String>,
    mode: Option<String>,
    autoplay: Option<String>,
    muted: Option<String>,
    ui: Option<String>,
    token: Option<String>,
    /// The sub-venue the page shows the lecture at (its code, reported to the main hall).
    site: Option<String>,
    /// A screen in a hall: full window, no controls, sound on, starts and reconnects by
    /// itself, the next lecture and a countdown in between.
    kiosk: Option<String>,
}

/// Whether `t` has the shape of a playback token (`STREAM.EXPIRES.MAC`: stream-name
/// characters), so it can become an attribute as it is.
pub fn token_shaped(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 512
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn flag(v: &Option<String>, default: bool) -> bool {
    match v.as_deref() {
        None => default,
        Some(v) => !matches!(v, "0" | "false" | "no" | "off"),
    }
}

/// The attributes of the page's player, from the query. Every value is checked against what
/// it may be, so nothing from the URL reaches the HTML unvalidated.
fn player_attributes(stream: &str, q: &PlayQuery) -> String {
    let mut attrs = format!("stream=\"{stream}\"");
    if let Some(lang) = q
        .lang
        .as_deref()
        .and_then(|l| media::Language::parse(l).ok())
    {
        attrs.push_str(&format!(" lang=\"{lang}\""));
    }
    if let Some(mode) = q
        .mode
        .as_deref()
        .filter(|m| matches!(*m, "auto" | "webrtc" | "hls" | "audio"))
    {
        attrs.push_str(&format!(" mode=\"{mode}\""));
    }
    if let Some(ui) = q.ui.as_deref().filter(|u| matches!(*u, "zh" | "en")) {
        attrs.push_str(&format!(" ui=\"{ui}\""));
    }
    if let Some(token) = q.token.as_deref().filter(|t| token_shaped(t)) {
        attrs.push_str(&format!(" token=\"{token}\""));
    }
    // Recording ids are folder names made of the lecture's name and a time.
    if let Some(id) = q
        .replay
        .as_deref()
        .filter(|id| media::sink::valid_stream_name(id))
    {
        attrs.push_str(&format!(" replay=\"{id}\""));
    }
    if let Some(site) = q.site.as_deref().filter(|s| {
        (1..=32).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
    }) {
        attrs.push_str(&format!(" site=\"{site}\""));
    }
    // Autoplay works in browsers when muted; the viewer unmutes with one tap. A kiosk has
    // nobody to tap: sound on (its browser allows autoplay, see docs/player.md).
    let kiosk = flag(&q.kiosk, false);
    if kiosk {
        attrs.push_str(" kiosk");
    }
    if kiosk || flag(&q.autoplay, true) {
        attrs.push_str(" autoplay");
    }
    if flag(&q.muted, !kiosk) {
        attrs.push_str(" muted");
    }
    attrs
}

async fn play_page(Path(stream): Path<String>, Query(q): Query<PlayQuery>) -> Response {
    if !media::sink::valid_stream_name(&stream) {
        return (StatusCode::NOT_FOUND, "no such lecture").into_response();
    }
    // The name is validated to [A-Za-z0-9._-], so it is safe in HTML and URLs as is.
    let page = PAGE
        .replace("{attributes}", &player_attributes(&stream, &q))
        .replace("{stream}", &stream);
    html_response(page)
}

/// `/interpret/NAME?lang=&ui=`
#[derive(Debug, Default, serde::Deserialize)]
pub struct InterpretQuery {
    lang: Option<String>,
    ui: Option<String>,
}

async fn interpret_page(Path(stream): Path<String>, Query(q): Query<InterpretQuery>) -> Response {
    if !media::sink::valid_stream_name(&stream) {
        return (StatusCode::NOT_FOUND, "no such lecture").into_response();
    }
    let mut attrs = format!("stream=\"{stream}\"");
    if let Some(lang) = q
        .lang
        .as_deref()
        .and_then(|l| media::Language::parse(l).ok())
    {
        attrs.push_str(&format!(" lang=\"{lang}\""));
    }
    if let Some(ui) = q.ui.as_deref().filter(|u| matches!(*u, "zh" | "en")) {
        attrs.push_str(&format!(" ui=\"{ui}\""));
    }
    let page = INTERPRET_PAGE
        .replace("{attributes}", &attrs)
        .replace("{stream}", &stream);
    html_response(page)
}

fn html_response(page: String) -> Response {
    let mut r = (StatusCode::OK, page).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; media-src 'self' blob:; worker-src 'self' blob:; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
        ),
    );
    r
}

const INTERPRET_PAGE: &str = r#"<!doctype html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>传译 · {stream}</title>
<style>
  html, body { margin: 0; background: #111; }
  jiangtang-interpreter { max-width: 960px; margin: 0 auto; }
</style>
</head>
<body>
<jiangtang-interpreter {attributes}></jiangtang-interpreter>
<script src="/player.js"></script>
</body>
</html>
"#;

const PAGE: &str = r#"<!doctype html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>讲堂 · {stream}</title>
<style>
  html, body { margin: 0; height: 100%; background: #000; }
  jiangtang-player { max-width: 1280px; margin: 0 auto; }
</style>
</head>
<body>
<jiangtang-player fill {attributes}></jiangtang-player>
<script src="/player.js"></script>
</body>
</html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly() {
        let tag = "W/\"00ab\"";
        assert!(none_match(b"W/\"00ab\"", tag));
        assert!(none_match(b"\"00ab\"", tag));
        assert!(none_match(b"\"x\", W/\"00ab\"", tag));
        assert!(none_match(b"*", tag));
        assert!(!none_match(b"\"00ac\"", tag));
        assert!(!none_match(b"\xff", tag));
    }

    #[test]
    fn query_values_are_checked_before_reaching_html() {
        let q = PlayQuery {
            lang: Some("yue\"><script>".into()),
            mode: Some("hls".into()),
            autoplay: Some("0".into()),
            muted: None,
            ui: Some("fr".into()),
            token: Some("x\" onerror=\"alert(1)".into()),
            replay: Some("x\" onload=\"alert(1)".into()),
            site: Some("Bad\"><x>".into()),
            kiosk: None,
        };
        assert_eq!(
            player_attributes("xihe", &q),
            "stream=\"xihe\" mode=\"hls\" muted"
        );
        let q = PlayQuery {
            lang: Some("YUE".into()),
            token: Some("a.1900000000.00ff".into()),
            ..Default::default()
        };
        assert_eq!(
            player_attributes("a", &q),
            "stream=\"a\" lang=\"yue\" token=\"a.1900000000.00ff\" autoplay muted"
        );
        let q = PlayQuery {
            replay: Some("20261206T193000Z-xihe".into()),
            ..Default::default()
        };
        assert_eq!(
            player_attributes("xihe", &q),
            "stream=\"xihe\" replay=\"20261206T193000Z-xihe\" autoplay muted"
        );
        // A hall's screen: sound on unless asked otherwise, and its site.
        let q = PlayQuery {
            kiosk: Some("1".into()),
            site: Some("shimen".into()),
            lang: Some("hak".into()),
            ..Default::default()
        };
        assert_eq!(
            player_attributes("xihe", &q),
            "stream=\"xihe\" lang=\"hak\" site=\"shimen\" kiosk autoplay"
        );
    }
}
