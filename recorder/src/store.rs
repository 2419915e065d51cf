//! The recordings on disk: found and recovered at start, started as lectures begin, listed,
//! read for replay, deleted by age or on request.

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use jiff::Timestamp;
use tracing::{error, info, warn};

use crate::Event;
use crate::index::{self, Line, PartLine};
use crate::meta::{FORMAT, Meta, MetaError, State};

/// Recording settings.
#[derive(Debug, Clone)]
pub struct RecordingConfig {
    /// Folder holding one folder per recording.
    pub dir: PathBuf,
    /// Days a recording is kept (0: forever), unless it says otherwise.
    pub retention_days: u32,
    /// Recording stops when less than this is free on the disk, and resumes when there is
    /// more again.
    pub min_free_bytes: u64,
    /// Bytes handed to a recording's writer and not yet written, beyond which it drops
    /// what comes (and fails until it catches up) rather than hold the lecture up.
    pub max_pending_bytes: usize,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Bytes of media written.
    pub bytes_written: AtomicU64,
    /// Parts written.
    pub parts_written: AtomicU64,
    /// Times a recording failed (disk full, unwritable, too slow).
    pub failures: AtomicU64,
    /// Times a failed recording resumed.
    pub resumed: AtomicU64,
    /// Events dropped because a writer fell behind.
    pub dropped_events: AtomicU64,
    /// Recordings recovered at start.
    pub recovered: AtomicU64,
    /// Recordings deleted by age.
    pub expired: AtomicU64,
}

/// What happened to a recording, told to the hook set with [`Library::on_notice`] (the
/// relay turns these into webhooks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Its lecture began and it is being written.
    Started,
    /// Writing stopped (disk full, unwritable, too slow); the reason is in its meta.
    Failed,
    /// Writing resumed after a failure.
    Resumed,
    /// Its lecture ended and it is closed: its final state and duration are in its meta.
    Ended,
}

/// The hook told of every [`Notice`]; called on the writer's thread, so it must not block.
pub type NoticeHook = Arc<dyn Fn(Notice, &Arc<Recording>) + Send + Sync>;

/// Where the hook is, shared by the library and its writers (set once the relay has one).
#[derive(Default, Clone)]
pub(crate) struct Notifier(Arc<RwLock<Option<NoticeHook>>>);

impl Notifier {
    pub(crate) fn tell(&self, notice: Notice, recording: &Arc<Recording>) {
        let hook = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(hook) = hook {
            hook(notice, recording);
        }
    }
}

/// One segment of a recorded rendition: contiguous bytes of its `media.m4s`.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Media sequence number.
    pub msn: u64,
    /// Where its first part starts.
    pub offset: u64,
    /// Bytes of all its parts.
    pub len: u64,
    /// Seconds.
    pub duration: f64,
    /// Parts in it.
    pub parts: u32,
    /// Discontinuity sequence number.
    pub dseq: u64,
    /// Follows a discontinuity.
    pub discontinuity: bool,
    /// Initialization segment version.
    pub init: u32,
    /// Wall clock of its first sample.
    pub pdt: SystemTime,
    /// Every part of it is a gap: no media.
    pub gap: bool,
    /// Its last part was written (not cut off by a crash or a failure).
    pub complete: bool,
}

impl Segment {
    fn from_part(p: &PartLine) -> Segment {
        Segment {
            msn: p.msn,
            offset: p.offset,
            len: p.len,
            duration: p.duration_us as f64 / 1e6,
            parts: 1,
            dseq: p.dseq,
            discontinuity: p.discontinuity,
            init: p.init,
            pdt: p.segment_pdt(),
            gap: p.gap,
            complete: false,
        }
    }
}

/// Adds a part's line to a rendition's segments.
pub(crate) fn absorb(segments: &mut Vec<Segment>, line: &Line) {
    match line {
        Line::Part(p) => match segments.last_mut() {
            Some(s) if s.msn == p.msn && !s.complete => {
                // Parts of one segment are written back to back (a gap part has no bytes).
                if !p.gap {
                    if s.len == 0 {
                        s.offset = p.offset;
                    }
                    // A damaged index may put a part before its segment's start.
                    s.len = p.end().saturating_sub(s.offset);
                }
                s.duration += p.duration_us as f64 / 1e6;
                s.parts += 1;
                s.gap &= p.gap;
            }
            _ => segments.push(Segment::from_part(p)),
        },
        Line::SegmentEnd { msn } => {
            if let Some(s) = segments.last_mut()
                && s.msn == *msn
            {
                s.complete = true;
            }
        }
    }
}

/// A recorded rendition.
#[derive(Debug, Clone, Default)]
pub struct Rendition {
    /// Initialization segment versions on disk.
    pub inits: Vec<u32>,
    /// Its segments, in order.
    pub segments: Vec<Segment>,
}

impl Rendition {
    /// Seconds of media.
    pub fn duration(&self) -> f64 {
        self.segments.iter().map(|s| s.duration).sum()
    }
}

/// A recording's state in memory.
#[derive(Debug)]
pub struct Contents {
    /// What `recording.json` says.
    pub meta: Meta,
    /// Renditions by id, in `meta.renditions` order; read from disk when first needed.
    /// Shared: readers take the `Arc`, the writer changes its own copy when one is out.
    pub renditions: Option<Arc<BTreeMap<String, Rendition>>>,
    /// Being written now.
    pub live: bool,
    /// Playlists of the finished recording, rendered once (see [`Recording::playlist`]).
    playlists: HashMap<String, Playlist>,
}

/// A rendered playlist with its entity tag.
#[derive(Debug, Clone)]
pub struct Playlist {
    /// The text.
    pub text: Bytes,
    /// A strong ETag of the text, quoted.
    pub etag: String,
}

impl Playlist {
    /// `text` with its ETag (FNV-1a of the bytes).
    pub fn new(text: String) -> Playlist {
        let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        Playlist {
            text: Bytes::from(text),
            etag: format!("\"{hash:016x}\""),
        }
    }
}

impl Contents {
    /// The renditions to change (the writer's), copied first if a reader holds them.
    pub(crate) fn renditions_mut(&mut self) -> &mut BTreeMap<String, Rendition> {
        Arc::make_mut(self.renditions.get_or_insert_with(Default::default))
    }

    /// Seconds of the longest rendition.
    pub fn duration(&self) -> Option<f64> {
        if !self.live
            && let Some(d) = self.meta.duration_s
        {
            return Some(d);
        }
        self.renditions
            .as_ref()
            .map(|r| r.values().map(Rendition::duration).fold(0.0, f64::max))
    }
}

/// One recording.
#[derive(Debug)]
pub struct Recording {
    /// Its id (its folder's name).
    pub id: String,
    dir: PathBuf,
    contents: RwLock<Contents>,
}

impl Recording {
    fn new(
        dir: PathBuf,
        meta: Meta,
        renditions: Option<BTreeMap<String, Rendition>>,
        live: bool,
    ) -> Self {
        let renditions = renditions.map(Arc::new);
        Recording {
            id: meta.id.clone(),
            dir,
            contents: RwLock::new(Contents {
                meta,
                renditions,
                live,
                playlists: HashMap::new(),
            }),
        }
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads its state.
    pub fn contents(&self) -> RwLockReadGuard<'_, Contents> {
        self.contents.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn contents_mut(&self) -> RwLockWriteGuard<'_, Contents> {
        self.contents.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Its `recording.json`.
    pub fn meta(&self) -> Meta {
        self.contents().meta.clone()
    }

    /// Whether it is being written.
    pub fn is_live(&self) -> bool {
        self.contents().live
    }

    /// Its renditions' segments, read from the indexes the first time.
    pub fn renditions(&self) -> std::io::Result<Arc<BTreeMap<String, Rendition>>> {
        if let Some(r) = self.cached_renditions() {
            return Ok(r);
        }
        let meta = self.meta();
        let mut out = BTreeMap::new();
        for r in &meta.renditions {
            let (lines, _) = read_index(&self.dir.join(&r.id))?;
            let mut rend = Rendition {
                inits: init_versions(&self.dir.join(&r.id)),
                ..Default::default()
            };
            for l in &lines {
                absorb(&mut rend.segments, l);
            }
            out.insert(r.id.clone(), rend);
        }
        let out = Arc::new(out);
        self.contents_mut().renditions = Some(out.clone());
        Ok(out)
    }

    /// Its renditions' segments if they are in memory already (no disk read).
    pub fn cached_renditions(&self) -> Option<Arc<BTreeMap<String, Rendition>>> {
        self.contents().renditions.clone()
    }

    /// The playlist `key` (e.g. a rendition's id) that `render` makes from the recording's
    /// state: rendered once and kept once the recording is finished (it never changes
    /// then), rendered each time while it is being written (it grows). `render` runs with
    /// the state read-locked, so what it sees is one moment's (it must not lock it again).
    /// `None` when `render` has nothing.
    pub fn playlist(
        &self,
        key: &str,
        render: impl FnOnce(&Contents) -> Option<String>,
    ) -> Option<Playlist> {
        let (p, finished) = {
            let c = self.contents();
            if let Some(p) = c.playlists.get(key) {
                return Some(p.clone());
            }
            (Playlist::new(render(&c)?), !c.live)
        };
        if finished {
            self.contents_mut()
                .playlists
                .insert(key.to_string(), p.clone());
        }
        Some(p)
    }

    /// Bytes `[offset, offset + len)` of a rendition's media, or of one of its files.
    pub fn read_media(&self, rendition: &str, offset: u64, len: u64) -> std::io::Result<Bytes> {
        let f = std::fs::File::open(self.dir.join(rendition).join("media.m4s"))?;
        let mut buf = vec![0u8; usize::try_from(len).map_err(std::io::Error::other)?];
        f.read_exact_at(&mut buf, offset)?;
        Ok(buf.into())
    }

    /// A rendition's initialization segment `version`.
    pub fn init(&self, rendition: &str, version: u32) -> std::io::Result<Bytes> {
        let mut f =
            std::fs::File::open(self.dir.join(rendition).join(format!("init-{version}.mp4")))?;
        let mut buf = Vec::new();
        f.by_ref().take(1 << 20).read_to_end(&mut buf)?;
        Ok(buf.into())
    }
}

fn read_index(rendition_dir: &Path) -> std::io::Result<(Vec<Line>, usize)> {
    match std::fs::read(rendition_dir.join("index.txt")) {
        Ok(text) => Ok(index::read(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Vec::new(), 0)),
        Err(e) => Err(e),
    }
}

fn init_versions(rendition_dir: &Path) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(rendition_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("init-")?
                .strip_suffix(".mp4")?
                .parse()
                .ok()
        })
        .collect();
    v.sort_unstable();
    v
}

/// The handle a live lecture holds: hands its packager's events to the recording's writer
/// without ever waiting. Dropping it ends the recording.
pub struct Recorder {
    tx: Sender<Event>,
    pending: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
    limit: usize,
    metrics: Arc<Metrics>,
    recording: Arc<Recording>,
}

impl Recorder {
    /// Hands over one event. If the writer is too far behind (the disk is slow or stuck),
    /// the event is dropped and the writer fails the recording until it catches up.
    pub fn send(&self, event: Event) {
        let size = match &event {
            Event::Init { data, .. } | Event::Part { data, .. } => data.len(),
            _ => 0,
        } + 64;
        if self.pending.load(Ordering::Relaxed) + size > self.limit {
            self.drop_event();
            return;
        }
        self.pending.fetch_add(size, Ordering::Relaxed);
        // Unbounded in count, bounded in bytes by `limit` (a bounded std channel would
        // allocate all its slots up front: megabytes per lecture).
        match self.tx.send(event) {
            Ok(()) => {}
            Err(_) => {
                self.pending.fetch_sub(size, Ordering::Relaxed);
                self.drop_event();
            }
        }
    }

    fn drop_event(&self) {
        self.metrics.dropped_events.fetch_add(1, Ordering::Relaxed);
        self.dropped.store(true, Ordering::Relaxed);
    }

    /// The recording being written.
    pub fn recording(&self) -> &Arc<Recording> {
        &self.recording
    }
}

/// Why a recording could not be deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// No such recording.
    #[error("no recording {0:?}")]
    NotFound(String),
    /// It is being written.
    #[error("recording {0:?} is still being written: it can be deleted once the lecture ends")]
    Live(String),
    /// Removing its files failed.
    #[error("deleting recording {0:?}: {1}")]
    Io(String, std::io::Error),
}

/// Every recording the relay has.
pub struct Library {
    config: RecordingConfig,
    recordings: RwLock<BTreeMap<String, Arc<Recording>>>,
    /// Folders that hold something we cannot read, and why.
    damaged: RwLock<Vec<(String, String)>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    notifier: Notifier,
    /// Decodes posters ([`crate::poster`]).
    poster: std::sync::OnceLock<Arc<dyn crate::poster::PosterMaker>>,
}

impl Library {
    /// Opens the recordings folder (creating it), reading every recording in it and
    /// recovering those a stopped relay left behind. Never fails: what cannot be read is
    /// reported ([`Library::damaged`]) and left alone.
    pub fn open(config: RecordingConfig) -> Library {
        let lib = Library {
            config,
            recordings: RwLock::default(),
            damaged: RwLock::default(),
            metrics: Arc::default(),
            notifier: Notifier::default(),
            poster: std::sync::OnceLock::new(),
        };
        if let Err(e) = std::fs::create_dir_all(&lib.config.dir) {
            error!(dir = %lib.config.dir.display(), "recordings folder: {e}; lectures will not be recorded until it can be created");
            return lib;
        }
        let entries = match std::fs::read_dir(&lib.config.dir) {
            Ok(e) => e,
            Err(e) => {
                error!(dir = %lib.config.dir.display(), "reading the recordings folder: {e}");
                return lib;
            }
        };
        let mut found = BTreeMap::new();
        for entry in entries.flatten() {
            let dir = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !dir.is_dir() || name.starts_with('.') {
                continue;
            }
            match open_one(&dir) {
                Ok((rec, recovered)) => {
                    if recovered {
                        lib.metrics.recovered.fetch_add(1, Ordering::Relaxed);
                    }
                    found.insert(rec.id.clone(), Arc::new(rec));
                }
                Err(why) => {
                    error!(recording = %name, "recording cannot be read and is left as it is: {why}");
                    lib.damaged_mut().push((name, why));
                }
            }
        }
        info!(dir = %lib.config.dir.display(), recordings = found.len(), "recordings found");
        *lib.recordings_mut() = found;
        lib
    }

    /// Sets the hook told when a recording starts, fails, resumes and ends.
    pub fn on_notice(&self, hook: NoticeHook) {
        *self.notifier.0.write().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    /// Makes a poster for every recording with a picture: lectures recorded from now on as
    /// soon as their first video segment is on disk, and at once those that lack one.
    pub fn set_poster_maker(&self, maker: Arc<dyn crate::poster::PosterMaker>) {
        if self.poster.set(maker.clone()).is_ok() {
            crate::poster::backfill(self.list(), maker);
        }
    }

    /// The settings.
    pub fn config(&self) -> &RecordingConfig {
        &self.config
    }

    fn recordings_mut(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Arc<Recording>>> {
        self.recordings.write().unwrap_or_else(|e| e.into_inner())
    }

    fn damaged_mut(&self) -> RwLockWriteGuard<'_, Vec<(String, String)>> {
        self.damaged.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Folders that could not be read, and why.
    pub fn damaged(&self) -> Vec<(String, String)> {
        self.damaged
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every recording, oldest first.
    pub fn list(&self) -> Vec<Arc<Recording>> {
        let mut v: Vec<_> = self
            .recordings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|r| (r.contents().meta.started, r.id.clone()));
        v
    }

    /// The recording with that id.
    pub fn get(&self, id: &str) -> Option<Arc<Recording>> {
        self.recordings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Starts recording a lecture that begins now.
    pub fn start(
        &self,
        lecture: &str,
        title: Option<String>,
        default_language: &str,
        retention_days: Option<u32>,
    ) -> std::io::Result<Recorder> {
        std::fs::create_dir_all(&self.config.dir)?;
        let started = Timestamp::now();
        let base = format!("{}-{lecture}", started.strftime("%Y%m%dT%H%M%SZ"));
        let (id, dir) = (1..)
            .map(|n| {
                let id = if n == 1 {
                    base.clone()
                } else {
                    format!("{base}-{n}")
                };
                let dir = self.config.dir.join(&id);
                (id, dir)
            })
            .find(|(id, dir)| !dir.exists() && self.get(id).is_none())
            .expect("an unused id");
        std::fs::create_dir(&dir)?;
        let meta = Meta {
            format: FORMAT,
            id: id.clone(),
            lecture: lecture.to_string(),
            title,
            default_language: default_language.to_string(),
            started,
            ended: None,
            state: State::Recording,
            reason: None,
            interruptions: Vec::new(),
            duration_s: None,
            retention_days,
            renditions: Vec::new(),
        };
        meta.save(&dir)?;
        crate::meta::sync_dir(&self.config.dir)?;
        let recording = Arc::new(Recording::new(dir, meta, Some(BTreeMap::new()), true));
        self.recordings_mut().insert(id.clone(), recording.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicBool::new(false));
        crate::writer::spawn(
            recording.clone(),
            rx,
            pending.clone(),
            dropped.clone(),
            self.config.clone(),
            self.metrics.clone(),
            (self.notifier.clone(), self.poster.get().cloned()),
        )?;
        info!(recording = %id, lecture, "recording started");
        self.notifier.tell(Notice::Started, &recording);
        Ok(Recorder {
            tx,
            pending,
            dropped,
            limit: self.config.max_pending_bytes,
            metrics: self.metrics.clone(),
            recording,
        })
    }

    /// Deletes a recording that is not being written.
    pub fn delete(&self, id: &str) -> Result<(), DeleteError> {
        let rec = self
            .get(id)
            .ok_or_else(|| DeleteError::NotFound(id.to_string()))?;
        if rec.is_live() {
            return Err(DeleteError::Live(id.to_string()));
        }
        self.recordings_mut().remove(id);
        // Renamed first, so a crash halfway never leaves a half-deleted recording that
        // looks like one.
        let trash = self.config.dir.join(format!(".deleted-{id}"));
        std::fs::rename(rec.dir(), &trash)
            .and_then(|()| std::fs::remove_dir_all(&trash))
            .map_err(|e| DeleteError::Io(id.to_string(), e))?;
        info!(recording = %id, "recording deleted");
        Ok(())
    }

    /// Deletes recordings older than their retention; returns their ids.
    pub fn expire(&self, now: Timestamp) -> Vec<String> {
        let mut gone = Vec::new();
        for rec in self.list() {
            let (days, started, live) = {
                let c = rec.contents();
                (
                    c.meta.retention_days.unwrap_or(self.config.retention_days),
                    c.meta.started,
                    c.live,
                )
            };
            if live || days == 0 {
                continue;
            }
            let age = now.duration_since(started);
            if age.as_secs() >= i64::from(days) * 86_400 {
                match self.delete(&rec.id) {
                    Ok(()) => {
                        self.metrics.expired.fetch_add(1, Ordering::Relaxed);
                        info!(recording = %rec.id, days, "recording expired");
                        gone.push(rec.id.clone());
                    }
                    Err(e) => warn!("{e}"),
                }
            }
        }
        // Leftovers of deletions a crash interrupted.
        if let Ok(entries) = std::fs::read_dir(&self.config.dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".deleted-") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        gone
    }

    /// Waits (up to `timeout`) until no recording is being written: each writer has
    /// flushed its files and closed its `recording.json`. Whether they all did.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if !self.list().iter().any(|r| r.is_live()) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Counters in Prometheus text format.
    pub fn metrics_text(&self, out: &mut String) {
        use std::fmt::Write as _;
        let m = &self.metrics;
        let live = self.list().iter().filter(|r| r.is_live()).count();
        let failed = self
            .list()
            .iter()
            .filter(|r| r.is_live() && r.contents().meta.state == State::Failed)
            .count();
        for (name, help, v) in [
            (
                "jiangtang_recording_bytes_written_total",
                "Media bytes written to recordings",
                m.bytes_written.load(Ordering::Relaxed),
            ),
            (
                "jiangtang_recording_parts_written_total",
                "Parts written to recordings",
                m.parts_written.load(Ordering::Relaxed),
            ),
            (
                "jiangtang_recording_failures_total",
                "Times a recording failed (disk full, unwritable, too slow)",
                m.failures.load(Ordering::Relaxed),
            ),
            (
                "jiangtang_recording_resumed_total",
                "Times a failed recording resumed",
                m.resumed.load(Ordering::Relaxed),
            ),
            (
                "jiangtang_recording_dropped_events_total",
                "Events dropped because a recording's writer fell behind",
                m.dropped_events.load(Ordering::Relaxed),
            ),
            (
                "jiangtang_recordings_recovered_total",
                "Recordings recovered at start",
                m.recovered.load(Ordering::Relaxed),
            ),
            (
                "jiangtang_recordings_expired_total",
                "Recordings deleted by age",
                m.expired.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP jiangtang_recordings_active Recordings being written\n# TYPE jiangtang_recordings_active gauge\njiangtang_recordings_active {live}"
        );
        let _ = writeln!(
            out,
            "# HELP jiangtang_recordings_failing Recordings being written that are failed now\n# TYPE jiangtang_recordings_failing gauge\njiangtang_recordings_failing {failed}"
        );
        let _ = writeln!(
            out,
            "# HELP jiangtang_recordings_damaged Recording folders that cannot be read\n# TYPE jiangtang_recordings_damaged gauge\njiangtang_recordings_damaged {}",
            self.damaged().len()
        );
    }
}

/// Reads one recording folder; recovers it if a stopped relay left it being written.
fn open_one(dir: &Path) -> Result<(Recording, bool), String> {
    let meta = Meta::load(dir).map_err(|e| match e {
        MetaError::Io(_, e) => format!("recording.json: {e}"),
        e => e.to_string(),
    })?;
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if meta.id != name {
        return Err(format!(
            "recording.json names {:?}, not its folder",
            meta.id
        ));
    }
    let interrupted = meta.ended.is_none();
    if !interrupted {
        return Ok((Recording::new(dir.to_path_buf(), meta, None, false), false));
    }
    let (meta, renditions) = recover(dir, meta).map_err(|e| format!("recovering: {e}"))?;
    Ok((
        Recording::new(dir.to_path_buf(), meta, Some(renditions), false),
        true,
    ))
}

/// Rebuilds a recording the relay stopped writing without ending it: every rendition's
/// index is cut back to the parts that are whole on disk, its media to the last of them,
/// and the recording is marked `recovered`.
fn recover(dir: &Path, mut meta: Meta) -> std::io::Result<(Meta, BTreeMap<String, Rendition>)> {
    let mut renditions = BTreeMap::new();
    let mut end: Option<SystemTime> = None;
    for r in &meta.renditions {
        let rdir = dir.join(&r.id);
        let (lines, _) = read_index(&rdir)?;
        let media_path = rdir.join("media.m4s");
        let media = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&media_path)
        {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let size = media
            .as_ref()
            .map_or(Ok(0), |f| f.metadata().map(|m| m.len()))?;
        let mut good = Vec::new();
        let mut media_end = 0u64;
        for line in lines {
            if let Line::Part(p) = &line
                && !p.gap
            {
                let whole = p.end() <= size
                    && media
                        .as_ref()
                        .is_some_and(|f| is_fragment(f, p.offset, p.len));
                if !whole {
                    break;
                }
                media_end = media_end.max(p.end());
            }
            good.push(line);
        }
        // What the index keeps, and nothing after it.
        let mut text = String::new();
        for l in &good {
            text.push_str(&l.encode());
        }
        let tmp = rdir.join("index.txt.tmp");
        std::fs::write(&tmp, text.as_bytes())?;
        std::fs::File::open(&tmp)?.sync_data()?;
        std::fs::rename(&tmp, rdir.join("index.txt"))?;
        if let Some(f) = &media
            && size > media_end
        {
            f.set_len(media_end)?;
            f.sync_data()?;
        }
        let mut rend = Rendition {
            inits: init_versions(&rdir),
            ..Default::default()
        };
        for l in &good {
            absorb(&mut rend.segments, l);
        }
        if let Some(s) = rend.segments.last() {
            let e = s.pdt + Duration::from_secs_f64(s.duration.max(0.0));
            end = Some(end.map_or(e, |x| x.max(e)));
        }
        renditions.insert(r.id.clone(), rend);
    }
    let duration = renditions
        .values()
        .map(Rendition::duration)
        .fold(0.0, f64::max);
    meta.ended = Some(
        end.and_then(|e| Timestamp::try_from(e).ok())
            .unwrap_or(meta.started),
    );
    meta.duration_s = Some(duration);
    if meta.state == State::Failed
        && let Some(i) = meta.interruptions.last_mut()
        && i.to.is_none()
    {
        i.to = meta.ended;
    }
    meta.state = State::Recovered;
    meta.save(dir)?;
    warn!(recording = %meta.id, seconds = format!("{duration:.1}"), "recording was cut off by a stop of the relay: recovered what was on disk");
    Ok((meta, renditions))
}

/// Whether `[offset, offset + len)` of `f` is one `moof` box followed by one `mdat` box that
/// ends exactly there (what a part is).
fn is_fragment(f: &std::fs::File, offset: u64, len: u64) -> bool {
    let mut head = [0u8; 8];
    if len < 16 || f.read_exact_at(&mut head, offset).is_err() || &head[4..] != b"moof" {
        return false;
    }
    let moof = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
    if moof < 8 || moof + 8 > len || f.read_exact_at(&mut head, offset + moof).is_err() {
        return false;
    }
    let mdat = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
    &head[4..] == b"mdat" && moof + mdat == len
}
