//! An in-memory copy of the small index files clients poll (InRelease, Packages.xz, repomd.xml).
//! Every `apt update` and `dnf makecache` asks for these, so serving them from memory saves a
//! storage round trip per request; because entries are keyed by sha256, one can never go stale.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

use crate::digest::Digest;

/// Files above this size stream from storage: holding them buys little over the page cache.
pub const MAX_HOT_FILE: u64 = 1 << 20;
/// The cache's whole budget; when a new file would pass it, everything is dropped and the
/// files still being asked for come back on their next request. Old publications' indices
/// age out that way without bookkeeping.
const BUDGET_BYTES: usize = 32 << 20;

#[derive(Default)]
pub struct HotFiles {
    inner: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    files: HashMap<Digest, Bytes>,
    bytes: usize,
}

impl HotFiles {
    /// Index files are worth holding; packages are not (one client fetches each once).
    pub fn wants(path: &str, size: u64) -> bool {
        size <= MAX_HOT_FILE
            && (path.contains("dists/") || path.contains("repodata/"))
            && !path.ends_with(".deb")
            && !path.ends_with(".rpm")
    }

    pub fn get(&self, digest: &Digest) -> Option<Bytes> {
        let held = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        held.files.get(digest).cloned()
    }

    pub fn insert(&self, digest: Digest, bytes: Bytes) {
        let mut held = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if held.bytes + bytes.len() > BUDGET_BYTES {
            held.files.clear();
            held.bytes = 0;
        }
        held.bytes += bytes.len();
        if let Some(previous) = held.files.insert(digest, bytes) {
            held.bytes -= previous.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_files_are_wanted_and_packages_are_not() {
        assert!(HotFiles::wants("dists/stable/InRelease", 3000));
        assert!(HotFiles::wants("12/x86_64/repodata/repomd.xml", 3000));
        assert!(!HotFiles::wants(
            "pool/main/h/hello/hello_1_amd64.deb",
            3000
        ));
        assert!(!HotFiles::wants(
            "dists/stable/main/binary-amd64/Packages",
            MAX_HOT_FILE + 1
        ));
    }

    #[test]
    fn the_budget_is_never_exceeded() {
        let hot = HotFiles::default();
        let chunk = Bytes::from(vec![0u8; MAX_HOT_FILE as usize]);
        for i in 0..100u32 {
            let digest = Digest::of(&i.to_le_bytes());
            hot.insert(digest, chunk.clone());
            assert!(hot.get(&digest).is_some());
            let held = hot.inner.lock().unwrap_or_else(|p| p.into_inner());
            assert!(held.bytes <= BUDGET_BYTES);
            assert_eq!(
                held.bytes,
                held.files.values().map(Bytes::len).sum::<usize>()
            );
        }
    }
}
