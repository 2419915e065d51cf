//! `recording.json`: what a recording is. Rewritten whole (a temporary file renamed over it,
//! then the folder flushed) whenever the recording changes state or gains a rendition.

use std::io::Write as _;
use std::path::Path;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Version of the folder layout this code writes.
pub const FORMAT: u32 = 1;

/// Where a recording is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The lecture is live and being written.
    Recording,
    /// The lecture ended and everything it sent was written.
    Complete,
    /// Writing stopped (a full or unwritable disk, free space below the floor, a disk too
    /// slow): what was written plays; it resumes when it can.
    Failed,
    /// The relay stopped while recording (a crash, a power cut): rebuilt from what was on
    /// disk at the next start.
    Recovered,
}

impl State {
    /// As in the API.
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Recording => "recording",
            State::Complete => "complete",
            State::Failed => "failed",
            State::Recovered => "recovered",
        }
    }
}

/// One rendition: the video, or one dialect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenditionMeta {
    /// Id in URLs and its folder's name (`video`, `audio-yue`).
    pub id: String,
    /// `video` or `audio`.
    pub kind: String,
    /// RFC 6381 codec string (`avc1.64001f`, `mp4a.40.2`).
    pub codec: String,
    /// BCP-47 language of a dialect (`yue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Display name of a dialect (粤语).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Picture size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Picture size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Audio channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u16>,
    /// Audio sample rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
}

impl RenditionMeta {
    /// Whether this is the picture.
    pub fn is_video(&self) -> bool {
        self.kind == "video"
    }

    /// What a rendition of `info` carries.
    pub fn of(id: &str, info: &media::TrackInfo, language: Option<&str>, name: &str) -> Self {
        let (mut width, mut height, mut channels, mut sample_rate) = (None, None, None, None);
        match &info.codec {
            media::CodecParams::H264(h) => {
                width = Some(h.width);
                height = Some(h.height);
            }
            media::CodecParams::Aac(a) => {
                channels = Some(a.channel_count());
                sample_rate = Some(a.sample_rate);
            }
        }
        RenditionMeta {
            id: id.to_string(),
            kind: match info.kind() {
                media::TrackKind::Video => "video",
                media::TrackKind::Audio => "audio",
            }
            .to_string(),
            codec: info.codec.codec_string(),
            language: language.map(str::to_string),
            name: name.to_string(),
            width,
            height,
            channels,
            sample_rate,
        }
    }
}

/// A time writing stopped, why, and when it resumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interruption {
    /// When it stopped.
    pub from: Timestamp,
    /// When it resumed; none while it has not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Timestamp>,
    /// Why.
    pub reason: String,
}

/// The contents of `recording.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Folder layout version ([`FORMAT`]).
    pub format: u32,
    /// The recording's id (its folder's name).
    pub id: String,
    /// Stream name of the lecture.
    pub lecture: String,
    /// Title, when the lecture has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The dialect players pick by default.
    pub default_language: String,
    /// When the lecture began.
    pub started: Timestamp,
    /// When it ended (or the relay stopped, for a recovered one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<Timestamp>,
    /// Where it is in its life.
    pub state: State,
    /// Why it failed, while it is failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Every time writing stopped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interruptions: Vec<Interruption>,
    /// How long it lasts, in seconds (the longest rendition), once it is no longer live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// Days it is kept; none for the relay's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    /// Its renditions, in the order they appeared.
    pub renditions: Vec<RenditionMeta>,
}

/// Why a `recording.json` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// Reading failed.
    #[error("reading {0}: {1}")]
    Io(String, std::io::Error),
    /// It is not what we write.
    #[error("{0} is damaged: {1}")]
    Damaged(String, String),
}

impl Meta {
    /// Reads `recording.json` in `dir`.
    pub fn load(dir: &Path) -> Result<Meta, MetaError> {
        let path = dir.join("recording.json");
        let text =
            std::fs::read(&path).map_err(|e| MetaError::Io(path.display().to_string(), e))?;
        Meta::from_bytes(&text, &path.display().to_string())
    }

    /// Reads the bytes of a `recording.json` (`name` only names it in errors).
    pub fn from_bytes(text: &[u8], name: &str) -> Result<Meta, MetaError> {
        if text.len() > 1 << 20 {
            return Err(MetaError::Damaged(
                name.to_string(),
                "larger than 1 MiB".into(),
            ));
        }
        let meta: Meta = serde_json::from_slice(text)
            .map_err(|e| MetaError::Damaged(name.to_string(), e.to_string()))?;
        if meta.format != FORMAT {
            return Err(MetaError::Damaged(
                name.to_string(),
                format!("layout version {} (this relay reads {FORMAT})", meta.format),
            ));
        }
        Ok(meta)
    }

    /// Writes `recording.json` in `dir` so that a crash leaves the old or the new one whole.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join("recording.json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        f.sync_data()?;
        drop(f);
        std::fs::rename(&tmp, dir.join("recording.json"))?;
        sync_dir(dir)
    }
}

/// Makes a folder's entries (a new file, a rename) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
