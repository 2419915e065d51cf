//! Helpers shared by jiangtang's benchmark binaries: an FLV file reader, a paced RTMP
//! publisher that records when it sent each frame, the relay process, /proc sampling, and
//! nginx as the shipped HLS cache with an LL-HLS player to put behind it.

pub mod flv;
pub mod hls_cache;
pub mod proc;
pub mod publisher;
pub mod whep;

use anyhow::{Context, bail};

/// The CPU time (user + system, seconds) on the last `bench:` line `ffmpeg -benchmark`
/// wrote to `stderr`: what the alternative cost in the same run.
pub fn ffmpeg_cpu_seconds(stderr: &str) -> anyhow::Result<f64> {
    let field = |name: &str| -> Option<f64> {
        let l = stderr
            .lines()
            .rev()
            .find(|l| l.starts_with("bench: utime="))?;
        let v = l.split_whitespace().find_map(|w| w.strip_prefix(name))?;
        v.trim_end_matches('s').parse().ok()
    };
    let (Some(u), Some(s)) = (field("utime="), field("stime=")) else {
        bail!("ffmpeg -benchmark said nothing usable: {stderr}");
    };
    Ok(u + s)
}

/// The benchmarks' lecture as FLV: 30 s of 1280x720 25 fps H.264 at `kbps` (GOP 2 s, x264's
/// B-frames) and AAC 128 kbit/s, encoded by ffmpeg once and kept in the temp folder.
pub fn encode_lecture(kbps: u32) -> anyhow::Result<Vec<u8>> {
    encode_lecture_path(kbps, true).and_then(|p| Ok(std::fs::read(p)?))
}

/// Where [`encode_lecture`]'s file is, made first if needed; without B-frames (as WebRTC
/// publishers and low-delay encoders send) if `bframes` is false.
pub fn encode_lecture_path(kbps: u32, bframes: bool) -> anyhow::Result<std::path::PathBuf> {
    let tag = if bframes { "" } else { "-no-bframes" };
    let path = std::env::temp_dir().join(format!("jiangtang-bench-{kbps}{tag}.flv"));
    if !path.exists() {
        let status = std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args([
                "-t",
                "30",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-g",
                "50",
                "-keyint_min",
                "50",
            ])
            .args([
                "-b:v",
                &format!("{kbps}k"),
                "-maxrate",
                &format!("{kbps}k"),
                "-bufsize",
                &format!("{}k", kbps * 2),
            ])
            .args(if bframes { &[][..] } else { &["-bf", "0"][..] })
            .args([
                "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-f", "flv",
            ])
            .arg(&path)
            .status()
            .context("ffmpeg")?;
        if !status.success() {
            bail!("ffmpeg failed to encode the lecture");
        }
    }
    Ok(path)
}
