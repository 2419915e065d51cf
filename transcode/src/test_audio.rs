//! Test input: audio encoded by GStreamer itself, for the transcoders' unit tests.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use media::aac::AacParams;

/// Runs `audiotestsrc {source} ! ... ! appsink` to its end: the buffers it produced, and
/// the `codec_data` of its caps if they have one.
pub fn pull(source: &str) -> (Option<Vec<u8>>, Vec<Vec<u8>>) {
    let pipeline = crate::pipeline(&format!(
        "audiotestsrc {source} ! appsink name=sink sync=false"
    ))
    .unwrap();
    let sink: gst_app::AppSink = crate::element(&pipeline, "sink").unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let (mut config, mut out) = (None, Vec::new());
    while let Ok(sample) = sink.pull_sample() {
        if config.is_none() {
            let s = sample.caps().unwrap().structure(0).unwrap().to_owned();
            config = s
                .get::<gst::Buffer>("codec_data")
                .ok()
                .map(|cd| cd.map_readable().unwrap().to_vec());
        }
        out.push(sample.buffer().unwrap().map_readable().unwrap().to_vec());
    }
    pipeline.set_state(gst::State::Null).unwrap();
    (config, out)
}

/// `frames` raw AAC-LC frames (48 kHz stereo) of a 440 Hz tone at `volume`.
pub fn aac_tone(frames: u32, volume: f64) -> (AacParams, Vec<Vec<u8>>) {
    let (config, frames) = pull(&format!(
        "num-buffers={frames} samplesperbuffer=1024 freq=440 volume={volume} \
         ! audio/x-raw,rate=48000,channels=2 ! voaacenc ! aacparse \
         ! audio/mpeg,stream-format=raw"
    ));
    let params = AacParams::from_config(bytes::Bytes::from(config.unwrap())).unwrap();
    (params, frames)
}
