//! `/player.js` as a browser and a CDN see it: gzip within the size budget, a validator that
//! turns repeat visits into 304s, and caching that revalidates so a new release is picked up.

mod common;

use common::*;

/// BENCHMARKS.md keeps this budget for the bundle (hls.js included) as served.
const BUDGET_GZIP_BYTES: usize = 210 * 1024;

#[test]
fn player_js_is_gzipped_within_budget_and_revalidates() {
    let s = Server::start("");
    let url = s.url("/player.js");
    let h =
        |m: &reqwest::header::HeaderMap, k: &str| m.get(k).map(|v| v.to_str().unwrap().to_string());
    let (status, gzh, gz) = get_with(&url, &[("accept-encoding", "gzip")]);
    assert_eq!(status, 200);
    assert_eq!(h(&gzh, "content-encoding").as_deref(), Some("gzip"));
    assert!(
        h(&gzh, "content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    assert_eq!(h(&gzh, "cache-control").as_deref(), Some("no-cache"));
    assert!(
        gz.len() <= BUDGET_GZIP_BYTES,
        "bundle is {} bytes gzip, over the {BUDGET_GZIP_BYTES}-byte budget",
        gz.len()
    );
    assert_eq!(&gz[..2], [0x1f, 0x8b], "not gzip data");
    let tag = h(&gzh, "etag").expect("etag");
    assert!(tag.starts_with("W/\""), "{tag}");

    let (status, plainh, plain) = get_with(&url, &[]);
    assert_eq!(status, 200);
    assert_eq!(h(&plainh, "content-encoding"), None);
    assert!(plain.len() > gz.len() * 2, "identity body looks compressed");
    assert!(
        String::from_utf8_lossy(&plain).contains("jiangtang-player"),
        "not the player bundle"
    );
    assert_eq!(h(&plainh, "etag"), Some(tag.clone()));

    let (status, again, body) = get_with(
        &url,
        &[("accept-encoding", "gzip"), ("if-none-match", &tag)],
    );
    assert_eq!(status, 304);
    assert!(body.is_empty());
    assert_eq!(h(&again, "etag"), Some(tag.clone()));
    assert_eq!(h(&again, "cache-control").as_deref(), Some("no-cache"));

    let (status, _, _) = get_with(&url, &[("if-none-match", "W/\"0000000000000000\"")]);
    assert_eq!(status, 200, "a stale validator gets the new bundle");
}
