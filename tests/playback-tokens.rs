//! Deny by default and playback tokens, end to end against the binary.
//!
//! Publishing: with the shipped `allow_unconfigured = false`, a name nobody configured is
//! refused over RTMP, SRT and WHIP; a catalogue lecture publishes with its own key (and
//! only with it); rotating the key leaves the live publisher on.
//!
//! Watching a private lecture: the token matrix (missing, expired, tampered, for another
//! lecture, valid) on every HLS resource kind (multivariant and media playlists, a
//! blocking reload, init segment, segment, part), on a replay's playlists and media, and on
//! WHEP offers; playlists answered to a token holder carry the token on every URI; no token
//! ever appears in the relay's log; and the web player says why it does not play.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A directory of the test's own, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!(
            "jiangtang-{tag}-{}-{}",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn at(offset_s: i64) -> String {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + offset_s)
        .unwrap()
        .to_string()
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

fn post_json(url: &str, body: &Value) -> (u16, Value) {
    let (st, _, b) = send(
        "POST",
        url,
        Some("application/json"),
        body.to_string().as_bytes(),
    );
    (st, json_of(&b))
}

/// An SDP offer from a str0m peer: receiving (a WHEP viewer) or sending (a WHIP publisher).
fn offer(send_media: bool) -> String {
    use str0m::media::{Direction, MediaKind};
    static CRYPTO: OnceLock<()> = OnceLock::new();
    CRYPTO.get_or_init(|| str0m::crypto::from_feature_flags().install_process_default());
    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(str0m::Candidate::host("127.0.0.1:9".parse().unwrap(), "udp").unwrap());
    let dir = if send_media {
        Direction::SendOnly
    } else {
        Direction::RecvOnly
    };
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, dir, None, None, None);
    api.add_media(MediaKind::Audio, dir, None, None, None);
    api.apply().unwrap().0.to_sdp_string()
}

fn with_token(url: &str, token: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}token={token}")
}

/// The first URI of `tag` (`#EXT-X-MAP`, `#EXT-X-PART`, ...) or, for `None`, the first URI
/// line, of a playlist.
fn uri(playlist: &str, tag: Option<&str>) -> Option<String> {
    match tag {
        Some(tag) => playlist
            .lines()
            .filter(|l| l.starts_with(tag))
            .find_map(|l| attr(l, "URI").map(str::to_string)),
        None => playlist
            .lines()
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string),
    }
}

/// `uri` without its query, resolved against the directory of `base`.
fn resolve(base: &str, uri: &str) -> String {
    let uri = uri.split('?').next().unwrap();
    let dir = &base[..base.rfind('/').unwrap() + 1];
    let mut path = format!("{dir}{uri}");
    while let Some(i) = path.find("/../") {
        let head = &path[..i];
        let up = head.rfind('/').unwrap();
        path = format!("{}{}", &path[..up], &path[i + 3..]);
    }
    path
}

/// A rendition's playlist with the token; its URIs, whose token is checked.
fn fetch_playlist(s: &Server, path: &str, token: &str) -> String {
    let (st, h, body) = get(&s.url(&with_token(path, token)));
    let text = String::from_utf8(body).unwrap();
    assert_eq!(st, 200, "{path}: {text}");
    let cc = h["cache-control"].to_str().unwrap();
    assert!(
        !cc.contains("public"),
        "{path}: a token holder's answer is not for shared caches: {cc}"
    );
    for l in text.lines() {
        let uris: Vec<&str> = if l.starts_with('#') {
            attr(l, "URI").into_iter().collect()
        } else if !l.is_empty() {
            vec![l]
        } else {
            vec![]
        };
        for u in uris {
            assert!(
                u.contains(&format!("token={token}")),
                "{path}: {u} lacks the token"
            );
        }
    }
    text
}

struct Tokens {
    valid: String,
    expired: String,
    tampered: String,
    other: String,
}

/// Every way of asking for `path`: (case, URL, expected status, expected reason).
fn matrix<'a>(s: &Server, path: &str, t: &'a Tokens) -> Vec<(&'static str, String, u16, &'a str)> {
    vec![
        ("missing", s.url(path), 401, "token_missing"),
        (
            "expired",
            s.url(&with_token(path, &t.expired)),
            403,
            "token_expired",
        ),
        (
            "tampered",
            s.url(&with_token(path, &t.tampered)),
            403,
            "token_invalid",
        ),
        (
            "other lecture",
            s.url(&with_token(path, &t.other)),
            403,
            "token_other_lecture",
        ),
        ("valid", s.url(&with_token(path, &t.valid)), 200, ""),
    ]
}

fn check_matrix(s: &Server, kind: &str, path: &str, t: &Tokens) {
    for (case, url, want, reason) in matrix(s, path, t) {
        let (st, h, body) = get(&url);
        assert_eq!(
            st,
            want,
            "{kind} {path} with {case}: {}",
            String::from_utf8_lossy(&body)
        );
        if want != 200 {
            let j = json_of(&body);
            assert_eq!(j["reason"], reason, "{kind} {case}: {j}");
            assert!(
                j["error"].as_str().is_some_and(|e| e.contains("token")),
                "{kind} {case}: a clear body: {j}"
            );
            assert_eq!(h["cache-control"], "no-store");
            if want == 401 {
                assert!(h.contains_key("www-authenticate"));
            }
        }
    }
}

fn lecture_id(s: &Server, stream: &str) -> i64 {
    let list = json_of(&get(&s.url("/api/v1/lectures?include_private=true")).2);
    list["lectures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["stream"] == stream)
        .unwrap_or_else(|| panic!("no lecture {stream} in {list}"))["id"]
        .as_i64()
        .unwrap()
}

fn token_for(s: &Server, id: i64) -> String {
    let (st, t) = post_json(
        &s.url(&format!("/api/v1/lectures/{id}/playback-tokens")),
        &serde_json::json!({"hours": 2}),
    );
    assert_eq!(st, 201, "{t}");
    t["token"].as_str().unwrap().to_string()
}

/// A token the catalogue made three hours ago, valid for one: signed with the relay's own
/// secret (from the same database), expired now.
fn expired_token(db: &std::path::Path, id: i64) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let settings = catalogue::Settings::defaults(catalogue::Location::Sqlite {
            path: db.to_path_buf(),
            full_sync: true,
        });
        let past =
            jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() - 3 * 3600).unwrap();
        let c = catalogue::Catalogue::open_with_clock(
            settings,
            std::sync::Arc::new(catalogue::clock::ManualClock::new(past)),
        )
        .await
        .unwrap();
        let t = c.playback_token(id, 1).await.unwrap().token;
        c.close().await;
        t
    })
}

#[test]
fn private_lectures_need_a_valid_token_on_every_resource() {
    let dir = Dir::new("tokens");
    let db = dir.0.join("catalogue.db");
    let config = format!(
        "[lectures]\nallow_unconfigured = false\n\
         [recording]\nenabled = true\ndir = \"{rec}\"\n\
         [catalogue]\ndatabase_path = \"{db}\"\n\
         [[lecture]]\nname = \"school\"\npublish_key = \"school-key-123\"\nvisibility = \"private\"\nstarts_at = \"{start}\"\nends_at = \"{end}\"\n\
         [[lecture]]\nname = \"other\"\npublish_key = \"other-key-123\"\nvisibility = \"private\"\nstarts_at = \"{start}\"\nends_at = \"{end}\"\n\
         [[lecture]]\nname = \"open\"\npublish_key = \"open-key-1234\"\n",
        rec = dir.0.join("rec").display(),
        db = db.display(),
        start = at(-600),
        end = at(7200),
    );
    let s = Server::start(&config);
    let (school, other) = (lecture_id(&s, "school"), lecture_id(&s, "other"));
    let valid = token_for(&s, school);
    let mut tampered = valid.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    let t = Tokens {
        expired: expired_token(&db, school),
        other: token_for(&s, other),
        tampered,
        valid,
    };

    let _publisher = ffmpeg_publish(&s.rtmp_url("school?key=school-key-123"), "320x180", 25, 440);
    // Wait with the token (without one the playlist is refused, which is the point).
    let media = wait_until(Duration::from_secs(30), "school's segments", || {
        let (st, _, b) = get(&s.url(&with_token("/hls/school/video/index.m3u8", &t.valid)));
        let text = String::from_utf8_lossy(&b).into_owned();
        (st == 200 && text.matches("#EXTINF").count() >= 2).then_some(text)
    });
    drop(media);

    // Live HLS: every resource kind.
    let master = fetch_playlist(&s, "/hls/school/index.m3u8", &t.valid);
    let video_path = resolve("/hls/school/index.m3u8", &uri(&master, None).unwrap());
    let audio_path = resolve(
        "/hls/school/index.m3u8",
        &uri(&master, Some("#EXT-X-MEDIA")).unwrap(),
    );
    let video = fetch_playlist(&s, &video_path, &t.valid);
    fetch_playlist(&s, &audio_path, &t.valid);
    let init = resolve(&video_path, &uri(&video, Some("#EXT-X-MAP")).unwrap());
    let segment = resolve(&video_path, &uri(&video, None).unwrap());
    let part = resolve(&video_path, &uri(&video, Some("#EXT-X-PART:")).unwrap());
    let msn: u64 = video
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .unwrap()
        .parse()
        .unwrap();
    let blocking = format!("{video_path}?_HLS_msn={msn}");
    for (kind, path) in [
        (
            "multivariant playlist",
            "/hls/school/index.m3u8".to_string(),
        ),
        ("media playlist", video_path.clone()),
        ("audio playlist", audio_path.clone()),
        ("blocking reload", blocking),
        ("init segment", init),
        ("segment", segment),
        ("part", part),
    ] {
        check_matrix(&s, kind, &path, &t);
    }

    // The replay, recorded as the lecture goes.
    let rec = wait_until(Duration::from_secs(20), "the recording", || {
        let list = json_of(&get(&s.url("/api/v1/recordings?lecture=school")).2);
        list.as_array()
            .or_else(|| list["recordings"].as_array())
            .and_then(|a| a.first().cloned())
            .and_then(|r| r["id"].as_str().map(str::to_string))
    });
    let replay_master = format!("/replay/{rec}/index.m3u8");
    let text = wait_until(Duration::from_secs(20), "the replay's playlist", || {
        let (st, _, b) = get(&s.url(&with_token(&replay_master, &t.valid)));
        (st == 200).then(|| String::from_utf8(b).unwrap())
    });
    let replay_media = resolve(&replay_master, &uri(&text, None).unwrap());
    let replay_text = wait_until(Duration::from_secs(20), "a replay segment", || {
        let (st, _, b) = get(&s.url(&with_token(&replay_media, &t.valid)));
        let text = String::from_utf8(b).unwrap();
        (st == 200 && text.contains("#EXTINF")).then_some(text)
    });
    fetch_playlist(&s, &replay_media, &t.valid);
    let replay_segment = resolve(&replay_media, &uri(&replay_text, None).unwrap());
    for (kind, path) in [
        ("replay multivariant", replay_master.clone()),
        ("replay media playlist", replay_media.clone()),
        ("replay media", replay_segment),
    ] {
        check_matrix(&s, kind, &path, &t);
    }

    // WHEP: the offer is where a viewer is admitted (the session resource after it is
    // reached by its unguessable id).
    let sdp = offer(false);
    for (case, url, want, reason) in matrix(&s, "/whep/school", &t) {
        let (st, h, body) = send("POST", &url, Some("application/sdp"), sdp.as_bytes());
        assert_eq!(st, if want == 200 { 201 } else { want }, "WHEP {case}");
        if want != 200 {
            assert_eq!(json_of(&body)["reason"], reason, "WHEP {case}");
        } else {
            let location = h["location"].to_str().unwrap();
            assert_eq!(send("DELETE", &s.url(location), None, b"").0, 200);
        }
    }
    // ... also as a bearer token, as WHEP clients send it.
    let (st, h, _) = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let r = reqwest::Client::new()
                .post(s.url("/whep/school"))
                .header("content-type", "application/sdp")
                .header("authorization", format!("Bearer {}", t.valid))
                .body(sdp.clone())
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.headers().clone(), ())
        })
    };
    assert_eq!(st, 201, "WHEP with a bearer token");
    send("DELETE", &s.url(h["location"].to_str().unwrap()), None, b"");

    // A public lecture needs none: not live yet, so 404, not 401.
    assert_eq!(get(&s.url("/hls/open/index.m3u8")).0, 404);

    // The player says why it does not play, and plays with the token.
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let node_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        node_dir.join("node_modules/playwright-core").exists(),
        "tests/node has no node_modules: run scripts/test.sh, which installs them"
    );
    let out = {
        let _browser = browser_lock();
        output_within(
            Command::new("node")
                .arg(node_dir.join("denied.mjs"))
                .arg(format!("http://{}", s.http))
                .arg("school")
                .arg(&shots)
                .arg("missing=")
                .arg(format!("expired=token={}", t.expired))
                .arg(format!("other=token={}&ui=en", t.other))
                .arg(format!("valid=token={}", t.valid))
                .arg(format!("valid-hls=mode=hls&token={}", t.valid))
                .stderr(Stdio::piped()),
            Duration::from_secs(180),
        )
    };
    assert!(
        out.status.success(),
        "denied.mjs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    let case = |n: &str| &r["cases"][n];
    assert_eq!(case("missing")["events"][0], "token_missing", "{r}");
    assert!(
        case("missing")["sub"]
            .as_str()
            .unwrap()
            .contains("观看凭证"),
        "{r}"
    );
    assert_eq!(case("expired")["events"][0], "token_expired", "{r}");
    assert!(
        case("expired")["sub"].as_str().unwrap().contains("过期"),
        "{r}"
    );
    assert_eq!(case("other")["events"][0], "token_other_lecture", "{r}");
    assert!(
        case("other")["sub"]
            .as_str()
            .unwrap()
            .contains("another lecture"),
        "{r}"
    );
    assert_eq!(case("valid")["overlayHidden"], true, "{r}");
    assert_eq!(case("valid-hls")["mode"], "hls", "{r}");
    assert_eq!(case("valid-hls")["overlayHidden"], true, "{r}");
    println!("screenshots in {}", shots.display());

    // Tokens never reach the log (refusals name the lecture and the reason only).
    let log = s.log();
    for tok in [&t.valid, &t.expired, &t.tampered, &t.other] {
        let mac = tok.rsplit('.').next().unwrap();
        assert!(!log.contains(mac), "a token in the log:\n{log}");
    }
    assert!(log.contains("playback refused"), "{log}");
}

fn rtmp_refused(url: &str) -> bool {
    let mut p = ffmpeg_publish(url, "160x90", 10, 440);
    p.wait(Duration::from_secs(20)) == Some(false)
}

#[test]
fn deny_by_default_publishes_only_known_lectures_with_their_keys() {
    let s = Server::start("[lectures]\nallow_unconfigured = false\n");
    // A name nobody configured: refused over RTMP, SRT and WHIP.
    assert!(rtmp_refused(&s.rtmp_url("stranger")));
    let srt = |streamid: &str| {
        format!(
            "srt://{}?streamid={streamid}&latency=300000",
            s.srt.expect("SRT listening")
        )
    };
    let srt_refused = |streamid: &str| {
        let out = output_within(
            Command::new("ffmpeg")
                .args(["-nostdin", "-loglevel", "error", "-re", "-t", "3"])
                .args(["-f", "lavfi", "-i", "testsrc2=size=160x90:rate=10"])
                .args(["-c:v", "libx264", "-preset", "ultrafast", "-f", "mpegts"])
                .arg(srt(streamid))
                .stderr(Stdio::piped()),
            Duration::from_secs(30),
        );
        !out.status.success()
    };
    assert!(srt_refused("publish:stranger"));
    let whip = |stream: &str, key: Option<&str>| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut r = reqwest::Client::new()
                .post(s.url(&format!("/whip/{stream}")))
                .header("content-type", "application/sdp")
                .body(offer(true));
            if let Some(k) = key {
                r = r.header("authorization", format!("Bearer {k}"));
            }
            let r = r.send().await.unwrap();
            let st = r.status().as_u16();
            if let Some(l) = r.headers().get("location") {
                let _ = reqwest::Client::new()
                    .delete(s.url(l.to_str().unwrap()))
                    .send()
                    .await;
            }
            st
        })
    };
    assert_eq!(whip("stranger", None), 404);

    // A lecture in the catalogue gets its own key; it publishes with it, only with it.
    let mut keys = Vec::new();
    for stream in ["made", "made-srt", "made-whip"] {
        let (st, l) = post_json(
            &s.url("/api/v1/lectures"),
            &serde_json::json!({"title": "新讲座", "stream": stream,
                "starts_at": at(600), "ends_at": at(4200)}),
        );
        assert_eq!(st, 201, "{l}");
        let k = json_of(&get(&s.url(&format!("/api/v1/stream-keys/{stream}"))).2);
        let key = k["publish_key"].as_str().unwrap().to_string();
        assert!(key.len() >= 16, "{k}");
        keys.push(key);
    }
    assert!(rtmp_refused(&s.rtmp_url("made")));
    assert!(rtmp_refused(&s.rtmp_url("made?key=not-the-key")));
    assert!(srt_refused("publish:made-srt"));
    assert!(srt_refused(&format!("publish:made-srt:{}", keys[0])));
    assert_eq!(whip("made-whip", Some("not-the-key")), 401);
    assert_eq!(whip("made-whip", Some(&keys[2])), 201);

    let _rtmp = ffmpeg_publish(
        &s.rtmp_url(&format!("made?key={}", keys[0])),
        "320x180",
        25,
        440,
    );
    wait_for_segments(&s, "made", "video", 2);
    let _srt = Proc(
        Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "error", "-re"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25"])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "25",
                "-f",
                "mpegts",
            ])
            .arg(srt(&format!("publish:made-srt:{}", keys[1])))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_segments(&s, "made-srt", "video", 2);

    // Rotating the key leaves the live publisher on; the old key no longer publishes.
    let (st, rotated) = post_json(&s.url("/api/v1/stream-keys/made/rotate"), &Value::Null);
    assert_eq!(st, 200, "{rotated}");
    let segments = |s: &Server| {
        get_text(&s.url("/hls/made/video/index.m3u8"))
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
            .map(|n| n.parse::<u64>().unwrap())
            .unwrap()
    };
    let before = segments(&s);
    wait_until(
        Duration::from_secs(20),
        "the live publisher to go on",
        || (segments(&s) >= before + 2).then_some(()),
    );
    let api = json_of(&get(&s.url("/api/v1/streams/made")).2);
    assert_eq!(api["status"], "live", "{api}");
    assert_eq!(api["sessions"], 1, "never dropped: {api}");
    assert_eq!(whip("made", Some(&keys[0])), 401, "the old key");
}
