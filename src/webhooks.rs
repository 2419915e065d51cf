//! Webhooks for the district's app platform: a lecture started or ended, its replay is
//! ready, its recording failed or resumed. Each event is queued on disk first
//! ([`recorder::outbox`]) and POSTed as JSON in order, retried with backoff across restarts.
//! The catalogue, when it runs, is also told when a replay is ready (it notifies those who
//! booked the lecture through its own webhook).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use recorder::outbox::Outbox;
use recorder::{Notice, Recording, State};
use relay::hub::{Hub, Lecture, Status};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tracing::{info, warn};

/// Turns what happens into queued events.
pub struct Webhooks {
    outbox: Arc<Outbox>,
    public_url: String,
    queued: Arc<Notify>,
}

/// What a lecture did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LectureEvent {
    Started,
    Ended,
}

impl Webhooks {
    /// Queues events in `outbox`; `public_url` goes in front of the paths in bodies.
    pub fn new(outbox: Arc<Outbox>, public_url: &str) -> Arc<Self> {
        Arc::new(Webhooks {
            outbox,
            public_url: public_url.trim_end_matches('/').to_string(),
            queued: Arc::new(Notify::new()),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.public_url)
    }

    fn queue(&self, event: &str, body: Value) {
        let mut body = body;
        body["event"] = json!(event);
        body["at"] = json!(jiff::Timestamp::now().to_string());
        match self.outbox.push(event, body.to_string()) {
            Ok(_) => self.queued.notify_one(),
            // The event is lost, and said so: the lecture and its recording go on.
            Err(e) => warn!(event, "webhook not queued: {e}"),
        }
    }

    /// Resolves once nothing is left in the queue (delivered, or given up after its last
    /// attempt): for the shutdown, which waits a little for it.
    pub async fn delivered_all(&self) {
        loop {
            let outbox = self.outbox.clone();
            let empty = tokio::task::spawn_blocking(move || outbox.pending().is_empty())
                .await
                .unwrap_or(true);
            if empty {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn lecture(&self, what: LectureEvent, l: &Lecture) {
        let mut lecture = json!({
            "name": l.name,
            "title": l.title,
            "instance": l.id,
            "started": jiff::Timestamp::try_from(l.started).ok().map(|t| t.to_string()),
            "hls": self.url(&format!("/hls/{}/index.m3u8", l.name)),
            "play": self.url(&format!("/play/{}", l.name)),
            "dialects": l.dialects().into_iter().map(|(lang, name)| json!({"lang": lang, "name": name})).collect::<Vec<_>>(),
        });
        lecture["recording"] = json!(l.recording().map(|r| r.id.clone()));
        let event = match what {
            LectureEvent::Started => "lecture.started",
            LectureEvent::Ended => "lecture.ended",
        };
        self.queue(event, json!({ "lecture": lecture }));
    }

    /// A recording's description with absolute URLs.
    fn recording(&self, rec: &Recording) -> Value {
        let mut v = relay::replay::describe(rec);
        for key in ["hls", "mp4", "poster"] {
            if let Some(path) = v.get(key).and_then(Value::as_str).map(str::to_string)
                && path.starts_with('/')
            {
                v[key] = json!(self.url(&path));
            }
        }
        v
    }

    /// Told by the recorder (on a writer thread: queuing is a small file write).
    pub fn notice(&self, notice: Notice, rec: &Arc<Recording>) {
        let event = match notice {
            // `lecture.started` says it, with the recording's id.
            Notice::Started => return,
            Notice::Failed => "recording.failed",
            Notice::Resumed => "recording.resumed",
            Notice::Ended => {
                let meta = rec.meta();
                let lecture = json!({
                    "name": meta.lecture,
                    "title": meta.title,
                    "started": meta.started.to_string(),
                    "hls": self.url(&format!("/hls/{}/index.m3u8", meta.lecture)),
                    "play": self.url(&format!("/play/{}", meta.lecture)),
                    "recording": rec.id,
                });
                self.queue("lecture.ended", json!({ "lecture": lecture }));
                let has_media = meta.duration_s.is_some_and(|d| d > 0.0);
                if !has_media || !matches!(meta.state, State::Complete | State::Failed) {
                    return;
                }
                "replay.ready"
            }
        };
        self.queue(event, json!({ "recording": self.recording(rec) }));
    }
}

/// True when a finished recording can be replayed (it has media).
pub fn replayable(rec: &Recording) -> bool {
    let meta = rec.meta();
    !rec.is_live() && meta.duration_s.is_some_and(|d| d > 0.0)
}

/// What the watcher knows of a lecture it told the start of.
#[derive(Debug, Clone, Copy)]
struct Told {
    instance: u64,
    ended: bool,
    /// It has a recording: the recorder tells its end (then its replay), in that order.
    recorded: bool,
}

/// Watches the hub and queues `lecture.started` when a lecture instance goes live and
/// `lecture.ended` when it ends (a publisher that reconnects within the grace time does not
/// end it). The end of a recorded lecture is told when its recording is closed, just
/// before `replay.ready`, so the two always come in that order.
pub async fn watch_lectures(hub: Arc<Hub>, hooks: Arc<Webhooks>) {
    let mut events = hub.subscribe();
    let mut seen: HashMap<String, Told> = HashMap::new();
    let check = |name: &str, seen: &mut HashMap<String, Told>| {
        let current = hub.lecture(name);
        if let Some(t) = seen.get(name).copied()
            && !t.ended
            && current.as_ref().is_none_or(|l| l.id != t.instance)
        {
            // Ended and gone (or replaced) before we looked: its end is still news.
            if !t.recorded {
                hooks.queue(
                    "lecture.ended",
                    json!({ "lecture": { "name": name, "instance": t.instance } }),
                );
            }
            seen.remove(name);
        }
        let Some(l) = current else {
            return;
        };
        let ended = matches!(l.status(), Status::Ended { .. });
        let recorded = l.recording().is_some();
        match seen.get_mut(name) {
            None if !ended && l.has_media() => {
                hooks.lecture(LectureEvent::Started, &l);
                seen.insert(
                    name.to_string(),
                    Told {
                        instance: l.id,
                        ended: false,
                        recorded,
                    },
                );
            }
            Some(t) if t.instance == l.id && !t.ended => {
                t.recorded |= recorded;
                if ended {
                    if !t.recorded {
                        hooks.lecture(LectureEvent::Ended, &l);
                    }
                    t.ended = true;
                }
            }
            _ => {}
        }
    };
    loop {
        match events.recv().await {
            Ok(e) => check(&e.lecture, &mut seen),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                let mut names: Vec<String> = hub.list().iter().map(|l| l.name.clone()).collect();
                names.extend(seen.keys().cloned());
                names.sort();
                names.dedup();
                for n in names {
                    check(&n, &mut seen);
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
        // Names whose end was told and whose lecture is gone are forgotten.
        seen.retain(|name, t| !t.ended || hub.lecture(name).is_some_and(|l| l.id == t.instance));
    }
}

/// POSTs queued events to `url`, oldest first; an event that fails holds the ones after it
/// (so the platform sees them in order) until its next attempt.
pub async fn deliver(hooks: Arc<Webhooks>, url: String, secret: String) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            warn!("webhooks disabled: {e}");
            return;
        }
    };
    loop {
        let outbox = hooks.outbox.clone();
        let head = tokio::task::spawn_blocking(move || outbox.pending().into_iter().next())
            .await
            .ok()
            .flatten();
        let Some(event) = head else {
            hooks.queued.notified().await;
            continue;
        };
        let now = jiff::Timestamp::now();
        if event.next_attempt > now {
            let wait = Duration::try_from(event.next_attempt.duration_since(now))
                .unwrap_or(Duration::from_secs(1));
            tokio::time::sleep(wait).await;
            continue;
        }
        let mut req = client
            .post(&url)
            .header("content-type", "application/json")
            .header("x-jiangtang-event", event.event.as_str())
            .header("x-jiangtang-delivery", event.id.to_string());
        if !secret.is_empty() {
            req = req.header(
                "x-jiangtang-signature",
                catalogue::sign(&secret, &event.body),
            );
        }
        let result = match req.body(event.body.clone()).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("answered {}", r.status())),
            Err(e) => Err(e.to_string()),
        };
        let outbox = hooks.outbox.clone();
        let (id, name) = (event.id, event.event.clone());
        match result {
            Ok(()) => {
                info!(event = %name, id, "webhook delivered");
                let _ = tokio::task::spawn_blocking(move || outbox.delivered(id)).await;
            }
            Err(why) => {
                warn!(event = %name, id, attempt = event.attempts + 1, "webhook not delivered: {why}");
                let _ = tokio::task::spawn_blocking(move || {
                    outbox.failed(event, why, jiff::Timestamp::now())
                })
                .await;
            }
        }
    }
}
