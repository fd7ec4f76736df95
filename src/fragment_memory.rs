//! What a long-running process keeps of per-chunk index fragments (APT and RPM).
//! A fragment is named by its chunk's digest and the retention, and its bytes by
//! their sha256, so nothing held here can go stale: a publish after one upload
//! touches the store only for the chunk that changed.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use bytes::Bytes;

use crate::digest::Digest;
use crate::store::{Result, Store};

/// Bytes kept in memory before the cache starts over (about a 100,000-package suite's indices).
const BYTES_BUDGET: usize = 256 * 1024 * 1024;

/// Fragment bytes (index text and its compressed forms), shared by both kinds.
struct Held {
    bytes: HashMap<Digest, Bytes>,
    size: usize,
    /// Bumped whenever everything is dropped, so fragment maps drop theirs too.
    epoch: u64,
}

static HELD: LazyLock<Mutex<Held>> = LazyLock::new(|| {
    Mutex::new(Held {
        bytes: HashMap::new(),
        size: 0,
        epoch: 0,
    })
});

/// A fragment's blob, from memory or the store (checked against its digest there).
pub async fn bytes(store: &Store, digest: &Digest) -> Result<Bytes> {
    if let Some(found) = HELD.lock().ok().and_then(|h| h.bytes.get(digest).cloned()) {
        return Ok(found);
    }
    let bytes = store.get_blob(digest).await?;
    if let Ok(mut held) = HELD.lock() {
        if held.size + bytes.len() > BYTES_BUDGET {
            held.bytes.clear();
            held.size = 0;
            held.epoch += 1;
        }
        held.size += bytes.len();
        held.bytes.insert(*digest, bytes.clone());
    }
    Ok(bytes)
}

/// Forget everything held (after a blob it named went missing, e.g. swept by gc).
pub fn forget() {
    if let Ok(mut held) = HELD.lock() {
        held.bytes.clear();
        held.size = 0;
        held.epoch += 1;
    }
}

fn epoch() -> u64 {
    HELD.lock().map(|h| h.epoch).unwrap_or(u64::MAX)
}

/// How many chunks render at once: compression runs on the blocking pool, so a cold
/// publish (every chunk new) uses every core instead of one.
const RENDER_PARALLEL: usize = 4;

/// Renders the fragments of `chunks` a few at a time, keeping their order. `render`
/// gets owned inputs: borrowed ones would make the manager's future not `Send`
/// (rustc's higher-ranked lifetime limit on futures inside stream combinators).
pub async fn render_chunks<T, F>(
    store: &Store,
    chunks: &[Digest],
    retention: Option<u32>,
    render: fn(Store, Digest, Option<u32>) -> F,
) -> Result<Vec<T>>
where
    F: std::future::Future<Output = Result<T>>,
{
    use futures::{StreamExt, TryStreamExt};
    let renders: Vec<F> = chunks
        .iter()
        .map(|chunk| render(store.clone(), *chunk, retention))
        .collect();
    futures::stream::iter(renders)
        .buffered(RENDER_PARALLEL)
        .try_collect()
        .await
}

/// Where a chunk's fragment of `kind` (`apt`, `rpm`) is cached in the store.
pub fn cache_key(kind: &str, chunk: &Digest, retention: Option<u32>) -> String {
    format!(
        "cache/{kind}-fragments/{chunk}-{}",
        retention.map_or("all".to_string(), |n| n.to_string())
    )
}

/// Runs `attempt`, and once more after forgetting everything held if it failed with
/// NotFound: a remembered fragment named a blob gc has since swept, and the second
/// attempt rebuilds from the store.
pub async fn retry_after_forgetting<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    match attempt().await {
        Err(crate::store::StoreError::NotFound(_)) => {
            forget();
            attempt().await
        }
        other => other,
    }
}

/// Parsed fragments of one kind (or anything derived from them), by cache key.
/// Everything here is dropped when the held bytes are, so nothing outlives a `forget`.
pub struct Fragments<F> {
    map: Mutex<(u64, HashMap<String, F>)>,
    /// Entries kept before the map starts over.
    limit: usize,
}

impl<F: Clone> Fragments<F> {
    pub fn new() -> Self {
        Self::bounded(usize::MAX)
    }

    pub fn bounded(limit: usize) -> Self {
        Fragments {
            map: Mutex::new((0, HashMap::new())),
            limit,
        }
    }

    pub fn get(&self, key: &str) -> Option<F> {
        let current = epoch();
        let mut map = self.map.lock().ok()?;
        if map.0 != current {
            *map = (current, HashMap::new());
        }
        map.1.get(key).cloned()
    }

    pub fn remember(&self, key: &str, fragment: &F) {
        let current = epoch();
        if let Ok(mut map) = self.map.lock() {
            if map.0 != current || map.1.len() >= self.limit {
                *map = (current, HashMap::new());
            }
            map.1.insert(key.to_string(), fragment.clone());
        }
    }
}

impl<F: Clone> Default for Fragments<F> {
    fn default() -> Self {
        Self::new()
    }
}
