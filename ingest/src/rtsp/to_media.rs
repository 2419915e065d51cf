//! RTSP (RTP from a camera, depacketized by retina) → media model.
//!
//! - Video: H.264 frames as length-prefixed NAL units, configuration from the
//!   AVCDecoderConfigurationRecord retina builds from the SDP and in-band parameter sets.
//!   RTP carries presentation times only; decode times are synthesised (see [`DtsSynth`]).
//!   After lost packets, frames are dropped until the next keyframe.
//! - A camera clock that steps within the session (its encoder restarted) is absorbed per
//!   track (see `Timeline`), so the lecture's timeline only moves forward.
//! - Audio: AAC access units with their AudioSpecificConfig, passed through; G.711 is
//!   handed to a transcoder by the driver (the events for it come from there).
//!
//! Pure mapping: no IO, retina's types stay in the driver.

use bytes::Bytes;
use media::aac::AacParams;
use media::h264::H264Params;
use media::model::rescale;
use media::{CodecParams, Frame, Language, MediaEvent, TrackId, TrackInfo};

/// Track id of the camera's video.
pub const VIDEO: TrackId = TrackId(0);
/// Track id of its audio.
pub const AUDIO: TrackId = TrackId(1);

/// More reordering than this (90 kHz: one second) is a clock that went back instead.
const MAX_REORDER: i64 = 90_000;

/// Decode times for a stream that carries presentation times only (RTP): with B-frames a
/// frame can be presented before the one decoded just before it. Until reordering is seen,
/// DTS is PTS. The first time a frame goes back, the span it shows becomes the decode delay
/// (the caller restarts at the next keyframe, since earlier frames were stamped without it).
/// From then on each keyframe is decoded `delay` before it is shown, and each following
/// frame one frame duration after the previous one, never after its own PTS: increasing,
/// and never shown before it is decoded.
#[derive(Debug, Default, Clone)]
pub struct DtsSynth {
    delay: i64,
    frame: Option<i64>,
    prev_pts: Option<i64>,
    max_pts: Option<i64>,
    last_dts: Option<i64>,
}

impl DtsSynth {
    /// The decode time for a frame presented at `pts`, and whether this frame revealed
    /// more reordering than known (the caller should then wait for a keyframe).
    pub fn next(&mut self, pts: i64, keyframe: bool) -> (i64, bool) {
        if self.max_pts.is_some_and(|max| max - pts > MAX_REORDER) {
            // Not reordering: the camera's clock went back (its encoder restarted). A new
            // timeline; the reordering learnt so far still holds.
            *self = DtsSynth {
                delay: self.delay,
                frame: self.frame,
                ..DtsSynth::default()
            };
        }
        let mut grew = false;
        if let Some(max) = self.max_pts
            && max - pts > self.delay
        {
            // Frames are reordered by this much (at most a second).
            self.delay = max - pts;
            grew = true;
        }
        if let Some(prev) = self.prev_pts {
            let step = (pts - prev).abs();
            // Steps under 10 ms are not frame intervals (no camera sends 100 fps): ignored,
            // or one odd pair of timestamps would slow every later DTS to a crawl.
            if step >= 900 {
                self.frame = Some(self.frame.map_or(step, |f| f.min(step)));
            }
        }
        self.prev_pts = Some(pts);
        self.max_pts = Some(self.max_pts.map_or(pts, |m| m.max(pts)));
        let after = |last: Option<i64>, v: i64| last.map_or(v, |l| v.max(l + 1));
        let dts = if self.delay == 0 {
            after(self.last_dts, pts)
        } else if keyframe || self.last_dts.is_none() {
            after(self.last_dts, pts - self.delay)
        } else {
            let last = self.last_dts.expect("checked");
            (last + self.frame.unwrap_or(1)).min(pts).max(last + 1)
        };
        self.last_dts = Some(dts);
        (dts, grew)
    }
}

/// A forward step larger than this (5 s) is a clock that jumped, not a pause.
const MAX_FORWARD_S: i64 = 5;

/// Keeps one track's output timeline going when the camera's clock steps (its encoder
/// restarted within the session): a step back over a second, or forward over five, is
/// absorbed into an offset that continues the track one frame after where it was. Each
/// track absorbs the same restart, so audio and video stay together.
#[derive(Debug, Default, Clone)]
struct Timeline {
    offset: i64,
    /// The furthest output time so far.
    max: Option<i64>,
}

impl Timeline {
    /// The output time of `t` (in units where one second is `rate`), `frame` being a
    /// frame's length there.
    fn place(&mut self, t: i64, rate: i64, frame: i64) -> i64 {
        if let Some(max) = self.max {
            let step = t + self.offset - max;
            if step < -rate || step > MAX_FORWARD_S * rate {
                self.offset = max + frame - t;
            }
        }
        let out = t + self.offset;
        self.max = Some(self.max.map_or(out, |m| m.max(out)));
        out
    }
}

/// Why a camera's stream cannot be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtspMediaError {
    /// A configuration that does not parse.
    #[error("camera sent a bad {0} configuration: {1}")]
    BadConfig(&'static str, String),
}

/// Maps one camera session.
pub struct RtspToMedia {
    language: Option<Language>,
    video: Option<H264Params>,
    audio: Option<AacParams>,
    dts: DtsSynth,
    waiting_keyframe: bool,
    video_time: Timeline,
    audio_time: Timeline,
}

impl RtspToMedia {
    /// A mapper whose audio gets `language`.
    pub fn new(language: Option<Language>) -> Self {
        RtspToMedia {
            language,
            video: None,
            audio: None,
            dts: DtsSynth::default(),
            waiting_keyframe: true,
            video_time: Timeline::default(),
            audio_time: Timeline::default(),
        }
    }

    /// The video configuration (an AVCDecoderConfigurationRecord), when new or changed.
    pub fn video_config(&mut self, record: &[u8]) -> Result<Option<MediaEvent>, RtspMediaError> {
        if self.video.as_ref().is_some_and(|v| v.record == record) {
            return Ok(None);
        }
        let p = H264Params::from_record(Bytes::copy_from_slice(record))
            .map_err(|e| RtspMediaError::BadConfig("H.264", e.to_string()))?;
        self.video = Some(p.clone());
        Ok(Some(MediaEvent::Track {
            id: VIDEO,
            info: TrackInfo::new(CodecParams::H264(p)),
        }))
    }

    /// A video frame presented at `pts` (units of `clock_rate`), after `lost` lost packets.
    pub fn video(
        &mut self,
        pts: i64,
        clock_rate: u32,
        keyframe: bool,
        lost: u16,
        data: Bytes,
    ) -> Option<MediaEvent> {
        self.video.as_ref()?;
        if lost > 0 && !keyframe {
            self.waiting_keyframe = true;
        }
        if self.waiting_keyframe {
            if !keyframe {
                return None;
            }
            self.waiting_keyframe = false;
        }
        let pts = rescale(pts, clock_rate, 90_000);
        // Within the reordering window, B-frames go back less than a second: not a step.
        let pts = self.video_time.place(pts, 90_000, 3600);
        let (dts, reordered) = self.dts.next(pts, keyframe);
        if reordered {
            // B-frames: what was sent so far was stamped without the decode delay.
            self.waiting_keyframe = true;
            return None;
        }
        Some(MediaEvent::Frame {
            track: VIDEO,
            frame: Frame {
                dts,
                pts,
                keyframe,
                data,
            },
        })
    }

    /// The AAC configuration (an AudioSpecificConfig), when new or changed.
    pub fn aac_config(&mut self, config: &[u8]) -> Result<Option<MediaEvent>, RtspMediaError> {
        if self.audio.as_ref().is_some_and(|a| a.config == config) {
            return Ok(None);
        }
        let p = AacParams::from_config(Bytes::copy_from_slice(config))
            .map_err(|e| RtspMediaError::BadConfig("AAC", e.to_string()))?;
        Ok(Some(self.audio_track(p)))
    }

    /// Announces the audio track as `params` (also for transcoded audio).
    pub fn audio_track(&mut self, params: AacParams) -> MediaEvent {
        self.audio = Some(params.clone());
        let mut info = TrackInfo::new(CodecParams::Aac(params));
        info.language = self.language.clone();
        MediaEvent::Track { id: AUDIO, info }
    }

    /// An AAC frame at `pts` in units of `clock_rate`.
    pub fn aac(&mut self, pts: i64, clock_rate: u32, data: Bytes) -> Option<MediaEvent> {
        let rate = self.audio.as_ref()?.sample_rate;
        let t = rescale(pts, clock_rate, rate);
        let t = self
            .audio_time
            .place(t, rate as i64, media::aac::SAMPLES_PER_FRAME as i64);
        Some(MediaEvent::Frame {
            track: AUDIO,
            frame: Frame {
                dts: t,
                pts: t,
                keyframe: true,
                data,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dts_for_b_frames_stays_below_pts_and_increasing() {
        // I P B B P B B at 25 fps (3600 ticks): presentation order 0, 3, 1, 2, 6, 4, 5, then
        // the next GOP the same way.
        let gop = [0, 3, 1, 2, 6, 4, 5];
        let pts: Vec<i64> = gop
            .iter()
            .chain(gop.iter().map(|x| x + 7).collect::<Vec<_>>().iter())
            .map(|i| i * 3600)
            .collect();
        let mut d = DtsSynth::default();
        let out: Vec<(i64, bool)> = pts
            .iter()
            .enumerate()
            .map(|(i, &p)| d.next(p, i % 7 == 0))
            .collect();
        // The first B-frame reveals the reordering; from the next GOP on all is consistent.
        assert!(
            out[2].1 && out.iter().filter(|x| x.1).count() == 1,
            "{out:?}"
        );
        let second: Vec<(i64, i64)> = out[7..]
            .iter()
            .map(|x| x.0)
            .zip(pts[7..].iter().copied())
            .collect();
        assert!(second.windows(2).all(|w| w[1].0 > w[0].0), "{second:?}");
        assert!(second.iter().all(|(d, p)| d <= p), "{second:?}");
        // Without B-frames DTS is PTS.
        let mut d = DtsSynth::default();
        assert_eq!(d.next(0, true), (0, false));
        assert_eq!(d.next(3600, false), (3600, false));
    }

    /// x264's 1280x720 High profile parameter sets as a configuration record.
    fn x264_record() -> Bytes {
        let sps = [
            0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00,
            0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x83, 0x19, 0x60,
        ];
        let pps = [0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
        H264Params::from_sps_pps(&sps, &pps).unwrap().record
    }

    #[test]
    fn a_camera_restarting_within_its_session_continues_the_lecture_timeline() {
        let mut m = RtspToMedia::new(None);
        m.video_config(&x264_record()).unwrap();
        m.aac_config(&[0x11, 0x90]).unwrap();
        let mut video = vec![];
        let mut audio = vec![];
        let mut feed = |m: &mut RtspToMedia, from: i64, frames: i64| {
            for i in 0..frames {
                // 25 fps at 90 kHz, AAC at 48 kHz: two audio frames per picture or so.
                let v = m.video(from + i * 3600, 90_000, i % 25 == 0, 0, Bytes::new());
                if let Some(MediaEvent::Frame { frame, .. }) = v {
                    video.push((frame.dts, frame.pts));
                }
                let t = (from + i * 3600) * 48 / 90;
                for a in [t, t + 1024] {
                    if let Some(MediaEvent::Frame { frame, .. }) = m.aac(a, 48_000, Bytes::new()) {
                        audio.push(frame.pts);
                    }
                }
            }
        };
        feed(&mut m, 900_000, 250);
        // The camera's encoder restarts: its clock starts again from zero.
        feed(&mut m, 0, 100);
        assert_eq!(video.len(), 350);
        assert!(
            video.windows(2).all(|w| w[1].0 > w[0].0),
            "video DTS increasing"
        );
        let step = video[250].1 - video[249].1;
        assert!(
            (0..=2 * 3600).contains(&step),
            "video continued: step {step}"
        );
        assert!(audio.windows(2).all(|w| w[1] > w[0]), "audio increasing");
        // Audio and video still together: the last of each within a frame or two.
        let v_end = video.last().unwrap().1 as f64 / 90_000.0;
        let a_end = *audio.last().unwrap() as f64 / 48_000.0;
        assert!(
            (v_end - a_end).abs() < 0.1,
            "video {v_end} s, audio {a_end} s"
        );
    }

    #[test]
    fn a_camera_clock_going_back_starts_a_new_timeline() {
        let mut d = DtsSynth::default();
        for i in 0..250 {
            d.next(i * 3600, i % 50 == 0);
        }
        // The encoder restarts: its clock is 5 s behind where it was.
        let back = 250 * 3600 - 5 * 90_000;
        let (dts, grew) = d.next(back, true);
        assert!(!grew, "not taken for reordering");
        assert_eq!(dts, back);
        for i in 1..50 {
            let (dts, grew) = d.next(back + i * 3600, false);
            assert!(!grew);
            assert_eq!(dts, back + i * 3600, "frames flow at once");
        }
        // With B-frames learnt, an odd pair of timestamps 1 tick apart does not slow the
        // later frames down.
        let mut d = DtsSynth::default();
        for (i, p) in [0, 3, 1, 2, 6, 4, 5].iter().enumerate() {
            d.next(p * 3600, i == 0);
        }
        let mut t = 7 * 3600;
        let mut dts = 0;
        for i in 0..100 {
            t += if i == 10 { 1 } else { 3600 };
            dts = d.next(t, i == 0).0;
        }
        assert!(t - dts <= 3 * 3600, "DTS {dts} fell behind PTS {t}");
    }

    #[test]
    fn video_waits_for_a_keyframe_after_loss() {
        let mut m = RtspToMedia::new(None);
        let record = x264_record();
        assert!(m.video_config(&record).unwrap().is_some());
        assert!(
            m.video_config(&record).unwrap().is_none(),
            "same config once"
        );
        let f = |m: &mut RtspToMedia, t: i64, key: bool, lost: u16| {
            m.video(
                t,
                90_000,
                key,
                lost,
                Bytes::from_static(&[0, 0, 0, 1, 0x65]),
            )
            .is_some()
        };
        assert!(!f(&mut m, 0, false, 0), "nothing before a keyframe");
        assert!(f(&mut m, 3600, true, 0));
        assert!(f(&mut m, 7200, false, 0));
        assert!(!f(&mut m, 10800, false, 2), "loss");
        assert!(!f(&mut m, 14400, false, 0));
        assert!(f(&mut m, 18000, true, 0));
    }

    #[test]
    fn aac_keeps_its_language_and_rate() {
        let mut m = RtspToMedia::new(Some(Language::parse("yue").unwrap()));
        let Some(MediaEvent::Track { info, .. }) = m.aac_config(&[0x11, 0x90]).unwrap() else {
            panic!()
        };
        assert_eq!(info.language.unwrap().as_str(), "yue");
        let Some(MediaEvent::Frame { frame, .. }) = m.aac(96_000, 48_000, Bytes::new()) else {
            panic!()
        };
        assert_eq!(frame.pts, 96_000);
        assert!(m.aac_config(&[0xff]).is_err());
    }
}
