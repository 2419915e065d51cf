//! Test input: H.264 encoded by GStreamer itself, for the video ladder's tests.

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use media::Frame;
use media::h264::H264Params;

/// A lecture's video as the relay holds it: 90 kHz frames and their configuration.
pub struct SourceVideo {
    /// SPS/PPS of the stream.
    pub params: H264Params,
    /// Length-prefixed frames in decode order, times in 90 kHz.
    pub frames: Vec<Frame>,
}

/// `seconds` of a moving 1280x720 25 fps test picture as H.264 at 2 Mbit/s, a keyframe every
/// `gop` frames and two B-frames between references (so decode and presentation order
/// differ, as with most cameras), its timeline starting at `start` (90 kHz).
pub fn source(seconds: u32, gop: u32, start: i64) -> SourceVideo {
    sized_source(seconds, gop, start, 1280, 720)
}

/// [`source`] at `width`x`height`: a ball on a green background.
pub fn sized_source(seconds: u32, gop: u32, start: i64, width: u32, height: u32) -> SourceVideo {
    crate::init().unwrap();
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers={n} pattern=ball motion=wavy background-color=0xff206040 \
         ! video/x-raw,width={width},height={height},framerate=25/1 \
         ! timeoverlay font-desc=\"Sans 48\" \
         ! x264enc speed-preset=superfast bitrate=2000 key-int-max={gop} bframes=2 \
           option-string=\"scenecut=0\" \
         ! h264parse ! video/x-h264,stream-format=avc,alignment=au \
         ! appsink name=sink sync=false",
        n = seconds * 25
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let (mut params, mut frames) = (None, Vec::new());
    while let Ok(sample) = sink.pull_sample() {
        if params.is_none() {
            let s = sample.caps().unwrap().structure(0).unwrap().to_owned();
            let cd = s.get::<gst::Buffer>("codec_data").unwrap();
            let record = Bytes::copy_from_slice(&cd.map_readable().unwrap());
            params = Some(H264Params::from_record(record).unwrap());
        }
        let segment = sample
            .segment()
            .unwrap()
            .downcast_ref::<gst::ClockTime>()
            .unwrap()
            .clone();
        // x264enc shifts its output by 1000 h: running time is the picture's.
        let running = |t: gst::ClockTime| -> i64 {
            let v = segment.to_running_time_full(t).unwrap();
            v.positive().map_or_else(
                || -(v.negative().unwrap().nseconds() as i64),
                |p| p.nseconds() as i64,
            )
        };
        let b = sample.buffer().unwrap();
        let pts = running(b.pts().unwrap());
        let dts = b.dts().map_or(pts, running);
        frames.push(Frame {
            dts: start + dts * 9 / 100_000,
            pts: start + pts * 9 / 100_000,
            keyframe: !b.flags().contains(gst::BufferFlags::DELTA_UNIT),
            data: Bytes::copy_from_slice(&b.map_readable().unwrap()),
        });
    }
    pipeline.set_state(gst::State::Null).unwrap();
    SourceVideo {
        params: params.unwrap(),
        frames,
    }
}

/// The picture of `frame` (a keyframe of a stream with configuration `params`), decoded to
/// 8-bit luma: width, height and rows of samples.
pub fn luma(params: &H264Params, frame: &[u8]) -> (usize, usize, Vec<u8>) {
    crate::init().unwrap();
    let pipeline = gst::parse::launch(
        "appsrc name=src format=time ! h264parse ! avdec_h264 ! videoconvert \
         ! video/x-raw,format=GRAY8 ! appsink name=sink sync=false",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    src.set_caps(Some(
        &gst::Caps::builder("video/x-h264")
            .field("stream-format", "avc")
            .field("alignment", "au")
            .field(
                "codec_data",
                gst::Buffer::from_slice(params.record.to_vec()),
            )
            .build(),
    ));
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut b = gst::Buffer::from_slice(frame.to_vec());
    b.get_mut().unwrap().set_pts(gst::ClockTime::ZERO);
    src.push_buffer(b).unwrap();
    src.end_of_stream().unwrap();
    let sample = sink.pull_sample().unwrap();
    let s = sample.caps().unwrap().structure(0).unwrap().to_owned();
    let (w, h) = (
        s.get::<i32>("width").unwrap() as usize,
        s.get::<i32>("height").unwrap() as usize,
    );
    let map = sample.buffer().unwrap().map_readable().unwrap().to_vec();
    pipeline.set_state(gst::State::Null).unwrap();
    // GRAY8 rows are padded to 4 bytes.
    let stride = w.div_ceil(4) * 4;
    let rows = (0..h)
        .flat_map(|y| map[y * stride..y * stride + w].to_vec())
        .collect();
    (w, h, rows)
}
