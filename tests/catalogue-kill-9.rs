//! `kill -9` of the real binary under booking load: every booking that was answered 201
//! is there after a restart, on SQLite and on PostgreSQL.

mod common;
#[path = "../catalogue/tests/support/pg.rs"]
mod pg;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Server;
use serde_json::{Value, json};

async fn post(http: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("post");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn kill_under_load(catalogue_toml: &str) {
    let config = format!("[catalogue]\n{catalogue_toml}\nbookings_per_minute = 1000000\n");
    let mut server = Server::start(&config);
    let http = reqwest::Client::new();
    let (s, lecture) = post(
        &http,
        server.url("/api/v1/lectures"),
        json!({"title": "压力测试", "stream": "load", "seats": 100000,
               "starts_at": "2099-01-01T00:00:00Z", "ends_at": "2099-01-01T01:00:00Z"}),
    )
    .await;
    assert_eq!(s, 201, "{lecture}");
    let id = lecture["id"].as_i64().unwrap();
    let url = server.url(&format!("/api/v1/lectures/{id}/bookings"));

    // 16 clients book as fast as they can; each acknowledged ticket is recorded.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for c in 0..16 {
        let (http, url, acked) = (http.clone(), url.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            for i in 0..100_000 {
                let body = json!({"person": format!("p{c}-{i}")}).to_string();
                let r = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let Ok(r) = r else { return };
                if r.status().as_u16() != 201 {
                    return;
                }
                let Ok(text) = r.text().await else { return };
                let v: Value = serde_json::from_str(&text).unwrap();
                acked
                    .lock()
                    .unwrap()
                    .push(v["ticket_code"].as_str().unwrap().to_string());
            }
        }));
    }
    // Kill once bookings are flowing, in the middle of them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 200 {
        assert!(Instant::now() < deadline, "no bookings: {}", server.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    for c in clients {
        let _ = c.await;
    }
    let acked = acked.lock().unwrap().clone();
    drop(server);

    let server = Server::start(&config);
    let mut confirmed = 0;
    for code in &acked {
        let r = http
            .get(server.url(&format!("/api/v1/bookings/{code}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "acknowledged booking {code} lost");
        let b: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(b["status"], "confirmed");
        confirmed += 1;
    }
    // The seat count agrees with the bookings that survived (acknowledged or not).
    let r = http
        .get(server.url(&format!("/api/v1/lectures/{id}/bookings")))
        .send()
        .await
        .unwrap();
    let all: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let stored = all["bookings"].as_array().unwrap().len() as i64;
    let r = http
        .get(server.url(&format!("/api/v1/lectures/{id}")))
        .send()
        .await
        .unwrap();
    let l: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(l["seats_left"].as_i64(), Some(100_000 - stored));
    assert!(stored >= confirmed);
    eprintln!(
        "{} acknowledged, {} stored after kill -9",
        acked.len(),
        stored
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_every_acknowledged_booking() {
    let dir = std::env::temp_dir().join(format!("jiangtang-kill9-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("catalogue.db");
    kill_under_load(&format!("database_path = \"{}\"", path.display())).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_every_acknowledged_booking() {
    let url = pg::shared().database();
    kill_under_load(&format!("database_url = \"{url}\"")).await;
}
