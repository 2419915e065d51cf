//! Halls, categories, lectures (occurrences), weekly series, the `[[lecture]]` import and
//! publish keys.

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use tracing::{info, warn};

use crate::model::*;
use crate::{Catalogue, Error, text, ts};

/// Every column a [`Lecture`] is made of; `lecture_from_row` reads them.
pub(crate) const LECTURE_SELECT: &str = "SELECT l.id, l.stream, l.title, l.speaker, \
    l.description, l.starts_at, l.ends_at, l.dialects, l.visibility, l.status, l.seats, \
    l.seats_taken, l.series_id, l.live_at, l.replay_url, \
    c.id AS c_id, c.slug AS c_slug, c.name_zh AS c_zh, c.name_en AS c_en, \
    h.id AS h_id, h.name AS h_name, h.town AS h_town, h.village AS h_village, \
    h.address AS h_address, h.seats AS h_seats, \
    (SELECT COUNT(*) FROM bookings b WHERE b.lecture_id = l.id AND b.status = 'waiting') AS waiting \
    FROM lectures l LEFT JOIN categories c ON c.id = l.category_id \
    LEFT JOIN halls h ON h.id = l.hall_id";

/// Filters of the lecture list.
#[derive(Debug, Clone, Default)]
pub struct LectureQuery {
    /// Lectures ending at or after this (default: now).
    pub from: Option<Timestamp>,
    /// Lectures starting before this.
    pub to: Option<Timestamp>,
    /// Category slug.
    pub category: Option<String>,
    /// Hall id.
    pub hall_id: Option<i64>,
    /// Town of the hall.
    pub town: Option<String>,
    /// Private lectures too (operators).
    pub include_private: bool,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<i64>,
    /// Skip this many.
    pub offset: Option<i64>,
}

fn hall_from_row(row: &AnyRow, prefix: &str) -> Result<Option<Hall>, sqlx::Error> {
    let col = |c: &str| format!("{prefix}{c}");
    let Some(id) = row.try_get::<Option<i64>, _>(col("id").as_str())? else {
        return Ok(None);
    };
    Ok(Some(Hall {
        id,
        name: row.try_get(col("name").as_str())?,
        town: row.try_get(col("town").as_str())?,
        village: row.try_get(col("village").as_str())?,
        address: row.try_get(col("address").as_str())?,
        seats: row.try_get(col("seats").as_str())?,
    }))
}

pub(crate) fn dialects_from(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect()
}

fn check_dialects(list: &[String]) -> Result<String, Error> {
    if list.len() > 16 {
        return Err(Error::Invalid("at most 16 dialects".into()));
    }
    let mut out: Vec<String> = Vec::new();
    for d in list {
        let l = media::Language::parse(d)
            .map_err(|_| Error::Invalid(format!("dialect {d:?} is not a BCP-47 tag")))?;
        let tag = l.as_str().to_ascii_lowercase();
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    Ok(out.join(","))
}

fn check_stream(name: &str) -> Result<(), Error> {
    if media::sink::valid_stream_name(name) {
        Ok(())
    } else {
        Err(Error::Invalid(
            "stream must be 1-128 of A-Z a-z 0-9 . _ - and not start with .".into(),
        ))
    }
}

fn check_times(starts: i64, ends: i64) -> Result<(), Error> {
    if ends <= starts {
        return Err(Error::Invalid("ends_at must be after starts_at".into()));
    }
    if ends - starts > 86_400 {
        return Err(Error::Invalid("a lecture lasts at most 24 hours".into()));
    }
    Ok(())
}

fn check_seats(seats: Option<i64>) -> Result<(), Error> {
    match seats {
        Some(s) if !(0..=100_000).contains(&s) => {
            Err(Error::Invalid("seats must be 0..=100000".into()))
        }
        _ => Ok(()),
    }
}

fn parse_date(field: &str, s: &str) -> Result<Date, Error> {
    s.parse::<Date>()
        .map_err(|_| Error::Invalid(format!("{field} must be a date YYYY-MM-DD")))
}

fn parse_time(s: &str) -> Result<Time, Error> {
    let bad = || Error::Invalid("start_time must be HH:MM".into());
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (i8, i8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

/// The playback-token key shared by every relay on this database, made on first use.
pub(crate) async fn token_secret(db: &crate::db::Db) -> Result<Vec<u8>, Error> {
    let fresh: String = (0..2).map(|_| crate::random_code(32)).collect();
    sqlx::query(
        "INSERT INTO settings (name, value) VALUES ('token_secret', $1) ON CONFLICT (name) DO NOTHING",
    )
    .bind(fresh)
    .execute(&db.write)
    .await?;
    let v: String = sqlx::query_scalar("SELECT value FROM settings WHERE name = 'token_secret'")
        .fetch_one(&db.write)
        .await?;
    Ok(v.into_bytes())
}

impl Catalogue {
    pub(crate) fn lecture_from_row(&self, row: &AnyRow) -> Result<Lecture, Error> {
        let now = self.now();
        let starts_at: Option<i64> = row.try_get("starts_at")?;
        let seats: Option<i64> = row.try_get("seats")?;
        let taken: i64 = row.try_get("seats_taken")?;
        let visibility = Visibility::parse(row.try_get::<String, _>("visibility")?.as_str())
            .unwrap_or(Visibility::Private);
        let status = match row.try_get::<String, _>("status")?.as_str() {
            "cancelled" => LectureStatus::Cancelled,
            _ => LectureStatus::Scheduled,
        };
        let category = match row.try_get::<Option<i64>, _>("c_id")? {
            Some(id) => Some(Category {
                id,
                slug: row.try_get("c_slug")?,
                name_zh: row.try_get("c_zh")?,
                name_en: row.try_get("c_en")?,
            }),
            None => None,
        };
        Ok(Lecture {
            id: row.try_get("id")?,
            stream: row.try_get("stream")?,
            title: row.try_get("title")?,
            speaker: row.try_get("speaker")?,
            description: row.try_get("description")?,
            category,
            hall: hall_from_row(row, "h_")?,
            starts_at: starts_at.map(ts),
            ends_at: row.try_get::<Option<i64>, _>("ends_at")?.map(ts),
            dialects: dialects_from(&row.try_get::<String, _>("dialects")?),
            visibility,
            status,
            seats,
            seats_left: seats.map(|s| (s - taken).max(0)),
            waiting: row.try_get("waiting")?,
            booking_open: status == LectureStatus::Scheduled
                && visibility != Visibility::Private
                && starts_at.is_some_and(|s| now < s - self.inner.settings.booking_closes_s),
            series_id: row.try_get("series_id")?,
            live_at: row.try_get::<Option<i64>, _>("live_at")?.map(ts),
            replay_url: row.try_get("replay_url")?,
        })
    }

    /// The district's categories.
    pub async fn categories(&self) -> Result<Vec<Category>, Error> {
        let rows =
            sqlx::query("SELECT id, slug, name_zh, name_en FROM categories ORDER BY position, id")
                .fetch_all(&self.db().read)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(Category {
                    id: r.try_get("id")?,
                    slug: r.try_get("slug")?,
                    name_zh: r.try_get("name_zh")?,
                    name_en: r.try_get("name_en")?,
                })
            })
            .collect()
    }

    async fn category_id(
        &self,
        tx: &mut Transaction<'static, Any>,
        name: Option<&str>,
    ) -> Result<Option<i64>, Error> {
        let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        let id: Option<i64> =
            sqlx::query_scalar("SELECT id FROM categories WHERE slug = $1 OR name_zh = $1")
                .bind(name.to_string())
                .fetch_optional(&mut **tx)
                .await?;
        id.map(Some)
            .ok_or_else(|| Error::Invalid(format!("no category {name:?}")))
    }

    async fn check_hall(
        &self,
        tx: &mut Transaction<'static, Any>,
        hall_id: Option<i64>,
    ) -> Result<(), Error> {
        if let Some(id) = hall_id {
            let found: Option<i64> = sqlx::query_scalar("SELECT id FROM halls WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?;
            if found.is_none() {
                return Err(Error::Invalid(format!("no hall {id}")));
            }
        }
        Ok(())
    }

    /// Every hall, by name.
    pub async fn halls(&self) -> Result<Vec<Hall>, Error> {
        let rows = sqlx::query(
            "SELECT id AS h_id, name AS h_name, town AS h_town, village AS h_village, \
             address AS h_address, seats AS h_seats FROM halls ORDER BY town, village, name",
        )
        .fetch_all(&self.db().read)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.extend(hall_from_row(r, "h_")?);
        }
        Ok(out)
    }

    /// One hall.
    pub async fn hall(&self, id: i64) -> Result<Hall, Error> {
        let row = sqlx::query(
            "SELECT id AS h_id, name AS h_name, town AS h_town, village AS h_village, \
             address AS h_address, seats AS h_seats FROM halls WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.db().read)
        .await?;
        row.as_ref()
            .map(|r| hall_from_row(r, "h_"))
            .transpose()?
            .flatten()
            .ok_or_else(|| Error::NotFound(format!("no hall {id}")))
    }

    /// Adds a hall.
    pub async fn create_hall(&self, input: &HallInput) -> Result<Hall, Error> {
        let name = text(
            "name",
            input.name.as_deref().unwrap_or(""),
            200,
            true,
            false,
        )?;
        check_seats(input.seats)?;
        let result = sqlx::query_scalar::<_, i64>(
            "INSERT INTO halls (name, town, village, address, seats, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(name.clone())
        .bind(text(
            "town",
            input.town.as_deref().unwrap_or(""),
            100,
            false,
            false,
        )?)
        .bind(text(
            "village",
            input.village.as_deref().unwrap_or(""),
            100,
            false,
            false,
        )?)
        .bind(text(
            "address",
            input.address.as_deref().unwrap_or(""),
            300,
            false,
            false,
        )?)
        .bind(input.seats)
        .bind(self.now())
        .fetch_one(&self.db().write)
        .await;
        match result {
            Ok(id) => self.hall(id).await,
            Err(e) if crate::db::is_unique_violation(&e) => {
                Err(Error::Conflict(format!("a hall named {name:?} exists")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Changes a hall.
    pub async fn update_hall(&self, id: i64, input: &HallInput) -> Result<Hall, Error> {
        check_seats(input.seats)?;
        let opt = |f: &str, v: &Option<String>, max: usize| {
            v.as_deref()
                .map(|v| text(f, v, max, f == "name", false))
                .transpose()
        };
        let r = sqlx::query(
            "UPDATE halls SET name = COALESCE($2, name), town = COALESCE($3, town), \
             village = COALESCE($4, village), address = COALESCE($5, address), \
             seats = COALESCE($6, seats) WHERE id = $1",
        )
        .bind(id)
        .bind(opt("name", &input.name, 200)?)
        .bind(opt("town", &input.town, 100)?)
        .bind(opt("village", &input.village, 100)?)
        .bind(opt("address", &input.address, 300)?)
        .bind(input.seats)
        .execute(&self.db().write)
        .await;
        match r {
            Ok(r) if r.rows_affected() == 0 => Err(Error::NotFound(format!("no hall {id}"))),
            Ok(_) => self.hall(id).await,
            Err(e) if crate::db::is_unique_violation(&e) => {
                Err(Error::Conflict("another hall has that name".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Lectures (occurrences) in time order.
    pub async fn lectures(&self, q: &LectureQuery) -> Result<Vec<Lecture>, Error> {
        let mut sql = format!("{LECTURE_SELECT} WHERE COALESCE(l.ends_at, l.starts_at, $1) >= $1");
        let from = q.from.map(|t| t.as_second()).unwrap_or_else(|| self.now());
        let mut n = 1;
        let mut next = || {
            n += 1;
            n
        };
        if q.to.is_some() {
            sql += &format!(" AND l.starts_at < ${}", next());
        }
        if q.category.is_some() {
            sql += &format!(" AND c.slug = ${}", next());
        }
        if q.hall_id.is_some() {
            sql += &format!(" AND l.hall_id = ${}", next());
        }
        if q.town.is_some() {
            sql += &format!(" AND h.town = ${}", next());
        }
        if !q.include_private {
            sql += " AND l.visibility <> 'private'";
        }
        let (limit, offset) = (next(), next());
        sql += &format!(
            " ORDER BY (l.starts_at IS NULL), l.starts_at, l.id LIMIT ${limit} OFFSET ${offset}"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(from);
        if let Some(t) = q.to {
            query = query.bind(t.as_second());
        }
        if let Some(c) = &q.category {
            query = query.bind(c.clone());
        }
        if let Some(h) = q.hall_id {
            query = query.bind(h);
        }
        if let Some(t) = &q.town {
            query = query.bind(t.clone());
        }
        let rows = query
            .bind(q.limit.unwrap_or(100).clamp(1, 1000))
            .bind(q.offset.unwrap_or(0).max(0))
            .fetch_all(&self.db().read)
            .await?;
        rows.iter().map(|r| self.lecture_from_row(r)).collect()
    }

    /// One occurrence.
    pub async fn lecture(&self, id: i64) -> Result<Lecture, Error> {
        let sql = format!("{LECTURE_SELECT} WHERE l.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.db().read)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no lecture {id}")))?;
        self.lecture_from_row(&row)
    }

    /// Makes sure the stream has a row (and so a publish key).
    async fn ensure_stream(
        &self,
        tx: &mut Transaction<'static, Any>,
        stream: &str,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO streams (name, publish_key, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(stream.to_string())
        .bind(crate::random_code(24))
        .bind(self.now())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Adds one occurrence.
    pub async fn create_lecture(&self, input: &LectureInput) -> Result<Lecture, Error> {
        let title = text("title", &input.title, 200, true, false)?;
        let speaker = text("speaker", &input.speaker, 100, false, false)?;
        let description = text("description", &input.description, 5000, false, true)?;
        check_stream(&input.stream)?;
        let dialects = check_dialects(&input.dialects)?;
        let (starts, ends) = (input.starts_at.as_second(), input.ends_at.as_second());
        check_times(starts, ends)?;
        check_seats(input.seats)?;
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let category = self.category_id(&mut tx, input.category.as_deref()).await?;
        self.check_hall(&mut tx, input.hall_id).await?;
        self.ensure_stream(&mut tx, &input.stream).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO lectures (title, speaker, description, category_id, hall_id, stream, \
             dialects, visibility, starts_at, ends_at, seats, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) RETURNING id",
        )
        .bind(title)
        .bind(speaker)
        .bind(description)
        .bind(category)
        .bind(input.hall_id)
        .bind(input.stream.clone())
        .bind(dialects)
        .bind(input.visibility.as_str())
        .bind(starts)
        .bind(ends)
        .bind(input.seats)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        self.refresh_admission().await?;
        self.lecture(id).await
    }

    /// Changes an occurrence; see [`LecturePatch`].
    pub async fn update_lecture(&self, id: i64, patch: &LecturePatch) -> Result<Lecture, Error> {
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let row = sqlx::query(
            "UPDATE lectures SET updated_at = $2 WHERE id = $1 RETURNING starts_at, ends_at",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no lecture {id}")))?;
        let (old_start, old_end): (Option<i64>, Option<i64>) =
            (row.try_get("starts_at")?, row.try_get("ends_at")?);
        let opt = |f: &str, v: &Option<String>, max: usize, multi: bool| {
            v.as_deref()
                .map(|v| text(f, v, max, f == "title", multi))
                .transpose()
        };
        let category = self.category_id(&mut tx, patch.category.as_deref()).await?;
        self.check_hall(&mut tx, patch.hall_id).await?;
        let dialects = patch.dialects.as_deref().map(check_dialects).transpose()?;
        let start = patch.starts_at.map(|t| t.as_second()).or(old_start);
        let end = patch.ends_at.map(|t| t.as_second()).or(old_end);
        let moved = (patch.starts_at.is_some() || patch.ends_at.is_some())
            && (start != old_start || end != old_end);
        if moved {
            match (start, end) {
                (Some(s), Some(e)) => check_times(s, e)?,
                _ => return Err(Error::Invalid("give both starts_at and ends_at".into())),
            }
        }
        sqlx::query(
            "UPDATE lectures SET title = COALESCE($2, title), speaker = COALESCE($3, speaker), \
             description = COALESCE($4, description), category_id = COALESCE($5, category_id), \
             hall_id = COALESCE($6, hall_id), dialects = COALESCE($7, dialects), \
             visibility = COALESCE($8, visibility), starts_at = $9, ends_at = $10, \
             detached = CASE WHEN $11 = 1 THEN 1 ELSE detached END WHERE id = $1",
        )
        .bind(id)
        .bind(opt("title", &patch.title, 200, false)?)
        .bind(opt("speaker", &patch.speaker, 100, false)?)
        .bind(opt("description", &patch.description, 5000, true)?)
        .bind(category)
        .bind(patch.hall_id)
        .bind(dialects)
        .bind(patch.visibility.map(|v| v.as_str()))
        .bind(start)
        .bind(end)
        .bind(i64::from(moved))
        .execute(&mut *tx)
        .await?;
        if let Some(seats) = patch.seats {
            check_seats(Some(seats))?;
            self.set_seats(&mut tx, id, seats, now).await?;
        }
        if moved {
            self.lecture_event(&mut tx, id, "lecture.moved", now)
                .await?;
        }
        tx.commit().await?;
        self.refresh_admission().await?;
        self.wake_outbox();
        self.lecture(id).await
    }

    /// Calls an occurrence off; its bookings are kept (check-in answers `cancelled`) and
    /// their holders told through the webhook.
    pub async fn cancel_lecture(&self, id: i64) -> Result<Lecture, Error> {
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let exists: Option<String> = sqlx::query_scalar(
            "UPDATE lectures SET updated_at = $2 WHERE id = $1 RETURNING status",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        match exists.as_deref() {
            None => return Err(Error::NotFound(format!("no lecture {id}"))),
            Some("scheduled") => {
                sqlx::query("UPDATE lectures SET status = 'cancelled' WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                self.lecture_event(&mut tx, id, "lecture.cancelled", now)
                    .await?;
            }
            Some(_) => {}
        }
        tx.commit().await?;
        self.refresh_admission().await?;
        self.wake_outbox();
        self.lecture(id).await
    }

    /// Weekly series, newest first.
    pub async fn series_list(&self) -> Result<Vec<Series>, Error> {
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM series ORDER BY id DESC LIMIT 500")
            .fetch_all(&self.db().read)
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.series(id).await?);
        }
        Ok(out)
    }

    /// One series and its occurrences.
    pub async fn series(&self, id: i64) -> Result<Series, Error> {
        let r = sqlx::query(
            "SELECT s.*, c.slug AS c_slug FROM series s LEFT JOIN categories c ON c.id = s.category_id WHERE s.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.db().read)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no series {id}")))?;
        let minute: i64 = r.try_get("start_minute")?;
        let occurrences: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM lectures WHERE series_id = $1 ORDER BY starts_at, id",
        )
        .bind(id)
        .fetch_all(&self.db().read)
        .await?;
        Ok(Series {
            id,
            input: SeriesInput {
                title: r.try_get("title")?,
                speaker: r.try_get("speaker")?,
                description: r.try_get("description")?,
                category: r.try_get("c_slug")?,
                hall_id: r.try_get("hall_id")?,
                stream: r.try_get("stream")?,
                dialects: dialects_from(&r.try_get::<String, _>("dialects")?),
                visibility: Visibility::parse(&r.try_get::<String, _>("visibility")?)
                    .unwrap_or(Visibility::Private),
                seats: r.try_get("seats")?,
                weekday: r.try_get("weekday")?,
                start_time: format!("{:02}:{:02}", minute / 60, minute % 60),
                duration_minutes: r.try_get("duration_minutes")?,
                first_date: r.try_get("first_date")?,
                last_date: r.try_get("last_date")?,
            },
            occurrences,
        })
    }

    /// The start and end of a series' occurrence on `date` (local), as Unix seconds.
    fn occurrence_times(&self, date: Date, at: Time, minutes: i64) -> Result<(i64, i64), Error> {
        let start = date
            .to_datetime(at)
            .to_zoned_datetime(self.inner.settings.timezone.clone())
            .map_err(|e| Error::Invalid(format!("no such local time: {e}")))?
            .timestamp()
            .as_second();
        Ok((start, start + minutes * 60))
    }

    /// Inserts the occurrences of series `id` between `first` and `last` that do not exist.
    #[allow(clippy::too_many_arguments)]
    async fn add_occurrences(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: i64,
        input: &SeriesInput,
        category: Option<i64>,
        dialects: &str,
        first: Date,
        last: Date,
        now: i64,
    ) -> Result<(), Error> {
        let at = parse_time(&input.start_time)?;
        let mut date = first;
        while date <= last {
            if i64::from(date.weekday().to_monday_one_offset()) == input.weekday {
                let (s, e) = self.occurrence_times(date, at, input.duration_minutes)?;
                sqlx::query(
                    "INSERT INTO lectures (series_id, series_date, title, speaker, description, \
                     category_id, hall_id, stream, dialects, visibility, starts_at, ends_at, \
                     seats, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                     $10, $11, $12, $13, $14, $14) ON CONFLICT (series_id, series_date) DO NOTHING",
                )
                .bind(id)
                .bind(date.to_string())
                .bind(input.title.clone())
                .bind(input.speaker.clone())
                .bind(input.description.clone())
                .bind(category)
                .bind(input.hall_id)
                .bind(input.stream.clone())
                .bind(dialects.to_string())
                .bind(input.visibility.as_str())
                .bind(s)
                .bind(e)
                .bind(input.seats)
                .bind(now)
                .execute(&mut **tx)
                .await?;
            }
            date = date
                .tomorrow()
                .map_err(|_| Error::Invalid("date out of range".into()))?;
        }
        Ok(())
    }

    /// Creates a weekly series and its occurrences.
    pub async fn create_series(&self, input: &SeriesInput) -> Result<Series, Error> {
        let mut input = input.clone();
        input.title = text("title", &input.title, 200, true, false)?;
        input.speaker = text("speaker", &input.speaker, 100, false, false)?;
        input.description = text("description", &input.description, 5000, false, true)?;
        check_stream(&input.stream)?;
        let dialects = check_dialects(&input.dialects)?;
        check_seats(input.seats)?;
        if !(1..=7).contains(&input.weekday) {
            return Err(Error::Invalid(
                "weekday must be 1 (Monday) ..= 7 (Sunday)".into(),
            ));
        }
        let at = parse_time(&input.start_time)?;
        if !(1..=1440).contains(&input.duration_minutes) {
            return Err(Error::Invalid("duration_minutes must be 1..=1440".into()));
        }
        let first = parse_date("first_date", &input.first_date)?;
        let last = parse_date("last_date", &input.last_date)?;
        if last < first || first.until(last).map(|s| s.get_days()).unwrap_or(i32::MAX) > 731 {
            return Err(Error::Invalid(
                "last_date must be on or after first_date and within 2 years of it".into(),
            ));
        }
        input.first_date = first.to_string();
        input.last_date = last.to_string();
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let category = self.category_id(&mut tx, input.category.as_deref()).await?;
        self.check_hall(&mut tx, input.hall_id).await?;
        self.ensure_stream(&mut tx, &input.stream).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO series (title, speaker, description, category_id, hall_id, stream, \
             dialects, visibility, seats, weekday, start_minute, duration_minutes, first_date, \
             last_date, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
             $13, $14, $15) RETURNING id",
        )
        .bind(input.title.clone())
        .bind(input.speaker.clone())
        .bind(input.description.clone())
        .bind(category)
        .bind(input.hall_id)
        .bind(input.stream.clone())
        .bind(dialects.clone())
        .bind(input.visibility.as_str())
        .bind(input.seats)
        .bind(input.weekday)
        .bind(i64::from(at.hour()) * 60 + i64::from(at.minute()))
        .bind(input.duration_minutes)
        .bind(input.first_date.clone())
        .bind(input.last_date.clone())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        self.add_occurrences(&mut tx, id, &input, category, &dialects, first, last, now)
            .await?;
        tx.commit().await?;
        self.refresh_admission().await?;
        self.series(id).await
    }

    /// Changes a series; see [`SeriesPatch`]. Occurrences that started, or were moved or
    /// edited one by one, keep what they have.
    pub async fn update_series(&self, id: i64, patch: &SeriesPatch) -> Result<Series, Error> {
        let now = self.now();
        let current = self.series(id).await?;
        let mut input = current.input.clone();
        if let Some(t) = &patch.title {
            input.title = text("title", t, 200, true, false)?;
        }
        if let Some(t) = &patch.speaker {
            input.speaker = text("speaker", t, 100, false, false)?;
        }
        if let Some(t) = &patch.description {
            input.description = text("description", t, 5000, false, true)?;
        }
        if let Some(t) = &patch.start_time {
            parse_time(t)?;
            input.start_time = t.clone();
        }
        if let Some(d) = patch.duration_minutes {
            if !(1..=1440).contains(&d) {
                return Err(Error::Invalid("duration_minutes must be 1..=1440".into()));
            }
            input.duration_minutes = d;
        }
        let first = parse_date("first_date", &input.first_date)?;
        let old_last = parse_date("last_date", &input.last_date)?;
        let last = match &patch.last_date {
            Some(d) => parse_date("last_date", d)?,
            None => old_last,
        };
        if last < first || first.until(last).map(|s| s.get_days()).unwrap_or(i32::MAX) > 731 {
            return Err(Error::Invalid(
                "last_date must be on or after first_date and within 2 years of it".into(),
            ));
        }
        input.last_date = last.to_string();
        check_seats(patch.seats)?;
        if patch.seats.is_some() {
            input.seats = patch.seats;
        }
        let at = parse_time(&input.start_time)?;
        let mut tx = self.db().begin().await?;
        sqlx::query(
            "UPDATE series SET title = $2, speaker = $3, description = $4, start_minute = $5, \
             duration_minutes = $6, last_date = $7, seats = $8 WHERE id = $1",
        )
        .bind(id)
        .bind(input.title.clone())
        .bind(input.speaker.clone())
        .bind(input.description.clone())
        .bind(i64::from(at.hour()) * 60 + i64::from(at.minute()))
        .bind(input.duration_minutes)
        .bind(input.last_date.clone())
        .bind(input.seats)
        .execute(&mut *tx)
        .await?;
        // The occurrences this edit may change: not started, not edited one by one.
        let rows = sqlx::query(
            "SELECT id, series_date, starts_at, ends_at FROM lectures WHERE series_id = $1 \
             AND detached = 0 AND status = 'scheduled' AND starts_at > $2 ORDER BY starts_at",
        )
        .bind(id)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        for r in &rows {
            let lid: i64 = r.try_get("id")?;
            let date = parse_date("series_date", &r.try_get::<String, _>("series_date")?)?;
            if date > last {
                sqlx::query(
                    "UPDATE lectures SET status = 'cancelled', updated_at = $2 WHERE id = $1",
                )
                .bind(lid)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                self.lecture_event(&mut tx, lid, "lecture.cancelled", now)
                    .await?;
                continue;
            }
            let (s, e) = self.occurrence_times(date, at, input.duration_minutes)?;
            sqlx::query(
                "UPDATE lectures SET title = $2, speaker = $3, description = $4, starts_at = $5, \
                 ends_at = $6, updated_at = $7 WHERE id = $1",
            )
            .bind(lid)
            .bind(input.title.clone())
            .bind(input.speaker.clone())
            .bind(input.description.clone())
            .bind(s)
            .bind(e)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if let Some(seats) = patch.seats {
                self.set_seats(&mut tx, lid, seats, now).await?;
            }
            let (old_s, old_e): (Option<i64>, Option<i64>) =
                (r.try_get("starts_at")?, r.try_get("ends_at")?);
            if old_s != Some(s) || old_e != Some(e) {
                self.lecture_event(&mut tx, lid, "lecture.moved", now)
                    .await?;
            }
        }
        if last > old_last {
            let category = self.category_id(&mut tx, input.category.as_deref()).await?;
            let dialects = input.dialects.join(",");
            let from = old_last
                .tomorrow()
                .map_err(|_| Error::Invalid("date out of range".into()))?;
            self.add_occurrences(&mut tx, id, &input, category, &dialects, from, last, now)
                .await?;
        }
        tx.commit().await?;
        self.refresh_admission().await?;
        self.wake_outbox();
        self.series(id).await
    }

    /// Brings the `[[lecture]]` entries of the configuration file into the catalogue:
    /// creates or updates one occurrence per entry (by name), its hall (by name) and its
    /// stream's publish key (the file's key wins; none means open). Entries no longer in the
    /// file are removed, or, if they have bookings, kept as ordinary lectures. Running it
    /// twice changes nothing.
    pub async fn import_config(&self, lectures: &[config::LectureConfig]) -> Result<(), Error> {
        let now = self.now();
        let mut tx = self.db().begin().await?;
        for (i, l) in lectures.iter().enumerate() {
            let key_err = |field: &str, e: Error| match e {
                Error::Invalid(m) => Error::Invalid(format!("lecture[{i}].{field}: {m}")),
                e => e,
            };
            check_stream(&l.name).map_err(|e| key_err("name", e))?;
            let category = self
                .category_id(&mut tx, l.category.as_deref())
                .await
                .map_err(|e| key_err("category", e))?;
            let hall_id: Option<i64> = match l.hall.as_deref() {
                Some(h) => {
                    let h = text("hall", h, 200, true, false).map_err(|e| key_err("hall", e))?;
                    sqlx::query(
                        "INSERT INTO halls (name, seats, created_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (name) DO NOTHING",
                    )
                    .bind(h.clone())
                    .bind(l.seats.map(i64::from))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query_scalar("SELECT id FROM halls WHERE name = $1")
                        .bind(h)
                        .fetch_optional(&mut *tx)
                        .await?
                }
                None => None,
            };
            sqlx::query(
                "INSERT INTO streams (name, publish_key, from_config, updated_at) \
                 VALUES ($1, $2, 1, $3) ON CONFLICT (name) DO UPDATE SET \
                 publish_key = excluded.publish_key, previous_key = NULL, \
                 previous_until = NULL, from_config = 1, updated_at = excluded.updated_at",
            )
            .bind(l.name.clone())
            .bind(l.publish_key.clone())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let title = l.title.clone().unwrap_or_else(|| l.name.clone());
            let title = text("title", &title, 200, true, false).map_err(|e| key_err("title", e))?;
            let visibility = l
                .visibility
                .as_deref()
                .map(|v| {
                    Visibility::parse(v).ok_or_else(|| {
                        Error::Invalid(format!(
                            "lecture[{i}].visibility: must be public, booking or private"
                        ))
                    })
                })
                .transpose()?
                .unwrap_or_default();
            let starts = l.starts_at.map(|t| t.as_second());
            let ends = match (starts, l.ends_at) {
                (_, Some(e)) => Some(e.as_second()),
                // A lecture with a start but no end is given two hours.
                (Some(s), None) => Some(s + 7200),
                (None, None) => None,
            };
            let dialects = l.language.clone().unwrap_or_default();
            let existing: Option<i64> =
                sqlx::query_scalar("SELECT id FROM lectures WHERE config_name = $1")
                    .bind(l.name.clone())
                    .fetch_optional(&mut *tx)
                    .await?;
            let id =
                match existing {
                    Some(id) => {
                        sqlx::query(
                            "UPDATE lectures SET title = $2, category_id = $3, hall_id = $4, \
                         stream = $5, dialects = $6, visibility = $7, starts_at = $8, \
                         ends_at = $9 WHERE id = $1",
                        )
                        .bind(id)
                        .bind(title)
                        .bind(category)
                        .bind(hall_id)
                        .bind(l.name.clone())
                        .bind(dialects)
                        .bind(visibility.as_str())
                        .bind(starts)
                        .bind(ends)
                        .execute(&mut *tx)
                        .await?;
                        id
                    }
                    None => sqlx::query_scalar(
                        "INSERT INTO lectures (config_name, title, category_id, hall_id, stream, \
                         dialects, visibility, starts_at, ends_at, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $1, $5, $6, $7, $8, $9, $9) RETURNING id",
                    )
                    .bind(l.name.clone())
                    .bind(title)
                    .bind(category)
                    .bind(hall_id)
                    .bind(dialects)
                    .bind(visibility.as_str())
                    .bind(starts)
                    .bind(ends)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?,
                };
            match l.seats {
                Some(seats) => {
                    // Fewer seats than are booked: keep the booked number rather than fail
                    // the start; the operator sees the warning.
                    let taken: i64 =
                        sqlx::query_scalar("SELECT seats_taken FROM lectures WHERE id = $1")
                            .bind(id)
                            .fetch_one(&mut *tx)
                            .await?;
                    let seats = i64::from(seats);
                    if seats < taken {
                        warn!(lecture = %l.name, seats, booked = taken, "lecture[{i}].seats is below the seats already booked; keeping {taken}");
                    }
                    self.set_seats(&mut tx, id, seats.max(taken), now).await?;
                }
                None => {
                    sqlx::query(
                        "UPDATE lectures SET seats = NULL WHERE id = $1 AND seats_taken = 0",
                    )
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        // Entries gone from the file.
        let names: Vec<String> = lectures.iter().map(|l| l.name.clone()).collect();
        let stale: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, config_name FROM lectures WHERE config_name IS NOT NULL")
                .fetch_all(&mut *tx)
                .await?;
        for (id, name) in stale.into_iter().filter(|(_, n)| !names.contains(n)) {
            let booked: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM bookings WHERE lecture_id = $1")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
            if booked == 0 {
                sqlx::query("DELETE FROM checkins WHERE lecture_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM lectures WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                info!(lecture = %name, "removed from the catalogue: no longer in the configuration");
            } else {
                sqlx::query("UPDATE lectures SET config_name = NULL WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                info!(lecture = %name, "no longer in the configuration; kept in the catalogue for its bookings");
            }
            sqlx::query("UPDATE streams SET from_config = 0 WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.refresh_admission().await?;
        Ok(())
    }

    /// The publish key of a stream (for the operator's "how to stream").
    pub async fn stream_key(&self, stream: &str) -> Result<StreamKey, Error> {
        let row = sqlx::query("SELECT publish_key, previous_until FROM streams WHERE name = $1")
            .bind(stream.to_string())
            .fetch_optional(&self.db().read)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no stream {stream:?} in the catalogue")))?;
        Ok(StreamKey {
            stream: stream.to_string(),
            publish_key: row
                .try_get::<Option<String>, _>("publish_key")?
                .unwrap_or_default(),
            previous_valid_until: row
                .try_get::<Option<i64>, _>("previous_until")?
                .filter(|u| *u > self.now())
                .map(ts),
        })
    }

    /// Gives a stream a new publish key. The publisher live now stays (keys are checked when
    /// a publisher connects); the old key keeps working for `key_rotation_grace_minutes`.
    pub async fn rotate_key(&self, stream: &str) -> Result<StreamKey, Error> {
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let from_config: Option<i64> =
            sqlx::query_scalar("SELECT from_config FROM streams WHERE name = $1")
                .bind(stream.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        match from_config {
            None => {
                return Err(Error::NotFound(format!(
                    "no stream {stream:?} in the catalogue"
                )));
            }
            Some(1) => {
                return Err(Error::Conflict(
                    "this stream's key is set in the configuration file; change it there".into(),
                ));
            }
            Some(_) => {}
        }
        let key = crate::random_code(24);
        let until = now + self.inner.settings.key_rotation_grace_s;
        sqlx::query(
            "UPDATE streams SET previous_key = publish_key, previous_until = $2, \
             publish_key = $3, updated_at = $4 WHERE name = $1",
        )
        .bind(stream.to_string())
        .bind(until)
        .bind(key.clone())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.refresh_admission().await?;
        info!(stream, "publish key rotated");
        Ok(StreamKey {
            stream: stream.to_string(),
            publish_key: key,
            previous_valid_until: (until > now).then(|| ts(until)),
        })
    }
}
