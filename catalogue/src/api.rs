//! The `/api/v1` programme API: an axum [`Router`] the binary merges into its own, and the
//! OpenAPI document generated from these handlers (`/api/v1/openapi.json`).
//!
//! Reads and public bookings need no account (bookings and cancellations are rate-limited
//! per client address). Everything an operator does goes through the [`Operator`]
//! extractor: today the operator token from the configuration (or, with none set, a client
//! on this machine); operator accounts with sessions replace its inside later, not its
//! users.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tower_http::cors::{Any, CorsLayer};
use tracing::{error, info};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::model::*;
use crate::programme::LectureQuery;
use crate::{Catalogue, Error};

/// An error answered as JSON `{"error": "...", ...}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
    challenge: bool,
}

/// The body of every error.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// What went wrong.
    error: String,
}

impl ApiError {
    /// An error with a status and a message for the client.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: json!({ "error": message.into() }),
            challenge: false,
        }
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::Db(sqlx::Error::PoolTimedOut) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Db(_) | Error::Migrate(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            // Details stay in the log.
            error!("catalogue: {e}");
            return ApiError::new(status, "the catalogue's database failed; try again");
        }
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body)).into_response();
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.challenge {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// `Json` whose rejections are [`ApiError`]s.
pub struct J<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for J<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(J(v)),
            // A body over the limit says so (413), rather than looking like bad JSON.
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the body is larger than 64 KiB",
            )),
            Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, e.body_text())),
        }
    }
}

/// `Path` whose rejections are [`ApiError`]s.
pub struct P<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for P<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(P(v)),
            Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, e.body_text())),
        }
    }
}

/// `Query` whose rejections are [`ApiError`]s.
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Q(v)),
            Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, e.body_text())),
        }
    }
}

fn peer(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// An operator's request. Every write an operator makes (halls, lectures, series,
/// check-in, exports, keys) takes this extractor, so how operators are recognised lives in
/// one place: the operator token as a bearer token (scripts), a console session cookie
/// (with its CSRF token in `X-CSRF-Token` on anything but GET and HEAD), or, while no
/// operator token is set and no operator account exists, a client on this machine (not a
/// reverse proxy on it: [`media::admission::from_this_machine`]).
#[derive(Debug, Clone)]
pub struct Operator {
    /// The logged-in operator, when it came with a session (not the token).
    pub session: Option<crate::accounts::Session>,
}

/// Why a request is not an operator's.
enum NotOperator {
    Unauthenticated,
    Csrf,
    Db(Error),
}

impl Operator {
    async fn check(parts: &Parts, c: &Catalogue) -> Result<Operator, NotOperator> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let token = &c.settings().operator_token;
        if !token.is_empty()
            && bearer.is_some_and(|b| bool::from(b.as_bytes().ct_eq(token.as_bytes())))
        {
            return Ok(Operator { session: None });
        }
        if let Some(cookie) = crate::accounts::session_cookie(&parts.headers)
            && let Some(session) = c.session(&cookie).await.map_err(NotOperator::Db)?
        {
            {
                let safe = parts.method == axum::http::Method::GET
                    || parts.method == axum::http::Method::HEAD;
                let presented = parts
                    .headers
                    .get("x-csrf-token")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !safe && !crate::accounts::csrf_matches(&session, presented) {
                    return Err(NotOperator::Csrf);
                }
                return Ok(Operator {
                    session: Some(session),
                });
            }
        }
        if token.is_empty()
            && media::admission::from_this_machine(peer(parts), |h| parts.headers.contains_key(h))
            && !c.has_operators().await.map_err(NotOperator::Db)?
        {
            return Ok(Operator { session: None });
        }
        Err(NotOperator::Unauthenticated)
    }
}

impl FromRequestParts<Catalogue> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, c: &Catalogue) -> Result<Self, ApiError> {
        match Operator::check(parts, c).await {
            Ok(op) => Ok(op),
            Err(NotOperator::Db(e)) => Err(e.into()),
            Err(NotOperator::Csrf) => {
                info!(path = %parts.uri.path(), "catalogue: operator request without its CSRF token");
                Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "a console session's changes need its CSRF token (X-CSRF-Token)",
                ))
            }
            Err(NotOperator::Unauthenticated) => {
                info!(path = %parts.uri.path(), "catalogue: operator request refused");
                let mut e = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "this needs an operator: log in at /admin, or send the operator token as a bearer token",
                );
                e.challenge = true;
                Err(e)
            }
        }
    }
}

/// Whether the request is an operator's, for handlers open to all that show operators more.
pub struct MaybeOperator(bool);

impl FromRequestParts<Catalogue> for MaybeOperator {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        c: &Catalogue,
    ) -> Result<Self, std::convert::Infallible> {
        Ok(MaybeOperator(Operator::check(parts, c).await.is_ok()))
    }
}

/// The client's address, for rate limits.
pub struct ClientAddr(IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _: &S,
    ) -> Result<Self, std::convert::Infallible> {
        Ok(ClientAddr(
            peer(parts).unwrap_or(IpAddr::from([0, 0, 0, 0])),
        ))
    }
}

/// Token buckets per client address (or another key: an account's name): `per_minute`
/// requests a minute, in bursts of as many.
pub struct RateLimiter<K = IpAddr> {
    per_minute: f64,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: std::hash::Hash + Eq> RateLimiter<K> {
    /// Most entries kept; beyond it full buckets are forgotten.
    const MAX_ENTRIES: usize = 10_000;

    /// A limiter allowing `per_minute` requests a minute per address.
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute: f64::from(per_minute.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Requests allowed per minute.
    pub fn per_minute(&self) -> u32 {
        self.per_minute as u32
    }

    /// Takes one request from `ip`'s bucket; false when it is empty.
    pub fn take(&self, ip: K, now: Instant) -> bool {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let rate = self.per_minute / 60.0;
        if map.len() >= Self::MAX_ENTRIES {
            let cap = self.per_minute;
            map.retain(|_, (tokens, last)| {
                *tokens + now.duration_since(*last).as_secs_f64() * rate < cap
            });
        }
        let (tokens, last) = map.entry(ip).or_insert((self.per_minute, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(self.per_minute);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Catalogue {
    /// Takes one booking or cancellation from `ip`'s allowance (`bookings_per_minute`);
    /// false when it is used up. The pages' booking forms share it with the API.
    pub fn booking_allowed(&self, ip: IpAddr) -> bool {
        if self.inner.limiter.take(ip, Instant::now()) {
            return true;
        }
        media::limits::hit(media::limits::Limit::Bookings);
        // One line per address and minute at most: a flood must not flood the log.
        if self.inner.refusals_logged.take(ip, Instant::now()) {
            tracing::warn!(remote = %ip, "bookings refused: more than {} a minute from this address (catalogue.bookings_per_minute)", self.inner.limiter.per_minute());
        }
        false
    }
}

fn limited(c: &Catalogue, ip: IpAddr) -> Result<(), ApiError> {
    if c.booking_allowed(ip) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many bookings from this address; wait a minute",
        ))
    }
}

fn no_cache(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn json<T: serde::Serialize>(v: T) -> Response {
    no_cache(axum::Json(v).into_response())
}

fn typed(content_type: &'static str, body: String) -> Response {
    no_cache(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// Filters of `GET /api/v1/lectures`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Lectures ending at or after this time (RFC 3339; default now).
    #[param(value_type = Option<String>)]
    from: Option<jiff::Timestamp>,
    /// Lectures starting before this time.
    #[param(value_type = Option<String>)]
    to: Option<jiff::Timestamp>,
    /// Category slug (`culture`).
    category: Option<String>,
    /// Hall id.
    hall: Option<i64>,
    /// Town of the hall.
    town: Option<String>,
    /// At most this many (default 100, at most 1000).
    limit: Option<i64>,
    /// Skip this many.
    offset: Option<i64>,
    /// Private lectures too (operators only).
    #[serde(default)]
    include_private: bool,
}

/// A list of lectures.
#[derive(serde::Serialize, ToSchema)]
struct LectureList {
    lectures: Vec<Lecture>,
}

/// `GET /api/v1/lectures`: occurrences from now on (or `from`), in time order.
#[utoipa::path(get, path = "/api/v1/lectures", tag = "lectures", params(ListQuery),
    responses((status = 200, body = LectureList), (status = 400, body = ErrorBody)))]
async fn list_lectures(
    State(c): State<Catalogue>,
    op: MaybeOperator,
    Q(q): Q<ListQuery>,
) -> Result<Response, ApiError> {
    let lectures = c
        .lectures(&LectureQuery {
            from: q.from,
            to: q.to,
            category: q.category,
            hall_id: q.hall,
            town: q.town,
            include_private: q.include_private && op.0,
            limit: q.limit,
            offset: q.offset,
        })
        .await?;
    Ok(json(LectureList { lectures }))
}

/// `GET /api/v1/lectures/{id}`.
#[utoipa::path(get, path = "/api/v1/lectures/{id}", tag = "lectures",
    params(("id" = i64, Path, description = "occurrence id")),
    responses((status = 200, body = Lecture), (status = 404, body = ErrorBody)))]
async fn get_lecture(
    State(c): State<Catalogue>,
    op: MaybeOperator,
    P(id): P<i64>,
) -> Result<Response, ApiError> {
    let l = c.lecture(id).await?;
    if l.visibility == Visibility::Private && !op.0 {
        return Err(Error::NotFound(format!("no lecture {id}")).into());
    }
    Ok(json(l))
}

/// `POST /api/v1/lectures` (operators): one occurrence.
#[utoipa::path(post, path = "/api/v1/lectures", tag = "lectures", request_body = LectureInput,
    security(("operator" = [])),
    responses((status = 201, body = Lecture), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_lecture(
    State(c): State<Catalogue>,
    _: Operator,
    J(input): J<LectureInput>,
) -> Result<Response, ApiError> {
    let l = c.create_lecture(&input).await?;
    Ok((StatusCode::CREATED, json(l)).into_response())
}

/// `PATCH /api/v1/lectures/{id}` (operators): edit, move (bookings follow), change seats.
#[utoipa::path(patch, path = "/api/v1/lectures/{id}", tag = "lectures", request_body = LecturePatch,
    security(("operator" = [])), params(("id" = i64, Path, description = "occurrence id")),
    responses((status = 200, body = Lecture), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn update_lecture(
    State(c): State<Catalogue>,
    _: Operator,
    P(id): P<i64>,
    J(patch): J<LecturePatch>,
) -> Result<Response, ApiError> {
    Ok(json(c.update_lecture(id, &patch).await?))
}

/// `POST /api/v1/lectures/{id}/cancel` (operators): call the occurrence off.
#[utoipa::path(post, path = "/api/v1/lectures/{id}/cancel", tag = "lectures",
    security(("operator" = [])), params(("id" = i64, Path, description = "occurrence id")),
    responses((status = 200, body = Lecture), (status = 404, body = ErrorBody)))]
async fn cancel_lecture(
    State(c): State<Catalogue>,
    _: Operator,
    P(id): P<i64>,
) -> Result<Response, ApiError> {
    Ok(json(c.cancel_lecture(id).await?))
}

/// The answer when the seats are gone: the booking waits.
#[derive(serde::Serialize, ToSchema)]
struct WaitingAnswer {
    /// Why.
    error: String,
    /// Place on the waiting list.
    waiting_list_place: Option<i64>,
    /// The waiting booking (its ticket code becomes valid if a seat frees).
    booking: Booking,
}

/// `POST /api/v1/lectures/{id}/bookings`: book a seat or an online place. 201 with the
/// ticket; 409 with the waiting-list place when the seats are gone. Repeat with the same
/// `Idempotency-Key` to get the same booking back.
#[utoipa::path(post, path = "/api/v1/lectures/{id}/bookings", tag = "bookings",
    request_body = BookingRequest,
    params(("id" = i64, Path, description = "occurrence id"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes retries safe: the same key gives the same booking")),
    responses((status = 201, body = Booking, description = "booked"),
        (status = 409, body = WaitingAnswer, description = "full: on the waiting list (or another conflict, with only `error`)"),
        (status = 403, body = ErrorBody, description = "blocked by the no-show rule"),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn book(
    State(c): State<Catalogue>,
    ClientAddr(ip): ClientAddr,
    P(id): P<i64>,
    headers: HeaderMap,
    J(req): J<BookingRequest>,
) -> Result<Response, ApiError> {
    limited(&c, ip)?;
    let key = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError::new(StatusCode::BAD_REQUEST, "Idempotency-Key must be ASCII")
            })
        })
        .transpose()?;
    let outcome = c.book(id, &req, key).await?;
    let b = outcome.booking;
    let location = HeaderValue::try_from(format!("/api/v1/bookings/{}", b.ticket_code))
        .unwrap_or(HeaderValue::from_static("/api/v1/bookings"));
    let mut r = if b.status == BookingStatus::Waiting {
        let place = b.waiting_list_place;
        (
            StatusCode::CONFLICT,
            json(WaitingAnswer {
                error: "the seats are all booked: you are on the waiting list".into(),
                waiting_list_place: place,
                booking: b,
            }),
        )
            .into_response()
    } else {
        (StatusCode::CREATED, json(b)).into_response()
    };
    r.headers_mut().insert(header::LOCATION, location);
    if !outcome.created {
        r.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(r)
}

/// `GET /api/v1/lectures/{id}/bookings` (operators): every booking, in booking order.
#[utoipa::path(get, path = "/api/v1/lectures/{id}/bookings", tag = "bookings",
    security(("operator" = [])), params(("id" = i64, Path, description = "occurrence id")),
    responses((status = 200, body = Vec<Booking>), (status = 404, body = ErrorBody)))]
async fn lecture_bookings(
    State(c): State<Catalogue>,
    _: Operator,
    P(id): P<i64>,
) -> Result<Response, ApiError> {
    Ok(json(json!({ "bookings": c.lecture_bookings(id).await? })))
}

/// `GET /api/v1/bookings/{code}`: a booking by its ticket code (the code is the secret).
#[utoipa::path(get, path = "/api/v1/bookings/{code}", tag = "bookings",
    params(("code" = String, Path, description = "ticket code")),
    responses((status = 200, body = Booking), (status = 404, body = ErrorBody)))]
async fn get_booking(State(c): State<Catalogue>, P(code): P<String>) -> Result<Response, ApiError> {
    Ok(json(c.booking(&code).await?))
}

/// `DELETE /api/v1/bookings/{code}`: cancel (seats until the deadline; operators always).
/// A freed seat goes to the first on the waiting list.
#[utoipa::path(delete, path = "/api/v1/bookings/{code}", tag = "bookings",
    params(("code" = String, Path, description = "ticket code")),
    responses((status = 200, body = Booking, description = "cancelled"),
        (status = 409, body = ErrorBody, description = "past the cancellation deadline"),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn cancel_booking(
    State(c): State<Catalogue>,
    op: MaybeOperator,
    ClientAddr(ip): ClientAddr,
    P(code): P<String>,
) -> Result<Response, ApiError> {
    if !op.0 {
        limited(&c, ip)?;
    }
    Ok(json(c.cancel_booking(&code, op.0).await?))
}

/// `POST /api/v1/lectures/{id}/checkins` (hall staff): check a ticket at the door.
#[utoipa::path(post, path = "/api/v1/lectures/{id}/checkins", tag = "check-in",
    security(("operator" = [])), request_body = CheckinRequest,
    params(("id" = i64, Path, description = "occurrence id")),
    responses((status = 200, body = Checkin), (status = 404, body = ErrorBody)))]
async fn check_in(
    State(c): State<Catalogue>,
    _: Operator,
    P(id): P<i64>,
    J(req): J<CheckinRequest>,
) -> Result<Response, ApiError> {
    Ok(json(c.check_in(id, &req.code).await?))
}

/// `GET /api/v1/lectures/{id}/attendance.csv` (operators).
#[utoipa::path(get, path = "/api/v1/lectures/{id}/attendance.csv", tag = "check-in",
    security(("operator" = [])), params(("id" = i64, Path, description = "occurrence id")),
    responses((status = 200, content_type = "text/csv", body = String), (status = 404, body = ErrorBody)))]
async fn attendance(
    State(c): State<Catalogue>,
    _: Operator,
    P(id): P<i64>,
) -> Result<Response, ApiError> {
    let csv = c.attendance_csv(id).await?;
    let mut r = typed("text/csv; charset=utf-8", csv);
    if let Ok(v) = HeaderValue::try_from(format!("attachment; filename=\"attendance-{id}.csv\"")) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

/// How long a token should work.
#[derive(Debug, Deserialize, ToSchema)]
struct TokenRequest {
    /// Hours from now (1..=8784).
    hours: i64,
}

/// `POST /api/v1/lectures/{id}/playback-tokens` (operators): a token to watch a lecture
/// that needs one (for a school's own lesson).
#[utoipa::path(post, path = "/api/v1/lectures/{id}/playback-tokens", tag = "lectures",
    security(("operator" = [])), request_body = TokenRequest,
    params(("id" = i64, Path, description = "occurrence id")),
    responses((status = 201, body = PlaybackToken), (status = 404, body = ErrorBody)))]
async fn playback_token(
    State(c): State<Catalogue>,
    _: Operator,
    P(id): P<i64>,
    J(req): J<TokenRequest>,
) -> Result<Response, ApiError> {
    let t = c.playback_token(id, req.hours).await?;
    Ok((StatusCode::CREATED, json(t)).into_response())
}

/// `GET /api/v1/halls`.
#[utoipa::path(get, path = "/api/v1/halls", tag = "halls", responses((status = 200, body = Vec<Hall>)))]
async fn list_halls(State(c): State<Catalogue>) -> Result<Response, ApiError> {
    Ok(json(json!({ "halls": c.halls().await? })))
}

/// `GET /api/v1/halls/{id}`.
#[utoipa::path(get, path = "/api/v1/halls/{id}", tag = "halls",
    params(("id" = i64, Path, description = "hall id")),
    responses((status = 200, body = Hall), (status = 404, body = ErrorBody)))]
async fn get_hall(State(c): State<Catalogue>, P(id): P<i64>) -> Result<Response, ApiError> {
    Ok(json(c.hall(id).await?))
}

/// `POST /api/v1/halls` (operators).
#[utoipa::path(post, path = "/api/v1/halls", tag = "halls", request_body = HallInput,
    security(("operator" = [])),
    responses((status = 201, body = Hall), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_hall(
    State(c): State<Catalogue>,
    _: Operator,
    J(input): J<HallInput>,
) -> Result<Response, ApiError> {
    Ok((StatusCode::CREATED, json(c.create_hall(&input).await?)).into_response())
}

/// `PATCH /api/v1/halls/{id}` (operators).
#[utoipa::path(patch, path = "/api/v1/halls/{id}", tag = "halls", request_body = HallInput,
    security(("operator" = [])), params(("id" = i64, Path, description = "hall id")),
    responses((status = 200, body = Hall), (status = 404, body = ErrorBody)))]
async fn update_hall(
    State(c): State<Catalogue>,
    _: Operator,
    P(id): P<i64>,
    J(input): J<HallInput>,
) -> Result<Response, ApiError> {
    Ok(json(c.update_hall(id, &input).await?))
}

/// `GET /api/v1/halls/{id}/calendar.ics`: the hall's lectures as iCalendar.
#[utoipa::path(get, path = "/api/v1/halls/{id}/calendar.ics", tag = "calendars",
    params(("id" = i64, Path, description = "hall id")),
    responses((status = 200, content_type = "text/calendar", body = String), (status = 404, body = ErrorBody)))]
async fn hall_calendar(State(c): State<Catalogue>, P(id): P<i64>) -> Result<Response, ApiError> {
    Ok(typed(
        "text/calendar; charset=utf-8",
        c.hall_calendar(id).await?,
    ))
}

/// `GET /api/v1/categories`: the district's five.
#[utoipa::path(get, path = "/api/v1/categories", tag = "categories",
    responses((status = 200, body = Vec<Category>)))]
async fn list_categories(State(c): State<Catalogue>) -> Result<Response, ApiError> {
    Ok(json(json!({ "categories": c.categories().await? })))
}

/// `GET /api/v1/categories/{slug}/calendar.ics`: a category's lectures as iCalendar.
#[utoipa::path(get, path = "/api/v1/categories/{slug}/calendar.ics", tag = "calendars",
    params(("slug" = String, Path, description = "category slug")),
    responses((status = 200, content_type = "text/calendar", body = String), (status = 404, body = ErrorBody)))]
async fn category_calendar(
    State(c): State<Catalogue>,
    P(slug): P<String>,
) -> Result<Response, ApiError> {
    Ok(typed(
        "text/calendar; charset=utf-8",
        c.category_calendar(&slug).await?,
    ))
}

/// `GET /api/v1/calendar/{token}.ics`: one person's bookings with alarms (the link is in
/// each booking's `calendar_url`).
#[utoipa::path(get, path = "/api/v1/calendar/{file}", tag = "calendars",
    params(("file" = String, Path, description = "TOKEN.ics from calendar_url")),
    responses((status = 200, content_type = "text/calendar", body = String), (status = 404, body = ErrorBody)))]
async fn person_calendar(
    State(c): State<Catalogue>,
    P(file): P<String>,
) -> Result<Response, ApiError> {
    let token = file.strip_suffix(".ics").unwrap_or(&file);
    Ok(typed(
        "text/calendar; charset=utf-8",
        c.person_calendar(token).await?,
    ))
}

/// `GET /api/v1/series`.
#[utoipa::path(get, path = "/api/v1/series", tag = "series", responses((status = 200, body = Vec<Series>)))]
async fn list_series(State(c): State<Catalogue>) -> Result<Response, ApiError> {
    Ok(json(json!({ "series": c.series_list().await? })))
}

/// `GET /api/v1/series/{id}`.
#[utoipa::path(get, path = "/api/v1/series/{id}", tag = "series",
    params(("id" = i64, Path, description = "series id")),
    responses((status = 200, body = Series), (status = 404, body = ErrorBody)))]
async fn get_series(State(c): State<Catalogue>, P(id): P<i64>) -> Result<Response, ApiError> {
    Ok(json(c.series(id).await?))
}

/// `POST /api/v1/series` (operators): a weekly series and its occurrences.
#[utoipa::path(post, path = "/api/v1/series", tag = "series", request_body = SeriesInput,
    security(("operator" = [])),
    responses((status = 201, body = Series), (status = 422, body = ErrorBody)))]
async fn create_series(
    State(c): State<Catalogue>,
    _: Operator,
    J(input): J<SeriesInput>,
) -> Result<Response, ApiError> {
    Ok((StatusCode::CREATED, json(c.create_series(&input).await?)).into_response())
}

/// `PATCH /api/v1/series/{id}` (operators).
#[utoipa::path(patch, path = "/api/v1/series/{id}", tag = "series", request_body = SeriesPatch,
    security(("operator" = [])), params(("id" = i64, Path, description = "series id")),
    responses((status = 200, body = Series), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn update_series(
    State(c): State<Catalogue>,
    _: Operator,
    P(id): P<i64>,
    J(patch): J<SeriesPatch>,
) -> Result<Response, ApiError> {
    Ok(json(c.update_series(id, &patch).await?))
}

/// `GET /api/v1/stream-keys/{stream}` (operators): the key to give OBS.
#[utoipa::path(get, path = "/api/v1/stream-keys/{stream}", tag = "streams",
    security(("operator" = [])), params(("stream" = String, Path, description = "stream name")),
    responses((status = 200, body = StreamKey), (status = 404, body = ErrorBody)))]
async fn get_stream_key(
    State(c): State<Catalogue>,
    _: Operator,
    P(stream): P<String>,
) -> Result<Response, ApiError> {
    Ok(json(c.stream_key(&stream).await?))
}

/// `POST /api/v1/stream-keys/{stream}/rotate` (operators): a new key; the live publisher
/// stays on.
#[utoipa::path(post, path = "/api/v1/stream-keys/{stream}/rotate", tag = "streams",
    security(("operator" = [])), params(("stream" = String, Path, description = "stream name")),
    responses((status = 200, body = StreamKey), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn rotate_stream_key(
    State(c): State<Catalogue>,
    _: Operator,
    P(stream): P<String>,
) -> Result<Response, ApiError> {
    Ok(json(c.rotate_key(&stream).await?))
}

/// `POST /api/v1/people/{person}/forgive` (operators): lift the no-show block.
#[utoipa::path(post, path = "/api/v1/people/{person}/forgive", tag = "bookings",
    security(("operator" = [])), params(("person" = String, Path, description = "the person's identifier")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn forgive(
    State(c): State<Catalogue>,
    _: Operator,
    P(person): P<String>,
) -> Result<Response, ApiError> {
    c.forgive(&person).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "operator",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("the operator token (http.operator_token); the console's session cookie works too, with X-CSRF-Token on changes"))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "jiangtang programme API", description = "Halls, lectures, weekly series, bookings with a waiting list, check-in and calendars."),
    modifiers(&SecuritySchemes)
)]
struct ApiDoc;

fn parts() -> (Router<Catalogue>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_lectures, create_lecture))
        .routes(routes!(get_lecture, update_lecture))
        .routes(routes!(cancel_lecture))
        .routes(routes!(book, lecture_bookings))
        .routes(routes!(check_in))
        .routes(routes!(attendance))
        .routes(routes!(playback_token))
        .routes(routes!(get_booking, cancel_booking))
        .routes(routes!(list_halls, create_hall))
        .routes(routes!(get_hall, update_hall))
        .routes(routes!(hall_calendar))
        .routes(routes!(list_categories))
        .routes(routes!(category_calendar))
        .routes(routes!(person_calendar))
        .routes(routes!(list_series, create_series))
        .routes(routes!(get_series, update_series))
        .routes(routes!(get_stream_key))
        .routes(routes!(rotate_stream_key))
        .routes(routes!(forgive))
        .split_for_parts()
}

/// The OpenAPI document of the programme API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    parts().1
}

impl Catalogue {
    /// The `/api/v1` programme routes and `/api/v1/openapi.json`, ready to merge.
    pub fn router(&self) -> Router {
        let (router, doc) = parts();
        let doc = doc.to_json().unwrap_or_else(|_| "{}".into());
        let cors = CorsLayer::new()
            .allow_origin(Any)
            .allow_methods([
                axum::http::Method::GET,
                axum::http::Method::HEAD,
                axum::http::Method::POST,
                axum::http::Method::PATCH,
                axum::http::Method::DELETE,
            ])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::HeaderName::from_static("idempotency-key"),
                header::HeaderName::from_static("x-csrf-token"),
            ])
            .max_age(Duration::from_secs(600));
        router
            .route(
                "/api/v1/openapi.json",
                axum::routing::get(move || {
                    let doc = doc.clone();
                    async move { typed("application/json", doc) }
                }),
            )
            .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
            // A declared Content-Length over the limit is refused before any body is awaited.
            .layer(tower_http::limit::RequestBodyLimitLayer::new(64 * 1024))
            .layer(cors)
            .with_state(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_refills() {
        let l = RateLimiter::new(2);
        let ip = IpAddr::from([192, 0, 2, 1]);
        let t = Instant::now();
        assert!(l.take(ip, t) && l.take(ip, t));
        assert!(!l.take(ip, t));
        assert!(l.take(IpAddr::from([192, 0, 2, 2]), t), "per address");
        assert!(l.take(ip, t + Duration::from_secs(31)));
    }

    #[test]
    fn openapi_lists_the_booking_endpoint() {
        let doc = openapi().to_json().unwrap();
        assert!(doc.contains("/api/v1/lectures/{id}/bookings"), "{doc}");
        assert!(doc.contains("\"operator\""));
    }
}
