//! Every HTML page of the real binary carries a CSP with `frame-ancestors` (the player may be
//! embedded by any site, the rest only by this origin), `X-Content-Type-Options: nosniff`
//! and a `Referrer-Policy`.

mod common;

use common::*;
use serde_json::{Value, json};

fn post(s: &Server, path: &str, body: &Value) -> Value {
    let (st, _, b) = send(
        "POST",
        &s.url(path),
        Some("application/json"),
        body.to_string().as_bytes(),
    );
    let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
    assert!(st == 201 || st == 200, "POST {path}: {st} {v}");
    v
}

#[test]
fn every_html_page_sends_security_headers() {
    let dir = std::env::temp_dir().join(format!(
        "jiangtang-headers-{}-{}",
        std::process::id(),
        jiff::Timestamp::now().as_nanosecond()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "[catalogue]\ndatabase_path = \"{}\"\n",
        dir.join("catalogue.db").display()
    );
    let s = Server::start(&config);
    let starts = jiff::Timestamp::now().as_second() + 86_400;
    let ts = |t: i64| jiff::Timestamp::from_second(t).unwrap().to_string();
    // Loopback is the operator while no account exists.
    let lecture = post(
        &s,
        "/api/v1/lectures",
        &json!({"title": "书法入门", "category": "culture", "stream": "shufa", "seats": 5,
                "starts_at": ts(starts), "ends_at": ts(starts + 3600)}),
    );
    let id = lecture["id"].as_i64().unwrap();
    let booking = post(
        &s,
        &format!("/api/v1/lectures/{id}/bookings"),
        &json!({"person": "13900000001", "name": "王"}),
    );
    let code = booking["ticket_code"].as_str().unwrap().to_string();

    let pages = [
        ("/play/demo", true),
        ("/interpret/demo", false),
        ("/", false),
        (&*format!("/lectures/{id}"), false),
        (&*format!("/tickets/{code}"), false),
        ("/admin", false),
        ("/admin/login", false),
    ];
    for (path, embeddable) in pages {
        let (st, h, _) = send("GET", &s.url(path), None, b"");
        assert_eq!(st, 200, "GET {path}");
        let get = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("GET {path}: no {name}"))
                .to_string()
        };
        assert!(get("content-type").starts_with("text/html"), "{path}");
        let csp = get("content-security-policy");
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        let ancestors = csp
            .split(';')
            .map(str::trim)
            .find(|d| d.starts_with("frame-ancestors"))
            .unwrap_or_else(|| panic!("{path}: no frame-ancestors in {csp}"));
        if embeddable {
            assert_eq!(ancestors, "frame-ancestors *", "{path}");
        } else {
            assert_eq!(ancestors, "frame-ancestors 'self'", "{path}");
        }
        assert_eq!(get("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(get("referrer-policy"), "same-origin", "{path}");
    }
    // Not an HTML page: left as it was.
    let (_, h, _) = send("GET", &s.url("/assets/site.css"), None, b"");
    assert!(h.get("content-security-policy").is_none());
    let _ = std::fs::remove_dir_all(&dir);
}
