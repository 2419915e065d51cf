//! A webhook receiver for the tests: a real HTTP/1.1 listener on loopback that answers 204
//! and keeps what it was sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `(x-jiangtang-event, body)` of each request received.
pub type Received = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// Starts a receiver (for at most 200 requests): its URL and what it got.
pub fn receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got: Received = Arc::default();
    let out = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(200) {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let (mut len, mut event) = (0usize, String::new());
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                let value = line.split_once(':').map(|(_, v)| v.trim()).unwrap_or("");
                if lower.starts_with("content-length:") {
                    len = value.parse().unwrap_or(0);
                } else if lower.starts_with("x-jiangtang-event:") {
                    event = value.to_string();
                }
            }
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let _ = conn.write_all(
                b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            let body = serde_json::from_slice(&body).unwrap_or_default();
            out.lock().unwrap().push((event, body));
        }
    });
    (url, got)
}
