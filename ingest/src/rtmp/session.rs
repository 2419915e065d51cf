//! The RTMP server session for publishers: handshake, connect, createStream, publish, then
//! audio, video and metadata. Sans-IO: feed received bytes with [`ServerSession::handle_bytes`],
//! drain [`ServerSession::poll_event`] and [`ServerSession::poll_transmit`] after every call.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use super::amf0::{self, Amf0, AmfError};
use super::chunk::{ChunkDecoder, ChunkEncoder, ChunkError, Limits, Message, types};
use super::handshake::{self, Handshake, HandshakeError};

/// Chunk size we send with.
pub const OUT_CHUNK_SIZE: u32 = 4096;
/// Window acknowledgement size we announce.
pub const WINDOW_ACK_SIZE: u32 = 2_500_000;
/// Message stream id handed out by createStream.
const STREAM_ID: u32 = 1;

/// Errors that end the session.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RtmpError {
    /// Bad handshake.
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// Bad chunk stream.
    #[error("chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    /// Bad AMF in a command or data message.
    #[error("AMF0 in {what}: {err}")]
    Amf {
        /// Which message.
        what: &'static str,
        /// What was wrong.
        err: AmfError,
    },
    /// A command that breaks the protocol flow.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// What the session tells its owner.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// The client connected to an application (`connect`).
    Connected {
        /// Application name (`live`).
        app: String,
        /// `tcUrl` as sent.
        tc_url: Option<String>,
    },
    /// The client wants to publish. Answer with [`ServerSession::accept_publish`] or
    /// [`ServerSession::reject_publish`].
    PublishRequested {
        /// Application name from `connect`, with any `?query` removed.
        app: String,
        /// The publishing name as sent, including any `?query` (OBS puts its stream key
        /// here).
        name: String,
        /// Query string of the `connect` application or `tcUrl`, if any.
        connect_query: Option<String>,
    },
    /// `@setDataFrame` / `onMetaData`.
    Metadata(Amf0),
    /// An FLV audio tag body.
    Audio {
        /// Timestamp in ms (32-bit, wraps).
        timestamp: u32,
        /// Tag body.
        data: Bytes,
    },
    /// An FLV video tag body.
    Video {
        /// Timestamp in ms (32-bit, wraps).
        timestamp: u32,
        /// Tag body.
        data: Bytes,
    },
    /// The client stopped publishing (`FCUnpublish`, `deleteStream`, `closeStream`).
    Unpublished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake,
    WaitConnect,
    Connected,
    PublishPending,
    Publishing,
    Closed,
}

/// One RTMP server connection.
pub struct ServerSession {
    phase: Phase,
    handshake: Handshake,
    pending_in: BytesMut,
    decoder: ChunkDecoder,
    encoder: ChunkEncoder,
    out: BytesMut,
    events: VecDeque<SessionEvent>,
    app: String,
    connect_query: Option<String>,
    publish_txn: f64,
    received: u64,
    peer_window: u32,
    last_ack: u64,
}

impl ServerSession {
    /// A new session; `random` fills the handshake's S1/S2.
    pub fn new(random: [u8; handshake::PACKET], limits: Limits) -> Self {
        ServerSession {
            phase: Phase::Handshake,
            handshake: Handshake::new(random),
            pending_in: BytesMut::new(),
            decoder: ChunkDecoder::new(limits),
            encoder: ChunkEncoder::new(),
            out: BytesMut::new(),
            events: VecDeque::new(),
            app: String::new(),
            connect_query: None,
            publish_txn: 0.0,
            received: 0,
            peer_window: 0,
            last_ack: 0,
        }
    }

    /// True once the session has published and media may flow.
    pub fn is_publishing(&self) -> bool {
        self.phase == Phase::Publishing
    }

    /// Feeds bytes received from the client.
    pub fn handle_bytes(&mut self, data: &[u8]) -> Result<(), RtmpError> {
        if self.phase == Phase::Closed {
            return Ok(());
        }
        self.pending_in.extend_from_slice(data);
        self.received += data.len() as u64;
        if self.phase == Phase::Handshake {
            let p = self.handshake.handle(&self.pending_in)?;
            self.pending_in.advance(p.consumed);
            self.out.extend_from_slice(&p.transmit);
            if !p.done {
                return Ok(());
            }
            self.phase = Phase::WaitConnect;
        }
        self.process()
    }

    /// Decodes and handles buffered messages. Stops at a publish request: what follows it
    /// waits in the buffer until the owner accepts or rejects.
    fn process(&mut self) -> Result<(), RtmpError> {
        while self.phase != Phase::PublishPending && self.phase != Phase::Closed {
            let Some(msg) = self.decoder.decode(&mut self.pending_in)? else {
                break;
            };
            self.handle_message(msg)?;
        }
        self.maybe_ack();
        Ok(())
    }

    /// Next event for the owner.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Bytes to send to the client, if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if self.out.is_empty() {
            None
        } else {
            Some(self.out.split().freeze())
        }
    }

    /// Accepts the pending publish request and goes on with the input buffered behind it;
    /// poll events again afterwards.
    pub fn accept_publish(&mut self) -> Result<(), RtmpError> {
        if self.phase != Phase::PublishPending {
            return Ok(());
        }
        self.phase = Phase::Publishing;
        // User Control: Stream Begin.
        let mut body = vec![0, 0];
        body.extend_from_slice(&STREAM_ID.to_be_bytes());
        self.send(2, types::USER_CONTROL, 0, body);
        self.send_status(
            "status",
            "NetStream.Publish.Start",
            "publishing started",
            self.publish_txn,
        );
        self.process()
    }

    /// Refuses the pending publish request with a status code such as
    /// `NetStream.Publish.BadName` and a description the encoder may show.
    pub fn reject_publish(&mut self, code: &str, description: &str) {
        self.send_status("error", code, description, self.publish_txn);
        self.phase = Phase::Closed;
    }

    /// Tells the client the relay is closing the connection (an `onStatus` error the encoder
    /// reports, e.g. ffmpeg's "Server error: DESCRIPTION"); the caller then closes it.
    pub fn close(&mut self, description: &str) {
        self.send_status(
            "error",
            "NetConnection.Connect.Closed",
            description,
            self.publish_txn,
        );
        self.phase = Phase::Closed;
    }

    fn maybe_ack(&mut self) {
        if self.peer_window > 0 && self.received - self.last_ack >= self.peer_window as u64 {
            self.last_ack = self.received;
            let seq = (self.received & 0xffff_ffff) as u32;
            self.send(2, types::ACK, 0, seq.to_be_bytes().to_vec());
        }
    }

    fn send(&mut self, csid: u32, type_id: u8, stream_id: u32, body: Vec<u8>) {
        let msg = Message {
            csid,
            timestamp: 0,
            type_id,
            stream_id,
            payload: Bytes::from(body),
        };
        self.encoder.encode(&msg, &mut self.out);
    }

    fn send_command(&mut self, stream_id: u32, values: &[Amf0]) {
        let mut body = Vec::with_capacity(256);
        for v in values {
            amf0::encode(v, &mut body);
        }
        self.send(3, types::COMMAND_AMF0, stream_id, body);
    }

    fn send_status(&mut self, level: &str, code: &str, description: &str, txn: f64) {
        self.send_command(
            STREAM_ID,
            &[
                Amf0::String("onStatus".into()),
                Amf0::Number(txn),
                Amf0::Null,
                amf0::object([
                    ("level", Amf0::String(level.into())),
                    ("code", Amf0::String(code.into())),
                    ("description", Amf0::String(description.into())),
                ]),
            ],
        );
    }

    fn handle_message(&mut self, msg: Message) -> Result<(), RtmpError> {
        let payload = msg.payload;
        match msg.type_id {
            types::SET_CHUNK_SIZE => {
                let v = u32_be(&payload).ok_or(ChunkError::BadControl(msg.type_id))?;
                self.decoder.set_chunk_size(v)?;
            }
            types::ABORT => {
                let v = u32_be(&payload).ok_or(ChunkError::BadControl(msg.type_id))?;
                self.decoder.abort(v);
            }
            types::WINDOW_ACK_SIZE => {
                self.peer_window = u32_be(&payload).ok_or(ChunkError::BadControl(msg.type_id))?;
            }
            types::ACK | types::USER_CONTROL | types::SET_PEER_BANDWIDTH => {}
            types::COMMAND_AMF0 => self.handle_command(&payload)?,
            // An AMF3 command or data message is a format byte (0) followed by AMF0 values.
            types::COMMAND_AMF3 if payload.first() == Some(&0) => {
                self.handle_command(&payload[1..])?
            }
            types::DATA_AMF0 => self.handle_data(&payload)?,
            types::DATA_AMF3 if payload.first() == Some(&0) => self.handle_data(&payload[1..])?,
            types::AUDIO if self.phase == Phase::Publishing && !payload.is_empty() => {
                self.events.push_back(SessionEvent::Audio {
                    timestamp: msg.timestamp,
                    data: payload,
                });
            }
            types::VIDEO if self.phase == Phase::Publishing && !payload.is_empty() => {
                self.events.push_back(SessionEvent::Video {
                    timestamp: msg.timestamp,
                    data: payload,
                });
            }
            types::AGGREGATE if self.phase == Phase::Publishing => {
                self.handle_aggregate(msg.timestamp, payload)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Splits an aggregate message into its FLV tags. Tag timestamps are relative to the
    /// first tag's, re-based onto the message timestamp.
    fn handle_aggregate(&mut self, timestamp: u32, mut body: Bytes) -> Result<(), RtmpError> {
        let mut base: Option<u32> = None;
        while !body.is_empty() {
            if body.len() < 11 {
                return Err(RtmpError::Protocol("truncated aggregate tag header".into()));
            }
            let tag_type = body[0] & 0x1f;
            let size = ((body[1] as usize) << 16) | ((body[2] as usize) << 8) | body[3] as usize;
            let ts = ((body[7] as u32) << 24)
                | ((body[4] as u32) << 16)
                | ((body[5] as u32) << 8)
                | body[6] as u32;
            if body.len() < 11 + size + 4 {
                return Err(RtmpError::Protocol("truncated aggregate tag body".into()));
            }
            let data = body.slice(11..11 + size);
            body.advance(11 + size + 4);
            let first = *base.get_or_insert(ts);
            let t = timestamp.wrapping_add(ts.wrapping_sub(first));
            match tag_type {
                8 if !data.is_empty() => self
                    .events
                    .push_back(SessionEvent::Audio { timestamp: t, data }),
                9 if !data.is_empty() => self
                    .events
                    .push_back(SessionEvent::Video { timestamp: t, data }),
                18 => self.handle_data(&data)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn handle_data(&mut self, payload: &[u8]) -> Result<(), RtmpError> {
        let values = amf0::decode_all(payload).map_err(|err| RtmpError::Amf {
            what: "data message",
            err,
        })?;
        let mut it = values.into_iter();
        let mut name = it.next();
        if name.as_ref().and_then(Amf0::as_str) == Some("@setDataFrame") {
            name = it.next();
        }
        if name.as_ref().and_then(Amf0::as_str) == Some("onMetaData")
            && let Some(meta) = it.next()
        {
            self.events.push_back(SessionEvent::Metadata(meta));
        }
        Ok(())
    }

    fn handle_command(&mut self, payload: &[u8]) -> Result<(), RtmpError> {
        let values = amf0::decode_all(payload).map_err(|err| RtmpError::Amf {
            what: "command",
            err,
        })?;
        let name = values.first().and_then(Amf0::as_str).unwrap_or_default();
        let txn = values.get(1).and_then(Amf0::as_number).unwrap_or(0.0);
        match name {
            "connect" => self.on_connect(txn, values.get(2)),
            "createStream" => {
                self.require_connected("createStream")?;
                self.send_command(
                    0,
                    &[
                        Amf0::String("_result".into()),
                        Amf0::Number(txn),
                        Amf0::Null,
                        Amf0::Number(STREAM_ID as f64),
                    ],
                );
                Ok(())
            }
            "releaseStream" | "FCPublish" => {
                self.require_connected(name)?;
                if txn != 0.0 {
                    self.send_command(
                        0,
                        &[
                            Amf0::String("_result".into()),
                            Amf0::Number(txn),
                            Amf0::Null,
                            Amf0::Undefined,
                        ],
                    );
                }
                Ok(())
            }
            "publish" => {
                self.require_connected("publish")?;
                if self.phase != Phase::Connected {
                    return Err(RtmpError::Protocol("publish sent twice".into()));
                }
                let stream = values.get(3).and_then(Amf0::as_str).unwrap_or_default();
                if stream.is_empty() {
                    self.publish_txn = txn;
                    self.phase = Phase::PublishPending;
                    self.reject_publish("NetStream.Publish.BadName", "empty stream name");
                    return Ok(());
                }
                self.publish_txn = txn;
                self.phase = Phase::PublishPending;
                self.events.push_back(SessionEvent::PublishRequested {
                    app: self.app.clone(),
                    name: stream.to_string(),
                    connect_query: self.connect_query.clone(),
                });
                Ok(())
            }
            "FCUnpublish" | "deleteStream" | "closeStream" => {
                if self.phase == Phase::Publishing {
                    self.events.push_back(SessionEvent::Unpublished);
                    self.phase = Phase::Closed;
                }
                Ok(())
            }
            "play" | "play2" => {
                self.publish_txn = txn;
                self.send_status(
                    "error",
                    "NetStream.Play.Failed",
                    "this server takes publishers only; watch over HLS or WebRTC",
                    txn,
                );
                self.phase = Phase::Closed;
                Ok(())
            }
            _ => {
                if txn != 0.0 && self.phase != Phase::WaitConnect {
                    self.send_command(
                        0,
                        &[
                            Amf0::String("_error".into()),
                            Amf0::Number(txn),
                            Amf0::Null,
                            amf0::object([
                                ("level", Amf0::String("error".into())),
                                ("code", Amf0::String("NetConnection.Call.Failed".into())),
                                ("description", Amf0::String("unknown command".into())),
                            ]),
                        ],
                    );
                }
                Ok(())
            }
        }
    }

    fn require_connected(&self, what: &str) -> Result<(), RtmpError> {
        if self.phase == Phase::WaitConnect {
            return Err(RtmpError::Protocol(format!("{what} before connect")));
        }
        Ok(())
    }

    fn on_connect(&mut self, txn: f64, object: Option<&Amf0>) -> Result<(), RtmpError> {
        if self.phase != Phase::WaitConnect {
            return Err(RtmpError::Protocol("connect sent twice".into()));
        }
        let object = object.ok_or_else(|| RtmpError::Protocol("connect without object".into()))?;
        let app_full = object
            .get("app")
            .and_then(Amf0::as_str)
            .unwrap_or_default()
            .to_string();
        let tc_url = object
            .get("tcUrl")
            .and_then(Amf0::as_str)
            .map(str::to_string);
        let (app, query) = match app_full.split_once('?') {
            Some((a, q)) => (a.to_string(), Some(q.to_string())),
            None => (app_full, None),
        };
        let tc_query = tc_url
            .as_deref()
            .and_then(|u| u.split_once('?'))
            .map(|(_, q)| q.to_string());
        self.app = app.trim_end_matches('/').to_string();
        self.connect_query = query.or(tc_query);
        self.phase = Phase::Connected;

        self.send(
            2,
            types::WINDOW_ACK_SIZE,
            0,
            WINDOW_ACK_SIZE.to_be_bytes().to_vec(),
        );
        let mut bw = WINDOW_ACK_SIZE.to_be_bytes().to_vec();
        bw.push(2);
        self.send(2, types::SET_PEER_BANDWIDTH, 0, bw);
        self.send(
            2,
            types::SET_CHUNK_SIZE,
            0,
            OUT_CHUNK_SIZE.to_be_bytes().to_vec(),
        );
        self.encoder.set_chunk_size(OUT_CHUNK_SIZE as usize);
        self.send_command(
            0,
            &[
                Amf0::String("_result".into()),
                Amf0::Number(txn),
                amf0::object([
                    ("fmsVer", Amf0::String("FMS/3,0,1,123".into())),
                    ("capabilities", Amf0::Number(31.0)),
                ]),
                amf0::object([
                    ("level", Amf0::String("status".into())),
                    ("code", Amf0::String("NetConnection.Connect.Success".into())),
                    ("description", Amf0::String("connection succeeded".into())),
                    ("objectEncoding", Amf0::Number(0.0)),
                ]),
            ],
        );
        self.events.push_back(SessionEvent::Connected {
            app: self.app.clone(),
            tc_url,
        });
        Ok(())
    }
}

fn u32_be(b: &[u8]) -> Option<u32> {
    b.get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}
