//! The programme API end to end over a loopback socket, every scenario on SQLite and on
//! PostgreSQL.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Db, Harness};

fn ts(s: i64) -> String {
    jiff::Timestamp::from_second(s).unwrap().to_string()
}

fn secs(v: &Value) -> i64 {
    v.as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_second()
}

on_both!(
    programme_halls_lectures_series,
    seats_waiting_list_and_cancellation,
    cancellation_deadline,
    idempotent_booking,
    no_show_rule,
    check_in_and_attendance_csv,
    operator_auth_and_json_errors,
    capacity_race,
);

async fn programme_halls_lectures_series(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let (s, b) = h.get("/api/v1/categories").await;
    assert_eq!(s, StatusCode::OK);
    let slugs: Vec<&str> = b["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["slug"].as_str().unwrap())
        .collect();
    assert_eq!(
        slugs,
        ["theory", "education", "culture", "science", "fitness"]
    );
    assert_eq!(b["categories"][2]["name_zh"], "文化服务");

    let (s, hall) = h
        .op_post(
            "/api/v1/halls",
            json!({"name": "西和讲堂", "town": "城郊街", "village": "西和村", "address": "西和路 1 号", "seats": 120}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{hall}");
    let hall_id = hall["id"].as_i64().unwrap();
    let (s, _) = h
        .op_post("/api/v1/halls", json!({"name": "西和讲堂"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "hall names are unique");

    let id = h
        .lecture_with(
            "xihe",
            86_400,
            Some(80),
            json!({"category": "culture", "hall_id": hall_id, "speaker": "李老师", "dialects": ["cmn", "yue"]}),
        )
        .await;
    let (s, l) = h.get(&format!("/api/v1/lectures/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(l["stream"], "xihe");
    assert_eq!(l["seats"], 80);
    assert_eq!(l["seats_left"], 80);
    assert_eq!(l["category"]["slug"], "culture");
    assert_eq!(l["hall"]["village"], "西和村");
    assert_eq!(l["dialects"], json!(["cmn", "yue"]));
    assert_eq!(l["booking_open"], true);
    assert_eq!(secs(&l["starts_at"]), h.now() + 86_400);

    let private = h
        .lecture_with("school", 3600, None, json!({"visibility": "private"}))
        .await;
    let (_, list) = h.get("/api/v1/lectures").await;
    let ids: Vec<i64> = list["lectures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [id], "private lectures are not listed");
    let (s, _) = h.get(&format!("/api/v1/lectures/{private}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, list) = h.op_get("/api/v1/lectures?include_private=true").await;
    assert_eq!(list["lectures"].as_array().unwrap().len(), 2);
    let (_, list) = h.get("/api/v1/lectures?category=science").await;
    assert_eq!(list["lectures"].as_array().unwrap().len(), 0);
    let (_, list) = h.get("/api/v1/lectures?town=城郊街").await;
    assert_eq!(list["lectures"].as_array().unwrap().len(), 1);

    // Every Tuesday 19:30 in Asia/Shanghai (11:30 UTC) through January 2030: 4 dates.
    let (s, series) = h
        .op_post(
            "/api/v1/series",
            json!({"title": "书法课", "stream": "shufa", "category": "文化服务", "hall_id": hall_id,
                   "seats": 2, "weekday": 2, "start_time": "19:30", "duration_minutes": 90,
                   "first_date": "2030-01-07", "last_date": "2030-01-31"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{series}");
    let occ: Vec<i64> = series["occurrences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(occ.len(), 4);
    let (_, first) = h.get(&format!("/api/v1/lectures/{}", occ[0])).await;
    assert_eq!(first["starts_at"], "2030-01-08T11:30:00Z");
    assert_eq!(first["ends_at"], "2030-01-08T13:00:00Z");
    assert_eq!(first["series_id"], series["id"]);

    // A booking on the second date follows it when that date moves.
    let (s, booked) = h.book(occ[1], "13800000001", "seat").await;
    assert_eq!(s, StatusCode::CREATED, "{booked}");
    let (s, moved) = h
        .op_patch(
            &format!("/api/v1/lectures/{}", occ[1]),
            json!({"starts_at": "2030-01-16T11:30:00Z", "ends_at": "2030-01-16T13:00:00Z"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{moved}");
    let code = booked["ticket_code"].as_str().unwrap();
    let (_, b) = h.get(&format!("/api/v1/bookings/{code}")).await;
    assert_eq!(b["lecture_id"].as_i64(), Some(occ[1]));
    assert_eq!(b["status"], "confirmed");
    // The third is cancelled.
    let (s, c) = h
        .op_post(&format!("/api/v1/lectures/{}/cancel", occ[2]), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(c["status"], "cancelled");
    assert_eq!(c["booking_open"], false);

    // The series moves to 20:00 and runs a week longer: the moved date keeps its time.
    let (s, series) = h
        .op_patch(
            &format!("/api/v1/series/{}", series["id"]),
            json!({"start_time": "20:00", "last_date": "2030-02-07"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{series}");
    let occ2: Vec<i64> = series["occurrences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(occ2.len(), 5);
    let (_, first) = h.get(&format!("/api/v1/lectures/{}", occ[0])).await;
    assert_eq!(first["starts_at"], "2030-01-08T12:00:00Z");
    let (_, second) = h.get(&format!("/api/v1/lectures/{}", occ[1])).await;
    assert_eq!(
        second["starts_at"], "2030-01-16T11:30:00Z",
        "moved one by one"
    );
    let (_, last) = h.get(&format!("/api/v1/lectures/{}", occ2[4])).await;
    assert_eq!(last["starts_at"], "2030-02-05T12:00:00Z");
    let (s, list) = h.get("/api/v1/series").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["series"][0]["start_time"], "20:00");
    h.stop().await;
}

async fn seats_waiting_list_and_cancellation(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let id = h.lecture("small", 7 * 86_400, Some(2)).await;
    let (s, a) = h.book(id, "a", "seat").await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(a["status"], "confirmed");
    assert_eq!(a["ticket_code"].as_str().unwrap().len(), 16);
    let (s, _) = h.book(id, "b", "seat").await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, c) = h.book(id, "c", "seat").await;
    assert_eq!(s, StatusCode::CONFLICT, "{c}");
    assert_eq!(c["waiting_list_place"], 1);
    assert_eq!(c["booking"]["status"], "waiting");
    assert!(c["error"].as_str().unwrap().contains("waiting list"));
    let (s, d) = h.book(id, "d", "seat").await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(d["waiting_list_place"], 2);
    let (s, online) = h.book(id, "e", "online").await;
    assert_eq!(s, StatusCode::CREATED, "online places are not limited");
    assert_eq!(online["kind"], "online");
    let (s, again) = h.book(id, "a", "online").await;
    assert_eq!(s, StatusCode::CONFLICT, "{again}");
    assert!(again.get("waiting_list_place").is_none());
    let (_, l) = h.get(&format!("/api/v1/lectures/{id}")).await;
    assert_eq!(
        (l["seats_left"].as_i64(), l["waiting"].as_i64()),
        (Some(0), Some(2))
    );

    // A cancelled seat goes to the first in the queue.
    let code = |v: &Value, k: &str| v[k]["ticket_code"].as_str().unwrap().to_string();
    let (s, gone) = h
        .delete(&format!(
            "/api/v1/bookings/{}",
            a["ticket_code"].as_str().unwrap()
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(gone["status"], "cancelled");
    let (_, c_now) = h
        .get(&format!("/api/v1/bookings/{}", code(&c, "booking")))
        .await;
    assert_eq!(c_now["status"], "confirmed");
    let (_, d_now) = h
        .get(&format!("/api/v1/bookings/{}", code(&d, "booking")))
        .await;
    assert_eq!(d_now["waiting_list_place"], 1);
    // More seats: the queue moves up into them.
    let (s, l) = h
        .op_patch(&format!("/api/v1/lectures/{id}"), json!({"seats": 3}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (l["seats_left"].as_i64(), l["waiting"].as_i64()),
        (Some(0), Some(0))
    );
    let (_, d_now) = h
        .get(&format!("/api/v1/bookings/{}", code(&d, "booking")))
        .await;
    assert_eq!(d_now["status"], "confirmed");
    let (s, e) = h
        .op_patch(&format!("/api/v1/lectures/{id}"), json!({"seats": 2}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "not below the booked seats: {e}");
    // A person may book again after cancelling.
    let (s, _) = h.book(id, "a", "seat").await;
    assert_eq!(s, StatusCode::CONFLICT, "full again: a waits");
    h.stop().await;
}

async fn cancellation_deadline(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    // Starts in 2 hours; seats can be cancelled until a day before.
    let id = h.lecture("soon", 7200, Some(1)).await;
    let (_, seat) = h.book(id, "a", "seat").await;
    let (_, waiting) = h.book(id, "b", "seat").await;
    let seat = seat["ticket_code"].as_str().unwrap();
    let (s, e) = h.delete(&format!("/api/v1/bookings/{seat}")).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(e["error"].as_str().unwrap().contains("too late"), "{e}");
    let waiting = waiting["booking"]["ticket_code"].as_str().unwrap();
    let (s, _) = h.delete(&format!("/api/v1/bookings/{waiting}")).await;
    assert_eq!(s, StatusCode::OK, "the waiting list can always be left");
    let (s, b) = h.op_delete(&format!("/api/v1/bookings/{seat}")).await;
    assert_eq!(s, StatusCode::OK, "operators may cancel late");
    assert_eq!(b["status"], "cancelled");
    // Booking closes at the start.
    h.clock.advance(7200);
    let (s, e) = h.book(id, "c", "seat").await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(e["error"].as_str().unwrap().contains("closed"), "{e}");
    h.stop().await;
}

async fn idempotent_booking(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let id = h.lecture("idem", 86_400, Some(1)).await;
    let send = |person: &'static str, key: &'static str| {
        h.http
            .post(h.url(&format!("/api/v1/lectures/{id}/bookings")))
            .header("Idempotency-Key", key)
            .json(&json!({"person": person}))
            .send()
    };
    let r1 = send("p", "key-1").await.unwrap();
    assert_eq!(r1.status(), StatusCode::CREATED);
    assert!(r1.headers().get("idempotent-replayed").is_none());
    let b1: Value = r1.json().await.unwrap();
    let r2 = send("p", "key-1").await.unwrap();
    assert_eq!(r2.status(), StatusCode::CREATED, "the same answer again");
    assert_eq!(r2.headers()["idempotent-replayed"], "true");
    assert_eq!(
        r2.headers()["location"].to_str().unwrap(),
        format!("/api/v1/bookings/{}", b1["ticket_code"].as_str().unwrap())
    );
    let b2: Value = r2.json().await.unwrap();
    assert_eq!(b1["ticket_code"], b2["ticket_code"]);
    let r3 = send("q", "key-1").await.unwrap();
    assert_eq!(
        r3.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "key reused for another request"
    );
    // Full: the waiting answer replays too.
    let r4 = send("q", "key-2").await.unwrap();
    assert_eq!(r4.status(), StatusCode::CONFLICT);
    let r5 = send("q", "key-2").await.unwrap();
    assert_eq!(r5.status(), StatusCode::CONFLICT);
    let (a, b): (Value, Value) = (r4.json().await.unwrap(), r5.json().await.unwrap());
    assert_eq!(a["booking"]["ticket_code"], b["booking"]["ticket_code"]);
    let (_, list) = h.op_get(&format!("/api/v1/lectures/{id}/bookings")).await;
    assert_eq!(list["bookings"].as_array().unwrap().len(), 2);
    h.stop().await;
}

async fn no_show_rule(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let day = 86_400;
    let past: Vec<i64> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(
                h.lecture(&format!("past{i}"), (i + 1) * day, Some(10))
                    .await,
            );
        }
        v
    };
    let later = h.lecture("later", 10 * day, Some(10)).await;
    let unscanned = h.lecture("unscanned", 4 * day, Some(10)).await;
    for &id in &past {
        let (s, _) = h.book(id, "absent", "seat").await;
        assert_eq!(s, StatusCode::CREATED);
        let (_, present) = h.book(id, "present", "seat").await;
        let (s, c) = h
            .op_post(
                &format!("/api/v1/lectures/{id}/checkins"),
                json!({"code": present["ticket_code"]}),
            )
            .await;
        assert_eq!((s, c["result"].as_str()), (StatusCode::OK, Some("valid")));
    }
    // At a hall that does not scan tickets nobody becomes a no-show.
    let (s, _) = h.book(unscanned, "absent", "seat").await;
    assert_eq!(s, StatusCode::CREATED);
    h.clock.advance(5 * day);
    let (s, e) = h.book(later, "absent", "seat").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("3 booked seats"),
        "{e}"
    );
    let (s, _) = h.book(later, "present", "seat").await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = h.book(later, "absent", "online").await;
    assert_eq!(s, StatusCode::CREATED, "watching online stays open");
    let (s, _) = h
        .delete(&format!(
            "/api/v1/bookings/{}",
            h.catalogue.lecture_bookings(later).await.unwrap()[1].ticket_code
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    let r = h
        .http
        .post(h.url("/api/v1/people/absent/forgive"))
        .bearer_auth(support::OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (s, _) = h.book(later, "absent", "seat").await;
    assert_eq!(s, StatusCode::CREATED, "forgiven");
    h.stop().await;
}

async fn check_in_and_attendance_csv(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let id = h.lecture("door", 3600, Some(1)).await;
    let other = h.lecture("other", 3600, Some(5)).await;
    let (_, seat) = h.book(id, "=HYPERLINK(\"x\")", "seat").await;
    let (_, waiting) = h.book(id, "w", "seat").await;
    let (_, online) = h.book(id, "o", "online").await;
    let (_, elsewhere) = h.book(other, "x", "seat").await;
    let (_, cancelled) = h.book(id, "y", "online").await;
    let cancelled = cancelled["ticket_code"].as_str().unwrap();
    h.delete(&format!("/api/v1/bookings/{cancelled}")).await;
    let check = |code: String| {
        let h = &h;
        async move {
            let (s, b) = h
                .op_post(
                    &format!("/api/v1/lectures/{id}/checkins"),
                    json!({"code": code}),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{b}");
            b
        }
    };
    let code = |v: &Value| v["ticket_code"].as_str().unwrap().to_string();
    // Typed in by hand: lower case with dashes.
    let typed = code(&seat)
        .to_lowercase()
        .chars()
        .collect::<Vec<_>>()
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-");
    h.clock.advance(3000);
    let v = check(typed).await;
    assert_eq!(v["result"], "valid");
    assert_eq!(secs(&v["checked_in_at"]), h.now());
    h.clock.advance(60);
    let v = check(code(&seat)).await;
    assert_eq!(v["result"], "already_used");
    assert_eq!(secs(&v["checked_in_at"]), h.now() - 60, "the first use");
    assert_eq!(check(code(&elsewhere)).await["result"], "wrong_lecture");
    assert_eq!(
        check(code(&elsewhere)).await["lecture_id"].as_i64(),
        Some(other)
    );
    assert_eq!(check(cancelled.to_string()).await["result"], "cancelled");
    assert_eq!(check(code(&waiting["booking"])).await["result"], "waiting");
    assert_eq!(check(code(&online)).await["result"], "online_only");
    assert_eq!(check("NOPE-NOPE".into()).await["result"], "unknown");

    let r = h
        .http
        .get(h.url(&format!("/api/v1/lectures/{id}/attendance.csv")))
        .bearer_auth(support::OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = r.text().await.unwrap();
    let csv = csv.strip_prefix('\u{feff}').expect("a byte-order mark");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "ticket,name,contact,kind,status,booked_at,checked_in_at"
    );
    assert_eq!(lines.len(), 5, "{csv}");
    assert!(lines[1].starts_with(&code(&seat)));
    assert!(lines[1].contains("名字 =HYPERLINK"), "{csv}");
    // Checked in at t0 + 3000 s = 2030-01-07 08:50:00 in Asia/Shanghai.
    assert!(lines[1].ends_with(",2030-01-07 08:50:00"), "{csv}");
    assert!(lines[2].contains(",waiting,"));
    h.stop().await;
}

async fn operator_auth_and_json_errors(db: Db) {
    let h = Harness::start(db, |s| s.bookings_per_minute = 3).await;
    let r = h
        .http
        .post(h.url("/api/v1/halls"))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let b: Value = r.json().await.unwrap();
    assert!(b["error"].as_str().unwrap().contains("operator token"));
    let r = h
        .http
        .post(h.url("/api/v1/halls"))
        .bearer_auth("wrong-token-wrong-token")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    for path in [
        "/api/v1/lectures/1/attendance.csv",
        "/api/v1/lectures/1/bookings",
        "/api/v1/stream-keys/x",
    ] {
        let (s, _) = h.get(path).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
    }
    let (s, b) = h.get("/api/v1/lectures/999").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(b["error"], "no lecture 999");
    let (s, b) = h.get("/api/v1/lectures/abc").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["error"].is_string());
    let r = h
        .http
        .post(h.url("/api/v1/lectures/1/bookings"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let b: Value = r.json().await.unwrap();
    assert!(b["error"].is_string());
    let (s, b) = h
        .op_post("/api/v1/lectures", json!({"title": "x", "stream": "../etc", "starts_at": ts(h.now()), "ends_at": ts(h.now() + 60)}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(b["error"].as_str().unwrap().starts_with("stream must be"));
    let (s, b) = h
        .op_post(
            "/api/v1/lectures",
            json!({"title": "x", "stream": "x", "starts_at": ts(h.now()), "ends_at": ts(h.now())}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    // Bookings are rate-limited per address (3 a minute here).
    let id = h.lecture("rl", 86_400, Some(10)).await;
    for i in 0..3 {
        let (s, _) = h.book(id, &format!("p{i}"), "seat").await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (s, b) = h.book(id, "p4", "seat").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(b["error"].as_str().unwrap().contains("too many"));
    let (s, doc) = h.get("/api/v1/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        doc["openapi"].as_str().map(|v| v.starts_with('3')),
        Some(true)
    );
    for p in [
        "/api/v1/lectures",
        "/api/v1/lectures/{id}",
        "/api/v1/lectures/{id}/bookings",
        "/api/v1/bookings/{code}",
        "/api/v1/lectures/{id}/checkins",
        "/api/v1/lectures/{id}/attendance.csv",
        "/api/v1/halls",
        "/api/v1/categories",
        "/api/v1/series",
        "/api/v1/categories/{slug}/calendar.ics",
    ] {
        assert!(
            doc["paths"].get(p).is_some(),
            "{p} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"].get("Lecture").is_some());
    h.stop().await;
}

/// Hundreds of people book 50 seats at once: exactly 50 get one, the rest wait in a queue
/// with distinct places; cancellations promote the first in the queue.
async fn capacity_race(db: Db) {
    let h = Harness::start(db, |_| {}).await;
    let id = h.lecture("race", 86_400, Some(50)).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..300 {
        let (http, url) = (
            h.http.clone(),
            h.url(&format!("/api/v1/lectures/{id}/bookings")),
        );
        tasks.spawn(async move {
            let r = http
                .post(url)
                .json(&json!({"person": format!("racer-{i}")}))
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        });
    }
    let mut confirmed = Vec::new();
    let mut places = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (status, body) = r.unwrap();
        match status {
            StatusCode::CREATED => {
                confirmed.push(body["ticket_code"].as_str().unwrap().to_string())
            }
            StatusCode::CONFLICT => places.push(body["waiting_list_place"].as_i64().unwrap()),
            s => panic!("unexpected {s}: {body}"),
        }
    }
    assert_eq!(confirmed.len(), 50);
    assert_eq!(places.len(), 250);
    places.sort();
    assert_eq!(places, (1..=250).collect::<Vec<_>>(), "every place once");
    let (_, l) = h.get(&format!("/api/v1/lectures/{id}")).await;
    assert_eq!(
        (l["seats_left"].as_i64(), l["waiting"].as_i64()),
        (Some(0), Some(250))
    );

    // Ten cancel at once: the first ten in the queue get their seats.
    let bookings = h.catalogue.lecture_bookings(id).await.unwrap();
    let first_waiting: Vec<String> = bookings
        .iter()
        .filter(|b| b.status == catalogue::BookingStatus::Waiting)
        .take(10)
        .map(|b| b.ticket_code.clone())
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for code in confirmed.iter().take(10) {
        let (http, url) = (h.http.clone(), h.url(&format!("/api/v1/bookings/{code}")));
        tasks.spawn(async move { http.delete(url).send().await.unwrap().status() });
    }
    while let Some(s) = tasks.join_next().await {
        assert_eq!(s.unwrap(), StatusCode::OK);
    }
    let bookings = h.catalogue.lecture_bookings(id).await.unwrap();
    let count = |s| bookings.iter().filter(|b| b.status == s).count();
    assert_eq!(count(catalogue::BookingStatus::Confirmed), 50);
    assert_eq!(count(catalogue::BookingStatus::Waiting), 240);
    assert_eq!(count(catalogue::BookingStatus::Cancelled), 10);
    for code in &first_waiting {
        let b = bookings.iter().find(|b| &b.ticket_code == code).unwrap();
        assert_eq!(
            b.status,
            catalogue::BookingStatus::Confirmed,
            "promoted in order"
        );
    }
    let (_, l) = h.get(&format!("/api/v1/lectures/{id}")).await;
    assert_eq!(
        (l["seats_left"].as_i64(), l["waiting"].as_i64()),
        (Some(0), Some(240))
    );
    h.stop().await;
}
