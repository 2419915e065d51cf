//! The demo lecture: GStreamer test sources encoded to H.264 and AAC, published into the
//! relay like any other input (protocol `demo`).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use media::aac::AacParams;
use media::h264::H264Params;
use media::sink::{MediaSink, Publish, PublishRequest};
use media::{CodecParams, Frame, Language, MediaEvent, TrackId, TrackInfo};
use tracing::{error, info, warn};

/// Errors starting the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// GStreamer is missing or an element is not installed.
    #[error("GStreamer: {0}")]
    Gst(String),
    /// The relay refused the publish.
    #[error("publish refused: {0}")]
    Publish(String),
    /// A bad language tag in `demo.tones`.
    #[error("{0}")]
    Language(String),
}

/// A running demo lecture; dropping it stops the pipeline.
pub struct DemoLecture {
    pipeline: gst::Pipeline,
}

impl Drop for DemoLecture {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// The pipeline description, one video and one tone branch per dialect.
pub fn pipeline_description(cfg: &config::DemoConfig) -> String {
    let mut d = format!(
        "videotestsrc is-live=true pattern=smpte horizontal-speed=3 \
         ! video/x-raw,width={w},height={h},framerate={fps}/1 \
         ! textoverlay text=\"jiangtang demo lecture\" valignment=top halignment=left font-desc=\"Sans 24\" shaded-background=true \
         ! clockoverlay time-format=\"%Y-%m-%d %H:%M:%S\" valignment=bottom halignment=right font-desc=\"Sans 32\" shaded-background=true \
         ! x264enc tune=zerolatency speed-preset=veryfast key-int-max={gop} bitrate={kbps} \
         ! video/x-h264,profile=main ! h264parse \
         ! video/x-h264,stream-format=avc,alignment=au ! appsink name=video sync=false max-buffers=100 drop=false",
        w = cfg.width,
        h = cfg.height,
        fps = cfg.fps,
        gop = cfg.keyframe_interval,
        kbps = cfg.video_kbps,
    );
    for (i, (_, hz)) in cfg.tones.iter().enumerate() {
        d.push_str(&format!(
            " audiotestsrc is-live=true wave=sine freq={hz} volume=0.25 \
             ! audio/x-raw,rate=48000,channels=2 ! voaacenc bitrate=96000 ! aacparse \
             ! audio/mpeg,mpegversion=4,stream-format=raw ! appsink name=audio{i} sync=false max-buffers=200 drop=false"
        ));
    }
    d
}

/// Starts the demo lecture and publishes it through `publish`.
pub fn start(
    cfg: &config::DemoConfig,
    publish: Arc<dyn Publish>,
) -> Result<DemoLecture, DemoError> {
    crate::init().map_err(|e| DemoError::Gst(e.to_string()))?;
    let languages = cfg
        .tones
        .keys()
        .map(|k| Language::parse(k).map_err(|e| DemoError::Language(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let pipeline = gst::parse::launch(&pipeline_description(cfg))
        .map_err(|e| DemoError::Gst(e.to_string()))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| DemoError::Gst("not a pipeline".into()))?;
    let sink = publish
        .publish(PublishRequest {
            stream: cfg.name.clone(),
            key: None,
            language: None,
            protocol: "demo",
            remote: None,
        })
        .map_err(|e| DemoError::Publish(e.to_string()))?;
    let sink: Arc<Mutex<Box<dyn MediaSink>>> = Arc::new(Mutex::new(sink));

    connect(&pipeline, "video", TrackId(0), None, sink.clone())?;
    for (i, lang) in languages.into_iter().enumerate() {
        connect(
            &pipeline,
            &format!("audio{i}"),
            TrackId(1 + i as u32),
            Some(lang),
            sink.clone(),
        )?;
    }
    let bus = pipeline
        .bus()
        .ok_or_else(|| DemoError::Gst("no bus".into()))?;
    let weak = pipeline.downgrade();
    bus.set_sync_handler(move |_, msg| {
        if let gst::MessageView::Error(e) = msg.view() {
            error!("demo lecture pipeline: {} ({:?})", e.error(), e.debug());
            if let Some(p) = weak.upgrade() {
                // Stopping from a streaming thread must not block it: do it elsewhere.
                std::thread::spawn(move || {
                    let _ = p.set_state(gst::State::Null);
                });
            }
        }
        gst::BusSyncReply::Drop
    });
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| DemoError::Gst(format!("cannot start: {e}")))?;
    info!(stream = %cfg.name, "demo lecture started");
    Ok(DemoLecture { pipeline })
}

fn connect(
    pipeline: &gst::Pipeline,
    name: &str,
    track: TrackId,
    language: Option<Language>,
    sink: Arc<Mutex<Box<dyn MediaSink>>>,
) -> Result<(), DemoError> {
    let appsink = pipeline
        .by_name(name)
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| DemoError::Gst(format!("no appsink {name}")))?;
    let mut announced: Option<Bytes> = None;
    let mut timescale = 90_000u32;
    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let caps = sample.caps().ok_or(gst::FlowError::Error)?;
                let structure = caps.structure(0).ok_or(gst::FlowError::Error)?;
                let codec_data = structure
                    .get::<gst::Buffer>("codec_data")
                    .ok()
                    .and_then(|b| b.map_readable().ok().map(|m| Bytes::copy_from_slice(&m)));
                let mut out = sink.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(cd) = codec_data
                    && announced.as_ref() != Some(&cd)
                {
                    let codec = if language.is_some() {
                        AacParams::from_config(cd.clone())
                            .map(CodecParams::Aac)
                            .map_err(|e| e.to_string())
                    } else {
                        H264Params::from_record(cd.clone())
                            .map(CodecParams::H264)
                            .map_err(|e| e.to_string())
                    };
                    match codec {
                        Ok(codec) => {
                            let mut info = TrackInfo::new(codec);
                            info.language = language.clone();
                            timescale = info.timescale;
                            if let Err(e) = out.handle(MediaEvent::Track { id: track, info }) {
                                warn!("demo track refused: {e}");
                                return Err(gst::FlowError::Error);
                            }
                            announced = Some(cd);
                        }
                        Err(e) => {
                            warn!("demo codec data: {e}");
                            return Err(gst::FlowError::Error);
                        }
                    }
                }
                if announced.is_none() {
                    return Ok(gst::FlowSuccess::Ok);
                }
                let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                let Some(pts) = buffer.pts() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let dts = buffer.dts().unwrap_or(pts);
                // Buffer timestamps are relative to the stream's segment (x264enc's starts at
                // 1000 h to keep DTS positive); running time is what all branches share.
                let segment = sample
                    .segment()
                    .and_then(|s| s.downcast_ref::<gst::ClockTime>().cloned());
                let running = |t: gst::ClockTime| -> i64 {
                    match &segment {
                        Some(seg) => match seg.to_running_time_full(t) {
                            Some(v) => v.positive().map_or_else(
                                || -(v.negative().map_or(0, |n| n.nseconds() as i64)),
                                |p| p.nseconds() as i64,
                            ),
                            None => t.nseconds() as i64,
                        },
                        None => t.nseconds() as i64,
                    }
                };
                let to_ts = |t: gst::ClockTime| {
                    (running(t) as i128 * timescale as i128 / 1_000_000_000) as i64
                };
                let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                let frame = Frame {
                    dts: to_ts(dts),
                    pts: to_ts(pts),
                    keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                    data: Bytes::copy_from_slice(&map),
                };
                out.handle(MediaEvent::Frame { track, frame })
                    .map_err(|_| gst::FlowError::Error)?;
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    Ok(())
}
