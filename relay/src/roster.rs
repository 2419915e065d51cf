//! The roster of a lecture's sub-venues (1 + X): which sites are connected to it, since
//! when, the viewers behind each and the dialects they play, and how their link is doing.
//!
//! Two kinds of site report themselves: an edge relay pulling the lecture (each of its
//! requests names its site and carries a short report, [`EdgeReport`]), and a player opened
//! as a site (`/play/NAME?site=CODE`: its live channel names the site and sends its figures
//! every few seconds). Sites are registered in the configuration (`[[site]]`: name, town,
//! kind, default dialect); an unregistered code is shown as such. A site not heard from for
//! [`DROPPED_AFTER`] is flagged as dropped out, and forgotten after [`FORGOTTEN_AFTER`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

/// A site not heard from for this long has dropped out.
pub const DROPPED_AFTER: Duration = Duration::from_secs(15);
/// ...and is forgotten after this long.
pub const FORGOTTEN_AFTER: Duration = Duration::from_secs(3600);
/// Most sites kept per lecture (codes come from the network).
const MAX_SITES: usize = 5000;
/// Most lectures with a roster.
const MAX_LECTURES: usize = 1000;

/// True for a usable site code: 1–32 of `a-z 0-9 _ -`.
pub fn valid_code(code: &str) -> bool {
    (1..=32).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}

/// What an edge says about itself on each request (`x-jiangtang-edge-report`):
/// `viewers=12;dialects=cmn:5,yue:7;kbps=1980;rtt=35;errors=0`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EdgeReport {
    /// Viewers it serves the lecture to (and those behind its own edges).
    pub viewers: u32,
    /// Of those, by dialect (where known).
    pub dialects: BTreeMap<String, u32>,
    /// What it received of the lecture in the last seconds, kbit/s.
    pub kbps: Option<f64>,
    /// Round trip to this relay as it measures it (time to a response's first byte), ms.
    pub rtt_ms: Option<f64>,
    /// Requests that failed in the last minute.
    pub errors: Option<u32>,
}

impl EdgeReport {
    /// Reads the header value; unknown or malformed fields are skipped.
    pub fn parse(text: &str) -> EdgeReport {
        let mut r = EdgeReport::default();
        for field in text.split(';').take(8) {
            let Some((k, v)) = field.trim().split_once('=') else {
                continue;
            };
            let num = || v.parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0);
            match k {
                "viewers" => r.viewers = v.parse().unwrap_or(0).min(10_000_000),
                "kbps" => r.kbps = num().map(|x| x.min(1e7)),
                "rtt" => r.rtt_ms = num().map(|x| x.min(1e6)),
                "errors" => r.errors = v.parse().ok(),
                "dialects" => {
                    for pair in v.split(',').take(32) {
                        if let Some((lang, n)) = pair.split_once(':')
                            && media::Language::parse(lang).is_ok()
                            && let Ok(n) = n.parse::<u32>()
                        {
                            r.dialects.insert(lang.to_string(), n.min(10_000_000));
                        }
                    }
                }
                _ => {}
            }
        }
        r
    }

    /// The header value.
    pub fn render(&self) -> String {
        let mut out = format!("viewers={}", self.viewers);
        if !self.dialects.is_empty() {
            let d: Vec<String> = self
                .dialects
                .iter()
                .map(|(l, n)| format!("{l}:{n}"))
                .collect();
            out.push_str(&format!(";dialects={}", d.join(",")));
        }
        if let Some(k) = self.kbps {
            out.push_str(&format!(";kbps={k:.0}"));
        }
        if let Some(r) = self.rtt_ms {
            out.push_str(&format!(";rtt={r:.0}"));
        }
        if let Some(e) = self.errors {
            out.push_str(&format!(";errors={e}"));
        }
        out
    }
}

/// What a player opened as a site reports over its live channel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlayerReport {
    /// The dialect it plays.
    pub lang: Option<String>,
    /// `webrtc`, `hls` or `audio`.
    pub mode: Option<String>,
    /// Its receive rate, kbit/s.
    pub kbps: Option<f64>,
    /// Packets lost, % (WebRTC).
    pub loss_pct: Option<f64>,
    /// Round trip, ms (WebRTC).
    pub rtt_ms: Option<f64>,
}

/// How a site is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Edge,
    Player,
}

#[derive(Debug, Clone)]
struct Presence {
    via: Via,
    since: SystemTime,
    last_seen: Instant,
    last_seen_wall: SystemTime,
    /// Players: open live channels from the site.
    open: u32,
    edge: EdgeReport,
    /// Players: the latest report of each open channel, by its id.
    players: HashMap<u64, PlayerReport>,
}

/// Every lecture's roster.
#[derive(Debug, Default)]
pub struct Roster {
    lectures: Mutex<HashMap<String, HashMap<String, Presence>>>,
}

impl Roster {
    fn with<R>(
        &self,
        stream: &str,
        code: &str,
        via: Via,
        f: impl FnOnce(&mut Presence) -> R,
    ) -> Option<R> {
        let mut all = self.lectures.lock().unwrap_or_else(|e| e.into_inner());
        if !all.contains_key(stream) && all.len() >= MAX_LECTURES {
            prune(&mut all);
            if all.len() >= MAX_LECTURES {
                return None;
            }
        }
        let sites = all.entry(stream.to_string()).or_default();
        if !sites.contains_key(code) && sites.len() >= MAX_SITES {
            // Full (codes come from anyone): the longest quiet site that is gone makes room.
            let gone = sites
                .iter()
                .filter(|(_, p)| p.open == 0 && p.last_seen.elapsed() >= DROPPED_AFTER)
                .min_by_key(|(_, p)| p.last_seen)
                .map(|(c, _)| c.clone());
            match gone {
                Some(c) => {
                    sites.remove(&c);
                }
                None => return None,
            }
        }
        let now = Instant::now();
        let p = sites.entry(code.to_string()).or_insert_with(|| Presence {
            via,
            since: SystemTime::now(),
            last_seen: now,
            last_seen_wall: SystemTime::now(),
            open: 0,
            edge: EdgeReport::default(),
            players: HashMap::new(),
        });
        // A site that dropped out and came back is connected again from now.
        if now.duration_since(p.last_seen) >= DROPPED_AFTER && p.open == 0 {
            p.since = SystemTime::now();
        }
        p.via = via;
        p.last_seen = now;
        p.last_seen_wall = SystemTime::now();
        Some(f(p))
    }

    /// An edge at site `code` asked this relay for a part of `stream`'s media.
    pub fn edge_seen(&self, stream: &str, code: &str, report: EdgeReport) {
        self.with(stream, code, Via::Edge, |p| p.edge = report);
    }

    /// A player at site `code` opened live channel `id` on `stream`.
    pub fn player_joined(&self, stream: &str, code: &str, id: u64) {
        self.with(stream, code, Via::Player, |p| {
            p.open += 1;
            p.players.insert(id, PlayerReport::default());
        });
    }

    /// The player on channel `id` reported its figures.
    pub fn player_report(&self, stream: &str, code: &str, id: u64, report: PlayerReport) {
        self.with(stream, code, Via::Player, |p| {
            if let Some(r) = p.players.get_mut(&id) {
                *r = report;
            }
        });
    }

    /// The player's channel `id` closed.
    pub fn player_left(&self, stream: &str, code: &str, id: u64) {
        self.with(stream, code, Via::Player, |p| {
            p.open = p.open.saturating_sub(1);
            p.players.remove(&id);
        });
    }

    /// Viewers behind edges at sites of `stream` still connected, in all and by dialect (an
    /// edge adds them to what it reports to its own origin).
    pub fn behind_edges(&self, stream: &str) -> (u32, BTreeMap<String, u32>) {
        let all = self.lectures.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = 0;
        let mut by = BTreeMap::new();
        for p in all.get(stream).into_iter().flat_map(|s| s.values()) {
            if p.via == Via::Edge && p.last_seen.elapsed() < DROPPED_AFTER {
                total = u32::saturating_add(total, p.edge.viewers);
                for (l, n) in &p.edge.dialects {
                    let c = by.entry(l.clone()).or_insert(0u32);
                    *c = c.saturating_add(*n);
                }
            }
        }
        (total, by)
    }

    /// The roster of `stream` as the API shows it; `registered` names the configuration's
    /// sites (code → name, town, kind, dialect), listed even before they connect.
    pub fn json(&self, stream: &str, registered: &[config::SiteConfig]) -> Value {
        let all = self.lectures.lock().unwrap_or_else(|e| e.into_inner());
        let empty = HashMap::new();
        let sites = all.get(stream).unwrap_or(&empty);
        let mut out = Vec::new();
        let info = |code: &str| registered.iter().find(|s| s.code == code);
        for (code, p) in sites {
            if p.last_seen.elapsed() >= FORGOTTEN_AFTER {
                continue;
            }
            let connected = p.open > 0 || p.last_seen.elapsed() < DROPPED_AFTER;
            let (viewers, dialects, kbps, loss, rtt, errors, modes) = match p.via {
                Via::Edge => (
                    p.edge.viewers,
                    p.edge.dialects.clone(),
                    p.edge.kbps,
                    None,
                    p.edge.rtt_ms,
                    p.edge.errors,
                    Vec::new(),
                ),
                Via::Player => {
                    let mut d = BTreeMap::new();
                    let mut modes = Vec::new();
                    for r in p.players.values() {
                        if let Some(l) = &r.lang {
                            *d.entry(l.clone()).or_insert(0) += 1;
                        }
                        if let Some(m) = &r.mode
                            && !modes.contains(m)
                        {
                            modes.push(m.clone());
                        }
                    }
                    let avg = |f: fn(&PlayerReport) -> Option<f64>| {
                        let v: Vec<f64> = p.players.values().filter_map(f).collect();
                        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
                    };
                    let kbps: Option<f64> = {
                        let v: Vec<f64> = p.players.values().filter_map(|r| r.kbps).collect();
                        (!v.is_empty()).then(|| v.iter().sum())
                    };
                    (
                        p.open,
                        d,
                        kbps,
                        avg(|r| r.loss_pct),
                        avg(|r| r.rtt_ms),
                        None,
                        modes,
                    )
                }
            };
            let reg = info(code);
            out.push(json!({
                "code": code,
                "registered": reg.is_some(),
                "name": reg.map(|s| s.name.clone()),
                "town": reg.map(|s| s.town.clone()),
                "kind": reg.map(|s| s.kind),
                "default_dialect": reg.and_then(|s| s.dialect.clone()),
                "via": match p.via { Via::Edge => "edge", Via::Player => "player" },
                "status": if connected { "connected" } else { "dropped" },
                "since": jiff_time(p.since),
                "last_seen": jiff_time(p.last_seen_wall),
                "viewers": if connected { viewers } else { 0 },
                "dialects": dialects,
                "modes": modes,
                "link": {
                    "kbps": kbps.map(|k| k.round()),
                    "loss_pct": loss.map(|l| (l * 10.0).round() / 10.0),
                    "rtt_ms": rtt.map(|r| r.round()),
                    "errors": errors,
                },
            }));
        }
        for s in registered {
            if !sites.contains_key(&s.code) {
                out.push(json!({
                    "code": s.code, "registered": true, "name": s.name, "town": s.town,
                    "kind": s.kind, "default_dialect": s.dialect, "status": "absent",
                    "viewers": 0,
                }));
            }
        }
        // Connected first, then dropped, then absent; by town and name within.
        let rank = |v: &Value| match v["status"].as_str() {
            Some("connected") => 0,
            Some("dropped") => 1,
            _ => 2,
        };
        out.sort_by(|a, b| {
            rank(a)
                .cmp(&rank(b))
                .then_with(|| a["town"].as_str().cmp(&b["town"].as_str()))
                .then_with(|| a["code"].as_str().cmp(&b["code"].as_str()))
        });
        let connected = out.iter().filter(|v| v["status"] == "connected").count();
        let viewers: u64 = out.iter().filter_map(|v| v["viewers"].as_u64()).sum();
        json!({ "lecture": stream, "connected": connected, "viewers": viewers, "sites": out })
    }
}

/// Drops lectures whose sites were all last seen long ago.
fn prune(all: &mut HashMap<String, HashMap<String, Presence>>) {
    all.retain(|_, sites| {
        sites.retain(|_, p| p.open > 0 || p.last_seen.elapsed() < FORGOTTEN_AFTER);
        !sites.is_empty()
    });
}

fn jiff_time(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|t| t.round(jiff::Unit::Millisecond).unwrap_or(t).to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_reports_round_trip_and_survive_garbage() {
        let r = EdgeReport {
            viewers: 12,
            dialects: [("cmn".to_string(), 5), ("yue".to_string(), 7)].into(),
            kbps: Some(1980.0),
            rtt_ms: Some(35.0),
            errors: Some(0),
        };
        assert_eq!(EdgeReport::parse(&r.render()), r);
        let junk = EdgeReport::parse("viewers=x;dialects=<b>:1,yue:2;kbps=-1;rtt=NaN;=;;zz");
        assert_eq!(junk.viewers, 0);
        assert_eq!(junk.dialects.len(), 1);
        assert_eq!((junk.kbps, junk.rtt_ms), (None, None));
    }

    #[test]
    fn sites_show_viewers_dialects_and_drop_out() {
        let roster = Roster::default();
        let registered = vec![config::SiteConfig {
            code: "shimen".into(),
            name: "石门村".into(),
            town: "西和".into(),
            kind: config::SiteKind::VillageStation,
            dialect: Some("hak".into()),
        }];
        let absent = roster.json("xihe", &registered);
        assert_eq!(absent["sites"][0]["status"], "absent");
        roster.edge_seen(
            "xihe",
            "shimen",
            EdgeReport::parse("viewers=3;dialects=hak:3;kbps=2000"),
        );
        roster.player_joined("xihe", "school-1", 1);
        roster.player_joined("xihe", "school-1", 2);
        roster.player_report(
            "xihe",
            "school-1",
            1,
            PlayerReport {
                lang: Some("yue".into()),
                mode: Some("webrtc".into()),
                kbps: Some(900.0),
                loss_pct: Some(1.0),
                rtt_ms: Some(40.0),
            },
        );
        let v = roster.json("xihe", &registered);
        assert_eq!(v["connected"], 2);
        assert_eq!(v["viewers"], 5);
        let shimen = v["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["code"] == "shimen")
            .unwrap();
        assert_eq!(shimen["name"], "石门村");
        assert_eq!(shimen["dialects"]["hak"], 3);
        assert_eq!(shimen["via"], "edge");
        let school = v["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["code"] == "school-1")
            .unwrap();
        assert_eq!(school["registered"], false);
        assert_eq!(school["viewers"], 2);
        assert_eq!(school["dialects"]["yue"], 1);
        assert_eq!(school["link"]["rtt_ms"], 40.0);
        assert_eq!(roster.behind_edges("xihe").0, 3);
        // The players leave: the site shows as dropped once it has been quiet long enough.
        roster.player_left("xihe", "school-1", 1);
        roster.player_left("xihe", "school-1", 2);
        {
            let mut all = roster.lectures.lock().unwrap();
            for p in all.get_mut("xihe").unwrap().values_mut() {
                p.last_seen -= DROPPED_AFTER;
            }
        }
        let v = roster.json("xihe", &registered);
        assert_eq!(v["connected"], 0);
        assert!(
            v["sites"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["status"] == "dropped")
        );
        assert_eq!(roster.behind_edges("xihe").0, 0);
        assert!(!valid_code("Bad Code") && valid_code("school-1"));
    }
}
