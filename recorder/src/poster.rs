//! A poster per recording: `poster.jpg` in its folder, the first picture of its first video
//! segment, made once, as soon as that segment is on disk (on a thread of its own, so the
//! writer never waits for a decoder), or at start for a recording that has none yet (one the
//! relay stopped before it was made).
//!
//! The picture is decoded by whoever implements [`PosterMaker`] (the binary wires GStreamer
//! in); the recorder only picks the segment and stores the result.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tracing::{info, warn};

use crate::store::Recording;

/// The poster's file name in a recording's folder.
pub const FILE: &str = "poster.jpg";

/// Makes a JPEG of the first picture of `segment` (CMAF `moof`+`mdat` after `init`'s
/// `ftyp`+`moov`), `width`×`height` pixels being the picture's size.
pub trait PosterMaker: Send + Sync {
    /// The JPEG file.
    fn jpeg(&self, init: &[u8], segment: &[u8], width: u32, height: u32)
    -> Result<Vec<u8>, String>;
}

impl<F> PosterMaker for F
where
    F: Fn(&[u8], &[u8], u32, u32) -> Result<Vec<u8>, String> + Send + Sync,
{
    fn jpeg(
        &self,
        init: &[u8],
        segment: &[u8],
        width: u32,
        height: u32,
    ) -> Result<Vec<u8>, String> {
        self(init, segment, width, height)
    }
}

/// Where a recording's poster is.
pub fn path(rec: &Recording) -> PathBuf {
    rec.dir().join(FILE)
}

/// Whether a recording has its poster.
pub fn exists(rec: &Recording) -> bool {
    path(rec).is_file()
}

/// What happened when a poster was asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Made {
    /// Written now.
    Made,
    /// It was there already.
    Exists,
    /// No complete video segment yet (or no video at all).
    NotYet,
}

/// Makes the poster of `rec` from its first complete video segment, unless it has one.
pub fn make(rec: &Recording, maker: &dyn PosterMaker) -> Result<Made, String> {
    if exists(rec) {
        return Ok(Made::Exists);
    }
    let meta = rec.meta();
    let Some(video) = meta.renditions.iter().find(|r| r.is_video()) else {
        return Ok(Made::NotYet);
    };
    let renditions = rec.renditions().map_err(|e| e.to_string())?;
    let Some(seg) = renditions.get(&video.id).and_then(|r| {
        r.segments
            .iter()
            .find(|s| s.complete && !s.gap && s.len > 0)
            .cloned()
    }) else {
        return Ok(Made::NotYet);
    };
    let init = rec.init(&video.id, seg.init).map_err(|e| e.to_string())?;
    let media = rec
        .read_media(&video.id, seg.offset, seg.len)
        .map_err(|e| e.to_string())?;
    let jpeg = maker.jpeg(
        &init,
        &media,
        video.width.unwrap_or(0),
        video.height.unwrap_or(0),
    )?;
    let tmp = rec.dir().join(format!("{FILE}.tmp"));
    std::fs::write(&tmp, &jpeg)
        .and_then(|()| std::fs::rename(&tmp, path(rec)))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("writing {FILE}: {e}")
        })?;
    info!(recording = %rec.id, bytes = jpeg.len(), msn = seg.msn, "poster made");
    Ok(Made::Made)
}

/// A recording's poster while it is written: asked for at the end of every video segment
/// until one is made (or making it failed: it is not tried again).
pub(crate) struct Pending {
    maker: Arc<dyn PosterMaker>,
    /// 0: none yet, 1: being made, 2: done (made or given up).
    state: Arc<AtomicU8>,
}

impl Pending {
    pub(crate) fn new(maker: Arc<dyn PosterMaker>) -> Self {
        Pending {
            maker,
            state: Arc::new(AtomicU8::new(0)),
        }
    }

    /// A video segment was completed: make the poster if none is being made or was made.
    pub(crate) fn segment_done(&self, rec: &Arc<Recording>) {
        if self
            .state
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let (rec, maker, state) = (rec.clone(), self.maker.clone(), self.state.clone());
        let spawned = std::thread::Builder::new()
            .name("poster".into())
            .spawn(move || {
                let next = match make(&rec, &*maker) {
                    Ok(Made::NotYet) => 0,
                    Ok(_) => 2,
                    Err(e) => {
                        warn!(recording = %rec.id, "no poster: {e}");
                        2
                    }
                };
                state.store(next, Ordering::Release);
            });
        if let Err(e) = spawned {
            warn!("no poster thread: {e}");
            self.state.store(0, Ordering::Release);
        }
    }
}

/// Makes the posters the recordings in `recordings` lack (those a stopped relay left
/// without one), on a thread of its own.
pub(crate) fn backfill(recordings: Vec<Arc<Recording>>, maker: Arc<dyn PosterMaker>) {
    let todo: Vec<_> = recordings
        .into_iter()
        .filter(|r| !r.is_live() && !exists(r) && r.meta().renditions.iter().any(|x| x.is_video()))
        .collect();
    if todo.is_empty() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("posters".into())
        .spawn(move || {
            for rec in todo {
                if let Err(e) = make(&rec, &*maker) {
                    warn!(recording = %rec.id, "no poster: {e}");
                }
            }
        });
}
