//! The programme API's JSON bodies under a fuzzer, and the calendars and CSV it writes from
//! what they carried (issue 12 item 1).
//!
//! [`fuzz_api`] sends one request to the real router, in process, against a real SQLite file
//! made once per process: the first byte picks the route, the rest is the body. Whatever the
//! body, the answer is never a server error and every refusal is a JSON `{"error": ...}`;
//! then the hall's iCalendar feed and the lecture's attendance CSV, which carry titles,
//! names and addresses that earlier bodies set, must still parse back: every iCalendar
//! line CRLF-ended and at most 75 octets, components balanced; every CSV row as wide as
//! its header.

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use tower::ServiceExt as _;

use crate::{Catalogue, Location, Settings};

const TOKEN: &str = "fuzz-operator-token-0123456789";

/// The routes that take a JSON body (ids 1 exist from the set-up).
const ROUTES: &[(Method, &str)] = &[
    (Method::POST, "/api/v1/lectures"),
    (Method::PATCH, "/api/v1/lectures/1"),
    (Method::POST, "/api/v1/lectures/1/bookings"),
    (Method::POST, "/api/v1/lectures/1/checkins"),
    (Method::POST, "/api/v1/halls"),
    (Method::PATCH, "/api/v1/halls/1"),
    (Method::POST, "/api/v1/series"),
    (Method::PATCH, "/api/v1/series/1"),
    (Method::POST, "/api/v1/lectures/1/playback-tokens"),
];

struct World {
    rt: tokio::runtime::Runtime,
    router: Router,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let path =
            std::env::temp_dir().join(format!("jiangtang-fuzz-api-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut s = Settings::defaults(Location::Sqlite {
            path,
            full_sync: false,
        });
        s.operator_token = TOKEN.into();
        s.bookings_per_minute = u32::MAX / 2;
        let router = rt.block_on(async {
            let c = Catalogue::open(s).await.expect("catalogue");
            let router = c.router();
            let start = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24);
            for (path, body) in [
                (
                    "/api/v1/halls",
                    serde_json::json!({"name": "西和讲堂", "address": "西和路 1 号", "seats": 100}),
                ),
                (
                    "/api/v1/lectures",
                    serde_json::json!({"title": "书法", "stream": "fuzz", "hall_id": 1,
                        "starts_at": start.to_string(),
                        "ends_at": (start + jiff::SignedDuration::from_hours(1)).to_string(),
                        "seats": 100000}),
                ),
                (
                    "/api/v1/series",
                    serde_json::json!({"title": "每周书法", "stream": "fuzz-series", "hall_id": 1,
                        "weekday": 6, "start_time": "19:30", "duration_minutes": 90,
                        "first_date": "2027-01-01", "last_date": "2027-03-01"}),
                ),
            ] {
                let r = send(&router, Method::POST, path, body.to_string().into_bytes()).await;
                assert!(
                    r.0.is_success(),
                    "{path}: {} {}",
                    r.0,
                    String::from_utf8_lossy(&r.1)
                );
            }
            router
        });
        World { rt, router }
    })
}

async fn send(router: &Router, method: Method, path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::from(body))
        .expect("request");
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 7], 40000))));
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    (status, bytes)
}

/// One API request from fuzzer bytes (see the module's doc). Panics only on a broken
/// property: a server error, a refusal without a JSON error, a feed or export that does not
/// parse back.
pub fn fuzz_api(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let w = world();
    let (method, path) = &ROUTES[usize::from(pick) % ROUTES.len()];
    w.rt.block_on(async {
        let (status, answer) = send(&w.router, method.clone(), path, body.to_vec()).await;
        assert!(
            !status.is_server_error(),
            "{method} {path} answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
        if status.is_client_error() {
            let v: serde_json::Value = serde_json::from_slice(&answer)
                .unwrap_or_else(|e| panic!("{method} {path}: {status} without JSON ({e})"));
            assert!(v["error"].is_string(), "{method} {path}: {v}");
        }
        let (s, ics) = send(
            &w.router,
            Method::GET,
            "/api/v1/halls/1/calendar.ics",
            vec![],
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        check_ical(&ics);
        let (s, csv) = send(
            &w.router,
            Method::GET,
            "/api/v1/lectures/1/attendance.csv",
            vec![],
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        check_csv(&csv);
    });
}

/// RFC 5545 §3.1 framing: CRLF lines of at most 75 octets (continuations start with a
/// space), BEGIN/END balanced and matching.
fn check_ical(ics: &[u8]) {
    let text = std::str::from_utf8(ics).expect("iCalendar is UTF-8");
    assert!(text.ends_with("\r\n"), "ends with CRLF");
    let mut stack = Vec::new();
    for line in text.split_terminator("\r\n") {
        assert!(
            !line.contains('\n') && !line.contains('\r'),
            "bare line break: {line:?}"
        );
        assert!(line.len() <= 75, "line over 75 octets: {line:?}");
        assert!(
            !line.chars().any(|c| c.is_control() && c != '\t'),
            "control: {line:?}"
        );
        if let Some(name) = line.strip_prefix("BEGIN:") {
            stack.push(name);
        } else if let Some(name) = line.strip_prefix("END:") {
            assert_eq!(stack.pop(), Some(name), "unbalanced END:{name}");
        }
    }
    assert!(stack.is_empty(), "unclosed {stack:?}");
}

/// Every record as wide as the header.
fn check_csv(csv: &[u8]) {
    let mut r = csv::ReaderBuilder::new().flexible(false).from_reader(csv);
    let width = r.headers().expect("a header").len();
    for rec in r.records() {
        let rec = rec.expect("a CSV record");
        assert_eq!(rec.len(), width);
        // Names and contacts typed by the public never start a spreadsheet formula.
        for field in [&rec[1], &rec[2]] {
            assert!(!field.starts_with(['=', '+', '-', '@']), "{field:?}");
        }
    }
}
