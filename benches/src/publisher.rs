//! An RTMP publisher that replays FLV tags in real time, looping, and records when each
//! video frame left it (by its timestamp), so latency can be measured end to end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use ingest::rtmp::amf0::{self, Amf0};
use ingest::rtmp::chunk::{ChunkEncoder, Message, types};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::flv::Tag;

/// Send times of video frames, by their (looped) RTMP timestamp in ms.
pub type SendLog = Arc<Mutex<HashMap<u32, Instant>>>;

async fn send(stream: &mut TcpStream, enc: &ChunkEncoder, m: Message) -> anyhow::Result<()> {
    let mut out = BytesMut::new();
    enc.encode(&m, &mut out);
    stream.write_all(&out).await?;
    Ok(())
}

fn command(values: &[Amf0], stream_id: u32) -> Message {
    let mut body = Vec::new();
    for v in values {
        amf0::encode(v, &mut body);
    }
    Message {
        csid: 3,
        timestamp: 0,
        type_id: types::COMMAND_AMF0,
        stream_id,
        payload: Bytes::from(body),
    }
}

/// Publishes `tags` to `rtmp://addr/live/name` in real time until `until`, looping the file.
pub async fn publish(
    addr: SocketAddr,
    name: &str,
    tags: Arc<Vec<Tag>>,
    log: SendLog,
    until: Instant,
) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut c0c1 = vec![3u8; 1537];
    c0c1[1..9].fill(0);
    stream.write_all(&c0c1).await?;
    let mut s = vec![0u8; 3073];
    stream.read_exact(&mut s).await?;
    stream.write_all(&s[1..1537]).await?;
    let mut enc = ChunkEncoder::new();
    let s_ = |x: &str| Amf0::String(x.into());
    send(
        &mut stream,
        &enc,
        command(
            &[
                s_("connect"),
                Amf0::Number(1.0),
                amf0::object([("app", s_("live"))]),
            ],
            0,
        ),
    )
    .await?;
    send(
        &mut stream,
        &enc,
        command(&[s_("createStream"), Amf0::Number(2.0), Amf0::Null], 0),
    )
    .await?;
    send(
        &mut stream,
        &enc,
        command(
            &[
                s_("publish"),
                Amf0::Number(3.0),
                Amf0::Null,
                s_(name),
                s_("live"),
            ],
            1,
        ),
    )
    .await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("NetStream.Publish.Start") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("relay closed the publish");
        }
        got.extend_from_slice(&buf[..n]);
    }
    send(
        &mut stream,
        &enc,
        Message {
            csid: 2,
            timestamp: 0,
            type_id: types::SET_CHUNK_SIZE,
            stream_id: 0,
            payload: Bytes::copy_from_slice(&4096u32.to_be_bytes()),
        },
    )
    .await?;
    enc.set_chunk_size(4096);
    // Keep reading (acks, pings) so the relay's writes never block.
    let (mut rd, mut wr) = stream.into_split();
    tokio::spawn(async move {
        let mut b = [0u8; 4096];
        while matches!(rd.read(&mut b).await, Ok(n) if n > 0) {}
    });

    let span = tags.last().context("empty FLV")?.timestamp + 40;
    let start = Instant::now();
    let mut loops = 0u32;
    'outer: loop {
        for tag in tags.iter() {
            if tag.is_config() && loops > 0 {
                continue;
            }
            if tag.kind != 8 && tag.kind != 9 {
                continue;
            }
            let ts = tag.timestamp + loops * span;
            let due = start + Duration::from_millis(ts as u64);
            if due > until {
                break 'outer;
            }
            tokio::time::sleep_until(due.into()).await;
            let mut out = BytesMut::new();
            enc.encode(
                &Message {
                    csid: if tag.kind == 8 { 4 } else { 6 },
                    timestamp: ts,
                    type_id: tag.kind,
                    stream_id: 1,
                    payload: tag.body.clone(),
                },
                &mut out,
            );
            wr.write_all(&out).await?;
            if tag.kind == 9 {
                log.lock().expect("lock").insert(ts, Instant::now());
            }
        }
        loops += 1;
    }
    Ok(())
}
