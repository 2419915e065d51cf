//! Recorded lectures for the replay tests: a relay that records into a folder of the test's
//! own and ends lectures a second after their publisher leaves, and ffmpeg publishing three
//! dialects over SRT.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{Proc, Server, get, wait_until};

/// A folder removed on drop.
pub struct Folder(pub PathBuf);

impl Folder {
    /// A new empty folder under the temp directory.
    pub fn new(tag: &str) -> Folder {
        let p = std::env::temp_dir().join(format!(
            "jiangtang-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Folder(p)
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Configuration that records every lecture into `dir` and ends a lecture one second after
/// its publisher leaves (so its recording completes at once).
pub fn recording_config(dir: &Folder) -> String {
    format!(
        "[lectures]\ngrace_period_s = 1\n\n[recording]\nenabled = true\ndir = \"{}\"\nmin_free_mb = 0\n",
        dir.0.display()
    )
}

/// The three dialects the tests send, with the tone each carries.
pub const THREE: &[(&str, u32)] = &[("cmn", 440), ("yue", 660), ("hak", 880)];

/// ffmpeg sending `seconds` of a 320×180 test picture at 25 fps (a keyframe every 2 s) and
/// one sine tone per `(language, Hz)` as AAC, in MPEG-TS over SRT to lecture `name`.
pub fn srt_lecture(s: &Server, name: &str, tones: &[(&str, u32)], seconds: u32) -> Proc {
    let url = format!(
        "srt://{}?streamid=publish:{name}&latency=300000",
        s.srt.expect("SRT listening")
    );
    let mut c = Command::new("ffmpeg");
    c.args(["-nostdin", "-loglevel", "error", "-re"]).args([
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x180:rate=25",
    ]);
    for (_, hz) in tones {
        c.args([
            "-f",
            "lavfi",
            "-i",
            &format!("sine=frequency={hz}:sample_rate=48000"),
        ]);
    }
    c.args(["-map", "0:v"]);
    for i in 0..tones.len() {
        c.args(["-map", &format!("{}:a", i + 1)]);
    }
    c.args(["-t", &seconds.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args([
            "-g",
            "50",
            "-keyint_min",
            "50",
            "-pix_fmt",
            "yuv420p",
            "-b:v",
            "500k",
        ])
        .args(["-c:a", "aac", "-b:a", "64k", "-ac", "1"]);
    for (i, (lang, _)) in tones.iter().enumerate() {
        c.args([&format!("-metadata:s:a:{i}"), &format!("language={lang}")]);
    }
    c.args(["-f", "mpegts", &url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    Proc(c.spawn().expect("ffmpeg (install with scripts/setup.sh)"))
}

/// The recordings of `lecture`, as the API lists them.
pub fn recordings(s: &Server, lecture: &str) -> Vec<Value> {
    let (status, _, body) = get(&s.url(&format!("/api/v1/recordings?lecture={lecture}")));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    v["recordings"].as_array().cloned().unwrap_or_default()
}

/// Waits until `lecture` has a recording whose state is `state`; returns it.
pub fn wait_recording(s: &Server, lecture: &str, state: &str, timeout: Duration) -> Value {
    wait_until(
        timeout,
        &format!("a {state} recording of {lecture}"),
        || {
            recordings(s, lecture)
                .into_iter()
                .find(|r| r["state"] == state)
        },
    )
}
