//! SHA-256 content addresses: every blob in the store is named by the hash of
//! its bytes, so identical uploads dedupe and a name can never point at
//! different content.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A SHA-256 digest, shown and serialized as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

#[derive(Debug, thiserror::Error)]
#[error("not a sha256 digest (want 64 lowercase hex characters): {0:?}")]
pub struct BadDigest(pub String);

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn hex(&self) -> String {
        self.hex_chars().to_string()
    }

    /// The 64 hex characters without allocating: manifests and cache keys print
    /// thousands of digests per publish.
    fn hex_chars(&self) -> HexChars {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (i, byte) in self.0.iter().enumerate() {
            out[2 * i] = DIGITS[usize::from(byte >> 4)];
            out[2 * i + 1] = DIGITS[usize::from(byte & 0x0f)];
        }
        HexChars(out)
    }
}

/// A digest's hex form on the stack; always ASCII.
struct HexChars([u8; 64]);

impl HexChars {
    fn as_str(&self) -> &str {
        // Only ever filled from DIGITS above.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for HexChars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Digest {
    type Err = BadDigest;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadDigest(s.chars().take(80).collect());
        let nibble = |b: u8| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        };
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            match (nibble(pair[0]), nibble(pair[1])) {
                (Some(high), Some(low)) => out[i] = high << 4 | low,
                _ => return Err(bad()),
            }
        }
        Ok(Digest(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex_chars().as_str())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex_chars())
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.hex_chars().as_str())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Parsed straight from the input when it can lend the string: no allocation.
        struct Hex;
        impl serde::de::Visitor<'_> for Hex {
            type Value = Digest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sha256 digest as 64 lowercase hex characters")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Digest, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Hex)
    }
}

/// Incremental hasher that also counts bytes, for streaming uploads.
#[derive(Default, Clone)]
pub struct Hasher {
    inner: Sha256,
    len: u64,
}

impl Hasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
        self.len += bytes.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> (Digest, u64) {
        (Digest(self.inner.finalize().into()), self.len)
    }
}

/// SHA-256 whose state between parts can be written down and taken up again by another
/// process: a publish resumes the hash of an index file after the parts it shares with
/// the last one, whichever daemon wrote that (see `layout::PublishLayout`). `sha2` 0.10 keeps its
/// state private, so this drives its block function (`compress256`, the same SHA-NI or
/// assembly backend) over a state of its own.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Sha256State {
    words: [u32; 8],
    /// Bytes hashed so far, including `pending`.
    len: u64,
    /// The bytes after the last whole 64-byte block (fewer than 64).
    pending: Vec<u8>,
}

const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

impl Default for Sha256State {
    fn default() -> Self {
        Sha256State {
            words: SHA256_IV,
            len: 0,
            pending: Vec::with_capacity(64),
        }
    }
}

impl Sha256State {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if !self.pending.is_empty() {
            let take = (64 - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() < 64 {
                return;
            }
            let block = std::mem::take(&mut self.pending);
            self.compress(&block);
        }
        let mut blocks = bytes.chunks_exact(64);
        for block in blocks.by_ref() {
            self.compress(block);
        }
        self.pending.extend_from_slice(blocks.remainder());
    }

    fn compress(&mut self, block: &[u8]) {
        use sha2::digest::generic_array::GenericArray;
        sha2::compress256(&mut self.words, &[*GenericArray::from_slice(block)]);
    }

    /// The digest and length of everything hashed, by FIPS 180-4's padding.
    pub fn finish(&self) -> (Digest, u64) {
        let mut last = self.clone();
        let bits = self.len.wrapping_mul(8);
        let mut tail = last.pending.clone();
        tail.push(0x80);
        while tail.len() % 64 != 56 {
            tail.push(0);
        }
        tail.extend_from_slice(&bits.to_be_bytes());
        for block in tail.chunks(64) {
            last.compress(block);
        }
        let mut out = [0u8; 32];
        for (bytes, word) in out.chunks_mut(4).zip(last.words) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        (Digest(out), self.len)
    }
}

/// Written as `<8 words in hex>:<length>:<pending bytes in hex>`, which no other state
/// reads as: a length that disagrees with the pending bytes is refused.
impl Serialize for Sha256State {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let words: String = self.words.iter().map(|w| format!("{w:08x}")).collect();
        s.serialize_str(&format!(
            "{words}:{}:{}",
            self.len,
            hex::encode(&self.pending)
        ))
    }
}

impl<'de> Deserialize<'de> for Sha256State {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let text = String::deserialize(d)?;
        let bad = || D::Error::custom("not a sha256 state");
        let mut fields = text.split(':');
        let (Some(words), Some(len), Some(pending), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(bad());
        };
        if words.len() != 64 || !words.is_ascii() {
            return Err(bad());
        }
        let mut parsed = [0u32; 8];
        for (i, word) in parsed.iter_mut().enumerate() {
            *word = u32::from_str_radix(&words[i * 8..i * 8 + 8], 16).map_err(|_| bad())?;
        }
        let len: u64 = len.parse().map_err(|_| bad())?;
        let pending = hex::decode(pending).map_err(|_| bad())?;
        if pending.len() >= 64 || len % 64 != pending.len() as u64 {
            return Err(bad());
        }
        Ok(Sha256State {
            words: parsed,
            len,
            pending,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_and_roundtrip() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.hex().parse::<Digest>().unwrap(), d);
        let mut h = Hasher::new();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), (d, 3));
    }

    #[test]
    fn a_resumable_state_hashes_like_sha256_across_any_split_and_a_round_trip() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 3) as u8).collect();
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 128, 500, 1000] {
            let whole = (Digest::of(&data[..len]), len as u64);
            for split in [0, 1, 31, 64, len / 2, len] {
                let split = split.min(len);
                let mut state = Sha256State::default();
                state.update(&data[..split]);
                // Written down and read back, as another process would.
                let json = serde_json::to_string(&state).unwrap();
                let mut state: Sha256State = serde_json::from_str(&json).unwrap();
                for piece in data[split..len].chunks(13) {
                    state.update(piece);
                }
                assert_eq!(state.finish(), whole, "len {len} split {split}");
            }
        }
        for bad in [
            "\"x\"",
            "\"00:0:\"",
            &format!("\"{}:3:00\"", "0".repeat(64)),
        ] {
            assert!(serde_json::from_str::<Sha256State>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_uppercase_short_and_non_hex() {
        let upper = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
        let multibyte = format!("{}é", "a".repeat(62));
        for bad in [
            upper,
            "abc",
            "../../etc/passwd",
            &"g".repeat(64),
            &multibyte,
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
    }

    #[test]
    fn json_is_the_quoted_hex_both_ways() {
        let d = Digest::of(b"abc");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{}\"", d.hex()));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        // An escaped string cannot be lent by the parser: still read.
        let escaped = json.replacen('b', "\\u0062", 1);
        assert_eq!(serde_json::from_str::<Digest>(&escaped).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"abc\"").is_err());
        assert_eq!(format!("{d:?}"), format!("sha256:{}", d.hex()));
    }
}
