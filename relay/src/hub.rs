//! The hub: live lectures by name, who publishes them, and what happens when they stop.
//!
//! A lecture is created by its first publisher and lives on after the publisher leaves: for
//! the grace period it is *reconnecting* (playlists stay, players wait); a publisher coming
//! back in time continues it with a discontinuity. After the grace period it *ends*
//! (`EXT-X-ENDLIST`) and is removed once the retention time has passed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};

use config::Config;
use media::sink::{MediaSink, Publish, PublishError, PublishRequest, SinkError};
use media::{Language, MediaEvent, TrackId, TrackInfo, TrackKind};
use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

use crate::hls::packager::{Packager, RenditionIdx, Settings};
use crate::taps::{TapFrame, TapTrack, Taps};

/// Most renditions (video + dialects) one lecture may have.
pub const MAX_RENDITIONS: usize = 17;

/// Where a lecture is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// A publisher is sending.
    Live,
    /// The publisher left; waiting for it to come back.
    Reconnecting {
        /// When it left.
        since: Instant,
    },
    /// Over; playlists carry `EXT-X-ENDLIST`.
    Ended {
        /// When it ended.
        since: Instant,
    },
}

/// The current publisher of a lecture.
#[derive(Debug, Clone)]
pub struct PublisherInfo {
    /// Input protocol.
    pub protocol: &'static str,
    /// Remote address.
    pub remote: Option<SocketAddr>,
    /// When this session started.
    pub since: SystemTime,
}

/// How the lecture's input is doing, for the API.
#[derive(Debug, Clone, Default)]
pub struct InputHealth {
    /// The transport's own figures (SRT, WebRTC), latest.
    pub transport: Option<media::sink::TransportStats>,
    /// The last problem with the input that did not end it, and when.
    pub last_error: Option<(SystemTime, String)>,
    /// How many such problems this lecture has had.
    pub errors: u64,
    /// Seconds between the last two keyframes of the video.
    pub keyframe_interval_s: Option<f64>,
    /// Latest sound level of each dialect, and when it was read.
    pub levels: indexmap::IndexMap<String, (media::encode::Level, Instant)>,
}

#[derive(Debug)]
struct LectureState {
    status: Status,
    publisher: Option<PublisherInfo>,
    session: u64,
    sessions: u64,
}

/// One lecture.
#[derive(Debug)]
pub struct Lecture {
    /// Stream name.
    pub name: String,
    /// This instance of the lecture, unique in the process: a lecture that ends and is
    /// published again under its name is another instance.
    pub id: u64,
    /// Title from configuration.
    pub title: Option<String>,
    /// Dialect of audio that does not say its own.
    pub default_language: Language,
    /// When the lecture began.
    pub started: SystemTime,
    state: Mutex<LectureState>,
    hls: Mutex<Packager>,
    changed: watch::Sender<u64>,
    /// Frames for outputs other than HLS.
    pub taps: Taps,
    /// WebRTC viewers by dialect.
    webrtc: Mutex<indexmap::IndexMap<String, usize>>,
    events: broadcast::Sender<HubEvent>,
    health: Mutex<InputHealth>,
    /// Dialects an interpreter is contributing right now.
    contributors: Mutex<std::collections::BTreeSet<String>>,
    admission: Arc<AdmissionSnapshot>,
    recording: Mutex<RecordingSlot>,
    /// Pulled from an origin by this edge: it waits `edge.hold_s` for its source, not the
    /// grace period (an origin link that drops is restored by the edge itself).
    pulled: std::sync::atomic::AtomicBool,
    /// Classes the operator invited to speak (ask back), and the one on air.
    pub(crate) asks: Mutex<crate::ask::Asks>,
    /// What a site on air replaces ([`crate::ask::REPLACES_VIDEO`],
    /// [`crate::ask::REPLACES_AUDIO`]) in the low bits, a generation above them that changes
    /// with every switch. Changed and read under the packager's lock.
    pub(crate) on_air: AtomicU64,
    /// The [`Lecture::on_air`] value the operator took off air: the publisher takes its
    /// tracks back at its next keyframe (0: none asked).
    pub(crate) air_leave: AtomicU64,
    /// A class speaking back ([`Hub::new_feed`]): nobody but the operator hears of it.
    feed: std::sync::atomic::AtomicBool,
    /// The smaller pictures of the current publishing session (`[ladder]`).
    ladder: Mutex<Option<crate::ladder::Ladder>>,
    /// When the current publishing session began or last delivered a frame ([`clock_ms`]):
    /// a stalled publisher yields to a new one (`lectures.stalled_publisher_ms`). Shared with
    /// the admission snapshot, which answers SRT before the hub's locks could.
    last_frame: Arc<AtomicU64>,
    /// The session whose frames the packager takes (0: none), written with the packager
    /// held, so a sink checks it under that lock: a session another publisher has just
    /// taken over from places nothing, whatever it saw a moment before.
    live_session: AtomicU64,
}

/// A new session's first frame may take this long (an SRT or WHIP handshake, the first
/// sender report) before the session counts as stalled ([`Lecture::last_frame`]).
const FIRST_FRAME_GRACE_MS: u64 = 10_000;

/// Milliseconds on a monotonic clock shared by the process (for [`Lecture::last_frame`]).
fn clock_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Whether a live session whose last frame came at `last_frame` ([`clock_ms`]) has stalled
/// for `after_ms` (0: never counts as stalled).
fn stalled(last_frame: &AtomicU64, after_ms: u64) -> bool {
    after_ms != 0 && clock_ms().saturating_sub(last_frame.load(Ordering::Relaxed)) >= after_ms
}

/// Where a lecture's recording is.
enum RecordingSlot {
    /// Not recorded.
    Off,
    /// To be started with the lecture's first media, in this library, kept this many days.
    Waiting(Arc<recorder::Library>, Option<u32>),
    /// Being written.
    On(recorder::Recorder),
}

impl std::fmt::Debug for RecordingSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecordingSlot::Off => "off",
            RecordingSlot::Waiting(..) => "waiting",
            RecordingSlot::On(_) => "on",
        })
    }
}

impl Lecture {
    /// Hands what the packager made since the last call to the lecture's recording,
    /// starting it with the first media. Called with the packager locked after every change;
    /// never waits on the disk.
    pub(crate) fn record(&self, hls: &mut Packager) {
        let events = hls.take_recorded();
        if events.is_empty() {
            return;
        }
        let mut slot = self.recording.lock().unwrap_or_else(|e| e.into_inner());
        if let RecordingSlot::Waiting(library, days) = &*slot {
            match library.start(
                &self.name,
                self.title.clone(),
                self.default_language.as_str(),
                *days,
            ) {
                Ok(r) => *slot = RecordingSlot::On(r),
                Err(e) => {
                    warn!(lecture = %self.name, "recording not started: {e}");
                    let mut h = self.health_lock();
                    h.errors += 1;
                    h.last_error = Some((SystemTime::now(), format!("recording not started: {e}")));
                    *slot = RecordingSlot::Off;
                }
            }
        }
        if let RecordingSlot::On(r) = &*slot {
            for e in events {
                r.send(e);
            }
        }
    }

    /// This lecture's recording, once it has started.
    pub fn recording(&self) -> Option<Arc<recorder::Recording>> {
        match &*self.recording.lock().unwrap_or_else(|e| e.into_inner()) {
            RecordingSlot::On(r) => Some(r.recording().clone()),
            _ => None,
        }
    }

    /// Locks the packager. Held briefly: readers clone `Bytes` out.
    pub fn hls(&self) -> MutexGuard<'_, Packager> {
        self.hls.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn state(&self) -> MutexGuard<'_, LectureState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver that wakes on every packager change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub(crate) fn notify(&self, version: u64) {
        self.changed.send_if_modified(|v| {
            let changed = *v != version;
            *v = version;
            changed
        });
    }

    /// Dialects interpreters are contributing now.
    pub fn contributors(&self) -> Vec<String> {
        self.contributors_lock().iter().cloned().collect()
    }

    fn contributors_lock(&self) -> MutexGuard<'_, std::collections::BTreeSet<String>> {
        self.contributors.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How the input is doing.
    pub fn health(&self) -> InputHealth {
        self.health_lock().clone()
    }

    /// How long the live publishing session has sent nothing (0 while it has yet to send
    /// its first frame within the time it is given); `None` when no publisher has it.
    pub fn silent_for(&self) -> Option<Duration> {
        (self.status() == Status::Live && self.live_session.load(Ordering::Relaxed) != 0).then(
            || {
                Duration::from_millis(
                    clock_ms().saturating_sub(self.last_frame.load(Ordering::Relaxed)),
                )
            },
        )
    }

    fn health_lock(&self) -> MutexGuard<'_, InputHealth> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Current status.
    pub fn status(&self) -> Status {
        self.state().status
    }

    /// Current publisher, if live.
    pub fn publisher(&self) -> Option<PublisherInfo> {
        self.state().publisher.clone()
    }

    pub(crate) fn ladder_lock(&self) -> MutexGuard<'_, Option<crate::ladder::Ladder>> {
        self.ladder.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Feeds the lecture's smaller pictures (if it has them) one frame of its picture as
    /// placed: the publisher's or, on air, a class's.
    pub(crate) fn ladder_push(
        &self,
        frame: &media::Frame,
        timescale: u32,
        codec: &media::CodecParams,
    ) {
        if let Some(l) = self.ladder_lock().as_mut() {
            l.push(frame, timescale, codec);
        }
    }

    /// Whether this is a class speaking back ([`Hub::new_feed`]), in no map of the hub.
    pub fn is_feed(&self) -> bool {
        self.feed.load(Ordering::Relaxed)
    }

    /// The current publishing session (0 when none).
    pub(crate) fn session(&self) -> u64 {
        self.state().session
    }

    /// How many publishing sessions this lecture has had.
    pub fn sessions(&self) -> u64 {
        self.state().sessions
    }

    /// A WebRTC viewer started watching in dialect `lang`.
    pub fn webrtc_join(&self, lang: &str) {
        *self.webrtc_lock().entry(lang.to_string()).or_default() += 1;
    }

    /// A WebRTC viewer starts watching in dialect `lang` if the lecture has fewer than `max`
    /// WebRTC viewers in all; false (and nothing counted) otherwise.
    pub fn webrtc_join_within(&self, lang: &str, max: usize) -> bool {
        let mut m = self.webrtc_lock();
        if m.values().sum::<usize>() >= max {
            return false;
        }
        *m.entry(lang.to_string()).or_default() += 1;
        true
    }

    /// A WebRTC viewer left.
    pub fn webrtc_leave(&self, lang: &str) {
        let mut m = self.webrtc_lock();
        if let Some(n) = m.get_mut(lang) {
            *n = n.saturating_sub(1);
        }
    }

    /// A WebRTC viewer switched dialect.
    pub fn webrtc_switch(&self, from: &str, to: &str) {
        self.webrtc_leave(from);
        self.webrtc_join(to);
    }

    /// WebRTC viewers by dialect.
    pub fn webrtc_viewers(&self) -> indexmap::IndexMap<String, usize> {
        self.webrtc_lock().clone()
    }

    fn webrtc_lock(&self) -> MutexGuard<'_, indexmap::IndexMap<String, usize>> {
        self.webrtc.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends publishing session `session` if it is still the lecture's.
    ///
    /// Every transition of a lecture changes its state and its packager under the state
    /// lock (lock order: hub map, then state, then packager), so a publisher coming back
    /// at the same moment finds the old session either still live or wholly closed.
    /// Ends publishing session `session` (the lecture waits for its publisher); false when
    /// that session was no longer the lecture's.
    fn end_session(&self, session: u64) -> bool {
        let v = {
            let mut st = self.state();
            if st.session != session || st.status != Status::Live {
                return false;
            }
            st.status = Status::Reconnecting {
                since: Instant::now(),
            };
            st.publisher = None;
            let mut hls = self.hls();
            hls.end_session();
            self.live_session.store(0, Ordering::Relaxed);
            self.record(&mut hls);
            hls.version()
        };
        self.notify(v);
        self.announce();
        true
    }

    /// Tells live-channel listeners that this lecture's state changed, and brings the
    /// admission snapshot up to date (every status change is followed by this).
    pub fn announce(&self) {
        if self.feed.load(Ordering::Relaxed) {
            return;
        }
        self.admission.update(self);
        let _ = self.events.send(HubEvent {
            lecture: self.name.as_str().into(),
        });
    }

    /// Whether any rendition has something playable (a part) yet.
    pub fn has_media(&self) -> bool {
        let hls = self.hls();
        (0..hls.renditions().len()).any(|r| hls.has_media(r))
    }

    /// Whether the lecture carries video.
    pub fn has_video(&self) -> bool {
        self.hls()
            .renditions()
            .iter()
            .any(|r| r.kind() == TrackKind::Video)
    }

    /// Whether the lecture offers a smaller picture (`[ladder]`) with something to play.
    pub fn has_small_picture(&self) -> bool {
        let hls = self.hls();
        (0..hls.renditions().len()).any(|r| {
            let rend = &hls.renditions()[r];
            rend.derived && rend.in_session && hls.has_media(r)
        })
    }

    /// The lecture's dialects in rendition order: `(tag, display name)`.
    pub fn dialects(&self) -> Vec<(String, String)> {
        self.hls()
            .renditions()
            .iter()
            .filter(|r| r.kind() == TrackKind::Audio)
            .filter_map(|r| r.language.as_ref().map(|l| (l.to_string(), r.name.clone())))
            .collect()
    }

    /// Starts publishing session `session`: the lecture's first, or a publisher coming back
    /// within the grace period. Refused with the lecture's status if it is live (another
    /// publisher has it) or ended.
    pub(crate) fn begin_session(
        &self,
        session: u64,
        publisher: PublisherInfo,
    ) -> Result<(), Status> {
        let mut st = self.state();
        match st.status {
            // A lecture just created is live with no session yet.
            Status::Live if st.session != 0 || st.sessions != 0 => return Err(st.status),
            Status::Ended { .. } => return Err(st.status),
            _ => {}
        }
        st.status = Status::Live;
        st.session = session;
        st.sessions += 1;
        st.publisher = Some(publisher);
        self.last_frame
            .store(clock_ms() + FIRST_FRAME_GRACE_MS, Ordering::Relaxed);
        {
            let mut hls = self.hls();
            hls.begin_session();
            self.live_session.store(session, Ordering::Relaxed);
            // A publisher coming back takes its tracks back from a class on air: the new
            // session's timeline starts with its own frames.
            let air = self.on_air.load(Ordering::Acquire);
            crate::ask::take_back_locked(self, air);
        }
        self.taps.new_session();
        Ok(())
    }

    /// Ends the lecture if its status is still `seen` (what the caller decided on): a
    /// publisher that came back meanwhile keeps it. Whether it ended.
    /// How long this lecture waits for its publisher: `hold` for one pulled from an origin.
    fn grace(&self, grace: Duration, hold: Duration) -> Duration {
        if self.pulled.load(Ordering::Relaxed) {
            hold
        } else {
            grace
        }
    }

    pub(crate) fn finish_if(&self, seen: Status) -> bool {
        let v = {
            let mut st = self.state();
            if st.status != seen {
                return false;
            }
            st.status = Status::Ended {
                since: Instant::now(),
            };
            st.publisher = None;
            st.session = 0;
            let mut hls = self.hls();
            hls.finish();
            self.live_session.store(0, Ordering::Relaxed);
            self.record(&mut hls);
            hls.version()
        };
        self.notify(v);
        self.announce();
        true
    }
}

/// Which lectures are live or waiting for their publisher, for [`Publish::check`], which
/// runs on libsrt's receive thread (one per SRT port) and so must never wait on the hub's
/// locks. Copy on write: a reader clones the `Arc` (the lock is held for that alone) and
/// reads the map unlocked; [`Lecture::announce`] writes.
#[derive(Debug, Default)]
struct AdmissionSnapshot {
    /// Lecture name → its entry. Ended lectures are not in it.
    current: RwLock<Arc<HashMap<String, Admitted>>>,
    /// Serialises writers, so each writes the status it read last.
    writer: Mutex<()>,
}

/// A lecture in the [`AdmissionSnapshot`].
#[derive(Debug, Clone)]
struct Admitted {
    /// Which `Lecture`, by address.
    id: usize,
    /// Whether a publisher has it.
    live: bool,
    /// Its [`Lecture::last_frame`].
    last_frame: Arc<AtomicU64>,
    /// Whether it is pulled from an origin.
    pulled: bool,
    /// The host its live publisher connected from.
    host: Option<IpAddr>,
}

impl PartialEq for Admitted {
    fn eq(&self, other: &Admitted) -> bool {
        (self.id, self.live, self.pulled, self.host)
            == (other.id, other.live, other.pulled, other.host)
    }
}

impl AdmissionSnapshot {
    fn get(&self) -> Arc<HashMap<String, Admitted>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn update(&self, lecture: &Lecture) {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let id = lecture as *const Lecture as usize;
        let (status, host) = {
            let st = lecture.state();
            (st.status, publisher_host(st.publisher.as_ref()))
        };
        let admitted = |live| Admitted {
            id,
            live,
            last_frame: lecture.last_frame.clone(),
            pulled: lecture.pulled.load(Ordering::Relaxed),
            host,
        };
        let entry = match status {
            Status::Live => Some(admitted(true)),
            Status::Reconnecting { .. } => Some(admitted(false)),
            Status::Ended { .. } => None,
        };
        let current = self.get();
        let old = current.get(&lecture.name);
        let next = match entry {
            _ if old == entry.as_ref() => return,
            // A lecture of that name that replaced this one is not ended.
            None if old.is_none_or(|o| o.id != id) => return,
            None => {
                let mut next = (*current).clone();
                next.remove(&lecture.name);
                next
            }
            Some(e) => {
                let mut next = (*current).clone();
                next.insert(lecture.name.clone(), e);
                next
            }
        };
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
    }
}

/// The host a publisher connected from, if it came over the network (an IPv4 client of a
/// dual-stack listener as its IPv4 address).
fn publisher_host(p: Option<&PublisherInfo>) -> Option<IpAddr> {
    p.and_then(|p| p.remote).map(|a| a.ip().to_canonical())
}

/// Whether `request` comes from `host`.
fn same_host(host: Option<IpAddr>, request: &PublishRequest) -> bool {
    host.is_some() && host == request.remote.map(|r| r.ip().to_canonical())
}

/// The registry of lectures.
pub struct Hub {
    config: Arc<Config>,
    lectures: Mutex<HashMap<String, Arc<Lecture>>>,
    pub(crate) sessions: AtomicU64,
    events: broadcast::Sender<HubEvent>,
    /// Questions and raised hands from live channels, by lecture name.
    pub questions: crate::channel::Questions,
    /// The sub-venues connected to each lecture (1 + X).
    pub roster: crate::roster::Roster,
    /// Lectures fed by an on-demand camera, and when a player last asked for each.
    demand: Mutex<HashMap<String, Option<Instant>>>,
    /// Where level meters come from, when the relay measures sound levels.
    meters: std::sync::OnceLock<Arc<dyn media::encode::Transcoders>>,
    /// Where lectures are recorded.
    recordings: std::sync::OnceLock<Arc<recorder::Library>>,
    /// The programme's upcoming lectures, when the binary has a programme.
    schedule: std::sync::OnceLock<Arc<dyn Schedule>>,
    /// What an edge learned from its origin, by lecture name.
    learned: Mutex<HashMap<String, Learned>>,
    admission: Arc<AdmissionSnapshot>,
    /// Who may publish and watch, as the binary chained it (else `default_chain`).
    chain: std::sync::OnceLock<crate::admission::Chain>,
    default_chain: crate::admission::Chain,
    /// Where lectures' older HLS segments go (`hls.spool`); `None` keeps them in memory.
    spooler: Option<crate::hls::spool::Spooler>,
}

/// The HLS spool `hls` asks for, or `None` (segments in memory) when it is off or its
/// folder cannot hold files (said once, at start).
fn spooler(hls: &config::HlsConfig) -> Option<crate::hls::spool::Spooler> {
    if !hls.spool {
        return None;
    }
    // The files have no name, so a shared folder is safe (nothing to squat or collide
    // with); /var/tmp is on a disk where /tmp may be memory (tmpfs).
    let dir = if !hls.spool_dir.as_os_str().is_empty() {
        hls.spool_dir.clone()
    } else if std::path::Path::new("/var/tmp").is_dir() {
        "/var/tmp".into()
    } else {
        std::env::temp_dir()
    };
    match crate::hls::spool::Spooler::start(dir.clone()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(
                dir = %dir.display(),
                "hls.spool_dir cannot hold files ({e}): every lecture's HLS window stays in memory"
            );
            None
        }
    }
}

/// What an edge learned from its origin about a lecture.
#[derive(Debug, Clone, Default)]
struct Learned {
    title: Option<String>,
    next: Option<(String, i64)>,
    dialects: Vec<(String, String)>,
}

/// Most lectures an edge keeps what it learned of.
const MAX_LEARNED: usize = 4096;

/// The programme's upcoming lectures (the catalogue's), answered from memory.
pub trait Schedule: Send + Sync {
    /// Occurrences of `stream` starting after `after` (Unix seconds): title and start,
    /// soonest first, a few.
    fn upcoming(&self, stream: &str, after: i64) -> Vec<(String, i64)>;
}

/// Something about a lecture changed (status, dialects): live channels re-send its state.
#[derive(Debug, Clone)]
pub struct HubEvent {
    /// Lecture name.
    pub lecture: Arc<str>,
}

impl Hub {
    /// A hub for `config`.
    pub fn new(config: Arc<Config>) -> Arc<Self> {
        Arc::new(Hub {
            lectures: Mutex::new(HashMap::new()),
            sessions: AtomicU64::new(1),
            events: broadcast::channel(1024).0,
            questions: Default::default(),
            roster: Default::default(),
            demand: Mutex::new(
                config
                    .camera
                    .iter()
                    .filter(|c| c.pull == config::PullMode::OnDemand)
                    .map(|c| (c.lecture.clone(), None))
                    .collect(),
            ),
            meters: std::sync::OnceLock::new(),
            recordings: std::sync::OnceLock::new(),
            schedule: std::sync::OnceLock::new(),
            learned: Mutex::default(),
            admission: Arc::default(),
            chain: std::sync::OnceLock::new(),
            default_chain: crate::admission::from_config(&config),
            spooler: spooler(&config.hls),
            config,
        })
    }

    /// What the HLS spool has written and kept in memory, when there is one.
    pub fn spool_stats(&self) -> Option<&crate::hls::spool::Stats> {
        self.spooler.as_ref().map(|s| s.stats())
    }

    /// Decides who may publish and watch with `chain` (asked in order, see
    /// [`crate::admission`]) instead of the configuration's lectures and
    /// `allow_unconfigured` alone. Set once, before anything is published.
    pub fn set_admission(&self, chain: crate::admission::Chain) {
        let _ = self.chain.set(chain);
    }

    fn chain(&self) -> &[Arc<dyn media::admission::Admission>] {
        self.chain.get().unwrap_or(&self.default_chain)
    }

    /// Whether `stream` may be published with `key`. Answered from memory, never waiting
    /// on a lock held across IO (SRT asks on libsrt's receive thread).
    pub fn may_publish(&self, stream: &str, key: Option<&str>) -> media::admission::Verdict {
        crate::admission::may_publish(self.chain(), stream, key)
    }

    /// Whether `stream` (live, or its replays) may be watched with playback `token`.
    pub fn may_watch(&self, stream: &str, token: Option<&str>) -> media::admission::Verdict {
        crate::admission::may_watch(self.chain(), stream, token)
    }

    /// Whether `stream` names a lecture that may exist here: one that someone knows (an
    /// edge: one its origin told it of), or any name when unconfigured names may be
    /// published.
    pub fn known(&self, stream: &str) -> bool {
        !matches!(
            self.may_publish(stream, None),
            media::admission::Verdict::Deny(media::admission::Refusal::UnknownStream)
        ) || self
            .learned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(stream)
    }

    /// Records lectures into `library` (those `recording.enabled` and their `record` say).
    pub fn set_recordings(&self, library: Arc<recorder::Library>) {
        let _ = self.recordings.set(library);
    }

    /// Tells players the programme's next lectures from `schedule` (set once).
    pub fn set_schedule(&self, schedule: Arc<dyn Schedule>) {
        let _ = self.schedule.set(schedule);
    }

    /// The programme's occurrences of `stream` starting after `after` (Unix seconds), title
    /// and start, soonest first: the programme's, else the configuration's `starts_at`.
    pub fn upcoming(&self, stream: &str, after: i64) -> Vec<(String, i64)> {
        let from_programme = self
            .schedule
            .get()
            .map(|s| s.upcoming(stream, after))
            .unwrap_or_default();
        if !from_programme.is_empty() {
            return from_programme;
        }
        let configured: Vec<(String, i64)> = self
            .config
            .lecture(stream)
            .and_then(|l| {
                Some((
                    l.title.clone().unwrap_or_default(),
                    l.starts_at?.as_second(),
                ))
            })
            .filter(|(_, start)| *start > after)
            .into_iter()
            .collect();
        if !configured.is_empty() {
            return configured;
        }
        // An edge: the origin's programme, as its state said.
        self.learned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(stream)
            .and_then(|l| l.next.clone())
            .filter(|(_, start)| *start > after)
            .into_iter()
            .collect()
    }

    /// A lecture's title as an edge's origin gave it.
    pub fn learned_title(&self, stream: &str) -> Option<String> {
        self.learned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(stream)
            .and_then(|l| l.title.clone())
    }

    /// Where lectures are recorded, if anywhere.
    pub fn recordings(&self) -> Option<&Arc<recorder::Library>> {
        self.recordings.get()
    }

    /// Ends every lecture now (the relay is stopping): playlists get `EXT-X-ENDLIST` and
    /// recordings are closed.
    pub fn end_all(&self) {
        for lecture in self.list() {
            let status = lecture.status();
            if !matches!(status, Status::Ended { .. }) {
                lecture.finish_if(status);
            }
        }
    }

    /// Measures each dialect's sound level with meters from `t` (when `lectures.audio_levels`).
    pub fn set_level_meters(&self, t: Arc<dyn media::encode::Transcoders>) {
        if self.config.lectures.audio_levels {
            let _ = self.meters.set(t);
        }
    }

    /// A player asked for `name` (a playlist, a WHEP offer, a live channel). Only lectures
    /// fed by an on-demand camera keep the time, so arbitrary names cost nothing.
    pub fn note_demand(&self, name: &str) {
        let mut d = self.demand.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = d.get_mut(name) {
            *at = Some(Instant::now());
        } else if self.config.edge.is_edge() && media::sink::valid_stream_name(name) {
            // An edge pulls any lecture its viewers ask for: names are remembered a while,
            // the one asked for longest ago making room (names anyone can send must not
            // keep out a real lecture's).
            if d.len() >= MAX_DEMANDED {
                let idle = Duration::from_secs(self.config.edge.idle_stop_s);
                d.retain(|_, at| at.is_none_or(|t| t.elapsed() < idle));
                if d.len() >= MAX_DEMANDED
                    && let Some(oldest) = d
                        .iter()
                        .filter_map(|(n, at)| Some((n.clone(), (*at)?)))
                        .min_by_key(|(_, at)| *at)
                        .map(|(n, _)| n)
                {
                    d.remove(&oldest);
                }
            }
            d.insert(name.to_string(), Some(Instant::now()));
        }
    }

    /// Listens to lecture changes.
    pub fn subscribe(&self) -> broadcast::Receiver<HubEvent> {
        self.events.subscribe()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn lectures(&self) -> MutexGuard<'_, HashMap<String, Arc<Lecture>>> {
        self.lectures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lecture of that name, live, reconnecting or recently ended.
    pub fn lecture(&self, name: &str) -> Option<Arc<Lecture>> {
        self.lectures().get(name).cloned()
    }

    /// All lectures, by name.
    pub fn list(&self) -> Vec<Arc<Lecture>> {
        let mut v: Vec<_> = self.lectures().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Ends lectures whose publisher stayed away past the grace period and forgets ended
    /// ones past the retention time. Call periodically; [`Hub::run_maintenance`] does.
    pub fn maintain(&self, now: Instant) {
        let grace = Duration::from_secs(self.config.lectures.grace_period_s);
        let hold = Duration::from_secs(self.config.edge.hold_s);
        let retention = Duration::from_secs(self.config.lectures.ended_retention_s);
        let mut remove = Vec::new();
        for lecture in self.list() {
            let had_media = lecture.has_media();
            let status = lecture.status();
            match status {
                // Nobody can be watching a lecture that never had media: no grace needed.
                Status::Reconnecting { .. } if !had_media && lecture.finish_if(status) => {
                    info!(lecture = %lecture.name, "publisher left before sending media: lecture dropped");
                    remove.push(lecture.name.clone());
                }
                Status::Reconnecting { since }
                    if now.duration_since(since) >= lecture.grace(grace, hold)
                        && lecture.finish_if(status) =>
                {
                    info!(lecture = %lecture.name, "publisher did not return in time: lecture ended");
                }
                Status::Ended { since } if now.duration_since(since) >= retention => {
                    remove.push(lecture.name.clone());
                }
                _ => {}
            }
        }
        if !remove.is_empty() {
            let mut map = self.lectures();
            for name in remove {
                // Only if nobody started publishing it again meanwhile.
                if map
                    .get(&name)
                    .is_some_and(|l| matches!(l.status(), Status::Ended { .. }))
                {
                    map.remove(&name);
                    let _ = self.events.send(HubEvent {
                        lecture: name.as_str().into(),
                    });
                }
            }
        }
    }

    /// Runs [`Hub::maintain`] twice a second until the hub is dropped elsewhere.
    pub async fn run_maintenance(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            self.maintain(Instant::now());
        }
    }

    fn new_lecture(&self, name: &str) -> Arc<Lecture> {
        self.lecture_with(name, true)
    }

    fn new_lecture_unrecorded(&self, name: &str) -> Arc<Lecture> {
        self.lecture_with(name, false)
    }

    fn lecture_with(&self, name: &str, may_record: bool) -> Arc<Lecture> {
        let configured = self.config.lecture(name);
        let default_language = configured
            .and_then(|l| l.language.as_deref())
            .unwrap_or(&self.config.lectures.default_language);
        let hls = &self.config.hls;
        let started = SystemTime::now();
        let instance = started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut settings = Settings::from_ms(
            hls.part_target_ms,
            hls.segment_target_ms,
            hls.window_segments,
        );
        if let Some(spooler) = &self.spooler {
            settings = settings.with_spool(spooler.clone(), hls.memory_segments);
        }
        let mut packager = Packager::new(settings, base36(instance));
        let recorded = configured
            .and_then(|l| l.record)
            .unwrap_or(self.config.recording.enabled);
        let recording = match self.recordings.get() {
            Some(library) if recorded && may_record => {
                packager.record();
                RecordingSlot::Waiting(library.clone(), configured.and_then(|l| l.retention_days))
            }
            _ => RecordingSlot::Off,
        };
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Arc::new(Lecture {
            name: name.to_string(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            title: configured.and_then(|l| l.title.clone()),
            default_language: Language::parse(default_language)
                .unwrap_or_else(|_| Language::parse("cmn").expect("valid tag")),
            started,
            state: Mutex::new(LectureState {
                status: Status::Live,
                publisher: None,
                session: 0,
                sessions: 0,
            }),
            hls: Mutex::new(packager),
            changed: watch::channel(0).0,
            taps: Taps::new(self.config.webrtc.enabled),
            webrtc: Mutex::default(),
            events: self.events.clone(),
            health: Mutex::default(),
            contributors: Mutex::default(),
            admission: self.admission.clone(),
            recording: Mutex::new(recording),
            pulled: Default::default(),
            asks: Mutex::default(),
            on_air: AtomicU64::new(0),
            air_leave: AtomicU64::new(0),
            feed: Default::default(),
            ladder: Mutex::default(),
            last_frame: Arc::new(AtomicU64::new(clock_ms())),
            live_session: AtomicU64::new(0),
        })
    }

    /// A lecture outside the hub's map for a class speaking back to `stream` (ask back): it
    /// is never listed, recorded or served except to the operator.
    pub(crate) fn new_feed(&self, stream: &str, ask: u64) -> Arc<Lecture> {
        let l = self.new_lecture_unrecorded(&format!("{stream}.ask{ask}"));
        l.feed.store(true, Ordering::Relaxed);
        l
    }

    /// Whether one more lecture may go live (`lectures.max_live`).
    fn room_for_another(&self, map: &HashMap<String, Arc<Lecture>>) -> Result<(), PublishError> {
        let live = map
            .values()
            .filter(|l| !matches!(l.status(), Status::Ended { .. }))
            .count();
        if live >= self.config.lectures.max_live {
            Err(PublishError::TooManyLectures)
        } else {
            Ok(())
        }
    }

    /// Whether publishing `stream` needs a key (so a publisher let in has shown it).
    fn needs_key(&self, stream: &str) -> bool {
        !matches!(
            self.may_publish(stream, None),
            media::admission::Verdict::Allow | media::admission::Verdict::NotMine
        )
    }

    /// Whether a publisher let in (its key checked) may take live lecture `stream` over from
    /// its session: that session has sent nothing (`last_frame`) for
    /// `lectures.stalled_publisher_ms`, the lecture is not `pulled` from an origin (whose
    /// source may be away while the pull goes on), and either it needs a key or the new
    /// publisher comes from the host the stalled one came from (`same_host`): for a lecture
    /// anybody may publish, anybody else waits until the old connection times out, as
    /// anybody could then.
    fn may_take_over(
        &self,
        stream: &str,
        last_frame: &AtomicU64,
        pulled: bool,
        same_host: bool,
    ) -> bool {
        stalled(last_frame, self.config.lectures.stalled_publisher_ms)
            && !pulled
            && (same_host || self.needs_key(stream))
    }

    fn check_key(&self, request: &PublishRequest) -> Result<(), PublishError> {
        use media::admission::{Refusal, Verdict};
        match self.may_publish(&request.stream, request.key.as_deref()) {
            Verdict::Allow | Verdict::NotMine => Ok(()),
            Verdict::Deny(Refusal::UnknownStream) => {
                Err(PublishError::UnknownLecture(request.stream.clone()))
            }
            Verdict::Deny(_) => Err(PublishError::Unauthorized(request.stream.clone())),
        }
    }
}

/// Why a contribution (an interpreter's dialect) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContributeError {
    /// Missing or wrong key.
    #[error("contributing to {0:?} needs the lecture's key")]
    Unauthorized(String),
    /// There is no live lecture of that name to add to.
    #[error("lecture {0:?} is not live: an interpreter joins a lecture that is running")]
    NotLive(String),
    /// The dialect is already carried (by the publisher or another interpreter).
    #[error("lecture {0:?} already carries dialect {1}")]
    DialectTaken(String, String),
    /// The lecture has as many tracks as it may.
    #[error("a lecture carries at most {MAX_RENDITIONS} tracks")]
    TooManyTracks,
}

impl Hub {
    /// Adds one dialect to a live lecture: an interpreter's voice, whose frames the caller
    /// places on the lecture timeline (see [`Taps::lecture_time_at`]). Dropping the sink
    /// ends the contribution; the dialect stays, filled with silence, and a later
    /// contribution of the same dialect continues it.
    pub fn contribute(
        &self,
        request: PublishRequest,
    ) -> Result<Box<dyn MediaSink>, ContributeError> {
        let name = request.stream.clone();
        if let Err(e) = self.check_key(&request) {
            warn!(stream = %name, remote = ?request.remote, "interpreter refused: {e}");
            return Err(match e {
                PublishError::UnknownLecture(n) => ContributeError::NotLive(n),
                _ => ContributeError::Unauthorized(name),
            });
        }
        let lang = request
            .language
            .clone()
            .ok_or_else(|| ContributeError::NotLive(name.clone()))?;
        let lecture = self
            .lecture(&name)
            .filter(|l| matches!(l.status(), Status::Live | Status::Reconnecting { .. }))
            .ok_or_else(|| ContributeError::NotLive(name.clone()))?;
        let key = format!("audio-{lang}");
        {
            let hls = lecture.hls();
            if let Some(r) = hls.rendition_by_id(&key) {
                let rend = &hls.renditions()[r];
                if !rend.lecture_clock && rend.in_session {
                    return Err(ContributeError::DialectTaken(name, lang.to_string()));
                }
            } else if hls.renditions().len() >= MAX_RENDITIONS {
                return Err(ContributeError::TooManyTracks);
            }
        }
        if !lecture.contributors_lock().insert(lang.to_string()) {
            return Err(ContributeError::DialectTaken(name, lang.to_string()));
        }
        info!(stream = %name, dialect = %lang, remote = ?request.remote, protocol = request.protocol, "interpreter joined");
        let display = self
            .config
            .dialects
            .get(lang.as_str())
            .cloned()
            .unwrap_or_else(|| lang.to_string());
        Ok(Box::new(ContributorSink {
            lecture,
            lang,
            display,
            key,
            track: None,
            meters: self.meters.get().cloned(),
            meter: None,
            offset: None,
        }))
    }
}

/// The sink of one contribution (an interpreter's dialect).
struct ContributorSink {
    lecture: Arc<Lecture>,
    lang: Language,
    display: String,
    key: String,
    track: Option<(RenditionIdx, Arc<media::CodecParams>, u32)>,
    meters: Option<Arc<dyn media::encode::Transcoders>>,
    meter: Option<Box<dyn media::encode::AudioEncoder>>,
    /// Lecture time minus input time of the last frame placed (track units): where the
    /// contributor's own Opus goes.
    offset: Option<i64>,
}

impl MediaSink for ContributorSink {
    fn handle(&mut self, event: MediaEvent) -> Result<(), SinkError> {
        match event {
            MediaEvent::Track { mut info, .. } => {
                if info.kind() != TrackKind::Audio {
                    return Err(SinkError::Rejected(
                        "an interpreter contributes audio only".into(),
                    ));
                }
                info.language = Some(self.lang.clone());
                let codec = Arc::new(info.codec.clone());
                let timescale = info.timescale;
                let mut hls = self.lecture.hls();
                let existing = hls.rendition_by_id(&self.key);
                if let Some(r) = existing {
                    let rend = &hls.renditions()[r];
                    // The publisher started sending this dialect after we were admitted.
                    if !rend.lecture_clock && rend.in_session {
                        return Err(SinkError::Closed(format!(
                            "the lecture's publisher now sends {} itself",
                            self.lang
                        )));
                    }
                }
                let known = existing.is_some();
                let r = hls.set_contributed_track(
                    &self.key,
                    info,
                    Some(self.lang.clone()),
                    self.display.clone(),
                );
                let v = hls.version();
                drop(hls);
                self.lecture.notify(v);
                if !known {
                    self.lecture.announce();
                }
                self.meter = level_meter(
                    self.meters.as_ref(),
                    &self.lecture,
                    self.lang.as_str(),
                    &codec,
                );
                self.track = Some((r, codec, timescale));
                Ok(())
            }
            MediaEvent::Frame { frame, .. } => {
                let Some((r, codec, timescale)) = self.track.clone() else {
                    return Err(SinkError::Rejected("audio before its description".into()));
                };
                if matches!(self.lecture.status(), Status::Ended { .. }) {
                    return Err(SinkError::Closed("lecture ended".into()));
                }
                let arrived = Instant::now();
                let data = frame.data.clone();
                if let Some(m) = self.meter.as_mut() {
                    let _ = m.push(frame.pts.max(0), timescale, &data);
                }
                let mut hls = self.lecture.hls();
                if !hls.renditions()[r].lecture_clock {
                    return Err(SinkError::Closed(format!(
                        "the lecture's publisher now sends {} itself",
                        self.lang
                    )));
                }
                let before = hls.version();
                let input_pts = frame.pts;
                let placed = hls.push(r, frame, SystemTime::now());
                self.lecture.record(&mut hls);
                let v = hls.version();
                drop(hls);
                if v != before {
                    self.lecture.notify(v);
                }
                if let Some(placed) = placed {
                    self.offset = Some(placed.pts - input_pts);
                    let taps = &self.lecture.taps;
                    // Placed behind the picture that arrived with it: never move the
                    // lecture's clock (that is the publisher's).
                    let wallclock = taps
                        .wallclock_of(placed.pts, timescale)
                        .map_or(arrived, |w| w.min(arrived));
                    taps.send(
                        &TapTrack::Audio(self.lang.to_string()),
                        TapFrame {
                            dts: placed.dts,
                            pts: placed.pts,
                            timescale,
                            keyframe: true,
                            data,
                            codec,
                            wallclock,
                            session: 0,
                            arrived,
                        },
                    );
                }
                Ok(())
            }
        }
    }

    fn input_error(&mut self, message: String) {
        let mut h = self.lecture.health_lock();
        h.errors += 1;
        h.last_error = Some((
            SystemTime::now(),
            format!("interpreter {}: {message}", self.lang),
        ));
    }

    fn opus(&mut self, _track: TrackId, pts: i64, data: &[u8]) {
        if let (Some((_, _, timescale)), Some(offset)) = (&self.track, self.offset) {
            let pts = pts + media::model::rescale(offset, *timescale, 48_000);
            send_opus(&self.lecture, self.lang.as_str(), pts, data);
        }
    }
}

/// Puts a source's own Opus packet of dialect `lang`, at lecture time `pts` (48 kHz), in
/// the lecture's taps for WebRTC viewers.
fn send_opus(lecture: &Lecture, lang: &str, pts: i64, data: &[u8]) {
    let now = Instant::now();
    let taps = &lecture.taps;
    // Placed by frames already mapped, never after it was heard (as transcoded audio).
    let wallclock = taps.wallclock_of(pts, 48_000).map_or(now, |w| w.min(now));
    taps.send_opus(
        lang,
        crate::taps::OpusPacket {
            pts,
            wallclock,
            data: Arc::from(data),
        },
    );
}

impl Drop for ContributorSink {
    fn drop(&mut self) {
        self.lecture.contributors_lock().remove(self.lang.as_str());
        info!(stream = %self.lecture.name, dialect = %self.lang, "interpreter left: the dialect continues as silence");
        self.lecture.announce();
    }
}

/// A level meter for dialect `lang` of `lecture`, reporting into its health.
fn level_meter(
    meters: Option<&Arc<dyn media::encode::Transcoders>>,
    lecture: &Arc<Lecture>,
    lang: &str,
    codec: &media::CodecParams,
) -> Option<Box<dyn media::encode::AudioEncoder>> {
    let media::CodecParams::Aac(aac) = codec else {
        return None;
    };
    let weak = Arc::downgrade(lecture);
    let tag = lang.to_string();
    let on_level = Box::new(move |level: media::encode::Level| {
        if let Some(l) = weak.upgrade() {
            l.health_lock()
                .levels
                .insert(tag.clone(), (level, Instant::now()));
        }
    });
    match meters?.level_meter(aac, on_level) {
        Ok(m) => Some(m),
        Err(e) => {
            warn!(lecture = %lecture.name, dialect = lang, "no level meter: {e}");
            None
        }
    }
}

fn base36(mut v: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(v % 36) as usize]);
        v /= 36;
        if v == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

impl Hub {
    /// The sink of publishing session `session` of `lecture` (named `stream` here).
    pub(crate) fn publisher_sink(
        &self,
        lecture: Arc<Lecture>,
        session: u64,
        stream: &str,
    ) -> PublisherSink {
        let lecture_is_feed = lecture.feed.load(Ordering::Relaxed);
        PublisherSink {
            lecture,
            session,
            tracks: HashMap::new(),

            dialect_names: {
                // The configuration's names first; an edge adds those its origin uses.
                let mut names = self.config.dialects.clone();
                if let Some(l) = self
                    .learned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(stream)
                {
                    for (tag, name) in &l.dialects {
                        names.entry(tag.clone()).or_insert_with(|| name.clone());
                    }
                }
                names
            },
            had_media: false,
            last_keyframe: None,
            meters: self.meters.get().cloned(),
            finished: false,
            air_seen: 0,
            ladder: self.config.ladder_for(stream) && !lecture_is_feed,
            ladder_rungs: self.config.ladder.rungs.clone(),
        }
    }
}

impl Publish for Hub {
    fn wanted(&self, stream: &str, within: Duration) -> bool {
        let asked = self
            .demand
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(stream)
            .copied()
            .flatten()
            .is_some_and(|at| at.elapsed() < within);
        let watching = self.questions.connections(stream) > 0
            || self
                .lecture(stream)
                .is_some_and(|l| l.webrtc_viewers().values().any(|&n| n > 0));
        asked || watching
    }

    /// Answers from the configuration and the admission snapshot, taking none of the hub's
    /// locks: [`Hub::publish`] decides for good.
    fn check(&self, request: &PublishRequest) -> Result<(), PublishError> {
        self.check_key(request)?;
        let live = self.admission.get();
        match live.get(&request.stream) {
            Some(a)
                if a.live
                    && !self.may_take_over(
                        &request.stream,
                        &a.last_frame,
                        a.pulled,
                        same_host(a.host, request),
                    ) =>
            {
                Err(PublishError::AlreadyPublishing(request.stream.clone()))
            }
            Some(_) => Ok(()),
            None if live.len() >= self.config.lectures.max_live => {
                Err(PublishError::TooManyLectures)
            }
            None => Ok(()),
        }
    }

    fn publish(&self, request: PublishRequest) -> Result<Box<dyn MediaSink>, PublishError> {
        if let Err(e) = self.check_key(&request) {
            warn!(stream = %request.stream, remote = ?request.remote, protocol = request.protocol, "publish refused: {e}");
            return Err(e);
        }
        let mut map = self.lectures();
        let session = self.sessions.fetch_add(1, Ordering::Relaxed);
        let publisher = PublisherInfo {
            protocol: request.protocol,
            remote: request.remote,
            since: SystemTime::now(),
        };
        // The map lock serialises publishers, but maintenance may end the lecture found here
        // at any moment: the lecture decides under its own lock (`begin_session`).
        let lecture = loop {
            let l = match map.get(&request.stream) {
                Some(l) if !matches!(l.status(), Status::Ended { .. }) => l.clone(),
                // A new lecture, or a new one in place of an ended one: either counts
                // against the limit.
                _ => {
                    self.room_for_another(&map)?;
                    let l = self.new_lecture(&request.stream);
                    map.insert(request.stream.clone(), l.clone());
                    l
                }
            };
            let from_its_host = same_host(publisher_host(l.state().publisher.as_ref()), &request);
            match l.begin_session(session, publisher.clone()) {
                Ok(()) => break l,
                Err(Status::Live)
                    if self.may_take_over(
                        &l.name,
                        &l.last_frame,
                        l.pulled.load(Ordering::Relaxed),
                        from_its_host,
                    ) =>
                {
                    // An encoder back after its network dropped, before its old connection
                    // timed out: the old session, silent for a while, yields. Its sink's next
                    // frame, if any ever comes, is refused and its connection closed.
                    let old = l.state().session;
                    {
                        let mut ladder = l.ladder_lock();
                        if ladder.as_ref().is_some_and(|x| x.session == old) {
                            crate::ladder::drop_off_thread(ladder.take());
                        }
                    }
                    if l.end_session(old) {
                        warn!(stream = %request.stream, protocol = request.protocol, remote = ?request.remote, "publishing session {old} sent nothing for {} ms: a new publisher takes the lecture over", self.config.lectures.stalled_publisher_ms);
                    }
                    continue;
                }
                Err(Status::Live) => return Err(PublishError::AlreadyPublishing(request.stream)),
                // Ended by maintenance a moment ago: the next round starts a new lecture.
                Err(_) => continue,
            }
        };
        lecture
            .pulled
            .store(request.protocol == EDGE_PROTOCOL, Ordering::Relaxed);
        lecture.announce();
        drop(map);
        info!(stream = %request.stream, protocol = request.protocol, remote = ?request.remote, "publishing session {session} started");
        Ok(Box::new(self.publisher_sink(
            lecture,
            session,
            &request.stream,
        )))
    }

    fn learned(
        &self,
        stream: &str,
        title: Option<String>,
        next: Option<(String, i64)>,
        dialects: Vec<(String, String)>,
    ) {
        let clip = |t: String| t.chars().take(200).collect::<String>();
        let mut all = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        if !all.contains_key(stream) && all.len() >= MAX_LEARNED {
            return;
        }
        let entry = all.entry(stream.to_string()).or_default();
        // Dialect names alone (from the multivariant playlist) leave the rest as it was.
        if title.is_some() || next.is_some() || dialects.is_empty() {
            entry.title = title.map(clip);
            entry.next = next.map(|(t, at)| (clip(t), at));
        }
        if !dialects.is_empty() {
            entry.dialects = dialects
                .into_iter()
                .take(32)
                .filter(|(tag, _)| Language::parse(tag).is_ok())
                .map(|(tag, name)| (tag, clip(name)))
                .collect();
        }
    }

    fn audience(&self, stream: &str) -> (u32, std::collections::BTreeMap<String, u32>) {
        let (behind, mut dialects) = self.roster.behind_edges(stream);
        let webrtc = self
            .lecture(stream)
            .map(|l| l.webrtc_viewers())
            .unwrap_or_default();
        for (lang, n) in &webrtc {
            let c = dialects.entry(lang.clone()).or_insert(0);
            *c = c.saturating_add(*n as u32);
        }
        // Web players hold a live channel (and may play WebRTC): the larger count.
        let here =
            (self.questions.connections(stream) as u32).max(webrtc.values().sum::<usize>() as u32);
        (here.saturating_add(behind), dialects)
    }

    fn demanded(&self, within: Duration) -> Vec<String> {
        let names: Vec<String> = self
            .demand
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        names
            .into_iter()
            .filter(|n| self.wanted(n, within))
            .collect()
    }
}

/// The `protocol` of an edge's pull from its origin (`PublishRequest::protocol`).
pub const EDGE_PROTOCOL: &str = "edge";

/// Most lecture names an edge remembers viewers asking for (names nobody has are
/// forgotten after `edge.idle_stop_s`).
const MAX_DEMANDED: usize = 4096;

/// The sink of one publishing session.
pub(crate) struct PublisherSink {
    lecture: Arc<Lecture>,
    session: u64,
    tracks: HashMap<TrackId, SinkTrack>,
    dialect_names: indexmap::IndexMap<String, String>,
    /// This session has put something playable in the playlists.
    had_media: bool,
    /// Decode time (s) of the last video keyframe.
    last_keyframe: Option<f64>,
    meters: Option<Arc<dyn media::encode::Transcoders>>,
    /// The source said the lecture is over: dropping the sink ends it now.
    finished: bool,
    /// The value of [`Lecture::on_air`] this session last acted on.
    air_seen: u64,
    /// Whether this lecture gets the smaller pictures, and which.
    ladder: bool,
    ladder_rungs: Vec<config::LadderRungConfig>,
}

struct SinkTrack {
    rendition: RenditionIdx,
    tap: TapTrack,
    codec: Arc<media::CodecParams>,
    timescale: u32,
    meter: Option<Box<dyn media::encode::AudioEncoder>>,
    /// Lecture time minus input time of the last frame placed (track units): where the
    /// source's own Opus goes.
    offset: Option<i64>,
    /// The track as described, to take its rendition back after a site was on air.
    key: String,
    info: TrackInfo,
    language: Option<Language>,
    name: String,
    /// Video after a site was on air: frames wait for a keyframe the lecture takes.
    waiting_keyframe: bool,
}

impl MediaSink for PublisherSink {
    fn handle(&mut self, event: MediaEvent) -> Result<(), SinkError> {
        match event {
            MediaEvent::Track { id, info } => {
                self.still_current()?;
                let (key, language, name) = match info.kind() {
                    TrackKind::Video => ("video".to_string(), None, String::new()),
                    TrackKind::Audio => {
                        let lang = info
                            .language
                            .clone()
                            .unwrap_or_else(|| self.lecture.default_language.clone());
                        let name = self
                            .dialect_names
                            .get(lang.as_str())
                            .cloned()
                            .unwrap_or_else(|| lang.to_string());
                        (format!("audio-{lang}"), Some(lang), name)
                    }
                };
                let tap = match &language {
                    Some(l) => TapTrack::Audio(l.to_string()),
                    None => TapTrack::Video,
                };
                let codec = Arc::new(info.codec.clone());
                let timescale = info.timescale;
                let mut hls = self.lecture.hls();
                if let Some(existing) = hls.rendition_by_id(&key) {
                    if self
                        .tracks
                        .iter()
                        .any(|(t, x)| x.rendition == existing && *t != id)
                    {
                        return Err(SinkError::Rejected(format!(
                            "two tracks of this session are both {key}"
                        )));
                    }
                } else if hls.renditions().len() >= MAX_RENDITIONS {
                    return Err(SinkError::Rejected(format!(
                        "a lecture carries at most {MAX_RENDITIONS} tracks"
                    )));
                }
                let known = hls.rendition_by_id(&key).is_some();
                let described = (key.clone(), info.clone(), language.clone(), name.clone());
                // While a site is on air its picture or sound keeps the rendition.
                let replaced = crate::ask::replaced(
                    self.lecture.on_air.load(Ordering::Acquire),
                    &tap,
                    &self.lecture.default_language,
                );
                let rendition = if replaced && known {
                    hls.rendition_by_id(&key).unwrap_or_default()
                } else {
                    hls.set_track(&key, info, language, name)
                };
                let v = hls.version();
                drop(hls);
                if !known {
                    self.lecture.announce();
                }
                let meter = match &tap {
                    TapTrack::Audio(lang) => {
                        level_meter(self.meters.as_ref(), &self.lecture, lang, &codec)
                    }
                    TapTrack::Video => None,
                };
                if let (media::CodecParams::H264(h), Some(t)) = (codec.as_ref(), &self.meters)
                    && self.ladder
                {
                    let rungs = &self.ladder_rungs;
                    let ladder =
                        crate::ladder::Ladder::new(t, &self.lecture, self.session, h, rungs);
                    let mut slot = self.lecture.ladder_lock();
                    // The old one's pipelines stop with it (on the thread that builds the new).
                    let old = std::mem::replace(&mut *slot, ladder);
                    if let Some(l) = slot.as_mut() {
                        l.rebuild();
                    }
                    drop(slot);
                    crate::ladder::drop_off_thread(old);
                }
                self.tracks.insert(
                    id,
                    SinkTrack {
                        rendition,
                        tap,
                        codec,
                        timescale,
                        meter,
                        offset: None,
                        key: described.0,
                        info: described.1,
                        language: described.2,
                        name: described.3,
                        waiting_keyframe: false,
                    },
                );
                self.lecture.notify(v);
                Ok(())
            }
            MediaEvent::Frame { track, frame } => {
                if !self.tracks.contains_key(&track) {
                    return Err(SinkError::Rejected(format!(
                        "frame for track {} before its description",
                        track.0
                    )));
                }
                self.still_current()?;
                self.lecture.last_frame.store(clock_ms(), Ordering::Relaxed);
                let air = self.lecture.on_air.load(Ordering::Acquire);
                if air != self.air_seen {
                    self.follow_air(air);
                }
                let Some(t) = self.tracks.get(&track) else {
                    return Ok(());
                };
                let mut air = air;
                let mut lift = false;
                if crate::ask::replaced(air, &t.tap, &self.lecture.default_language) {
                    let leave = self.lecture.air_leave.load(Ordering::Acquire);
                    if !crate::ask::take_back_point(air, leave, &t.tap, frame.keyframe)
                        || !crate::ask::take_back(&self.lecture, air)
                    {
                        return Ok(());
                    }
                    // Taken back at this frame: the class's picture went on until now.
                    lift = air & crate::ask::REPLACES_VIDEO != 0;
                    air = self.lecture.on_air.load(Ordering::Acquire);
                    self.follow_air(air);
                }
                let Some(t) = self.tracks.get_mut(&track) else {
                    return Ok(());
                };
                if t.waiting_keyframe && !frame.keyframe {
                    return Ok(());
                }
                let arrived = Instant::now();
                let (keyframe, data) = (frame.keyframe, frame.data.clone());
                let laddered =
                    (self.ladder && matches!(t.tap, TapTrack::Video)).then(|| frame.data.clone());
                if let Some(m) = t.meter.as_mut() {
                    let _ = m.push(frame.pts.max(0), t.timescale, &data);
                }
                if keyframe && matches!(t.tap, TapTrack::Video) {
                    let at = frame.dts as f64 / t.timescale as f64;
                    if let Some(prev) = self.last_keyframe.replace(at)
                        && at > prev
                    {
                        self.lecture.health_lock().keyframe_interval_s =
                            Some(((at - prev) * 1000.0).round() / 1000.0);
                    }
                }
                let mut hls = self.lecture.hls();
                if self.lecture.live_session.load(Ordering::Relaxed) != self.session {
                    drop(hls);
                    return Err(self.closed());
                }
                if self.lecture.on_air.load(Ordering::Acquire) != air {
                    // A site went on air meanwhile: its frames have the rendition now.
                    return Ok(());
                }
                let before = hls.version();
                let input_pts = frame.pts;
                if lift {
                    // Never before the class's last frame: the keyframe must stay.
                    hls.lift_session(t.rendition, frame.dts);
                }
                let placed = hls.push(t.rendition, frame, SystemTime::now());
                if t.waiting_keyframe && placed.is_some() {
                    t.waiting_keyframe = false;
                }
                self.lecture.record(&mut hls);
                let v = hls.version();
                let first_media = !self.had_media && hls.has_media(t.rendition);
                if let Some(placed) = placed {
                    t.offset = Some(placed.pts - input_pts);
                    // Sent with the packager held, so outputs get frames in the order the
                    // lecture took them, across a switch to or from a class on air.
                    let taps = &self.lecture.taps;
                    taps.send(
                        &t.tap,
                        TapFrame {
                            dts: placed.dts,
                            pts: placed.pts,
                            timescale: t.timescale,
                            keyframe,
                            data: data.clone(),
                            codec: t.codec.clone(),
                            wallclock: taps.wallclock(placed.pts, t.timescale, arrived),
                            session: self.session,
                            arrived,
                        },
                    );
                }
                drop(hls);
                if v != before {
                    self.lecture.notify(v);
                }
                if first_media {
                    // Players waiting for a "starting" lecture can begin now.
                    self.had_media = true;
                    self.lecture.announce();
                }
                if let (Some(placed), Some(data)) = (placed, laddered) {
                    let placed = media::Frame {
                        dts: placed.dts,
                        pts: placed.pts,
                        keyframe,
                        data,
                    };
                    // Outside the packager's lock: a rung's pipeline stopping waits for its
                    // output, which takes that lock.
                    self.lecture.ladder_push(&placed, t.timescale, &t.codec);
                }
                Ok(())
            }
        }
    }

    fn transport(&mut self, stats: media::sink::TransportStats) {
        // A connection another publisher took over from tells nothing about the input now.
        if self.still_current().is_ok() {
            self.lecture.health_lock().transport = Some(stats);
        }
    }

    fn input_error(&mut self, message: String) {
        if self.still_current().is_err() {
            return;
        }
        let mut h = self.lecture.health_lock();
        h.errors += 1;
        h.last_error = Some((SystemTime::now(), message));
    }

    fn finish(&mut self) {
        self.finished = true;
    }

    fn opus(&mut self, track: TrackId, pts: i64, data: &[u8]) {
        let Some(t) = self.tracks.get(&track) else {
            return;
        };
        let (TapTrack::Audio(lang), Some(offset)) = (&t.tap, t.offset) else {
            return;
        };
        if crate::ask::replaced(
            self.lecture.on_air.load(Ordering::Acquire),
            &t.tap,
            &self.lecture.default_language,
        ) {
            return;
        }
        if self.still_current().is_err() {
            return;
        }
        let pts = pts + media::model::rescale(offset, t.timescale, 48_000);
        send_opus(&self.lecture, lang, pts, data);
    }
}

impl PublisherSink {
    /// `Ok` while this session is the lecture's live one; else why it is closed.
    fn still_current(&self) -> Result<(), SinkError> {
        let st = self.lecture.state();
        // Not live: a new publisher is taking over from this one (or it ended).
        if st.session != self.session || st.status != Status::Live {
            drop(st);
            return Err(self.closed());
        }
        Ok(())
    }

    /// The error for a session that is no longer the lecture's.
    fn closed(&self) -> SinkError {
        SinkError::Closed(
            if matches!(self.lecture.status(), Status::Ended { .. }) {
                "lecture ended"
            } else {
                "another publisher took the lecture over"
            }
            .into(),
        )
    }

    /// A site went on air or off: what it no longer replaces, this session's own picture and
    /// sound take back (the picture from its next keyframe the lecture takes).
    fn follow_air(&mut self, air: u64) {
        let mut before = self.air_seen;
        if air >> 2 != (before >> 2) + 1 {
            // Switches this session did not see (no frame in between): a site may have
            // replaced anything meanwhile.
            before = crate::ask::REPLACES_VIDEO | crate::ask::REPLACES_AUDIO;
        }
        let mut hls = self.lecture.hls();
        if self.lecture.on_air.load(Ordering::Acquire) != air {
            // Changed again meanwhile: the next frame acts on the newer value.
            return;
        }
        self.air_seen = air;
        for t in self.tracks.values_mut() {
            let lang = &self.lecture.default_language;
            if crate::ask::replaced(before, &t.tap, lang)
                && !crate::ask::replaced(air, &t.tap, lang)
            {
                hls.set_track(&t.key, t.info.clone(), t.language.clone(), t.name.clone());
                t.waiting_keyframe = matches!(t.tap, TapTrack::Video);
            }
        }
        let v = hls.version();
        drop(hls);
        self.lecture.notify(v);
    }
}

impl Drop for PublisherSink {
    fn drop(&mut self) {
        {
            let mut ladder = self.lecture.ladder_lock();
            if ladder.as_ref().is_some_and(|l| l.session == self.session) {
                // Its pipelines stop with it.
                crate::ladder::drop_off_thread(ladder.take());
            }
        }
        if self.lecture.end_session(self.session) && self.finished {
            let status = self.lecture.status();
            if self.lecture.finish_if(status) {
                info!(stream = %self.lecture.name, "lecture ended by its source");
            }
        }
        info!(stream = %self.lecture.name, "publishing session {} ended", self.session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(extra: &str) -> Arc<Hub> {
        hub_with("", extra)
    }

    fn hub_with(lectures: &str, extra: &str) -> Arc<Hub> {
        // The tests publish names of their own choosing.
        let open = if lectures.contains("allow_unconfigured") {
            ""
        } else {
            "allow_unconfigured = true\n"
        };
        let text = format!(
            "[demo]\nenabled = false\n[lectures]\n{open}grace_period_s = 1\nended_retention_s = 1\nmax_live = 2\n{lectures}\n{extra}"
        );
        Hub::new(Arc::new(
            Config::from_toml_str_with_env(&text, std::iter::empty()).unwrap(),
        ))
    }

    fn req(name: &str, key: Option<&str>) -> PublishRequest {
        PublishRequest {
            stream: name.into(),
            key: key.map(str::to_string),
            language: None,
            protocol: "test",
            remote: None,
        }
    }

    #[test]
    fn one_publisher_at_a_time_and_reconnect_within_grace() {
        let hub = hub("");
        let first = hub.publish(req("a", None)).unwrap();
        assert!(matches!(
            hub.publish(req("a", None)),
            Err(PublishError::AlreadyPublishing(_))
        ));
        drop(first);
        let l = hub.lecture("a").unwrap();
        assert!(matches!(l.status(), Status::Reconnecting { .. }));
        let _second = hub.publish(req("a", None)).unwrap();
        assert!(Arc::ptr_eq(&l, &hub.lecture("a").unwrap()));
        assert_eq!(l.sessions(), 2);
        assert_eq!(l.status(), Status::Live);
    }

    #[test]
    fn lecture_without_media_is_dropped_at_once() {
        let hub = hub("");
        drop(hub.publish(req("a", None)).unwrap());
        hub.maintain(Instant::now());
        assert!(hub.lecture("a").is_none());
    }

    fn publish_some_media(sink: &mut Box<dyn MediaSink>) {
        sink.handle(aac_track()).unwrap();
        for i in 0..200 {
            sink.handle(aac_frame(i * 1024)).unwrap();
        }
    }

    /// Track 1: AAC at 48 kHz.
    fn aac_track() -> MediaEvent {
        let aac = media::aac::AacParams::lc(48_000, 2).unwrap();
        MediaEvent::Track {
            id: TrackId(1),
            info: media::TrackInfo::new(media::CodecParams::Aac(aac)),
        }
    }

    /// An AAC frame of track 1 at `pts`.
    fn aac_frame(pts: i64) -> MediaEvent {
        MediaEvent::Frame {
            track: TrackId(1),
            frame: media::Frame {
                dts: pts,
                pts,
                keyframe: true,
                data: bytes::Bytes::from_static(&[0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c]),
            },
        }
    }

    #[test]
    fn a_sources_own_opus_goes_where_its_aac_was_placed() {
        let hub = hub("");
        let mut sink = hub.publish(req("a", None)).unwrap();
        let lecture = hub.lecture("a").unwrap();
        let lang = lecture.default_language.to_string();
        let mut aac = lecture.taps.subscribe(&TapTrack::Audio(lang.clone()));
        let mut opus = lecture.taps.subscribe_opus(&lang);
        sink.handle(aac_track()).unwrap();
        // An hour into the publisher's clock: the lecture's timeline starts elsewhere.
        let base = 48_000 * 3600;
        sink.opus(TrackId(1), base, &[0xfc, 0]);
        assert!(opus.try_recv().is_err(), "no AAC placed yet: nowhere to go");
        for i in 0..50 {
            sink.handle(aac_frame(base + i * 1024)).unwrap();
        }
        let mut last = None;
        while let Ok(f) = aac.try_recv() {
            last = Some(f.pts);
        }
        let last = last.expect("AAC placed on the timeline");
        assert_ne!(last, base + 49 * 1024, "the test needs an offset to apply");
        sink.opus(TrackId(1), base + 49 * 1024 + 960, &[0xfc, 1]);
        let p = opus.try_recv().unwrap();
        assert_eq!(p.pts, last + 960);
        assert_eq!(&*p.data, &[0xfc, 1]);
        assert!(lecture.taps.sends_opus(&lang, Duration::from_secs(5)));
        // Another track id (not an audio track of this session) goes nowhere.
        sink.opus(TrackId(7), base + 50 * 1024, &[0xfc, 2]);
        assert!(opus.try_recv().is_err());
    }

    #[test]
    fn grace_then_end_then_forget() {
        let hub = hub("");
        let mut sink = hub.publish(req("a", None)).unwrap();
        publish_some_media(&mut sink);
        drop(sink);
        let t = Instant::now();
        hub.maintain(t);
        assert!(matches!(
            hub.lecture("a").unwrap().status(),
            Status::Reconnecting { .. }
        ));
        hub.maintain(t + Duration::from_millis(1100));
        assert!(matches!(
            hub.lecture("a").unwrap().status(),
            Status::Ended { .. }
        ));
        assert!(hub.lecture("a").unwrap().hls().is_ended());
        hub.maintain(t + Duration::from_millis(2300));
        assert!(hub.lecture("a").is_none());
    }

    #[test]
    fn an_edge_pulls_what_is_asked_holds_through_outages_and_ends_when_told() {
        let hub = hub_with(
            "allow_unconfigured = false",
            "[edge]\norigins = [\"http://10.0.0.1:8080\"]\nkey = \"edge-key-0123456789\"\nhold_s = 5\n",
        );
        hub.set_admission(vec![
            Arc::new(crate::admission::EdgeKeys::new(
                &hub.config().edge,
                Some("edge-key-0123456789".into()),
            )),
            Arc::new(crate::admission::Unconfigured(false)),
        ]);
        // Any valid name a player asks for is wanted for a while; others are not kept.
        hub.note_demand("hall-1");
        hub.note_demand("../etc");
        assert_eq!(
            hub.demanded(Duration::from_secs(30)),
            vec!["hall-1".to_string()]
        );
        // Only the edge's own pull (its key) may publish here.
        assert!(hub.publish(req("hall-1", None)).is_err());
        let pull = |hub: &Hub| {
            let mut r = req("hall-1", Some("edge-key-0123456789"));
            r.protocol = EDGE_PROTOCOL;
            hub.publish(r).unwrap()
        };
        let mut sink = pull(&hub);
        publish_some_media(&mut sink);
        drop(sink);
        // The origin unreachable: the lecture waits edge.hold_s, not the 1 s grace.
        let t = Instant::now();
        hub.maintain(t + Duration::from_millis(2000));
        let l = hub.lecture("hall-1").unwrap();
        assert!(matches!(l.status(), Status::Reconnecting { .. }));
        hub.maintain(t + Duration::from_millis(5100));
        assert!(matches!(l.status(), Status::Ended { .. }));
        // The origin ended it: it ends here at once.
        let mut sink = pull(&hub);
        publish_some_media(&mut sink);
        sink.finish();
        drop(sink);
        let l = hub.lecture("hall-1").unwrap();
        assert!(matches!(l.status(), Status::Ended { .. }));
        assert!(l.hls().is_ended());
    }

    #[test]
    fn a_stalled_session_yields_to_a_new_publisher_and_a_sending_one_does_not() {
        const KEY: &str = "hall-key-12345";
        let hub = hub_with(
            "stalled_publisher_ms = 500\n",
            &format!("[[lecture]]\nname = \"a\"\npublish_key = \"{KEY}\"\n"),
        );
        let mut first = hub.publish(req("a", Some(KEY))).unwrap();
        publish_some_media(&mut first);
        let l = hub.lecture("a").unwrap();
        let session = l.state().session;
        // Sending: nobody else gets in.
        assert!(matches!(
            hub.check(&req("a", Some(KEY))),
            Err(PublishError::AlreadyPublishing(_))
        ));
        assert!(matches!(
            hub.publish(req("a", Some(KEY))),
            Err(PublishError::AlreadyPublishing(_))
        ));
        // Silent for longer than stalled_publisher_ms: the next publisher takes over.
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(hub.check(&req("a", Some(KEY))), Ok(()));
        let mut second = hub.publish(req("a", Some(KEY))).unwrap();
        assert_ne!(l.state().session, session);
        assert_eq!(l.status(), Status::Live);
        // The first session's late frames and tracks are refused, its reports ignored, and
        // its end ends nothing.
        assert!(matches!(
            first.handle(aac_frame(200 * 1024)),
            Err(SinkError::Closed(_))
        ));
        assert!(matches!(
            first.handle(aac_track()),
            Err(SinkError::Closed(_))
        ));
        first.input_error("from the old connection".into());
        assert_eq!(l.health().errors, 0);
        drop(first);
        assert_eq!(l.status(), Status::Live);
        // The new session, which has sent nothing yet, has time for its first frame.
        std::thread::sleep(Duration::from_millis(600));
        assert!(matches!(
            hub.check(&req("a", Some(KEY))),
            Err(PublishError::AlreadyPublishing(_))
        ));
        second.handle(aac_track()).unwrap();
        second.handle(aac_frame(0)).unwrap();
        assert!(
            Arc::ptr_eq(&l, &hub.lecture("a").unwrap()),
            "the same lecture"
        );
    }

    #[test]
    fn a_lecture_anyone_may_publish_is_taken_over_only_from_the_stalled_publishers_host() {
        let hub = hub_with("stalled_publisher_ms = 500\n", "");
        let from = |ip: &str, port: u16| {
            let mut r = req("open", None);
            r.remote = Some(SocketAddr::new(ip.parse().unwrap(), port));
            r
        };
        let mut first = hub.publish(from("198.51.100.7", 50000)).unwrap();
        publish_some_media(&mut first);
        std::thread::sleep(Duration::from_millis(600));
        // Anybody may publish it, so nobody else displaces the stalled encoder, nor does a
        // publisher whose address is unknown.
        for r in [from("203.0.113.9", 50001), req("open", None)] {
            assert!(matches!(
                hub.check(&r),
                Err(PublishError::AlreadyPublishing(_))
            ));
            assert!(matches!(
                hub.publish(r),
                Err(PublishError::AlreadyPublishing(_))
            ));
        }
        // The encoder itself, back on a new connection (a new port; here through a dual-stack
        // listener, so IPv4-mapped), takes over.
        let back = || from("::ffff:198.51.100.7", 50002);
        assert_eq!(hub.check(&back()), Ok(()));
        let mut second = hub.publish(back()).unwrap();
        assert!(first.handle(aac_frame(200 * 1024)).is_err());
        publish_some_media(&mut second);
        assert_eq!(hub.lecture("open").unwrap().status(), Status::Live);
    }

    #[test]
    fn a_sending_publisher_of_a_keyless_lecture_keeps_it_against_its_own_host() {
        let hub = hub_with("stalled_publisher_ms = 5000\n", "");
        let mut r = req("open", None);
        r.remote = Some(SocketAddr::new("198.51.100.7".parse().unwrap(), 50000));
        let mut first = hub.publish(r.clone()).unwrap();
        publish_some_media(&mut first);
        assert!(matches!(
            hub.publish(r),
            Err(PublishError::AlreadyPublishing(_))
        ));
    }

    #[test]
    fn admission_check_waits_on_no_hub_lock() {
        // `check` runs on libsrt's receive thread for the whole SRT port: it answers from a
        // snapshot even while the hub and a lecture are locked by someone else.
        let hub = hub("[[lecture]]\nname = \"xihe\"\npublish_key = \"right-key-123\"\n");
        let _a = hub.publish(req("a", None)).unwrap();
        let lecture = hub.lecture("a").unwrap();
        let lectures = hub.lectures();
        let state = lecture.state();
        let (tx, rx) = std::sync::mpsc::channel();
        let h = hub.clone();
        std::thread::spawn(move || {
            let _ = tx.send((
                h.check(&req("a", None)),
                h.check(&req("b", None)),
                h.check(&req("xihe", Some("wrong-key-123"))),
            ));
        });
        let answers = rx.recv_timeout(Duration::from_secs(5));
        drop(state);
        drop(lectures);
        let (a, b, xihe) = answers.expect("check waited on the hub's locks");
        assert!(matches!(a, Err(PublishError::AlreadyPublishing(_))));
        assert_eq!(b, Ok(()));
        assert!(matches!(xihe, Err(PublishError::Unauthorized(_))));
    }

    #[test]
    fn admission_snapshot_follows_the_lecture_life() {
        let hub = hub("");
        let mut a = hub.publish(req("a", None)).unwrap();
        publish_some_media(&mut a);
        let _b = hub.publish(req("b", None)).unwrap();
        assert!(matches!(
            hub.check(&req("c", None)),
            Err(PublishError::TooManyLectures)
        ));
        // Reconnecting: its publisher may come back; it still counts as live.
        drop(a);
        assert_eq!(hub.check(&req("a", None)), Ok(()));
        assert!(matches!(
            hub.check(&req("c", None)),
            Err(PublishError::TooManyLectures)
        ));
        // Ended, then forgotten: room for another lecture.
        let t = Instant::now();
        hub.maintain(t + Duration::from_millis(1100));
        assert_eq!(hub.check(&req("c", None)), Ok(()));
        hub.maintain(t + Duration::from_millis(2300));
        assert!(hub.lecture("a").is_none());
        assert_eq!(hub.check(&req("a", None)), Ok(()));
        // A new lecture of the same name is live again.
        let _a2 = hub.publish(req("a", None)).unwrap();
        assert!(matches!(
            hub.check(&req("a", None)),
            Err(PublishError::AlreadyPublishing(_))
        ));
    }

    #[test]
    fn keys_and_limits() {
        let hub = hub("[[lecture]]\nname = \"xihe\"\npublish_key = \"right-key-123\"\n");
        assert!(matches!(
            hub.publish(req("xihe", None)),
            Err(PublishError::Unauthorized(_))
        ));
        assert!(matches!(
            hub.publish(req("xihe", Some("wrong-key-123"))),
            Err(PublishError::Unauthorized(_))
        ));
        let _a = hub.publish(req("xihe", Some("right-key-123"))).unwrap();
        let _b = hub.publish(req("b", None)).unwrap();
        assert!(matches!(
            hub.publish(req("c", None)),
            Err(PublishError::TooManyLectures)
        ));
        // `check` answers the same without starting anything.
        assert!(matches!(
            hub.check(&req("xihe", Some("right-key-123"))),
            Err(PublishError::AlreadyPublishing(_))
        ));
        assert!(matches!(
            hub.check(&req("c", None)),
            Err(PublishError::TooManyLectures)
        ));
        assert!(hub.lecture("c").is_none());
        let closed = hub_with("allow_unconfigured = false", "");
        assert!(matches!(
            closed.check(&req("x", None)),
            Err(PublishError::UnknownLecture(_))
        ));
        assert!(matches!(
            closed.publish(req("x", None)),
            Err(PublishError::UnknownLecture(_))
        ));
    }

    #[test]
    fn max_live_counts_a_name_whose_lecture_ended() {
        let text = "[demo]\nenabled = false\n[lectures]\nallow_unconfigured = true\ngrace_period_s = 1\nended_retention_s = 60\nmax_live = 1\n";
        let hub = Hub::new(Arc::new(
            Config::from_toml_str_with_env(text, std::iter::empty()).unwrap(),
        ));
        let mut a = hub.publish(req("a", None)).unwrap();
        publish_some_media(&mut a);
        drop(a);
        let t = Instant::now();
        hub.maintain(t + Duration::from_millis(1100));
        assert!(matches!(
            hub.lecture("a").unwrap().status(),
            Status::Ended { .. }
        ));
        let _b = hub.publish(req("b", None)).unwrap();
        // "a" ended but is still listed (retention): publishing it again is a new live
        // lecture and must count against max_live like any other.
        assert!(matches!(
            hub.check(&req("a", None)),
            Err(PublishError::TooManyLectures)
        ));
        assert!(matches!(
            hub.publish(req("a", None)),
            Err(PublishError::TooManyLectures)
        ));
        let live = hub
            .list()
            .iter()
            .filter(|l| !matches!(l.status(), Status::Ended { .. }))
            .count();
        assert_eq!(live, 1);
    }

    #[test]
    fn a_sink_returned_by_publish_never_sees_its_lecture_ended() {
        // Publishers come and go on one name while maintenance runs as if the grace period
        // were always over: every transition races with every other. A sink that publish()
        // returned must find its lecture live until it is dropped.
        let text = "[demo]\nenabled = false\n[lectures]\nallow_unconfigured = true\ngrace_period_s = 0\nended_retention_s = 0\nmax_live = 8\n";
        let hub = Hub::new(Arc::new(
            Config::from_toml_str_with_env(text, std::iter::empty()).unwrap(),
        ));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let maintainer = {
            let (hub, stop) = (hub.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    hub.maintain(Instant::now() + Duration::from_secs(3600));
                }
            })
        };
        let frame = |i: i64| MediaEvent::Frame {
            track: TrackId(1),
            frame: media::Frame {
                dts: i * 1024,
                pts: i * 1024,
                keyframe: true,
                data: bytes::Bytes::from_static(&[0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c]),
            },
        };
        let publishers: Vec<_> = (0..3)
            .map(|_| {
                let hub = hub.clone();
                std::thread::spawn(move || {
                    let mut failures = Vec::new();
                    let deadline = Instant::now() + Duration::from_secs(6);
                    let mut rounds = 0;
                    while Instant::now() < deadline && rounds < 1_000_000 {
                        rounds += 1;
                        let Ok(mut sink) = hub.publish(req("race", None)) else {
                            continue;
                        };
                        let lecture = hub.lecture("race").unwrap();
                        let info = media::TrackInfo::new(media::CodecParams::Aac(
                            media::aac::AacParams::lc(48_000, 2).unwrap(),
                        ));
                        if let Err(e) = sink.handle(MediaEvent::Track {
                            id: TrackId(1),
                            info,
                        }) {
                            failures.push(format!("track refused: {e}"));
                        }
                        for i in 0..3 {
                            if let Err(e) = sink.handle(frame(i)) {
                                failures.push(format!("frame refused: {e}"));
                            }
                            if lecture.hls().is_ended() {
                                failures.push("playlists ended under a live sink".into());
                            }
                        }
                        drop(sink);
                    }
                    failures
                })
            })
            .collect();
        let failures: Vec<String> = publishers
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        stop.store(true, Ordering::Relaxed);
        maintainer.join().unwrap();
        assert!(
            failures.is_empty(),
            "{} failures, e.g. {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
    }
}
