//! The thread that writes one recording: parts as they close, the index line after each,
//! everything flushed to the disk at the end of each segment.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use jiff::Timestamp;
use tracing::{error, info, warn};

use crate::index::{Line, PartLine};
use crate::meta::{Interruption, RenditionMeta, State};
use crate::store::{Metrics, Notice, Notifier, Recording, RecordingConfig, absorb};
use crate::{Event, PartMeta};

/// Starts the writer of `recording`.
pub(crate) fn spawn(
    recording: Arc<Recording>,
    rx: Receiver<Event>,
    pending: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
    config: RecordingConfig,
    metrics: Arc<Metrics>,
    (notifier, poster): (Notifier, Option<Arc<dyn crate::poster::PosterMaker>>),
) -> std::io::Result<()> {
    let name = format!("rec-{}", recording.id);
    let mut w = Writer {
        recording,
        config,
        metrics,
        notifier,
        pending,
        dropped,
        files: HashMap::new(),
        inits: HashMap::new(),
        failed: None,
        dropped_msn: None,
        resume_from: 0,
        last_resume_try: None,
        poster: poster.map(crate::poster::Pending::new),
    };
    std::thread::Builder::new()
        .name(name.chars().take(15).collect())
        .spawn(move || w.run(rx))?;
    Ok(())
}

/// A rendition's open files.
struct Files {
    media: File,
    index: File,
    /// Bytes of whole parts in `media`.
    media_len: u64,
    /// Bytes of whole lines in `index`.
    index_len: u64,
}

struct Writer {
    recording: Arc<Recording>,
    config: RecordingConfig,
    metrics: Arc<Metrics>,
    notifier: Notifier,
    pending: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
    files: HashMap<Arc<str>, Files>,
    /// The latest initialization segment of each rendition, to write when it first has a
    /// part on disk (or again after a failure).
    inits: HashMap<Arc<str>, (u32, Bytes, RenditionMeta)>,
    /// Why writing stopped, while it is stopped.
    failed: Option<String>,
    /// The latest segment something was dropped from while failed: writing resumes with a
    /// later one, whole.
    dropped_msn: Option<u64>,
    /// Parts of earlier segments than this are not written (they were cut by a failure).
    resume_from: u64,
    last_resume_try: Option<Instant>,
    /// The poster, made once the first video segment is on disk.
    poster: Option<crate::poster::Pending>,
}

/// How often a failed recording looks again at whether it can resume.
const RESUME_EVERY: Duration = Duration::from_secs(2);

impl Writer {
    fn run(&mut self, rx: Receiver<Event>) {
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(event) => {
                    let size = match &event {
                        Event::Init { data, .. } | Event::Part { data, .. } => data.len(),
                        _ => 0,
                    } + 64;
                    self.pending.fetch_sub(size, Ordering::Relaxed);
                    if self.dropped.swap(false, Ordering::Relaxed) {
                        self.fail("writing fell behind the lecture (the disk is too slow)".into());
                        // What was dropped is somewhere before this event.
                        if let Event::Part { part, .. } = &event {
                            self.dropped_msn = Some(part.msn.max(self.dropped_msn.unwrap_or(0)));
                        }
                    }
                    if matches!(event, Event::Ended) {
                        self.finish();
                        return;
                    }
                    self.handle(event);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.finish();
                    return;
                }
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Init {
                rendition,
                version,
                data,
                track,
            } => {
                self.inits.insert(rendition.clone(), (version, data, track));
                if self.failed.is_none()
                    && let Err(e) = self.write_init(&rendition, version)
                {
                    self.fail(io_reason(&e));
                }
            }
            Event::Part {
                rendition,
                part,
                data,
            } => {
                if part.msn < self.resume_from {
                    return;
                }
                if self.failed.is_some() && !self.try_resume(&part) {
                    self.dropped_msn = Some(part.msn.max(self.dropped_msn.unwrap_or(0)));
                    return;
                }
                if let Err(e) = self.write_part(&rendition, &part, &data) {
                    self.fail(io_reason(&e));
                    self.dropped_msn = Some(part.msn.max(self.dropped_msn.unwrap_or(0)));
                }
            }
            Event::SegmentEnd { rendition, msn } => {
                if self.failed.is_some() || msn < self.resume_from {
                    return;
                }
                if let Err(e) = self.end_segment(&rendition, msn) {
                    self.fail(io_reason(&e));
                    return;
                }
                if let Some(p) = &self.poster
                    && self
                        .inits
                        .get(&rendition)
                        .is_some_and(|(_, _, track)| track.is_video())
                {
                    p.segment_done(&self.recording);
                }
                self.check_space();
            }
            Event::Ended => {}
        }
    }

    /// Opens a rendition's files, creating its folder, and lists it in `recording.json`.
    fn open(&mut self, rendition: &Arc<str>) -> std::io::Result<&mut Files> {
        if !self.files.contains_key(rendition) {
            let dir = self.recording.dir().join(&**rendition);
            std::fs::create_dir_all(&dir)?;
            let media = OpenOptions::new()
                .create(true)
                .read(true)
                .write(true)
                .truncate(false)
                .open(dir.join("media.m4s"))?;
            let index = OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("index.txt"))?;
            let (media_len, index_len) = (media.metadata()?.len(), index.metadata()?.len());
            crate::meta::sync_dir(&dir)?;
            self.files.insert(
                rendition.clone(),
                Files {
                    media,
                    index,
                    media_len,
                    index_len,
                },
            );
            self.recording
                .contents_mut()
                .renditions_mut()
                .entry(rendition.to_string())
                .or_default();
        }
        Ok(self.files.get_mut(rendition).expect("inserted above"))
    }

    /// Writes the latest initialization segment of `rendition` if it is `version` and not
    /// on disk yet.
    fn write_init(&mut self, rendition: &Arc<str>, version: u32) -> std::io::Result<()> {
        let Some((v, data, track)) = self.inits.get(rendition).cloned() else {
            return Ok(());
        };
        if v != version {
            return Ok(());
        }
        let on_disk = self
            .recording
            .contents()
            .renditions
            .as_ref()
            .and_then(|r| r.get(&**rendition))
            .is_some_and(|r| r.inits.contains(&v));
        if on_disk {
            return Ok(());
        }
        self.open(rendition)?;
        let dir = self.recording.dir().join(&**rendition);
        let tmp = dir.join(format!("init-{v}.mp4.tmp"));
        let mut f = File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_data()?;
        std::fs::rename(&tmp, dir.join(format!("init-{v}.mp4")))?;
        crate::meta::sync_dir(&dir)?;
        let save = {
            let mut c = self.recording.contents_mut();
            if let Some(r) = c.renditions_mut().get_mut(&**rendition) {
                r.inits.push(v);
                r.inits.sort_unstable();
            }
            // The latest description of each rendition (a new resolution after a change).
            match c.meta.renditions.iter_mut().find(|r| r.id == track.id) {
                Some(r) if *r == track => None,
                Some(r) => {
                    *r = track;
                    Some(c.meta.clone())
                }
                None => {
                    c.meta.renditions.push(track);
                    Some(c.meta.clone())
                }
            }
        };
        if let Some(meta) = save {
            meta.save(self.recording.dir())?;
        }
        Ok(())
    }

    fn write_part(
        &mut self,
        rendition: &Arc<str>,
        part: &PartMeta,
        data: &Bytes,
    ) -> std::io::Result<()> {
        self.write_init(rendition, part.init_version)?;
        let files = self.open(rendition)?;
        let offset = files.media_len;
        if !data.is_empty() {
            files.media.write_all_at(data, offset)?;
        }
        let line = Line::Part(PartLine {
            msn: part.msn,
            part: part.index,
            offset,
            len: data.len() as u64,
            duration_us: (part.duration.max(0.0) * 1e6).round() as u64,
            independent: part.independent,
            gap: part.gap,
            discontinuity: part.discontinuity,
            dseq: part.dseq,
            init: part.init_version,
            segment_pdt_ms: part
                .segment_pdt
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        });
        let text = line.encode();
        files.index.write_all(text.as_bytes())?;
        files.media_len += data.len() as u64;
        files.index_len += text.len() as u64;
        self.metrics
            .bytes_written
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.metrics.parts_written.fetch_add(1, Ordering::Relaxed);
        let mut c = self.recording.contents_mut();
        if let Some(r) = c.renditions_mut().get_mut(&**rendition) {
            absorb(&mut r.segments, &line);
        }
        Ok(())
    }

    fn end_segment(&mut self, rendition: &Arc<str>, msn: u64) -> std::io::Result<()> {
        let Some(files) = self.files.get_mut(rendition) else {
            return Ok(());
        };
        let line = Line::SegmentEnd { msn };
        let text = line.encode();
        files.index.write_all(text.as_bytes())?;
        files.index_len += text.len() as u64;
        // At most the segment in progress is lost to a power cut.
        files.media.sync_data()?;
        files.index.sync_data()?;
        let mut c = self.recording.contents_mut();
        if let Some(r) = c.renditions_mut().get_mut(&**rendition) {
            absorb(&mut r.segments, &line);
        }
        Ok(())
    }

    /// Stops at the free-space floor, before the disk is full.
    fn check_space(&mut self) {
        if self.config.min_free_bytes == 0 {
            return;
        }
        if let Ok(free) = crate::space::available(self.recording.dir())
            && free < self.config.min_free_bytes
        {
            self.fail(format!(
                "free space ({} MiB) is below the floor of {} MiB",
                free >> 20,
                self.config.min_free_bytes >> 20
            ));
        }
    }

    /// Whether writing can go on again, from this part: it starts a segment nothing was
    /// dropped from, and there is room on the disk again.
    fn try_resume(&mut self, part: &PartMeta) -> bool {
        if part.index != 0 || self.dropped_msn.is_some_and(|d| part.msn <= d) {
            return false;
        }
        if self
            .last_resume_try
            .is_some_and(|t| t.elapsed() < RESUME_EVERY)
        {
            return false;
        }
        self.last_resume_try = Some(Instant::now());
        let floor = self.config.min_free_bytes;
        let needed = floor + (floor / 10).max(16 << 20);
        match crate::space::available(self.recording.dir()) {
            Ok(free) if free >= needed => {}
            _ => return false,
        }
        // Whatever a failed write left beyond the last whole part or line goes.
        for f in self.files.values_mut() {
            if f.media.set_len(f.media_len).is_err() || f.index.set_len(f.index_len).is_err() {
                return false;
            }
        }
        let reason = self.failed.take().unwrap_or_default();
        self.resume_from = part.msn;
        self.dropped_msn = None;
        self.metrics.resumed.fetch_add(1, Ordering::Relaxed);
        let meta = {
            let mut c = self.recording.contents_mut();
            c.meta.state = State::Recording;
            c.meta.reason = None;
            if let Some(i) = c.meta.interruptions.last_mut() {
                i.to = Some(Timestamp::now());
            }
            c.meta.clone()
        };
        if let Err(e) = meta.save(self.recording.dir()) {
            warn!(recording = %self.recording.id, "recording.json: {e}");
        }
        info!(recording = %self.recording.id, msn = part.msn, "recording resumed after: {reason}");
        self.notifier.tell(Notice::Resumed, &self.recording);
        true
    }

    fn fail(&mut self, reason: String) {
        if self.failed.is_some() {
            return;
        }
        error!(recording = %self.recording.id, "recording failed: {reason}; the lecture goes on, recording resumes when it can");
        self.metrics.failures.fetch_add(1, Ordering::Relaxed);
        let meta = {
            let mut c = self.recording.contents_mut();
            c.meta.state = State::Failed;
            c.meta.reason = Some(reason.clone());
            c.meta.interruptions.push(Interruption {
                from: Timestamp::now(),
                to: None,
                reason: reason.clone(),
            });
            c.meta.clone()
        };
        self.failed = Some(reason);
        // On a full disk this may fail too: the state is in memory (the API) and the log.
        if let Err(e) = meta.save(self.recording.dir()) {
            warn!(recording = %self.recording.id, "recording.json: {e}");
        }
        self.notifier.tell(Notice::Failed, &self.recording);
    }

    /// The lecture is over (or the relay stops): flush, and mark the recording done.
    fn finish(&mut self) {
        for (id, f) in &mut self.files {
            if self.failed.is_none()
                && let Err(e) = f.media.sync_data().and_then(|()| f.index.sync_data())
            {
                warn!(recording = %self.recording.id, rendition = %id, "flushing: {e}");
            }
        }
        let meta = {
            let mut c = self.recording.contents_mut();
            c.live = false;
            let duration = c.duration().unwrap_or(0.0);
            c.meta.duration_s = Some(duration);
            c.meta.ended = Some(Timestamp::now());
            if c.meta.state == State::Recording {
                c.meta.state = State::Complete;
            }
            c.meta.clone()
        };
        match meta.save(self.recording.dir()) {
            Ok(()) => {
                info!(recording = %self.recording.id, seconds = format!("{:.1}", meta.duration_s.unwrap_or(0.0)), state = meta.state.as_str(), "recording ended")
            }
            Err(e) => {
                error!(recording = %self.recording.id, "recording.json could not be written at the end ({e}); it will be recovered at the next start")
            }
        }
        self.notifier.tell(Notice::Ended, &self.recording);
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(28) => "the disk is full (no space left on device)".into(),
        Some(30) => "the disk is read-only".into(),
        Some(122) => "the disk quota is exceeded".into(),
        _ => format!("writing failed: {e}"),
    }
}
