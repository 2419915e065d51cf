//! Supervision of a transcoding pipeline: one that posts an error on its bus, or puts out
//! nothing for [`Watchdog::stall`] while input keeps coming, is torn down and started again
//! with backoff, at most [`Watchdog::max_restarts_per_minute`] times a minute. Meanwhile its
//! output (one dialect's Opus, or AAC) is silent; the rest of the lecture does not notice.
//!
//! Checked on each input frame, on the thread that feeds it: no extra thread per pipeline. A
//! broken pipeline is stopped on a thread of its own, as a stalled one may take long to
//! reach the `Null` state.
//!
//! Audio pipelines are a [`Fed`]; the video ladder's ([`crate::ladder`]) wraps one to feed
//! it whole GOPs; both are [`Watched`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use media::encode::{AudioEncoder, VideoEncoder};
use tracing::{info, warn};

use crate::fed::Fed;

/// When a transcoder counts as broken and how often it is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watchdog {
    /// No output for this long while input flows: stalled.
    pub stall: Duration,
    /// Most restarts of one transcoder in any 60 s; beyond, it stays silent until the
    /// oldest restart is a minute old.
    pub max_restarts_per_minute: u32,
}

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog {
            stall: Duration::from_secs(5),
            max_restarts_per_minute: 6,
        }
    }
}

impl Watchdog {
    /// From `[transcode]` in the configuration.
    pub fn from_config(c: &config::TranscodeConfig) -> Watchdog {
        Watchdog {
            stall: Duration::from_millis(c.stall_timeout_ms.max(1)),
            max_restarts_per_minute: c.max_restarts_per_minute,
        }
    }
}

static RESTARTS: AtomicU64 = AtomicU64::new(0);

/// Transcoder restarts since the process started, for `/metrics`.
pub fn restarts_total() -> u64 {
    RESTARTS.load(Ordering::Relaxed)
}

/// The first wait before a restart; doubled after each restart up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// A pipeline the supervisor can judge.
pub trait Watched: Send + 'static {
    /// The first error it posted, if any.
    fn fault(&self) -> Option<String>;

    /// True while it deliberately takes no input (a video pipeline waiting for a keyframe
    /// to start at): no output then is no stall.
    fn idle(&self) -> bool {
        false
    }
}

impl Watched for Fed {
    fn fault(&self) -> Option<String> {
        Fed::fault(self)
    }
}

/// Starts a pipeline whose output moves `produced` on each unit it puts out.
type Start<P> = Box<dyn FnMut(Arc<AtomicU64>) -> Result<P, String> + Send>;

/// An output callback kept across restarts.
pub(crate) type Shared<T> = Arc<Mutex<Box<dyn FnMut(T) + Send>>>;

/// `f` counting its calls in `produced`, for a pipeline's output callback.
pub(crate) fn counted<T: 'static>(
    f: &Shared<T>,
    produced: Arc<AtomicU64>,
) -> Box<dyn FnMut(T) + Send> {
    let f = f.clone();
    Box::new(move |t| {
        produced.fetch_add(1, Ordering::Relaxed);
        (f.lock().unwrap_or_else(|e| e.into_inner()))(t)
    })
}

/// A supervised pipeline.
pub struct Supervised<P: Watched = Fed> {
    what: &'static str,
    start: Start<P>,
    watchdog: Watchdog,
    running: Option<P>,
    produced: Arc<AtomicU64>,
    /// Output count at `progress_at`.
    seen: u64,
    /// When output last moved, or input resumed after a pause, or the pipeline started.
    progress_at: Instant,
    last_input: Option<Instant>,
    restarts: VecDeque<Instant>,
    retry_at: Option<Instant>,
    backoff: Duration,
    last_fault: Option<String>,
}

impl<P: Watched> Supervised<P> {
    /// Starts the first pipeline with `start`; its error is returned as is.
    pub(crate) fn start(
        what: &'static str,
        watchdog: Watchdog,
        mut start: impl FnMut(Arc<AtomicU64>) -> Result<P, String> + Send + 'static,
    ) -> Result<Supervised<P>, String> {
        let produced = Arc::new(AtomicU64::new(0));
        let fed = start(produced.clone())?;
        Ok(Supervised {
            what,
            start: Box::new(start),
            watchdog,
            running: Some(fed),
            produced,
            seen: 0,
            progress_at: Instant::now(),
            last_input: None,
            restarts: VecDeque::new(),
            retry_at: None,
            backoff: FIRST_BACKOFF,
            last_fault: None,
        })
    }

    /// Why it was last torn down.
    pub fn last_fault(&self) -> Option<&str> {
        self.last_fault.as_deref()
    }

    /// Why the running pipeline must go, if it must.
    fn broken(&mut self, now: Instant) -> Option<String> {
        let fed = self.running.as_ref()?;
        if let Some(e) = fed.fault() {
            return Some(format!("error: {e}"));
        }
        let n = self.produced.load(Ordering::Relaxed);
        if n != self.seen || fed.idle() {
            self.seen = n;
            self.progress_at = now;
            return None;
        }
        (now.duration_since(self.progress_at) >= self.watchdog.stall).then(|| {
            format!(
                "no output for {} ms while input flows",
                self.watchdog.stall.as_millis()
            )
        })
    }

    fn tear_down(&mut self, why: &str, now: Instant) {
        self.last_fault = Some(why.to_string());
        if let Some(fed) = self.running.take() {
            // A stalled pipeline may block on its way to Null: not on the feeding thread.
            let _ = std::thread::Builder::new()
                .name("transcoder-stop".into())
                .spawn(move || drop(fed));
        }
        RESTARTS.fetch_add(1, Ordering::Relaxed);
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.restarts.pop_front();
        }
        if self.restarts.is_empty() {
            self.backoff = FIRST_BACKOFF;
        }
        if self.watchdog.max_restarts_per_minute == 0 {
            warn!(
                transcoder = self.what,
                "{why}: not restarted (no restarts allowed)"
            );
            self.retry_at = None;
            return;
        }
        let mut at = now + self.backoff;
        if self.restarts.len() >= self.watchdog.max_restarts_per_minute as usize {
            let free = self.restarts
                [self.restarts.len() - self.watchdog.max_restarts_per_minute as usize]
                + Duration::from_secs(60);
            at = at.max(free);
            warn!(
                transcoder = self.what,
                "{why}: restarted {} times in a minute, silent for {} s",
                self.restarts.len(),
                at.duration_since(now).as_secs()
            );
        } else {
            warn!(
                transcoder = self.what,
                "{why}: restarting in {} ms",
                at.duration_since(now).as_millis()
            );
        }
        self.restarts.push_back(at);
        self.retry_at = Some(at);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    fn restart(&mut self, now: Instant) {
        match (self.start)(self.produced.clone()) {
            Ok(fed) => {
                info!(transcoder = self.what, "restarted");
                self.running = Some(fed);
                self.retry_at = None;
                self.seen = self.produced.load(Ordering::Relaxed);
                self.progress_at = now;
            }
            Err(e) => self.tear_down(&format!("cannot restart: {e}"), now),
        }
    }

    /// Judges the running pipeline as one more input arrives, tearing it down or starting
    /// it again as due: the pipeline to give the input to, if one runs.
    fn on_input(&mut self) -> Option<&mut P> {
        let now = Instant::now();
        // Input that paused (a publisher away) is not a stall of ours.
        if self
            .last_input
            .is_none_or(|t| now.duration_since(t) >= self.watchdog.stall / 2)
        {
            self.seen = self.produced.load(Ordering::Relaxed);
            self.progress_at = now;
        }
        self.last_input = Some(now);
        if let Some(why) = self.broken(now) {
            self.tear_down(&why, now);
        }
        if self.running.is_none() && self.retry_at.is_some_and(|t| now >= t) {
            self.restart(now);
        }
        self.running.as_mut()
    }
}

impl AudioEncoder for Supervised<Fed> {
    fn push(&mut self, pts: i64, timescale: u32, data: &[u8]) -> Result<(), String> {
        match self.on_input() {
            Some(fed) => fed.push(pts, timescale, data),
            // Silent until restarted.
            None => Ok(()),
        }
    }
}

impl<P: Watched + VideoEncoder> VideoEncoder for Supervised<P> {
    fn push(&mut self, frame: &media::Frame, timescale: u32) -> Result<(), String> {
        match self.on_input() {
            Some(p) => p.push(frame, timescale),
            // No pictures until restarted.
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use media::encode::{Level, Packet};

    const WATCHDOG: Watchdog = Watchdog {
        stall: Duration::from_secs(2),
        max_restarts_per_minute: 6,
    };

    /// Feeds `data` as the next frame after `pts`, at about real time.
    fn feed(enc: &mut Supervised, pts: &mut i64, data: &[u8]) {
        enc.push(*pts, 48_000, data).unwrap();
        *pts += 1024;
        std::thread::sleep(Duration::from_millis(21));
    }

    /// Feeds corrupt frames until `enc` is torn down (at most 15 s of them): its fault.
    fn corrupt_until_restarted(enc: &mut Supervised, pts: &mut i64) -> String {
        let mut n = 0;
        while enc.last_fault().is_none() && n < 700 {
            feed(enc, pts, &garbage(n, 300));
            n += 1;
        }
        enc.last_fault()
            .unwrap_or_else(|| panic!("no restart after {n} corrupt frames"))
            .to_string()
    }

    /// Pseudo-random bytes, as a broken encoder or a damaged link would deliver.
    fn garbage(seed: u32, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    #[test]
    fn corrupt_aac_breaks_the_opus_encoder_which_is_restarted_and_plays_on() {
        let (params, frames) = crate::test_audio::aac_tone(94, 0.8);
        let packets: Arc<Mutex<Vec<Packet>>> = Arc::default();
        let out = packets.clone();
        let mut enc = crate::opus::supervised(
            WATCHDOG,
            &params,
            Box::new(move |p| out.lock().unwrap().push(p)),
        )
        .unwrap();
        let restarts = restarts_total();
        let mut pts = 0i64;
        for f in &frames[..47] {
            feed(&mut enc, &mut pts, f);
        }
        let good = packets.lock().unwrap().len();
        assert!(good > 20, "{good} packets before the damage");
        // The decoder gives up after 50 corrupt frames in a row: an error on the bus.
        let fault = corrupt_until_restarted(&mut enc, &mut pts);
        assert!(fault.starts_with("error:"), "{fault}");
        assert!(restarts_total() > restarts);
        let broken_at = pts;
        // Good input again: after the backoff it is encoded again, on the input's timeline.
        for f in frames.iter().cycle().take(150) {
            feed(&mut enc, &mut pts, f);
        }
        drop(enc);
        let packets = packets.lock().unwrap();
        let after: Vec<&Packet> = packets.iter().filter(|p| p.pts > broken_at).collect();
        assert!(
            after.len() > 50,
            "{} packets after the restart",
            after.len()
        );
        assert!(after.windows(2).all(|w| w[1].pts > w[0].pts));
        assert!(
            after[0].pts < broken_at + 48_000,
            "resumed at {}",
            after[0].pts
        );
    }

    #[test]
    fn a_level_meter_fed_corrupt_aac_stalls_and_is_restarted() {
        let (params, frames) = crate::test_audio::aac_tone(94, 0.5);
        let levels: Arc<Mutex<Vec<Level>>> = Arc::default();
        let out = levels.clone();
        let mut m = crate::opus::supervised_level_meter(
            WATCHDOG,
            &params,
            Box::new(move |l| out.lock().unwrap().push(l)),
        )
        .unwrap();
        let mut pts = 0i64;
        for f in frames.iter().cycle().take(94) {
            feed(&mut m, &mut pts, f);
        }
        assert!(!levels.lock().unwrap().is_empty());
        // The meter's decoder skips what it cannot decode: no error, no output either.
        let fault = corrupt_until_restarted(&mut m, &mut pts);
        assert!(fault.starts_with("no output for 2000 ms"), "{fault}");
        let before = levels.lock().unwrap().len();
        for f in frames.iter().cycle().take(150) {
            feed(&mut m, &mut pts, f);
        }
        drop(m);
        let after = levels.lock().unwrap().len() - before;
        assert!(after >= 2, "{after} readings after the restart");
    }

    #[test]
    fn restarts_are_bounded_per_minute() {
        let (params, _) = crate::test_audio::aac_tone(2, 0.5);
        let watchdog = Watchdog {
            stall: Duration::from_secs(2),
            max_restarts_per_minute: 2,
        };
        let mut enc = crate::opus::supervised(watchdog, &params, Box::new(|_| {})).unwrap();
        // Nothing but corrupt frames: it fails, is restarted twice, then waits out the minute.
        let (mut pts, mut n) = (0i64, 0);
        let deadline = Instant::now() + Duration::from_secs(30);
        while enc.restarts.len() < 3 && Instant::now() < deadline {
            enc.push(pts, 48_000, &garbage(n, 300)).unwrap();
            pts += 1024;
            n += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(enc.restarts.len(), 3, "{:?}", enc.last_fault());
        let now = Instant::now();
        let retry = enc.retry_at.expect("a restart is planned");
        assert!(retry > now + Duration::from_secs(50), "{:?}", retry - now);
        for _ in 0..100 {
            enc.push(pts, 48_000, &garbage(n, 300)).unwrap();
            pts += 1024;
            n += 1;
        }
        assert!(enc.running.is_none(), "silent until the minute has passed");
    }
}
