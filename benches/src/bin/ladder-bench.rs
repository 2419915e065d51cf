//! What the video ladder costs a lecture: the CPU of one rung (640x360 at 400 kbit/s by
//! default) made from the benchmarks' lecture (1280x720 25 fps H.264 at `--kbps`, x264's
//! B-frames unless `--no-bframes`, a keyframe every 2 s, encoded by ffmpeg), fed at the
//! lecture's pace, as jiangtang runs it (`transcode::ladder`: avdec_h264, videoscale,
//! x264enc veryfast/zerolatency) with one
//! thread each for the decoder and x264 (the default) and with their own thread counts,
//! and, in the same run, ffmpeg doing the same job (libx264, same settings).
//!
//! The figure is CPU seconds of the process per second of video (the share of one core a
//! lecture's rung costs), less what feeding the same frames to nothing costs; also the
//! delay the rung adds (from a frame going in to its picture coming out) and what comes
//! out (frames, keyframes on the source's, bitrate).
//!
//!     cargo run --release --locked -p benches --bin ladder-bench -- --seconds 60
//!     cargo run --release --locked -p benches --bin ladder-bench -- --seconds 60 --no-bframes

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use benches::encode_lecture_path;
use benches::proc::cpu_seconds;
use clap::Parser;
use media::Frame;
use media::encode::{LadderRung, VideoEncoder, VideoFrame};
use media::flv::{VideoTag, parse_video};
use media::h264::H264Params;
use transcode::ladder::{Ladder, LadderOptions};

#[derive(Parser)]
struct Args {
    /// Seconds of video per run (the 30 s lecture, looped).
    #[arg(long, default_value_t = 60)]
    seconds: u32,
    /// Source video bitrate, kbit/s.
    #[arg(long, default_value_t = 2000)]
    kbps: u32,
    /// The rung: WIDTHxHEIGHT@KBPS.
    #[arg(long, default_value = "640x360@400")]
    rung: String,
    /// A source without B-frames (WebRTC publishers, low-delay encoders): the delay then is
    /// the rung's own, not the source's reordering.
    #[arg(long)]
    no_bframes: bool,
}

/// The source's video frames (90 kHz, decode order) and configuration.
fn source(file: &Path) -> anyhow::Result<(H264Params, Vec<Frame>)> {
    let tags = benches::flv::read(&std::fs::read(file)?)?;
    let (mut params, mut frames) = (None, Vec::new());
    for t in tags.iter().filter(|t| t.kind == 9) {
        match parse_video(t.body.clone())? {
            VideoTag::AvcConfig(record) => params = Some(H264Params::from_record(record)?),
            VideoTag::AvcFrame {
                keyframe,
                composition_ms,
                data,
            } => {
                let dts = t.timestamp as i64 * 90;
                frames.push(Frame {
                    dts,
                    pts: dts + composition_ms as i64 * 90,
                    keyframe,
                    data,
                });
            }
            VideoTag::Ignored => {}
        }
    }
    Ok((params.context("no AVC configuration")?, frames))
}

/// The lecture looped to `seconds`.
fn looped(frames: &[Frame], seconds: u32) -> Vec<Frame> {
    let period = frames.last().map_or(0, |f| f.dts) + 3600 - frames[0].dts;
    let want = seconds as i64 * 90_000;
    let mut out = Vec::new();
    for k in 0.. {
        for f in frames {
            let mut f = f.clone();
            f.dts += k * period;
            f.pts += k * period;
            if f.dts >= want {
                return out;
            }
            out.push(f);
        }
    }
    out
}

struct Run {
    cpu: f64,
    frames_out: usize,
    keyframes_ok: bool,
    kbps: f64,
    delay_ms: (f64, f64),
    encoder: &'static str,
}

/// Feeds `frames` at their pace to `enc` (or to nothing): CPU seconds used meanwhile.
fn feed(
    frames: &[Frame],
    mut enc: Option<&mut dyn VideoEncoder>,
    pushed: &Mutex<HashMap<i64, Instant>>,
) -> anyhow::Result<f64> {
    let cpu0 = cpu_seconds(std::process::id());
    let t0 = Instant::now();
    for f in frames {
        let at = t0 + Duration::from_micros(((f.dts - frames[0].dts) * 100 / 9) as u64);
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if let Some(enc) = enc.as_deref_mut() {
            pushed.lock().unwrap().insert(f.pts, Instant::now());
            enc.push(f, 90_000).map_err(anyhow::Error::msg)?;
        }
    }
    Ok(cpu_seconds(std::process::id()) - cpu0)
}

fn run(
    params: &H264Params,
    frames: &[Frame],
    rung: &LadderRung,
    options: LadderOptions,
) -> anyhow::Result<Run> {
    let out: Arc<Mutex<Vec<(VideoFrame, Instant)>>> = Arc::default();
    let o = out.clone();
    let mut enc = Ladder::start(
        params,
        rung,
        &options,
        Box::new(move |f| o.lock().unwrap().push((f, Instant::now()))),
    )
    .map_err(anyhow::Error::msg)?;
    let encoder = enc.encoder();
    let pushed = Mutex::new(HashMap::new());
    // The last few pictures are still in the decoder when the input stops: a second more
    // is not counted.
    let cpu = feed(frames, Some(&mut enc), &pushed)?;
    std::thread::sleep(Duration::from_millis(500));
    drop(enc);
    let out = out.lock().unwrap();
    let pushed = pushed.lock().unwrap();
    let mut delays: Vec<f64> = out
        .iter()
        .filter_map(|(f, at)| Some(at.duration_since(*pushed.get(&f.pts)?).as_secs_f64() * 1000.0))
        .collect();
    delays.sort_by(|a, b| a.total_cmp(b));
    let keys_in: BTreeSet<i64> = frames
        .iter()
        .filter(|f| f.keyframe)
        .map(|f| f.pts)
        .collect();
    let keys_out: BTreeSet<i64> = out
        .iter()
        .filter(|(f, _)| f.keyframe)
        .map(|(f, _)| f.pts)
        .collect();
    let last = out.last().map_or(0, |(f, _)| f.pts);
    let bytes: usize = out.iter().map(|(f, _)| f.data.len()).sum();
    let seconds = (frames.last().unwrap().dts - frames[0].dts) as f64 / 90_000.0;
    if let Some((f, _)) = out.first()
        && (f.params.width, f.params.height) != (rung.width, rung.height)
    {
        bail!("the rung came out {}x{}", f.params.width, f.params.height);
    }
    Ok(Run {
        cpu,
        frames_out: out.len(),
        keyframes_ok: keys_out == keys_in.range(..=last).copied().collect(),
        kbps: bytes as f64 * 8.0 / seconds / 1000.0,
        delay_ms: (
            delays.get(delays.len() / 2).copied().unwrap_or(f64::NAN),
            delays
                .get(delays.len() * 99 / 100)
                .copied()
                .unwrap_or(f64::NAN),
        ),
        encoder,
    })
}

/// ffmpeg scaling and encoding the same lecture the same way, as fast as it can: CPU s.
fn ffmpeg(file: &Path, seconds: u32, rung: &LadderRung, threads: u32) -> anyhow::Result<f64> {
    let t = threads.to_string();
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-benchmark", "-threads", &t])
        .args(["-stream_loop", "-1", "-t", &seconds.to_string(), "-i"])
        .arg(file)
        .args(["-an", "-vf"])
        .arg(format!(
            "scale={w}:{h}:force_original_aspect_ratio=decrease,pad={w}:{h}:-1:-1",
            w = rung.width,
            h = rung.height
        ))
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
            "-threads",
            &t,
        ])
        .args([
            "-b:v",
            &format!("{}k", rung.kbps),
            "-bf",
            "0",
            "-sc_threshold",
            "0",
            "-g",
            "100000",
        ])
        .args(["-force_key_frames", "source", "-f", "null", "-"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stderr);
    benches::ffmpeg_cpu_seconds(&text)
}

fn parse_rung(s: &str) -> anyhow::Result<LadderRung> {
    let (size, kbps) = s.split_once('@').context("WIDTHxHEIGHT@KBPS")?;
    let (w, h) = size.split_once('x').context("WIDTHxHEIGHT@KBPS")?;
    Ok(LadderRung {
        width: w.parse()?,
        height: h.parse()?,
        kbps: kbps.parse()?,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rung = parse_rung(&args.rung)?;
    let file = encode_lecture_path(args.kbps, !args.no_bframes)?;
    let (params, frames) = source(&file)?;
    let frames = looped(&frames, args.seconds);
    let seconds =
        (frames.last().context("no frames")?.dts - frames[0].dts) as f64 / 90_000.0 + 0.04;
    transcode::init()?;
    println!(
        "source {}x{} {} kbit/s{}, {} frames ({seconds:.1} s) paced in real time; rung {}x{} at {} kbit/s; {} cores",
        params.width,
        params.height,
        args.kbps,
        if args.no_bframes {
            " without B-frames"
        } else {
            " with B-frames"
        },
        frames.len(),
        rung.width,
        rung.height,
        rung.kbps,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let feeding = feed(&frames, None, &Mutex::default())?;
    println!("feeding alone: {feeding:.2} CPU s");

    let configs = [
        ("1 decoder thread, x264 threads=1 (default)", 1, 1),
        ("1 decoder thread, x264 threads=auto", 1, 0),
        ("decoder threads=auto, x264 threads=auto", 0, 0),
    ];
    let mut rows = Vec::new();
    for (name, dec, x264) in configs {
        let options = LadderOptions {
            x264_threads: x264,
            decoder_threads: dec,
            hardware: false,
        };
        let r = run(&params, &frames, &rung, options)?;
        let share = (r.cpu - feeding).max(0.0) / seconds;
        println!(
            "{name} [{}]: {:.2} CPU s, {} frames out of {}, keyframes on the source's: {}, {:.0} kbit/s, delay median {:.0} ms, p99 {:.0} ms",
            r.encoder,
            r.cpu,
            r.frames_out,
            frames.len(),
            r.keyframes_ok,
            r.kbps,
            r.delay_ms.0,
            r.delay_ms.1
        );
        if !r.keyframes_ok || r.frames_out < frames.len() * 95 / 100 {
            bail!("{name}: the rung did not keep up or lost the source's keyframes");
        }
        rows.push((format!("jiangtang, {name}"), share, Some(r)));
    }
    for threads in [1, 0] {
        let cpu = ffmpeg(&file, args.seconds, &rung, threads)?;
        let t = if threads == 0 {
            "auto".to_string()
        } else {
            threads.to_string()
        };
        println!("ffmpeg (libx264) threads={t}: {cpu:.2} CPU s");
        rows.push((
            format!("ffmpeg -threads {t} (libavcodec h264, swscale, libx264 same settings)"),
            cpu / seconds,
            None,
        ));
    }

    println!(
        "\n| rung {}x{} @ {} kbit/s from 1280x720 25 fps {} kbit/s{} | % of a core per lecture | delay added (median / p99) |",
        rung.width,
        rung.height,
        rung.kbps,
        args.kbps,
        if args.no_bframes {
            ", no B-frames"
        } else {
            ", B-frames"
        }
    );
    println!("|---|---|---|");
    for (name, share, r) in rows {
        let delay = r.map_or("—".to_string(), |r| {
            format!("{:.0} / {:.0} ms", r.delay_ms.0, r.delay_ms.1)
        });
        println!("| {name} | {:.1} | {delay} |", share * 100.0);
    }
    Ok(())
}
