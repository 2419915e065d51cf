//! Ingest limits against the real binary, at the limit and one beyond: RTMP and SRT
//! connections in all and per address, silent RTMP and SRT publishers, and the TS PES
//! (access-unit) sizes over a real SRT connection (libsrt's srt-live-transmit as the caller,
//! fed MPEG-TS we write ourselves so the sizes are exact).

mod common;

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::floods::{limit_hits, tcp_from};
use common::rtmp::RawClient;
use common::*;
use ingest::rtmp::chunk::types;

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const C: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const D: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);

/// An RTMP connection from `from` that completes the handshake and publishes `name`.
fn rtmp_publisher(s: &Server, from: Ipv4Addr, name: &str) -> RawClient {
    let mut c = RawClient::handshake(tcp_from(from, s.rtmp).unwrap());
    let answer = c.publish(name);
    assert!(
        String::from_utf8_lossy(&answer).contains("NetStream.Publish.Start"),
        "{name} from {from} not publishing:\n{}",
        s.log()
    );
    c
}

/// Whether a new RTMP connection from `from` is closed by the relay before its handshake.
fn rtmp_refused(s: &Server, from: Ipv4Addr) -> bool {
    let mut t = tcp_from(from, s.rtmp).unwrap();
    let mut c0c1 = vec![3u8];
    c0c1.extend(std::iter::repeat_n(7u8, 1536));
    let _ = t.write_all(&c0c1);
    t.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut s0 = [0u8; 1];
    // A refused connection is closed at once: EOF (or a reset), never S0.
    !matches!(t.read(&mut s0), Ok(1))
}

#[test]
fn rtmp_connections_in_all_and_per_address_at_and_over() {
    let s = Server::start("[rtmp]\nmax_connections = 4\nmax_per_address = 2\n");
    // Per address: two from A publish; a third from A is closed before its handshake.
    let a1 = rtmp_publisher(&s, A, "pa1");
    let mut a2 = rtmp_publisher(&s, A, "pa2");
    assert!(rtmp_refused(&s, A), "a third connection from one address");
    wait_until(
        Duration::from_secs(5),
        "the per-address refusal logged",
        || {
            s.log()
                .contains("connections from this address (rtmp.max_per_address)")
                .then_some(())
        },
    );
    assert_eq!(limit_hits(&s, "rtmp_per_address"), 1);
    // In all: two more from B bring it to the limit of 4; a fifth, from C, is closed.
    let _b1 = rtmp_publisher(&s, B, "pb1");
    let _b2 = rtmp_publisher(&s, B, "pb2");
    assert!(rtmp_refused(&s, C), "a fifth connection in all");
    wait_until(Duration::from_secs(5), "the total refusal logged", || {
        s.log()
            .contains("connections open (rtmp.max_connections)")
            .then_some(())
    });
    assert_eq!(limit_hits(&s, "rtmp_connections"), 1);
    // Those at the limit are untouched and go on.
    a2.message(6, types::VIDEO, 1, 0, &[0x57, 0, 0, 0]).unwrap();
    assert!(!closed_by_peer(&mut a2.stream, Duration::from_millis(500)));
    // A connection given back frees both its places: A gets in again once its first has
    // gone.
    drop(a1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while rtmp_refused(&s, A) {
        assert!(
            Instant::now() < deadline,
            "the freed slot was not given back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn rtmp_silent_publisher_at_and_over_the_idle_timeout() {
    let s = Server::start("[rtmp]\nidle_timeout_ms = 1500\n");
    // Something every second (under the timeout): kept for four seconds.
    let mut talking = rtmp_publisher(&s, A, "talking");
    let mut silent = rtmp_publisher(&s, A, "silent");
    let since = Instant::now();
    for i in 0..4 {
        std::thread::sleep(Duration::from_millis(1000));
        talking
            .message(6, types::VIDEO, 1, i * 1000, &[0x57, 0, 0, 0])
            .unwrap();
    }
    assert!(closed_by_peer(
        &mut silent.stream,
        Duration::from_millis(500)
    ));
    assert!(
        !closed_by_peer(&mut talking.stream, Duration::from_millis(300)),
        "a publisher sending every second was dropped:\n{}",
        s.log()
    );
    wait_until(
        Duration::from_secs(3),
        "the silent publisher dropped",
        || {
            s.log()
                .contains("publisher of \"silent\" sent nothing for 1.5s")
                .then_some(())
        },
    );
    assert!(since.elapsed() >= Duration::from_millis(1500));
    assert!(!s.log().contains("publisher of \"talking\" sent nothing"));
    assert_eq!(limit_hits(&s, "rtmp_idle"), 1);
}

/// srt-live-transmit calling the relay from `from` with `streamid`, fed on its stdin.
fn srt_caller(s: &Server, from: Ipv4Addr, streamid: &str) -> Child {
    let url = format!(
        "srt://{}?mode=caller&adapter={from}&streamid={streamid}&latency=300",
        s.srt.expect("SRT listening")
    );
    Command::new("srt-live-transmit")
        .args(["-a:no", "-q", "-chunk:1316", "file://con", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("srt-live-transmit (scripts/setup.sh installs srt-tools)")
}

fn connected(log: &str, stream: &str) -> bool {
    log.lines()
        .any(|l| l.contains("srt publisher connected") && l.contains(&format!("stream={stream} ")))
}

fn gone(log: &str, stream: &str) -> bool {
    log.lines()
        .any(|l| l.contains("srt publisher gone") && l.contains(&format!("stream={stream} ")))
}

#[test]
fn srt_connections_in_all_and_per_address_and_silent_publishers() {
    let s =
        Server::start("[srt]\nmax_connections = 3\nmax_per_address = 2\nidle_timeout_ms = 2000\n");
    let mut callers = Vec::new();
    // Per address: two from B, connected (and silent: no TS at all).
    for name in ["sb1", "sb2"] {
        callers.push(srt_caller(&s, B, &format!("publish:{name}")));
        wait_until(Duration::from_secs(5), "an SRT caller connected", || {
            connected(&s.log(), name).then_some(())
        });
    }
    let opened = Instant::now();
    // A third from B is refused in the handshake, with the reason logged.
    let mut third = srt_caller(&s, B, "publish:sb3");
    wait_until(Duration::from_secs(5), "the per-address refusal", || {
        s.log()
            .contains("publishers from this address already (srt.max_per_address)")
            .then_some(())
    });
    let _ = third.kill();
    let _ = third.wait();
    assert!(!connected(&s.log(), "sb3"));
    assert!(limit_hits(&s, "srt_per_address") >= 1);
    // In all: one from C reaches the limit of 3; one from D is refused.
    callers.push(srt_caller(&s, C, "publish:sc1"));
    wait_until(Duration::from_secs(5), "the third SRT caller", || {
        connected(&s.log(), "sc1").then_some(())
    });
    let mut fourth = srt_caller(&s, D, "publish:sd1");
    wait_until(Duration::from_secs(5), "the total refusal", || {
        s.log()
            .contains("publishers already (srt.max_connections)")
            .then_some(())
    });
    let _ = fourth.kill();
    let _ = fourth.wait();
    assert!(!connected(&s.log(), "sd1"));
    assert!(limit_hits(&s, "srt_connections") >= 1);

    // A caller that stops altogether (its process stopped: not even libsrt's keepalives)
    // is dropped at srt.idle_timeout_ms (2 s), long before the 10 s allowed for the TS.
    let stopped = callers.pop().unwrap();
    let since = Instant::now();
    let _ = Command::new("kill")
        .args(["-STOP", &stopped.id().to_string()])
        .status();
    wait_until(Duration::from_secs(6), "the stopped caller dropped", || {
        gone(&s.log(), "sc1").then_some(())
    });
    let took = since.elapsed();
    let _ = Command::new("kill")
        .args(["-CONT", &stopped.id().to_string()])
        .status();
    let mut stopped = stopped;
    let _ = stopped.kill();
    let _ = stopped.wait();
    assert!(took < Duration::from_secs(6), "{took:?}");

    // Callers that hold the connection open but send no MPEG-TS are dropped after 10 s,
    // with the reason; their places are given back (D now gets in).
    wait_until(
        Duration::from_secs(15),
        "the silent callers dropped",
        || (gone(&s.log(), "sb1") && gone(&s.log(), "sb2")).then_some(()),
    );
    assert!(
        opened.elapsed() >= Duration::from_secs(9),
        "dropped too early"
    );
    assert!(
        s.log()
            .contains("no MPEG-TS program with H.264 or AAC in 10 s")
    );
    assert!(limit_hits(&s, "srt_idle") >= 2);
    let mut again = srt_caller(&s, B, "publish:sb4");
    wait_until(Duration::from_secs(5), "a freed place taken again", || {
        connected(&s.log(), "sb4").then_some(())
    });
    let _ = again.kill();
    for mut c in callers {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = again.wait();
}

// ---- MPEG-TS written here, so PES sizes are exact ----

const VIDEO_PID: u16 = 0x100;
const AUDIO_PID: u16 = 0x101;

fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// One 188-byte packet: `payload` (at most 184 bytes), the rest adaptation-field stuffing.
fn ts_packet(pid: u16, start: bool, cc: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= 184);
    let stuffing = 184 - payload.len();
    let control = if stuffing == 0 { 0x10 } else { 0x30 };
    let mut p = vec![
        0x47,
        (if start { 0x40 } else { 0 }) | (pid >> 8) as u8,
        pid as u8,
        control | (cc & 0x0f),
    ];
    if stuffing > 0 {
        p.push((stuffing - 1) as u8);
        if stuffing > 1 {
            p.push(0);
            p.extend(std::iter::repeat_n(0xff, stuffing - 2));
        }
    }
    p.extend_from_slice(payload);
    assert_eq!(p.len(), 188);
    p
}

fn psi(pid: u16, cc: u8, mut section: Vec<u8>) -> Vec<u8> {
    let crc = crc32_mpeg2(&section);
    section.extend_from_slice(&crc.to_be_bytes());
    let mut payload = vec![0u8];
    payload.extend(section);
    payload.resize(184, 0xff);
    ts_packet(pid, true, cc, &payload)
}

/// PAT (program 1 on PID 0x1000) and PMT (H.264 on 0x100, AAC on 0x101).
fn program(cc: u8) -> Vec<u8> {
    let mut out = psi(
        0,
        cc,
        vec![0x00, 0xb0, 13, 0, 1, 0xc1, 0, 0, 0, 1, 0xf0, 0x00],
    );
    out.extend(psi(
        0x1000,
        cc,
        vec![
            0x02, 0xb0, 23, 0, 1, 0xc1, 0, 0, 0xe1, 0x00, 0xf0, 0, 0x1b, 0xe1, 0x00, 0xf0, 0, 0x0f,
            0xe1, 0x01, 0xf0, 0,
        ],
    ));
    out
}

/// An unbounded PES (length 0) on `pid` with exactly `size` payload bytes; `cc` advances.
fn pes(pid: u16, stream_id: u8, pts: u64, size: usize, cc: &mut u8) -> Vec<u8> {
    let mut header = vec![0, 0, 1, stream_id, 0, 0, 0x80, 0x80, 5];
    header.extend([
        0x21 | ((pts >> 29) & 0x0e) as u8,
        (pts >> 22) as u8,
        ((pts >> 14) & 0xfe) as u8 | 1,
        (pts >> 7) as u8,
        ((pts << 1) & 0xfe) as u8 | 1,
    ]);
    let mut out = Vec::new();
    let first = size.min(184 - header.len());
    header.extend(std::iter::repeat_n(0x11, first));
    out.extend(ts_packet(pid, true, *cc, &header));
    *cc = (*cc + 1) & 0x0f;
    let mut left = size - first;
    while left > 0 {
        let n = left.min(184);
        out.extend(ts_packet(pid, false, *cc, &vec![0x11; n]));
        *cc = (*cc + 1) & 0x0f;
        left -= n;
    }
    out
}

/// Sends `ts` through `caller` in 1316-byte messages, paced for SRT's live mode.
fn feed(caller: &mut Child, ts: &[u8]) {
    let stdin = caller.stdin.as_mut().unwrap();
    for (i, chunk) in ts.chunks(1316).enumerate() {
        stdin.write_all(chunk).unwrap();
        if i % 4 == 3 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    stdin.flush().unwrap();
}

/// A stream of `audio` then `video` payload bytes in one unbounded PES each, each ended by
/// the start of a next (small) PES.
fn stream_with(audio: usize, video: usize) -> Vec<u8> {
    let (mut acc, mut vcc) = (0u8, 0u8);
    let mut ts = program(0);
    ts.extend(pes(AUDIO_PID, 0xc0, 90_000, audio, &mut acc));
    ts.extend(pes(AUDIO_PID, 0xc0, 93_000, 10, &mut acc));
    ts.extend(pes(VIDEO_PID, 0xe0, 90_000, video, &mut vcc));
    ts.extend(pes(VIDEO_PID, 0xe0, 93_600, 10, &mut vcc));
    ts.extend(program(1));
    // Null packets, so that srt-live-transmit (which sends whole 1316-byte reads) has sent
    // everything above.
    for _ in 0..70 {
        ts.extend(ts_packet(0x1fff, false, 0, &[0xff; 184]));
    }
    ts
}

#[test]
fn ts_pes_and_access_unit_sizes_over_srt_at_and_over() {
    use media::mpegts::{MAX_AUDIO_PES, MAX_PES};
    let s = Server::start("[srt]\nidle_timeout_ms = 5000\n");
    let run = |name: &str, audio: usize, video: usize| {
        let mut c = srt_caller(&s, A, &format!("publish:{name}"));
        wait_until(Duration::from_secs(5), "the caller connected", || {
            connected(&s.log(), name).then_some(())
        });
        feed(&mut c, &stream_with(audio, video));
        c
    };
    let said = |name: &str, limit: usize| {
        s.log().lines().any(|l| {
            l.contains(&format!("PES larger than {limit} bytes"))
                && l.contains(&format!("stream=\"{name}\""))
        })
    };
    // At the limits: taken whole, nothing dropped (the audio PES reaches the AAC parser
    // whole, which finds no ADTS in our filler and says so with its size).
    let mut at = run("pesat", MAX_AUDIO_PES, MAX_PES);
    wait_until(
        Duration::from_secs(10),
        "the whole audio PES parsed",
        || {
            s.log()
                .contains(&format!("({MAX_AUDIO_PES} bytes left)"))
                .then_some(())
        },
    );
    // One byte over the audio limit, then one over the video limit, each on its own
    // connection (one notice of a kind per connection is logged at once).
    let mut audio_over = run("audioover", MAX_AUDIO_PES + 1, 100);
    let mut video_over = run("videoover", 100, MAX_PES + 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(said("audioover", MAX_AUDIO_PES) && said("videoover", MAX_PES)) {
        assert!(
            Instant::now() < deadline,
            "refusals not logged:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !said("pesat", MAX_AUDIO_PES) && !said("pesat", MAX_PES),
        "{}",
        s.log()
    );
    assert!(!said("audioover", MAX_PES) && !said("videoover", MAX_AUDIO_PES));
    // Too-large data is dropped, the connections are not.
    for name in ["pesat", "audioover", "videoover"] {
        assert!(!gone(&s.log(), name), "{name} was dropped:\n{}", s.log());
    }
    let api = get_text(&s.url("/api/v1/streams/pesat"));
    assert!(api.contains("\"srt\""), "{api}");
    for c in [&mut at, &mut audio_over, &mut video_over] {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert_eq!(get(&s.url("/healthz")).0, 200);
}
