//! Recordings: every lecture written to disk as it streams, and replayed afterwards.
//!
//! The LL-HLS packager already cuts each rendition (the video, each dialect) into CMAF parts;
//! the recorder writes exactly those bytes, part by part as they close, so a recording costs
//! no encoding and keeps every dialect with its language and name.
//!
//! # Layout
//! One folder per recording under the configured directory, named by its id
//! (`20261206T193000Z-xihe`):
//!
//! ```text
//! recording.json            what it is: lecture, title, times, state, renditions (meta.rs)
//! video/init-0.mp4          a rendition's initialization segments, one per codec change
//! video/media.m4s           its parts (moof + mdat), appended as they close
//! video/index.txt           one line per part written, one per segment completed (index.rs)
//! poster.jpg                the first picture, once the first video segment is written (poster.rs)
//! audio-yue/...             the same for every dialect
//! ```
//!
//! # Crash safety
//! A part is appended to `media.m4s`, then its line to `index.txt`, each a single write to
//! the kernel; both files are flushed to the disk (`fdatasync`) when a segment completes.
//! So a killed relay loses at most the part being written (its line never made it to the
//! index), and a power cut at most the segment in progress. At start, [`Library::open`]
//! recovers every recording left in the `recording` state: it reads each index up to its
//! last whole line, checks that every part it names is really on disk, cuts off what is not,
//! and marks the recording `recovered`. A recording that cannot be read is reported and
//! skipped.
//!
//! # Disk trouble
//! A write that fails (a full or unwritable disk) or free space below the floor marks the
//! recording `failed` with the reason, and nothing else: the live lecture never waits on the
//! disk (the hub hands events over without blocking; a writer that falls behind drops them
//! and fails the same way). When space returns, recording resumes at the next segment, as a
//! new part of the same recording after a discontinuity.

pub mod index;
pub mod meta;
pub mod mp4;
pub mod outbox;
pub mod playlist;
pub mod poster;
mod space;
pub mod store;
mod writer;

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

pub use meta::{Meta, RenditionMeta, State};
pub use store::{Library, Notice, Recorder, Recording, RecordingConfig};

/// What the packager hands the recorder, in the order it happens.
#[derive(Debug, Clone)]
pub enum Event {
    /// A rendition's initialization segment: its first, or a new version after the codec
    /// configuration changed.
    Init {
        /// Rendition id in URLs (`video`, `audio-yue`).
        rendition: Arc<str>,
        /// Version, as in `init-VERSION.mp4`.
        version: u32,
        /// The `ftyp` + `moov` bytes.
        data: Bytes,
        /// What the rendition carries.
        track: RenditionMeta,
    },
    /// A part closed.
    Part {
        /// Rendition id.
        rendition: Arc<str>,
        /// Where it belongs.
        part: PartMeta,
        /// The `moof` + `mdat` bytes; empty for a gap.
        data: Bytes,
    },
    /// A segment of a rendition is complete.
    SegmentEnd {
        /// Rendition id.
        rendition: Arc<str>,
        /// Its media sequence number.
        msn: u64,
    },
    /// The lecture is over.
    Ended,
}

/// A part's place in the lecture.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartMeta {
    /// Media sequence number of its segment.
    pub msn: u64,
    /// Index within the segment.
    pub index: u32,
    /// Duration in seconds.
    pub duration: f64,
    /// Starts with a sync sample.
    pub independent: bool,
    /// No media (`GAP=YES`).
    pub gap: bool,
    /// Its segment follows a discontinuity (a new publishing session).
    pub discontinuity: bool,
    /// Discontinuity sequence number of its segment.
    pub dseq: u64,
    /// Initialization segment version its segment needs.
    pub init_version: u32,
    /// Wall-clock time of its segment's first sample.
    pub segment_pdt: SystemTime,
}

/// Fuzzing entry point for what recovery reads back from disk: `data` as a rendition's
/// `index.txt` (every line kept is re-encoded and must parse back the same, and is absorbed
/// into segments as the store does) and as a `recording.json`. Never panics.
#[doc(hidden)]
pub fn fuzz_recovery(data: &[u8]) {
    let (lines, used) = index::read(data);
    assert!(used <= data.len());
    let mut segments = Vec::new();
    for line in &lines {
        let text = line.encode();
        let again = index::Line::parse(text.trim_end_matches('\n'));
        assert_eq!(again.as_ref(), Some(line), "index line round trip");
        store::absorb(&mut segments, line);
    }
    let _ = meta::Meta::from_bytes(data, "fuzz");
}
