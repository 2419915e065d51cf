//! H.264 decoder configuration: the `AVCDecoderConfigurationRecord` carried by RTMP/FLV and
//! fMP4 `avcC`, and the facts about the stream its SPS gives (resolution, frame rate, profile).

use bytes::Bytes;
use mp4_atom::Atom;

/// Largest configuration record accepted; real ones are under 200 bytes.
pub const MAX_CONFIG_LEN: usize = 64 * 1024;

/// Errors in H.264 configuration or frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum H264Error {
    /// The record could not be parsed.
    #[error("bad AVCDecoderConfigurationRecord: {0}")]
    BadConfig(String),
    /// The record holds no SPS or no PPS.
    #[error("AVCDecoderConfigurationRecord without SPS or PPS")]
    MissingParameterSets,
    /// The SPS could not be parsed.
    #[error("bad SPS: {0}")]
    BadSps(String),
    /// A frame's NAL unit lengths do not add up.
    #[error("malformed length-prefixed NAL units")]
    BadNalLengths,
}

/// Decoder configuration and stream facts of an H.264 track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H264Params {
    /// The `AVCDecoderConfigurationRecord` exactly as received.
    pub record: Bytes,
    /// First sequence parameter set (NAL unit including its header byte).
    pub sps: Bytes,
    /// First picture parameter set.
    pub pps: Bytes,
    /// `profile_idc` (66 baseline, 77 main, 100 high, ...).
    pub profile: u8,
    /// Constraint flags byte.
    pub compatibility: u8,
    /// `level_idc` (31 = 3.1).
    pub level: u8,
    /// Bytes in each NAL unit length prefix of frames (1, 2 or 4).
    pub nal_length_size: u8,
    /// Picture width in pixels, after cropping.
    pub width: u32,
    /// Picture height in pixels, after cropping.
    pub height: u32,
    /// Frame rate from the SPS timing info, in thousandths of a frame per second, when present.
    pub fps_milli: Option<u32>,
}

impl H264Params {
    /// Parses an `AVCDecoderConfigurationRecord` (the body of an `avcC` box or an RTMP AVC
    /// sequence header).
    pub fn from_record(record: Bytes) -> Result<Self, H264Error> {
        if record.len() > MAX_CONFIG_LEN {
            return Err(H264Error::BadConfig(format!("{} bytes", record.len())));
        }
        let mut buf = &record[..];
        let avcc = mp4_atom::Avcc::decode_body(&mut buf)
            .map_err(|e| H264Error::BadConfig(e.to_string()))?;
        let (Some(sps), Some(pps)) = (
            avcc.sequence_parameter_sets.first(),
            avcc.picture_parameter_sets.first(),
        ) else {
            return Err(H264Error::MissingParameterSets);
        };
        if !matches!(avcc.length_size, 1 | 2 | 4) {
            return Err(H264Error::BadConfig(format!(
                "NAL length size {}",
                avcc.length_size
            )));
        }
        let facts = SpsFacts::parse(sps)?;
        Ok(H264Params {
            sps: Bytes::copy_from_slice(sps),
            pps: Bytes::copy_from_slice(pps),
            profile: avcc.avc_profile_indication,
            compatibility: avcc.profile_compatibility,
            level: avcc.avc_level_indication,
            nal_length_size: avcc.length_size,
            width: facts.width,
            height: facts.height,
            fps_milli: facts.fps_milli,
            record,
        })
    }

    /// Builds the configuration from one SPS and one PPS (NAL units with header byte), with
    /// 4-byte NAL length prefixes.
    pub fn from_sps_pps(sps: &[u8], pps: &[u8]) -> Result<Self, H264Error> {
        let avcc = mp4_atom::Avcc::new(sps, pps).map_err(|e| H264Error::BadSps(e.to_string()))?;
        let mut body = Vec::new();
        avcc.encode_body(&mut body)
            .map_err(|e| H264Error::BadConfig(e.to_string()))?;
        Self::from_record(Bytes::from(body))
    }

    /// The RFC 6381 codec string, e.g. `avc1.64001f`.
    pub fn codec_string(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile, self.compatibility, self.level
        )
    }

    /// Iterates the NAL units of a length-prefixed frame.
    pub fn nal_units<'a>(&self, frame: &'a [u8]) -> NalUnits<'a> {
        NalUnits {
            rest: frame,
            length_size: self.nal_length_size as usize,
        }
    }

    /// True if the frame contains an IDR slice (NAL type 5).
    pub fn is_idr(&self, frame: &[u8]) -> Result<bool, H264Error> {
        for nal in self.nal_units(frame) {
            let nal = nal?;
            if nal.first().map(|b| b & 0x1f) == Some(5) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Iterator over the NAL units of a length-prefixed (AVCC) frame.
pub struct NalUnits<'a> {
    rest: &'a [u8],
    length_size: usize,
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = Result<&'a [u8], H264Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        if self.rest.len() < self.length_size {
            self.rest = &[];
            return Some(Err(H264Error::BadNalLengths));
        }
        let mut len = 0usize;
        for &b in &self.rest[..self.length_size] {
            len = (len << 8) | b as usize;
        }
        let body = &self.rest[self.length_size..];
        if len > body.len() {
            self.rest = &[];
            return Some(Err(H264Error::BadNalLengths));
        }
        let (nal, rest) = body.split_at(len);
        self.rest = rest;
        Some(Ok(nal))
    }
}

struct SpsFacts {
    width: u32,
    height: u32,
    fps_milli: Option<u32>,
}

impl SpsFacts {
    fn parse(sps: &[u8]) -> Result<Self, H264Error> {
        use h264_reader::nal::sps::SeqParameterSet;
        use h264_reader::rbsp::{BitReader, decode_nal};
        if sps.len() < 4 || sps[0] & 0x1f != 7 {
            return Err(H264Error::BadSps("not an SPS NAL unit".into()));
        }
        let rbsp = decode_nal(sps).map_err(|e| H264Error::BadSps(e.to_string()))?;
        let parsed = SeqParameterSet::from_bits(BitReader::new(&*rbsp))
            .map_err(|e| H264Error::BadSps(format!("{e:?}")))?;
        let (width, height) = parsed
            .pixel_dimensions()
            .map_err(|e| H264Error::BadSps(format!("{e:?}")))?;
        let fps_milli = parsed
            .fps()
            .filter(|f| f.is_finite() && *f > 0.0 && *f < 1000.0)
            .map(|f| (f * 1000.0).round() as u32);
        Ok(SpsFacts {
            width,
            height,
            fps_milli,
        })
    }
}

/// Converts an Annex B byte stream (start-code delimited) into 4-byte length-prefixed NAL
/// units. Empty NAL units are skipped.
pub fn annexb_to_avcc(data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 16);
    for nal in split_annexb(data) {
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    Bytes::from(out)
}

/// Converts an Annex B access unit into a frame of 4-byte length-prefixed NAL units
/// without the parameter sets (SPS, PPS: they live in the track's configuration) and access
/// unit delimiters (they carry nothing an fMP4 sample needs).
pub fn annexb_to_avcc_without_parameter_sets(data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 16);
    for nal in split_annexb(data).filter(|n| !matches!(n[0] & 0x1f, 7..=9)) {
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    Bytes::from(out)
}

/// Splits an Annex B byte stream into NAL units (without start codes).
pub fn split_annexb(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push((i, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::with_capacity(starts.len());
    for (n, &(_, body_start)) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(data.len(), |&(s, _)| s);
        // A four-byte start code leaves its leading zero on the previous NAL unit.
        while end > body_start && data[end - 1] == 0 {
            end -= 1;
        }
        if end > body_start {
            nals.push(&data[body_start..end]);
        }
    }
    nals.into_iter()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // SPS/PPS of x264 1280x720 high profile, level 3.1 (from an ffmpeg lavfi testsrc encode).
    pub(crate) const SPS_720P: &[u8] = &[
        0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03,
        0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x83, 0x19, 0x60,
    ];
    pub(crate) const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

    #[test]
    fn parses_record_and_sps() {
        let p = H264Params::from_sps_pps(SPS_720P, PPS).unwrap();
        assert_eq!((p.width, p.height), (1280, 720));
        assert_eq!(p.codec_string(), "avc1.64001f");
        assert_eq!(p.nal_length_size, 4);
        let again = H264Params::from_record(p.record.clone()).unwrap();
        assert_eq!(again, p);
    }

    #[test]
    fn rejects_garbage_records() {
        for bad in [
            &[][..],
            &[1],
            &[1, 0x64, 0, 0x1f, 0xff, 0xe1, 0x00, 0xff, 0x67],
            &[2, 0x64, 0, 0x1f, 0xff, 0xe0, 0x00],
            &[1, 0x64, 0, 0x1f, 0xff, 0xe0, 0x00],
        ] {
            assert!(H264Params::from_record(Bytes::copy_from_slice(bad)).is_err());
        }
    }

    #[test]
    fn nal_iteration_and_idr() {
        let p = H264Params::from_sps_pps(SPS_720P, PPS).unwrap();
        let frame = [0, 0, 0, 2, 0x09, 0xf0, 0, 0, 0, 3, 0x65, 0x88, 0x84];
        assert!(p.is_idr(&frame).unwrap());
        let frame = [0, 0, 0, 3, 0x41, 0x9a, 0x00];
        assert!(!p.is_idr(&frame).unwrap());
        let truncated = [0, 0, 0, 9, 0x41];
        assert_eq!(p.is_idr(&truncated), Err(H264Error::BadNalLengths));
    }

    #[test]
    fn annexb_conversion() {
        let annexb = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5,
        ];
        let avcc = annexb_to_avcc(&annexb);
        assert_eq!(
            &avcc[..],
            &[
                0, 0, 0, 3, 0x67, 1, 2, 0, 0, 0, 2, 0x68, 3, 0, 0, 0, 3, 0x65, 4, 5
            ]
        );
    }
}
