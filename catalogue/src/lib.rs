//! The district's programme: halls, categories, lectures and weekly series; bookings of a
//! seat (capacity kept by the database, a waiting list that moves up) or of an online place;
//! check-in at the door; iCal feeds and webhooks for reminders; publish keys and playback
//! tokens for the relay's admission; and the `/api/v1` JSON API with its OpenAPI document.
//!
//! It knows nothing of media: the binary wires it to the relay (the API router, the
//! [`media::admission::Admission`] it implements, and the live/replay calls).
//!
//! # Layout
//! - [`db`]: SQLite or PostgreSQL through one code path; migrations from `migrations/`.
//! - [`model`]: what is stored and answered.
//! - `programme`: halls, categories, lectures, series, the `[[lecture]]` import, keys.
//! - `bookings`: booking, the waiting list, cancelling, check-in, attendance export.
//! - `events`: the webhook outbox, its delivery, and the reminders that fill it.
//! - [`accounts`]: operator accounts (argon2id), console sessions and CSRF tokens.
//! - [`admission`]: who may publish and watch, from an in-memory copy of the catalogue.
//! - [`ical`]: iCalendar feeds.
//! - [`fuzz`]: the API's JSON bodies under a fuzzer, with the feeds and CSV they fill.
//! - [`api`]: the axum router, the operator extractor and the OpenAPI document.
//! - [`clock`]: the time, passed in.

pub mod accounts;
pub mod admission;
pub mod api;
mod bookings;
pub mod clock;
pub mod db;
mod events;
pub mod fuzz;
pub mod ical;
pub mod model;
mod programme;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

pub use db::{Backend, Location};
pub use events::sign;
pub use model::*;

/// What went wrong, in words for the API's `{"error": ...}`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed or out of range.
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with the catalogue's state (already booked, too late, ...).
    #[error("{0}")]
    Conflict(String),
    /// Not allowed for this caller (blocked by the no-show rule, a private lecture).
    #[error("{0}")]
    Forbidden(String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Where to POST webhook events, and how hard to try.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// The URL.
    pub url: String,
    /// HMAC-SHA256 key for `X-Jiangtang-Signature`; empty for none.
    pub secret: String,
    /// Attempts before an event is given up.
    pub max_attempts: u32,
    /// The first retry waits this long; each next one twice as long, at most an hour.
    pub retry_base: Duration,
}

/// How the catalogue runs: its database and the district's booking rules.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The database.
    pub location: Location,
    /// Most connections (PostgreSQL; SQLite's readers).
    pub max_connections: u32,
    /// Time zone of weekly series and of exported times.
    pub timezone: TimeZone,
    /// Seats can be cancelled by their holder until this many seconds before the start.
    pub cancel_deadline_s: i64,
    /// Booking closes this many seconds before the start.
    pub booking_closes_s: i64,
    /// Unused seat bookings that block a person; 0 for never.
    pub no_show_limit: u32,
    /// How far back unused bookings count, in seconds.
    pub no_show_window_s: i64,
    /// The reminder webhook and iCal alarm come this many seconds before the start.
    pub reminder_s: i64,
    /// Bookings and cancellations per client address per minute.
    pub bookings_per_minute: u32,
    /// Webhook, if any.
    pub webhook: Option<Webhook>,
    /// The previous publish key works this many seconds after a rotation.
    pub key_rotation_grace_s: i64,
    /// The operator's bearer token (`http.operator_token`); empty: loopback clients only
    /// (and only while no operator account exists).
    pub operator_token: String,
    /// How long a console session lasts, in seconds.
    pub session_s: i64,
    /// Console logins per client address per minute.
    pub login_per_address: u32,
    /// Console logins per account per minute.
    pub login_per_account: u32,
    /// Session cookies are `Secure`.
    pub secure_cookies: bool,
}

impl Settings {
    /// The settings the configuration file gives.
    pub fn from_config(c: &config::Config) -> Settings {
        let k = &c.catalogue;
        Settings {
            location: if k.database_url.is_empty() {
                Location::Sqlite {
                    path: k.database_path.clone(),
                    full_sync: k.sqlite_synchronous == "full",
                }
            } else {
                Location::Postgres(k.database_url.clone())
            },
            max_connections: k.max_connections,
            // validate() checked it.
            timezone: TimeZone::get(&k.timezone).unwrap_or(TimeZone::UTC),
            cancel_deadline_s: i64::from(k.cancel_deadline_minutes) * 60,
            booking_closes_s: i64::from(k.booking_closes_minutes) * 60,
            no_show_limit: k.no_show_limit,
            no_show_window_s: i64::from(k.no_show_window_days) * 86_400,
            reminder_s: i64::from(k.reminder_minutes) * 60,
            bookings_per_minute: k.bookings_per_minute,
            webhook: (!k.webhook_url.is_empty()).then(|| Webhook {
                url: k.webhook_url.clone(),
                secret: k.webhook_secret.clone(),
                max_attempts: k.webhook_max_attempts,
                retry_base: Duration::from_secs(5),
            }),
            key_rotation_grace_s: i64::from(k.key_rotation_grace_minutes) * 60,
            operator_token: c.http.operator_token.clone(),
            session_s: i64::from(k.session_hours) * 3600,
            login_per_address: k.login_attempts_per_address,
            login_per_account: k.login_attempts_per_account,
            secure_cookies: k.secure_cookies,
        }
    }

    /// The documented defaults with the database at `location` (for tests and tools).
    pub fn defaults(location: Location) -> Settings {
        let mut s = Settings::from_config(
            &config::Config::from_toml_str_with_env("", std::iter::empty())
                .expect("built-in defaults are valid"),
        );
        s.location = location;
        s
    }
}

/// The catalogue. Cheap to clone; every clone shares the database and its state.
#[derive(Clone)]
pub struct Catalogue {
    inner: Arc<Inner>,
}

struct Inner {
    db: db::Db,
    settings: Settings,
    clock: Arc<dyn clock::Clock>,
    /// What admission decisions need, refreshed after each change and every few seconds.
    snapshot: RwLock<Arc<admission::Snapshot>>,
    /// Signs playback tokens; shared through the database by every relay.
    token_secret: Vec<u8>,
    /// Wakes the webhook sender when an event is queued.
    outbox_wake: tokio::sync::Notify,
    /// Bookings per client address.
    limiter: api::RateLimiter,
    /// Refused bookings logged: once a minute per address.
    refusals_logged: api::RateLimiter,
    /// Console logins per client address and per account.
    login_by_address: api::RateLimiter,
    login_by_account: api::RateLimiter<String>,
    /// Some operator account exists (cached once true).
    has_operators: std::sync::atomic::AtomicBool,
}

impl Catalogue {
    /// Opens (creating or migrating) the database and loads what admission needs.
    pub async fn open(settings: Settings) -> Result<Catalogue, Error> {
        Catalogue::open_with_clock(settings, Arc::new(clock::SystemClock)).await
    }

    /// Like [`Catalogue::open`] with another clock.
    pub async fn open_with_clock(
        settings: Settings,
        clock: Arc<dyn clock::Clock>,
    ) -> Result<Catalogue, Error> {
        let db = db::Db::open(&settings.location, settings.max_connections).await?;
        let token_secret = programme::token_secret(&db).await?;
        let limiter = api::RateLimiter::new(settings.bookings_per_minute);
        let login_by_address = api::RateLimiter::new(settings.login_per_address);
        let login_by_account = api::RateLimiter::new(settings.login_per_account);
        let c = Catalogue {
            inner: Arc::new(Inner {
                db,
                settings,
                clock,
                snapshot: RwLock::new(Arc::default()),
                token_secret,
                outbox_wake: tokio::sync::Notify::new(),
                limiter,
                refusals_logged: api::RateLimiter::new(1),
                login_by_address,
                login_by_account,
                has_operators: Default::default(),
            }),
        };
        c.refresh_admission().await?;
        Ok(c)
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.inner.db.backend
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Closes the database connections (after this, every call fails).
    pub async fn close(&self) {
        self.inner.db.close().await;
    }

    /// Runs the background work until `stop` resolves: reminders before lectures start,
    /// webhook delivery with retries, and refreshing admission data (other relays may
    /// change a shared PostgreSQL catalogue).
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        tokio::select! {
            _ = stop => {}
            _ = self.clone().deliver_webhooks() => {}
            _ = self.clone().remind_and_refresh() => {}
        }
    }

    fn now(&self) -> i64 {
        self.inner.clock.now().as_second()
    }

    fn db(&self) -> &db::Db {
        &self.inner.db
    }
}

/// A Unix time in seconds as a timestamp.
pub(crate) fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Checks a text field: trimmed, no control characters (but newlines where `multiline`),
/// at most `max` characters; `required` ones not empty.
pub(crate) fn text(
    field: &str,
    value: &str,
    max: usize,
    required: bool,
    multiline: bool,
) -> Result<String, Error> {
    let v = value.trim();
    if required && v.is_empty() {
        return Err(Error::Invalid(format!("{field} is required")));
    }
    if v.chars().count() > max {
        return Err(Error::Invalid(format!(
            "{field} is longer than {max} characters"
        )));
    }
    if v.chars()
        .any(|c| c.is_control() && !(multiline && (c == '\n' || c == '\r' || c == '\t')))
    {
        return Err(Error::Invalid(format!(
            "{field} contains control characters"
        )));
    }
    Ok(v.to_string())
}

/// A random code of `n` characters from an alphabet without look-alikes (no 0/O, 1/I):
/// 5 bits of the operating system's randomness per character.
pub(crate) fn random_code(n: usize) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = vec![0u8; n];
    rand::fill(&mut bytes[..]);
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(b & 31)] as char)
        .collect()
}

pub use bookings::BookingOutcome;
pub use events::sign as webhook_signature;
pub use programme::LectureQuery;
