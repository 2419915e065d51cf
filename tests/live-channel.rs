//! The live channel (`/ws/NAME`): state pushed as the lecture goes from scheduled to live to
//! reconnecting, questions and raised hands delivered to the operator's API, and every limit
//! (size, rate, length, garbage) enforced without harming the lecture; what one client may
//! hold (channels per address, a socket that stops reading) and what is kept (questions only
//! for real lectures, forgotten with them).

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn aget(url: String) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

async fn next_of(ws: &mut Ws, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {kind} message in time"))
            .expect("socket open")
            .expect("message");
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == kind && pred(&v) {
                return v;
            }
        }
    }
}

#[test]
fn live_channel_pushes_state_and_takes_questions() {
    let s = Server::start(
        "[[lecture]]\nname = \"xihe\"\ntitle = \"西和讲堂 <script>alert(1)</script>\"\nstarts_at = \"2099-01-01T19:30:00+08:00\"\nlanguage = \"yue\"\n",
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/xihe", s.http)).await.unwrap();
        let st = next_of(&mut ws, "state", |_| true).await;
        assert_eq!(st["status"], "scheduled");
        assert_eq!(st["title"], "西和讲堂 <script>alert(1)</script>");
        assert_eq!(st["starts_at"], "2099-01-01T11:30:00Z");
        let api: Value = serde_json::from_str(&aget(s.url("/api/v1/streams/xihe")).await).unwrap();
        assert_eq!(api["status"], "scheduled");

        // The lecture goes live: the state is pushed, with its dialect.
        let mut publisher = ffmpeg_publish(&s.rtmp_url("xihe"), "320x180", 25, 440);
        let st = next_of(&mut ws, "state", |v| v["status"] == "live" && !v["dialects"].as_array().unwrap().is_empty()).await;
        assert_eq!(st["dialects"][0]["lang"], "yue");
        assert_eq!(st["dialects"][0]["name"], "粤语");
        assert_eq!(st["has_video"], true);
        let viewers = next_of(&mut ws, "viewers", |_| true).await;
        assert_eq!(viewers["live_channel"], 1);

        // A question and a raised hand reach the operator's API, as plain text.
        ws.send(Message::Text(json!({"type": "question", "text": "老师，<b>第二题</b>怎么写？", "from": "西和小学 三年级"}).to_string().into())).await.unwrap();
        let ack = next_of(&mut ws, "ack", |_| true).await;
        ws.send(Message::Text(json!({"type": "hand", "from": "良口中学"}).to_string().into())).await.unwrap();
        next_of(&mut ws, "ack", |_| true).await;
        let q: Value = serde_json::from_str(&aget(s.url("/api/v1/streams/xihe/questions")).await).unwrap();
        let list = q["questions"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["id"], ack["id"]);
        assert_eq!(list[0]["text"], "老师，<b>第二题</b>怎么写？");
        assert_eq!(list[0]["from"], "西和小学 三年级");
        assert_eq!(list[1]["kind"], "hand");

        // Limits: too long, garbage, too fast. Each gets an error, the channel stays up.
        tokio::time::sleep(Duration::from_secs(5)).await;
        ws.send(Message::Text(json!({"type": "question", "text": "长".repeat(501)}).to_string().into())).await.unwrap();
        let e = next_of(&mut ws, "error", |_| true).await;
        assert!(e["error"].as_str().unwrap().contains("at most 500"));
        ws.send(Message::Text("{not json".into())).await.unwrap();
        next_of(&mut ws, "error", |_| true).await;
        for _ in 0..4 {
            ws.send(Message::Text(json!({"type": "hand"}).to_string().into())).await.unwrap();
        }
        next_of(&mut ws, "error", |e| e["error"].as_str().unwrap().contains("too many")).await;

        // The publisher drops: "reconnecting" is pushed.
        publisher.stop();
        next_of(&mut ws, "state", |v| v["status"] == "reconnecting").await;

        // A message over 4 KiB closes that connection only.
        let (mut big, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/xihe", s.http)).await.unwrap();
        next_of(&mut big, "state", |_| true).await;
        let _ = big.send(Message::Text("x".repeat(10_000).into())).await;
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match big.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await
        .unwrap_or(false);
        assert!(closed, "oversized message did not close the connection");
        // The first channel is still fine.
        ws.send(Message::Ping(vec![1].into())).await.unwrap();

        // No channel for a name that cannot be a lecture.
        match tokio_tungstenite::connect_async(format!("ws://{}/ws/..%2Fetc", s.http)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 404),
            other => panic!("expected 404, got {:?}", other.map(|_| ())),
        }
    });
    // Stored: the question, the hand, and the one rapid hand the bucket still had a token for
    // (the too-long question and the garbage used up the other two); nothing rejected.
    let q: Value =
        serde_json::from_str(&get_text(&s.url("/api/v1/streams/xihe/questions"))).unwrap();
    let kinds: Vec<_> = q["questions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["question", "hand", "hand"]);
}

#[test]
fn questions_are_for_the_operator_only() {
    let s = Server::start(
        "[http]\noperator_token = \"district-operator-0123\"\n[[lecture]]\nname = \"keyed\"\npublish_key = \"hall-key-123\"\n",
    );
    let _p = ffmpeg_publish(&s.rtmp_url("free"), "160x90", 10, 440);
    wait_for_segments(&s, "free", "video", 1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = s.url("/api/v1/streams/keyed/questions");
        let c = reqwest::Client::new();
        let status = |r: reqwest::Response| r.status().as_u16();
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("operator token"),
            "{body}"
        );
        assert_eq!(
            status(
                c.get(&url)
                    .bearer_auth("wrong-key-123")
                    .send()
                    .await
                    .unwrap()
            ),
            401
        );
        assert_eq!(
            status(
                c.get(&url)
                    .bearer_auth("hall-key-123")
                    .send()
                    .await
                    .unwrap()
            ),
            200
        );
        assert_eq!(
            status(
                c.get(&url)
                    .bearer_auth("district-operator-0123")
                    .send()
                    .await
                    .unwrap()
            ),
            200
        );
        // With an operator token set, being on this machine is not enough for any lecture.
        let free = s.url("/api/v1/streams/free/questions");
        assert_eq!(status(c.get(&free).send().await.unwrap()), 401);
        assert_eq!(
            status(
                c.get(&free)
                    .bearer_auth("district-operator-0123")
                    .send()
                    .await
                    .unwrap()
            ),
            200
        );
    });
}

/// A live channel to lecture `name` from the local address `from` (any 127.0.0.0/8 address
/// reaches the relay on 127.0.0.1).
async fn connect_from(
    s: &Server,
    from: [u8; 4],
    name: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind((std::net::Ipv4Addr::from(from), 0).into())
        .unwrap();
    let tcp = sock.connect(s.http).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(
        format!("ws://{}/ws/{name}", s.http),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
    )
    .await?;
    Ok(ws)
}

/// The HTTP status a refused channel got (panics if it was accepted).
fn refused_with(r: Result<Ws, tokio_tungstenite::tungstenite::Error>) -> u16 {
    match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Ok(_) => panic!("the channel was accepted"),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
    }
}

/// Connects from `from` until the relay accepts (a slot freed), for `within` at most.
async fn connect_when_free(s: &Server, from: [u8; 4], name: &str, within: Duration) -> Ws {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match connect_from(s, from, name).await {
            Ok(ws) => return ws,
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert_eq!(refused_with(Err(e)), 429);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no slot came free in {within:?}: {e}"),
        }
    }
}

/// Whether the relay has closed `ws` (read what it still holds first), within `within`.
async fn closed_within(ws: &mut Ws, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[test]
fn one_address_cannot_take_every_channel() {
    let s = Server::start("[channel]\nmax_per_address = 8\n[[lecture]]\nname = \"xihe\"\n");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut held = Vec::new();
        for _ in 0..8 {
            let mut ws = connect_from(&s, [127, 0, 0, 1], "xihe")
                .await
                .expect("within the cap");
            next_of(&mut ws, "state", |_| true).await;
            held.push(ws);
        }
        // The ninth from the same address is refused before the upgrade, with a reason.
        assert_eq!(
            refused_with(connect_from(&s, [127, 0, 0, 1], "xihe").await),
            429
        );
        // Another address still gets in.
        let mut other = connect_from(&s, [127, 0, 0, 2], "xihe")
            .await
            .expect("another address is not held by the first one's channels");
        let st = next_of(&mut other, "state", |_| true).await;
        assert_eq!(st["status"], "idle");
        // A channel given back frees its slot.
        let mut one = held.pop().unwrap();
        one.close(None).await.unwrap();
        let mut again =
            connect_when_free(&s, [127, 0, 0, 1], "xihe", Duration::from_secs(10)).await;
        next_of(&mut again, "state", |_| true).await;
    });
    // A player refused a channel can poll the same state.
    let st: Value = serde_json::from_str(&get_text(&s.url("/api/v1/streams/xihe/state"))).unwrap();
    assert_eq!(st["type"], "state");
    assert_eq!(st["status"], "idle");
    assert_eq!(st["whep"], "/whep/xihe");
}

#[test]
fn a_channel_that_stops_reading_is_closed_and_frees_its_slot() {
    let s = Server::start(
        "[channel]\nmax_per_address = 2\nping_interval_ms = 500\nidle_timeout_ms = 3000\n[[lecture]]\nname = \"xihe\"\n",
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // A player that reads (and so answers the relay's pings, as browsers do).
        let mut reader = connect_from(&s, [127, 0, 0, 1], "xihe").await.unwrap();
        next_of(&mut reader, "state", |_| true).await;
        let reading = tokio::spawn(async move {
            let mut pings = 0;
            let end = tokio::time::Instant::now() + Duration::from_secs(8);
            loop {
                match tokio::time::timeout_at(end, reader.next()).await {
                    Err(_) => return Ok(pings),
                    Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
                    Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                        return Err(format!("the reading player was closed after {pings} pings"));
                    }
                    Ok(Some(Ok(_))) => {}
                }
            }
        });
        // A client that takes the state and then never reads again: it never answers a ping.
        let mut silent = connect_from(&s, [127, 0, 0, 1], "xihe").await.unwrap();
        next_of(&mut silent, "state", |_| true).await;
        assert_eq!(
            refused_with(connect_from(&s, [127, 0, 0, 1], "xihe").await),
            429,
            "both slots of the address are held"
        );
        // The relay closes the silent one after the idle timeout: its slot comes free.
        let t = tokio::time::Instant::now();
        let mut third =
            connect_when_free(&s, [127, 0, 0, 1], "xihe", Duration::from_secs(15)).await;
        assert!(
            t.elapsed() >= Duration::from_secs(2),
            "freed too early: {:?}",
            t.elapsed()
        );
        next_of(&mut third, "state", |_| true).await;
        assert!(
            closed_within(&mut silent, Duration::from_secs(5)).await,
            "the silent channel is still open"
        );
        let pings = reading.await.unwrap().unwrap();
        assert!(pings >= 5, "the reading player got {pings} pings");
    });
}

#[test]
fn questions_are_kept_only_for_real_lectures_and_forgotten_with_them() {
    let s = Server::start("[lectures]\ngrace_period_s = 1\nended_retention_s = 1\n");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let questions = |name: &str| -> Vec<Value> {
        let q: Value = serde_json::from_str(&get_text(
            &s.url(&format!("/api/v1/streams/{name}/questions")),
        ))
        .unwrap();
        q["questions"].as_array().unwrap().clone()
    };
    rt.block_on(async {
        // A name nobody publishes: the channel waits for it, but keeps no questions.
        let (mut ghost, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/ghost", s.http))
            .await
            .unwrap();
        assert_eq!(
            next_of(&mut ghost, "state", |_| true).await["status"],
            "idle"
        );
        ghost
            .send(Message::Text(
                json!({"type": "question", "text": "有人吗？"})
                    .to_string()
                    .into(),
            ))
            .await
            .unwrap();
        let e = next_of(&mut ghost, "error", |_| true).await;
        assert!(e["error"].as_str().unwrap().contains("not live"), "{e}");
    });
    assert_eq!(questions("ghost"), Vec::<Value>::new());

    // A real lecture keeps its questions while it lasts...
    let mut publisher = ffmpeg_publish(&s.rtmp_url("hall"), "160x90", 10, 440);
    wait_for_segments(&s, "hall", "video", 1);
    rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/hall", s.http))
            .await
            .unwrap();
        next_of(&mut ws, "state", |v| v["status"] == "live").await;
        ws.send(Message::Text(
            json!({"type": "question", "text": "第一题"})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
        next_of(&mut ws, "ack", |_| true).await;
    });
    assert_eq!(questions("hall").len(), 1);
    // ...and forgets them when it is gone (ended, then past its retention).
    publisher.stop();
    wait_until(
        Duration::from_secs(20),
        "the lecture to be forgotten",
        || (get(&s.url("/api/v1/streams/hall")).0 == 404).then_some(()),
    );
    assert_eq!(questions("hall"), Vec::<Value>::new());
    // The next lecture of that name starts with none.
    let _again = ffmpeg_publish(&s.rtmp_url("hall"), "160x90", 10, 440);
    wait_for_segments(&s, "hall", "video", 1);
    assert_eq!(questions("hall"), Vec::<Value>::new());
}
