//! ICE over TCP (RFC 6544) for networks that drop UDP: each engine listens on TCP beside
//! its UDP socket and offers a passive host candidate; a browser connects to it and sends
//! STUN, DTLS, RTP and RTCP framed as RFC 4571 describes (a 16-bit length before each
//! packet). The frames go to the engine as datagrams of protocol TCP, and what str0m sends
//! to the peer goes back on its connection.
//!
//! The framing is sans-IO ([`Deframer`], [`frame`]); the glue is a task per connection
//! reading, and a task per connection writing from a bounded queue: a viewer whose
//! connection cannot take more loses packets (counted as dropped out), as on UDP, rather
//! than holding up the engine.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use str0m::net::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::engine::Datagram;
use super::stats::Stats;

/// Largest frame accepted (RFC 4571 allows 65535; WebRTC packets stay near the MTU).
const MAX_FRAME: usize = 4096;
/// Packets queued for one connection before more are dropped (a frame's worth at 2.5 Mbit/s).
const QUEUE: usize = 512;
/// A connection that sends no whole frame for this long is closed (ICE consent checks come
/// every few seconds while a session lives).
const IDLE: Duration = Duration::from_secs(30);
/// ...and one whose first frame does not come within this.
const FIRST_FRAME: Duration = Duration::from_secs(5);

/// Reassembles RFC 4571 frames from a byte stream.
#[derive(Debug, Default)]
pub struct Deframer {
    buf: BytesMut,
}

/// Why a stream stopped making sense.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A length of 0 or above [`MAX_FRAME`].
    #[error("a frame of {0} bytes")]
    BadLength(usize),
}

impl Deframer {
    /// Adds bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame, if one is there.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buf.len() < 2 {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]]));
        if len == 0 || len > MAX_FRAME {
            return Err(FrameError::BadLength(len));
        }
        if self.buf.len() < 2 + len {
            return Ok(None);
        }
        self.buf.advance(2);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

/// `data` framed for the stream.
pub fn frame(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(2 + data.len());
    out.put_u16(data.len().min(usize::from(u16::MAX)) as u16);
    out.put_slice(&data[..data.len().min(usize::from(u16::MAX))]);
    out.freeze()
}

/// One engine's TCP listener: the connections open on it, by peer.
pub struct TcpPort {
    /// The address announced for it.
    pub announced: SocketAddr,
    peers: Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>,
    open: AtomicUsize,
    max: usize,
}

impl TcpPort {
    /// A port announced as `announced`, holding at most `max` connections.
    pub fn new(announced: SocketAddr, max: usize) -> Arc<TcpPort> {
        Arc::new(TcpPort {
            announced,
            peers: Mutex::default(),
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// Sends `data` to `peer` (as `segment`-sized packets when given, a batch for UDP's
    /// GSO): queued on its connection, or an error when it has none or its queue is full.
    pub fn send(
        &self,
        peer: SocketAddr,
        data: &[u8],
        segment: Option<usize>,
    ) -> std::io::Result<()> {
        let tx = self
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&peer)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))?;
        let size = segment.unwrap_or(data.len()).max(1);
        for packet in data.chunks(size) {
            tx.try_send(frame(packet))
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::WouldBlock))?;
        }
        Ok(())
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// Accepts connections on `listener` for `port`, handing their frames to the engine.
pub async fn serve(
    listener: TcpListener,
    port: Arc<TcpPort>,
    net: mpsc::Sender<Datagram>,
    stats: Arc<Stats>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                debug!("ICE-TCP accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if port.open.load(Ordering::Relaxed) >= port.max {
            debug!(%peer, "ICE-TCP connection refused: webrtc.max_tcp_connections reached");
            continue;
        }
        port.open.fetch_add(1, Ordering::Relaxed);
        stats.tcp_connections.inc();
        let (port, net, stats) = (port.clone(), net.clone(), stats.clone());
        tokio::spawn(async move {
            connection(stream, peer, &port, net, stats).await;
            port.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    port: &TcpPort,
    net: mpsc::Sender<Datagram>,
    stats: Arc<Stats>,
) {
    let _ = stream.set_nodelay(true);
    let (mut read, mut write) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
    port.peers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(peer, tx.clone());
    // Taken off when done, unless a newer connection from the same address took its place.
    let forget = || {
        let mut peers = port.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.get(&peer).is_some_and(|t| t.same_channel(&tx)) {
            peers.remove(&peer);
        }
    };
    let writer = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if write.write_all(&b).await.is_err() {
                return;
            }
        }
    });
    let mut deframer = Deframer::default();
    let mut buf = vec![0u8; 16 << 10];
    let mut frames = 0u64;
    // Whole frames keep a connection open, not bytes dripped in: the first one must come
    // within FIRST_FRAME, each later one within IDLE of the one before.
    let mut deadline = tokio::time::Instant::now() + FIRST_FRAME;
    loop {
        let n = match tokio::time::timeout_at(deadline, read.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => n,
        };
        deframer.push(&buf[..n]);
        loop {
            match deframer.next_frame() {
                Ok(Some(data)) => {
                    frames += 1;
                    deadline = tokio::time::Instant::now() + IDLE;
                    stats.tcp_frames_received.inc();
                    let d = Datagram {
                        source: peer,
                        destination: port.announced,
                        data,
                        proto: Protocol::Tcp,
                    };
                    if net.try_send(d).is_err() {
                        stats.datagrams_dropped.inc();
                        stats.datagrams_dropped_in.inc();
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    info!(%peer, "ICE-TCP connection closed: {e}");
                    writer.abort();
                    forget();
                    return;
                }
            }
        }
    }
    debug!(%peer, frames, "ICE-TCP connection closed");
    writer.abort();
    forget();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_back_whatever_the_reads() {
        let packets: Vec<Vec<u8>> = (1..40u8).map(|i| vec![i; usize::from(i) * 30]).collect();
        let stream: Vec<u8> = packets.iter().flat_map(|p| frame(p).to_vec()).collect();
        for step in [1, 2, 3, 7, 100, stream.len()] {
            let mut d = Deframer::default();
            let mut out = Vec::new();
            for chunk in stream.chunks(step) {
                d.push(chunk);
                while let Some(f) = d.next_frame().unwrap() {
                    out.push(f.to_vec());
                }
            }
            assert_eq!(out, packets, "read {step} bytes at a time");
        }
        let mut d = Deframer::default();
        d.push(&[0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::BadLength(0)));
        let mut d = Deframer::default();
        d.push(&[0xff, 0xff, 1]);
        assert_eq!(d.next_frame(), Err(FrameError::BadLength(65535)));
    }
}
