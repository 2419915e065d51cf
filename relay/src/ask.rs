//! Ask back (点名, roll call in 1 + X): a class that raised its hand is invited by the main
//! hall's operator to speak, sends its camera and microphone over WHIP, is seen and heard in
//! the console, and may be put on air for everyone, one site at a time.
//!
//! Quiet by default: a class's media goes into a *feed*, a lecture of its own outside the
//! hub's map ([`Hub::new_feed`]) that nothing lists, records or serves except the operator's
//! preview (`POST /whep/NAME/ask/ID`). Only on air do its frames enter the lecture:
//!
//! - An injector task follows the feed's taps and puts its picture (and its sound, in place
//!   of the lecture's default dialect) into the lecture's own renditions, on the lecture's
//!   timeline: feed time plus one offset fixed at its first keyframe (never before what the
//!   lecture already has), so picture and sound stay together. The packager starts a new
//!   segment with a discontinuity and the class's codec configuration; WebRTC viewers get
//!   its SPS/PPS with its keyframes. Dialects of interpreters go on as they were.
//! - The lecture's publisher keeps sending; its frames for what the site replaces are
//!   dropped ([`replaced`]) and, once off air, its own configuration is restored and its
//!   picture resumes at its next keyframe.
//!
//! Who is on air is [`Lecture::on_air`]: what is replaced plus a generation, changed and
//! read under the packager's lock, so the publisher's and the injector's frames never mix.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use axum::http::StatusCode;
use media::model::rescale;
use media::{Frame, Language, TrackInfo};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tracing::{info, warn};

use crate::http::ApiError;
use crate::hub::{Hub, Lecture, PublisherInfo, Status};
use crate::taps::{OpusPacket, TapFrame, TapTrack};

/// [`Lecture::on_air`]: the site's picture replaces the lecture's.
pub const REPLACES_VIDEO: u64 = 1;
/// [`Lecture::on_air`]: the site's sound replaces the lecture's default dialect.
pub const REPLACES_AUDIO: u64 = 2;

/// Invitations open at once per lecture.
const MAX_OPEN: usize = 8;
/// Ended ones kept for the console.
const MAX_ENDED: usize = 16;
/// An invitation not taken up within this is withdrawn.
const INVITATION_TTL: Duration = Duration::from_secs(300);
/// A class whose WHIP session dropped has this long to come back.
const RECONNECT_WITHIN: Duration = Duration::from_secs(15);

/// What the operator does with a raised hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AskAction {
    /// Invite the class that raised hand `question` to speak.
    Accept {
        /// The raised hand's id (from the questions).
        question: u64,
    },
    /// Put that class on air for everyone (any other goes off air).
    Broadcast(u64),
    /// Take it off air.
    OffAir(u64),
    /// End its link.
    End(u64),
}

/// Whether a publisher's track `tap` is replaced while `air` ([`Lecture::on_air`]) holds.
pub fn replaced(air: u64, tap: &TapTrack, default: &Language) -> bool {
    match tap {
        TapTrack::Video => air & REPLACES_VIDEO != 0,
        TapTrack::Audio(lang) => air & REPLACES_AUDIO != 0 && lang == default.as_str(),
    }
}

/// The classes invited to speak in one lecture.
#[derive(Debug, Default)]
pub struct Asks {
    list: Vec<Ask>,
    on_air: Option<OnAir>,
}

#[derive(Debug)]
struct OnAir {
    id: u64,
    switch: Arc<Switch>,
}

#[derive(Debug)]
struct Ask {
    id: u64,
    from: Option<String>,
    token: String,
    preview_token: String,
    invited: SystemTime,
    ended: Option<SystemTime>,
    /// The class's live channel.
    tell: mpsc::Sender<Value>,
    /// Its media, once it connected.
    feed: Option<Arc<Lecture>>,
}

impl Ask {
    fn state(&self, on_air: Option<u64>) -> &'static str {
        if self.ended.is_some() {
            "ended"
        } else if on_air == Some(self.id) {
            "on_air"
        } else if self.connected() {
            "connected"
        } else {
            "invited"
        }
    }

    fn connected(&self) -> bool {
        self.feed
            .as_ref()
            .is_some_and(|f| f.status() == Status::Live && f.publisher().is_some())
    }

    fn view(&self, stream: &str, on_air: Option<u64>) -> Value {
        let (video, audio) = self.feed.as_ref().map_or((false, false), |f| {
            (f.has_video(), !f.dialects().is_empty())
        });
        json!({
            "id": self.id,
            "question": self.id,
            "from": self.from,
            "state": self.state(on_air),
            "since": humantime::format_rfc3339_seconds(self.invited).to_string(),
            "ended": self.ended.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            "video": video,
            "audio": audio,
            "preview": format!("/whep/{stream}/ask/{}", self.id),
            "preview_token": self.preview_token,
        })
    }

    fn tell(&self, m: Value) {
        // The channel holds a few messages; a class that does not read them has gone.
        let _ = self.tell.try_send(m);
    }
}

fn lock(l: &Lecture) -> std::sync::MutexGuard<'_, Asks> {
    l.asks.lock().unwrap_or_else(|e| e.into_inner())
}

fn conflict(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, m)
}

fn token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn live(hub: &Hub, stream: &str) -> Result<Arc<Lecture>, ApiError> {
    match hub.lecture(stream) {
        Some(l) if !matches!(l.status(), Status::Ended { .. }) => Ok(l),
        _ => Err(ApiError::not_found(format!("no live lecture {stream:?}"))),
    }
}

/// The lecture's invitations for the operator: `{"asks": [...], "on_air": ID|null}`.
pub fn list(hub: &Hub, stream: &str) -> Value {
    let Some(l) = hub.lecture(stream) else {
        return json!({ "asks": [], "on_air": null });
    };
    let asks = lock(&l);
    let on_air = asks.on_air.as_ref().map(|o| o.id);
    json!({
        "asks": asks.list.iter().map(|a| a.view(stream, on_air)).collect::<Vec<_>>(),
        "on_air": on_air,
    })
}

/// Does what the operator asked; the ask as [`list`] shows it.
pub fn act(hub: &Arc<Hub>, stream: &str, action: AskAction) -> Result<Value, ApiError> {
    let lecture = live(hub, stream)?;
    let id = match action {
        AskAction::Accept { question } => accept(hub, &lecture, question)?,
        AskAction::Broadcast(id) => broadcast(&lecture, id)?,
        AskAction::OffAir(id) => {
            if !off_air(&lecture, Some(id)) {
                return Err(conflict(format!("ask {id} is not on air")));
            }
            id
        }
        AskAction::End(id) => {
            end(&lecture, id, "ended by the operator")?;
            id
        }
    };
    let asks = lock(&lecture);
    let on_air = asks.on_air.as_ref().map(|o| o.id);
    asks.list
        .iter()
        .find(|a| a.id == id)
        .map(|a| a.view(stream, on_air))
        .ok_or_else(|| ApiError::not_found(format!("no ask {id}")))
}

fn accept(hub: &Arc<Hub>, lecture: &Arc<Lecture>, question: u64) -> Result<u64, ApiError> {
    let stream = lecture.name.as_str();
    let q = hub
        .questions
        .get(hub, stream, question)
        .ok_or_else(|| ApiError::not_found(format!("no raised hand {question} in {stream}")))?;
    if q.kind != "hand" {
        return Err(conflict("only a raised hand can be invited to speak"));
    }
    let tell = q
        .reply
        .filter(|t| !t.is_closed())
        .ok_or_else(|| conflict("that class has left the lecture"))?;
    let mut asks = lock(lecture);
    if let Some(a) = asks
        .list
        .iter()
        .find(|a| a.id == question && a.ended.is_none())
    {
        // Accepted twice: the class hears the same invitation again.
        a.tell(invitation(stream, a));
        return Ok(question);
    }
    if asks.list.iter().filter(|a| a.ended.is_none()).count() >= MAX_OPEN {
        return Err(conflict(format!(
            "{MAX_OPEN} classes are invited already: end one first"
        )));
    }
    let ask = Ask {
        id: question,
        from: q.from,
        token: token(),
        preview_token: token(),
        invited: SystemTime::now(),
        ended: None,
        tell,
        feed: None,
    };
    if ask.tell.try_send(invitation(stream, &ask)).is_err() {
        return Err(conflict("that class's live channel is not taking messages"));
    }
    info!(lecture = %stream, ask = question, from = ?ask.from, "ask back: raised hand accepted, class invited to speak");
    asks.list.retain(|a| a.id != question);
    asks.list.push(ask);
    let ended: Vec<u64> = asks
        .list
        .iter()
        .filter(|a| a.ended.is_some())
        .map(|a| a.id)
        .collect();
    if ended.len() > MAX_ENDED {
        let drop: Vec<u64> = ended[..ended.len() - MAX_ENDED].to_vec();
        asks.list.retain(|a| !drop.contains(&a.id));
    }
    drop(asks);
    tokio::spawn(watch(lecture.clone(), question));
    Ok(question)
}

fn invitation(stream: &str, a: &Ask) -> Value {
    json!({
        "type": "ask",
        "id": a.id,
        "whip": format!("/whip/{stream}?ask={}", a.id),
        "token": a.token,
    })
}

/// Ends an ask whose class left (or never came), whose lecture ended.
async fn watch(lecture: Arc<Lecture>, id: u64) {
    let mut gone_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let why = {
            let asks = lock(&lecture);
            let Some(a) = asks.list.iter().find(|a| a.id == id) else {
                return;
            };
            if a.ended.is_some() {
                return;
            }
            if matches!(lecture.status(), Status::Ended { .. }) {
                Some("the lecture ended")
            } else if a.feed.is_none() {
                a.invited
                    .elapsed()
                    .is_ok_and(|e| e > INVITATION_TTL)
                    .then_some("the invitation was not taken up")
            } else if a.connected() {
                gone_since = None;
                None
            } else {
                let since = *gone_since.get_or_insert_with(Instant::now);
                (since.elapsed() > RECONNECT_WITHIN).then_some("the class's link dropped")
            }
        };
        if let Some(why) = why {
            let _ = end(&lecture, id, why);
            return;
        }
    }
}

fn end(lecture: &Arc<Lecture>, id: u64, why: &str) -> Result<(), ApiError> {
    let was_on_air = lock(lecture).on_air.as_ref().is_some_and(|o| o.id == id);
    if was_on_air {
        off_air(lecture, Some(id));
    }
    let feed = {
        let mut asks = lock(lecture);
        let a = asks
            .list
            .iter_mut()
            .find(|a| a.id == id)
            .ok_or_else(|| ApiError::not_found(format!("no ask {id}")))?;
        if a.ended.is_some() {
            return Ok(());
        }
        a.ended = Some(SystemTime::now());
        a.tell(json!({ "type": "ask_ended", "id": id }));
        a.feed.take()
    };
    if let Some(feed) = feed {
        // Its WHIP session is refused its next frame and closed.
        feed.finish_if(feed.status());
    }
    info!(lecture = %lecture.name, ask = id, "ask back ended: {why}");
    Ok(())
}

/// The class invited as ask `id` declines or stops, from its own live channel (`channel`,
/// the one whose hand was accepted); whether it had that ask open.
pub(crate) fn end_by_class(
    hub: &Hub,
    stream: &str,
    id: u64,
    channel: &mpsc::Sender<Value>,
) -> bool {
    let Some(lecture) = hub.lecture(stream) else {
        return false;
    };
    let mine = lock(&lecture)
        .list
        .iter()
        .any(|a| a.id == id && a.ended.is_none() && a.tell.same_channel(channel));
    mine && end(&lecture, id, "ended by the class").is_ok()
}

/// A class's WHIP offer (`POST /whip/NAME?ask=ID` with the invitation's token): where its
/// media goes.
pub(crate) fn connect(
    hub: &Hub,
    stream: &str,
    id: u64,
    bearer: Option<&str>,
) -> Result<Box<dyn media::sink::MediaSink>, ApiError> {
    use subtle::ConstantTimeEq;
    let lecture = live(hub, stream)?;
    let mut asks = lock(&lecture);
    let a = asks
        .list
        .iter_mut()
        .find(|a| a.id == id && a.ended.is_none())
        .ok_or_else(|| ApiError::not_found(format!("no open invitation {id} in {stream}")))?;
    let ok = bearer.is_some_and(|b| bool::from(b.as_bytes().ct_eq(a.token.as_bytes())));
    if !ok {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a class speaks back with its invitation's token as Authorization: Bearer",
        ));
    }
    if a.connected() {
        return Err(conflict("this class is already connected"));
    }
    let feed = a
        .feed
        .get_or_insert_with(|| hub.new_feed(stream, id))
        .clone();
    drop(asks);
    let session = hub.sessions.fetch_add(1, Ordering::Relaxed);
    let publisher = PublisherInfo {
        protocol: "whip",
        remote: None,
        since: SystemTime::now(),
    };
    feed.begin_session(session, publisher)
        .map_err(|_| conflict("this class's link is closing; try again"))?;
    info!(lecture = %stream, ask = id, "ask back: class connected (seen by the operator only)");
    Ok(Box::new(hub.publisher_sink(feed, session, stream)))
}

/// The class's media for the operator's preview, if its preview token (or an operator's
/// credential, checked by the caller) allows.
pub(crate) fn feed_for_preview(
    hub: &Hub,
    stream: &str,
    id: u64,
    bearer: Option<&str>,
    operator: bool,
) -> Result<Arc<Lecture>, ApiError> {
    use subtle::ConstantTimeEq;
    let lecture = live(hub, stream)?;
    let asks = lock(&lecture);
    let a = asks
        .list
        .iter()
        .find(|a| a.id == id && a.ended.is_none())
        .ok_or_else(|| ApiError::not_found(format!("no open ask {id} in {stream}")))?;
    let ok = operator
        || bearer.is_some_and(|b| bool::from(b.as_bytes().ct_eq(a.preview_token.as_bytes())));
    if !ok {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the preview needs the ask's preview token or the operator token as a bearer token",
        ));
    }
    a.feed
        .clone()
        .filter(|_| a.connected())
        .ok_or_else(|| conflict("the class has not connected yet"))
}

fn broadcast(lecture: &Arc<Lecture>, id: u64) -> Result<u64, ApiError> {
    let feed = {
        let asks = lock(lecture);
        let a = asks
            .list
            .iter()
            .find(|a| a.id == id && a.ended.is_none())
            .ok_or_else(|| ApiError::not_found(format!("no open ask {id}")))?;
        if asks.on_air.as_ref().is_some_and(|o| o.id == id) {
            return Ok(id);
        }
        if !a.connected() {
            return Err(conflict("the class has not connected yet"));
        }
        a.feed.clone().expect("connected")
    };
    let default = format!("audio-{}", lecture.default_language);
    let mut flags = 0;
    {
        let hls = lecture.hls();
        if feed.has_video() && hls.rendition_by_id("video").is_some() {
            flags |= REPLACES_VIDEO;
        }
        // The default dialect's own sound, not an interpreter's (a hall sending no sound):
        // an interpreter's voice stays on its own clock.
        if !feed.dialects().is_empty()
            && hls
                .rendition_by_id(&default)
                .is_some_and(|r| !hls.renditions()[r].lecture_clock)
        {
            flags |= REPLACES_AUDIO;
        }
    }
    if flags == 0 {
        return Err(conflict(
            "nothing to put on air: the class sends no picture or sound the lecture carries",
        ));
    }
    let switch = Arc::new(Switch::default());
    tokio::spawn(inject(lecture.clone(), feed, flags, switch.clone()));
    let mut asks = lock(lecture);
    // Another class on air stays until this one's first keyframe takes its place.
    if let Some(old) = asks.on_air.replace(OnAir { id, switch }) {
        let _hls = lecture.hls();
        old.switch.cancel.store(true, Ordering::Release);
        if let Some(a) = asks.list.iter().find(|a| a.id == old.id) {
            a.tell(json!({ "type": "on_air", "id": old.id, "on": false }));
        }
    }
    if let Some(a) = asks.list.iter().find(|a| a.id == id) {
        a.tell(json!({ "type": "on_air", "id": id, "on": true }));
    }
    drop(asks);
    info!(lecture = %lecture.name, ask = id, video = flags & REPLACES_VIDEO != 0, audio = flags & REPLACES_AUDIO != 0, "ask back: class on air for everyone (from its next keyframe)");
    lecture.announce();
    Ok(id)
}

/// How long the lecture's publisher has to send the keyframe it comes back with, before it
/// comes back without (its picture then resumes at its next keyframe).
const TAKE_BACK_WITHIN: Duration = Duration::from_secs(5);

/// Takes the site on air (`Some(id)`: only if it is that one) off air; whether one was.
/// The lecture's publisher takes its picture back at its next keyframe (the class's picture
/// goes on until then), so no viewer sees a frozen picture.
fn off_air(lecture: &Arc<Lecture>, only: Option<u64>) -> bool {
    let on = {
        let mut asks = lock(lecture);
        if only.is_some() && asks.on_air.as_ref().map(|o| o.id) != only {
            return false;
        }
        asks.on_air.take()
    };
    let Some(on) = on else { return false };
    let switched = {
        let _hls = lecture.hls();
        on.switch.cancel.store(true, Ordering::Release);
        // Whatever is on air now (this class, or one it was to replace at its first
        // keyframe) hands back to the lecture's publisher.
        let air = lecture.on_air.load(Ordering::Acquire);
        if air & 3 != 0 {
            lecture.air_leave.store(air, Ordering::Release);
        }
        (air & 3 != 0).then_some(air)
    };
    if let Some(air) = switched {
        let lecture = lecture.clone();
        tokio::spawn(async move {
            tokio::time::sleep(TAKE_BACK_WITHIN).await;
            if take_back(&lecture, air) {
                warn!(lecture = %lecture.name, "ask back: the lecture's publisher sent no keyframe in {TAKE_BACK_WITHIN:?}; its picture resumes at its next one");
            }
        });
    }
    if let Some(a) = lock(lecture).list.iter().find(|a| a.id == on.id) {
        a.tell(json!({ "type": "on_air", "id": on.id, "on": false }));
    }
    info!(lecture = %lecture.name, ask = on.id, "ask back: class off air; the lecture's own picture and sound resume at its next keyframe");
    lecture.announce();
    true
}

/// Ends `air` (what a site replaces) if it still holds: the publisher's own tracks are the
/// lecture's again. Whether it held.
pub(crate) fn take_back(lecture: &Lecture, air: u64) -> bool {
    let _hls = lecture.hls();
    take_back_locked(lecture, air)
}

/// [`take_back`] with the packager already locked.
pub(crate) fn take_back_locked(lecture: &Lecture, air: u64) -> bool {
    if air & 3 == 0 || lecture.on_air.load(Ordering::Acquire) != air {
        return false;
    }
    lecture
        .on_air
        .store(((air >> 2) + 1) << 2, Ordering::Release);
    lecture.air_leave.store(0, Ordering::Release);
    true
}

/// Whether a publisher's frame of `tap` is where it may take back what `air` replaces: the
/// operator asked, and it is a keyframe (the first sound frame, when only sound was replaced).
pub fn take_back_point(air: u64, leave: u64, tap: &TapTrack, keyframe: bool) -> bool {
    air & 3 != 0
        && leave == air
        && match tap {
            TapTrack::Video => keyframe,
            TapTrack::Audio(_) => air & REPLACES_VIDEO == 0,
        }
}

/// An injector's switch, shared with whoever ends it.
#[derive(Debug, Default)]
struct Switch {
    /// Set (under the packager's lock) when the class is taken off air.
    cancel: std::sync::atomic::AtomicBool,
    /// The [`Lecture::on_air`] value it switched to; 0 until its first keyframe.
    switched: std::sync::atomic::AtomicU64,
}

/// Puts `feed`'s frames into `lecture`, replacing what `flags` says from the class's first
/// keyframe (the switch), until the lecture's publisher takes it back or the switch is
/// cancelled before it happened.
async fn inject(lecture: Arc<Lecture>, feed: Arc<Lecture>, flags: u64, switch: Arc<Switch>) {
    let lang = feed.default_language.to_string();
    let mut video = feed.taps.subscribe(&TapTrack::Video);
    let mut audio = feed.taps.subscribe(&TapTrack::Audio(lang.clone()));
    let mut opus = feed.taps.subscribe_opus(&lang);
    let mut p = Placer::new(lecture.clone(), flags, switch.clone());
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let mut left = false;
    loop {
        let more = tokio::select! {
            v = video.recv(), if flags & REPLACES_VIDEO != 0 => match v {
                Ok(f) => p.video(&f),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(lecture = %lecture.name, "ask back: {n} frames of the class's picture dropped; waiting for a keyframe");
                    p.waiting_keyframe = true;
                    true
                }
                Err(broadcast::error::RecvError::Closed) => false,
            },
            a = audio.recv(), if flags & REPLACES_AUDIO != 0 => match a {
                Ok(f) => p.audio(&f),
                Err(broadcast::error::RecvError::Lagged(_)) => true,
                Err(broadcast::error::RecvError::Closed) => false,
            },
            o = opus.recv(), if flags & REPLACES_AUDIO != 0 => match o {
                Ok(pkt) => p.opus(&pkt),
                Err(broadcast::error::RecvError::Lagged(_)) => true,
                Err(broadcast::error::RecvError::Closed) => false,
            },
            _ = check.tick() => {
                let air = switch.switched.load(Ordering::Acquire);
                if air == 0 {
                    !switch.cancel.load(Ordering::Acquire)
                } else {
                    if feed.status() != Status::Live && !left {
                        // The class's link dropped while on air: the hall takes over at its
                        // next keyframe rather than show a frozen picture.
                        left = true;
                        lecture.air_leave.store(air, Ordering::Release);
                    }
                    lecture.on_air.load(Ordering::Acquire) == air
                }
            }
        };
        if !more {
            break;
        }
    }
    // Off air without the operator (the lecture's publisher came back, or the class's
    // link dropped): the console and the class hear so.
    let mut asks = lock(&lecture);
    if asks
        .on_air
        .as_ref()
        .is_some_and(|o| Arc::ptr_eq(&o.switch, &switch))
        && switch.switched.load(Ordering::Acquire) != 0
    {
        let id = asks.on_air.take().map(|o| o.id);
        if let Some(a) = asks.list.iter().find(|a| Some(a.id) == id) {
            a.tell(json!({ "type": "on_air", "id": a.id, "on": false }));
        }
        drop(asks);
        info!(lecture = %lecture.name, ask = ?id, "ask back: class off air (its publisher or its link)");
        lecture.announce();
    }
}

/// Places a feed's frames on a lecture's timeline.
struct Placer {
    lecture: Arc<Lecture>,
    /// What the class replaces.
    flags: u64,
    switch: Arc<Switch>,
    /// The [`Lecture::on_air`] value of this class, once switched.
    air: u64,
    /// Lecture time minus feed time (90 kHz ticks), fixed by the first frame placed.
    delta: Option<i64>,
    video_codec: Option<Arc<media::CodecParams>>,
    audio_codec: Option<Arc<media::CodecParams>>,
    waiting_keyframe: bool,
}

impl Placer {
    fn new(lecture: Arc<Lecture>, flags: u64, switch: Arc<Switch>) -> Placer {
        Placer {
            lecture,
            flags,
            switch,
            air: 0,
            delta: None,
            video_codec: None,
            audio_codec: None,
            waiting_keyframe: true,
        }
    }

    /// Places a picture frame; false once the site is no longer on air.
    fn video(&mut self, f: &TapFrame) -> bool {
        if self.waiting_keyframe && !f.keyframe {
            return true;
        }
        let placed = self.place(&TapTrack::Video, f);
        match placed {
            None => false,
            Some(true) => {
                self.waiting_keyframe = false;
                true
            }
            Some(false) => {
                if f.keyframe {
                    self.waiting_keyframe = true;
                }
                true
            }
        }
    }

    /// Places a sound frame (AAC) in the lecture's default dialect.
    fn audio(&mut self, f: &TapFrame) -> bool {
        if self.flags & REPLACES_VIDEO != 0 && self.delta.is_none() {
            // The picture fixes the timeline; sound before it has no place yet.
            return true;
        }
        let lang = TapTrack::Audio(self.lecture.default_language.to_string());
        self.place(&lang, f).is_some()
    }

    /// Passes the class's own Opus to WebRTC listeners of the default dialect.
    fn opus(&mut self, pkt: &OpusPacket) -> bool {
        if self.air == 0 {
            return !self.switch.cancel.load(Ordering::Acquire);
        }
        if self.lecture.on_air.load(Ordering::Acquire) != self.air {
            return false;
        }
        let Some(delta) = self.delta else { return true };
        let pts = pkt.pts + rescale(delta, 90_000, 48_000);
        let taps = &self.lecture.taps;
        let now = Instant::now();
        let wallclock = taps.wallclock_of(pts, 48_000).map_or(now, |w| w.min(now));
        taps.send_opus(
            self.lecture.default_language.as_str(),
            OpusPacket {
                pts,
                wallclock,
                data: pkt.data.clone(),
            },
        );
        true
    }

    /// `None` once off air; else whether the lecture took the frame.
    fn place(&mut self, track: &TapTrack, f: &TapFrame) -> Option<bool> {
        let lecture = &self.lecture;
        let (key, language) = match track {
            TapTrack::Video => ("video".to_string(), None),
            TapTrack::Audio(l) => (format!("audio-{l}"), Some(lecture.default_language.clone())),
        };
        // Read before the packager is locked: the lecture's state comes first in lock order.
        let session = lecture.session();
        let mut hls = lecture.hls();
        if self.air == 0 {
            // The switch: at the class's first keyframe (its first sound, when it sends no
            // picture), unless it was taken off air before; only onto a running timeline.
            if self.switch.cancel.load(Ordering::Acquire) {
                return None;
            }
            let switch_point = match track {
                TapTrack::Video => f.keyframe,
                TapTrack::Audio(_) => self.flags & REPLACES_VIDEO == 0,
            };
            if !switch_point || !hls.timeline_running() || hls.rendition_by_id(&key).is_none() {
                return Some(false);
            }
            let generation = (lecture.on_air.load(Ordering::Acquire) >> 2) + 1;
            self.air = generation << 2 | self.flags;
            lecture.on_air.store(self.air, Ordering::Release);
            lecture.air_leave.store(0, Ordering::Release);
            self.switch.switched.store(self.air, Ordering::Release);
        } else if lecture.on_air.load(Ordering::Acquire) != self.air {
            return None;
        }
        let r = hls.rendition_by_id(&key)?;
        let t = rescale(f.dts, f.timescale, 90_000);
        let delta = match self.delta {
            Some(d) => d,
            None => {
                let Some(now) = lecture.taps.lecture_time_at(f.wallclock) else {
                    return Some(false);
                };
                // Never before what the lecture already has: the first keyframe must stay.
                let at = now.max(hls.leader_end().unwrap_or(now));
                *self.delta.insert(at - t)
            }
        };
        let known = match track {
            TapTrack::Video => &mut self.video_codec,
            TapTrack::Audio(_) => &mut self.audio_codec,
        };
        if known.as_ref().is_none_or(|c| **c != *f.codec) {
            *known = Some(f.codec.clone());
            let name = hls.renditions()[r].name.clone();
            hls.set_track(
                &key,
                TrackInfo {
                    codec: (*f.codec).clone(),
                    timescale: f.timescale,
                    language: language.clone(),
                },
                language,
                name,
            );
        }
        let shift = rescale(delta, 90_000, f.timescale);
        let frame = Frame {
            dts: f.dts + shift,
            pts: f.pts + shift,
            keyframe: f.keyframe,
            data: f.data.clone(),
        };
        let placed = hls.push_on_lecture_clock(r, frame, SystemTime::now());
        lecture.record(&mut hls);
        let v = hls.version();
        let Some(placed) = placed else {
            drop(hls);
            lecture.notify(v);
            return Some(false);
        };
        // Sent with the packager held (see the publisher's sink).
        let taps = &lecture.taps;
        taps.send(
            track,
            TapFrame {
                dts: placed.dts,
                pts: placed.pts,
                timescale: f.timescale,
                keyframe: f.keyframe,
                data: f.data.clone(),
                codec: f.codec.clone(),
                wallclock: taps.wallclock(placed.pts, f.timescale, f.arrived),
                session,
                arrived: f.arrived,
            },
        );
        drop(hls);
        lecture.notify(v);
        if matches!(track, TapTrack::Video) {
            let frame = Frame {
                dts: placed.dts,
                pts: placed.pts,
                keyframe: f.keyframe,
                data: f.data.clone(),
            };
            lecture.ladder_push(&frame, f.timescale, &f.codec);
        }
        Some(true)
    }
}

/// The operator's HTTP API: `GET|POST /api/v1/streams/NAME/asks`,
/// `POST|DELETE /api/v1/streams/NAME/asks/ID/broadcast`, `DELETE /api/v1/streams/NAME/asks/ID`,
/// each with the operator token (or the lecture's key) as a bearer token.
type Peer = Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>;

fn refused(
    s: &crate::http::AppState,
    name: &str,
    peer: Peer,
    headers: &axum::http::HeaderMap,
) -> Option<axum::response::Response> {
    crate::channel::operator_refusal(s, name, peer.map(|p| p.0.0.ip()), headers, "ask back")
}

fn answer(r: Result<Value, ApiError>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /api/v1/streams/NAME/asks`
pub async fn api_list(
    axum::extract::State(s): axum::extract::State<crate::http::AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    peer: Peer,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    if let Some(r) = refused(&s, &name, peer, &headers) {
        return r;
    }
    answer(Ok(list(&s.hub, &name)))
}

/// The body of `POST /api/v1/streams/NAME/asks`.
#[derive(serde::Deserialize)]
pub struct AcceptBody {
    /// The raised hand's id.
    pub question: u64,
}

/// A `POST` that a web page elsewhere could make without asking (no preflight) is refused:
/// the operator's requests are JSON.
fn not_json(headers: &axum::http::HeaderMap) -> Option<axum::response::Response> {
    use axum::response::IntoResponse;
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().starts_with("application/json"));
    (!json).then(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send this as Content-Type: application/json",
        )
        .into_response()
    })
}

/// `POST /api/v1/streams/NAME/asks` `{"question": ID}`: invite that class to speak.
pub async fn api_accept(
    axum::extract::State(s): axum::extract::State<crate::http::AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    peer: Peer,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    if let Some(r) = refused(&s, &name, peer, &headers).or_else(|| not_json(&headers)) {
        return r;
    }
    let parsed = serde_json::from_slice::<AcceptBody>(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"question\": ID}}: {e}"),
        )
    });
    answer(parsed.and_then(|b| {
        act(
            &s.hub,
            &name,
            AskAction::Accept {
                question: b.question,
            },
        )
    }))
}

/// `POST /api/v1/streams/NAME/asks/ID/broadcast` (`Content-Type: application/json`, any
/// body): on air for everyone; `DELETE` the same: off air.
pub async fn api_broadcast(
    axum::extract::State(s): axum::extract::State<crate::http::AppState>,
    axum::extract::Path((name, id)): axum::extract::Path<(String, u64)>,
    method: axum::http::Method,
    peer: Peer,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let on = method == axum::http::Method::POST;
    let refusal =
        refused(&s, &name, peer, &headers).or_else(|| on.then(|| not_json(&headers)).flatten());
    if let Some(r) = refusal {
        return r;
    }
    let action = if on {
        AskAction::Broadcast(id)
    } else {
        AskAction::OffAir(id)
    };
    answer(act(&s.hub, &name, action))
}

/// `DELETE /api/v1/streams/NAME/asks/ID`: end the class's link.
pub async fn api_end(
    axum::extract::State(s): axum::extract::State<crate::http::AppState>,
    axum::extract::Path((name, id)): axum::extract::Path<(String, u64)>,
    peer: Peer,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    if let Some(r) = refused(&s, &name, peer, &headers) {
        return r;
    }
    answer(act(&s.hub, &name, AskAction::End(id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use media::h264::H264Params;
    use media::sink::{MediaSink, Publish, PublishRequest};
    use media::{CodecParams, MediaEvent, TrackId};

    const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
    /// The hall's SPS, and the class's (another level: another configuration).
    fn sps(level: u8) -> Vec<u8> {
        vec![
            0x67, 0x64, 0x00, level, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00,
            0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x83, 0x19, 0x60,
        ]
    }

    fn video(level: u8) -> TrackInfo {
        TrackInfo::new(CodecParams::H264(
            H264Params::from_sps_pps(&sps(level), PPS).unwrap(),
        ))
    }

    fn audio(rate: u32) -> TrackInfo {
        TrackInfo::new(CodecParams::Aac(
            media::aac::AacParams::lc(rate, 1).unwrap(),
        ))
    }

    /// 25 fps video (a keyframe a second) and 48 kHz audio from `from_ms` for `ms`.
    fn send(sink: &mut dyn MediaSink, from_ms: i64, ms: i64) -> Result<(), media::sink::SinkError> {
        send_at(sink, from_ms, ms, 48_000)
    }

    /// [`send`] with sound at `rate` Hz.
    fn send_at(
        sink: &mut dyn MediaSink,
        from_ms: i64,
        ms: i64,
        rate: i64,
    ) -> Result<(), media::sink::SinkError> {
        let mut v = from_ms / 40;
        let mut a = from_ms * rate / 1000 / 1024;
        while v * 40 < from_ms + ms {
            while a * 1024 * 1000 / rate <= v * 40 {
                sink.handle(MediaEvent::Frame {
                    track: TrackId(1),
                    frame: Frame {
                        dts: a * 1024,
                        pts: a * 1024,
                        keyframe: true,
                        data: Bytes::from_static(&[0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c]),
                    },
                })?;
                a += 1;
            }
            sink.handle(MediaEvent::Frame {
                track: TrackId(0),
                frame: Frame {
                    dts: v * 3600,
                    pts: v * 3600,
                    keyframe: v % 25 == 0,
                    data: Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]),
                },
            })?;
            v += 1;
        }
        Ok(())
    }

    fn describe(sink: &mut dyn MediaSink, level: u8) {
        describe_at(sink, level, 48_000)
    }

    fn describe_at(sink: &mut dyn MediaSink, level: u8, rate: u32) {
        let mut v = video(level);
        v.timescale = 90_000;
        sink.handle(MediaEvent::Track {
            id: TrackId(0),
            info: v,
        })
        .unwrap();
        sink.handle(MediaEvent::Track {
            id: TrackId(1),
            info: audio(rate),
        })
        .unwrap();
    }

    fn level_of(c: &CodecParams) -> u8 {
        match c {
            CodecParams::H264(h) => h.level,
            _ => 0,
        }
    }

    /// What the lecture's viewers got: the level of each video frame's configuration, with
    /// repeats collapsed.
    fn levels(rx: &mut broadcast::Receiver<Arc<TapFrame>>, seen: &mut Vec<u8>) {
        while let Ok(f) = rx.try_recv() {
            let l = level_of(&f.codec);
            if seen.last() != Some(&l) {
                seen.push(l);
            }
        }
    }

    /// A hub that takes any lecture, demo off.
    fn hub() -> Arc<Hub> {
        Hub::new(Arc::new(
            config::Config::from_toml_str_with_env(
                "[demo]\nenabled = false\n[lectures]\nallow_unconfigured = true\n",
                std::iter::empty(),
            )
            .unwrap(),
        ))
    }

    /// The hall's publisher of the lecture `hall`.
    fn publish_hall(hub: &Arc<Hub>) -> Box<dyn MediaSink> {
        hub.publish(PublishRequest {
            stream: "hall".into(),
            key: None,
            language: None,
            protocol: "test",
            remote: None,
        })
        .unwrap()
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A hall at 44.1 kHz puts a 48 kHz class on air; its publisher reconnects meanwhile:
    /// it takes its picture and sound back at once, and its sound is placed again (not
    /// dropped as late on a clock the class left behind).
    #[tokio::test]
    async fn a_hall_at_44_1_khz_that_reconnects_on_air_takes_its_tracks_back() {
        let hub = hub();
        let publish = || publish_hall(&hub);
        let mut hall = publish();
        describe_at(hall.as_mut(), 0x1f, 44_100);
        send_at(hall.as_mut(), 0, 2000, 44_100).unwrap();
        let lecture = hub.lecture("hall").unwrap();
        let mut video = lecture.taps.subscribe(&TapTrack::Video);
        let mut sound = lecture.taps.subscribe(&TapTrack::Audio("cmn".into()));
        let (tx, _rx) = mpsc::channel(8);
        let id = hub
            .questions
            .add(&hub, "hall", "hand", None, None, Some(tx))
            .unwrap();
        act(&hub, "hall", AskAction::Accept { question: id }).unwrap();
        let token = list(&hub, "hall")["asks"][0]["id"].as_u64().unwrap();
        assert_eq!(token, id);
        let token = lock(&lecture).list[0].token.clone();
        let mut class = connect(&hub, "hall", id, Some(&token)).unwrap();
        describe(class.as_mut(), 0x28);
        send(class.as_mut(), 0, 1000).unwrap();
        act(&hub, "hall", AskAction::Broadcast(id)).unwrap();
        for step in 0..20 {
            send(class.as_mut(), 1000 + step * 100, 100).unwrap();
            send_at(hall.as_mut(), 2000 + step * 100, 100, 44_100).unwrap();
            settle().await;
        }
        let mut seen = Vec::new();
        levels(&mut video, &mut seen);
        assert_eq!(seen, vec![0x1f, 0x28]);
        let rates = |rx: &mut broadcast::Receiver<Arc<TapFrame>>| {
            let mut r = Vec::new();
            while let Ok(f) = rx.try_recv() {
                if r.last() != Some(&f.timescale) {
                    r.push(f.timescale);
                }
            }
            r
        };
        assert_eq!(rates(&mut sound), vec![44_100, 48_000]);
        // Off air: the hall's 44.1 kHz sound is placed again, all of it.
        act(&hub, "hall", AskAction::OffAir(id)).unwrap();
        for step in 0..30 {
            send(class.as_mut(), 3000 + step * 100, 100).unwrap();
            send_at(hall.as_mut(), 4000 + step * 100, 100, 44_100).unwrap();
            settle().await;
        }
        let mut back = 0;
        let mut r = Vec::new();
        while let Ok(f) = sound.try_recv() {
            if r.last() != Some(&f.timescale) {
                r.push(f.timescale);
            }
            back += (f.timescale == 44_100) as usize;
        }
        assert_eq!(r.last(), Some(&44_100));
        // Three seconds of 1024-sample frames, less the moment of the switch.
        assert!(back > 100, "{back} frames of the hall's sound");
        act(&hub, "hall", AskAction::Broadcast(id)).unwrap();
        for step in 0..20 {
            send(class.as_mut(), 6000 + step * 100, 100).unwrap();
            send_at(hall.as_mut(), 7000 + step * 100, 100, 44_100).unwrap();
            settle().await;
        }
        let _ = rates(&mut sound);
        // The hall's publisher drops and comes back while the class is on air.
        drop(hall);
        let mut hall = publish();
        describe_at(hall.as_mut(), 0x1f, 44_100);
        for step in 0..20 {
            send(class.as_mut(), 8000 + step * 100, 100).unwrap();
            send_at(hall.as_mut(), step * 100, 100, 44_100).unwrap();
            settle().await;
        }
        levels(&mut video, &mut seen);
        assert_eq!(
            seen,
            vec![0x1f, 0x28, 0x1f, 0x28, 0x1f],
            "the hall's picture is back"
        );
        assert_eq!(
            rates(&mut sound),
            vec![44_100],
            "the hall's sound is placed again"
        );
        assert_eq!(list(&hub, "hall")["on_air"], Value::Null);
    }

    #[tokio::test]
    async fn a_class_goes_on_air_in_place_of_the_hall_and_off_again() {
        let hub = hub();
        let mut hall = publish_hall(&hub);
        describe(hall.as_mut(), 0x1f);
        send(hall.as_mut(), 0, 2000).unwrap();
        let lecture = hub.lecture("hall").unwrap();
        let mut out = lecture.taps.subscribe(&TapTrack::Video);

        // Nothing to accept yet; a question is not a hand.
        assert_eq!(
            act(&hub, "hall", AskAction::Accept { question: 99 })
                .unwrap_err()
                .status(),
            StatusCode::NOT_FOUND
        );
        let (tx, mut rx) = mpsc::channel(8);
        let q = hub
            .questions
            .add(
                &hub,
                "hall",
                "question",
                None,
                Some("why?".into()),
                Some(tx.clone()),
            )
            .unwrap();
        assert_eq!(
            act(&hub, "hall", AskAction::Accept { question: q })
                .unwrap_err()
                .status(),
            StatusCode::CONFLICT
        );
        let id = hub
            .questions
            .add(
                &hub,
                "hall",
                "hand",
                Some("Xihe school".into()),
                None,
                Some(tx),
            )
            .unwrap();
        let v = act(&hub, "hall", AskAction::Accept { question: id }).unwrap();
        assert_eq!(v["state"], "invited");
        let invite = rx.try_recv().unwrap();
        assert_eq!(invite["type"], "ask");
        let token = invite["token"].as_str().unwrap().to_string();

        // The class connects: wrong token refused, the right one gets a feed of its own.
        assert!(connect(&hub, "hall", id, Some("nope")).is_err());
        let mut class = connect(&hub, "hall", id, Some(&token)).unwrap();
        describe(class.as_mut(), 0x28);
        send(class.as_mut(), 0, 1000).unwrap();
        assert_eq!(list(&hub, "hall")["asks"][0]["state"], "connected");
        // Quiet by default: the lecture carries none of it.
        let mut seen = Vec::new();
        send(hall.as_mut(), 2000, 1000).unwrap();
        levels(&mut out, &mut seen);
        assert_eq!(seen, vec![0x1f]);
        assert!(feed_for_preview(&hub, "hall", id, Some("nope"), false).is_err());
        assert!(feed_for_preview(&hub, "hall", id, Some(&token), false).is_err());
        let preview = list(&hub, "hall")["asks"][0]["preview_token"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(feed_for_preview(&hub, "hall", id, Some(&preview), false).is_ok());

        // On air: the class's picture (from its last keyframe) replaces the hall's.
        assert_eq!(
            act(&hub, "hall", AskAction::Broadcast(id)).unwrap()["state"],
            "on_air"
        );
        assert_eq!(rx.try_recv().unwrap()["on"], true);
        for step in 0..20 {
            send(class.as_mut(), 1000 + step * 100, 100).unwrap();
            send(hall.as_mut(), 3000 + step * 100, 100).unwrap();
            settle().await;
        }
        levels(&mut out, &mut seen);
        assert_eq!(
            seen,
            vec![0x1f, 0x28],
            "the class's picture went out, and only it"
        );
        {
            let hls = lecture.hls();
            let r = hls.rendition_by_id("video").unwrap();
            assert!(
                matches!(&hls.renditions()[r].info.codec, CodecParams::H264(h) if h.level == 0x28)
            );
        }

        // Off air: the hall's own picture again, from its next keyframe.
        assert_eq!(
            act(&hub, "hall", AskAction::OffAir(id)).unwrap()["state"],
            "connected"
        );
        assert_eq!(rx.try_recv().unwrap()["on"], false);
        for step in 0..30 {
            send(class.as_mut(), 3000 + step * 100, 100).unwrap();
            send(hall.as_mut(), 5000 + step * 100, 100).unwrap();
            settle().await;
        }
        levels(&mut out, &mut seen);
        assert_eq!(seen, vec![0x1f, 0x28, 0x1f]);

        // Only the class's own channel may end its ask.
        let (other, _) = mpsc::channel(1);
        assert!(!end_by_class(&hub, "hall", id, &other));
        // A second class declines its invitation: its ask ends at once.
        let (tx2, mut rx2) = mpsc::channel(8);
        let second = hub
            .questions
            .add(&hub, "hall", "hand", None, None, Some(tx2.clone()))
            .unwrap();
        act(&hub, "hall", AskAction::Accept { question: second }).unwrap();
        assert_eq!(rx2.try_recv().unwrap()["type"], "ask");
        assert!(end_by_class(&hub, "hall", second, &tx2));
        assert_eq!(rx2.try_recv().unwrap()["type"], "ask_ended");
        assert_eq!(list(&hub, "hall")["asks"][1]["state"], "ended");

        // Ended: the class hears so and its session is refused from its next frame.
        assert_eq!(
            act(&hub, "hall", AskAction::End(id)).unwrap()["state"],
            "ended"
        );
        assert_eq!(rx.try_recv().unwrap()["type"], "ask_ended");
        assert!(send(class.as_mut(), 6000, 100).is_err());
        assert!(connect(&hub, "hall", id, Some(&token)).is_err());
        // The hall went on throughout.
        send(hall.as_mut(), 8000, 1000).unwrap();
    }
}
