//! WebRTC ingest over WHIP (RFC 9725): `POST /whip/STREAM` with an SDP offer and
//! `Authorization: Bearer KEY`.
//!
//! - Without `?lang=`: the lecture's publisher (OBS 30+, a browser): H.264 video and Opus
//!   audio; the audio is transcoded once to AAC for HLS.
//! - With `?lang=yue`: an interpreter adding that dialect to a lecture already live (audio
//!   only); its voice is placed on the lecture's timeline by arrival ([`crate::align`]).
//! - With `?ask=ID`: a class the operator invited to speak back, with the invitation's
//!   token; its media goes to the operator alone until put on air ([`crate::ask`]).
//!
//! Publishers share the WHEP engine and its UDP port; the session resource
//! (`/whip/STREAM/ID`) takes `DELETE`, `PATCH` (trickle ICE) and `GET`, as WHEP's does.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use media::sink::{Publish, PublishError, PublishRequest};
use serde::Deserialize;
use tracing::{info, warn};

use super::engine::{Command, NewPublisher};
use super::{Whep, codecs, content_type_is, h264_mode1_negotiated, negotiated};
use crate::http::ApiError;
use crate::hub::ContributeError;

/// `?lang=` of a WHIP offer.
#[derive(Deserialize)]
pub(super) struct WhipQuery {
    lang: Option<String>,
    ask: Option<u64>,
}

fn unauthorized(message: String) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message)
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
}

/// `POST /whip/STREAM[?lang=TAG]`
pub(super) async fn offer(
    State(w): State<Arc<Whep>>,
    Path(stream): Path<String>,
    Query(q): Query<WhipQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match answer_offer(&w, &stream, q, &headers, &body).await {
        Ok(r) => r,
        Err(e) => {
            warn!(lecture = %stream, status = e.status().as_u16(), "WHIP offer refused: {}", e.message());
            let mut r = e.into_response();
            if r.status() == StatusCode::UNAUTHORIZED {
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            r
        }
    }
}

async fn answer_offer(
    w: &Arc<Whep>,
    stream: &str,
    q: WhipQuery,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    if !media::sink::valid_stream_name(stream) {
        return Err(ApiError::not_found(format!("no lecture {stream:?}")));
    }
    if !content_type_is(headers, "application/sdp") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a WHIP offer is Content-Type: application/sdp",
        ));
    }
    let language = q
        .lang
        .as_deref()
        .map(media::Language::parse)
        .transpose()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let config = w.hub.config();
    if w.publishers() >= config.webrtc.max_publishers as u64 {
        media::limits::hit(media::limits::Limit::WhipPublishers);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many WebRTC publishers; publish over RTMP or SRT",
        ));
    }
    let offer = super::parse_offer(body)?;
    let picked = w.pick();
    // Ingress statistics once a second: the input's health in the API.
    let mut rtc = picked.new_rtc(codecs().set_stats_interval(Some(Duration::from_secs(1))))?;
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("offer not acceptable: {e}"),
            )
        })?
        .to_sdp_string();
    let answer = super::candidates_in_bundle(&answer);
    let has_video = h264_mode1_negotiated(&answer);
    let has_audio = negotiated(&answer, "opus/48000");
    let request = PublishRequest {
        stream: stream.to_string(),
        key: bearer(headers),
        language: language.clone(),
        protocol: "whip",
        remote: None,
    };
    // As for viewers: room in the queue first, so nothing waits between count and handover.
    let permit = super::reserve(&picked).await?;
    // Counted here, so that back-to-back offers see each other; before the lecture is
    // touched, so that a refused offer changes nothing.
    if !w.stats.publishers_started.inc_within(
        &w.stats.publishers_ended,
        config.webrtc.max_publishers as u64,
    ) {
        media::limits::hit(media::limits::Limit::WhipPublishers);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many WebRTC publishers; publish over RTMP or SRT",
        ));
    }
    let joined = match q.ask {
        Some(_) if !has_video && !has_audio => Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "the offer has neither H.264 (packetization-mode 1) video nor Opus audio to send",
        )),
        Some(id) if language.is_none() => {
            crate::ask::connect(&w.hub, stream, id, request.key.as_deref()).map(|s| (s, None))
        }
        Some(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "a class speaking back sends no ?lang=",
        )),
        None => join(w, stream, request, &language, has_video, has_audio),
    };
    let (sink, interpreter) = match joined {
        Ok(x) => x,
        Err(e) => {
            w.stats.publishers_ended.inc();
            return Err(e);
        }
    };
    let id = picked.session_id();
    picked.send(
        permit,
        Command::AddPublisher(Box::new(NewPublisher {
            id: id.clone(),
            rtc,
            stream: stream.to_string(),
            sink,
            interpreter,
            keyframe_every: Duration::from_millis(config.hls.segment_target_ms),
        })),
    );
    Ok(super::created(answer, &format!("/whip/{stream}/{id}"), &id))
}

/// Where a WHIP session's media goes, and for an interpreter the lecture it joins.
type Joined = (
    Box<dyn media::sink::MediaSink>,
    Option<Arc<crate::hub::Lecture>>,
);

/// The publisher's (or the interpreter's) place in the lecture.
fn join(
    w: &Whep,
    stream: &str,
    request: PublishRequest,
    language: &Option<media::Language>,
    has_video: bool,
    has_audio: bool,
) -> Result<Joined, ApiError> {
    Ok(match language {
        Some(lang) => {
            if !has_audio {
                return Err(ApiError::new(
                    StatusCode::NOT_ACCEPTABLE,
                    "an interpreter sends Opus audio; the offer has none",
                ));
            }
            let sink = w.hub.contribute(request).map_err(|e| match e {
                ContributeError::Unauthorized(_) => unauthorized(e.to_string()),
                ContributeError::NotLive(_) | ContributeError::DialectTaken(..) => {
                    ApiError::new(StatusCode::CONFLICT, e.to_string())
                }
                ContributeError::TooManyTracks => {
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
                }
            })?;
            let lecture = w.hub.lecture(stream).ok_or_else(|| {
                ApiError::new(StatusCode::CONFLICT, format!("lecture {stream} has ended"))
            })?;
            info!(lecture = %stream, dialect = %lang, "WHIP interpreter offered");
            (sink, Some(lecture))
        }
        None => {
            if !has_video && !has_audio {
                return Err(ApiError::new(
                    StatusCode::NOT_ACCEPTABLE,
                    "the offer has neither H.264 (packetization-mode 1) video nor Opus audio to send",
                ));
            }
            let sink = w.hub.publish(request).map_err(|e| match e {
                PublishError::Unauthorized(_) => {
                    unauthorized(format!("{e}: send it as Authorization: Bearer KEY"))
                }
                PublishError::AlreadyPublishing(_) => {
                    ApiError::new(StatusCode::CONFLICT, e.to_string())
                }
                PublishError::UnknownLecture(_) => ApiError::not_found(e.to_string()),
                PublishError::TooManyLectures => {
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                }
            })?;
            info!(lecture = %stream, video = has_video, audio = has_audio, "WHIP publisher offered");
            (sink, None)
        }
    })
}
