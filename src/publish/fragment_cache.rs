//! What a store handle keeps of per-chunk index fragments (APT and RPM), for as long
//! as the process runs.
//! A fragment is named by its chunk's digest and how it is rendered ([`Rendering`]), and its bytes by
//! their sha256, so nothing held here can go stale: a publish after one upload
//! touches the store only for the chunk that changed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::store::{Result, Store};
use crate::util::digest::Digest;

/// How a chunk's fragment is rendered: which versions retention keeps, and, for APT,
/// whether Packages stanzas carry the legacy `MD5sum` and `SHA1` fields beside `SHA256`.
/// Part of every fragment's name, so fragments of one chunk rendered both ways never meet.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct Rendering {
    pub retention: Option<u32>,
    pub legacy_hashes: bool,
}

impl Rendering {
    /// Retention only: RPM repodata has no legacy hash fields.
    pub fn retaining(retention: Option<u32>) -> Rendering {
        Rendering {
            retention,
            legacy_hashes: false,
        }
    }
}

/// How many chunks render at once: compression runs on the blocking pool, so a cold
/// publish (every chunk new) uses every core instead of one.
const RENDER_PARALLEL: usize = 8;

/// Renders the fragments of `chunks` a few at a time, keeping their order. Each render
/// is its own task: rendering the text of a chunk is CPU work in the future itself, and
/// futures polled side by side in one task would share one thread. `render` gets owned
/// inputs: borrowed ones would make the manager's future not `Send` (rustc's
/// higher-ranked lifetime limit on futures inside stream combinators).
pub async fn render_chunks<T, F>(
    store: &Store,
    chunks: &[Digest],
    rendering: Rendering,
    render: fn(Store, Digest, Rendering) -> F,
) -> Result<Vec<T>>
where
    F: std::future::Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    use futures::StreamExt;
    let store = store.clone();
    // Join handles, not async blocks: a closure returning an async block here trips the
    // same lifetime limit.
    let mut joined = futures::stream::iter(chunks.to_vec())
        .map(move |chunk| tokio::spawn(render(store.clone(), chunk, rendering)))
        .buffered(RENDER_PARALLEL);
    let mut out = Vec::with_capacity(chunks.len());
    while let Some(rendered) = joined.next().await {
        let rendered = rendered
            .map_err(|e| crate::store::StoreError::Task("a fragment render", e.to_string()))?;
        out.push(rendered?);
    }
    Ok(out)
}

/// Where a chunk's fragment of `kind` (`apt`, `rpm`) is cached in the store.
pub fn cache_key(kind: &str, chunk: &Digest, rendering: Rendering) -> String {
    format!(
        "cache/{kind}-fragments/{chunk}-{}{}",
        rendering
            .retention
            .map_or("all".to_string(), |n| n.to_string()),
        if rendering.legacy_hashes {
            "-legacy"
        } else {
            ""
        }
    )
}

/// Runs `attempt`, and once more after forgetting everything held if it failed with
/// NotFound: a remembered fragment named a blob gc has since swept, and the second
/// attempt rebuilds from the store.
pub async fn retry_after_forgetting<T, F, Fut>(store: &Store, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    match attempt().await {
        Err(crate::store::StoreError::NotFound(_)) => {
            store.forget_held();
            attempt().await
        }
        other => other,
    }
}

/// Parsed fragments of one kind (or anything derived from them), by cache key, for one
/// store (each user keeps its maps in [`Store::cache`]). Everything here is dropped
/// when the store's held bytes are, so nothing outlives a [`Store::forget_held`].
/// Entries are shared, not copied: a publish looks up every chunk's fragment, and copying
/// their pool lists was O(suite) work per publish.
pub struct FragmentCache<F> {
    map: Mutex<(u64, HashMap<String, Arc<F>>)>,
    /// Entries kept before the map starts over.
    limit: usize,
}

impl<F> FragmentCache<F> {
    pub fn new() -> Self {
        Self::bounded(usize::MAX)
    }

    pub fn bounded(limit: usize) -> Self {
        FragmentCache {
            map: Mutex::new((0, HashMap::new())),
            limit,
        }
    }

    pub fn get(&self, store: &Store, key: &str) -> Option<Arc<F>> {
        let current = store.held_epoch();
        let mut map = self.map.lock().ok()?;
        if map.0 != current {
            *map = (current, HashMap::new());
        }
        map.1.get(key).cloned()
    }

    pub fn remember(&self, store: &Store, key: &str, fragment: F) -> Arc<F> {
        let fragment = Arc::new(fragment);
        let current = store.held_epoch();
        if let Ok(mut map) = self.map.lock() {
            if map.0 != current || map.1.len() >= self.limit {
                *map = (current, HashMap::new());
            }
            map.1.insert(key.to_string(), Arc::clone(&fragment));
        }
        fragment
    }
}

impl<F> Default for FragmentCache<F> {
    fn default() -> Self {
        Self::new()
    }
}
