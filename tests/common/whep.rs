//! WHEP viewers for the tests: str0m clients doing real ICE, DTLS and SRTP on their own UDP
//! sockets and reassembling frames (no decoding), and readers of the engine's histograms.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;

/// A connected-or-connecting viewer; its task ends when dropped.
pub struct Viewer {
    /// The session resource (`/whep/NAME/ID`).
    pub location: String,
    video_frames: Arc<AtomicU64>,
    audio_frames: Arc<AtomicU64>,
    connected: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Viewer {
    /// Offers to `POST http://HTTP/whep/STREAM`, accepts the answer and starts receiving.
    pub async fn start(http: SocketAddr, stream: &str) -> Viewer {
        static CRYPTO: OnceLock<()> = OnceLock::new();
        CRYPTO.get_or_init(|| str0m::crypto::from_feature_flags().install_process_default());
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let mut rtc = Rtc::builder().build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let r = reqwest::Client::new()
            .post(format!("http://{http}/whep/{stream}"))
            .header("content-type", "application/sdp")
            .body(offer.to_sdp_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "WHEP offer");
        let location = r.headers()["location"].to_str().unwrap().to_string();
        let answer = SdpAnswer::from_sdp_string(&r.text().await.unwrap()).unwrap();
        rtc.sdp_api().accept_answer(pending, answer).unwrap();
        let video_frames = Arc::new(AtomicU64::new(0));
        let audio_frames = Arc::new(AtomicU64::new(0));
        let connected = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(receive(
            rtc,
            socket,
            [video_frames.clone(), audio_frames.clone()],
            connected.clone(),
        ));
        Viewer {
            location,
            video_frames,
            audio_frames,
            connected,
            task,
        }
    }

    /// Video frames received so far.
    pub fn video_frames(&self) -> u64 {
        self.video_frames.load(Ordering::Relaxed)
    }

    /// Audio (Opus) packets received so far.
    pub fn audio_frames(&self) -> u64 {
        self.audio_frames.load(Ordering::Relaxed)
    }

    /// Whether ICE and DTLS are up.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    mut rtc: Rtc,
    socket: UdpSocket,
    [video_frames, audio_frames]: [Arc<AtomicU64>; 2],
    connected: Arc<AtomicBool>,
) {
    let local = socket.local_addr().unwrap();
    let mut buf = vec![0u8; 2048];
    loop {
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::Connected)) => connected.store(true, Ordering::Relaxed),
                Ok(Output::Event(Event::MediaData(m)))
                    if m.params.spec().codec == str0m::format::Codec::H264 =>
                {
                    video_frames.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Output::Event(Event::MediaData(m)))
                    if m.params.spec().codec == str0m::format::Codec::Opus =>
                {
                    audio_frames.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Output::Event(_)) => {}
                Err(_) => return,
            }
        };
        let wait = timeout
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        let input = tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let Ok((n, source)) = r else { continue };
                let Ok(contents) = buf[..n].try_into() else { continue };
                Input::Receive(Instant::now(), Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: local,
                    contents,
                })
            }
            _ = tokio::time::sleep(wait) => Input::Timeout(Instant::now()),
        };
        if rtc.handle_input(input).is_err() {
            return;
        }
    }
}

/// Cumulative bucket counts `(le, count)` of the Prometheus histogram `name` in `metrics`.
pub fn buckets(metrics: &str, name: &str) -> Vec<(f64, u64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.parse().ok()?))
        })
        .collect()
}

/// The `q` quantile (a bucket's upper bound) of what histogram `name` recorded between the
/// scrapes `before` and `after`, and how many observations that was.
pub fn window_quantile(before: &str, after: &str, name: &str, q: f64) -> (f64, u64) {
    let (a, b) = (buckets(before, name), buckets(after, name));
    let counts: Vec<(f64, u64)> = b
        .iter()
        .map(|&(le, n)| {
            let was = a.iter().find(|x| x.0 == le).map_or(0, |x| x.1);
            (le, n.saturating_sub(was))
        })
        .collect();
    let total = counts.last().map_or(0, |x| x.1);
    if total == 0 {
        return (f64::NAN, 0);
    }
    let rank = ((total as f64 * q).ceil() as u64).max(1);
    let le = counts
        .iter()
        .find(|x| x.1 >= rank)
        .map_or(f64::NAN, |x| x.0);
    (le, total)
}
