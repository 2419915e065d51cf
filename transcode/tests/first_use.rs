//! Each pipeline must work as the first GStreamer use in a process (nothing else having
//! initialised GStreamer): the relay may start a level meter or a transcoder before anything
//! else. One process per test binary, so this file holds one test.

use media::aac::AacParams;
use media::encode::{AudioSource, G711Law};

#[test]
fn pipelines_start_without_gstreamer_initialised_first() {
    // x264's 1280x720 SPS and PPS.
    let video = media::h264::H264Params::from_sps_pps(
        &[
            0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00,
            0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x83, 0x19, 0x60,
        ],
        &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0],
    )
    .unwrap();
    let rung = media::encode::LadderRung {
        width: 640,
        height: 360,
        kbps: 400,
    };
    transcode::ladder::Ladder::start(&video, &rung, &Default::default(), Box::new(|_| {}))
        .expect("video ladder");
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
