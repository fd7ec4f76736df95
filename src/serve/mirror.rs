//! Mirror targets: copy what is published to a directory (for nginx or Apache)
//! or another bucket (for a CDN), incrementally (only what the target lacks or
//! what changed) and in an order that keeps the target consistent for a reader
//! at every moment: pool files and content-addressed indices first, named
//! indices next, and the signed roots (InRelease, repomd.xml) last. Files no
//! publication references any more are removed only after a grace period, so a
//! client still following an older InRelease finds its by-hash files.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};

use crate::repo::model::FileEntry;
use crate::serve::config::MirrorConfig;
use crate::serve::views::Views;
use crate::store::Store;
use crate::util::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("mirror target: {0}")]
    Target(#[from] object_store::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("mirror config: {0}")]
    Config(String),
}

const STATE_FILE: &str = "caprepo-mirror-state.json";

/// What the target holds, so a sync writes only what changed.
#[derive(Debug, Default, Serialize, Deserialize)]
struct MirrorState {
    files: BTreeMap<String, Digest>,
    /// Paths no publication references, with when that was first noticed.
    unreferenced_since: BTreeMap<String, i64>,
}

pub struct Mirror {
    target: Arc<dyn ObjectStore>,
    name: String,
    grace: Duration,
}

/// When a file may be written: content-addressed first, signed roots last.
fn write_order(path: &str) -> u8 {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name {
        "InRelease" | "repomd.xml" => 4,
        "Release" | "Release.gpg" | "repomd.xml.asc" | "repomd.xml.key" => 3,
        _ if crate::serve::views::immutable_path(path)
            || path.contains("/pool/")
            || path.contains("/Packages/") =>
        {
            0
        }
        _ => 1,
    }
}

impl Mirror {
    pub fn open(config: &MirrorConfig) -> Result<Mirror, MirrorError> {
        let grace =
            crate::util::time::parse_duration(&config.grace).map_err(MirrorError::Config)?;
        let (target, name): (Arc<dyn ObjectStore>, String) =
            match (&config.directory, &config.bucket) {
                (Some(dir), None) => {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| MirrorError::Config(format!("{}: {e}", dir.display())))?;
                    let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)?
                        .with_fsync(true);
                    (Arc::new(fs), dir.display().to_string())
                }
                (None, Some(bucket)) => {
                    let _ = rustls::crypto::ring::default_provider().install_default();
                    let mut builder = object_store::aws::AmazonS3Builder::from_env()
                        .with_bucket_name(bucket)
                        .with_allow_http(config.allow_http);
                    if let Some(endpoint) = &config.endpoint {
                        builder = builder
                            .with_endpoint(endpoint)
                            .with_virtual_hosted_style_request(false);
                    }
                    (Arc::new(builder.build()?), format!("s3://{bucket}"))
                }
                _ => {
                    return Err(MirrorError::Config(
                        "a [[mirror]] has exactly one of directory and bucket".into(),
                    ));
                }
            };
        Ok(Mirror {
            target,
            name,
            grace,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    async fn load_state(&self) -> MirrorState {
        match self
            .target
            .get_opts(&Path::from(STATE_FILE), Default::default())
            .await
        {
            Ok(found) => match found.bytes().await {
                Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
                Err(_) => MirrorState::default(),
            },
            Err(_) => MirrorState::default(),
        }
    }

    async fn save_state(&self, state: &MirrorState) -> Result<(), MirrorError> {
        let bytes = serde_json::to_vec(state).unwrap_or_default();
        self.target
            .put_opts(
                &Path::from(STATE_FILE),
                PutPayload::from(Bytes::from(bytes)),
                Default::default(),
            )
            .await?;
        Ok(())
    }

    async fn copy(&self, store: &Store, path: &str, entry: &FileEntry) -> Result<(), MirrorError> {
        let destination = Path::parse(path).map_err(|e| MirrorError::Config(e.to_string()))?;
        let stream = store.stream_blob(&entry.sha256, None).await?;
        let upload = self
            .target
            .put_multipart_opts(&destination, Default::default())
            .await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 * 1024 * 1024);
        let mut body = stream.body;
        while let Some(chunk) = body.try_next().await? {
            writer.wait_for_capacity(4).await?;
            writer.put(chunk);
        }
        writer.finish().await?;
        Ok(())
    }

    /// Bring the target up to date with every public published tree. Returns files written.
    pub async fn sync(&self, store: &Store, views: &Views) -> Result<usize, MirrorError> {
        let mut wanted: BTreeMap<String, (u8, FileEntry)> = BTreeMap::new();
        let mut retained: BTreeMap<String, FileEntry> = BTreeMap::new();
        for repo in views.repos() {
            if !views.is_public(&repo) {
                continue; // private repositories are read through caps, never mirrored
            }
            for view in views.suites_of(&repo) {
                for (path, entry) in view
                    .current
                    .files
                    .iter()
                    .map(|(p, e)| (p.as_str(), e))
                    .chain(view.pool().iter())
                {
                    let full = format!("{repo}/{path}");
                    wanted.insert(full.clone(), (write_order(&full), *entry));
                }
                for (path, entry) in view.retained_paths() {
                    retained.insert(format!("{repo}/{path}"), *entry);
                }
            }
        }
        let mut state = self.load_state().await;
        let mut order: Vec<(&String, &(u8, FileEntry))> = wanted.iter().collect();
        order.sort_by_key(|(path, (rank, _))| (*rank, path.as_str()));
        let mut written = 0;
        for (path, (_, entry)) in order {
            if state.files.get(path) == Some(&entry.sha256) {
                continue;
            }
            self.copy(store, path, entry).await?;
            state.files.insert(path.clone(), entry.sha256);
            written += 1;
        }
        // Prune what nothing references any more, once the grace period has passed.
        let now = crate::util::time::now_unix();
        let grace = self.grace.as_secs() as i64;
        let mut doomed = Vec::new();
        for path in state.files.keys() {
            if wanted.contains_key(path) || retained.contains_key(path) {
                state.unreferenced_since.remove(path);
                continue;
            }
            let since = *state.unreferenced_since.entry(path.clone()).or_insert(now);
            if now - since >= grace {
                doomed.push(path.clone());
            }
        }
        for path in doomed {
            if let Ok(location) = Path::parse(&path) {
                match self
                    .target
                    .delete_stream(Box::pin(futures::stream::once(async { Ok(location) })))
                    .try_collect::<Vec<_>>()
                    .await
                {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            state.files.remove(&path);
            state.unreferenced_since.remove(&path);
        }
        self.save_state(&state).await?;
        Ok(written)
    }
}
