//! MPEG-TS → media model: the elementary streams of a transport stream become tracks.
//!
//! - The H.264 PID is the video track (Annex B access units become length-prefixed NAL
//!   units; SPS and PPS become its configuration). After lost data it waits for the next
//!   keyframe, so no undecodable frame reaches a player.
//! - Every AAC PID is an audio track — one dialect — with the language of its ISO 639
//!   descriptor. An audio PID without one (or repeating another's) still becomes a track,
//!   tagged `und-x-aN`, and a notice says how to label it.
//! - Timestamps: 33-bit PTS/DTS are unwrapped (a PID that starts late, after a wrap,
//!   unwraps next to the others). A jump (encoder restart, a splice) gives the first track
//!   to cross it an offset that continues its timeline where it was; each other track, as it
//!   crosses, takes an offset already made when that places it next to where it was (so the
//!   tracks stay in sync), else makes its own. A single stray timestamp is thus a jump there
//!   and back for its track alone, and moves nobody else. A track back from a pause of
//!   over 5 s rejoins the others where they are.
//! - A new PMT version that drops a stream and declares another of its kind (the video on
//!   another PID, a dialect's PID renumbered or changing codec) continues the old track.
//!
//! Damaged input never ends the session: it yields [`Notice`]s the driver logs.

use std::collections::BTreeMap;

use bytes::Bytes;
use media::aac;
use media::h264::{self, H264Params};
use media::model::rescale;
use media::mpegts::{EsKind, TsDemux, TsEvent, Unwrapper};
use media::{CodecParams, Frame, Language, MediaEvent, TrackId, TrackInfo};

/// A forward jump larger than this (90 kHz ticks) is a discontinuity: 5 s.
const JUMP_FORWARD: i64 = 5 * 90_000;
/// A backward step larger than this is a discontinuity: 1 s.
const JUMP_BACK: i64 = 90_000;
/// Offsets remembered for tracks still to cross a jump.
const MAX_OFFSETS: usize = 8;
/// A frame's length (90 kHz) assumed where a jump leaves no better guess: 40 ms.
const JUMP_FILL: i64 = 3600;
/// Audio PIDs mapped at most (a lecture carries at most this many dialects per input).
pub const MAX_AUDIO: usize = 16;

/// What the mapper produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TsOutput {
    /// A media event for the relay.
    Media(MediaEvent),
    /// An Opus packet of an audio track, to be made AAC before the relay (HLS carries
    /// AAC): the driver runs it through a transcoder and announces the track from there.
    Opus(OpusFrame),
    /// Something to tell the operator.
    Notice(Notice),
}

/// One Opus packet of a TS audio track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusFrame {
    /// The track it belongs to.
    pub track: TrackId,
    /// Its dialect.
    pub language: Option<Language>,
    /// Presentation time at 48 kHz on the stream's timeline.
    pub pts: i64,
    /// The Opus packet.
    pub data: Bytes,
}

/// Something about the input worth telling the operator; the session goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// A stable kind, for rate limiting and counting: `loss`, `dropped`, `jump`,
    /// `unsupported`, `language`, `bad-frame`.
    pub kind: &'static str,
    /// What happened, for the log and the API's last error.
    pub message: String,
}

fn is_audio(kind: EsKind) -> bool {
    matches!(kind, EsKind::Aac | EsKind::Opus)
}

struct Es {
    kind: EsKind,
    language: Option<Language>,
    track: TrackId,
    announced: Option<CodecParams>,
    unwrap: Unwrapper,
    /// Added to its unwrapped timestamps to place them on the stream's timeline.
    offset: i64,
    /// Last unwrapped DTS (90 kHz) and what it mapped to.
    last: Option<(i64, i64)>,
    waiting_keyframe: bool,
}

/// Maps one transport stream.
pub struct TsToMedia {
    demux: TsDemux,
    es: BTreeMap<u16, Es>,
    next_track: u32,
    /// PES with a timestamp received on the streams it maps.
    pes_received: u64,
    /// Offsets (90 kHz) made at jumps, oldest first, for the other tracks to take.
    offsets: Vec<i64>,
    /// Streams a new PMT version dropped, oldest first: a stream declared in their place
    /// (the video moved to another PID, a dialect's PID renumbered) continues their track.
    retired: Vec<Es>,
    out: std::collections::VecDeque<TsOutput>,
}

impl Default for TsToMedia {
    fn default() -> Self {
        TsToMedia::new()
    }
}

impl TsToMedia {
    /// A mapper for a new connection.
    pub fn new() -> Self {
        TsToMedia {
            demux: TsDemux::new(),
            es: BTreeMap::new(),
            next_track: 0,
            pes_received: 0,
            offsets: vec![0],
            retired: Vec::new(),
            out: Default::default(),
        }
    }

    /// Whether a PMT has declared a stream this maps (video or audio).
    pub fn has_program(&self) -> bool {
        self.es
            .values()
            .any(|e| matches!(e.kind, EsKind::H264 | EsKind::Aac | EsKind::Opus))
    }

    /// How many timestamped PES of the streams it maps have arrived: whether a publisher
    /// still sends media, whatever becomes of it.
    pub fn pes_received(&self) -> u64 {
        self.pes_received
    }

    /// Takes received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.demux.push(data);
        self.drain_demux();
    }

    /// The stream ended: what is still being assembled comes out.
    pub fn finish(&mut self) {
        self.demux.flush();
        self.drain_demux();
    }

    /// The next media event, Opus packet or notice.
    pub fn poll(&mut self) -> Option<TsOutput> {
        self.out.pop_front()
    }

    fn notice(&mut self, kind: &'static str, message: String) {
        self.out
            .push_back(TsOutput::Notice(Notice { kind, message }));
    }

    fn drain_demux(&mut self) {
        while let Some(ev) = self.demux.poll() {
            match ev {
                TsEvent::Stream(s) => self.on_stream(s),
                TsEvent::Pes {
                    pid,
                    pts,
                    dts,
                    data,
                } => self.on_pes(pid, pts, dts, data),
                TsEvent::Gone { pid } => self.retire(pid),
                TsEvent::Loss { pid } => {
                    if let Some(es) = self.es.get_mut(&pid)
                        && es.kind == EsKind::H264
                    {
                        es.waiting_keyframe = true;
                    }
                    self.notice("loss", format!("data lost on PID {pid} (continuity error)"));
                }
                TsEvent::Dropped { pid, reason } => {
                    let on = pid.map(|p| format!(" on PID {p}")).unwrap_or_default();
                    self.notice("dropped", format!("damaged data{on}: {reason}"));
                }
            }
        }
    }

    /// Keeps the track of a stream that ended for a stream declared in its place.
    fn retire(&mut self, pid: u16) {
        if let Some(es) = self.es.remove(&pid) {
            if self.retired.len() > MAX_AUDIO {
                self.retired.remove(0);
            }
            self.retired.push(es);
        }
    }

    fn on_stream(&mut self, s: media::mpegts::TsStream) {
        if let Some(es) = self.es.get(&s.pid) {
            if es.kind == s.kind {
                // The same stream in a new PMT version: keep its track.
                return;
            }
            // The PID carries something else now.
            self.retire(s.pid);
        }
        match s.kind {
            EsKind::H264 => {
                if self.es.values().any(|e| e.kind == EsKind::H264) {
                    self.notice(
                        "unsupported",
                        format!("a second H.264 PID ({}) is ignored", s.pid),
                    );
                    return;
                }
            }
            EsKind::Aac | EsKind::Opus => {
                let others = self.es.values().filter(|e| is_audio(e.kind)).count();
                if others >= MAX_AUDIO {
                    self.notice(
                        "unsupported",
                        format!("audio PID {} ignored: at most {MAX_AUDIO} dialects", s.pid),
                    );
                    return;
                }
            }
            EsKind::H265 | EsKind::Other(_) => {
                let what = match s.kind {
                    EsKind::Other(t) => format!("stream type 0x{t:02x}"),
                    _ => "H.265 video".to_string(),
                };
                self.notice(
                    "unsupported",
                    format!(
                        "PID {} carries {what}, which is not relayed yet (send H.264 with AAC or Opus): ignored",
                        s.pid
                    ),
                );
                return;
            }
        }
        let language = if is_audio(s.kind) {
            self.language_for(s.pid, s.language.as_deref())
        } else {
            None
        };
        let successor = |e: &Es| {
            if is_audio(s.kind) {
                is_audio(e.kind) && e.language == language
            } else {
                e.kind == s.kind
            }
        };
        if let Some(i) = self.retired.iter().position(successor) {
            let mut es = self.retired.remove(i);
            if es.kind != s.kind {
                es.kind = s.kind;
                es.announced = None;
            }
            es.waiting_keyframe = true;
            self.es.insert(s.pid, es);
            return;
        }
        let track = TrackId(self.next_track);
        self.next_track += 1;
        // Next to the other tracks: unwrapped near the latest time of the one furthest on,
        // and mapped as it is (not by the newest offset, which a stray frame may have made).
        let latest = self
            .es
            .values()
            .filter_map(|e| e.last)
            .max_by_key(|(_, out)| *out);
        let (unwrap, offset) = match latest {
            Some((raw, out)) => (Unwrapper::near(raw), out - raw),
            None => (
                Unwrapper::default(),
                self.offsets.last().copied().unwrap_or(0),
            ),
        };
        self.es.insert(
            s.pid,
            Es {
                kind: s.kind,
                language,
                track,
                announced: None,
                unwrap,
                offset,
                last: None,
                waiting_keyframe: true,
            },
        );
    }

    /// The dialect of an audio PID: its descriptor's language, unless missing, invalid or
    /// already taken by another PID of this stream.
    fn language_for(&mut self, pid: u16, declared: Option<&str>) -> Option<Language> {
        let audio = is_audio;
        let taken = |l: &Language, es: &BTreeMap<u16, Es>| {
            es.values().any(|e| e.language.as_ref() == Some(l))
        };
        let parsed = declared
            .map(|d| d.trim_matches(char::from(0)).trim().to_ascii_lowercase())
            .filter(|d| !d.is_empty() && d != "und")
            .and_then(|d| Language::parse(&d).ok());
        let first_unlabelled = !self
            .es
            .values()
            .any(|e| audio(e.kind) && e.language.is_none());
        match parsed {
            Some(l) if !taken(&l, &self.es) => Some(l),
            None if first_unlabelled => {
                // One unlabelled track takes the lecture's default dialect.
                None
            }
            other => {
                let n = self.es.values().filter(|e| audio(e.kind)).count();
                let tag = match &other {
                    Some(l) => format!("{}-x-a{n}", l.as_str().split('-').next().unwrap_or("und")),
                    None => format!("und-x-a{n}"),
                };
                let why = match &other {
                    Some(l) => format!("repeats the language {l} of another track"),
                    None => "has no ISO 639 language descriptor".to_string(),
                };
                self.notice(
                    "language",
                    format!(
                        "audio PID {pid} {why}; published as dialect {tag}. Tag each audio track with its own language (ffmpeg: -metadata:s:a:N language=yue)"
                    ),
                );
                Language::parse(&tag).ok()
            }
        }
    }

    fn on_pes(&mut self, pid: u16, pts: Option<u64>, dts: Option<u64>, data: Bytes) {
        let Some(pts) = pts else {
            self.notice("bad-frame", format!("PES without a timestamp on PID {pid}"));
            return;
        };
        let Some(kind) = self.es.get(&pid).map(|e| e.kind) else {
            return;
        };
        self.pes_received += 1;
        let Some((dts, pts)) = self.place(pid, dts.unwrap_or(pts), pts) else {
            return;
        };
        match kind {
            EsKind::H264 => self.on_video(pid, dts, pts, &data),
            EsKind::Aac => self.on_audio(pid, pts, &data),
            EsKind::Opus => self.on_opus(pid, pts, &data),
            _ => {}
        }
    }

    /// Unwraps and maps a PID's timestamps onto the continuous timeline: `(dts, pts)` in
    /// 90 kHz ticks.
    fn place(&mut self, pid: u16, dts_raw: u64, pts_raw: u64) -> Option<(i64, i64)> {
        // Where the other tracks are: a track that paused (or a successor after a gap)
        // rejoins them there rather than continuing where it stopped.
        let others = self
            .es
            .iter()
            .filter(|(p, _)| **p != pid)
            .filter_map(|(_, e)| e.last.map(|(_, out)| out))
            .max();
        let es = self.es.get_mut(&pid)?;
        let dts = es.unwrap.unwrap(dts_raw);
        // PTS as the nearest value to the DTS (they may straddle a wrap).
        let mut pts = dts - (dts.rem_euclid(1 << 33)) + (pts_raw & ((1 << 33) - 1)) as i64;
        if pts - dts > 1 << 32 {
            pts -= 1 << 33;
        } else if dts - pts > 1 << 32 {
            pts += 1 << 33;
        }
        let mut jumped = None;
        if let Some((last_raw, last_out)) = es.last {
            let step = dts - last_raw;
            let rejoins = |o: i64| {
                others.is_some_and(|m| (-JUMP_BACK..=JUMP_FORWARD).contains(&(dts + o - m)))
            };
            if !(-JUMP_BACK..=JUMP_FORWARD).contains(&step) && !rejoins(es.offset) {
                // Newest first: the offset of the jump another track has just crossed.
                let fits = |o: &&i64| {
                    (-JUMP_BACK..=JUMP_FORWARD).contains(&(dts + **o - last_out)) || rejoins(**o)
                };
                match self.offsets.iter().rev().find(fits) {
                    Some(o) => es.offset = *o,
                    None => {
                        es.offset = last_out + JUMP_FILL - dts;
                        jumped = Some((step, es.offset));
                    }
                }
            }
        }
        let out = (dts + es.offset, pts + es.offset);
        es.last = Some((dts, out.0));
        if let Some((step, offset)) = jumped {
            self.offsets.push(offset);
            if self.offsets.len() > MAX_OFFSETS {
                self.offsets.remove(0);
            }
            self.notice(
                "jump",
                format!(
                    "timestamps jumped by {:+.1} s on PID {pid}: the timeline continues across it",
                    step as f64 / 90_000.0
                ),
            );
        }
        Some(out)
    }

    fn on_video(&mut self, pid: u16, dts: i64, pts: i64, data: &[u8]) {
        let mut sps = None;
        let mut pps = None;
        let mut idr = false;
        for nal in h264::split_annexb(data) {
            match nal.first().map(|b| b & 0x1f) {
                Some(7) => sps = Some(nal),
                Some(8) => pps = Some(nal),
                Some(5) => idr = true,
                _ => {}
            }
        }
        if let (Some(sps), Some(pps)) = (sps, pps) {
            let changed = match &self.es[&pid].announced {
                Some(CodecParams::H264(h)) => h.sps != sps || h.pps != pps,
                _ => true,
            };
            if changed {
                match H264Params::from_sps_pps(sps, pps) {
                    Ok(p) => {
                        let es = self.es.get_mut(&pid).expect("known pid");
                        es.announced = Some(CodecParams::H264(p.clone()));
                        self.out.push_back(TsOutput::Media(MediaEvent::Track {
                            id: es.track,
                            info: TrackInfo::new(CodecParams::H264(p)),
                        }));
                    }
                    Err(e) => {
                        self.notice("bad-frame", format!("bad H.264 parameter sets: {e}"));
                        return;
                    }
                }
            }
        }
        let es = self.es.get_mut(&pid).expect("known pid");
        if es.announced.is_none() {
            // Nothing decodable before the first SPS/PPS.
            return;
        }
        if es.waiting_keyframe {
            if !idr {
                return;
            }
            es.waiting_keyframe = false;
        }
        let avcc = h264::annexb_to_avcc_without_parameter_sets(data);
        if avcc.is_empty() {
            return;
        }
        let track = es.track;
        self.out.push_back(TsOutput::Media(MediaEvent::Frame {
            track,
            frame: Frame {
                dts,
                pts,
                keyframe: idr,
                data: avcc,
            },
        }));
    }

    fn on_opus(&mut self, pid: u16, pts: i64, data: &[u8]) {
        let units = match media::opus::split_ts_units(data) {
            Ok(u) => u,
            Err(e) => {
                self.notice("bad-frame", format!("bad Opus on PID {pid}: {e}"));
                return;
            }
        };
        let es = &self.es[&pid];
        let (track, language) = (es.track, es.language.clone());
        let mut t = rescale(pts, 90_000, 48_000);
        for u in units {
            let Some(samples) = media::opus::packet_samples(u.packet) else {
                self.notice("bad-frame", format!("an invalid Opus packet on PID {pid}"));
                return;
            };
            self.out.push_back(TsOutput::Opus(OpusFrame {
                track,
                language: language.clone(),
                pts: t,
                data: Bytes::copy_from_slice(u.packet),
            }));
            t += samples as i64;
        }
    }

    fn on_audio(&mut self, pid: u16, pts: i64, data: &[u8]) {
        let (frames, damage) = aac::split_adts(data);
        if let Some(e) = damage {
            let kept = frames.len();
            self.notice(
                "bad-frame",
                format!("bad AAC on PID {pid}: {e} ({kept} frames before it kept)"),
            );
        }
        let Some(first) = frames.first() else { return };
        let params = match first.params() {
            Ok(p) => p,
            Err(e) => {
                self.notice("bad-frame", format!("bad AAC header on PID {pid}: {e}"));
                return;
            }
        };
        let es = self.es.get_mut(&pid).expect("known pid");
        let changed = match &es.announced {
            Some(CodecParams::Aac(a)) => a.config != params.config,
            _ => true,
        };
        let rate = params.sample_rate;
        if changed {
            es.announced = Some(CodecParams::Aac(params.clone()));
            let mut info = TrackInfo::new(CodecParams::Aac(params));
            info.language = es.language.clone();
            let id = es.track;
            self.out
                .push_back(TsOutput::Media(MediaEvent::Track { id, info }));
        }
        let es = &self.es[&pid];
        let track = es.track;
        let base = rescale(pts, 90_000, rate);
        for (i, f) in frames.iter().enumerate() {
            let t = base + i as i64 * aac::SAMPLES_PER_FRAME as i64;
            self.out.push_back(TsOutput::Media(MediaEvent::Frame {
                track,
                frame: Frame {
                    dts: t,
                    pts: t,
                    keyframe: true,
                    data: Bytes::copy_from_slice(f.data),
                },
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE: &[u8] = include_bytes!("../../../media/testdata/three-dialects.ts");

    fn map(data: &[u8], chunk: usize) -> (Vec<MediaEvent>, Vec<Notice>) {
        let mut m = TsToMedia::new();
        let (mut events, mut notices) = (vec![], vec![]);
        let mut take = |m: &mut TsToMedia| {
            while let Some(x) = m.poll() {
                match x {
                    TsOutput::Media(e) => events.push(e),
                    TsOutput::Notice(n) => notices.push(n),
                    TsOutput::Opus(_) => {}
                }
            }
        };
        for c in data.chunks(chunk) {
            m.push(c);
            take(&mut m);
        }
        m.finish();
        take(&mut m);
        (events, notices)
    }

    fn tracks(events: &[MediaEvent]) -> Vec<(TrackId, TrackInfo)> {
        events
            .iter()
            .filter_map(|e| match e {
                MediaEvent::Track { id, info } => Some((*id, info.clone())),
                _ => None,
            })
            .collect()
    }

    fn frames(events: &[MediaEvent], track: TrackId) -> Vec<Frame> {
        events
            .iter()
            .filter_map(|e| match e {
                MediaEvent::Frame { track: t, frame } if *t == track => Some(frame.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn three_dialects_become_one_video_and_three_audio_tracks() {
        let (events, notices) = map(THREE, 1316);
        assert!(notices.is_empty(), "{notices:?}");
        let t = tracks(&events);
        assert_eq!(t.len(), 4);
        let video = t
            .iter()
            .find(|(_, i)| matches!(i.codec, CodecParams::H264(_)))
            .unwrap();
        let CodecParams::H264(h) = &video.1.codec else {
            unreachable!()
        };
        assert_eq!((h.width, h.height), (160, 120));
        let langs: Vec<String> = t
            .iter()
            .filter_map(|(_, i)| i.language.as_ref().map(|l| l.to_string()))
            .collect();
        assert_eq!(langs, ["cmn", "yue", "hak"]);
        let v = frames(&events, video.0);
        assert_eq!(v.len(), 50);
        assert!(v[0].keyframe);
        assert!(v.iter().any(|f| f.pts > f.dts), "B-frames");
        for f in &v {
            assert_eq!(h.is_idr(&f.data).unwrap(), f.keyframe);
        }
        for (id, info) in t.iter().filter(|(_, i)| i.language.is_some()) {
            let a = frames(&events, *id);
            assert_eq!(a.len(), 95, "{:?}", info.language);
            assert!(a.windows(2).all(|w| w[1].dts - w[0].dts == 1024));
            // Audio and video start together (within 100 ms) on the same clock.
            let lead = (rescale(a[0].pts, 48_000, 90_000) - v[0].pts).abs();
            assert!(lead < 9000, "{lead}");
        }
    }

    #[test]
    fn video_after_a_loss_waits_for_the_next_keyframe() {
        // Drop a packet in the middle of the first GOP.
        let cut = 60 * 188;
        let mut lossy = THREE[..cut].to_vec();
        lossy.extend_from_slice(&THREE[cut + 188..]);
        let (events, notices) = map(&lossy, 1316);
        assert!(notices.iter().any(|n| n.kind == "loss"), "{notices:?}");
        let t = tracks(&events);
        let video = t
            .iter()
            .find(|(_, i)| matches!(i.codec, CodecParams::H264(_)))
            .unwrap();
        let v = frames(&events, video.0);
        // Only the frames before the loss and from the second keyframe on.
        let keyframes = v.iter().filter(|f| f.keyframe).count();
        assert_eq!(keyframes, 2);
        let second = v.iter().rposition(|f| f.keyframe).unwrap();
        assert_eq!(v.len() - second, 25, "the whole second GOP");
        assert!(second < 25, "the first GOP is cut short at the loss");
    }

    #[test]
    fn a_timestamp_jump_keeps_the_timeline_continuous_for_every_track() {
        // The same two seconds twice, the second copy with every PTS/DTS moved by +1 hour
        // (an encoder restart), as one stream.
        let mut shifted = THREE.to_vec();
        shift_timestamps(&mut shifted, 3600 * 90_000);
        let mut both = THREE.to_vec();
        both.extend_from_slice(&shifted);
        let (events, notices) = map(&both, 1316);
        assert!(notices.iter().any(|n| n.kind == "jump"), "{notices:?}");
        // Only continuity notices about the splice itself are expected besides the jump.
        let t = tracks(&events);
        for (id, info) in &t {
            let f = frames(&events, *id);
            let ts: Vec<i64> = f
                .iter()
                .map(|x| rescale(x.dts, info.timescale, 90_000))
                .collect();
            let biggest = ts.windows(2).map(|w| w[1] - w[0]).max().unwrap();
            assert!(
                biggest < 90_000 / 2,
                "{:?}: a gap of {biggest} ticks",
                info.language
            );
        }
    }

    /// Moves elementary stream `from` to PID `to` in a TS: its packets, and the PMT (a new
    /// version, PCR PID included) that declares it.
    fn move_pid(ts: &mut [u8], pmt_pid: u16, from: u16, to: u16) {
        let pid_of = |p: &[u8]| ((p[1] as u16 & 0x1f) << 8) | p[2] as u16;
        let set = |b: &mut [u8], pid: u16| {
            b[0] = (b[0] & 0xe0) | (pid >> 8) as u8;
            b[1] = pid as u8;
        };
        for pkt in ts.chunks_mut(188) {
            let pid = pid_of(pkt);
            if pid == from {
                set(&mut pkt[1..3], to);
            } else if pid == pmt_pid {
                let start = 5 + pkt[4] as usize;
                let sec = &mut pkt[start..];
                let len = (((sec[1] as usize) & 0x0f) << 8) | sec[2] as usize;
                let version = ((sec[5] >> 1) + 1) & 0x1f;
                sec[5] = (sec[5] & 0xc1) | (version << 1);
                if ((sec[8] as u16 & 0x1f) << 8) | sec[9] as u16 == from {
                    set(&mut sec[8..10], to);
                }
                let info = (((sec[10] as usize) & 0x0f) << 8) | sec[11] as usize;
                let mut i = 12 + info;
                while i + 5 <= 3 + len - 4 {
                    if ((sec[i + 1] as u16 & 0x1f) << 8) | sec[i + 2] as u16 == from {
                        set(&mut sec[i + 1..i + 3], to);
                    }
                    i += 5 + ((((sec[i + 3] as usize) & 0x0f) << 8) | sec[i + 4] as usize);
                }
                let crc = media::mpegts::psi_crc32(&sec[..3 + len - 4]);
                sec[3 + len - 4..3 + len].copy_from_slice(&crc.to_be_bytes());
            }
        }
    }

    #[test]
    fn video_moving_to_another_pid_in_a_new_pmt_continues_its_track() {
        // The same two seconds twice, the second copy with its video on PID 0x1ff (an
        // encoder reconfigured mid-lecture), timestamps continuing.
        let (first, _) = map(THREE, 1316);
        let video = tracks(&first)
            .into_iter()
            .find(|(_, i)| matches!(i.codec, CodecParams::H264(_)))
            .unwrap()
            .0;
        let per_copy = frames(&first, video).len();
        let mut moved = THREE.to_vec();
        shift_timestamps(&mut moved, 2 * 90_000);
        move_pid(&mut moved, 0x1000, 0x100, 0x1ff);
        let mut both = THREE.to_vec();
        both.extend_from_slice(&moved);
        let (events, notices) = map(&both, 1316);
        assert!(
            !notices.iter().any(|n| n.kind == "unsupported"),
            "{notices:?}"
        );
        let t = tracks(&events);
        let ids: std::collections::BTreeSet<_> = t.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids.len(), 4, "no new track: {t:?}");
        let f = frames(&events, video);
        assert!(
            f.len() >= 2 * per_copy - 1,
            "{} of {}",
            f.len(),
            2 * per_copy
        );
        assert!(f.windows(2).all(|w| w[1].dts > w[0].dts));
        // Both copies, end to end: close to four seconds.
        assert!(f.last().unwrap().dts - f[0].dts > 3 * 90_000);
    }

    fn declare(m: &mut TsToMedia, pid: u16, kind: EsKind) {
        m.on_stream(media::mpegts::TsStream {
            pid,
            kind,
            language: None,
        });
    }

    #[test]
    fn a_track_back_from_a_long_pause_rejoins_the_others() {
        let mut m = TsToMedia::new();
        declare(&mut m, 256, EsKind::H264);
        declare(&mut m, 257, EsKind::Aac);
        let tick = 3600u64;
        for i in 0..50 {
            m.place(256, 90_000 + i * tick, 90_000 + i * tick);
            m.place(257, 90_000 + i * tick, 90_000 + i * tick);
        }
        // The sound stops for 8 s while the picture goes on, then comes back.
        for i in 50..300 {
            m.place(256, 90_000 + i * tick, 90_000 + i * tick);
        }
        let t = 90_000 + 300 * tick;
        let video = m.place(256, t, t).unwrap().0;
        let audio = m.place(257, t, t).unwrap().0;
        assert_eq!(audio, video, "the sound is back in step with the picture");
        let n: Vec<_> = std::iter::from_fn(|| m.poll())
            .filter(|x| matches!(x, TsOutput::Notice(n) if n.kind == "jump"))
            .collect();
        assert!(n.is_empty(), "a pause is not a jump");
    }

    #[test]
    fn a_stray_timestamp_on_one_track_moves_nobody_else() {
        let mut m = TsToMedia::new();
        declare(&mut m, 256, EsKind::H264);
        declare(&mut m, 257, EsKind::Aac);
        let start = 1_000_000u64;
        let raw = |i: u64| start + i * 3600;
        let mut place = |pid, t: u64| m.place(pid, t, t).unwrap().0;
        for i in 0..100 {
            let v = place(256, raw(i));
            // One audio PES 10 s off (a muxer bug), once.
            let a = place(257, if i == 50 { raw(i) + 900_000 } else { raw(i) });
            if i != 50 {
                assert_eq!(a, v, "frame {i}: the audio is back where it was");
            }
        }
        // Then a real restart of the encoder: every track crosses it together.
        let (v, a) = (place(256, 5000), place(257, 5000));
        assert_eq!(v, a, "both tracks take the same offset at the restart");
        let before = raw(99) as i64;
        assert!((v - before - JUMP_FILL).abs() <= 3600, "{v} after {before}");
        let jumps = std::iter::from_fn(|| m.poll())
            .filter(|o| matches!(o, TsOutput::Notice(n) if n.kind == "jump"))
            .count();
        assert_eq!(jumps, 2, "the stray frame and the restart");
    }

    #[test]
    fn a_pid_that_starts_after_a_wrap_unwraps_next_to_the_others() {
        let mut m = TsToMedia::new();
        declare(&mut m, 256, EsKind::H264);
        let wrap = 1u64 << 33;
        let mut last = 0;
        // Video runs from 2 s before the 33-bit wrap to 2 s after it.
        for i in 0..100u64 {
            let t = (wrap - 180_000 + i * 3600) % wrap;
            last = m.place(256, t, t).unwrap().0;
        }
        // A dialect added in a new PMT version after the wrap: its raw times are small.
        declare(&mut m, 257, EsKind::Aac);
        let t = (wrap - 180_000 + 100 * 3600) % wrap;
        let a = m.place(257, t, t).unwrap().0;
        assert_eq!(
            a,
            last + 3600,
            "next to the video, not 26.5 hours behind it"
        );
    }

    #[test]
    fn a_pid_changing_codec_keeps_its_audio_slot() {
        let mut m = TsToMedia::new();
        for pid in 0..MAX_AUDIO as u16 {
            declare(&mut m, 300 + pid, EsKind::Aac);
        }
        let track = m.es[&300].track;
        // The first PID switches between AAC and Opus in successive PMT versions.
        for round in 0..20 {
            let kind = if round % 2 == 0 {
                EsKind::Opus
            } else {
                EsKind::Aac
            };
            declare(&mut m, 300, kind);
            assert_eq!(m.es[&300].kind, kind, "round {round}");
            assert_eq!(m.es[&300].track, track, "the same dialect track");
        }
        assert_eq!(
            m.es.values().filter(|e| is_audio(e.kind)).count(),
            MAX_AUDIO
        );
        declare(&mut m, 400, EsKind::Aac);
        assert!(!m.es.contains_key(&400), "the limit still holds");
    }

    #[test]
    fn unlabelled_and_repeated_languages_still_become_tracks() {
        let mut m = TsToMedia::new();
        assert_eq!(m.language_for(256, Some("yue")).unwrap().as_str(), "yue");
        m.es.insert(256, dummy_audio(Some("yue")));
        assert_eq!(m.language_for(257, None), None, "first unlabelled: default");
        m.es.insert(257, dummy_audio(None));
        assert_eq!(m.language_for(258, None).unwrap().as_str(), "und-x-a2");
        assert_eq!(
            m.language_for(259, Some("yue")).unwrap().as_str(),
            "yue-x-a2"
        );
        let n: Vec<_> = std::iter::from_fn(|| m.poll()).collect();
        assert_eq!(n.len(), 2);
    }

    fn dummy_audio(lang: Option<&str>) -> Es {
        Es {
            kind: EsKind::Aac,
            language: lang.map(|l| Language::parse(l).unwrap()),
            track: TrackId(9),
            announced: None,
            unwrap: Unwrapper::default(),
            offset: 0,
            last: None,
            waiting_keyframe: false,
        }
    }

    /// Adds `by` to every PTS and DTS of every PES header in a TS (and to PCRs).
    fn shift_timestamps(ts: &mut [u8], by: u64) {
        for pkt in ts.chunks_mut(188) {
            if pkt.len() < 188 || pkt[0] != 0x47 {
                continue;
            }
            let pusi = pkt[1] & 0x40 != 0;
            let afc = (pkt[3] >> 4) & 3;
            let mut off = 4;
            if afc & 2 != 0 {
                let len = pkt[4] as usize;
                if len > 0 && pkt[5] & 0x10 != 0 {
                    // PCR base: 33 bits in bytes 6..10.
                    let b = &pkt[6..11];
                    let base = ((b[0] as u64) << 25)
                        | ((b[1] as u64) << 17)
                        | ((b[2] as u64) << 9)
                        | ((b[3] as u64) << 1)
                        | ((b[4] as u64) >> 7);
                    let nb = (base + by) & ((1 << 33) - 1);
                    pkt[6] = (nb >> 25) as u8;
                    pkt[7] = (nb >> 17) as u8;
                    pkt[8] = (nb >> 9) as u8;
                    pkt[9] = (nb >> 1) as u8;
                    pkt[10] = (pkt[10] & 0x7f) | (((nb & 1) as u8) << 7);
                }
                off += 1 + len;
            }
            if !pusi || afc & 1 == 0 || off + 14 > 188 {
                continue;
            }
            let p = &mut pkt[off..];
            if p[0..3] != [0, 0, 1] || p[3] < 0xbc {
                continue;
            }
            let flags = p[7] >> 6;
            let mut at = 9;
            for _ in 0..(if flags == 3 {
                2
            } else if flags == 2 {
                1
            } else {
                0
            }) {
                let b = &p[at..at + 5];
                let v = (((b[0] as u64 >> 1) & 7) << 30)
                    | ((b[1] as u64) << 22)
                    | (((b[2] as u64) >> 1) << 15)
                    | ((b[3] as u64) << 7)
                    | ((b[4] as u64) >> 1);
                let nv = (v + by) & ((1 << 33) - 1);
                p[at] = (p[at] & 0xf1) | ((((nv >> 30) & 7) as u8) << 1);
                p[at + 1] = (nv >> 22) as u8;
                p[at + 2] = ((((nv >> 15) & 0x7f) as u8) << 1) | 1;
                p[at + 3] = (nv >> 7) as u8;
                p[at + 4] = (((nv & 0x7f) as u8) << 1) | 1;
                at += 5;
            }
        }
    }
}
