//! Shared pieces of the connection limits every input holds: the address a client is counted
//! under, a per-address count with a cap, and the counters of refusals that `/metrics` shows.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The address a client is counted under: IPv4 as is, IPv6 by its /64 (one host may hold a
/// whole /64), IPv4-mapped IPv6 as the IPv4 address.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Connections per client address ([`address_key`]), at most `cap` each.
#[derive(Debug)]
pub struct PerAddress {
    cap: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; gives its place back when dropped.
#[derive(Debug)]
pub struct AddressSlot {
    owner: Arc<PerAddress>,
    key: IpAddr,
}

impl PerAddress {
    /// A count allowing `cap` connections per address.
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(PerAddress {
            cap,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a connection from `ip`, or `None` when that address holds `cap` already.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let key = address_key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(key).or_insert(0);
        if *n >= self.cap {
            if *n == 0 {
                counts.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            owner: self.clone(),
            key,
        })
    }

    /// Connections allowed per address.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Connections counted from `ip` now.
    pub fn count(&self, ip: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(&address_key(ip)).copied().unwrap_or(0)
    }

    /// Addresses holding at least one connection.
    pub fn addresses(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// A limit that refuses or closes something; each has a counter in `/metrics`
/// (`jiangtang_limit_hits_total{limit="..."}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `rtmp.max_connections`.
    RtmpConnections,
    /// `rtmp.max_per_address`.
    RtmpPerAddress,
    /// `rtmp.idle_timeout_ms`: a silent publisher closed.
    RtmpIdle,
    /// `rtmp.max_message_bytes`.
    RtmpMessage,
    /// `srt.max_connections`.
    SrtConnections,
    /// `srt.max_per_address`.
    SrtPerAddress,
    /// A silent SRT publisher closed.
    SrtIdle,
    /// `webrtc.max_viewers`.
    WhepViewers,
    /// `webrtc.max_viewers_per_lecture`.
    WhepViewersPerLecture,
    /// `webrtc.max_publishers`.
    WhipPublishers,
    /// `webrtc.max_offer_bytes`.
    SdpOffer,
    /// `channel.max_connections` or `channel.max_per_address`.
    ChannelConnections,
    /// The live channel's message size.
    ChannelMessage,
    /// The live channel's message rate (per connection).
    ChannelRate,
    /// `channel.questions_per_address_per_minute`.
    ChannelQuestionsPerAddress,
    /// `catalogue.bookings_per_minute`.
    Bookings,
}

impl Limit {
    const ALL: [Limit; 16] = [
        Limit::RtmpConnections,
        Limit::RtmpPerAddress,
        Limit::RtmpIdle,
        Limit::RtmpMessage,
        Limit::SrtConnections,
        Limit::SrtPerAddress,
        Limit::SrtIdle,
        Limit::WhepViewers,
        Limit::WhepViewersPerLecture,
        Limit::WhipPublishers,
        Limit::SdpOffer,
        Limit::ChannelConnections,
        Limit::ChannelMessage,
        Limit::ChannelRate,
        Limit::ChannelQuestionsPerAddress,
        Limit::Bookings,
    ];

    /// The label in `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            Limit::RtmpConnections => "rtmp_connections",
            Limit::RtmpPerAddress => "rtmp_per_address",
            Limit::RtmpIdle => "rtmp_idle",
            Limit::RtmpMessage => "rtmp_message",
            Limit::SrtConnections => "srt_connections",
            Limit::SrtPerAddress => "srt_per_address",
            Limit::SrtIdle => "srt_idle",
            Limit::WhepViewers => "whep_viewers",
            Limit::WhepViewersPerLecture => "whep_viewers_per_lecture",
            Limit::WhipPublishers => "whip_publishers",
            Limit::SdpOffer => "sdp_offer",
            Limit::ChannelConnections => "channel_connections",
            Limit::ChannelMessage => "channel_message",
            Limit::ChannelRate => "channel_rate",
            Limit::ChannelQuestionsPerAddress => "channel_questions_per_address",
            Limit::Bookings => "bookings",
        }
    }
}

static HITS: [AtomicU64; Limit::ALL.len()] = [const { AtomicU64::new(0) }; Limit::ALL.len()];

/// Counts one hit of `limit`.
pub fn hit(limit: Limit) {
    HITS[limit as usize].fetch_add(1, Ordering::Relaxed);
}

/// Lines logged per limit per [`LOG_WINDOW`] by [`hit_logged`].
pub const LOG_LINES: u32 = 20;
/// See [`LOG_LINES`].
pub const LOG_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// Per limit: the current log window's start and the lines logged in it.
static LOGGED: Mutex<[(Option<std::time::Instant>, u32); Limit::ALL.len()]> =
    Mutex::new([(None, 0); Limit::ALL.len()]);

/// Counts one hit of `limit` at `now` and says whether to log it: the first
/// [`LOG_LINES`] of each [`LOG_WINDOW`] per limit, so that what anyone can cause in bulk
/// (offers, connections) cannot flood the log; the counter has them all.
pub fn hit_logged(limit: Limit, now: std::time::Instant) -> bool {
    hit(limit);
    let mut logged = LOGGED.lock().unwrap_or_else(|e| e.into_inner());
    let (start, lines) = &mut logged[limit as usize];
    if start.is_none_or(|s| now.duration_since(s) >= LOG_WINDOW) {
        (*start, *lines) = (Some(now), 0);
    }
    *lines += 1;
    *lines <= LOG_LINES
}

/// Hits of `limit` so far.
pub fn hits(limit: Limit) -> u64 {
    HITS[limit as usize].load(Ordering::Relaxed)
}

/// Appends the counters in Prometheus text format.
pub fn render(out: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "# HELP jiangtang_limit_hits_total connections, messages and requests refused or closed at a limit"
    );
    let _ = writeln!(out, "# TYPE jiangtang_limit_hits_total counter");
    for l in Limit::ALL {
        let _ = writeln!(
            out,
            "jiangtang_limit_hits_total{{limit=\"{}\"}} {}",
            l.name(),
            hits(l)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_caps_ipv4_exactly_and_ipv6_by_its_64() {
        let p = PerAddress::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = p.take(a).unwrap();
        let _s2 = p.take(a).unwrap();
        assert!(p.take(a).is_none(), "a third from one address");
        let _b = p.take(b).expect("another address is counted apart");
        drop(s1);
        assert!(p.take(a).is_some(), "a place given back is taken again");

        let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let v6c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _x = p.take(v6a).unwrap();
        let _y = p.take(v6b).unwrap();
        assert!(p.take(v6a).is_none(), "one /64 counts as one address");
        assert!(p.take(v6c).is_some(), "another /64 is another address");
        let mapped: IpAddr = "::ffff:192.0.2.2".parse().unwrap();
        assert_eq!(p.count(mapped), 1, "IPv4-mapped counts as the IPv4 address");

        let none = PerAddress::new(0);
        assert!(none.take(a).is_none());
        assert_eq!(none.addresses(), 0, "a refusal keeps no entry");
    }

    #[test]
    fn logging_is_bounded_per_window() {
        let t = std::time::Instant::now();
        let logged = (0..100)
            .filter(|_| hit_logged(Limit::WhipPublishers, t))
            .count();
        assert_eq!(logged, LOG_LINES as usize);
        assert!(hit_logged(Limit::WhipPublishers, t + LOG_WINDOW));
        assert!(hits(Limit::WhipPublishers) >= 101);
    }

    #[test]
    fn every_limit_is_rendered() {
        hit(Limit::SrtIdle);
        let mut out = String::new();
        render(&mut out);
        for l in Limit::ALL {
            assert!(out.contains(&format!("limit=\"{}\"", l.name())), "{out}");
        }
        assert!(hits(Limit::SrtIdle) >= 1);
    }
}
