//! A recording's poster: the first picture of a CMAF video segment as a JPEG, `appsrc !
//! qtdemux ! h264parse ! avdec_h264 ! videoconvert ! videoscale ! jpegenc ! appsink`. It
//! decodes until the first picture comes out and stops there.

use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

/// A poster image.
#[derive(Debug, Clone)]
pub struct Jpeg {
    /// The JPEG file.
    pub data: Vec<u8>,
    /// Pixels.
    pub width: u32,
    /// Pixels.
    pub height: u32,
}

/// How long decoding one picture may take before it is given up.
const TIMEOUT: Duration = Duration::from_secs(15);

/// The size a picture of `width`×`height` is shown at as a poster: as it is, or scaled
/// down to `max_width` keeping its shape (even sizes, as JPEG's 4:2:0 wants).
pub fn poster_size(width: u32, height: u32, max_width: u32) -> (u32, u32) {
    if width == 0 || height == 0 || width <= max_width {
        return (width, height);
    }
    let h = (u64::from(height) * u64::from(max_width) / u64::from(width)) as u32;
    (max_width & !1, (h & !1).max(2))
}

/// The first picture of `segment` (one or more `moof`+`mdat` of H.264 after the `ftyp`+`moov`
/// of `init`) as a JPEG of `size` (none: as decoded).
pub fn jpeg(init: &[u8], segment: &[u8], size: Option<(u32, u32)>) -> Result<Jpeg, String> {
    crate::init().map_err(|e| e.to_string())?;
    let scale = match size {
        Some((w, h)) if w > 0 && h > 0 => format!(",width={w},height={h}"),
        _ => String::new(),
    };
    let pipeline = crate::pipeline(&format!(
        "appsrc name=src format=bytes is-live=false caps=video/quicktime \
         ! qtdemux ! h264parse ! avdec_h264 ! videoconvert ! videoscale \
         ! video/x-raw,format=I420{scale} ! jpegenc quality=85 \
         ! appsink name=sink sync=false max-buffers=1 drop=false"
    ))?;
    let stop = Stop(pipeline.clone());
    let src: gst_app::AppSrc = crate::element(&pipeline, "src")?;
    let sink: gst_app::AppSink = crate::element(&pipeline, "sink")?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| format!("cannot start the poster pipeline: {e}"))?;
    let mut data = Vec::with_capacity(init.len() + segment.len());
    data.extend_from_slice(init);
    data.extend_from_slice(segment);
    src.push_buffer(gst::Buffer::from_mut_slice(data))
        .map_err(|e| format!("poster: {e:?}"))?;
    let _ = src.end_of_stream();
    let bus = pipeline.bus().ok_or("no bus")?;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) {
            let buffer = sample.buffer().ok_or("a sample without a buffer")?;
            let map = buffer.map_readable().map_err(|e| e.to_string())?;
            let (mut width, mut height) = (0, 0);
            if let Some(s) = sample.caps().and_then(|c| c.structure(0)) {
                width = s.get::<i32>("width").unwrap_or(0).max(0) as u32;
                height = s.get::<i32>("height").unwrap_or(0).max(0) as u32;
            }
            let out = Jpeg {
                data: map.as_slice().to_vec(),
                width,
                height,
            };
            drop(stop);
            return Ok(out);
        }
        while let Some(msg) = bus.pop() {
            match msg.view() {
                gst::MessageView::Error(e) => {
                    return Err(format!("decoding the poster's picture: {}", e.error()));
                }
                gst::MessageView::Eos(_) => {
                    return Err("the segment holds no picture that decodes".into());
                }
                _ => {}
            }
        }
        if sink.is_eos() {
            return Err("the segment holds no picture that decodes".into());
        }
        if Instant::now() >= deadline {
            return Err("decoding the poster's picture timed out".into());
        }
    }
}

/// Stops the pipeline however the function returns.
struct Stop(gst::Pipeline);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(poster_size(320, 180, 1280), (320, 180));
        assert_eq!(poster_size(1920, 1080, 1280), (1280, 720));
        assert_eq!(poster_size(1921, 1081, 1280), (1280, 720));
        assert_eq!(poster_size(0, 0, 1280), (0, 0));
    }

    /// `frames` frames of H.264 from `videotestsrc` (a keyframe first) as an init segment and
    /// one fragment, as the packager writes them.
    fn cmaf(width: u32, height: u32, frames: i32) -> (bytes::Bytes, bytes::Bytes) {
        let p = crate::pipeline(&format!(
            "videotestsrc num-buffers={frames} pattern=smpte \
             ! video/x-raw,width={width},height={height},framerate=25/1 \
             ! x264enc key-int-max=25 speed-preset=ultrafast ! h264parse \
             ! video/x-h264,stream-format=avc,alignment=au ! appsink name=sink sync=false"
        ))
        .unwrap();
        let sink: gst_app::AppSink = crate::element(&p, "sink").unwrap();
        p.set_state(gst::State::Playing).unwrap();
        let mut samples = Vec::new();
        let mut record = None;
        while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
            let caps = s.caps().unwrap().structure(0).unwrap();
            let cd = caps.get::<gst::Buffer>("codec_data").unwrap();
            record = Some(bytes::Bytes::from(cd.map_readable().unwrap().to_vec()));
            let b = s.buffer().unwrap();
            samples.push(media::fmp4::Sample {
                duration: 3600,
                composition_offset: 0,
                keyframe: !b.flags().contains(gst::BufferFlags::DELTA_UNIT),
                data: bytes::Bytes::from(b.map_readable().unwrap().to_vec()),
            });
        }
        p.set_state(gst::State::Null).unwrap();
        let params = media::h264::H264Params::from_record(record.unwrap()).unwrap();
        let info = media::TrackInfo::new(media::CodecParams::H264(params));
        let init = media::fmp4::init_segment(&info, None).unwrap();
        let frag = media::fmp4::fragment(1, 0, &samples).unwrap();
        (init, frag)
    }

    /// Width and height in a JPEG's start-of-frame marker.
    fn jpeg_size(data: &[u8]) -> Option<(u32, u32)> {
        if data.get(..2)? != [0xff, 0xd8] {
            return None;
        }
        let mut i = 2;
        while i + 9 < data.len() {
            if data[i] != 0xff {
                return None;
            }
            let marker = data[i + 1];
            let len = usize::from(u16::from_be_bytes([data[i + 2], data[i + 3]]));
            if (0xc0..=0xc2).contains(&marker) {
                let h = u16::from_be_bytes([data[i + 5], data[i + 6]]);
                let w = u16::from_be_bytes([data[i + 7], data[i + 8]]);
                return Some((u32::from(w), u32::from(h)));
            }
            i += 2 + len;
        }
        None
    }

    #[test]
    fn the_first_picture_becomes_a_jpeg_of_the_asked_size() {
        let (init, frag) = cmaf(320, 180, 12);
        let j = jpeg(&init, &frag, None).unwrap();
        assert_eq!((j.width, j.height), (320, 180));
        assert_eq!(jpeg_size(&j.data), Some((320, 180)));
        let j = jpeg(&init, &frag, Some((160, 90))).unwrap();
        assert_eq!(jpeg_size(&j.data), Some((160, 90)));
        assert_eq!((j.width, j.height), (160, 90));
    }

    #[test]
    fn garbage_is_an_error_not_a_hang() {
        let e = jpeg(b"not an mp4 at all", &[0u8; 1000], None).unwrap_err();
        assert!(!e.is_empty());
    }
}
