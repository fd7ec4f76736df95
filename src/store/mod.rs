//! The content-addressed store: immutable blobs named by their sha256 and a
//! handful of append-only ref logs, all inside one `object_store` (local disk,
//! memory, or an S3-compatible bucket). Nothing here is ever rewritten in place,
//! which is what makes publishing a pointer flip and history free.

mod blobs;
mod caches;
pub mod change_log;
mod composite;
pub mod fence;
pub mod held_bytes;
mod local_put;
mod local_read;
mod manifest;
pub mod pack_sweep;
mod packs;
mod refs;
pub mod resumable_hash;
pub mod spool;

pub(crate) use blobs::blob_path;
pub use blobs::{BlobMeta, BlobStream};
pub(crate) use composite::list_composites;
pub use composite::{CompositeRecord, LazyPart, ListedComposite, Part, PartBytes, at_hand};
pub(crate) use local_put::buffer_for as copy_buffer_for;
pub use manifest::ManifestKind;
pub use packs::{ListedPack, LoadedPack, PackIndex, PackListing, PackedEntry};
pub(crate) use packs::{MAX_PACKED_BLOB, index_path as pack_index_path, pack_path};
pub use refs::{REF_UPDATE_TRIES, RefEntry, RefName, RefUpdate};

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend: {0}")]
    Backend(#[from] object_store::Error),
    #[error("{0} not found in the store")]
    NotFound(String),
    #[error("stored object {0} is corrupt: {1}")]
    Corrupt(String, String),
    #[error("ref {0} moved on while we were writing (compare-and-swap lost); retry")]
    Conflict(String),
    #[error(
        "invalid ref name {0:?}: segments may only use a-z A-Z 0-9 . _ + - and may not be empty, '.' or '..'"
    )]
    BadRefName(String),
    #[error("object {0} is larger than the {1} bytes allowed here")]
    TooLarge(String, u64),
    #[error("local file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// A task doing store work side by side with others panicked or was cancelled.
    #[error("internal error in {0}: {1}")]
    Task(&'static str, String),
    /// This process could not show that no gc swept while it wrote (it stalled past its
    /// lease while a gc ran); nothing was advanced, and the write may be retried.
    #[error("a gc swept the store while this write was in progress; nothing was changed, retry")]
    Fenced,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Runs blocking store work (file I/O, hashing, compressing) on the blocking pool. A
/// task that panics or is cancelled is `StoreError::Task` naming `what`.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Task(what, e.to_string()))
}

/// Where the bytes live. Deserialized from the `[storage]` table of caprepo.toml.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum StorageConfig {
    /// A directory on local disk; writes are fsynced before they are acknowledged.
    Local { path: PathBuf },
    /// An S3-compatible bucket. Credentials come from the usual AWS_* environment variables.
    S3 {
        bucket: String,
        #[serde(default)]
        endpoint: Option<String>,
        #[serde(default = "default_region")]
        region: String,
        #[serde(default)]
        allow_http: bool,
    },
    /// Process memory; for tests only.
    Memory,
}

fn default_region() -> String {
    "us-east-1".to_string()
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// Last generation seen per ref, so finding a head probes forward instead of listing.
    ref_heads: Arc<Mutex<HashMap<String, u64>>>,
    description: Arc<str>,
    /// The directory of a local-disk store, so reads can go straight to the file.
    local_root: Option<Arc<std::path::PathBuf>>,
    /// Local blob writes skip their fsync; `finish_bulk` makes them durable at once.
    defer_sync: bool,
    /// The packs this handle has read the indexes of (shared by its clones).
    packs: Arc<packs::PackSet>,
    /// On bulk handles, where small blobs go instead of a file each.
    packer: Option<Arc<packs::Packer>>,
    /// This process's side of the fence against gc (shared by every clone).
    fence: Arc<fence::Fence>,
    /// This process's appender of the change log (shared by every clone).
    changes: Arc<change_log::ChangeLogWriter>,
    /// Parts this handle (and its clones) wrote since the held bytes were last dropped:
    /// writing one again is skipped. Per store, since bytes held for one store say
    /// nothing about what another has.
    written_parts: Arc<held_bytes::WrittenParts>,
    /// Hash states and records of composites this handle read or wrote.
    composites: Arc<composite::CompositeMemory>,
    /// Blob bytes held in memory (index fragments, parts): read once, joined often.
    held: Arc<held_bytes::HeldBytes>,
    /// The caches of the layers above, by type ([`Store::cache`]).
    caches: Arc<caches::Caches>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.description)
    }
}

impl Store {
    pub fn open(config: &StorageConfig, base_dir: &FsPath) -> Result<Self> {
        match config {
            StorageConfig::Local { path } => {
                let root = if path.is_absolute() {
                    path.clone()
                } else {
                    base_dir.join(path)
                };
                Self::local(&root)
            }
            StorageConfig::S3 {
                bucket,
                endpoint,
                region,
                allow_http,
            } => {
                // The S3 client speaks TLS through rustls; select its ring backend (a no-op if already chosen).
                let _ = rustls::crypto::ring::default_provider().install_default();
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_allow_http(*allow_http);
                if let Some(endpoint) = endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_virtual_hosted_style_request(false);
                }
                let s3 = builder.build()?;
                Ok(Self::from_object_store(
                    Arc::new(s3),
                    format!("s3://{bucket}"),
                ))
            }
            StorageConfig::Memory => Ok(Self::memory()),
        }
    }

    /// Local disk, with fsync of files and directories so an acknowledged write survives a crash.
    pub fn local(root: &FsPath) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| StoreError::Io(root.to_path_buf(), e))?;
        let fs = LocalFileSystem::new_with_prefix(root)?.with_fsync(true);
        let mut store = Self::from_object_store(Arc::new(fs), format!("file://{}", root.display()));
        store.local_root = Some(Arc::new(root.to_path_buf()));
        Ok(store)
    }

    /// Each memory store is told apart by number: what one has, another does not.
    pub fn memory() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self::from_object_store(Arc::new(InMemory::new()), format!("memory #{n}"))
    }

    pub fn from_object_store(inner: Arc<dyn ObjectStore>, description: String) -> Self {
        Store {
            inner,
            ref_heads: Arc::default(),
            description: description.into(),
            local_root: None,
            defer_sync: false,
            packs: Arc::default(),
            packer: None,
            fence: Arc::new(fence::Fence::new()),
            changes: Arc::default(),
            written_parts: Arc::default(),
            held: Arc::default(),
            caches: Arc::default(),
            composites: Arc::default(),
        }
    }

    /// A handle for bulk writes (imports): small blobs are appended to a pack spooled in
    /// `spool` instead of becoming a file each (creating those files was most of a cold
    /// import's time), and on local disk nothing is fsynced one by one: a ref advanced
    /// through the handle first seals the pack and makes everything durable with one
    /// `syncfs` (see `finish_bulk`). Other backends only pack.
    pub fn bulk(&self, spool: &FsPath) -> Result<Self> {
        let mut bulk = self.clone();
        if let Some(root) = &self.local_root {
            let fs = LocalFileSystem::new_with_prefix(root.as_path())?.with_fsync(false);
            bulk.inner = Arc::new(fs);
            bulk.defer_sync = true;
        }
        bulk.packer = Some(Arc::new(packs::Packer::new(spool)));
        Ok(bulk)
    }

    /// Seals the bulk handle's packs, then makes every deferred write durable (one
    /// `syncfs` of the store's filesystem).
    pub async fn finish_bulk(&self) -> Result<()> {
        self.seal_packs().await?;
        let Some(root) = self.local_root.clone().filter(|_| self.defer_sync) else {
            return Ok(());
        };
        blocking("a filesystem sync", move || {
            local_put::sync_filesystem(&root)
        })
        .await?
    }

    /// A handle on the same store that has read no pack index yet (another process's view).
    #[cfg(test)]
    pub(crate) fn without_packs_known(&self) -> Self {
        let mut fresh = self.clone();
        fresh.packs = Arc::default();
        fresh.packer = None;
        fresh
    }

    /// Writes raw bytes at a path of the store (planting a crash's leftovers).
    #[cfg(test)]
    pub(crate) async fn put_bytes_at_for_test(&self, path: &str, bytes: bytes::Bytes) {
        self.raw_put(
            &object_store::path::Path::from(path),
            bytes.into(),
            object_store::PutMode::Overwrite,
        )
        .await
        .unwrap();
    }

    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    pub fn description(&self) -> &str {
        &self.description
    }
}

#[cfg(test)]
pub(crate) mod conformance;
