//! What the catalogue stores and answers, as the API shows it.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Who may see and watch a lecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Listed; anyone may watch; seats (if any) can be booked.
    #[default]
    Public,
    /// Listed; watching online needs a booking (an online one or a seat).
    Booking,
    /// Not listed and not bookable; watching needs a playback token from an operator.
    Private,
}

impl Visibility {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Booking => "booking",
            Visibility::Private => "private",
        }
    }

    /// From the stored word.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "public" => Visibility::Public,
            "booking" => Visibility::Booking,
            "private" => Visibility::Private,
            _ => return None,
        })
    }
}

/// A seat at the hall or watching online.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum BookingKind {
    /// A seat at the hall (limited; may go to the waiting list).
    #[default]
    Seat,
    /// Watching online, with a reminder.
    Online,
}

impl BookingKind {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            BookingKind::Seat => "seat",
            BookingKind::Online => "online",
        }
    }

    /// From the stored word.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "seat" => Some(BookingKind::Seat),
            "online" => Some(BookingKind::Online),
            _ => None,
        }
    }
}

/// Where a booking stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BookingStatus {
    /// Has its seat (or its online place).
    Confirmed,
    /// On the waiting list.
    Waiting,
    /// Cancelled.
    Cancelled,
}

impl BookingStatus {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            BookingStatus::Confirmed => "confirmed",
            BookingStatus::Waiting => "waiting",
            BookingStatus::Cancelled => "cancelled",
        }
    }

    /// From the stored word.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "confirmed" => BookingStatus::Confirmed,
            "waiting" => BookingStatus::Waiting,
            "cancelled" => BookingStatus::Cancelled,
            _ => return None,
        })
    }
}

/// Whether an occurrence takes place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LectureStatus {
    /// It takes place.
    Scheduled,
    /// Called off.
    Cancelled,
}

/// A category of the programme.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Category {
    /// Id.
    pub id: i64,
    /// Short English name used in URLs: `theory`, `education`, `culture`, `science`,
    /// `fitness`.
    pub slug: String,
    /// Chinese name (理论宣讲…).
    pub name_zh: String,
    /// English name.
    pub name_en: String,
}

/// A hall or venue.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Hall {
    /// Id.
    pub id: i64,
    /// Name, unique.
    pub name: String,
    /// Town (镇/街道).
    pub town: String,
    /// Village (村/社区).
    pub village: String,
    /// Street address.
    pub address: String,
    /// Seats in the hall, if known (a lecture's bookable seats are set per lecture).
    pub seats: Option<i64>,
}

/// A new hall, or the fields of a hall to change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HallInput {
    /// Name (required when creating).
    pub name: Option<String>,
    /// Town.
    pub town: Option<String>,
    /// Village.
    pub village: Option<String>,
    /// Address.
    pub address: Option<String>,
    /// Seats.
    pub seats: Option<i64>,
}

/// One occurrence of a lecture, as listed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Lecture {
    /// Id of this occurrence.
    pub id: i64,
    /// The stream it is broadcast on (`/hls/STREAM/index.m3u8`, `/play/STREAM`).
    pub stream: String,
    /// Title.
    pub title: String,
    /// Speaker.
    pub speaker: String,
    /// Description.
    pub description: String,
    /// Category.
    pub category: Option<Category>,
    /// Hall.
    pub hall: Option<Hall>,
    /// Start (RFC 3339); none for a standing stream with no schedule.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub starts_at: Option<Timestamp>,
    /// End.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ends_at: Option<Timestamp>,
    /// Dialects offered (BCP-47 tags: `cmn`, `yue`, `hak`).
    pub dialects: Vec<String>,
    /// Who may see and watch it.
    pub visibility: Visibility,
    /// Whether it takes place.
    pub status: LectureStatus,
    /// Bookable seats; none when seats are not booked.
    pub seats: Option<i64>,
    /// Seats still free.
    pub seats_left: Option<i64>,
    /// People on the waiting list.
    pub waiting: i64,
    /// Whether a booking can be made now.
    pub booking_open: bool,
    /// The weekly series it belongs to.
    pub series_id: Option<i64>,
    /// When it went live.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub live_at: Option<Timestamp>,
    /// Its replay, once ready.
    pub replay_url: Option<String>,
}

/// A new lecture occurrence.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LectureInput {
    /// Title.
    pub title: String,
    /// Speaker.
    #[serde(default)]
    pub speaker: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Category slug (`culture`) or Chinese name.
    pub category: Option<String>,
    /// Hall id.
    pub hall_id: Option<i64>,
    /// Stream name.
    pub stream: String,
    /// Dialects offered.
    #[serde(default)]
    pub dialects: Vec<String>,
    /// Visibility (default public).
    #[serde(default)]
    pub visibility: Visibility,
    /// Start.
    #[schema(value_type = String, format = DateTime)]
    pub starts_at: Timestamp,
    /// End.
    #[schema(value_type = String, format = DateTime)]
    pub ends_at: Timestamp,
    /// Bookable seats; none for no booking.
    pub seats: Option<i64>,
}

/// Fields of an occurrence to change. Changing its time moves it (bookings follow) and
/// detaches it from its series' later edits.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LecturePatch {
    /// Title.
    pub title: Option<String>,
    /// Speaker.
    pub speaker: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Category slug or name.
    pub category: Option<String>,
    /// Hall id.
    pub hall_id: Option<i64>,
    /// Dialects.
    pub dialects: Option<Vec<String>>,
    /// Visibility.
    pub visibility: Option<Visibility>,
    /// New start.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub starts_at: Option<Timestamp>,
    /// New end.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ends_at: Option<Timestamp>,
    /// Bookable seats (not below the seats already booked); the waiting list moves up
    /// into new seats.
    pub seats: Option<i64>,
}

/// A weekly series: one occurrence every `weekday` at `start_time` from `first_date` to
/// `last_date`, in the catalogue's time zone.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeriesInput {
    /// Title of every occurrence.
    pub title: String,
    /// Speaker.
    #[serde(default)]
    pub speaker: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Category slug or name.
    pub category: Option<String>,
    /// Hall id.
    pub hall_id: Option<i64>,
    /// Stream every occurrence uses.
    pub stream: String,
    /// Dialects offered.
    #[serde(default)]
    pub dialects: Vec<String>,
    /// Visibility.
    #[serde(default)]
    pub visibility: Visibility,
    /// Bookable seats of each occurrence.
    pub seats: Option<i64>,
    /// ISO weekday: 1 Monday … 7 Sunday.
    pub weekday: i64,
    /// Local time of day, `HH:MM`.
    pub start_time: String,
    /// Length of each occurrence.
    pub duration_minutes: i64,
    /// First day (`YYYY-MM-DD`, local); the first occurrence is on or after it.
    pub first_date: String,
    /// Last day (inclusive), at most 2 years after the first.
    pub last_date: String,
}

/// A weekly series.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Series {
    /// Id.
    pub id: i64,
    /// The series as last set.
    #[serde(flatten)]
    pub input: SeriesInput,
    /// Its occurrences' ids, in time order.
    pub occurrences: Vec<i64>,
}

/// Changes to a series, applied to its occurrences that have not started and were not
/// edited one by one.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeriesPatch {
    /// Title.
    pub title: Option<String>,
    /// Speaker.
    pub speaker: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Local time of day, `HH:MM` (moves the occurrences; bookings follow).
    pub start_time: Option<String>,
    /// Length.
    pub duration_minutes: Option<i64>,
    /// New last day: later adds occurrences, earlier cancels those after it.
    pub last_date: Option<String>,
    /// Seats of each occurrence.
    pub seats: Option<i64>,
}

/// A request for a seat or an online place.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookingRequest {
    /// Who books: the app's user id or a phone number (1-128 characters). One active
    /// booking per person and lecture; unused seats count against this person.
    pub person: String,
    /// Name shown to hall staff.
    #[serde(default)]
    pub name: String,
    /// Contact for the organiser (phone).
    #[serde(default)]
    pub contact: String,
    /// `seat` (default) or `online`.
    #[serde(default)]
    pub kind: BookingKind,
}

/// A booking.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Booking {
    /// The ticket code: shown as a QR code, scanned at the door, and the key to cancel.
    pub ticket_code: String,
    /// The occurrence.
    pub lecture_id: i64,
    /// Seat or online.
    pub kind: BookingKind,
    /// Confirmed, waiting or cancelled.
    pub status: BookingStatus,
    /// Place on the waiting list (1 is next), while waiting.
    pub waiting_list_place: Option<i64>,
    /// Name.
    pub name: String,
    /// When it was made.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When its holder was let in.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub checked_in_at: Option<Timestamp>,
    /// This person's calendar of bookings (iCal, with alarms): keep it secret.
    pub calendar_url: String,
    /// For lectures that need one: the token that lets this person watch.
    pub playback_token: Option<String>,
}

/// A ticket code presented at the door.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckinRequest {
    /// The code, as scanned or typed (case, spaces and dashes do not matter).
    pub code: String,
}

/// What the door should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckinOutcome {
    /// Let in; recorded now.
    Valid,
    /// This ticket was already used (see `checked_in_at`).
    AlreadyUsed,
    /// A ticket for another lecture.
    WrongLecture,
    /// The booking or the lecture was cancelled.
    Cancelled,
    /// Still on the waiting list: no seat.
    Waiting,
    /// A booking to watch online, not a seat.
    OnlineOnly,
    /// No such ticket.
    Unknown,
}

impl CheckinOutcome {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckinOutcome::Valid => "valid",
            CheckinOutcome::AlreadyUsed => "already_used",
            CheckinOutcome::WrongLecture => "wrong_lecture",
            CheckinOutcome::Cancelled => "cancelled",
            CheckinOutcome::Waiting => "waiting",
            CheckinOutcome::OnlineOnly => "online_only",
            CheckinOutcome::Unknown => "unknown",
        }
    }
}

/// The answer to a scan.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Checkin {
    /// The verdict.
    pub result: CheckinOutcome,
    /// Name on the booking.
    pub name: Option<String>,
    /// The lecture the ticket is for (differs for `wrong_lecture`).
    pub lecture_id: Option<i64>,
    /// When the ticket was (first) used.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub checked_in_at: Option<Timestamp>,
}

/// A new publish key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StreamKey {
    /// Stream name.
    pub stream: String,
    /// The key publishers must now give.
    pub publish_key: String,
    /// Until when the previous key still works.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub previous_valid_until: Option<Timestamp>,
}

/// A playback token for a lecture that needs one.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlaybackToken {
    /// The token (`?token=` on the player's URLs).
    pub token: String,
    /// When it stops working.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
}
