//! Opus packets as containers carry them: the duration a packet codes (RFC 6716 §3.1) and
//! the access units of Opus in MPEG-TS (the "OpusTS" mapping, Xiph/ETSI "Opus Interactive
//! Audio Codec Transport Multiplexing", as ffmpeg writes it: each unit behind an
//! `opus_control_header`).

/// Samples at 48 kHz that an Opus packet codes, from its TOC byte and frame count, or `None`
/// for a packet that is not valid Opus (RFC 6716 §3.1–3.2).
pub fn packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame size in 48 kHz samples for each configuration (SILK, hybrid, CELT).
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][(config % 4) as usize],
        12..=15 => [480, 960][(config % 2) as usize],
        _ => [120, 240, 480, 960][(config % 4) as usize],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => (*packet.get(1)? & 0x3f) as u32,
    };
    let total = frame * frames;
    // RFC 6716: a packet codes at most 120 ms.
    (frames > 0 && total <= 5760).then_some(total)
}

/// Errors splitting Opus access units out of an MPEG-TS PES payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpusTsError {
    /// No control header (prefix 0x3ff) where an access unit should start.
    #[error("no Opus control header ({0} bytes left)")]
    NoHeader(usize),
    /// A header or unit cut short.
    #[error("truncated Opus access unit")]
    Truncated,
}

/// One Opus access unit from a PES payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusUnit<'a> {
    /// The Opus packet.
    pub packet: &'a [u8],
    /// Samples to drop at its start (encoder delay, first packet only).
    pub start_trim: u16,
    /// Samples to drop at its end (last packet).
    pub end_trim: u16,
}

/// Splits a PES payload of Opus in MPEG-TS into its access units: each is an
/// `opus_control_header` (11-bit prefix 0x3ff, trim and extension flags, the unit size in
/// bytes as 0xff-continued bytes, optional trims and extension) followed by the packet.
pub fn split_ts_units(mut data: &[u8]) -> Result<Vec<OpusUnit<'_>>, OpusTsError> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < 2 || data[0] != 0x7f || data[1] & 0xe0 != 0xe0 {
            return Err(OpusTsError::NoHeader(data.len()));
        }
        let start_trim_flag = data[1] & 0x10 != 0;
        let end_trim_flag = data[1] & 0x08 != 0;
        let extension_flag = data[1] & 0x04 != 0;
        let mut pos = 2;
        let mut size = 0usize;
        loop {
            let b = *data.get(pos).ok_or(OpusTsError::Truncated)?;
            pos += 1;
            size += b as usize;
            if b != 0xff {
                break;
            }
        }
        let read16 = |pos: &mut usize| -> Result<u16, OpusTsError> {
            let v = data.get(*pos..*pos + 2).ok_or(OpusTsError::Truncated)?;
            *pos += 2;
            Ok(u16::from_be_bytes([v[0], v[1]]) & 0x1fff)
        };
        let start_trim = if start_trim_flag {
            read16(&mut pos)?
        } else {
            0
        };
        let end_trim = if end_trim_flag { read16(&mut pos)? } else { 0 };
        if extension_flag {
            let len = *data.get(pos).ok_or(OpusTsError::Truncated)? as usize;
            pos += 1 + len;
        }
        let packet = data.get(pos..pos + size).ok_or(OpusTsError::Truncated)?;
        out.push(OpusUnit {
            packet,
            start_trim,
            end_trim,
        });
        data = &data[pos + size..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_from_the_toc() {
        // CELT fullband 20 ms, one frame.
        assert_eq!(packet_samples(&[0xfc, 0, 0]), Some(960));
        // SILK wideband 60 ms (configuration 11).
        assert_eq!(packet_samples(&[11 << 3]), Some(2880));
        // Two CELT fullband 20 ms frames (code 1).
        assert_eq!(packet_samples(&[0xf9]), Some(1920));
        // CELT narrowband 2.5 ms (configuration 16).
        assert_eq!(packet_samples(&[16 << 3]), Some(120));
        // Code 3: frame count in the next byte (3 frames of 20 ms).
        assert_eq!(packet_samples(&[0xfb, 0x03]), Some(2880));
        assert_eq!(packet_samples(&[0xfb, 0x07]), None, "over 120 ms");
        assert_eq!(packet_samples(&[0xfb]), None);
        assert_eq!(packet_samples(&[]), None);
    }

    #[test]
    fn access_units_behind_control_headers() {
        let mut pes = vec![0x7f, 0xe0, 3, 0xfc, 1, 2];
        // A 300-byte unit: size 255 + 45, with a start trim of 312.
        pes.extend_from_slice(&[0x7f, 0xf0, 0xff, 45, 0x01, 0x38]);
        pes.extend(std::iter::repeat_n(0xfc, 300));
        let units = split_ts_units(&pes).unwrap();
        assert_eq!(units.len(), 2);
        assert_eq!(units[0].packet, &[0xfc, 1, 2]);
        assert_eq!((units[1].packet.len(), units[1].start_trim), (300, 312));
        assert_eq!(split_ts_units(&[0x12, 0x34]), Err(OpusTsError::NoHeader(2)));
        assert_eq!(
            split_ts_units(&[0x7f, 0xe0, 9, 1]),
            Err(OpusTsError::Truncated)
        );
        assert_eq!(
            split_ts_units(&[0x7f, 0xe0, 0xff]),
            Err(OpusTsError::Truncated)
        );
    }
}
