//! The web player: `GET /play/STREAM` (a page to embed in an iframe) and `GET /player.js`
//! (the bundle: hls.js and our glue, built from `web/` by `scripts/build-web.sh`).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

static BUNDLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/player.js"));

/// Whether the bundle was built into this binary.
pub const HAS_BUNDLE: bool = cfg!(player_bundle);

/// Routes of the player.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/player.js", get(player_js))
        .route("/play/{stream}", get(play_page))
        // Browsers ask for it on every page; answer without a logged 404.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
}

fn etag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let mut h = DefaultHasher::new();
        BUNDLE.hash(&mut h);
        format!("\"{:016x}\"", h.finish())
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
        .is_some_and(|v| v.as_bytes() == tag.as_bytes())
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response();
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

async fn play_page(Path(stream): Path<String>) -> Response {
    if !media::sink::valid_stream_name(&stream) {
        return (StatusCode::NOT_FOUND, "no such lecture").into_response();
    }
    // The name is validated to [A-Za-z0-9._-], so it is safe in HTML and URLs as is.
    let page = PAGE.replace("{stream}", &stream);
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
            "default-src 'self'; media-src 'self' blob:; worker-src 'self' blob:; style-src 'self' 'unsafe-inline'",
        ),
    );
    r
}

const PAGE: &str = r#"<!doctype html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>讲堂 · {stream}</title>
<style>
  body { margin: 0; background: #111; color: #eee; font: 16px/1.4 system-ui, sans-serif; }
  main { max-width: 960px; margin: 0 auto; padding: 8px; }
  video { width: 100%; background: #000; aspect-ratio: 16 / 9; }
  .bar { display: flex; gap: 12px; align-items: center; padding: 8px 0; flex-wrap: wrap; }
  select { font-size: 16px; }
</style>
</head>
<body>
<main>
  <video id="video" controls autoplay muted playsinline
         data-jiangtang-hls="/hls/{stream}/index.m3u8"
         data-jiangtang-picker="dialect" data-jiangtang-status="status"></video>
  <div class="bar">
    <label for="dialect">方言 Dialect</label>
    <select id="dialect" aria-label="dialect"></select>
    <span id="status" role="status">连接中… connecting…</span>
  </div>
</main>
<script src="/player.js"></script>
</body>
</html>
"#;
