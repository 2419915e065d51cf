//! Where a live window's older segments live: in memory near the live edge, in an unnamed
//! file further back (as nginx-rtmp keeps its whole window on disk). Players ask for the
//! newest parts and segments almost always; the older ones of the window are read by a
//! player joining a few segments back or catching up, and the page cache serves those reads
//! as fast as memory would, without the relay's heap holding the whole window for every
//! lecture.
//!
//! A segment is handed to the [`Spooler`]'s thread when it falls behind the segments kept in
//! memory; the thread appends it to its rendition's file, which has no name (freed when the
//! last reference closes it, so nothing is left behind after a crash), and the packager swaps
//! the segment's bytes for that range of the file at its next segment. One file per
//! rendition, not per segment, so a relay with hundreds of lectures holds a few descriptors
//! each; the range of a segment that has left the window is given back to the filesystem
//! (a punched hole, by the spool thread) when its last reader is done, and a file is
//! replaced after [`ROTATE_BYTES`], so the disk holds about the window. The disk never holds
//! up a lecture: writes and holes are the spool thread's, off the lecture's lock and the
//! async runtime; a full queue or a failed write leaves the segment in memory.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;
use tracing::{error, warn};

/// A rendition's file is replaced by a new one once this much has been appended to it (its
/// holes take no room, but no file grows without bound on a lecture that never ends).
pub const ROTATE_BYTES: u64 = 1 << 30;
/// The same where the filesystem cannot punch holes: the space comes back only when a file
/// is closed, so files are replaced sooner.
const ROTATE_BYTES_WITHOUT_HOLES: u64 = 64 << 20;
/// Segments start on this boundary, so a punched range frees whole blocks (a block shared by
/// two segments would be freed by neither).
const BLOCK: u64 = 4096;

/// One spooled segment's bytes in its rendition's file. Its range is given back to the
/// filesystem when the last reference (the segment, its parts, a read in flight) goes.
#[derive(Debug)]
pub struct Extent {
    file: Arc<File>,
    offset: u64,
    len: u64,
    /// The whole segment as last read, while a response still holds it: players joining
    /// together ask for the same older segments and share one read. Weak, so it costs no
    /// memory once those responses are sent.
    live: Mutex<Weak<Vec<u8>>>,
    /// Held while the whole segment is read, so readers arriving meanwhile wait for that
    /// read and share it (only blocking-pool threads take it).
    reading: Mutex<()>,
    tx: mpsc::SyncSender<Job>,
}

/// A read segment handed to responses (`Bytes::from_owner`).
struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Extent {
    fn live(&self) -> std::sync::MutexGuard<'_, Weak<Vec<u8>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Extent {
    fn drop(&mut self) {
        // The spool thread punches the hole: a filesystem may write the range's dirty pages
        // back first, which must not happen under the lecture's lock. With the queue full,
        // the space comes back when the file is replaced.
        let _ = self.tx.try_send(Job::Punch {
            file: self.file.clone(),
            offset: self.offset,
            len: self.len.div_ceil(BLOCK) * BLOCK,
        });
    }
}

/// A rendition's spool file as the spool thread appends to it: the file and where the next
/// segment goes. Held by the rendition; opened with its first spooled segment.
#[derive(Debug, Default)]
pub struct Target(Mutex<Option<(Arc<File>, u64)>>);

/// A segment's or a part's bytes.
#[derive(Debug, Clone)]
pub enum Media {
    /// Held in memory.
    Memory(Bytes),
    /// `len` bytes at `offset` of a spooled segment.
    Spooled {
        /// The segment's range of its rendition's file.
        extent: Arc<Extent>,
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

    /// The bytes without touching the disk: in memory, or a spooled segment another
    /// response is still sending.
    pub fn at_hand(&self) -> Option<Bytes> {
        match self {
            Media::Memory(b) => Some(b.clone()),
            Media::Spooled {
                extent,
                offset,
                len,
            } => {
                let whole = extent.live().upgrade()?;
                let start = usize::try_from(*offset).ok()?;
                (start.checked_add(*len)? <= whole.len())
                    .then(|| Bytes::from_owner(Shared(whole)).slice(start..start + len))
            }
        }
    }

    /// The bytes, read from the file when spooled (blocking: call it off the async
    /// runtime's threads when [`Media::at_hand`] has not got them).
    pub fn read(&self) -> std::io::Result<Bytes> {
        let (extent, offset, len) = match self {
            Media::Memory(b) => return Ok(b.clone()),
            Media::Spooled {
                extent,
                offset,
                len,
            } => (extent, *offset, *len),
        };
        if offset.saturating_add(len as u64) > extent.len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "beyond the spooled segment",
            ));
        }
        if offset != 0 || len as u64 != extent.len {
            // A part of an older segment: rare, read alone.
            if let Some(b) = self.at_hand() {
                return Ok(b);
            }
            return read_at(&extent.file, extent.offset + offset, len).map(Bytes::from);
        }
        let _one_read = extent.reading.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = self.at_hand() {
            return Ok(b);
        }
        let buf = Arc::new(read_at(&extent.file, extent.offset, len)?);
        *extent.live() = Arc::downgrade(&buf);
        Ok(Bytes::from_owner(Shared(buf)))
    }
}

/// `len` bytes at `at` of `file`, read into a buffer's spare capacity: no zeroing of what is
/// overwritten anyway (it was ~8 % of a core serving spooled segments).
fn read_at(file: &File, at: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let from = at + buf.len() as u64;
        if rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), from)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    buf.truncate(len);
    Ok(buf)
}

/// Where a segment handed to the spooler will be, once written.
#[derive(Debug, Default)]
pub struct Slot(OnceLock<Arc<Extent>>);

impl Slot {
    /// The written range, once it is.
    pub fn extent(&self) -> Option<&Arc<Extent>> {
        self.0.get()
    }
}

enum Job {
    /// Append a segment to its rendition's file.
    Write {
        data: Bytes,
        slot: Arc<Slot>,
        target: Arc<Target>,
        /// For the extent to send its hole with (the thread keeps none of its own, so it
        /// ends once every spooler and extent is gone).
        tx: mpsc::SyncSender<Job>,
    },
    /// Give a range back to the filesystem.
    Punch {
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
    /// Answer once everything sent before is done.
    Flush(mpsc::Sender<()>),
}

/// Jobs waiting for the disk beyond which segments stay in memory (≈ 40 s of a lecture's
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
    /// Segments kept in memory because the queue was full (the disk is slow).
    pub queue_full: AtomicU64,
    /// Segments kept in memory because their write failed.
    pub write_failed: AtomicU64,
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
             # HELP jiangtang_hls_spool_kept_in_memory_total HLS segments kept in memory instead: the spool's queue was full (a slow disk) or its write failed\n\
             # TYPE jiangtang_hls_spool_kept_in_memory_total counter\n\
             jiangtang_hls_spool_kept_in_memory_total{{reason=\"queue_full\"}} {}\n\
             jiangtang_hls_spool_kept_in_memory_total{{reason=\"write_failed\"}} {}",
            self.written.load(Ordering::Relaxed),
            self.queue_full.load(Ordering::Relaxed),
            self.write_failed.load(Ordering::Relaxed)
        );
    }
}

/// `TMPFS_MAGIC` and `RAMFS_MAGIC` (statfs(2)): folders whose files are memory.
const IN_MEMORY_FILESYSTEMS: [u64; 2] = [0x0102_1994, 0x8584_58f6];

impl Spooler {
    /// A spooler writing to `dir` (created if missing). Fails when no file can be made
    /// there, so the caller can say so at start and keep segments in memory instead.
    pub fn start(dir: PathBuf) -> std::io::Result<Spooler> {
        std::fs::create_dir_all(&dir)?;
        // One file now, so an unusable folder shows at start, not with the first lecture.
        let mut probe = tempfile::tempfile_in(&dir)?;
        probe.write_all(b"jiangtang")?;
        drop(probe);
        if let Ok(fs) = rustix::fs::statfs(&dir)
            && IN_MEMORY_FILESYSTEMS.contains(&(fs.f_type as u64))
        {
            warn!(
                dir = %dir.display(),
                "hls.spool_dir is in memory (tmpfs): the HLS window leaves the relay's heap but not the machine's memory; point it at a disk"
            );
        }
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
        let stats = Arc::new(Stats::default());
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("hls-spool".into())
            .spawn(move || run(&dir, rx, &thread_stats))?;
        Ok(Spooler { tx, stats })
    }

    /// Hands `data` to the spool thread, to be appended to `target`; `None` (it stays in
    /// memory) when the queue is full.
    pub fn submit(&self, data: Bytes, target: &Arc<Target>) -> Option<Arc<Slot>> {
        let slot = Arc::new(Slot::default());
        match self.tx.try_send(Job::Write {
            data,
            slot: slot.clone(),
            target: target.clone(),
            tx: self.tx.clone(),
        }) {
            Ok(()) => Some(slot),
            Err(_) => {
                let n = self.stats.queue_full.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    warn!("HLS spool queue full (the disk is slow); {n} segments kept in memory");
                }
                None
            }
        }
    }

    /// Waits (at most 10 s) until everything handed to the spool thread before is done.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Job::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(std::time::Duration::from_secs(10));
        }
    }

    /// What it did so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

/// The spool thread: until every spooler and every extent (which sends its hole) is gone.
fn run(dir: &Path, rx: mpsc::Receiver<Job>, stats: &Stats) {
    let mut failing = false;
    let mut rotate_at = ROTATE_BYTES;
    for job in rx {
        match job {
            Job::Write {
                data,
                slot,
                target,
                tx,
            } => {
                if Arc::strong_count(&slot) == 1 {
                    // Its segment has left the window while it waited.
                    continue;
                }
                match append(dir, &target, &data, rotate_at, &tx) {
                    Ok(extent) => {
                        let _ = slot.0.set(Arc::new(extent));
                        stats.written.fetch_add(1, Ordering::Relaxed);
                        if failing {
                            warn!(dir = %dir.display(), "HLS spool writes again");
                            failing = false;
                        }
                    }
                    Err(e) => {
                        stats.write_failed.fetch_add(1, Ordering::Relaxed);
                        // Once per run of failures, not once per segment.
                        if !failing {
                            error!(dir = %dir.display(), "HLS spool: {e}; segments stay in memory");
                            failing = true;
                        }
                    }
                }
            }
            Job::Punch { file, offset, len } => {
                let mode =
                    rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
                if let Err(e) = rustix::fs::fallocate(&*file, mode, offset, len)
                    && rotate_at == ROTATE_BYTES
                {
                    warn!(
                        dir = %dir.display(),
                        "HLS spool: this filesystem punches no holes ({e}); spool files are replaced every {} MiB instead",
                        ROTATE_BYTES_WITHOUT_HOLES >> 20
                    );
                    rotate_at = ROTATE_BYTES_WITHOUT_HOLES;
                }
            }
            Job::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Appends `data` to `target`'s file at the next block boundary (a new unnamed file first,
/// or once it has had `rotate_at` bytes).
fn append(
    dir: &Path,
    target: &Target,
    data: &[u8],
    rotate_at: u64,
    tx: &mpsc::SyncSender<Job>,
) -> std::io::Result<Extent> {
    let mut t = target.0.lock().unwrap_or_else(|e| e.into_inner());
    if t.as_ref().is_none_or(|(_, end)| *end >= rotate_at) {
        *t = Some((Arc::new(tempfile::tempfile_in(dir)?), 0));
    }
    let Some((file, end)) = t.as_mut() else {
        return Err(std::io::Error::other("no spool file"));
    };
    file.write_all_at(data, *end)?;
    let extent = Extent {
        file: file.clone(),
        offset: *end,
        len: data.len() as u64,
        live: Default::default(),
        reading: Mutex::new(()),
        tx: tx.clone(),
    };
    *end = (*end + data.len() as u64).div_ceil(BLOCK) * BLOCK;
    Ok(extent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn wait(slot: &Slot) -> Arc<Extent> {
        for _ in 0..500 {
            if let Some(e) = slot.extent() {
                return e.clone();
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the spool thread wrote nothing in 5 s");
    }

    fn whole(extent: &Arc<Extent>) -> Media {
        Media::Spooled {
            extent: extent.clone(),
            offset: 0,
            len: extent.len as usize,
        }
    }

    #[test]
    fn spooled_segments_read_back_from_one_unnamed_file_per_rendition() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spooler::start(dir.path().join("spool")).unwrap();
        let target = Arc::new(Target::default());
        let a = Bytes::from((0..100_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let b = Bytes::from((0..50_000u32).map(|i| (i * 7) as u8).collect::<Vec<_>>());
        let ea = wait(&s.submit(a.clone(), &target).unwrap());
        let eb = wait(&s.submit(b.clone(), &target).unwrap());
        assert!(
            Arc::ptr_eq(&ea.file, &eb.file),
            "one file for the rendition"
        );
        assert_eq!(
            eb.offset,
            (a.len() as u64).div_ceil(BLOCK) * BLOCK,
            "on a block"
        );
        assert_eq!(whole(&ea).read().unwrap(), a);
        assert_eq!(whole(&eb).read().unwrap(), b);
        let part = Media::Spooled {
            extent: eb.clone(),
            offset: 1000,
            len: 500,
        };
        assert_eq!(part.read().unwrap(), b.slice(1000..1500));
        // Another rendition, another file.
        let other = Arc::new(Target::default());
        let ec = wait(&s.submit(a.clone(), &other).unwrap());
        assert!(!Arc::ptr_eq(&ea.file, &ec.file));
        // Unnamed: the folder shows nothing, so a crash leaves nothing behind.
        assert_eq!(
            std::fs::read_dir(dir.path().join("spool")).unwrap().count(),
            0
        );
        assert_eq!(s.stats().written.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn readers_of_one_spooled_segment_at_once_share_one_read() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spooler::start(dir.path().to_path_buf()).unwrap();
        let target = Arc::new(Target::default());
        let data = Bytes::from((0..10_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let extent = wait(&s.submit(data.clone(), &target).unwrap());
        let m = whole(&extent);
        assert!(m.at_hand().is_none(), "nothing read yet");
        let first = m.read().unwrap();
        assert_eq!(first, data);
        // While a response holds it, the segment and its parts come from it.
        let again = m.at_hand().expect("shared while held");
        assert_eq!(again.as_ptr(), first.as_ptr());
        let part = Media::Spooled {
            extent: extent.clone(),
            offset: 100,
            len: 50,
        };
        assert_eq!(part.at_hand().unwrap(), data.slice(100..150));
        drop((first, again));
        // Sent: the memory is gone, the next reader reads the file.
        assert!(m.at_hand().is_none());
        assert!(part.at_hand().is_none());
        assert_eq!(part.read().unwrap(), data.slice(100..150));
        assert!(m.at_hand().is_none(), "a part read alone is not kept");
    }

    /// Bytes no filesystem compresses.
    fn noise(len: usize) -> Bytes {
        (0..len).map(|_| rand::random::<u8>()).collect()
    }

    #[test]
    fn a_segment_that_has_left_gives_its_disk_back() {
        let dir = tempfile::tempdir().unwrap();
        let probe = tempfile::tempfile_in(dir.path()).unwrap();
        probe.write_all_at(&[1; 8192], 0).unwrap();
        let mode = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
        if let Err(e) = rustix::fs::fallocate(&probe, mode, 0, 4096) {
            eprintln!("skipped: {} punches no holes ({e})", dir.path().display());
            return;
        }
        let s = Spooler::start(dir.path().to_path_buf()).unwrap();
        let target = Arc::new(Target::default());
        // Odd sizes, as segments are: each starts on a block, so each one's blocks are its own.
        let segments = [noise(700_001), noise(35_123), noise(650_999)];
        let extents: Vec<_> = segments
            .iter()
            .map(|d| wait(&s.submit(d.clone(), &target).unwrap()))
            .collect();
        let file = extents[0].file.clone();
        let blocks = || file.metadata().unwrap().blocks() * 512;
        let before = blocks();
        assert!(before >= 1_386_123, "{before} bytes on disk");
        let mut extents = extents.into_iter();
        let (first, second, third) = (
            extents.next().unwrap(),
            extents.next().unwrap(),
            extents.next().unwrap(),
        );
        // A read in flight keeps it.
        let reading = whole(&first);
        drop(first);
        s.flush();
        assert_eq!(blocks(), before);
        drop((reading, second));
        s.flush();
        let after = blocks();
        assert!(
            after <= before - 735_124 + 4096,
            "the first two segments' blocks come back: {before} -> {after} bytes on disk"
        );
        assert_eq!(whole(&third).read().unwrap(), segments[2]);
    }

    #[test]
    fn a_folder_that_cannot_hold_files_fails_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        assert!(Spooler::start(file).is_err());
    }

    #[test]
    fn a_read_past_the_segment_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spooler::start(dir.path().to_path_buf()).unwrap();
        let target = Arc::new(Target::default());
        let extent = wait(&s.submit(Bytes::from_static(b"short"), &target).unwrap());
        let m = Media::Spooled {
            extent,
            offset: 2,
            len: 10,
        };
        assert!(m.read().is_err());
    }
}
