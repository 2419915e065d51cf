//! A rendition's index: one text line per part written to `media.m4s`, one per segment
//! completed. Lines are only ever appended; a reader takes every whole line and stops at the
//! first that is cut off or malformed (the end of a recording that was killed).
//!
//! ```text
//! P <msn> <part> <offset> <length> <duration µs> <flags> <dseq> <init> <segment pdt ms>
//! S <msn>
//! ```
//!
//! Flags: 1 independent, 2 gap, 4 discontinuity. Lengths and offsets are in bytes of
//! `media.m4s`; a gap part has length 0.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

/// One line of an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// A part was written.
    Part(PartLine),
    /// A segment is complete.
    SegmentEnd {
        /// Its media sequence number.
        msn: u64,
    },
}

/// A part in `media.m4s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartLine {
    /// Media sequence number of its segment.
    pub msn: u64,
    /// Index within the segment.
    pub part: u32,
    /// Where its bytes start.
    pub offset: u64,
    /// How many bytes.
    pub len: u64,
    /// Duration in microseconds.
    pub duration_us: u64,
    /// Starts with a sync sample.
    pub independent: bool,
    /// No media.
    pub gap: bool,
    /// Its segment follows a discontinuity.
    pub discontinuity: bool,
    /// Discontinuity sequence number.
    pub dseq: u64,
    /// Initialization segment version.
    pub init: u32,
    /// Wall clock of its segment's first sample, in ms since the Unix epoch.
    pub segment_pdt_ms: u64,
}

impl PartLine {
    /// End of its bytes.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }

    /// Its segment's program date-time.
    pub fn segment_pdt(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.segment_pdt_ms)
    }
}

/// Longest line a reader accepts; anything longer is damage.
const MAX_LINE: usize = 256;

impl Line {
    /// The line as written, with its newline.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(96);
        match self {
            Line::Part(p) => {
                let flags = u8::from(p.independent)
                    | (u8::from(p.gap) << 1)
                    | (u8::from(p.discontinuity) << 2);
                let _ = writeln!(
                    out,
                    "P {} {} {} {} {} {} {} {} {}",
                    p.msn,
                    p.part,
                    p.offset,
                    p.len,
                    p.duration_us,
                    flags,
                    p.dseq,
                    p.init,
                    p.segment_pdt_ms
                );
            }
            Line::SegmentEnd { msn } => {
                let _ = writeln!(out, "S {msn}");
            }
        }
        out
    }

    /// Parses one line (without its newline).
    pub fn parse(line: &str) -> Option<Line> {
        if line.len() > MAX_LINE {
            return None;
        }
        let mut it = line.split(' ');
        let kind = it.next()?;
        let mut num = || -> Option<u64> { it.next()?.parse().ok() };
        let parsed = match kind {
            "P" => {
                let (msn, part, offset, len, duration_us, flags, dseq, init, pdt) = (
                    num()?,
                    num()?,
                    num()?,
                    num()?,
                    num()?,
                    num()?,
                    num()?,
                    num()?,
                    num()?,
                );
                // Damage, not something we wrote: bytes past the end of any file
                // (fuzz/regressions/recovery/).
                if flags > 7 || offset.checked_add(len).is_none() {
                    return None;
                }
                Line::Part(PartLine {
                    msn,
                    part: u32::try_from(part).ok()?,
                    offset,
                    len,
                    duration_us,
                    independent: flags & 1 != 0,
                    gap: flags & 2 != 0,
                    discontinuity: flags & 4 != 0,
                    dseq,
                    init: u32::try_from(init).ok()?,
                    segment_pdt_ms: pdt,
                })
            }
            "S" => Line::SegmentEnd { msn: num()? },
            _ => return None,
        };
        it.next().is_none().then_some(parsed)
    }
}

/// Every whole, well-formed line at the start of `text`, and how many bytes they take: a
/// killed writer leaves a cut-off last line, and anything after damage is not trusted.
pub fn read(text: &[u8]) -> (Vec<Line>, usize) {
    let mut lines = Vec::new();
    let mut used = 0;
    while let Some(nl) = text[used..].iter().position(|&b| b == b'\n') {
        let Some(line) = std::str::from_utf8(&text[used..used + nl])
            .ok()
            .and_then(Line::parse)
        else {
            break;
        };
        lines.push(line);
        used += nl + 1;
    }
    (lines, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_lines_with_offsets_past_any_file_are_refused() {
        assert_eq!(Line::parse("P 0 0 18446744073709551615 1 0 0 0 0 0"), None);
        assert!(Line::parse("P 0 0 18446744073709551614 1 0 0 0 0 1796572005104").is_some());
    }

    fn part(msn: u64, part: u32) -> PartLine {
        PartLine {
            msn,
            part,
            offset: 1234,
            len: 5678,
            duration_us: 400_000,
            independent: part == 0,
            gap: false,
            discontinuity: msn == 7,
            dseq: 1,
            init: 0,
            segment_pdt_ms: 1_800_000_000_000,
        }
    }

    #[test]
    fn lines_round_trip() {
        for l in [
            Line::Part(part(7, 0)),
            Line::Part(PartLine {
                gap: true,
                len: 0,
                ..part(8, 3)
            }),
            Line::SegmentEnd { msn: 7 },
        ] {
            let text = l.encode();
            assert!(text.ends_with('\n'));
            assert_eq!(Line::parse(text.trim_end()), Some(l), "{text}");
        }
    }

    #[test]
    fn a_cut_off_or_damaged_tail_is_not_read() {
        let mut text = String::new();
        for i in 0..3 {
            text.push_str(&Line::Part(part(1, i)).encode());
        }
        let whole = text.len();
        text.push_str("P 1 3 99 1"); // killed mid-line
        let (lines, used) = read(text.as_bytes());
        assert_eq!(lines.len(), 3);
        assert_eq!(used, whole);
        let damaged = format!(
            "{}X garbage\n{}",
            Line::Part(part(1, 0)).encode(),
            Line::SegmentEnd { msn: 1 }.encode()
        );
        let (lines, _) = read(damaged.as_bytes());
        assert_eq!(lines.len(), 1);
        for bad in [
            "P 1 2 3",
            "P a b c d e f g h i",
            "S",
            "S 1 2",
            "P 1 1 1 1 1 9 1 1 1",
            "Q 1",
        ] {
            assert_eq!(Line::parse(bad), None, "{bad}");
        }
        // Zero bytes (a power cut can leave a file's tail unwritten) end the index too.
        let mut zeros = Line::Part(part(2, 0)).encode().into_bytes();
        zeros.extend_from_slice(&[0; 40]);
        zeros.push(b'\n');
        assert_eq!(read(&zeros).0.len(), 1);
    }
}
