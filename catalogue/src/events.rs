//! Webhook events: written to the `outbox` table in the transaction that causes them (so a
//! restart loses none), then POSTed in order, retried with backoff, each at least once.
//! Also the reminder sweep that queues "starting soon" events, and the calls the relay
//! makes when a lecture goes live or its replay is ready.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use sqlx::{Any, Row, Transaction};
use tracing::{info, warn};

use crate::{Catalogue, Error, ts};

/// How often the reminder sweep and the admission refresh run.
const SWEEP: Duration = Duration::from_secs(15);
/// A sender that took an event and died leaves it to others after this long.
const LEASE_S: i64 = 60;

impl Catalogue {
    pub(crate) fn wake_outbox(&self) {
        self.inner.outbox_wake.notify_one();
    }

    /// Queues an event (nothing when no webhook is configured).
    async fn enqueue(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &str,
        mut payload: Value,
        now: i64,
    ) -> Result<(), Error> {
        if self.inner.settings.webhook.is_none() {
            return Ok(());
        }
        payload["event"] = json!(event);
        payload["created_at"] = json!(ts(now).to_string());
        sqlx::query(
            "INSERT INTO outbox (event, payload, created_at, next_attempt_at) VALUES ($1, $2, $3, $3)",
        )
        .bind(event.to_string())
        .bind(payload.to_string())
        .bind(now)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// The lecture as events describe it.
    async fn lecture_json(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: i64,
    ) -> Result<Value, Error> {
        let r = sqlx::query(
            "SELECT l.id, l.stream, l.title, l.starts_at, l.ends_at, l.status, l.replay_url, \
             h.name AS hall FROM lectures l LEFT JOIN halls h ON h.id = l.hall_id WHERE l.id = $1",
        )
        .bind(id)
        .fetch_one(&mut **tx)
        .await?;
        Ok(json!({
            "id": r.try_get::<i64, _>("id")?,
            "stream": r.try_get::<String, _>("stream")?,
            "title": r.try_get::<String, _>("title")?,
            "starts_at": r.try_get::<Option<i64>, _>("starts_at")?.map(|t| ts(t).to_string()),
            "ends_at": r.try_get::<Option<i64>, _>("ends_at")?.map(|t| ts(t).to_string()),
            "status": r.try_get::<String, _>("status")?,
            "hall": r.try_get::<Option<String>, _>("hall")?,
            "replay_url": r.try_get::<Option<String>, _>("replay_url")?,
        }))
    }

    /// Queues `event` for a lecture with everyone holding a booking for it (confirmed or
    /// waiting), when anyone does.
    pub(crate) async fn lecture_event(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: i64,
        event: &str,
        now: i64,
    ) -> Result<(), Error> {
        if self.inner.settings.webhook.is_none() {
            return Ok(());
        }
        let rows = sqlx::query(
            "SELECT p.person, b.name, b.contact, b.kind, b.status FROM bookings b \
             JOIN people p ON p.id = b.person_id WHERE b.lecture_id = $1 \
             AND b.status <> 'cancelled' ORDER BY b.id",
        )
        .bind(id)
        .fetch_all(&mut **tx)
        .await?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut bookings = Vec::with_capacity(rows.len());
        for r in &rows {
            bookings.push(json!({
                "person": r.try_get::<String, _>("person")?,
                "name": r.try_get::<String, _>("name")?,
                "contact": r.try_get::<String, _>("contact")?,
                "kind": r.try_get::<String, _>("kind")?,
                "status": r.try_get::<String, _>("status")?,
            }));
        }
        let lecture = self.lecture_json(tx, id).await?;
        self.enqueue(
            tx,
            event,
            json!({ "lecture": lecture, "bookings": bookings }),
            now,
        )
        .await
    }

    /// Queues `event` about one booking.
    pub(crate) async fn booking_event(
        &self,
        tx: &mut Transaction<'static, Any>,
        booking_id: i64,
        event: &str,
        now: i64,
    ) -> Result<(), Error> {
        if self.inner.settings.webhook.is_none() {
            return Ok(());
        }
        let r = sqlx::query(
            "SELECT b.lecture_id, p.person, b.name, b.contact, b.kind, b.status FROM bookings b \
             JOIN people p ON p.id = b.person_id WHERE b.id = $1",
        )
        .bind(booking_id)
        .fetch_one(&mut **tx)
        .await?;
        let lecture = self.lecture_json(tx, r.try_get("lecture_id")?).await?;
        let booking = json!({
            "person": r.try_get::<String, _>("person")?,
            "name": r.try_get::<String, _>("name")?,
            "contact": r.try_get::<String, _>("contact")?,
            "kind": r.try_get::<String, _>("kind")?,
            "status": r.try_get::<String, _>("status")?,
        });
        self.enqueue(
            tx,
            event,
            json!({ "lecture": lecture, "booking": booking }),
            now,
        )
        .await
    }

    /// The relay calls this when `stream` goes live: the occurrence on now (or about to
    /// start) is marked live and its bookings told, once per occurrence (a publisher's
    /// reconnects tell nobody again). Returns that occurrence's id.
    pub async fn lecture_went_live(&self, stream: &str) -> Result<Option<i64>, Error> {
        let now = self.now();
        let mut tx = self.db().begin().await?;
        // Up to an hour early, until the scheduled end (or 4 hours after the start).
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM lectures WHERE stream = $1 AND status = 'scheduled' \
             AND starts_at IS NOT NULL AND starts_at <= $2 + 3600 \
             AND COALESCE(ends_at, starts_at + 14400) >= $2 \
             ORDER BY ABS(starts_at - $2), id LIMIT 1",
        )
        .bind(stream.to_string())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            return Ok(None);
        };
        let r = sqlx::query("UPDATE lectures SET live_at = $2 WHERE id = $1 AND live_at IS NULL")
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let went = r.rows_affected() == 1;
        if went {
            self.lecture_event(&mut tx, id, "lecture.live", now).await?;
            info!(stream, lecture = id, "lecture went live");
        }
        tx.commit().await?;
        self.wake_outbox();
        if went {
            // It is no longer anybody's "next lecture".
            self.refresh_admission().await?;
        }
        Ok(Some(id))
    }

    /// The relay calls this when the replay of `stream`'s latest live occurrence is ready
    /// at `url`: stored on the lecture and its bookings told, once. Returns that
    /// occurrence's id.
    pub async fn replay_ready(&self, stream: &str, url: &str) -> Result<Option<i64>, Error> {
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM lectures WHERE stream = $1 AND live_at IS NOT NULL \
             ORDER BY live_at DESC, id DESC LIMIT 1",
        )
        .bind(stream.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            return Ok(None);
        };
        let r = sqlx::query(
            "UPDATE lectures SET replay_at = $2, replay_url = $3 WHERE id = $1 AND replay_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .bind(url.to_string())
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 1 {
            self.lecture_event(&mut tx, id, "lecture.replay_ready", now)
                .await?;
        }
        tx.commit().await?;
        self.wake_outbox();
        Ok(Some(id))
    }

    /// Queues "starting soon" for lectures starting within `reminder_minutes`, once per
    /// start time (a moved lecture is reminded again at its new time).
    pub async fn send_reminders(&self) -> Result<usize, Error> {
        let now = self.now();
        let due: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM lectures WHERE status = 'scheduled' AND starts_at > $1 \
             AND starts_at <= $2 AND (reminded_for IS NULL OR reminded_for <> starts_at)",
        )
        .bind(now)
        .bind(now + self.inner.settings.reminder_s)
        .fetch_all(&self.db().read)
        .await?;
        let mut sent = 0;
        for id in due {
            let mut tx = self.db().begin().await?;
            // Whoever sets the mark first sends it (several relays may sweep).
            let r = sqlx::query(
                "UPDATE lectures SET reminded_for = starts_at WHERE id = $1 \
                 AND (reminded_for IS NULL OR reminded_for <> starts_at)",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() == 1 {
                self.lecture_event(&mut tx, id, "lecture.starting_soon", now)
                    .await?;
                sent += 1;
            }
            tx.commit().await?;
        }
        if sent > 0 {
            self.wake_outbox();
        }
        Ok(sent)
    }

    pub(crate) async fn remind_and_refresh(self) {
        loop {
            if let Err(e) = self.send_reminders().await {
                warn!("catalogue reminders: {e}");
            }
            if let Err(e) = self.refresh_admission().await {
                warn!("catalogue admission refresh: {e}");
            }
            tokio::time::sleep(SWEEP).await;
        }
    }

    /// Delivers queued events until none is due; returns how many were delivered.
    pub async fn deliver_due_webhooks(&self) -> Result<usize, Error> {
        let Some(hook) = self.inner.settings.webhook.clone() else {
            return Ok(0);
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Invalid(format!("webhook client: {e}")))?;
        let mut delivered = 0;
        loop {
            let now = self.now();
            let due = sqlx::query(
                "SELECT id, event, payload, attempts FROM outbox WHERE delivered_at IS NULL \
                 AND failed_at IS NULL AND next_attempt_at <= $1 \
                 AND (lease_until IS NULL OR lease_until < $1) ORDER BY id LIMIT 20",
            )
            .bind(now)
            .fetch_all(&self.db().read)
            .await?;
            if due.is_empty() {
                return Ok(delivered);
            }
            for row in due {
                let id: i64 = row.try_get("id")?;
                let claimed = sqlx::query(
                    "UPDATE outbox SET lease_until = $2 WHERE id = $1 \
                     AND delivered_at IS NULL AND (lease_until IS NULL OR lease_until < $3)",
                )
                .bind(id)
                .bind(now + LEASE_S)
                .bind(now)
                .execute(&self.db().write)
                .await?;
                if claimed.rows_affected() == 0 {
                    continue;
                }
                let event: String = row.try_get("event")?;
                let payload: String = row.try_get("payload")?;
                let attempts: i64 = row.try_get::<i64, _>("attempts")? + 1;
                let mut req = client
                    .post(&hook.url)
                    .header("content-type", "application/json")
                    .header("x-jiangtang-event", event.as_str())
                    .header("x-jiangtang-delivery", id.to_string());
                if !hook.secret.is_empty() {
                    req = req.header("x-jiangtang-signature", sign(&hook.secret, &payload));
                }
                let result = match req.body(payload).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("answered {}", r.status())),
                    Err(e) => Err(format!("{e}")),
                };
                let now = self.now();
                match result {
                    Ok(()) => {
                        sqlx::query(
                            "UPDATE outbox SET delivered_at = $2, attempts = $3, lease_until = NULL WHERE id = $1",
                        )
                        .bind(id)
                        .bind(now)
                        .bind(attempts)
                        .execute(&self.db().write)
                        .await?;
                        delivered += 1;
                    }
                    Err(why) => {
                        let give_up = attempts >= i64::from(hook.max_attempts);
                        let wait = hook
                            .retry_base
                            .saturating_mul(1 << (attempts - 1).clamp(0, 20))
                            .min(Duration::from_secs(3600));
                        warn!(event = %event, delivery = id, attempts, "webhook not delivered: {why}{}", if give_up { "; giving up" } else { "" });
                        sqlx::query(
                            "UPDATE outbox SET attempts = $2, lease_until = NULL, last_error = $3, \
                             next_attempt_at = $4, failed_at = $5 WHERE id = $1",
                        )
                        .bind(id)
                        .bind(attempts)
                        .bind(why)
                        .bind(now + i64::try_from(wait.as_secs()).unwrap_or(3600).max(0))
                        .bind(give_up.then_some(now))
                        .execute(&self.db().write)
                        .await?;
                        // Keep the order: nothing newer goes out before this one.
                        return Ok(delivered);
                    }
                }
            }
        }
    }

    /// How long until the next queued event is due (none queued: `None`).
    async fn next_due_in(&self) -> Result<Option<Duration>, Error> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL",
        )
        .fetch_one(&self.db().read)
        .await?;
        Ok(next.map(|t| Duration::from_secs(u64::try_from(t - self.now()).unwrap_or(0))))
    }

    pub(crate) async fn deliver_webhooks(self) {
        if self.inner.settings.webhook.is_none() {
            return std::future::pending().await;
        }
        loop {
            if let Err(e) = self.deliver_due_webhooks().await {
                warn!("webhook delivery: {e}");
            }
            let wait = match self.next_due_in().await {
                Ok(Some(d)) => d.clamp(Duration::from_millis(200), SWEEP),
                _ => SWEEP,
            };
            let _ = tokio::time::timeout(wait, self.inner.outbox_wake.notified()).await;
        }
    }

    /// Events not yet delivered (for tests and the console): `(event, attempts, failed)`.
    pub async fn pending_webhooks(&self) -> Result<Vec<(String, i64, bool)>, Error> {
        let rows = sqlx::query(
            "SELECT event, attempts, failed_at FROM outbox WHERE delivered_at IS NULL ORDER BY id",
        )
        .fetch_all(&self.db().read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("event")?,
                    r.try_get("attempts")?,
                    r.try_get::<Option<i64>, _>("failed_at")?.is_some(),
                ))
            })
            .collect()
    }
}

/// `sha256=HEX` of HMAC-SHA256(secret, body).
pub fn sign(secret: &str, body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(body.as_bytes());
    let bytes = mac.finalize().into_bytes();
    let mut out = String::from("sha256=");
    for b in bytes {
        out += &format!("{b:02x}");
    }
    out
}
