//! The WebRTC engine: one task owning every viewer's `str0m::Rtc` and the shared UDP port.
//!
//! Inputs are network packets (from one reader task per bound socket), commands from the
//! HTTP handlers, media from per-lecture feeder tasks, and timeouts. Every mutation of an
//! `Rtc` is followed by a full drain of its output (str0m's contract). Nothing here waits on
//! a viewer: packets are sent with `try_send_to` and dropped (and counted) if the kernel
//! buffer is full, so one viewer's slow network never slows another.
//!
//! Failures are contained at three depths: a panic inside one session closes that session;
//! one while parsing or matching a datagram (bytes anyone can send) drops that datagram; any
//! other panic restarts the engine without its sessions, on the same channels, so new offers
//! work again at once (logged, counted in `engine_restarts`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use media::encode::{AudioEncoder, AudioSource, Transcoders};
use media::sink::{MediaSink, TransportStats};
use media::{CodecParams, MediaEvent, TrackKind};
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaData, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::unversioned::{H264Packetizer, Packetizer};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::opus_feed::{OpusFeeds, OpusPacket};
use super::rtp_line::RtpLine;
use super::stats::Stats;
use super::udp::Udp;
use super::whip_media::{self, CommonClock, SenderClock, VideoOutcome, WhipVideo};
use crate::align::Aligner;
use crate::hub::{Hub, Lecture, Status};
use crate::taps::{TapFrame, TapTrack};

/// A datagram received on one of our sockets (or a frame on an ICE-TCP connection).
pub struct Datagram {
    /// Sender.
    pub source: SocketAddr,
    /// Our address as announced in the candidate it arrived for.
    pub destination: SocketAddr,
    /// Bytes.
    pub data: Bytes,
    /// UDP, or TCP for ICE-TCP.
    pub proto: Protocol,
}

/// An engine's ports by the address announced for each: UDP sockets, and ICE-TCP
/// listeners' connections.
pub struct Ports {
    /// UDP sockets.
    pub udp: HashMap<SocketAddr, Arc<Udp>>,
    /// ICE-TCP ports.
    pub tcp: HashMap<SocketAddr, Arc<super::tcp::TcpPort>>,
}

/// What the HTTP side asks of the engine.
pub enum Command {
    /// A new viewer whose offer has been answered.
    Add(Box<NewSession>),
    /// A new WHIP publisher whose offer has been answered.
    AddPublisher(Box<NewPublisher>),
    /// DELETE of the session resource.
    Remove {
        /// Session id.
        id: String,
        /// Whether it existed.
        reply: oneshot::Sender<bool>,
    },
    /// Trickled remote candidates, which an ICE-lite agent has no use for: the peer runs
    /// the checks, and its binding requests tell us its addresses. Counted and dropped.
    Candidates {
        /// Session id.
        id: String,
        /// How many.
        count: usize,
        /// Whether the session exists.
        reply: oneshot::Sender<bool>,
    },
    /// Switch the dialect the viewer hears.
    Dialect {
        /// Session id.
        id: String,
        /// New language tag.
        lang: String,
        /// `Ok(false)` if the session does not exist.
        reply: oneshot::Sender<bool>,
    },
    /// State of one session.
    Info {
        /// Session id.
        id: String,
        /// The answer.
        reply: oneshot::Sender<Option<serde_json::Value>>,
    },
    /// Tests only: make the engine fail.
    #[cfg(test)]
    Fault {
        /// Where.
        fault: Fault,
        /// Once armed.
        reply: oneshot::Sender<()>,
    },
}

/// A failure a test makes the engine have (a panic where a bug would panic).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// While parsing the next datagram.
    Datagram,
    /// In the next maintenance.
    Maintenance,
}

/// A viewer handed over by the HTTP side.
pub struct NewSession {
    /// Session id (the last segment of its resource URL).
    pub id: String,
    /// The engine after `accept_offer`.
    pub rtc: Rtc,
    /// The lecture watched.
    pub lecture: Arc<Lecture>,
    /// Dialect heard.
    pub lang: String,
}

/// A WHIP publisher handed over by the HTTP side.
pub struct NewPublisher {
    /// Session id (the last segment of its resource URL).
    pub id: String,
    /// The engine after `accept_offer`.
    pub rtc: Rtc,
    /// Lecture name.
    pub stream: String,
    /// Where its media goes: a publishing session, or a contribution.
    pub sink: Box<dyn MediaSink>,
    /// For an interpreter: the lecture whose timeline its voice joins.
    pub interpreter: Option<Arc<Lecture>>,
    /// How often the lecture needs a keyframe (its segment target).
    pub keyframe_every: Duration,
}

struct Publisher {
    id: String,
    rtc: Rtc,
    stream: Arc<str>,
    created: Instant,
    connected: bool,
    dead: bool,
    next_timeout: Instant,
    sink: Arc<std::sync::Mutex<Box<dyn MediaSink>>>,
    interpreter: Option<(Arc<Lecture>, Aligner)>,
    video_mid: Option<Mid>,
    audio_mid: Option<Mid>,
    clock: CommonClock,
    video: WhipVideo,
    encoder: Option<Box<dyn AudioEncoder>>,
    encoder_failed: bool,
    /// Why the relay refused the audio the transcoder handed it (on the transcoder's
    /// thread), for the engine to close the publisher.
    audio_refused: Arc<OnceLock<String>>,
    keyframe_every: Duration,
    last_keyframe: Option<Instant>,
    last_pli: Option<Instant>,
    frames: u64,
    ingress: HashMap<Mid, (u64, u64, Option<Duration>)>,
}

/// Media from the feeders, ready to write.
pub enum Media {
    /// A video frame in Annex B with parameter sets before keyframes.
    Video {
        /// The lecture instance ([`Lecture::id`]).
        lecture: u64,
        /// The frame.
        frame: Arc<VideoFrame>,
    },
    /// An Opus packet of one dialect.
    Audio {
        /// The lecture instance ([`Lecture::id`]).
        lecture: u64,
        /// Dialect.
        lang: Arc<str>,
        /// Presentation time, 48 kHz on the lecture timeline.
        pts: i64,
        /// Wall clock of `pts`.
        wallclock: Instant,
        /// Opus packet.
        data: Arc<[u8]>,
    },
    /// The feeder fell behind: viewers of this lecture must wait for a keyframe.
    Lagged {
        /// The lecture instance ([`Lecture::id`]).
        lecture: u64,
    },
}

/// A video frame prepared once for every viewer of the engine: cut into RTP payloads here,
/// so each viewer's `Rtc` only numbers, encrypts and sends them, and its retransmission
/// history holds references to these payloads, not copies.
pub struct VideoFrame {
    /// Decode time (90 kHz, lecture timeline), to deduplicate after a GOP burst.
    pub dts: i64,
    /// Presentation time: the RTP timestamp.
    pub pts: i64,
    /// IDR.
    pub keyframe: bool,
    /// Wall clock of `pts`.
    pub wallclock: Instant,
    /// RTP payloads (H.264 packetization mode 1); the last one carries the marker.
    pub packets: Box<[Arc<[u8]>]>,
    /// `profile_idc` of the stream.
    pub profile: u8,
    /// When the relay received it.
    pub arrived: Instant,
    /// A frame of the lecture's smallest picture (its ladder), not of its source.
    pub small: bool,
}

/// The largest RTP payload: what str0m's own packetization uses with its default MTU (1,150
/// bytes less the SRTP tag, rounded down to the 16-byte block).
pub const PAYLOAD_MTU: usize = (str0m::DATAGRAM_MTU_TARGET - 16) & !15;

/// Converts a tapped H.264 frame to Annex B, with SPS and PPS in front of keyframes, and cuts
/// it into RTP payloads with `packetizer` (one per lecture: it carries parameter sets from
/// one keyframe to the next).
pub fn annexb(frame: &TapFrame, packetizer: &mut H264Packetizer) -> Option<VideoFrame> {
    let CodecParams::H264(h) = frame.codec.as_ref() else {
        return None;
    };
    let mut out = Vec::with_capacity(frame.data.len() + h.sps.len() + h.pps.len() + 16);
    if frame.keyframe {
        for ps in [&h.sps, &h.pps] {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(ps);
        }
    }
    for nal in h.nal_units(&frame.data) {
        let nal = nal.ok()?;
        // Parameter sets in-band are already in front; access unit delimiters carry nothing.
        if nal.is_empty()
            || (frame.keyframe && matches!(nal[0] & 0x1f, 7 | 8))
            || nal[0] & 0x1f == 9
        {
            continue;
        }
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
    }
    let packets = packetizer.packetize(PAYLOAD_MTU, &out).ok()?;
    if packets.is_empty() {
        return None;
    }
    Some(VideoFrame {
        dts: frame.dts,
        pts: frame.pts,
        keyframe: frame.keyframe,
        wallclock: frame.wallclock,
        packets: packets.into_iter().map(Arc::from).collect(),
        profile: h.profile,
        arrived: frame.arrived,
        small: false,
    })
}

struct Session {
    id: String,
    rtc: Rtc,
    lecture: Arc<Lecture>,
    lecture_name: Arc<str>,
    lang: Arc<str>,
    created: Instant,
    video: Option<(Mid, Option<Pt>)>,
    audio: Option<(Mid, Option<Pt>)>,
    connected: bool,
    started: bool,
    waiting_keyframe: bool,
    /// This viewer's RTP timelines: the lecture's, continuous across its jumps.
    video_line: RtpLine,
    audio_line: RtpLine,
    /// The next RTP sequence number of each stream (extended: the high bits are SRTP's
    /// rollover counter). The viewer's own, so shared payloads go out numbered without gaps
    /// whatever the viewer skipped.
    video_seq: u64,
    audio_seq: u64,
    next_timeout: Instant,
    dead: bool,
    frames_sent: u64,
    frames_skipped: u64,
    connected_at: Option<Instant>,
    switched_at: Option<Instant>,
    /// Sent the lecture's smallest picture (a poor link), not its source.
    small: bool,
    /// The picture it should get; a switch happens at the source's next keyframe.
    want_small: bool,
    /// The loss its receiver reports for the video.
    link: LinkLoss,
    /// The round-trip time its receiver reports last showed.
    rtt: Option<Duration>,
    /// How long its video stays in the retransmission history (zero: str0m's default).
    rtx_history: Duration,
    /// The history it should have, set at the next keyframe.
    rtx_pending: Option<Duration>,
}

struct Feed {
    lecture: Arc<Lecture>,
    video: JoinHandle<()>,
    dialects: HashMap<String, JoinHandle<()>>,
    /// How late (ms, smoothed) Opus packets reach the engine relative to their wall clock:
    /// the transcoding delay.
    audio_lag: Option<f64>,
    /// The same for video frames.
    video_lag: Option<f64>,
    /// Video held back by the audio's extra delay, so both reach viewers aligned.
    held: std::collections::VecDeque<(Instant, Duration, Arc<VideoFrame>)>,
    /// The frames since the last keyframe, already cut into payloads: a joining viewer's
    /// GOP burst reuses them instead of cutting its own.
    gop: std::collections::VecDeque<Arc<VideoFrame>>,
    /// The smallest picture's feeder, and when it last brought a frame.
    small: JoinHandle<()>,
    small_seen: Option<Instant>,
}

/// Longest video is held back to wait for its audio.
const MAX_AV_HOLD: Duration = Duration::from_millis(300);
/// An Opus packet (20 ms at 48 kHz).
const OPUS_FRAME: i64 = 960;
/// How far behind what a viewer had audio may come and still be an overlap (a dialect
/// switch's), not a jump back: 1 s at 48 kHz.
const AUDIO_OVERLAP: i64 = 48_000;
/// The same for video: frames of a GOP burst coming again live, at most the longest GOP
/// the burst sends.
const VIDEO_OVERLAP: i64 = crate::taps::MAX_GOP.as_secs() as i64 * 90_000;
/// Most frames a feed keeps for GOP bursts (10 s at 60 frames/s; a longer GOP's burst cuts
/// the frames the feed no longer has).
const MAX_GOP_FRAMES: usize = 600;

fn smooth(v: &mut Option<f64>, x: f64) {
    *v = Some(match *v {
        Some(old) => old + (x - old) * 0.05,
        None => x,
    });
}

impl Feed {
    /// Keeps `frame` for the GOP bursts of viewers joining before the next keyframe.
    fn remember(&mut self, frame: &Arc<VideoFrame>) {
        if frame.keyframe {
            self.gop.clear();
        }
        if self.gop.len() < MAX_GOP_FRAMES && (frame.keyframe || !self.gop.is_empty()) {
            self.gop.push_back(frame.clone());
        }
    }

    /// How long video should wait so that it leaves with the audio of the same instant.
    fn hold(&self) -> Duration {
        match (self.audio_lag, self.video_lag) {
            (Some(a), Some(v)) if a > v => {
                Duration::from_secs_f64((a - v) / 1000.0).min(MAX_AV_HOLD)
            }
            _ => Duration::ZERO,
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.video.abort();
        self.small.abort();
        for t in self.dialects.values() {
            t.abort();
        }
    }
}

/// The engine's state.
pub struct Engine {
    sockets: Ports,
    sessions: Vec<Session>,
    publishers: Vec<Publisher>,
    by_remote: HashMap<SocketAddr, String>,
    /// By lecture instance ([`Lecture::id`]), not by name: a lecture ended and published
    /// again under its name is another feed, even while viewers of the old one remain.
    feeds: HashMap<u64, Feed>,
    media_tx: mpsc::Sender<Media>,
    hub: Arc<Hub>,
    transcoders: Arc<dyn Transcoders>,
    /// Opus of each dialect, transcoded once for every engine.
    opus: Arc<OpusFeeds>,
    stats: Arc<Stats>,
    /// Sessions this engine holds or has been handed (the HTTP side counts a session in
    /// when it picks this engine; the engine counts it out when it removes it).
    load: Arc<AtomicUsize>,
    connect_timeout: Duration,
    /// When a failed datagram was last logged.
    datagram_failure_logged: Option<Instant>,
    #[cfg(test)]
    fault: Option<Fault>,
}

/// The engine's inputs: they outlive a failure of the engine, so a restarted engine reads
/// on where the failed one stopped.
struct Inbox {
    commands: mpsc::Receiver<Command>,
    media: mpsc::Receiver<Media>,
    net: mpsc::Receiver<Datagram>,
}

/// Whose a datagram is.
enum Owner {
    Publisher(usize),
    Viewer(usize),
}

/// How often the engine checks its sessions (connect timeouts, ended lectures, new dialects).
pub const MAINTAIN_EVERY: Duration = Duration::from_millis(500);

/// Channels into a running engine.
pub struct Handles {
    /// Commands.
    pub commands: mpsc::Sender<Command>,
}

/// What every engine (shard) shares.
#[derive(Clone)]
pub struct Shared {
    /// The lectures.
    pub hub: Arc<Hub>,
    /// WHIP publishers' Opus to AAC.
    pub transcoders: Arc<dyn Transcoders>,
    /// Lectures' AAC to Opus, once per dialect.
    pub opus: Arc<OpusFeeds>,
    /// Counters of all engines together.
    pub stats: Arc<Stats>,
    /// A viewer whose ICE and DTLS are not up within this time is dropped.
    pub connect_timeout: Duration,
    /// How often sessions are checked ([`MAINTAIN_EVERY`]).
    pub maintain_every: Duration,
}

impl Engine {
    /// Starts one engine and its socket readers. `sockets` maps each announced address to
    /// the socket bound for it; `load` is the engine's session count, which the HTTP side
    /// raises as it hands sessions over.
    pub fn start(
        sockets: HashMap<SocketAddr, Arc<Udp>>,
        tcp: Vec<(tokio::net::TcpListener, Arc<super::tcp::TcpPort>)>,
        shared: Shared,
        load: Arc<AtomicUsize>,
    ) -> Handles {
        let Shared {
            hub,
            transcoders,
            opus,
            stats,
            connect_timeout,
            maintain_every,
        } = shared;
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (media_tx, media_rx) = mpsc::channel(4096);
        let (net_tx, net_rx) = mpsc::channel(8192);
        for (announced, socket) in &sockets {
            tokio::spawn(read_socket(
                socket.clone(),
                *announced,
                net_tx.clone(),
                stats.clone(),
            ));
        }
        let mut tcp_ports = HashMap::new();
        for (listener, port) in tcp {
            tcp_ports.insert(port.announced, port.clone());
            tokio::spawn(super::tcp::serve(
                listener,
                port,
                net_tx.clone(),
                stats.clone(),
            ));
        }
        let engine = Engine {
            sockets: Ports {
                udp: sockets,
                tcp: tcp_ports,
            },
            sessions: Vec::new(),
            publishers: Vec::new(),
            by_remote: HashMap::new(),
            feeds: HashMap::new(),
            media_tx,
            hub,
            transcoders,
            opus,
            stats,
            load,
            connect_timeout,
            datagram_failure_logged: None,
            #[cfg(test)]
            fault: None,
        };
        let inbox = Inbox {
            commands: cmd_rx,
            media: media_rx,
            net: net_rx,
        };
        tokio::spawn(engine.supervise(inbox, maintain_every));
        Handles { commands: cmd_tx }
    }

    /// Runs the engine; after a panic, drops every session and runs it again on the same
    /// inputs. Viewers and publishers of the failed engine reconnect (players do by
    /// themselves); offers and commands queued meanwhile are served by the new one.
    async fn supervise(mut self, mut inbox: Inbox, maintain_every: Duration) {
        let mut last_failure: Option<Instant> = None;
        loop {
            let outcome = AssertUnwindSafe(self.run(&mut inbox, maintain_every))
                .catch_unwind()
                .await;
            let Err(panic) = outcome else { return };
            self.stats.engine_restarts.inc();
            let (viewers, publishers) = self.reset();
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            error!(
                viewers,
                publishers,
                restarts = self.stats.engine_restarts.get(),
                "WebRTC engine failed ({why}); restarted without its sessions"
            );
            // A failure that comes straight back must not spin.
            if last_failure.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            last_failure = Some(Instant::now());
        }
    }

    /// Drops every session, publisher and feed, as after a failure: counted as ended, so the
    /// capacity and the lectures' viewer counts stay true. Returns how many of each.
    fn reset(&mut self) -> (usize, usize) {
        let viewers = std::mem::take(&mut self.sessions);
        for s in &viewers {
            s.lecture.webrtc_leave(&s.lang);
            self.stats.sessions_ended.inc();
        }
        let publishers = std::mem::take(&mut self.publishers);
        self.stats.publishers_ended.add(publishers.len() as u64);
        self.load
            .fetch_sub(viewers.len() + publishers.len(), Ordering::Relaxed);
        self.by_remote.clear();
        self.feeds.clear();
        (viewers.len(), publishers.len())
    }

    async fn run(&mut self, inbox: &mut Inbox, maintain_every: Duration) {
        let mut tick = tokio::time::interval(maintain_every);
        loop {
            let next = self
                .sessions
                .iter()
                .map(|s| s.next_timeout)
                .chain(self.publishers.iter().map(|p| p.next_timeout))
                .chain(
                    self.feeds
                        .values()
                        .filter_map(|f| f.held.front().map(|h| h.0)),
                )
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            tokio::select! {
                Some(d) = inbox.net.recv() => self.on_datagram(d),
                Some(c) = inbox.commands.recv() => self.on_command(c),
                Some(m) = inbox.media.recv() => self.on_media(m),
                _ = tokio::time::sleep_until(next.into()) => self.on_timeout(Instant::now()),
                _ = tick.tick() => self.maintain(Instant::now()),
                else => break,
            }
            self.reap();
        }
    }

    fn on_datagram(&mut self, d: Datagram) {
        // Parsing and matching read bytes anyone can send, before any session vouches for
        // them: a bug there costs this datagram, not the engine.
        let claimed = std::panic::catch_unwind(AssertUnwindSafe(|| self.claim(&d)));
        let (owner, input) = match claimed {
            Ok(Some(claimed)) => claimed,
            Ok(None) => return,
            Err(_) => {
                self.stats.datagrams_failed.inc();
                let now = Instant::now();
                if self
                    .datagram_failure_logged
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
                {
                    self.datagram_failure_logged = Some(now);
                    warn!(source = %d.source, failed = self.stats.datagrams_failed.get(), "a datagram failed inside the engine (a bug); dropped");
                }
                return;
            }
        };
        match owner {
            Owner::Publisher(i) => {
                let p = &mut self.publishers[i];
                self.by_remote.insert(d.source, p.id.clone());
                contained_publisher(p, &self.stats, |p| {
                    if let Err(e) = p.rtc.handle_input(input) {
                        debug!(session = %p.id, "input: {e}");
                    }
                    drive_publisher(p, &self.sockets, &self.stats, self.transcoders.as_ref());
                });
            }
            Owner::Viewer(i) => {
                let s = &mut self.sessions[i];
                self.by_remote.insert(d.source, s.id.clone());
                contained(s, &self.stats, |s| {
                    if let Err(e) = s.rtc.handle_input(input) {
                        debug!(session = %s.id, "input: {e}");
                    }
                    drive(s, &self.sockets, &self.stats);
                });
                self.after_drive(i);
            }
        }
    }

    /// Parses a datagram and finds the publisher or viewer it belongs to.
    fn claim<'a>(&mut self, d: &'a Datagram) -> Option<(Owner, Input<'a>)> {
        #[cfg(test)]
        if self.fault.take_if(|f| *f == Fault::Datagram).is_some() {
            panic!("injected fault: a datagram breaks the parser");
        }
        let Ok(contents) = d.data.as_ref().try_into() else {
            self.stats.bad_datagrams.inc();
            return None;
        };
        let input = Input::Receive(
            Instant::now(),
            Receive {
                proto: d.proto,
                source: d.source,
                destination: d.destination,
                contents,
            },
        );
        let known = self.by_remote.get(&d.source);
        let publisher = known
            .and_then(|id| {
                self.publishers
                    .iter()
                    .position(|p| &p.id == id && p.rtc.accepts(&input))
            })
            .or_else(|| {
                // Not a viewer we know from this address: a publisher?
                let viewer = known.is_some_and(|id| self.sessions.iter().any(|s| &s.id == id));
                (!viewer)
                    .then(|| self.publishers.iter().position(|p| p.rtc.accepts(&input)))
                    .flatten()
            });
        if let Some(i) = publisher {
            return Some((Owner::Publisher(i), input));
        }
        let viewer = match known {
            Some(id) => self
                .sessions
                .iter()
                .position(|s| &s.id == id && s.rtc.accepts(&input)),
            None => None,
        }
        .or_else(|| self.sessions.iter().position(|s| s.rtc.accepts(&input)));
        match viewer {
            Some(i) => Some((Owner::Viewer(i), input)),
            None => {
                self.stats.unmatched_datagrams.inc();
                None
            }
        }
    }

    /// Things a drain may have made due: the first media after connecting.
    fn after_drive(&mut self, i: usize) {
        let s = &mut self.sessions[i];
        if s.connected && !s.started && !s.dead && s.video.is_some_and(|v| v.1.is_some()) {
            let cut = self.feeds.get(&s.lecture.id).map(|f| &f.gop);
            contained(s, &self.stats, |s| {
                start_video(s, cut, &self.sockets, &self.stats)
            });
        }
    }

    fn on_command(&mut self, c: Command) {
        match c {
            Command::Add(new) => self.add(*new),
            Command::AddPublisher(new) => self.add_publisher(*new),
            Command::Remove { id, reply } => {
                let found = self.sessions.iter_mut().find(|s| s.id == id);
                let mut existed = found.is_some();
                if let Some(s) = found {
                    s.rtc.disconnect();
                    s.dead = true;
                    info!(session = %s.id, lecture = %s.lecture_name, "viewer left (DELETE)");
                }
                if let Some(p) = self.publishers.iter_mut().find(|p| p.id == id) {
                    p.rtc.disconnect();
                    p.dead = true;
                    existed = true;
                    info!(session = %p.id, lecture = %p.stream, "publisher left (DELETE)");
                }
                let _ = reply.send(existed);
            }
            Command::Candidates { id, count, reply } => {
                // Adding them would cost the engine a rescan and re-sort of the session's
                // candidate pairs each, for candidates it never uses.
                let exists = self.publishers.iter().any(|p| p.id == id)
                    || self.sessions.iter().any(|s| s.id == id);
                if exists {
                    self.stats.candidates_ignored.add(count as u64);
                }
                let _ = reply.send(exists);
            }
            Command::Dialect { id, lang, reply } => {
                let Some(s) = self.sessions.iter_mut().find(|s| s.id == id) else {
                    let _ = reply.send(false);
                    return;
                };
                if *s.lang != *lang {
                    info!(session = %s.id, from = %s.lang, to = %lang, "viewer switched dialect");
                    s.lecture.webrtc_switch(&s.lang, &lang);
                    s.lang = lang.as_str().into();
                    s.switched_at = Some(Instant::now());
                    self.stats.dialect_switches.inc();
                }
                let _ = reply.send(true);
                self.ensure_feed(&id);
            }
            Command::Info { id, reply } => {
                if let Some(p) = self.publishers.iter().find(|p| p.id == id) {
                    let _ = reply.send(Some(serde_json::json!({
                        "lecture": &*p.stream,
                        "interpreter": p.interpreter.is_some(),
                        "connected": p.connected,
                        "frames_received": p.frames,
                        "age_ms": p.created.elapsed().as_millis() as u64,
                    })));
                    return;
                }
                let info = self.sessions.iter().find(|s| s.id == id).map(|s| {
                    serde_json::json!({
                        "lecture": &*s.lecture_name,
                        "lang": &*s.lang,
                        "connected": s.connected,
                        "frames_sent": s.frames_sent,
                        "frames_skipped": s.frames_skipped,
                        "age_ms": s.created.elapsed().as_millis() as u64,
                        "rtt_ms": s.rtt.map(|d| d.as_millis() as u64),
                        "retransmission_history_ms": if s.rtx_history.is_zero() {
                            RTX_MAX_HISTORY
                        } else {
                            s.rtx_history
                        }
                        .as_millis() as u64,
                    })
                });
                let _ = reply.send(info);
            }
            #[cfg(test)]
            Command::Fault { fault, reply } => {
                self.fault = Some(fault);
                let _ = reply.send(());
            }
        }
    }

    fn add(&mut self, new: NewSession) {
        // Joined the lecture's viewer count at the offer (`answer_offer`); left at removal.
        let name: Arc<str> = new.lecture.name.as_str().into();
        let mut s = Session {
            id: new.id,
            rtc: new.rtc,
            lecture: new.lecture,
            lecture_name: name,
            lang: new.lang.as_str().into(),
            created: Instant::now(),
            video: None,
            audio: None,
            connected: false,
            started: false,
            waiting_keyframe: false,
            video_line: RtpLine::default(),
            audio_line: RtpLine::default(),
            // Below 2^15, so the first rollover is far off and the ROC starts at 0 as the
            // browser assumes.
            video_seq: rand::random::<u64>() & 0x7fff,
            audio_seq: rand::random::<u64>() & 0x7fff,
            next_timeout: Instant::now(),
            dead: false,
            frames_sent: 0,
            frames_skipped: 0,
            connected_at: None,
            switched_at: None,
            small: false,
            want_small: false,
            link: LinkLoss::default(),
            rtt: None,
            rtx_history: Duration::ZERO,
            rtx_pending: None,
        };
        contained(&mut s, &self.stats, |s| {
            drive(s, &self.sockets, &self.stats)
        });
        let id = s.id.clone();
        self.sessions.push(s);
        self.ensure_feed(&id);
    }

    fn add_publisher(&mut self, new: NewPublisher) {
        let interpreter = new.interpreter.map(|l| (l, Aligner::new(48_000)));
        let mut p = Publisher {
            id: new.id,
            rtc: new.rtc,
            stream: new.stream.as_str().into(),
            created: Instant::now(),
            connected: false,
            dead: false,
            next_timeout: Instant::now(),
            sink: Arc::new(std::sync::Mutex::new(new.sink)),
            interpreter,
            video_mid: None,
            audio_mid: None,
            clock: CommonClock::default(),
            video: WhipVideo::default(),
            encoder: None,
            encoder_failed: false,
            audio_refused: Arc::default(),
            keyframe_every: new.keyframe_every,
            last_keyframe: None,
            last_pli: None,
            frames: 0,
            ingress: HashMap::new(),
        };
        contained_publisher(&mut p, &self.stats, |p| {
            drive_publisher(p, &self.sockets, &self.stats, self.transcoders.as_ref())
        });
        self.publishers.push(p);
    }

    /// Makes sure the lecture of session `id` has a running feed with a pump for its dialect.
    fn ensure_feed(&mut self, id: &str) {
        let Some(s) = self.sessions.iter().find(|s| s.id == id) else {
            return;
        };
        let (lecture, lang) = (s.lecture.clone(), s.lang.to_string());
        let media_tx = self.media_tx.clone();
        let stats = self.stats.clone();
        let feed = self.feeds.entry(lecture.id).or_insert_with(|| Feed {
            lecture: lecture.clone(),
            small: tokio::spawn(feed_video(
                lecture.clone(),
                media_tx.clone(),
                stats.clone(),
                true,
            )),
            small_seen: None,
            video: tokio::spawn(feed_video(lecture.clone(), media_tx, stats, false)),
            dialects: HashMap::new(),
            audio_lag: None,
            video_lag: None,
            held: Default::default(),
            gop: Default::default(),
        });
        // Every dialect of the lecture is transcoded while it has WebRTC viewers, so a switch
        // is heard at once.
        let mut dialects = feed.lecture.taps.dialects();
        if !dialects.contains(&lang) {
            dialects.push(lang);
        }
        for d in dialects {
            if !feed.dialects.contains_key(&d) {
                let task = tokio::spawn(feed_audio(
                    self.opus.subscribe(&feed.lecture, &d),
                    feed.lecture.id,
                    d.as_str().into(),
                    self.media_tx.clone(),
                    self.stats.clone(),
                ));
                feed.dialects.insert(d, task);
            }
        }
    }

    fn on_media(&mut self, m: Media) {
        match m {
            Media::Video { lecture, frame } => {
                let now = Instant::now();
                let Some(feed) = self.feeds.get_mut(&lecture) else {
                    return;
                };
                if frame.small {
                    // Later than the source already (it is made from it): sent as it comes.
                    feed.small_seen = Some(now);
                    self.deliver_video(lecture, &frame, Duration::ZERO);
                    return;
                }
                smooth(
                    &mut feed.video_lag,
                    now.saturating_duration_since(frame.wallclock).as_secs_f64() * 1000.0,
                );
                feed.remember(&frame);
                let hold = feed.hold();
                self.stats.av_hold_ms.observe(hold.as_secs_f64() * 1000.0);
                if hold.is_zero() && feed.held.is_empty() {
                    self.deliver_video(lecture, &frame, Duration::ZERO);
                } else {
                    feed.held.push_back((now + hold, hold, frame));
                }
            }
            Media::Audio {
                lecture,
                lang,
                pts,
                wallclock,
                data,
            } => {
                if let Some(feed) = self.feeds.get_mut(&lecture) {
                    let lag = Instant::now().saturating_duration_since(wallclock);
                    smooth(&mut feed.audio_lag, lag.as_secs_f64() * 1000.0);
                }
                for s in self.sessions.iter_mut() {
                    if s.lecture.id != lecture || s.lang != lang || !s.connected || s.dead {
                        continue;
                    }
                    let Some((mid, Some(pt))) = s.audio else {
                        continue;
                    };
                    // After a dialect switch the new dialect's packets may overlap what was
                    // already sent: keep the RTP timeline moving forward. A jump of the
                    // dialect's lecture time (a realignment) is gone across.
                    let jumps = s.audio_line.jumps();
                    let Some(shift) =
                        s.audio_line
                            .admit(pts, 48_000, OPUS_FRAME, AUDIO_OVERLAP, Instant::now())
                    else {
                        continue;
                    };
                    if s.audio_line.jumps() != jumps {
                        self.stats.timeline_jumps.inc();
                        debug!(session = %s.id, shift, "audio timeline jumped; the viewer's goes on");
                    }
                    if let Some(at) = s.switched_at.take() {
                        self.stats
                            .switch_ms
                            .observe(at.elapsed().as_secs_f64() * 1000.0);
                    }
                    contained(s, &self.stats, |s| {
                        let time = rtp_time(pts + shift);
                        let packet = std::slice::from_ref(&data);
                        // Opus is not retransmitted (str0m's own choice for audio): a NACKed
                        // 20 ms would come too late to play.
                        if send_rtp(s, mid, pt, Stream::Audio, time, wallclock, packet) {
                            self.stats.audio_packets.inc();
                        }
                        drive(s, &self.sockets, &self.stats);
                    });
                }
            }
            Media::Lagged { lecture } => {
                for s in self.sessions.iter_mut().filter(|s| s.lecture.id == lecture) {
                    s.waiting_keyframe = true;
                }
            }
        }
    }

    /// Writes a video frame to every started viewer of the lecture instance `lecture`.
    fn deliver_video(&mut self, lecture: u64, frame: &Arc<VideoFrame>, held: Duration) {
        // Viewers move down only to a smallest picture that is being made.
        let small_made = self
            .feeds
            .get(&lecture)
            .and_then(|f| f.small_seen)
            .is_some_and(|t| t.elapsed() < SMALL_GONE_AFTER);
        for i in 0..self.sessions.len() {
            let s = &mut self.sessions[i];
            if s.lecture.id != lecture || !s.started || s.dead {
                continue;
            }
            if s.small && !small_made {
                s.want_small = false;
            }
            // Pictures change at the source's keyframes, where the smallest picture has one
            // too: down, the source stops there and the small one's keyframe of the same
            // instant follows; up, the source's keyframe goes out at once.
            if !frame.small
                && frame.keyframe
                && s.want_small != s.small
                && (small_made || !s.want_small)
            {
                s.small = s.want_small;
                if s.small {
                    self.stats.moved_to_small.inc();
                    info!(session = %s.id, lecture = %s.lecture_name, loss = ?s.link.loss, "viewer's link is losing packets: moved to the smallest picture");
                    s.waiting_keyframe = true;
                } else {
                    self.stats.moved_to_source.inc();
                    info!(session = %s.id, lecture = %s.lecture_name, "viewer's link is clean again: back to the full picture");
                }
            }
            if frame.small != s.small {
                continue;
            }
            // Frames the viewer already has (its GOP burst) are skipped; a jump of the
            // video's lecture time is gone across.
            let jumps = s.video_line.jumps();
            let Some(shift) =
                s.video_line
                    .admit(frame.dts, 90_000, 3600, VIDEO_OVERLAP, Instant::now())
            else {
                continue;
            };
            if s.video_line.jumps() != jumps {
                self.stats.timeline_jumps.inc();
                debug!(session = %s.id, shift, "video timeline jumped; the viewer's goes on");
            }
            if s.waiting_keyframe {
                if !frame.keyframe {
                    s.frames_skipped += 1;
                    self.stats.frames_skipped.inc();
                    continue;
                }
                s.waiting_keyframe = false;
            }
            contained(s, &self.stats, |s| {
                write_video(
                    s,
                    frame,
                    frame.pts + shift,
                    frame.wallclock,
                    &self.sockets,
                    &self.stats,
                )
            });
            // Frame in to its RTP packets out, for every viewer (the last ones include the
            // fan-out before them), not counting the deliberate wait for the audio.
            let took = frame.arrived.elapsed().saturating_sub(held);
            self.stats
                .frame_to_rtp_ms
                .observe(took.as_secs_f64() * 1000.0);
        }
    }

    /// Sends video whose wait for the audio is over.
    fn release_held(&mut self, now: Instant) {
        let mut due = Vec::new();
        for (lecture, feed) in self.feeds.iter_mut() {
            while feed.held.front().is_some_and(|h| h.0 <= now) {
                let (_, hold, frame) = feed.held.pop_front().expect("checked");
                due.push((*lecture, hold, frame));
            }
        }
        for (lecture, hold, frame) in due {
            self.deliver_video(lecture, &frame, hold);
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        self.release_held(now);
        for p in self.publishers.iter_mut() {
            if p.next_timeout <= now && !p.dead {
                contained_publisher(p, &self.stats, |p| {
                    if let Err(e) = p.rtc.handle_input(Input::Timeout(now)) {
                        debug!(session = %p.id, "timeout: {e}");
                    }
                    drive_publisher(p, &self.sockets, &self.stats, self.transcoders.as_ref());
                });
            }
        }
        for i in 0..self.sessions.len() {
            let s = &mut self.sessions[i];
            if s.next_timeout <= now && !s.dead {
                contained(s, &self.stats, |s| {
                    if let Err(e) = s.rtc.handle_input(Input::Timeout(now)) {
                        debug!(session = %s.id, "timeout: {e}");
                    }
                    drive(s, &self.sockets, &self.stats);
                });
                self.after_drive(i);
            }
        }
    }

    fn maintain(&mut self, now: Instant) {
        #[cfg(test)]
        if self.fault.take_if(|f| *f == Fault::Maintenance).is_some() {
            panic!("injected fault: maintenance breaks");
        }
        for p in self.publishers.iter_mut() {
            if !p.connected && now.duration_since(p.created) > self.connect_timeout {
                info!(session = %p.id, lecture = %p.stream, "publisher did not connect within {:?}", self.connect_timeout);
                self.stats.sessions_timed_out.inc();
                p.dead = true;
                continue;
            }
            if p.connected && p.interpreter.is_none() && p.video_mid.is_some() {
                // Browsers send keyframes only when asked; segments need one each.
                let due = p
                    .last_keyframe
                    .is_none_or(|k| now.duration_since(k) >= p.keyframe_every);
                if due {
                    contained_publisher(p, &self.stats, |p| {
                        request_keyframe(p, now);
                        drive_publisher(p, &self.sockets, &self.stats, self.transcoders.as_ref());
                    });
                }
            }
            if let Some((lecture, _)) = &p.interpreter
                && matches!(lecture.status(), Status::Ended { .. })
            {
                info!(session = %p.id, lecture = %p.stream, "lecture ended: closing interpreter");
                p.rtc.disconnect();
                p.dead = true;
            }
        }
        for s in self.sessions.iter_mut() {
            if !s.connected && now.duration_since(s.created) > self.connect_timeout {
                info!(session = %s.id, lecture = %s.lecture_name, "viewer did not connect within {:?}", self.connect_timeout);
                self.stats.sessions_timed_out.inc();
                s.dead = true;
            }
            let gone = if s.lecture.is_feed() {
                // A class speaking back is in no map: its own status says.
                matches!(s.lecture.status(), Status::Ended { .. })
            } else {
                match self.hub.lecture(&s.lecture_name) {
                    Some(l) => {
                        !Arc::ptr_eq(&l, &s.lecture) || matches!(l.status(), Status::Ended { .. })
                    }
                    None => true,
                }
            };
            if gone {
                info!(session = %s.id, lecture = %s.lecture_name, "lecture ended: closing viewer");
                s.rtc.disconnect();
                s.dead = true;
            }
        }
        // New dialects appearing in watched lectures get their pumps.
        let ids: Vec<String> = self
            .sessions
            .iter()
            .filter(|s| !s.dead)
            .map(|s| s.id.clone())
            .collect();
        for id in ids {
            self.ensure_feed(&id);
        }
    }

    fn reap(&mut self) {
        if self.publishers.iter().any(|p| p.dead || !p.rtc.is_alive()) {
            let by_remote = &mut self.by_remote;
            let stats = &self.stats;
            let load = &self.load;
            self.publishers.retain(|p| {
                let keep = !p.dead && p.rtc.is_alive();
                if !keep {
                    by_remote.retain(|_, id| *id != p.id);
                    stats.publishers_ended.inc();
                    load.fetch_sub(1, Ordering::Relaxed);
                    info!(session = %p.id, lecture = %p.stream, frames = p.frames, "WHIP publisher removed");
                }
                keep
            });
        }
        if !self.sessions.iter().any(|s| s.dead || !s.rtc.is_alive()) {
            return;
        }
        let mut i = 0;
        while i < self.sessions.len() {
            let s = &self.sessions[i];
            if s.dead || !s.rtc.is_alive() {
                let s = self.sessions.swap_remove(i);
                s.lecture.webrtc_leave(&s.lang);
                self.by_remote.retain(|_, id| *id != s.id);
                self.stats.sessions_ended.inc();
                self.load.fetch_sub(1, Ordering::Relaxed);
                debug!(session = %s.id, "session removed");
            } else {
                i += 1;
            }
        }
        self.feeds
            .retain(|id, _| self.sessions.iter().any(|s| s.lecture.id == *id));
        // A burst of viewers (or of offers that never connected) must not keep its memory:
        // each slot holds a whole Rtc.
        if self.sessions.capacity() > 64 && self.sessions.len() < self.sessions.capacity() / 4 {
            self.sessions.shrink_to(self.sessions.len() * 2);
            self.by_remote.shrink_to(self.sessions.len() * 2);
        }
    }
}

/// Runs `f` on one viewer's session and contains a panic inside it (str0m panics on its own
/// invariant bugs): a bug there must cost that viewer, not every viewer on the engine. The
/// session is closed and counted.
fn contained(s: &mut Session, stats: &Stats, f: impl FnOnce(&mut Session)) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(s))).is_err() {
        warn!(session = %s.id, lecture = %s.lecture_name, "WebRTC session failed inside the engine (a bug); closed");
        stats.sessions_failed.inc();
        s.dead = true;
        // Far in the future: nothing more is asked of it before it is reaped.
        s.next_timeout = Instant::now() + Duration::from_secs(3600);
    }
}

/// [`contained`] for a publisher: a panic inside str0m closes that publisher only.
fn contained_publisher(p: &mut Publisher, stats: &Stats, f: impl FnOnce(&mut Publisher)) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(p))).is_err() {
        warn!(session = %p.id, lecture = %p.stream, "WHIP session failed inside the engine (a bug); closed");
        stats.sessions_failed.inc();
        p.dead = true;
        p.next_timeout = Instant::now() + Duration::from_secs(3600);
    }
}

/// Asks the publisher for a keyframe (PLI), at most once a second.
fn request_keyframe(p: &mut Publisher, now: Instant) {
    if p.last_pli
        .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
    {
        return;
    }
    let Some(mid) = p.video_mid else { return };
    if let Some(mut w) = p.rtc.writer(mid)
        && w.request_keyframe(None, KeyframeRequestKind::Pli).is_ok()
    {
        p.last_pli = Some(now);
    }
}

/// Sends one datagram from the socket it belongs to, without waiting: a full kernel buffer
/// drops it (and counts it) rather than hold up anybody else.
fn transmit(t: &str0m::net::Transmit, sockets: &Ports, stats: &Stats) {
    if t.proto == Protocol::Tcp {
        if let Some(port) = sockets.tcp.get(&t.source) {
            count_sent(port.send(t.destination, &t.contents, None), 1, stats);
        }
        return;
    }
    let socket = sockets
        .udp
        .get(&t.source)
        .or_else(|| sockets.udp.values().next());
    if let Some(socket) = socket {
        count_sent(socket.send(t.destination, &t.contents, None), 1, stats);
    }
}

fn count_sent(result: std::io::Result<()>, datagrams: u64, stats: &Stats) {
    match result {
        Ok(()) => stats.datagrams_sent.add(datagrams),
        Err(_) => {
            stats.datagrams_dropped.add(datagrams);
            stats.datagrams_dropped_out.add(datagrams);
        }
    }
}

/// Sends what one drain of a viewer produced, in as few system calls as the kernel allows:
/// a run of datagrams to the same address, all of one size but the last (a frame's RTP
/// packets), goes as one GSO send. Like [`transmit`], never waits.
fn transmit_all(
    out: &mut Vec<str0m::net::Transmit>,
    scratch: &mut Vec<u8>,
    sockets: &Ports,
    stats: &Stats,
) {
    let mut i = 0;
    while i < out.len() {
        let first = &out[i];
        if first.proto == Protocol::Tcp {
            // Each packet framed on its connection; no batching to gain.
            if let Some(port) = sockets.tcp.get(&first.source) {
                count_sent(
                    port.send(first.destination, &first.contents, None),
                    1,
                    stats,
                );
            }
            i += 1;
            continue;
        }
        let Some(socket) = sockets
            .udp
            .get(&first.source)
            .or_else(|| sockets.udp.values().next())
        else {
            out.clear();
            return;
        };
        let size = first.contents.len();
        let mut bytes = size;
        let mut j = i + 1;
        while j < out.len()
            && j - i < socket.max_segments()
            && out[j].proto == Protocol::Udp
            && out[j].source == first.source
            && out[j].destination == first.destination
            && out[j].contents.len() <= size
            && bytes + out[j].contents.len() <= socket.max_bytes()
        {
            bytes += out[j].contents.len();
            j += 1;
            if out[j - 1].contents.len() < size {
                break;
            }
        }
        if j - i == 1 {
            count_sent(
                socket.send(first.destination, &first.contents, None),
                1,
                stats,
            );
        } else {
            scratch.clear();
            for t in &out[i..j] {
                scratch.extend_from_slice(&t.contents);
            }
            let result = socket.send(first.destination, scratch, Some(size));
            count_sent(result, (j - i) as u64, stats);
        }
        i = j;
    }
    out.clear();
}

/// Drains a publisher's output: sends datagrams (RTCP, STUN), handles its media.
fn drive_publisher(
    p: &mut Publisher,
    sockets: &Ports,
    stats: &Stats,
    transcoders: &dyn Transcoders,
) {
    loop {
        match p.rtc.poll_output() {
            Ok(Output::Timeout(t)) => {
                p.next_timeout = t;
                return;
            }
            Ok(Output::Transmit(t)) => transmit(&t, sockets, stats),
            Ok(Output::Event(e)) => match e {
                Event::Connected => {
                    p.connected = true;
                    info!(session = %p.id, lecture = %p.stream, "publisher connected after {:?}", p.created.elapsed());
                }
                Event::MediaAdded(m) => match m.kind {
                    MediaKind::Video => p.video_mid = Some(m.mid),
                    MediaKind::Audio => p.audio_mid = Some(m.mid),
                },
                Event::MediaData(d) => on_media_data(p, d, transcoders),
                Event::MediaIngressStats(st) => {
                    let lost = st
                        .remote
                        .map(|r| r.packets.saturating_sub(st.packets))
                        .unwrap_or(0);
                    p.ingress.insert(st.mid, (st.packets, lost, st.rtt));
                    let t = TransportStats {
                        packets_received: p.ingress.values().map(|x| x.0).sum(),
                        packets_lost: p.ingress.values().map(|x| x.1).sum(),
                        rtt_ms: p
                            .ingress
                            .values()
                            .filter_map(|x| x.2)
                            .map(|d| d.as_secs_f64() * 1000.0)
                            .next(),
                        ..Default::default()
                    };
                    lock_sink(&p.sink).transport(t);
                }
                Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                    p.dead = true;
                }
                _ => {}
            },
            Err(e) => {
                warn!(session = %p.id, "rtc failed: {e}");
                p.dead = true;
                return;
            }
        }
    }
}

fn lock_sink(
    sink: &std::sync::Mutex<Box<dyn MediaSink>>,
) -> std::sync::MutexGuard<'_, Box<dyn MediaSink>> {
    sink.lock().unwrap_or_else(|e| e.into_inner())
}

/// Says which sender reports the publisher's clock would not use (each is refused once).
fn log_refused_reports(p: &mut Publisher) {
    for r in p.clock.take_refused() {
        let track = if r.track == whip_media::VIDEO {
            "video"
        } else {
            "audio"
        };
        info!(session = %p.id, lecture = %p.stream, track, "publisher's sender report not used: {}", r.reason);
    }
}

/// One depacketized frame from a publisher.
fn on_media_data(p: &mut Publisher, d: MediaData, transcoders: &dyn Transcoders) {
    p.frames += 1;
    let sr = d.last_sender_info.map(|s| SenderClock {
        ntp: s.ntp_time,
        rtp: s.rtp_time.numer(),
        packets: s.sender_packet_count,
    });
    let now = Instant::now();
    if Some(d.mid) == p.video_mid {
        if p.interpreter.is_some() {
            return;
        }
        let placed = p.clock.place(whip_media::VIDEO, d.time.numer(), 90_000, sr);
        log_refused_reports(p);
        let Some(pts) = placed else {
            return;
        };
        // Browsers send keyframes only when asked; each segment needs one. Asked as each
        // frame arrives, the keyframe comes one round trip after the segment target.
        if p.last_keyframe
            .is_some_and(|k| now.duration_since(k) >= p.keyframe_every)
        {
            request_keyframe(p, now);
        }
        match p.video.frame(pts, &d.data, d.contiguous) {
            VideoOutcome::Events(events) => {
                let mut sink = lock_sink(&p.sink);
                for e in events {
                    if let MediaEvent::Frame { frame, .. } = &e
                        && frame.keyframe
                    {
                        p.last_keyframe = Some(now);
                    }
                    if let Err(err) = sink.handle(e) {
                        warn!(session = %p.id, lecture = %p.stream, "publisher's video refused: {err}");
                        p.dead = true;
                        return;
                    }
                }
            }
            VideoOutcome::NeedKeyframe => request_keyframe(p, now),
        }
    } else if Some(d.mid) == p.audio_mid {
        if let Some(why) = p.audio_refused.get() {
            warn!(session = %p.id, lecture = %p.stream, "publisher's audio refused: {why}");
            p.dead = true;
            return;
        }
        let rate = d.time.frequency().get();
        let t = match &mut p.interpreter {
            Some((lecture, aligner)) => {
                let Some(now90) = lecture.taps.lecture_time_at(d.network_time) else {
                    // The lecture's publisher is between sessions: no timeline to join.
                    return;
                };
                let before = aligner.corrections();
                let t = aligner.place(d.time.numer() as i64, now90);
                if aligner.corrections() != before {
                    debug!(session = %p.id, lecture = %p.stream, corrections = aligner.corrections(), "interpreter re-aligned to the lecture");
                }
                t
            }
            None => {
                let placed = p.clock.place(whip_media::AUDIO, d.time.numer(), rate, sr);
                log_refused_reports(p);
                match placed {
                    Some(t) => t,
                    None => return,
                }
            }
        };
        if t < 0 {
            return;
        }
        if p.encoder.is_none() && !p.encoder_failed {
            let sink = p.sink.clone();
            let mut announced = false;
            let refused = p.audio_refused.clone();
            let on_frame = Box::new(move |f: media::encode::AacFrame| {
                if refused.get().is_some() {
                    return;
                }
                let mut sink = lock_sink(&sink);
                if !announced {
                    let info = media::TrackInfo::new(media::CodecParams::Aac(f.params.clone()));
                    if let Err(e) = sink.handle(MediaEvent::Track {
                        id: whip_media::AUDIO,
                        info,
                    }) {
                        let _ = refused.set(e.to_string());
                        return;
                    }
                    announced = true;
                }
                if let Err(e) = sink.handle(whip_media::aac_frame(f.pts, f.data)) {
                    let _ = refused.set(e.to_string());
                }
            });
            match transcoders.to_aac(&AudioSource::Opus { channels: 2 }, on_frame) {
                Ok(e) => p.encoder = Some(e),
                Err(e) => {
                    warn!(session = %p.id, "cannot transcode the publisher's Opus: {e}");
                    lock_sink(&p.sink).input_error(format!("Opus to AAC: {e}"));
                    p.encoder_failed = true;
                }
            }
        }
        if let Some(e) = p.encoder.as_mut()
            && let Err(err) = e.push(t, rate, &d.data)
        {
            debug!(session = %p.id, "opus input: {err}");
        }
        // WebRTC viewers get the Opus as it came; the AAC above is for HLS and recording.
        if rate == 48_000 && media::opus::packet_samples(&d.data).is_some() {
            lock_sink(&p.sink).opus(whip_media::AUDIO, t, &d.data);
        }
    }
}

/// Drains a session's output: sends datagrams, handles events, records the next timeout.
fn drive(s: &mut Session, sockets: &Ports, stats: &Stats) {
    thread_local! {
        /// One drain's datagrams and the bytes of a GSO send: kept per thread so a drain
        /// allocates nothing once they have grown.
        static OUT: std::cell::RefCell<(Vec<str0m::net::Transmit>, Vec<u8>)> =
            const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    }
    OUT.with_borrow_mut(|(out, scratch)| {
        // Empty unless a drain panicked half-way (a contained session failure): what that
        // session left is not sent on another's behalf.
        out.clear();
        drain(s, out, stats);
        transmit_all(out, scratch, sockets, stats);
    });
}

/// A smallest picture without a frame for this long is no longer being made.
const SMALL_GONE_AFTER: Duration = Duration::from_secs(6);

/// Receiver reports with more than this fraction of the video lost (smoothed) are lossy.
const LOSSY: f64 = 0.05;
/// This many lossy reports in a row (about a second apart) move a viewer to the smallest
/// picture.
const LOSSY_REPORTS: u32 = 3;
/// Below this loss for [`CLEAN_FOR`] (doubled each time the source was tried and lost
/// again, up to [`MAX_CLEAN_FOR`]), a viewer on the smallest picture gets the source again.
const CLEAN: f64 = 0.01;
const CLEAN_FOR: Duration = Duration::from_secs(60);
const MAX_CLEAN_FOR: Duration = Duration::from_secs(16 * 60);

/// A viewer's link as its receiver reports tell it, sans-IO: which picture it should get.
#[derive(Debug, Default, Clone)]
pub(crate) struct LinkLoss {
    /// Fraction of the video lost, smoothed.
    pub(crate) loss: Option<f64>,
    lossy_reports: u32,
    clean_since: Option<Instant>,
    /// On the smallest picture now.
    small: bool,
    /// Times it went back to the source and had to come down again.
    retries: u32,
}

impl LinkLoss {
    /// Takes one report's fraction lost; whether the viewer should get the smallest picture.
    pub(crate) fn note(&mut self, fraction: f64, now: Instant) -> bool {
        let loss = match self.loss {
            Some(old) => old + (fraction - old) * 0.5,
            None => fraction,
        };
        self.loss = Some(loss);
        if loss > LOSSY {
            self.lossy_reports += 1;
            self.clean_since = None;
        } else {
            self.lossy_reports = 0;
            if loss < CLEAN {
                self.clean_since.get_or_insert(now);
            } else {
                self.clean_since = None;
            }
        }
        let wait = CLEAN_FOR
            .saturating_mul(1 << self.retries.min(4))
            .min(MAX_CLEAN_FOR);
        if !self.small && self.lossy_reports >= LOSSY_REPORTS {
            self.small = true;
            self.lossy_reports = 0;
        } else if self.small
            && self
                .clean_since
                .is_some_and(|t| now.duration_since(t) >= wait)
        {
            self.small = false;
            self.clean_since = None;
            // If the source is lost again, the next try waits longer.
            self.retries += 1;
        }
        if !self.small
            && self
                .clean_since
                .is_some_and(|t| now.duration_since(t) >= wait)
        {
            // The source held: the next fall starts from the first wait.
            self.retries = 0;
        }
        self.small
    }
}

/// Polls a viewer's `Rtc` until it wants only time, collecting its datagrams in `out`.
fn drain(s: &mut Session, out: &mut Vec<str0m::net::Transmit>, stats: &Stats) {
    loop {
        match s.rtc.poll_output() {
            Ok(Output::Timeout(t)) => {
                s.next_timeout = t;
                return;
            }
            Ok(Output::Transmit(t)) => out.push(t),
            Ok(Output::Event(e)) => match e {
                Event::Connected => {
                    s.connected = true;
                    s.connected_at = Some(Instant::now());
                    info!(session = %s.id, lecture = %s.lecture_name, "viewer connected after {:?}", s.created.elapsed());
                }
                Event::MediaAdded(m) => {
                    let profile =
                        s.lecture
                            .hls()
                            .renditions()
                            .iter()
                            .find_map(|r| match &r.info.codec {
                                CodecParams::H264(h) if r.kind() == TrackKind::Video => {
                                    Some(h.profile)
                                }
                                _ => None,
                            });
                    let pt = s
                        .rtc
                        .writer(m.mid)
                        .and_then(|w| choose_pt(w.payload_params(), m.kind, profile));
                    match m.kind {
                        MediaKind::Video => s.video = Some((m.mid, pt)),
                        MediaKind::Audio => s.audio = Some((m.mid, pt)),
                    }
                }
                // An RTMP source cannot make a keyframe on demand: skip the useless frames
                // until the next one comes.
                Event::KeyframeRequest(_) if !s.waiting_keyframe => {
                    s.waiting_keyframe = true;
                    stats.keyframe_requests.inc();
                }
                Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                    s.dead = true;
                }
                Event::MediaEgressStats(st) if s.video.is_some_and(|(m, _)| m == st.mid) => {
                    if let Some(loss) = st.loss {
                        s.want_small = s.link.note(loss as f64, Instant::now());
                    }
                    if st.rtt.is_some() {
                        s.rtt = st.rtt;
                    }
                    // str0m's history until the instant start's burst is well behind.
                    if s.connected_at
                        .is_some_and(|t| t.elapsed() >= RTX_SIZED_AFTER)
                        && let Some(h) = rtx_history(s.rtt, s.rtx_pending.unwrap_or(s.rtx_history))
                    {
                        s.rtx_pending = Some(h);
                    }
                }
                _ => {}
            },
            Err(e) => {
                warn!(session = %s.id, "rtc failed: {e}");
                s.dead = true;
                return;
            }
        }
    }
}

/// Shortest time a viewer's video stays in its retransmission history, and what it keeps
/// while its round-trip time is unknown. As libwebrtc's own sender (`RtpPacketHistory`:
/// max(1 s, 3 × RTT)): a NACK comes a round trip after the loss, and a browser asks again
/// each round trip. str0m keeps 3 s for everyone, ≈ 430 bytes of record per packet: two
/// thirds of what a viewer on a short line costs in memory, for NACKs that never come.
const RTX_MIN_HISTORY: Duration = Duration::from_secs(1);
/// A viewer keeps str0m's history (3 s, up to `SEND_BUFFER_VIDEO` packets) this long after it
/// connected: its instant start sends the current GOP at once (up to 2 s of video), which must
/// stay repairable, and grows the history's ring to its cap; the history sized afterwards
/// starts small and grows only to what its age holds.
const RTX_SIZED_AFTER: Duration = Duration::from_secs(4);
/// Longest: str0m's default, what every viewer kept before (a 1 s+ round trip, a village
/// line with a full queue). The packet count (`SEND_BUFFER_VIDEO`) caps it as before.
const RTX_MAX_HISTORY: Duration = Duration::from_secs(3);

/// The retransmission history a viewer with this round-trip time needs, if it should change
/// from `now` (zero: never set). str0m empties the history when it is resized (done at a
/// keyframe, see `write_video`), so a viewer is resized at most twice: once to its round
/// trip's need, and once to the longest history if its round trip grows by a quarter or
/// more after that (a filling queue, when losses come).
pub(crate) fn rtx_history(rtt: Option<Duration>, now: Duration) -> Option<Duration> {
    let want = rtt.map_or(RTX_MIN_HISTORY, |r| {
        (r * 3).clamp(RTX_MIN_HISTORY, RTX_MAX_HISTORY)
    });
    if now.is_zero() {
        Some(want)
    } else {
        (want > now + now / 4 && now < RTX_MAX_HISTORY).then_some(RTX_MAX_HISTORY)
    }
}

/// Sizes the video's retransmission history (see [`rtx_history`]).
fn set_rtx_history(s: &mut Session, mid: Mid, history: Option<Duration>) {
    let Some(history) = history else { return };
    let mut api = s.rtc.direct_api();
    let Some(tx) = api.stream_tx_by_mid(mid, None) else {
        return;
    };
    // str0m's own cap on resends (15 % of the bytes) stays.
    tx.set_rtx_cache(super::SEND_BUFFER_VIDEO, history, Some(0.15));
    s.rtx_history = history;
}

/// The payload type to send with: H.264 with packetization-mode 1, preferring the stream's
/// own profile; Opus for audio.
fn choose_pt<'a>(
    params: impl Iterator<Item = &'a str0m::format::PayloadParams>,
    kind: MediaKind,
    profile: Option<u8>,
) -> Option<Pt> {
    params
        .filter_map(|p| {
            let spec = p.spec();
            let score = match (kind, spec.codec) {
                (MediaKind::Audio, Codec::Opus) => 1,
                (MediaKind::Video, Codec::H264) if spec.format.packetization_mode == Some(1) => {
                    let offered = spec.format.profile_level_id.map(|v| (v >> 16) as u8);
                    if offered.is_some() && offered == profile {
                        3
                    } else {
                        2
                    }
                }
                _ => return None,
            };
            Some((score, p.pt()))
        })
        .max_by_key(|(score, _)| *score)
        .map(|(_, pt)| pt)
}

fn write_video(
    s: &mut Session,
    frame: &VideoFrame,
    rtp_pts: i64,
    wallclock: Instant,
    sockets: &Ports,
    stats: &Stats,
) {
    let Some((mid, Some(pt))) = s.video else {
        return;
    };
    let time = rtp_time(rtp_pts);
    // Resizing empties the history: at a keyframe, the viewer needs nothing from before.
    if frame.keyframe && s.rtx_pending.is_some() {
        let pending = s.rtx_pending.take();
        set_rtx_history(s, mid, pending);
    }
    match send_rtp(s, mid, pt, Stream::Video, time, wallclock, &frame.packets) {
        true => {
            s.frames_sent += 1;
            stats.video_frames.inc();
            if frame.keyframe
                && s.frames_sent <= 1
                && let Some(at) = s.connected_at
            {
                stats
                    .first_frame_ms
                    .observe(at.elapsed().as_secs_f64() * 1000.0);
            }
        }
        false => debug!(session = %s.id, "no video stream to write to"),
    }
    drive(s, sockets, stats);
}

/// The 32-bit RTP timestamp of a time on the viewer's line (wrapping, as RTP does).
fn rtp_time(t: i64) -> u32 {
    t.max(0) as u64 as u32
}

/// Which of a viewer's streams.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stream {
    Video,
    Audio,
}

/// Queues shared payloads on one of the viewer's send streams, numbered in the viewer's own
/// sequence, then moves its `Rtc` to now so they leave in the drain that follows, not at the
/// engine's next timeout pass. Video is kept for retransmission (by reference: the payloads
/// are the lecture's). False if the viewer has no such stream.
fn send_rtp(
    s: &mut Session,
    mid: Mid,
    pt: Pt,
    stream: Stream,
    time: u32,
    wallclock: Instant,
    packets: &[Arc<[u8]>],
) -> bool {
    let video = stream == Stream::Video;
    let seq = if video {
        &mut s.video_seq
    } else {
        &mut s.audio_seq
    };
    let mut api = s.rtc.direct_api();
    let Some(tx) = api.stream_tx_by_mid(mid, None) else {
        return false;
    };
    let last = packets.len().saturating_sub(1);
    for (i, payload) in packets.iter().enumerate() {
        tx.write_rtp(
            RtpWrite::new(pt, (*seq).into(), time, wallclock, payload.clone())
                .marker(video && i == last)
                .nackable(video),
        );
        *seq += 1;
    }
    if let Err(e) = s.rtc.handle_input(Input::Timeout(Instant::now())) {
        debug!(session = %s.id, "timeout: {e}");
    }
    true
}

/// Instant start: send the current GOP from its keyframe at once, with timestamps squeezed
/// just before the live edge so the browser decodes it all and shows the newest picture
/// immediately, then go on with live frames.
fn start_video(
    s: &mut Session,
    cut: Option<&std::collections::VecDeque<Arc<VideoFrame>>>,
    sockets: &Ports,
    stats: &Stats,
) {
    s.started = true;
    let (gop, _) = s.lecture.taps.subscribe_video_with_gop();
    // The feed has cut most of these already; those it has not (just started, or frames
    // still on their way to it) are cut here.
    let mut packetizer = H264Packetizer::default();
    let frames: Vec<Arc<VideoFrame>> = gop
        .iter()
        .filter_map(|f| {
            cut.and_then(|c| {
                c.iter()
                    .find(|v| v.dts == f.dts && v.keyframe == f.keyframe)
            })
            .cloned()
            .or_else(|| annexb(f, &mut packetizer).map(Arc::new))
        })
        .collect();
    let Some(last) = frames.last() else {
        s.waiting_keyframe = true;
        return;
    };
    let (last_pts, last_dts, last_wall) = (last.pts, last.dts, last.wallclock);
    let n = frames.len() as i64;
    let shift = s.video_line.shift();
    for (i, f) in frames.iter().enumerate() {
        let behind = n - 1 - i as i64;
        let wall = last_wall
            .checked_sub(Duration::from_micros(behind as u64 * 11))
            .unwrap_or(last_wall);
        write_video(s, f, last_pts + shift - behind, wall, sockets, stats);
    }
    s.video_line.sent(last_dts, Instant::now());
    stats.gop_bursts.inc();
}

async fn read_socket(
    socket: Arc<Udp>,
    announced: SocketAddr,
    tx: mpsc::Sender<Datagram>,
    stats: Arc<Stats>,
) {
    // Each buffer takes what GRO may coalesce from one sender (up to 64 KiB).
    let mut bufs = vec![vec![0u8; 65_536]; quinn_udp::BATCH_SIZE];
    let mut meta = vec![quinn_udp::RecvMeta::default(); quinn_udp::BATCH_SIZE];
    loop {
        let mut slices: Vec<std::io::IoSliceMut> = bufs
            .iter_mut()
            .map(|b| std::io::IoSliceMut::new(b))
            .collect();
        match socket.recv(&mut slices, &mut meta).await {
            Ok(n) => {
                for (m, buf) in meta.iter().zip(bufs.iter()).take(n) {
                    let stride = m.stride.max(1);
                    for data in buf[..m.len].chunks(stride) {
                        let d = Datagram {
                            source: m.addr,
                            destination: announced,
                            data: Bytes::copy_from_slice(data),
                            proto: Protocol::Udp,
                        };
                        if tx.try_send(d).is_err() {
                            stats.datagrams_dropped.inc();
                            stats.datagrams_dropped_in.inc();
                        }
                    }
                }
            }
            Err(e) => {
                // ICMP port unreachable from a vanished viewer surfaces here; keep going.
                debug!("udp receive: {e}");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

async fn feed_video(
    lecture: Arc<Lecture>,
    tx: mpsc::Sender<Media>,
    stats: Arc<Stats>,
    small: bool,
) {
    let mut rx = if small {
        lecture.taps.subscribe_small()
    } else {
        lecture.taps.subscribe(&TapTrack::Video)
    };
    let mut packetizer = H264Packetizer::default();
    loop {
        match rx.recv().await {
            Ok(f) => {
                let Some(mut frame) = annexb(&f, &mut packetizer) else {
                    continue;
                };
                frame.small = small;
                if tx
                    .send(Media::Video {
                        lecture: lecture.id,
                        frame: Arc::new(frame),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                stats.feed_lagged.add(n);
                if tx
                    .send(Media::Lagged {
                        lecture: lecture.id,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// One dialect's Opus (shared by every engine, [`OpusFeeds`]) into this engine.
async fn feed_audio(
    mut rx: broadcast::Receiver<Arc<OpusPacket>>,
    lecture: u64,
    lang: Arc<str>,
    tx: mpsc::Sender<Media>,
    stats: Arc<Stats>,
) {
    loop {
        match rx.recv().await {
            Ok(p) => {
                let m = Media::Audio {
                    lecture,
                    lang: lang.clone(),
                    pts: p.pts,
                    wallclock: p.wallclock,
                    data: p.data.clone(),
                };
                // Never wait: a full queue means the engine is behind, and late sound is
                // worse than a gap.
                match tx.try_send(m) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => stats.audio_dropped.inc(),
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => stats.feed_lagged.add(n),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use media::sink::{Publish, PublishRequest};
    use tokio::net::UdpSocket;

    #[test]
    fn a_lossy_link_moves_down_and_comes_back_up_ever_more_cautiously() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut l = LinkLoss::default();
        // A clean link stays on the source; one bad report is not enough.
        for s in 0..10 {
            assert!(!l.note(0.0, at(s)));
        }
        assert!(!l.note(0.3, at(10)));
        for s in 11..14 {
            assert!(!l.note(0.0, at(s)));
        }
        // Three lossy reports in a row: the smallest picture.
        assert!(!l.note(0.3, at(14)));
        assert!(!l.note(0.3, at(15)));
        assert!(l.note(0.3, at(16)));
        // Clean again: it stays small for a minute, then tries the source.
        let mut up = None;
        for s in 17..200 {
            if !l.note(0.0, at(s)) {
                up = Some(s);
                break;
            }
        }
        let first = up.expect("never back up");
        assert!((75..90).contains(&first), "{first}");
        // The source is lost again: down, and the next try waits twice as long.
        for s in first + 1..first + 4 {
            l.note(0.5, at(s));
        }
        assert!(l.note(0.5, at(first + 4)));
        let mut up = None;
        for s in first + 5..first + 400 {
            if !l.note(0.0, at(s)) {
                up = Some(s - first);
                break;
            }
        }
        let second = up.expect("never back up");
        assert!((125..145).contains(&second), "{second}");
    }

    /// A frame's packets (equal sizes, a shorter last one), then another viewer's, then a
    /// lone STUN-sized datagram: every datagram arrives whole, in order, at its own
    /// address, and the engine's socket reads a burst of them back as datagrams, not as
    /// GRO-merged lumps.
    #[tokio::test]
    async fn batched_sends_arrive_as_the_datagrams_they_were() {
        let relay = Arc::new(Udp::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()).unwrap());
        let from = relay.local_addr().unwrap();
        let sockets = HashMap::from([(from, relay.clone())]);
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let datagram = |to: &std::net::UdpSocket, n: usize, fill: u8| str0m::net::Transmit {
            proto: Protocol::Udp,
            source: from,
            destination: to.local_addr().unwrap(),
            contents: vec![fill; n].into(),
        };
        let mut out = vec![
            datagram(&a, 1100, 1),
            datagram(&a, 1100, 2),
            datagram(&a, 1100, 3),
            datagram(&a, 400, 4),
            datagram(&b, 1100, 5),
            datagram(&b, 700, 6),
            datagram(&a, 90, 7),
        ];
        let stats = Stats::default();
        let mut scratch = Vec::new();
        // Sends never wait, so the socket must first be seen writable (the reactor's first
        // turn after it was registered), as an engine's long-lived socket always has been.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let ports = Ports {
            udp: sockets,
            tcp: HashMap::new(),
        };
        transmit_all(&mut out, &mut scratch, &ports, &stats);
        assert!(out.is_empty());
        assert_eq!(stats.datagrams_sent.get(), 7);
        let read = |s: &std::net::UdpSocket, n: usize| -> Vec<(usize, u8)> {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 2048];
            (0..n)
                .map(|_| {
                    let (len, _) = s.recv_from(&mut buf).unwrap();
                    assert!(buf[..len].iter().all(|x| *x == buf[0]));
                    (len, buf[0])
                })
                .collect()
        };
        assert_eq!(
            read(&a, 5),
            [(1100, 1), (1100, 2), (1100, 3), (400, 4), (90, 7)]
        );
        assert_eq!(read(&b, 2), [(1100, 5), (700, 6)]);

        // Back the other way: a burst sent in one GSO call, read by the engine's reader.
        let (tx, mut rx) = mpsc::channel(64);
        let reader = tokio::spawn(read_socket(
            relay.clone(),
            from,
            tx,
            Arc::new(Stats::default()),
        ));
        let sender = Arc::new(Udp::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()).unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let burst: Vec<u8> = (0..10u8).flat_map(|i| [i; 1000]).collect();
        sender.send(from, &burst, Some(1000)).unwrap();
        for i in 0..10u8 {
            let d = tokio::time::timeout(Duration::from_secs(2), rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(d.data.len(), 1000);
            assert!(d.data.iter().all(|x| *x == i), "datagram {i}");
            assert_eq!(d.source, sender.local_addr().unwrap());
        }
        reader.abort();
    }

    #[test]
    fn a_panic_inside_one_session_closes_only_that_session() {
        let config = config::Config::from_toml_str_with_env(
            "[demo]\nenabled = false\n[lectures]\nallow_unconfigured = true\n",
            std::iter::empty(),
        )
        .unwrap();
        let hub = Hub::new(Arc::new(config));
        let _sink = hub
            .publish(PublishRequest {
                stream: "l".into(),
                key: None,
                language: None,
                protocol: "test",
                remote: None,
            })
            .unwrap();
        let session = |id: &str| Session {
            id: id.into(),
            rtc: Rtc::new(Instant::now()),
            lecture: hub.lecture("l").unwrap(),
            lecture_name: "l".into(),
            lang: "cmn".into(),
            created: Instant::now(),
            video: None,
            audio: None,
            connected: true,
            started: true,
            waiting_keyframe: false,
            video_line: RtpLine::default(),
            audio_line: RtpLine::default(),
            // Below 2^15, so the first rollover is far off and the ROC starts at 0 as the
            // browser assumes.
            video_seq: rand::random::<u64>() & 0x7fff,
            audio_seq: rand::random::<u64>() & 0x7fff,
            next_timeout: Instant::now(),
            dead: false,
            frames_sent: 0,
            frames_skipped: 0,
            connected_at: None,
            switched_at: None,
            small: false,
            want_small: false,
            link: LinkLoss::default(),
            rtt: None,
            rtx_history: Duration::ZERO,
            rtx_pending: None,
        };
        let stats = Stats::default();
        let (mut a, mut b) = (session("a"), session("b"));
        contained(&mut a, &stats, |_| panic!("an invariant inside str0m"));
        contained(&mut b, &stats, |s| s.frames_sent += 1);
        assert!(a.dead && a.next_timeout > Instant::now() + Duration::from_secs(60));
        assert!(!b.dead && b.frames_sent == 1);
        assert_eq!(stats.sessions_failed.get(), 1);
    }
}
