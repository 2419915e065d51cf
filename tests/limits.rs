//! Numbered limits against the real binary, at the limit, one beyond, and with a declared
//! size whose bytes never come (nothing may be allocated at the declared size): the RTMP
//! message length (`rtmp.max_message_bytes`) and the API's JSON body (64 KiB).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::rtmp::RawClient;
use common::*;
use ingest::rtmp::chunk::types;

/// A video message of `len` bytes the relay reads whole and ignores (FLV frame type 5: a
/// video info frame carrying no picture).
fn info_frame(len: usize) -> Vec<u8> {
    let mut body = vec![0u8; len];
    body[0] = 0x57;
    body
}

#[test]
fn rtmp_message_length_at_and_over_the_limit_and_never_sent() {
    const LIMIT: usize = 1 << 20;
    let mut s = Server::start(&format!(
        "[demo]\nenabled = false\n[lectures]\nallow_unconfigured = true\n[rtmp]\nmax_message_bytes = {LIMIT}\nidle_timeout_ms = 2000\nmax_per_address = 200\n"
    ));

    // At the limit: read, ignored, the connection stays.
    let mut at = RawClient::connect(s.rtmp);
    let answer = at.publish("atlimit");
    assert!(String::from_utf8_lossy(&answer).contains("NetStream.Publish.Start"));
    at.message(6, types::VIDEO, 1, 0, &info_frame(LIMIT))
        .unwrap();
    at.message(6, types::VIDEO, 1, 40, &info_frame(LIMIT))
        .unwrap();
    assert!(
        !closed_by_peer(&mut at.stream, Duration::from_millis(800)),
        "a message at the limit closed the connection:\n{}",
        s.log()
    );
    assert!(!s.log().contains("above the limit"), "{}", s.log());

    // One beyond: refused with a reason, that connection only.
    let mut over = RawClient::connect(s.rtmp);
    over.publish("overlimit");
    let _ = over.message(6, types::VIDEO, 1, 0, &info_frame(LIMIT + 1));
    assert!(
        closed_by_peer(&mut over.stream, Duration::from_secs(4)),
        "a message one byte over the limit was taken"
    );
    wait_until(Duration::from_secs(5), "the refusal in the log", || {
        s.log().contains("above the limit").then_some(())
    });
    // The one at the limit is still there and may go on.
    at.message(6, types::VIDEO, 1, 80, &info_frame(16)).unwrap();

    // Declared at the limit, never sent: 100 such connections must not cost 100 MiB up
    // front, nor be kept past the idle timeout.
    let before = s.rss_mib();
    let mut waiting = Vec::new();
    for i in 0..100 {
        let mut c = RawClient::connect(s.rtmp);
        c.publish(&format!("never{i}"));
        // Type 0 header on csid 6: timestamp 0, length LIMIT, video, stream 1; then 10 bytes.
        let len = (LIMIT as u32).to_be_bytes();
        c.raw(&[6, 0, 0, 0, len[1], len[2], len[3], types::VIDEO, 1, 0, 0, 0])
            .unwrap();
        c.raw(&[0x57; 10]).unwrap();
        waiting.push(c);
    }
    let grown = s.rss_mib() - before;
    assert!(
        grown < 100.0 * LIMIT as f64 / (1 << 20) as f64,
        "100 declared-but-unsent messages grew the relay by {grown:.1} MiB"
    );
    for c in &mut waiting {
        assert!(
            closed_by_peer(&mut c.stream, Duration::from_secs(8)),
            "a publisher whose message never came was kept past the idle timeout"
        );
    }
    assert!(s.alive());
    assert_eq!(get(&s.url("/healthz")).0, 200);
}

/// Sends a raw HTTP/1.1 request and returns the status code.
fn raw_post(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    let _ = c.write_all(body);
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).to_string();
    (text[9..12].parse().unwrap(), text)
}

#[test]
fn api_body_at_and_over_64_kib_and_never_sent() {
    const LIMIT: usize = 64 * 1024;
    let dir = std::env::temp_dir().join(format!(
        "jiangtang-limits-{}-{}",
        std::process::id(),
        jiff::Timestamp::now().as_nanosecond()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let s = Server::start(&format!(
        "[catalogue]\ndatabase_path = \"{}\"\n",
        dir.join("catalogue.db").display()
    ));
    let addr = s
        .url("/")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let hall = |len: usize| {
        let mut body = br#"{"name":"limit hall"}"#.to_vec();
        body.resize(len, b' ');
        body
    };
    // At the limit: taken (JSON may end in white space).
    let (st, answer) = raw_post(addr, "/api/v1/halls", &hall(LIMIT));
    assert_eq!(st, 201, "{answer}");
    // One beyond: 413.
    let (st, answer) = raw_post(addr, "/api/v1/halls", &hall(LIMIT + 1));
    assert_eq!(st, 413, "{answer}");
    // Declared far beyond and never sent: refused at once by its Content-Length.
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "POST /api/v1/halls HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n{{"
    )
    .unwrap();
    let mut head = [0u8; 12];
    c.read_exact(&mut head).unwrap();
    assert_eq!(&head[9..12], b"413");
    assert_eq!(get(&s.url("/healthz")).0, 200);
    let _ = std::fs::remove_dir_all(&dir);
}
