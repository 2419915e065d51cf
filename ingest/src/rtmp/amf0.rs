//! AMF0 values (the encoding of RTMP commands and metadata), decoded with hard limits on
//! nesting depth and element count so hostile input cannot exhaust the stack or memory.

use std::fmt;

/// Deepest nesting of objects and arrays accepted.
pub const MAX_DEPTH: usize = 16;
/// Most values (including nested ones) accepted in one message.
pub const MAX_ELEMENTS: usize = 1024;

/// An AMF0 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Amf0 {
    /// Number (IEEE 754 double).
    Number(f64),
    /// Boolean.
    Bool(bool),
    /// String (short or long form).
    String(String),
    /// Anonymous or typed object: ordered properties.
    Object(Vec<(String, Amf0)>),
    /// Null.
    Null,
    /// Undefined.
    Undefined,
    /// ECMA array: ordered properties.
    EcmaArray(Vec<(String, Amf0)>),
    /// Strict array.
    StrictArray(Vec<Amf0>),
    /// Date in milliseconds since the epoch.
    Date(f64),
}

impl Amf0 {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Amf0::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// Looks up a property of an object or ECMA array.
    pub fn get(&self, key: &str) -> Option<&Amf0> {
        match self {
            Amf0::Object(props) | Amf0::EcmaArray(props) => {
                props.iter().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            _ => None,
        }
    }
}

/// Errors decoding AMF0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmfError {
    /// Input ended inside a value.
    #[error("truncated AMF0 value")]
    Truncated,
    /// A type marker we do not accept (reference, AMF3 switch, movieclip, ...).
    #[error("unsupported AMF0 type marker 0x{0:02x}")]
    UnsupportedMarker(u8),
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("AMF0 nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    /// More than [`MAX_ELEMENTS`] values.
    #[error("more than {MAX_ELEMENTS} AMF0 values")]
    TooManyElements,
    /// A string is not UTF-8.
    #[error("AMF0 string is not UTF-8")]
    BadUtf8,
}

/// Decodes every value in `data`.
pub fn decode_all(data: &[u8]) -> Result<Vec<Amf0>, AmfError> {
    let mut d = Decoder {
        data,
        pos: 0,
        elements: 0,
    };
    let mut out = Vec::new();
    while d.pos < d.data.len() {
        out.push(d.value(0)?);
    }
    Ok(out)
}

struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    elements: usize,
}

impl Decoder<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], AmfError> {
        let end = self.pos.checked_add(n).ok_or(AmfError::Truncated)?;
        let s = self.data.get(self.pos..end).ok_or(AmfError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, AmfError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, AmfError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, AmfError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f64(&mut self) -> Result<f64, AmfError> {
        let b = self.take(8)?;
        Ok(f64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    fn string(&mut self, len: usize) -> Result<String, AmfError> {
        let b = self.take(len)?;
        String::from_utf8(b.to_vec()).map_err(|_| AmfError::BadUtf8)
    }

    fn value(&mut self, depth: usize) -> Result<Amf0, AmfError> {
        self.elements += 1;
        if self.elements > MAX_ELEMENTS {
            return Err(AmfError::TooManyElements);
        }
        let marker = self.u8()?;
        Ok(match marker {
            0x00 => Amf0::Number(self.f64()?),
            0x01 => Amf0::Bool(self.u8()? != 0),
            0x02 => {
                let len = self.u16()? as usize;
                Amf0::String(self.string(len)?)
            }
            0x03 => Amf0::Object(self.properties(depth)?),
            0x05 => Amf0::Null,
            0x06 => Amf0::Undefined,
            0x08 => {
                // The count is advisory (encoders write 0); the end marker terminates.
                self.u32()?;
                Amf0::EcmaArray(self.properties(depth)?)
            }
            0x0a => {
                if depth >= MAX_DEPTH {
                    return Err(AmfError::TooDeep);
                }
                let count = self.u32()? as usize;
                if count > MAX_ELEMENTS {
                    return Err(AmfError::TooManyElements);
                }
                // Each element takes at least one byte, so the remaining input bounds the
                // allocation too.
                let mut items = Vec::with_capacity(count.min(self.data.len() - self.pos));
                for _ in 0..count {
                    items.push(self.value(depth + 1)?);
                }
                Amf0::StrictArray(items)
            }
            0x0b => {
                let ms = self.f64()?;
                self.u16()?;
                Amf0::Date(ms)
            }
            0x0c => {
                let len = self.u32()? as usize;
                Amf0::String(self.string(len)?)
            }
            // Typed object: class name, then properties.
            0x10 => {
                let len = self.u16()? as usize;
                self.take(len)?;
                Amf0::Object(self.properties(depth)?)
            }
            other => return Err(AmfError::UnsupportedMarker(other)),
        })
    }

    fn properties(&mut self, depth: usize) -> Result<Vec<(String, Amf0)>, AmfError> {
        if depth >= MAX_DEPTH {
            return Err(AmfError::TooDeep);
        }
        let mut props = Vec::new();
        loop {
            let len = self.u16()? as usize;
            if len == 0 {
                // Empty key: the next byte is the object-end marker (0x09).
                if self.u8()? == 0x09 {
                    return Ok(props);
                }
                return Err(AmfError::UnsupportedMarker(0x09));
            }
            let key = self.string(len)?;
            let value = self.value(depth + 1)?;
            props.push((key, value));
        }
    }
}

/// Appends the encoding of `v` to `out`.
pub fn encode(v: &Amf0, out: &mut Vec<u8>) {
    match v {
        Amf0::Number(n) => {
            out.push(0x00);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Amf0::Bool(b) => out.extend_from_slice(&[0x01, *b as u8]),
        Amf0::String(s) if s.len() <= u16::MAX as usize => {
            out.push(0x02);
            out.extend_from_slice(&(s.len() as u16).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Amf0::String(s) => {
            out.push(0x0c);
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Amf0::Object(props) => {
            out.push(0x03);
            encode_properties(props, out);
        }
        Amf0::Null => out.push(0x05),
        Amf0::Undefined => out.push(0x06),
        Amf0::EcmaArray(props) => {
            out.push(0x08);
            out.extend_from_slice(&(props.len() as u32).to_be_bytes());
            encode_properties(props, out);
        }
        Amf0::StrictArray(items) => {
            out.push(0x0a);
            out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            for item in items {
                encode(item, out);
            }
        }
        Amf0::Date(ms) => {
            out.push(0x0b);
            out.extend_from_slice(&ms.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
    }
}

fn encode_properties(props: &[(String, Amf0)], out: &mut Vec<u8>) {
    for (k, v) in props {
        let k = &k.as_bytes()[..k.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(k.len() as u16).to_be_bytes());
        out.extend_from_slice(k);
        encode(v, out);
    }
    out.extend_from_slice(&[0, 0, 0x09]);
}

/// Builds an object from `(key, value)` pairs.
pub fn object<const N: usize>(props: [(&str, Amf0); N]) -> Amf0 {
    Amf0::Object(props.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

impl fmt::Display for Amf0 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amf0::Number(n) => write!(f, "{n}"),
            Amf0::Bool(b) => write!(f, "{b}"),
            Amf0::String(s) => write!(f, "{s:?}"),
            Amf0::Null => f.write_str("null"),
            Amf0::Undefined => f.write_str("undefined"),
            Amf0::Date(ms) => write!(f, "date({ms})"),
            Amf0::Object(p) | Amf0::EcmaArray(p) => {
                f.write_str("{")?;
                for (i, (k, v)) in p.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
            Amf0::StrictArray(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let values = vec![
            Amf0::String("connect".into()),
            Amf0::Number(1.0),
            object([
                ("app", Amf0::String("live".into())),
                ("fpad", Amf0::Bool(false)),
                ("nested", object([("x", Amf0::Null)])),
            ]),
            Amf0::EcmaArray(vec![("width".into(), Amf0::Number(1280.0))]),
            Amf0::StrictArray(vec![Amf0::Undefined, Amf0::Date(5.0)]),
            Amf0::String("x".repeat(70_000)),
        ];
        let mut buf = Vec::new();
        for v in &values {
            encode(v, &mut buf);
        }
        assert_eq!(decode_all(&buf).unwrap(), values);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut buf = Vec::new();
        encode(
            &object([("a", Amf0::String("bcd".into())), ("n", Amf0::Number(2.0))]),
            &mut buf,
        );
        for cut in 1..buf.len() {
            assert!(decode_all(&buf[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut buf = Vec::new();
        for _ in 0..10_000 {
            buf.extend_from_slice(&[0x03, 0, 1, b'a']);
        }
        assert_eq!(decode_all(&buf), Err(AmfError::TooDeep));
        let mut arrays = Vec::new();
        for _ in 0..100 {
            arrays.extend_from_slice(&[0x0a, 0, 0, 0, 1]);
        }
        assert_eq!(decode_all(&arrays), Err(AmfError::TooDeep));
    }

    #[test]
    fn huge_counts_do_not_allocate() {
        assert_eq!(
            decode_all(&[0x0a, 0xff, 0xff, 0xff, 0xff]),
            Err(AmfError::TooManyElements)
        );
        assert_eq!(decode_all(&[0x0a, 0, 0, 3, 0xff]), Err(AmfError::Truncated));
        let many = vec![0x05u8; MAX_ELEMENTS + 1];
        assert_eq!(decode_all(&many), Err(AmfError::TooManyElements));
        assert_eq!(
            decode_all(&[0x0c, 0xff, 0xff, 0xff, 0xff, b'a']),
            Err(AmfError::Truncated)
        );
    }

    #[test]
    fn rejects_references_and_amf3() {
        assert_eq!(
            decode_all(&[0x07, 0, 1]),
            Err(AmfError::UnsupportedMarker(7))
        );
        assert_eq!(
            decode_all(&[0x11, 1]),
            Err(AmfError::UnsupportedMarker(0x11))
        );
    }
}
