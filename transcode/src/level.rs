//! Audio level of an AAC track, for the lecture's health: `appsrc ! aacparse ! avdec_aac !
//! audioconvert ! level ! fakesink`, one reading a second (RMS and peak, dBFS, loudest
//! channel). Lets an operator see that each dialect really carries sound.

use std::sync::Mutex;

use gstreamer as gst;
use media::aac::AacParams;
use media::encode::{AudioEncoder, Level};

use crate::fed::{Fed, aac_caps};

/// A running level meter; dropping it stops it.
pub struct LevelMeter(pub(crate) Fed);

impl AudioEncoder for LevelMeter {
    fn push(&mut self, pts: i64, timescale: u32, data: &[u8]) -> Result<(), String> {
        self.0.push(pts, timescale, data)
    }
}

impl LevelMeter {
    /// Starts a meter for AAC with configuration `aac`; `on_level` gets a reading per second
    /// of audio.
    pub fn start(aac: &AacParams, on_level: Box<dyn FnMut(Level) + Send>) -> Result<Self, String> {
        let mut fed = Fed::launch(
            "appsrc name=src format=time is-live=false do-timestamp=false \
             ! aacparse ! avdec_aac ! audioconvert \
             ! level name=level interval=1000000000 post-messages=true \
             ! fakesink sync=false",
            &aac_caps(aac)?,
            64 * 1024,
            "level meter",
        )?;
        let on_level = Mutex::new(on_level);
        fed.on_message(move |msg| {
            if let gst::MessageView::Element(e) = msg.view()
                && let Some(s) = e.structure()
                && s.name() == "level"
                && let (Ok(rms), Ok(peak)) = (
                    s.get::<gst::glib::ValueArray>("rms"),
                    s.get::<gst::glib::ValueArray>("peak"),
                )
            {
                let loudest = |a: &gst::glib::ValueArray| {
                    a.iter()
                        .filter_map(|v| v.get::<f64>().ok())
                        .fold(f64::NEG_INFINITY, f64::max)
                };
                let level = Level {
                    rms_db: loudest(&rms).max(-120.0),
                    peak_db: loudest(&peak).max(-120.0),
                };
                (on_level.lock().unwrap_or_else(|e| e.into_inner()))(level);
            }
        });
        Ok(LevelMeter(fed.play()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// Three seconds of AAC: a tone at `volume`, or silence at 0.
    fn aac(volume: f64) -> (AacParams, Vec<Vec<u8>>) {
        crate::test_audio::aac_tone(141, volume)
    }

    fn readings(volume: f64) -> Vec<Level> {
        let (params, frames) = aac(volume);
        let out: Arc<Mutex<Vec<Level>>> = Arc::default();
        let o = out.clone();
        let mut m =
            LevelMeter::start(&params, Box::new(move |l| o.lock().unwrap().push(l))).unwrap();
        for (i, f) in frames.iter().enumerate() {
            m.push(i as i64 * 1024, 48_000, f).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while out.lock().unwrap().len() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(m);
        out.lock().unwrap().clone()
    }

    #[test]
    fn a_tone_and_silence_read_as_such() {
        let tone = readings(0.5);
        assert!(tone.len() >= 2, "{tone:?}");
        // A sine at half scale: peak about -6 dBFS, RMS about -9 dBFS.
        assert!((tone[1].peak_db + 6.0).abs() < 2.0, "{tone:?}");
        assert!((tone[1].rms_db + 9.0).abs() < 2.0, "{tone:?}");
        let quiet = readings(0.0);
        assert!(quiet.iter().all(|l| l.rms_db < -80.0), "{quiet:?}");
    }
}
