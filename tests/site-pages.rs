//! The pages against the real binary: the front page, the booking flow, the console and the
//! door's check-in page in headless Chromium (`tests/node/site.mjs`), with no console
//! errors; screenshots kept in `target/test-screenshots/`. Operator accounts: made by
//! `jiangtang operator add` (password from stdin), the session cookie's flags, the CSRF
//! token on every change, and loopback losing its free pass once an account exists.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn at(offset_s: i64) -> String {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + offset_s)
        .unwrap()
        .to_string()
}

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
fn front_page_booking_console_and_check_in_in_chromium() {
    let dir = scratch_dir("site");
    let (config_path, config) = catalogue_config(&dir, "");
    let s = Server::start(&config);

    // The programme, made through the API (loopback, before any account exists).
    let hall = post(
        &s,
        "/api/v1/halls",
        &json!({"name": "西和讲堂", "town": "西和镇", "village": "东村", "seats": 80}),
    );
    let hall_id = hall["id"].as_i64().unwrap();
    let a = post(
        &s,
        "/api/v1/lectures",
        &json!({"title": "书法入门", "speaker": "李老师", "category": "culture", "hall_id": hall_id,
                "stream": "shufa", "seats": 2, "starts_at": at(2 * 86_400), "ends_at": at(2 * 86_400 + 5400),
                "description": "<b>不是 HTML</b>"}),
    );
    let a_id = a["id"].as_i64().unwrap();
    post(
        &s,
        "/api/v1/lectures",
        &json!({"title": "防诈骗知识", "category": "science", "stream": "fangzha",
                "starts_at": at(3 * 86_400), "ends_at": at(3 * 86_400 + 3600)}),
    );
    let d = post(
        &s,
        "/api/v1/lectures",
        &json!({"title": "广场舞", "category": "fitness", "hall_id": hall_id, "stream": "wudao",
                "seats": 30, "starts_at": at(4 * 86_400), "ends_at": at(4 * 86_400 + 3600)}),
    );
    let other = post(
        &s,
        &format!("/api/v1/lectures/{}/bookings", d["id"]),
        &json!({"person": "13900000009", "name": "别场"}),
    );
    let gone = post(
        &s,
        &format!("/api/v1/lectures/{a_id}/bookings"),
        &json!({"person": "13900000008", "name": "取消者"}),
    );
    let gone_code = gone["ticket_code"].as_str().unwrap();
    let (st, _, _) = send(
        "DELETE",
        &s.url(&format!("/api/v1/bookings/{gone_code}")),
        None,
        b"",
    );
    assert_eq!(st, 200);

    // The first operator, from the command line, password on stdin.
    let password = "district-console-pass";
    add_operator(&config_path, "zhang", password);
    // Short passwords are refused.
    assert!(
        !try_add_operator(&config_path, "li", "short")
            .status
            .success()
    );

    // Now that an account exists, loopback is no longer an operator by itself.
    let (st, _, _) = send(
        "POST",
        &s.url("/api/v1/halls"),
        Some("application/json"),
        br#"{"name":"another"}"#,
    );
    assert_eq!(st, 401);

    // A session cookie without its CSRF token changes nothing.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (st, h) = rt.block_on(async {
        let r = http
            .post(s.url("/admin/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("name=zhang&password={password}"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.headers().clone())
    });
    assert_eq!(st, 303);
    let cookie = h["set-cookie"].to_str().unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_string();
    let status = |req: reqwest::RequestBuilder| {
        rt.block_on(async { req.send().await.unwrap().status().as_u16() })
    };
    assert_eq!(
        status(
            http.post(s.url("/api/v1/halls"))
                .header("cookie", &session)
                .header("content-type", "application/json")
                .body(r#"{"name":"no csrf"}"#)
        ),
        403
    );
    assert_eq!(
        status(
            http.post(s.url("/admin/halls"))
                .header("cookie", &session)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("name=no+csrf&csrf=wrong")
        ),
        403
    );
    assert_eq!(
        status(
            http.get(s.url(&format!("/api/v1/lectures/{a_id}/bookings")))
                .header("cookie", &session)
        ),
        200,
        "reads need no CSRF token"
    );

    // The browser.
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let node = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        node.join("node_modules/playwright-core").exists(),
        "tests/node has no node_modules: run scripts/test.sh, which installs them"
    );
    let out = {
        let _browser = browser_lock();
        output_within(
            Command::new("node")
                .arg(node.join("site.mjs"))
                .arg(format!("http://{}", s.http))
                .arg(&shots)
                .arg(a_id.to_string())
                .arg("zhang")
                .arg(password)
                .arg(other["ticket_code"].as_str().unwrap())
                .arg(gone_code)
                .stderr(Stdio::piped()),
            Duration::from_secs(240),
        )
    };
    assert!(
        out.status.success(),
        "site.mjs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("screenshots in {}", shots.display());
    assert_eq!(r["errors"], json!([]), "{r:#}");
    assert_eq!(r["console"], json!([]), "console errors: {r:#}");

    // Front page: Chinese by default, the three sections, seats and book buttons.
    let f = &r["front"];
    assert_eq!(f["lang"], "zh-CN");
    assert_eq!(
        f["sections"],
        json!(["正在直播", "即将开讲", "精彩回放"]),
        "{f}"
    );
    let titles: Vec<&str> = f["lectures"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for t in ["书法入门", "防诈骗知识", "广场舞"] {
        assert!(titles.contains(&t), "{f}");
    }
    assert!(f["seats"].to_string().contains("剩余座位 2"), "{f}");
    assert!(f["buttons"].to_string().contains("预约"), "{f}");
    assert_eq!(f["overflow"], false, "fits a phone: {f}");
    assert_eq!(r["frontEn"]["lang"], "en");
    assert_eq!(
        r["frontEn"]["sections"],
        json!(["Live now", "Coming up", "Replays"])
    );

    // Booking flow.
    assert!(
        r["lecturePage"]["countdown"]
            .as_str()
            .is_some_and(|c| c.contains('天')),
        "{r:#}"
    );
    assert!(
        r["ticket"]["status"].as_str().unwrap().contains("预约成功"),
        "{r:#}"
    );
    assert!(r["ticket"]["qrWidth"].as_u64().unwrap() > 0);
    assert_eq!(r["ticket"]["overflow"], false);
    let code = r["ticket"]["code"].as_str().unwrap();
    let booking: Value =
        serde_json::from_str(&get_text(&s.url(&format!("/api/v1/bookings/{code}")))).unwrap();
    assert_eq!(booking["status"], "confirmed");
    assert_eq!(booking["lecture_id"], a_id);
    assert!(r["seatsAfter"].as_str().unwrap().contains('1'), "{r:#}");

    // Console.
    assert!(r["loginUrl"].as_str().unwrap().ends_with("/admin/login"));
    assert!(r["wrongLogin"].as_str().unwrap().contains("错误"));
    let c = &r["cookie"][0];
    assert_eq!(c["name"], "jt_session");
    assert_eq!(c["httpOnly"], true);
    assert_eq!(c["secure"], true);
    assert_eq!(c["sameSite"], "Strict");
    assert!(r["consoleHome"].to_string().contains("书法入门"));
    assert!(r["lectureAdmin"]["bookings"].to_string().contains("王小明"));
    let howto = r["lectureAdmin"]["howto"].to_string();
    assert!(howto.contains("rtmp://127.0.0.1:"), "{howto}");
    assert!(howto.contains("streamid=publish:shufa:"), "{howto}");
    assert!(howto.contains("/whip/shufa"), "{howto}");
    assert_eq!(r["keyRotated"], true);
    assert!(r["halls"].to_string().contains("西和讲堂"));

    // Check-in at the door.
    let ck = &r["checkins"];
    assert_eq!(ck["valid"]["outcome"], "valid", "{ck}");
    assert!(ck["valid"]["text"].as_str().unwrap().contains("王小明"));
    assert_eq!(ck["again"]["outcome"], "already_used", "{ck}");
    assert_eq!(ck["other"]["outcome"], "wrong_lecture", "{ck}");
    assert_eq!(ck["cancelled"]["outcome"], "cancelled", "{ck}");
    assert_eq!(ck["unknown"]["outcome"], "unknown", "{ck}");
    // Recorded: the attendance export has the check-in.
    let csv = rt.block_on(async {
        http.get(s.url(&format!("/api/v1/lectures/{a_id}/attendance.csv")))
            .header("cookie", &session)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(csv.contains("王小明"), "{csv}");
    let _ = std::fs::remove_dir_all(&dir);
}
