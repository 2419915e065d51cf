//! The edge's pulls: one task decides which lectures are wanted (local viewers asked for
//! them within `edge.idle_stop_s`, or `edge.always` lists them) and runs one pull per
//! lecture; a pull follows each rendition's media playlist with blocking reloads
//! (`_HLS_msn`/`_HLS_part`, so a part is fetched as soon as the origin has it), reads the
//! parts' frames and publishes them here.
//!
//! A link that fails (a request errs or times out) drops the publishing session: the lecture
//! waits as `reconnecting` (for `edge.hold_s`) while the pull tries the origins in turn with
//! backoff; when one answers, a new session continues the lecture (LL-HLS viewers see a
//! discontinuity, WebRTC viewers resume at the next keyframe). A lecture the origin ended
//! ends here at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use config::Config;
use media::fmp4::{InitTrack, read_fragment, read_init};
use media::m3u8_read::{LivePlaylist, MAX_PLAYLIST, read_media, read_multivariant};
use media::sink::{Publish, PublishError, PublishRequest};
use media::{Frame, Language, MediaEvent, TrackId};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{info, warn};
use url::Url;

use super::interleave::Interleave;

/// The `protocol` this input publishes with (the hub gives such lectures `edge.hold_s`).
pub const PROTOCOL: &str = "edge";
/// Header naming the pulling edge's site to its origin (for its logs and roster); the
/// origin checks the edge's key on requests that carry it (`relay::admission::EDGE_HEADER`).
pub const EDGE_HEADER: &str = "x-jiangtang-edge";
/// Header with the edge's report: its viewers by dialect, what it receives, its round trip
/// (`relay::roster::EdgeReport`).
pub const EDGE_REPORT_HEADER: &str = "x-jiangtang-edge-report";
/// Largest part or init segment fetched (a 2 s segment at 8 Mbit/s is 2 MB).
const MAX_BODY: usize = 16 << 20;
/// A part the playlist lists must arrive within this.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// When the origin ends a lecture, its renditions' last parts are awaited this long.
const ENDING: Duration = Duration::from_secs(3);
/// The edge's report to its origin is brought up to date this often.
const REPORT_EVERY: Duration = Duration::from_secs(2);
/// A blocking reload must be answered within the origin's blocking time and this: a link
/// that went silent is noticed this long after the origin's answer was due.
const REPLY_SLACK: Duration = Duration::from_secs(3);
/// A lecture the origin does not have (yet) is asked for again after this, then less often
/// up to [`NOT_LIVE_MAX`].
const NOT_LIVE_RETRY: Duration = Duration::from_secs(2);
/// Longest wait before asking the origin again for a lecture it does not have.
const NOT_LIVE_MAX: Duration = Duration::from_secs(20);
/// A pull that ran this long resets the backoff.
const HEALTHY: Duration = Duration::from_secs(30);
/// The same failure is logged at most this often.
const REPEAT_LOG: Duration = Duration::from_secs(30);

/// The running edge; dropping it stops every pull (the lectures then wait, as when an
/// origin is unreachable).
pub struct Edge {
    _task: Owned,
}

/// Starts pulling from `config.edge.origins` what `publish` says is wanted, publishing with
/// `pull_key` (what the local admission lets this edge's pull publish with).
pub fn start(
    config: Arc<Config>,
    publish: Arc<dyn Publish>,
    pull_key: String,
) -> Result<Edge, String> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("jiangtang-edge/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let origins = config
        .edge
        .origins
        .iter()
        .map(|o| Url::parse(&format!("{}/", o.trim_end_matches('/'))))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("edge.origins: {e}"))?;
    let name = edge_name(&config.edge);
    let shared = Arc::new(Shared {
        client,
        origins,
        config,
        publish,
        name,
        pull_key,
    });
    Ok(Edge {
        _task: Owned(tokio::spawn(supervise(shared))),
    })
}

struct Shared {
    client: reqwest::Client,
    origins: Vec<Url>,
    config: Arc<Config>,
    publish: Arc<dyn Publish>,
    /// This edge's name, for its origins' logs.
    name: String,
    /// What its sessions publish with here.
    pull_key: String,
}

/// The site code this edge reports: `edge.site`, else the host name made into a code.
fn edge_name(config: &config::EdgeConfig) -> String {
    if !config.site.is_empty() {
        return config.site.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let code: String = host
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(32)
        .collect();
    if code.is_empty() { "edge".into() } else { code }
}

/// A task aborted when this is dropped (with the supervisor that holds it).
struct Owned(JoinHandle<()>);

impl Drop for Owned {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts and stops pulls as lectures become wanted and unwanted.
async fn supervise(s: Arc<Shared>) {
    let idle = Duration::from_secs(s.config.edge.idle_stop_s);
    let mut pulls: HashMap<String, (Owned, watch::Sender<bool>)> = HashMap::new();
    let programme = Arc::new(std::sync::Mutex::new(Programme::default()));
    let _reader = (!s.config.edge.schedule_towns.is_empty()).then(|| {
        let (s, programme) = (s.clone(), programme.clone());
        Owned(tokio::spawn(async move {
            loop {
                let read = Programme::read(&s).await;
                if let Some(p) = read {
                    *programme.lock().unwrap_or_else(|e| e.into_inner()) = p;
                }
                tokio::time::sleep(PROGRAMME_EVERY).await;
            }
        }))
    });
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let mut wanted: std::collections::HashSet<String> =
            s.publish.demanded(idle).into_iter().collect();
        wanted.extend(s.config.edge.always.iter().cloned());
        wanted.extend(
            programme
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .due(&s.config.edge),
        );
        pulls.retain(|name, (task, stop)| {
            if task.0.is_finished() {
                return false;
            }
            if !wanted.contains(name) && !*stop.borrow() {
                info!(lecture = %name, "nobody here watches it any more: pull stopped");
                let _ = stop.send(true);
            }
            true
        });
        for name in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = pulls.entry(name) {
                let (stop_tx, stop_rx) = watch::channel(false);
                let task = tokio::spawn(pull(s.clone(), slot.key().clone(), stop_rx));
                slot.insert((Owned(task), stop_tx));
            }
        }
    }
}

/// The origin's programme, as far as pulling on schedule needs it.
#[derive(Default)]
struct Programme {
    /// (lecture stream, town of its hall, starts, ends).
    lectures: Vec<(
        String,
        Option<String>,
        jiff::Timestamp,
        Option<jiff::Timestamp>,
    )>,
}

/// The programme is read again this often.
const PROGRAMME_EVERY: Duration = Duration::from_secs(60);
/// A scheduled lecture without an end is pulled this long after its start.
const DEFAULT_RUN: jiff::SignedDuration = jiff::SignedDuration::from_hours(4);

impl Programme {
    /// Reads the programme from the first origin that gives it.
    async fn read(s: &Shared) -> Option<Programme> {
        let now = jiff::Timestamp::now();
        let lead = jiff::SignedDuration::from_secs(s.config.edge.schedule_lead_s as i64);
        let from = now.checked_sub(DEFAULT_RUN).ok()?;
        let to = now.checked_add(lead).ok()?;
        for base in &s.origins {
            let Ok(mut url) = base.join("api/v1/lectures") else {
                continue;
            };
            url.query_pairs_mut()
                .append_pair("from", &from.to_string())
                .append_pair("to", &to.to_string())
                .append_pair("limit", "1000");
            match get(s, &url, FETCH_TIMEOUT, MAX_PLAYLIST, None).await {
                Ok(body) => match parse_programme(&body) {
                    Ok(lectures) => return Some(Programme { lectures }),
                    Err(e) => warn!(origin = %base, "programme not read: {e}"),
                },
                Err(e) => warn!(origin = %base, "programme not read: {e}"),
            }
        }
        None
    }

    /// The lectures due now in the towns this edge follows.
    fn due(&self, edge: &config::EdgeConfig) -> Vec<String> {
        let now = jiff::Timestamp::now();
        let lead = jiff::SignedDuration::from_secs(edge.schedule_lead_s as i64);
        let all = edge.schedule_towns.iter().any(|t| t == "*");
        self.lectures
            .iter()
            .filter(|(_, town, start, end)| {
                let here = all
                    || town
                        .as_ref()
                        .is_some_and(|t| edge.schedule_towns.contains(t));
                let end = end.unwrap_or_else(|| start.checked_add(DEFAULT_RUN).unwrap_or(*start));
                here && start.checked_sub(lead).is_ok_and(|s| now >= s) && now < end
            })
            .map(|(stream, ..)| stream.clone())
            .collect()
    }
}

/// The lectures of `GET /api/v1/lectures` that take place: stream, hall's town, start, end.
#[allow(clippy::type_complexity)]
fn parse_programme(
    body: &[u8],
) -> Result<
    Vec<(
        String,
        Option<String>,
        jiff::Timestamp,
        Option<jiff::Timestamp>,
    )>,
    String,
> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let list = v["lectures"]
        .as_array()
        .ok_or_else(|| "no lecture list".to_string())?;
    Ok(list
        .iter()
        .filter(|l| l["status"] != "cancelled")
        .filter_map(|l| {
            let stream = l["stream"]
                .as_str()
                .filter(|n| media::sink::valid_stream_name(n))?;
            let start: jiff::Timestamp = l["starts_at"].as_str()?.parse().ok()?;
            let end = l["ends_at"].as_str().and_then(|e| e.parse().ok());
            let town = l["hall"]["town"].as_str().map(str::to_string);
            Some((stream.to_string(), town, start, end))
        })
        .collect())
}

/// How one attempt at pulling a lecture ended.
enum Outcome {
    /// Nobody wants it any more.
    Stopped,
    /// The origin ended it.
    Ended,
    /// The origin has no such lecture live (yet).
    NotLive,
    /// The origin's source restarted: a new session here at once.
    Restart,
    /// The link or the origin failed.
    Failed(String),
}

/// Pulls `name` until stopped, from the origins in turn.
async fn pull(s: Arc<Shared>, name: String, mut stop: watch::Receiver<bool>) {
    let min = Duration::from_millis(500);
    let max = Duration::from_millis(s.config.edge.max_backoff_ms);
    let mut backoff = min;
    let mut not_live = NOT_LIVE_RETRY;
    let mut origin = 0usize;
    let mut last_log: Option<(String, Instant)> = None;
    let mut failing_since: Option<Instant> = None;
    let resume: Resume = Arc::default();
    // The origin's title, next lecture and dialect names, for players here (a kiosk's
    // countdown between lectures).
    let _learn = Owned(tokio::spawn(learn(s.clone(), name.clone())));
    loop {
        if *stop.borrow() {
            return;
        }
        let base = &s.origins[origin % s.origins.len()];
        let started = Instant::now();
        let outcome = session(&s, base, &name, &mut stop, &resume).await;
        let wait = match outcome {
            Outcome::Stopped => return,
            Outcome::Restart => {
                info!(lecture = %name, origin = %base, "the origin's source restarted: new session");
                failing_since = None;
                continue;
            }
            Outcome::Ended => {
                info!(lecture = %name, origin = %base, "the origin ended the lecture");
                failing_since = None;
                backoff = min;
                not_live = NOT_LIVE_RETRY;
                NOT_LIVE_RETRY
            }
            Outcome::NotLive => {
                // A backup origin may have it. Asked again sooner while it has just been
                // live or just been asked for, less and less often for a name that is not.
                origin += 1;
                failing_since = None;
                backoff = min;
                let w = not_live;
                not_live = (not_live * 3 / 2).min(NOT_LIVE_MAX);
                w
            }
            Outcome::Failed(e) => {
                not_live = NOT_LIVE_RETRY;
                if started.elapsed() >= HEALTHY {
                    backoff = min;
                }
                let since = *failing_since.get_or_insert_with(Instant::now);
                let repeat = last_log
                    .as_ref()
                    .is_some_and(|(m, at)| *m == e && at.elapsed() < REPEAT_LOG);
                if !repeat {
                    warn!(lecture = %name, origin = %base, failing_for = ?since.elapsed(), "pull failed: {e}; trying again in {backoff:?}");
                    last_log = Some((e, Instant::now()));
                }
                origin += 1;
                let w = backoff;
                backoff = (backoff * 2).min(max);
                w
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Where the last session stopped: the video's (or first rendition's) init segment URI and
/// next part, so that a session after a short break continues there instead of sending
/// again what the last one sent.
type Resume = Arc<std::sync::Mutex<Option<ResumePoint>>>;

/// A rendition's init segment URI and the part after the last one delivered.
type ResumePoint = (String, u64, u32);

/// How far the lead rendition's parts have gone out to the relay, for [`Resume`]. A part
/// counts once its last frame has left the interleaver, not when it was fetched: frames
/// still queued are lost with a failing session, and the next session must fetch them
/// again (sans-IO).
#[derive(Debug, Default)]
struct Delivered {
    /// Parts fetched and not yet wholly sent: the decode time of each one's last frame and
    /// the resume point after it.
    pending: std::collections::VecDeque<(i64, ResumePoint)>,
}

impl Delivered {
    /// A part of the lead rendition was fetched, its last frame at `last_dts` (`None`: it
    /// had none). Returns the new resume point if nothing is waiting to be sent.
    fn fetched(&mut self, last_dts: Option<i64>, after: ResumePoint) -> Option<ResumePoint> {
        match last_dts {
            None if self.pending.is_empty() => Some(after),
            // An empty part after waiting ones counts with the next frame sent.
            last => {
                self.pending.push_back((last.unwrap_or(i64::MIN), after));
                None
            }
        }
    }

    /// A frame of the lead rendition at `dts` went to the relay: the resume point after
    /// the last part it completes, if any.
    fn sent(&mut self, dts: i64) -> Option<ResumePoint> {
        let mut done = None;
        while self.pending.front().is_some_and(|(last, _)| dts >= *last) {
            done = self.pending.pop_front().map(|(_, p)| p);
        }
        done
    }
}

/// The origin's state of a lecture is read this often while it is pulled.
const LEARN_EVERY: Duration = Duration::from_secs(30);

/// Reads the lecture's state from the first origin that has it, every [`LEARN_EVERY`].
async fn learn(s: Arc<Shared>, name: String) {
    loop {
        for base in &s.origins {
            let Ok(url) = base.join(&format!("api/v1/streams/{name}/state")) else {
                continue;
            };
            let Ok(body) = get(&s, &url, FETCH_TIMEOUT, MAX_PLAYLIST, None).await else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
                continue;
            };
            let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
            let next = v["next"]["starts_at"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| (text(&v["next"]["title"]).unwrap_or_default(), t.as_second()));
            let dialects = v["dialects"]
                .as_array()
                .map(|d| {
                    d.iter()
                        .filter_map(|x| Some((text(&x["lang"])?, text(&x["name"])?)))
                        .collect()
                })
                .unwrap_or_default();
            s.publish.learned(&name, text(&v["title"]), next, dialects);
            break;
        }
        tokio::time::sleep(LEARN_EVERY).await;
    }
}

/// What one rendition of the lecture sends the pull.
enum Msg {
    /// A part's frames, with the resume point after it for the lead rendition.
    Frames(TrackId, Vec<Frame>, Option<ResumePoint>),
    /// The origin's source restarted: a new init segment, after a discontinuity.
    Restart,
    Ended,
    Failed(String),
}

/// One publishing session fed from `base`: until the link fails, the lecture ends, or
/// nobody wants it.
async fn session(
    s: &Arc<Shared>,
    base: &Url,
    name: &str,
    stop: &mut watch::Receiver<bool>,
    resume: &Resume,
) -> Outcome {
    let block = Duration::from_millis(s.config.hls.block_timeout_ms);
    let multivariant = match base.join(&format!("hls/{name}/index.m3u8")) {
        Ok(u) => u,
        Err(e) => return Outcome::Failed(format!("bad URL: {e}")),
    };
    let link = Arc::new(Link::default());
    let text = match get(
        s,
        &multivariant,
        block + FETCH_TIMEOUT,
        MAX_PLAYLIST,
        Some(&link),
    )
    .await
    {
        Ok(b) => b,
        Err(Fetch::NotFound) => return Outcome::NotLive,
        // Live at the origin but without media yet.
        Err(Fetch::Status(503)) => return Outcome::NotLive,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let renditions = match read_multivariant(&String::from_utf8_lossy(&text)) {
        Ok(r) if !r.is_empty() => r,
        Ok(_) => return Outcome::NotLive,
        Err(e) => return Outcome::Failed(format!("{multivariant}: {e}")),
    };
    // Each rendition's playlist, where to start, and its init segment.
    let mut starts = Vec::new();
    for r in &renditions {
        let url = match multivariant.join(&r.uri) {
            Ok(u) => u,
            Err(e) => return Outcome::Failed(format!("bad rendition URI {:?}: {e}", r.uri)),
        };
        let playlist = match get_playlist(s, &url, None, block, &link).await {
            Ok(p) => p,
            Err(Fetch::NotFound | Fetch::Status(503)) => return Outcome::NotLive,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        if playlist.ended {
            return Outcome::Ended;
        }
        starts.push((url, playlist));
    }
    // Start every rendition where the last session stopped if the origin still has it,
    // else at the video's newest keyframe part (the renditions' parts line up), else at
    // each one's newest part.
    let lead = starts
        .iter()
        .zip(&renditions)
        .position(|(_, r)| r.video)
        .unwrap_or(0);
    let last = resume.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let continued = last.filter(|(map, m, n)| {
        let p = &starts[lead].1;
        p.parts
            .first()
            .is_some_and(|f| (f.msn, f.index) <= (*m, *n))
            && p.parts.iter().any(|x| x.map == *map)
            && p.parts.last().is_some_and(|l| l.map == *map)
    });
    let from = match &continued {
        Some((_, m, n)) => Some((*m, *n)),
        None => starts[lead].1.last_independent().map(|p| (p.msn, p.index)),
    };
    let mut tracks = Vec::new();
    for (i, ((url, playlist), r)) in starts.iter().zip(&renditions).enumerate() {
        let first = match (from, &continued) {
            // Not listed yet: the part after the newest.
            (Some((m, n)), Some(_)) => Some(playlist.part(m, n).cloned().unwrap_or_else(|| {
                media::m3u8_read::PartRef {
                    msn: m,
                    index: n,
                    uri: String::new(),
                    independent: false,
                    map: playlist
                        .parts
                        .last()
                        .map(|p| p.map.clone())
                        .unwrap_or_default(),
                    discontinuity: false,
                }
            })),
            (Some((m, n)), None) => playlist
                .part(m, n)
                .or_else(|| playlist.last_independent())
                .cloned(),
            (None, _) => playlist.last_independent().cloned(),
        };
        let Some(first) = first.filter(|p| !p.map.is_empty()) else {
            return Outcome::NotLive;
        };
        let init_url = match url.join(&first.map) {
            Ok(u) => u,
            Err(e) => return Outcome::Failed(format!("bad init URI: {e}")),
        };
        let mut init = match get(s, &init_url, FETCH_TIMEOUT, MAX_BODY, Some(&link))
            .await
            .map_err(|e| e.to_string())
            .and_then(|b| read_init(&b).map_err(|e| format!("{init_url}: {e}")))
        {
            Ok(t) => t,
            Err(e) => return Outcome::Failed(e),
        };
        if let Some(tag) = &r.language {
            match Language::parse(tag) {
                Ok(l) => init.info.language = Some(l),
                Err(e) => warn!(lecture = %name, "rendition {}: {e}", r.uri),
            }
        }
        tracks.push((TrackId(i as u32 + 1), url.clone(), first, init));
    }

    // The dialects' names as the origin shows them (before the tracks are announced).
    let names: Vec<(String, String)> = renditions
        .iter()
        .filter_map(|r| Some((r.language.clone()?, r.name.clone()?)))
        .collect();
    s.publish.learned(name, None, None, names);
    let mut sink = match s.publish.publish(PublishRequest {
        stream: name.to_string(),
        key: Some(s.pull_key.clone()),
        language: None,
        protocol: PROTOCOL,
        remote: None,
    }) {
        Ok(sink) => sink,
        Err(e @ PublishError::AlreadyPublishing(_)) => {
            return Outcome::Failed(format!("{e} here (a local source has it)"));
        }
        Err(e) => return Outcome::Failed(format!("refused here: {e}")),
    };
    let mut order = Interleave::default();
    for (id, _, _, init) in &tracks {
        order.add_track(*id, init.info.timescale);
        if let Err(e) = sink.handle(MediaEvent::Track {
            id: *id,
            info: init.info.clone(),
        }) {
            return Outcome::Failed(format!("track refused here: {e}"));
        }
    }
    let languages: Vec<String> = renditions
        .iter()
        .filter_map(|r| r.language.clone())
        .collect();
    info!(lecture = %name, origin = %base, dialects = ?languages, "pulling from the origin");

    let (tx, mut rx) = mpsc::channel(64);
    let renditions_followed = tracks.len();
    let mut followers = JoinSet::new();
    for (id, url, first, init) in tracks {
        let rendition = Follow {
            id,
            url,
            first,
            init,
            lead: id.0 as usize == lead + 1,
            link: link.clone(),
        };
        followers.spawn(follow(s.clone(), rendition, tx.clone()));
    }
    drop(tx);
    let mut every = tokio::time::interval(REPORT_EVERY);
    // The origin ended the lecture: every rendition's last parts are waited for (up to
    // ENDING), then what the interleaver holds goes out, then the lecture ends here.
    let mut ended = 0usize;
    let mut ending: Option<tokio::time::Instant> = None;
    let mut history: std::collections::VecDeque<(Instant, u64, u64)> = Default::default();
    let mut delivered = Delivered::default();
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = stop.changed() => {
                sink.finish();
                return Outcome::Stopped;
            }
            _ = tokio::time::sleep_until(ending.unwrap_or_else(tokio::time::Instant::now)), if ending.is_some() => {
                Some(Msg::Ended)
            }
            _ = every.tick() => {
                let (bytes, errors) = (link.bytes.load(Ordering::Relaxed), link.errors.load(Ordering::Relaxed));
                history.push_back((Instant::now(), bytes, errors));
                while history.len() > 2 && history[0].0.elapsed() > Duration::from_secs(60) {
                    history.pop_front();
                }
                let (t0, b0, e0) = history[0];
                let secs = t0.elapsed().as_secs_f64();
                let (viewers, dialects) = s.publish.audience(name);
                let rtt = link.ttfb_us.load(Ordering::Relaxed) as f64 / 1000.0;
                let mut report = format!("viewers={viewers}");
                if !dialects.is_empty() {
                    let d: Vec<String> = dialects.iter().map(|(l, n)| format!("{l}:{n}")).collect();
                    report.push_str(&format!(";dialects={}", d.join(",")));
                }
                if secs >= 1.0 {
                    report.push_str(&format!(";kbps={:.0}", (bytes - b0) as f64 * 8.0 / 1000.0 / secs));
                }
                if rtt > 0.0 {
                    report.push_str(&format!(";rtt={rtt:.0}"));
                }
                report.push_str(&format!(";errors={}", errors - e0));
                *link.report.lock().unwrap_or_else(|e| e.into_inner()) = report;
                sink.transport(media::sink::TransportStats {
                    rtt_ms: (rtt > 0.0).then_some(rtt),
                    ..Default::default()
                });
                continue;
            }
        };
        match msg {
            Some(Msg::Frames(id, frames, mark)) => {
                if let Some(after) = mark
                    && let Some(p) = delivered.fetched(frames.last().map(|f| f.dts), after)
                {
                    *resume.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
                }
                for f in frames {
                    order.push(id, f);
                }
                while let Some((track, frame)) = order.pop() {
                    let dts = frame.dts;
                    if let Err(e) = sink.handle(MediaEvent::Frame { track, frame }) {
                        return Outcome::Failed(format!("frame refused here: {e}"));
                    }
                    if track.0 as usize == lead + 1
                        && let Some(p) = delivered.sent(dts)
                    {
                        *resume.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
                    }
                }
            }
            Some(Msg::Restart) => return Outcome::Restart,
            Some(Msg::Ended) => {
                ended += 1;
                let deadline = *ending.get_or_insert_with(|| tokio::time::Instant::now() + ENDING);
                if ended < renditions_followed && tokio::time::Instant::now() < deadline {
                    continue;
                }
                for (track, frame) in order.drain() {
                    if sink.handle(MediaEvent::Frame { track, frame }).is_err() {
                        break;
                    }
                }
                sink.finish();
                return Outcome::Ended;
            }
            Some(Msg::Failed(e)) => return Outcome::Failed(e),
            None => return Outcome::Failed("every rendition stopped".into()),
        }
    }
}

/// Why a rendition stopped following.
enum Next {
    Ended,
    Restart,
    /// The session is over.
    Gone,
}

/// One rendition to follow.
struct Follow {
    id: TrackId,
    url: Url,
    /// The part to start at.
    first: media::m3u8_read::PartRef,
    init: InitTrack,
    /// The lead rendition: its messages carry the resume point after each part.
    lead: bool,
    link: Arc<Link>,
}

/// Follows one rendition from part `first` on, sending its frames.
async fn follow(s: Arc<Shared>, f: Follow, tx: mpsc::Sender<Msg>) {
    let Follow {
        id,
        url,
        first,
        init,
        lead,
        link,
    } = f;
    let block = Duration::from_millis(s.config.hls.block_timeout_ms);
    let mut want = (first.msn, first.index);
    let map = first.map.clone();
    let mut next_dts = 0i64;
    let result: Result<Next, String> = async {
        loop {
            let playlist = match get_playlist(&s, &url, Some(want), block, &link).await {
                Ok(p) => p,
                // Nothing new within the origin's blocking time (its own source is
                // away): the session here goes on waiting while the origin answers.
                Err(Fetch::Status(503)) => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
                Err(e) => return Err(e.to_string()),
            };
            let behind = playlist.parts.first().is_some_and(|f| {
                (f.msn, f.index) > want && !(f.msn == want.0.saturating_add(1) && f.index == 0)
            });
            if behind {
                // The parts we wanted left the origin's window (a stall here longer than
                // the window): continue from the newest keyframe part.
                let Some(p) = playlist.last_independent() else {
                    continue;
                };
                warn!(rendition = %url, "fell behind the origin's window: skipping to its newest part");
                want = (p.msn, p.index);
            }
            let parts: Vec<_> = playlist
                .parts
                .iter()
                .filter(|p| (p.msn, p.index) >= want)
                .cloned()
                .collect();
            for p in parts {
                if p.map != map {
                    // A new init segment: the origin's source restarted (or changed its
                    // codec). A new session here carries the discontinuity on.
                    return Ok(Next::Restart);
                }
                let part_url = url.join(&p.uri).map_err(|e| e.to_string())?;
                let data = get(&s, &part_url, FETCH_TIMEOUT, MAX_BODY, Some(&link))
                    .await
                    .map_err(|e| e.to_string())?;
                let frames = read_fragment(&data, &init, &mut next_dts)
                    .map_err(|e| format!("{part_url}: {e}"))?;
                want = (p.msn, p.index.saturating_add(1));
                let mark = lead.then(|| (map.clone(), want.0, want.1));
                if tx.send(Msg::Frames(id, frames, mark)).await.is_err() {
                    return Ok(Next::Gone);
                }
            }
            if playlist.ended {
                return Ok(Next::Ended);
            }
        }
    }
    .await;
    let _ = match result {
        Ok(Next::Ended) => tx.send(Msg::Ended).await,
        Ok(Next::Restart) => tx.send(Msg::Restart).await,
        Ok(Next::Gone) => Ok(()),
        Err(e) => tx.send(Msg::Failed(e)).await,
    };
}

/// A media playlist, as a blocking reload for part `want` when given.
async fn get_playlist(
    s: &Shared,
    url: &Url,
    want: Option<(u64, u32)>,
    block: Duration,
    link: &Link,
) -> Result<LivePlaylist, Fetch> {
    let mut url = url.clone();
    if let Some((msn, part)) = want {
        url.set_query(Some(&format!("_HLS_msn={msn}&_HLS_part={part}")));
    }
    let body = get(s, &url, block + REPLY_SLACK, MAX_PLAYLIST, Some(link)).await?;
    read_media(&String::from_utf8_lossy(&body)).map_err(|e| Fetch::Failed(format!("{url}: {e}")))
}

#[derive(Debug, thiserror::Error)]
enum Fetch {
    #[error("not found")]
    NotFound,
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("{0}")]
    Failed(String),
}

/// One pull's link to its origin: what it received and how fast, and the report it sends
/// with every request (the origin's roster of sites).
#[derive(Default)]
struct Link {
    bytes: AtomicU64,
    errors: AtomicU64,
    /// Time to the first byte of the last part fetched, µs.
    ttfb_us: AtomicU64,
    report: std::sync::Mutex<String>,
}

impl Link {
    fn report(&self) -> String {
        self.report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// GETs `url` from the origin with the edge's key, whole, within `timeout`, reporting over
/// `link` (and counting on it) when given.
async fn get(
    s: &Shared,
    url: &Url,
    timeout: Duration,
    limit: usize,
    link: Option<&Link>,
) -> Result<Bytes, Fetch> {
    let result = fetch(s, url, timeout, limit, link).await;
    if let Some(l) = link {
        match &result {
            Ok(b) => {
                l.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
            }
            Err(Fetch::Status(503)) => {}
            Err(_) => {
                l.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    result
}

async fn fetch(
    s: &Shared,
    url: &Url,
    timeout: Duration,
    limit: usize,
    link: Option<&Link>,
) -> Result<Bytes, Fetch> {
    let mut request = s
        .client
        .get(url.clone())
        .bearer_auth(&s.config.edge.key)
        .header(EDGE_HEADER, &s.name)
        .timeout(timeout);
    if let Some(l) = link {
        request = request.header(EDGE_REPORT_HEADER, l.report());
    }
    let fail = |e: reqwest::Error| Fetch::Failed(format!("{url}: {}", error_chain(&e)));
    let asked = Instant::now();
    let mut response = request.send().await.map_err(fail)?;
    // Parts exist when asked for: their first byte measures the link (playlists block).
    if let Some(l) = link
        && url.path().ends_with(".m4s")
    {
        l.ttfb_us
            .store(asked.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
    match response.status().as_u16() {
        200 => {}
        404 => return Err(Fetch::NotFound),
        401 | 403 => {
            let code = response.status().as_u16();
            let body = response.bytes().await.unwrap_or_default();
            let reason = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["reason"].as_str().map(str::to_string));
            return Err(Fetch::Failed(match reason.as_deref() {
                Some("protected") => format!(
                    "{url}: the origin does not let edges carry this lecture (it needs a playback token: watch it from the origin)"
                ),
                _ => format!(
                    "{url}: the origin refused this edge (HTTP {code}): is edge.key among its edge.accept_keys?"
                ),
            }));
        }
        code => return Err(Fetch::Status(code)),
    }
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(Fetch::Failed(format!("{url}: larger than {limit} bytes")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(fail)? {
        if body.len() + chunk.len() > limit {
            return Err(Fetch::Failed(format!("{url}: larger than {limit} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// An error with its sources ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(msn: u64, part: u32) -> ResumePoint {
        ("init-0.mp4".to_string(), msn, part)
    }

    #[test]
    fn a_part_counts_as_delivered_when_its_last_frame_has_gone_out() {
        let mut d = Delivered::default();
        // Two parts fetched (frames up to dts 300, then up to 600), nothing sent yet: a
        // session failing now resumes at neither.
        assert_eq!(d.fetched(Some(300), point(7, 1)), None);
        assert_eq!(d.fetched(Some(600), point(7, 2)), None);
        assert_eq!(d.sent(200), None);
        assert_eq!(d.sent(300), Some(point(7, 1)));
        // An empty part waits behind the one before it, and goes with its last frame.
        assert_eq!(d.fetched(None, point(7, 3)), None);
        assert_eq!(d.sent(500), None);
        assert_eq!(d.sent(600), Some(point(7, 3)));
        // With nothing waiting, an empty part is delivered at once.
        assert_eq!(d.fetched(None, point(7, 4)), Some(point(7, 4)));
        assert_eq!(d.sent(900), None);
    }
}
