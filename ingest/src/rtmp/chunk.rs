//! RTMP chunk stream: reassembling messages from chunks, and chunking messages we send.
//!
//! Every size taken from the wire is checked before anything is allocated for it: message
//! lengths against [`Limits`], the number of chunk streams with state, and the bytes held in
//! partly received messages. Chunk payloads are consumed as they arrive, so a huge chunk size
//! does not make us buffer a whole chunk.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Message type ids (RTMP specification §5.4, §7.1).
pub mod types {
    /// Set Chunk Size.
    pub const SET_CHUNK_SIZE: u8 = 1;
    /// Abort Message.
    pub const ABORT: u8 = 2;
    /// Acknowledgement.
    pub const ACK: u8 = 3;
    /// User Control Message.
    pub const USER_CONTROL: u8 = 4;
    /// Window Acknowledgement Size.
    pub const WINDOW_ACK_SIZE: u8 = 5;
    /// Set Peer Bandwidth.
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    /// Audio.
    pub const AUDIO: u8 = 8;
    /// Video.
    pub const VIDEO: u8 = 9;
    /// Data message, AMF3.
    pub const DATA_AMF3: u8 = 15;
    /// Command, AMF3.
    pub const COMMAND_AMF3: u8 = 17;
    /// Data message, AMF0.
    pub const DATA_AMF0: u8 = 18;
    /// Command, AMF0.
    pub const COMMAND_AMF0: u8 = 20;
    /// Aggregate message (a run of FLV tags).
    pub const AGGREGATE: u8 = 22;
}

/// Hard limits of the decoder.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest audio, video or aggregate message.
    pub max_media_message: usize,
    /// Largest message of any other type (commands, metadata, control).
    pub max_other_message: usize,
    /// Most chunk streams with state at once.
    pub max_chunk_streams: usize,
    /// Most bytes held in partly received messages, over all chunk streams.
    pub max_pending_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_media_message: 4 * 1024 * 1024,
            max_other_message: 256 * 1024,
            max_chunk_streams: 64,
            max_pending_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Largest chunk size a peer may set (the protocol's 31-bit maximum).
pub const MAX_CHUNK_SIZE: u32 = 0x7fff_ffff;

/// A reassembled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Chunk stream it arrived on.
    pub csid: u32,
    /// 32-bit timestamp in milliseconds (wraps).
    pub timestamp: u32,
    /// Message type id.
    pub type_id: u8,
    /// Message stream id.
    pub stream_id: u32,
    /// Body.
    pub payload: Bytes,
}

/// Chunk-level protocol errors: the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A type 1/2/3 chunk on a chunk stream that never had a type 0 header.
    #[error("chunk stream {0} continues a message it never started")]
    NoPreviousHeader(u32),
    /// Declared message length above the limit.
    #[error("message of type {type_id} declares {length} bytes, above the limit of {limit}")]
    MessageTooLarge {
        /// Message type.
        type_id: u8,
        /// Declared length.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// Too many chunk streams.
    #[error("more than {0} chunk streams")]
    TooManyChunkStreams(usize),
    /// Too many bytes held in partial messages.
    #[error("more than {0} bytes pending in partial messages")]
    TooMuchPending(usize),
    /// A new message header arrived while a message was half received on that stream.
    #[error("chunk stream {0} starts a new message before finishing the last")]
    Interrupted(u32),
    /// Set Chunk Size of 0 or with the top bit set.
    #[error("invalid chunk size {0}")]
    BadChunkSize(u32),
    /// A control message with the wrong length.
    #[error("malformed control message of type {0}")]
    BadControl(u8),
}

#[derive(Debug, Default)]
struct ChunkStream {
    timestamp: u32,
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    extended: bool,
    /// The message being received and how much is still missing.
    partial: Option<BytesMut>,
}

/// Where the decoder is within the current chunk.
#[derive(Debug, Clone, Copy)]
enum Position {
    /// Expecting a chunk header.
    Header,
    /// Inside the payload of a chunk on `csid`, `remaining` bytes to go in this chunk.
    Payload { csid: u32, remaining: usize },
}

/// Reassembles messages from the chunk stream.
pub struct ChunkDecoder {
    chunk_size: usize,
    streams: HashMap<u32, ChunkStream>,
    position: Position,
    pending: usize,
    limits: Limits,
}

impl ChunkDecoder {
    /// A decoder with the protocol's initial chunk size (128).
    pub fn new(limits: Limits) -> Self {
        ChunkDecoder {
            chunk_size: 128,
            streams: HashMap::new(),
            position: Position::Header,
            pending: 0,
            limits,
        }
    }

    /// Applies a Set Chunk Size from the peer.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), ChunkError> {
        if size == 0 || size > MAX_CHUNK_SIZE {
            return Err(ChunkError::BadChunkSize(size));
        }
        self.chunk_size = size as usize;
        Ok(())
    }

    /// Drops the partial message of a chunk stream (Abort Message).
    pub fn abort(&mut self, csid: u32) {
        if let Some(s) = self.streams.get_mut(&csid) {
            if let Some(p) = s.partial.take() {
                self.pending -= p.len();
            }
            if let Position::Payload { csid: c, .. } = self.position
                && c == csid
            {
                self.position = Position::Header;
            }
        }
    }

    /// Decodes from `buf`, consuming what it uses. Returns the next complete message, or
    /// `Ok(None)` when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ChunkError> {
        loop {
            match self.position {
                Position::Header => {
                    if !self.read_header(buf)? {
                        return Ok(None);
                    }
                }
                Position::Payload { csid, remaining } => {
                    let take = remaining.min(buf.len());
                    if take == 0 && remaining > 0 {
                        return Ok(None);
                    }
                    let stream = self.streams.get_mut(&csid).expect("stream has a header");
                    let partial = stream.partial.as_mut().expect("payload has a message");
                    partial.put_slice(&buf[..take]);
                    buf.advance(take);
                    self.pending += take;
                    let remaining = remaining - take;
                    if remaining > 0 {
                        self.position = Position::Payload { csid, remaining };
                        return Ok(None);
                    }
                    self.position = Position::Header;
                    if partial.len() == stream.length as usize {
                        let payload = stream.partial.take().expect("checked").freeze();
                        self.pending -= payload.len();
                        return Ok(Some(Message {
                            csid,
                            timestamp: stream.timestamp,
                            type_id: stream.type_id,
                            stream_id: stream.stream_id,
                            payload,
                        }));
                    }
                }
            }
        }
    }

    /// Parses one chunk header if `buf` holds all of it. Returns false if more bytes are
    /// needed (nothing consumed).
    fn read_header(&mut self, buf: &mut BytesMut) -> Result<bool, ChunkError> {
        let Some(&b0) = buf.first() else {
            return Ok(false);
        };
        let fmt = b0 >> 6;
        let (csid, basic_len) = match b0 & 0x3f {
            0 => match buf.get(1) {
                Some(&b) => (b as u32 + 64, 2),
                None => return Ok(false),
            },
            1 => match (buf.get(1), buf.get(2)) {
                (Some(&lo), Some(&hi)) => (hi as u32 * 256 + lo as u32 + 64, 3),
                _ => return Ok(false),
            },
            n => (n as u32, 1),
        };
        let header_len = basic_len + [11, 7, 3, 0][fmt as usize];
        if buf.len() < header_len {
            return Ok(false);
        }
        if fmt != 0 && !self.streams.contains_key(&csid) {
            return Err(ChunkError::NoPreviousHeader(csid));
        }
        if !self.streams.contains_key(&csid) && self.streams.len() >= self.limits.max_chunk_streams
        {
            return Err(ChunkError::TooManyChunkStreams(
                self.limits.max_chunk_streams,
            ));
        }
        let h = &buf[basic_len..header_len];
        let u24 = |b: &[u8]| ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        let ts_field = if fmt < 3 { Some(u24(&h[0..3])) } else { None };
        let extended = match ts_field {
            Some(v) => v == 0xff_ffff,
            None => self.streams.get(&csid).is_some_and(|s| s.extended),
        };
        let total_len = header_len + if extended { 4 } else { 0 };
        if buf.len() < total_len {
            return Ok(false);
        }
        let ts_value = if extended {
            let e = &buf[header_len..total_len];
            u32::from_be_bytes([e[0], e[1], e[2], e[3]])
        } else {
            ts_field.unwrap_or(0)
        };

        let limits = self.limits;
        let stream = self.streams.entry(csid).or_default();
        let starting_new = stream.partial.is_none();
        if !starting_new && fmt != 3 {
            return Err(ChunkError::Interrupted(csid));
        }
        if fmt <= 1 {
            let length = u24(&h[3..6]);
            let type_id = h[6];
            let limit = match type_id {
                types::AUDIO | types::VIDEO | types::AGGREGATE => limits.max_media_message,
                _ => limits.max_other_message,
            };
            if length as usize > limit {
                return Err(ChunkError::MessageTooLarge {
                    type_id,
                    length: length as usize,
                    limit,
                });
            }
            stream.length = length;
            stream.type_id = type_id;
        }
        match fmt {
            0 => {
                stream.stream_id = u32::from_le_bytes([h[7], h[8], h[9], h[10]]);
                stream.timestamp = ts_value;
                // ffmpeg's reading: a later type 3 starting a new message adds this field.
                stream.delta = ts_value;
            }
            1 | 2 => {
                stream.delta = ts_value;
                stream.timestamp = stream.timestamp.wrapping_add(ts_value);
            }
            _ => {
                if starting_new {
                    stream.timestamp = stream.timestamp.wrapping_add(stream.delta);
                }
            }
        }
        stream.extended = extended;
        buf.advance(total_len);

        if starting_new {
            if self.pending + stream.length as usize > limits.max_pending_bytes {
                return Err(ChunkError::TooMuchPending(limits.max_pending_bytes));
            }
            // Grow with the data rather than trusting the declared length for the
            // allocation: the body may never come.
            stream.partial = Some(BytesMut::with_capacity(
                (stream.length as usize).min(self.chunk_size).min(64 * 1024),
            ));
        }
        let have = stream.partial.as_ref().map_or(0, |p| p.len());
        let remaining = (stream.length as usize - have).min(self.chunk_size);
        self.position = Position::Payload { csid, remaining };
        Ok(true)
    }
}

/// Chunks outgoing messages. Every message gets a type 0 header; we send few messages, so
/// header compression is not worth its state.
pub struct ChunkEncoder {
    chunk_size: usize,
}

impl ChunkEncoder {
    /// An encoder with the initial chunk size (128).
    pub fn new() -> Self {
        ChunkEncoder { chunk_size: 128 }
    }

    /// Changes the chunk size used after this point (after sending Set Chunk Size).
    pub fn set_chunk_size(&mut self, size: usize) {
        self.chunk_size = size.max(1);
    }

    /// Appends the chunks of one message to `out`.
    pub fn encode(&self, msg: &Message, out: &mut BytesMut) {
        let ts = msg.timestamp;
        let extended = ts >= 0xff_ffff;
        let mut first = true;
        let mut body = &msg.payload[..];
        loop {
            let fmt: u8 = if first { 0 } else { 3 };
            write_basic_header(fmt, msg.csid, out);
            if first {
                let field = if extended { 0xff_ffff } else { ts };
                out.put_slice(&field.to_be_bytes()[1..]);
                out.put_slice(&(msg.payload.len() as u32).to_be_bytes()[1..]);
                out.put_u8(msg.type_id);
                out.put_u32_le(msg.stream_id);
            }
            if extended {
                out.put_u32(ts);
            }
            let n = body.len().min(self.chunk_size);
            out.put_slice(&body[..n]);
            body = &body[n..];
            first = false;
            if body.is_empty() {
                break;
            }
        }
    }
}

impl Default for ChunkEncoder {
    fn default() -> Self {
        Self::new()
    }
}

fn write_basic_header(fmt: u8, csid: u32, out: &mut BytesMut) {
    match csid {
        2..=63 => out.put_u8((fmt << 6) | csid as u8),
        64..=319 => {
            out.put_u8(fmt << 6);
            out.put_u8((csid - 64) as u8);
        }
        _ => {
            let v = csid - 64;
            out.put_u8((fmt << 6) | 1);
            out.put_u8(v as u8);
            out.put_u8((v >> 8) as u8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(csid: u32, ts: u32, type_id: u8, len: usize) -> Message {
        Message {
            csid,
            timestamp: ts,
            type_id,
            stream_id: 1,
            payload: Bytes::from(
                (0..len)
                    .map(|i| (i * 7 + csid as usize) as u8)
                    .collect::<Vec<_>>(),
            ),
        }
    }

    fn decode_all(dec: &mut ChunkDecoder, bytes: &[u8]) -> Result<Vec<Message>, ChunkError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = dec.decode(&mut buf)? {
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn round_trip_at_many_chunk_sizes_and_csids() {
        for chunk_size in [1usize, 2, 100, 128, 4096, 70_000] {
            let mut enc = ChunkEncoder::new();
            enc.set_chunk_size(chunk_size);
            let msgs = vec![
                msg(3, 0, types::COMMAND_AMF0, 300),
                msg(4, 40, types::AUDIO, 5),
                msg(70, 0x0100_0000, types::VIDEO, 10_000),
                msg(400, 0xffff_fffe, types::VIDEO, 0),
                msg(5, 7, types::DATA_AMF0, 129),
            ];
            let mut bytes = BytesMut::new();
            for m in &msgs {
                enc.encode(m, &mut bytes);
            }
            let mut dec = ChunkDecoder::new(Limits::default());
            dec.set_chunk_size(chunk_size as u32).unwrap();
            assert_eq!(
                decode_all(&mut dec, &bytes).unwrap(),
                msgs,
                "chunk size {chunk_size}"
            );
        }
    }

    #[test]
    fn every_split_point_gives_the_same_messages() {
        let mut enc = ChunkEncoder::new();
        enc.set_chunk_size(64);
        let msgs = vec![
            msg(4, 1, types::AUDIO, 200),
            msg(6, 0x0123_4567, types::VIDEO, 150),
        ];
        let mut bytes = BytesMut::new();
        for m in &msgs {
            enc.encode(m, &mut bytes);
        }
        for split in 0..bytes.len() {
            let mut dec = ChunkDecoder::new(Limits::default());
            dec.set_chunk_size(64).unwrap();
            let mut buf = BytesMut::from(&bytes[..split]);
            let mut got = Vec::new();
            while let Some(m) = dec.decode(&mut buf).unwrap() {
                got.push(m);
            }
            buf.extend_from_slice(&bytes[split..]);
            while let Some(m) = dec.decode(&mut buf).unwrap() {
                got.push(m);
            }
            assert_eq!(got, msgs, "split at {split}");
        }
    }

    #[test]
    fn interleaved_messages_on_two_chunk_streams() {
        // Audio on csid 4 interleaved with the chunks of a video message on csid 6, as the
        // specification allows.
        let mut out = BytesMut::new();
        // video: type 0 header, 200 bytes, chunk size 128 -> 128 then 72
        out.put_u8(6);
        out.put_slice(&[0, 0, 10, 0, 0, 200, 9, 1, 0, 0, 0]);
        out.put_slice(&[0xaa; 128]);
        // audio message in between: type 0, 3 bytes
        out.put_u8(4);
        out.put_slice(&[0, 0, 11, 0, 0, 3, 8, 1, 0, 0, 0]);
        out.put_slice(&[1, 2, 3]);
        // rest of video: type 3
        out.put_u8(0xc0 | 6);
        out.put_slice(&[0xbb; 72]);
        // next audio: type 2 delta 23
        out.put_u8(0x80 | 4);
        out.put_slice(&[0, 0, 23]);
        out.put_slice(&[4, 5, 6]);
        // next audio: type 3 -> same delta again
        out.put_u8(0xc0 | 4);
        out.put_slice(&[7, 8, 9]);
        let mut dec = ChunkDecoder::new(Limits::default());
        let msgs = decode_all(&mut dec, &out).unwrap();
        assert_eq!(msgs.len(), 4);
        assert_eq!(
            (msgs[0].csid, msgs[0].timestamp, &msgs[0].payload[..]),
            (4, 11, &[1, 2, 3][..])
        );
        assert_eq!(msgs[1].csid, 6);
        assert_eq!(msgs[1].payload.len(), 200);
        assert_eq!(msgs[1].payload[127..129], [0xaa, 0xbb]);
        assert_eq!(msgs[2].timestamp, 34);
        assert_eq!(msgs[3].timestamp, 57);
        assert_eq!(&msgs[3].payload[..], &[7, 8, 9]);
    }

    #[test]
    fn oversized_message_is_refused_before_allocation() {
        let mut dec = ChunkDecoder::new(Limits::default());
        // video message declaring 16 MiB - 1
        let bytes = [6, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0];
        assert!(matches!(
            decode_all(&mut dec, &bytes),
            Err(ChunkError::MessageTooLarge {
                length: 0xff_ffff,
                ..
            })
        ));
        let mut dec = ChunkDecoder::new(Limits::default());
        let bytes = [3, 0, 0, 0, 0x10, 0x00, 0x00, 20, 0, 0, 0, 0];
        assert!(matches!(
            decode_all(&mut dec, &bytes),
            Err(ChunkError::MessageTooLarge { type_id: 20, .. })
        ));
    }

    #[test]
    fn pending_bytes_are_bounded_across_streams() {
        let mut dec = ChunkDecoder::new(Limits {
            max_pending_bytes: 1000,
            ..Limits::default()
        });
        let mut out = BytesMut::new();
        for csid in 3..10u8 {
            // 400-byte video messages, only the first 128-byte chunk of each sent
            out.put_u8(csid);
            out.put_slice(&[0, 0, 0, 0, 0x01, 0x90, 9, 1, 0, 0, 0]);
            out.put_slice(&[0; 128]);
        }
        assert_eq!(
            decode_all(&mut dec, &out),
            Err(ChunkError::TooMuchPending(1000))
        );
    }

    #[test]
    fn chunk_stream_count_is_bounded() {
        let mut dec = ChunkDecoder::new(Limits::default());
        let mut out = BytesMut::new();
        for csid in 0..100u32 {
            write_basic_header(0, 64 + csid, &mut out);
            out.put_slice(&[0, 0, 0, 0, 0, 0, 8, 1, 0, 0, 0]);
        }
        assert_eq!(
            decode_all(&mut dec, &out),
            Err(ChunkError::TooManyChunkStreams(64))
        );
    }

    #[test]
    fn continuation_without_header_and_bad_chunk_sizes() {
        let mut dec = ChunkDecoder::new(Limits::default());
        assert_eq!(
            decode_all(&mut dec, &[0xc3, 1]),
            Err(ChunkError::NoPreviousHeader(3))
        );
        assert_eq!(dec.set_chunk_size(0), Err(ChunkError::BadChunkSize(0)));
        assert_eq!(
            dec.set_chunk_size(0x8000_0000),
            Err(ChunkError::BadChunkSize(0x8000_0000))
        );
    }

    #[test]
    fn new_header_mid_message_is_an_error() {
        let mut dec = ChunkDecoder::new(Limits::default());
        let mut out = BytesMut::new();
        out.put_u8(6);
        out.put_slice(&[0, 0, 0, 0, 0, 200, 9, 1, 0, 0, 0]);
        out.put_slice(&[0; 128]);
        out.put_u8(6);
        out.put_slice(&[0, 0, 0, 0, 0, 200, 9, 1, 0, 0, 0]);
        assert_eq!(decode_all(&mut dec, &out), Err(ChunkError::Interrupted(6)));
    }

    #[test]
    fn abort_drops_partial_message() {
        let mut dec = ChunkDecoder::new(Limits::default());
        let mut out = BytesMut::new();
        out.put_u8(6);
        out.put_slice(&[0, 0, 0, 0, 0, 200, 9, 1, 0, 0, 0]);
        out.put_slice(&[0; 128]);
        assert!(decode_all(&mut dec, &out).unwrap().is_empty());
        dec.abort(6);
        let mut out = BytesMut::new();
        out.put_u8(6);
        out.put_slice(&[0, 0, 0, 0, 0, 2, 9, 1, 0, 0, 0, 1, 2]);
        let msgs = decode_all(&mut dec, &out).unwrap();
        assert_eq!(&msgs[0].payload[..], &[1, 2]);
    }

    #[test]
    fn garbage_never_panics() {
        let mut x = 0x1234_5678u32;
        for _ in 0..2000 {
            let mut bytes = Vec::new();
            for _ in 0..(x % 400) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                bytes.push(x as u8);
            }
            let mut dec = ChunkDecoder::new(Limits::default());
            let _ = decode_all(&mut dec, &bytes);
        }
    }
}
