//! A replay as one ordinary MP4 file, remuxed from the recording's CMAF parts without
//! re-encoding: the video and one dialect, or the video and every dialect as labelled audio
//! tracks.
//!
//! The file is progressive and "moov first": `ftyp`, a `moov` computed from the parts'
//! `moof` boxes (sample sizes, durations, composition offsets, sync samples, one chunk per
//! part), then one `mdat` holding the parts' sample data, interleaved in time. Only the
//! `moov` is built in memory; the `mdat` is a list of byte ranges of the renditions'
//! `media.m4s` files, so any range of the file is read straight from the recording
//! ([`Download::read`]) and the download streams without being written anywhere.
//!
//! Timing: each track's samples keep their durations; time missing from a track (segments
//! lost to a full disk, gap parts) is added to the sample before it, so every track stays
//! on the lecture's timeline, and a track that starts later (an interpreter who joined) or
//! a picture whose first frame is presented after its decode time gets an edit list.
//!
//! Languages: `mdhd` holds three letters. Our dialect tags are ISO 639-3 codes (`cmn`,
//! `yue`, `hak`) that ISO 639-2 lacks (it has only `chi`/`zho` for all of them); the file
//! carries the tag's own three-letter code in `mdhd` (as the live CMAF init segments do,
//! so every reader tells the dialects apart), the whole BCP-47 tag in an `elng` box, and
//! the dialect's display name as the track's name (`hdlr` and `udta/name`). See
//! [`mdhd_language`].

use std::collections::HashMap;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;

use bytes::Bytes;
use mp4_atom::{Atom, Buf, BufMut, Decode, Encode, FourCC};

use crate::meta::RenditionMeta;
use crate::store::{Recording, Rendition};

/// Timescale of the movie header and edit lists (milliseconds).
const MOVIE_TIMESCALE: u32 = 1000;
/// Seconds from 1904-01-01 (MP4's epoch) to 1970-01-01.
const MP4_EPOCH_OFFSET: u64 = 2_082_844_800;
/// A `moof` larger than this is not one of ours: damage.
const MAX_MOOF: u64 = 4 << 20;

/// Which audio goes into the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dialects {
    /// The dialect with this BCP-47 tag.
    One(String),
    /// Every dialect, each its own track.
    All,
}

/// Why a download cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum Mp4Error {
    /// The recording is still being written.
    #[error("the recording is still being made: its download is ready when the lecture ends")]
    Live,
    /// No such dialect in the recording.
    #[error("the recording has no dialect {0:?}")]
    NoDialect(String),
    /// Nothing recorded.
    #[error("the recording has no media")]
    Empty,
    /// The files are not what the recorder writes.
    #[error("the recording is damaged: {0}")]
    Damaged(String),
    /// Reading failed.
    #[error("reading the recording: {0}")]
    Io(#[from] std::io::Error),
}

fn damaged(what: impl Into<String>) -> Mp4Error {
    Mp4Error::Damaged(what.into())
}

impl From<mp4_atom::Error> for Mp4Error {
    fn from(e: mp4_atom::Error) -> Self {
        Mp4Error::Damaged(e.to_string())
    }
}

/// A run of sample data in the `mdat`: bytes of one rendition's `media.m4s`.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    /// Offset in the MP4 file.
    out: u64,
    /// Index into [`Download::files`].
    file: u16,
    /// Offset in that file.
    src: u64,
    len: u64,
}

/// One track of the download.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackInfo {
    /// `video` or `audio`.
    pub kind: String,
    /// BCP-47 tag of a dialect.
    pub language: Option<String>,
    /// What `mdhd` says.
    pub mdhd_language: String,
    /// The track's name (the dialect's display name).
    pub name: String,
    /// Played unless another is chosen.
    pub default: bool,
}

/// A replay's MP4 file, ready to be read in any range.
#[derive(Debug)]
pub struct Download {
    /// Bytes in the file.
    pub len: u64,
    /// `ftyp` + `moov` + the `mdat` header.
    head: Bytes,
    chunks: Vec<Chunk>,
    files: Vec<PathBuf>,
    /// The tracks, in file order.
    pub tracks: Vec<TrackInfo>,
    /// Seconds.
    pub duration: f64,
}

impl Download {
    /// Computes the MP4 file of a finished recording: reads its initialization segments
    /// and every part's `moof` (not the media). `rank` orders the dialects of
    /// [`Dialects::All`] (the configured order); the recording's default dialect comes
    /// first and is the track players pick.
    pub fn build(
        rec: &Recording,
        dialects: &Dialects,
        rank: impl Fn(&str) -> usize,
    ) -> Result<Download, Mp4Error> {
        if rec.is_live() {
            return Err(Mp4Error::Live);
        }
        let meta = rec.meta();
        let renditions = rec.renditions()?;
        let has = |r: &RenditionMeta| renditions.get(&r.id).is_some_and(has_media);
        let mut chosen: Vec<&RenditionMeta> = Vec::new();
        if let Some(v) = meta.renditions.iter().find(|r| r.is_video() && has(r)) {
            chosen.push(v);
        }
        let mut audio: Vec<&RenditionMeta> = meta
            .renditions
            .iter()
            .filter(|r| !r.is_video() && has(r))
            .collect();
        match dialects {
            Dialects::One(tag) => {
                let a = audio
                    .iter()
                    .find(|r| r.language.as_deref() == Some(tag.as_str()))
                    .ok_or_else(|| Mp4Error::NoDialect(tag.clone()))?;
                chosen.push(a);
            }
            Dialects::All => {
                audio.sort_by_key(|r| {
                    let lang = r.language.as_deref().unwrap_or("");
                    (
                        lang != meta.default_language,
                        if lang.is_empty() {
                            usize::MAX
                        } else {
                            rank(lang)
                        },
                    )
                });
                chosen.extend(audio);
            }
        }
        if chosen.is_empty() {
            return Err(Mp4Error::Empty);
        }
        let mut tracks = Vec::new();
        for r in &chosen {
            let rend = renditions.get(&r.id).ok_or(Mp4Error::Empty)?;
            let dir = rec.dir().join(&r.id);
            let mut t = TrackBuild::new(r, tracks.len() as u16);
            t.read(rec, &dir, rend)?;
            if t.sizes.is_empty() {
                continue;
            }
            tracks.push((t, dir.join("media.m4s")));
        }
        if tracks.is_empty() {
            return Err(Mp4Error::Empty);
        }
        let (builds, files): (Vec<TrackBuild>, Vec<PathBuf>) = tracks.into_iter().unzip();
        let started = meta.started.as_second().max(0) as u64 + MP4_EPOCH_OFFSET;
        layout(builds, files, meta.title.as_deref(), started)
    }

    /// Bytes `[offset, offset + len)` of the file (cut at its end).
    pub fn read(&self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let end = (offset.saturating_add(len)).min(self.len);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut pos = offset;
        let head = self.head.len() as u64;
        if pos < head {
            let to = end.min(head);
            out.extend_from_slice(&self.head[pos as usize..to as usize]);
            pos = to;
        }
        if pos >= end {
            return Ok(out);
        }
        let mut open: HashMap<u16, std::fs::File> = HashMap::new();
        let mut i = self.chunks.partition_point(|c| c.out + c.len <= pos);
        while pos < end {
            let c = self.chunks.get(i).ok_or_else(|| {
                std::io::Error::other("read beyond the last chunk of the MP4 download")
            })?;
            let from = pos - c.out;
            let n = (c.len - from).min(end - pos);
            let f = match open.entry(c.file) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(std::fs::File::open(&self.files[c.file as usize])?)
                }
            };
            let at = out.len();
            out.resize(at + n as usize, 0);
            f.read_exact_at(&mut out[at..], c.src + from)?;
            pos += n;
            i += 1;
        }
        Ok(out)
    }

    /// Bytes of `ftyp` + `moov` + the `mdat` header: what a player reads before the media.
    pub fn head_len(&self) -> u64 {
        self.head.len() as u64
    }

    /// The recording folder's renditions this file reads (for caches to tell files apart).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

fn has_media(r: &Rendition) -> bool {
    r.segments.iter().any(|s| !s.gap && s.len > 0)
}

/// The three letters for `mdhd` of a BCP-47 tag: the primary language subtag when it has
/// three letters (an ISO 639-2 or 639-3 code: `yue`, `cmn`, `hak`, `eng`), the language of an
/// extended language subtag (`zh-yue` is `yue`), ISO 639-2/T for the common two-letter
/// codes (`zh` → `zho`), else `und`. The B codes of ISO 639-2 become their T codes (`chi` →
/// `zho`), as the MP4 specification asks.
pub fn mdhd_language(tag: &str) -> String {
    let tag = tag.to_ascii_lowercase();
    let mut subtags = tag.split('-');
    let primary = subtags.next().unwrap_or("");
    let letters = |s: &str| s.bytes().all(|b| b.is_ascii_lowercase());
    if !letters(primary) {
        return "und".into();
    }
    let code = match primary.len() {
        3 => primary.to_string(),
        2 => match subtags.next() {
            Some(ext) if ext.len() == 3 && letters(ext) => ext.to_string(),
            _ => match ISO639_1.iter().find(|(two, _)| *two == primary) {
                Some((_, three)) => three.to_string(),
                None => return "und".into(),
            },
        },
        _ => return "und".into(),
    };
    match ISO639_2_B_TO_T.iter().find(|(b, _)| *b == code) {
        Some((_, t)) => t.to_string(),
        None => code,
    }
}

/// ISO 639-1 to ISO 639-2/T for languages a district relay may carry.
const ISO639_1: &[(&str, &str)] = &[
    ("zh", "zho"),
    ("en", "eng"),
    ("bo", "bod"),
    ("ug", "uig"),
    ("mn", "mon"),
    ("ii", "iii"),
    ("za", "zha"),
    ("ko", "kor"),
    ("ja", "jpn"),
    ("ru", "rus"),
    ("vi", "vie"),
    ("th", "tha"),
    ("fr", "fra"),
    ("de", "deu"),
    ("es", "spa"),
    ("pt", "por"),
    ("ar", "ara"),
    ("kk", "kaz"),
    ("ky", "kir"),
    ("ms", "msa"),
    ("id", "ind"),
];

/// ISO 639-2 bibliographic codes that differ from their terminology codes (those likely
/// here).
const ISO639_2_B_TO_T: &[(&str, &str)] = &[
    ("chi", "zho"),
    ("tib", "bod"),
    ("ger", "deu"),
    ("fre", "fra"),
    ("may", "msa"),
    ("bur", "mya"),
];

/// One track as its samples are read.
struct TrackBuild {
    rendition: RenditionMeta,
    index: u16,
    timescale: u32,
    /// Sample entries, one per initialization segment version used.
    entries: Vec<mp4_atom::Codec>,
    by_version: HashMap<u32, u32>,
    size: (u16, u16),
    durations: Vec<u32>,
    sizes: Vec<u32>,
    cts: Vec<i64>,
    /// 1-based numbers of sync samples.
    sync: Vec<u32>,
    runs: Vec<Run>,
    first_dts: Option<u64>,
    next_dts: u64,
}

/// The samples of one part: contiguous bytes of `media.m4s`.
struct Run {
    /// Decode time in seconds, for interleaving.
    time: f64,
    track: u16,
    src: u64,
    len: u64,
    samples: u32,
    /// 1-based sample description index.
    entry: u32,
}

impl TrackBuild {
    fn new(r: &RenditionMeta, index: u16) -> Self {
        TrackBuild {
            rendition: r.clone(),
            index,
            timescale: 0,
            entries: Vec::new(),
            by_version: HashMap::new(),
            size: (0, 0),
            durations: Vec::new(),
            sizes: Vec::new(),
            cts: Vec::new(),
            sync: Vec::new(),
            runs: Vec::new(),
            first_dts: None,
            next_dts: 0,
        }
    }

    /// The sample description index of initialization segment `version`, reading it the
    /// first time.
    fn entry(&mut self, rec: &Recording, version: u32) -> Result<(u32, mp4_atom::Trex), Mp4Error> {
        let data = rec.init(&self.rendition.id, version)?;
        let mut buf = &data[..];
        let _ftyp = mp4_atom::Ftyp::decode(&mut buf)?;
        let moov = mp4_atom::Moov::decode(&mut buf)?;
        let trak = moov
            .trak
            .first()
            .ok_or_else(|| damaged("an init segment without a track"))?;
        let trex = moov
            .mvex
            .as_ref()
            .and_then(|m| m.trex.first().cloned())
            .unwrap_or_default();
        if let Some(&n) = self.by_version.get(&version) {
            return Ok((n, trex));
        }
        let timescale = trak.mdia.mdhd.timescale;
        if timescale == 0 || (self.timescale != 0 && timescale != self.timescale) {
            return Err(damaged(format!(
                "{}: the timescale changed between initialization segments",
                self.rendition.id
            )));
        }
        self.timescale = timescale;
        if self.entries.is_empty() {
            self.size = (trak.tkhd.width.integer(), trak.tkhd.height.integer());
        }
        let codec = trak
            .mdia
            .minf
            .stbl
            .stsd
            .codecs
            .first()
            .cloned()
            .ok_or_else(|| damaged("an init segment without a sample entry"))?;
        self.entries.push(codec);
        let n = self.entries.len() as u32;
        self.by_version.insert(version, n);
        Ok((n, trex))
    }

    /// Reads every part's `moof` of the rendition.
    fn read(
        &mut self,
        rec: &Recording,
        dir: &std::path::Path,
        rend: &Rendition,
    ) -> Result<(), Mp4Error> {
        let file = match std::fs::File::open(dir.join("media.m4s")) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let file_len = file.metadata()?.len();
        let mut trexes: HashMap<u32, mp4_atom::Trex> = HashMap::new();
        for seg in rend.segments.iter().filter(|s| !s.gap && s.len > 0) {
            let entry = match trexes.get(&seg.init) {
                Some(t) => (self.by_version[&seg.init], t.clone()),
                None => {
                    let (n, trex) = self.entry(rec, seg.init)?;
                    trexes.insert(seg.init, trex.clone());
                    (n, trex)
                }
            };
            let end = seg.offset + seg.len;
            if end > file_len {
                return Err(damaged(format!(
                    "{}: segment {} ends beyond its media file",
                    self.rendition.id, seg.msn
                )));
            }
            let mut pos = seg.offset;
            while pos < end {
                pos = self.part(&file, pos, end, entry.0, &entry.1)?;
            }
        }
        Ok(())
    }

    /// Reads the part (`moof` + `mdat`) at `pos`; returns where the next one starts.
    fn part(
        &mut self,
        file: &std::fs::File,
        pos: u64,
        end: u64,
        entry: u32,
        trex: &mp4_atom::Trex,
    ) -> Result<u64, Mp4Error> {
        let id = &self.rendition.id;
        let mut head = [0u8; 8];
        file.read_exact_at(&mut head, pos)?;
        let moof_len = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
        if &head[4..] != b"moof" || !(16..=MAX_MOOF).contains(&moof_len) || pos + moof_len + 8 > end
        {
            return Err(damaged(format!("{id}: no moof at byte {pos}")));
        }
        // The moof and the mdat's header, in one read.
        let mut buf = vec![0u8; moof_len as usize + 8];
        file.read_exact_at(&mut buf, pos)?;
        let mdat = &buf[moof_len as usize..];
        let mdat_len = u64::from(u32::from_be_bytes([mdat[0], mdat[1], mdat[2], mdat[3]]));
        if &mdat[4..8] != b"mdat" || mdat_len < 8 || pos + moof_len + mdat_len > end {
            return Err(damaged(format!(
                "{id}: no mdat after the moof at byte {pos}"
            )));
        }
        let part_end = pos + moof_len + mdat_len;
        let mdat_start = pos + moof_len + 8;
        let moof = mp4_atom::Moof::decode(&mut &buf[..moof_len as usize])?;
        for traf in &moof.traf {
            let tfhd = &traf.tfhd;
            let base = match tfhd.base_data_offset {
                Some(b) => pos + b,
                None => pos,
            };
            let mut dts = match &traf.tfdt {
                Some(t) => t.base_media_decode_time,
                None => self.next_dts,
            };
            match self.first_dts {
                None => self.first_dts = Some(dts),
                Some(_) => {
                    if dts > self.next_dts {
                        // Time missing from this track: the sample before lasts through it.
                        let gap = dts - self.next_dts;
                        if let Some(d) = self.durations.last_mut() {
                            *d = d.saturating_add(u32::try_from(gap).unwrap_or(u32::MAX));
                        }
                    }
                    // Overlapping time (never written by our packager) is played in order.
                    dts = dts.max(self.next_dts);
                }
            }
            let mut data = base;
            for trun in &traf.trun {
                if let Some(o) = trun.data_offset {
                    data = base
                        .checked_add_signed(i64::from(o))
                        .ok_or_else(|| damaged(format!("{id}: bad data offset at byte {pos}")))?;
                }
                let start = data;
                let mut count = 0u32;
                let time = dts as f64 / f64::from(self.timescale.max(1));
                for s in trun.samples.iter() {
                    let duration = s
                        .duration
                        .or(tfhd.default_sample_duration)
                        .unwrap_or(trex.default_sample_duration);
                    let size = s
                        .size
                        .or(tfhd.default_sample_size)
                        .unwrap_or(trex.default_sample_size);
                    let flags = s
                        .flags
                        .or(tfhd.default_sample_flags)
                        .unwrap_or(trex.default_sample_flags);
                    self.durations.push(duration);
                    self.sizes.push(size);
                    self.cts.push(s.cts.unwrap_or(0));
                    // sample_is_non_sync_sample
                    if flags & 0x0001_0000 == 0 {
                        self.sync.push(self.sizes.len() as u32);
                    }
                    data += u64::from(size);
                    dts += u64::from(duration);
                    count += 1;
                }
                if count == 0 {
                    continue;
                }
                if start < mdat_start || data > part_end {
                    return Err(damaged(format!(
                        "{id}: samples outside their mdat at byte {pos}"
                    )));
                }
                self.runs.push(Run {
                    time,
                    track: self.index,
                    src: start,
                    len: data - start,
                    samples: count,
                    entry,
                });
            }
            self.next_dts = dts;
        }
        Ok(part_end)
    }

    fn media_duration(&self) -> u64 {
        self.durations.iter().map(|&d| u64::from(d)).sum()
    }

    /// When its first sample is presented, in seconds of the lecture.
    fn first_pts(&self) -> f64 {
        let dts = self.first_dts.unwrap_or(0) as f64;
        let cts = self.cts.first().copied().unwrap_or(0).max(0) as f64;
        (dts + cts) / f64::from(self.timescale.max(1))
    }
}

/// Where the tracks' data goes in the file, and the `moov` that says so.
fn layout(
    mut tracks: Vec<TrackBuild>,
    files: Vec<PathBuf>,
    title: Option<&str>,
    created: u64,
) -> Result<Download, Mp4Error> {
    // Parts in time order across tracks: a player reading the file front to back finds the
    // picture and the sound of a moment together.
    let mut runs: Vec<Run> = tracks
        .iter_mut()
        .flat_map(|t| std::mem::take(&mut t.runs))
        .collect();
    runs.sort_by(|a, b| a.time.total_cmp(&b.time).then(a.track.cmp(&b.track)));
    let payload: u64 = runs.iter().map(|r| r.len).sum();
    let large = payload + (256 << 20) > u64::from(u32::MAX);
    let mdat_header: Vec<u8> = if payload + 8 > u64::from(u32::MAX) {
        let mut h = 1u32.to_be_bytes().to_vec();
        h.extend_from_slice(b"mdat");
        h.extend_from_slice(&(payload + 16).to_be_bytes());
        h
    } else {
        let mut h = ((payload + 8) as u32).to_be_bytes().to_vec();
        h.extend_from_slice(b"mdat");
        h
    };
    let default_audio = tracks
        .iter()
        .position(|t| !t.rendition.is_video())
        .unwrap_or(usize::MAX);
    let t0 = tracks
        .iter()
        .map(TrackBuild::first_pts)
        .fold(f64::INFINITY, f64::min);

    let ftyp = mp4_atom::Ftyp {
        major_brand: b"isom".into(),
        minor_version: 512,
        compatible_brands: vec![
            b"isom".into(),
            b"iso2".into(),
            b"avc1".into(),
            b"mp41".into(),
        ],
    };
    let mut ftyp_bytes = Vec::new();
    ftyp.encode(&mut ftyp_bytes)?;

    // Chunk offsets depend on the moov's size, which does not depend on their values:
    // encode once to learn it, then again with the real offsets.
    let mut offsets: Vec<Vec<u64>> = vec![Vec::new(); tracks.len()];
    let moov_len = {
        let placeholder: Vec<Vec<u64>> = tracks
            .iter()
            .map(|t| vec![0; runs.iter().filter(|r| r.track == t.index).count()])
            .collect();
        moov(
            &tracks,
            &runs,
            &placeholder,
            large,
            default_audio,
            t0,
            title,
            created,
        )?
        .len()
    };
    let head_len = (ftyp_bytes.len() + moov_len + mdat_header.len()) as u64;
    let mut chunks = Vec::with_capacity(runs.len());
    let mut out = head_len;
    for r in &runs {
        offsets[r.track as usize].push(out);
        chunks.push(Chunk {
            out,
            file: r.track,
            src: r.src,
            len: r.len,
        });
        out += r.len;
    }
    let moov_bytes = moov(
        &tracks,
        &runs,
        &offsets,
        large,
        default_audio,
        t0,
        title,
        created,
    )?;
    if moov_bytes.len() != moov_len {
        return Err(damaged("the moov changed size between passes"));
    }
    let mut head = ftyp_bytes;
    head.extend_from_slice(&moov_bytes);
    head.extend_from_slice(&mdat_header);
    let duration = tracks
        .iter()
        .map(|t| t.first_pts() - t0 + t.media_duration() as f64 / f64::from(t.timescale.max(1)))
        .fold(0.0, f64::max);
    let infos = tracks
        .iter()
        .enumerate()
        .map(|(i, t)| TrackInfo {
            kind: t.rendition.kind.clone(),
            language: t.rendition.language.clone(),
            mdhd_language: track_language(&t.rendition),
            name: track_name(&t.rendition),
            default: t.rendition.is_video() || i == default_audio,
        })
        .collect();
    Ok(Download {
        len: out,
        head: head.into(),
        chunks,
        files,
        tracks: infos,
        duration,
    })
}

fn track_language(r: &RenditionMeta) -> String {
    match &r.language {
        Some(l) if !r.is_video() => mdhd_language(l),
        _ => "und".into(),
    }
}

fn track_name(r: &RenditionMeta) -> String {
    if r.is_video() {
        "Video".into()
    } else if !r.name.is_empty() {
        r.name.clone()
    } else {
        r.language.clone().unwrap_or_else(|| "Audio".into())
    }
}

/// Run-length entries of `values`.
fn runs_of<T: PartialEq + Copy>(values: &[T]) -> Vec<(u32, T)> {
    let mut out: Vec<(u32, T)> = Vec::new();
    for &v in values {
        match out.last_mut() {
            Some((n, last)) if *last == v => *n += 1,
            _ => out.push((1, v)),
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn moov(
    tracks: &[TrackBuild],
    runs: &[Run],
    offsets: &[Vec<u64>],
    large: bool,
    default_audio: usize,
    t0: f64,
    title: Option<&str>,
    created: u64,
) -> Result<Vec<u8>, Mp4Error> {
    let movie = |seconds: f64| (seconds * f64::from(MOVIE_TIMESCALE)).round().max(0.0) as u64;
    let mut movie_duration = 0u64;
    let mut traks: Vec<Vec<u8>> = Vec::new();
    for (i, t) in tracks.iter().enumerate() {
        let ts = t.timescale.max(1);
        let media_duration = t.media_duration();
        let cts0 = t.cts.first().copied().unwrap_or(0).max(0) as u64;
        let delay = movie(t.first_pts() - t0);
        let shown = movie(media_duration.saturating_sub(cts0) as f64 / f64::from(ts));
        let track_duration = delay + shown;
        movie_duration = movie_duration.max(track_duration);
        let video = t.rendition.is_video();

        let mut edits = Vec::new();
        if delay > 0 {
            edits.push(mp4_atom::ElstEntry {
                segment_duration: delay,
                media_time: None,
                media_rate: 1.into(),
            });
        }
        if delay > 0 || cts0 > 0 {
            edits.push(mp4_atom::ElstEntry {
                segment_duration: shown,
                media_time: Some(cts0),
                media_rate: 1.into(),
            });
        }
        let edts = (!edits.is_empty()).then_some(mp4_atom::Edts {
            elst: Some(mp4_atom::Elst { entries: edits }),
        });

        let tkhd = mp4_atom::Tkhd {
            creation_time: created,
            modification_time: created,
            track_id: i as u32 + 1,
            duration: track_duration,
            // The dialects are alternatives: one plays at a time.
            alternate_group: if video { 0 } else { 1 },
            enabled: video || i == default_audio,
            in_movie: true,
            volume: if video { 0.into() } else { 1.into() },
            width: if video { t.size.0.into() } else { 0.into() },
            height: if video { t.size.1.into() } else { 0.into() },
            ..Default::default()
        };
        let mdhd = mp4_atom::Mdhd {
            creation_time: created,
            modification_time: created,
            timescale: ts,
            duration: media_duration,
            language: track_language(&t.rendition),
        };
        let name = track_name(&t.rendition);
        let hdlr = mp4_atom::Hdlr {
            handler: if video {
                b"vide".into()
            } else {
                b"soun".into()
            },
            name: name.clone(),
        };
        let stts = mp4_atom::Stts {
            entries: runs_of(&t.durations)
                .into_iter()
                .map(|(n, d)| mp4_atom::SttsEntry {
                    sample_count: n,
                    sample_delta: d,
                })
                .collect(),
        };
        let ctts = t.cts.iter().any(|&c| c != 0).then(|| mp4_atom::Ctts {
            entries: runs_of(&t.cts)
                .into_iter()
                .map(|(n, c)| mp4_atom::CttsEntry {
                    sample_count: n,
                    sample_offset: c,
                })
                .collect(),
        });
        let stss = (t.sync.len() != t.sizes.len()).then(|| mp4_atom::Stss {
            entries: t.sync.clone(),
        });
        let mut stsc = mp4_atom::Stsc::default();
        let mut last: Option<(u32, u32)> = None;
        for (n, r) in runs.iter().filter(|r| r.track == t.index).enumerate() {
            let chunk = n as u32 + 1;
            if last != Some((r.samples, r.entry)) {
                stsc.entries.push(mp4_atom::StscEntry {
                    first_chunk: chunk,
                    samples_per_chunk: r.samples,
                    sample_description_index: r.entry,
                });
                last = Some((r.samples, r.entry));
            }
        }
        let stsz = mp4_atom::Stsz {
            samples: match t.sizes.first() {
                Some(&s) if t.sizes.iter().all(|&x| x == s) => mp4_atom::StszSamples::Identical {
                    count: t.sizes.len() as u32,
                    size: s,
                },
                _ => mp4_atom::StszSamples::Different {
                    sizes: t.sizes.clone(),
                },
            },
        };
        let chunk_offsets = &offsets[t.index as usize];
        let (stco, co64) = if large {
            (
                None,
                Some(mp4_atom::Co64 {
                    entries: chunk_offsets.clone(),
                }),
            )
        } else {
            (
                Some(mp4_atom::Stco {
                    entries: chunk_offsets.iter().map(|&o| o as u32).collect(),
                }),
                None,
            )
        };
        let minf = mp4_atom::Minf {
            vmhd: video.then(mp4_atom::Vmhd::default),
            smhd: (!video).then(mp4_atom::Smhd::default),
            dinf: mp4_atom::Dinf {
                dref: mp4_atom::Dref {
                    entries: vec![mp4_atom::Url::default().into()],
                },
            },
            stbl: mp4_atom::Stbl {
                stsd: mp4_atom::Stsd {
                    codecs: t.entries.clone(),
                },
                stts,
                ctts,
                stss,
                stsc,
                stsz,
                stco,
                co64,
                ..Default::default()
            },
            ..Default::default()
        };
        let elng = t
            .rendition
            .language
            .as_ref()
            .filter(|_| !video)
            .map(|l| Elng(l.clone()));
        let mut trak = Vec::new();
        trak.encode_atom(FourCC::new(b"trak"), |b| {
            tkhd.encode(b)?;
            edts.encode(b)?;
            b.encode_atom(FourCC::new(b"mdia"), |b| {
                mdhd.encode(b)?;
                elng.encode(b)?;
                hdlr.encode(b)?;
                minf.encode(b)
            })?;
            b.encode_atom(FourCC::new(b"udta"), |b| TrackName(name).encode(b))
        })?;
        traks.push(trak);
    }
    let mvhd = mp4_atom::Mvhd {
        creation_time: created,
        modification_time: created,
        timescale: MOVIE_TIMESCALE,
        duration: movie_duration,
        rate: 1.into(),
        volume: 1.into(),
        next_track_id: tracks.len() as u32 + 1,
        ..Default::default()
    };
    let mut out = Vec::new();
    out.encode_atom(FourCC::new(b"moov"), |b| {
        mvhd.encode(b)?;
        for t in &traks {
            b.append_slice(t);
        }
        if let Some(title) = title {
            movie_title(b, title)?;
        }
        Ok(())
    })?;
    Ok(out)
}

/// `udta/meta/ilst/©nam`: the lecture's title, as iTunes-style metadata (what players
/// show as the file's title).
fn movie_title(b: &mut Vec<u8>, title: &str) -> mp4_atom::Result<()> {
    b.encode_atom(FourCC::new(b"udta"), |b| {
        b.encode_atom(FourCC::new(b"meta"), |b| {
            0u32.encode(b)?; // version and flags
            mp4_atom::Hdlr {
                handler: b"mdir".into(),
                name: String::new(),
            }
            .encode(b)?;
            b.encode_atom(FourCC::new(b"ilst"), |b| {
                b.encode_atom(FourCC::new(b"\xa9nam"), |b| {
                    b.encode_atom(FourCC::new(b"data"), |b| {
                        1u32.encode(b)?; // UTF-8
                        0u32.encode(b)?; // no locale
                        b.append_slice(title.as_bytes());
                        Ok(())
                    })
                })
            })
        })
    })
}

/// The extended language tag box (`elng`, ISO/IEC 14496-12 8.4.6): a BCP-47 tag, for what
/// `mdhd`'s three letters cannot say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elng(pub String);

impl Atom for Elng {
    const KIND: FourCC = FourCC::new(b"elng");

    fn decode_body<B: Buf>(buf: &mut B) -> mp4_atom::Result<Self> {
        u32::decode(buf)?; // version and flags
        Ok(Elng(String::decode(buf)?))
    }

    fn encode_body<B: BufMut>(&self, buf: &mut B) -> mp4_atom::Result<()> {
        0u32.encode(buf)?;
        self.0.as_str().encode(buf)
    }
}

/// A track's name in its `udta` (QuickTime's `name`: the text, no terminator), which
/// players list as the track's title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackName(pub String);

impl Atom for TrackName {
    const KIND: FourCC = FourCC::new(b"name");

    fn decode_body<B: Buf>(buf: &mut B) -> mp4_atom::Result<Self> {
        let bytes = buf.slice(buf.remaining()).to_vec();
        buf.advance(bytes.len());
        Ok(TrackName(String::from_utf8_lossy(&bytes).into_owned()))
    }

    fn encode_body<B: BufMut>(&self, buf: &mut B) -> mp4_atom::Result<()> {
        buf.append_slice(self.0.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mdhd_languages() {
        for (tag, code) in [
            ("yue", "yue"),
            ("cmn", "cmn"),
            ("hak", "hak"),
            ("zh-yue", "yue"),
            ("zh", "zho"),
            ("zh-Hant-HK", "zho"),
            ("chi", "zho"),
            ("en", "eng"),
            ("eng", "eng"),
            ("xx", "und"),
            ("q1", "und"),
            ("", "und"),
        ] {
            assert_eq!(mdhd_language(tag), code, "{tag}");
        }
    }

    #[test]
    fn own_boxes_round_trip() {
        let mut buf = Vec::new();
        Elng("zh-yue".into()).encode(&mut buf).unwrap();
        assert_eq!(&buf[4..8], b"elng");
        assert_eq!(Elng::decode(&mut &buf[..]).unwrap(), Elng("zh-yue".into()));
        let mut buf = Vec::new();
        TrackName("粤语".into()).encode(&mut buf).unwrap();
        assert_eq!(buf.len(), 8 + "粤语".len());
        assert_eq!(
            TrackName::decode(&mut &buf[..]).unwrap(),
            TrackName("粤语".into())
        );
    }

    #[test]
    fn run_lengths() {
        assert_eq!(runs_of(&[1, 1, 2, 2, 2, 1]), vec![(2, 1), (3, 2), (1, 1)]);
        assert!(runs_of::<u32>(&[]).is_empty());
    }
}
