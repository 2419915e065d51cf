//! Reading the playlists of a live LL-HLS origin (another jiangtang), for an edge that pulls
//! a lecture from it: the multivariant playlist's renditions (video, and an audio rendition
//! per dialect with its language and name), and a media playlist's parts, preload hint and
//! end. Only what pulling needs is read; other tags are skipped.
//!
//! m3u8-rs (which the tests use to check what we write) has no Low-Latency tags: it keeps
//! `EXT-X-PART` and `EXT-X-PRELOAD-HINT` as unknown tags attached to the segment after them,
//! so the part list is read here from the attribute lists (RFC 8216bis 4.2).

/// Longest playlist read (a 6-segment LL-HLS window is a few KiB).
pub const MAX_PLAYLIST: usize = 1 << 20;

/// Why a playlist could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("playlist: {0}")]
pub struct ReadError(String);

/// A rendition of a lecture, as its multivariant playlist lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionRef {
    /// The media playlist's URI, relative to the multivariant playlist.
    pub uri: String,
    /// Audio renditions: the dialect's language tag (`LANGUAGE`) and display name (`NAME`).
    pub language: Option<String>,
    /// Display name (`NAME`), audio only.
    pub name: Option<String>,
    /// `DEFAULT=YES`.
    pub default: bool,
    /// A video variant (`EXT-X-STREAM-INF` with `RESOLUTION`) rather than an audio rendition.
    pub video: bool,
}

/// Reads a multivariant playlist: the video variant (if any) first, then the audio
/// renditions in their order. Audio-only variants (which point at an audio rendition) are
/// not listed twice.
pub fn read_multivariant(text: &str) -> Result<Vec<RenditionRef>, ReadError> {
    let text = header(text)?;
    let mut video = Vec::new();
    let mut audio = Vec::new();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("#EXT-X-MEDIA:") {
            let a = attributes(rest)?;
            if get(&a, "TYPE") != Some("AUDIO") {
                continue;
            }
            let Some(uri) = get(&a, "URI") else { continue };
            audio.push(RenditionRef {
                uri: uri.to_string(),
                language: get(&a, "LANGUAGE").map(str::to_string),
                name: get(&a, "NAME").map(str::to_string),
                default: get(&a, "DEFAULT") == Some("YES"),
                video: false,
            });
        } else if let Some(rest) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            let a = attributes(rest)?;
            let uri = lines
                .next()
                .filter(|l| !l.starts_with('#'))
                .ok_or_else(|| ReadError("EXT-X-STREAM-INF without a URI".into()))?;
            if get(&a, "RESOLUTION").is_some() && video.is_empty() {
                video.push(RenditionRef {
                    uri: uri.to_string(),
                    language: None,
                    name: None,
                    default: true,
                    video: true,
                });
            }
        }
    }
    video.extend(audio);
    Ok(video)
}

/// A part of a media playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRef {
    /// Media sequence number of the segment it belongs to.
    pub msn: u64,
    /// Its index in that segment.
    pub index: u32,
    /// Its URI, relative to the playlist.
    pub uri: String,
    /// `INDEPENDENT=YES`: it starts with a keyframe (every audio part does).
    pub independent: bool,
    /// The init segment (`EXT-X-MAP`) its samples need.
    pub map: String,
    /// An `EXT-X-DISCONTINUITY` comes before its segment (the publisher restarted).
    pub discontinuity: bool,
}

/// What a media playlist says to somebody following it part by part.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LivePlaylist {
    /// Every part listed, in order.
    pub parts: Vec<PartRef>,
    /// The part the server announces next (`EXT-X-PRELOAD-HINT`), as (msn, index).
    pub next: Option<(u64, u32)>,
    /// `EXT-X-ENDLIST`: the lecture ended.
    pub ended: bool,
}

impl LivePlaylist {
    /// The newest part from which playback can start (`INDEPENDENT=YES`).
    pub fn last_independent(&self) -> Option<&PartRef> {
        self.parts.iter().rev().find(|p| p.independent)
    }

    /// The part at (msn, index), if listed.
    pub fn part(&self, msn: u64, index: u32) -> Option<&PartRef> {
        self.parts.iter().find(|p| p.msn == msn && p.index == index)
    }

    /// The parts listed after (msn, index), in order.
    pub fn after(&self, msn: u64, index: u32) -> impl Iterator<Item = &PartRef> {
        self.parts
            .iter()
            .filter(move |p| (p.msn, p.index) > (msn, index))
    }
}

/// Reads a live media playlist with LL-HLS parts.
pub fn read_media(text: &str) -> Result<LivePlaylist, ReadError> {
    let text = header(text)?;
    let mut out = LivePlaylist::default();
    let mut msn = 0u64;
    let mut index = 0u32;
    let mut map = String::new();
    let mut discontinuity = false;
    let mut after_extinf = false;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            msn = v
                .parse()
                .map_err(|_| ReadError(format!("bad media sequence {v:?}")))?;
        } else if let Some(rest) = line.strip_prefix("#EXT-X-MAP:") {
            let a = attributes(rest)?;
            map = get(&a, "URI")
                .ok_or_else(|| ReadError("EXT-X-MAP without a URI".into()))?
                .to_string();
        } else if line == "#EXT-X-DISCONTINUITY" {
            discontinuity = true;
        } else if let Some(rest) = line.strip_prefix("#EXT-X-PART:") {
            let a = attributes(rest)?;
            let uri = get(&a, "URI").ok_or_else(|| ReadError("EXT-X-PART without a URI".into()))?;
            if map.is_empty() {
                return Err(ReadError("a part before any EXT-X-MAP".into()));
            }
            out.parts.push(PartRef {
                msn,
                index,
                uri: uri.to_string(),
                independent: get(&a, "INDEPENDENT") == Some("YES"),
                map: map.clone(),
                discontinuity,
            });
            index = index
                .checked_add(1)
                .ok_or_else(|| ReadError("too many parts in a segment".into()))?;
        } else if let Some(rest) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
            let a = attributes(rest)?;
            if get(&a, "TYPE") == Some("PART") {
                out.next = Some((msn, index));
            }
        } else if line.starts_with("#EXTINF:") {
            after_extinf = true;
        } else if line == "#EXT-X-ENDLIST" {
            out.ended = true;
        } else if !line.starts_with('#') && after_extinf {
            // The segment's URI ends it: what follows belongs to the next one.
            msn = msn
                .checked_add(1)
                .ok_or_else(|| ReadError("media sequence overflows".into()))?;
            index = 0;
            discontinuity = false;
            after_extinf = false;
        }
    }
    Ok(out)
}

fn header(text: &str) -> Result<&str, ReadError> {
    if text.len() > MAX_PLAYLIST {
        return Err(ReadError(format!("{} bytes", text.len())));
    }
    text.trim_start_matches('\u{feff}')
        .strip_prefix("#EXTM3U")
        .ok_or_else(|| ReadError("not a playlist (no #EXTM3U)".into()))
}

fn get<'a>(attrs: &'a [(&'a str, &'a str)], key: &str) -> Option<&'a str> {
    attrs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// An attribute list (`KEY=value,KEY="quoted, value"`), values without their quotes.
fn attributes(list: &str) -> Result<Vec<(&str, &str)>, ReadError> {
    let mut out = Vec::new();
    let mut rest = list.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .ok_or_else(|| ReadError(format!("attribute without a value in {list:?}")))?;
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted
                .find('"')
                .ok_or_else(|| ReadError(format!("unterminated quote in {list:?}")))?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            match after.find(',') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            }
        };
        out.push((key.trim(), value));
        rest = after.trim_start();
        rest = match rest.strip_prefix(',') {
            Some(r) => r.trim_start(),
            None if rest.is_empty() => rest,
            None => {
                return Err(ReadError(format!(
                    "no comma between attributes in {list:?}"
                )));
            }
        };
    }
    Ok(out)
}

/// Fuzzing entry point: both readers on arbitrary text never panic, and every part they
/// find has a URI and an init segment.
#[doc(hidden)]
pub fn fuzz(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = read_multivariant(&text);
    if let Ok(p) = read_media(&text) {
        assert!(p.parts.iter().all(|p| !p.map.is_empty()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MULTIVARIANT: &str = r#"#EXTM3U
#EXT-X-VERSION:6
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="dialects",NAME="普通话",LANGUAGE="cmn",DEFAULT=YES,AUTOSELECT=YES,CHANNELS="2",URI="audio-cmn/index.m3u8"
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="dialects",NAME="粤语, 白话",LANGUAGE="yue",DEFAULT=NO,AUTOSELECT=YES,CHANNELS="2",URI="audio-yue/index.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=1760703,AVERAGE-BANDWIDTH=1760703,CODECS="avc1.4d401f,mp4a.40.2",RESOLUTION=1280x720,FRAME-RATE=25.000,AUDIO="dialects"
video/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=103935,AVERAGE-BANDWIDTH=103935,CODECS="mp4a.40.2",AUDIO="dialects"
audio-cmn/index.m3u8
"#;

    #[test]
    fn multivariant_lists_video_then_each_dialect() {
        let r = read_multivariant(MULTIVARIANT).unwrap();
        assert_eq!(r.len(), 3);
        assert!(r[0].video && r[0].uri == "video/index.m3u8");
        assert_eq!(r[1].language.as_deref(), Some("cmn"));
        assert!(r[1].default);
        assert_eq!(r[2].name.as_deref(), Some("粤语, 白话"));
        assert_eq!(r[2].uri, "audio-yue/index.m3u8");
        assert!(!r[2].default);
        assert!(read_multivariant("<html>").is_err());
    }

    const MEDIA: &str = r#"#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.281
#EXT-X-PART-INF:PART-TARGET=0.427
#EXT-X-MEDIA-SEQUENCE:7
#EXT-X-MAP:URI="init-a-0.mp4"
#EXT-X-PART:DURATION=0.40000,URI="part-a-7-0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.40000,URI="part-a-7-1.m4s"
#EXTINF:0.80000,
seg-a-7.m4s
#EXT-X-DISCONTINUITY
#EXT-X-MAP:URI="init-b-1.mp4"
#EXT-X-PART:DURATION=0.40000,URI="part-b-8-0.m4s",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-b-8-1.m4s"
#EXT-X-RENDITION-REPORT:URI="../audio-cmn/index.m3u8",LAST-MSN=8,LAST-PART=0
"#;

    #[test]
    fn media_playlist_parts_carry_their_place_and_init() {
        let p = read_media(MEDIA).unwrap();
        assert_eq!(p.parts.len(), 3);
        assert_eq!((p.parts[1].msn, p.parts[1].index), (7, 1));
        assert!(!p.parts[1].independent && !p.parts[1].discontinuity);
        let last = &p.parts[2];
        assert_eq!(
            (last.msn, last.index, last.uri.as_str()),
            (8, 0, "part-b-8-0.m4s")
        );
        assert!(last.discontinuity && last.map == "init-b-1.mp4");
        assert_eq!(p.next, Some((8, 1)));
        assert_eq!(p.last_independent(), Some(last));
        assert_eq!(p.after(7, 0).count(), 2);
        assert!(!p.ended);
        assert!(
            read_media(&format!("{MEDIA}#EXT-X-ENDLIST\n"))
                .unwrap()
                .ended
        );
    }

    #[test]
    fn broken_playlists_are_errors() {
        assert!(read_media("#EXTM3U\n#EXT-X-PART:URI=\"p.m4s\"\n").is_err());
        assert!(read_media("#EXTM3U\n#EXT-X-MAP:URI=\"i.mp4\n").is_err());
        assert!(read_media("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:x\n").is_err());
        assert!(
            read_media("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:18446744073709551615\n#EXTINF:1,\na\n")
                .is_err()
        );
        assert!(attributes("A=\"1\"B=2").is_err());
        assert!(attributes("A").is_err());
        assert_eq!(
            attributes("A=1, B=\"x,y\"").unwrap(),
            vec![("A", "1"), ("B", "x,y")]
        );
    }
}
