//! Composite blobs: an index file that a publish joins from per-chunk fragments
//! (Packages, Contents, their gzip and xz forms, RPM's *.xml.gz) is stored as a
//! small record listing the blobs it concatenates, under the sha256 of the whole.
//! A one-package publish then writes kilobytes instead of the suite's indices, and
//! hashes only what follows the first changed part: the hash state after every
//! part of recent composites is remembered. Readers see an ordinary blob.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::blobs::{BlobMeta, BlobStream, MAX_INLINE_BLOB};
use super::{Result, Store, StoreError};
use crate::store::resumable_hash::{PartHashes, ResumePoints};
use crate::util::digest::Digest;

/// One stored blob of a composite, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub sha256: Digest,
    pub size: u64,
}

/// What `composites/sha256/<aa>/<hex>` holds: the parts whose concatenation has that sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompositeRecord {
    pub size: u64,
    pub parts: Vec<Part>,
}

/// A record names at most this many parts; ours name one per cell chunk plus a few.
const MAX_PARTS: usize = 1 << 20;

pub(crate) const COMPOSITES: &str = "composites/sha256";

pub(crate) fn composite_path(digest: &Digest) -> Path {
    let hex = digest.hex();
    Path::from(format!("{COMPOSITES}/{}/{}", &hex[..2], hex))
}

/// What one store handle (and its clones) remembers of composites. A field of the
/// store, not of the process: what one store was written says nothing of another.
pub(crate) struct CompositeMemory {
    /// Hash states after each part of recent composites, so the next publish of the
    /// same file resumes after its longest unchanged run of leading parts. A part a
    /// remembered composite names was checked in this store.
    pub(crate) part_hashes: PartHashes,
    /// Records read or written recently: a served Packages file resolves its parts on
    /// every request, and a publish need not write a record again that is known to be
    /// stored. Dropped with the held bytes (the epoch), since a gc that swept may have
    /// taken one.
    records: Mutex<Records>,
}

impl Default for CompositeMemory {
    fn default() -> Self {
        CompositeMemory {
            part_hashes: PartHashes::new(64),
            records: Mutex::default(),
        }
    }
}

/// The held-bytes epoch the records belong to, and the records by digest.
type Records = (u64, HashMap<Digest, Arc<CompositeRecord>>);

impl CompositeMemory {
    /// The record of `digest` if this store read or wrote it since the last forget.
    fn remembered_record(&self, epoch: u64, digest: &Digest) -> Option<Arc<CompositeRecord>> {
        let mut records = self.records.lock().ok()?;
        if records.0 != epoch {
            *records = (epoch, HashMap::new());
        }
        records.1.get(digest).cloned()
    }

    fn remember_record(&self, epoch: u64, digest: Digest, record: Arc<CompositeRecord>) {
        if let Ok(mut records) = self.records.lock() {
            if records.0 != epoch || records.1.len() >= REMEMBERED_RECORDS {
                *records = (epoch, HashMap::new());
            }
            records.1.insert(digest, record);
        }
    }
}

const REMEMBERED_RECORDS: usize = 4096;

/// A stored blob's digest and bytes: one part of a composite about to be written.
pub type PartBytes = crate::store::resumable_hash::PartBytes;

/// A part of a composite about to be written, with its bytes if they are at hand.
pub type LazyPart = (Digest, Option<Bytes>);

/// Parts whose bytes are all at hand, as [`LazyPart`]s.
pub fn at_hand(parts: &[PartBytes]) -> Vec<LazyPart> {
    parts
        .iter()
        .map(|(digest, bytes)| (*digest, Some(bytes.clone())))
        .collect()
}

impl Store {
    /// Store a small blob made to be a part (an xz frame, a gzip header member) and
    /// return it as one. It is also held in memory: the next publish joins it again.
    pub async fn put_part(&self, bytes: impl Into<Bytes>) -> Result<PartBytes> {
        let bytes = bytes.into();
        let digest = Digest::of(&bytes);
        // Written through this store since the last sweep this process knows of (what gc
        // may take is forgotten after it sweeps): an xz frame's header and an unchanged
        // file's tail are not written again on every publish.
        if self.written_parts.contains(self.held_epoch(), &digest) {
            return Ok((digest, bytes));
        }
        self.put_blob_with_digest(digest, bytes.clone()).await?;
        self.hold(&digest, &bytes);
        self.written_parts.insert(self.held_epoch(), digest);
        Ok((digest, bytes))
    }

    /// Hashes the leading `parts` of a composite expected soon, so storing it resumes
    /// after them. Every part must be stored already. Blocking.
    pub fn hash_composite_ahead(&self, parts: &[PartBytes]) {
        self.composites
            .part_hashes
            .hash_ahead(Arc::from(self.description()), parts);
    }

    /// The hash states after the last `last` parts of the composite just stored from
    /// `parts`, for a later publish by any process to resume from ([`Store::take_up_composite`]).
    pub fn composite_resume_points(&self, parts: &[Digest], last: usize) -> Option<ResumePoints> {
        self.composites
            .part_hashes
            .resume_points(self.description(), parts, last)
    }

    /// Takes up the hash states another process wrote down for the composite `digest`,
    /// so storing a composite that starts with its parts resumes after them. The
    /// record is read from the store: its parts are what the states cover. A composite
    /// that is gone, or points that do not fit it, are ignored (the next store hashes
    /// from the start).
    pub async fn take_up_composite(&self, digest: &Digest, points: &ResumePoints) -> Result<()> {
        if let Some(record) = self.composite(digest).await? {
            self.composites.part_hashes.take_up(
                Arc::from(self.description()),
                record.parts.iter().map(|p| (p.sha256, p.size)),
                points,
            );
        }
        Ok(())
    }

    /// The bytes of `parts`, reading those not at hand (16 at a time: on S3 each is a
    /// request), in order.
    pub async fn parts_at_hand(&self, parts: &[LazyPart]) -> Result<Vec<PartBytes>> {
        let reads = parts
            .iter()
            .cloned()
            .map(|(digest, bytes)| async move {
                match bytes {
                    Some(bytes) => Ok((digest, bytes)),
                    None => Ok((digest, self.held_blob(&digest).await?)),
                }
            })
            .collect();
        crate::util::parallel::in_order(reads, 16).await
    }

    /// Takes up the hash states of a composite another process hashed ahead of storing
    /// it (`parts`, each a blob, with their sizes), so storing one that starts with those
    /// parts resumes after them. States that do not fit the sizes are ignored.
    pub fn take_up_join(&self, parts: &[(Digest, u64)], points: &ResumePoints) {
        self.composites.part_hashes.take_up(
            Arc::from(self.description()),
            parts.iter().copied(),
            points,
        );
    }

    /// Store the concatenation of `parts` (each already stored as a blob under its
    /// digest) as a composite blob, and return the whole's digest and size. A part's
    /// bytes may be left out: they are read only if the hash cannot resume past it.
    pub async fn put_composite(&self, parts: Vec<LazyPart>) -> Result<BlobMeta> {
        if parts.is_empty() {
            return self.put_blob(Bytes::new()).await;
        }
        if let [(digest, bytes)] = parts.as_slice() {
            // One part is the whole, and already a blob (if gc has not swept it since).
            let size = match bytes {
                Some(bytes) if self.has_blob(digest).await? => bytes.len() as u64,
                Some(_) => return Err(StoreError::NotFound(format!("blob {digest}"))),
                None => self.held_blob(digest).await?.len() as u64,
            };
            return Ok(BlobMeta {
                digest: *digest,
                size,
            });
        }
        let digests: Vec<Digest> = parts.iter().map(|(d, _)| *d).collect();
        let resumed = self
            .composites
            .part_hashes
            .resume(self.description(), &digests);
        let unnamed: std::collections::HashSet<Digest> = resumed.unnamed.iter().copied().collect();
        // Parts come from memory: make sure the store still has every one no remembered
        // composite already names (gc may have swept a fragment held here), so a record
        // never names a missing part. NotFound makes the publisher start over. (An RPM
        // document's first part changes on every publish, so checking only after the
        // shared prefix meant checking all of them on every publish.) A part not at hand
        // is read, which checks it too.
        // Side by side: on S3 each check is a request, and a fresh layout checks hundreds.
        let rest: Vec<_> = parts
            .into_iter()
            .skip(resumed.len())
            .map(|(digest, bytes)| {
                let store = self.clone();
                let check = unnamed.contains(&digest);
                async move {
                    match bytes {
                        None => Ok((digest, store.held_blob(&digest).await?)),
                        Some(bytes) if !check || store.has_blob(&digest).await? => {
                            Ok((digest, bytes))
                        }
                        Some(_) => Err(StoreError::NotFound(format!("blob {digest}"))),
                    }
                }
            })
            .collect();
        let rest: Vec<PartBytes> = crate::util::parallel::in_order(rest, 32).await?;
        let store: Arc<str> = Arc::from(self.description());
        let mut sizes = resumed.sizes.clone();
        sizes.extend(rest.iter().map(|(_, bytes)| bytes.len() as u64));
        let memory = Arc::clone(&self.composites);
        let (digest, size) = super::blocking("hashing a composite", move || {
            memory.part_hashes.hash(store, resumed, &rest)
        })
        .await?;
        let record = CompositeRecord {
            size,
            parts: digests
                .iter()
                .zip(sizes)
                .map(|(sha256, size)| Part {
                    sha256: *sha256,
                    size,
                })
                .collect(),
        };
        // A publish of an unchanged file joins the same parts again: its record is
        // stored already (on S3, five requests per unchanged component and architecture).
        if self
            .composites
            .remembered_record(self.held_epoch(), &digest)
            .is_some_and(|known| *known == record)
        {
            return Ok(BlobMeta { digest, size });
        }
        let json = serde_json::to_vec(&record)
            .map_err(|e| StoreError::Corrupt("composite".into(), e.to_string()))?;
        match self
            .raw_put(
                &composite_path(&digest),
                PutPayload::from(json),
                object_store::PutMode::Create,
            )
            .await
        {
            Ok(_)
            | Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.composites
            .remember_record(self.held_epoch(), digest, Arc::new(record));
        Ok(BlobMeta { digest, size })
    }

    /// The record of a composite blob, or None if `digest` names no composite.
    pub async fn composite(&self, digest: &Digest) -> Result<Option<Arc<CompositeRecord>>> {
        if let Some(found) = self.composites.remembered_record(self.held_epoch(), digest) {
            return Ok(Some(found));
        }
        let found = match self
            .object_store()
            .get_opts(&composite_path(digest), GetOptions::default())
            .await
        {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let corrupt = |why: String| StoreError::Corrupt(format!("composite {digest}"), why);
        // A record is 80 bytes per part; refuse anything that could not be ours.
        if found.meta.size > (MAX_PARTS as u64) * 128 {
            return Err(corrupt(format!("record of {} bytes", found.meta.size)));
        }
        let record: CompositeRecord =
            serde_json::from_slice(&found.bytes().await?).map_err(|e| corrupt(e.to_string()))?;
        let total: u64 = record.parts.iter().map(|p| p.size).sum();
        if total != record.size || record.parts.len() > MAX_PARTS {
            return Err(corrupt("its parts do not add up to its size".into()));
        }
        let record = Arc::new(record);
        self.composites
            .remember_record(self.held_epoch(), *digest, Arc::clone(&record));
        Ok(Some(record))
    }

    /// A whole composite, checked against its digest.
    pub(super) async fn get_composite(
        &self,
        digest: &Digest,
        record: &CompositeRecord,
    ) -> Result<Bytes> {
        if record.size > MAX_INLINE_BLOB {
            return Err(StoreError::TooLarge(
                format!("blob {digest}"),
                MAX_INLINE_BLOB,
            ));
        }
        let mut whole = Vec::with_capacity(record.size as usize);
        for part in &record.parts {
            whole.extend_from_slice(&self.composite_part(digest, part).await?);
        }
        super::local_read::check_digest(Bytes::from(whole), digest)
    }

    /// A composite's bytes in `range` (or all), streamed part by part.
    pub(super) async fn stream_composite(
        &self,
        digest: &Digest,
        record: &CompositeRecord,
        range: Option<Range<u64>>,
    ) -> Result<BlobStream> {
        let size = record.size;
        let range = super::local_read::checked_range(digest, range, size)?;
        // (part, the slice of it inside the range)
        let mut pieces = Vec::new();
        let mut offset = 0u64;
        for part in &record.parts {
            let (start, end) = (offset, offset + part.size);
            offset = end;
            if end <= range.start || start >= range.end || part.size == 0 {
                continue;
            }
            let from = range.start.saturating_sub(start);
            let to = range.end.min(end) - start;
            pieces.push((*part, from as usize..to as usize));
        }
        let store = self.clone();
        let whole = *digest;
        let body = futures::stream::iter(pieces)
            .then(move |(part, slice)| {
                let store = store.clone();
                async move {
                    let bytes = store.composite_part(&whole, &part).await?;
                    Ok(bytes.slice(slice))
                }
            })
            .boxed();
        Ok(BlobStream { size, range, body })
    }

    async fn composite_part(&self, whole: &Digest, part: &Part) -> Result<Bytes> {
        let bytes = self.held_blob(&part.sha256).await.map_err(|e| match e {
            StoreError::NotFound(_) => StoreError::Corrupt(
                format!("composite {whole}"),
                format!("its part {} is missing", part.sha256),
            ),
            other => other,
        })?;
        if bytes.len() as u64 != part.size {
            return Err(StoreError::Corrupt(
                format!("composite {whole}"),
                format!("part {} is not {} bytes", part.sha256, part.size),
            ));
        }
        Ok(bytes)
    }
}

/// A composite record as listed: its digest, the record's size, its age in seconds,
/// and where it is.
pub type ListedComposite = (Digest, u64, i64, Path);

/// Every composite record in the store.
pub(crate) async fn list_composites(store: &Store) -> Result<Vec<ListedComposite>> {
    let now = crate::util::time::now_unix();
    let listed: Vec<_> = store
        .object_store()
        .list(Some(&Path::from(COMPOSITES)))
        .try_collect()
        .await?;
    Ok(listed
        .into_iter()
        .filter_map(|meta| {
            let digest = meta.location.filename()?.parse::<Digest>().ok()?;
            let age = now - meta.last_modified.timestamp();
            Some((digest, meta.size, age, meta.location))
        })
        .collect())
}
