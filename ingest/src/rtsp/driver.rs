//! Pulls each configured camera (one tokio task per `[[camera]]`) with retina and publishes
//! it as its lecture, while the camera's pull mode says it is wanted; reconnects with
//! backoff when it fails.
//!
//! retina has no timeouts of its own on DESCRIBE/SETUP/PLAY and none on a camera that stops
//! sending: every step here is bounded (`rtsp.step_timeout_ms`, `rtsp.stall_timeout_ms`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use config::{CameraConfig, Config, PullMode, RtspTransport};
use futures_util::StreamExt;
use media::encode::{AacFrame, AudioEncoder, AudioSource, G711Law, Transcoders};
use media::sink::{MediaSink, Publish, PublishRequest, TransportStats};
use media::{Language, MediaEvent};
use retina::client::{
    Credentials, PlayOptions, Session, SessionGroup, SessionOptions, SetupOptions, Transport,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tracing::{info, warn};

use super::to_media::RtspToMedia;

/// Repeated identical connection errors are logged at most this often.
const REPEAT_LOG: Duration = Duration::from_secs(60);
/// A session that lasted this long resets the backoff.
const HEALTHY: Duration = Duration::from_secs(30);
/// How long a `scheduled` camera runs when its lecture has no `ends_at`.
const DEFAULT_SCHEDULED_RUN: Duration = Duration::from_secs(4 * 3600);

/// The running camera tasks; dropping this stops them.
pub struct Cameras {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Cameras {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts one task per configured camera.
pub fn start(
    config: Arc<Config>,
    publish: Arc<dyn Publish>,
    transcoders: Arc<dyn Transcoders>,
) -> Cameras {
    let tasks = config
        .camera
        .iter()
        .cloned()
        .map(|cam| {
            tokio::spawn(run_camera(
                cam,
                config.clone(),
                publish.clone(),
                transcoders.clone(),
            ))
        })
        .collect();
    Cameras { tasks }
}

/// The URL without credentials, and the credentials (from the URL or the config).
pub fn split_credentials(cam: &CameraConfig) -> Result<(url::Url, Option<Credentials>), String> {
    let mut url = url::Url::parse(&cam.url).map_err(|e| format!("bad camera URL: {e}"))?;
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let from_url = (!url.username().is_empty()).then(|| Credentials {
        username: decode(url.username()),
        password: decode(url.password().unwrap_or("")),
    });
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let creds = match (&cam.username, from_url) {
        (Some(u), _) => Some(Credentials {
            username: u.clone(),
            password: cam.password.clone().unwrap_or_default(),
        }),
        (None, c) => c,
    };
    Ok((url, creds))
}

/// Whether the camera should be pulled now.
fn wanted(cam: &CameraConfig, config: &Config, publish: &dyn Publish) -> bool {
    match cam.pull {
        PullMode::Always => true,
        PullMode::OnDemand => publish.wanted(
            &cam.lecture,
            Duration::from_secs(config.rtsp.idle_stop_s.max(1)),
        ),
        PullMode::Scheduled => {
            let Some(l) = config.lecture(&cam.lecture) else {
                return false;
            };
            let Some(start) = l.starts_at else {
                return false;
            };
            let now = jiff::Timestamp::now();
            let lead = jiff::SignedDuration::from_secs(config.rtsp.schedule_lead_s as i64);
            let run = jiff::SignedDuration::from_secs(DEFAULT_SCHEDULED_RUN.as_secs() as i64);
            let end = l
                .ends_at
                .unwrap_or_else(|| start.checked_add(run).unwrap_or(start));
            start.checked_sub(lead).is_ok_and(|s| now >= s) && now < end
        }
    }
}

async fn run_camera(
    cam: CameraConfig,
    config: Arc<Config>,
    publish: Arc<dyn Publish>,
    transcoders: Arc<dyn Transcoders>,
) {
    let (url, creds) = match split_credentials(&cam) {
        Ok(x) => x,
        Err(e) => {
            warn!(lecture = %cam.lecture, "camera not pulled: {e}");
            return;
        }
    };
    let group = Arc::new(SessionGroup::default());
    let min = Duration::from_millis(config.rtsp.min_backoff_ms);
    let max = Duration::from_millis(config.rtsp.max_backoff_ms);
    let mut backoff = min;
    let mut last_error: Option<(String, Instant, u64)> = None;
    loop {
        while !wanted(&cam, &config, publish.as_ref()) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let began = Instant::now();
        let result = pull(
            &cam,
            &url,
            creds.clone(),
            &group,
            &config,
            publish.as_ref(),
            transcoders.as_ref(),
        )
        .await;
        match result {
            Ok(why) => {
                info!(lecture = %cam.lecture, camera = %url, "camera session ended: {why}");
                last_error = None;
            }
            Err(e) => {
                let repeat = last_error.as_mut().filter(|(m, _, _)| *m == e);
                match repeat {
                    Some((_, at, n)) => {
                        *n += 1;
                        if at.elapsed() >= REPEAT_LOG {
                            warn!(lecture = %cam.lecture, camera = %url, "camera still failing ({n} attempts): {e}");
                            *at = Instant::now();
                        }
                    }
                    None => {
                        warn!(lecture = %cam.lecture, camera = %url, "camera: {e}; retrying");
                        last_error = Some((e, Instant::now(), 1));
                    }
                }
            }
        }
        if began.elapsed() >= HEALTHY {
            backoff = min;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(max);
    }
}

/// What the camera's audio is and how it gets to AAC.
enum Audio {
    Aac(usize),
    G711(usize, G711Law, u32, u8),
}

/// One camera session: connect, publish, relay frames until it fails or is no longer
/// wanted. `Ok` carries why it ended normally.
async fn pull(
    cam: &CameraConfig,
    url: &url::Url,
    creds: Option<Credentials>,
    group: &Arc<SessionGroup>,
    config: &Config,
    publish: &dyn Publish,
    transcoders: &dyn Transcoders,
) -> Result<&'static str, String> {
    let step = Duration::from_millis(config.rtsp.step_timeout_ms);
    let stall = Duration::from_millis(config.rtsp.stall_timeout_ms);
    // Sessions of ours the camera may still hold (retina tears down in the background).
    let stale = group.stale_sessions();
    let _ = timeout(step, group.await_stale_sessions(&stale)).await;
    let opts = SessionOptions::default()
        .creds(creds)
        .user_agent(format!("jiangtang/{}", env!("CARGO_PKG_VERSION")))
        .session_group(group.clone());
    let mut session = timeout(step, Session::describe(url.clone(), opts))
        .await
        .map_err(|_| format!("no answer to DESCRIBE within {step:?}"))?
        .map_err(|e| format!("DESCRIBE failed: {}", first_line(&e.to_string())))?;
    let mut video = None;
    let mut audio = None;
    let mut offered = Vec::new();
    for (i, s) in session.streams().iter().enumerate() {
        offered.push(format!("{}/{}", s.media(), s.encoding_name()));
        match (s.media(), s.encoding_name()) {
            ("video", "h264") if video.is_none() => video = Some(i),
            ("audio", "mpeg4-generic") if audio.is_none() => audio = Some(Audio::Aac(i)),
            ("audio", enc @ ("pcmu" | "pcma")) if audio.is_none() => {
                let law = if enc == "pcmu" {
                    G711Law::Mu
                } else {
                    G711Law::A
                };
                let ch = s.channels().map_or(1, |c| c.get().min(2) as u8);
                audio = Some(Audio::G711(i, law, s.clock_rate_hz(), ch));
            }
            _ => {}
        }
    }
    if video.is_none() && audio.is_none() {
        return Err(format!(
            "the camera offers no H.264 video, AAC or G.711 audio (it offers {})",
            offered.join(", ")
        ));
    }
    let audio_index = audio.as_ref().map(|a| match a {
        Audio::Aac(i) | Audio::G711(i, ..) => *i,
    });
    for i in video.into_iter().chain(audio_index) {
        let transport = match cam.transport {
            RtspTransport::Tcp => Transport::Tcp(Default::default()),
            RtspTransport::Udp => Transport::Udp(Default::default()),
        };
        timeout(
            step,
            session.setup(
                i,
                SetupOptions::default()
                    .transport(transport)
                    .frame_format(FrameFormat::MP4),
            ),
        )
        .await
        .map_err(|_| format!("no answer to SETUP within {step:?}"))?
        .map_err(|e| format!("SETUP failed: {}", first_line(&e.to_string())))?;
    }
    let playing = timeout(step, session.play(PlayOptions::default()))
        .await
        .map_err(|_| format!("no answer to PLAY within {step:?}"))?
        .map_err(|e| format!("PLAY failed: {}", first_line(&e.to_string())))?;
    let mut demuxed = playing
        .demuxed()
        .map_err(|e| format!("cannot demux: {}", first_line(&e.to_string())))?;

    let language = cam
        .language
        .as_deref()
        .and_then(|l| Language::parse(l).ok());
    let key = config
        .lecture(&cam.lecture)
        .and_then(|l| l.publish_key.clone());
    let mut sink = publish
        .publish(PublishRequest {
            stream: cam.lecture.clone(),
            key,
            language: language.clone(),
            protocol: "rtsp",
            remote: None,
        })
        .map_err(|e| format!("cannot publish: {e}"))?;
    info!(lecture = %cam.lecture, camera = %url, streams = %offered.join(", "), "camera connected");

    let mut mapper = RtspToMedia::new(language);
    let send = |sink: &mut Box<dyn MediaSink>, e: MediaEvent| {
        sink.handle(e)
            .map_err(|e| format!("relay refused the camera's media: {e}"))
    };
    // The configuration the SDP already gave.
    if let Some(i) = video
        && let Some(ParametersRef::Video(p)) = demuxed.streams()[i].parameters()
        && let Some(ev) = mapper
            .video_config(p.extra_data())
            .map_err(|e| e.to_string())?
    {
        send(&mut sink, ev)?;
    }
    let (aac_tx, mut aac_rx) = mpsc::channel::<AacFrame>(256);
    let mut encoder: Option<Box<dyn AudioEncoder>> = None;
    let mut aac_announced = false;
    match &audio {
        Some(Audio::Aac(i)) => {
            if let Some(ParametersRef::Audio(p)) = demuxed.streams()[*i].parameters()
                && let Some(ev) = mapper
                    .aac_config(p.extra_data())
                    .map_err(|e| e.to_string())?
            {
                send(&mut sink, ev)?;
            }
        }
        Some(Audio::G711(_, law, rate, channels)) => {
            let tx = aac_tx.clone();
            encoder = Some(transcoders.to_aac(
                &AudioSource::G711 {
                    law: *law,
                    rate: *rate,
                    channels: *channels,
                },
                Box::new(move |f| {
                    let _ = tx.try_send(f);
                }),
            )?);
        }
        None => {}
    }
    drop(aac_tx);

    let mut lost: u64 = 0;
    let mut received: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // One deadline, pushed back by each frame from the camera (not by the transcoder's
    // output or the tick, which would keep a hung camera alive for ever).
    let stalled = tokio::time::sleep(stall);
    tokio::pin!(stalled);
    loop {
        tokio::select! {
            () = &mut stalled => {
                return Err(format!("no frame from the camera for {stall:?}"));
            }
            item = demuxed.next() => {
                if let Some(Ok(CodecItem::VideoFrame(_) | CodecItem::AudioFrame(_))) = &item {
                    stalled.as_mut().reset(tokio::time::Instant::now() + stall);
                }
                match item {
                    None => return Err("the camera closed the session".into()),
                    Some(Err(e)) => return Err(first_line(&e.to_string())),
                    Some(Ok(CodecItem::VideoFrame(f))) => {
                        received += 1;
                        lost += f.loss() as u64;
                        if f.has_new_parameters()
                            && let Some(ParametersRef::Video(p)) = demuxed.streams()[f.stream_id()].parameters()
                            && let Some(ev) = mapper.video_config(p.extra_data()).map_err(|e| e.to_string())?
                        {
                            send(&mut sink, ev)?;
                        }
                        let ts = f.timestamp();
                        let (key, loss) = (f.is_random_access_point(), f.loss());
                        if let Some(ev) = mapper.video(ts.elapsed(), ts.clock_rate().get(), key, loss, Bytes::from(f.into_data())) {
                            send(&mut sink, ev)?;
                        }
                    }
                    Some(Ok(CodecItem::AudioFrame(f))) => {
                        received += 1;
                        lost += f.loss() as u64;
                        let ts = f.timestamp();
                        match &audio {
                            Some(Audio::Aac(_)) => {
                                if let Some(ev) = mapper.aac(ts.elapsed(), ts.clock_rate().get(), Bytes::copy_from_slice(f.data())) {
                                    send(&mut sink, ev)?;
                                }
                            }
                            Some(Audio::G711(..)) => {
                                if let Some(e) = encoder.as_mut()
                                    && let Err(err) = e.push(ts.elapsed().max(0), ts.clock_rate().get(), f.data())
                                {
                                    sink.input_error(format!("G.711 transcoding: {err}"));
                                }
                            }
                            None => {}
                        }
                    }
                    Some(Ok(_)) => {}
                }
            }
            Some(frame) = aac_rx.recv() => {
                if !aac_announced {
                    aac_announced = true;
                    let ev = mapper.audio_track(frame.params.clone());
                    send(&mut sink, ev)?;
                }
                if let Some(ev) = mapper.aac(frame.pts, frame.params.sample_rate, frame.data) {
                    send(&mut sink, ev)?;
                }
            }
            _ = tick.tick() => {
                sink.transport(TransportStats {
                    packets_received: received,
                    packets_lost: lost,
                    ..Default::default()
                });
                if !wanted(cam, config, publish) {
                    return Ok("no longer wanted");
                }
            }
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cam(url: &str, user: Option<&str>) -> CameraConfig {
        CameraConfig {
            lecture: "cam".into(),
            url: url.into(),
            username: user.map(str::to_string),
            password: Some("pw".into()),
            transport: RtspTransport::Tcp,
            pull: PullMode::Always,
            language: None,
        }
    }

    #[test]
    fn credentials_come_out_of_the_url() {
        let (u, c) =
            split_credentials(&cam("rtsp://ad%40min:p%3Ass@10.0.0.5:554/s1", None)).unwrap();
        assert_eq!(u.as_str(), "rtsp://10.0.0.5:554/s1");
        let c = c.unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("ad@min", "p:ss")
        );
        let (u, c) = split_credentials(&cam("rtsp://10.0.0.5/s1", Some("admin"))).unwrap();
        assert_eq!(u.as_str(), "rtsp://10.0.0.5/s1");
        assert_eq!(c.unwrap().password, "pw");
        assert!(
            split_credentials(&cam("rtsp://10.0.0.5/s1", None))
                .unwrap()
                .1
                .is_none()
        );
        assert!(split_credentials(&cam("not a url", None)).is_err());
    }
}
