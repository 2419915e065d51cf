//! WHIP (WebRTC) publishers → media model, sans-IO: what str0m depacketized, as plain
//! values, becomes media events.
//!
//! - Video: H.264 access units in Annex B become length-prefixed NAL units; SPS and PPS
//!   (sent in-band before keyframes by browsers and OBS) become the configuration. After a
//!   gap the video waits for a keyframe (and the engine asks for one).
//! - Time: each RTP stream has its own random clock; RTCP sender reports map both onto the
//!   sender's wall clock, which is the common clock of the session's tracks (lip sync as
//!   RTP intends). Frames before a track's first sender report have no place yet and are
//!   dropped; that is the first second or so.

use std::time::SystemTime;

use bytes::Bytes;
use media::h264::{self, H264Params};
use media::{CodecParams, Frame, MediaEvent, TrackId, TrackInfo};

/// Track id of a WHIP publisher's video.
pub const VIDEO: TrackId = TrackId(0);
/// Track id of its audio (after transcoding to AAC).
pub const AUDIO: TrackId = TrackId(1);

/// A track's latest sender report: the sender's wall clock at an RTP timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderClock {
    /// NTP time of the report.
    pub ntp: SystemTime,
    /// RTP timestamp of the same instant.
    pub rtp: u64,
}

/// The session's common clock: sender wall-clock time since the first report seen, in any
/// track's rate.
#[derive(Debug, Default, Clone)]
pub struct CommonClock {
    epoch: Option<SystemTime>,
}

impl CommonClock {
    /// Time of RTP timestamp `rtp` of a `rate` Hz track whose latest report is `sr`, in
    /// `rate` units on the common clock.
    pub fn place(&mut self, rtp: u64, rate: u32, sr: Option<SenderClock>) -> Option<i64> {
        let sr = sr?;
        let epoch = *self.epoch.get_or_insert(sr.ntp);
        let since = match sr.ntp.duration_since(epoch) {
            Ok(d) => d.as_nanos() as i64,
            Err(e) => -(e.duration().as_nanos() as i64),
        };
        // RTP timestamps are 32-bit: the report is recent, so the difference is small.
        let diff = (rtp as i64).wrapping_sub(sr.rtp as i64) as i32 as i64;
        Some((since as i128 * rate as i128 / 1_000_000_000) as i64 + diff)
    }
}

/// Maps a WHIP publisher's video.
#[derive(Debug, Default)]
pub struct WhipVideo {
    params: Option<H264Params>,
    waiting_keyframe: bool,
    started: bool,
}

/// What became of a video frame.
#[derive(Debug, PartialEq, Eq)]
pub enum VideoOutcome {
    /// Events for the sink (a new configuration and/or the frame).
    Events(Vec<MediaEvent>),
    /// Not usable until a keyframe comes: ask the publisher for one.
    NeedKeyframe,
}

impl WhipVideo {
    /// Takes an access unit (Annex B) presented at `pts` (90 kHz, common clock); `contiguous`
    /// is false after lost packets.
    pub fn frame(&mut self, pts: i64, data: &[u8], contiguous: bool) -> VideoOutcome {
        let mut out = Vec::new();
        let (mut sps, mut pps, mut idr) = (None, None, false);
        for nal in h264::split_annexb(data) {
            match nal[0] & 0x1f {
                7 => sps = Some(nal),
                8 => pps = Some(nal),
                5 => idr = true,
                _ => {}
            }
        }
        if let (Some(sps), Some(pps)) = (sps, pps)
            && self
                .params
                .as_ref()
                .is_none_or(|p| p.sps != sps || p.pps != pps)
            && let Ok(p) = H264Params::from_sps_pps(sps, pps)
        {
            self.params = Some(p.clone());
            out.push(MediaEvent::Track {
                id: VIDEO,
                info: TrackInfo::new(CodecParams::H264(p)),
            });
        }
        if !contiguous && !idr {
            self.waiting_keyframe = true;
        }
        if self.params.is_none() || ((self.waiting_keyframe || !self.started) && !idr) {
            return if out.is_empty() {
                VideoOutcome::NeedKeyframe
            } else {
                VideoOutcome::Events(out)
            };
        }
        self.waiting_keyframe = false;
        self.started = true;
        let data = h264::annexb_to_avcc_without_parameter_sets(data);
        if !data.is_empty() {
            out.push(MediaEvent::Frame {
                track: VIDEO,
                frame: Frame {
                    dts: pts,
                    pts,
                    keyframe: idr,
                    data,
                },
            });
        }
        VideoOutcome::Events(out)
    }
}

/// An AAC frame from the Opus transcoder as a media event.
pub fn aac_frame(pts: i64, data: Bytes) -> MediaEvent {
    MediaEvent::Frame {
        track: AUDIO,
        frame: Frame {
            dts: pts,
            pts,
            keyframe: true,
            data,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sender_reports_put_both_tracks_on_one_clock() {
        let mut c = CommonClock::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(c.place(5000, 90_000, None), None);
        // Video: RTP 1_000_000 at t0. Audio: RTP 77 at t0 + 20 ms.
        let v = c.place(
            1_000_000 + 9000,
            90_000,
            Some(SenderClock {
                ntp: t0,
                rtp: 1_000_000,
            }),
        );
        assert_eq!(v, Some(9000), "100 ms after the epoch");
        let a = c.place(
            77 + 4800,
            48_000,
            Some(SenderClock {
                ntp: t0 + Duration::from_millis(20),
                rtp: 77,
            }),
        );
        assert_eq!(a, Some(960 + 4800), "120 ms after the epoch");
        // Across the 32-bit wrap.
        let w = c.place(
            100,
            90_000,
            Some(SenderClock {
                ntp: t0,
                rtp: u32::MAX as u64 - 99,
            }),
        );
        assert_eq!(w, Some(200));
    }

    #[test]
    fn video_starts_at_a_keyframe_and_waits_again_after_loss() {
        let sps = [
            0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00,
            0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x83, 0x19, 0x60,
        ];
        let pps = [0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
        let mut key = vec![0, 0, 0, 1];
        key.extend_from_slice(&sps);
        key.extend_from_slice(&[0, 0, 0, 1]);
        key.extend_from_slice(&pps);
        key.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88, 0x84]);
        let delta = [0, 0, 0, 1, 0x41, 0x9a, 0x02];
        let mut v = WhipVideo::default();
        assert_eq!(v.frame(0, &delta, true), VideoOutcome::NeedKeyframe);
        let VideoOutcome::Events(ev) = v.frame(3000, &key, true) else {
            panic!()
        };
        assert_eq!(ev.len(), 2, "configuration and frame");
        let MediaEvent::Frame { frame, .. } = &ev[1] else {
            panic!()
        };
        assert!(frame.keyframe);
        assert_eq!(
            &frame.data[..],
            &[0, 0, 0, 3, 0x65, 0x88, 0x84],
            "SPS/PPS left out"
        );
        assert!(matches!(v.frame(6000, &delta, true), VideoOutcome::Events(e) if e.len() == 1));
        assert_eq!(v.frame(9000, &delta, false), VideoOutcome::NeedKeyframe);
        assert_eq!(v.frame(12000, &delta, true), VideoOutcome::NeedKeyframe);
        let VideoOutcome::Events(ev) = v.frame(15000, &key, true) else {
            panic!()
        };
        assert_eq!(ev.len(), 1, "same configuration: only the frame");
    }
}
