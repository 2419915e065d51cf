//! Bookings per address per minute through the real HTTP API, at the limit and one beyond,
//! and a flood of 5,000 booking requests from one address: that address is held to its
//! allowance, another address books as usual, every booking answered 201 is in the
//! database afterwards, the refusals are logged once a minute (not 5,000 times), and the
//! relay's memory is back within 5 % of where it was. Loopback only, bounded.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Server;
use serde_json::{Value, json};

const FLOOD: usize = 5000;
const PER_MINUTE: usize = 10;

fn client_from(last: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Books for `person`: the status and, for a 201, the ticket code.
async fn book(http: &reqwest::Client, url: &str, person: &str) -> (u16, Option<String>) {
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .body(json!({ "person": person }).to_string())
        .send()
        .await
        .expect("an answer");
    let status = r.status().as_u16();
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap_or_default();
    if status == 429 {
        assert!(
            body["error"]
                .as_str()
                .unwrap_or("")
                .contains("too many bookings"),
            "{body}"
        );
    }
    (status, body["ticket_code"].as_str().map(str::to_string))
}

async fn limit_hits(s: &Server, name: &str) -> u64 {
    let text = reqwest::get(s.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("jiangtang_limit_hits_total{{limit=\"{name}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

async fn memory(s: &Server) -> (f64, f64) {
    let url = s.url("/metrics");
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    let heap = text
        .lines()
        .find_map(|l| l.strip_prefix("jiangtang_heap_allocated_bytes "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap()
        / 1048576.0;
    (heap, s.rss_mib())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_at_and_over_the_limit_and_a_flood_from_one_address() {
    let s = Server::start(&format!(
        "[catalogue]\nbookings_per_minute = {PER_MINUTE}\n"
    ));
    let local = client_from(1);
    let r = local
        .post(s.url("/api/v1/lectures"))
        .header("content-type", "application/json")
        .body(
            json!({"title": "洪水", "stream": "flood", "seats": 100000,
                   "starts_at": "2099-01-01T00:00:00Z", "ends_at": "2099-01-01T01:00:00Z"})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let id = serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap()["id"]
        .as_i64()
        .unwrap();
    let url = s.url(&format!("/api/v1/lectures/{id}/bookings"));
    let mut acknowledged = Vec::new();

    // At the limit from one address: all 10 booked; the 11th is refused with 429.
    let two = client_from(2);
    for i in 0..PER_MINUTE {
        let (st, code) = book(&two, &url, &format!("two-{i}")).await;
        assert_eq!(st, 201);
        acknowledged.push(code.unwrap());
    }
    assert_eq!(book(&two, &url, "two-over").await.0, 429);
    let logged = "bookings refused: more than 10 a minute from this address (catalogue.bookings_per_minute) remote=127.0.0.2";
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.log().contains(logged) {
        assert!(
            Instant::now() < deadline,
            "refusal not logged:\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(limit_hits(&s, "bookings").await, 1);

    tokio::time::sleep(Duration::from_secs(1)).await;
    let base = memory(&s).await;

    // The flood: 5,000 requests from 127.0.0.3, 50 at a time; meanwhile 127.0.0.4 books
    // five times, a second apart.
    let flood_started = Instant::now();
    let statuses = Arc::new([(); 3].map(|_| AtomicUsize::new(0)));
    let flooder = client_from(3);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..50 {
        let (http, url, next, statuses) =
            (flooder.clone(), url.clone(), next.clone(), statuses.clone());
        workers.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= FLOOD {
                    return codes;
                }
                let (st, code) = book(&http, &url, &format!("flood-{i}")).await;
                let slot = match st {
                    201 => 0,
                    429 => 1,
                    _ => 2,
                };
                statuses[slot].fetch_add(1, Ordering::Relaxed);
                codes.extend(code);
            }
        }));
    }
    let four = client_from(4);
    let mut during = (0.0f64, 0.0f64);
    for i in 0..5 {
        let (st, code) = book(&four, &url, &format!("four-{i}")).await;
        assert_eq!(st, 201, "another address was held by the flood");
        acknowledged.push(code.unwrap());
        let m = memory(&s).await;
        during = (during.0.max(m.0), during.1.max(m.1));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for w in workers {
        acknowledged.extend(w.await.unwrap());
    }
    let flood_time = flood_started.elapsed();
    let [ok, refused, other] = [0, 1, 2].map(|i| statuses[i].load(Ordering::Relaxed));
    assert_eq!(other, 0, "answers other than 201 and 429");
    assert_eq!(ok + refused, FLOOD);
    // The allowance, plus what refilled while the flood ran.
    let allowed =
        PER_MINUTE + (flood_time.as_secs_f64() / 60.0 * PER_MINUTE as f64).ceil() as usize;
    assert!(
        ok <= allowed,
        "{ok} of the flood booked, at most {allowed} allowed"
    );
    assert!(ok >= 1);
    let refusal_lines = s
        .log()
        .lines()
        .filter(|l| l.contains("bookings refused") && l.contains("remote=127.0.0.3"))
        .count();
    assert_eq!(
        refusal_lines,
        1 + (flood_time.as_secs() / 60) as usize,
        "refusals logged once a minute"
    );
    assert_eq!(limit_hits(&s, "bookings").await, 1 + refused as u64);

    // Nothing acknowledged is lost: every 201 is stored and confirmed.
    for code in &acknowledged {
        let r = local
            .get(s.url(&format!("/api/v1/bookings/{code}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            200,
            "acknowledged booking {code} missing"
        );
        let b: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(b["status"], "confirmed");
    }
    let r = local.get(&url).send().await.unwrap();
    let all: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(
        all["bookings"].as_array().unwrap().len(),
        acknowledged.len()
    );

    // Memory back within 5 % once the flood is over and its clients have gone (their
    // kept-alive connections hold the relay's buffers while they stay).
    drop((flooder, two, four));
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let m = memory(&s).await;
        if (m.0 <= base.0 * 1.05 && m.1 <= base.1 * 1.05) || Instant::now() >= deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!(
        "flood-bookings: {FLOOD} requests in {:.1} s from one address: {ok} booked, {refused} refused (429); heap MiB before/during/after {:.1}/{:.1}/{:.1}, RSS MiB {:.1}/{:.1}/{:.1}",
        flood_time.as_secs_f64(),
        base.0,
        during.0,
        after.0,
        base.1,
        during.1,
        after.1
    );
    assert!(
        after.0 <= base.0 * 1.05,
        "heap {after:?} after, {base:?} before"
    );
    assert!(
        after.1 <= base.1 * 1.05,
        "RSS {after:?} after, {base:?} before"
    );
}
