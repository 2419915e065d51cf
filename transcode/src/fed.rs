//! The shape every transcoding pipeline here shares: frames go in through an `appsrc` with
//! the input's timestamps (not live, not clock-synchronised, so it runs as fast as frames
//! come and keeps their timeline), bounded so a stalled pipeline drops input instead of
//! growing; dropping it ends the stream and stops it. Every message on its bus is handled
//! on the streaming thread (no main loop); an error is kept for [`crate::supervise`].

use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use media::encode::AudioEncoder;

/// A pipeline fed through its `appsrc` named `src`.
pub struct Fed {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    what: &'static str,
    fault: Arc<Mutex<Option<String>>>,
    handled: bool,
}

impl Fed {
    /// Builds `description` (which must contain `appsrc name=src format=time is-live=false
    /// do-timestamp=false`), with `caps` on the source and at most `max_bytes` queued in it.
    /// `what` names it in errors.
    pub fn launch(
        description: &str,
        caps: &gst::Caps,
        max_bytes: u64,
        what: &'static str,
    ) -> Result<Fed, String> {
        let pipeline = crate::pipeline(description)?;
        let src: gst_app::AppSrc = crate::element(&pipeline, "src")?;
        src.set_caps(Some(caps));
        src.set_max_bytes(max_bytes);
        src.set_property_from_str("leaky-type", "downstream");
        Ok(Fed {
            pipeline,
            src,
            what,
            fault: Arc::default(),
            handled: false,
        })
    }

    /// The pipeline, to reach its other elements and bus before it plays.
    pub fn pipeline(&self) -> &gst::Pipeline {
        &self.pipeline
    }

    /// Its `appsrc`, for a feeder that needs more than [`AudioEncoder::push`] (video).
    pub(crate) fn src(&self) -> &gst_app::AppSrc {
        &self.src
    }

    /// The `appsink` named `name`.
    pub fn sink(&self, name: &str) -> Result<gst_app::AppSink, String> {
        self.pipeline
            .by_name(name)
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| format!("no appsink {name}"))
    }

    /// Hands every message of the bus to `f` on the thread that posts it, after keeping the
    /// first error. At most once, before [`Fed::play`] (which otherwise installs one that
    /// only keeps errors).
    pub fn on_message(&mut self, f: impl Fn(&gst::Message) + Send + Sync + 'static) {
        let Some(bus) = self.pipeline.bus() else {
            return;
        };
        let fault = self.fault.clone();
        bus.set_sync_handler(move |_, msg| {
            if let gst::MessageView::Error(e) = msg.view() {
                let mut fault = fault.lock().unwrap_or_else(|e| e.into_inner());
                if fault.is_none() {
                    let from = msg.src().map(|s| s.name().to_string()).unwrap_or_default();
                    *fault = Some(format!("{from}: {}", e.error()));
                }
            }
            f(msg);
            gst::BusSyncReply::Drop
        });
        self.handled = true;
    }

    /// The first error the pipeline posted, if any.
    pub fn fault(&self) -> Option<String> {
        self.fault.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Starts it.
    pub fn play(mut self) -> Result<Fed, String> {
        if !self.handled {
            self.on_message(|_| {});
        }
        self.pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("cannot start the {}: {e}", self.what))?;
        Ok(self)
    }
}

impl AudioEncoder for Fed {
    fn push(&mut self, pts: i64, timescale: u32, data: &[u8]) -> Result<(), String> {
        if pts < 0 || timescale == 0 {
            return Err("negative timestamp".into());
        }
        let mut buffer = gst::Buffer::from_slice(data.to_vec());
        {
            let b = buffer.get_mut().expect("new buffer is writable");
            let ns = (pts as u128 * 1_000_000_000 / timescale as u128) as u64;
            b.set_pts(gst::ClockTime::from_nseconds(ns));
        }
        self.src
            .push_buffer(buffer)
            .map(|_| ())
            .map_err(|e| format!("{}: {e:?}", self.what))
    }
}

impl Drop for Fed {
    fn drop(&mut self) {
        let _ = self.src.end_of_stream();
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Caps of raw AAC with its AudioSpecificConfig (initialising GStreamer first, as building
/// caps needs it).
pub fn aac_caps(aac: &media::aac::AacParams) -> Result<gst::Caps, String> {
    crate::init().map_err(|e| e.to_string())?;
    Ok(gst::Caps::builder("audio/mpeg")
        .field("mpegversion", 4i32)
        .field("stream-format", "raw")
        .field("codec_data", gst::Buffer::from_slice(aac.config.to_vec()))
        .field("rate", aac.sample_rate as i32)
        .field("channels", aac.channel_count() as i32)
        .build())
}
