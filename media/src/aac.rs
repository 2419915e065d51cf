//! AAC decoder configuration (`AudioSpecificConfig`, ISO/IEC 14496-3 §1.6.2.1).

use bytes::Bytes;

/// Largest AudioSpecificConfig accepted; AAC-LC's is 2 bytes, with extensions a handful.
pub const MAX_CONFIG_LEN: usize = 64;

/// Samples per AAC frame (AAC-LC, HE-AAC core).
pub const SAMPLES_PER_FRAME: u32 = 1024;

const SAMPLE_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// Errors in an AudioSpecificConfig.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AacError {
    /// Too short, too long, or with reserved values.
    #[error("bad AudioSpecificConfig: {0}")]
    BadConfig(&'static str),
}

/// Decoder configuration of an AAC track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacParams {
    /// The AudioSpecificConfig exactly as received.
    pub config: Bytes,
    /// Audio object type (2 = AAC-LC, 5 = SBR, 29 = PS).
    pub object_type: u8,
    /// Sampling rate of the core coder in Hz.
    pub sample_rate: u32,
    /// Channel configuration (1 mono, 2 stereo, ...); 0 means defined in-band.
    pub channels: u8,
}

impl AacParams {
    /// Parses an AudioSpecificConfig.
    pub fn from_config(config: Bytes) -> Result<Self, AacError> {
        if config.len() < 2 {
            return Err(AacError::BadConfig("shorter than 2 bytes"));
        }
        if config.len() > MAX_CONFIG_LEN {
            return Err(AacError::BadConfig("longer than 64 bytes"));
        }
        let mut r = BitReader::new(&config);
        let bad = AacError::BadConfig("truncated");
        let mut object_type = r.read(5).ok_or(bad.clone())? as u8;
        if object_type == 31 {
            object_type = 32 + r.read(6).ok_or(bad.clone())? as u8;
        }
        if object_type == 0 {
            return Err(AacError::BadConfig("object type 0"));
        }
        let index = r.read(4).ok_or(bad.clone())? as usize;
        let sample_rate = if index == 15 {
            r.read(24).ok_or(bad.clone())?
        } else {
            *SAMPLE_RATES
                .get(index)
                .ok_or(AacError::BadConfig("reserved sampling frequency index"))?
        };
        if !(1000..=192_000).contains(&sample_rate) {
            return Err(AacError::BadConfig("sampling rate out of range"));
        }
        let channels = r.read(4).ok_or(bad)? as u8;
        if channels > 7 {
            return Err(AacError::BadConfig("reserved channel configuration"));
        }
        Ok(AacParams {
            config,
            object_type,
            sample_rate,
            channels,
        })
    }

    /// AAC-LC configuration for the given rate and channel count.
    pub fn lc(sample_rate: u32, channels: u8) -> Result<Self, AacError> {
        let index = SAMPLE_RATES
            .iter()
            .position(|&r| r == sample_rate)
            .ok_or(AacError::BadConfig("sampling rate without an index"))?
            as u16;
        let v: u16 = (2 << 11) | (index << 7) | ((channels as u16 & 0xf) << 3);
        Self::from_config(Bytes::copy_from_slice(&v.to_be_bytes()))
    }

    /// The RFC 6381 codec string, e.g. `mp4a.40.2`.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }

    /// Channel count for sample entries (configuration 7 is 7.1, i.e. 8 channels).
    pub fn channel_count(&self) -> u16 {
        match self.channels {
            0 => 2,
            7 => 8,
            n => n as u16,
        }
    }
}

/// Errors splitting ADTS frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdtsError {
    /// No sync word where a frame should start.
    #[error("no ADTS sync word ({0} bytes left)")]
    NoSync(usize),
    /// A header whose frame length does not fit.
    #[error("ADTS frame length {declared} with {left} bytes left")]
    BadLength {
        /// What the header says.
        declared: usize,
        /// What is there.
        left: usize,
    },
    /// Several raw data blocks in one frame (not produced by live encoders; unsupported).
    #[error("ADTS frame with {0} raw data blocks")]
    MultipleBlocks(u8),
    /// The header's profile, rate or channels cannot be an AudioSpecificConfig.
    #[error(transparent)]
    Config(#[from] AacError),
}

/// One ADTS frame: the decoder configuration its header implies and the raw access unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdtsFrame<'a> {
    /// Object type (profile + 1), sampling index and channel configuration of the header.
    pub header: [u8; 3],
    /// The raw AAC access unit (header removed).
    pub data: &'a [u8],
}

impl AdtsFrame<'_> {
    /// The AudioSpecificConfig this frame's header stands for.
    pub fn params(&self) -> Result<AacParams, AacError> {
        let [object_type, index, channels] = self.header;
        let v: u16 =
            ((object_type as u16) << 11) | ((index as u16) << 7) | ((channels as u16 & 0xf) << 3);
        AacParams::from_config(Bytes::copy_from_slice(&v.to_be_bytes()))
    }
}

/// Splits a run of ADTS frames (as MPEG-TS carries AAC) into raw access units.
///
/// Damage ends the run, not what came before it: the frames up to the first bad header are
/// returned with the error, so one damaged frame costs one frame's worth of sound.
pub fn split_adts(mut data: &[u8]) -> (Vec<AdtsFrame<'_>>, Option<AdtsError>) {
    let mut out = Vec::new();
    while !data.is_empty() {
        match adts_frame(data) {
            Ok((frame, len)) => {
                out.push(frame);
                data = &data[len..];
            }
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// The ADTS frame at the start of `data` and its length with header.
fn adts_frame(data: &[u8]) -> Result<(AdtsFrame<'_>, usize), AdtsError> {
    if data.len() < 7 || data[0] != 0xff || data[1] & 0xf6 != 0xf0 {
        return Err(AdtsError::NoSync(data.len()));
    }
    let protection_absent = data[1] & 1 == 1;
    let header_len = if protection_absent { 7 } else { 9 };
    let frame_len =
        ((data[3] as usize & 3) << 11) | ((data[4] as usize) << 3) | (data[5] as usize >> 5);
    let blocks = (data[6] & 3) + 1;
    if blocks != 1 {
        return Err(AdtsError::MultipleBlocks(blocks));
    }
    if frame_len <= header_len || frame_len > data.len() {
        return Err(AdtsError::BadLength {
            declared: frame_len,
            left: data.len(),
        });
    }
    let object_type = (data[2] >> 6) + 1;
    let index = (data[2] >> 2) & 0xf;
    let channels = ((data[2] & 1) << 2) | (data[3] >> 6);
    let frame = AdtsFrame {
        header: [object_type, index, channels],
        data: &data[header_len..frame_len],
    };
    Ok((frame, frame_len))
}

/// One AAC-LC frame of digital silence for 1 or 2 channels (any sampling rate): a raw data
/// block with zero spectral data, as encoders emit for silent input. Used to fill a dialect
/// track that has gone quiet so every rendition keeps the same timeline.
pub fn silent_frame(channels: u8) -> Option<&'static [u8]> {
    match channels {
        1 => Some(&[0x01, 0x18, 0x20, 0x07]),
        2 => Some(&[0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c]),
        _ => None,
    }
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    fn read(&mut self, bits: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..bits {
            let byte = *self.data.get(self.pos / 8)?;
            let bit = (byte >> (7 - self.pos % 8)) & 1;
            v = (v << 1) | bit as u32;
            self.pos += 1;
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adts(payload: &[u8]) -> Vec<u8> {
        // AAC-LC, 48 kHz, stereo, no CRC.
        let len = payload.len() + 7;
        let mut f = vec![
            0xff,
            0xf1,
            0x4c,
            0x80 | (len >> 11) as u8,
            (len >> 3) as u8,
            ((len & 7) << 5) as u8 | 0x1f,
            0xfc,
        ];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn a_damaged_adts_frame_costs_only_itself_and_what_follows() {
        let mut run = [adts(&[1; 10]), adts(&[2; 20]), adts(&[3; 30])].concat();
        let (frames, e) = split_adts(&run);
        assert!(e.is_none());
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[1].data, &[2; 20]);
        assert_eq!(frames[0].params().unwrap().sample_rate, 48_000);
        // The third header loses its sync word.
        run[17 + 27] = 0;
        let (frames, e) = split_adts(&run);
        assert_eq!(frames.len(), 2);
        assert!(matches!(e, Some(AdtsError::NoSync(37))), "{e:?}");
        // A length running past the end.
        let (frames, e) = split_adts(&run[..17 + 20]);
        assert_eq!(frames.len(), 1);
        assert!(matches!(
            e,
            Some(AdtsError::BadLength {
                declared: 27,
                left: 20
            })
        ));
    }

    #[test]
    fn parses_lc_stereo_44100() {
        let p = AacParams::from_config(Bytes::from_static(&[0x12, 0x10])).unwrap();
        assert_eq!((p.object_type, p.sample_rate, p.channels), (2, 44_100, 2));
        assert_eq!(p.codec_string(), "mp4a.40.2");
    }

    #[test]
    fn builds_lc_config() {
        let p = AacParams::lc(48_000, 1).unwrap();
        assert_eq!(&p.config[..], &[0x11, 0x88]);
        assert_eq!((p.sample_rate, p.channels), (48_000, 1));
    }

    #[test]
    fn explicit_rate_and_escape() {
        // object type 31+escape(0) = 32? use explicit frequency 22050 with index 15.
        let p =
            AacParams::from_config(Bytes::from_static(&[0x17, 0x80, 0x2b, 0x11, 0x10])).unwrap();
        assert_eq!(p.object_type, 2);
        assert_eq!(p.sample_rate, 22_050);
        assert_eq!(p.channels, 2);
    }

    #[test]
    fn rejects_bad_configs() {
        for bad in [
            &[][..],
            &[0x12],
            &[0x00, 0x10],
            &[0x16, 0x90],
            &[0x12, 0x78],
            &[0x17, 0x80],
        ] {
            assert!(
                AacParams::from_config(Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
        assert!(AacParams::from_config(Bytes::from(vec![0x12; 65])).is_err());
    }
}
