//! WHEP viewers for the tests: str0m clients doing real ICE, DTLS and SRTP on their own UDP
//! sockets and reassembling frames (no decoding), and readers of the engine's histograms.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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
    opus: Arc<Mutex<Vec<Vec<u8>>>>,
    connected: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// Opus packets a viewer keeps for [`Viewer::opus`] (a minute of 20 ms packets).
const KEPT_OPUS: usize = 3000;

fn install_crypto() {
    static CRYPTO: OnceLock<()> = OnceLock::new();
    CRYPTO.get_or_init(|| str0m::crypto::from_feature_flags().install_process_default());
}

impl Viewer {
    /// Offers to `POST http://HTTP/whep/STREAM`, accepts the answer and starts receiving.
    pub async fn start(http: SocketAddr, stream: &str) -> Viewer {
        Viewer::start_at(http, &format!("/whep/{stream}")).await
    }

    /// The same at `PATH` (`/whep/STREAM?lang=yue`).
    pub async fn start_at(http: SocketAddr, path: &str) -> Viewer {
        install_crypto();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let mut rtc = Rtc::builder().build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let r = reqwest::Client::new()
            .post(format!("http://{http}{path}"))
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
        let opus = Arc::default();
        let connected = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(receive(
            rtc,
            socket,
            [video_frames.clone(), audio_frames.clone()],
            Arc::clone(&opus),
            connected.clone(),
        ));
        Viewer {
            location,
            video_frames,
            audio_frames,
            opus,
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

    /// The Opus packets received so far (the first few thousand), as they arrived.
    pub fn opus(&self) -> Vec<Vec<u8>> {
        self.opus.lock().unwrap().clone()
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
    opus: Arc<Mutex<Vec<Vec<u8>>>>,
    connected: Arc<AtomicBool>,
) {
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
                    let mut kept = opus.lock().unwrap();
                    if kept.len() < KEPT_OPUS {
                        kept.push(m.data.to_vec());
                    }
                }
                Ok(Output::Event(_)) => {}
                Err(_) => return,
            }
        };
        let wait = timeout
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        if !turn(&mut rtc, &socket, &mut buf, wait).await {
            return;
        }
    }
}

/// Gives `rtc` the next datagram on `socket`, or the time after `wait`; false once it
/// failed for good.
async fn turn(rtc: &mut Rtc, socket: &UdpSocket, buf: &mut [u8], wait: Duration) -> bool {
    let local = socket.local_addr().unwrap();
    let input = tokio::select! {
        r = socket.recv_from(buf) => {
            let Ok((n, source)) = r else { return true };
            let Ok(contents) = buf[..n].try_into() else { return true };
            Input::Receive(Instant::now(), Receive {
                proto: Protocol::Udp,
                source,
                destination: local,
                contents,
            })
        }
        _ = tokio::time::sleep(wait) => Input::Timeout(Instant::now()),
    };
    rtc.handle_input(input).is_ok()
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

/// A WHIP publisher (or interpreter) of Opus audio alone: str0m doing real ICE, DTLS and
/// SRTP, sending a 20 ms packet every 20 ms, each one different, so a viewer can tell the
/// packets it hears for the very ones sent. The packets are CELT frames of arbitrary bytes:
/// a decoder makes noise of them, as a real encoder's would make speech.
pub struct OpusPublisher {
    /// The session resource (`/whip/NAME/ID`).
    pub location: String,
    sent: Arc<Mutex<std::collections::HashSet<Vec<u8>>>>,
    connected: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl OpusPublisher {
    /// Offers to `POST http://HTTP{path}` (`/whip/STREAM`, `/whip/STREAM?lang=yue`) with
    /// `Authorization: Bearer KEY` and starts sending once connected.
    pub async fn start(http: SocketAddr, path: &str, key: &str) -> OpusPublisher {
        install_crypto();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let mut rtc = Rtc::builder().build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let mut api = rtc.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let r = reqwest::Client::new()
            .post(format!("http://{http}{path}"))
            .header("content-type", "application/sdp")
            .header("authorization", format!("Bearer {key}"))
            .body(offer.to_sdp_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        let body = r.text().await.unwrap();
        assert_eq!(status, 201, "WHIP offer: {body}");
        let answer = SdpAnswer::from_sdp_string(&body).unwrap();
        rtc.sdp_api().accept_answer(pending, answer).unwrap();
        let sent = Arc::default();
        let connected = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(publish(
            rtc,
            socket,
            mid,
            Arc::clone(&sent),
            connected.clone(),
        ));
        OpusPublisher {
            location: location.unwrap(),
            sent,
            connected,
            task,
        }
    }

    /// Whether ICE and DTLS are up.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Packets sent so far.
    pub fn sent(&self) -> usize {
        self.sent.lock().unwrap().len()
    }

    /// Whether `packet` is one this publisher sent.
    pub fn has_sent(&self, packet: &[u8]) -> bool {
        self.sent.lock().unwrap().contains(packet)
    }

    /// Stops sending (the session times out at the relay; nothing says goodbye).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for OpusPublisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn publish(
    mut rtc: Rtc,
    socket: UdpSocket,
    mid: str0m::media::Mid,
    sent: Arc<Mutex<std::collections::HashSet<Vec<u8>>>>,
    connected: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 2048];
    let mut next_packet = Instant::now();
    let mut n: u64 = 0;
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    loop {
        let now = Instant::now();
        if connected.load(Ordering::Relaxed) && now >= next_packet {
            // TOC: configuration 31 (CELT, fullband, 20 ms), stereo, one frame.
            let mut packet = vec![0xfc];
            packet.extend_from_slice(&n.to_be_bytes());
            for _ in 0..12 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                packet.extend_from_slice(&rng.to_le_bytes()[..4]);
            }
            let pt = rtc
                .writer(mid)
                .and_then(|w| w.payload_params().next().map(|p| p.pt()));
            if let Some(pt) = pt
                && let Some(w) = rtc.writer(mid)
            {
                let time =
                    str0m::media::MediaTime::new(n * 960, str0m::media::Frequency::FORTY_EIGHT_KHZ);
                if w.write(pt, now, time, packet.clone()).is_ok() {
                    sent.lock().unwrap().insert(packet);
                }
            }
            n += 1;
            next_packet += Duration::from_millis(20);
        }
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::Connected)) => {
                    connected.store(true, Ordering::Relaxed);
                    next_packet = Instant::now();
                }
                Ok(Output::Event(_)) => {}
                Err(_) => return,
            }
        };
        let mut wake = timeout.min(Instant::now() + Duration::from_millis(100));
        if connected.load(Ordering::Relaxed) {
            wake = wake.min(next_packet);
        }
        let wait = wake.saturating_duration_since(Instant::now());
        if !turn(&mut rtc, &socket, &mut buf, wait).await {
            return;
        }
    }
}
