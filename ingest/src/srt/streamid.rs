//! The SRT stream id a publisher sends: which lecture, and its key.
//!
//! Forms accepted (the first is what the README documents):
//! - `publish:STREAM` and `publish:STREAM:KEY`;
//! - the SRT access-control syntax `#!::r=STREAM,m=publish,s=KEY` (keys in any order;
//!   `s` carries the key, as with other servers; `m` defaults to `request` per the
//!   specification, so a publisher must say `m=publish`);
//! - a bare `STREAM` (encoders whose stream id field takes one word).

use media::sink::valid_stream_name;

/// Longest stream id considered (libsrt caps it at 512).
pub const MAX_STREAM_ID: usize = 512;

/// What a publisher asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamId {
    /// Lecture name.
    pub stream: String,
    /// Publishing key, if any.
    pub key: Option<String>,
}

/// Why a stream id is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    /// Nothing was sent.
    #[error("no stream id: use streamid=publish:STREAM[:KEY]")]
    Missing,
    /// Not one of the accepted forms, or not a valid lecture name.
    #[error("stream id not understood ({0}): use streamid=publish:STREAM[:KEY]")]
    Malformed(&'static str),
    /// The caller wants to play, not to publish: this server only takes publishers.
    #[error(
        "mode {0:?} is not offered: SRT here is for publishing (m=publish); watch over HLS or WebRTC"
    )]
    NotPublish(String),
}

/// Parses a stream id.
pub fn parse(id: &str) -> Result<StreamId, StreamIdError> {
    if id.is_empty() {
        return Err(StreamIdError::Missing);
    }
    if id.len() > MAX_STREAM_ID {
        return Err(StreamIdError::Malformed("longer than 512 bytes"));
    }
    let (stream, key) = if let Some(rest) = id.strip_prefix("#!::") {
        let mut stream = None;
        let mut key = None;
        let mut mode = "request";
        for pair in rest.split(',') {
            let (k, v) = pair
                .split_once('=')
                .ok_or(StreamIdError::Malformed("a key without '='"))?;
            match k {
                "r" => stream = Some(v),
                "s" => key = Some(v),
                "m" => mode = v,
                // user, host, type and others carry nothing we use.
                _ => {}
            }
        }
        if mode != "publish" {
            return Err(StreamIdError::NotPublish(mode.chars().take(32).collect()));
        }
        (
            stream.ok_or(StreamIdError::Malformed("no r= (resource)"))?,
            key,
        )
    } else if let Some(rest) = id.strip_prefix("publish:") {
        match rest.split_once(':') {
            Some((s, k)) => (s, Some(k)),
            None => (rest, None),
        }
    } else if let Some((mode, _)) = id.split_once(':')
        && matches!(mode, "read" | "play" | "request")
    {
        return Err(StreamIdError::NotPublish(mode.to_string()));
    } else {
        (id, None)
    };
    if !valid_stream_name(stream) {
        return Err(StreamIdError::Malformed("not a valid lecture name"));
    }
    Ok(StreamId {
        stream: stream.to_string(),
        key: key.filter(|k| !k.is_empty()).map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(id: &str) -> (String, Option<String>) {
        let s = parse(id).unwrap();
        (s.stream, s.key)
    }

    #[test]
    fn accepted_forms() {
        assert_eq!(ok("publish:xihe"), ("xihe".into(), None));
        assert_eq!(
            ok("publish:xihe:hall-key-123"),
            ("xihe".into(), Some("hall-key-123".into()))
        );
        assert_eq!(
            ok("#!::r=xihe,m=publish,s=hall-key-123"),
            ("xihe".into(), Some("hall-key-123".into()))
        );
        assert_eq!(ok("#!::m=publish,u=op,r=xihe"), ("xihe".into(), None));
        assert_eq!(ok("xihe"), ("xihe".into(), None));
        assert_eq!(ok("publish:xihe:"), ("xihe".into(), None));
    }

    #[test]
    fn refused_forms() {
        assert_eq!(parse(""), Err(StreamIdError::Missing));
        assert!(matches!(
            parse("#!::r=xihe"),
            Err(StreamIdError::NotPublish(m)) if m == "request"
        ));
        assert!(matches!(
            parse("read:xihe"),
            Err(StreamIdError::NotPublish(_))
        ));
        for bad in [
            "publish:",
            "publish:../etc",
            "publish:a b",
            "#!::m=publish",
            "#!::m=publish,r",
            "名字",
            &"x".repeat(600),
        ] {
            assert!(
                matches!(parse(bad), Err(StreamIdError::Malformed(_))),
                "{bad:?}"
            );
        }
    }
}
