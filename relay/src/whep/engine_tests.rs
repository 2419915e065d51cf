//! The engine with real peers in one process: str0m viewers on their own UDP sockets doing
//! ICE, DTLS and SRTP against the engine's socket, offers through the WHEP routes, lectures
//! published into the hub (synthetic H.264 at 25 fps, a keyframe a second).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use media::h264::H264Params;
use media::sink::{Publish, PublishRequest};
use media::{CodecParams, Frame, MediaEvent, TrackId, TrackInfo};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use super::engine::Fault;
use super::udp::Udp;
use super::{ENGINE_WAIT, Whep};
use crate::hub::{Hub, Lecture, Status};

/// Grace period of the rig's lectures.
const GRACE: Duration = Duration::from_secs(1);

struct Rig {
    hub: Arc<Hub>,
    whep: Arc<Whep>,
    router: Router,
    /// The engine's UDP address.
    media: std::net::SocketAddr,
}

impl Rig {
    /// A hub and a WHEP engine on a loopback port, maintained every `maintain_every`.
    async fn start(maintain_every: Duration) -> Rig {
        let toml = format!(
            "[demo]\nenabled = false\n[lectures]\nallow_unconfigured = true\ngrace_period_s = {}\n",
            GRACE.as_secs()
        );
        let config = config::Config::from_toml_str_with_env(&toml, std::iter::empty()).unwrap();
        let hub = Hub::new(Arc::new(config));
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let media = socket.local_addr().unwrap();
        let sockets = HashMap::from([(media, Arc::new(Udp::new(socket).unwrap()))]);
        let whep = Whep::start_with(
            vec![super::ShardPorts {
                udp: sockets,
                tcp: Vec::new(),
            }],
            hub.clone(),
            Arc::new(transcode::opus::GstTranscoders::default()),
            maintain_every,
        );
        let router = whep.router();
        Rig {
            hub,
            whep,
            router,
            media,
        }
    }

    async fn request(&self, method: &str, path: &str, ct: Option<&str>, body: &[u8]) -> Answer {
        let mut r = Request::builder().method(method).uri(path);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        let response = self
            .router
            .clone()
            .oneshot(r.body(Body::from(body.to_vec())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        Answer {
            status,
            location,
            body,
        }
    }

    /// A viewer of `stream` that has offered, been answered and started ICE.
    async fn viewer(&self, stream: &str) -> Viewer {
        self.viewer_behind(stream, Duration::ZERO).await
    }

    /// A viewer whose datagrams reach the relay `delay` late (a long line's round trip).
    async fn viewer_behind(&self, stream: &str, delay: Duration) -> Viewer {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let mut rtc = Rtc::builder().build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let a = self
            .request(
                "POST",
                &format!("/whep/{stream}"),
                Some("application/sdp"),
                offer.to_sdp_string().as_bytes(),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
        let answer = SdpAnswer::from_sdp_string(std::str::from_utf8(&a.body).unwrap()).unwrap();
        rtc.sdp_api().accept_answer(pending, answer).unwrap();
        let frames = Arc::new(AtomicU64::new(0));
        let audio = Arc::new(AtomicU64::new(0));
        let connected = Arc::new(AtomicBool::new(false));
        let loss = Arc::new(Loss::default());
        let task = tokio::spawn(receive(
            rtc,
            socket,
            frames.clone(),
            audio.clone(),
            connected.clone(),
            delay,
            loss.clone(),
        ));
        Viewer {
            location: a.location.unwrap(),
            frames,
            audio,
            connected,
            loss,
            task,
        }
    }

    /// The session resource's state, `None` once the engine has no such session.
    async fn info(&self, location: &str) -> Option<serde_json::Value> {
        let a = self.request("GET", location, None, b"").await;
        match a.status {
            StatusCode::OK => Some(serde_json::from_slice(&a.body).unwrap()),
            StatusCode::NOT_FOUND => None,
            s => panic!("GET {location}: {s} {:?}", a.body),
        }
    }
}

struct Answer {
    status: StatusCode,
    location: Option<String>,
    body: Bytes,
}

/// A WHEP viewer: a str0m client counting the video frames and Opus packets it receives.
struct Viewer {
    location: String,
    frames: Arc<AtomicU64>,
    audio: Arc<AtomicU64>,
    connected: Arc<AtomicBool>,
    loss: Arc<Loss>,
    task: JoinHandle<()>,
}

/// A loss made on purpose on a viewer's way in, and what it saw of it.
#[derive(Default)]
struct Loss {
    /// Drop the next video packet (any datagram over 500 bytes) that arrives.
    drop_next: AtomicBool,
    dropped: AtomicU64,
    /// Media that came out of the viewer's `Rtc` not contiguous with what came before: a
    /// packet lost and never repaired.
    gaps: AtomicU64,
}

impl Viewer {
    fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    fn audio_packets(&self) -> u64 {
        self.audio.load(Ordering::Relaxed)
    }

    /// Waits until `n` more video frames than now have arrived; `false` after `timeout`.
    async fn gets_frames(&self, n: u64, timeout: Duration) -> bool {
        let target = self.frames() + n;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.frames() >= target {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    async fn connects(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.connected.load(Ordering::Relaxed) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The viewer's side of the connection, until it fails or is aborted.
async fn receive(
    mut rtc: Rtc,
    socket: UdpSocket,
    frames: Arc<AtomicU64>,
    audio: Arc<AtomicU64>,
    connected: Arc<AtomicBool>,
    delay: Duration,
    loss: Arc<Loss>,
) {
    let socket = Arc::new(socket);
    let local = socket.local_addr().unwrap();
    let mut buf = vec![0u8; 2048];
    loop {
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) if delay.is_zero() => {
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Transmit(t)) => {
                    let (socket, data) = (socket.clone(), t.contents.to_vec());
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = socket.send_to(&data, t.destination).await;
                    });
                }
                Ok(Output::Event(Event::Connected)) => connected.store(true, Ordering::Relaxed),
                Ok(Output::Event(Event::MediaData(m)))
                    if m.params.spec().codec == str0m::format::Codec::H264 =>
                {
                    frames.fetch_add(1, Ordering::Relaxed);
                    if !m.contiguous {
                        loss.gaps.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Output::Event(Event::MediaData(_))) => {
                    audio.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Output::Event(_)) => {}
                Err(_) => return,
            }
        };
        let wait = timeout
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(50));
        let input = tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let Ok((n, source)) = r else { continue };
                if n > 500 && loss.drop_next.swap(false, Ordering::Relaxed) {
                    loss.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
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

/// A publisher sending 25 fps H.264 (a keyframe a second) into a lecture until stopped.
struct Lecturer {
    lecture: Arc<Lecture>,
    task: JoinHandle<()>,
}

impl Lecturer {
    fn start(hub: &Arc<Hub>, name: &str) -> Lecturer {
        Lecturer::start_with_audio(hub, name, None)
    }

    /// Like [`Lecturer::start`], with AAC (silence, 48 kHz stereo) as well when
    /// `audio_ahead` is given: how far (ms) the audio's clock is ahead of the video's at
    /// each moment (ms since the start).
    fn start_with_audio(
        hub: &Arc<Hub>,
        name: &str,
        audio_ahead: Option<fn(i64) -> i64>,
    ) -> Lecturer {
        let mut sink = hub
            .publish(PublishRequest {
                stream: name.into(),
                key: None,
                language: None,
                protocol: "test",
                remote: None,
            })
            .unwrap();
        let lecture = hub.lecture(name).unwrap();
        let video = TrackInfo::new(CodecParams::H264(
            H264Params::from_sps_pps(crate::hls::tests::SPS, crate::hls::tests::PPS).unwrap(),
        ));
        sink.handle(MediaEvent::Track {
            id: TrackId(1),
            info: video,
        })
        .unwrap();
        let aac = media::aac::AacParams::lc(48_000, 2).unwrap();
        if audio_ahead.is_some() {
            sink.handle(MediaEvent::Track {
                id: TrackId(2),
                info: TrackInfo::new(CodecParams::Aac(aac)),
            })
            .unwrap();
        }
        let silence = Bytes::from_static(media::aac::silent_frame(2).unwrap());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(40));
            let mut ai = 0i64;
            for i in 0i64.. {
                tick.tick().await;
                if let Some(ahead) = audio_ahead {
                    // AAC frames (1024 samples) up to this video frame's time.
                    while ai * 1024 * 1000 / 48_000 <= i * 40 {
                        let ms = ai * 1024 * 1000 / 48_000;
                        let dts = ai * 1024 + ahead(ms) * 48;
                        let frame = Frame {
                            dts,
                            pts: dts,
                            keyframe: true,
                            data: silence.clone(),
                        };
                        if sink
                            .handle(MediaEvent::Frame {
                                track: TrackId(2),
                                frame,
                            })
                            .is_err()
                        {
                            return;
                        }
                        ai += 1;
                    }
                }
                let keyframe = i % 25 == 0;
                // One slice NAL unit, length-prefixed.
                let mut data = vec![0, 0, 0x03, 0xe8, if keyframe { 0x65 } else { 0x41 }];
                data.resize(4 + 1000, (i % 251) as u8);
                let frame = Frame {
                    dts: i * 3600,
                    pts: i * 3600,
                    keyframe,
                    data: Bytes::from(data),
                };
                if sink
                    .handle(MediaEvent::Frame {
                        track: TrackId(1),
                        frame,
                    })
                    .is_err()
                {
                    return;
                }
            }
        });
        Lecturer { lecture, task }
    }

    /// The publisher leaves (its sink is dropped with the task).
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republished_lecture_feeds_viewers_who_join_before_maintenance() {
    // No maintenance during the test: the old instance's viewer is still in the engine when
    // the new instance's viewer arrives, as happens when both fall between two ticks.
    let rig = Rig::start(Duration::from_secs(3600)).await;
    let a1 = Lecturer::start(&rig.hub, "a");
    let first = a1.lecture.clone();
    let v1 = rig.viewer("a").await;
    assert!(
        v1.connects(Duration::from_secs(10)).await,
        "viewer of A1 connects"
    );
    assert!(
        v1.gets_frames(25, Duration::from_secs(10)).await,
        "viewer of A1 gets frames"
    );

    a1.stop().await;
    rig.hub
        .maintain(Instant::now() + GRACE + Duration::from_secs(1));
    assert!(matches!(first.status(), Status::Ended { .. }));
    let a2 = Lecturer::start(&rig.hub, "a");
    assert!(
        !Arc::ptr_eq(&first, &a2.lecture),
        "a new instance of the lecture"
    );

    let v2 = rig.viewer("a").await;
    assert!(
        v2.connects(Duration::from_secs(10)).await,
        "viewer of A2 connects"
    );
    // More than the GOP burst it gets at start (at most 25 frames): live frames of A2.
    assert!(
        v2.gets_frames(60, Duration::from_secs(10)).await,
        "the viewer of the republished lecture got {} frames",
        v2.frames()
    );
    let info = rig.info(&v2.location).await.unwrap();
    assert_eq!(info["connected"], true);
    drop(v1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datagram_that_breaks_the_parser_costs_only_that_datagram() {
    let rig = Rig::start(super::engine::MAINTAIN_EVERY).await;
    let _a = Lecturer::start(&rig.hub, "a");
    let viewer = rig.viewer("a").await;
    assert!(viewer.connects(Duration::from_secs(10)).await);
    assert!(viewer.gets_frames(10, Duration::from_secs(10)).await);

    rig.whep.fault(Fault::Datagram).await;
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stranger
        .send_to(b"\x00\x01\x00\x00not a session's", rig.media)
        .await
        .unwrap();
    // The engine and its viewer went on; the failure was counted.
    assert!(
        viewer.gets_frames(50, Duration::from_secs(10)).await,
        "the viewer kept getting frames"
    );
    assert_eq!(rig.info(&viewer.location).await.unwrap()["connected"], true);
    let stats = &rig.whep.stats;
    assert_eq!(stats.datagrams_failed.get(), 1);
    assert_eq!(stats.engine_restarts.get(), 0);
    assert_eq!(stats.sessions_failed.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_in_maintenance_restarts_the_engine_without_its_sessions() {
    let rig = Rig::start(Duration::from_millis(100)).await;
    let a = Lecturer::start(&rig.hub, "a");
    let before = rig.viewer("a").await;
    assert!(before.connects(Duration::from_secs(10)).await);
    assert!(before.gets_frames(10, Duration::from_secs(10)).await);
    assert_eq!(a.lecture.webrtc_viewers().values().sum::<usize>(), 1);

    rig.whep.fault(Fault::Maintenance).await;
    // The engine answers again, without its sessions (which were counted out).
    let deadline = Instant::now() + Duration::from_secs(5);
    while rig.info(&before.location).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "the old session outlived the failure"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = rig.whep.stats.clone();
    assert_eq!(stats.engine_restarts.get(), 1);
    assert_eq!(rig.whep.viewers(), 0);
    assert_eq!(a.lecture.webrtc_viewers().values().sum::<usize>(), 0);
    let mut metrics = String::new();
    stats.render(&mut metrics);
    assert!(
        metrics.contains("jiangtang_webrtc_engine_restarts_total 1\n"),
        "{metrics}"
    );

    // New offers work at once.
    let after = rig.viewer("a").await;
    assert!(after.connects(Duration::from_secs(10)).await);
    assert!(
        after.gets_frames(30, Duration::from_secs(10)).await,
        "a viewer after the restart gets frames"
    );
    assert_eq!(stats.engine_restarts.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn handlers_answer_503_when_the_engine_does_not() {
    super::install_crypto();
    let config = config::Config::from_toml_str_with_env(
        "[demo]\nenabled = false\n[lectures]\nallow_unconfigured = true\n",
        std::iter::empty(),
    )
    .unwrap();
    let hub = Hub::new(Arc::new(config));
    let _publisher = hub
        .publish(PublishRequest {
            stream: "a".into(),
            key: None,
            language: None,
            protocol: "test",
            remote: None,
        })
        .unwrap();
    // An engine that takes one command and never reads it.
    let (commands, _stuck) = tokio::sync::mpsc::channel(1);
    let stats: Arc<super::Stats> = Default::default();
    let whep = Arc::new(Whep {
        shards: vec![super::Shard {
            commands,
            candidates: vec!["127.0.0.1:9".parse().unwrap()],
            tcp_candidates: Vec::new(),
            load: Default::default(),
        }],
        opus: Arc::new(super::opus_feed::OpusFeeds::new(
            Arc::new(transcode::opus::GstTranscoders::default()),
            stats.clone(),
        )),
        hub,
        candidates: vec!["127.0.0.1:9".parse().unwrap()],
        stats,
    });
    let rig = Rig {
        hub: whep.hub.clone(),
        router: whep.router(),
        whep,
        media: "127.0.0.1:9".parse().unwrap(),
    };
    let waited = Instant::now();
    let test_clock = tokio::time::Instant::now();
    // A question (the command is queued, the answer never comes).
    let answer = tokio::time::timeout(
        ENGINE_WAIT * 10,
        rig.request("DELETE", "/whep/a/000123", None, b""),
    )
    .await
    .expect("DELETE answered");
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    // An offer (the queue is full: no room for it).
    let mut client = Rtc::builder().build(Instant::now());
    let mut api = client.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, _) = api.apply().unwrap();
    let answer = tokio::time::timeout(
        ENGINE_WAIT * 10,
        rig.request(
            "POST",
            "/whep/a",
            Some("application/sdp"),
            offer.to_sdp_string().as_bytes(),
        ),
    )
    .await
    .expect("offer answered");
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        answer.body
    );
    assert!(
        std::str::from_utf8(&answer.body)
            .unwrap()
            .contains("did not answer in time")
    );
    // Each after the engine wait (on the paused test clock), and no viewer left counted.
    let took = test_clock.elapsed();
    assert!(
        took >= ENGINE_WAIT * 2 && took < ENGINE_WAIT * 3,
        "{took:?}"
    );
    assert!(waited.elapsed() < ENGINE_WAIT, "the test clock was paused");
    assert_eq!(rig.whep.viewers(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialect_realigned_back_keeps_reaching_viewers_with_the_picture() {
    // The audio's clock runs 9.5 s ahead of the picture's from 2 s, 10.5 s from 4 s: the
    // packager moves it back 10.5 s then (a realignment), so its lecture time jumps back
    // 9.5 s. Viewers had that audio already: the engine used to skip every packet until the
    // lecture caught up, 9.5 s of silence (for ever when it happened again, as it did every
    // 10 s with a WHIP publisher whose picture had stopped on the timeline).
    let rig = Rig::start(super::engine::MAINTAIN_EVERY).await;
    let lecturer = Lecturer::start_with_audio(
        &rig.hub,
        "a",
        Some(|ms| match ms {
            0..2_000 => 0,
            2_000..4_000 => 9_500,
            _ => 10_500,
        }),
    );
    let viewers = [rig.viewer("a").await, rig.viewer("a").await];
    for v in &viewers {
        assert!(v.connects(Duration::from_secs(10)).await, "viewer connects");
    }
    // Until well past the realignment (and the transcoders' delay).
    let started = Instant::now();
    while Instant::now() < started + Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (audio0, video0): (Vec<u64>, Vec<u64>) = viewers
        .iter()
        .map(|v| (v.audio_packets(), v.frames()))
        .unzip();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, v) in viewers.iter().enumerate() {
        let audio = v.audio_packets() - audio0[i];
        let video = v.frames() - video0[i];
        // 3 s: 150 Opus packets and 75 frames when nothing is lost; the machine is shared.
        assert!(
            audio >= 100,
            "viewer {i} got {audio} audio packets in 3 s after the realignment"
        );
        assert!(video >= 50, "viewer {i} got {video} frames in 3 s");
    }
    assert!(
        rig.whep.stats.timeline_jumps.get() >= 2,
        "the viewers' audio went across the jump: {}",
        rig.whep.stats.timeline_jumps.get()
    );
    assert_eq!(rig.whep.stats.sessions_failed.get(), 0);
    lecturer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_keeps_the_retransmission_history_its_round_trip_needs() {
    // str0m keeps 3 s of every viewer's video for NACKs; once the instant start is behind,
    // a viewer on a short line keeps 1 s (libwebrtc's floor), one whose reports take 500 ms
    // to come back three round trips.
    let rig = Rig::start(super::engine::MAINTAIN_EVERY).await;
    let lecturer = Lecturer::start(&rig.hub, "rtx");
    let near = rig.viewer("rtx").await;
    let far = rig.viewer_behind("rtx", Duration::from_millis(500)).await;
    for v in [&near, &far] {
        assert!(v.connects(Duration::from_secs(15)).await);
        assert!(v.gets_frames(10, Duration::from_secs(15)).await);
    }
    // Receiver reports come every second or so; wait for the far one's round trip.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (near_info, far_info) = loop {
        let n = rig.info(&near.location).await.unwrap();
        let f = rig.info(&far.location).await.unwrap();
        if n["retransmission_history_ms"] != 3000
            && f["retransmission_history_ms"] != 3000
            && f["rtt_ms"].as_u64().is_some_and(|r| r >= 400)
        {
            break (n, f);
        }
        assert!(
            Instant::now() < deadline,
            "no round trips reported: {n} {f}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("near: {near_info}\nfar: {far_info}");
    // (Loopback; a loaded machine's scheduling still counts in a round trip.)
    assert!(near_info["rtt_ms"].as_u64().unwrap() < 300, "{near_info}");
    assert_eq!(near_info["retransmission_history_ms"], 1000, "{near_info}");
    let far_history = far_info["retransmission_history_ms"].as_u64().unwrap();
    let far_rtt = far_info["rtt_ms"].as_u64().unwrap();
    assert!(
        (3 * 400..=3000).contains(&far_history),
        "{far_history} ms of history for a {far_rtt} ms round trip: {far_info}"
    );
    // Both still get the lecture after the resize, and a packet lost after it is repaired
    // from the new history (a NACK, then RTX): nothing comes out of their `Rtc` broken.
    assert!(near.gets_frames(10, Duration::from_secs(10)).await);
    assert!(far.gets_frames(10, Duration::from_secs(10)).await);
    for v in [&near, &far] {
        let gaps = v.loss.gaps.load(Ordering::Relaxed);
        v.loss.drop_next.store(true, Ordering::Relaxed);
        assert!(v.gets_frames(50, Duration::from_secs(10)).await);
        assert_eq!(v.loss.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(
            v.loss.gaps.load(Ordering::Relaxed),
            gaps,
            "a loss not repaired"
        );
    }
    for v in [&near, &far] {
        let info = rig.info(&v.location).await.unwrap();
        assert_eq!(info["frames_skipped"], 0, "{info}");
    }
    lecturer.stop().await;
}

#[test]
fn the_retransmission_history_follows_the_round_trip_and_only_grows() {
    use super::engine::rtx_history;
    let ms = Duration::from_millis;
    // Unknown round trip, or a short one: libwebrtc's floor of 1 s.
    assert_eq!(rtx_history(None, Duration::ZERO), Some(ms(1000)));
    assert_eq!(rtx_history(Some(ms(20)), Duration::ZERO), Some(ms(1000)));
    assert_eq!(rtx_history(Some(ms(20)), ms(1000)), None);
    // Three round trips once that is more, up to str0m's 3 s.
    assert_eq!(rtx_history(Some(ms(500)), Duration::ZERO), Some(ms(1500)));
    assert_eq!(rtx_history(Some(ms(2000)), Duration::ZERO), Some(ms(3000)));
    // A round trip grown by a quarter or more afterwards: the longest at once (each resize
    // empties the history); less is not worth it, and it never shrinks.
    assert_eq!(rtx_history(Some(ms(500)), ms(1000)), Some(ms(3000)));
    assert_eq!(rtx_history(Some(ms(380)), ms(1000)), None);
    assert_eq!(rtx_history(Some(ms(2000)), ms(3000)), None);
    assert_eq!(rtx_history(Some(ms(100)), ms(3000)), None);
}
