//! The public pages: the programme, a lecture, a ticket.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use catalogue::{
    BookingKind, BookingRequest, BookingStatus, Lecture, LectureQuery, LectureStatus, Visibility,
};
use media::admission::{Admission, Verdict};
use serde::Deserialize;

use crate::{Site, Ui, esc, message, page, see_other, url_enc, when};

/// `?ui=&category=&town=`
#[derive(Debug, Default, Deserialize)]
pub struct FrontQuery {
    ui: Option<String>,
    category: Option<String>,
    town: Option<String>,
}

/// Most upcoming lectures one page lists (filters narrow the rest down).
const MAX_LISTED: i64 = 200;

fn seats_badge(ui: Ui, l: &Lecture) -> String {
    let t = ui.t();
    match l.seats_left {
        Some(0) => format!("<span class=\"seats full\">{}</span>", t.full),
        Some(n) => format!("<span class=\"seats\">{} {n}</span>", t.seats_left),
        None => String::new(),
    }
}

fn lecture_card(site: &Site, ui: Ui, l: &Lecture, live: bool) -> String {
    let t = ui.t();
    let c = &site.catalogue;
    let hall = l
        .hall
        .as_ref()
        .map(|h| {
            if h.town.is_empty() {
                esc(&h.name)
            } else {
                format!("{} · {}", esc(&h.town), esc(&h.name))
            }
        })
        .unwrap_or_default();
    let href = ui.query(&format!("/lectures/{}", l.id));
    let action = if live {
        format!("<a class=\"button live\" href=\"{href}\">{}</a>", t.watch)
    } else if l.booking_open && (l.seats.is_some() || l.visibility == Visibility::Booking) {
        format!("<a class=\"button\" href=\"{href}#book\">{}</a>", t.book)
    } else {
        String::new()
    };
    format!(
        "<li class=\"lecture\"><a class=\"title\" href=\"{href}\">{title}</a>\
         <div class=\"meta\"><time>{when}</time> {hall}</div>\
         <div class=\"row\">{seats}{action}</div></li>",
        title = esc(&l.title),
        when = when(c, l.starts_at),
        seats = seats_badge(ui, l),
    )
}

/// Whether anyone may watch `stream` (its replays are listed only then).
fn public_stream(site: &Site, stream: &str) -> bool {
    !matches!(site.catalogue.may_watch(stream, None), Verdict::Deny(_))
}

/// `GET /`: live now, upcoming by category and town, replays.
pub async fn front(State(site): State<Site>, Query(q): Query<FrontQuery>) -> Response {
    let ui = Ui::parse(q.ui.as_deref());
    let t = ui.t();
    let c = &site.catalogue;
    let category = q.category.filter(|s| !s.is_empty());
    let town = q.town.filter(|s| !s.is_empty());
    let query = LectureQuery {
        category: category.clone(),
        town: town.clone(),
        limit: Some(MAX_LISTED),
        ..Default::default()
    };
    let (lectures, categories, halls) =
        match tokio::try_join!(c.lectures(&query), c.categories(), c.halls(),) {
            Ok(x) => x,
            Err(e) => {
                tracing::error!("front page: {e}");
                return message(
                    ui,
                    StatusCode::SERVICE_UNAVAILABLE,
                    t.site,
                    "the programme could not be read; try again",
                );
            }
        };
    let live: HashSet<String> = site.live.live_streams().into_iter().collect();
    let now = jiff::Timestamp::now();
    let mut body = String::with_capacity(16 * 1024);

    // Live now.
    let on_now: Vec<&Lecture> = lectures
        .iter()
        .filter(|l| l.status == LectureStatus::Scheduled && live.contains(&l.stream))
        .collect();
    let _ = write!(body, "<section class=\"live\"><h2>{}</h2>", t.live_now);
    if on_now.is_empty() {
        let _ = write!(body, "<p class=\"empty\">{}</p>", t.nothing_live);
    } else {
        body.push_str("<ul class=\"lectures\">");
        for l in &on_now {
            body.push_str(&lecture_card(&site, ui, l, true));
        }
        body.push_str("</ul>");
    }
    body.push_str("</section>");

    // Filters: plain links, no script needed.
    let link = |cat: Option<&str>, town: Option<&str>| {
        let mut qs = Vec::new();
        if let Some(c) = cat {
            qs.push(format!("category={}", url_enc(c)));
        }
        if let Some(t) = town {
            qs.push(format!("town={}", url_enc(t)));
        }
        if ui == Ui::En {
            qs.push("ui=en".into());
        }
        if qs.is_empty() {
            "/".to_string()
        } else {
            format!("/?{}", qs.join("&amp;"))
        }
    };
    let _ = write!(
        body,
        "<section class=\"upcoming\"><h2>{}</h2><nav class=\"filters\" aria-label=\"{}\">",
        t.upcoming, t.category
    );
    let chip = |href: String, label: &str, on: bool| {
        format!(
            "<a class=\"chip{}\" href=\"{href}\">{}</a>",
            if on { " on" } else { "" },
            esc(label)
        )
    };
    body.push_str(&chip(
        link(None, town.as_deref()),
        t.all,
        category.is_none(),
    ));
    for cat in &categories {
        body.push_str(&chip(
            link(Some(&cat.slug), town.as_deref()),
            ui.category(cat),
            category.as_deref() == Some(cat.slug.as_str()),
        ));
    }
    body.push_str("</nav>");
    let towns: BTreeSet<&str> = halls
        .iter()
        .map(|h| h.town.as_str())
        .filter(|t| !t.is_empty())
        .collect();
    if !towns.is_empty() {
        let _ = write!(
            body,
            "<nav class=\"filters towns\" aria-label=\"{}\">",
            t.town
        );
        body.push_str(&chip(
            link(category.as_deref(), None),
            t.all,
            town.is_none(),
        ));
        for tw in towns {
            body.push_str(&chip(
                link(category.as_deref(), Some(tw)),
                tw,
                town.as_deref() == Some(tw),
            ));
        }
        body.push_str("</nav>");
    }
    let upcoming: Vec<&Lecture> = lectures
        .iter()
        .filter(|l| {
            l.status == LectureStatus::Scheduled
                && !live.contains(&l.stream)
                && l.starts_at.is_some_and(|s| s > now)
        })
        .collect();
    if upcoming.is_empty() {
        let _ = write!(body, "<p class=\"empty\">{}</p>", t.nothing_upcoming);
    }
    // By category, in the district's order; lectures without one last.
    let mut groups: Vec<(String, Vec<&Lecture>)> = categories
        .iter()
        .map(|cat| {
            (
                ui.category(cat).to_string(),
                upcoming
                    .iter()
                    .filter(|l| l.category.as_ref().is_some_and(|x| x.id == cat.id))
                    .copied()
                    .collect(),
            )
        })
        .collect();
    groups.push((
        String::new(),
        upcoming
            .iter()
            .filter(|l| l.category.is_none())
            .copied()
            .collect(),
    ));
    for (name, list) in groups.into_iter().filter(|g| !g.1.is_empty()) {
        if !name.is_empty() {
            let _ = write!(body, "<h3>{}</h3>", esc(&name));
        }
        body.push_str("<ul class=\"lectures\">");
        for l in list {
            body.push_str(&lecture_card(&site, ui, l, false));
        }
        body.push_str("</ul>");
    }
    body.push_str("</section>");

    // Replays of public lectures.
    let _ = write!(body, "<section class=\"replays\"><h2>{}</h2>", t.replays);
    let replays: Vec<_> = site
        .live
        .replays()
        .into_iter()
        // Something to watch (not a publisher that left at once), of a public lecture.
        .filter(|r| r.duration_s.is_some_and(|d| d >= 10.0) && public_stream(&site, &r.stream))
        .take(12)
        .collect();
    if replays.is_empty() {
        let _ = write!(body, "<p class=\"empty\">{}</p>", t.no_replays);
    } else {
        body.push_str("<ul class=\"lectures\">");
        for r in replays {
            let mins = r.duration_s.map(|d| (d / 60.0).round() as i64);
            let _ = write!(
                body,
                "<li class=\"lecture\"><a class=\"title\" href=\"/replay/{id}/index.m3u8\">{title}</a>\
                 <div class=\"meta\"><time>{when}</time>{dur}</div></li>",
                id = esc(&r.id),
                title = esc(r.title.as_deref().unwrap_or(&r.stream)),
                when = when(c, Some(r.started)),
                dur = mins
                    .map(|m| format!(" · {m} {}", t.minutes))
                    .unwrap_or_default(),
            );
        }
        body.push_str("</ul>");
    }
    body.push_str("</section>");
    page(ui, t.site, &body, StatusCode::OK)
}

/// `?ui=&token=`
#[derive(Debug, Default, Deserialize)]
pub struct LectureQueryParams {
    ui: Option<String>,
    token: Option<String>,
}

/// `GET /lectures/ID`: before the start a countdown and the booking form, during it the
/// player, after it the replay.
pub async fn lecture(
    State(site): State<Site>,
    Path(id): Path<i64>,
    Query(q): Query<LectureQueryParams>,
) -> Response {
    let ui = Ui::parse(q.ui.as_deref());
    let t = ui.t();
    let c = &site.catalogue;
    let l = match c.lecture(id).await {
        Ok(l) if l.visibility != Visibility::Private || q.token.is_some() => l,
        _ => return message(ui, StatusCode::NOT_FOUND, t.not_found, ""),
    };
    let token = q
        .token
        .as_deref()
        .filter(|tk| player_web::token_shaped(tk))
        .map(str::to_string);
    let now = jiff::Timestamp::now();
    let live = site.live.live_streams().contains(&l.stream);
    let mut body = String::new();
    let _ = write!(
        body,
        "<article class=\"lecture-page\"><h1>{}</h1>",
        esc(&l.title)
    );
    if let Some(cat) = &l.category {
        let _ = write!(body, "<p class=\"tag\">{}</p>", esc(ui.category(cat)));
    }
    body.push_str("<dl class=\"facts\">");
    if !l.speaker.is_empty() {
        let _ = write!(body, "<dt>{}</dt><dd>{}</dd>", t.speaker, esc(&l.speaker));
    }
    if let Some(s) = l.starts_at {
        let _ = write!(
            body,
            "<dt>{}</dt><dd><time datetime=\"{s}\">{}</time></dd>",
            t.starts_at,
            when(c, Some(s))
        );
    }
    if let Some(h) = &l.hall {
        let place = [
            h.town.as_str(),
            h.village.as_str(),
            h.name.as_str(),
            h.address.as_str(),
        ]
        .iter()
        .filter(|x| !x.is_empty())
        .map(|x| esc(x))
        .collect::<Vec<_>>()
        .join(" · ");
        let _ = write!(body, "<dt>{}</dt><dd>{place}</dd>", t.hall);
    }
    if let Some(left) = l.seats_left {
        let _ = write!(
            body,
            "<dt>{}</dt><dd class=\"seats-left\">{left}</dd>",
            t.seats_left
        );
    }
    body.push_str("</dl>");
    if !l.description.is_empty() {
        let _ = write!(body, "<p class=\"description\">{}</p>", esc(&l.description));
    }
    let tokq = token
        .as_deref()
        .map(|tk| format!("token={tk}"))
        .unwrap_or_default();
    let play_src = |path: &str| {
        let mut qs: Vec<String> = Vec::new();
        if !tokq.is_empty() {
            qs.push(tokq.clone());
        }
        if ui == Ui::En {
            qs.push("ui=en".into());
        }
        if qs.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{}", qs.join("&amp;"))
        }
    };
    let needs_token = l.visibility != Visibility::Public && token.is_none();
    if l.status == LectureStatus::Cancelled {
        let _ = write!(body, "<p class=\"banner cancelled\">{}</p>", t.cancelled);
    } else if live {
        let _ = write!(body, "<p class=\"banner live\">{}</p>", t.live);
        if needs_token {
            let _ = write!(body, "<p class=\"note\">{}</p>", t.needs_booking);
        } else {
            // Camera and microphone: a class whose raised hand the main hall accepts may
            // ask back from here (the browser still asks, and only after its click).
            let _ = write!(
                body,
                "<div class=\"player\"><iframe src=\"{}\" title=\"{}\" allow=\"autoplay; fullscreen; camera; microphone\" allowfullscreen></iframe></div>",
                play_src(&format!("/play/{}", l.stream)),
                esc(&l.title)
            );
        }
    } else if l.ends_at.is_some_and(|e| e < now) {
        let _ = write!(body, "<p class=\"banner\">{}</p>", t.ended);
        let (from, to) = (
            l.starts_at.map_or(0, |s| s.as_second() - 7200),
            l.ends_at.map_or(i64::MAX, |e| e.as_second() + 3600),
        );
        let replay = site
            .live
            .replays()
            .into_iter()
            .find(|r| r.stream == l.stream && (from..=to).contains(&r.started.as_second()));
        match replay {
            Some(r) if !needs_token => {
                // The web player plays the replay everywhere (hls.js where the browser has
                // no HLS of its own), with its dialects, seek bar, speeds and downloads.
                let src = play_src(&format!("/play/{}", esc(&l.stream)));
                let sep = if src.contains('?') { "&amp;" } else { "?" };
                let src = format!("{src}{sep}replay={}", esc(&r.id));
                let _ = write!(
                    body,
                    "<h2>{}</h2><div class=\"player\"><iframe src=\"{src}\" title=\"{}\" allow=\"autoplay; fullscreen\" allowfullscreen></iframe></div>",
                    t.watch_replay,
                    esc(&l.title)
                );
            }
            Some(_) => {
                let _ = write!(body, "<p class=\"note\">{}</p>", t.needs_booking);
            }
            None => {
                let _ = write!(body, "<p class=\"note\">{}</p>", t.replay_soon);
            }
        }
    } else if let Some(s) = l.starts_at {
        let left = (s.as_second() - now.as_second()).max(0);
        let _ = write!(
            body,
            "<p class=\"countdown-box\">{} <span class=\"countdown\" data-start=\"{s}\" data-d=\"{}\" data-h=\"{}\" data-m=\"{}\">{}</span></p>",
            t.starts_in,
            t.days,
            t.hours,
            t.minutes,
            countdown(ui, left)
        );
    }
    // Booking, before the start.
    if l.status == LectureStatus::Scheduled && !live && l.starts_at.is_some_and(|s| s > now) {
        let _ = write!(
            body,
            "<section id=\"book\" class=\"card\"><h2>{}</h2>",
            t.booking
        );
        let can_seat = l.seats.is_some();
        let can_online = l.visibility != Visibility::Private;
        if !l.booking_open || !(can_seat || l.visibility == Visibility::Booking) {
            if !l.booking_open {
                let _ = write!(body, "<p>{}</p>", t.booking_closed);
            }
        } else {
            let idem = format!("{:032x}", rand::random::<u128>());
            let _ = write!(
                body,
                "<form method=\"post\" action=\"/lectures/{id}/book\" class=\"booking\">\
                 <input type=\"hidden\" name=\"idem\" value=\"{idem}\">\
                 <input type=\"hidden\" name=\"ui\" value=\"{uiv}\">\
                 <label>{person} <small>({hint})</small><input name=\"person\" type=\"tel\" required maxlength=\"32\" autocomplete=\"tel\"></label>\
                 <label>{name}<input name=\"name\" maxlength=\"60\" autocomplete=\"name\"></label>",
                uiv = if ui == Ui::En { "en" } else { "zh" },
                person = t.person,
                hint = t.person_hint,
                name = t.name,
            );
            body.push_str("<fieldset class=\"kinds\">");
            if can_seat {
                let _ = write!(
                    body,
                    "<label><input type=\"radio\" name=\"kind\" value=\"seat\" checked> {} {}</label>",
                    t.seat,
                    seats_badge(ui, &l)
                );
            }
            if can_online {
                let _ = write!(
                    body,
                    "<label><input type=\"radio\" name=\"kind\" value=\"online\"{}> {}</label>",
                    if can_seat { "" } else { " checked" },
                    t.online
                );
            }
            let _ = write!(
                body,
                "</fieldset><button type=\"submit\" class=\"button\">{}</button></form>",
                t.confirm_booking
            );
        }
        body.push_str("</section>");
    }
    body.push_str("</article>");
    page(ui, &l.title, &body, StatusCode::OK)
}

/// "3 d 4 h 5 min" until the start.
fn countdown(ui: Ui, left: i64) -> String {
    let t = ui.t();
    let (d, h, m) = (left / 86_400, left % 86_400 / 3600, left % 3600 / 60);
    if d > 0 {
        format!("{d} {} {h} {} {m} {}", t.days, t.hours, t.minutes)
    } else if h > 0 {
        format!("{h} {} {m} {}", t.hours, t.minutes)
    } else {
        format!("{m} {}", t.minutes)
    }
}

/// The booking form.
#[derive(Debug, Deserialize)]
pub struct BookForm {
    person: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    idem: Option<String>,
    #[serde(default)]
    ui: Option<String>,
}

/// `POST /lectures/ID/book`: books, then shows the ticket.
pub async fn book(
    State(site): State<Site>,
    Path(id): Path<i64>,
    crate::Peer(ip): crate::Peer,
    Form(f): Form<BookForm>,
) -> Response {
    let ui = Ui::parse(f.ui.as_deref());
    let t = ui.t();
    let c = &site.catalogue;
    if !c.booking_allowed(ip) {
        return message(ui, StatusCode::TOO_MANY_REQUESTS, t.booking, t.too_many);
    }
    let kind = match f.kind.as_deref() {
        Some("online") => BookingKind::Online,
        _ => BookingKind::Seat,
    };
    let req = BookingRequest {
        person: f.person,
        name: f.name,
        contact: String::new(),
        kind,
    };
    let idem = f.idem.filter(|k| !k.is_empty() && k.len() <= 64);
    match c.book(id, &req, idem.as_deref()).await {
        Ok(outcome) => see_other(&ui.query(&format!(
            "/tickets/{}",
            url_enc(&outcome.booking.ticket_code)
        ))),
        Err(e) => {
            let status = match &e {
                catalogue::Error::NotFound(_) => StatusCode::NOT_FOUND,
                catalogue::Error::Conflict(_) => StatusCode::CONFLICT,
                catalogue::Error::Forbidden(_) => StatusCode::FORBIDDEN,
                catalogue::Error::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            if status == StatusCode::SERVICE_UNAVAILABLE {
                tracing::error!("booking: {e}");
                return message(
                    ui,
                    status,
                    t.booking,
                    "the booking could not be saved; try again",
                );
            }
            message(ui, status, t.booking, &e.to_string())
        }
    }
}

/// `?ui=`
#[derive(Debug, Default, Deserialize)]
pub struct UiQuery {
    ui: Option<String>,
}

/// `GET /tickets/CODE`: the booking, its QR code, and what can be done with it.
pub async fn ticket(
    State(site): State<Site>,
    Path(code): Path<String>,
    Query(q): Query<UiQuery>,
) -> Response {
    let ui = Ui::parse(q.ui.as_deref());
    let t = ui.t();
    let c = &site.catalogue;
    let Ok(b) = c.booking(&code).await else {
        return message(ui, StatusCode::NOT_FOUND, t.not_found, "");
    };
    let l = c.lecture(b.lecture_id).await.ok();
    let code = esc(&b.ticket_code);
    let mut body = format!("<section class=\"card ticket\"><h1>{}</h1>", t.your_ticket);
    if let Some(l) = &l {
        let _ = write!(
            body,
            "<p class=\"ticket-lecture\"><a href=\"{}\">{}</a><br><time>{}</time>{}</p>",
            ui.query(&format!("/lectures/{}", l.id)),
            esc(&l.title),
            when(c, l.starts_at),
            l.hall
                .as_ref()
                .map(|h| format!(" · {}", esc(&h.name)))
                .unwrap_or_default()
        );
    }
    let (class, status) = match b.status {
        BookingStatus::Confirmed => ("ok", t.status_confirmed),
        BookingStatus::Waiting => ("wait", t.status_waiting),
        BookingStatus::Cancelled => ("bad", t.status_cancelled),
    };
    let _ = write!(
        body,
        "<p class=\"status {class}\">{status} · {}</p>",
        match b.kind {
            BookingKind::Seat => t.seat,
            BookingKind::Online => t.online,
        }
    );
    if let Some(place) = b.waiting_list_place {
        let _ = write!(body, "<p>{} {place}</p>", t.waiting_place);
    }
    if b.status != BookingStatus::Cancelled {
        if b.kind == BookingKind::Seat {
            let _ = write!(
                body,
                "<figure class=\"qr\"><img src=\"/tickets/{code}/qr.svg\" alt=\"{code}\" width=\"240\" height=\"240\">\
                 <figcaption>{} · <strong class=\"code\">{code}</strong></figcaption></figure>",
                t.ticket_show
            );
        } else {
            let _ = write!(
                body,
                "<p>{} <strong class=\"code\">{code}</strong></p>",
                t.ticket_code
            );
        }
        if let (Some(tok), Some(l)) = (&b.playback_token, &l) {
            let _ = write!(
                body,
                "<p><a class=\"button\" href=\"{}\">{}</a></p>",
                ui.query(&format!("/lectures/{}?token={}", l.id, esc(tok))),
                t.watch_online
            );
        }
        let _ = write!(
            body,
            "<p><a href=\"{}\">{}</a></p>\
             <form method=\"post\" action=\"/tickets/{code}/cancel\"><input type=\"hidden\" name=\"ui\" value=\"{}\">\
             <button type=\"submit\" class=\"button secondary\">{}</button></form>",
            esc(&b.calendar_url),
            t.calendar,
            if ui == Ui::En { "en" } else { "zh" },
            t.cancel_booking
        );
    }
    body.push_str("</section>");
    page(ui, t.your_ticket, &body, StatusCode::OK)
}

/// `GET /tickets/CODE/qr.svg`: the ticket code as a QR code.
pub async fn ticket_qr(State(site): State<Site>, Path(code): Path<String>) -> Response {
    let Ok(b) = site.catalogue.booking(&code).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match qr_svg(&b.ticket_code) {
        Some(svg) => {
            let mut r = svg.into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("image/svg+xml"),
            );
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=3600"),
            );
            r
        }
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A QR code of `text` as SVG (medium error correction: a phone screen's glare).
pub fn qr_svg(text: &str) -> Option<String> {
    let code = qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::M).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(240, 240)
            .quiet_zone(true)
            .build(),
    )
}

/// `POST /tickets/CODE/cancel`.
pub async fn cancel(
    State(site): State<Site>,
    Path(code): Path<String>,
    crate::Peer(ip): crate::Peer,
    Form(f): Form<UiQuery>,
) -> Response {
    let ui = Ui::parse(f.ui.as_deref());
    let t = ui.t();
    let c = &site.catalogue;
    if !c.booking_allowed(ip) {
        return message(ui, StatusCode::TOO_MANY_REQUESTS, t.booking, t.too_many);
    }
    match c.cancel_booking(&code, false).await {
        Ok(b) => see_other(&ui.query(&format!("/tickets/{}", url_enc(&b.ticket_code)))),
        Err(e) => message(ui, StatusCode::CONFLICT, t.cancel_booking, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qr_codes_are_svg() {
        let svg = qr_svg("ABCD1234EFGH5678").unwrap();
        assert!(svg.starts_with("<?xml") || svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("<svg") && svg.contains("</svg>"));
    }

    #[test]
    fn countdowns() {
        assert_eq!(
            countdown(Ui::En, 3 * 86_400 + 4 * 3600 + 5 * 60),
            "3 d 4 h 5 min"
        );
        assert_eq!(countdown(Ui::Zh, 125), "2 分");
    }
}
