//! The live channel of a lecture: `GET /ws/NAME` upgrades to a WebSocket on which the relay
//! pushes the lecture's state (scheduled, live, reconnecting, ended; title; dialects) as it
//! changes and viewer counts every few seconds, and a classroom can send a text question or
//! raise its hand. The lecture's operator reads those at `GET /api/v1/streams/NAME/questions`;
//! a player refused a channel polls the same state at `GET /api/v1/streams/NAME/state`.
//!
//! Everything a client sends is bounded: 4 KiB per message, a token bucket of messages,
//! 500 characters per question, 64 per sender name, control characters removed. Messages are
//! stored as plain text and never rendered as HTML by anything we ship.
//!
//! What a client holds is bounded too (`[channel]`): connections in all and per address
//! (refused before the upgrade), a ping every `ping_interval_ms` and a close after
//! `idle_timeout_ms` without a frame from the client (a socket that does not read never
//! answers a ping), and a deadline on every send.
//!
//! A lecture's state is built once per change and shared: one task follows the hub's events
//! and puts the serialized state of each watched lecture in a `watch` channel that all its
//! sockets read. Questions are kept only for lectures that exist (configured or published)
//! and are forgotten with the lecture they were asked in.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use axum::extract::{ConnectInfo, Path, Query, State, WebSocketUpgrade};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use media::limits::Limit;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{debug, info};

use crate::http::{ApiError, AppState};
use crate::hub::{Hub, Status};

/// Largest message a client may send.
pub const MAX_MESSAGE: usize = 4 * 1024;
/// Read buffer of a channel's socket: room for one largest message.
const READ_BUFFER: usize = MAX_MESSAGE + 1024;
/// Most bytes a channel's socket may hold unsent (a client not reading is closed at
/// `channel.send_timeout_ms` anyway).
const MAX_WRITE_BUFFER: usize = 64 * 1024;
/// Longest question.
pub const MAX_QUESTION_CHARS: usize = 500;
/// Longest sender name.
pub const MAX_FROM_CHARS: usize = 64;
/// Questions kept per lecture.
pub const MAX_KEPT: usize = 1000;
/// The window of `channel.questions_per_address_per_minute`.
const MINUTE: Duration = Duration::from_secs(60);
/// How often viewer counts are pushed.
const VIEWERS_EVERY: Duration = Duration::from_secs(5);
/// Watched lectures' states are rebuilt this often even without a change in the hub.
const STATES_EVERY: Duration = Duration::from_secs(30);

/// A question or a raised hand.
#[derive(Debug, Clone, Serialize)]
pub struct Question {
    /// Increasing id.
    pub id: u64,
    /// When it arrived (RFC 3339).
    pub at: String,
    /// `question` or `hand`.
    pub kind: &'static str,
    /// Who sent it (a classroom's name), as given.
    pub from: Option<String>,
    /// The question text (none for a raised hand).
    pub text: Option<String>,
    /// The live channel it came from, for an answer to that class alone (ask back).
    #[serde(skip)]
    pub(crate) reply: Option<mpsc::Sender<Value>>,
}

/// The questions of one lecture name.
#[derive(Debug)]
struct Kept {
    /// The lecture they were asked in (its start time, which tells two lectures of one name
    /// apart), or none for questions asked before a configured lecture started.
    instance: Option<SystemTime>,
    list: VecDeque<Question>,
}

/// Live-channel connections: in all, per client address, per lecture.
#[derive(Debug, Default)]
struct Connections {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
    by_lecture: HashMap<String, usize>,
}

/// The shared messages of one watched lecture.
#[derive(Debug)]
struct Watched {
    /// The serialized state; none once the name is no lecture at all.
    state: watch::Sender<Option<Utf8Bytes>>,
    /// The serialized viewer counts, refreshed every [`VIEWERS_EVERY`].
    viewers: watch::Sender<Utf8Bytes>,
}

/// Questions by lecture, live-channel connections, and the shared state of every lecture a
/// live channel watches.
#[derive(Debug, Default)]
pub struct Questions {
    by_lecture: Mutex<HashMap<String, Kept>>,
    next: AtomicU64,
    connections: Mutex<Connections>,
    watched: Mutex<HashMap<String, Watched>>,
    /// Held from a state's build to its send, so an older build never overwrites a newer.
    refreshing: Mutex<()>,
    follower: std::sync::OnceLock<()>,
    state_builds: AtomicU64,
    /// Questions and raised hands per client address in the current minute.
    asked: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a live channel was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// `channel.max_connections` reached.
    Full,
    /// `channel.max_per_address` reached for this client.
    Address,
}

use media::limits::address_key;

impl Questions {
    /// Adds a question to the lecture `name` of `hub`, if that lecture exists (published, or
    /// configured and not yet started).
    pub(crate) fn add(
        &self,
        hub: &Hub,
        lecture: &str,
        kind: &'static str,
        from: Option<String>,
        text: Option<String>,
        reply: Option<mpsc::Sender<Value>>,
    ) -> Option<u64> {
        // Checked and stored under one lock, so the lecture cannot be forgotten (and its
        // questions pruned, see `prune`) in between.
        let mut map = lock(&self.by_lecture);
        let instance = hub.lecture(lecture).map(|l| l.started);
        if instance.is_none() && hub.config().lecture(lecture).is_none() {
            return None;
        }
        let kept = map.entry(lecture.to_string()).or_insert_with(|| Kept {
            instance,
            list: VecDeque::new(),
        });
        if kept.instance != instance {
            if kept.instance.is_some() {
                // Asked in an earlier lecture of this name.
                kept.list.clear();
            }
            kept.instance = instance;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        if kept.list.len() >= MAX_KEPT {
            kept.list.pop_front();
        }
        kept.list.push_back(Question {
            id,
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            kind,
            from,
            text,
            reply,
        });
        Some(id)
    }

    /// The questions of the current lecture `lecture`, oldest first.
    pub fn list(&self, hub: &Hub, lecture: &str) -> Vec<Question> {
        let map = lock(&self.by_lecture);
        let Some(kept) = map.get(lecture) else {
            return Vec::new();
        };
        let instance = hub.lecture(lecture).map(|l| l.started);
        if kept.instance.is_some() && kept.instance != instance {
            return Vec::new();
        }
        kept.list.iter().cloned().collect()
    }

    /// Question `id` of the current lecture `lecture`.
    pub(crate) fn get(&self, hub: &Hub, lecture: &str, id: u64) -> Option<Question> {
        self.list(hub, lecture).into_iter().find(|q| q.id == id)
    }

    /// Forgets the questions of `lecture` if the lecture they were asked in is gone.
    fn prune(&self, hub: &Hub, lecture: &str) {
        let mut map = lock(&self.by_lecture);
        let Some(kept) = map.get(lecture) else {
            return;
        };
        let instance = hub.lecture(lecture).map(|l| l.started);
        if kept.instance.is_some() && kept.instance != instance {
            map.remove(lecture);
        }
    }

    /// Lecture names questions are kept for.
    pub fn kept(&self) -> usize {
        lock(&self.by_lecture).len()
    }

    /// How many times a lecture's state was built for live channels (once per change of a
    /// watched lecture, not once per socket).
    pub fn state_builds(&self) -> u64 {
        self.state_builds.load(Ordering::Relaxed)
    }

    /// Open live-channel connections of a lecture.
    pub fn connections(&self, lecture: &str) -> usize {
        *lock(&self.connections)
            .by_lecture
            .get(lecture)
            .unwrap_or(&0)
    }

    /// Counts a question or raised hand from `peer` against
    /// `channel.questions_per_address_per_minute`; false when that address has used its
    /// minute (a fixed window starting at its first message): `Err(true)` for the first
    /// refusal of that minute (the one to log), `Err(false)` for the others.
    fn may_ask(
        &self,
        config: &config::ChannelConfig,
        peer: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), bool> {
        let Some(ip) = peer else { return Ok(()) };
        let mut asked = lock(&self.asked);
        // Forget finished windows now and then, so the map holds only recent askers.
        if asked.len() >= 4096 {
            asked.retain(|_, (start, _)| now.duration_since(*start) < MINUTE);
        }
        let (start, n) = asked.entry(ip).or_insert((now, 0));
        if now.duration_since(*start) >= MINUTE {
            (*start, *n) = (now, 0);
        }
        let cap = config.questions_per_address_per_minute;
        if *n >= cap {
            let first = *n == cap;
            *n = cap.saturating_add(1);
            return Err(first);
        }
        *n += 1;
        Ok(())
    }

    /// Takes a connection slot for a client at `peer` (unknown: counted in the total only).
    fn reserve(&self, config: &config::ChannelConfig, peer: Option<IpAddr>) -> Result<(), Refused> {
        let mut c = lock(&self.connections);
        if c.total >= config.max_connections {
            return Err(Refused::Full);
        }
        if let Some(ip) = peer {
            let n = c.by_address.entry(ip).or_default();
            if *n >= config.max_per_address {
                return Err(Refused::Address);
            }
            *n += 1;
        }
        c.total += 1;
        Ok(())
    }

    fn release(&self, peer: Option<IpAddr>, lecture: Option<&str>) {
        let mut c = lock(&self.connections);
        c.total = c.total.saturating_sub(1);
        if let Some(ip) = peer
            && let Some(n) = c.by_address.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                c.by_address.remove(&ip);
            }
        }
        if let Some(name) = lecture
            && let Some(n) = c.by_lecture.get_mut(name)
        {
            *n -= 1;
            if *n == 0 {
                c.by_lecture.remove(name);
            }
        }
    }

    fn join(&self, lecture: &str) {
        *lock(&self.connections)
            .by_lecture
            .entry(lecture.to_string())
            .or_default() += 1;
    }

    fn build_state(&self, hub: &Hub, name: &str) -> Option<Utf8Bytes> {
        self.state_builds.fetch_add(1, Ordering::Relaxed);
        state(hub, name).map(|v| Utf8Bytes::from(v.to_string()))
    }

    fn build_viewers(&self, hub: &Hub, name: &str) -> Utf8Bytes {
        let webrtc: usize = hub
            .lecture(name)
            .map(|l| l.webrtc_viewers().values().sum())
            .unwrap_or(0);
        let v =
            json!({ "type": "viewers", "webrtc": webrtc, "live_channel": self.connections(name) });
        Utf8Bytes::from(v.to_string())
    }

    /// The shared state and viewer counts of `name`, for one more live channel.
    fn watch(
        &self,
        hub: &Arc<Hub>,
        name: &str,
    ) -> (
        watch::Receiver<Option<Utf8Bytes>>,
        watch::Receiver<Utf8Bytes>,
    ) {
        self.follow(hub);
        if let Some(w) = lock(&self.watched).get(name) {
            return (w.state.subscribe(), w.viewers.subscribe());
        }
        // Built outside the lock (the state reads the packager); a second channel arriving
        // meanwhile finds the first one's entry or puts its own, equally fresh.
        let state = self.build_state(hub, name);
        let viewers = self.build_viewers(hub, name);
        let receivers = {
            let mut watched = lock(&self.watched);
            let w = watched.entry(name.to_string()).or_insert_with(|| Watched {
                state: watch::channel(state).0,
                viewers: watch::channel(viewers).0,
            });
            (w.state.subscribe(), w.viewers.subscribe())
        };
        // A change between the build and the insert found no entry to refresh.
        self.refresh(hub, name);
        receivers
    }

    /// A live channel of `name` ended: its shared state goes with the last one.
    fn unwatch(&self, name: &str) {
        let mut watched = lock(&self.watched);
        if watched
            .get(name)
            .is_some_and(|w| w.state.receiver_count() == 0)
        {
            watched.remove(name);
        }
    }

    /// Rebuilds the state of `name` if a live channel watches it, and wakes those channels
    /// only if it changed.
    fn refresh(&self, hub: &Hub, name: &str) {
        let Some(tx) = lock(&self.watched).get(name).map(|w| w.state.clone()) else {
            return;
        };
        let _one_at_a_time = lock(&self.refreshing);
        let next = self.build_state(hub, name);
        tx.send_if_modified(|cur| {
            let changed = *cur != next;
            *cur = next;
            changed
        });
    }

    /// The current state of `name` as a live channel would get it (shared when watched).
    fn current_state(&self, hub: &Hub, name: &str) -> Option<Utf8Bytes> {
        if let Some(w) = lock(&self.watched).get(name) {
            return w.state.borrow().clone();
        }
        state(hub, name).map(|v| Utf8Bytes::from(v.to_string()))
    }

    /// Starts, once, the task that follows the hub's events: rebuilds the state of watched
    /// lectures that changed, forgets the questions of lectures that are gone, and refreshes
    /// viewer counts. It holds the hub weakly and ends with it.
    fn follow(&self, hub: &Arc<Hub>) {
        self.follower.get_or_init(|| {
            let events = hub.subscribe();
            tokio::spawn(follow_hub(Arc::downgrade(hub), events));
        });
    }
}

async fn follow_hub(hub: Weak<Hub>, mut events: broadcast::Receiver<crate::hub::HubEvent>) {
    let mut tick = tokio::time::interval(VIEWERS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut again = tokio::time::interval(STATES_EVERY);
    again.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // What time and the programme change without a hub event (a start passing, the
            // next lecture scheduled): channels are woken only if a state changed.
            _ = again.tick() => {
                let Some(hub) = hub.upgrade() else { return };
                let names: Vec<String> = lock(&hub.questions.watched).keys().cloned().collect();
                for name in names {
                    hub.questions.refresh(&hub, &name);
                }
            }
            ev = events.recv() => {
                let Some(hub) = hub.upgrade() else { return };
                let q = &hub.questions;
                match ev {
                    Ok(e) => {
                        q.refresh(&hub, &e.lecture);
                        q.prune(&hub, &e.lecture);
                    }
                    // Missed some: every watched lecture may have changed, any may be gone.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let names: Vec<String> = lock(&q.watched).keys().cloned().collect();
                        for name in names {
                            q.refresh(&hub, &name);
                        }
                        let kept: Vec<String> = lock(&q.by_lecture).keys().cloned().collect();
                        for name in kept {
                            q.prune(&hub, &name);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
            _ = tick.tick() => {
                let Some(hub) = hub.upgrade() else { return };
                let q = &hub.questions;
                let watched: Vec<(String, watch::Sender<Utf8Bytes>)> = lock(&q.watched)
                    .iter()
                    .map(|(n, w)| (n.clone(), w.viewers.clone()))
                    .collect();
                for (name, tx) in watched {
                    // Read by each channel on its own tick: no wake-up here.
                    tx.send_replace(q.build_viewers(&hub, &name));
                }
            }
        }
    }
}

/// The public state of a lecture, whether or not it is live: what players show.
pub fn state(hub: &Hub, name: &str) -> Option<Value> {
    let configured = hub.config().lecture(name);
    let live = hub.lecture(name);
    let title = live
        .as_ref()
        .and_then(|l| l.title.clone())
        .or_else(|| configured.and_then(|c| c.title.clone()))
        .or_else(|| hub.learned_title(name));
    let starts_at = configured.and_then(|c| c.starts_at).map(|t| t.to_string());
    let status = match live.as_ref().map(|l| l.status()) {
        // Published, but nothing playable yet: players wait instead of guessing the tracks.
        Some(Status::Live) if !live.as_ref().is_some_and(|l| l.has_media()) => "starting",
        Some(Status::Live) => "live",
        Some(Status::Reconnecting { .. }) => "reconnecting",
        Some(Status::Ended { .. }) => "ended",
        None => {
            if configured.is_none() && !hub.known(name) {
                return None;
            }
            match configured.and_then(|c| c.starts_at) {
                Some(t) if t > jiff::Timestamp::now() => "scheduled",
                _ => "idle",
            }
        }
    };
    let default = live
        .as_ref()
        .map(|l| l.default_language.to_string())
        .or_else(|| configured.and_then(|c| c.language.clone()))
        .unwrap_or_else(|| hub.config().lectures.default_language.clone());
    let mut dialects = live.as_ref().map(|l| l.dialects()).unwrap_or_default();
    // The configured order (普通话, 粤语, 客家话), as in the multivariant playlist.
    dialects.sort_by_key(|(lang, _)| hub.config().dialect_rank(lang));
    let dialects: Vec<Value> = dialects
        .into_iter()
        .map(|(lang, dname)| json!({ "lang": lang, "name": dname, "default": lang == default }))
        .collect();
    // The next lecture on this stream: occurrences beginning up to half an hour after it
    // went live here belong to the one live (or just ended); without one, a start up to an
    // hour ago that has not gone live is still awaited.
    let now = jiff::Timestamp::now().as_second();
    let after = match &live {
        Some(l) => jiff::Timestamp::try_from(l.started)
            .map_or(now, |t| t.as_second())
            .saturating_add(1800),
        None => now - 3600,
    };
    let next = hub
        .upcoming(name, after)
        .into_iter()
        .next()
        .map(|(title, start)| {
            json!({
                "title": title,
                "starts_at": jiff::Timestamp::from_second(start).map(|t| t.to_string()).ok(),
            })
        });
    Some(json!({
        "type": "state",
        "lecture": name,
        "status": status,
        "title": title,
        "starts_at": starts_at,
        "next": next,
        "dialects": dialects,
        "has_video": live.as_ref().is_some_and(|l| l.has_video()),
        "small_picture": live.as_ref().is_some_and(|l| l.has_small_picture()),
        "hls": format!("/hls/{name}/index.m3u8"),
        "whep": format!("/whep/{name}"),
        // "Watch from the beginning" while live; the replays once it is over.
        "recording": live.as_ref().and_then(|l| l.recording()).map(|r| crate::replay::brief(&r)),
        "replays": hub.recordings().map(|lib| crate::replay::replays_of(lib, name, 10)).unwrap_or_default(),
    }))
}

/// Whether `name` is a lecture a channel may follow (now or once it is published).
fn exists(hub: &Hub, name: &str) -> bool {
    media::sink::valid_stream_name(name)
        && (hub.known(name) || hub.config().lecture(name).is_some() || hub.lecture(name).is_some())
}

/// A live-channel connection slot, given back on drop.
struct Slot {
    hub: Arc<Hub>,
    peer: Option<IpAddr>,
    lecture: Option<String>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.hub
            .questions
            .release(self.peer, self.lecture.as_deref());
    }
}

fn refusal(status: StatusCode, message: String) -> Response {
    let mut r = ApiError::new(status, message).into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
    r
}

/// `GET /ws/NAME`
pub async fn upgrade(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ChannelQuery>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    ws: WebSocketUpgrade,
) -> Response {
    // A player opened as a sub-venue (`/play/NAME?site=CODE`) is on the lecture's roster.
    let site = q.site.filter(|c| crate::roster::valid_code(c));
    s.hub.note_demand(&name);
    if !exists(&s.hub, &name) {
        return ApiError::new(StatusCode::NOT_FOUND, format!("no lecture {name:?}"))
            .into_response();
    }
    let config = &s.hub.config().channel;
    let peer = peer.map(|p| address_key(p.0.0.ip()));
    match s.hub.questions.reserve(config, peer) {
        Ok(()) => {}
        Err(Refused::Full) => {
            if media::limits::hit_logged(Limit::ChannelConnections, Instant::now()) {
                info!(lecture = %name, "live channel refused: {} connections (channel.max_connections)", config.max_connections);
            }
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the live channel is full: poll /api/v1/streams/{name}/state"),
            );
        }
        Err(Refused::Address) => {
            if media::limits::hit_logged(Limit::ChannelConnections, Instant::now()) {
                info!(lecture = %name, remote = ?peer, "live channel refused: {} connections from this address (channel.max_per_address)", config.max_per_address);
            }
            return refusal(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "at most {} live channels per address: poll /api/v1/streams/{name}/state",
                    config.max_per_address
                ),
            );
        }
    }
    // From here the slot is given back however the upgrade ends.
    let mut slot = Slot {
        hub: s.hub.clone(),
        peer,
        lecture: None,
    };
    // tungstenite's default buffers are 128 KiB each way: with 2,000 channels that was
    // 260 MiB of heap (tests/flood-live-channel.rs). Messages here are at most 4 KiB in and
    // a few hundred bytes out.
    ws.max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .on_upgrade(move |socket| async move {
            let hub = slot.hub.clone();
            hub.questions.join(&name);
            slot.lecture = Some(name.clone());
            let (state_rx, viewers_rx) = hub.questions.watch(&hub, &name);
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
            let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let site = site.map(|code| SiteChannel::open(&hub, &name, code, id));
            run(
                &hub,
                &name,
                peer,
                socket,
                state_rx,
                viewers_rx,
                site.as_ref(),
            )
            .await;
            drop(site);
            hub.questions.unwatch(&name);
            drop(slot);
        })
}

/// `GET /api/v1/streams/NAME/state`: what the live channel pushes, for players that could
/// not open one (they poll this instead).
pub async fn state_api(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    s.hub.note_demand(&name);
    let body = exists(&s.hub, &name)
        .then(|| s.hub.questions.current_state(&s.hub, &name))
        .flatten()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no lecture {name:?}")))?;
    let mut r = axum::body::Bytes::from(body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

/// The live channel's query.
#[derive(Debug, Default, Deserialize)]
pub struct ChannelQuery {
    /// The sub-venue the player shows the lecture at.
    site: Option<String>,
}

/// A site's live channel on the roster, taken off when dropped.
struct SiteChannel<'a> {
    hub: &'a Hub,
    lecture: String,
    code: String,
    id: u64,
}

impl<'a> SiteChannel<'a> {
    /// The site's registered name, else its code.
    fn display_name(&self) -> String {
        self.hub
            .config()
            .site
            .iter()
            .find(|x| x.code == self.code)
            .map_or_else(|| self.code.clone(), |x| x.name.clone())
    }

    fn open(hub: &'a Hub, lecture: &str, code: String, id: u64) -> Self {
        hub.roster.player_joined(lecture, &code, id);
        SiteChannel {
            hub,
            lecture: lecture.to_string(),
            code,
            id,
        }
    }

    fn report(&self, m: StatsMessage) {
        let num =
            |v: Option<f64>, max: f64| v.filter(|x| x.is_finite() && *x >= 0.0).map(|x| x.min(max));
        let report = crate::roster::PlayerReport {
            lang: m.lang.filter(|l| media::Language::parse(l).is_ok()),
            mode: m
                .mode
                .filter(|m| matches!(m.as_str(), "webrtc" | "hls" | "audio")),
            kbps: num(m.kbps, 1e6),
            loss_pct: num(m.loss, 100.0),
            rtt_ms: num(m.rtt, 1e6),
        };
        self.hub
            .roster
            .player_report(&self.lecture, &self.code, self.id, report);
    }
}

impl Drop for SiteChannel<'_> {
    fn drop(&mut self) {
        self.hub
            .roster
            .player_left(&self.lecture, &self.code, self.id);
    }
}

/// A site's player reporting its figures (`{"type":"stats",...}`); never answered.
#[derive(Deserialize)]
struct StatsMessage {
    #[serde(rename = "type")]
    kind: String,
    lang: Option<String>,
    mode: Option<String>,
    kbps: Option<f64>,
    loss: Option<f64>,
    rtt: Option<f64>,
}

/// A site's player reports at most this often; more often is ignored.
const STATS_EVERY: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Question {
        text: String,
        from: Option<String>,
    },
    Hand {
        from: Option<String>,
    },
    /// The class invited to speak declines, or stops speaking (ask back).
    AskEnd {
        id: u64,
    },
}

/// Fuzzing entry point for the live channel's client messages: a WebSocket text frame
/// (lossily decoded) parsed and cleaned as the channel does before acting on it. Never
/// panics; what is kept has no control characters and is bounded.
#[doc(hidden)]
pub fn fuzz_channel_message(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (body, from) = match serde_json::from_str::<ClientMessage>(&text) {
        Ok(ClientMessage::Question { text, from }) => (Some(text), from),
        Ok(ClientMessage::Hand { from }) => (None, from),
        Ok(ClientMessage::AskEnd { .. }) | Err(_) => return,
    };
    if let Some(body) = body {
        let kept = clean(&body, MAX_QUESTION_CHARS);
        assert!(kept.chars().count() <= MAX_QUESTION_CHARS + 1);
        assert!(!kept.chars().any(char::is_control));
    }
    if let Some(from) = from {
        let kept = clean(&from, MAX_FROM_CHARS);
        assert!(kept.chars().count() <= MAX_FROM_CHARS + 1);
        assert!(!kept.chars().any(char::is_control));
    }
}

/// Plain text: no control characters, trimmed, at most `max` characters.
fn clean(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(max + 1)
        .collect::<String>()
        .trim()
        .to_string()
}

/// A token bucket: `burst` messages, refilled one per `every`.
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    const BURST: f64 = 3.0;
    const EVERY: Duration = Duration::from_secs(2);

    fn take(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.last).as_secs_f64() / Self::EVERY.as_secs_f64();
        self.tokens = (self.tokens + refill).min(Self::BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One live channel's socket with its send deadline.
struct Channel {
    socket: WebSocket,
    send_timeout: Duration,
}

impl Channel {
    /// Sends `m`; false if the client is gone or did not take it in time.
    async fn send(&mut self, m: Message) -> bool {
        matches!(
            tokio::time::timeout(self.send_timeout, self.socket.send(m)).await,
            Ok(Ok(()))
        )
    }

    async fn send_json(&mut self, v: &Value) -> bool {
        self.send(Message::Text(v.to_string().into())).await
    }
}

async fn run(
    hub: &Hub,
    name: &str,
    peer: Option<IpAddr>,
    socket: WebSocket,
    mut state_rx: watch::Receiver<Option<Utf8Bytes>>,
    viewers_rx: watch::Receiver<Utf8Bytes>,
    site: Option<&SiteChannel<'_>>,
) {
    let config = &hub.config().channel;
    let mut last_stats: Option<Instant> = None;
    let mut ch = Channel {
        socket,
        send_timeout: Duration::from_millis(config.send_timeout_ms),
    };
    let idle_timeout = Duration::from_millis(config.idle_timeout_ms);
    let ping_every = Duration::from_millis(config.ping_interval_ms);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    let mut viewers = tokio::time::interval(VIEWERS_EVERY);
    viewers.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut bucket = Bucket {
        tokens: Bucket::BURST,
        last: Instant::now(),
    };
    let mut strikes = 0;
    // Answers for this class alone (an invitation to speak), from the operator.
    let (reply_tx, mut reply_rx) = mpsc::channel::<Value>(8);
    let Some(initial) = state_rx.borrow_and_update().clone() else {
        return;
    };
    if !ch.send(Message::Text(initial)).await {
        return;
    }
    loop {
        tokio::select! {
            changed = state_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                let Some(st) = state_rx.borrow_and_update().clone() else { return };
                if !ch.send(Message::Text(st)).await {
                    debug!(lecture = %name, "live channel closed: a state update was not taken in time");
                    return;
                }
            }
            Some(m) = reply_rx.recv() => {
                if !ch.send_json(&m).await {
                    return;
                }
            }
            _ = viewers.tick() => {
                let v = viewers_rx.borrow().clone();
                if !ch.send(Message::Text(v)).await {
                    return;
                }
            }
            _ = ping.tick() => {
                if !ch.send(Message::Ping(Default::default())).await {
                    return;
                }
            }
            () = &mut idle => {
                debug!(lecture = %name, "live channel closed: nothing from the client in {idle_timeout:?}");
                let _ = ch.send(Message::Close(None)).await;
                return;
            }
            msg = ch.socket.recv() => {
                // Any frame, a pong included, shows the client is there and reading.
                idle.as_mut().reset(tokio::time::Instant::now() + idle_timeout);
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None => return,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        // tungstenite refuses a frame or message over the limit from its
                        // header, before reading (or allocating) its payload.
                        let text = e.to_string();
                        if text.contains("too long") || text.contains("Space limit") {
                            media::limits::hit(Limit::ChannelMessage);
                            info!(lecture = %name, remote = ?peer, "live channel closed: a message over {MAX_MESSAGE} bytes");
                            let _ = ch
                                .send(Message::Close(Some(CloseFrame {
                                    code: close_code::SIZE,
                                    reason: Utf8Bytes::from_static("message over 4096 bytes"),
                                })))
                                .await;
                        } else {
                            debug!(lecture = %name, "live channel closed: {e}");
                        }
                        return;
                    }
                };
                // A site's figures: within the channel's message rate, outside the
                // questions' quota, at most one every STATS_EVERY kept, never answered.
                if let Ok(m) = serde_json::from_str::<StatsMessage>(&text)
                    && m.kind == "stats"
                {
                    if !bucket.take(Instant::now()) {
                        strikes += 1;
                        media::limits::hit(Limit::ChannelRate);
                        if strikes >= 10 {
                            info!(lecture = %name, "live channel closed: too many bad or too frequent messages");
                            let _ = ch.send(Message::Close(None)).await;
                            return;
                        }
                    } else if let Some(site) = site
                        && last_stats.is_none_or(|t| t.elapsed() >= STATS_EVERY)
                    {
                        last_stats = Some(Instant::now());
                        site.report(m);
                    }
                    continue;
                }
                let reply = if !bucket.take(Instant::now()) {
                    strikes += 1;
                    media::limits::hit(Limit::ChannelRate);
                    if strikes == 1 {
                        info!(lecture = %name, remote = ?peer, "live channel: messages faster than {} then 1 per {} s refused", Bucket::BURST, Bucket::EVERY.as_secs());
                    }
                    json!({ "type": "error", "error": "too many messages: wait a little" })
                } else {
                    let parsed = serde_json::from_str::<ClientMessage>(&text);
                    // Every question and hand counts against the address's minute.
                    let over = match &parsed {
                        Ok(_) => hub.questions.may_ask(config, peer, Instant::now()).err(),
                        Err(_) => None,
                    };
                    match parsed {
                        Ok(_) if over.is_some() => {
                            media::limits::hit(Limit::ChannelQuestionsPerAddress);
                            // Logged once per address and minute: a flood must not flood the log.
                            if over == Some(true) {
                                info!(lecture = %name, remote = ?peer, "live channel: question refused, {} from this address in a minute (channel.questions_per_address_per_minute)", config.questions_per_address_per_minute);
                            }
                            json!({ "type": "error", "error": "too many questions from your address: wait a minute" })
                        }
                        Ok(ClientMessage::Question { text, from }) => {
                            let text = clean(&text, MAX_QUESTION_CHARS);
                            if text.is_empty() {
                                json!({ "type": "error", "error": "empty question" })
                            } else if text.chars().count() > MAX_QUESTION_CHARS {
                                strikes += 1;
                                json!({ "type": "error", "error": format!("questions are at most {MAX_QUESTION_CHARS} characters") })
                            } else {
                                let from = from.map(|f| clean(&f, MAX_FROM_CHARS)).filter(|f| !f.is_empty());
                                let from = from.map(|f| f.chars().take(MAX_FROM_CHARS).collect());
                                ack(hub, name, "question", from, Some(text), None)
                            }
                        }
                        Ok(ClientMessage::Hand { from }) => {
                            let from = from
                                .map(|f| clean(&f, MAX_FROM_CHARS).chars().take(MAX_FROM_CHARS).collect::<String>())
                                .filter(|f| !f.is_empty())
                                // A site's player is that site, by its registered name.
                                .or_else(|| site.map(|s| s.display_name()));
                            ack(hub, name, "hand", from, None, Some(reply_tx.clone()))
                        }
                        Ok(ClientMessage::AskEnd { id }) => {
                            if crate::ask::end_by_class(hub, name, id, &reply_tx) {
                                json!({ "type": "ack", "id": id })
                            } else {
                                json!({ "type": "error", "error": "no invitation of yours to end" })
                            }
                        }
                        Err(e) => {
                            strikes += 1;
                            json!({ "type": "error", "error": format!("not understood: {e}") })
                        }
                    }
                };
                if !ch.send_json(&reply).await {
                    return;
                }
                if strikes >= 10 {
                    info!(lecture = %name, "live channel closed: too many bad or too frequent messages");
                    let _ = ch.send(Message::Close(None)).await;
                    return;
                }
            }
        }
    }
}

/// Stores a question or a raised hand; the reply for the client.
fn ack(
    hub: &Hub,
    name: &str,
    kind: &'static str,
    from: Option<String>,
    text: Option<String>,
    reply: Option<mpsc::Sender<Value>>,
) -> Value {
    match hub.questions.add(hub, name, kind, from, text, reply) {
        Some(id) => {
            info!(lecture = %name, id, "{kind} received");
            json!({ "type": "ack", "id": id })
        }
        None => json!({
            "type": "error",
            "error": "the lecture is not live: questions open when it starts",
        }),
    }
}

/// Whether a request may read a lecture's questions: it carries the operator token or the
/// lecture's publish key as a bearer token, or, when neither is configured, comes from this
/// machine (`local`, see [`on_this_machine`]).
pub(crate) fn operator_allowed(
    config: &config::Config,
    lecture: &str,
    bearer: Option<&str>,
    local: bool,
) -> bool {
    use subtle::ConstantTimeEq;
    let matches = |secret: &str| {
        !secret.is_empty()
            && bearer.is_some_and(|b| bool::from(b.as_bytes().ct_eq(secret.as_bytes())))
    };
    let key = config
        .lecture(lecture)
        .and_then(|l| l.publish_key.as_deref())
        .unwrap_or("");
    let token = config.http.operator_token.as_str();
    if matches(token) || matches(key) {
        return true;
    }
    token.is_empty() && key.is_empty() && local
}

/// Whether a request with these headers from `peer` comes from this machine itself and not
/// through a reverse proxy on it ([`media::admission::from_this_machine`]).
pub(crate) fn on_this_machine(
    peer: Option<std::net::IpAddr>,
    headers: &axum::http::HeaderMap,
) -> bool {
    media::admission::from_this_machine(peer, |h| headers.contains_key(h))
}

/// The answer to a request for an operator's view of `name` without the operator token or
/// the lecture's key (see [`operator_allowed`]), or `None` when it may have it.
pub(crate) fn operator_refusal(
    s: &AppState,
    name: &str,
    peer: Option<std::net::IpAddr>,
    headers: &axum::http::HeaderMap,
    what: &str,
) -> Option<Response> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if operator_allowed(s.hub.config(), name, bearer, on_this_machine(peer, headers)) {
        return None;
    }
    info!(lecture = %name, "{what} refused: no valid operator token");
    let mut r = ApiError::new(
        StatusCode::UNAUTHORIZED,
        format!(
            "reading {what} needs the operator token or the lecture's publish key as a bearer token"
        ),
    )
    .into_response();
    r.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    Some(r)
}

/// `GET /api/v1/streams/NAME/questions`
pub async fn questions(
    State(s): State<AppState>,
    Path(name): Path<String>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    if !exists(&s.hub, &name) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no lecture {name:?}"),
        ));
    }
    if let Some(r) = operator_refusal(&s, &name, peer.map(|p| p.0.0.ip()), &headers, "questions") {
        return Ok(r);
    }
    Ok(axum::Json(json!({ "questions": s.hub.questions.list(&s.hub, &name) })).into_response())
}

/// `GET /api/v1/streams/NAME/sites`: the lecture's roster of sub-venues
/// ([`crate::roster`]), the registered sites that have not connected included.
pub async fn sites(
    State(s): State<AppState>,
    Path(name): Path<String>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    if !media::sink::valid_stream_name(&name) {
        return Err(ApiError::not_found(format!("no lecture {name:?}")));
    }
    if let Some(r) = operator_refusal(&s, &name, peer.map(|p| p.0.0.ip()), &headers, "the roster") {
        return Ok(r);
    }
    let mut r = axum::Json(s.hub.roster.json(&name, &s.hub.config().site)).into_response();
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cleaned_and_bounded() {
        assert_eq!(clean("  hi\u{0}\u{7}\n there ", 10), "hi there");
        assert_eq!(clean(&"字".repeat(600), 500).chars().count(), 501);
        assert_eq!(
            clean("<script>alert(1)</script>", 100),
            "<script>alert(1)</script>"
        );
    }

    #[test]
    fn bucket_limits_rate() {
        let t = Instant::now();
        let mut b = Bucket {
            tokens: Bucket::BURST,
            last: t,
        };
        assert!(b.take(t) && b.take(t) && b.take(t));
        assert!(!b.take(t));
        assert!(b.take(t + Duration::from_secs(2)));
        assert!(!b.take(t + Duration::from_secs(2)));
    }

    #[test]
    fn operator_needs_a_token_unless_open_and_local() {
        let cfg = |extra: &str| {
            config::Config::from_toml_str_with_env(
                &format!("{extra}\n[[lecture]]\nname = \"k\"\npublish_key = \"hall-key-123\"\n"),
                std::iter::empty(),
            )
            .unwrap()
        };
        let lo = true;
        let far = false;
        let open = cfg("");
        assert!(operator_allowed(&open, "free", None, lo));
        assert!(!operator_allowed(&open, "free", None, far));
        assert!(!operator_allowed(&open, "k", None, lo), "keyed lecture");
        assert!(operator_allowed(&open, "k", Some("hall-key-123"), far));
        assert!(!operator_allowed(&open, "k", Some("hall-key-12"), far));
        let tok = cfg("[http]\noperator_token = \"operator-token-0123\"");
        assert!(!operator_allowed(&tok, "free", None, lo));
        assert!(operator_allowed(
            &tok,
            "free",
            Some("operator-token-0123"),
            far
        ));
        assert!(operator_allowed(
            &tok,
            "k",
            Some("operator-token-0123"),
            far
        ));
        assert!(!operator_allowed(&tok, "free", Some(""), far));
    }

    fn hub(extra: &str) -> Arc<Hub> {
        let text = format!(
            "[demo]\nenabled = false\n[lectures]\nallow_unconfigured = true\ngrace_period_s = 1\nended_retention_s = 1\n{extra}"
        );
        Hub::new(Arc::new(
            config::Config::from_toml_str_with_env(&text, std::iter::empty()).unwrap(),
        ))
    }

    fn publish(hub: &Hub, name: &str) -> Box<dyn media::sink::MediaSink> {
        use media::sink::Publish;
        hub.publish(media::sink::PublishRequest {
            stream: name.into(),
            key: None,
            language: None,
            protocol: "test",
            remote: None,
        })
        .unwrap()
    }

    /// Gives the lecture a dialect and something playable.
    fn send_audio(sink: &mut Box<dyn media::sink::MediaSink>) {
        use media::aac::AacParams;
        use media::{MediaEvent, TrackId};
        let info =
            media::TrackInfo::new(media::CodecParams::Aac(AacParams::lc(48_000, 2).unwrap()));
        sink.handle(MediaEvent::Track {
            id: TrackId(1),
            info,
        })
        .unwrap();
        for i in 0..200 {
            let frame = media::Frame {
                dts: i * 1024,
                pts: i * 1024,
                keyframe: true,
                data: bytes::Bytes::from_static(&[0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c]),
            };
            sink.handle(MediaEvent::Frame {
                track: TrackId(1),
                frame,
            })
            .unwrap();
        }
    }

    #[test]
    fn questions_are_bounded() {
        let hub = hub("[[lecture]]\nname = \"a\"\n");
        let q = &hub.questions;
        for i in 0..(MAX_KEPT + 5) {
            q.add(&hub, "a", "question", None, Some(format!("{i}")), None);
        }
        let l = q.list(&hub, "a");
        assert_eq!(l.len(), MAX_KEPT);
        assert_eq!(l[0].text.as_deref(), Some("5"));
    }

    #[test]
    fn questions_belong_to_a_lecture_and_go_with_it() {
        let hub = hub("[[lecture]]\nname = \"planned\"\n");
        let q = &hub.questions;
        // No list for a name that is no lecture.
        assert_eq!(q.add(&hub, "ghost", "hand", None, None, None), None);
        assert_eq!(q.kept(), 0);
        // A configured lecture takes questions before it starts; they stay with it.
        q.add(
            &hub,
            "planned",
            "question",
            None,
            Some("early".into()),
            None,
        )
        .unwrap();
        let mut sink = publish(&hub, "planned");
        send_audio(&mut sink);
        q.add(&hub, "planned", "hand", None, None, None).unwrap();
        assert_eq!(q.list(&hub, "planned").len(), 2);
        // An unconfigured lecture, while it exists.
        let mut other = publish(&hub, "free");
        send_audio(&mut other);
        q.add(&hub, "free", "hand", None, None, None).unwrap();
        assert_eq!(q.kept(), 2);
        // Both end, and are forgotten after their retention: so are their questions.
        drop((sink, other));
        let t = Instant::now();
        hub.maintain(t + Duration::from_millis(1100));
        assert_eq!(q.list(&hub, "free").len(), 1, "kept while it is retained");
        hub.maintain(t + Duration::from_millis(2300));
        assert!(hub.lecture("free").is_none());
        assert!(q.list(&hub, "free").is_empty());
        assert!(q.list(&hub, "planned").is_empty());
        q.prune(&hub, "free");
        q.prune(&hub, "planned");
        assert_eq!(q.kept(), 0);
        // The next lecture of a name starts with none of the last one's questions, even
        // before the last one's were pruned.
        let mut again = publish(&hub, "free");
        send_audio(&mut again);
        q.add(&hub, "free", "question", None, Some("new".into()), None)
            .unwrap();
        drop(again);
        hub.maintain(t + Duration::from_millis(3400));
        hub.maintain(t + Duration::from_millis(4600));
        let mut third = publish(&hub, "free");
        send_audio(&mut third);
        q.add(&hub, "free", "hand", None, None, None).unwrap();
        let l = q.list(&hub, "free");
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].kind, "hand");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn state_is_built_once_per_change_and_questions_pruned_when_the_lecture_goes() {
        let hub = hub("");
        let mut sink = publish(&hub, "p");
        let watchers: Vec<_> = (0..200).map(|_| hub.questions.watch(&hub, "p")).collect();
        let mut rx = watchers[0].0.clone();
        assert!(
            rx.borrow_and_update()
                .as_ref()
                .unwrap()
                .contains("\"starting\""),
            "{:?}",
            rx.borrow()
        );
        let builds = hub.questions.state_builds();
        send_audio(&mut sink);
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                rx.changed().await.unwrap();
                if rx
                    .borrow_and_update()
                    .as_ref()
                    .unwrap()
                    .contains("\"live\"")
                {
                    return;
                }
            }
        })
        .await
        .expect("live state pushed");
        // Two changes (a dialect, then media): a build each, shared by 200 channels.
        let during = hub.questions.state_builds() - builds;
        assert!((1..=3).contains(&during), "{during} builds");
        assert!(
            watchers
                .iter()
                .all(|(s, _)| s.borrow().as_ref().unwrap().contains("\"live\""))
        );

        hub.questions
            .add(&hub, "p", "hand", None, None, None)
            .unwrap();
        drop(sink);
        let t = Instant::now();
        hub.maintain(t + Duration::from_millis(1100));
        hub.maintain(t + Duration::from_millis(2300));
        assert!(hub.lecture("p").is_none());
        // The follower saw the lecture go and pruned its questions.
        tokio::time::timeout(Duration::from_secs(5), async {
            while hub.questions.kept() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("questions of a forgotten lecture pruned");
        drop((watchers, rx));
        hub.questions.unwatch("p");
        assert!(lock(&hub.questions.watched).is_empty());
    }

    #[test]
    fn connection_slots_are_capped_in_all_and_per_address() {
        let hub = hub("[channel]\nmax_connections = 5\nmax_per_address = 2\n");
        let (q, c) = (&hub.questions, &hub.config().channel);
        let ip = |s: &str| Some(address_key(s.parse().unwrap()));
        assert_eq!(q.reserve(c, ip("192.0.2.1")), Ok(()));
        assert_eq!(q.reserve(c, ip("::ffff:192.0.2.1")), Ok(()));
        assert_eq!(q.reserve(c, ip("192.0.2.1")), Err(Refused::Address));
        // One IPv6 host holds a whole /64.
        assert_eq!(q.reserve(c, ip("2001:db8:1:2::1")), Ok(()));
        assert_eq!(q.reserve(c, ip("2001:db8:1:2:ffff::9")), Ok(()));
        assert_eq!(
            q.reserve(c, ip("2001:db8:1:2:aaaa::7")),
            Err(Refused::Address)
        );
        assert_eq!(q.reserve(c, None), Ok(()));
        assert_eq!(q.reserve(c, ip("198.51.100.1")), Err(Refused::Full));
        q.release(ip("192.0.2.1"), None);
        assert_eq!(q.reserve(c, ip("192.0.2.1")), Ok(()));
        q.join("x");
        assert_eq!(q.connections("x"), 1);
        q.release(ip("192.0.2.1"), Some("x"));
        assert_eq!(q.connections("x"), 0);
        assert_eq!(q.reserve(c, ip("198.51.100.1")), Ok(()));
    }
}
