//! Where a live window's older segments live: in memory near the live edge, in an unnamed
//! file further back (as nginx-rtmp keeps its whole window on disk). Players ask for the
//! newest parts and segments almost always; the older ones of the window are read by a
//! player joining a few segments back or catching up, and the page cache serves those reads
//! as fast as memory would, without the relay's heap holding the whole window for every
//! lecture.
//!
//! A segment is handed to the [`Spooler`]'s thread when it falls behind the segments kept in
//! memory; the thread writes it to a file that has no name (freed when the last reference
//! closes it, so nothing is left behind after a crash) and the packager swaps the segment's
//! bytes for the file at its next segment. The disk never holds up a lecture: the write is
//! off the lecture's lock, a full queue or a failed write leaves the segment in memory.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tracing::{error, warn};

/// A segment's or a part's bytes.
#[derive(Debug, Clone)]
pub enum Media {
    /// Held in memory.
    Memory(Bytes),
    /// `len` bytes at `offset` of a spooled segment's file.
    Spooled {
        /// The segment's file (unnamed).
        file: Arc<File>,
        /// Where these bytes start in it.
        offset: u64,
        /// How many.
        len: usize,
    },
}

impl Default for Media {
    fn default() -> Self {
        Media::Memory(Bytes::new())
    }
}

impl Media {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Media::Memory(b) => b.len(),
            Media::Spooled { len, .. } => *len,
        }
    }

    /// No bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, when they are in memory.
    pub fn in_memory(&self) -> Option<&Bytes> {
        match self {
            Media::Memory(b) => Some(b),
            Media::Spooled { .. } => None,
        }
    }

    /// The bytes, read from the file when spooled (blocking: call it off the async
    /// runtime's threads for a spooled one).
    pub fn read(&self) -> std::io::Result<Bytes> {
        match self {
            Media::Memory(b) => Ok(b.clone()),
            Media::Spooled { file, offset, len } => {
                let mut buf = vec![0; *len];
                file.read_exact_at(&mut buf, *offset)?;
                Ok(buf.into())
            }
        }
    }
}

/// Where a segment handed to the spooler will be: its file once written.
#[derive(Debug, Default)]
pub struct Slot(OnceLock<Arc<File>>);

impl Slot {
    /// The written file, once it is.
    pub fn file(&self) -> Option<&Arc<File>> {
        self.0.get()
    }
}

struct Job {
    data: Bytes,
    slot: Arc<Slot>,
}

/// Segments waiting for the disk beyond which more stay in memory (≈ 40 s of a lecture's
/// renditions at 2 s a segment, across every lecture).
const QUEUE: usize = 256;

/// Writes segments to unnamed files in one folder, on its own thread. Cloned into every
/// lecture's packager.
#[derive(Clone)]
pub struct Spooler {
    tx: mpsc::SyncSender<Job>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for Spooler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spooler").finish_non_exhaustive()
    }
}

/// What the spooler did.
#[derive(Debug, Default)]
pub struct Stats {
    /// Segments written.
    pub written: AtomicU64,
    /// Segments kept in memory because the queue was full or the write failed.
    pub kept_in_memory: AtomicU64,
}

impl Stats {
    /// Appends the counters in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP jiangtang_hls_spooled_segments_total HLS segments written to the spool (hls.spool), read from there once behind hls.memory_segments\n\
             # TYPE jiangtang_hls_spooled_segments_total counter\n\
             jiangtang_hls_spooled_segments_total {}\n\
             # HELP jiangtang_hls_spool_kept_in_memory_total HLS segments kept in memory instead: the spool's queue was full or its write failed\n\
             # TYPE jiangtang_hls_spool_kept_in_memory_total counter\n\
             jiangtang_hls_spool_kept_in_memory_total {}",
            self.written.load(Ordering::Relaxed),
            self.kept_in_memory.load(Ordering::Relaxed)
        );
    }
}

impl Spooler {
    /// A spooler writing to `dir` (created if missing). Fails when no file can be made
    /// there, so the caller can say so at start and keep segments in memory instead.
    pub fn start(dir: PathBuf) -> std::io::Result<Spooler> {
        std::fs::create_dir_all(&dir)?;
        // One file now, so an unusable folder shows at start, not with the first lecture.
        let mut probe = tempfile::tempfile_in(&dir)?;
        probe.write_all(b"jiangtang")?;
        drop(probe);
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
        let stats = Arc::new(Stats::default());
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("hls-spool".into())
            .spawn(move || {
                let mut failing = false;
                // Ends when the last packager and the hub drop their spoolers.
                for job in rx {
                    match write(&dir, &job.data) {
                        Ok(file) => {
                            let _ = job.slot.0.set(Arc::new(file));
                            thread_stats.written.fetch_add(1, Ordering::Relaxed);
                            if failing {
                                warn!(dir = %dir.display(), "HLS spool writes again");
                                failing = false;
                            }
                        }
                        Err(e) => {
                            thread_stats.kept_in_memory.fetch_add(1, Ordering::Relaxed);
                            // Once per run of failures, not once per segment.
                            if !failing {
                                error!(dir = %dir.display(), "HLS spool: {e}; segments stay in memory");
                                failing = true;
                            }
                        }
                    }
                }
            })?;
        Ok(Spooler { tx, stats })
    }

    /// Hands `data` to the spool thread; `None` (it stays in memory) when the queue is full.
    pub fn submit(&self, data: Bytes) -> Option<Arc<Slot>> {
        let slot = Arc::new(Slot::default());
        match self.tx.try_send(Job {
            data,
            slot: slot.clone(),
        }) {
            Ok(()) => Some(slot),
            Err(_) => {
                let n = self.stats.kept_in_memory.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() {
                    warn!(
                        "HLS spool queue full (the disk is slow); {} segments kept in memory",
                        n + 1
                    );
                }
                None
            }
        }
    }

    /// What it did so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

fn write(dir: &std::path::Path, data: &[u8]) -> std::io::Result<File> {
    let mut file = tempfile::tempfile_in(dir)?;
    file.write_all(data)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(slot: &Slot) -> &Arc<File> {
        for _ in 0..500 {
            if let Some(f) = slot.file() {
                return f;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the spool thread wrote nothing in 5 s");
    }

    #[test]
    fn a_spooled_segment_reads_back_from_its_unnamed_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spooler::start(dir.path().join("spool")).unwrap();
        let data = Bytes::from((0..100_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let slot = s.submit(data.clone()).unwrap();
        let file = wait(&slot).clone();
        let whole = Media::Spooled {
            file: file.clone(),
            offset: 0,
            len: data.len(),
        };
        assert_eq!(whole.read().unwrap(), data);
        let part = Media::Spooled {
            file,
            offset: 1000,
            len: 500,
        };
        assert_eq!(part.read().unwrap(), data.slice(1000..1500));
        // Unnamed: the folder shows nothing, so a crash leaves nothing behind.
        assert_eq!(
            std::fs::read_dir(dir.path().join("spool")).unwrap().count(),
            0
        );
        assert_eq!(s.stats().written.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_folder_that_cannot_hold_files_fails_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        assert!(Spooler::start(file).is_err());
    }

    #[test]
    fn a_read_past_the_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spooler::start(dir.path().to_path_buf()).unwrap();
        let slot = s.submit(Bytes::from_static(b"short")).unwrap();
        let m = Media::Spooled {
            file: wait(&slot).clone(),
            offset: 2,
            len: 10,
        };
        assert!(m.read().is_err());
    }
}
