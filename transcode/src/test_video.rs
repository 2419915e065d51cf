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
    let pipeline = crate::pipeline(&format!(
        "videotestsrc num-buffers={n} pattern=ball motion=wavy background-color=0xff206040 \
         ! video/x-raw,width={width},height={height},framerate=25/1 \
         ! timeoverlay font-desc=\"Sans 48\" \
         ! x264enc speed-preset=superfast bitrate=2000 key-int-max={gop} bframes=2 \
           option-string=\"scenecut=0\" \
         ! h264parse ! video/x-h264,stream-format=avc,alignment=au \
         ! appsink name=sink sync=false",
        n = seconds * 25
    ))
    .unwrap();
    let sink: gst_app::AppSink = crate::element(&pipeline, "sink").unwrap();
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
/// 8-bit luma: width, height and rows of samples, and the colorimetry the stream declares.
pub fn luma(params: &H264Params, frame: &[u8]) -> (usize, usize, Vec<u8>, Option<String>) {
    let pipeline = crate::pipeline(
        "appsrc name=src format=time ! h264parse ! avdec_h264 name=dec ! videoconvert \
         ! video/x-raw,format=GRAY8 ! appsink name=sink sync=false",
    )
    .unwrap();
    let src: gst_app::AppSrc = crate::element(&pipeline, "src").unwrap();
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
    let sink: gst_app::AppSink = crate::element(&pipeline, "sink").unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut b = gst::Buffer::from_slice(frame.to_vec());
    b.get_mut().unwrap().set_pts(gst::ClockTime::ZERO);
    src.push_buffer(b).unwrap();
    src.end_of_stream().unwrap();
    let sample = sink.pull_sample().unwrap();
    let declared = pipeline
        .by_name("dec")
        .unwrap()
        .static_pad("src")
        .unwrap()
        .current_caps()
        .unwrap()
        .structure(0)
        .unwrap()
        .get::<String>("colorimetry")
        .ok();
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
    (w, h, rows, declared)
}

/// `seconds` of ffmpeg's 1280x720 25 fps test picture encoded by ffmpeg's libx264 (no
/// B-frames, a keyframe a second), whose SPS, unlike x264enc's, declares no colours (as from
/// many encoders): the picture's size then implies them.
pub fn ffmpeg_source(seconds: u32) -> SourceVideo {
    let out = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=1280x720:rate=25:duration={seconds}"))
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-bf", "0", "-g", "25",
        ])
        .args(["-x264-params", "aud=1:scenecut=0", "-pix_fmt", "yuv420p"])
        .args(["-f", "h264", "-"])
        .output()
        .expect("ffmpeg (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Access units start at their delimiters (NAL type 9).
    let nals: Vec<&[u8]> = media::h264::split_annexb(&out.stdout).collect();
    let find = |t: u8| *nals.iter().find(|n| n[0] & 0x1f == t).unwrap();
    let params = H264Params::from_sps_pps(find(7), find(8)).unwrap();
    let mut frames: Vec<Frame> = Vec::new();
    let mut unit: Vec<&[u8]> = Vec::new();
    for nal in nals.iter().chain([&&[9u8][..]]) {
        if nal[0] & 0x1f == 9 && !unit.is_empty() {
            let t = frames.len() as i64 * 3600;
            let mut data = Vec::new();
            for n in unit.drain(..).filter(|n| !matches!(n[0] & 0x1f, 7..=9)) {
                data.extend_from_slice(&(n.len() as u32).to_be_bytes());
                data.extend_from_slice(n);
            }
            let keyframe = params.is_idr(&data).unwrap();
            frames.push(Frame {
                dts: t,
                pts: t,
                keyframe,
                data: Bytes::from(data),
            });
        }
        unit.push(nal);
    }
    SourceVideo { params, frames }
}
