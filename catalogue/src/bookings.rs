//! Booking a seat or an online place, the waiting list, cancelling, check-in at the door
//! and the attendance export.
//!
//! Every change to a lecture's seats happens in one transaction that first locks the
//! lecture's row (`UPDATE lectures ... WHERE id = $1`): on PostgreSQL a row lock that the
//! next booking for the same lecture waits on, on SQLite the database's write lock. Under
//! it the free seats are counted and taken, and the `CHECK (seats_taken <= seats)` of the
//! schema refuses anything that would overbook whatever the code does. The answer is sent
//! after the commit, so an acknowledged booking is on disk.

use sqlx::{Any, Row, Transaction};
use tracing::info;

use crate::model::*;
use crate::{Catalogue, Error, text, ts};

/// What a booking request did.
#[derive(Debug, Clone)]
pub struct BookingOutcome {
    /// The booking (confirmed: a seat or online place; waiting: on the waiting list).
    pub booking: Booking,
    /// False when an `Idempotency-Key` already made this booking: this is its replay.
    pub created: bool,
}

/// Normalises a ticket code as typed: case, spaces and dashes do not matter.
pub(crate) fn normalise_code(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_uppercase)
        .take(64)
        .collect()
}

impl Catalogue {
    /// Locks lecture `id` for this transaction and returns its row.
    async fn lock_lecture(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: i64,
    ) -> Result<sqlx::any::AnyRow, Error> {
        sqlx::query(
            "UPDATE lectures SET seats_taken = seats_taken WHERE id = $1 RETURNING seats, \
             seats_taken, status, starts_at, ends_at, visibility, stream",
        )
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no lecture {id}")))
    }

    /// Books a seat or an online place on lecture `lecture_id` for `req.person`. A seat when
    /// all are taken puts the person on the waiting list (`status: waiting`). With an
    /// idempotency key, repeating the request returns the first answer's booking.
    pub async fn book(
        &self,
        lecture_id: i64,
        req: &BookingRequest,
        idempotency_key: Option<&str>,
    ) -> Result<BookingOutcome, Error> {
        let person = text("person", &req.person, 128, true, false)?;
        let name = text("name", &req.name, 100, false, false)?;
        let contact = text("contact", &req.contact, 100, false, false)?;
        if let Some(k) = idempotency_key
            && (k.is_empty() || k.len() > 200)
        {
            return Err(Error::Invalid("Idempotency-Key must be 1-200 bytes".into()));
        }
        let fingerprint = format!("{lecture_id}\n{person}\n{}", req.kind.as_str());
        let now = self.now();
        let s = &self.inner.settings;
        let mut tx = self.db().begin().await?;
        let lecture = self.lock_lecture(&mut tx, lecture_id).await?;
        if let Some(key) = idempotency_key
            && let Some(found) = self.replay(&mut tx, key, &fingerprint).await?
        {
            tx.rollback().await?;
            return Ok(BookingOutcome {
                booking: self.booking(&found).await?,
                created: false,
            });
        }
        let seats: Option<i64> = lecture.try_get("seats")?;
        let taken: i64 = lecture.try_get("seats_taken")?;
        let starts: Option<i64> = lecture.try_get("starts_at")?;
        if lecture.try_get::<String, _>("status")? != "scheduled" {
            return Err(Error::Conflict("this lecture was cancelled".into()));
        }
        if lecture.try_get::<String, _>("visibility")? == "private" {
            return Err(Error::Forbidden("this lecture is private".into()));
        }
        match starts {
            None => return Err(Error::Conflict("this lecture has no date to book".into())),
            Some(st) if now >= st - s.booking_closes_s => {
                return Err(Error::Conflict(
                    "booking for this lecture has closed".into(),
                ));
            }
            _ => {}
        }
        if req.kind == BookingKind::Seat && seats.is_none() {
            return Err(Error::Conflict(
                "this lecture takes no seat bookings; book to watch online".into(),
            ));
        }
        sqlx::query(
            "INSERT INTO people (person, feed_token, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (person) DO NOTHING",
        )
        .bind(person.clone())
        .bind(crate::random_code(26))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let who = sqlx::query("SELECT id, forgiven_at FROM people WHERE person = $1")
            .bind(person.clone())
            .fetch_one(&mut *tx)
            .await?;
        let person_id: i64 = who.try_get("id")?;
        let already: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM bookings WHERE lecture_id = $1 AND person_id = $2 AND status <> 'cancelled'",
        )
        .bind(lecture_id)
        .bind(person_id)
        .fetch_optional(&mut *tx)
        .await?;
        if already.is_some() {
            return Err(Error::Conflict(
                "this person already has a booking for this lecture".into(),
            ));
        }
        if req.kind == BookingKind::Seat && s.no_show_limit > 0 {
            let forgiven: Option<i64> = who.try_get("forgiven_at")?;
            let since = (now - s.no_show_window_s).max(forgiven.unwrap_or(i64::MIN));
            let missed = self.no_shows(&mut tx, person_id, since, now).await?;
            if missed >= i64::from(s.no_show_limit) {
                info!(person_id, missed, "seat booking refused: no-show rule");
                return Err(Error::Forbidden(format!(
                    "{missed} booked seats were not used; seat booking is blocked (watching online is still open)"
                )));
            }
        }
        let status = match (req.kind, seats) {
            (BookingKind::Online, _) => BookingStatus::Confirmed,
            (BookingKind::Seat, Some(seats)) if taken < seats => {
                // The lock makes this the only writer of the row; the WHERE and the CHECK
                // are the database's own guard.
                let r = sqlx::query(
                    "UPDATE lectures SET seats_taken = seats_taken + 1 WHERE id = $1 AND seats_taken < seats",
                )
                .bind(lecture_id)
                .execute(&mut *tx)
                .await?;
                if r.rows_affected() == 1 {
                    BookingStatus::Confirmed
                } else {
                    BookingStatus::Waiting
                }
            }
            (BookingKind::Seat, _) => BookingStatus::Waiting,
        };
        let code = crate::random_code(16);
        let inserted = sqlx::query(
            "INSERT INTO bookings (lecture_id, person_id, kind, status, name, contact, \
             ticket_code, idempotency_key, request_fingerprint, created_at, confirmed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(lecture_id)
        .bind(person_id)
        .bind(req.kind.as_str())
        .bind(status.as_str())
        .bind(name)
        .bind(contact)
        .bind(code.clone())
        .bind(idempotency_key.map(str::to_string))
        .bind(fingerprint.clone())
        .bind(now)
        .bind((status == BookingStatus::Confirmed).then_some(now))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            // The same key used at the same moment for another lecture's request.
            Err(e) if crate::db::is_unique_violation(&e) && idempotency_key.is_some() => {
                tx.rollback().await?;
                let mut tx = self.db().begin().await?;
                let found = self
                    .replay(&mut tx, idempotency_key.unwrap_or_default(), &fingerprint)
                    .await?;
                tx.rollback().await?;
                return match found {
                    Some(code) => Ok(BookingOutcome {
                        booking: self.booking(&code).await?,
                        created: false,
                    }),
                    None => Err(Error::Db(e)),
                };
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(BookingOutcome {
            booking: self.booking(&code).await?,
            created: true,
        })
    }

    /// The ticket code an idempotency key already booked, if any; an error if the key was
    /// used for a different request.
    async fn replay(
        &self,
        tx: &mut Transaction<'static, Any>,
        key: &str,
        fingerprint: &str,
    ) -> Result<Option<String>, Error> {
        let row = sqlx::query(
            "SELECT ticket_code, request_fingerprint FROM bookings WHERE idempotency_key = $1",
        )
        .bind(key.to_string())
        .fetch_optional(&mut **tx)
        .await?;
        match row {
            None => Ok(None),
            Some(r)
                if r.try_get::<Option<String>, _>("request_fingerprint")?
                    .as_deref()
                    == Some(fingerprint) =>
            {
                Ok(Some(r.try_get("ticket_code")?))
            }
            Some(_) => Err(Error::Invalid(
                "this Idempotency-Key was used for a different request".into(),
            )),
        }
    }

    /// Seat bookings of a person that were not used: confirmed, never checked in, for a
    /// lecture that took place (not cancelled) and ended between `since` and `now`, at whose
    /// door tickets were being checked (a hall that does not scan makes nobody a no-show).
    async fn no_shows(
        &self,
        tx: &mut Transaction<'static, Any>,
        person_id: i64,
        since: i64,
        now: i64,
    ) -> Result<i64, Error> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM bookings b JOIN lectures l ON l.id = b.lecture_id \
             WHERE b.person_id = $1 AND b.kind = 'seat' AND b.status = 'confirmed' \
             AND b.checked_in_at IS NULL AND l.status = 'scheduled' AND l.ends_at IS NOT NULL \
             AND l.ends_at < $2 AND l.ends_at >= $3 AND EXISTS (SELECT 1 FROM checkins c \
             WHERE c.lecture_id = l.id AND c.result = 'valid')",
        )
        .bind(person_id)
        .bind(now)
        .bind(since)
        .fetch_one(&mut **tx)
        .await?)
    }

    /// Forgets a person's unused bookings so far (an operator's decision).
    pub async fn forgive(&self, person: &str) -> Result<(), Error> {
        let r = sqlx::query("UPDATE people SET forgiven_at = $2 WHERE person = $1")
            .bind(person.to_string())
            .bind(self.now())
            .execute(&self.db().write)
            .await?;
        if r.rows_affected() == 0 {
            return Err(Error::NotFound("no bookings by this person".into()));
        }
        Ok(())
    }

    /// A booking by its ticket code.
    pub async fn booking(&self, code: &str) -> Result<Booking, Error> {
        let code = normalise_code(code);
        let row = sqlx::query(
            "SELECT b.id, b.lecture_id, b.kind, b.status, b.name, b.created_at, \
             b.checked_in_at, p.feed_token, l.stream, l.visibility, l.ends_at, \
             (SELECT COUNT(*) FROM bookings w WHERE w.lecture_id = b.lecture_id \
              AND w.status = 'waiting' AND w.id <= b.id) AS place \
             FROM bookings b JOIN people p ON p.id = b.person_id \
             JOIN lectures l ON l.id = b.lecture_id WHERE b.ticket_code = $1",
        )
        .bind(code.clone())
        .fetch_optional(&self.db().read)
        .await?
        .ok_or_else(|| Error::NotFound("no booking with this ticket code".into()))?;
        let status = BookingStatus::parse(&row.try_get::<String, _>("status")?)
            .unwrap_or(BookingStatus::Cancelled);
        let stream: String = row.try_get("stream")?;
        let needs_token = row.try_get::<String, _>("visibility")? != "public";
        let ends: Option<i64> = row.try_get("ends_at")?;
        let playback_token = (needs_token && status == BookingStatus::Confirmed).then(|| {
            // Good for the lecture and a week of replay after it.
            let expires = ends.unwrap_or_else(|| self.now()) + 7 * 86_400;
            crate::admission::make_token(&self.inner.token_secret, &stream, expires)
        });
        Ok(Booking {
            ticket_code: code,
            lecture_id: row.try_get("lecture_id")?,
            kind: BookingKind::parse(&row.try_get::<String, _>("kind")?)
                .unwrap_or(BookingKind::Seat),
            status,
            waiting_list_place: (status == BookingStatus::Waiting)
                .then(|| row.try_get("place"))
                .transpose()?,
            name: row.try_get("name")?,
            created_at: ts(row.try_get("created_at")?),
            checked_in_at: row.try_get::<Option<i64>, _>("checked_in_at")?.map(ts),
            calendar_url: format!(
                "/api/v1/calendar/{}.ics",
                row.try_get::<String, _>("feed_token")?
            ),
            playback_token,
        })
    }

    /// Cancels a booking. Its holder may cancel a seat until `cancel_deadline_minutes`
    /// before the start (a place on the waiting list or online at any time); an operator
    /// always. A freed seat goes to the first on the waiting list.
    pub async fn cancel_booking(&self, code: &str, by_operator: bool) -> Result<Booking, Error> {
        let code = normalise_code(code);
        let now = self.now();
        let lecture_id: i64 =
            sqlx::query_scalar("SELECT lecture_id FROM bookings WHERE ticket_code = $1")
                .bind(code.clone())
                .fetch_optional(&self.db().read)
                .await?
                .ok_or_else(|| Error::NotFound("no booking with this ticket code".into()))?;
        let mut tx = self.db().begin().await?;
        let lecture = self.lock_lecture(&mut tx, lecture_id).await?;
        // Read under the lock: an earlier read may be stale.
        let b = sqlx::query("SELECT id, kind, status FROM bookings WHERE ticket_code = $1")
            .bind(code.clone())
            .fetch_one(&mut *tx)
            .await?;
        let (id, kind, status): (i64, String, String) =
            (b.try_get("id")?, b.try_get("kind")?, b.try_get("status")?);
        if status == "cancelled" {
            tx.rollback().await?;
            return self.booking(&code).await;
        }
        let starts: Option<i64> = lecture.try_get("starts_at")?;
        let seat = kind == "seat" && status == "confirmed";
        if seat
            && !by_operator
            && starts.is_some_and(|s| now > s - self.inner.settings.cancel_deadline_s)
        {
            return Err(Error::Conflict(format!(
                "too late to cancel: seats can be cancelled until {} minutes before the start",
                self.inner.settings.cancel_deadline_s / 60
            )));
        }
        sqlx::query("UPDATE bookings SET status = 'cancelled', cancelled_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if seat {
            sqlx::query("UPDATE lectures SET seats_taken = seats_taken - 1 WHERE id = $1")
                .bind(lecture_id)
                .execute(&mut *tx)
                .await?;
            if starts.is_some_and(|s| now < s) {
                self.fill_seats(&mut tx, lecture_id, now).await?;
            }
        }
        tx.commit().await?;
        self.wake_outbox();
        self.booking(&code).await
    }

    /// Sets a lecture's bookable seats (not below those booked) and moves the waiting list
    /// up into new ones. The lecture must be locked by the caller's transaction.
    pub(crate) async fn set_seats(
        &self,
        tx: &mut Transaction<'static, Any>,
        lecture_id: i64,
        seats: i64,
        now: i64,
    ) -> Result<(), Error> {
        let taken: i64 = sqlx::query_scalar("SELECT seats_taken FROM lectures WHERE id = $1")
            .bind(lecture_id)
            .fetch_one(&mut **tx)
            .await?;
        if seats < taken {
            return Err(Error::Conflict(format!(
                "{taken} seats are booked: seats cannot go below that"
            )));
        }
        sqlx::query("UPDATE lectures SET seats = $2 WHERE id = $1")
            .bind(lecture_id)
            .bind(seats)
            .execute(&mut **tx)
            .await?;
        self.fill_seats(tx, lecture_id, now).await
    }

    /// Gives free seats to the waiting list, first come first served, and tells each
    /// person through the webhook. The lecture must be locked.
    async fn fill_seats(
        &self,
        tx: &mut Transaction<'static, Any>,
        lecture_id: i64,
        now: i64,
    ) -> Result<(), Error> {
        loop {
            let next: Option<i64> = sqlx::query_scalar(
                "SELECT b.id FROM bookings b JOIN lectures l ON l.id = b.lecture_id \
                 WHERE b.lecture_id = $1 AND b.status = 'waiting' AND l.seats_taken < l.seats \
                 ORDER BY b.id LIMIT 1",
            )
            .bind(lecture_id)
            .fetch_optional(&mut **tx)
            .await?;
            let Some(id) = next else { return Ok(()) };
            sqlx::query(
                "UPDATE lectures SET seats_taken = seats_taken + 1 WHERE id = $1 AND seats_taken < seats",
            )
            .bind(lecture_id)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "UPDATE bookings SET status = 'confirmed', confirmed_at = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            self.booking_event(tx, id, "booking.promoted", now).await?;
        }
    }

    /// Checks a ticket at the door of lecture `lecture_id` and records the scan.
    pub async fn check_in(&self, lecture_id: i64, code: &str) -> Result<Checkin, Error> {
        let code = normalise_code(code);
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM lectures WHERE id = $1")
            .bind(lecture_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(Error::NotFound(format!("no lecture {lecture_id}")));
        }
        let row = sqlx::query(
            "SELECT b.id, b.lecture_id, b.kind, b.status, b.name, b.checked_in_at, \
             l.status AS lecture_status FROM bookings b JOIN lectures l ON l.id = b.lecture_id \
             WHERE b.ticket_code = $1",
        )
        .bind(code)
        .fetch_optional(&mut *tx)
        .await?;
        let mut answer = Checkin {
            result: CheckinOutcome::Unknown,
            name: None,
            lecture_id: None,
            checked_in_at: None,
        };
        let mut booking_id = None;
        if let Some(r) = row {
            let id: i64 = r.try_get("id")?;
            booking_id = Some(id);
            answer.name = Some(r.try_get("name")?);
            answer.lecture_id = Some(r.try_get("lecture_id")?);
            let used: Option<i64> = r.try_get("checked_in_at")?;
            answer.checked_in_at = used.map(ts);
            let status: String = r.try_get("status")?;
            answer.result = if answer.lecture_id != Some(lecture_id) {
                CheckinOutcome::WrongLecture
            } else if status == "cancelled"
                || r.try_get::<String, _>("lecture_status")? == "cancelled"
            {
                CheckinOutcome::Cancelled
            } else if status == "waiting" {
                CheckinOutcome::Waiting
            } else if r.try_get::<String, _>("kind")? == "online" {
                CheckinOutcome::OnlineOnly
            } else if used.is_some() {
                CheckinOutcome::AlreadyUsed
            } else {
                let r = sqlx::query(
                    "UPDATE bookings SET checked_in_at = $2 WHERE id = $1 AND checked_in_at IS NULL",
                )
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if r.rows_affected() == 1 {
                    answer.checked_in_at = Some(ts(now));
                    CheckinOutcome::Valid
                } else {
                    CheckinOutcome::AlreadyUsed
                }
            };
        }
        sqlx::query(
            "INSERT INTO checkins (lecture_id, booking_id, result, at) VALUES ($1, $2, $3, $4)",
        )
        .bind(lecture_id)
        .bind(booking_id)
        .bind(answer.result.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(answer)
    }

    /// Every booking of a lecture (operators), in booking order.
    pub async fn lecture_bookings(&self, lecture_id: i64) -> Result<Vec<Booking>, Error> {
        self.lecture(lecture_id).await?;
        let codes: Vec<String> = sqlx::query_scalar(
            "SELECT ticket_code FROM bookings WHERE lecture_id = $1 ORDER BY id",
        )
        .bind(lecture_id)
        .fetch_all(&self.db().read)
        .await?;
        let mut out = Vec::with_capacity(codes.len());
        for c in codes {
            out.push(self.booking(&c).await?);
        }
        Ok(out)
    }

    /// The attendance of a lecture as CSV (UTF-8 with a byte-order mark, so spreadsheet
    /// programs read the Chinese names): every booking with its state and check-in time,
    /// times in the catalogue's time zone.
    pub async fn attendance_csv(&self, lecture_id: i64) -> Result<String, Error> {
        self.lecture(lecture_id).await?;
        let rows = sqlx::query(
            "SELECT b.ticket_code, b.name, b.contact, b.kind, b.status, b.created_at, \
             b.checked_in_at FROM bookings b WHERE b.lecture_id = $1 ORDER BY b.id",
        )
        .bind(lecture_id)
        .fetch_all(&self.db().read)
        .await?;
        let tz = self.inner.settings.timezone.clone();
        let time = |t: Option<i64>| {
            t.map(|t| {
                ts(t)
                    .to_zoned_datetime(tz.clone())
                    .strftime("%Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_default()
        };
        let mut w = csv::Writer::from_writer(Vec::new());
        let io = |e: csv::Error| Error::Invalid(format!("csv: {e}"));
        w.write_record([
            "ticket",
            "name",
            "contact",
            "kind",
            "status",
            "booked_at",
            "checked_in_at",
        ])
        .map_err(io)?;
        for r in &rows {
            w.write_record([
                r.try_get::<String, _>("ticket_code")?,
                spreadsheet_safe(r.try_get("name")?),
                spreadsheet_safe(r.try_get("contact")?),
                r.try_get("kind")?,
                r.try_get("status")?,
                time(Some(r.try_get("created_at")?)),
                time(r.try_get("checked_in_at")?),
            ])
            .map_err(io)?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| Error::Invalid(format!("csv: {e}")))?;
        Ok(format!("\u{feff}{}", String::from_utf8_lossy(&bytes)))
    }
}

/// Text a spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) gets a leading
/// apostrophe, so a name typed by the public cannot become one.
fn spreadsheet_safe(s: String) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_normalise() {
        assert_eq!(normalise_code(" abcd-efgh jkmn "), "ABCDEFGHJKMN");
    }

    #[test]
    fn formulas_are_defused() {
        assert_eq!(spreadsheet_safe("=cmd()".into()), "'=cmd()");
        assert_eq!(spreadsheet_safe("张三".into()), "张三");
    }
}
