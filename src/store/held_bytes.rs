//! Blob bytes a store handle (and its clones) keeps in memory: the per-chunk index
//! fragments a publish joins, which are also the parts composite index files are
//! served from.
//! Blobs never change under their digest, so nothing held can go stale; the cache
//! only starts over when full or when a read found a blob gc had swept.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

use super::{Result, Store};
use crate::util::digest::Digest;

/// Bytes kept in memory before the cache starts over (about a 100,000-package suite's indices).
const BYTES_BUDGET: usize = 256 * 1024 * 1024;

/// The blob bytes one store handle (and its clones) holds.
#[derive(Default)]
pub(crate) struct HeldBytes(Mutex<Held>);

#[derive(Default)]
struct Held {
    bytes: HashMap<Digest, Bytes>,
    size: usize,
    /// Bumped whenever everything is dropped, so maps derived from held bytes drop theirs too.
    epoch: u64,
}

impl Store {
    /// A blob from memory, or read from the store (and checked against its digest) and held.
    pub async fn held_blob(&self, digest: &Digest) -> Result<Bytes> {
        if let Some(found) = self.held(digest) {
            return Ok(found);
        }
        let bytes = self.get_plain_blob(digest).await?;
        self.hold(digest, &bytes);
        Ok(bytes)
    }

    /// A blob from memory if held, else read from the store (and checked) without
    /// holding it: a server renders each package's file list or rpm entries once.
    pub async fn held_or_get(&self, digest: &Digest) -> Result<Bytes> {
        if let Some(found) = self.held(digest) {
            return Ok(found);
        }
        self.get_blob(digest).await
    }

    /// Store a blob this process reads again soon. A bulk handle (an import, whose
    /// publish reads back every file list and rpm entry it stored) also holds it in
    /// memory; other handles only store it.
    pub async fn put_blob_and_hold(&self, bytes: Bytes) -> Result<super::BlobMeta> {
        let meta = self.put_blob(bytes.clone()).await?;
        if self.packer().is_some() {
            self.hold(&meta.digest, &bytes);
        }
        Ok(meta)
    }

    /// The bytes held under `digest`, if any.
    pub(crate) fn held(&self, digest: &Digest) -> Option<Bytes> {
        let held = self.held.0.lock().ok()?;
        held.bytes.get(digest).cloned()
    }

    /// Keep bytes the caller just wrote, so the next publish or reader need not read them back.
    pub fn hold(&self, digest: &Digest, bytes: &Bytes) {
        if let Ok(mut held) = self.held.0.lock() {
            if held.size + bytes.len() > BYTES_BUDGET {
                held.bytes.clear();
                held.size = 0;
                held.epoch += 1;
            }
            if held.bytes.insert(*digest, bytes.clone()).is_none() {
                held.size += bytes.len();
            }
        }
    }

    /// Forget everything held (after a blob it named went missing, e.g. swept by gc),
    /// and with it everything derived from held bytes (see [`Store::held_epoch`]).
    pub fn forget_held(&self) {
        if let Ok(mut held) = self.held.0.lock() {
            held.bytes.clear();
            held.size = 0;
            held.epoch += 1;
        }
    }

    /// Changes whenever the held bytes are dropped: caches derived from them (fragments,
    /// composite records, parts written) start over when it moves.
    pub fn held_epoch(&self) -> u64 {
        self.held.0.lock().map(|h| h.epoch).unwrap_or(u64::MAX)
    }
}

/// Digests of parts one store was written, valid while the held bytes' epoch lasts
/// (a sweep this process heard of, or the bytes budget, starts both over).
#[derive(Default)]
pub struct WrittenParts(Mutex<(u64, std::collections::HashSet<Digest>)>);

/// Parts remembered as written before the set starts over (32 bytes each).
const WRITTEN_PARTS_LIMIT: usize = 1 << 20;

impl WrittenParts {
    /// Whether `digest` was written through this store since the epoch `current` began.
    pub(crate) fn contains(&self, current: u64, digest: &Digest) -> bool {
        self.0
            .lock()
            .is_ok_and(|written| written.0 == current && written.1.contains(digest))
    }

    pub(crate) fn insert(&self, current: u64, digest: Digest) {
        if let Ok(mut written) = self.0.lock() {
            if written.0 != current || written.1.len() >= WRITTEN_PARTS_LIMIT {
                *written = (current, std::collections::HashSet::new());
            }
            written.1.insert(digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one store holds and was written is its own (a publish test beside another
    /// once found its part missing), and forgetting in one leaves the other's.
    #[tokio::test]
    async fn a_part_written_to_one_store_is_written_to_another_too() {
        let (one, other) = (Store::memory(), Store::memory());
        let part = Bytes::from_static(b"a part both stores need");
        let (digest, _) = one.put_part(part.clone()).await.unwrap();
        assert!(other.held(&digest).is_none());
        other.put_part(part).await.unwrap();
        assert!(other.has_blob(&digest).await.unwrap());
        let before = other.held_epoch();
        one.forget_held();
        assert!(one.held(&digest).is_none());
        assert_eq!(other.held_epoch(), before);
        assert!(other.held(&digest).is_some());
    }
}
