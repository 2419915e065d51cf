//! What a dialect costs WebRTC viewers: the CPU of jiangtang's AAC → Opus transcoder (one
//! per dialect of a lecture with WebRTC viewers, whatever their number; a WHIP source's own
//! Opus is passed through instead) against ffmpeg doing the same job with libopus, on the
//! same audio, in the same run.
//!
//! A lecture's dialect (`--seconds` of 48 kHz stereo AAC-LC at 128 kbit/s, a voice-like
//! tone over pink noise, made with ffmpeg) goes through jiangtang's transcoder (GStreamer:
//! avdec_aac, opusenc 64 kbit/s voice 20 ms, the pipeline the relay runs) as fast as it
//! takes it, and through `ffmpeg -c:a libopus -b:a 64k -application voip -frame_duration
//! 20`. The figure is CPU seconds per second of audio, i.e. the share of one core a track
//! costs in real time. Each side runs `--runs` times; the median is reported.
//!
//!     cargo run --release --locked -p benches --bin transcode-bench -- --seconds 60 --runs 3

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use benches::proc::cpu_seconds;
use clap::Parser;
use media::encode::Transcoders;

#[derive(Parser)]
struct Args {
    /// Seconds of audio per run.
    #[arg(long, default_value_t = 60)]
    seconds: u32,
    /// Runs of each transcoder.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// Frames given to the pipeline ahead of what it has encoded (its queue drops beyond).
const AHEAD: i64 = 32;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let file = std::env::temp_dir().join(format!("jt-transcode-bench-{}.aac", std::process::id()));
    let ok = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=220:sample_rate=48000:duration={s}[a];anoisesrc=color=pink:amplitude=0.05:sample_rate=48000:duration={s}[b];[a][b]amix=inputs=2,aformat=channel_layouts=stereo",
            s = args.seconds
        ))
        .args(["-c:a", "aac", "-b:a", "128k", "-f", "adts"])
        .arg(&file)
        .status()
        .context("ffmpeg")?;
    if !ok.success() {
        bail!("ffmpeg could not make the test audio");
    }
    let adts = std::fs::read(&file)?;
    let (frames, err) = media::aac::split_adts(&adts);
    if let Some(e) = err {
        bail!("test audio: {e}");
    }
    let params = frames.first().context("no AAC frames")?.params()?;
    let audio_s = frames.len() as f64 * 1024.0 / 48_000.0;
    println!(
        "{} AAC frames, {audio_s:.1} s of 48 kHz stereo; {} runs each",
        frames.len(),
        args.runs
    );

    transcode::init()?;
    let transcoders = transcode::opus::GstTranscoders::default();
    let mut ours = Vec::new();
    for _ in 0..args.runs {
        let out = Arc::new(AtomicI64::new(-1));
        let packets = Arc::new(AtomicI64::new(0));
        let (o, p) = (out.clone(), packets.clone());
        let mut enc = transcoders
            .aac_to_opus(
                &params,
                Box::new(move |pk| {
                    o.store(pk.pts, Ordering::Relaxed);
                    p.fetch_add(1, Ordering::Relaxed);
                }),
            )
            .map_err(anyhow::Error::msg)?;
        let cpu0 = cpu_seconds(std::process::id());
        let t0 = Instant::now();
        for (i, f) in frames.iter().enumerate() {
            let pts = i as i64 * 1024;
            while out.load(Ordering::Relaxed) < pts - AHEAD * 1024 {
                if t0.elapsed() > Duration::from_secs(120) {
                    bail!("the transcoder stopped taking frames");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            enc.push(pts, 48_000, f.data).map_err(anyhow::Error::msg)?;
        }
        let last = (frames.len() as i64 - 2) * 1024;
        let end = Instant::now() + Duration::from_secs(10);
        while out.load(Ordering::Relaxed) < last - 2048 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
        }
        let cpu = cpu_seconds(std::process::id()) - cpu0;
        let n = packets.load(Ordering::Relaxed);
        drop(enc);
        let expected = (audio_s * 50.0) as i64;
        if n < expected * 95 / 100 {
            bail!("jiangtang's transcoder made {n} Opus packets of {expected}");
        }
        println!(
            "jiangtang (GStreamer opusenc): {cpu:.2} CPU s for {audio_s:.1} s ({n} packets) in {:.2} s",
            t0.elapsed().as_secs_f64()
        );
        ours.push(cpu / audio_s);
    }

    let mut theirs = Vec::new();
    for _ in 0..args.runs {
        let out = Command::new("ffmpeg")
            .args(["-nostdin", "-hide_banner", "-benchmark", "-i"])
            .arg(&file)
            .args([
                "-c:a",
                "libopus",
                "-b:a",
                "64k",
                "-application",
                "voip",
                "-frame_duration",
                "20",
                "-f",
                "null",
                "-",
            ])
            .output()?;
        let text = String::from_utf8_lossy(&out.stderr);
        let cpu = benches::ffmpeg_cpu_seconds(&text)?;
        println!("ffmpeg (libopus): {cpu:.2} CPU s for {audio_s:.1} s");
        theirs.push(cpu / audio_s);
    }
    let _ = std::fs::remove_file(&file);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (a, b) = (median(&mut ours), median(&mut theirs));
    println!("\n| transcoder | % of a core per dialect track (real time) |");
    println!("|---|---|");
    println!(
        "| jiangtang (GStreamer: avdec_aac, opusenc) | {:.2} |",
        a * 100.0
    );
    println!(
        "| ffmpeg (native AAC decoder, libopus) | {:.2} |",
        b * 100.0
    );
    println!("\njiangtang / ffmpeg: {:.2}x", a / b);
    Ok(())
}
