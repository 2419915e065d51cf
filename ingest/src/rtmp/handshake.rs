//! Server side of the RTMP handshake.
//!
//! Clients send C0 (version 3) and C1 (1536 bytes). When C1 carries a Flash Player digest
//! (the "complex" handshake of Flash Player 9+, which ffmpeg always sends and players verify),
//! we answer with digest-signed S1 and S2; otherwise with the plain handshake of the
//! specification (S2 echoes C1). C2 is read and not checked: clients differ in what they put
//! there and nothing depends on it.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Size of C1, C2, S1, S2.
pub const PACKET: usize = 1536;
const DIGEST_LEN: usize = 32;

/// "Genuine Adobe Flash Player 001" followed by 32 constant bytes.
const FP_KEY_TEXT: &[u8] = b"Genuine Adobe Flash Player 001";
/// "Genuine Adobe Flash Media Server 001" followed by the same 32 constant bytes.
const FMS_KEY_TEXT: &[u8] = b"Genuine Adobe Flash Media Server 001";
const KEY_TAIL: [u8; 32] = [
    0xf0, 0xee, 0xc2, 0x4a, 0x80, 0x68, 0xbe, 0xe8, 0x2e, 0x00, 0xd0, 0xd1, 0x02, 0x9e, 0x7e, 0x57,
    0x6e, 0xec, 0x5d, 0x2d, 0x29, 0x80, 0x6f, 0xab, 0x93, 0xb8, 0xe6, 0x36, 0xcf, 0xeb, 0x31, 0xae,
];
/// Version we announce in S1 when answering a digest handshake (FMS 4.5.0.1, a value
/// clients accept).
const SERVER_VERSION: [u8; 4] = [0x04, 0x05, 0x00, 0x01];

/// Errors in the handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// C0 asked for a version other than 3 (plain RTMP).
    #[error("unsupported RTMP version {0} in C0 (only 3, unencrypted RTMP, is supported)")]
    BadVersion(u8),
}

/// Where the handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    WaitC0C1,
    WaitC2,
    Done,
}

/// The server handshake state machine. Feed it bytes with [`Handshake::handle`]; it returns
/// the bytes to send and how many input bytes it consumed.
pub struct Handshake {
    state: State,
    random: [u8; PACKET],
}

/// Result of feeding bytes.
#[derive(Debug, Default)]
pub struct Progress {
    /// Input bytes consumed.
    pub consumed: usize,
    /// Bytes to send to the client.
    pub transmit: Vec<u8>,
    /// True once C2 has been read: what follows is chunk stream.
    pub done: bool,
}

impl Handshake {
    /// A handshake whose S1 and S2 are filled from `random` (1536 bytes from a CSPRNG; the
    /// caller supplies them so this code stays deterministic under test).
    pub fn new(random: [u8; PACKET]) -> Self {
        Handshake {
            state: State::WaitC0C1,
            random,
        }
    }

    /// Consumes what it can of `input`.
    pub fn handle(&mut self, input: &[u8]) -> Result<Progress, HandshakeError> {
        let mut p = Progress::default();
        if self.state == State::WaitC0C1 {
            if let Some(&version) = input.first()
                && version != 3
            {
                return Err(HandshakeError::BadVersion(version));
            }
            if input.len() < 1 + PACKET {
                return Ok(p);
            }
            let c1: &[u8; PACKET] = input[1..1 + PACKET].try_into().expect("length checked");
            p.transmit = self.respond(c1);
            p.consumed = 1 + PACKET;
            self.state = State::WaitC2;
        }
        if self.state == State::WaitC2 {
            if input.len() - p.consumed < PACKET {
                return Ok(p);
            }
            p.consumed += PACKET;
            self.state = State::Done;
        }
        p.done = self.state == State::Done;
        Ok(p)
    }

    fn respond(&self, c1: &[u8; PACKET]) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 2 * PACKET);
        out.push(3);
        let mut s1 = self.random;
        match find_client_digest(c1) {
            Some((schema, client_digest)) => {
                s1[0..4].fill(0);
                s1[4..8].copy_from_slice(&SERVER_VERSION);
                let pos = digest_pos(&s1, schema);
                let digest = hmac_excluding(&s1, pos, &fms_key()[..FMS_KEY_TEXT.len()]);
                s1[pos..pos + DIGEST_LEN].copy_from_slice(&digest);
                out.extend_from_slice(&s1);

                // S2: random bytes signed with a key derived from the client's digest.
                let mut s2 = self.random;
                s2.reverse();
                let key = hmac(&fms_key(), &[&client_digest]);
                let sig = hmac(&key, &[&s2[..PACKET - DIGEST_LEN]]);
                s2[PACKET - DIGEST_LEN..].copy_from_slice(&sig);
                out.extend_from_slice(&s2);
            }
            None => {
                s1[0..8].fill(0);
                out.extend_from_slice(&s1);
                out.extend_from_slice(c1);
            }
        }
        out
    }
}

/// Position of the digest in a 1536-byte packet for the given schema: schema 0 puts the
/// digest block after the key block (at 772), schema 1 before it (at 8).
fn digest_pos(packet: &[u8; PACKET], schema: u8) -> usize {
    let base = if schema == 0 { 772 } else { 8 };
    let sum: usize = packet[base..base + 4].iter().map(|&b| b as usize).sum();
    base + 4 + sum % 728
}

fn fp_key() -> Vec<u8> {
    [FP_KEY_TEXT, &KEY_TAIL].concat()
}

fn fms_key() -> Vec<u8> {
    [FMS_KEY_TEXT, &KEY_TAIL].concat()
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// HMAC of the packet with the 32 digest bytes at `pos` left out.
fn hmac_excluding(packet: &[u8; PACKET], pos: usize, key: &[u8]) -> [u8; DIGEST_LEN] {
    hmac(key, &[&packet[..pos], &packet[pos + DIGEST_LEN..]])
}

/// Finds a valid Flash Player digest in C1, trying both schemas.
fn find_client_digest(c1: &[u8; PACKET]) -> Option<(u8, [u8; DIGEST_LEN])> {
    // A zero version field means a client doing the plain handshake.
    if c1[4..8] == [0, 0, 0, 0] {
        return None;
    }
    let key = fp_key();
    for schema in [0u8, 1] {
        let pos = digest_pos(c1, schema);
        let expected = hmac_excluding(c1, pos, &key[..FP_KEY_TEXT.len()]);
        if c1[pos..pos + DIGEST_LEN] == expected {
            return Some((schema, expected));
        }
    }
    None
}

/// Client-side checks of a server's S1/S2, as a Flash player (or ffmpeg when playing) does
/// them. Used by tests to prove our digest handshake is right.
#[cfg(test)]
pub(crate) fn client_verifies(c1: &[u8; PACKET], s1: &[u8; PACKET], s2: &[u8; PACKET]) -> bool {
    let fms = fms_key();
    let Some(schema) = [0u8, 1].into_iter().find(|&schema| {
        let pos = digest_pos(s1, schema);
        s1[pos..pos + DIGEST_LEN] == hmac_excluding(s1, pos, &fms[..FMS_KEY_TEXT.len()])
    }) else {
        return false;
    };
    let _ = schema;
    let (_, client_digest) = find_client_digest(c1).expect("client digest");
    let key = hmac(&fms, &[&client_digest]);
    s2[PACKET - DIGEST_LEN..] == hmac(&key, &[&s2[..PACKET - DIGEST_LEN]])
}

/// Builds a digest-signed C1 the way Flash Player and ffmpeg do (for tests and the load
/// generator).
pub fn client_c1(random: [u8; PACKET], schema: u8) -> [u8; PACKET] {
    let mut c1 = random;
    c1[0..4].fill(0);
    c1[4..8].copy_from_slice(&[9, 0, 124, 2]);
    let pos = digest_pos(&c1, schema);
    let digest = hmac_excluding(&c1, pos, &fp_key()[..FP_KEY_TEXT.len()]);
    c1[pos..pos + DIGEST_LEN].copy_from_slice(&digest);
    c1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(seed: u8) -> [u8; PACKET] {
        let mut r = [0u8; PACKET];
        let mut x = seed as u32 | 1;
        for b in r.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        r
    }

    #[test]
    fn plain_handshake_echoes_c1() {
        let mut c1 = random(1);
        c1[4..8].fill(0);
        let mut h = Handshake::new(random(2));
        let mut input = vec![3u8];
        input.extend_from_slice(&c1);
        let p = h.handle(&input).unwrap();
        assert_eq!(p.consumed, 1537);
        assert_eq!(p.transmit.len(), 1 + 2 * PACKET);
        assert_eq!(&p.transmit[1 + PACKET..], &c1[..]);
        assert!(!p.done);
        let p = h.handle(&random(3)).unwrap();
        assert!(p.done);
        assert_eq!(p.consumed, PACKET);
    }

    #[test]
    fn digest_handshake_verifies_for_both_schemas() {
        for schema in [0, 1] {
            let c1 = client_c1(random(7 + schema), schema);
            let mut h = Handshake::new(random(9));
            let mut input = vec![3u8];
            input.extend_from_slice(&c1);
            input.extend_from_slice(&random(4)); // C2 right behind
            input.extend_from_slice(b"tail");
            let p = h.handle(&input).unwrap();
            assert!(p.done);
            assert_eq!(p.consumed, 1 + 2 * PACKET);
            let s1: [u8; PACKET] = p.transmit[1..1 + PACKET].try_into().unwrap();
            let s2: [u8; PACKET] = p.transmit[1 + PACKET..].try_into().unwrap();
            assert!(client_verifies(&c1, &s1, &s2), "schema {schema}");
        }
    }

    #[test]
    fn byte_by_byte_input() {
        let c1 = client_c1(random(5), 0);
        let mut all = vec![3u8];
        all.extend_from_slice(&c1);
        all.extend_from_slice(&random(6));
        let mut h = Handshake::new(random(8));
        let mut buf = Vec::new();
        let mut sent = 0;
        for b in all {
            buf.push(b);
            let p = h.handle(&buf).unwrap();
            buf.drain(..p.consumed);
            sent += p.transmit.len();
            if p.done {
                assert_eq!(sent, 1 + 2 * PACKET);
                return;
            }
        }
        panic!("handshake never finished");
    }

    #[test]
    fn wrong_version_is_refused() {
        let mut h = Handshake::new(random(1));
        assert_eq!(h.handle(&[6]).unwrap_err(), HandshakeError::BadVersion(6));
        let mut h = Handshake::new(random(1));
        assert_eq!(
            h.handle(b"GET / HTTP/1.1\r\n").unwrap_err(),
            HandshakeError::BadVersion(b'G')
        );
    }
}
