//! 2,000 live channels on one lecture while a real publisher streams, a few of them
//! flooding it with messages: the flooders are rate-limited and closed, the quiet ones still
//! get every state change in time, and once everyone has left the relay's heap and resident
//! memory are back within 5 % of where they were. Loopback only, bounded in count and time.
//! The client count can be raised for a longer run: `JT_FLOOD_CLIENTS=5000`.

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::floods::*;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Quiet clients per loopback address (so `channel.max_per_address`, 200, is not what
/// limits them).
const PER_ADDRESS: usize = 170;
const FLOODERS: usize = 5;

#[derive(Default)]
struct Seen {
    reconnecting: AtomicUsize,
    live_again: AtomicUsize,
    closed: AtomicUsize,
    most_channels: AtomicU64,
}

/// A quiet client: reads everything, notes the state changes, answers pings (tungstenite
/// does, while it reads), closes when told.
async fn quiet(
    mut ws: Ws,
    seen: Arc<Seen>,
    stop: Arc<tokio::sync::Notify>,
    stopping: Arc<AtomicBool>,
) {
    let (mut was_reconnecting, mut live_again) = (false, false);
    loop {
        tokio::select! {
            _ = stop.notified() => {
                let _ = ws.close(None).await;
                return;
            }
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    _ => {
                        if !stopping.load(Ordering::Relaxed) {
                            seen.closed.fetch_add(1, Ordering::Relaxed);
                        }
                        return;
                    }
                };
                let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                match (v["type"].as_str(), v["status"].as_str()) {
                    (Some("state"), Some("reconnecting")) if !was_reconnecting => {
                        was_reconnecting = true;
                        seen.reconnecting.fetch_add(1, Ordering::Relaxed);
                    }
                    (Some("state"), Some("live")) if was_reconnecting && !live_again => {
                        live_again = true;
                        seen.live_again.fetch_add(1, Ordering::Relaxed);
                    }
                    (Some("viewers"), _) => {
                        let n = v["live_channel"].as_u64().unwrap_or(0);
                        seen.most_channels.fetch_max(n, Ordering::Relaxed);
                    }
                    _ => {}
                }
                // Tell the stop signal apart from a wake-up that came before we listened.
                if stopping.load(Ordering::Relaxed) {
                    let _ = ws.close(None).await;
                    return;
                }
            }
        }
    }
}

/// A flooder: sends `n` questions as fast as it can; returns (acks, refusals, closed).
async fn flood(mut ws: Ws, n: usize) -> (usize, usize, bool) {
    let (mut acks, mut refusals) = (0, 0);
    let mut sent = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sent < n {
        let q = json!({"type": "question", "text": format!("flood {sent}")}).to_string();
        if ws.send(Message::Text(q.into())).await.is_err() {
            break;
        }
        sent += 1;
    }
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap_or_default();
                match v["type"].as_str() {
                    Some("ack") => acks += 1,
                    Some("error") => refusals += 1,
                    _ => {}
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(None) | Ok(Some(Err(_))) => return (acks, refusals, true),
            Err(_) => return (acks, refusals, false),
        }
    }
}

fn memory(s: &Server) -> (f64, f64) {
    (heap_mib(s), s.rss_mib())
}

/// The highest heap and RSS of `n` samples half a second apart: with a publisher streaming
/// the heap moves with the key-frame interval kept for joiners, so one sample is no baseline.
fn memory_window(s: &Server, n: usize) -> (f64, f64) {
    let mut most = (0.0f64, 0.0f64);
    for i in 0..n {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
        let m = memory(s);
        most = (most.0.max(m.0), most.1.max(m.1));
    }
    most
}

#[test]
fn two_thousand_live_channels_and_a_message_flood() {
    let clients: usize = std::env::var("JT_FLOOD_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let addresses = clients.div_ceil(PER_ADDRESS);
    assert!(addresses <= 240, "at most 40,800 clients");
    let nofile = raise_nofile(65_536);
    assert!(
        nofile as usize > 2 * clients + 500,
        "open-files limit {nofile} too low for {clients} clients"
    );
    let s = Server::start(
        "[[lecture]]\nname = \"flood\"\n[lectures]\ngrace_period_s = 60\n[hls]\nwindow_segments = 3\n",
    );
    let mut publisher = ffmpeg_publish(&s.rtmp_url("flood"), "320x180", 25, 440);
    // The baseline once the playlists' windows are full and sliding (what the relay holds
    // for a lecture grows until then).
    wait_for_segments(&s, "flood", "video", 1);
    wait_until(Duration::from_secs(40), "the HLS window sliding", || {
        let pl = get_text(&s.url("/hls/flood/video/index.m3u8"));
        pl.lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&n| n >= 2)
    });
    let base = memory_window(&s, 8);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopping = Arc::new(AtomicBool::new(false));
    let http = s.http;

    // Everyone connects, 100 at a time; each gets the lecture's state first.
    let started = Instant::now();
    let readers = rt.block_on(async {
        let mut readers = Vec::with_capacity(clients);
        for batch in 0..clients.div_ceil(100) {
            let mut set = tokio::task::JoinSet::new();
            for i in batch * 100..((batch + 1) * 100).min(clients) {
                let from = Ipv4Addr::new(127, 0, 1, 10 + (i % addresses) as u8);
                set.spawn(async move {
                    let mut ws = ws_from(http, from, "flood").await.expect("a channel");
                    let st = next_of(&mut ws, "state", Duration::from_secs(30), |_| true)
                        .await
                        .expect("the state first");
                    assert_eq!(st["status"], "live");
                    ws
                });
            }
            while let Some(ws) = set.join_next().await {
                let ws = ws.unwrap();
                readers.push(tokio::spawn(quiet(
                    ws,
                    seen.clone(),
                    stop.clone(),
                    stopping.clone(),
                )));
            }
        }
        readers
    });
    let connect_time = started.elapsed();
    wait_until(Duration::from_secs(15), "the viewer count pushed", || {
        (seen.most_channels.load(Ordering::Relaxed) >= clients as u64).then_some(())
    });
    let during = memory(&s);

    // A few flood the channel while the publisher drops and comes back: the flooders are
    // refused and closed, every quiet client sees both changes.
    let flooders = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..FLOODERS {
            let ws = ws_from(http, Ipv4Addr::new(127, 0, 2, 1), "flood")
                .await
                .unwrap();
            set.spawn(flood(ws, 200));
        }
        set
    });
    publisher.stop();
    let dropped = Instant::now();
    wait_until(
        Duration::from_secs(20),
        "every quiet client told of the drop",
        || (seen.reconnecting.load(Ordering::Relaxed) == clients).then_some(()),
    );
    let told_drop = dropped.elapsed();
    let mut publisher = ffmpeg_publish(&s.rtmp_url("flood"), "320x180", 25, 440);
    let back = Instant::now();
    wait_until(
        Duration::from_secs(30),
        "every quiet client told it is back",
        || (seen.live_again.load(Ordering::Relaxed) == clients).then_some(()),
    );
    let told_back = back.elapsed();
    let results = rt.block_on(async {
        let mut flooders = flooders;
        let mut out = Vec::new();
        while let Some(r) = flooders.join_next().await {
            out.push(r.unwrap());
        }
        out
    });
    for (acks, refusals, closed) in &results {
        assert!(*acks <= 4, "a flooder got {acks} messages through");
        // Its refusals may be lost with the connection (closed while it still sends); the
        // relay's count of them is checked below.
        assert!(
            *closed,
            "a flooder was not closed ({refusals} refusals seen): {results:?}"
        );
    }
    assert_eq!(
        seen.closed.load(Ordering::Relaxed),
        0,
        "quiet clients were closed"
    );
    assert!(limit_hits(&s, "channel_rate") >= 10 * FLOODERS as u64);
    let questions: Value =
        serde_json::from_str(&get_text(&s.url("/api/v1/streams/flood/questions"))).unwrap();
    let kept = questions["questions"].as_array().unwrap().len();
    assert!(kept <= 4 * FLOODERS, "{kept} flood questions kept");

    // Everyone leaves.
    stopping.store(true, Ordering::Relaxed);
    stop.notify_waiters();
    rt.block_on(async {
        for r in readers {
            let _ = tokio::time::timeout(Duration::from_secs(10), r).await;
        }
    });
    drop(rt);
    wait_until(Duration::from_secs(15), "every channel given back", || {
        (get_text(&s.url("/api/v1/streams/flood")).contains("\"live_channel\":0")).then_some(())
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let now = memory_window(&s, 8);
        if (now.0 <= base.0 * 1.05 && now.1 <= base.1 * 1.05) || Instant::now() >= deadline {
            break now;
        }
    };
    eprintln!(
        "flood-live-channel: {clients} channels connected in {:.1} s, told of the drop in {:.2} s and of the return in {:.2} s; heap MiB before/during/after {:.1}/{:.1}/{:.1}, RSS MiB {:.1}/{:.1}/{:.1}; flooders (acks, refusals, closed) {results:?}",
        connect_time.as_secs_f64(),
        told_drop.as_secs_f64(),
        told_back.as_secs_f64(),
        base.0,
        during.0,
        after.0,
        base.1,
        during.1,
        after.1
    );
    assert!(
        after.0 <= base.0 * 1.05,
        "heap {:.1} MiB after, {:.1} MiB before",
        after.0,
        base.0
    );
    assert!(
        after.1 <= base.1 * 1.05,
        "RSS {:.1} MiB after, {:.1} MiB before",
        after.1,
        base.1
    );
    publisher.stop();
    assert!(
        s.log()
            .contains("live channel closed: too many bad or too frequent messages")
    );
}
