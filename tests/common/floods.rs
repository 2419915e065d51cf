//! Helpers of the limit and flood tests: figures from `/metrics` and `/proc`, live-channel
//! clients from a chosen loopback address, a raised open-files limit.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::Server;

/// A live-channel client.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The value of the unlabelled (or fully labelled, e.g. `name{limit="x"}`) series `name`.
pub fn metric(s: &Server, name: &str) -> f64 {
    let text = super::get_text(&s.url("/metrics"));
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// How often the limit `name` was hit (`jiangtang_limit_hits_total{limit="name"}`).
pub fn limit_hits(s: &Server, name: &str) -> u64 {
    metric(
        s,
        &format!("jiangtang_limit_hits_total{{limit=\"{name}\"}}"),
    ) as u64
}

/// Bytes the relay has allocated (jemalloc), in MiB.
pub fn heap_mib(s: &Server) -> f64 {
    metric(s, "jiangtang_heap_allocated_bytes") / 1048576.0
}

/// Raises this process's open-files limit (inherited by a relay started after it) to
/// `want`, or as far as the hard limit allows; returns the soft limit now.
pub fn raise_nofile(want: u64) -> u64 {
    let pid = std::process::id().to_string();
    let read = |field: usize| -> u64 {
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
        limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(field))
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX)
    };
    let target = want.min(read(4));
    if read(3) < target {
        let _ = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={target}:")])
            .status();
    }
    read(3)
}

/// A live channel to lecture `name` from the loopback address `from` (any 127.0.0.0/8
/// address reaches the relay on 127.0.0.1).
pub async fn ws_from(
    http: SocketAddr,
    from: Ipv4Addr,
    name: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    ws_from_with(http, from, name, None).await
}

/// [`ws_from`] with the client's own limits (`None`: tungstenite's defaults).
pub async fn ws_from_with(
    http: SocketAddr,
    from: Ipv4Addr,
    name: &str,
    config: Option<tokio_tungstenite::tungstenite::protocol::WebSocketConfig>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind((from, 0).into())?;
    let tcp = sock.connect(http).await?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        format!("ws://{http}/ws/{name}"),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
        config,
    )
    .await?;
    Ok(ws)
}

/// The next message of type `kind` satisfying `pred`, within `within`; `None` if the socket
/// closed or nothing came in time.
pub async fn next_of(
    ws: &mut Ws,
    kind: &str,
    within: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.ok()??;
        if let Ok(Message::Text(t)) = msg {
            let Ok(v) = serde_json::from_str::<Value>(&t) else {
                continue;
            };
            if v["type"] == kind && pred(&v) {
                return Some(v);
            }
        } else if msg.is_err() {
            return None;
        }
    }
}

/// How `ws` ended within `within`: `Some(code)` for a close frame (0 without a code),
/// `Some(u16::MAX)` for a dropped connection, `None` if it is still open.
pub async fn closed_with(ws: &mut Ws, within: Duration) -> Option<u16> {
    tokio::time::timeout(within, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return u16::MAX,
                Some(Ok(Message::Close(f))) => return f.map_or(0, |f| u16::from(f.code)),
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .ok()
}

/// A TCP connection to `to` from the loopback address `from`.
pub fn tcp_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tcp = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind((from, 0).into())?;
        sock.connect(to).await
    })?;
    let std = tcp.into_std()?;
    std.set_nonblocking(false)?;
    Ok(std)
}
