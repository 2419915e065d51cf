//! The smaller pictures of a lecture (`[ladder]`): the publisher's video, as the packager
//! placed it, goes once into one transcoder per rung ([`media::encode::Transcoders::video_rung`],
//! GStreamer in `transcode`), whose frames come back on the lecture timeline and become a
//! derived rendition `video-HEIGHTp` ([`crate::hls::packager::Packager::set_derived_track`]):
//! another HLS variant sharing the dialects.
//!
//! The transcoder keeps each frame's presentation time and makes a keyframe exactly where the
//! source has one; the rung's decode time is its presentation time less the source's
//! composition offset at its keyframes, so each rung keyframe lands on the source keyframe's
//! decode time, where the packager cuts segments: every rung segment starts with its own
//! keyframe.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use media::encode::{LadderRung, Transcoders, VideoEncoder, VideoFrame};
use media::h264::H264Params;
use media::model::rescale;
use media::{CodecParams, Frame, TrackInfo};
use tracing::{info, warn};

use crate::hub::Lecture;

/// The rung transcoders of one publishing session's video.
pub(crate) struct Ladder {
    transcoders: Arc<dyn Transcoders>,
    lecture: Weak<Lecture>,
    name: String,
    /// The publishing session it serves.
    pub(crate) session: u64,
    /// The configuration being transcoded (another arrives while a class is on air).
    source: H264Params,
    /// Rungs smaller than the publisher's picture, as configured.
    wanted: Vec<config::LadderRungConfig>,
    rungs: Vec<Rung>,
    /// The source's composition offset (pts − dts) at its last keyframe, 90 kHz.
    composition: Arc<AtomicI64>,
    /// Decode time (90 kHz) of the last keyframe fed: a frame from before it is another
    /// source's late one (a switch to or from a class on air) and would corrupt the rung.
    last_keyframe: Option<i64>,
    /// While new rungs are being built: the frames they will start with (from the keyframe
    /// that made them), so a switch loses no picture.
    building: bool,
    backlog: Vec<(Frame, u32)>,
}

/// Most frames kept for rungs being built (a few seconds).
const MAX_BACKLOG: usize = 250;

struct Rung {
    encoder: Box<dyn VideoEncoder>,
    id: String,
}

impl std::fmt::Debug for Ladder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.rungs.iter().map(|r| r.id.as_str()).collect();
        f.debug_struct("Ladder")
            .field("session", &self.session)
            .field("rungs", &ids)
            .finish()
    }
}

impl Ladder {
    /// The ladder of `session` of `lecture` for `source` video: a transcoder per rung of
    /// `rungs` smaller than the source, built by [`Ladder::rebuild`] once the ladder is the
    /// lecture's; `None` when no rung is smaller.
    pub(crate) fn new(
        transcoders: &Arc<dyn Transcoders>,
        lecture: &Arc<Lecture>,
        session: u64,
        source: &H264Params,
        rungs: &[config::LadderRungConfig],
    ) -> Option<Ladder> {
        let wanted: Vec<_> = rungs
            .iter()
            // A rung no smaller than the source adds nothing.
            .filter(|r| r.height < source.height)
            .copied()
            .collect();
        (!wanted.is_empty()).then(|| Ladder {
            transcoders: transcoders.clone(),
            lecture: Arc::downgrade(lecture),
            name: lecture.name.clone(),
            session,
            source: source.clone(),
            wanted,
            rungs: Vec::new(),
            composition: Arc::new(AtomicI64::new(0)),
            last_keyframe: None,
            building: false,
            backlog: Vec::new(),
        })
    }

    /// (Re)starts the rungs for the current source. Building and stopping GStreamer
    /// pipelines takes tens of milliseconds: on a blocking thread when there is a runtime
    /// (a WHIP hall's sink runs in the WebRTC engine's loop), the new rungs installed in the
    /// lecture's ladder when ready (frames meanwhile go nowhere; a rung starts at a
    /// keyframe anyway). Called with the lecture's ladder locked and this ladder in it.
    pub(crate) fn rebuild(&mut self) {
        let old = std::mem::take(&mut self.rungs);
        self.last_keyframe = None;
        self.backlog.clear();
        let job = Build {
            transcoders: self.transcoders.clone(),
            lecture: self.lecture.clone(),
            name: self.name.clone(),
            session: self.session,
            source: self.source.clone(),
            wanted: self.wanted.clone(),
            composition: self.composition.clone(),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                self.building = true;
                rt.spawn_blocking(move || {
                    drop(old);
                    let rungs = job.build();
                    let Some(l) = job.lecture.upgrade() else {
                        return;
                    };
                    let mut rungs = rungs;
                    let mut ladder = l.ladder_lock();
                    if let Some(ladder) = ladder.as_mut()
                        && ladder.session == job.session
                        && ladder.source.record == job.source.record
                    {
                        for (frame, timescale) in ladder.backlog.drain(..) {
                            for r in &mut rungs {
                                let _ = r.encoder.push(&frame, timescale);
                            }
                        }
                        ladder.rungs = rungs;
                        ladder.building = false;
                    }
                });
            }
            Err(_) => {
                drop(old);
                self.rungs = job.build();
            }
        }
    }

    /// Feeds one frame of the lecture's picture as placed on the lecture timeline
    /// (`timescale` units), whose configuration is `codec`: the publisher's, or a class's on
    /// air, for which the rungs start again from its first keyframe.
    pub(crate) fn push(&mut self, frame: &Frame, timescale: u32, codec: &CodecParams) {
        if let CodecParams::H264(h) = codec
            && h.record != self.source.record
        {
            if !frame.keyframe {
                return;
            }
            self.source = h.clone();
            self.rebuild();
        }
        let dts = rescale(frame.dts, timescale, 90_000);
        if !frame.keyframe && self.last_keyframe.is_some_and(|k| dts < k) {
            return;
        }
        if frame.keyframe {
            self.last_keyframe = Some(dts);
            self.composition.store(
                rescale(frame.pts - frame.dts, timescale, 90_000),
                Ordering::Relaxed,
            );
        }
        if self.building {
            // Rungs start at a keyframe: the backlog too.
            if (frame.keyframe || !self.backlog.is_empty()) && self.backlog.len() < MAX_BACKLOG {
                self.backlog.push((frame.clone(), timescale));
            }
            return;
        }
        for r in &mut self.rungs {
            if let Err(e) = r.encoder.push(frame, timescale) {
                tracing::debug!(rung = %r.id, "smaller picture input refused: {e}");
            }
        }
    }
}

/// Drops a ladder (stopping its pipelines) on a blocking thread when there is a runtime.
pub(crate) fn drop_off_thread(ladder: Option<Ladder>) {
    let Some(ladder) = ladder else { return };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn_blocking(move || drop(ladder));
        }
        Err(_) => drop(ladder),
    }
}

/// What building the rungs of a ladder needs, off the ladder.
struct Build {
    transcoders: Arc<dyn Transcoders>,
    lecture: Weak<Lecture>,
    name: String,
    session: u64,
    source: H264Params,
    wanted: Vec<config::LadderRungConfig>,
    composition: Arc<AtomicI64>,
}

impl Build {
    fn build(&self) -> Vec<Rung> {
        let smallest = self.wanted.iter().map(|r| r.height).min();
        let mut rungs = Vec::new();
        for r in &self.wanted {
            let id = format!("video-{}p", r.height);
            let rung = LadderRung {
                width: r.width,
                height: r.height,
                kbps: r.kbps,
            };
            let out = output(
                self.lecture.clone(),
                self.session,
                id.clone(),
                self.composition.clone(),
                Some(r.height) == smallest,
            );
            match self.transcoders.video_rung(&self.source, &rung, out) {
                Ok(encoder) => {
                    info!(lecture = %self.name, rung = %id, kbps = r.kbps, "smaller picture started");
                    rungs.push(Rung { encoder, id });
                }
                Err(e) => {
                    warn!(lecture = %self.name, rung = %id, "smaller picture not made: {e}")
                }
            }
        }
        rungs
    }
}

/// Where a rung's frames go: the lecture's derived rendition `id`, while `session` is the
/// lecture's; the smallest rung's (`webrtc`) also to WebRTC viewers on a poor link.
fn output(
    lecture: Weak<Lecture>,
    session: u64,
    id: String,
    composition: Arc<AtomicI64>,
    webrtc: bool,
) -> Box<dyn FnMut(VideoFrame) + Send> {
    let mut params: Option<Arc<H264Params>> = None;
    // The taps' codec parameters, made again only when the rung's own change (not per frame).
    let mut tapped_codec: Option<(Arc<H264Params>, Arc<CodecParams>)> = None;
    Box::new(move |f: VideoFrame| {
        let Some(l) = lecture.upgrade() else { return };
        if l.session() != session {
            return;
        }
        let arrived = std::time::Instant::now();
        let codec = webrtc.then(|| match &tapped_codec {
            Some((p, c)) if Arc::ptr_eq(p, &f.params) => c.clone(),
            _ => {
                let c = Arc::new(CodecParams::H264((*f.params).clone()));
                tapped_codec = Some((f.params.clone(), c.clone()));
                c
            }
        });
        let frame = Frame {
            dts: f.pts - composition.load(Ordering::Relaxed),
            pts: f.pts,
            keyframe: f.keyframe,
            data: f.data,
        };
        let tapped = webrtc.then(|| (frame.keyframe, frame.data.clone()));
        let mut hls = l.hls();
        let r = match hls.rendition_by_id(&id) {
            Some(r) if params.as_ref().is_some_and(|p| Arc::ptr_eq(p, &f.params)) => r,
            _ => {
                params = Some(f.params.clone());
                hls.set_derived_track(
                    &id,
                    TrackInfo {
                        codec: CodecParams::H264((*f.params).clone()),
                        timescale: 90_000,
                        language: None,
                    },
                )
            }
        };
        let placed = hls.push_on_lecture_clock(r, frame, SystemTime::now());
        l.record(&mut hls);
        let v = hls.version();
        drop(hls);
        l.notify(v);
        if let (Some(placed), Some((keyframe, data)), Some(codec)) = (placed, tapped, codec) {
            let taps = &l.taps;
            taps.send_small(crate::taps::TapFrame {
                dts: placed.dts,
                pts: placed.pts,
                timescale: 90_000,
                keyframe,
                data,
                codec,
                wallclock: taps
                    .wallclock_of(placed.pts, 90_000)
                    .unwrap_or(arrived)
                    .min(arrived),
                session,
                arrived,
            });
        }
    })
}
