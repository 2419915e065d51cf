//! MPEG-TS demultiplexing, sans-IO: bytes in (any chunking, e.g. SRT's 1316-byte messages),
//! [`TsEvent`]s out.
//!
//! `mpeg2ts-reader` parses packets, PAT/PMT sections (CRC, versions, sections spanning
//! packets), descriptors and PES headers. What it leaves to its users is done here: framing
//! arbitrary chunks into 188-byte packets (with resynchronisation), continuity checking that
//! honours legal duplicates and `discontinuity_indicator`, PES reassembly bounded by
//! [`MAX_PES`] (video) or [`MAX_AUDIO_PES`] and completed as soon as a bounded PES is whole (audio does not wait for the
//! next PES), and a flush at the end of the stream.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use mpeg2ts_reader::demultiplex::{self, DemuxContext, FilterRequest, PacketFilter};
use mpeg2ts_reader::descriptor::CoreDescriptors;
use mpeg2ts_reader::psi::pmt::PmtSection;
use mpeg2ts_reader::{StreamType, packet, packet_filter_switch, pes};

/// Largest reassembled video PES (one access unit); a bigger one is dropped with an error.
pub const MAX_PES: usize = 4 << 20;
/// Largest reassembled audio PES: a bounded PES cannot be longer, and audio is never sent
/// unbounded by a sane muxer.
pub const MAX_AUDIO_PES: usize = 64 << 10;
/// Largest number of elementary streams followed (a PMT may list more; the rest are ignored).
pub const MAX_STREAMS: usize = 32;
/// Largest number of video streams followed: one is relayed, a second lets a new PMT
/// version move it. With [`MAX_AUDIO_PES`] this bounds what a connection can make the
/// demultiplexer hold to a few times [`MAX_PES`].
pub const MAX_VIDEO_STREAMS: usize = 2;
/// Largest number of events held between [`TsDemux::push`] and [`TsDemux::poll`] before
/// the oldest are discarded (a caller that never polls cannot grow memory without bound).
pub const MAX_PENDING_EVENTS: usize = 4096;

const PACKET: usize = 188;

/// What kind of elementary stream a PMT entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EsKind {
    /// H.264 video (stream_type 0x1b).
    H264,
    /// H.265 video (0x24).
    H265,
    /// AAC audio in ADTS (0x0f).
    Aac,
    /// Opus audio (private data 0x06 with the `Opus` registration descriptor).
    Opus,
    /// Anything else: not followed.
    Other(u8),
}

/// One elementary stream declared by the PMT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsStream {
    /// Its PID.
    pub pid: u16,
    /// What it carries.
    pub kind: EsKind,
    /// ISO 639 language from its `ISO_639_language_descriptor` (tag 0x0a), e.g. `yue`.
    pub language: Option<String>,
}

/// Something the demultiplexer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TsEvent {
    /// The PMT declared (or re-declared, with a new version) an elementary stream.
    Stream(TsStream),
    /// A complete PES packet of a followed stream.
    Pes {
        /// PID.
        pid: u16,
        /// Presentation time, 90 kHz, 33 bits as sent (not unwrapped).
        pts: Option<u64>,
        /// Decode time, 90 kHz, 33 bits as sent, when it differs from the PTS.
        dts: Option<u64>,
        /// The PES payload (an access unit for video, ADTS frames for AAC).
        data: Bytes,
    },
    /// A followed stream no longer is: a new PMT version dropped it, or re-declared it as
    /// something not followed (H.265, or beyond the limits).
    Gone {
        /// PID.
        pid: u16,
    },
    /// Data was lost on a PID (continuity counter gap): the PES being assembled was dropped.
    Loss {
        /// PID.
        pid: u16,
    },
    /// A PES was dropped or bytes were skipped, and why.
    Dropped {
        /// PID, if the problem belongs to one.
        pid: Option<u16>,
        /// Why.
        reason: String,
    },
}

mod switch {
    //! The packet filter enum `mpeg2ts-reader`'s macro builds (it has no doc comments).
    #![allow(missing_docs)]
    use super::{Ctx, EsFilter, demultiplex, packet_filter_switch};

    packet_filter_switch! {
        Switch<Ctx> {
            Pat: demultiplex::PatPacketFilter<Ctx>,
            Pmt: demultiplex::PmtPacketFilter<Ctx>,
            Null: demultiplex::NullPacketFilter<Ctx>,
            Es: EsFilter,
        }
    }
}
use switch::Switch;

/// Demultiplexer state the packet filters reach.
#[derive(Default)]
pub struct Ctx {
    changeset: demultiplex::FilterChangeset<Switch>,
    /// Followed streams by PID: their PES assembly, continuity and the PMT that declared
    /// them.
    es: BTreeMap<u16, (Pes, Continuity, u16)>,
    events: std::collections::VecDeque<TsEvent>,
}

impl Ctx {
    fn emit(&mut self, e: TsEvent) {
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }
}

impl Ctx {
    /// Forgets the streams of PMT `program` that its new version `pmt` no longer lists
    /// (`mpeg2ts-reader` drops their filters without telling): what they were assembling
    /// is completed, then they are [`TsEvent::Gone`].
    fn retire_unlisted(&mut self, program: u16, pmt: &PmtSection<'_>) {
        let listed: Vec<u16> = pmt
            .streams()
            .map(|s| u16::from(s.elementary_pid()))
            .collect();
        let gone: Vec<u16> = self
            .es
            .iter()
            .filter(|(pid, (.., of))| *of == program && !listed.contains(pid))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in gone {
            let mut out = Vec::new();
            if let Some((mut pes, ..)) = self.es.remove(&pid) {
                pes.finish(pid, &mut out);
            }
            out.push(TsEvent::Gone { pid });
            for e in out {
                self.emit(e);
            }
        }
    }
}

impl DemuxContext for Ctx {
    type F = Switch;

    fn filter_changeset(&mut self) -> &mut demultiplex::FilterChangeset<Switch> {
        &mut self.changeset
    }

    fn construct(&mut self, req: FilterRequest<'_, '_>) -> Switch {
        match req {
            FilterRequest::ByPid(packet::Pid::PAT) => Switch::Pat(Default::default()),
            FilterRequest::Pmt {
                pid,
                program_number,
            } => Switch::Pmt(demultiplex::PmtPacketFilter::new(pid, program_number)),
            FilterRequest::ByStream {
                program_pid,
                stream_type,
                pmt,
                stream_info,
            } => {
                let pid = u16::from(stream_info.elementary_pid());
                self.retire_unlisted(u16::from(program_pid), pmt);
                let mut language = None;
                let mut opus = false;
                for d in stream_info.descriptors::<CoreDescriptors<'_>>() {
                    match d {
                        Ok(CoreDescriptors::ISO639Language(l)) if language.is_none() => {
                            language = l
                                .languages()
                                .next()
                                .and_then(|l| l.ok())
                                .map(|l| l.code().into_owned());
                        }
                        Ok(CoreDescriptors::Registration(r)) => {
                            let id = r.format_identifier();
                            let id: &[u8] = (&id).into();
                            opus |= id == b"Opus";
                        }
                        _ => {}
                    }
                }
                let kind = match stream_type {
                    StreamType::H264 => EsKind::H264,
                    StreamType::H265 => EsKind::H265,
                    StreamType::ADTS => EsKind::Aac,
                    StreamType::H222_0_PES_PRIVATE_DATA if opus => EsKind::Opus,
                    other => EsKind::Other(other.0),
                };
                // H.265 is declared (so it can be reported) but not relayed: not assembled.
                let limit = match kind {
                    EsKind::H264 => Some(MAX_PES),
                    EsKind::Aac | EsKind::Opus => Some(MAX_AUDIO_PES),
                    EsKind::H265 | EsKind::Other(_) => None,
                };
                // A new PMT version starts the stream afresh, whatever it carried before: it
                // is counted against the limits like a new one, and one that is no longer
                // followed (it became H.265, say) is forgotten.
                let was_followed = self.es.remove(&pid).is_some();
                let room = |video: bool| {
                    self.es.len() < MAX_STREAMS
                        && (!video
                            || self
                                .es
                                .values()
                                .filter(|(p, ..)| p.limit == MAX_PES)
                                .count()
                                < MAX_VIDEO_STREAMS)
                };
                let followed = limit.filter(|l| room(*l == MAX_PES));
                if followed.is_some() || limit.is_none() {
                    self.emit(TsEvent::Stream(TsStream {
                        pid,
                        kind,
                        language,
                    }));
                }
                if let Some(limit) = followed {
                    self.es.insert(
                        pid,
                        (
                            Pes::new(limit),
                            Continuity::default(),
                            u16::from(program_pid),
                        ),
                    );
                    Switch::Es(EsFilter)
                } else {
                    if limit.is_some() {
                        self.emit(TsEvent::Dropped {
                            pid: Some(pid),
                            reason: "too many elementary streams: ignored".into(),
                        });
                    }
                    if was_followed {
                        self.emit(TsEvent::Gone { pid });
                    }
                    Switch::Null(Default::default())
                }
            }
            FilterRequest::ByPid(_) | FilterRequest::Nit { .. } => Switch::Null(Default::default()),
        }
    }
}

/// The packet filter of a followed elementary stream; its state lives in [`Ctx`] so a flush
/// can reach it.
pub struct EsFilter;

impl PacketFilter for EsFilter {
    type Ctx = Ctx;

    fn consume(&mut self, ctx: &mut Ctx, pk: &packet::Packet<'_>) {
        let pid = u16::from(pk.pid());
        let Some((pes, cc, _)) = ctx.es.get_mut(&pid) else {
            return;
        };
        let discontinuity = pk
            .adaptation_field()
            .is_some_and(|a| a.discontinuity_indicator());
        let mut lost = false;
        match cc.check(
            pk.continuity_counter().count(),
            pk.adaptation_control().has_payload(),
            discontinuity,
        ) {
            Check::Ok => {}
            // A legal repeat of the previous packet: its payload is already in.
            Check::Duplicate => return,
            Check::Lost => {
                pes.abort();
                lost = true;
            }
        }
        let mut out = Vec::new();
        if lost {
            out.push(TsEvent::Loss { pid });
        }
        let payload = pk.payload().unwrap_or(&[]);
        if pk.payload_unit_start_indicator() {
            // An unbounded PES (video, usually) ends where the next one starts.
            pes.finish(pid, &mut out);
            match start_pes(payload) {
                Ok(h) => pes.start(h.pts, h.dts, h.expect, h.first),
                Err(reason) => out.push(TsEvent::Dropped {
                    pid: Some(pid),
                    reason,
                }),
            }
        } else if let Err(reason) = pes.extend(payload) {
            out.push(TsEvent::Dropped {
                pid: Some(pid),
                reason,
            });
        }
        if pes.complete() {
            pes.finish(pid, &mut out);
        }
        for e in out {
            ctx.emit(e);
        }
    }
}

/// What a PES header says.
struct PesStart<'a> {
    pts: Option<u64>,
    dts: Option<u64>,
    /// Payload length it declares, if bounded.
    expect: Option<usize>,
    /// The payload bytes in this first packet.
    first: &'a [u8],
}

/// Parses a PES header.
fn start_pes(payload: &[u8]) -> Result<PesStart<'_>, String> {
    let header = pes::PesHeader::from_bytes(payload).ok_or("no PES start code")?;
    let pes::PesContents::Parsed(Some(parsed)) = header.contents() else {
        return Err("unparsable PES header".into());
    };
    let (pts, dts) = match parsed.pts_dts() {
        Ok(pes::PtsDts::PtsOnly(Ok(t))) => (Some(t.value()), None),
        Ok(pes::PtsDts::Both {
            pts: Ok(p),
            dts: Ok(d),
        }) => (Some(p.value()), Some(d.value())),
        Ok(pes::PtsDts::None) => (None, None),
        _ => return Err("bad PTS/DTS in PES header".into()),
    };
    let first = parsed.payload();
    let header_len = payload.len().saturating_sub(first.len());
    let expect = match header.pes_packet_length() {
        // PES_packet_length counts from after its own field (6 bytes into the header).
        pes::PesLength::Bounded(n) => Some(
            (n.get() as usize)
                .checked_sub(header_len.saturating_sub(6))
                .ok_or("PES length shorter than its header")?,
        ),
        pes::PesLength::Unbounded => None,
    };
    Ok(PesStart {
        pts,
        dts,
        expect,
        first,
    })
}

/// One PES being reassembled.
struct Pes {
    /// Largest size assembled.
    limit: usize,
    buf: BytesMut,
    pts: Option<u64>,
    dts: Option<u64>,
    expect: Option<usize>,
    active: bool,
}

impl Pes {
    fn new(limit: usize) -> Pes {
        Pes {
            limit,
            buf: BytesMut::new(),
            pts: None,
            dts: None,
            expect: None,
            active: false,
        }
    }

    fn start(&mut self, pts: Option<u64>, dts: Option<u64>, expect: Option<usize>, first: &[u8]) {
        self.buf.clear();
        self.pts = pts;
        self.dts = dts;
        self.expect = expect;
        self.active = true;
        let _ = self.extend(first);
    }

    fn extend(&mut self, data: &[u8]) -> Result<(), String> {
        if !self.active {
            return Ok(());
        }
        if self.buf.len() + data.len() > self.limit {
            self.abort();
            return Err(format!("PES larger than {} bytes", self.limit));
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn abort(&mut self) {
        self.active = false;
        self.buf = BytesMut::new();
    }

    fn complete(&self) -> bool {
        self.active && self.expect.is_some_and(|e| self.buf.len() >= e)
    }

    fn finish(&mut self, pid: u16, out: &mut Vec<TsEvent>) {
        if !self.active {
            return;
        }
        self.active = false;
        let data = self.buf.split().freeze();
        if let Some(e) = self.expect
            && data.len() != e
        {
            out.push(TsEvent::Dropped {
                pid: Some(pid),
                reason: format!("PES of {} bytes, {} declared", data.len(), e),
            });
            return;
        }
        if data.is_empty() {
            return;
        }
        out.push(TsEvent::Pes {
            pid,
            pts: self.pts,
            dts: self.dts.filter(|d| Some(*d) != self.pts),
            data,
        });
    }
}

/// Continuity counter checking (ISO/IEC 13818-1 2.4.3.3): one duplicate of a packet is
/// legal, `discontinuity_indicator` resets, packets without payload do not count.
#[derive(Default, Clone, Copy)]
struct Continuity {
    last: Option<u8>,
    duplicate_seen: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Check {
    Ok,
    Duplicate,
    Lost,
}

impl Continuity {
    fn check(&mut self, cc: u8, has_payload: bool, discontinuity: bool) -> Check {
        if discontinuity {
            self.last = has_payload.then_some(cc);
            self.duplicate_seen = false;
            return Check::Ok;
        }
        if !has_payload {
            return Check::Ok;
        }
        match self.last {
            None => {
                self.last = Some(cc);
                Check::Ok
            }
            Some(p) if (p + 1) & 15 == cc => {
                self.last = Some(cc);
                self.duplicate_seen = false;
                Check::Ok
            }
            Some(p) if p == cc && !self.duplicate_seen => {
                self.duplicate_seen = true;
                Check::Duplicate
            }
            Some(_) => {
                self.last = Some(cc);
                self.duplicate_seen = false;
                Check::Lost
            }
        }
    }
}

/// The demultiplexer of one transport stream.
pub struct TsDemux {
    ctx: Ctx,
    demux: demultiplex::Demultiplex<Ctx>,
    /// Bytes of a packet not yet complete (less than 188), or being resynchronised.
    pending: Vec<u8>,
    /// Bytes skipped looking for a sync byte since the last report.
    skipped: usize,
}

impl Default for TsDemux {
    fn default() -> Self {
        TsDemux::new()
    }
}

impl TsDemux {
    /// A demultiplexer waiting for a PAT.
    pub fn new() -> Self {
        let mut ctx = Ctx::default();
        let demux = demultiplex::Demultiplex::new(&mut ctx);
        TsDemux {
            ctx,
            demux,
            pending: Vec::with_capacity(PACKET),
            skipped: 0,
        }
    }

    /// Takes the next bytes of the stream, in chunks of any size.
    pub fn push(&mut self, mut data: &[u8]) {
        // Complete a packet begun by the previous chunk.
        if !self.pending.is_empty() {
            let need = PACKET - self.pending.len();
            let take = need.min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < PACKET {
                return;
            }
            let pending = std::mem::take(&mut self.pending);
            self.feed(&pending);
            self.pending = pending;
            self.pending.clear();
        }
        self.feed(data);
    }

    /// Feeds whole packets from `data`, resynchronising on 0x47; keeps a trailing partial
    /// packet in `pending`.
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if data[0] != 0x47 {
                let skip = data[1..]
                    .iter()
                    .position(|&b| b == 0x47)
                    .map_or(data.len(), |i| i + 1);
                self.skipped += skip;
                data = &data[skip..];
                continue;
            }
            if self.skipped > 0 {
                let reason = format!("lost sync: skipped {} bytes", self.skipped);
                self.skipped = 0;
                self.ctx.emit(TsEvent::Dropped { pid: None, reason });
            }
            if data.len() < PACKET {
                self.pending.extend_from_slice(data);
                return;
            }
            // Runs of whole packets go to the library at once.
            let mut n = 1;
            while (n + 1) * PACKET <= data.len() && data[n * PACKET] == 0x47 {
                n += 1;
            }
            self.demux.push(&mut self.ctx, &data[..n * PACKET]);
            data = &data[n * PACKET..];
        }
    }

    /// The stream ended: completes every PES still being assembled.
    pub fn flush(&mut self) {
        let mut out = Vec::new();
        for (pid, (pes, ..)) in self.ctx.es.iter_mut() {
            pes.finish(*pid, &mut out);
        }
        for e in out {
            self.ctx.emit(e);
        }
    }

    /// The next event.
    pub fn poll(&mut self) -> Option<TsEvent> {
        self.ctx.events.pop_front()
    }
}

/// The CRC-32 that ends a PSI section (PAT, PMT), for building tables.
pub fn psi_crc32(section: &[u8]) -> u32 {
    mpeg2ts_reader::mpegts_crc::sum32(section)
}

/// A 33-bit MPEG timestamp extended to 64 bits: each value is placed nearest the previous
/// one, so the wrap every 26.5 hours moves forward.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unwrapper {
    last: Option<i64>,
}

impl Unwrapper {
    /// An unwrapper whose first value is taken nearest to `last` (an unwrapped value of
    /// another stream on the same clock), so a stream that starts after the clock wrapped
    /// lines up with those that were there before.
    pub fn near(last: i64) -> Unwrapper {
        Unwrapper { last: Some(last) }
    }

    /// The 64-bit value of `ts`.
    pub fn unwrap(&mut self, ts: u64) -> i64 {
        const RANGE: i64 = 1 << 33;
        let ts = (ts & (RANGE as u64 - 1)) as i64;
        let Some(last) = self.last else {
            self.last = Some(ts);
            return ts;
        };
        let base = last - last.rem_euclid(RANGE);
        let mut v = base + ts;
        if v - last > RANGE / 2 {
            v -= RANGE;
        } else if last - v > RANGE / 2 {
            v += RANGE;
        }
        self.last = Some(v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ffmpeg 5.1: H.264 160x120 25 fps with B-frames and three AAC tracks tagged cmn, yue,
    /// hak (see testdata/README.md).
    const THREE: &[u8] = include_bytes!("../testdata/three-dialects.ts");

    fn demux_all(data: &[u8], chunk: usize) -> Vec<TsEvent> {
        let mut d = TsDemux::new();
        let mut out = Vec::new();
        for c in data.chunks(chunk) {
            d.push(c);
            while let Some(e) = d.poll() {
                out.push(e);
            }
        }
        d.flush();
        while let Some(e) = d.poll() {
            out.push(e);
        }
        out
    }

    #[test]
    fn three_dialects_in_any_chunking() {
        for chunk in [1, 7, 187, 188, 189, 1316, 5000, THREE.len()] {
            let ev = demux_all(THREE, chunk);
            let streams: Vec<&TsStream> = ev
                .iter()
                .filter_map(|e| match e {
                    TsEvent::Stream(s) => Some(s),
                    _ => None,
                })
                .collect();
            assert_eq!(streams.len(), 4, "chunk {chunk}");
            assert_eq!(streams[0].kind, EsKind::H264);
            let langs: Vec<_> = streams[1..]
                .iter()
                .map(|s| (s.kind, s.language.clone().unwrap()))
                .collect();
            assert_eq!(
                langs,
                [
                    (EsKind::Aac, "cmn".to_string()),
                    (EsKind::Aac, "yue".to_string()),
                    (EsKind::Aac, "hak".to_string())
                ]
            );
            let pes = |pid: u16| {
                ev.iter()
                    .filter_map(move |e| match e {
                        TsEvent::Pes {
                            pid: p,
                            pts,
                            dts,
                            data,
                        } if *p == pid => Some((*pts, *dts, data.clone())),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            };
            let video = pes(streams[0].pid);
            assert_eq!(video.len(), 50, "chunk {chunk}: every access unit");
            assert!(video.iter().any(|v| v.1.is_some()), "B-frames carry a DTS");
            for s in &streams[1..] {
                let frames: usize = pes(s.pid)
                    .iter()
                    .map(|(_, _, d)| {
                        let (f, e) = crate::aac::split_adts(d);
                        assert!(e.is_none(), "{e:?}");
                        f.len()
                    })
                    .sum();
                assert_eq!(frames, 95, "chunk {chunk}, {:?}", s.language);
            }
            assert!(
                !ev.iter()
                    .any(|e| matches!(e, TsEvent::Loss { .. } | TsEvent::Dropped { .. })),
                "chunk {chunk}: {ev:?}"
            );
        }
    }

    #[test]
    fn a_lost_packet_is_reported_and_its_pes_dropped() {
        // Remove the 200th packet (inside the video).
        let mut lossy = THREE[..199 * PACKET].to_vec();
        lossy.extend_from_slice(&THREE[200 * PACKET..]);
        let ev = demux_all(&lossy, 1316);
        assert_eq!(
            ev.iter()
                .filter(|e| matches!(e, TsEvent::Loss { .. }))
                .count(),
            1
        );
        let full = demux_all(THREE, 1316)
            .iter()
            .filter(|e| matches!(e, TsEvent::Pes { .. }))
            .count();
        let got = ev
            .iter()
            .filter(|e| matches!(e, TsEvent::Pes { .. }))
            .count();
        assert_eq!(got, full - 1, "exactly the damaged PES is gone");
    }

    /// A TS packet on `pid` with payload only, `start` marking a PES start.
    fn packet(pid: u16, start: bool, cc: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x47,
            (if start { 0x40 } else { 0 }) | (pid >> 8) as u8,
            pid as u8,
            0x10 | (cc & 0x0f),
        ];
        p.extend_from_slice(payload);
        p.resize(PACKET, 0xff);
        p
    }

    /// A PMT packet on PID 0x1000 (program 1, as in the fixture's PAT) declaring `streams`
    /// (stream type, PID) in `version`.
    fn pmt(version: u8, cc: u8, streams: &[(u8, u16)]) -> Vec<u8> {
        let mut sec = vec![
            0x02,
            0,
            0,
            0x00,
            0x01,
            0xc1 | (version << 1),
            0,
            0,
            0xe1,
            0x00,
            0xf0,
            0,
        ];
        for (kind, pid) in streams {
            sec.extend_from_slice(&[*kind, 0xe0 | (pid >> 8) as u8, *pid as u8, 0xf0, 0]);
        }
        let len = sec.len() - 3 + 4;
        sec[1] = 0xb0 | (len >> 8) as u8;
        sec[2] = len as u8;
        sec.extend_from_slice(&psi_crc32(&sec).to_be_bytes());
        let mut payload = vec![0];
        payload.extend_from_slice(&sec);
        packet(0x1000, true, cc, &payload)
    }

    #[test]
    fn streams_a_new_pmt_drops_or_changes_are_counted_afresh() {
        let pat = &THREE[PACKET..2 * PACKET];
        let audio: Vec<(u8, u16)> = (0..32).map(|i| (0x0f, 0x200 + i)).collect();
        let video: Vec<(u8, u16)> = (0..32).map(|i| (0x1b, 0x200 + i)).collect();
        let mut ts = pat.to_vec();
        ts.extend(pmt(1, 0, &audio));
        ts.extend(pmt(2, 1, &video));
        // Version 3 keeps the two followed; version 4 drops one of them.
        ts.extend(pmt(3, 2, &video[..2]));
        ts.extend(pmt(4, 3, &video[1..2]));
        let ev = demux_all(&ts, PACKET);
        let declared = |kind: EsKind| {
            ev.iter()
                .filter(|e| matches!(e, TsEvent::Stream(s) if s.kind == kind))
                .count()
        };
        assert_eq!(declared(EsKind::Aac), 32);
        // Re-declared as video, they are held to the video limit.
        assert_eq!(declared(EsKind::H264), 2 * MAX_VIDEO_STREAMS + 1, "{ev:?}");
        let gone: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                TsEvent::Gone { pid } => Some(*pid),
                _ => None,
            })
            .collect();
        // The 30 audio streams version 2 left without room, then the one version 4 drops.
        let mut expected: Vec<u16> = (0x202..0x220).collect();
        expected.push(0x200);
        assert_eq!(gone, expected);
        let d = {
            let mut d = TsDemux::new();
            d.push(&ts);
            d
        };
        assert_eq!(d.ctx.es.len(), 1);
    }

    #[test]
    fn an_endless_audio_pes_is_cut_at_the_audio_limit() {
        let audio = demux_all(&THREE[..3 * PACKET], 188)
            .iter()
            .find_map(|e| match e {
                TsEvent::Stream(s) if s.kind == EsKind::Aac => Some(s.pid),
                _ => None,
            })
            .expect("an AAC PID in the PMT");
        // Declared unbounded (length 0), as only video may be, and never ending.
        let mut ts = THREE[..3 * PACKET].to_vec();
        let header = [0, 0, 1, 0xc0, 0, 0, 0x80, 0x80, 5, 0x21, 0, 1, 0, 1];
        ts.extend(packet(audio, true, 0, &header));
        for i in 1..=(MAX_AUDIO_PES / 184 + 2) {
            ts.extend(packet(audio, false, i as u8, &[0x55; 184]));
        }
        let ev = demux_all(&ts, 1316);
        assert!(
            ev.iter()
                .any(|e| matches!(e, TsEvent::Dropped { pid: Some(p), reason }
                if *p == audio && reason.contains(&MAX_AUDIO_PES.to_string()))),
            "{ev:?}"
        );
    }

    #[test]
    fn a_duplicated_packet_is_legal() {
        let mut dup = THREE[..201 * PACKET].to_vec();
        dup.extend_from_slice(&THREE[200 * PACKET..]);
        let ev = demux_all(&dup, 1316);
        assert!(!ev.iter().any(|e| matches!(e, TsEvent::Loss { .. })));
        assert_eq!(ev, demux_all(THREE, 1316));
    }

    #[test]
    fn junk_between_packets_is_skipped_with_a_report() {
        let mut bad = THREE[..100 * PACKET].to_vec();
        bad.extend_from_slice(&[1, 2, 3, 4, 5]);
        bad.extend_from_slice(&THREE[100 * PACKET..]);
        let ev = demux_all(&bad, 1000);
        assert!(ev.iter().any(
            |e| matches!(e, TsEvent::Dropped { pid: None, reason } if reason.contains("skipped 5"))
        ));
        let pes = ev
            .iter()
            .filter(|e| matches!(e, TsEvent::Pes { .. }))
            .count();
        let full = demux_all(THREE, 1000)
            .iter()
            .filter(|e| matches!(e, TsEvent::Pes { .. }))
            .count();
        assert_eq!(pes, full);
    }

    #[test]
    fn flipped_bytes_never_panic() {
        let mut seed = 7u64;
        for round in 0..200 {
            let mut bad = THREE.to_vec();
            for _ in 0..(1 + round % 20) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let i = (seed >> 33) as usize % bad.len();
                bad[i] ^= (seed >> 8) as u8 | 1;
            }
            let _ = demux_all(&bad, 1316);
        }
    }

    #[test]
    fn unwrap_crosses_the_33_bit_wrap() {
        let mut u = Unwrapper::default();
        let top = (1u64 << 33) - 3000;
        assert_eq!(u.unwrap(top), top as i64);
        assert_eq!(u.unwrap(600), (1i64 << 33) + 600);
        assert_eq!(u.unwrap(4200), (1i64 << 33) + 4200);
        // A late frame from before the wrap stays before it.
        assert_eq!(u.unwrap(top + 10), top as i64 + 10);
    }

    #[test]
    fn continuity_allows_one_duplicate_and_honours_discontinuity() {
        let mut c = Continuity::default();
        assert_eq!(c.check(3, true, false), Check::Ok);
        assert_eq!(c.check(4, true, false), Check::Ok);
        assert_eq!(c.check(4, true, false), Check::Duplicate);
        assert_eq!(c.check(4, true, false), Check::Lost);
        assert_eq!(c.check(5, false, false), Check::Ok, "no payload: no count");
        assert_eq!(c.check(5, true, false), Check::Ok);
        assert_eq!(c.check(9, true, false), Check::Lost);
        assert_eq!(c.check(2, true, true), Check::Ok, "signalled discontinuity");
        assert_eq!(c.check(3, true, false), Check::Ok);
        assert_eq!(c.check(15, true, false), Check::Lost);
        assert_eq!(c.check(0, true, false), Check::Ok, "wraps at 16");
    }

    #[test]
    fn garbage_and_partial_packets_never_panic() {
        let mut d = TsDemux::new();
        let mut seed = 12345u32;
        let mut junk = vec![0u8; 50_000];
        for b in junk.iter_mut() {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (seed >> 16) as u8;
            if seed.is_multiple_of(97) {
                *b = 0x47;
            }
        }
        for chunk in junk.chunks(333) {
            d.push(chunk);
            while d.poll().is_some() {}
        }
        d.flush();
        assert!(d.pending.len() < PACKET);
    }
}
