//! jiangtang's GStreamer bridge.
//!
//! # Layout
//! - [`demo`]: the built-in demo lecture: a moving test picture with a burnt-in clock and
//!   one audio track per dialect, each a tone of its own pitch.
//! - [`opus`]: AAC to Opus for WebRTC viewers.
//! - [`aac`]: Opus or G.711 to AAC for HLS (WebRTC publishers, IP cameras).
//! - [`level`]: the sound level of a dialect, for the lecture's health.
//! - [`ladder`]: the video ladder, a smaller picture of the lecture for weak links.
//! - [`poster`]: a recording's poster, the first picture of its video as a JPEG.
//! - [`fed`]: the appsrc-fed pipeline shape they share.
//! - [`supervise`]: restarts a pipeline that fails or stalls.

pub mod aac;
pub mod demo;
pub mod fed;
pub mod ladder;
pub mod level;
pub mod opus;
pub mod poster;
pub mod supervise;
#[cfg(test)]
mod test_audio;
#[cfg(test)]
mod test_video;

use std::sync::Once;

/// Initialises GStreamer once per process.
pub fn init() -> Result<(), gstreamer::glib::Error> {
    static INIT: Once = Once::new();
    let mut result = Ok(());
    INIT.call_once(|| result = gstreamer::init());
    result
}

/// The pipeline `description` (GStreamer's launch syntax) builds, GStreamer initialised.
pub(crate) fn pipeline(description: &str) -> Result<gstreamer::Pipeline, String> {
    use gstreamer::prelude::*;
    init().map_err(|e| e.to_string())?;
    gstreamer::parse::launch(description)
        .map_err(|e| e.to_string())?
        .downcast::<gstreamer::Pipeline>()
        .map_err(|_| "not a pipeline".to_string())
}

/// The element named `name` in `pipeline`, as a `T` (an `appsrc`, an `appsink`).
pub(crate) fn element<T: gstreamer::prelude::IsA<gstreamer::Element>>(
    pipeline: &gstreamer::Pipeline,
    name: &str,
) -> Result<T, String> {
    use gstreamer::prelude::*;
    pipeline
        .by_name(name)
        .and_then(|e| e.downcast::<T>().ok())
        .ok_or_else(|| format!("no {name} of the expected kind in the pipeline"))
}
