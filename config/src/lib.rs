//! jiangtang's configuration: a TOML file (optional: every key has a default), overridden by
//! environment variables `JIANGTANG_<SECTION>_<KEY>` (e.g. `JIANGTANG_HTTP_LISTEN=0.0.0.0:80`,
//! `JIANGTANG_HLS_PART_TARGET_MS=300`). [`Config::validate`] names the first bad key.
//!
//! The commented default configuration is `config/jiangtang.toml`; [`DEFAULT_TOML`] embeds it.

use indexmap::IndexMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

/// The documented default configuration file.
pub const DEFAULT_TOML: &str = include_str!("../jiangtang.toml");

/// Errors loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {err}")]
    Read {
        /// The file.
        path: String,
        /// The IO error.
        err: std::io::Error,
    },
    /// TOML syntax or type error.
    #[error("{0}")]
    Parse(String),
    /// A value out of range; names the key.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid {
        /// Dotted key, e.g. `hls.part_target_ms`.
        key: String,
        /// Why.
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP server (HLS, API, player).
    pub http: HttpConfig,
    /// The live channel (`/ws/NAME`).
    pub channel: ChannelConfig,
    /// RTMP listener.
    pub rtmp: RtmpConfig,
    /// SRT listener.
    pub srt: SrtConfig,
    /// RTSP pulling (IP cameras).
    pub rtsp: RtspConfig,
    /// IP cameras to pull, each into a lecture.
    #[serde(default, rename = "camera")]
    pub camera: Vec<CameraConfig>,
    /// HLS / LL-HLS packaging.
    pub hls: HlsConfig,
    /// Smaller pictures next to the source, for weak links.
    pub ladder: LadderConfig,
    /// WebRTC playback (WHEP).
    pub webrtc: WebrtcConfig,
    /// Lecture-wide rules.
    pub lectures: LecturesConfig,
    /// Recording every lecture, and replays.
    pub recording: RecordingConfig,
    /// Display names of dialects by language tag, in the order players list them.
    pub dialects: IndexMap<String, String>,
    /// Lectures known in advance, with keys and titles.
    #[serde(default, rename = "lecture")]
    pub lecture: Vec<LectureConfig>,
    /// The built-in demo lecture.
    pub demo: DemoConfig,
    /// Sub-venues (1 + X) known by code: shown by name in a lecture's roster.
    #[serde(default, rename = "site")]
    pub site: Vec<SiteConfig>,
    /// The programme: halls, lectures, bookings (the `catalogue` crate).
    pub catalogue: CatalogueConfig,
    /// Supervision of the audio transcoders (AAC to Opus, Opus or G.711 to AAC).
    pub transcode: TranscodeConfig,
    /// Relays chained to this one: pulling lectures from an origin (this relay an edge),
    /// and the keys of edges that may pull from this one.
    pub edge: EdgeConfig,
}

/// What kind of place a sub-venue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteKind {
    /// A town's institute (it may run an edge for its villages).
    TownInstitute,
    /// A village's station.
    VillageStation,
    /// A school classroom.
    School,
    /// A small practice point.
    PracticePoint,
}

/// `[[site]]`: a sub-venue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Its code (`a-z 0-9 _ -`, at most 32): `[edge] site` of its edge, `?site=` of its player.
    pub code: String,
    /// Its name.
    pub name: String,
    /// Its town.
    #[serde(default)]
    pub town: String,
    /// What it is.
    pub kind: SiteKind,
    /// The dialect it usually plays.
    #[serde(default)]
    pub dialect: Option<String>,
}

/// `[edge]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// Origins to pull lectures from, by their HTTP address (`http://host:port`), tried in
    /// order (failover). Empty: this relay is not an edge.
    pub origins: Vec<String>,
    /// The key this edge presents to its origins (their `edge.accept_keys`).
    pub key: String,
    /// Lectures pulled whenever the origin has them live (a kiosk screen, a sub-venue that
    /// always shows the main hall), besides those local viewers ask for.
    pub always: Vec<String>,
    /// A lecture nobody here watches any more stops being pulled this long after.
    pub idle_stop_s: u64,
    /// A pulled lecture whose origin cannot be reached stays `reconnecting` (its viewers
    /// waiting) this long before it ends.
    pub hold_s: u64,
    /// Longest wait between attempts to reach an origin (attempts start at 0.5 s and double).
    pub max_backoff_ms: u64,
    /// Keys of edges allowed to pull from this relay: with one, an edge may pull every
    /// lecture here that needs no playback token.
    pub accept_keys: Vec<String>,
    /// Lectures of the origin's programme pulled on schedule (from `schedule_lead_s` before
    /// they start until they end) even with nobody watching yet: those of halls in these
    /// towns, `"*"` for every lecture. Empty: none.
    pub schedule_towns: Vec<String>,
    /// How long before a scheduled lecture starts it is pulled.
    pub schedule_lead_s: u64,
    /// The site code this edge reports to its origins (its `[[site]]` there); empty: the
    /// machine's host name.
    pub site: String,
}

impl EdgeConfig {
    /// Whether this relay pulls from an origin.
    pub fn is_edge(&self) -> bool {
        !self.origins.is_empty()
    }
}

/// `[transcode]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscodeConfig {
    /// A transcoder that puts out nothing for this long while its input flows is restarted
    /// (as is one whose pipeline reports an error).
    pub stall_timeout_ms: u64,
    /// Most restarts of one transcoder in any minute; beyond, its dialect stays silent on
    /// that output until the minute has passed.
    pub max_restarts_per_minute: u32,
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Bearer token for the operator API (questions of any lecture); empty for none. A
    /// lecture's own `publish_key` also opens its questions.
    pub operator_token: String,
    /// The address viewers reach the relay at, put in front of paths in webhook bodies;
    /// empty leaves them as paths.
    pub public_url: String,
    /// Most HTTP and HTTPS connections open at once (both listeners together); more are
    /// closed at accept.
    pub max_connections: usize,
    /// Most connections open at once from one client address (IPv6: one /64).
    pub max_per_address: usize,
    /// Time allowed from accept to a complete first request head (TLS handshake included),
    /// and for each later request head (also how long an idle HTTP/1.1 keep-alive lasts).
    pub header_read_timeout_ms: u64,
    /// A connection that moves no byte either way for this long is closed.
    pub idle_timeout_ms: u64,
    /// Largest request head (request line and headers) in bytes; HTTP/1.1 answers 431.
    pub max_header_bytes: usize,
    /// HTTPS: on when `cert` and `key` are set.
    pub tls: TlsConfig,
}

/// `[http.tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Address of the HTTPS listener.
    pub listen: SocketAddr,
    /// Certificate chain, PEM (leaf first); empty for no HTTPS.
    pub cert: std::path::PathBuf,
    /// Private key of the leaf, PEM (PKCS#8, PKCS#1 or SEC1); empty for no HTTPS.
    pub key: std::path::PathBuf,
    /// `Strict-Transport-Security: max-age=` on HTTPS responses; 0 for no header.
    pub hsts_max_age_s: u64,
    /// How often the files' modification times are checked for a reload (SIGHUP reloads at
    /// once).
    pub watch_interval_ms: u64,
}

impl TlsConfig {
    /// True when HTTPS is configured.
    pub fn enabled(&self) -> bool {
        !self.cert.as_os_str().is_empty() && !self.key.as_os_str().is_empty()
    }
}

/// `[channel]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Most live-channel connections at once.
    pub max_connections: usize,
    /// Most live-channel connections from one client address (IPv6: one /64).
    pub max_per_address: usize,
    /// How often the relay pings each connection.
    pub ping_interval_ms: u64,
    /// A connection that sends nothing (pongs included) for this long is closed.
    pub idle_timeout_ms: u64,
    /// A connection that does not take a message within this time is closed.
    pub send_timeout_ms: u64,
    /// Questions and raised hands accepted from one client address per minute (IPv6: one
    /// /64), over all its live channels.
    pub questions_per_address_per_minute: u32,
}

/// `[rtmp]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtmpConfig {
    /// Whether to listen at all.
    pub enabled: bool,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Most simultaneous RTMP connections.
    pub max_connections: usize,
    /// Most simultaneous RTMP connections from one client address (IPv6: one /64).
    pub max_per_address: usize,
    /// Time allowed from TCP connect to `publish`.
    pub handshake_timeout_ms: u64,
    /// A publisher sending nothing for this long is disconnected.
    pub idle_timeout_ms: u64,
    /// Largest audio/video message accepted, in bytes.
    pub max_message_bytes: usize,
}

/// `[srt]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SrtConfig {
    /// Whether to listen at all.
    pub enabled: bool,
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// Receiver latency in ms (how long lost packets may take to be resent); the larger of
    /// this and the publisher's wins.
    pub latency_ms: u32,
    /// Encryption passphrase every publisher must use (10–79 characters); empty for none.
    /// A lecture's `srt_passphrase` overrides it.
    pub passphrase: String,
    /// Most simultaneous SRT publishers.
    pub max_connections: usize,
    /// Most simultaneous SRT publishers from one client address (IPv6: one /64).
    pub max_per_address: usize,
    /// A publisher silent for this long is disconnected.
    pub idle_timeout_ms: u32,
}

/// `[rtsp]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtspConfig {
    /// Longest each of DESCRIBE, SETUP and PLAY may take.
    pub step_timeout_ms: u64,
    /// A camera that sends no frame for this long is reconnected.
    pub stall_timeout_ms: u64,
    /// Reconnect backoff starts here and doubles up to `max_backoff_ms`.
    pub min_backoff_ms: u64,
    /// Longest wait between reconnect attempts.
    pub max_backoff_ms: u64,
    /// An `on_demand` camera stops this long after its last viewer left.
    pub idle_stop_s: u64,
    /// A `scheduled` camera starts this long before the lecture's `starts_at`.
    pub schedule_lead_s: u64,
}

/// When a camera is pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullMode {
    /// All the time.
    Always,
    /// While somebody watches (or asks for) its lecture.
    OnDemand,
    /// From `rtsp.schedule_lead_s` before its lecture's `starts_at` until its `ends_at`.
    Scheduled,
}

/// How RTP reaches us from a camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RtspTransport {
    /// Interleaved on the RTSP connection (works through NAT and firewalls).
    Tcp,
    /// Separate UDP ports (lower latency on a clean LAN; no reordering buffer).
    Udp,
}

/// `[[camera]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// The lecture (stream name) it becomes.
    pub lecture: String,
    /// `rtsp://host[:port]/path`; credentials may be in it (`rtsp://user:pass@host/...`).
    pub url: String,
    /// User name, if not in the URL.
    #[serde(default)]
    pub username: Option<String>,
    /// Password, if not in the URL.
    #[serde(default)]
    pub password: Option<String>,
    /// TCP (default) or UDP.
    #[serde(default = "default_transport")]
    pub transport: RtspTransport,
    /// When to pull (default `always`).
    #[serde(default = "default_pull")]
    pub pull: PullMode,
    /// Dialect of the camera's audio (default: the lecture's).
    #[serde(default)]
    pub language: Option<String>,
}

fn default_transport() -> RtspTransport {
    RtspTransport::Tcp
}

fn default_pull() -> PullMode {
    PullMode::Always
}

/// `[hls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HlsConfig {
    /// Target duration of a partial segment (LL-HLS `PART-TARGET`).
    pub part_target_ms: u64,
    /// Minimum segment duration; segments are cut at the first keyframe after it.
    pub segment_target_ms: u64,
    /// Segments listed in a media playlist (the sliding window).
    pub window_segments: usize,
    /// Longest a blocking playlist reload or preload-hinted part request waits.
    pub block_timeout_ms: u64,
    /// Whether the window's older segments are kept in unnamed files instead of memory.
    pub spool: bool,
    /// Folder of those files; empty for the system's temporary folder.
    pub spool_dir: std::path::PathBuf,
    /// Completed segments of each rendition kept in memory at the live edge when spooling.
    pub memory_segments: usize,
}

/// `[ladder]`: smaller pictures transcoded once per lecture next to the source (HLS
/// variants sharing the dialects), for sub-venues whose link cannot carry the source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LadderConfig {
    /// Whether lectures get the ladder (a `[[lecture]]`'s `ladder` decides for it).
    pub enabled: bool,
    /// The smaller pictures, largest first.
    pub rungs: Vec<LadderRungConfig>,
}

/// One smaller picture of `[ladder]`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LadderRungConfig {
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// Video bitrate, kbit/s.
    pub kbps: u32,
}

/// Most rungs of `[ladder]`.
pub const MAX_RUNGS: usize = 3;

/// `[webrtc]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebrtcConfig {
    /// Whether WHEP playback is offered.
    pub enabled: bool,
    /// The first WebRTC UDP port: engine (shard) `k` uses this port + `k` (port 0: any free
    /// ports). An unspecified address (`0.0.0.0`) binds each port on each of this machine's
    /// IPv4 addresses.
    pub udp_listen: SocketAddr,
    /// WebRTC engines, each serving its share of viewers and publishers on its own UDP
    /// port and its own core; 0 for one per core.
    pub shards: usize,
    /// Addresses to announce to viewers instead of the bound ones (a 1:1 NAT's public IP).
    #[serde(default)]
    pub public_ips: Vec<std::net::IpAddr>,
    /// Most WebRTC viewers at once; more get 503 and should use LL-HLS.
    pub max_viewers: usize,
    /// Most WebRTC viewers of one lecture (above `max_viewers`, that one holds); more get
    /// 503 and should use LL-HLS.
    pub max_viewers_per_lecture: usize,
    /// Most WHIP publishers (lecture sources and interpreters) at once.
    pub max_publishers: usize,
    /// A viewer whose ICE and DTLS are not up within this time is dropped.
    pub connect_timeout_ms: u64,
    /// Largest SDP offer accepted, in bytes.
    pub max_offer_bytes: usize,
    /// Receive and send buffer of each WebRTC UDP socket, in KiB: room for a GOP burst to
    /// every viewer and a join storm's handshakes (the kernel's default is about 200 KiB).
    pub socket_buffer_kib: usize,
    /// ICE over TCP (RFC 6544) beside UDP, for networks that drop UDP: each engine also
    /// listens on TCP at its UDP port's number and offers that as a passive candidate.
    pub tcp: bool,
    /// Most ICE-TCP connections open at once (each engine's share of it).
    pub max_tcp_connections: usize,
}

impl WebrtcConfig {
    /// How many engines run: `shards`, or one per core for 0.
    pub fn engines(&self) -> usize {
        match self.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// `[lectures]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LecturesConfig {
    /// Whether any valid name may be published without a key, or only the demo, the
    /// `[[lecture]]` entries and the catalogue's lectures (the default: deny).
    pub allow_unconfigured: bool,
    /// Dialect of a publisher's audio when neither `?lang=` nor the lecture says.
    pub default_language: String,
    /// A publisher that reconnects within this time continues the same lecture.
    pub grace_period_s: u64,
    /// A publisher that has sent no frame for this long yields its lecture to a new publisher
    /// with the right key (an encoder coming back after its network dropped, before the old
    /// connection times out); never for a lecture without a key or pulled from an origin, and
    /// a new session has 10 s more for its first frame. 0: a live lecture refuses every other
    /// publisher.
    pub stalled_publisher_ms: u64,
    /// How long an ended lecture's playlists stay available (with `EXT-X-ENDLIST`).
    pub ended_retention_s: u64,
    /// Most lectures live at once.
    pub max_live: usize,
    /// Measure each dialect's sound level for the API (decodes every audio track: about
    /// 0.3 % of a core each).
    pub audio_levels: bool,
}

/// `[recording]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingConfig {
    /// Whether lectures are recorded (a `[[lecture]]` may say `record = false`).
    pub enabled: bool,
    /// Folder holding one folder per recording.
    pub dir: std::path::PathBuf,
    /// Days a recording is kept; 0 keeps them forever. A `[[lecture]]` may say otherwise.
    pub retention_days: u32,
    /// Recording stops when less than this many MiB are free on its disk (and resumes when
    /// there are more again), so the disk never fills up.
    pub min_free_mb: u64,
    /// MiB handed to a recording's writer and not yet written beyond which it drops what
    /// comes (the recording fails until it catches up) rather than hold the lecture up.
    pub max_pending_mb: u64,
    /// URL to POST JSON to when a lecture starts, when it ends, and when its replay is
    /// ready; empty for none.
    pub webhook_url: String,
    /// HMAC-SHA256 key signing each webhook body; empty for unsigned.
    pub webhook_secret: String,
    /// Attempts of one webhook event before it is given up.
    pub webhook_max_attempts: u32,
}

/// `[[lecture]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LectureConfig {
    /// Stream name (`rtmp://host/live/NAME`, `/hls/NAME/index.m3u8`).
    pub name: String,
    /// Title shown to viewers.
    #[serde(default)]
    pub title: Option<String>,
    /// Key a publisher must give (`?key=`); none means open.
    #[serde(default)]
    pub publish_key: Option<String>,
    /// Dialect of this lecture's main audio.
    #[serde(default)]
    pub language: Option<String>,
    /// SRT encryption passphrase for this lecture (10–79 characters), instead of
    /// `srt.passphrase`; `""` for none.
    #[serde(default)]
    pub srt_passphrase: Option<String>,
    /// When the lecture is scheduled to start (RFC 3339, e.g. `2026-12-01T19:30:00+08:00`);
    /// players show a countdown until it goes live.
    #[serde(default)]
    pub starts_at: Option<jiff::Timestamp>,
    /// When it is scheduled to end (a `scheduled` camera stops then).
    #[serde(default)]
    pub ends_at: Option<jiff::Timestamp>,
    /// Whether this lecture is recorded (`recording.enabled` when unset).
    #[serde(default)]
    pub record: Option<bool>,
    /// Whether this lecture gets the smaller pictures of `[ladder]` (`ladder.enabled` when
    /// unset).
    #[serde(default)]
    pub ladder: Option<bool>,
    /// Days this lecture's recordings are kept, instead of `recording.retention_days`.
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// The hall it takes place in, by name (created in the catalogue if new).
    #[serde(default)]
    pub hall: Option<String>,
    /// Its category: `theory`, `education`, `culture`, `science`, `fitness` (or the Chinese
    /// name).
    #[serde(default)]
    pub category: Option<String>,
    /// Bookable seats at the hall; booking is open when given (needs `starts_at`).
    #[serde(default)]
    pub seats: Option<u32>,
    /// `public` (default), `booking` (watching needs a booking) or `private` (unlisted,
    /// watching needs a token).
    #[serde(default)]
    pub visibility: Option<String>,
}

/// `[catalogue]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueConfig {
    /// Whether the catalogue (programme, bookings, `/api/v1/lectures`) runs.
    pub enabled: bool,
    /// The SQLite database file, used when `database_url` is empty.
    pub database_path: std::path::PathBuf,
    /// `postgres://...`: the PostgreSQL database several relays share.
    pub database_url: String,
    /// Most database connections (PostgreSQL; SQLite's readers).
    pub max_connections: u32,
    /// SQLite `synchronous`: `full` (a commit is on disk before it is answered) or `normal`
    /// (a commit survives a crash of jiangtang but not a power cut).
    pub sqlite_synchronous: String,
    /// Time zone of weekly series (their weekday and time of day).
    pub timezone: String,
    /// A seat can be cancelled by its holder until this long before the start.
    pub cancel_deadline_minutes: u32,
    /// Booking closes this long before the start.
    pub booking_closes_minutes: u32,
    /// Someone with this many unused seat bookings may book no more seats; 0 for never.
    pub no_show_limit: u32,
    /// Unused bookings older than this are forgotten.
    pub no_show_window_days: u32,
    /// The "starting soon" webhook and the iCal alarm come this long before the start.
    pub reminder_minutes: u32,
    /// Bookings and cancellations each client address may make per minute.
    pub bookings_per_minute: u32,
    /// Where webhook events are POSTed as JSON; empty for none.
    pub webhook_url: String,
    /// Signs each webhook body (`X-Jiangtang-Signature: sha256=HMAC`); empty for unsigned.
    pub webhook_secret: String,
    /// Delivery attempts of one event before it is given up.
    pub webhook_max_attempts: u32,
    /// After a publish key is rotated the previous key still works for this long.
    pub key_rotation_grace_minutes: u32,
    /// An operator's console session lasts this long after logging in.
    pub session_hours: u32,
    /// Console logins each client address may try per minute.
    pub login_attempts_per_address: u32,
    /// Console logins per minute for one account, wherever they come from.
    pub login_attempts_per_account: u32,
    /// Session cookies are `Secure` (sent over HTTPS only; browsers also send them to
    /// `http://localhost`). Turn off only on a closed network served over plain HTTP.
    pub secure_cookies: bool,
}

/// `[demo]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// Whether the demo lecture runs.
    pub enabled: bool,
    /// Its stream name.
    pub name: String,
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Keyframe interval in frames.
    pub keyframe_interval: u32,
    /// Video bitrate in kbit/s.
    pub video_kbps: u32,
    /// Dialect tracks and the tone each carries, as `tag = frequency in Hz`.
    pub tones: IndexMap<String, u32>,
}

impl Config {
    /// The defaults, with environment overrides applied.
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::from_toml_str("")
    }

    /// Loads `path` over the defaults, with environment overrides applied.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read {
            path: path.display().to_string(),
            err,
        })?;
        Self::from_toml_str(&text)
    }

    /// Parses `text` over the defaults, with environment overrides applied.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_str_with_env(text, std::env::vars())
    }

    /// Like [`Config::from_toml_str`] with an explicit environment.
    pub fn from_toml_str_with_env(
        text: &str,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut base: toml::Table = DEFAULT_TOML
            .parse()
            .map_err(|e| ConfigError::Parse(format!("built-in defaults: {e}")))?;
        let user: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        merge(&mut base, user);
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("JIANGTANG_") else {
                continue;
            };
            let Some((section, key)) = rest.split_once('_') else {
                continue;
            };
            let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
            let parsed = format!("v = {value}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(value));
            let table = base
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(Default::default()));
            match table {
                toml::Value::Table(t) => {
                    t.insert(key, parsed);
                }
                _ => {
                    return Err(ConfigError::Invalid {
                        key: format!("{section}.{key}"),
                        reason: format!("environment variable {name} names no section"),
                    });
                }
            }
        }
        let mut config: Config = toml::Value::Table(base)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        // Language tags are compared as the media model writes them: lowercase.
        config.dialects = std::mem::take(&mut config.dialects)
            .into_iter()
            .map(|(tag, name)| (tag.to_ascii_lowercase(), name))
            .collect();
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and relations between keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason: reason.into(),
            })
        };
        if !self.http.operator_token.is_empty() && self.http.operator_token.len() < 16 {
            return bad(
                "http.operator_token",
                "must be empty or at least 16 characters",
            );
        }
        if !(1000..=600_000).contains(&self.transcode.stall_timeout_ms) {
            return bad("transcode.stall_timeout_ms", "must be 1000..=600000");
        }
        self.validate_edge()?;
        if self.ladder.rungs.len() > MAX_RUNGS {
            return bad("ladder.rungs", "at most 3");
        }
        let mut heights: Vec<u32> = self.ladder.rungs.iter().map(|r| r.height).collect();
        heights.sort_unstable();
        heights.dedup();
        if heights.len() != self.ladder.rungs.len() {
            return bad(
                "ladder.rungs",
                "each rung its own height (it names the variant)",
            );
        }
        for r in &self.ladder.rungs {
            if !(64..=3840).contains(&r.width)
                || !(64..=2160).contains(&r.height)
                || r.width % 2 == 1
                || r.height % 2 == 1
            {
                return bad(
                    "ladder.rungs",
                    "width 64..=3840 and height 64..=2160, both even",
                );
            }
            if !(50..=20_000).contains(&r.kbps) {
                return bad("ladder.rungs", "kbps must be 50..=20000");
            }
        }
        if self.channel.max_connections == 0 {
            return bad("channel.max_connections", "must be at least 1");
        }
        if !(1..=self.channel.max_connections).contains(&self.channel.max_per_address) {
            return bad(
                "channel.max_per_address",
                "must be 1..=channel.max_connections",
            );
        }
        if self.channel.questions_per_address_per_minute == 0 {
            return bad(
                "channel.questions_per_address_per_minute",
                "must be at least 1",
            );
        }
        if !(100..=600_000).contains(&self.channel.ping_interval_ms) {
            return bad("channel.ping_interval_ms", "must be 100..=600000");
        }
        if self.channel.idle_timeout_ms <= self.channel.ping_interval_ms
            || self.channel.idle_timeout_ms > 3_600_000
        {
            return bad(
                "channel.idle_timeout_ms",
                "must be above channel.ping_interval_ms and at most 3600000",
            );
        }
        if !(100..=600_000).contains(&self.channel.send_timeout_ms) {
            return bad("channel.send_timeout_ms", "must be 100..=600000");
        }
        if !(100..=2000).contains(&self.hls.part_target_ms) {
            return bad("hls.part_target_ms", "must be 100..=2000");
        }
        if self.hls.segment_target_ms < self.hls.part_target_ms
            || self.hls.segment_target_ms > 20_000
        {
            return bad(
                "hls.segment_target_ms",
                "must be at least hls.part_target_ms and at most 20000",
            );
        }
        if !(3..=100).contains(&self.hls.window_segments) {
            return bad("hls.window_segments", "must be 3..=100");
        }
        if !(1..=100).contains(&self.hls.memory_segments) {
            return bad("hls.memory_segments", "must be 1..=100");
        }
        if self.webrtc.max_viewers == 0 {
            return bad("webrtc.max_viewers", "must be at least 1");
        }
        if self.webrtc.max_viewers_per_lecture == 0 {
            return bad("webrtc.max_viewers_per_lecture", "must be at least 1");
        }
        if !(1000..=120_000).contains(&self.webrtc.connect_timeout_ms) {
            return bad("webrtc.connect_timeout_ms", "must be 1000..=120000");
        }
        if self.webrtc.shards > 256 {
            return bad("webrtc.shards", "must be 0 (one per core) ..= 256");
        }
        if self.webrtc.udp_listen.port() != 0
            && usize::from(self.webrtc.udp_listen.port()) + self.webrtc.engines() > 65_536
        {
            return bad(
                "webrtc.shards",
                "udp_listen's port + shards must stay below 65536",
            );
        }
        if !(64..=262_144).contains(&self.webrtc.socket_buffer_kib) {
            return bad("webrtc.socket_buffer_kib", "must be 64..=262144");
        }
        if !(1024..=1024 * 1024).contains(&self.webrtc.max_offer_bytes) {
            return bad("webrtc.max_offer_bytes", "must be 1024..=1048576");
        }
        if self.recording.dir.as_os_str().is_empty() {
            return bad("recording.dir", "must name a folder");
        }
        if !(1..=4096).contains(&self.recording.max_pending_mb) {
            return bad("recording.max_pending_mb", "must be 1..=4096");
        }
        let hook = &self.recording.webhook_url;
        if !(hook.is_empty() || hook.starts_with("http://") || hook.starts_with("https://")) {
            return bad(
                "recording.webhook_url",
                "must be an http:// or https:// URL, or empty",
            );
        }
        if !(1..=100).contains(&self.recording.webhook_max_attempts) {
            return bad("recording.webhook_max_attempts", "must be 1..=100");
        }
        if self.http.max_connections == 0 || self.http.max_per_address == 0 {
            return bad(
                "http.max_connections",
                "http.max_connections and http.max_per_address must be at least 1",
            );
        }
        if self.http.max_header_bytes < 8192 {
            return bad("http.max_header_bytes", "must be at least 8192");
        }
        if self.http.header_read_timeout_ms == 0 || self.http.idle_timeout_ms == 0 {
            return bad(
                "http.header_read_timeout_ms",
                "http.header_read_timeout_ms and http.idle_timeout_ms must be above 0",
            );
        }
        if self.http.idle_timeout_ms <= self.hls.block_timeout_ms {
            return bad(
                "http.idle_timeout_ms",
                "must be longer than hls.block_timeout_ms (a blocking playlist reload moves no byte while it waits)",
            );
        }
        let tls = &self.http.tls;
        if tls.cert.as_os_str().is_empty() != tls.key.as_os_str().is_empty() {
            return bad(
                "http.tls.cert",
                "set both http.tls.cert and http.tls.key, or neither",
            );
        }
        if tls.enabled() && tls.listen == self.http.listen && tls.listen.port() != 0 {
            return bad("http.tls.listen", "must differ from http.listen");
        }
        let public = &self.http.public_url;
        if !(public.is_empty() || public.starts_with("http://") || public.starts_with("https://")) {
            return bad(
                "http.public_url",
                "must be an http:// or https:// URL, or empty",
            );
        }
        if !(1000..=60_000).contains(&self.hls.block_timeout_ms) {
            return bad("hls.block_timeout_ms", "must be 1000..=60000");
        }
        if self.rtmp.max_message_bytes < 64 * 1024 || self.rtmp.max_message_bytes > 16 * 1024 * 1024
        {
            return bad("rtmp.max_message_bytes", "must be 65536..=16777216");
        }
        if !self.srt.passphrase.is_empty() && !(10..=79).contains(&self.srt.passphrase.len()) {
            return bad("srt.passphrase", "must be empty or 10..=79 characters");
        }
        if !(20..=10_000).contains(&self.srt.latency_ms) {
            return bad("srt.latency_ms", "must be 20..=10000");
        }
        if self.srt.max_connections == 0 {
            return bad("srt.max_connections", "must be at least 1");
        }
        if self.srt.max_per_address == 0 {
            return bad("srt.max_per_address", "must be at least 1");
        }
        if !(1000..=60_000).contains(&self.srt.idle_timeout_ms) {
            return bad("srt.idle_timeout_ms", "must be 1000..=60000");
        }
        if self.rtsp.step_timeout_ms < 500 || self.rtsp.stall_timeout_ms < 1000 {
            return bad(
                "rtsp.step_timeout_ms",
                "timeouts must be at least 500 ms (steps) and 1000 ms (stall)",
            );
        }
        if self.rtsp.min_backoff_ms == 0 || self.rtsp.max_backoff_ms < self.rtsp.min_backoff_ms {
            return bad(
                "rtsp.max_backoff_ms",
                "must be at least rtsp.min_backoff_ms, which must be above 0",
            );
        }
        for (i, c) in self.camera.iter().enumerate() {
            if !valid_name(&c.lecture) {
                return bad(
                    &format!("camera[{i}].lecture"),
                    "must be a valid stream name",
                );
            }
            if !(c.url.starts_with("rtsp://") || c.url.starts_with("rtsps://")) {
                return bad(&format!("camera[{i}].url"), "must be an rtsp:// URL");
            }
            if let Some(lang) = &c.language
                && !valid_language(lang)
            {
                return bad(&format!("camera[{i}].language"), "must be a BCP-47 tag");
            }
            if self.camera[..i].iter().any(|o| o.lecture == c.lecture) {
                return bad(&format!("camera[{i}].lecture"), "another camera feeds it");
            }
            if c.pull == PullMode::Scheduled
                && self
                    .lecture(&c.lecture)
                    .is_none_or(|l| l.starts_at.is_none())
            {
                return bad(
                    &format!("camera[{i}].pull"),
                    "scheduled needs a [[lecture]] of that name with starts_at",
                );
            }
        }
        if self.rtmp.max_connections == 0 {
            return bad("rtmp.max_connections", "must be at least 1");
        }
        if self.rtmp.max_per_address == 0 {
            return bad("rtmp.max_per_address", "must be at least 1");
        }
        if self.rtmp.handshake_timeout_ms < 100 || self.rtmp.idle_timeout_ms < 100 {
            return bad(
                "rtmp.handshake_timeout_ms",
                "timeouts must be at least 100 ms",
            );
        }
        if !valid_language(&self.lectures.default_language) {
            return bad(
                "lectures.default_language",
                "must be a BCP-47 tag such as cmn",
            );
        }
        if self.lectures.stalled_publisher_ms != 0
            && !(500..=600_000).contains(&self.lectures.stalled_publisher_ms)
        {
            return bad("lectures.stalled_publisher_ms", "must be 0 or 500..=600000");
        }
        if self.lectures.max_live == 0 {
            return bad("lectures.max_live", "must be at least 1");
        }
        for tag in self.dialects.keys() {
            if !valid_language(tag) {
                return bad(&format!("dialects.{tag}"), "key must be a BCP-47 tag");
            }
        }
        for (i, l) in self.lecture.iter().enumerate() {
            if !valid_name(&l.name) {
                return bad(
                    &format!("lecture[{i}].name"),
                    "must be 1-128 of A-Z a-z 0-9 . _ - and not start with .",
                );
            }
            if let Some(lang) = &l.language
                && !valid_language(lang)
            {
                return bad(&format!("lecture[{i}].language"), "must be a BCP-47 tag");
            }
            if let Some(p) = l.srt_passphrase.as_deref()
                && !p.is_empty()
                && !(10..=79).contains(&p.len())
            {
                return bad(
                    &format!("lecture[{i}].srt_passphrase"),
                    "must be empty or 10..=79 characters",
                );
            }
            if l.publish_key.as_deref().is_some_and(|k| k.len() < 8) {
                return bad(
                    &format!("lecture[{i}].publish_key"),
                    "must be at least 8 characters",
                );
            }
        }
        self.validate_catalogue()?;
        if self.demo.enabled {
            if !valid_name(&self.demo.name) {
                return bad("demo.name", "must be a valid stream name");
            }
            if !(16..=3840).contains(&self.demo.width) || !(16..=2160).contains(&self.demo.height) {
                return bad("demo.width", "picture must be 16x16..=3840x2160");
            }
            if !(1..=60).contains(&self.demo.fps) {
                return bad("demo.fps", "must be 1..=60");
            }
            if self.demo.keyframe_interval == 0 {
                return bad("demo.keyframe_interval", "must be at least 1");
            }
            if self.demo.tones.is_empty() {
                return bad("demo.tones", "needs at least one dialect");
            }
            for (tag, hz) in &self.demo.tones {
                if !valid_language(tag) {
                    return bad(&format!("demo.tones.{tag}"), "key must be a BCP-47 tag");
                }
                if !(20..=20_000).contains(hz) {
                    return bad(&format!("demo.tones.{tag}"), "must be 20..=20000 Hz");
                }
            }
        }
        Ok(())
    }

    fn validate_edge(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason,
            })
        };
        let e = &self.edge;
        for o in &e.origins {
            let ok = (o.starts_with("http://") || o.starts_with("https://"))
                && o.len() > "https://".len()
                && !o.contains(char::is_whitespace);
            if !ok {
                return bad(
                    "edge.origins",
                    format!("{o:?} is not an origin's address (http://host:port)"),
                );
            }
        }
        if e.is_edge() && e.key.len() < 16 {
            return bad(
                "edge.key",
                "an edge needs a key of at least 16 characters (its origin's edge.accept_keys)"
                    .into(),
            );
        }
        if let Some(k) = e.accept_keys.iter().find(|k| k.len() < 16) {
            return bad(
                "edge.accept_keys",
                format!("keys must be at least 16 characters ({} given)", k.len()),
            );
        }
        for name in &e.always {
            if name.is_empty()
                || name.len() > 128
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            {
                return bad("edge.always", format!("{name:?} is not a lecture name"));
            }
        }
        let code_ok = |c: &str| {
            (1..=32).contains(&c.len())
                && c.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-')
                })
        };
        if !e.site.is_empty() && !code_ok(&e.site) {
            return bad(
                "edge.site",
                format!("{:?}: use 1-32 of a-z 0-9 _ -", e.site),
            );
        }
        let mut codes = std::collections::HashSet::new();
        for site in &self.site {
            if !code_ok(&site.code) || !codes.insert(site.code.as_str()) {
                return bad(
                    "site.code",
                    format!("{:?}: use 1-32 of a-z 0-9 _ -, each code once", site.code),
                );
            }
        }
        if e.idle_stop_s == 0 || e.hold_s == 0 {
            return bad(
                "edge.idle_stop_s",
                "idle_stop_s and hold_s must be at least 1".into(),
            );
        }
        if !(500..=600_000).contains(&e.max_backoff_ms) {
            return bad("edge.max_backoff_ms", "must be 500..=600000".into());
        }
        Ok(())
    }

    fn validate_catalogue(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason: reason.into(),
            })
        };
        let c = &self.catalogue;
        let url = c.database_url.as_str();
        if !(url.is_empty() || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return bad(
                "catalogue.database_url",
                "must be empty or a postgres:// URL",
            );
        }
        if c.database_url.is_empty() && c.database_path.as_os_str().is_empty() {
            return bad(
                "catalogue.database_path",
                "must name a file when database_url is empty",
            );
        }
        if !(1..=100).contains(&c.max_connections) {
            return bad("catalogue.max_connections", "must be 1..=100");
        }
        if !matches!(c.sqlite_synchronous.as_str(), "full" | "normal") {
            return bad(
                "catalogue.sqlite_synchronous",
                "must be \"full\" or \"normal\"",
            );
        }
        if jiff::tz::TimeZone::get(&c.timezone).is_err() {
            return bad(
                "catalogue.timezone",
                "must be an IANA time zone such as Asia/Shanghai",
            );
        }
        let hook = c.webhook_url.as_str();
        if !(hook.is_empty() || hook.starts_with("http://") || hook.starts_with("https://")) {
            return bad(
                "catalogue.webhook_url",
                "must be empty or an http(s):// URL",
            );
        }
        if !(1..=100).contains(&c.webhook_max_attempts) {
            return bad("catalogue.webhook_max_attempts", "must be 1..=100");
        }
        if c.bookings_per_minute == 0 {
            return bad("catalogue.bookings_per_minute", "must be at least 1");
        }
        if !(1..=24 * 30).contains(&c.session_hours) {
            return bad("catalogue.session_hours", "must be 1..=720");
        }
        if c.login_attempts_per_address == 0 || c.login_attempts_per_account == 0 {
            return bad(
                "catalogue.login_attempts_per_address",
                "login attempts per address and per account must be at least 1",
            );
        }
        for (i, l) in self.lecture.iter().enumerate() {
            if let Some(v) = l.visibility.as_deref()
                && !matches!(v, "public" | "booking" | "private")
            {
                return bad(
                    &format!("lecture[{i}].visibility"),
                    "must be public, booking or private",
                );
            }
            if l.seats.is_some() && l.starts_at.is_none() {
                return bad(&format!("lecture[{i}].seats"), "needs starts_at");
            }
            if let (Some(s), Some(e)) = (l.starts_at, l.ends_at)
                && e <= s
            {
                return bad(&format!("lecture[{i}].ends_at"), "must be after starts_at");
            }
            if l.hall
                .as_deref()
                .is_some_and(|h| h.trim().is_empty() || h.len() > 200)
            {
                return bad(&format!("lecture[{i}].hall"), "must be 1-200 bytes");
            }
        }
        Ok(())
    }

    /// The SRT passphrase publishers of `lecture` must use, if any.
    pub fn srt_passphrase(&self, lecture: &str) -> Option<&str> {
        let p = self
            .lecture(lecture)
            .and_then(|l| l.srt_passphrase.as_deref())
            .unwrap_or(&self.srt.passphrase);
        (!p.is_empty()).then_some(p)
    }

    /// The configured lecture of that name.
    pub fn lecture(&self, name: &str) -> Option<&LectureConfig> {
        self.lecture.iter().find(|l| l.name == name)
    }

    /// Whether lecture `name` gets the smaller pictures of `[ladder]`.
    pub fn ladder_for(&self, name: &str) -> bool {
        !self.ladder.rungs.is_empty()
            && self
                .lecture(name)
                .and_then(|l| l.ladder)
                .unwrap_or(self.ladder.enabled)
    }

    /// Position of a dialect in the configured order (unknown ones after all known).
    pub fn dialect_rank(&self, tag: &str) -> usize {
        self.dialects.get_index_of(tag).unwrap_or(usize::MAX)
    }

    /// Display name of a dialect: the configured one, else the tag itself.
    pub fn dialect_name(&self, tag: &str) -> String {
        self.dialects
            .get(tag)
            .cloned()
            .unwrap_or_else(|| tag.to_string())
    }
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn valid_language(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let first = parts.next().unwrap_or("");
    tag.len() <= 35
        && (2..=3).contains(&first.len())
        && first.bytes().all(|b| b.is_ascii_alphabetic())
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> std::iter::Empty<(String, String)> {
        std::iter::empty()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_toml_str_with_env("", no_env()).unwrap();
        assert_eq!(c.http.listen.port(), 8080);
        assert_eq!(c.rtmp.listen.port(), 1935);
        assert_eq!(c.dialect_name("yue"), "粤语");
        assert_eq!(c.dialect_name("hak"), "客家话");
        assert_eq!(c.dialect_name("cmn"), "普通话");
        assert!(c.demo.enabled);
        assert_eq!(c.demo.tones.len(), 3);
        assert_eq!(
            c.demo.tones.keys().collect::<Vec<_>>(),
            ["cmn", "yue", "hak"]
        );
        assert_eq!(c.dialect_rank("yue"), 1);
        assert_eq!(c.lectures.grace_period_s, 30);
        assert_eq!(c.lectures.stalled_publisher_ms, 2000);
    }

    #[test]
    fn file_and_env_override() {
        let c = Config::from_toml_str_with_env(
            "[hls]\npart_target_ms = 300\n[[lecture]]\nname = \"xihe\"\ntitle = \"西和讲堂\"\npublish_key = \"s3cret-key\"\nstarts_at = \"2026-12-01T19:30:00+08:00\"\n",
            vec![
                ("JIANGTANG_HTTP_LISTEN".to_string(), "127.0.0.1:9999".to_string()),
                ("JIANGTANG_DEMO_ENABLED".to_string(), "false".to_string()),
                ("OTHER".to_string(), "x".to_string()),
            ]
            .into_iter(),
        )
        .unwrap();
        assert_eq!(c.hls.part_target_ms, 300);
        assert_eq!(c.hls.segment_target_ms, 2000);
        assert_eq!(c.http.listen.port(), 9999);
        assert!(!c.demo.enabled);
        assert_eq!(
            c.lecture("xihe").unwrap().title.as_deref(),
            Some("西和讲堂")
        );
    }

    #[test]
    fn errors_name_the_key() {
        let err = Config::from_toml_str_with_env("[hls]\npart_target_ms = 5\n", no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("hls.part_target_ms"), "{err}");
        let err = Config::from_toml_str_with_env(
            "[channel]\nping_interval_ms = 5000\nidle_timeout_ms = 5000\n",
            no_env(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("channel.idle_timeout_ms"), "{err}");
        let err = Config::from_toml_str_with_env("[hls]\nbogus = 1\n", no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
        let err = Config::from_toml_str_with_env("[[lecture]]\nname = \"../x\"\n", no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("lecture[0].name"), "{err}");
        let err = Config::from_toml_str_with_env("[dialects]\n\"x y\" = \"n\"\n", no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("dialects.x y"), "{err}");
    }

    #[test]
    fn catalogue_keys_are_checked() {
        let c = Config::from_toml_str_with_env("", no_env()).unwrap();
        assert!(c.catalogue.enabled);
        assert_eq!(c.catalogue.no_show_limit, 3);
        assert_eq!(c.catalogue.sqlite_synchronous, "full");
        let ok = "[[lecture]]\nname = \"x\"\nstarts_at = \"2026-12-01T19:30:00+08:00\"\nseats = 80\nhall = \"西和讲堂\"\ncategory = \"culture\"\nvisibility = \"booking\"\n";
        let c = Config::from_toml_str_with_env(ok, no_env()).unwrap();
        assert_eq!(c.lecture[0].seats, Some(80));
        for (toml, key) in [
            (
                "[[lecture]]\nname = \"x\"\nseats = 80\n",
                "lecture[0].seats",
            ),
            (
                "[[lecture]]\nname = \"x\"\nvisibility = \"secret\"\n",
                "lecture[0].visibility",
            ),
            (
                "[catalogue]\ndatabase_url = \"mysql://x\"\n",
                "catalogue.database_url",
            ),
            (
                "[catalogue]\nsqlite_synchronous = \"off\"\n",
                "catalogue.sqlite_synchronous",
            ),
            (
                "[catalogue]\ntimezone = \"Mars/Base\"\n",
                "catalogue.timezone",
            ),
            (
                "[catalogue]\nwebhook_url = \"ftp://x\"\n",
                "catalogue.webhook_url",
            ),
        ] {
            let err = Config::from_toml_str_with_env(toml, no_env())
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
    }

    #[test]
    fn http_edge_keys_are_checked() {
        let c = Config::from_toml_str_with_env("", no_env()).unwrap();
        assert!(!c.http.tls.enabled());
        assert_eq!(
            (c.http.max_connections, c.http.max_per_address),
            (20000, 256)
        );
        let c = Config::from_toml_str_with_env(
            "[http.tls]\ncert = \"a.pem\"\nkey = \"k.pem\"\n",
            no_env(),
        )
        .unwrap();
        assert!(c.http.tls.enabled());
        for (toml, key) in [
            ("[http.tls]\ncert = \"a.pem\"\n", "http.tls.cert"),
            (
                "[http]\nlisten = \"0.0.0.0:443\"\n[http.tls]\nlisten = \"0.0.0.0:443\"\ncert = \"a\"\nkey = \"b\"\n",
                "http.tls.listen",
            ),
            ("[http]\nmax_header_bytes = 4096\n", "http.max_header_bytes"),
            ("[http]\nmax_per_address = 0\n", "http.max_connections"),
            (
                "[http]\nidle_timeout_ms = 0\n",
                "http.header_read_timeout_ms",
            ),
            ("[http]\nidle_timeout_ms = 5000\n", "http.idle_timeout_ms"),
        ] {
            let err = Config::from_toml_str_with_env(toml, no_env())
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
    }

    #[test]
    fn dialect_tags_match_whatever_their_case() {
        let c = Config::from_toml_str_with_env("[dialects]\n\"zh-HK\" = \"港式粤语\"\n", no_env())
            .unwrap();
        assert_eq!(c.dialect_name("zh-hk"), "港式粤语");
    }

    #[test]
    fn edge_settings_are_checked() {
        let load = |t: &str| Config::from_toml_str_with_env(t, std::iter::empty());
        let c = load("[edge]\norigins = [\"http://10.0.0.1:8080\"]\nkey = \"0123456789abcdef\"\n")
            .unwrap();
        assert!(c.edge.is_edge());
        assert!(!load("").unwrap().edge.is_edge());
        for (bad, key) in [
            (
                "[edge]\norigins = [\"10.0.0.1:8080\"]\nkey = \"0123456789abcdef\"",
                "edge.origins",
            ),
            (
                "[edge]\norigins = [\"http://o:1\"]\nkey = \"short\"",
                "edge.key",
            ),
            ("[edge]\naccept_keys = [\"short\"]", "edge.accept_keys"),
            ("[edge]\nalways = [\"../x\"]", "edge.always"),
        ] {
            match load(bad) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
