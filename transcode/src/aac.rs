//! Opus or G.711 to AAC with GStreamer, for inputs whose audio HLS cannot carry (WebRTC
//! publishers, IP cameras): `appsrc ! (opusdec | mulawdec | alawdec) ! audioconvert !
//! audioresample ! voaacenc ! appsink`, AAC-LC at 48 kHz.
//!
//! The pipeline is fed like every other here ([`crate::fed`]): AAC frames keep the input's
//! timeline.

use std::sync::Mutex;

use bytes::Bytes;
use gstreamer as gst;
use gstreamer_app as gst_app;
use media::aac::AacParams;
use media::encode::{AacFrame, AudioEncoder, AudioSource, G711Law};

use crate::fed::Fed;

/// AAC bitrate per channel, bits per second: speech.
pub const AAC_BITRATE_PER_CHANNEL: i32 = 64_000;

/// A running pipeline to AAC; dropping it stops it.
pub struct ToAac(pub(crate) Fed);

impl AudioEncoder for ToAac {
    fn push(&mut self, pts: i64, timescale: u32, data: &[u8]) -> Result<(), String> {
        self.0.push(pts, timescale, data)
    }
}

impl ToAac {
    /// Starts a pipeline for `source`.
    pub fn start(
        source: &AudioSource,
        on_frame: Box<dyn FnMut(AacFrame) + Send>,
    ) -> Result<Self, String> {
        crate::init().map_err(|e| e.to_string())?;
        let (caps, decoder, channels) = match *source {
            AudioSource::Opus { channels } => {
                let channels = channels.clamp(1, 2);
                (
                    gst::Caps::builder("audio/x-opus")
                        .field("channel-mapping-family", 0i32)
                        .field("channels", channels as i32)
                        .field("rate", 48_000i32)
                        .build(),
                    "opusdec plc=true max-errors=50",
                    channels,
                )
            }
            AudioSource::G711 {
                law,
                rate,
                channels,
            } => {
                let channels = channels.clamp(1, 2);
                let (mime, dec) = match law {
                    G711Law::Mu => ("audio/x-mulaw", "mulawdec"),
                    G711Law::A => ("audio/x-alaw", "alawdec"),
                };
                (
                    gst::Caps::builder(mime)
                        .field("rate", rate as i32)
                        .field("channels", channels as i32)
                        .build(),
                    dec,
                    channels,
                )
            }
        };
        let bitrate = AAC_BITRATE_PER_CHANNEL * channels as i32;
        let fed = Fed::launch(
            &format!(
                "appsrc name=src format=time is-live=false do-timestamp=false \
                 ! {decoder} ! audioconvert ! audioresample \
                 ! audio/x-raw,rate=48000,channels={channels} \
                 ! voaacenc bitrate={bitrate} ! aacparse ! audio/mpeg,stream-format=raw \
                 ! appsink name=sink sync=false"
            ),
            &caps,
            256 * 1024,
            "AAC encoder",
        )?;
        let state = Mutex::new((on_frame, None::<AacParams>));
        fed.sink("sink")?.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                    let Some(pts) = buffer.pts() else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                    if st.1.is_none() {
                        let config = sample
                            .caps()
                            .and_then(|c| c.structure(0))
                            .and_then(|s| s.get::<gst::Buffer>("codec_data").ok())
                            .and_then(|b| b.map_readable().ok().map(|m| m.to_vec()))
                            .ok_or(gst::FlowError::Error)?;
                        st.1 = Some(
                            AacParams::from_config(Bytes::from(config))
                                .map_err(|_| gst::FlowError::Error)?,
                        );
                    }
                    let params = st.1.clone().expect("set above");
                    let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                    let frame = AacFrame {
                        // Rounded: GStreamer's nanoseconds truncate 1024/48000 s.
                        pts: ((pts.nseconds() as u128 * params.sample_rate as u128 + 500_000_000)
                            / 1_000_000_000) as i64,
                        data: Bytes::copy_from_slice(&map),
                        params,
                    };
                    (st.0)(frame);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        Ok(ToAac(fed.play()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// Encoded buffers of a 660 Hz tone from a GStreamer chain ending in an encoder.
    fn encoded(chain: &str) -> Vec<Vec<u8>> {
        crate::test_audio::pull(&format!("num-buffers=100 freq=660 {chain}")).1
    }

    fn run(source: AudioSource, packets: &[Vec<u8>], step: i64, timescale: u32) -> Vec<AacFrame> {
        let frames: Arc<Mutex<Vec<AacFrame>>> = Arc::default();
        let out = frames.clone();
        let mut enc =
            ToAac::start(&source, Box::new(move |f| out.lock().unwrap().push(f))).unwrap();
        let base = 10 * timescale as i64;
        for (i, p) in packets.iter().enumerate() {
            enc.push(base + i as i64 * step, timescale, p).unwrap();
        }
        let want = (packets.len() as i64 * step * 48_000 / timescale as i64 / 1024 - 4) as usize;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while frames.lock().unwrap().len() < want && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(enc);
        let f = frames.lock().unwrap().clone();
        assert!(f.len() >= want, "{} of {want} frames", f.len());
        // On the input's timeline, 1024 samples apart, 48 kHz AAC-LC.
        assert!(
            (f[0].pts - 10 * 48_000).abs() < 48 * 50,
            "first pts {}",
            f[0].pts
        );
        let steps: Vec<i64> = f.windows(2).map(|w| w[1].pts - w[0].pts).collect();
        assert!(steps.iter().all(|&d| d == 1024), "{steps:?}");
        assert_eq!(f[0].params.sample_rate, 48_000);
        assert_eq!(f[0].params.object_type, 2);
        f
    }

    #[test]
    fn opus_becomes_aac_on_the_same_timeline() {
        let packets = encoded(
            "! audio/x-raw,rate=48000,channels=2,samplesperbuffer=960 ! opusenc frame-size=20",
        );
        let f = run(AudioSource::Opus { channels: 2 }, &packets, 960, 48_000);
        assert_eq!(f[0].params.channels, 2);
    }

    #[test]
    fn g711_becomes_aac_at_48_khz() {
        let packets = encoded("samplesperbuffer=160 ! audio/x-raw,rate=8000,channels=1 ! mulawenc");
        let f = run(
            AudioSource::G711 {
                law: G711Law::Mu,
                rate: 8000,
                channels: 1,
            },
            &packets,
            160,
            8000,
        );
        assert_eq!(f[0].params.channels, 1);
    }
}
