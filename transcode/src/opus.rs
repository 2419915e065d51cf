//! AAC to Opus with GStreamer, one pipeline per dialect track:
//! `appsrc ! aacparse ! avdec_aac ! audioconvert ! audioresample ! opusenc ! appsink`.
//!
//! Input buffers carry explicit timestamps (the lecture timeline); the pipeline is not live
//! and not synchronised to a clock, so it runs as fast as frames arrive and Opus packets
//! keep the input's timeline.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use gstreamer as gst;
use gstreamer_app as gst_app;
use media::aac::AacParams;
use media::encode::{AacFrame, AudioEncoder, AudioSource, Packet, Transcoders};

use crate::fed::{Fed, aac_caps};
use crate::supervise::{Supervised, Watchdog, counted};

/// Opus bitrate of the WebRTC audio, bits per second.
pub const OPUS_BITRATE: i32 = 64_000;

/// The GStreamer implementation of [`Transcoders`]: every pipeline it starts is supervised
/// ([`crate::supervise`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct GstTranscoders {
    /// When a pipeline is restarted.
    pub watchdog: Watchdog,
}

/// A running AAC to Opus pipeline; dropping it stops it.
pub struct AacToOpus(pub(crate) Fed);

impl AudioEncoder for AacToOpus {
    fn push(&mut self, pts: i64, timescale: u32, data: &[u8]) -> Result<(), String> {
        self.0.push(pts, timescale, data)
    }
}

impl AacToOpus {
    /// Starts a pipeline for AAC with configuration `aac`; `on_packet` gets each Opus packet
    /// with its presentation time at 48 kHz.
    pub fn start(
        aac: &AacParams,
        on_packet: Box<dyn FnMut(Packet) + Send>,
    ) -> Result<Self, String> {
        let fed = Fed::launch(
            &format!(
                "appsrc name=src format=time is-live=false do-timestamp=false \
                 ! aacparse ! avdec_aac max-errors=50 ! audioconvert ! audioresample \
                 ! audio/x-raw,rate=48000,channels=2 \
                 ! opusenc frame-size=20 bitrate={OPUS_BITRATE} audio-type=voice \
                 ! appsink name=sink sync=false"
            ),
            &aac_caps(aac)?,
            256 * 1024,
            "opus encoder",
        )?;
        let on_packet = Mutex::new(on_packet);
        fed.sink("sink")?.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                    let Some(pts) = buffer.pts() else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                    let packet = Packet {
                        pts: (pts.nseconds() as u128 * 48_000 / 1_000_000_000) as i64,
                        data: Bytes::copy_from_slice(&map),
                    };
                    (on_packet.lock().unwrap_or_else(|e| e.into_inner()))(packet);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        Ok(AacToOpus(fed.play()?))
    }
}

/// An AAC to Opus encoder under `watchdog`.
pub(crate) fn supervised(
    watchdog: Watchdog,
    aac: &AacParams,
    on_packet: Box<dyn FnMut(Packet) + Send>,
) -> Result<Supervised, String> {
    let (aac, on_packet) = (aac.clone(), Arc::new(Mutex::new(on_packet)));
    Supervised::start("opus encoder", watchdog, move |n| {
        Ok(AacToOpus::start(&aac, counted(&on_packet, n))?.0)
    })
}

/// A level meter under `watchdog`.
pub(crate) fn supervised_level_meter(
    watchdog: Watchdog,
    aac: &AacParams,
    on_level: Box<dyn FnMut(media::encode::Level) + Send>,
) -> Result<Supervised, String> {
    let (aac, on_level) = (aac.clone(), Arc::new(Mutex::new(on_level)));
    Supervised::start("level meter", watchdog, move |n| {
        Ok(crate::level::LevelMeter::start(&aac, counted(&on_level, n))?.0)
    })
}

impl Transcoders for GstTranscoders {
    fn level_meter(
        &self,
        aac: &AacParams,
        on_level: Box<dyn FnMut(media::encode::Level) + Send>,
    ) -> Result<Box<dyn AudioEncoder>, String> {
        Ok(Box::new(supervised_level_meter(
            self.watchdog,
            aac,
            on_level,
        )?))
    }

    fn to_aac(
        &self,
        source: &AudioSource,
        on_frame: Box<dyn FnMut(AacFrame) + Send>,
    ) -> Result<Box<dyn AudioEncoder>, String> {
        let (source, on_frame) = (*source, Arc::new(Mutex::new(on_frame)));
        Ok(Box::new(Supervised::start(
            "AAC encoder",
            self.watchdog,
            move |n| Ok(crate::aac::ToAac::start(&source, counted(&on_frame, n))?.0),
        )?))
    }

    fn aac_to_opus(
        &self,
        aac: &AacParams,
        on_packet: Box<dyn FnMut(Packet) + Send>,
    ) -> Result<Box<dyn AudioEncoder>, String> {
        Ok(Box::new(supervised(self.watchdog, aac, on_packet)?))
    }

    fn video_rung(
        &self,
        source: &media::h264::H264Params,
        rung: &media::encode::LadderRung,
        on_frame: Box<dyn FnMut(media::encode::VideoFrame) + Send>,
    ) -> Result<Box<dyn media::encode::VideoEncoder>, String> {
        Ok(Box::new(crate::ladder::supervised(
            self.watchdog,
            source,
            rung,
            &crate::ladder::LadderOptions::default(),
            on_frame,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// Two seconds of a 440 Hz tone (audiotestsrc's default volume) as raw AAC frames.
    fn aac_tone() -> (AacParams, Vec<Vec<u8>>) {
        crate::test_audio::aac_tone(94, 0.8)
    }

    #[test]
    fn aac_becomes_opus_on_the_same_timeline() {
        let (params, frames) = aac_tone();
        let packets: Arc<Mutex<Vec<Packet>>> = Arc::default();
        let out = packets.clone();
        let mut enc =
            AacToOpus::start(&params, Box::new(move |p| out.lock().unwrap().push(p))).unwrap();
        // Start far into a lecture timeline: 10 s at 48 kHz.
        let base = 480_000i64;
        for (i, f) in frames.iter().enumerate() {
            enc.push(base + i as i64 * 1024, 48_000, f).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while packets.lock().unwrap().len() < 90 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(enc);
        let packets = packets.lock().unwrap();
        // ~2 s of 20 ms packets.
        assert!(packets.len() >= 90, "{} packets", packets.len());
        // On the input's timeline (within the codec's delay: the encoder's first packet
        // covers its 312-sample lookahead) and evenly spaced after it.
        assert!(
            (packets[0].pts - base).abs() < 48 * 30,
            "first pts {}",
            packets[0].pts
        );
        for w in packets[1..].windows(2) {
            assert_eq!(w[1].pts - w[0].pts, 960);
        }
        assert!(
            packets
                .iter()
                .all(|p| !p.data.is_empty() && p.data.len() < 1500)
        );
    }
}
