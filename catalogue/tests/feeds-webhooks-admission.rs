//! iCal feeds read by a real parser (Python's icalendar), webhooks delivered with retries
//! and across a restart, the `[[lecture]]` import, and admission (publish keys, playback
//! tokens); each on SQLite and on PostgreSQL.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use catalogue::Webhook;
use media::admission::{Admission, Refusal, Verdict};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Db, Harness};

on_both!(
    ical_feeds_parse,
    webhooks_retry_and_survive_restart,
    config_import_is_idempotent,
    admission_keys_and_tokens,
);

/// Parses an iCalendar text with Python's icalendar (Debian's python3-icalendar) and
/// returns its events as JSON.
fn parse_ical(text: &str) -> Value {
    let script = r#"
import sys, json, icalendar
cal = icalendar.Calendar.from_ical(sys.stdin.buffer.read())
out = {"name": str(cal.get("X-WR-CALNAME")), "events": []}
for ev in cal.walk("VEVENT"):
    alarms = [str(a.get("TRIGGER").to_ical(), "ascii") for a in ev.walk("VALARM")]
    out["events"].append({
        "uid": str(ev.get("UID")),
        "summary": str(ev.get("SUMMARY")),
        "location": str(ev.get("LOCATION", "")),
        "start": ev.decoded("DTSTART").isoformat(),
        "end": ev.decoded("DTEND").isoformat(),
        "status": str(ev.get("STATUS")),
        "alarms": alarms,
    })
print(json.dumps(out))
"#;
    use std::io::Write;
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (scripts/setup.sh installs python3-icalendar)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "icalendar rejected the feed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn text(h: &Harness, path: &str) -> (StatusCode, String, String) {
    let r = h.http.get(h.url(path)).send().await.unwrap();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status(), ct, r.text().await.unwrap())
}

async fn ical_feeds_parse(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let (_, hall) = h
        .op_post(
            "/api/v1/halls",
            json!({"name": "太平镇文化站", "address": "太平路 8 号, 二楼"}),
        )
        .await;
    let hall_id = hall["id"].as_i64().unwrap();
    let long_title = "粤剧欣赏;传统戏曲\\与现代, 生活".repeat(4);
    let a = h
        .lecture_with(
            "opera",
            86_400,
            Some(30),
            json!({"title": long_title, "category": "culture", "hall_id": hall_id}),
        )
        .await;
    let b = h
        .lecture_with(
            "run",
            2 * 86_400,
            None,
            json!({"title": "健步走", "category": "fitness", "hall_id": hall_id}),
        )
        .await;
    h.op_post(&format!("/api/v1/lectures/{b}/cancel"), json!({}))
        .await;

    let (s, ct, feed) = text(&h, "/api/v1/categories/culture/calendar.ics").await;
    assert_eq!(s, StatusCode::OK);
    assert!(ct.starts_with("text/calendar"), "{ct}");
    assert!(feed.lines().all(|l| l.len() <= 75), "folded lines");
    let cal = parse_ical(&feed);
    assert_eq!(cal["name"], "文化服务");
    assert_eq!(cal["events"].as_array().unwrap().len(), 1);
    let ev = &cal["events"][0];
    assert_eq!(
        ev["summary"],
        long_title.as_str(),
        "escaped and folded text survives"
    );
    assert_eq!(ev["uid"], format!("lecture-{a}@jiangtang"));
    assert_eq!(ev["start"], "2030-01-08T00:00:00+00:00");
    assert_eq!(ev["end"], "2030-01-08T01:00:00+00:00");
    assert_eq!(ev["location"], "太平镇文化站, 太平路 8 号, 二楼");
    assert_eq!(ev["alarms"], json!([]));

    let cal = parse_ical(
        &text(&h, &format!("/api/v1/halls/{hall_id}/calendar.ics"))
            .await
            .2,
    );
    assert_eq!(cal["events"].as_array().unwrap().len(), 2);
    assert_eq!(cal["events"][1]["status"], "CANCELLED");

    let (_, booking) = h.book(a, "13900000000", "seat").await;
    let (_, _) = h.book(b, "13900000000", "online").await;
    let url = booking["calendar_url"].as_str().unwrap().to_string();
    let cal = parse_ical(&text(&h, &url).await.2);
    assert_eq!(
        cal["events"].as_array().unwrap().len(),
        1,
        "cancelled lecture: booking refused"
    );
    assert_eq!(cal["events"][0]["alarms"], json!(["-PT30M"]));
    let (s, _, _) = text(&h, "/api/v1/calendar/NOSUCHTOKEN.ics").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = text(&h, "/api/v1/categories/nope/calendar.ics").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    h.stop().await;
}

/// A webhook receiver: answers 500 to the first `fail_first` deliveries, then 200.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<(String, String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

async fn receiver(fail_first: usize) -> Receiver {
    let got: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let tries = Arc::new(Mutex::new(0usize));
    let got2 = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let (got, tries) = (got2.clone(), tries.clone());
            async move {
                let mut t = tries.lock().unwrap();
                *t += 1;
                if *t <= fail_first {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                let h = |n: &str| {
                    headers
                        .get(n)
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default()
                };
                got.lock().unwrap().push((
                    h("x-jiangtang-event"),
                    h("x-jiangtang-signature"),
                    body,
                ));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver { url, got, task }
}

fn hook(url: &str) -> Webhook {
    Webhook {
        url: url.into(),
        secret: "webhook-secret".into(),
        max_attempts: 5,
        retry_base: Duration::from_millis(1),
    }
}

async fn webhooks_retry_and_survive_restart(db: Db) {
    let rx = receiver(2).await;
    let h = Harness::start(db, |s| s.webhook = Some(hook(&rx.url))).await;
    let id = h.lecture("hooked", 3600, Some(1)).await;
    let (_, first) = h.book(id, "a", "seat").await;
    let (s, _) = h.book(id, "b", "seat").await;
    assert_eq!(s, StatusCode::CONFLICT);
    // a cancels (an operator, past the deadline): b moves up.
    h.op_delete(&format!(
        "/api/v1/bookings/{}",
        first["ticket_code"].as_str().unwrap()
    ))
    .await;
    // 30 minutes before: the reminder.
    h.clock.advance(1800);
    assert_eq!(h.catalogue.send_reminders().await.unwrap(), 1);
    assert_eq!(
        h.catalogue.send_reminders().await.unwrap(),
        0,
        "once per start time"
    );
    h.clock.advance(1800);
    assert_eq!(
        h.catalogue.lecture_went_live("hooked").await.unwrap(),
        Some(id)
    );
    h.catalogue.lecture_went_live("hooked").await.unwrap();
    assert_eq!(
        h.catalogue
            .replay_ready("hooked", "/replay/hooked/index.m3u8")
            .await
            .unwrap(),
        Some(id)
    );
    // The first two tries fail: delivery stops to keep the order, then resumes.
    let mut delivered = 0;
    for _ in 0..10 {
        delivered += h.catalogue.deliver_due_webhooks().await.unwrap();
        h.clock.advance(1);
        if delivered == 4 {
            break;
        }
    }
    assert_eq!(delivered, 4);
    let got = rx.got.lock().unwrap().clone();
    let events: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    assert_eq!(
        events,
        [
            "booking.promoted",
            "lecture.starting_soon",
            "lecture.live",
            "lecture.replay_ready"
        ]
    );
    for (_, sig, body) in &got {
        assert_eq!(sig, &catalogue::webhook_signature("webhook-secret", body));
    }
    let promoted: Value = serde_json::from_str(&got[0].2).unwrap();
    assert_eq!(promoted["booking"]["person"], "b");
    assert_eq!(promoted["lecture"]["id"].as_i64(), Some(id));
    let live: Value = serde_json::from_str(&got[2].2).unwrap();
    assert_eq!(live["bookings"].as_array().unwrap().len(), 1);
    let replay: Value = serde_json::from_str(&got[3].2).unwrap();
    assert_eq!(replay["lecture"]["replay_url"], "/replay/hooked/index.m3u8");

    // Queued while the receiver is unreachable, then the catalogue restarts: the event
    // survives in the database and goes out from the new process.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", l.local_addr().unwrap())
    };
    let (settings, dir, clock) = (h.settings.clone(), h.dir.clone(), h.clock.clone());
    h.stop().await;
    let mut s = settings.clone();
    s.webhook = Some(hook(&dead));
    let h = Harness::open(db, s, dir.clone(), clock.clone()).await;
    h.op_post(&format!("/api/v1/lectures/{id}/cancel"), json!({}))
        .await;
    assert_eq!(h.catalogue.deliver_due_webhooks().await.unwrap(), 0);
    let pending = h.catalogue.pending_webhooks().await.unwrap();
    assert_eq!(pending, [("lecture.cancelled".to_string(), 1, false)]);
    h.stop().await;
    let mut s = settings;
    s.webhook = Some(hook(&rx.url));
    let h = Harness::open(db, s, dir, clock).await;
    h.clock.advance(5);
    let runner = tokio::spawn(h.catalogue.clone().run(std::future::pending()));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while rx.got.lock().unwrap().len() < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "not delivered after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rx.got.lock().unwrap()[4].0, "lecture.cancelled");
    // The receiver has the event before the catalogue has its answer and marks it
    // delivered: wait for that, with the runner still going.
    while !h.catalogue.pending_webhooks().await.unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "delivered but still pending"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    runner.abort();
    rx.task.abort();
    h.stop().await;
}

fn lectures_config(toml: &str) -> Vec<config::LectureConfig> {
    config::Config::from_toml_str_with_env(toml, std::iter::empty())
        .unwrap()
        .lecture
}

async fn config_import_is_idempotent(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let file = lectures_config(
        r#"
[[lecture]]
name = "xihe"
title = "西和讲堂 书法课"
publish_key = "hall-key-123"
language = "yue"
starts_at = "2030-01-09T11:30:00Z"
ends_at = "2030-01-09T13:00:00Z"
hall = "西和讲堂"
category = "culture"
seats = 40
visibility = "booking"

[[lecture]]
name = "open"
"#,
    );
    h.catalogue.import_config(&file).await.unwrap();
    h.catalogue.import_config(&file).await.unwrap();
    let (_, list) = h.op_get("/api/v1/lectures?include_private=true").await;
    let list = list["lectures"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "imported once");
    let xihe = list.iter().find(|l| l["stream"] == "xihe").unwrap();
    assert_eq!(xihe["title"], "西和讲堂 书法课");
    assert_eq!(xihe["hall"]["name"], "西和讲堂");
    assert_eq!(xihe["category"]["slug"], "culture");
    assert_eq!(xihe["seats"], 40);
    assert_eq!(xihe["visibility"], "booking");
    assert_eq!(xihe["dialects"], json!(["yue"]));
    let open = list.iter().find(|l| l["stream"] == "open").unwrap();
    assert_eq!(open["starts_at"], Value::Null);
    assert_eq!(open["booking_open"], false);
    let (_, halls) = h.get("/api/v1/halls").await;
    assert_eq!(halls["halls"].as_array().unwrap().len(), 1);
    assert_eq!(
        h.catalogue.may_publish("xihe", Some("hall-key-123")),
        Verdict::Allow
    );
    assert_eq!(h.catalogue.may_publish("open", None), Verdict::Allow);
    let (s, _) = h
        .op_post("/api/v1/stream-keys/xihe/rotate", json!({}))
        .await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "a key from the file is changed in the file"
    );

    // Booked, then gone from the file: kept. Never booked: removed.
    let id = xihe["id"].as_i64().unwrap();
    let (s, _) = h.book(id, "p", "seat").await;
    assert_eq!(s, StatusCode::CREATED);
    h.catalogue.import_config(&[]).await.unwrap();
    let (_, list) = h.op_get("/api/v1/lectures?include_private=true").await;
    let streams: Vec<&str> = list["lectures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["stream"].as_str().unwrap())
        .collect();
    assert_eq!(streams, ["xihe"]);
    let bad = lectures_config("[[lecture]]\nname = \"x\"\ncategory = \"cooking\"\n");
    let e = h
        .catalogue
        .import_config(&bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("lecture[0].category"), "{e}");
    h.stop().await;
}

async fn admission_keys_and_tokens(db: Db) {
    let h = Harness::start(db, |s| s.key_rotation_grace_s = 600).await;
    assert_eq!(h.catalogue.may_publish("unknown", None), Verdict::NotMine);
    assert_eq!(h.catalogue.may_watch("unknown", None), Verdict::NotMine);
    let public = h.lecture("pub", 3600, None).await;
    let booked = h
        .lecture_with("members", 3600, Some(10), json!({"visibility": "booking"}))
        .await;
    let (s, key) = h.op_get("/api/v1/stream-keys/members").await;
    assert_eq!(s, StatusCode::OK);
    let old = key["publish_key"].as_str().unwrap().to_string();
    assert_eq!(old.len(), 24);
    assert_eq!(
        h.catalogue.may_publish("members", Some(&old)),
        Verdict::Allow
    );
    assert_eq!(
        h.catalogue.may_publish("members", Some("guess")),
        Verdict::Deny(Refusal::BadKey)
    );
    assert_eq!(
        h.catalogue.may_publish("members", None),
        Verdict::Deny(Refusal::BadKey)
    );
    let (s, new) = h
        .op_post("/api/v1/stream-keys/members/rotate", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let new = new["publish_key"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(
        h.catalogue.may_publish("members", Some(&new)),
        Verdict::Allow
    );
    assert_eq!(
        h.catalogue.may_publish("members", Some(&old)),
        Verdict::Allow,
        "grace"
    );
    h.clock.advance(601);
    assert_eq!(
        h.catalogue.may_publish("members", Some(&old)),
        Verdict::Deny(Refusal::BadKey)
    );

    let _ = public;
    assert_eq!(h.catalogue.may_watch("pub", None), Verdict::Allow);
    assert_eq!(
        h.catalogue.may_watch("members", None),
        Verdict::Deny(Refusal::TokenMissing)
    );
    let (_, b) = h.book(booked, "viewer", "online").await;
    let token = b["playback_token"].as_str().unwrap().to_string();
    assert_eq!(
        h.catalogue.may_watch("members", Some(&token)),
        Verdict::Allow
    );
    assert_eq!(
        h.catalogue
            .may_watch("members", Some(&token.replace("members", "pub"))),
        Verdict::Deny(Refusal::TokenInvalid)
    );
    let (s, school) = h
        .op_post(
            &format!("/api/v1/lectures/{public}/playback-tokens"),
            json!({"hours": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        h.catalogue
            .may_watch("members", Some(school["token"].as_str().unwrap())),
        Verdict::Deny(Refusal::TokenOtherLecture)
    );
    h.clock.advance(8 * 86_400 + 7200);
    assert_eq!(
        h.catalogue.may_watch("members", Some(&token)),
        Verdict::Deny(Refusal::TokenExpired)
    );
    h.stop().await;
}
