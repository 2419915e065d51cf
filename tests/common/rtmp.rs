//! A minimal blocking RTMP publisher for tests that must send what real encoders never do.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ingest::rtmp::amf0::{self, Amf0};
use ingest::rtmp::chunk::{ChunkEncoder, Message, types};

/// A connection that has done the plain handshake.
pub struct RawClient {
    /// The socket.
    pub stream: TcpStream,
    enc: ChunkEncoder,
}

impl RawClient {
    /// Connects and performs the plain handshake.
    pub fn connect(addr: SocketAddr) -> RawClient {
        RawClient::handshake(TcpStream::connect(addr).unwrap())
    }

    /// Performs the plain handshake on a connected `stream`.
    pub fn handshake(mut stream: TcpStream) -> RawClient {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut c0c1 = vec![3u8];
        c0c1.extend((0..1536).map(|i| (i * 13) as u8));
        c0c1[5..9].fill(0);
        stream.write_all(&c0c1).unwrap();
        let mut s = vec![0u8; 3073];
        stream.read_exact(&mut s).unwrap();
        stream.write_all(&s[1..1537]).unwrap();
        RawClient {
            stream,
            enc: ChunkEncoder::new(),
        }
    }

    /// Sends raw bytes.
    pub fn raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends one message, chunked at 128 bytes.
    pub fn message(
        &mut self,
        csid: u32,
        type_id: u8,
        stream_id: u32,
        timestamp: u32,
        body: &[u8],
    ) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        self.enc.encode(
            &Message {
                csid,
                timestamp,
                type_id,
                stream_id,
                payload: Bytes::copy_from_slice(body),
            },
            &mut out,
        );
        self.stream.write_all(&out)
    }

    /// Sends an AMF0 command.
    pub fn command(&mut self, stream_id: u32, values: &[Amf0]) -> std::io::Result<()> {
        let mut body = Vec::new();
        for v in values {
            amf0::encode(v, &mut body);
        }
        self.message(3, types::COMMAND_AMF0, stream_id, 0, &body)
    }

    /// connect, createStream, publish `name`; returns what the server answered.
    pub fn publish(&mut self, name: &str) -> Vec<u8> {
        let s = |x: &str| Amf0::String(x.into());
        self.command(
            0,
            &[
                s("connect"),
                Amf0::Number(1.0),
                amf0::object([("app", s("live")), ("tcUrl", s("rtmp://127.0.0.1/live"))]),
            ],
        )
        .unwrap();
        self.command(0, &[s("createStream"), Amf0::Number(2.0), Amf0::Null])
            .unwrap();
        self.command(
            1,
            &[
                s("publish"),
                Amf0::Number(3.0),
                Amf0::Null,
                s(name),
                s("live"),
            ],
        )
        .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got);
                    if text.contains("NetStream.Publish.") {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        got
    }
}
