//! WebRTC fan-out: one H.264 access unit to every viewer's own str0m `Rtc`, two ways.
//!
//! - `shared`, as the WHEP engine does it: the frame is cut into RTP payloads once (timed,
//!   once per frame), and each viewer's `Rtc` gets them through str0m's direct API
//!   (`write_rtp`, the viewer's own sequence numbers, payloads shared by reference in its
//!   retransmission history), is moved to now and drained: SRTP and send per viewer.
//! - `frame_mode`, as the engine did before: the frame written with `Writer::write` to each
//!   viewer, whose `Rtc` packetizes it and keeps its own copy; the write asks for a timeout
//!   due at once; fed back, it sends the frame's packets, drained again.
//!
//! 1,000 viewers, each a server `Rtc` built from the relay's own `viewer_config` and
//! connected (ICE, DTLS, SRTP) in-process to a client `Rtc` that offered to receive H.264:
//! datagrams are handed between the two without a network, on a virtual clock. The frames
//! are a 1280x720 2.5 Mbit/s lecture's: a 60 KB keyframe (SPS, PPS, IDR slice) and a 10 KB
//! P-frame, in Annex B. Each iteration writes one frame to all viewers; criterion's time
//! divided by 1,000 is the cost per viewer (throughput is in viewers). Between iterations
//! (not timed) the virtual clock moves on a frame interval and the clients' STUN consent
//! checks and RTCP reach the servers, so they stay connected; the RTP the servers send is
//! counted and dropped, as the kernel would take it.
//!
//! Under `cargo test --benches` (criterion's test mode) it builds 10 viewers only.
//!
//! `cargo bench -p relay --bench whep_fanout`

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use relay::whep::engine::PAYLOAD_MTU;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::unversioned::{H264Packetizer, Packetizer};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

const VIEWERS: usize = 1000;
const KEYFRAME_BYTES: usize = 60_000;
const PFRAME_BYTES: usize = 10_000;
const FRAME: Duration = Duration::from_millis(40);

struct Viewer {
    server: Rtc,
    client: Rtc,
    /// The server's video m-line and H.264 payload type, once negotiated.
    video: Option<(Mid, Pt)>,
    /// The next sequence number on the shared path.
    seq: u64,
}

/// Hands `rtc`'s output to `peer` until `rtc` wants only time: all of it, or with
/// `stun_only` only STUN (ICE consent); returns the bytes sent.
fn pump(
    rtc: &mut Rtc,
    peer: &mut Rtc,
    stun_only: bool,
    now: Instant,
    mut on_event: impl FnMut(&mut Rtc, Event),
) -> usize {
    let mut sent = Vec::new();
    loop {
        match rtc.poll_output() {
            Ok(Output::Timeout(_)) => break,
            Ok(Output::Transmit(t)) => sent.push((t.source, t.destination, t.contents.to_vec())),
            Ok(Output::Event(e)) => on_event(rtc, e),
            Err(e) => panic!("rtc failed: {e}"),
        }
    }
    let bytes = sent.iter().map(|s| s.2.len()).sum();
    for (source, destination, contents) in sent {
        // RFC 7983: STUN starts with 0-3, DTLS 20-63, RTP/RTCP 128-191.
        if stun_only && contents[0] > 3 {
            continue;
        }
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents: contents.as_slice().try_into().expect("a datagram"),
            },
        );
        peer.handle_input(input).expect("handled");
    }
    bytes
}

impl Viewer {
    fn new(i: usize, now: Instant) -> Viewer {
        let server_addr: SocketAddr = "10.0.0.1:8189".parse().unwrap();
        let client_addr = SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 40_000));
        let mut server = relay::whep::viewer_config().build(now);
        server.add_local_candidate(Candidate::host(server_addr, "udp").unwrap());
        let mut client = Rtc::builder().clear_codecs().enable_h264(true).build(now);
        client.add_local_candidate(Candidate::host(client_addr, "udp").unwrap());
        let mut change = client.sdp_api();
        change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let (offer, pending) = change.apply().expect("an offer");
        let answer = server.sdp_api().accept_offer(offer).expect("accepted");
        client
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("answer");
        Viewer {
            server,
            client,
            video: None,
            seq: 1000 + i as u64,
        }
    }

    /// Moves both sides to `now` and exchanges what they have to say; returns the bytes the
    /// server sent.
    fn step(&mut self, now: Instant) -> usize {
        self.client.handle_input(Input::Timeout(now)).unwrap();
        self.server.handle_input(Input::Timeout(now)).unwrap();
        let mut sent = 0;
        for _ in 0..4 {
            pump(&mut self.client, &mut self.server, false, now, |_, _| {});
            let video = &mut self.video;
            sent += pump(&mut self.server, &mut self.client, false, now, |rtc, e| {
                if let Event::MediaAdded(m) = e {
                    let pt = rtc.writer(m.mid).and_then(|w| {
                        w.payload_params()
                            .find(|p| {
                                p.spec().codec == Codec::H264
                                    && p.spec().format.packetization_mode == Some(1)
                            })
                            .map(|p| p.pt())
                    });
                    *video = pt.map(|pt| (m.mid, pt));
                }
            });
        }
        sent
    }

    fn ready(&self) -> bool {
        self.video.is_some() && self.server.is_connected() && self.client.is_connected()
    }

    /// Keeps the connection up between timed frames: the client's consent checks and
    /// reports reach the server, the server's STUN answers reach the client.
    fn upkeep(&mut self, now: Instant) {
        self.client.handle_input(Input::Timeout(now)).unwrap();
        self.server.handle_input(Input::Timeout(now)).unwrap();
        pump(&mut self.client, &mut self.server, false, now, |_, _| {});
        pump(&mut self.server, &mut self.client, true, now, |_, _| {});
    }

    /// What the engine does per viewer and frame: write, drain to the timeout the write asks
    /// for (due at once), then feed that timeout and drain again, which sends the frame's
    /// packets. Returns the bytes sent.
    fn write(&mut self, frame: &Arc<[u8]>, rtp_time: MediaTime, now: Instant) -> usize {
        let (mid, pt) = self.video.expect("negotiated");
        let w = self.server.writer(mid).expect("a writer");
        w.write(pt, now, rtp_time, frame.clone()).expect("written");
        self.drain(now)
    }

    /// What the engine does per viewer and frame now: the shared payloads written with the
    /// viewer's own sequence numbers, the `Rtc` moved to now and drained.
    fn write_shared(&mut self, packets: &[Arc<[u8]>], rtp_time: u32, now: Instant) -> usize {
        let (mid, pt) = self.video.expect("negotiated");
        let mut api = self.server.direct_api();
        let tx = api.stream_tx_by_mid(mid, None).expect("a send stream");
        let last = packets.len() - 1;
        for (i, p) in packets.iter().enumerate() {
            tx.write_rtp(
                RtpWrite::new(pt, self.seq.into(), rtp_time, now, p.clone())
                    .marker(i == last)
                    .nackable(true),
            );
            self.seq += 1;
        }
        self.server.handle_input(Input::Timeout(now)).unwrap();
        self.drain(now)
    }

    /// Drains the server until it wants only time (feeding it a timeout due at once).
    fn drain(&mut self, now: Instant) -> usize {
        let mut bytes = 0;
        for _ in 0..4 {
            let due = loop {
                match self.server.poll_output() {
                    Ok(Output::Timeout(t)) => break t,
                    Ok(Output::Transmit(t)) => bytes += black_box(t.contents.len()),
                    Ok(Output::Event(Event::IceConnectionStateChange(
                        IceConnectionState::Disconnected,
                    ))) => panic!("a viewer disconnected"),
                    Ok(Output::Event(_)) => {}
                    Err(e) => panic!("rtc failed: {e}"),
                }
            };
            if due > now {
                break;
            }
            self.server.handle_input(Input::Timeout(now)).unwrap();
        }
        bytes
    }
}

/// An Annex B access unit of `size` bytes: SPS, PPS and an IDR slice, or a non-IDR slice.
fn access_unit(keyframe: bool, size: usize) -> Arc<[u8]> {
    const SPS: &[u8] = &[
        0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03,
        0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x83, 0x19, 0x60,
    ];
    const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
    let mut out = Vec::with_capacity(size);
    if keyframe {
        for ps in [SPS, PPS] {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(ps);
        }
    }
    out.extend_from_slice(&[0, 0, 0, 1, if keyframe { 0x65 } else { 0x41 }, 0x88]);
    // Slice data without start-code emulation (no 00 00 0x).
    let mut x = 0x1234_5678u32;
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.push((x as u8) | 1);
    }
    out.into()
}

/// `viewers` connected pairs on a virtual clock starting at `start`; returns them and the clock.
fn connect(viewers: usize, start: Instant) -> (Vec<Viewer>, Instant) {
    let t = Instant::now();
    let mut now = start;
    let mut all: Vec<Viewer> = (0..viewers).map(|i| Viewer::new(i, now)).collect();
    for _ in 0..2000 {
        if all.iter().all(Viewer::ready) {
            break;
        }
        now += Duration::from_millis(5);
        for v in &mut all {
            v.step(now);
        }
    }
    let connected = all.iter().filter(|v| v.ready()).count();
    assert_eq!(connected, viewers, "viewers connected");
    eprintln!(
        "whep_fanout: {viewers} viewers connected in {:?}",
        t.elapsed()
    );
    (all, now)
}

fn fanout(c: &mut Criterion) {
    relay::whep::install_crypto();
    // Criterion's test mode (`cargo test --benches`) runs each benchmark once: few viewers.
    let viewers = if std::env::args().any(|a| a == "--bench") {
        VIEWERS
    } else {
        10
    };

    let mut g = c.benchmark_group("whep_fanout");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(10);
    g.throughput(Throughput::Elements(viewers as u64));
    // A fresh set of viewers per way, so neither sees the other's sequence numbers.
    let mut now = Instant::now();
    for shared in [true, false] {
        let (mut all, at) = connect(viewers, now);
        now = at;
        let mut frame_no = 0u64;
        let mut packetizer = H264Packetizer::default();
        let way = if shared { "shared" } else { "frame_mode" };
        for (name, keyframe, size) in [
            ("keyframe_60KB", true, KEYFRAME_BYTES),
            ("pframe_10KB", false, PFRAME_BYTES),
        ] {
            let au = access_unit(keyframe, size);
            g.bench_function(format!("{way}/{name}/{viewers}_viewers"), |b| {
                b.iter_custom(|iters| {
                    let mut took = Duration::ZERO;
                    for _ in 0..iters {
                        now += FRAME;
                        frame_no += 1;
                        for v in &mut all {
                            v.upkeep(now);
                        }
                        let t = Instant::now();
                        let mut bytes = 0;
                        if shared {
                            let packets: Vec<Arc<[u8]>> = packetizer
                                .packetize(PAYLOAD_MTU, &au)
                                .expect("packetized")
                                .into_iter()
                                .map(Arc::from)
                                .collect();
                            let rtp_time = (frame_no * 3600) as u32;
                            for v in &mut all {
                                bytes += v.write_shared(&packets, rtp_time, now);
                            }
                        } else {
                            let rtp_time = MediaTime::new(frame_no * 3600, Frequency::NINETY_KHZ);
                            for v in &mut all {
                                bytes += v.write(&au, rtp_time, now);
                            }
                        }
                        took += t.elapsed();
                        // Every viewer got the frame's RTP (payload plus headers and SRTP tags).
                        assert!(bytes > viewers * size, "{bytes} bytes sent");
                    }
                    took
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
