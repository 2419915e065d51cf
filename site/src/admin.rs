//! The operator console (`/admin`) and the door's check-in page.
//!
//! Every page needs a console session (`/admin/login`); every form carries the session's
//! CSRF token and is refused without it. The pages' scripts call the `/api/v1` operator
//! routes, and the console's own JSON routes (a lecture's asks back), with the same cookie
//! and the token in `X-CSRF-Token`.

use std::fmt::Write as _;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Form, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use catalogue::accounts::{self, LoginError, Session};
use catalogue::{
    CheckinOutcome, HallInput, Lecture, LectureInput, LecturePatch, LectureQuery, LectureStatus,
    SeriesInput, SeriesPatch, Visibility,
};
use serde::Deserialize;

use crate::{AskRequest, Site, Ui, esc, message, page, request_host, see_other, when};

pub(crate) fn router() -> Router<Site> {
    Router::new()
        .route("/admin", get(home))
        .route("/admin/login", get(login_page).post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/halls", get(halls).post(create_hall))
        .route("/admin/halls/{id}", post(update_hall))
        .route("/admin/lectures/new", get(new_lecture))
        .route("/admin/lectures", post(create_lecture))
        .route("/admin/lectures/{id}", get(lecture).post(update_lecture))
        .route("/admin/lectures/{id}/cancel", post(cancel_lecture))
        .route("/admin/lectures/{id}/rotate-key", post(rotate_key))
        .route("/admin/lectures/{id}/token", post(make_token))
        .route("/admin/lectures/{id}/questions.json", get(questions))
        .route("/admin/lectures/{id}/sites.json", get(sites))
        .route("/admin/lectures/{id}/asks.json", get(asks))
        .route("/admin/lectures/{id}/asks", post(accept_ask))
        .route("/admin/lectures/{id}/asks/{ask}/{action}", post(ask_action))
        .route("/admin/series", get(series).post(create_series))
        .route("/admin/series/{id}", post(update_series))
        .route("/admin/checkin/{id}", get(checkin_page).post(checkin))
}

/// A logged-in operator's request, with the page language. Without a session: to the
/// login page.
pub(crate) struct Console {
    session: Session,
    ui: Ui,
}

impl FromRequestParts<Site> for Console {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, site: &Site) -> Result<Self, Response> {
        let ui = Ui::parse(
            parts
                .uri
                .query()
                .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("ui="))),
        );
        let session = match accounts::session_cookie(&parts.headers) {
            Some(cookie) => site.catalogue.session(&cookie).await.ok().flatten(),
            None => None,
        };
        match session {
            Some(session) => Ok(Console { session, ui }),
            None => Err(see_other(&ui.query("/admin/login"))),
        }
    }
}

impl Console {
    fn csrf_field(&self) -> String {
        format!(
            "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
            esc(&self.session.csrf)
        )
    }

    #[allow(clippy::result_large_err)] // Returned once per form, straight to the client.
    fn check(&self, presented: &str) -> Result<(), Response> {
        if accounts::csrf_matches(&self.session, presented) {
            Ok(())
        } else {
            tracing::info!(operator = %self.session.operator.name, "console form without its CSRF token");
            Err(message(
                self.ui,
                StatusCode::FORBIDDEN,
                self.ui.t().console,
                self.ui.t().csrf_failed,
            ))
        }
    }

    /// The same check for the console's JSON routes: the token in `X-CSRF-Token`, a JSON
    /// error without it.
    #[allow(clippy::result_large_err)] // Returned once per request, straight to the client.
    fn check_header(&self, headers: &HeaderMap) -> Result<(), Response> {
        let presented = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if accounts::csrf_matches(&self.session, presented) {
            Ok(())
        } else {
            tracing::info!(operator = %self.session.operator.name, "console request without its CSRF token");
            Err(json_error(
                StatusCode::FORBIDDEN,
                "a console change needs its CSRF token (X-CSRF-Token)",
            ))
        }
    }

    /// The console's page: navigation, then `body`.
    fn page(&self, title: &str, body: &str) -> Response {
        let t = self.ui.t();
        let q = |p: &str| self.ui.query(p);
        let nav = format!(
            "<nav class=\"console\"><a href=\"{}\">{}</a><a href=\"{}\">{}</a><a href=\"{}\">{}</a><a href=\"{}\">{}</a>\
             <form method=\"post\" action=\"/admin/logout\" class=\"inline\">{}<button type=\"submit\">{} ({})</button></form></nav>\
             <meta name=\"csrf-token\" content=\"{}\">",
            q("/admin"),
            t.lectures,
            q("/admin/halls"),
            t.halls,
            q("/admin/series"),
            t.series,
            q("/admin/lectures/new"),
            t.new_lecture,
            self.csrf_field(),
            t.logout,
            esc(&self.session.operator.name),
            esc(&self.session.csrf),
        );
        page(self.ui, title, &format!("{nav}{body}"), StatusCode::OK)
    }

    fn fail(&self, e: catalogue::Error) -> Response {
        let status = match &e {
            catalogue::Error::NotFound(_) => StatusCode::NOT_FOUND,
            catalogue::Error::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            catalogue::Error::Conflict(_) => StatusCode::CONFLICT,
            catalogue::Error::Forbidden(_) => StatusCode::FORBIDDEN,
            _ => {
                tracing::error!("console: {e}");
                return message(
                    self.ui,
                    StatusCode::SERVICE_UNAVAILABLE,
                    self.ui.t().console,
                    "the catalogue's database failed; try again",
                );
            }
        };
        message(self.ui, status, self.ui.t().console, &e.to_string())
    }
}

// ---- login ----------------------------------------------------------------------------

/// `?ui=&failed=`
#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    ui: Option<String>,
    failed: Option<String>,
}

async fn login_page(Query(q): Query<LoginQuery>) -> Response {
    let ui = Ui::parse(q.ui.as_deref());
    let t = ui.t();
    let note = match q.failed.as_deref() {
        Some("wrong") => format!("<p class=\"status bad\">{}</p>", t.wrong_login),
        Some("many") => format!("<p class=\"status bad\">{}</p>", t.too_many),
        _ => String::new(),
    };
    page(
        ui,
        t.login,
        &format!(
            "<section class=\"card\"><h1>{console}</h1>{note}<form method=\"post\" action=\"/admin/login\" class=\"stack\">\
             <input type=\"hidden\" name=\"ui\" value=\"{uiv}\">\
             <label>{name}<input name=\"name\" required maxlength=\"64\" autocomplete=\"username\"></label>\
             <label>{pw}<input name=\"password\" type=\"password\" required maxlength=\"1024\" autocomplete=\"current-password\"></label>\
             <button type=\"submit\" class=\"button\">{login}</button></form></section>",
            console = t.console,
            uiv = if ui == Ui::En { "en" } else { "zh" },
            name = t.name,
            pw = t.password,
            login = t.login
        ),
        StatusCode::OK,
    )
}

/// The login form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    name: String,
    password: String,
    #[serde(default)]
    ui: Option<String>,
}

async fn login(
    State(site): State<Site>,
    crate::Peer(ip): crate::Peer,
    Form(f): Form<LoginForm>,
) -> Response {
    let ui = Ui::parse(f.ui.as_deref());
    match site.catalogue.login(&f.name, &f.password, ip).await {
        Ok(s) => {
            let mut r = see_other(&ui.query("/admin"));
            if let Ok(v) = HeaderValue::from_str(&accounts::set_cookie(
                &s,
                site.catalogue.settings().secure_cookies,
            )) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(LoginError::TooMany) => see_other(&ui.query("/admin/login?failed=many")),
        Err(LoginError::Wrong) => see_other(&ui.query("/admin/login?failed=wrong")),
        Err(LoginError::Failed) => message(
            ui,
            StatusCode::SERVICE_UNAVAILABLE,
            ui.t().login,
            "the catalogue's database failed; try again",
        ),
    }
}

/// A form with only its CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(site): State<Site>,
    console: Console,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = console.check(&f.csrf) {
        return r;
    }
    if let Some(cookie) = accounts::session_cookie(&headers) {
        let _ = site.catalogue.logout(&cookie).await;
    }
    let mut r = see_other(&console.ui.query("/admin/login"));
    if let Ok(v) = HeaderValue::from_str(&accounts::clear_cookie(
        site.catalogue.settings().secure_cookies,
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

// ---- home -----------------------------------------------------------------------------

fn visibility_word(ui: Ui, v: Visibility) -> &'static str {
    let t = ui.t();
    match v {
        Visibility::Public => t.public,
        Visibility::Booking => t.booking_required,
        Visibility::Private => t.private,
    }
}

async fn home(State(site): State<Site>, console: Console) -> Response {
    let ui = console.ui;
    let t = ui.t();
    let c = &site.catalogue;
    let from = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 7);
    let lectures = match c
        .lectures(&LectureQuery {
            from: Some(from),
            include_private: true,
            limit: Some(500),
            ..Default::default()
        })
        .await
    {
        Ok(l) => l,
        Err(e) => return console.fail(e),
    };
    let live = site.live.live_streams();
    let mut body = format!(
        "<h1>{}</h1><p><a class=\"button\" href=\"{}\">{}</a></p><table class=\"list\"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        t.lectures,
        ui.query("/admin/lectures/new"),
        t.new_lecture,
        t.starts_at,
        t.title,
        t.hall,
        t.seats_left,
        t.visibility
    );
    for l in &lectures {
        let _ = write!(
            body,
            "<tr{cls}><td>{when}</td><td><a href=\"{href}\">{title}</a>{live}{cancelled}</td><td>{hall}</td><td>{seats}</td><td>{vis}</td></tr>",
            cls = if l.status == LectureStatus::Cancelled {
                " class=\"cancelled\""
            } else {
                ""
            },
            when = when(c, l.starts_at),
            href = ui.query(&format!("/admin/lectures/{}", l.id)),
            title = esc(&l.title),
            live = if live.contains(&l.stream) {
                format!(" <span class=\"badge live\">{}</span>", t.live)
            } else {
                String::new()
            },
            cancelled = if l.status == LectureStatus::Cancelled {
                format!(" <span class=\"badge\">{}</span>", t.cancelled)
            } else {
                String::new()
            },
            hall = l.hall.as_ref().map(|h| esc(&h.name)).unwrap_or_default(),
            seats = match (l.seats_left, l.seats) {
                (Some(left), Some(all)) => format!("{left}/{all}"),
                _ => "–".into(),
            },
            vis = visibility_word(ui, l.visibility),
        );
    }
    body.push_str("</tbody></table>");
    console.page(t.console, &body)
}

// ---- halls ----------------------------------------------------------------------------

/// A hall's form.
#[derive(Debug, Deserialize)]
pub struct HallForm {
    #[serde(default)]
    csrf: String,
    name: String,
    #[serde(default)]
    town: String,
    #[serde(default)]
    village: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    seats: String,
}

fn number(v: &str) -> Result<Option<i64>, catalogue::Error> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| catalogue::Error::Invalid(format!("{v:?} is not a number")))
}

impl HallForm {
    fn input(&self) -> Result<HallInput, catalogue::Error> {
        Ok(HallInput {
            name: Some(self.name.clone()),
            town: Some(self.town.clone()),
            village: Some(self.village.clone()),
            address: Some(self.address.clone()),
            seats: number(&self.seats)?,
        })
    }
}

fn hall_fields(ui: Ui, h: Option<&catalogue::Hall>) -> String {
    let t = ui.t();
    let v = |f: fn(&catalogue::Hall) -> String| h.map(f).map(|s| esc(&s)).unwrap_or_default();
    format!(
        "<label>{}<input name=\"name\" required maxlength=\"200\" value=\"{}\"></label>\
         <label>{}<input name=\"town\" maxlength=\"200\" value=\"{}\"></label>\
         <label>{}<input name=\"village\" maxlength=\"200\" value=\"{}\"></label>\
         <label>{}<input name=\"address\" maxlength=\"500\" value=\"{}\"></label>\
         <label>{}<input name=\"seats\" type=\"number\" min=\"0\" value=\"{}\"></label>",
        t.name,
        v(|h| h.name.clone()),
        t.town,
        v(|h| h.town.clone()),
        t.village,
        v(|h| h.village.clone()),
        t.address,
        v(|h| h.address.clone()),
        t.seats,
        v(|h| h.seats.map(|s| s.to_string()).unwrap_or_default()),
    )
}

async fn halls(State(site): State<Site>, console: Console) -> Response {
    let ui = console.ui;
    let t = ui.t();
    let list = match site.catalogue.halls().await {
        Ok(l) => l,
        Err(e) => return console.fail(e),
    };
    let mut body = format!("<h1>{}</h1>", t.halls);
    for h in &list {
        let _ = write!(
            body,
            "<details class=\"card\"><summary>{} <small>{}</small></summary>\
             <form method=\"post\" action=\"{}\" class=\"stack\">{}{}<button type=\"submit\">{}</button></form></details>",
            esc(&h.name),
            esc(&h.town),
            ui.query(&format!("/admin/halls/{}", h.id)),
            console.csrf_field(),
            hall_fields(ui, Some(h)),
            t.save
        );
    }
    let _ = write!(
        body,
        "<section class=\"card\"><h2>{}</h2><form method=\"post\" action=\"{}\" class=\"stack\">{}{}<button type=\"submit\" class=\"button\">{}</button></form></section>",
        t.new_hall,
        ui.query("/admin/halls"),
        console.csrf_field(),
        hall_fields(ui, None),
        t.create
    );
    console.page(t.halls, &body)
}

async fn create_hall(
    State(site): State<Site>,
    console: Console,
    Form(f): Form<HallForm>,
) -> Response {
    if let Err(r) = console.check(&f.csrf) {
        return r;
    }
    let result = match f.input() {
        Ok(input) => site.catalogue.create_hall(&input).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => see_other(&console.ui.query("/admin/halls")),
        Err(e) => console.fail(e),
    }
}

async fn update_hall(
    State(site): State<Site>,
    console: Console,
    Path(id): Path<i64>,
    Form(f): Form<HallForm>,
) -> Response {
    if let Err(r) = console.check(&f.csrf) {
        return r;
    }
    let result = match f.input() {
        Ok(input) => site.catalogue.update_hall(id, &input).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => see_other(&console.ui.query("/admin/halls")),
        Err(e) => console.fail(e),
    }
}

// ---- lectures -------------------------------------------------------------------------

/// A lecture's form (create or edit).
#[derive(Debug, Deserialize)]
pub struct LectureForm {
    #[serde(default)]
    csrf: String,
    title: String,
    #[serde(default)]
    speaker: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    hall_id: String,
    #[serde(default)]
    stream: String,
    #[serde(default)]
    dialects: String,
    #[serde(default)]
    visibility: String,
    starts_at: String,
    ends_at: String,
    #[serde(default)]
    seats: String,
}

/// A `datetime-local` value in the catalogue's time zone.
fn local_time(site: &Site, v: &str, field: &str) -> Result<jiff::Timestamp, catalogue::Error> {
    let dt: jiff::civil::DateTime = v.trim().parse().map_err(|_| {
        catalogue::Error::Invalid(format!("{field}: a date and time (YYYY-MM-DDTHH:MM)"))
    })?;
    dt.to_zoned_datetime(site.catalogue.settings().timezone.clone())
        .map(|z| z.timestamp())
        .map_err(|e| catalogue::Error::Invalid(format!("{field}: {e}")))
}

fn input_time(site: &Site, t: Option<jiff::Timestamp>) -> String {
    t.map(|t| {
        crate::local(&site.catalogue, t)
            .strftime("%Y-%m-%dT%H:%M")
            .to_string()
    })
    .unwrap_or_default()
}

fn dialect_list(v: &str) -> Vec<String> {
    v.split([',', ' ', '，'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_visibility(v: &str) -> Visibility {
    Visibility::parse(v).unwrap_or_default()
}

async fn lecture_fields(site: &Site, ui: Ui, l: Option<&Lecture>) -> String {
    let t = ui.t();
    let c = &site.catalogue;
    let (cats, halls) = tokio::try_join!(c.categories(), c.halls()).unwrap_or_default();
    let mut cat_opts = String::from("<option value=\"\">–</option>");
    for cat in &cats {
        let sel = l
            .and_then(|l| l.category.as_ref())
            .is_some_and(|x| x.id == cat.id);
        let _ = write!(
            cat_opts,
            "<option value=\"{}\"{}>{}</option>",
            esc(&cat.slug),
            if sel { " selected" } else { "" },
            esc(ui.category(cat))
        );
    }
    let mut hall_opts = String::from("<option value=\"\">–</option>");
    for h in &halls {
        let sel = l
            .and_then(|l| l.hall.as_ref())
            .is_some_and(|x| x.id == h.id);
        let _ = write!(
            hall_opts,
            "<option value=\"{}\"{}>{}</option>",
            h.id,
            if sel { " selected" } else { "" },
            esc(&h.name)
        );
    }
    let vis = l.map(|l| l.visibility).unwrap_or_default();
    let mut vis_opts = String::new();
    for v in [Visibility::Public, Visibility::Booking, Visibility::Private] {
        let _ = write!(
            vis_opts,
            "<option value=\"{}\"{}>{}</option>",
            v.as_str(),
            if v == vis { " selected" } else { "" },
            visibility_word(ui, v)
        );
    }
    let stream = match l {
        Some(l) => format!(
            "<label>{}<input name=\"stream\" value=\"{}\" readonly></label>",
            t.stream,
            esc(&l.stream)
        ),
        None => format!(
            "<label>{}<input name=\"stream\" required pattern=\"[A-Za-z0-9._-]{{1,128}}\" maxlength=\"128\"></label>",
            t.stream
        ),
    };
    format!(
        "<label>{title}<input name=\"title\" required maxlength=\"200\" value=\"{tv}\"></label>\
         <label>{speaker}<input name=\"speaker\" maxlength=\"200\" value=\"{sv}\"></label>\
         <label>{desc}<textarea name=\"description\" maxlength=\"5000\" rows=\"4\">{dv}</textarea></label>\
         <label>{category}<select name=\"category\">{cat_opts}</select></label>\
         <label>{hall}<select name=\"hall_id\">{hall_opts}</select></label>\
         {stream}\
         <label>{dialects}<input name=\"dialects\" placeholder=\"cmn, yue\" value=\"{dl}\"></label>\
         <label>{visibility}<select name=\"visibility\">{vis_opts}</select></label>\
         <label>{starts}<input name=\"starts_at\" type=\"datetime-local\" required value=\"{st}\"></label>\
         <label>{ends}<input name=\"ends_at\" type=\"datetime-local\" required value=\"{en}\"></label>\
         <label>{seats}<input name=\"seats\" type=\"number\" min=\"0\" value=\"{se}\"></label>",
        title = t.title,
        tv = l.map(|l| esc(&l.title)).unwrap_or_default(),
        speaker = t.speaker,
        sv = l.map(|l| esc(&l.speaker)).unwrap_or_default(),
        desc = t.description,
        dv = l.map(|l| esc(&l.description)).unwrap_or_default(),
        category = t.category,
        hall = t.hall,
        dialects = t.dialects,
        dl = l.map(|l| esc(&l.dialects.join(", "))).unwrap_or_default(),
        visibility = t.visibility,
        starts = t.starts_at,
        st = input_time(site, l.and_then(|l| l.starts_at)),
        ends = t.ends_at,
        en = input_time(site, l.and_then(|l| l.ends_at)),
        seats = t.seats,
        se = l
            .and_then(|l| l.seats)
            .map(|s| s.to_string())
            .unwrap_or_default(),
    )
}

async fn new_lecture(State(site): State<Site>, console: Console) -> Response {
    let ui = console.ui;
    let t = ui.t();
    let body = format!(
        "<h1>{}</h1><form method=\"post\" action=\"{}\" class=\"stack card\">{}{}<button type=\"submit\" class=\"button\">{}</button></form>",
        t.new_lecture,
        ui.query("/admin/lectures"),
        console.csrf_field(),
        lecture_fields(&site, ui, None).await,
        t.create
    );
    console.page(t.new_lecture, &body)
}

async fn create_lecture(
    State(site): State<Site>,
    console: Console,
    Form(f): Form<LectureForm>,
) -> Response {
    if let Err(r) = console.check(&f.csrf) {
        return r;
    }
    let input = (|| -> Result<LectureInput, catalogue::Error> {
        Ok(LectureInput {
            title: f.title.clone(),
            speaker: f.speaker.clone(),
            description: f.description.clone(),
            category: Some(f.category.clone()).filter(|s| !s.is_empty()),
            hall_id: number(&f.hall_id)?,
            stream: f.stream.clone(),
            dialects: dialect_list(&f.dialects),
            visibility: parse_visibility(&f.visibility),
            starts_at: local_time(&site, &f.starts_at, "starts_at")?,
            ends_at: local_time(&site, &f.ends_at, "ends_at")?,
            seats: number(&f.seats)?,
        })
    })();
    let result = match input {
        Ok(i) => site.catalogue.create_lecture(&i).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(l) => see_other(&console.ui.query(&format!("/admin/lectures/{}", l.id))),
        Err(e) => console.fail(e),
    }
}

async fn update_lecture(
    State(site): State<Site>,
    console: Console,
    Path(id): Path<i64>,
    Form(f): Form<LectureForm>,
) -> Response {
    if let Err(r) = console.check(&f.csrf) {
        return r;
    }
    let patch = (|| -> Result<LecturePatch, catalogue::Error> {
        Ok(LecturePatch {
            title: Some(f.title.clone()),
            speaker: Some(f.speaker.clone()),
            description: Some(f.description.clone()),
            category: Some(f.category.clone()).filter(|s| !s.is_empty()),
            hall_id: number(&f.hall_id)?,
            dialects: Some(dialect_list(&f.dialects)),
            visibility: Some(parse_visibility(&f.visibility)),
            starts_at: Some(local_time(&site, &f.starts_at, "starts_at")?),
            ends_at: Some(local_time(&site, &f.ends_at, "ends_at")?),
            seats: number(&f.seats)?,
        })
    })();
    let result = match patch {
        Ok(p) => site.catalogue.update_lecture(id, &p).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => see_other(&console.ui.query(&format!("/admin/lectures/{id}"))),
        Err(e) => console.fail(e),
    }
}

async fn cancel_lecture(
    State(site): State<Site>,
    console: Console,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = console.check(&f.csrf) {
        return r;
    }
    match site.catalogue.cancel_lecture(id).await {
        Ok(_) => see_other(&console.ui.query(&format!("/admin/lectures/{id}"))),
        Err(e) => console.fail(e),
    }
}

async fn rotate_key(
    State(site): State<Site>,
    console: Console,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = console.check(&f.csrf) {
        return r;
    }
    let c = &site.catalogue;
    let result = match c.lecture(id).await {
        Ok(l) => c.rotate_key(&l.stream).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => see_other(&console.ui.query(&format!("/admin/lectures/{id}#stream"))),
        Err(e) => console.fail(e),
    }
}

/// How long a viewing pass should work.
#[derive(Debug, Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
    hours: i64,
}

async fn make_token(
    State(site): State<Site>,
    console: Console,
    Path(id): Path<i64>,
    Form(f): Form<TokenForm>,
) -> Response {
    if let Err(r) = console.check(&f.csrf) {
        return r;
    }
    let ui = console.ui;
    let t = ui.t();
    match site.catalogue.playback_token(id, f.hours).await {
        Ok(tok) => {
            let link = format!("/lectures/{id}?token={}", esc(&tok.token));
            console.page(
                t.playback_token,
                &format!(
                    "<section class=\"card\"><h1>{}</h1><p><code class=\"secret\">{}</code></p>\
                     <p>{}: {}</p><p><a href=\"{link}\">{link}</a></p><p><a href=\"{}\">{}</a></p></section>",
                    t.playback_token,
                    esc(&tok.token),
                    t.ends_at,
                    when(&site.catalogue, Some(tok.expires_at)),
                    ui.query(&format!("/admin/lectures/{id}")),
                    t.lectures
                ),
            )
        }
        Err(e) => console.fail(e),
    }
}

async fn lecture(
    State(site): State<Site>,
    console: Console,
    Path(id): Path<i64>,
    scheme: Option<axum::Extension<axum::http::uri::Scheme>>,
    headers: HeaderMap,
) -> Response {
    let ui = console.ui;
    let t = ui.t();
    let c = &site.catalogue;
    let l = match c.lecture(id).await {
        Ok(l) => l,
        Err(e) => return console.fail(e),
    };
    let (bookings, key) = match tokio::try_join!(c.lecture_bookings(id), c.stream_key(&l.stream)) {
        Ok(x) => x,
        Err(e) => return console.fail(e),
    };
    let live = site.live.live_streams().contains(&l.stream);
    let csrf = console.csrf_field();
    let q = |p: &str| ui.query(p);
    let mut body = format!(
        "<h1>{}{}</h1><p><a href=\"{}\">{}</a> · <a href=\"{}\">{}</a></p>",
        esc(&l.title),
        if l.status == LectureStatus::Cancelled {
            format!(" <span class=\"badge\">{}</span>", t.cancelled)
        } else {
            String::new()
        },
        q(&format!("/lectures/{id}")),
        t.site,
        q(&format!("/admin/checkin/{id}")),
        t.checkin_page
    );

    // Live dashboard and questions (filled by the page's script from /api/v1/streams).
    let _ = write!(
        body,
        "<section class=\"card\" id=\"dashboard\"><h2>{dash}</h2>\
         <div class=\"dashboard\" data-stream=\"{stream}\" data-questions=\"/admin/lectures/{id}/questions.json\" \
         data-t-not-live=\"{notlive}\" data-t-bitrate=\"{bitrate}\" data-t-fps=\"{fps}\" data-t-keyframe=\"{kf}\" data-t-silent=\"{silent}\" \
         data-t-levels=\"{levels}\" data-t-viewers=\"{viewers}\" data-t-none=\"{none}\">\
         <p class=\"state\">{state}</p><dl class=\"stats\"></dl></div>\
         <h3>{questions}</h3><ul class=\"questions\"></ul>\
         <h3>{ask_back}</h3><div class=\"asks\" data-asks=\"/admin/lectures/{id}/asks.json\" data-ask-post=\"/admin/lectures/{id}/asks\" \
         data-t-accept=\"{accept}\" data-t-broadcast=\"{broadcast}\" data-t-off-air=\"{off_air}\" data-t-end=\"{end}\" \
         data-t-unmute=\"{unmute}\" data-t-mute=\"{mute}\" data-t-invited=\"{s_invited}\" data-t-connected=\"{s_connected}\" \
         data-t-on-air=\"{s_on_air}\" data-t-ended=\"{s_ended}\" data-t-none=\"{ask_none}\">\
         <p class=\"note\">{ask_note}</p><ul class=\"ask-list\"></ul></div>\
         <h3>{sites}</h3><table class=\"sites\" data-sites=\"/admin/lectures/{id}/sites.json\"><thead><tr>\
         <th>{c0}</th><th>{c1}</th><th>{c2}</th><th>{c3}</th><th>{c4}</th></tr></thead><tbody></tbody></table></section>",
        dash = t.dashboard,
        stream = esc(&l.stream),
        notlive = t.not_live,
        bitrate = t.bitrate,
        fps = t.fps,
        kf = t.keyframe,
        silent = t.silent,
        levels = t.levels,
        viewers = t.viewers,
        none = t.none,
        state = if live { t.live } else { t.not_live },
        questions = t.questions,
        ask_back = t.ask_back,
        accept = t.ask_accept,
        broadcast = t.ask_broadcast,
        off_air = t.ask_off_air,
        end = t.ask_end,
        unmute = t.ask_unmute,
        mute = t.ask_mute,
        s_invited = t.ask_states[0],
        s_connected = t.ask_states[1],
        s_on_air = t.ask_states[2],
        s_ended = t.ask_states[3],
        ask_none = t.ask_none,
        ask_note = t.ask_note,
        sites = t.sites,
        c0 = t.sites_columns[0],
        c1 = t.sites_columns[1],
        c2 = t.sites_columns[2],
        c3 = t.sites_columns[3],
        c4 = t.sites_columns[4],
    );

    // How to stream.
    let host = esc(&request_host(&headers));
    let authority = esc(&crate::request_authority(&headers));
    let (rtmp_port, srt_port) = site.ports();
    let stream = &l.stream;
    let k = &key.publish_key;
    let rtmp = match rtmp_port {
        Some(p) => format!(
            "<dt>{}</dt><dd><code>rtmp://{host}:{p}/live</code></dd><dt>{}</dt><dd><code class=\"secret\">{}?key={}</code></dd>",
            t.obs_server,
            t.obs_key,
            esc(stream),
            esc(k)
        ),
        None => String::new(),
    };
    let srt = match srt_port {
        Some(p) => format!(
            "<dt>{}</dt><dd><code class=\"secret\">srt://{host}:{p}?streamid=publish:{}:{}</code></dd>",
            t.srt_url,
            esc(stream),
            esc(k)
        ),
        None => String::new(),
    };
    let _ = write!(
        body,
        "<section class=\"card\" id=\"stream\"><h2>{how}</h2><dl class=\"howto\">{rtmp}{srt}\
         <dt>{whip}</dt><dd><code>{scheme}://{authority}/whip/{stream}</code></dd>\
         <dt>{whip_token}</dt><dd><code class=\"secret\">{k}</code></dd></dl>{prev}\
         <form method=\"post\" action=\"{rotate}\">{csrf}<button type=\"submit\">{rotate_key}</button> <small>{note}</small></form></section>",
        how = t.how_to_stream,
        // The scheme this page came over (the HTTP edge tells; HTTPS pages get https).
        scheme = scheme.map_or("http", |axum::Extension(s)| {
            if s == axum::http::uri::Scheme::HTTPS {
                "https"
            } else {
                "http"
            }
        }),
        whip = t.whip_url,
        whip_token = t.whip_token,
        stream = esc(stream),
        k = esc(k),
        prev = key
            .previous_valid_until
            .map(|u| format!("<p><small>← {}</small></p>", when(c, Some(u))))
            .unwrap_or_default(),
        rotate = q(&format!("/admin/lectures/{id}/rotate-key")),
        rotate_key = t.rotate_key,
        note = t.rotate_note,
    );

    // Bookings and check-ins.
    let checked = bookings
        .iter()
        .filter(|b| b.checked_in_at.is_some())
        .count();
    let _ = write!(
        body,
        "<section class=\"card\" id=\"bookings\"><h2>{} ({}) · {} {checked}</h2>\
         <p><a href=\"/api/v1/lectures/{id}/attendance.csv\">{}</a></p>\
         <table class=\"list\"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        t.bookings,
        bookings.len(),
        t.checked_in,
        t.export_csv,
        t.name,
        t.ticket_code,
        t.booking,
        t.checked_in,
    );
    for b in &bookings {
        let _ = write!(
            body,
            "<tr><td>{}</td><td><code>{}</code></td><td>{} · {}</td><td>{}</td></tr>",
            esc(&b.name),
            esc(&b.ticket_code),
            b.kind.as_str(),
            b.status.as_str(),
            when(c, b.checked_in_at)
        );
    }
    body.push_str("</tbody></table></section>");

    // Edit, move, cancel; a viewing pass.
    let _ = write!(
        body,
        "<section class=\"card\"><h2>{save}</h2><form method=\"post\" action=\"{edit}\" class=\"stack\">{csrf}{fields}<button type=\"submit\" class=\"button\">{save}</button></form>\
         <form method=\"post\" action=\"{cancel}\" class=\"inline\">{csrf}<button type=\"submit\" class=\"danger\">{cancel_l}</button></form></section>\
         <section class=\"card\"><h2>{pt}</h2><form method=\"post\" action=\"{tok}\" class=\"inline\">{csrf}\
         <label>{hv} <input name=\"hours\" type=\"number\" min=\"1\" max=\"8784\" value=\"24\"></label> <button type=\"submit\">{mk}</button></form></section>",
        save = t.save,
        edit = q(&format!("/admin/lectures/{id}")),
        fields = lecture_fields(&site, ui, Some(&l)).await,
        cancel = q(&format!("/admin/lectures/{id}/cancel")),
        cancel_l = t.cancel_lecture,
        pt = t.playback_token,
        tok = q(&format!("/admin/lectures/{id}/token")),
        hv = t.hours_valid,
        mk = t.make_token,
    );
    console.page(&l.title, &body)
}

async fn questions(State(site): State<Site>, console: Console, Path(id): Path<i64>) -> Response {
    match site.catalogue.lecture(id).await {
        Ok(l) => {
            let mut r = axum::Json(serde_json::json!({
                "questions": site.live.questions(&l.stream)
            }))
            .into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => console.fail(e),
    }
}

/// The lecture's roster of sub-venues, for the dashboard.
async fn sites(State(site): State<Site>, console: Console, Path(id): Path<i64>) -> Response {
    match site.catalogue.lecture(id).await {
        Ok(l) => {
            let mut r = axum::Json(site.live.sites(&l.stream)).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => console.fail(e),
    }
}

// ---- asking back ----------------------------------------------------------------------

/// A JSON answer that no cache keeps.
fn json_reply(status: StatusCode, v: serde_json::Value) -> Response {
    let mut r = (status, axum::Json(v)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json_error(status: StatusCode, message: &str) -> Response {
    json_reply(status, serde_json::json!({ "error": message }))
}

/// The lecture's stream, or the JSON error for a missing one.
#[allow(clippy::result_large_err)] // Returned once per request, straight to the client.
async fn lecture_stream(site: &Site, id: i64) -> Result<String, Response> {
    match site.catalogue.lecture(id).await {
        Ok(l) => Ok(l.stream),
        Err(catalogue::Error::NotFound(m)) => Err(json_error(StatusCode::NOT_FOUND, &m)),
        Err(e) => {
            tracing::error!("console: {e}");
            Err(json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the catalogue's database failed; try again",
            ))
        }
    }
}

/// What the relay says about an ask action, as the console's answer.
fn ask_reply(ok: StatusCode, r: Result<serde_json::Value, (u16, String)>) -> Response {
    match r {
        Ok(v) => json_reply(ok, v),
        Err((status, message)) => json_error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &message,
        ),
    }
}

/// The lecture's asks back, for the dashboard (polled).
async fn asks(State(site): State<Site>, _console: Console, Path(id): Path<i64>) -> Response {
    match lecture_stream(&site, id).await {
        Ok(stream) => json_reply(StatusCode::OK, site.live.asks(&stream)),
        Err(r) => r,
    }
}

/// `{"question": N}`: the raised hand to accept.
#[derive(Debug, Deserialize)]
struct AcceptBody {
    question: u64,
}

/// Accepts a raised hand: its site is invited to send its camera and microphone.
async fn accept_ask(
    State(site): State<Site>,
    console: Console,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = console.check_header(&headers) {
        return r;
    }
    let question = match serde_json::from_slice::<AcceptBody>(&body) {
        Ok(b) => b.question,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("the body is {{\"question\": ID}} (a raised hand's id): {e}"),
            );
        }
    };
    let stream = match lecture_stream(&site, id).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    tracing::info!(operator = %console.session.operator.name, lecture = %stream, question, "ask back: raised hand accepted");
    ask_reply(
        StatusCode::CREATED,
        site.live.ask(&stream, AskRequest::Accept { question }),
    )
}

/// `broadcast`, `off_air` or `end` of one ask.
async fn ask_action(
    State(site): State<Site>,
    console: Console,
    Path((id, ask, action)): Path<(i64, u64, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = console.check_header(&headers) {
        return r;
    }
    let request = match action.as_str() {
        "broadcast" => AskRequest::Broadcast(ask),
        "off_air" => AskRequest::OffAir(ask),
        "end" => AskRequest::End(ask),
        _ => {
            return json_error(
                StatusCode::NOT_FOUND,
                "an ask's actions are broadcast, off_air and end",
            );
        }
    };
    let stream = match lecture_stream(&site, id).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    tracing::info!(operator = %console.session.operator.name, lecture = %stream, ask, action = %action, "ask back");
    ask_reply(StatusCode::OK, site.live.ask(&stream, request))
}

// ---- series ---------------------------------------------------------------------------

/// A new weekly series.
#[derive(Debug, Deserialize)]
pub struct SeriesForm {
    #[serde(default)]
    csrf: String,
    title: String,
    #[serde(default)]
    speaker: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    hall_id: String,
    stream: String,
    #[serde(default)]
    dialects: String,
    #[serde(default)]
    visibility: String,
    #[serde(default)]
    seats: String,
    weekday: i64,
    start_time: String,
    duration_minutes: i64,
    first_date: String,
    last_date: String,
}

/// Changes to a series.
#[derive(Debug, Deserialize)]
pub struct SeriesEditForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    start_time: String,
    #[serde(default)]
    duration_minutes: String,
    #[serde(default)]
    last_date: String,
    #[serde(default)]
    seats: String,
}

async fn series(State(site): State<Site>, console: Console) -> Response {
    let ui = console.ui;
    let t = ui.t();
    let c = &site.catalogue;
    let (list, halls, cats) = match tokio::try_join!(c.series_list(), c.halls(), c.categories()) {
        Ok(x) => x,
        Err(e) => return console.fail(e),
    };
    let csrf = console.csrf_field();
    let mut body = format!("<h1>{}</h1>", t.series);
    for s in &list {
        let i = &s.input;
        let _ = write!(
            body,
            "<details class=\"card\"><summary>{} <small>{} {} · {} {}</small></summary>\
             <form method=\"post\" action=\"{}\" class=\"stack\">{csrf}\
             <label>{}<input name=\"title\" value=\"{}\"></label>\
             <label>{}<input name=\"start_time\" type=\"time\" value=\"{}\"></label>\
             <label>{}<input name=\"duration_minutes\" type=\"number\" min=\"1\" value=\"{}\"></label>\
             <label>{}<input name=\"last_date\" type=\"date\" value=\"{}\"></label>\
             <label>{}<input name=\"seats\" type=\"number\" min=\"0\" value=\"{}\"></label>\
             <button type=\"submit\">{}</button></form></details>",
            esc(&i.title),
            i.weekday,
            esc(&i.start_time),
            s.occurrences.len(),
            t.occurrences,
            ui.query(&format!("/admin/series/{}", s.id)),
            t.title,
            esc(&i.title),
            t.start_time,
            esc(&i.start_time),
            t.duration,
            i.duration_minutes,
            t.last_date,
            esc(&i.last_date),
            t.seats,
            i.seats.map(|x| x.to_string()).unwrap_or_default(),
            t.save,
        );
    }
    let mut hall_opts = String::from("<option value=\"\">–</option>");
    for h in &halls {
        let _ = write!(
            hall_opts,
            "<option value=\"{}\">{}</option>",
            h.id,
            esc(&h.name)
        );
    }
    let mut cat_opts = String::from("<option value=\"\">–</option>");
    for cat in &cats {
        let _ = write!(
            cat_opts,
            "<option value=\"{}\">{}</option>",
            esc(&cat.slug),
            esc(ui.category(cat))
        );
    }
    let _ = write!(
        body,
        "<section class=\"card\"><h2>{new}</h2><form method=\"post\" action=\"{action}\" class=\"stack\">{csrf}\
         <label>{title}<input name=\"title\" required maxlength=\"200\"></label>\
         <label>{speaker}<input name=\"speaker\" maxlength=\"200\"></label>\
         <label>{desc}<textarea name=\"description\" rows=\"3\" maxlength=\"5000\"></textarea></label>\
         <label>{category}<select name=\"category\">{cat_opts}</select></label>\
         <label>{hall}<select name=\"hall_id\">{hall_opts}</select></label>\
         <label>{stream}<input name=\"stream\" required pattern=\"[A-Za-z0-9._-]{{1,128}}\"></label>\
         <label>{dialects}<input name=\"dialects\" placeholder=\"cmn, yue\"></label>\
         <label>{visibility}<select name=\"visibility\"><option value=\"public\">{public}</option><option value=\"booking\">{booking}</option><option value=\"private\">{private}</option></select></label>\
         <label>{seats}<input name=\"seats\" type=\"number\" min=\"0\"></label>\
         <label>{weekday}<input name=\"weekday\" type=\"number\" min=\"1\" max=\"7\" required value=\"2\"></label>\
         <label>{start}<input name=\"start_time\" type=\"time\" required value=\"19:30\"></label>\
         <label>{duration}<input name=\"duration_minutes\" type=\"number\" min=\"1\" required value=\"90\"></label>\
         <label>{first}<input name=\"first_date\" type=\"date\" required></label>\
         <label>{last}<input name=\"last_date\" type=\"date\" required></label>\
         <button type=\"submit\" class=\"button\">{create}</button></form></section>",
        new = t.new_series,
        action = ui.query("/admin/series"),
        title = t.title,
        speaker = t.speaker,
        desc = t.description,
        category = t.category,
        hall = t.hall,
        stream = t.stream,
        dialects = t.dialects,
        visibility = t.visibility,
        public = t.public,
        booking = t.booking_required,
        private = t.private,
        seats = t.seats,
        weekday = t.weekday,
        start = t.start_time,
        duration = t.duration,
        first = t.first_date,
        last = t.last_date,
        create = t.create,
    );
    console.page(t.series, &body)
}

async fn create_series(
    State(site): State<Site>,
    console: Console,
    Form(f): Form<SeriesForm>,
) -> Response {
    if let Err(r) = console.check(&f.csrf) {
        return r;
    }
    let input = (|| -> Result<SeriesInput, catalogue::Error> {
        Ok(SeriesInput {
            title: f.title.clone(),
            speaker: f.speaker.clone(),
            description: f.description.clone(),
            category: Some(f.category.clone()).filter(|s| !s.is_empty()),
            hall_id: number(&f.hall_id)?,
            stream: f.stream.clone(),
            dialects: dialect_list(&f.dialects),
            visibility: parse_visibility(&f.visibility),
            seats: number(&f.seats)?,
            weekday: f.weekday,
            start_time: f.start_time.clone(),
            duration_minutes: f.duration_minutes,
            first_date: f.first_date.clone(),
            last_date: f.last_date.clone(),
        })
    })();
    let result = match input {
        Ok(i) => site.catalogue.create_series(&i).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => see_other(&console.ui.query("/admin/series")),
        Err(e) => console.fail(e),
    }
}

async fn update_series(
    State(site): State<Site>,
    console: Console,
    Path(id): Path<i64>,
    Form(f): Form<SeriesEditForm>,
) -> Response {
    if let Err(r) = console.check(&f.csrf) {
        return r;
    }
    let some = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    let patch = (|| -> Result<SeriesPatch, catalogue::Error> {
        Ok(SeriesPatch {
            title: some(&f.title),
            start_time: some(&f.start_time),
            duration_minutes: number(&f.duration_minutes)?,
            last_date: some(&f.last_date),
            seats: number(&f.seats)?,
            ..Default::default()
        })
    })();
    let result = match patch {
        Ok(p) => site.catalogue.update_series(id, &p).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => see_other(&console.ui.query("/admin/series")),
        Err(e) => console.fail(e),
    }
}

// ---- check-in at the door -------------------------------------------------------------

fn outcome_text(ui: Ui, o: CheckinOutcome) -> &'static str {
    let t = ui.t();
    match o {
        CheckinOutcome::Valid => t.r_valid,
        CheckinOutcome::AlreadyUsed => t.r_already_used,
        CheckinOutcome::WrongLecture => t.r_wrong_lecture,
        CheckinOutcome::Cancelled => t.r_cancelled,
        CheckinOutcome::Waiting => t.r_waiting,
        CheckinOutcome::OnlineOnly => t.r_online_only,
        CheckinOutcome::Unknown => t.r_unknown,
    }
}

async fn render_checkin(
    site: &Site,
    console: &Console,
    id: i64,
    result: Option<(CheckinOutcome, Option<String>)>,
) -> Response {
    let ui = console.ui;
    let t = ui.t();
    let l = match site.catalogue.lecture(id).await {
        Ok(l) => l,
        Err(e) => return console.fail(e),
    };
    let mut data = String::new();
    for o in [
        CheckinOutcome::Valid,
        CheckinOutcome::AlreadyUsed,
        CheckinOutcome::WrongLecture,
        CheckinOutcome::Cancelled,
        CheckinOutcome::Waiting,
        CheckinOutcome::OnlineOnly,
        CheckinOutcome::Unknown,
    ] {
        let _ = write!(
            data,
            " data-r-{}=\"{}\"",
            o.as_str().replace('_', "-"),
            outcome_text(ui, o)
        );
    }
    let shown = match &result {
        Some((o, name)) => format!(
            "<p id=\"result\" class=\"result {}\" role=\"status\" aria-live=\"assertive\">{}{}</p>",
            o.as_str(),
            outcome_text(ui, *o),
            name.as_deref()
                .filter(|n| !n.is_empty())
                .map(|n| format!(" · {}", esc(n)))
                .unwrap_or_default()
        ),
        None => {
            "<p id=\"result\" class=\"result\" role=\"status\" aria-live=\"assertive\"></p>".into()
        }
    };
    let body = format!(
        "<section class=\"checkin\" data-lecture=\"{id}\"{data} data-camera-unavailable=\"{cam}\">\
         <h1>{checkin}</h1><p class=\"meta\">{title} · <time>{when}</time></p>{shown}\
         <div class=\"scanner\" hidden><video playsinline muted></video><button type=\"button\" class=\"button scan\">{scan}</button></div>\
         <form method=\"post\" action=\"{action}\" class=\"stack code-form\">{csrf}\
         <label>{type_code}<input name=\"code\" required maxlength=\"64\" autocomplete=\"off\" autocapitalize=\"characters\" inputmode=\"text\" autofocus></label>\
         <button type=\"submit\" class=\"button\">{check}</button></form></section>",
        cam = t.camera_unavailable,
        checkin = t.checkin,
        title = esc(&l.title),
        when = when(&site.catalogue, l.starts_at),
        scan = t.scan,
        action = ui.query(&format!("/admin/checkin/{id}")),
        csrf = console.csrf_field(),
        type_code = t.type_code,
        check = t.check,
    );
    console.page(t.checkin, &body)
}

async fn checkin_page(State(site): State<Site>, console: Console, Path(id): Path<i64>) -> Response {
    render_checkin(&site, &console, id, None).await
}

/// A typed ticket code.
#[derive(Debug, Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    csrf: String,
    code: String,
}

async fn checkin(
    State(site): State<Site>,
    console: Console,
    Path(id): Path<i64>,
    Form(f): Form<CodeForm>,
) -> Response {
    if let Err(r) = console.check(&f.csrf) {
        return r;
    }
    match site.catalogue.check_in(id, &f.code).await {
        Ok(c) => render_checkin(&site, &console, id, Some((c.result, c.name))).await,
        Err(e) => console.fail(e),
    }
}
