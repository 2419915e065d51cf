//! Who may publish or watch a lecture: the seam between the relay, which asks, and whatever
//! knows the programme (the catalogue, the configuration), which answers.
//!
//! The relay asks on every publish attempt and on every playback request (each HLS playlist,
//! part and segment, each WHEP offer), so answers must come from memory: an implementation
//! keeps what it needs in RAM and refreshes it itself. Keys and tokens are secrets: an
//! implementation compares them in constant time and never logs them.

use std::net::IpAddr;

/// Why a publisher or viewer is refused, in words a player or an encoder's log can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Nothing is known under that stream name and unknown names may not be used.
    UnknownStream,
    /// The publish key is missing or wrong.
    BadKey,
    /// The lecture needs a playback token and none was given.
    TokenMissing,
    /// The token is malformed or its signature does not match (tampered, or made elsewhere).
    TokenInvalid,
    /// The token was made for another lecture.
    TokenOtherLecture,
    /// The token has expired.
    TokenExpired,
}

impl Refusal {
    /// A short lower-case reason for an error body or a log line.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::UnknownStream => "no such lecture",
            Refusal::BadKey => "wrong or missing publish key",
            Refusal::TokenMissing => "this lecture needs a playback token",
            Refusal::TokenInvalid => "the playback token is not valid",
            Refusal::TokenOtherLecture => "the playback token is for another lecture",
            Refusal::TokenExpired => "the playback token has expired",
        }
    }
}

/// One admission's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted.
    Allow,
    /// Refused, with the reason.
    Deny(Refusal),
    /// This admission knows nothing of the stream: ask the next one (the binary chains them,
    /// e.g. the configuration's demo lecture, then the catalogue, then the
    /// `allow_unconfigured` rule).
    NotMine,
}

/// Decides who may publish and who may watch.
pub trait Admission: Send + Sync + 'static {
    /// Whether a publisher presenting `key` may publish `stream`. Called once per
    /// connection attempt: a publisher admitted earlier is never re-checked, so rotating a
    /// key does not drop the live publisher.
    fn may_publish(&self, stream: &str, key: Option<&str>) -> Verdict;

    /// Whether a viewer presenting `token` may watch `stream` (live or its replay).
    fn may_watch(&self, stream: &str, token: Option<&str>) -> Verdict;
}

/// Asks each admission in turn; the first that is not [`Verdict::NotMine`] decides.
pub fn chain(admissions: &[&dyn Admission], ask: impl Fn(&dyn Admission) -> Verdict) -> Verdict {
    for a in admissions {
        match ask(*a) {
            Verdict::NotMine => continue,
            v => return v,
        }
    }
    Verdict::NotMine
}

/// Request headers a reverse proxy or CDN adds for the client it passes on (RFC 7239
/// `Forwarded`, the de facto `X-Forwarded-*`, `X-Real-IP` and `X-Client-IP`, CDNs' own, and
/// HTTP's `Via`).
const PROXY_HEADERS: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "x-client-ip",
    "cf-connecting-ip",
    "true-client-ip",
    "via",
];

/// Whether a request comes from a client on this machine itself, which the operator routes
/// trust while no operator token is set: its peer is a loopback address and it carries none
/// of the headers a reverse proxy adds. A proxy on this machine (nginx in front for TLS, or
/// as a cache) connects from loopback on behalf of clients anywhere, so what it forwards
/// never passes for local. `has_header` answers for a lower-case header name.
pub fn from_this_machine(peer: Option<IpAddr>, has_header: impl Fn(&str) -> bool) -> bool {
    peer.is_some_and(|ip| ip.is_loopback()) && !PROXY_HEADERS.iter().any(|h| has_header(h))
}

/// Names whose values are secrets in a query string or an SRT access-control stream id.
const SECRET_NAMES: &[&str] = &[
    "key",
    "s",
    "token",
    "passphrase",
    "password",
    "pass",
    "secret",
    "auth",
];

/// `text` (an RTMP tcUrl or publish name, an SRT stream id, a URL) with every secret value
/// replaced by `***`, for a log line: `key=`, `token=`, `passphrase=` and the like in
/// `?a=b&c=d` or `#!::r=x,s=y` pairs, and the key of `publish:NAME:KEY`.
pub fn redact(text: &str) -> String {
    // `MODE:NAME:KEY` (SRT's short form; any mode, a refused `request:` one included).
    if !text.contains("://")
        && let Some((mode, rest)) = text.split_once(':')
        && !mode.is_empty()
        && mode.chars().all(|c| c.is_ascii_alphabetic())
        && let Some((name, _key)) = rest.split_once(':')
    {
        return format!("{mode}:{name}:***");
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // Each piece runs to the next separator; a piece `NAME=VALUE` with a secret NAME loses
    // its value.
    while !rest.is_empty() {
        let end = rest.find(['?', '&', ',', ';', '#']).unwrap_or(rest.len());
        let (piece, tail) = rest.split_at(end);
        match piece.split_once('=') {
            Some((name, _)) if SECRET_NAMES.iter().any(|s| name.eq_ignore_ascii_case(s)) => {
                out.push_str(name);
                out.push_str("=***");
            }
            _ => out.push_str(piece),
        }
        let mut chars = tail.chars();
        if let Some(sep) = chars.next() {
            out.push(sep);
        }
        rest = chars.as_str();
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn only_a_direct_loopback_client_is_this_machine() {
        let lo = Some(IpAddr::from([127, 0, 0, 1]));
        let lo6 = Some(IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
        let far = Some(IpAddr::from([192, 0, 2, 7]));
        let none = |_: &str| false;
        assert!(from_this_machine(lo, none));
        assert!(from_this_machine(lo6, none));
        assert!(!from_this_machine(far, none));
        assert!(!from_this_machine(None, none));
        for proxy in ["x-forwarded-for", "forwarded", "x-real-ip", "via"] {
            assert!(
                !from_this_machine(lo, |h| h == proxy),
                "{proxy}: a proxy on this machine speaks for someone else"
            );
        }
    }

    #[test]
    fn secrets_are_redacted_for_logs() {
        assert_eq!(
            redact("rtmp://h/live?key=abc&lang=yue"),
            "rtmp://h/live?key=***&lang=yue"
        );
        assert_eq!(
            redact("#!::r=xihe,m=request,s=hall-key-123"),
            "#!::r=xihe,m=request,s=***"
        );
        assert_eq!(redact("publish:xihe:hall-key-123"), "publish:xihe:***");
        assert_eq!(redact("request:xihe:k:more"), "request:xihe:***");
        assert_eq!(redact("publish:xihe"), "publish:xihe");
        assert_eq!(
            redact("/hls/x/index.m3u8?TOKEN=t.1.m"),
            "/hls/x/index.m3u8?TOKEN=***"
        );
        assert_eq!(redact("xihe"), "xihe");
        assert_eq!(redact("a=b=c&pass=x=y"), "a=b=c&pass=***");
        assert_eq!(redact(""), "");
    }
    use super::*;

    struct Only(&'static str);

    impl Admission for Only {
        fn may_publish(&self, stream: &str, key: Option<&str>) -> Verdict {
            match (stream == self.0, key == Some("k")) {
                (false, _) => Verdict::NotMine,
                (true, true) => Verdict::Allow,
                (true, false) => Verdict::Deny(Refusal::BadKey),
            }
        }
        fn may_watch(&self, stream: &str, _token: Option<&str>) -> Verdict {
            if stream == self.0 {
                Verdict::Allow
            } else {
                Verdict::NotMine
            }
        }
    }

    #[test]
    fn chain_asks_until_one_knows() {
        let (a, b) = (Only("a"), Only("b"));
        let list: [&dyn Admission; 2] = [&a, &b];
        assert_eq!(
            chain(&list, |x| x.may_publish("b", Some("k"))),
            Verdict::Allow
        );
        assert_eq!(
            chain(&list, |x| x.may_publish("b", None)),
            Verdict::Deny(Refusal::BadKey)
        );
        assert_eq!(chain(&list, |x| x.may_watch("c", None)), Verdict::NotMine);
    }
}
