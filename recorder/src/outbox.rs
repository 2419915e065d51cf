//! A durable queue of webhook events: each event is a file, written and flushed before it
//! counts as queued and removed once delivered, so events survive a restart (or a crash)
//! and go out in the order they happened. Delivery itself (HTTP) is the caller's.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tracing::{error, warn};

/// One queued event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// Its place in the queue (increasing).
    pub id: u64,
    /// Event name (`lecture.started`, `replay.ready`, ...).
    pub event: String,
    /// The JSON body to POST.
    pub body: String,
    /// Failed deliveries so far.
    pub attempts: u32,
    /// Not to be tried before this.
    pub next_attempt: Timestamp,
    /// Why the last attempt failed.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// The queue, a folder of `ID.json` files (given-up events are kept as `failed-ID.json`).
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    next: AtomicU64,
    max_attempts: u32,
}

/// Wait before the attempt after `attempts` failed ones: 2, 4, 8 ... s, at most 10 min.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.clamp(1, 10)).min(Duration::from_secs(600))
}

impl Outbox {
    /// Opens (creating) the queue in `dir`; an event is given up after `max_attempts`.
    pub fn open(dir: &Path, max_attempts: u32) -> std::io::Result<Outbox> {
        std::fs::create_dir_all(dir)?;
        let last = ids(dir, true).into_iter().max().unwrap_or(0);
        Ok(Outbox {
            dir: dir.to_path_buf(),
            next: AtomicU64::new(last + 1),
            max_attempts: max_attempts.max(1),
        })
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:016}.json"))
    }

    fn write(&self, p: &Pending) -> std::io::Result<()> {
        let tmp = self.dir.join(format!(".{:016}.tmp", p.id));
        let text = serde_json::to_vec(p).map_err(std::io::Error::other)?;
        {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, self.path(p.id))?;
        crate::meta::sync_dir(&self.dir)
    }

    /// Queues an event; once this returns `Ok` it survives a crash.
    pub fn push(&self, event: &str, body: String) -> std::io::Result<u64> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.write(&Pending {
            id,
            event: event.to_string(),
            body,
            attempts: 0,
            next_attempt: Timestamp::now(),
            last_error: None,
        })?;
        Ok(id)
    }

    /// Every queued event, oldest first. Files that cannot be read are set aside and logged.
    pub fn pending(&self) -> Vec<Pending> {
        let mut ids = ids(&self.dir, false);
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|id| {
                let path = self.path(id);
                let read = std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice::<Pending>(&b).map_err(|e| e.to_string()));
                match read {
                    Ok(p) if p.id == id => Some(p),
                    Ok(_) | Err(_) => {
                        error!(file = %path.display(), "webhook event cannot be read; set aside");
                        let _ =
                            std::fs::rename(&path, self.dir.join(format!("damaged-{id:016}.json")));
                        None
                    }
                }
            })
            .collect()
    }

    /// The event was delivered.
    pub fn delivered(&self, id: u64) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// A delivery failed: the event is tried again after a backoff, or given up (kept as
    /// `failed-ID.json`) after the last attempt. Returns whether it stays queued.
    pub fn failed(&self, mut p: Pending, why: String, now: Timestamp) -> bool {
        p.attempts += 1;
        p.last_error = Some(why);
        if p.attempts >= self.max_attempts {
            warn!(event = %p.event, id = p.id, attempts = p.attempts, error = ?p.last_error, "webhook given up");
            let _ = std::fs::rename(
                self.path(p.id),
                self.dir.join(format!("failed-{:016}.json", p.id)),
            );
            return false;
        }
        p.next_attempt = now + backoff(p.attempts);
        if let Err(e) = self.write(&p) {
            warn!(id = p.id, "webhook queue: {e}");
        }
        true
    }
}

/// Ids of queued events, and with `set_aside` also of given-up and damaged ones.
fn ids(dir: &Path, set_aside: bool) -> Vec<u64> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".json")?;
            let digits = match stem
                .strip_prefix("failed-")
                .or(stem.strip_prefix("damaged-"))
            {
                Some(d) if set_aside => d,
                Some(_) => return None,
                None => stem,
            };
            digits.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_reopening_in_order_and_are_given_up_after_the_last_attempt() {
        let dir = std::env::temp_dir().join(format!("outbox-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let q = Outbox::open(&dir, 3).unwrap();
        let a = q.push("lecture.started", "{\"a\":1}".into()).unwrap();
        let b = q.push("lecture.ended", "{\"b\":2}".into()).unwrap();
        assert!(a < b);
        drop(q);
        let q = Outbox::open(&dir, 3).unwrap();
        let p = q.pending();
        assert_eq!(p.iter().map(|p| p.id).collect::<Vec<_>>(), vec![a, b]);
        let now = Timestamp::now();
        assert!(q.failed(p[0].clone(), "refused".into(), now));
        let again = &q.pending()[0];
        assert_eq!(
            (again.attempts, again.last_error.as_deref()),
            (1, Some("refused"))
        );
        assert!(again.next_attempt >= now + backoff(1));
        assert!(q.failed(again.clone(), "refused".into(), now));
        assert!(!q.failed(q.pending()[0].clone(), "refused".into(), now));
        assert_eq!(
            q.pending().iter().map(|p| p.id).collect::<Vec<_>>(),
            vec![b]
        );
        // A given-up event's id is never reused.
        let c = q.push("x", "{}".into()).unwrap();
        assert!(c > b);
        q.delivered(b).unwrap();
        std::fs::write(dir.join(format!("{:016}.json", c + 1)), b"{not json").unwrap();
        assert_eq!(
            q.pending().iter().map(|p| p.id).collect::<Vec<_>>(),
            vec![c]
        );
        assert!(dir.join(format!("failed-{a:016}.json")).exists());
        assert!(dir.join(format!("damaged-{:016}.json", c + 1)).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn backoff_doubles_to_ten_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(600));
    }
}
