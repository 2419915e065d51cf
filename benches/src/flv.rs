//! Reads the tags of an FLV file (as written by `ffmpeg -f flv`).

use anyhow::{Context, bail};
use bytes::Bytes;

/// One FLV tag.
#[derive(Debug, Clone)]
pub struct Tag {
    /// 8 audio, 9 video, 18 script data.
    pub kind: u8,
    /// Milliseconds.
    pub timestamp: u32,
    /// Tag body.
    pub body: Bytes,
}

impl Tag {
    /// An AVC or AAC sequence header.
    pub fn is_config(&self) -> bool {
        // Both AVC and AAC mark their sequence header with packet type 0 in byte 1.
        self.body.len() > 1 && (self.kind == 9 || self.kind == 8) && self.body[1] == 0
    }

    /// A video keyframe.
    pub fn is_keyframe(&self) -> bool {
        self.kind == 9 && self.body.first().is_some_and(|b| b >> 4 == 1)
    }
}

/// Parses a whole FLV file.
pub fn read(data: &[u8]) -> anyhow::Result<Vec<Tag>> {
    if data.len() < 13 || &data[..3] != b"FLV" {
        bail!("not an FLV file");
    }
    let header = u32::from_be_bytes(data[5..9].try_into()?) as usize;
    let mut pos = header + 4;
    let mut tags = Vec::new();
    while pos + 11 <= data.len() {
        let h = &data[pos..pos + 11];
        let size = ((h[1] as usize) << 16) | ((h[2] as usize) << 8) | h[3] as usize;
        let ts = ((h[7] as u32) << 24) | ((h[4] as u32) << 16) | ((h[5] as u32) << 8) | h[6] as u32;
        let body = data
            .get(pos + 11..pos + 11 + size)
            .context("truncated FLV tag")?;
        tags.push(Tag {
            kind: h[0] & 0x1f,
            timestamp: ts,
            body: Bytes::copy_from_slice(body),
        });
        pos += 11 + size + 4;
    }
    Ok(tags)
}
