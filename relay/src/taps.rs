//! Taps: a lecture's frames on its continuous timeline, for outputs other than HLS (WebRTC
//! viewers, later recording). One broadcast channel per track, a cache of the current GOP for
//! instant start, and the mapping of lecture time to wall-clock instants for RTCP.
//!
//! Broadcast channels are bounded: a consumer that falls behind gets `Lagged` and must skip to
//! the next keyframe; the publisher never waits for anyone.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexMap;
use media::{CodecParams, model::rescale};
use tokio::sync::broadcast;

/// Frames buffered per consumer before it lags (about 8 s of 30 fps video).
pub const CHANNEL_FRAMES: usize = 256;
/// Longest GOP kept for instant start.
pub const MAX_GOP: Duration = Duration::from_secs(10);
/// Most bytes kept for instant start.
pub const MAX_GOP_BYTES: usize = 32 * 1024 * 1024;

/// A frame as outputs see it.
#[derive(Debug)]
pub struct TapFrame {
    /// Decode time on the lecture timeline, in `timescale` units.
    pub dts: i64,
    /// Presentation time on the lecture timeline.
    pub pts: i64,
    /// Units per second.
    pub timescale: u32,
    /// Sync sample.
    pub keyframe: bool,
    /// Payload (length-prefixed NAL units for H.264, raw AAC).
    pub data: Bytes,
    /// The track's codec configuration when this frame was sent.
    pub codec: Arc<CodecParams>,
    /// Wall-clock instant of `pts`, for sender reports.
    pub wallclock: Instant,
    /// Publishing session it came from.
    pub session: u64,
    /// When the relay received it.
    pub arrived: Instant,
}

/// One Opus packet of a dialect as WebRTC viewers get it: transcoded from the dialect's AAC
/// once ([`crate::whep::opus_feed`]), or a WebRTC source's own, placed on the lecture timeline.
#[derive(Debug)]
pub struct OpusPacket {
    /// Presentation time on the lecture timeline at 48 kHz.
    pub pts: i64,
    /// When the sound was heard at the source, on this machine's clock.
    pub wallclock: Instant,
    /// The packet.
    pub data: Arc<[u8]>,
}

/// A track of a lecture, as taps name them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TapTrack {
    /// The video.
    Video,
    /// One dialect's audio, by language tag.
    Audio(String),
}

/// A dialect's own Opus: its subscribers and when a packet last came.
#[derive(Debug)]
struct OwnOpus {
    tx: broadcast::Sender<Arc<OpusPacket>>,
    last: Option<Instant>,
}

impl Default for OwnOpus {
    fn default() -> Self {
        OwnOpus {
            tx: broadcast::channel(CHANNEL_FRAMES * 4).0,
            last: None,
        }
    }
}

#[derive(Debug, Default)]
struct Gop {
    frames: Vec<Arc<TapFrame>>,
    bytes: usize,
}

/// The taps of one lecture.
#[derive(Debug)]
pub struct Taps {
    video: broadcast::Sender<Arc<TapFrame>>,
    /// The smallest picture of the lecture's ladder, for WebRTC viewers on a poor link.
    small: broadcast::Sender<Arc<TapFrame>>,
    audio: Mutex<IndexMap<String, broadcast::Sender<Arc<TapFrame>>>>,
    /// Per dialect, the Opus its source sent (WebRTC publishers and interpreters), beside
    /// the AAC transcoded from it.
    opus: Mutex<IndexMap<String, OwnOpus>>,
    gop: Mutex<Gop>,
    /// Whether [`Taps::gop`] is kept: only WebRTC viewers start from it.
    keep_gop: bool,
    /// `(lecture time in 90 kHz ticks, instant)` of the current session's first frame.
    clock: Mutex<Option<(i64, Instant)>>,
}

impl Default for Taps {
    fn default() -> Self {
        Taps::new(true)
    }
}

fn offset_instant(base: Instant, ticks90: i64) -> Instant {
    let d = Duration::from_nanos(ticks90.unsigned_abs().saturating_mul(100_000) / 9);
    if ticks90 >= 0 {
        base + d
    } else {
        base.checked_sub(d).unwrap_or(base)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Taps {
    /// Taps that keep the current GOP for joining WebRTC viewers, or (a relay without
    /// WebRTC) not: up to 2 s of video per lecture that nobody could ask for.
    pub fn new(keep_gop: bool) -> Taps {
        Taps {
            video: broadcast::channel(CHANNEL_FRAMES).0,
            small: broadcast::channel(CHANNEL_FRAMES).0,
            audio: Mutex::default(),
            opus: Mutex::default(),
            gop: Mutex::default(),
            keep_gop,
            clock: Mutex::default(),
        }
    }

    /// Forgets the wall-clock anchor: the next frame (a new publishing session) sets it.
    pub fn new_session(&self) {
        *lock(&self.clock) = None;
    }

    /// The wall-clock instant of lecture time `t` (`timescale` units) for a frame that
    /// arrived at `arrived`. The mapping is the earliest any frame arrived relative to its
    /// media time, so no frame's wall clock is ever after its arrival: sender reports
    /// extrapolate from it and must not be built on a time in the future.
    pub fn wallclock(&self, t: i64, timescale: u32, arrived: Instant) -> Instant {
        let t90 = rescale(t, timescale, 90_000);
        let mut clock = lock(&self.clock);
        let (t0, i0) = *clock.get_or_insert((t90, arrived));
        let w = offset_instant(i0, t90 - t0);
        if w > arrived {
            *clock = Some((t90, arrived));
            return arrived;
        }
        w
    }

    /// The wall-clock instant of lecture time `t` with the current mapping (for media derived
    /// from frames already mapped, such as transcoded audio).
    pub fn wallclock_of(&self, t: i64, timescale: u32) -> Option<Instant> {
        let t90 = rescale(t, timescale, 90_000);
        let (t0, i0) = (*lock(&self.clock))?;
        Some(offset_instant(i0, t90 - t0))
    }

    /// The lecture time (90 kHz ticks) of media arriving at `at`, by the current session's
    /// mapping: where something received at that instant belongs on the timeline (an
    /// interpreter's voice goes with the picture that arrived with it). `None` before the
    /// session's first frame.
    pub fn lecture_time_at(&self, at: Instant) -> Option<i64> {
        let (t0, i0) = (*lock(&self.clock))?;
        let d = if at >= i0 {
            at.duration_since(i0).as_nanos() as i64
        } else {
            -(i0.duration_since(at).as_nanos() as i64)
        };
        Some(t0 + d * 9 / 100_000)
    }

    /// Sends a frame of `track` to its subscribers (and keeps video GOPs for new viewers).
    pub fn send(&self, track: &TapTrack, frame: TapFrame) {
        let frame = Arc::new(frame);
        match track {
            TapTrack::Video if !self.keep_gop => {
                let _ = self.video.send(frame);
            }
            TapTrack::Video => {
                let mut gop = lock(&self.gop);
                if frame.keyframe {
                    gop.frames.clear();
                    gop.bytes = 0;
                }
                let too_long = gop.frames.first().is_some_and(|first| {
                    let span = rescale(frame.dts - first.dts, frame.timescale, 1000);
                    span > MAX_GOP.as_millis() as i64
                });
                if too_long || gop.bytes + frame.data.len() > MAX_GOP_BYTES {
                    // An endless GOP cannot start a viewer anyway: stop caching until the
                    // next keyframe.
                    gop.frames.clear();
                    gop.bytes = 0;
                } else if frame.keyframe || !gop.frames.is_empty() {
                    gop.bytes += frame.data.len();
                    gop.frames.push(frame.clone());
                }
                drop(gop);
                let _ = self.video.send(frame);
            }
            TapTrack::Audio(lang) => {
                let tx = lock(&self.audio)
                    .entry(lang.clone())
                    .or_insert_with(|| broadcast::channel(CHANNEL_FRAMES * 4).0)
                    .clone();
                let _ = tx.send(frame);
            }
        }
    }

    /// Sends a frame of the smallest picture ([`crate::ladder`]).
    pub fn send_small(&self, frame: TapFrame) {
        let _ = self.small.send(Arc::new(frame));
    }

    /// Subscribes to the smallest picture.
    pub fn subscribe_small(&self) -> broadcast::Receiver<Arc<TapFrame>> {
        self.small.subscribe()
    }

    /// Subscribes to a track. Audio tracks not seen yet are created empty.
    pub fn subscribe(&self, track: &TapTrack) -> broadcast::Receiver<Arc<TapFrame>> {
        match track {
            TapTrack::Video => self.video.subscribe(),
            TapTrack::Audio(lang) => lock(&self.audio)
                .entry(lang.clone())
                .or_insert_with(|| broadcast::channel(CHANNEL_FRAMES * 4).0)
                .subscribe(),
        }
    }

    /// Subscribes to the video and returns the current GOP (from its keyframe) atomically:
    /// every frame is in exactly one of the two.
    pub fn subscribe_video_with_gop(
        &self,
    ) -> (Vec<Arc<TapFrame>>, broadcast::Receiver<Arc<TapFrame>>) {
        let gop = lock(&self.gop);
        let rx = self.video.subscribe();
        (gop.frames.clone(), rx)
    }

    /// Sends a source's own Opus packet of dialect `lang` (see [`Taps::subscribe_opus`]).
    pub fn send_opus(&self, lang: &str, packet: OpusPacket) {
        let mut opus = lock(&self.opus);
        let own = match opus.get_mut(lang) {
            Some(o) => o,
            None => opus.entry(lang.to_string()).or_default(),
        };
        own.last = Some(Instant::now());
        let _ = own.tx.send(Arc::new(packet));
    }

    /// Subscribes to the Opus a WebRTC source sends for dialect `lang` (nothing comes while
    /// its source sends something else).
    pub fn subscribe_opus(&self, lang: &str) -> broadcast::Receiver<Arc<OpusPacket>> {
        lock(&self.opus)
            .entry(lang.to_string())
            .or_default()
            .tx
            .subscribe()
    }

    /// Whether dialect `lang`'s source sent its own Opus within `within`: its AAC need not
    /// be transcoded for WebRTC.
    pub fn sends_opus(&self, lang: &str, within: Duration) -> bool {
        lock(&self.opus)
            .get(lang)
            .and_then(|o| o.last)
            .is_some_and(|at| at.elapsed() < within)
    }

    /// Dialects that have sent audio, in arrival order.
    pub fn dialects(&self) -> Vec<String> {
        lock(&self.audio).keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use media::aac::AacParams;

    fn frame(dts: i64, key: bool, size: usize) -> TapFrame {
        TapFrame {
            dts,
            pts: dts,
            timescale: 90_000,
            keyframe: key,
            data: Bytes::from(vec![0u8; size]),
            codec: Arc::new(CodecParams::Aac(AacParams::lc(48_000, 2).unwrap())),
            wallclock: Instant::now(),
            session: 1,
            arrived: Instant::now(),
        }
    }

    #[test]
    fn gop_cache_starts_at_the_last_keyframe() {
        let taps = Taps::default();
        for i in 0..3 {
            taps.send(&TapTrack::Video, frame(i * 3600, false, 10));
        }
        assert!(
            taps.subscribe_video_with_gop().0.is_empty(),
            "no keyframe yet"
        );
        for i in 3..60 {
            taps.send(&TapTrack::Video, frame(i * 3600, i % 25 == 0, 10));
        }
        let (gop, _rx) = taps.subscribe_video_with_gop();
        assert_eq!(gop.len(), 10);
        assert!(gop[0].keyframe);
        assert_eq!(gop[0].dts, 50 * 3600);
    }

    #[test]
    fn without_webrtc_no_gop_is_kept_but_frames_still_go_out() {
        let taps = Taps::new(false);
        let mut rx = taps.subscribe(&TapTrack::Video);
        for i in 0..30 {
            taps.send(&TapTrack::Video, frame(i * 3600, i % 25 == 0, 10));
        }
        assert!(taps.subscribe_video_with_gop().0.is_empty());
        assert!(rx.try_recv().is_ok_and(|f| f.keyframe));
    }

    #[test]
    fn endless_gop_is_not_cached() {
        let taps = Taps::default();
        taps.send(&TapTrack::Video, frame(0, true, 10));
        for i in 1..400 {
            taps.send(&TapTrack::Video, frame(i * 3600, false, 10));
        }
        assert!(taps.subscribe_video_with_gop().0.is_empty());
    }

    #[test]
    fn wallclock_follows_media_time() {
        let taps = Taps::default();
        let now = Instant::now();
        assert_eq!(taps.wallclock(900_000, 90_000, now), now);
        assert_eq!(
            taps.wallclock(480_000 + 48_000, 48_000, now + Duration::from_secs(5)),
            now + Duration::from_secs(1)
        );
        taps.new_session();
        let later = now + Duration::from_secs(60);
        assert_eq!(taps.wallclock(90_000 * 20, 90_000, later), later);
    }

    #[test]
    fn slow_subscriber_lags_instead_of_blocking() {
        let taps = Taps::default();
        let mut rx = taps.subscribe(&TapTrack::Audio("yue".into()));
        for i in 0..(CHANNEL_FRAMES * 4 + 10) as i64 {
            taps.send(&TapTrack::Audio("yue".into()), frame(i, true, 1));
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
        assert_eq!(taps.dialects(), ["yue"]);
    }
}
