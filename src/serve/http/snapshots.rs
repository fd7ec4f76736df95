//! Snapshots over HTTP: `/<repo>/snapshots/<name>/...` serves the frozen tree
//! byte for byte, forever (publications never change, so they are cached once
//! loaded); a read cap scoped to `apt/NAME/snapshots/SNAP` serves it at `/r/<cap>/`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::repo::model::{FileEntry, Publication};
use crate::store::Store;

/// A snapshot's publication and its pool index.
pub type Snapshot = (Publication, crate::publish::publication::PoolIndex);

#[derive(Default)]
pub struct SnapshotCache {
    loaded: Mutex<HashMap<(String, String), Arc<Snapshot>>>,
    loader: crate::publish::publication::PoolLoader,
}

impl SnapshotCache {
    /// The snapshot's publication and pool, APT or RPM (a repository name is one or the other).
    pub async fn get(&self, store: &Store, repo: &str, snapshot: &str) -> Option<Arc<Snapshot>> {
        let key = (repo.to_string(), snapshot.to_string());
        if let Some(found) = self.loaded.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Some(found);
        }
        for format in crate::formats::Format::ALL {
            if let Ok(Some(publication)) =
                crate::releases::snapshot_get(store, format, repo, snapshot).await
            {
                let pool = self.loader.index(store, &publication, None).await.ok()?;
                let loaded = Arc::new((publication, pool));
                if let Ok(mut map) = self.loaded.lock() {
                    map.insert(key, Arc::clone(&loaded));
                }
                return Some(loaded);
            }
        }
        None
    }
}

/// Resolve a path inside a snapshot (relative to the repository root).
pub fn lookup(snapshot: &Snapshot, path: &str) -> Option<FileEntry> {
    if path
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return None;
    }
    let (publication, pool) = snapshot;
    publication
        .files
        .get(path)
        .or_else(|| pool.get(path))
        .copied()
}
