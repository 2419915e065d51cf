//! The video ladder: a smaller picture of a lecture for weak links, made once per lecture
//! and rung with GStreamer:
//!
//! `appsrc (H.264, avc) ! h264parse ! avdec_h264 ! videoscale ! video/x-raw,WxH,PAR 1/1
//! ! videoconvert ! x264enc (or a hardware encoder) ! h264parse ! video/x-h264,avc,au
//! ! appsink`.
//!
//! Every rendition of a lecture is cut into segments at the source's keyframes, so the rung
//! must have an IDR picture exactly where the source has one and nowhere else: before each
//! source keyframe a downstream force-key-unit event (`GstForceKeyUnit`, running time of
//! that frame) goes into the `appsrc`, in order with the buffers. `h264parse` holds it until
//! it passes that keyframe on, the decoder passes it out just before the frame's picture,
//! and the encoder (any `GstVideoEncoder`) makes that picture a keyframe; x264 itself never
//! starts one (an infinite GOP, no scene cuts). Each output frame carries the times of the
//! source frame it was made from, in 90 kHz.
//!
//! Input is fed whole GOPs: when the `appsrc` queue is full (an encoder too slow for the
//! machine) the rest of the GOP is dropped and feeding resumes at the next keyframe, so the
//! decoder never sees a picture whose references it lost; a new pipeline (first or
//! restarted by [`crate::supervise`]) also starts at a keyframe.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use media::Frame;
use media::encode::{LadderRung, VideoEncoder, VideoFrame};
use media::h264::H264Params;
use tracing::{info, warn};

use crate::fed::Fed;
use crate::supervise::{Shared, Supervised, Watchdog, Watched, counted};

/// Most bytes of source video queued ahead of the decoder (about 8 s at 2 Mbit/s).
pub const MAX_QUEUED_BYTES: u64 = 2 * 1024 * 1024;
/// Most source frames queued ahead of the decoder (4 s at 25 fps).
pub const MAX_QUEUED_FRAMES: u64 = 100;

/// x264's "no keyframe interval" (`X264_KEYINT_MAX_INFINITE`): keyframes only when forced.
const KEYINT_INFINITE: u32 = 1 << 30;

/// The ladder's timescale (the relay's video timescale).
const TIMESCALE: i128 = 90_000;

/// Where the lecture's time 0 sits on the pipeline's clock: 1000 hours, the least time
/// x264enc takes without shifting its timeline (GStreamer 1.22's encoder base class then
/// judges forced keyframes on the shifted time and forces only the first), and room for
/// a source's negative decode times.
const BASE_NS: i128 = 1000 * 3600 * 1_000_000_000;

/// Hardware H.264 encoders used when GStreamer has one, in order of preference.
const HARDWARE: &[&str] = &["vah264enc", "vaapih264enc", "nvh264enc", "v4l2h264enc"];

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Source frames the ladder dropped (a pipeline slower than the lecture), for `/metrics`.
pub fn dropped_frames_total() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// How a rung is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LadderOptions {
    /// x264 threads (`0`: x264's choice, about 1.5 per core, as slices of each picture).
    pub x264_threads: u32,
    /// Decoder threads (`0`: one per core, frame-threaded, a frame of delay each).
    pub decoder_threads: u32,
    /// Use a hardware encoder when GStreamer finds one.
    pub hardware: bool,
}

impl Default for LadderOptions {
    fn default() -> Self {
        // One thread each: a rung runs on one core and adds no frame of delay of its own;
        // more threads cost as much CPU (`ladder-bench`).
        LadderOptions {
            x264_threads: 1,
            decoder_threads: 1,
            hardware: true,
        }
    }
}

/// The encoder part of the pipeline, ending in H.264 byte-stream or avc.
fn encoder_description(encoder: &str, rung: &LadderRung, options: &LadderOptions) -> String {
    let kbps = rung.kbps;
    match encoder {
        // Property names and ranges as each element documents them; GOPs as long as each
        // allows, keyframes forced by the events.
        "vah264enc" => {
            format!("vah264enc bitrate={kbps} rate-control=cbr b-frames=0 key-int-max=1024")
        }
        "vaapih264enc" => {
            format!(
                "vaapih264enc bitrate={kbps} rate-control=cbr max-bframes=0 keyframe-period=300"
            )
        }
        "nvh264enc" => {
            format!("nvh264enc bitrate={kbps} rc-mode=cbr bframes=0 gop-size=-1 zerolatency=true")
        }
        "v4l2h264enc" => format!(
            "v4l2h264enc extra-controls=\"encode,video_bitrate={},h264_i_frame_period=2147483647\"",
            kbps * 1000
        ),
        _ => format!(
            "x264enc tune=zerolatency speed-preset=veryfast bitrate={kbps} bframes=0 \
             key-int-max={KEYINT_INFINITE} threads={} option-string=\"scenecut=0\" \
             ! video/x-h264,profile=main",
            options.x264_threads
        ),
    }
}

/// The hardware encoder GStreamer has, if any.
fn find_hardware() -> Option<&'static str> {
    HARDWARE
        .iter()
        .copied()
        .find(|name| gst::ElementFactory::find(name).is_some())
}

/// Checks a rung before a pipeline is built for it.
fn check_rung(rung: &LadderRung) -> Result<(), String> {
    let ok_side = |v: u32, max: u32| (16..=max).contains(&v) && v.is_multiple_of(2);
    if !ok_side(rung.width, 3840) || !ok_side(rung.height, 2160) {
        return Err(format!(
            "ladder rung {}x{}: sides must be even, 16 to 3840x2160",
            rung.width, rung.height
        ));
    }
    if !(50..=50_000).contains(&rung.kbps) {
        return Err(format!(
            "ladder rung at {} kbit/s: 50 to 50000 kbit/s",
            rung.kbps
        ));
    }
    Ok(())
}

/// A running rung; dropping it stops it.
pub struct Ladder {
    fed: Fed,
    /// Feeding waits for a keyframe (a new pipeline, or after a dropped frame).
    waiting: bool,
    /// No frame given yet: nothing to expect out.
    idle: bool,
    /// The next frame given follows a gap.
    discont: bool,
    encoder: &'static str,
}

impl Ladder {
    /// Starts a pipeline making `rung` of H.264 with configuration `source`; `on_frame`
    /// gets each encoded frame.
    pub fn start(
        source: &H264Params,
        rung: &LadderRung,
        options: &LadderOptions,
        on_frame: Box<dyn FnMut(VideoFrame) + Send>,
    ) -> Result<Ladder, String> {
        check_rung(rung)?;
        crate::init().map_err(|e| e.to_string())?;
        let hardware = options.hardware.then(find_hardware).flatten();
        let on_frame = Arc::new(Mutex::new(on_frame));
        if let Some(hw) = hardware {
            match Ladder::launch(source, rung, options, hw, on_frame.clone()) {
                Ok(l) => return Ok(l),
                Err(e) => warn!(
                    encoder = hw,
                    "ladder: hardware encoder failed ({e}), using x264"
                ),
            }
        }
        Ladder::launch(source, rung, options, "x264enc", on_frame)
    }

    /// The encoder element it runs.
    pub fn encoder(&self) -> &'static str {
        self.encoder
    }

    fn launch(
        source: &H264Params,
        rung: &LadderRung,
        options: &LadderOptions,
        encoder: &'static str,
        on_frame: Shared<VideoFrame>,
    ) -> Result<Ladder, String> {
        let mut caps = gst::Caps::builder("video/x-h264")
            .field("stream-format", "avc")
            .field("alignment", "au")
            .field(
                "codec_data",
                gst::Buffer::from_slice(source.record.to_vec()),
            )
            .field("width", source.width as i32)
            .field("height", source.height as i32);
        if let Some(fps) = source.fps_milli {
            caps = caps.field("framerate", gst::Fraction::new(fps as i32, 1000));
        }
        let description = format!(
            "appsrc name=src format=time is-live=false do-timestamp=false \
             ! h264parse ! avdec_h264 name=dec max-threads={dec} \
             ! videoscale add-borders=true \
             ! capsfilter name=size caps=video/x-raw,width={w},height={h},pixel-aspect-ratio=1/1 \
             ! videoconvert ! {enc} \
             ! h264parse ! video/x-h264,stream-format=avc,alignment=au \
             ! appsink name=sink sync=false",
            dec = options.decoder_threads,
            w = rung.width,
            h = rung.height,
            enc = encoder_description(encoder, rung, options),
        );
        let fed = Fed::launch(
            &description,
            &caps.build(),
            MAX_QUEUED_BYTES,
            "video ladder",
        )?;
        keep_colours(&fed, rung)?;
        // Frames are dropped here, whole GOPs at a time, never by the appsrc.
        fed.src().set_leaky_type(gst_app::AppLeakyType::None);
        fed.src().set_max_buffers(MAX_QUEUED_FRAMES);
        let mut params: Option<Arc<H264Params>> = None;
        fed.sink("sink")?.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                    let record = sample
                        .caps()
                        .and_then(|c| c.structure(0))
                        .and_then(|s| s.get::<gst::Buffer>("codec_data").ok())
                        .and_then(|b| b.map_readable().ok().map(|m| Bytes::copy_from_slice(&m)))
                        .ok_or(gst::FlowError::Error)?;
                    if params.as_ref().is_none_or(|p| p.record != record) {
                        let p = H264Params::from_record(record).map_err(|e| {
                            warn!("ladder: the encoder's configuration: {e}");
                            gst::FlowError::Error
                        })?;
                        params = Some(Arc::new(p));
                    }
                    let params = params.clone().expect("set above");
                    let Some(pts) = buffer.pts() else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    // An encoder may shift its output; running time is the input's.
                    let running = sample
                        .segment()
                        .and_then(|s| s.downcast_ref::<gst::ClockTime>())
                        .and_then(|s| s.to_running_time(pts))
                        .unwrap_or(pts);
                    let pts = from_clock(running);
                    let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                    let mut data = BytesMut::with_capacity(map.len());
                    for nal in params.nal_units(&map) {
                        let nal = nal.map_err(|_| gst::FlowError::Error)?;
                        // Parameter sets live in `params`; delimiters carry nothing.
                        if nal.is_empty() || matches!(nal[0] & 0x1f, 7..=9) {
                            continue;
                        }
                        data.put_u32(nal.len() as u32);
                        data.put_slice(nal);
                    }
                    let frame = VideoFrame {
                        dts: pts,
                        pts,
                        keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                        data: data.freeze(),
                        params,
                    };
                    (on_frame.lock().unwrap_or_else(|e| e.into_inner()))(frame);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let fed = fed.play()?;
        info!(
            encoder,
            "video ladder rung {}x{} at {} kbit/s from {}x{}",
            rung.width,
            rung.height,
            rung.kbps,
            source.width,
            source.height
        );
        Ok(Ladder {
            fed,
            waiting: true,
            idle: true,
            discont: false,
            encoder,
        })
    }
}

/// Makes the small picture keep the source's colorimetry and chroma siting, as its size
/// would otherwise imply others (BT.601 below 577 lines, BT.709 above): the scaler would
/// then convert every pixel's colours too, costing twice what scaling does.
fn keep_colours(fed: &Fed, rung: &LadderRung) -> Result<(), String> {
    let element = |name: &str| fed.pipeline().by_name(name).ok_or(format!("no {name}"));
    let (dec, size) = (element("dec")?, element("size")?);
    let (width, height) = (rung.width as i32, rung.height as i32);
    dec.static_pad("src")
        .ok_or("decoder without a source pad")?
        .add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if let Some(gst::PadProbeData::Event(e)) = &info.data
                && let gst::EventView::Caps(c) = e.view()
                && let Some(s) = c.caps().structure(0)
            {
                let lines = s.get::<i32>("height").unwrap_or(0);
                // GStreamer's default where the caps say nothing (`set_default_colorimetry`).
                let colorimetry = s.get::<String>("colorimetry").unwrap_or_else(|_| {
                    match lines {
                        2160.. => "bt2020",
                        577.. => "bt709",
                        _ => "bt601",
                    }
                    .to_string()
                });
                let mut caps = gst::Caps::builder("video/x-raw")
                    .field("width", width)
                    .field("height", height)
                    .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                    .field("colorimetry", colorimetry);
                if let Ok(site) = s.get::<String>("chroma-site") {
                    caps = caps.field("chroma-site", site);
                }
                size.set_property("caps", caps.build());
            }
            gst::PadProbeReturn::Ok
        });
    Ok(())
}

/// The pipeline's time of `t` in `timescale` units, to the nearest nanosecond; `None` before
/// the pipeline's time 0.
fn to_clock(t: i64, timescale: u32) -> Option<gst::ClockTime> {
    let ts = timescale as i128;
    let ns = BASE_NS
        + (t as i128 * 1_000_000_000).div_euclid(ts)
        + i128::from((t as i128 * 1_000_000_000).rem_euclid(ts) * 2 >= ts);
    u64::try_from(ns).ok().map(gst::ClockTime::from_nseconds)
}

/// 90 kHz of a pipeline time, to the nearest: inverts [`to_clock`] exactly for 90 kHz (and
/// any timescale dividing it), as a nanosecond is far finer than a tick.
fn from_clock(t: gst::ClockTime) -> i64 {
    let ns = t.nseconds() as i128 - BASE_NS;
    (ns * TIMESCALE + 500_000_000).div_euclid(1_000_000_000) as i64
}

/// The event that makes the encoder start a keyframe at the picture of running time `t`
/// (`gst_video_event_new_downstream_force_key_unit`'s structure).
fn force_key_unit(t: gst::ClockTime) -> gst::Event {
    let ns = t.nseconds();
    let s = gst::Structure::builder("GstForceKeyUnit")
        .field("timestamp", ns)
        .field("stream-time", ns)
        .field("running-time", ns)
        .field("all-headers", true)
        .field("count", 0u32)
        .build();
    gst::event::CustomDownstream::new(s)
}

impl VideoEncoder for Ladder {
    fn push(&mut self, frame: &Frame, timescale: u32) -> Result<(), String> {
        let Some(pts) = (timescale > 0)
            .then(|| to_clock(frame.pts, timescale))
            .flatten()
        else {
            return Err(format!(
                "video ladder: bad timestamp {} at {timescale} Hz",
                frame.pts
            ));
        };
        if self.waiting && !frame.keyframe {
            return Ok(());
        }
        let src = self.fed.src();
        if src.current_level_bytes() + frame.data.len() as u64 > MAX_QUEUED_BYTES
            || src.current_level_buffers() >= MAX_QUEUED_FRAMES
        {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            if !self.waiting {
                warn!("video ladder: falling behind the lecture, dropping to the next keyframe");
            }
            self.waiting = true;
            self.discont = true;
            return Ok(());
        }
        if frame.keyframe && !src.send_event(force_key_unit(pts)) {
            return Err("video ladder: the keyframe request was refused".into());
        }
        let mut buffer = gst::Buffer::from_slice(frame.data.clone());
        {
            let b = buffer.get_mut().expect("new buffer is writable");
            b.set_pts(pts);
            b.set_dts(to_clock(frame.dts, timescale));
            if !frame.keyframe {
                b.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
            if self.discont {
                b.set_flags(gst::BufferFlags::DISCONT);
            }
        }
        self.waiting = false;
        self.idle = false;
        self.discont = false;
        src.push_buffer(buffer)
            .map(|_| ())
            .map_err(|e| format!("video ladder: {e:?}"))
    }
}

impl Watched for Ladder {
    fn fault(&self) -> Option<String> {
        self.fed.fault()
    }

    fn idle(&self) -> bool {
        self.idle
    }
}

/// A rung under `watchdog`: a pipeline that fails or stalls is started again, fed from the
/// next keyframe on. A hardware encoder that put out nothing before it had to go is not
/// used again; x264 takes over.
pub(crate) fn supervised(
    watchdog: Watchdog,
    source: &H264Params,
    rung: &LadderRung,
    options: &LadderOptions,
    on_frame: Box<dyn FnMut(VideoFrame) + Send>,
) -> Result<Supervised<Ladder>, String> {
    let (source, rung, on_frame) = (source.clone(), *rung, Arc::new(Mutex::new(on_frame)));
    let hardware_ok = Arc::new(AtomicBool::new(options.hardware));
    // The last pipeline: on hardware, and the output count when it started.
    let mut last: Option<(bool, u64)> = None;
    let options = *options;
    Supervised::start("video ladder", watchdog, move |n: Arc<AtomicU64>| {
        let now = n.load(Ordering::Relaxed);
        if let Some((true, at)) = last
            && at == now
            && hardware_ok.swap(false, Ordering::Relaxed)
        {
            warn!("video ladder: the hardware encoder made nothing; x264 from now on");
        }
        let options = LadderOptions {
            hardware: hardware_ok.load(Ordering::Relaxed),
            ..options
        };
        let ladder = Ladder::start(&source, &rung, &options, counted(&on_frame, n))?;
        last = Some((ladder.encoder != "x264enc", now));
        Ok(ladder)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_video::{SourceVideo, ffmpeg_source, luma, sized_source, source};
    use media::encode::Transcoders;
    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};

    const RUNG: LadderRung = LadderRung {
        width: 640,
        height: 360,
        kbps: 400,
    };

    type Out = Arc<Mutex<Vec<VideoFrame>>>;

    fn collector() -> (Out, Box<dyn FnMut(VideoFrame) + Send>) {
        let out: Out = Arc::default();
        let o = out.clone();
        (out, Box::new(move |f| o.lock().unwrap().push(f)))
    }

    /// Waits up to `secs` for `n` frames out.
    fn wait_for(out: &Out, n: usize, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while out.lock().unwrap().len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Feeds `frames`, never more than 30 ahead of what came out (the lecture's pace is
    /// not the test's), `shift` added to their times.
    fn feed(enc: &mut dyn VideoEncoder, out: &Out, frames: &[Frame], shift: i64) {
        let base = out.lock().unwrap().len();
        for (i, f) in frames.iter().enumerate() {
            wait_for(out, (base + i).saturating_sub(30), 20);
            let mut f = f.clone();
            f.pts += shift;
            f.dts += shift;
            enc.push(&f, 90_000).unwrap();
        }
    }

    fn keyframes(frames: &[Frame]) -> BTreeSet<i64> {
        frames
            .iter()
            .filter(|f| f.keyframe)
            .map(|f| f.pts)
            .collect()
    }

    /// The checks every rung's output passes: its picture, and keyframes true and aligned.
    fn check_frames(src: &SourceVideo, out: &[VideoFrame]) {
        let p = &out[0].params;
        assert_eq!((p.width, p.height), (640, 360));
        assert!(out.iter().all(|f| Arc::ptr_eq(&f.params, p)));
        for f in out {
            assert_eq!(f.dts, f.pts);
            // The flag tells the truth, parameter sets are not in the frames.
            assert_eq!(p.is_idr(&f.data).unwrap(), f.keyframe, "at {}", f.pts);
            assert!(
                p.nal_units(&f.data)
                    .all(|n| !matches!(n.unwrap()[0] & 0x1f, 7..=9))
            );
        }
        assert!(out.windows(2).all(|w| w[1].pts > w[0].pts));
        let ours = keyframes(&src.frames);
        for f in out.iter().filter(|f| f.keyframe) {
            assert!(ours.contains(&f.pts), "a keyframe of our own at {}", f.pts);
        }
    }

    #[test]
    fn a_rung_has_the_sources_keyframes_and_times_at_its_own_size_and_rate() {
        let src = source(10, 25, 900_000);
        // The source reorders (B-frames), and its keyframes come every second.
        assert!(src.frames.iter().any(|f| f.pts != f.dts));
        let input_keys = keyframes(&src.frames);
        assert_eq!(input_keys.len(), 10, "{input_keys:?}");
        let (out, on_frame) = collector();
        let transcoders = crate::opus::GstTranscoders::default();
        let mut enc = transcoders
            .video_rung(&src.params, &RUNG, on_frame)
            .unwrap();
        feed(enc.as_mut(), &out, &src.frames, 0);
        // The decoder holds the source's last frames until it has their successors.
        wait_for(&out, src.frames.len() - 3, 20);
        drop(enc);
        let out = out.lock().unwrap().clone();
        check_frames(&src, &out);
        // Each source frame made one picture, with its presentation time exactly (the last
        // few may still be in the encoder when it stops).
        let want: BTreeSet<i64> = src.frames.iter().map(|f| f.pts).collect();
        let got: BTreeSet<i64> = out.iter().map(|f| f.pts).collect();
        assert!(got.is_subset(&want));
        let missing: Vec<&i64> = want.difference(&got).collect();
        assert!(
            missing.len() <= 3 && missing.iter().all(|&&t| t > 900_000 + 9 * 90_000),
            "missing {missing:?}"
        );
        // A keyframe exactly at each of the source's, nowhere else.
        assert_eq!(keyframes_out(&out), input_keys);
        // The source's colours, though its size would imply BT.601's.
        let (.., colorimetry) = luma(&out[0].params, &out[0].data);
        assert_eq!(colorimetry.as_deref(), Some("bt709"));
        // About the rate asked for: at most twice 400 kbit/s over the 10 s.
        let bits: usize = out.iter().map(|f| f.data.len() * 8).sum();
        let kbps = bits as f64 / 10.0 / 1000.0;
        eprintln!(
            "{} of {} frames out, {kbps:.0} kbit/s",
            out.len(),
            src.frames.len()
        );
        assert!(kbps < 800.0 && kbps > 40.0, "{kbps:.0} kbit/s");
    }

    fn keyframes_out(out: &[VideoFrame]) -> BTreeSet<i64> {
        out.iter().filter(|f| f.keyframe).map(|f| f.pts).collect()
    }

    #[test]
    fn a_ladder_behind_the_lecture_drops_whole_gops() {
        let src = source(8, 25, 0);
        let (out, on_frame) = collector();
        let mut enc =
            Ladder::start(&src.params, &RUNG, &LadderOptions::default(), on_frame).unwrap();
        let dropped = dropped_frames_total();
        // All at once: far faster than it encodes, so its queue fills.
        for f in &src.frames {
            enc.push(f, 90_000).unwrap();
        }
        assert!(dropped_frames_total() > dropped);
        // What it took comes out: until nothing more does.
        let mut n = 0;
        loop {
            std::thread::sleep(Duration::from_millis(1500));
            let now = out.lock().unwrap().len();
            if now == n {
                break;
            }
            n = now;
        }
        drop(enc);
        let out = out.lock().unwrap().clone();
        check_frames(&src, &out);
        assert!(out.len() < src.frames.len() - 25, "{} out", out.len());
        // Each GOP that came out at all starts at its keyframe: the decoder never lost a
        // picture's references.
        let gop_of = |pts: i64| {
            keyframes(&src.frames)
                .range(..=pts)
                .next_back()
                .copied()
                .unwrap()
        };
        let gops: BTreeSet<i64> = out.iter().map(|f| gop_of(f.pts)).collect();
        assert!(gops.len() >= 2, "{gops:?}");
        for g in &gops {
            let first = out.iter().find(|f| gop_of(f.pts) == *g).unwrap();
            assert!(
                first.keyframe && first.pts == *g,
                "GOP {g} starts at {}",
                first.pts
            );
        }
        assert_eq!(keyframes_out(&out), gops);
    }

    #[test]
    fn a_broken_rung_is_restarted_and_goes_on_from_the_next_keyframe() {
        let src = source(4, 25, 0);
        let (out, on_frame) = collector();
        let watchdog = Watchdog {
            stall: Duration::from_secs(2),
            max_restarts_per_minute: 6,
        };
        let mut enc = supervised(
            watchdog,
            &src.params,
            &RUNG,
            &LadderOptions::default(),
            on_frame,
        )
        .unwrap();
        // The lecture starts between keyframes: nothing until the first one.
        feed(&mut enc, &out, &src.frames[10..], 0);
        wait_for(&out, 72, 20);
        let before = out.lock().unwrap().len();
        assert!(before >= 72, "{before} frames");
        assert_eq!(out.lock().unwrap()[0].pts, src.frames[25].pts);
        // Then damage, at the lecture's pace, until the watchdog gives up on the pipeline.
        let mut t = 4 * 90_000;
        let mut n = 0u32;
        while enc.last_fault().is_none() && n < 400 {
            let mut data = vec![0, 0, 0, 0, 0x41];
            data.extend((0..2000u32).map(|i| (i.wrapping_mul(2_654_435_761) ^ n) as u8));
            let len = (data.len() - 4) as u32;
            data[..4].copy_from_slice(&len.to_be_bytes());
            let garbage = Frame {
                dts: t,
                pts: t,
                keyframe: false,
                data: Bytes::from(data),
            };
            enc.push(&garbage, 90_000).unwrap();
            t += 3600;
            n += 1;
            std::thread::sleep(Duration::from_millis(40));
        }
        let fault = enc.last_fault().map(str::to_string);
        assert!(fault.is_some(), "no restart after {n} damaged frames");
        let broken = out.lock().unwrap().len();
        eprintln!("fault after {n} damaged frames: {fault:?}");
        // The lecture goes on mid-GOP, at its pace (the restart waits its backoff).
        let resume = (t / 90_000 + 1) * 90_000;
        for f in &src.frames[5..] {
            let mut f = f.clone();
            f.pts += resume;
            f.dts += resume;
            enc.push(&f, 90_000).unwrap();
            std::thread::sleep(Duration::from_millis(40));
        }
        wait_for(&out, broken + 25, 10);
        drop(enc);
        let out = out.lock().unwrap();
        let after = &out[broken..];
        assert!(after.len() >= 25, "{} frames after {fault:?}", after.len());
        // It starts at a keyframe of the source after the damage, with its time.
        let keys: BTreeSet<i64> = src
            .frames
            .iter()
            .filter(|f| f.keyframe)
            .map(|f| f.pts + resume)
            .collect();
        assert!(after[0].keyframe, "{fault:?}");
        assert!(keys.contains(&after[0].pts), "resumed at {}", after[0].pts);
        assert_eq!(
            keyframes_out(after),
            keys.range(after[0].pts..)
                .copied()
                .filter(|&k| k <= after.last().unwrap().pts)
                .collect()
        );
        assert_eq!(after[0].params.width, 640);
    }

    #[test]
    fn a_four_by_three_source_keeps_its_shape_between_black_borders() {
        let src = sized_source(2, 25, 0, 640, 480);
        let (out, on_frame) = collector();
        let mut enc =
            Ladder::start(&src.params, &RUNG, &LadderOptions::default(), on_frame).unwrap();
        feed(&mut enc, &out, &src.frames, 0);
        wait_for(&out, 30, 20);
        drop(enc);
        let out = out.lock().unwrap().clone();
        check_frames(&src, &out);
        let (w, h, y, _) = luma(&out[0].params, &out[0].data);
        assert_eq!((w, h), (640, 360));
        // 480x360 of picture in the middle, 80 columns of black each side.
        let at = |x: usize, row: usize| y[row * w + x];
        for row in [10, 180, 350] {
            assert!(
                at(20, row) < 24 && at(620, row) < 24,
                "no border in row {row}"
            );
            assert!(
                at(100, row) > 40 && at(540, row) > 40,
                "border in the picture, row {row}"
            );
        }
        assert!((0..h).all(|row| at(320, row) > 24), "letterboxed instead");
    }

    #[test]
    fn times_go_through_the_pipeline_clock_exactly() {
        for t in (-200_000i64..200_000)
            .step_by(7)
            .chain([0, 1, 3600, i64::from(u32::MAX) * 3])
        {
            assert_eq!(from_clock(to_clock(t, 90_000).unwrap()), t);
            assert_eq!(from_clock(to_clock(t, 1000).unwrap()), t * 90);
        }
        // Before the pipeline's time 0 (1000 h before the lecture's).
        assert!(to_clock(-1000 * 3600 * 90_000 - 1, 90_000).is_none());
    }

    #[test]
    fn rungs_a_pipeline_cannot_make_are_refused() {
        let src = H264Params::from_sps_pps(
            &[
                0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00,
                0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x83, 0x19, 0x60,
            ],
            &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0],
        )
        .unwrap();
        let transcoders = crate::opus::GstTranscoders::default();
        for (width, height, kbps) in [
            (641, 360, 400),
            (640, 0, 400),
            (8000, 360, 400),
            (640, 360, 0),
        ] {
            let rung = LadderRung {
                width,
                height,
                kbps,
            };
            let e = transcoders.video_rung(&src, &rung, Box::new(|_| {})).err();
            assert!(e.is_some_and(|e| e.starts_with("ladder rung")), "{rung:?}");
        }
    }

    #[test]
    fn a_source_declaring_no_colours_keeps_those_its_size_implies() {
        let src = ffmpeg_source(2);
        assert_eq!(src.frames.len(), 50);
        assert_eq!(keyframes(&src.frames).len(), 2);
        let (out, on_frame) = collector();
        let mut enc =
            Ladder::start(&src.params, &RUNG, &LadderOptions::default(), on_frame).unwrap();
        feed(&mut enc, &out, &src.frames, 0);
        wait_for(&out, 49, 20);
        drop(enc);
        let out = out.lock().unwrap().clone();
        check_frames(&src, &out);
        assert_eq!(keyframes_out(&out), keyframes(&src.frames));
        // 720 lines mean BT.709; 360 would mean BT.601, and converting every pixel to it
        // costs more than the scaling.
        let (.., colorimetry) = luma(&out[0].params, &out[0].data);
        assert_eq!(colorimetry.as_deref(), Some("bt709"));
    }
}
