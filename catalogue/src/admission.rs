//! Who may publish and who may watch, answered from memory for the relay.
//!
//! A [`Snapshot`] of publish keys and of each stream's occurrences (times, visibility) is
//! reloaded after every change this process makes and every few seconds (other relays
//! sharing a PostgreSQL catalogue change it too). Decisions read only the snapshot.
//!
//! Playback tokens are `STREAM.EXPIRES.MAC`: the Unix expiry time and the first 16 bytes
//! of HMAC-SHA256 over both, in hex, keyed by a secret kept in the database (so every relay
//! of one catalogue accepts the others' tokens). They need no lookup and cannot be forged
//! or moved to another lecture; a token names its stream so a player can say "this link is
//! for another lecture" rather than only "invalid".

use std::collections::HashMap;
use std::sync::Arc;

use hmac::{KeyInit, Mac};
use media::admission::{Admission, Refusal, Verdict};
use sqlx::Row;
use subtle::ConstantTimeEq;

use crate::model::{PlaybackToken, Visibility};
use crate::{Catalogue, Error, ts};

/// What admission decisions read.
#[derive(Debug, Default)]
pub struct Snapshot {
    streams: HashMap<String, StreamEntry>,
}

#[derive(Debug, Default)]
struct StreamEntry {
    /// None: open (a `[[lecture]]` without a key).
    key: Option<String>,
    previous: Option<(String, i64)>,
    /// (start, end, visibility) of its scheduled occurrences, in start order.
    occurrences: Vec<(Option<i64>, Option<i64>, Visibility)>,
    /// (start, title) of those with a start that have not gone live: what a player shows as
    /// the next lecture.
    titled: Vec<(i64, String)>,
}

impl StreamEntry {
    /// The visibility that applies at `now`: of the occurrence on now (from an hour before
    /// its start), else of the latest one that started (its replay), else of the next one.
    fn visibility_at(&self, now: i64) -> Visibility {
        let on = self
            .occurrences
            .iter()
            .find(|(s, e, _)| s.is_some_and(|s| s - 3600 <= now) && e.is_none_or(|e| now <= e));
        let past = || {
            self.occurrences
                .iter()
                .rev()
                .find(|(s, _, _)| s.is_some_and(|s| s <= now))
        };
        on.or_else(past)
            .or_else(|| self.occurrences.first())
            .map(|o| o.2)
            .unwrap_or(Visibility::Public)
    }
}

fn mac(secret: &[u8], stream: &str, expires: i64) -> String {
    let mut m =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    m.update(b"jiangtang playback token\0");
    m.update(stream.as_bytes());
    m.update(b"\0");
    m.update(expires.to_string().as_bytes());
    m.finalize().into_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A playback token for `stream` valid until `expires` (Unix seconds).
pub fn make_token(secret: &[u8], stream: &str, expires: i64) -> String {
    format!("{stream}.{expires}.{}", mac(secret, stream, expires))
}

/// Fuzzing entry point for playback tokens: `data` as a token for lecture `hall-a` is checked
/// (it must never pass without our MAC), and a token we make for `data` as a lecture name
/// must check back. Never panics.
#[doc(hidden)]
pub fn fuzz_token(data: &[u8]) {
    const SECRET: &[u8] = b"fuzzing secret";
    let text = String::from_utf8_lossy(data);
    if check_token(SECRET, "hall-a", &text, 0).is_ok() {
        let mut parts = text.rsplitn(3, '.');
        let (sig, expires) = (
            parts.next(),
            parts.next().and_then(|e| e.parse::<i64>().ok()),
        );
        assert_eq!(sig, expires.map(|e| mac(SECRET, "hall-a", e)).as_deref());
    }
    let made = make_token(SECRET, &text, 100);
    assert_eq!(check_token(SECRET, &text, &made, 99), Ok(()));
    assert_eq!(
        check_token(SECRET, &text, &made, 100),
        Err(Refusal::TokenExpired)
    );
}

/// Checks a playback token for `stream` at `now`.
pub fn check_token(secret: &[u8], stream: &str, token: &str, now: i64) -> Result<(), Refusal> {
    let mut parts = token.rsplitn(3, '.');
    let (Some(sig), Some(expires), Some(named)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Refusal::TokenInvalid);
    };
    let expires: i64 = expires.parse().map_err(|_| Refusal::TokenInvalid)?;
    let good = mac(secret, named, expires);
    if !bool::from(good.as_bytes().ct_eq(sig.as_bytes())) {
        return Err(Refusal::TokenInvalid);
    }
    if named != stream {
        return Err(Refusal::TokenOtherLecture);
    }
    if now >= expires {
        return Err(Refusal::TokenExpired);
    }
    Ok(())
}

impl Catalogue {
    /// Reloads what admission decisions read.
    pub async fn refresh_admission(&self) -> Result<(), Error> {
        let mut snap = Snapshot::default();
        let rows =
            sqlx::query("SELECT name, publish_key, previous_key, previous_until FROM streams")
                .fetch_all(&self.db().read)
                .await?;
        for r in &rows {
            let previous = match (
                r.try_get::<Option<String>, _>("previous_key")?,
                r.try_get::<Option<i64>, _>("previous_until")?,
            ) {
                (Some(k), Some(u)) => Some((k, u)),
                _ => None,
            };
            snap.streams.insert(
                r.try_get("name")?,
                StreamEntry {
                    key: r.try_get("publish_key")?,
                    previous,
                    occurrences: Vec::new(),
                    titled: Vec::new(),
                },
            );
        }
        // Occurrences from a month back (replays) on.
        let rows = sqlx::query(
            "SELECT stream, starts_at, ends_at, visibility, title, live_at FROM lectures WHERE status = 'scheduled' \
             AND COALESCE(ends_at, starts_at, $1) >= $1 ORDER BY starts_at, id",
        )
        .bind(self.now() - 30 * 86_400)
        .fetch_all(&self.db().read)
        .await?;
        for r in &rows {
            let stream: String = r.try_get("stream")?;
            let v = Visibility::parse(&r.try_get::<String, _>("visibility")?)
                .unwrap_or(Visibility::Private);
            let starts_at: Option<i64> = r.try_get("starts_at")?;
            let entry = snap.streams.entry(stream).or_default();
            entry
                .occurrences
                .push((starts_at, r.try_get("ends_at")?, v));
            // One that went live is not a next lecture any more, early or late.
            let went_live: Option<i64> = r.try_get("live_at")?;
            if let (Some(start), None) = (starts_at, went_live) {
                entry.titled.push((start, r.try_get("title")?));
            }
        }
        *self
            .inner
            .snapshot
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(snap);
        Ok(())
    }

    /// The scheduled occurrences of `stream` starting after `after` (Unix seconds), title
    /// and start, soonest first, at most `n`: answered from memory.
    pub fn upcoming(&self, stream: &str, after: i64, n: usize) -> Vec<(String, i64)> {
        self.snapshot()
            .streams
            .get(stream)
            .map(|e| {
                e.titled
                    .iter()
                    .filter(|(start, _)| *start > after)
                    .take(n)
                    .map(|(start, title)| (title.clone(), *start))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.inner
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A playback token for lecture `id`'s stream, valid for `hours` (operators give these
    /// to a school for its private lesson).
    pub async fn playback_token(&self, id: i64, hours: i64) -> Result<PlaybackToken, Error> {
        if !(1..=24 * 366).contains(&hours) {
            return Err(Error::Invalid("hours must be 1..=8784".into()));
        }
        let stream: String = sqlx::query_scalar("SELECT stream FROM lectures WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.db().read)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no lecture {id}")))?;
        let expires = self.now() + hours * 3600;
        Ok(PlaybackToken {
            token: make_token(&self.inner.token_secret, &stream, expires),
            expires_at: ts(expires),
        })
    }
}

impl Admission for Catalogue {
    fn may_publish(&self, stream: &str, key: Option<&str>) -> Verdict {
        let snap = self.snapshot();
        let Some(entry) = snap.streams.get(stream) else {
            return Verdict::NotMine;
        };
        let Some(current) = &entry.key else {
            return Verdict::Allow;
        };
        let given = key.unwrap_or("").as_bytes();
        let matches = |k: &str| bool::from(k.as_bytes().ct_eq(given));
        let previous_ok = entry
            .previous
            .as_ref()
            .is_some_and(|(k, until)| self.now() < *until && matches(k));
        if matches(current) || previous_ok {
            Verdict::Allow
        } else {
            Verdict::Deny(Refusal::BadKey)
        }
    }

    fn may_watch(&self, stream: &str, token: Option<&str>) -> Verdict {
        let snap = self.snapshot();
        let Some(entry) = snap.streams.get(stream) else {
            return Verdict::NotMine;
        };
        let now = self.now();
        if entry.visibility_at(now) == Visibility::Public {
            return Verdict::Allow;
        }
        match token {
            None | Some("") => Verdict::Deny(Refusal::TokenMissing),
            Some(t) => match check_token(&self.inner.token_secret, stream, t, now) {
                Ok(()) => Verdict::Allow,
                Err(r) => Verdict::Deny(r),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_check_signature_stream_and_expiry() {
        let k = b"secret";
        let t = make_token(k, "xihe.2", 1000);
        assert_eq!(check_token(k, "xihe.2", &t, 999), Ok(()));
        assert_eq!(
            check_token(k, "xihe.2", &t, 1000),
            Err(Refusal::TokenExpired)
        );
        assert_eq!(
            check_token(k, "other", &t, 10),
            Err(Refusal::TokenOtherLecture)
        );
        assert_eq!(
            check_token(b"other key", "xihe.2", &t, 10),
            Err(Refusal::TokenInvalid)
        );
        let tampered = t.replace(".1000.", ".9000.");
        assert_eq!(
            check_token(k, "xihe.2", &tampered, 10),
            Err(Refusal::TokenInvalid)
        );
        assert_eq!(
            check_token(k, "xihe.2", "garbage", 10),
            Err(Refusal::TokenInvalid)
        );
    }

    #[test]
    fn visibility_follows_the_occurrence_on_now() {
        let e = StreamEntry {
            key: None,
            previous: None,
            occurrences: vec![
                (Some(10_000), Some(13_600), Visibility::Public),
                (Some(100_000), Some(103_600), Visibility::Private),
            ],
            titled: Vec::new(),
        };
        assert_eq!(e.visibility_at(0), Visibility::Public);
        assert_eq!(
            e.visibility_at(50_000),
            Visibility::Public,
            "replay of the first"
        );
        assert_eq!(
            e.visibility_at(97_000),
            Visibility::Private,
            "an hour before"
        );
        assert_eq!(e.visibility_at(200_000), Visibility::Private);
    }
}
