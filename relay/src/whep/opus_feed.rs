//! Each dialect of a lecture as Opus once, whatever the number of WebRTC engines (shards)
//! whose viewers hear it: one feed per (lecture, dialect) fills a broadcast channel, and
//! every engine with a listener of that dialect subscribes. The feed passes a WebRTC
//! source's own Opus through as it came (no Opus → AAC → Opus round trip) and transcodes the
//! dialect's AAC only while the source sends none (RTMP, SRT, RTSP). It stops when its last
//! subscriber has gone (checked as each packet or frame arrives).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use media::CodecParams;
use media::encode::{AudioEncoder, Transcoders};
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use super::stats::Stats;
use crate::hub::Lecture;
use crate::taps::TapTrack;

pub use crate::taps::OpusPacket;

/// Packets queued per subscriber before it lags: 256 × 20 ms, five seconds.
const QUEUE: usize = 256;

type Key = (u64, String);

/// The running Opus transcoders, by lecture instance and dialect.
pub struct OpusFeeds {
    transcoders: Arc<dyn Transcoders>,
    stats: Arc<Stats>,
    feeds: Arc<Mutex<HashMap<Key, broadcast::Sender<Arc<OpusPacket>>>>>,
}

impl OpusFeeds {
    /// No transcoder yet; they start with their first subscriber.
    pub fn new(transcoders: Arc<dyn Transcoders>, stats: Arc<Stats>) -> OpusFeeds {
        OpusFeeds {
            transcoders,
            stats,
            feeds: Arc::default(),
        }
    }

    /// Opus packets of `lang` in `lecture`, starting its transcoder if none runs.
    pub fn subscribe(
        &self,
        lecture: &Arc<Lecture>,
        lang: &str,
    ) -> broadcast::Receiver<Arc<OpusPacket>> {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        let key = (lecture.id, lang.to_string());
        if let Some(tx) = feeds.get(&key) {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(QUEUE);
        feeds.insert(key.clone(), tx.clone());
        tokio::spawn(transcode(
            lecture.clone(),
            key,
            tx,
            self.feeds.clone(),
            self.transcoders.clone(),
            self.stats.clone(),
        ));
        rx
    }

    /// Transcoders running now.
    pub fn running(&self) -> usize {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Leaves the registry when the transcoder ends, however it ends (a panic included), so the
/// next subscriber starts a new one.
struct Registered {
    key: Key,
    tx: broadcast::Sender<Arc<OpusPacket>>,
    feeds: Arc<Mutex<HashMap<Key, broadcast::Sender<Arc<OpusPacket>>>>>,
}

impl Registered {
    /// Whether no engine listens any more; if so, leaves the registry at once (under its
    /// lock, so a subscriber arriving now starts a new transcoder instead of joining this
    /// one as it ends).
    fn abandoned(&self) -> bool {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if self.tx.receiver_count() > 0 {
            return false;
        }
        if feeds
            .get(&self.key)
            .is_some_and(|t| t.same_channel(&self.tx))
        {
            feeds.remove(&self.key);
        }
        true
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if feeds
            .get(&self.key)
            .is_some_and(|t| t.same_channel(&self.tx))
        {
            feeds.remove(&self.key);
        }
    }
}

/// How long after a source's own Opus packet the dialect's AAC is not transcoded: longer
/// than any gap between packets of a live source, short enough that sound returns soon
/// after the source changes to one without Opus (a publisher back over RTMP).
const PASSTHROUGH_HOLD: Duration = Duration::from_millis(500);

/// The Opus of one dialect for every subscribed engine: the source's own Opus as it came
/// when the source sends Opus (WHIP), else the lecture's AAC transcoded.
async fn transcode(
    lecture: Arc<Lecture>,
    key: Key,
    tx: broadcast::Sender<Arc<OpusPacket>>,
    feeds: Arc<Mutex<HashMap<Key, broadcast::Sender<Arc<OpusPacket>>>>>,
    transcoders: Arc<dyn Transcoders>,
    stats: Arc<Stats>,
) {
    let lang = key.1.clone();
    let registered = Registered { key, tx, feeds };
    let mut rx = lecture.taps.subscribe(&TapTrack::Audio(lang.clone()));
    let mut own = lecture.taps.subscribe_opus(&lang);
    let mut encoder: Option<(Arc<CodecParams>, Box<dyn AudioEncoder>)> = None;
    // Passing the source's own Opus (for the log's sake: the taps decide).
    let mut passing = false;
    loop {
        let frame = tokio::select! {
            // Before the AAC of the same instant, so the encoder is not started for nothing.
            biased;
            p = own.recv() => {
                match p {
                    Ok(p) => {
                        if registered.abandoned() {
                            debug!(lecture = %lecture.name, dialect = %lang, "opus feed stopped: no listener left");
                            return;
                        }
                        stats.opus_passed_through.inc();
                        // No subscriber left is the only error: the next packet sees it.
                        let _ = registered.tx.send(p);
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => stats.feed_lagged.add(n),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
                continue;
            }
            f = rx.recv() => f,
        };
        let frame = match frame {
            Ok(f) => f,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                stats.feed_lagged.add(n);
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if registered.abandoned() {
            debug!(lecture = %lecture.name, dialect = %lang, "opus encoder stopped: no listener left");
            return;
        }
        if lecture.taps.sends_opus(&lang, PASSTHROUGH_HOLD) {
            if !passing {
                info!(lecture = %lecture.name, dialect = %lang, "the source sends Opus: passed through to WebRTC viewers as it came");
                passing = true;
            }
            // Dropping it stops its pipeline: no CPU while the source's own plays.
            encoder = None;
            continue;
        }
        if passing {
            info!(lecture = %lecture.name, dialect = %lang, "the source's own Opus stopped: transcoding the dialect's AAC again");
            passing = false;
        }
        let CodecParams::Aac(aac) = frame.codec.as_ref() else {
            continue;
        };
        if encoder
            .as_ref()
            .is_none_or(|(c, _)| !Arc::ptr_eq(c, &frame.codec) && **c != *frame.codec)
        {
            let (out, lec) = (registered.tx.clone(), lecture.clone());
            let on_packet = Box::new(move |p: media::encode::Packet| {
                let now = Instant::now();
                let wallclock = lec.taps.wallclock_of(p.pts, 48_000).unwrap_or(now).min(now);
                // No subscriber left is the only error: the loop above sees it and ends.
                let _ = out.send(Arc::new(OpusPacket {
                    pts: p.pts,
                    wallclock,
                    data: Arc::from(&p.data[..]),
                }));
            });
            match transcoders.aac_to_opus(aac, on_packet) {
                Ok(e) => {
                    info!(lecture = %lecture.name, dialect = %lang, "opus encoder started");
                    encoder = Some((frame.codec.clone(), e));
                }
                Err(e) => {
                    warn!(lecture = %lecture.name, dialect = %lang, "cannot transcode to opus: {e}");
                    return;
                }
            }
        }
        if let Some((_, e)) = encoder.as_mut()
            && let Err(err) = e.push(frame.pts, frame.timescale, &frame.data)
        {
            debug!(lecture = %lecture.name, dialect = %lang, "opus encoder input: {err}");
        }
    }
}
