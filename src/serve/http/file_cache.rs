//! An in-memory copy of the small files clients ask for again and again: the index files
//! every `apt update` and `dnf makecache` polls (InRelease, Packages.xz, repomd.xml), and
//! packages that a build farm's runners fetch over and over. Serving them from memory saves
//! a storage round trip per request; because entries are keyed by sha256, one can never go stale.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use bytes::Bytes;

use crate::util::digest::Digest;

/// Index files above this size stream from storage. A Packages.xz is a composite of a few
/// hundred parts, served much faster held than streamed part by part (BENCHMARKS.md
/// "Measurements behind the code"); at 100,000 debs it is about 5 MiB, while Packages and
/// Contents stay above this.
pub const MAX_HOT_FILE: u64 = 8 << 20;
/// Packages above this size stream: the rate of big transfers is bounded by copying, not by the trip.
const MAX_HOT_PACKAGE: u64 = 256 << 10;
/// Each pool's budget; when a new file would pass it, everything in that pool is dropped and
/// the files still being asked for come back on their next request. Old publications' files
/// age out that way without bookkeeping.
const BUDGET_BYTES: usize = 64 << 20;
/// How many once-requested packages are remembered before the doorkeeper starts over.
const SEEN_LIMIT: usize = 65_536;

#[derive(Default)]
pub struct FileCache {
    indices: Mutex<Held>,
    packages: Mutex<Held>,
    /// Packages requested once. Only a second request admits a package, so a mirror walking
    /// the pool once cannot push out the files that are really hot.
    seen: Mutex<HashSet<Digest>>,
}

#[derive(Default)]
struct Held {
    files: HashMap<Digest, Bytes>,
    bytes: usize,
}

/// Which of the two pools a file belongs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    Indices,
    Packages,
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FileCache {
    /// Whether to serve this file from memory, and from which pool: small index files always,
    /// small packages from their second request on.
    pub fn admit(&self, path: &str, size: u64, digest: &Digest) -> Option<Pool> {
        let is_package = path.ends_with(".deb") || path.ends_with(".rpm");
        if !is_package {
            let index =
                size <= MAX_HOT_FILE && (path.contains("dists/") || path.contains("repodata/"));
            return index.then_some(Pool::Indices);
        }
        if size > MAX_HOT_PACKAGE {
            return None;
        }
        let mut seen = locked(&self.seen);
        if seen.contains(digest) {
            return Some(Pool::Packages);
        }
        if seen.len() >= SEEN_LIMIT {
            seen.clear();
        }
        seen.insert(*digest);
        None
    }

    fn pool(&self, pool: Pool) -> &Mutex<Held> {
        match pool {
            Pool::Indices => &self.indices,
            Pool::Packages => &self.packages,
        }
    }

    pub fn get(&self, pool: Pool, digest: &Digest) -> Option<Bytes> {
        locked(self.pool(pool)).files.get(digest).cloned()
    }

    pub fn insert(&self, pool: Pool, digest: Digest, bytes: Bytes) {
        let mut held = locked(self.pool(pool));
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
    fn index_files_are_admitted_and_packages_only_when_asked_for_again() {
        let hot = FileCache::default();
        let digest = Digest::of(b"x");
        assert_eq!(
            hot.admit("dists/stable/InRelease", 3000, &digest),
            Some(Pool::Indices)
        );
        assert_eq!(
            hot.admit("12/x86_64/repodata/repomd.xml", 3000, &digest),
            Some(Pool::Indices)
        );
        assert_eq!(
            hot.admit(
                "dists/stable/main/binary-amd64/Packages",
                MAX_HOT_FILE + 1,
                &digest
            ),
            None
        );
        let deb = "pool/main/h/hello/hello_1_amd64.deb";
        assert_eq!(hot.admit(deb, 3000, &digest), None);
        assert_eq!(hot.admit(deb, 3000, &digest), Some(Pool::Packages));
        let big = Digest::of(b"big");
        assert_eq!(hot.admit(deb, MAX_HOT_PACKAGE + 1, &big), None);
        assert_eq!(hot.admit(deb, MAX_HOT_PACKAGE + 1, &big), None);
    }

    #[test]
    fn the_budget_is_never_exceeded() {
        let hot = FileCache::default();
        let chunk = Bytes::from(vec![0u8; MAX_HOT_FILE as usize]);
        for i in 0..100u32 {
            let digest = Digest::of(&i.to_le_bytes());
            hot.insert(Pool::Indices, digest, chunk.clone());
            assert!(hot.get(Pool::Indices, &digest).is_some());
            let held = locked(&hot.indices);
            assert!(held.bytes <= BUDGET_BYTES);
            assert_eq!(
                held.bytes,
                held.files.values().map(Bytes::len).sum::<usize>()
            );
        }
    }
}
