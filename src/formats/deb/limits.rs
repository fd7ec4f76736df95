//! Bounds on everything a package can make us decompress or read: without them a
//! few kilobytes of xz can expand to gigabytes (a decompression bomb) and take the
//! server down. Exceeding a bound is a refusal of the package, never an OOM.
//!
//! Memory while inspecting one package is bounded by constants, never by what the
//! package claims: the decompressor's window (at most `DECODER_MEMORY`, 256 MiB, for xz
//! and 2^27 bytes for zstd, in `inspect`), one tar header and at most one
//! [`MAX_PATH_BYTES`](super::tar::MAX_PATH_BYTES) name at a time (the tar walker checks
//! each header's size before reading its body), the control file (at most
//! [`MAX_CONTROL_BYTES`](super::control::MAX_CONTROL_BYTES)) and the file list kept for
//! Contents (at most `file_list_bytes` of names, `data_entries` names).

use std::io::{self, Read};

#[derive(Debug, Clone)]
pub struct Limits {
    /// Decompressed size of control.tar: it holds a few small scripts.
    pub control_tar: u64,
    /// Decompressed size of data.tar is at most this many times the compressed member...
    pub data_ratio: u64,
    /// ...but never capped below this floor (small packages of sparse files are legitimate)...
    pub data_floor: u64,
    /// ...and never above this ceiling.
    pub data_ceiling: u64,
    /// Files (non-directory entries) in data.tar.
    pub data_entries: usize,
    /// Bytes of file names kept for Contents.
    pub file_list_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            control_tar: 16 * 1024 * 1024,
            data_ratio: 100,
            data_floor: 256 * 1024 * 1024,
            data_ceiling: 16 * 1024 * 1024 * 1024,
            data_entries: 500_000,
            file_list_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Limits {
    pub fn data_tar_for(&self, compressed: u64) -> u64 {
        compressed
            .saturating_mul(self.data_ratio)
            .clamp(self.data_floor, self.data_ceiling)
    }
}

/// What a limit counts, so a refusal names the right unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitUnit {
    /// Bytes coming out of a decompressor (a decompression bomb if far past the limit).
    DecompressedBytes,
    /// Bytes of one file read whole (the control file).
    Bytes,
    /// Non-directory entries of data.tar.
    Files,
    /// Bytes of file names kept for Contents.
    NameBytes,
}

impl LimitUnit {
    /// The end of a refusal: "<what> <this>".
    pub fn describe(self, limit: u64) -> String {
        match self {
            LimitUnit::DecompressedBytes => format!(
                "decompresses to more than {limit} bytes; refusing it as a possible decompression bomb"
            ),
            LimitUnit::Bytes => format!("is larger than {limit} bytes"),
            LimitUnit::Files => format!("has more than {limit} files"),
            LimitUnit::NameBytes => format!("has more than {limit} bytes of file names"),
        }
    }
}

/// Marker carried inside an `io::Error` when a bounded reader runs past its limit.
#[derive(Debug, thiserror::Error)]
#[error("more than {limit} bytes")]
pub struct LimitExceeded {
    pub limit: u64,
}

pub fn limit_exceeded(err: &io::Error) -> Option<u64> {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<LimitExceeded>())
        .map(|e| e.limit)
}

/// A reader that fails once more than `limit` bytes have come out of it.
pub struct Bounded<R> {
    inner: R,
    limit: u64,
    read: u64,
}

impl<R: Read> Bounded<R> {
    pub fn new(inner: R, limit: u64) -> Self {
        Bounded {
            inner,
            limit,
            read: 0,
        }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Ask for one byte past the limit so "exactly at the limit" still succeeds.
        let allowed = (self.limit - self.read.min(self.limit) + 1).min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..allowed])?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::other(LimitExceeded { limit: self.limit }));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_reader_allows_the_limit_and_refuses_more() {
        let mut ok = Vec::new();
        Bounded::new(&[1u8; 10][..], 10)
            .read_to_end(&mut ok)
            .unwrap();
        assert_eq!(ok.len(), 10);
        let err = Bounded::new(&[1u8; 11][..], 10)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(limit_exceeded(&err), Some(10));
    }

    #[test]
    fn data_limit_scales_with_member_size() {
        let l = Limits::default();
        assert_eq!(l.data_tar_for(1000), l.data_floor);
        assert_eq!(l.data_tar_for(10 << 30), l.data_ceiling);
        assert_eq!(l.data_tar_for(100 << 20), 10_000 << 20);
    }
}
