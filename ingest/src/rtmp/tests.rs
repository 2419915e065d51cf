//! The RTMP session against real captured publishers (see `testdata/README.md`), fed in
//! pieces of every size a socket might deliver, plus hostile input.

use bytes::Bytes;
use media::{CodecParams, MediaEvent};

use super::chunk::Limits;
use super::handshake::{self, PACKET};
use super::session::{RtmpError, ServerSession, SessionEvent};
use super::to_media::{AUDIO, FlvToMedia, VIDEO};

const FFMPEG: &[u8] = include_bytes!("testdata/ffmpeg-5.1-publish.bin");
const GST: &[u8] = include_bytes!("testdata/gst-1.22-rtmp2sink-publish.bin");
const OBS: &[u8] = include_bytes!("testdata/obs-29.0.2-publish.bin");

struct Replay {
    events: Vec<SessionEvent>,
    sent: Vec<u8>,
    error: Option<RtmpError>,
}

fn replay(bytes: &[u8], piece: usize) -> Replay {
    let mut s = ServerSession::new([7u8; PACKET], Limits::default());
    let mut r = Replay {
        events: Vec::new(),
        sent: Vec::new(),
        error: None,
    };
    for chunk in bytes.chunks(piece) {
        if let Err(e) = s.handle_bytes(chunk) {
            r.error = Some(e);
            break;
        }
        while let Some(ev) = s.poll_event() {
            if matches!(ev, SessionEvent::PublishRequested { .. })
                && let Err(e) = s.accept_publish()
            {
                r.error = Some(e);
            }
            r.events.push(ev);
        }
        while let Some(out) = s.poll_transmit() {
            r.sent.extend_from_slice(&out);
        }
    }
    r
}

struct Media {
    video: Vec<media::Frame>,
    audio: Vec<media::Frame>,
    tracks: Vec<media::TrackInfo>,
}

fn to_media(events: &[SessionEvent]) -> Media {
    let mut m = FlvToMedia::new(None);
    let mut out = Media {
        video: vec![],
        audio: vec![],
        tracks: vec![],
    };
    for ev in events {
        let mapped = match ev {
            SessionEvent::Video { timestamp, data } => m.video(*timestamp, data.clone()),
            SessionEvent::Audio { timestamp, data } => m.audio(*timestamp, data.clone()),
            _ => continue,
        };
        match mapped.unwrap() {
            Some(MediaEvent::Track { info, .. }) => out.tracks.push(info),
            Some(MediaEvent::Frame { track, frame }) if track == VIDEO => out.video.push(frame),
            Some(MediaEvent::Frame { track, frame }) if track == AUDIO => out.audio.push(frame),
            _ => {}
        }
    }
    out
}

#[test]
fn ffmpeg_publish_in_any_pieces() {
    for piece in [1, 2, 7, 100, 1537, 4096, FFMPEG.len()] {
        let r = replay(FFMPEG, piece);
        assert!(r.error.is_none(), "piece {piece}: {:?}", r.error);
        let publish = r
            .events
            .iter()
            .find_map(|e| match e {
                SessionEvent::PublishRequested { app, name, .. } => {
                    Some((app.clone(), name.clone()))
                }
                _ => None,
            })
            .expect("publish");
        assert_eq!(
            publish,
            ("live".to_string(), "fixture?lang=hak".to_string())
        );
        let meta = r
            .events
            .iter()
            .find_map(|e| match e {
                SessionEvent::Metadata(m) => Some(m.clone()),
                _ => None,
            })
            .expect("metadata");
        assert_eq!(meta.get("width").and_then(|v| v.as_number()), Some(160.0));
        let m = to_media(&r.events);
        assert_eq!(m.video.len(), 25, "piece {piece}");
        assert!(
            (46..=48).contains(&m.audio.len()),
            "{} audio frames",
            m.audio.len()
        );
        let CodecParams::H264(h) = &m
            .tracks
            .iter()
            .find(|t| matches!(t.codec, CodecParams::H264(_)))
            .unwrap()
            .codec
        else {
            unreachable!()
        };
        assert_eq!((h.width, h.height), (160, 120));
        let CodecParams::Aac(a) = &m
            .tracks
            .iter()
            .find(|t| matches!(t.codec, CodecParams::Aac(_)))
            .unwrap()
            .codec
        else {
            unreachable!()
        };
        assert_eq!((a.sample_rate, a.channels), (48_000, 1));
        assert!(m.video[0].keyframe);
        // B-frames: some presentation times lead their decode times.
        assert!(m.video.iter().any(|f| f.pts > f.dts));
        assert!(m.video.windows(2).all(|w| w[1].dts > w[0].dts));
        assert!(m.audio.windows(2).all(|w| w[1].dts > w[0].dts));
        // Every H.264 frame is well-formed length-prefixed NAL units; keyframes hold an IDR.
        for f in &m.video {
            assert_eq!(h.is_idr(&f.data).unwrap(), f.keyframe);
        }
    }
}

#[test]
fn ffmpeg_gets_a_verifiable_digest_handshake() {
    let r = replay(FFMPEG, 4096);
    let c1: [u8; PACKET] = FFMPEG[1..1 + PACKET].try_into().unwrap();
    let s1: [u8; PACKET] = r.sent[1..1 + PACKET].try_into().unwrap();
    let s2: [u8; PACKET] = r.sent[1 + PACKET..1 + 2 * PACKET].try_into().unwrap();
    assert!(handshake::client_verifies(&c1, &s1, &s2));
}

#[test]
fn gstreamer_rtmp2sink_publish_with_128_byte_chunks() {
    for piece in [1, 13, 128, 5000, GST.len()] {
        let r = replay(GST, piece);
        assert!(r.error.is_none(), "piece {piece}: {:?}", r.error);
        assert!(r.events.iter().any(|e| matches!(
            e,
            SessionEvent::PublishRequested { name, .. } if name == "fixture2"
        )));
        let m = to_media(&r.events);
        assert_eq!(m.video.len(), 25);
        assert!(m.audio.len() >= 40, "{}", m.audio.len());
        // Plain handshake: S2 echoes C1.
        assert_eq!(&r.sent[1 + PACKET..1 + 2 * PACKET], &GST[1..1 + PACKET]);
    }
}

#[test]
fn obs_publish_with_one_chunk_stream_for_everything() {
    // OBS sends metadata, audio and video on one chunk stream with type-1 headers, so every
    // message's length and type change while the timestamp deltas of two tracks interleave.
    for piece in [1, 3, 1460, 4096, 4097, OBS.len()] {
        let r = replay(OBS, piece);
        assert!(r.error.is_none(), "piece {piece}: {:?}", r.error);
        let publish = r
            .events
            .iter()
            .find_map(|e| match e {
                SessionEvent::PublishRequested { app, name, .. } => {
                    Some((app.clone(), name.clone()))
                }
                _ => None,
            })
            .expect("publish");
        assert_eq!(
            publish,
            ("live".to_string(), "obsfixture?lang=yue".to_string())
        );
        let meta = r
            .events
            .iter()
            .find_map(|e| match e {
                SessionEvent::Metadata(m) => Some(m.clone()),
                _ => None,
            })
            .expect("metadata");
        assert_eq!(meta.get("width").and_then(|v| v.as_number()), Some(320.0));
        assert_eq!(
            meta.get("framerate").and_then(|v| v.as_number()),
            Some(25.0)
        );
        let m = to_media(&r.events);
        assert_eq!(m.video.len(), 64, "piece {piece}");
        assert_eq!(m.audio.len(), 116, "piece {piece}");
        let h = m
            .tracks
            .iter()
            .find_map(|t| match &t.codec {
                CodecParams::H264(h) => Some(h.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!((h.width, h.height), (320, 180));
        let a = m
            .tracks
            .iter()
            .find_map(|t| match &t.codec {
                CodecParams::Aac(a) => Some(a.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!((a.sample_rate, a.channels), (48_000, 2));
        // Keyframes every second; B-frames; both tracks in order on the shared chunk stream.
        assert_eq!(m.video.iter().filter(|f| f.keyframe).count(), 3);
        assert!(m.video.iter().any(|f| f.pts > f.dts));
        assert!(m.video.windows(2).all(|w| w[1].dts > w[0].dts));
        assert!(m.audio.windows(2).all(|w| w[1].dts > w[0].dts));
        for f in &m.video {
            assert_eq!(h.is_idr(&f.data).unwrap(), f.keyframe);
        }
        // It unpublishes cleanly at the end.
        assert!(
            r.events
                .iter()
                .any(|e| matches!(e, SessionEvent::Unpublished)),
            "{:?}",
            r.events.last()
        );
    }
}

#[test]
fn truncated_capture_is_harmless() {
    // A publisher that vanishes mid-message: whatever arrived is processed, no error, no panic.
    for cut in [1, 1536, 1537, 3073, 3100, 5000, FFMPEG.len() - 1] {
        let r = replay(&FFMPEG[..cut], 512);
        assert!(r.error.is_none(), "cut {cut}: {:?}", r.error);
    }
}

#[test]
fn corrupted_captures_fail_cleanly() {
    // Flip bytes after the handshake, one position at a time: each run either goes on or
    // stops with an error, never panics.
    let mut errors = 0;
    for pos in (3073..FFMPEG.len()).step_by(97) {
        let mut bad = FFMPEG.to_vec();
        bad[pos] ^= 0xa5;
        if replay(&bad, 4096).error.is_some() {
            errors += 1;
        }
        // And what did parse must map without panicking.
        std::panic::catch_unwind(|| to_media_lenient(&replay(&bad, 4096).events))
            .expect("to_media must not panic");
    }
    assert!(errors > 0, "some corruptions must be detected");
}

fn to_media_lenient(events: &[SessionEvent]) {
    let mut m = FlvToMedia::new(None);
    for ev in events {
        let _ = match ev {
            SessionEvent::Video { timestamp, data } => m.video(*timestamp, data.clone()),
            SessionEvent::Audio { timestamp, data } => m.audio(*timestamp, data.clone()),
            _ => continue,
        };
    }
}

#[test]
fn oversized_set_chunk_size_and_absurd_lengths_close_the_session() {
    // After the handshake: SetChunkSize with the top bit set.
    let mut bad = FFMPEG[..3073].to_vec();
    bad.extend_from_slice(&[2, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0x80, 0, 0, 0]);
    let r = replay(&bad, 4096);
    assert!(r.error.unwrap().to_string().contains("invalid chunk size"));

    // A video message declaring 16 MiB.
    let mut bad = FFMPEG[..3073].to_vec();
    bad.extend_from_slice(&[6, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0]);
    let r = replay(&bad, 4096);
    assert!(r.error.unwrap().to_string().contains("above the limit"));

    // Garbage instead of a handshake.
    let r = replay(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 4096);
    assert!(r.error.unwrap().to_string().contains("version"));
}

#[test]
fn bad_amf_in_connect_is_an_error() {
    let mut bad = FFMPEG[..3073].to_vec();
    // command message with a reference marker (unsupported)
    bad.extend_from_slice(&[3, 0, 0, 0, 0, 0, 2, 20, 0, 0, 0, 0, 0x07, 0]);
    let r = replay(&bad, 4096);
    assert!(
        matches!(r.error, Some(RtmpError::Amf { .. })),
        "{:?}",
        r.error
    );
}

#[test]
fn media_before_publish_is_ignored() {
    // Replay ffmpeg but never accept the publish: no media events may come out.
    let mut s = ServerSession::new([1u8; PACKET], Limits::default());
    s.handle_bytes(FFMPEG).unwrap();
    let mut media = 0;
    while let Some(ev) = s.poll_event() {
        if matches!(ev, SessionEvent::Audio { .. } | SessionEvent::Video { .. }) {
            media += 1;
        }
    }
    assert_eq!(media, 0);
    let _ = Bytes::new();
}
