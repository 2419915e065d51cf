//! The LL-HLS packager of one lecture: frames in, CMAF parts, segments and playlists out.
//!
//! Pure state: no IO, no clock (callers pass `now`), no tasks. Under test it runs faster than
//! real time on synthetic frames.
//!
//! # How renditions stay aligned
//! One rendition *leads*: the video track if the session has one, else the first audio track.
//! The leader decides every part boundary (and cuts segments on keyframes). Each boundary is
//! recorded with its time, media sequence number and part index; every other rendition
//! (*follower*, e.g. each dialect's audio) closes its own part at the same boundary as soon as
//! it has received a frame at or past that time. So all renditions share segment numbers,
//! part numbers, discontinuities and (to within one audio frame) timing.
//!
//! A follower that stops delivering (a dialect whose source went quiet) is closed anyway once
//! the leader is [`Settings::follower_max_lag`] ahead, filled with AAC silence, so players
//! never stall on it.
//!
//! # Sessions and discontinuities
//! A lecture outlives its publisher: when the publisher drops and a new one comes back within
//! the grace period, [`Packager::begin_session`] starts a new session in the same playlists.
//! Its timestamps are shifted to continue after the last one, and its first segment carries
//! `EXT-X-DISCONTINUITY` (and a new `EXT-X-MAP` when the codec configuration changed).
//!
//! All times inside are "lecture time" in 90 kHz ticks unless named otherwise.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};

use super::spool::{Media, Slot, Spooler, Target};
use media::fmp4::{self, Sample};
use media::m3u8::{self, MediaPlaylist, PartLine, RenditionReport, SegmentLine};
use media::model::rescale;
use media::{CodecParams, Frame, Language, TrackInfo, TrackKind, aac};

/// Ticks per second of lecture time.
pub const TICKS: i64 = 90_000;
const HZ: u32 = TICKS as u32;

/// Where the first session's first frame is placed on the lecture timeline; leaves room for
/// frames whose decode time precedes it (B-frame reordering, audio slightly ahead).
const FIRST_START: i64 = 10 * TICKS;
/// Gap left between the end of one session and the start of the next.
const SESSION_GAP: i64 = TICKS / 10;
/// Frames a rendition may hold before the leader starts (bounded memory for a follower
/// whose leader never sends a keyframe).
const MAX_PENDING: usize = 2000;
/// A follower further than this from the leader is realigned to it; a leader's first frame
/// this far from where the session's first frame put the lecture is realigned there; a
/// leader jumping further ahead than the wall clock since its last frame, plus this, has
/// jumped rather than paused.
const MAX_SKEW: i64 = 10 * TICKS;
/// A leader frame further back than this from the leader's last one is not a late frame
/// but a clock that jumped (once a second frame agrees).
const MAX_BACKSTEP: i64 = TICKS / 2;
/// How much audio arrives with no video declared before a session counts as audio-only.
const AUDIO_ONLY_AFTER: i64 = 2 * TICKS;
/// Parts are listed for at most this many segments (the open one included) and this many
/// target durations from the end of the playlist (RFC 8216bis 6.2.2); they stay servable
/// for as long again after that.
const PART_SEGMENTS: usize = 3;
/// Extra completed segments kept beyond the playlist window, for clients a little behind.
const EXTRA_SEGMENTS: usize = 2;

/// Packaging parameters.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Part target duration in ticks.
    pub part_target: i64,
    /// Minimum segment duration in ticks (segments end at the next keyframe after it).
    pub segment_target: i64,
    /// Segments listed in each media playlist.
    pub window: usize,
    /// How far the leader may run ahead of a silent follower before the follower's parts
    /// are closed without it (and filled with silence).
    pub follower_max_lag: i64,
    /// `EXT-X-TARGETDURATION` in seconds. It may never change, so segments that would round
    /// above it are cut even without a keyframe.
    pub target_duration: u64,
    /// Where the window's older segments go ([`super::spool`]), and how many completed
    /// segments of each rendition stay in memory at the live edge; `None` keeps them all.
    pub spool: Option<(Spooler, usize)>,
}

impl Settings {
    /// Settings from milliseconds.
    pub fn from_ms(part_ms: u64, segment_ms: u64, window: usize) -> Self {
        let part_target = part_ms as i64 * TICKS / 1000;
        Settings {
            part_target,
            segment_target: segment_ms as i64 * TICKS / 1000,
            window,
            follower_max_lag: (3 * part_target).max(TICKS),
            target_duration: segment_ms.div_ceil(1000).max(1),
            spool: None,
        }
    }

    /// The same, with completed segments beyond the newest `memory_segments` of each
    /// rendition handed to `spooler`.
    pub fn with_spool(mut self, spooler: Spooler, memory_segments: usize) -> Self {
        self.spool = Some((spooler, memory_segments));
        self
    }
}

/// A part is closed early when the next frame would end it more than this beyond its
/// nominal length: the measured frame interval and millisecond timestamps are each off by
/// a couple of milliseconds over a part.
const PART_GUARD: i64 = 6 * TICKS / 1000;
/// How much later than expected the frame after a part may come (capture jitter) before
/// the time it left is cut as a gap.
const PART_SLACK: i64 = 10 * TICKS / 1000;
/// Shortest nominal part: below it, AAC's frame grid and timestamp jitter cannot keep every
/// part between 85 % and 100 % of `PART-TARGET`.
const MIN_PART: i64 = 300 * TICKS / 1000;
/// Leader frames over which the frame interval is averaged before it is smoothed instead.
const FRAME_AVERAGE: u32 = 64;
/// The shortest audio frame a part may have to stretch by (AAC at 48 kHz).
const MIN_AUDIO_FRAME: i64 = 1024 * TICKS / 48_000;

/// How long parts are, decided once per lecture from the configured target and the frame
/// rate, so that every part fits `PART-TARGET` and every non-final part is at least 85 % of
/// it (RFC 8216bis 4.4.4.9). Parts hold whole frames: at 25 fps a 300 ms target gives
/// 320 ms parts (8 frames), at 12 fps a 400 ms target 417 ms (5 frames).
#[derive(Debug, Clone, Copy)]
struct PartLength {
    /// The leader's part length: a whole number of frames.
    nominal: i64,
    /// Close a part before the next frame if that frame would end it beyond this.
    guard: i64,
    /// Longest part of the leader; a frame coming later than this after its part began
    /// leaves a gap behind it.
    limit: i64,
    /// `PART-TARGET` in milliseconds: the longest part of any rendition. Audio renditions
    /// close their parts at the frame of their own grid nearest the leader's boundary, so
    /// an audio part is a whole number of frames within one frame of the leader's part.
    advertised_ms: u64,
}

impl PartLength {
    /// Parts of `frames` frames of `frame` ticks each (at least [`MIN_PART`] long).
    fn of_frames(frames: i64, frame: i64, audio_frame: i64) -> Self {
        let frame = frame.max(1);
        let frames = frames.max((MIN_PART + frame - 1) / frame).max(1);
        let nominal = frames * frame;
        let guard = nominal + PART_GUARD;
        let limit = guard + PART_SLACK;
        let audio = audio_frame.max(MIN_AUDIO_FRAME);
        let advertised = limit.max((limit / audio + 1) * audio);
        PartLength {
            nominal,
            guard,
            limit,
            advertised_ms: (advertised as u64 * 1000).div_ceil(TICKS as u64),
        }
    }
}

/// A part boundary decided by the leader: part `part` of segment `msn` ends at `end`.
#[derive(Debug, Clone, Copy)]
struct Boundary {
    start: i64,
    end: i64,
    msn: u64,
    part: u32,
    ends_segment: bool,
    /// End of a publishing session: followers take every frame they hold.
    flush: bool,
}

/// Facts about a segment shared by all renditions, decided by the leader when it starts it.
#[derive(Debug, Clone, Copy)]
struct SegmentMeta {
    msn: u64,
    discontinuity: bool,
    /// Discontinuity sequence number of this segment.
    dseq: u64,
    pdt: SystemTime,
}

/// A partial segment.
#[derive(Debug, Clone)]
pub struct Part {
    /// Index within its segment.
    pub index: u32,
    /// Duration in seconds.
    pub duration: f64,
    /// Starts with a sync sample.
    pub independent: bool,
    /// `moof`+`mdat`; empty for a gap.
    pub data: Media,
    /// No media for this part (listed with `GAP=YES`).
    pub gap: bool,
}

impl Part {
    /// A part with no media, listed with `GAP=YES`.
    fn gap(b: Boundary) -> Part {
        Part {
            index: b.part,
            duration: (b.end - b.start) as f64 / TICKS as f64,
            independent: false,
            data: Media::default(),
            gap: true,
        }
    }
}

/// A completed segment.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Media sequence number.
    pub msn: u64,
    /// Duration in seconds.
    pub duration: f64,
    /// Parts (data dropped once the segment is far from the live edge).
    pub parts: Vec<Part>,
    /// The whole segment.
    pub data: Media,
    /// Starts after a discontinuity.
    pub discontinuity: bool,
    /// Discontinuity sequence number.
    pub dseq: u64,
    /// Init segment version it needs.
    pub init_version: u32,
    /// Wall-clock time of its first sample.
    pub pdt: SystemTime,
    /// Frames in it.
    pub frames: u32,
    /// No media at all (`EXT-X-GAP`): every part of it is a gap.
    pub gap: bool,
    /// Handed to the spooler, not yet swapped for its file.
    spool: Option<std::sync::Arc<Slot>>,
}

#[derive(Debug)]
struct OpenSegment {
    msn: u64,
    parts: Vec<Part>,
    discontinuity: bool,
    dseq: u64,
    init_version: u32,
    pdt: SystemTime,
    frames: u32,
}

#[derive(Debug, Clone)]
struct Pending {
    /// Lecture time of the decode timestamp.
    t: i64,
    /// Decode/presentation time on the lecture timeline, in the rendition's timescale.
    dts: i64,
    pts: i64,
    keyframe: bool,
    data: Bytes,
}

/// Where an accepted frame was placed: its times on the lecture timeline, in the track's
/// timescale. Continuous across publishing sessions, so every output (HLS, WebRTC) can use
/// them as its media clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// Decode time.
    pub dts: i64,
    /// Presentation time.
    pub pts: i64,
}

/// Identifies a rendition within a lecture.
pub type RenditionIdx = usize;

/// One HLS rendition: the video, or one dialect's audio.
#[derive(Debug)]
pub struct Rendition {
    /// Path segment in URLs: `video`, `audio-yue`.
    pub id: String,
    /// Track description (current codec configuration).
    pub info: TrackInfo,
    /// Dialect of an audio rendition.
    pub language: Option<Language>,
    /// Display name of an audio rendition (粤语).
    pub name: String,
    inits: VecDeque<(u32, Bytes)>,
    init_dirty: bool,
    pending: VecDeque<Pending>,
    segments: VecDeque<Segment>,
    open: Option<OpenSegment>,
    /// Absolute index of the next boundary this rendition closes.
    next_boundary: u64,
    /// First segment this rendition takes part in (renditions added mid-segment wait).
    first_msn: u64,
    /// Expected decode time of the next audio frame received (rendition timescale).
    next_dts: Option<i64>,
    /// End of the last audio sample emitted in this session (rendition timescale).
    emit_end: Option<i64>,
    sequence: u32,
    /// Correction (lecture ticks) for a track whose clock is far from the leader's.
    skew: i64,
    /// Whether the current session declared this track.
    pub in_session: bool,
    /// Its frames arrive already on the lecture timeline (a contributor such as an
    /// interpreter, placed by arrival), not on a publisher's own clock.
    pub lecture_clock: bool,
    /// Made here from another rendition (a smaller picture of the ladder): it never leads
    /// and is not recorded (the recording keeps the source).
    pub derived: bool,
    /// Its spool file, when segments are spooled.
    spool: std::sync::Arc<Target>,
}

impl Rendition {
    /// Kind of track.
    pub fn kind(&self) -> TrackKind {
        self.info.kind()
    }

    /// Completed segments held.
    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter()
    }

    /// Measured bits per second and frames per second over the held segments.
    pub fn rates(&self) -> Option<(u64, f64)> {
        let (mut bytes, mut secs, mut frames) = (0usize, 0.0f64, 0u32);
        for s in &self.segments {
            bytes += s.data.len();
            secs += s.duration;
            frames += s.frames;
        }
        (secs > 0.1).then(|| ((bytes as f64 * 8.0 / secs) as u64, frames as f64 / secs))
    }

    /// Highest bitrate of one held segment, for `BANDWIDTH`.
    pub fn peak_bitrate(&self) -> Option<u64> {
        self.segments
            .iter()
            .filter(|s| s.duration > 0.1)
            .map(|s| (s.data.len() as f64 * 8.0 / s.duration) as u64)
            .max()
    }

    fn current_init_version(&self) -> Option<u32> {
        self.inits.back().map(|(v, _)| *v)
    }

    /// Last part present: `(msn, part index)`.
    pub fn last_part(&self) -> Option<(u64, u32)> {
        if let Some(open) = &self.open
            && let Some(p) = open.parts.last()
        {
            return Some((open.msn, p.index));
        }
        self.segments
            .back()
            .and_then(|s| s.parts.last().map(|p| (s.msn, p.index)))
    }

    /// Half an audio frame in ticks (audio parts end at the frame nearest the leader's
    /// boundary); zero for video.
    fn half_frame(&self) -> i64 {
        match &self.info.codec {
            CodecParams::Aac(a) if a.sample_rate > 0 => {
                aac::SAMPLES_PER_FRAME as i64 * TICKS / a.sample_rate as i64 / 2
            }
            _ => 0,
        }
    }

    /// Wall-clock time of the end of the last part (its segment's program date-time plus
    /// the parts up to it).
    pub fn live_edge(&self) -> Option<SystemTime> {
        let (pdt, parts) = match (&self.open, self.segments.back()) {
            (Some(o), _) if !o.parts.is_empty() => (o.pdt, &o.parts),
            (_, Some(s)) => (s.pdt, &s.parts),
            _ => return None,
        };
        let d: f64 = parts.iter().map(|p| p.duration).sum();
        Some(pdt + Duration::from_secs_f64(d.max(0.0)))
    }

    /// Where the next part will be: `(msn, part index)`.
    pub fn next_part(&self) -> (u64, u32) {
        match (&self.open, self.segments.back()) {
            (Some(open), _) => (open.msn, open.parts.last().map_or(0, |p| p.index + 1)),
            (None, Some(s)) => (s.msn + 1, 0),
            (None, None) => (self.first_msn, 0),
        }
    }
}

/// Whether a request can be answered now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Yes.
    Ready,
    /// Not yet: wait for a change.
    Wait,
    /// Too far ahead of the live edge (HTTP 400).
    TooFarAhead,
}

/// The packager of one lecture.
#[derive(Debug)]
pub struct Packager {
    s: Settings,
    instance: String,
    renditions: Vec<Rendition>,
    boundaries: VecDeque<Boundary>,
    boundary_base: u64,
    meta: VecDeque<SegmentMeta>,
    leader: Option<RenditionIdx>,
    /// Absolute index of the first boundary of the leader's current segment.
    seg_first_boundary: u64,
    lead_part_start: Option<i64>,
    lead_seg_start: i64,
    lead_last: Option<i64>,
    /// Wall-clock arrival of the leader's last frame.
    lead_arrival: Option<SystemTime>,
    /// Parts were cut on the clock alone since the leader's last frame (it paused).
    lead_paused: bool,
    est_frame: i64,
    /// First leader frame of the current run of evenly spaced frames, and how many since.
    est_from: Option<(i64, u32)>,
    part_len: Option<PartLength>,
    next_msn: u64,
    next_part: u32,
    dseq: u64,
    session: u64,
    offset: Option<i64>,
    /// Where the session's first frame was placed (any track's).
    session_origin: i64,
    /// A leader frame off the leader's timeline, held as evidence that its clock jumped: the
    /// time it would have had on the leader's timeline is `t`.
    jump_candidate: Option<i64>,
    session_start: Option<i64>,
    pending_discontinuity: bool,
    cut_requested: bool,
    /// This session already logged that its keyframes are too far apart.
    warned_long_gop: bool,
    anchor: Option<(i64, SystemTime)>,
    last_end: i64,
    leader_latest: i64,
    /// Latest media time of any track in the session.
    head: i64,
    /// What the recorder is to write, when the lecture is recorded.
    record: Option<Vec<recorder::Event>>,
    ended: bool,
    version: u64,
    /// Each rendition's media playlist as last rendered, with the version it shows: a
    /// playlist is rendered once per change, however many players ask (behind the lecture's
    /// lock, so a `RefCell` suffices).
    rendered: std::cell::RefCell<Vec<Option<(u64, Bytes)>>>,
}

impl Packager {
    /// A packager; `instance` distinguishes this lecture's URLs from an earlier lecture of the
    /// same name, so caches never confuse them.
    pub fn new(settings: Settings, instance: String) -> Self {
        Packager {
            s: settings,
            instance,
            renditions: Vec::new(),
            boundaries: VecDeque::new(),
            boundary_base: 0,
            meta: VecDeque::new(),
            leader: None,
            seg_first_boundary: 0,
            lead_part_start: None,
            lead_seg_start: 0,
            lead_last: None,
            lead_arrival: None,
            lead_paused: false,
            est_frame: TICKS / 25,
            est_from: None,
            part_len: None,
            next_msn: 0,
            next_part: 0,
            dseq: 0,
            session: 0,
            offset: None,
            session_origin: 0,
            jump_candidate: None,
            session_start: None,
            pending_discontinuity: false,
            cut_requested: false,
            warned_long_gop: false,
            anchor: None,
            last_end: 0,
            leader_latest: 0,
            head: 0,
            record: None,
            ended: false,
            version: 0,
            rendered: Default::default(),
        }
    }

    /// Collects what a recorder needs ([`Packager::take_recorded`]) from now on.
    pub fn record(&mut self) {
        self.record.get_or_insert_with(Vec::new);
    }

    /// What happened since the last call that a recording must write: initialization
    /// segments, parts as they close, segment ends, the end of the lecture.
    pub fn take_recorded(&mut self) -> Vec<recorder::Event> {
        self.record.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Increases on every change a reader could wait for.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The lecture has ended (`EXT-X-ENDLIST`).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The URL instance tag.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// All renditions.
    pub fn renditions(&self) -> &[Rendition] {
        &self.renditions
    }

    /// The rendition with that URL id.
    pub fn rendition_by_id(&self, id: &str) -> Option<RenditionIdx> {
        self.renditions.iter().position(|r| r.id == id)
    }

    /// `EXT-X-TARGETDURATION` in seconds.
    pub fn target_duration(&self) -> u64 {
        self.s.target_duration
    }

    /// Adds a rendition, or updates the codec configuration of an existing one (same `id`).
    /// A changed configuration takes effect at the next segment, after a discontinuity.
    pub fn set_track(
        &mut self,
        id: &str,
        info: TrackInfo,
        language: Option<Language>,
        name: String,
    ) -> RenditionIdx {
        if let Some(i) = self.rendition_by_id(id) {
            let r = &mut self.renditions[i];
            r.in_session = true;
            // The publisher's own track takes a dialect back from an interpreter.
            r.lecture_clock = false;
            if r.info != info {
                let (from, to) = (r.info.timescale, info.timescale);
                if from != to && from > 0 && to > 0 {
                    // Another source's clock (a class on air sends 48 kHz sound into a
                    // 44.1 kHz dialect): what this rendition holds and expects moves to it.
                    let re = |v: i64| rescale(v, from, to);
                    r.next_dts = r.next_dts.map(re);
                    r.emit_end = r.emit_end.map(re);
                    for p in &mut r.pending {
                        p.dts = re(p.dts);
                        p.pts = re(p.pts);
                    }
                }
                r.info = info;
                r.init_dirty = true;
                if r.segments.is_empty() && r.open.is_none() {
                    r.inits.clear();
                } else {
                    self.cut_requested = true;
                    self.pending_discontinuity = true;
                }
            }
            r.language = language;
            r.name = name;
            return i;
        }
        // A rendition added while a segment is open joins that segment; the parts it missed
        // are filled (silence for audio) as soon as it has frames.
        let next_boundary = if self.lead_part_start.is_some() {
            self.seg_first_boundary.max(self.boundary_base)
        } else {
            self.boundary_base + self.boundaries.len() as u64
        };
        let first_msn = self.next_msn;
        self.renditions.push(Rendition {
            id: id.to_string(),
            info,
            language,
            name,
            inits: VecDeque::new(),
            init_dirty: true,
            pending: VecDeque::new(),
            segments: VecDeque::new(),
            open: None,
            next_boundary,
            first_msn,
            next_dts: None,
            emit_end: None,
            sequence: 0,
            skew: 0,
            in_session: true,
            lecture_clock: false,
            derived: false,
            spool: Default::default(),
        });
        self.version += 1;
        self.renditions.len() - 1
    }

    /// Adds (or updates) a rendition made here from the session's own video (a smaller
    /// picture): a follower whose segments start with the keyframes it is made to have at the
    /// source's keyframes; never recorded. Its frames come through
    /// [`Packager::push_on_lecture_clock`].
    pub fn set_derived_track(&mut self, id: &str, info: TrackInfo) -> RenditionIdx {
        let r = self.set_track(id, info, None, String::new());
        self.renditions[r].derived = true;
        r
    }

    /// Adds (or reclaims) a rendition whose frames come already on the lecture timeline, in
    /// its own timescale: an interpreter's dialect. It takes no part in choosing the leader
    /// or the session's offset, and lives on (filled with silence) when its source leaves.
    pub fn set_contributed_track(
        &mut self,
        id: &str,
        info: TrackInfo,
        language: Option<Language>,
        name: String,
    ) -> RenditionIdx {
        let r = self.set_track(id, info, language, name);
        let rend = &mut self.renditions[r];
        rend.lecture_clock = true;
        rend.in_session = false;
        rend.next_dts = None;
        r
    }

    /// Whether a publishing session is running and has placed its first frame: only then
    /// is there a lecture timeline for contributed frames to join.
    pub fn timeline_running(&self) -> bool {
        self.offset.is_some() && self.lead_part_start.is_some() && !self.ended
    }

    /// Starts a publishing session (the first, or a reconnect within the grace period).
    pub fn begin_session(&mut self) {
        if self.lead_part_start.is_some() {
            self.end_session();
        }
        self.session += 1;
        self.warned_long_gop = false;
        self.offset = None;
        self.jump_candidate = None;
        self.session_start = None;
        self.leader = None;
        self.lead_last = None;
        self.lead_arrival = None;
        self.lead_paused = false;
        self.est_from = None;
        if self.session > 1 {
            self.pending_discontinuity = true;
        }
        for r in &mut self.renditions {
            r.in_session = false;
            r.next_dts = None;
            r.emit_end = None;
            r.skew = 0;
            r.pending.clear();
        }
    }

    /// Ends the current publishing session: completes the open segment of every rendition.
    pub fn end_session(&mut self) {
        if let (Some(part_start), Some(last)) = (self.lead_part_start, self.lead_last) {
            // The session's media ends with its last frame, or with the other tracks when
            // they ran on past the leader.
            let end = (last + self.est_frame).max(self.head).max(part_start + 1);
            let limit = self
                .part_len
                .unwrap_or_else(|| self.provisional_part_len())
                .limit;
            self.cut_parts_without_leader(end, limit, None);
            self.close_leader_part(end, true, true, None);
        }
        self.lead_part_start = None;
        self.leader = None;
        self.offset = None;
        self.session_start = None;
        for r in &mut self.renditions {
            r.pending.clear();
            r.next_dts = None;
            r.emit_end = None;
        }
        self.pending_discontinuity = true;
        self.version += 1;
    }

    /// Ends the lecture: `EXT-X-ENDLIST`, no more parts.
    pub fn finish(&mut self) {
        if !self.ended {
            self.end_session();
            self.ended = true;
            self.version += 1;
            if let Some(r) = &mut self.record {
                r.push(recorder::Event::Ended);
            }
        }
    }

    /// Where the leader's media has reached on the lecture timeline (90 kHz ticks): the end
    /// of its last frame. `None` while no session runs.
    pub fn leader_end(&self) -> Option<i64> {
        self.lead_part_start?;
        Some(self.leader_latest + self.est_frame)
    }

    /// Moves the session's timeline later, if needed, so that a frame of rendition `r` with
    /// decode time `dts` (its input's) comes after the leader's last frame: a publisher
    /// taking its picture back after a site was on air continues after the site's frames,
    /// its sound moved with it.
    pub fn lift_session(&mut self, r: RenditionIdx, dts: i64) {
        let (Some(offset), Some(end), Some(rend)) =
            (self.offset, self.leader_end(), self.renditions.get(r))
        else {
            return;
        };
        let t = rescale(dts, rend.info.timescale, HZ) + offset + rend.skew;
        if t < end {
            self.offset = Some(offset + (end - t));
        }
    }

    /// Takes a frame for rendition `r` (one of the session's own) whose times are already on
    /// the lecture timeline: a site put on air in place of the publisher's picture or sound.
    /// It goes through [`Packager::push`] as if the publisher had sent it, so the session's
    /// timeline, part cutting and alignment apply unchanged.
    pub fn push_on_lecture_clock(
        &mut self,
        r: RenditionIdx,
        mut frame: Frame,
        now: SystemTime,
    ) -> Option<Placed> {
        let rend = self.renditions.get(r)?;
        if rend.lecture_clock || !self.timeline_running() {
            return None;
        }
        let offset = self.offset? + rend.skew;
        let off_r = rescale(offset, HZ, rend.info.timescale);
        frame.dts -= off_r;
        frame.pts -= off_r;
        self.push(r, frame, now)
    }

    /// Takes one frame of rendition `r`, received at wall-clock time `now`.
    pub fn push(&mut self, r: RenditionIdx, frame: Frame, now: SystemTime) -> Option<Placed> {
        if self.ended || r >= self.renditions.len() {
            return None;
        }
        let ts = self.renditions[r].info.timescale;
        let t_in = rescale(frame.dts, ts, HZ);
        if self.renditions[r].lecture_clock {
            // Already on the lecture timeline; without a running session there is none.
            if !self.timeline_running() || Some(r) == self.leader {
                return None;
            }
            let p = Pending {
                t: t_in,
                dts: frame.dts,
                pts: frame.pts,
                keyframe: frame.keyframe,
                data: frame.data,
            };
            return self.push_follower(r, p, now);
        }
        let offset = match self.offset {
            Some(o) => o,
            None => {
                self.session_origin = if self.last_end == 0 {
                    FIRST_START
                } else {
                    self.last_end + SESSION_GAP
                };
                *self.offset.insert(self.session_origin - t_in)
            }
        };
        let leads = self.leader == Some(r)
            || (self.leader.is_none()
                && self.renditions[r].kind() == TrackKind::Video
                && !self.renditions[r].derived);
        if leads && self.lead_part_start.is_none() {
            // The leader's first frame sets the lecture's timeline; the session's very first
            // frame (another track's, perhaps with a wild clock) only said where it starts.
            let t = t_in + offset + self.renditions[r].skew;
            if (t - self.session_origin).abs() > MAX_SKEW {
                let skew = self.session_origin - t;
                tracing::warn!(
                    rendition = %self.renditions[r].id,
                    "track timestamps are {:.1} s away from the session's first frame; realigned",
                    skew as f64 / TICKS as f64
                );
                self.renditions[r].skew += skew;
            }
        }
        let mut offset = offset + self.renditions[r].skew;
        if let Some(leader) = self.leader
            && leader != r
            && self.lead_part_start.is_some()
        {
            let t = t_in + offset;
            // Where the leader is: its last frame, or where parts were cut without it while
            // it paused.
            let reference = self
                .leader_latest
                .max(self.lead_part_start.unwrap_or(i64::MIN));
            if (t - reference).abs() > MAX_SKEW {
                // This track's clock is far from the leader's (a publisher whose audio and
                // video timestamps disagree): line it up with the leader instead of treating
                // all of it as late or early.
                let skew = reference - t;
                tracing::warn!(
                    rendition = %self.renditions[r].id,
                    "track timestamps are {:.1} s away from the leader's; realigned",
                    skew as f64 / TICKS as f64
                );
                self.renditions[r].skew += skew;
                offset += skew;
                if skew < 0 {
                    // Moved back: what it placed ahead on its old clock, not yet cut into
                    // parts, gives way to its frames from now on (which AAC's grid would
                    // otherwise drop as late until they caught up: as long as the skew).
                    let from = t + skew;
                    let rend = &mut self.renditions[r];
                    rend.pending.retain(|f| f.t < from);
                    rend.next_dts = None;
                }
            }
        }
        let off_r = rescale(offset, HZ, ts);
        let mut p = Pending {
            t: 0,
            dts: frame.dts + off_r,
            pts: frame.pts + off_r,
            keyframe: frame.keyframe,
            data: frame.data,
        };
        p.t = rescale(p.dts, ts, HZ);
        if self.leader == Some(r)
            && self.lead_paused
            && let Some(part_start) = self.lead_part_start
            && p.t < part_start
        {
            // The leader comes back from a pause with a clock that did not run through it
            // (an encoder that stalled): the time it missed is already cut as gaps. Continue
            // its clock from where its silence ends, by the wall clock, so it stays with the
            // audio that went on.
            let silent = self
                .lead_arrival
                .and_then(|a| now.duration_since(a).ok())
                .map_or(0, |d| (d.as_secs_f64() * TICKS as f64) as i64);
            let resume_at = (self.leader_latest + silent).max(part_start);
            let shift = resume_at - p.t;
            tracing::warn!(
                rendition = %self.renditions[r].id,
                "track resumed {:.1} s behind the lecture after a pause; moved forward",
                shift as f64 / TICKS as f64
            );
            self.renditions[r].skew += shift;
            let shift_r = rescale(shift, HZ, ts);
            p.dts += shift_r;
            p.pts += shift_r;
            p.t = rescale(p.dts, ts, HZ);
        }
        if self.leader == Some(r)
            && let Some(part_start) = self.lead_part_start
            && !self.leader_frame_fits(r, &mut p, part_start, now)
        {
            return None;
        }
        if p.t < 0 {
            return None;
        }
        if self.leader.is_none() && self.renditions[r].derived {
            return self.push_follower(r, p, now);
        }
        if self.leader.is_none() {
            let video = self
                .renditions
                .iter()
                .position(|x| x.in_session && x.kind() == TrackKind::Video && !x.derived);
            match video {
                Some(v) => self.leader = Some(v),
                None if self.renditions[r].kind() == TrackKind::Video
                    && !self.renditions[r].derived =>
                {
                    self.leader = Some(r)
                }
                None => {
                    // Audio before any video was declared: encoders announce video late
                    // (it takes longer to encode), so wait a little before deciding that
                    // this is an audio-only lecture and the audio must lead.
                    let first = self.renditions[r].pending.front().map_or(p.t, |f| f.t);
                    if p.t - first < AUDIO_ONLY_AFTER {
                        return self.push_follower(r, p, now);
                    }
                    self.leader = Some(r);
                    let held = std::mem::take(&mut self.renditions[r].pending);
                    for f in held {
                        let _ = self.push_leader(r, f, now);
                    }
                }
            }
        }
        if self.leader == Some(r) {
            self.push_leader(r, p, now)
        } else {
            self.push_follower(r, p, now)
        }
    }

    /// Whether leader frame `p` may continue the leader's timeline, moving it (and the
    /// leader's clock) when its clock jumped: back by more than [`MAX_BACKSTEP`], or ahead
    /// by more than the wall clock since its last frame allows. One such frame is dropped as
    /// a stray; a second that agrees with it shows the clock jumped, and the leader goes on
    /// from where it was, by the wall clock — so no jump of a publisher's clock stops the
    /// lecture (every later frame would otherwise be dropped as going back in time, or hours
    /// of gaps cut).
    fn leader_frame_fits(
        &mut self,
        r: RenditionIdx,
        p: &mut Pending,
        part_start: i64,
        now: SystemTime,
    ) -> bool {
        let last = self.lead_last.unwrap_or(part_start);
        let silent = self
            .lead_arrival
            .and_then(|a| now.duration_since(a).ok())
            .map_or(0, |d| (d.as_secs_f64() * TICKS as f64) as i64);
        if p.t >= last - MAX_BACKSTEP && p.t <= last + silent + MAX_SKEW {
            self.jump_candidate = None;
            return true;
        }
        let agrees = self.jump_candidate.is_some_and(|prev| {
            let step = p.t - prev;
            (0..=TICKS).contains(&step)
        });
        if !agrees {
            self.jump_candidate = Some(p.t);
            return false;
        }
        self.jump_candidate = None;
        let resume_at = (self.leader_latest + silent.max(self.est_frame)).max(part_start);
        let shift = resume_at - p.t;
        tracing::warn!(
            rendition = %self.renditions[r].id,
            "track timestamps jumped {:.1} s; the lecture goes on from where it was",
            -shift as f64 / TICKS as f64
        );
        let ts = self.renditions[r].info.timescale;
        self.renditions[r].skew += shift;
        let shift_r = rescale(shift, HZ, ts);
        p.dts += shift_r;
        p.pts += shift_r;
        p.t = rescale(p.dts, ts, HZ);
        true
    }

    fn push_leader(&mut self, r: RenditionIdx, p: Pending, now: SystemTime) -> Option<Placed> {
        let placed = Placed {
            dts: p.dts,
            pts: p.pts,
        };
        let Some(part_start) = self.lead_part_start else {
            if !p.keyframe {
                return None;
            }
            self.start_segment(p.t, Some(now));
            self.lead_part_start = Some(p.t);
            self.session_start = Some(p.t);
            self.lead_arrival = Some(now);
            self.note_leader_frame(p.t);
            let start = p.t;
            self.renditions[r].pending.push_back(p);
            for f in 0..self.renditions.len() {
                if f != r {
                    self.renditions[f].pending.retain(|x| x.t >= start);
                }
            }
            return Some(placed);
        };
        let last = self.lead_last.unwrap_or(part_start);
        if p.t < last || p.t < part_start {
            // Decode time went backwards (or into time already cut without it): not
            // decodable in order; drop the frame.
            return None;
        }
        self.lead_arrival = Some(now);
        let len = self.part_len.unwrap_or_else(|| self.provisional_part_len());
        if p.t - part_start > len.limit {
            // A hole in the leader longer than a part (a pause, a stall): cut the time it
            // missed into parts without it, and start a segment with this frame.
            self.cut_parts_without_leader(p.t, len.limit, Some(now));
            self.close_leader_part(p.t, true, false, Some(now));
            if !p.keyframe {
                self.cut_requested = true;
            }
            self.est_from = Some((p.t, 1));
        } else {
            self.measure_frame_interval(p.t, p.t - last);
        }
        self.lead_paused = false;
        let part_start = self.lead_part_start.unwrap_or(part_start);
        let seg_elapsed = p.t - self.lead_seg_start;
        let tolerance = self.est_frame / 2;
        let hard_limit = self.hard_limit();
        let on_keyframe =
            p.keyframe && (seg_elapsed + tolerance >= self.s.segment_target || self.cut_requested);
        let forced = !on_keyframe && seg_elapsed + self.est_frame > hard_limit;
        if forced && !self.warned_long_gop {
            self.warned_long_gop = true;
            tracing::warn!(
                "keyframes are more than {} s apart: segments are cut between keyframes, so \
                 players joining there wait for the next one; set the encoder's keyframe \
                 interval to {} s",
                self.s.target_duration,
                self.s.segment_target as f64 / TICKS as f64
            );
        }
        let new_segment = on_keyframe || forced;
        let part_elapsed = p.t - part_start;
        let len = self.part_len.unwrap_or_else(|| self.provisional_part_len());
        // Closest to the nominal length, and never beyond the longest part.
        let new_part = new_segment
            || part_elapsed + self.est_frame / 2 > len.nominal
            || part_elapsed + self.est_frame > len.guard;
        if new_part && p.t > part_start {
            if self.part_len.is_none() {
                // Fixed by the first part: as many frames as it holds (near the target, the
                // frame rate seen so far), so that part itself fits.
                self.part_len = Some(if new_segment {
                    len
                } else {
                    let frames = (part_elapsed as f64 / self.est_frame.max(1) as f64).round();
                    PartLength::of_frames(frames as i64, self.est_frame, self.audio_frame())
                });
            }
            self.close_leader_part(p.t, new_segment, false, Some(now));
            if forced {
                // Cut between keyframes: the next keyframe starts a segment however soon,
                // so segments fall back in step with the keyframes.
                self.cut_requested = true;
            }
        }
        self.note_leader_frame(p.t);
        self.renditions[r].pending.push_back(p);
        Some(placed)
    }

    fn note_leader_frame(&mut self, t: i64) {
        self.lead_last = Some(t);
        self.leader_latest = self.leader_latest.max(t);
        self.head = self.head.max(t);
        self.last_end = self.last_end.max(t + self.est_frame);
    }

    /// Follows the leader's frame interval: averaged over its first frames (millisecond
    /// timestamps make single intervals jitter), then smoothed.
    fn measure_frame_interval(&mut self, t: i64, dur: i64) {
        if dur <= 0 || dur >= TICKS / 2 {
            // A jump or a stall, not the frame rate.
            self.est_from = Some((t, 1));
            return;
        }
        match &mut self.est_from {
            Some((first, n)) if *n < FRAME_AVERAGE => {
                *n += 1;
                self.est_frame = (t - *first) / (*n as i64 - 1);
            }
            Some(_) => self.est_frame += (dur - self.est_frame) / 16,
            None => {
                self.est_from = Some((t - dur, 2));
                self.est_frame = dur;
            }
        }
    }

    /// Longest segment whose duration still rounds to the target duration.
    fn hard_limit(&self) -> i64 {
        self.s.target_duration as i64 * TICKS + TICKS / 2 - TICKS / 100
    }

    /// The longest audio frame of the lecture's renditions, in ticks (rounded up).
    fn audio_frame(&self) -> i64 {
        self.renditions
            .iter()
            .filter_map(|r| match &r.info.codec {
                CodecParams::Aac(a) if a.sample_rate > 0 => Some(
                    (aac::SAMPLES_PER_FRAME as i64 * TICKS).div_euclid(a.sample_rate as i64) + 1,
                ),
                _ => None,
            })
            .max()
            .unwrap_or(MIN_AUDIO_FRAME)
    }

    /// The part length the frames so far suggest, before it is fixed by the first part.
    fn provisional_part_len(&self) -> PartLength {
        let frame = self.est_frame.max(1);
        let frames = (self.s.part_target as f64 / frame as f64).round() as i64;
        PartLength::of_frames(frames, frame, self.audio_frame())
    }

    /// `PART-TARGET` as advertised, in seconds.
    pub fn part_target(&self) -> f64 {
        self.part_len
            .unwrap_or_else(|| self.provisional_part_len())
            .advertised_ms as f64
            / 1000.0
    }

    /// Cuts the leader's parts on the clock alone while it sends nothing, until less than
    /// `keep` is left before `until`: the part it has open is stretched to the nominal
    /// length (its last frame lasts until then), the parts after it are gaps (silence for
    /// an audio leader). Segments end as they would with frames, on time.
    fn cut_parts_without_leader(&mut self, until: i64, keep: i64, now: Option<SystemTime>) {
        let Some(mut cur) = self.lead_part_start else {
            return;
        };
        let len = self.part_len.unwrap_or_else(|| self.provisional_part_len());
        self.part_len = Some(len);
        let hard_limit = self.hard_limit();
        while until - cur > keep {
            let end = cur + len.nominal;
            let seg = end - self.lead_seg_start;
            let ends_segment =
                seg + len.nominal / 2 >= self.s.segment_target || seg + len.limit > hard_limit;
            self.close_leader_part(end, ends_segment, false, now);
            self.lead_paused = true;
            cur = end;
        }
    }

    fn push_follower(
        &mut self,
        r: RenditionIdx,
        mut p: Pending,
        now: SystemTime,
    ) -> Option<Placed> {
        let rend = &mut self.renditions[r];
        if rend.kind() == TrackKind::Audio
            && let CodecParams::Aac(_) = rend.info.codec
        {
            let frame = aac::SAMPLES_PER_FRAME as i64;
            if let Some(expected) = rend.next_dts {
                if (p.dts - expected).abs() <= frame / 2 {
                    p.dts = expected;
                    p.pts = expected;
                    p.t = rescale(p.dts, rend.info.timescale, HZ);
                } else if p.dts < expected {
                    // A late or repeated frame: the timeline already covers it.
                    return None;
                }
            }
            rend.next_dts = Some(p.dts + frame);
        }
        if let Some(start) = self.session_start
            && p.t < start
        {
            return None;
        }
        let placed = Placed {
            dts: p.dts,
            pts: p.pts,
        };
        self.last_end = self.last_end.max(p.t);
        self.head = self.head.max(p.t);
        let t = p.t;
        if rend.pending.len() >= MAX_PENDING {
            rend.pending.pop_front();
        }
        rend.pending.push_back(p);
        if let (Some(leader), Some(part_start)) = (self.leader, self.lead_part_start)
            && leader != r
        {
            // The leader paused while this track goes on (SRT, RTSP and WHIP drop video
            // until the next keyframe after a loss; encoders hiccup): keep the timeline
            // moving without it, the lag allowance behind this track. Only when the leader
            // has really stopped arriving, so a track whose clock merely runs ahead of the
            // leader's never turns the leader's frames into gaps.
            let lag = self.s.follower_max_lag;
            let lead_ref = self.lead_last.unwrap_or(part_start).max(part_start);
            let quiet = self
                .lead_arrival
                .and_then(|a| now.duration_since(a).ok())
                .is_some_and(|d| d.as_secs_f64() * TICKS as f64 > lag as f64);
            if t - lead_ref > lag && quiet {
                let nominal = self
                    .part_len
                    .unwrap_or_else(|| self.provisional_part_len())
                    .nominal;
                self.cut_parts_without_leader(t - lag, nominal - 1, Some(now));
            }
        }
        self.drain_follower(r);
        self.trim_boundaries();
        Some(placed)
    }

    fn start_segment(&mut self, start: i64, now: Option<SystemTime>) {
        // A new segment moves the preload hint: a change readers see.
        self.version += 1;
        let discontinuity = std::mem::take(&mut self.pending_discontinuity);
        self.cut_requested = false;
        if discontinuity {
            self.dseq += 1;
        }
        if (discontinuity || self.anchor.is_none())
            && let Some(now) = now
        {
            self.anchor = Some((start, now));
        }
        let (anchor_t, anchor_wall) = self.anchor.unwrap_or((start, SystemTime::UNIX_EPOCH));
        let pdt = offset_time(anchor_wall, start - anchor_t);
        self.meta.push_back(SegmentMeta {
            msn: self.next_msn,
            discontinuity,
            dseq: self.dseq,
            pdt,
        });
        while self.meta.len() > self.s.window + EXTRA_SEGMENTS + 8 {
            self.meta.pop_front();
        }
        self.lead_seg_start = start;
        self.seg_first_boundary = self.boundary_base + self.boundaries.len() as u64;
    }

    fn close_leader_part(
        &mut self,
        end: i64,
        ends_segment: bool,
        flush: bool,
        now: Option<SystemTime>,
    ) {
        let Some(leader) = self.leader else { return };
        let b = Boundary {
            start: self.lead_part_start.unwrap_or(end),
            end,
            msn: self.next_msn,
            part: self.next_part,
            ends_segment,
            flush,
        };
        self.boundaries.push_back(b);
        // An audio leader that paused (its source dropped while other dialects go on) is
        // filled with silence like any quiet dialect.
        let fill = self.renditions[leader].kind() == TrackKind::Audio;
        self.close_part(leader, b, fill);
        if ends_segment {
            self.next_msn += 1;
            self.next_part = 0;
            if !flush {
                self.start_segment(end, now);
            }
        } else {
            self.next_part += 1;
        }
        self.lead_part_start = Some(end);
        for f in 0..self.renditions.len() {
            if f != leader {
                self.drain_follower(f);
            }
        }
        self.trim_boundaries();
        self.version += 1;
    }

    fn boundary(&self, k: u64) -> Option<Boundary> {
        k.checked_sub(self.boundary_base)
            .and_then(|i| self.boundaries.get(i as usize))
            .copied()
    }

    fn drain_follower(&mut self, r: RenditionIdx) {
        while let Some(b) = self.boundary(self.renditions[r].next_boundary) {
            let rend = &self.renditions[r];
            if b.msn < rend.first_msn {
                self.renditions[r].next_boundary += 1;
                continue;
            }
            let half = rend.half_frame();
            let has_beyond = rend.pending.back().is_some_and(|f| f.t + half >= b.end);
            let lagging = self.head - b.end > self.s.follower_max_lag;
            if !(b.flush || has_beyond || lagging) {
                break;
            }
            // Fill to the boundary: a quiet track, or one that joined late, gets silence.
            self.close_part(r, b, !b.flush);
            self.version += 1;
        }
    }

    fn trim_boundaries(&mut self) {
        let end = self.boundary_base + self.boundaries.len() as u64;
        // Keep the current segment's boundaries for renditions that join late.
        let keep = if self.lead_part_start.is_some() {
            self.seg_first_boundary
        } else {
            end
        };
        let min = self
            .renditions
            .iter()
            .map(|r| r.next_boundary)
            .min()
            .unwrap_or(end)
            .min(keep);
        while self.boundary_base < min && !self.boundaries.is_empty() {
            self.boundaries.pop_front();
            self.boundary_base += 1;
        }
        // A rendition that never catches up (no frames, no silence possible) must not pin
        // memory: keep at most a few segments of boundaries.
        let cap = 64 * (self.s.window + EXTRA_SEGMENTS);
        while self.boundaries.len() > cap {
            self.boundaries.pop_front();
            self.boundary_base += 1;
            for r in &mut self.renditions {
                r.next_boundary = r.next_boundary.max(self.boundary_base);
            }
        }
    }

    fn meta_for(&self, msn: u64) -> SegmentMeta {
        self.meta
            .iter()
            .rev()
            .find(|m| m.msn == msn)
            .copied()
            .unwrap_or(SegmentMeta {
                msn,
                discontinuity: false,
                dseq: self.dseq,
                pdt: SystemTime::UNIX_EPOCH,
            })
    }

    /// Closes part `b` of rendition `r` with the frames it holds before `b.end`; with
    /// `fill_to_end`, missing audio up to `b.end` is filled with silence.
    fn close_part(&mut self, r: RenditionIdx, b: Boundary, fill_to_end: bool) {
        let meta = self.meta_for(b.msn);
        let rend = &mut self.renditions[r];
        let mut not_recorded = None;
        let record = if rend.derived {
            &mut not_recorded
        } else {
            &mut self.record
        };
        rend.next_boundary += 1;

        if let Some(open) = rend.open.as_ref().filter(|o| o.msn != b.msn) {
            // Should not happen (boundaries come in order); finish what is open.
            let msn = open.msn;
            finish_segment(rend, &self.s);
            if let Some(out) = record {
                out.push(recorder::Event::SegmentEnd {
                    rendition: rend.id.as_str().into(),
                    msn,
                });
            }
        }
        if rend.open.is_none() {
            if rend.init_dirty || rend.inits.is_empty() {
                let version = rend.current_init_version().map_or(0, |v| v + 1);
                match fmp4::init_segment(&rend.info, rend.language.as_ref()) {
                    Ok(init) => {
                        if let Some(out) = record {
                            out.push(recorder::Event::Init {
                                rendition: rend.id.as_str().into(),
                                version,
                                data: init.clone(),
                                track: recorder::RenditionMeta::of(
                                    &rend.id,
                                    &rend.info,
                                    rend.language.as_ref().map(|l| l.as_str()),
                                    &rend.name,
                                ),
                            });
                        }
                        rend.inits.push_back((version, init));
                        while rend.inits.len() > 3 {
                            rend.inits.pop_front();
                        }
                    }
                    Err(e) => tracing::error!(rendition = %rend.id, "init segment: {e}"),
                }
                rend.init_dirty = false;
            }
            rend.open = Some(OpenSegment {
                msn: b.msn,
                parts: Vec::new(),
                discontinuity: meta.discontinuity,
                dseq: meta.dseq,
                init_version: rend.current_init_version().unwrap_or(0),
                pdt: meta.pdt,
                frames: 0,
            });
        }

        let ts = rend.info.timescale;
        let half = rend.half_frame();
        let mut frames: Vec<Pending> = Vec::new();
        while let Some(f) = rend.pending.front() {
            // An audio frame goes to the part holding most of it.
            if b.flush || f.t + half < b.end {
                frames.push(rend.pending.pop_front().expect("front exists"));
            } else {
                break;
            }
        }
        if matches!(rend.info.codec, CodecParams::Aac(_)) {
            frames = audio_with_silence(rend, frames, b, fill_to_end);
        }

        let part = if frames.is_empty() {
            Part::gap(b)
        } else {
            let is_audio = rend.kind() == TrackKind::Audio;
            let end_r = rescale(b.end, HZ, ts);
            let mut samples = Vec::with_capacity(frames.len());
            for (i, f) in frames.iter().enumerate() {
                let duration = if is_audio {
                    aac::SAMPLES_PER_FRAME as i64
                } else {
                    match frames.get(i + 1) {
                        Some(next) => next.dts - f.dts,
                        None => (end_r - f.dts).max(1),
                    }
                };
                samples.push(Sample {
                    duration: duration.clamp(0, u32::MAX as i64) as u32,
                    composition_offset: (f.pts - f.dts).clamp(i32::MIN as i64, i32::MAX as i64)
                        as i32,
                    keyframe: f.keyframe,
                    data: f.data.clone(),
                });
            }
            let total: i64 = samples.iter().map(|s| s.duration as i64).sum();
            rend.sequence = rend.sequence.wrapping_add(1);
            let base = frames[0].dts.max(0) as u64;
            match fmp4::fragment(rend.sequence, base, &samples) {
                Ok(data) => Part {
                    data: Media::Memory(data),
                    index: b.part,
                    duration: total as f64 / ts as f64,
                    independent: frames[0].keyframe,
                    gap: false,
                },
                Err(e) => {
                    tracing::error!(rendition = %rend.id, "fragment: {e}");
                    Part::gap(b)
                }
            }
        };
        let open = rend.open.as_mut().expect("opened above");
        open.frames += frames.len() as u32;
        if let Some(out) = record {
            out.push(recorder::Event::Part {
                rendition: rend.id.as_str().into(),
                part: recorder::PartMeta {
                    msn: open.msn,
                    index: part.index,
                    duration: part.duration,
                    independent: part.independent,
                    gap: part.gap,
                    discontinuity: open.discontinuity,
                    dseq: open.dseq,
                    init_version: open.init_version,
                    segment_pdt: open.pdt,
                },
                data: part.data.in_memory().cloned().unwrap_or_default(),
            });
        }
        let msn = open.msn;
        open.parts.push(part);
        if self.s.spool.is_some() {
            swap_spooled(rend);
        }
        if b.ends_segment {
            finish_segment(rend, &self.s);
            if let Some(out) = record {
                out.push(recorder::Event::SegmentEnd {
                    rendition: rend.id.as_str().into(),
                    msn,
                });
            }
        }
    }

    /// Initialization segment `version` of rendition `r`.
    pub fn init(&self, r: RenditionIdx, version: u32) -> Option<Bytes> {
        self.renditions
            .get(r)?
            .inits
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, b)| b.clone())
    }

    /// Whole segment `msn` of rendition `r`.
    pub fn segment(&self, r: RenditionIdx, msn: u64) -> Option<Media> {
        self.renditions
            .get(r)?
            .segments
            .iter()
            .find(|s| s.msn == msn && !s.gap && !s.data.is_empty())
            .map(|s| s.data.clone())
    }

    /// Part `index` of segment `msn` of rendition `r`, if it exists and is not a gap.
    pub fn part(&self, r: RenditionIdx, msn: u64, index: u32) -> Option<Media> {
        let rend = self.renditions.get(r)?;
        let parts = match &rend.open {
            Some(o) if o.msn == msn => &o.parts,
            _ => &rend.segments.iter().find(|s| s.msn == msn)?.parts,
        };
        parts
            .iter()
            .find(|p| p.index == index && !p.gap && !p.data.is_empty())
            .map(|p| p.data.clone())
    }

    /// Whether part `(msn, index)` of `r` is worth waiting for: it is the next part or one
    /// close after it, and the lecture is still going.
    pub fn part_upcoming(&self, r: RenditionIdx, msn: u64, index: u32) -> bool {
        let Some(rend) = self.renditions.get(r) else {
            return false;
        };
        if self.ended {
            return false;
        }
        let (nm, np) = rend.next_part();
        (msn == nm && index >= np && index <= np + 2) || (msn == nm + 1 && index <= 2)
    }

    /// Readiness of a blocking playlist reload for `_HLS_msn=msn` and optional `_HLS_part`.
    pub fn blocking_ready(&self, r: RenditionIdx, msn: u64, part: Option<u32>) -> Readiness {
        let Some(rend) = self.renditions.get(r) else {
            return Readiness::Ready;
        };
        if self.ended {
            return Readiness::Ready;
        }
        let (next_msn, next_part) = rend.next_part();
        let present = match part {
            // A Media Segment is in the playlist once it is complete.
            None => msn < next_msn,
            Some(p) if msn < next_msn => {
                let parts_of = |m: u64| {
                    rend.segments
                        .iter()
                        .find(|s| s.msn == m)
                        .map(|s| s.parts.len())
                };
                match parts_of(msn) {
                    Some(n) if n > 0 && p as usize >= n => {
                        // Past the end of a finished segment: part 0 of the next one
                        // (RFC 8216bis 6.2.5.2).
                        msn + 1 < next_msn || (msn + 1 == next_msn && next_part > 0)
                    }
                    _ => true,
                }
            }
            Some(p) => msn == next_msn && p < next_part,
        };
        if present {
            return Readiness::Ready;
        }
        let last_msn = next_msn.saturating_sub(1);
        if msn > last_msn + 2 {
            return Readiness::TooFarAhead;
        }
        // RFC 8216bis 6.2.5.2: a part more than the Advance Part Limit (three seconds'
        // worth of parts, at least three) past the last one is refused at once.
        if let (Some(p), Some((lm, lp))) = (part, rend.last_part()) {
            let part_target = self.part_target();
            let limit = if part_target < 1.0 {
                3.0 / part_target
            } else {
                3.0
            };
            let nominal = self
                .part_len
                .unwrap_or_else(|| self.provisional_part_len())
                .nominal;
            let per_segment = (self.s.segment_target as f64 / nominal.max(1) as f64)
                .round()
                .max(1.0);
            let ahead = (msn as f64 - lm as f64) * per_segment + p as f64 - lp as f64;
            if ahead > limit {
                return Readiness::TooFarAhead;
            }
        }
        Readiness::Wait
    }

    /// Whether rendition `r` has anything to list yet.
    pub fn has_media(&self, r: RenditionIdx) -> bool {
        self.renditions
            .get(r)
            .is_some_and(|x| x.last_part().is_some())
    }

    /// The media playlist of rendition `r`, rendered at most once per [`Packager::version`].
    pub fn media_playlist_bytes(&self, r: RenditionIdx) -> Option<Bytes> {
        let mut cache = self.rendered.borrow_mut();
        if let Some(Some((v, text))) = cache.get(r)
            && *v == self.version
        {
            return Some(text.clone());
        }
        let text = Bytes::from(self.media_playlist(r)?);
        if cache.len() <= r {
            cache.resize(r + 1, None);
        }
        cache[r] = Some((self.version, text.clone()));
        Some(text)
    }

    /// The media playlist of rendition `r`, rendered afresh.
    pub fn media_playlist(&self, r: RenditionIdx) -> Option<String> {
        let rend = self.renditions.get(r)?;
        let inst = &self.instance;
        let init_uri = |v: u32| format!("init-{inst}-{v}.mp4");
        let part_line = |msn: u64, p: &Part| PartLine {
            duration: p.duration,
            uri: format!("part-{inst}-{msn}-{}.m4s", p.index),
            independent: p.independent,
            gap: p.gap,
        };
        let listed: Vec<&Segment> = {
            let skip = rend.segments.len().saturating_sub(self.s.window);
            rend.segments.iter().skip(skip).collect()
        };
        // Parts only near the end: at most PART_SEGMENTS segments with parts (the open one
        // counts while the lecture goes on: its parts or its preload hint), each starting
        // within three target durations of the end.
        let open_len: f64 = rend
            .open
            .as_ref()
            .map_or(0.0, |o| o.parts.iter().map(|p| p.duration).sum());
        let limit = 3.0 * self.s.target_duration as f64 + 1e-6;
        let mut part_from = listed.len();
        let mut from_end = open_len;
        let mut groups = usize::from(!self.ended || rend.open.is_some());
        for s in listed.iter().rev() {
            from_end += s.duration;
            groups += 1;
            if groups > PART_SEGMENTS || from_end > limit {
                break;
            }
            part_from -= 1;
        }
        let segments = listed
            .iter()
            .enumerate()
            .map(|(i, s)| SegmentLine {
                duration: s.duration,
                uri: format!("seg-{inst}-{}.m4s", s.msn),
                discontinuity: s.discontinuity,
                map_uri: init_uri(s.init_version),
                program_date_time: Some(s.pdt),
                parts: if i >= part_from {
                    s.parts.iter().map(|p| part_line(s.msn, p)).collect()
                } else {
                    Vec::new()
                },
                gap: s.gap,
            })
            .collect::<Vec<_>>();
        let first = listed.first();
        let (next_msn, next_part) = rend.next_part();
        let media_sequence = first.map_or(next_msn, |s| s.msn);
        let discontinuity_sequence = match (first, &rend.open) {
            (Some(s), _) => s.dseq - s.discontinuity as u64,
            (None, Some(o)) => o.dseq - o.discontinuity as u64,
            (None, None) => self.dseq,
        };
        let rendition_reports = self
            .renditions
            .iter()
            .filter(|o| o.id != rend.id)
            .filter_map(|o| {
                let (msn, part) = o.last_part()?;
                Some(RenditionReport {
                    uri: format!("../{}/index.m3u8", o.id),
                    last_msn: msn,
                    last_part: Some(part as u64),
                })
            })
            .collect();
        let playlist = MediaPlaylist {
            playlist_type: None,
            target_duration: self.s.target_duration,
            part_target: Some(self.part_target()),
            media_sequence,
            discontinuity_sequence,
            segments,
            open_parts: rend
                .open
                .as_ref()
                .map(|o| o.parts.iter().map(|p| part_line(o.msn, p)).collect())
                .unwrap_or_default(),
            open_discontinuity: rend.open.as_ref().is_some_and(|o| o.discontinuity),
            open_map_uri: rend.open.as_ref().map(|o| init_uri(o.init_version)),
            open_program_date_time: rend.open.as_ref().map(|o| o.pdt),
            preload_hint: (!self.ended && rend.current_init_version().is_some())
                .then(|| format!("part-{inst}-{next_msn}-{next_part}.m4s")),
            rendition_reports,
            ended: self.ended,
        };
        Some(m3u8::render_media(&playlist))
    }
}

fn offset_time(anchor: SystemTime, ticks: i64) -> SystemTime {
    let d =
        Duration::from_nanos((ticks.unsigned_abs()).saturating_mul(1_000_000_000) / TICKS as u64);
    if ticks >= 0 {
        anchor + d
    } else {
        anchor.checked_sub(d).unwrap_or(anchor)
    }
}

/// Most silent frames inserted for one gap (about 10 s); longer gaps stay gaps.
const MAX_FILL: usize = 500;

/// The audio frames of part `b`: `frames` with gaps before, between and (with `fill_to_end`)
/// after them filled with AAC silence, and frames overlapping audio already emitted dropped.
/// Keeps every dialect's timeline gapless so players never stall on a quiet track.
fn audio_with_silence(
    rend: &mut Rendition,
    frames: Vec<Pending>,
    b: Boundary,
    fill_to_end: bool,
) -> Vec<Pending> {
    let CodecParams::Aac(params) = &rend.info.codec else {
        return frames;
    };
    let silent = aac::silent_frame(params.channels).map(Bytes::from_static);
    let ts = rend.info.timescale;
    let frame = aac::SAMPLES_PER_FRAME as i64;
    let mut cursor = rend.emit_end.unwrap_or_else(|| rescale(b.start, HZ, ts));
    let mut out = Vec::with_capacity(frames.len());
    let fill_until = |out: &mut Vec<Pending>, cursor: &mut i64, until: i64| {
        let Some(data) = &silent else { return };
        let mut n = 0;
        while until - *cursor > frame / 2 && n < MAX_FILL {
            out.push(Pending {
                t: rescale(*cursor, ts, HZ),
                dts: *cursor,
                pts: *cursor,
                keyframe: true,
                data: data.clone(),
            });
            *cursor += frame;
            n += 1;
        }
        if until - *cursor > frame / 2 {
            *cursor = until;
        }
    };
    for f in frames {
        if f.dts < cursor - frame / 2 {
            continue;
        }
        fill_until(&mut out, &mut cursor, f.dts);
        cursor = f.dts + frame;
        out.push(f);
    }
    if fill_to_end {
        fill_until(&mut out, &mut cursor, rescale(b.end, HZ, ts));
    }
    rend.emit_end = Some(cursor);
    out
}

fn finish_segment(rend: &mut Rendition, settings: &Settings) {
    let Some(open) = rend.open.take() else { return };
    let duration: f64 = open.parts.iter().map(|p| p.duration).sum();
    let gap = !open.parts.is_empty() && open.parts.iter().all(|p| p.gap);
    let len: usize = open.parts.iter().map(|p| p.data.len()).sum();
    let mut data = BytesMut::with_capacity(len);
    for p in &open.parts {
        if let Some(b) = p.data.in_memory() {
            data.extend_from_slice(b);
        }
    }
    let data = data.freeze();
    // The parts are served from the segment's bytes from now on, so a lecture's media near
    // the live edge is held once, not twice (parts and their segment).
    let mut at = 0;
    let mut parts = open.parts;
    for p in &mut parts {
        let n = p.data.len();
        p.data = Media::Memory(data.slice(at..at + n));
        at += n;
    }
    rend.segments.push_back(Segment {
        msn: open.msn,
        duration,
        parts,
        data: Media::Memory(data),
        discontinuity: open.discontinuity,
        dseq: open.dseq,
        init_version: open.init_version,
        pdt: open.pdt,
        frames: open.frames,
        gap,
        spool: None,
    });
    while rend.segments.len() > settings.window + EXTRA_SEGMENTS {
        rend.segments.pop_front();
    }
    // Parts are only needed near the live edge: while listed, and three target durations
    // after (RFC 8216bis 6.2.2), with one segment to spare.
    let keep = (6 * settings.target_duration) as f64;
    let mut from_end = 0.0;
    let mut keep_from = rend.segments.len();
    for s in rend.segments.iter().rev() {
        if from_end > keep {
            break;
        }
        from_end += s.duration;
        keep_from -= 1;
    }
    for s in rend.segments.iter_mut().take(keep_from.saturating_sub(1)) {
        if !s.parts.is_empty() {
            s.parts.clear();
        }
    }
    if let Some((spooler, memory_segments)) = &settings.spool {
        spool_behind(rend, spooler, *memory_segments);
    }
}

/// Swaps the segments the spooler has written for their files, and hands it the segment
/// that has just fallen behind the newest `memory_segments`.
fn spool_behind(rend: &mut Rendition, spooler: &Spooler, memory_segments: usize) {
    swap_spooled(rend);
    let Some(behind) = rend.segments.len().checked_sub(memory_segments + 1) else {
        return;
    };
    let s = &mut rend.segments[behind];
    if s.spool.is_none()
        && let Some(data) = s.data.in_memory().filter(|d| !d.is_empty())
    {
        s.spool = spooler.submit(data.clone(), &rend.spool);
    }
}

/// Swaps the segments the spooler has written since the last call for their ranges of the
/// rendition's file (called with every part, so a written segment leaves memory within a
/// part's time).
fn swap_spooled(rend: &mut Rendition) {
    for s in rend.segments.iter_mut() {
        let Some(extent) = s.spool.as_ref().and_then(|slot| slot.extent()).cloned() else {
            continue;
        };
        s.spool = None;
        let mut offset = 0u64;
        for p in &mut s.parts {
            let len = p.data.len();
            p.data = Media::Spooled {
                extent: extent.clone(),
                offset,
                len,
            };
            offset += len as u64;
        }
        s.data = Media::Spooled {
            extent,
            offset: 0,
            len: s.data.len(),
        };
    }
}
