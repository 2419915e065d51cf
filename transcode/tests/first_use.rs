//! Each pipeline must work as the first GStreamer use in a process (nothing else having
//! initialised GStreamer): the relay may start a level meter or a transcoder before anything
//! else. One process per test binary, so this file holds one test.

use media::aac::AacParams;
use media::encode::{AudioSource, G711Law};

#[test]
fn pipelines_start_without_gstreamer_initialised_first() {
    // AAC-LC, 48 kHz, stereo.
    let params = AacParams::from_config(bytes::Bytes::from_static(&[0x11, 0x90])).unwrap();
    transcode::level::LevelMeter::start(&params, Box::new(|_| {})).expect("level meter");
    transcode::opus::AacToOpus::start(&params, Box::new(|_| {})).expect("AAC to Opus");
    transcode::aac::ToAac::start(
        &AudioSource::G711 {
            law: G711Law::A,
            rate: 8000,
            channels: 1,
        },
        Box::new(|_| {}),
    )
    .expect("G.711 to AAC");
}
