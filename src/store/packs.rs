//! Packs: many small blobs kept in one object. A cold import made a file per
//! package and per file list, and creating them was most of its time (perf:
//! the kernel's inode and path work, not hashing); the bulk path instead appends
//! its small blobs to `packs/<hex>.pack` and writes its index `packs/<hex>.idx`
//! after it (both named by the index's sha256, which names every blob by its own),
//! so an index a reader finds always has its pack.
//! A packed blob reads, streams and verifies like a loose one.
//!
//! Index format, integers little-endian: the magic `CAPPACK1`, the entry count
//! (u64), per blob in digest order its sha256 (32 bytes), offset and length in
//! the pack (u64 each), and last the sha256 of everything before it.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;

use super::{Result, StoreError};
use crate::util::digest::Digest;

const MAGIC: &[u8; 8] = b"CAPPACK1";
const HEADER: usize = 16;
const ENTRY: usize = 48;
const TRAILER: usize = 32;
/// Blobs up to this size go into a pack; a bigger one gains nothing from it and stays loose.
pub(crate) const MAX_PACKED_BLOB: u64 = 4 << 20;
/// A pack is closed and a new one begun once it holds this much.
const PACK_TARGET: u64 = 1 << 30;
/// Indexes are read whole; this bounds one to about 1.4 million blobs.
const MAX_INDEX_BYTES: u64 = 64 << 20;

pub(crate) fn pack_path(name: &str) -> Path {
    Path::from(format!("packs/{name}.pack"))
}

pub(crate) fn index_path(name: &str) -> Path {
    Path::from(format!("packs/{name}.idx"))
}

/// Where one blob sits in its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedEntry {
    pub digest: Digest,
    pub offset: u64,
    pub length: u64,
}

/// A pack's index, checked once when read and searched in place.
#[derive(Debug)]
pub struct PackIndex {
    name: String,
    bytes: Bytes,
    count: usize,
}

impl PackIndex {
    /// Checks the magic, length, trailing checksum, digest order, and that no entry
    /// overflows or is longer than a packed blob can be; an index that fails any of them
    /// names no blob.
    pub fn parse(name: &str, bytes: Bytes) -> Result<Self> {
        let corrupt = |why: &str| StoreError::Corrupt(format!("pack index {name}"), why.into());
        if bytes.len() < HEADER + TRAILER || &bytes[..8] != MAGIC {
            return Err(corrupt("not a caprepo pack index (no CAPPACK1 header)"));
        }
        let count = u64::from_le_bytes(array(&bytes[8..16]));
        let expected = count
            .checked_mul(ENTRY as u64)
            .and_then(|n| n.checked_add((HEADER + TRAILER) as u64));
        if expected != Some(bytes.len() as u64) {
            return Err(corrupt("its length does not match its entry count"));
        }
        let (body, trailer) = bytes.split_at(bytes.len() - TRAILER);
        if Digest::of(body).as_bytes()[..] != trailer[..] {
            return Err(corrupt("its checksum does not match its contents"));
        }
        let index = PackIndex {
            name: name.to_string(),
            count: count as usize,
            bytes,
        };
        let mut previous: Option<Digest> = None;
        for entry in index.entries() {
            if previous.is_some_and(|p| p >= entry.digest) {
                return Err(corrupt("its entries are not in strict digest order"));
            }
            if entry.offset.checked_add(entry.length).is_none() {
                return Err(corrupt("an entry reaches past the largest offset"));
            }
            // Packs only ever hold small blobs, and a read allocates an entry's length.
            if entry.length > MAX_PACKED_BLOB {
                return Err(corrupt("an entry is longer than any packed blob can be"));
            }
            previous = Some(entry.digest);
        }
        Ok(index)
    }

    /// The index bytes for `entries` (sorted here).
    pub fn encode(mut entries: Vec<PackedEntry>) -> Vec<u8> {
        entries.sort_by_key(|e| e.digest);
        entries.dedup_by_key(|e| e.digest);
        let mut out = Vec::with_capacity(HEADER + ENTRY * entries.len() + TRAILER);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        for entry in &entries {
            out.extend_from_slice(entry.digest.as_bytes());
            out.extend_from_slice(&entry.offset.to_le_bytes());
            out.extend_from_slice(&entry.length.to_le_bytes());
        }
        let checksum = Digest::of(&out);
        out.extend_from_slice(checksum.as_bytes());
        out
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn entry(&self, i: usize) -> PackedEntry {
        let at = HEADER + i * ENTRY;
        let record = &self.bytes[at..at + ENTRY];
        PackedEntry {
            digest: Digest::from_bytes(array(&record[..32])),
            offset: u64::from_le_bytes(array(&record[32..40])),
            length: u64::from_le_bytes(array(&record[40..48])),
        }
    }

    pub fn entries(&self) -> impl Iterator<Item = PackedEntry> + '_ {
        (0..self.count).map(|i| self.entry(i))
    }

    pub fn find(&self, digest: &Digest) -> Option<PackedEntry> {
        let at = self.entries_slice_search(digest)?;
        Some(self.entry(at))
    }

    fn entries_slice_search(&self, digest: &Digest) -> Option<usize> {
        let (mut low, mut high) = (0, self.count);
        while low < high {
            let middle = low + (high - low) / 2;
            let at = HEADER + middle * ENTRY;
            match self.bytes[at..at + 32].cmp(&digest.as_bytes()[..]) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return Some(middle),
            }
        }
        None
    }
}

fn array<const N: usize>(slice: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(slice);
    out
}

/// A pack whose index this process has read.
#[derive(Debug)]
pub struct LoadedPack {
    pub index: PackIndex,
    /// On local disk, the pack file opened once: a read is then one `pread`, not a path walk.
    file: OnceLock<Arc<std::fs::File>>,
}

/// The packs a store handle knows of, shared by its clones.
#[derive(Debug, Default)]
pub(crate) struct PackSet {
    loaded: RwLock<BTreeMap<String, Arc<LoadedPack>>>,
    /// Indexes that could not be read, by name: verify reports them.
    unreadable: Mutex<BTreeMap<String, String>>,
    /// One listing at a time: concurrent misses share it.
    refreshing: tokio::sync::Mutex<()>,
    /// Whether `packs/` was listed at least once.
    listed: std::sync::atomic::AtomicBool,
}

impl PackSet {
    /// Forgets every pack index read: a gc may have removed packs since (see `fence`).
    pub fn forget_all(&self) {
        if let Ok(mut loaded) = self.loaded.write() {
            loaded.clear();
        }
        self.listed
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn find(&self, digest: &Digest) -> Option<(Arc<LoadedPack>, PackedEntry)> {
        let loaded = self.loaded.read().ok()?;
        loaded
            .values()
            .find_map(|pack| pack.index.find(digest).map(|e| (pack.clone(), e)))
    }

    fn add(&self, index: PackIndex) {
        if let Ok(mut loaded) = self.loaded.write() {
            loaded.insert(
                index.name.clone(),
                Arc::new(LoadedPack {
                    index,
                    file: OnceLock::new(),
                }),
            );
        }
    }

    /// A pack gc removed: its blobs were written loose first, or nothing named them.
    fn forget(&self, name: &str) {
        if let Ok(mut loaded) = self.loaded.write() {
            loaded.remove(name);
        }
    }

    fn names(&self) -> HashSet<String> {
        self.loaded
            .read()
            .map(|l| l.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// A pack as gc sees it: its index and its age in seconds.
pub struct ListedPack {
    pub pack: Arc<LoadedPack>,
    pub age: i64,
}

/// What one listing of `packs/` found: the packs whose indexes are loaded, and every
/// object by pack name (gc also judges the ones without a readable index).
pub struct PackListing {
    pub packs: Vec<ListedPack>,
    pub objects: BTreeMap<String, PackObjects>,
}

/// What `packs/` holds under one name.
#[derive(Debug)]
pub struct PackObjects {
    pub pack: bool,
    pub index: bool,
    /// Seconds since the younger of the two was written.
    pub age: i64,
}

impl super::Store {
    /// Lists `packs/` and reads every index not yet loaded; forgets packs gone from
    /// the listing. An index that cannot be read is skipped (and reported by verify).
    pub(crate) async fn refresh_packs(&self) -> Result<PackListing> {
        let _one_at_a_time = self.packs.refreshing.lock().await;
        let objects = self.list_pack_objects().await?;
        self.packs
            .listed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let ages: BTreeMap<&String, i64> = objects
            .iter()
            .filter(|(_, o)| o.index)
            .map(|(name, o)| (name, o.age))
            .collect();
        let known = self.packs.names();
        for gone in known.iter().filter(|n| !ages.contains_key(n)) {
            self.packs.forget(gone);
        }
        for name in ages.keys().filter(|n| !known.contains(**n)) {
            match self.read_pack_index(name).await {
                Ok(index) => {
                    if let Ok(mut unreadable) = self.packs.unreadable.lock() {
                        unreadable.remove(*name);
                    }
                    self.packs.add(index);
                }
                Err(StoreError::NotFound(_)) => {} // removed since the listing
                Err(e) => {
                    tracing::warn!(pack = %name, error = %e, "skipping a pack index that cannot be read");
                    if let Ok(mut unreadable) = self.packs.unreadable.lock() {
                        unreadable.insert(name.to_string(), e.to_string());
                    }
                }
            }
        }
        let packs = {
            let loaded = self.packs.loaded.read().map_err(|_| poisoned())?;
            loaded
                .values()
                .filter_map(|pack| {
                    let name = pack.index.name().to_string();
                    Some(ListedPack {
                        pack: pack.clone(),
                        age: *ages.get(&name)?,
                    })
                })
                .collect()
        };
        Ok(PackListing { packs, objects })
    }

    /// Every pack and index under `packs/`, by pack name.
    async fn list_pack_objects(&self) -> Result<BTreeMap<String, PackObjects>> {
        let listed: Vec<_> = self
            .object_store()
            .list(Some(&Path::from("packs")))
            .try_collect()
            .await?;
        let now = crate::util::time::now_unix();
        let mut objects: BTreeMap<String, PackObjects> = BTreeMap::new();
        for meta in listed {
            let Some(file) = meta.location.filename() else {
                continue;
            };
            let (name, is_pack) = match (file.strip_suffix(".pack"), file.strip_suffix(".idx")) {
                (Some(name), _) => (name, true),
                (_, Some(name)) => (name, false),
                _ => continue,
            };
            let slot = objects.entry(name.to_string()).or_insert(PackObjects {
                pack: false,
                index: false,
                age: i64::MAX,
            });
            slot.age = slot.age.min(now - meta.last_modified.timestamp());
            slot.pack |= is_pack;
            slot.index |= !is_pack;
        }
        Ok(objects)
    }

    /// Pack indexes that could not be read at the last refresh, with the reason.
    pub(crate) fn unreadable_packs(&self) -> Vec<(String, String)> {
        self.packs
            .unreadable
            .lock()
            .map(|u| u.iter().map(|(n, w)| (n.clone(), w.clone())).collect())
            .unwrap_or_default()
    }

    async fn read_pack_index(&self, name: &str) -> Result<PackIndex> {
        let what = format!("pack index {name}");
        let bytes = self
            .get_named_path(&index_path(name), MAX_INDEX_BYTES)
            .await?
            .ok_or_else(|| StoreError::NotFound(what))?;
        PackIndex::parse(name, bytes)
    }

    /// Where `digest` is packed: among the packs known, and then, if `refresh`, after
    /// listing the packs again (another process may have written one since).
    async fn locate_packed(
        &self,
        digest: &Digest,
        refresh: bool,
    ) -> Result<Option<(Arc<LoadedPack>, PackedEntry)>> {
        if let Some(found) = self.packs.find(digest) {
            return Ok(Some(found));
        }
        if !refresh {
            return Ok(None);
        }
        self.refresh_packs().await?;
        Ok(self.packs.find(digest))
    }

    /// Whether this handle has listed the packs at least once.
    pub(crate) fn packs_listed(&self) -> bool {
        self.packs.listed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether `digest` is packed in a pack already known (no listing).
    pub(crate) fn known_packed(&self, digest: &Digest) -> bool {
        self.packs.find(digest).is_some()
    }

    /// The length of a packed blob, if it is packed.
    pub(super) async fn packed_size(&self, digest: &Digest, refresh: bool) -> Result<Option<u64>> {
        if let Some(length) = self.packer.as_ref().and_then(|p| p.unsealed_length(digest)) {
            return Ok(Some(length));
        }
        Ok(self
            .locate_packed(digest, refresh)
            .await?
            .map(|(_, entry)| entry.length))
    }

    /// A packed blob, or a range of it, unchecked (whole reads are checked by the
    /// caller); `None` when no pack holds it. A pack gc removed since its index was
    /// read is forgotten, and the blob looked for loose (gc writes the blobs it keeps
    /// loose before it removes their pack) and in the packs listed again.
    pub(super) async fn read_packed(
        &self,
        digest: &Digest,
        range: Option<std::ops::Range<u64>>,
        refresh: bool,
    ) -> Result<Option<super::BlobStream>> {
        if let Some(bytes) = self
            .packer
            .as_ref()
            .map(|p| p.unsealed(digest))
            .transpose()?
            .flatten()
        {
            use futures::StreamExt;
            let size = bytes.len() as u64;
            let range = super::local_read::checked_range(digest, range, size)?;
            let body = bytes.slice(range.start as usize..range.end as usize);
            return Ok(Some(super::BlobStream {
                size,
                range,
                body: futures::stream::once(async move { Ok(body) }).boxed(),
            }));
        }
        let mut refresh = refresh;
        for _ in 0..2 {
            let Some((pack, entry)) = self.locate_packed(digest, refresh).await? else {
                return Ok(None);
            };
            let wanted = super::local_read::checked_range(digest, range.clone(), entry.length)?;
            match self.stream_pack_range(&pack, &entry, wanted).await {
                Err(StoreError::NotFound(_)) => {
                    self.packs.forget(pack.index.name());
                    match self.stream_loose(digest, range.clone()).await {
                        Err(StoreError::NotFound(_)) => refresh = true,
                        other => return other.map(Some),
                    }
                }
                other => return other.map(Some),
            }
        }
        Ok(None)
    }

    /// Bytes `range` (relative to the blob) of a packed blob.
    async fn stream_pack_range(
        &self,
        pack: &Arc<LoadedPack>,
        entry: &PackedEntry,
        range: std::ops::Range<u64>,
    ) -> Result<super::BlobStream> {
        use futures::StreamExt;
        let start = entry.offset + range.start;
        let length = range.end - range.start;
        let name = pack.index.name().to_string();
        let Some(root) = &self.local_root else {
            let options = object_store::GetOptions {
                range: Some(object_store::GetRange::Bounded(start..start + length)),
                ..Default::default()
            };
            let result = match self
                .object_store()
                .get_opts(&pack_path(&name), options)
                .await
            {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(StoreError::NotFound(format!("pack {name}")));
                }
                Err(e) => return Err(e.into()),
            };
            let body = result.into_stream().map_err(StoreError::from).boxed();
            return Ok(super::BlobStream {
                size: entry.length,
                range,
                body,
            });
        };
        let path = root.join(pack_path(&name).as_ref());
        if length > super::local_read::READ_WHOLE {
            // A long stream gets its own handle: it reads with the file position.
            return super::local_read::stream_local_slice(&path, &entry.digest, start, length)
                .await
                .map(|body| super::BlobStream {
                    size: entry.length,
                    range,
                    body,
                });
        }
        let pack = pack.clone();
        let bytes = super::blocking("a packed blob read", move || -> Result<Bytes> {
            use std::os::unix::fs::FileExt;
            let io_error = |e: std::io::Error| match e.kind() {
                std::io::ErrorKind::NotFound => StoreError::NotFound(format!("pack {name}")),
                _ => StoreError::Io(path.clone(), e),
            };
            let file = match pack.file.get() {
                Some(file) => file.clone(),
                None => {
                    let file = Arc::new(std::fs::File::open(&path).map_err(io_error)?);
                    let _ = pack.file.set(file.clone());
                    file
                }
            };
            let mut bytes = vec![0u8; length as usize];
            file.read_exact_at(&mut bytes, start).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    StoreError::Corrupt(
                        format!("pack {name}"),
                        "shorter than its index says".into(),
                    )
                } else {
                    io_error(e)
                }
            })?;
            Ok(Bytes::from(bytes))
        })
        .await??;
        Ok(super::BlobStream {
            size: entry.length,
            range,
            body: futures::stream::once(async move { Ok(bytes) }).boxed(),
        })
    }

    /// Where a bulk handle appends its small blobs; `None` on other handles.
    pub(super) fn packer(&self) -> Option<&Arc<Packer>> {
        self.packer.as_ref()
    }

    /// Closes every pack this bulk handle filled: the pack goes in first, its index
    /// after, and the index is loaded so this handle reads the blobs at once.
    pub(crate) async fn seal_packs(&self) -> Result<()> {
        let Some(packer) = &self.packer else {
            return Ok(());
        };
        for open in packer.take_all()? {
            let OpenPack {
                path,
                file,
                entries,
                ..
            } = open;
            drop(file);
            if entries.is_empty() {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            // Named by its index, which names every blob by its own sha256: hashing the
            // pack itself was a second pass over every packed byte.
            let index = Bytes::from(PackIndex::encode(entries));
            let name = Digest::of(&index).hex();
            self.put_file_at(&pack_path(&name), &path).await?;
            let _ = std::fs::remove_file(&path);
            self.put_bytes_at(&index_path(&name), index.clone()).await?;
            self.packs.add(PackIndex::parse(&name, index)?);
        }
        Ok(())
    }
}

/// What a bulk handle appends its small blobs to.
pub(crate) struct Packer {
    spool: PathBuf,
    state: Mutex<PackerState>,
}

#[derive(Default)]
struct PackerState {
    open: Option<OpenPack>,
    full: Vec<OpenPack>,
    seen: HashSet<Digest>,
    /// A failed append leaves the pack's offsets unknown: nothing of it may be sealed.
    failed: Option<String>,
}

impl PackerState {
    /// The unsealed pack holding `digest`, and its entry there.
    fn find(&self, digest: &Digest) -> Option<(&OpenPack, PackedEntry)> {
        let mut packs = self.open.iter().chain(self.full.iter());
        packs.find_map(|pack| Some((pack, pack.entries[*pack.by_digest.get(digest)?])))
    }
}

struct OpenPack {
    path: PathBuf,
    file: std::fs::File,
    /// Bytes appended so far: the next blob's offset.
    size: u64,
    /// Appended bytes not yet written to `file`, which holds the first `size -
    /// pending.len()`. A write per blob was 12,000 system calls for 5,000 rpms, each
    /// under the packer's lock; a blob is wholly in the file or wholly in here.
    pending: Vec<u8>,
    entries: Vec<PackedEntry>,
    /// Entry by digest, so the handle that writes a pack reads from it before it is sealed.
    by_digest: std::collections::HashMap<Digest, usize>,
}

impl Drop for Packer {
    /// Packs never sealed (an import that failed) leave no spool file behind.
    fn drop(&mut self) {
        if let Ok(state) = self.state.get_mut() {
            for pack in state.open.iter().chain(state.full.iter()) {
                let _ = std::fs::remove_file(&pack.path);
            }
        }
    }
}

impl Packer {
    pub fn new(spool: &std::path::Path) -> Self {
        Packer {
            spool: spool.to_path_buf(),
            state: Mutex::default(),
        }
    }

    /// Appends `bytes` (whose digest is `digest`) to the open pack, unless this packer
    /// has it already. Blocking: call from the blocking pool.
    pub fn append(&self, digest: Digest, bytes: &[u8]) -> Result<()> {
        let mut state = self.state.lock().map_err(|_| poisoned())?;
        if let Some(why) = &state.failed {
            return Err(StoreError::Io(
                self.spool.clone(),
                std::io::Error::other(why.clone()),
            ));
        }
        if state.seen.contains(&digest) {
            return Ok(());
        }
        let appended = self.append_locked(&mut state, digest, bytes);
        if let Err(e) = &appended {
            state.failed = Some(e.to_string());
        }
        appended
    }

    fn append_locked(&self, state: &mut PackerState, digest: Digest, bytes: &[u8]) -> Result<()> {
        if state.open.is_none() {
            std::fs::create_dir_all(&self.spool)
                .map_err(|e| StoreError::Io(self.spool.clone(), e))?;
            let path = self
                .spool
                .join(format!("pack-{}.part", crate::util::ids::random_id()));
            // Locked as this process's until sealed, so a sweep after a crash removes it
            // and never one in use (see `crate::store::spool`).
            let file = crate::store::spool::create_locked(&path)
                .map_err(|e| StoreError::Io(path.clone(), e))?;
            state.open = Some(OpenPack {
                path,
                file,
                size: 0,
                pending: Vec::new(),
                entries: Vec::new(),
                by_digest: Default::default(),
            });
        }
        let Some(open) = state.open.as_mut() else {
            return Err(poisoned());
        };
        let offset = open.size;
        open.pending.extend_from_slice(bytes);
        open.size += bytes.len() as u64;
        if open.pending.len() >= PENDING_BYTES {
            open.flush()?;
        }
        open.by_digest.insert(digest, open.entries.len());
        open.entries.push(PackedEntry {
            digest,
            offset,
            length: bytes.len() as u64,
        });
        state.seen.insert(digest);
        if open.size >= PACK_TARGET {
            if let Some(full) = state.open.take() {
                state.full.push(full);
            }
        }
        Ok(())
    }

    /// A blob appended to a pack not sealed yet: what this handle wrote it reads back.
    fn unsealed(&self, digest: &Digest) -> Result<Option<Bytes>> {
        use std::os::unix::fs::FileExt;
        let state = self.state.lock().map_err(|_| poisoned())?;
        let Some((pack, entry)) = state.find(digest) else {
            return Ok(None);
        };
        let in_file = pack.size - pack.pending.len() as u64;
        if let Some(start) = entry.offset.checked_sub(in_file) {
            let held = usize::try_from(start)
                .ok()
                .zip(usize::try_from(entry.length).ok())
                .and_then(|(start, length)| pack.pending.get(start..start.checked_add(length)?))
                .ok_or_else(poisoned)?;
            return Ok(Some(Bytes::copy_from_slice(held)));
        }
        let mut bytes = vec![0u8; entry.length as usize];
        pack.file
            .read_exact_at(&mut bytes, entry.offset)
            .map_err(|e| StoreError::Io(pack.path.clone(), e))?;
        Ok(Some(Bytes::from(bytes)))
    }

    fn unsealed_length(&self, digest: &Digest) -> Option<u64> {
        let state = self.state.lock().ok()?;
        state.find(digest).map(|(_, entry)| entry.length)
    }

    fn take_all(&self) -> Result<Vec<OpenPack>> {
        let mut state = self.state.lock().map_err(|_| poisoned())?;
        if let Some(why) = &state.failed {
            return Err(StoreError::Io(
                self.spool.clone(),
                std::io::Error::other(format!("a pack could not be written: {why}")),
            ));
        }
        // Flushed while still held here: on failure the packer's drop removes the files.
        let state = &mut *state;
        for pack in state.open.iter_mut().chain(state.full.iter_mut()) {
            if let Err(e) = pack.flush() {
                state.failed = Some(e.to_string());
                return Err(e);
            }
        }
        let mut all = std::mem::take(&mut state.full);
        all.extend(state.open.take());
        Ok(all)
    }
}

/// How many appended bytes an open pack buffers before writing them out.
const PENDING_BYTES: usize = 1 << 20;

impl OpenPack {
    /// Writes the buffered bytes to the pack file.
    fn flush(&mut self) -> Result<()> {
        self.file
            .write_all(&self.pending)
            .map_err(|e| StoreError::Io(self.path.clone(), e))?;
        self.pending.clear();
        Ok(())
    }
}

fn poisoned() -> StoreError {
    StoreError::Io(
        PathBuf::new(),
        std::io::Error::other("pack state lock poisoned"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str, offset: u64) -> PackedEntry {
        PackedEntry {
            digest: Digest::of(text.as_bytes()),
            offset,
            length: text.len() as u64,
        }
    }

    #[test]
    fn an_index_round_trips_and_finds_every_entry_and_nothing_else() {
        let entries: Vec<_> = (0..500)
            .map(|i| entry(&format!("blob {i}"), i * 10))
            .collect();
        let index = PackIndex::parse("p", Bytes::from(PackIndex::encode(entries.clone()))).unwrap();
        assert_eq!(index.entries().count(), 500);
        for wanted in &entries {
            assert_eq!(index.find(&wanted.digest), Some(*wanted));
        }
        assert_eq!(index.find(&Digest::of(b"not in it")), None);
        let empty = PackIndex::parse("e", Bytes::from(PackIndex::encode(Vec::new()))).unwrap();
        assert_eq!(empty.find(&entries[0].digest), None);
    }

    #[test]
    fn a_damaged_index_is_corrupt_not_a_panic() {
        let good = PackIndex::encode(vec![entry("a", 0), entry("b", 1)]);
        let mut flipped = good.clone();
        flipped[20] ^= 1;
        let mut huge_count = good.clone();
        huge_count[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let overflowing = PackIndex::encode(vec![PackedEntry {
            digest: Digest::of(b"x"),
            offset: u64::MAX,
            length: 2,
        }]);
        let too_long = PackIndex::encode(vec![PackedEntry {
            digest: Digest::of(b"y"),
            offset: 0,
            length: MAX_PACKED_BLOB + 1,
        }]);
        let unsorted = {
            let mut raw = good[..HEADER].to_vec();
            let (first, second) = (
                &good[HEADER..HEADER + ENTRY],
                &good[HEADER + ENTRY..HEADER + 2 * ENTRY],
            );
            raw.extend_from_slice(second);
            raw.extend_from_slice(first);
            let checksum = Digest::of(&raw);
            raw.extend_from_slice(checksum.as_bytes());
            raw
        };
        for (what, bytes) in [
            ("empty", Vec::new()),
            (
                "not an index",
                b"CAPPACK0 and some more bytes to be long enough...".to_vec(),
            ),
            ("flipped byte", flipped),
            ("truncated", good[..good.len() - 1].to_vec()),
            ("count past the end", huge_count),
            ("entry overflows", overflowing),
            ("entry longer than a packed blob", too_long),
            ("out of order", unsorted),
        ] {
            assert!(
                matches!(
                    PackIndex::parse(what, Bytes::from(bytes)),
                    Err(StoreError::Corrupt(..))
                ),
                "{what}"
            );
        }
    }

    #[test]
    fn an_open_pack_reads_back_blobs_written_out_and_still_buffered() {
        let spool = tempfile::tempdir().unwrap();
        let packer = Packer::new(spool.path());
        // 300 KiB each: the fourth append passes PENDING_BYTES and writes the first four out.
        let blobs: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 300 * 1024]).collect();
        for blob in &blobs {
            packer.append(Digest::of(blob), blob).unwrap();
        }
        for blob in &blobs {
            let read = packer.unsealed(&Digest::of(blob)).unwrap().unwrap();
            assert_eq!(&read[..], &blob[..]);
        }
        let packs = packer.take_all().unwrap();
        assert_eq!(packs.len(), 1);
        let on_disk = std::fs::read(&packs[0].path).unwrap();
        assert_eq!(
            on_disk,
            blobs.concat(),
            "every byte written out in order at sealing"
        );
        for entry in &packs[0].entries {
            let (start, end) = (
                entry.offset as usize,
                (entry.offset + entry.length) as usize,
            );
            assert_eq!(Digest::of(&on_disk[start..end]), entry.digest);
        }
    }
}
