//! The live channel's limits against the real binary, at the limit and one beyond: the
//! message size (4 KiB, and a frame header declaring a terabyte that never comes), the
//! message rate of one connection, and questions per client address per minute.

mod common;

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::time::Duration;

use common::floods::*;
use common::*;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const LECTURE: &str = "[[lecture]]\nname = \"xihe\"\n";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// A raw WebSocket upgrade to `/ws/xihe` from `from`, answered 101.
fn raw_upgrade(s: &Server, from: Ipv4Addr) -> std::net::TcpStream {
    let mut t = tcp_from(from, s.http).unwrap();
    write!(
        t,
        "GET /ws/xihe HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(t.read(&mut b).unwrap(), 1, "upgrade answer cut short");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    t
}

/// Everything the relay sends until it closes (or 5 s pass); whether it closed.
fn read_to_close(t: &mut std::net::TcpStream) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        match t.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

#[test]
fn message_size_at_and_over_4_kib_and_a_huge_frame_never_sent() {
    let s = Server::start(LECTURE);
    rt().block_on(async {
        // Exactly 4096 bytes (JSON may end in white space): taken.
        let mut at = ws_from(s.http, ip(1), "xihe").await.unwrap();
        let mut text = json!({"type": "hand", "from": "at the limit"}).to_string();
        text.push_str(&" ".repeat(4096 - text.len()));
        assert_eq!(text.len(), 4096);
        at.send(Message::Text(text.into())).await.unwrap();
        let ack = next_of(&mut at, "ack", Duration::from_secs(5), |_| true).await;
        assert!(
            ack.is_some(),
            "a 4096-byte message was not taken:\n{}",
            s.log()
        );

        // 4097 bytes: closed with 1009 (message too big), and logged.
        let mut over = ws_from(s.http, ip(1), "xihe").await.unwrap();
        next_of(&mut over, "state", Duration::from_secs(5), |_| true).await;
        let mut text = json!({"type": "hand", "from": "over"}).to_string();
        text.push_str(&" ".repeat(4097 - text.len()));
        let _ = over.send(Message::Text(text.into())).await;
        assert_eq!(
            closed_with(&mut over, Duration::from_secs(5)).await,
            Some(1009)
        );
        wait_until(Duration::from_secs(5), "the refusal logged", || {
            s.log()
                .contains("live channel closed: a message over 4096 bytes")
                .then_some(())
        });
        // The channel at the limit is untouched.
        at.send(Message::Text(json!({"type": "hand"}).to_string().into()))
            .await
            .unwrap();
        assert!(
            next_of(&mut at, "ack", Duration::from_secs(5), |_| true)
                .await
                .is_some()
        );
    });
    assert_eq!(limit_hits(&s, "channel_message"), 1);

    // Frame headers declaring 1 TiB whose payload never comes: each connection is closed at
    // once with 1009, from the header alone; 50 of them allocate nothing like it.
    let heap_before = heap_mib(&s);
    let mut raws = Vec::new();
    for i in 0..50u8 {
        let mut t = raw_upgrade(&s, ip(10 + i % 5));
        let mut frame = vec![0x81, 0xff];
        frame.extend_from_slice(&(1u64 << 40).to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        frame.extend_from_slice(b"{\"type\":");
        t.write_all(&frame).unwrap();
        raws.push(t);
    }
    for t in &mut raws {
        let (got, closed) = read_to_close(t);
        assert!(
            closed,
            "a terabyte frame header did not close the connection"
        );
        assert!(
            got.windows(4).any(|w| w == [0x88, 0x19, 0x03, 0xf1]),
            "no close frame with 1009: {:02x?}",
            &got[got.len().saturating_sub(40)..]
        );
    }
    let grown = heap_mib(&s) - heap_before;
    assert!(
        grown < 16.0,
        "50 huge declared frames grew the heap by {grown:.1} MiB"
    );
    assert_eq!(limit_hits(&s, "channel_message"), 51);
    assert_eq!(get(&s.url("/healthz")).0, 200);
}

#[test]
fn message_rate_of_one_channel_at_and_over() {
    let s = Server::start(LECTURE);
    rt().block_on(async {
        let mut ws = ws_from(s.http, ip(1), "xihe").await.unwrap();
        next_of(&mut ws, "state", Duration::from_secs(5), |_| true).await;
        let hand = || Message::Text(json!({"type": "hand"}).to_string().into());
        // The burst of 3: all taken.
        for _ in 0..3 {
            ws.send(hand()).await.unwrap();
        }
        for _ in 0..3 {
            assert!(
                next_of(&mut ws, "ack", Duration::from_secs(5), |_| true)
                    .await
                    .is_some()
            );
        }
        // A fourth at once: refused with a reason, the channel stays.
        ws.send(hand()).await.unwrap();
        let e = next_of(&mut ws, "error", Duration::from_secs(5), |_| true)
            .await
            .expect("a refusal");
        assert!(
            e["error"].as_str().unwrap().contains("too many messages"),
            "{e}"
        );
        // One token back after 2 s: taken.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        ws.send(hand()).await.unwrap();
        assert!(
            next_of(&mut ws, "ack", Duration::from_secs(5), |_| true)
                .await
                .is_some()
        );
        // A client that keeps flooding is closed after ten refusals; another is not touched.
        let mut quiet = ws_from(s.http, ip(2), "xihe").await.unwrap();
        next_of(&mut quiet, "state", Duration::from_secs(5), |_| true).await;
        for _ in 0..12 {
            let _ = ws.send(hand()).await;
        }
        assert!(closed_with(&mut ws, Duration::from_secs(5)).await.is_some());
        quiet.send(hand()).await.unwrap();
        assert!(
            next_of(&mut quiet, "ack", Duration::from_secs(5), |_| true)
                .await
                .is_some()
        );
    });
    wait_until(Duration::from_secs(5), "the close logged", || {
        s.log()
            .contains("live channel closed: too many bad or too frequent messages")
            .then_some(())
    });
    let log = s.log();
    assert!(
        log.contains("live channel: messages faster than 3 then 1 per 2 s refused"),
        "{log}"
    );
    assert!(log.contains("live channel closed: too many bad or too frequent messages"));
    assert!(limit_hits(&s, "channel_rate") >= 10);
}

#[test]
fn questions_per_address_per_minute_at_and_over() {
    let s = Server::start(&format!(
        "[channel]\nquestions_per_address_per_minute = 5\n{LECTURE}"
    ));
    rt().block_on(async {
        let q = |n: usize| {
            Message::Text(
                json!({"type": "question", "text": format!("问题 {n}")})
                    .to_string()
                    .into(),
            )
        };
        // Two channels from one address: 3 + 2 questions, the address's 5 a minute.
        let mut one = ws_from(s.http, ip(20), "xihe").await.unwrap();
        let mut two = ws_from(s.http, ip(20), "xihe").await.unwrap();
        for n in 0..3 {
            one.send(q(n)).await.unwrap();
            assert!(
                next_of(&mut one, "ack", Duration::from_secs(5), |_| true)
                    .await
                    .is_some()
            );
        }
        for n in 3..5 {
            two.send(q(n)).await.unwrap();
            assert!(
                next_of(&mut two, "ack", Duration::from_secs(5), |_| true)
                    .await
                    .is_some()
            );
        }
        // The sixth from that address, on either channel: refused with a reason.
        two.send(q(5)).await.unwrap();
        let e: Value = next_of(&mut two, "error", Duration::from_secs(5), |_| true)
            .await
            .expect("a refusal");
        assert!(
            e["error"]
                .as_str()
                .unwrap()
                .contains("too many questions from your address"),
            "{e}"
        );
        // Another address asks freely.
        let mut other = ws_from(s.http, ip(21), "xihe").await.unwrap();
        other.send(q(6)).await.unwrap();
        assert!(
            next_of(&mut other, "ack", Duration::from_secs(5), |_| true)
                .await
                .is_some()
        );
    });
    let list: Value =
        serde_json::from_str(&get_text(&s.url("/api/v1/streams/xihe/questions"))).unwrap();
    let texts: Vec<&str> = list["questions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["问题 0", "问题 1", "问题 2", "问题 3", "问题 4", "问题 6"]
    );
    wait_until(Duration::from_secs(5), "the refusal logged", || {
        s.log()
            .contains("question refused, 5 from this address in a minute (channel.questions_per_address_per_minute)")
            .then_some(())
    });
    assert_eq!(limit_hits(&s, "channel_questions_per_address"), 1);
}
