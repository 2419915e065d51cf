//! iCalendar (RFC 5545) feeds: a category's or a hall's lectures, and one person's bookings
//! with an alarm before each.

use jiff::Timestamp;
use sqlx::Row;

use crate::{Catalogue, Error, ts};

/// One event of a feed.
#[derive(Debug, Clone)]
pub struct Event {
    /// Stable id (`lecture-ID@jiangtang`): calendars update the event when it moves.
    pub uid: String,
    /// Start.
    pub start: Timestamp,
    /// End.
    pub end: Timestamp,
    /// Last change.
    pub modified: Timestamp,
    /// Title.
    pub summary: String,
    /// Description.
    pub description: String,
    /// Hall and address.
    pub location: String,
    /// Called off.
    pub cancelled: bool,
    /// An alarm this many minutes before the start.
    pub alarm_minutes: Option<i64>,
}

/// Escapes a TEXT value (RFC 5545 §3.3.11).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Appends one content line, folded at 75 octets without splitting a character (§3.1).
fn line(out: &mut String, content: &str) {
    let mut width = 0;
    for c in content.chars() {
        if width + c.len_utf8() > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += c.len_utf8();
    }
    out.push_str("\r\n");
}

fn stamp(t: Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// Renders a calendar named `name`.
pub fn render(name: &str, events: &[Event], now: Timestamp) -> String {
    let mut out = String::new();
    line(&mut out, "BEGIN:VCALENDAR");
    line(&mut out, "VERSION:2.0");
    line(&mut out, "PRODID:-//jiangtang//catalogue//EN");
    line(&mut out, "CALSCALE:GREGORIAN");
    line(&mut out, "METHOD:PUBLISH");
    line(&mut out, &format!("X-WR-CALNAME:{}", escape(name)));
    for e in events {
        line(&mut out, "BEGIN:VEVENT");
        line(&mut out, &format!("UID:{}", escape(&e.uid)));
        line(&mut out, &format!("DTSTAMP:{}", stamp(now)));
        line(&mut out, &format!("LAST-MODIFIED:{}", stamp(e.modified)));
        line(&mut out, &format!("DTSTART:{}", stamp(e.start)));
        line(&mut out, &format!("DTEND:{}", stamp(e.end)));
        line(&mut out, &format!("SUMMARY:{}", escape(&e.summary)));
        if !e.description.is_empty() {
            line(&mut out, &format!("DESCRIPTION:{}", escape(&e.description)));
        }
        if !e.location.is_empty() {
            line(&mut out, &format!("LOCATION:{}", escape(&e.location)));
        }
        line(
            &mut out,
            if e.cancelled {
                "STATUS:CANCELLED"
            } else {
                "STATUS:CONFIRMED"
            },
        );
        if let Some(m) = e.alarm_minutes.filter(|_| !e.cancelled) {
            line(&mut out, "BEGIN:VALARM");
            line(&mut out, "ACTION:DISPLAY");
            line(&mut out, &format!("DESCRIPTION:{}", escape(&e.summary)));
            line(&mut out, &format!("TRIGGER:-PT{m}M"));
            line(&mut out, "END:VALARM");
        }
        line(&mut out, "END:VEVENT");
    }
    line(&mut out, "END:VCALENDAR");
    out
}

/// Which lectures a feed holds.
enum Feed<'a> {
    Category(&'a str),
    Hall(i64),
    Person(&'a str),
}

impl Catalogue {
    async fn feed(&self, feed: Feed<'_>) -> Result<(String, Vec<Event>), Error> {
        let now = self.now();
        // Lectures from 30 days back on, at most 1000.
        let base = "SELECT l.id, l.title, l.speaker, l.description, l.starts_at, l.ends_at, \
                    l.status, l.updated_at, h.name AS hall, h.address AS address FROM lectures l \
                    LEFT JOIN halls h ON h.id = l.hall_id";
        let since = now - 30 * 86_400;
        let (name, rows, alarm) = match feed {
            Feed::Category(slug) => {
                let name: String =
                    sqlx::query_scalar("SELECT name_zh FROM categories WHERE slug = $1")
                        .bind(slug.to_string())
                        .fetch_optional(&self.db().read)
                        .await?
                        .ok_or_else(|| Error::NotFound(format!("no category {slug:?}")))?;
                let sql = format!(
                    "{base} JOIN categories c ON c.id = l.category_id WHERE c.slug = $1 \
                     AND l.visibility <> 'private' AND l.starts_at >= $2 ORDER BY l.starts_at LIMIT 1000"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(slug.to_string())
                    .bind(since)
                    .fetch_all(&self.db().read)
                    .await?;
                (name, rows, None)
            }
            Feed::Hall(id) => {
                let name = self.hall(id).await?.name;
                let sql = format!(
                    "{base} WHERE l.hall_id = $1 AND l.visibility <> 'private' \
                     AND l.starts_at >= $2 ORDER BY l.starts_at LIMIT 1000"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .bind(since)
                    .fetch_all(&self.db().read)
                    .await?;
                (name, rows, None)
            }
            Feed::Person(token) => {
                let sql = format!(
                    "{base} JOIN bookings b ON b.lecture_id = l.id JOIN people p ON p.id = b.person_id \
                     WHERE p.feed_token = $1 AND b.status <> 'cancelled' AND l.starts_at >= $2 \
                     ORDER BY l.starts_at LIMIT 1000"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(token.to_string())
                    .bind(since)
                    .fetch_all(&self.db().read)
                    .await?;
                if rows.is_empty() {
                    let known: Option<i64> =
                        sqlx::query_scalar("SELECT id FROM people WHERE feed_token = $1")
                            .bind(token.to_string())
                            .fetch_optional(&self.db().read)
                            .await?;
                    if known.is_none() {
                        return Err(Error::NotFound("no such calendar".into()));
                    }
                }
                (
                    "我的讲堂预约 · My lectures".to_string(),
                    rows,
                    Some(self.inner.settings.reminder_s / 60),
                )
            }
        };
        let mut events = Vec::with_capacity(rows.len());
        for r in &rows {
            let Some(start) = r.try_get::<Option<i64>, _>("starts_at")? else {
                continue;
            };
            let end = r
                .try_get::<Option<i64>, _>("ends_at")?
                .unwrap_or(start + 3600);
            let speaker: String = r.try_get("speaker")?;
            let mut description: String = r.try_get("description")?;
            if !speaker.is_empty() {
                description = format!("{speaker}\n{description}").trim_end().to_string();
            }
            let location = [
                r.try_get::<Option<String>, _>("hall")?,
                r.try_get::<Option<String>, _>("address")?,
            ]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(", ");
            events.push(Event {
                uid: format!("lecture-{}@jiangtang", r.try_get::<i64, _>("id")?),
                start: ts(start),
                end: ts(end),
                modified: ts(r.try_get("updated_at")?),
                summary: r.try_get("title")?,
                description,
                location,
                cancelled: r.try_get::<String, _>("status")? == "cancelled",
                alarm_minutes: alarm,
            });
        }
        Ok((name, events))
    }

    /// The iCal feed of a category's lectures.
    pub async fn category_calendar(&self, slug: &str) -> Result<String, Error> {
        let (name, events) = self.feed(Feed::Category(slug)).await?;
        Ok(render(&name, &events, ts(self.now())))
    }

    /// The iCal feed of a hall's lectures.
    pub async fn hall_calendar(&self, id: i64) -> Result<String, Error> {
        let (name, events) = self.feed(Feed::Hall(id)).await?;
        Ok(render(&name, &events, ts(self.now())))
    }

    /// The iCal feed of one person's bookings (by the secret token in their
    /// `calendar_url`), with an alarm `reminder_minutes` before each.
    pub async fn person_calendar(&self, token: &str) -> Result<String, Error> {
        let (name, events) = self.feed(Feed::Person(token)).await?;
        Ok(render(&name, &events, ts(self.now())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_fold_on_character_boundaries() {
        let mut out = String::new();
        line(&mut out, &format!("SUMMARY:{}", "讲".repeat(40)));
        for l in out.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(l.len() <= 75, "{} octets", l.len());
        }
        let unfolded = out.replace("\r\n ", "");
        assert_eq!(unfolded, format!("SUMMARY:{}\r\n", "讲".repeat(40)));
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("a,b;c\\d\ne"), "a\\,b\\;c\\\\d\\ne");
    }
}
