//! The RTMP listener: one task per connection, driving a [`ServerSession`] and passing media
//! to the relay through a [`MediaSink`]. Nothing a client sends can affect another connection:
//! every error closes only this one, with a log line saying why.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use media::limits::{self, Limit, PerAddress};
use media::sink::{MediaSink, Publish, PublishError, PublishRequest, valid_stream_name};
use media::{Language, MediaEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout_at};
use tracing::{debug, info, warn};

use super::chunk::Limits;
use super::handshake::PACKET;
use super::session::{ServerSession, SessionEvent};
use super::to_media::FlvToMedia;

/// Longest wait at shutdown for publishers to be told and their connections closed.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// How long a connection told of the shutdown waits for its client to hang up.
const LINGER: Duration = Duration::from_secs(2);

/// Accepts RTMP connections on `listener` until `shutdown` resolves; then tells every open
/// connection the relay is shutting down (an `onStatus` error, then the close) and returns
/// once they are closed (at most [`CLOSE_WAIT`]).
pub async fn serve(
    listener: TcpListener,
    config: config::RtmpConfig,
    publish: Arc<dyn Publish>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let per_address = PerAddress::new(config.max_per_address);
    let config = Arc::new(config);
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            _ = &mut shutdown => {
                let _ = closing_tx.send(true);
                let all = u32::try_from(config.max_connections).unwrap_or(u32::MAX);
                let _ = tokio::time::timeout(CLOSE_WAIT, slots.acquire_many(all)).await;
                break;
            }
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Running out of file descriptors: back off instead of spinning.
                    warn!("rtmp accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Refused by closing at once: RTMP has no way to say why before its handshake.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Anyone can open connections: logged at most limits::LOG_LINES per window.
            if limits::hit_logged(Limit::RtmpConnections, std::time::Instant::now()) {
                warn!(%addr, "rtmp connection refused: {} connections open (rtmp.max_connections)", config.max_connections);
            }
            continue;
        };
        let Some(address_slot) = per_address.take(addr.ip()) else {
            if limits::hit_logged(Limit::RtmpPerAddress, std::time::Instant::now()) {
                warn!(%addr, "rtmp connection refused: {} connections from this address (rtmp.max_per_address)", config.max_per_address);
            }
            continue;
        };
        let config = config.clone();
        let publish = publish.clone();
        let closing = closing.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            match connection(stream, addr, &config, publish.as_ref(), closing).await {
                Ok(()) => debug!(%addr, "rtmp connection closed"),
                Err(reason) => warn!(%addr, "rtmp connection closed: {reason}"),
            }
            drop(permit);
            drop(address_slot);
        });
    }
}

/// Parameters of a publish name `STREAM?key=K&lang=L`.
#[derive(Debug, PartialEq, Eq)]
pub struct PublishName {
    /// Stream name.
    pub stream: String,
    /// `key=`.
    pub key: Option<String>,
    /// `lang=`.
    pub lang: Option<String>,
}

/// Splits a publish name and merges the `connect` query (some encoders put the key there).
pub fn parse_publish_name(name: &str, connect_query: Option<&str>) -> PublishName {
    let (stream, query) = match name.split_once('?') {
        Some((s, q)) => (s, Some(q)),
        None => (name, None),
    };
    let mut out = PublishName {
        stream: stream.to_string(),
        key: None,
        lang: None,
    };
    for q in [connect_query, query].into_iter().flatten() {
        for pair in q.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "key" | "secret" | "token" => out.key = Some(v.to_string()),
                "lang" => out.lang = Some(v.to_string()),
                _ => {}
            }
        }
    }
    out
}

async fn connection(
    mut stream: TcpStream,
    addr: SocketAddr,
    config: &config::RtmpConfig,
    publish: &dyn Publish,
    mut closing: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let mut random = [0u8; PACKET];
    rand::fill(&mut random[..]);
    let limits = Limits {
        max_media_message: config.max_message_bytes,
        ..Limits::default()
    };
    let mut session = ServerSession::new(random, limits);
    let mut sink: Option<Box<dyn MediaSink>> = None;
    let mut mapper = FlvToMedia::new(None);
    let mut stream_name = String::new();
    let handshake_deadline = Instant::now() + Duration::from_millis(config.handshake_timeout_ms);
    let idle = Duration::from_millis(config.idle_timeout_ms);
    let mut buf = vec![0u8; 16 * 1024];

    loop {
        let deadline = if sink.is_some() {
            Instant::now() + idle
        } else {
            handshake_deadline
        };
        let read = tokio::select! {
            r = timeout_at(deadline, stream.read(&mut buf)) => r,
            _ = async { drop(closing.wait_for(|c| *c).await) } => {
                session.close("the relay is shutting down");
                while let Some(out) = session.poll_transmit() {
                    let _ = tokio::time::timeout(CLOSE_WAIT, stream.write_all(&out)).await;
                }
                let _ = stream.shutdown().await;
                // Read on until the client hangs up: closing with its media still coming
                // would reset the connection and lose the status before it reads it.
                let linger = Instant::now() + LINGER;
                while let Ok(Ok(n)) = timeout_at(linger, stream.read(&mut buf)).await {
                    if n == 0 {
                        break;
                    }
                }
                if sink.is_some() {
                    info!(%addr, stream = %stream_name, "rtmp publisher told the relay is shutting down");
                }
                return Ok(());
            }
        };
        let n = match read {
            Err(_) if sink.is_some() => {
                limits::hit(Limit::RtmpIdle);
                return Err(format!(
                    "publisher of {stream_name:?} sent nothing for {idle:?}"
                ));
            }
            Err(_) => return Err("did not publish within the handshake timeout".into()),
            Ok(Err(e)) => return Err(format!("read error: {e}")),
            Ok(Ok(0)) => {
                if sink.is_some() {
                    info!(%addr, stream = %stream_name, "rtmp publisher disconnected");
                }
                return Ok(());
            }
            Ok(Ok(n)) => n,
        };
        let mut result = session.handle_bytes(&buf[..n]);
        let mut closing: Option<String> = None;
        while let Some(event) = session.poll_event() {
            match event {
                SessionEvent::Connected { app, tc_url } => {
                    // A key may ride in the tcUrl or the app (`live?key=...`): never logged.
                    let shown_app = media::admission::redact(&app);
                    debug!(%addr, app = %shown_app, tc_url = %media::admission::redact(tc_url.as_deref().unwrap_or("")), "rtmp connect");
                    if app != "live" {
                        closing = Some(format!("unknown application {shown_app:?}"));
                        session.reject_publish(
                            "NetConnection.Connect.Rejected",
                            "use rtmp://HOST/live/STREAM",
                        );
                        break;
                    }
                }
                SessionEvent::PublishRequested {
                    app: _,
                    name,
                    connect_query,
                } => {
                    let parsed = parse_publish_name(&name, connect_query.as_deref());
                    stream_name = parsed.stream.clone();
                    match start_publishing(parsed, addr, publish) {
                        Ok((new_sink, language)) => {
                            info!(%addr, stream = %stream_name, "rtmp publisher started");
                            sink = Some(new_sink);
                            mapper = FlvToMedia::new(language);
                            if let Err(e) = session.accept_publish() {
                                result = Err(e);
                            }
                        }
                        Err((code, reason)) => {
                            session.reject_publish(code, &reason);
                            closing = Some(format!("publish of {stream_name:?} refused: {reason}"));
                        }
                    }
                }
                SessionEvent::Metadata(meta) => {
                    debug!(%addr, stream = %stream_name, "rtmp metadata: {meta}");
                }
                SessionEvent::Audio { timestamp, data } => {
                    if let Err(e) = forward(mapper.audio(timestamp, data), sink.as_deref_mut()) {
                        closing = Some(e);
                        break;
                    }
                }
                SessionEvent::Video { timestamp, data } => {
                    if let Err(e) = forward(mapper.video(timestamp, data), sink.as_deref_mut()) {
                        closing = Some(e);
                        break;
                    }
                }
                SessionEvent::Unpublished => {
                    info!(%addr, stream = %stream_name, "rtmp publisher stopped publishing");
                    closing = Some(String::new());
                }
            }
        }
        while let Some(out) = session.poll_transmit() {
            let write = tokio::time::timeout(idle, stream.write_all(&out)).await;
            if !matches!(write, Ok(Ok(()))) {
                return Err("could not write to the client".into());
            }
        }
        if let Err(e) = result {
            if matches!(
                e,
                super::session::RtmpError::Chunk(super::chunk::ChunkError::MessageTooLarge { .. })
            ) {
                limits::hit(Limit::RtmpMessage);
            }
            return Err(e.to_string());
        }
        if let Some(reason) = closing {
            let _ = stream.shutdown().await;
            return if reason.is_empty() {
                Ok(())
            } else {
                Err(reason)
            };
        }
    }
}

type Refusal = (&'static str, String);

fn start_publishing(
    parsed: PublishName,
    addr: SocketAddr,
    publish: &dyn Publish,
) -> Result<(Box<dyn MediaSink>, Option<Language>), Refusal> {
    if !valid_stream_name(&parsed.stream) {
        return Err((
            "NetStream.Publish.BadName",
            "stream names are 1-128 of A-Z a-z 0-9 . _ -".into(),
        ));
    }
    let language = match parsed.lang.as_deref().map(Language::parse) {
        None => None,
        Some(Ok(l)) => Some(l),
        Some(Err(e)) => return Err(("NetStream.Publish.BadName", e.to_string())),
    };
    let request = PublishRequest {
        stream: parsed.stream,
        key: parsed.key,
        language: language.clone(),
        protocol: "rtmp",
        remote: Some(addr),
    };
    match publish.publish(request) {
        Ok(sink) => Ok((sink, language)),
        Err(e) => {
            let code = match e {
                PublishError::Unauthorized(_) => "NetStream.Publish.Unauthorized",
                PublishError::AlreadyPublishing(_) => "NetStream.Publish.BadName",
                PublishError::UnknownLecture(_) => "NetStream.Publish.BadName",
                PublishError::TooManyLectures => "NetStream.Publish.Rejected",
            };
            Err((code, e.to_string()))
        }
    }
}

fn forward(
    mapped: Result<Option<MediaEvent>, super::to_media::ToMediaError>,
    sink: Option<&mut (dyn MediaSink + 'static)>,
) -> Result<(), String> {
    let event = mapped.map_err(|e| e.to_string())?;
    if let (Some(event), Some(sink)) = (event, sink) {
        sink.handle(event).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_names() {
        assert_eq!(
            parse_publish_name("xihe?key=abc&lang=yue", None),
            PublishName {
                stream: "xihe".into(),
                key: Some("abc".into()),
                lang: Some("yue".into())
            }
        );
        assert_eq!(
            parse_publish_name("xihe", Some("key=k1")),
            PublishName {
                stream: "xihe".into(),
                key: Some("k1".into()),
                lang: None
            }
        );
    }
}
