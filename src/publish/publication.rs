//! The publish step shared by APT suites and RPM trees: compare the inputs a
//! publication would be built from with the one already published, build only
//! when they moved, and advance the published ref by compare-and-swap. A lost
//! race (another daemon on the same bucket) re-checks against the winner.

use std::collections::BTreeMap;

use crate::agent::AgentClientError;
use crate::repo::format::RepoFormat;
use crate::repo::model::Publication;
use crate::store::{RefEntry, RefName, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Agent(#[from] AgentClientError),
    #[error("repository {0} does not exist")]
    NoRepo(String),
    #[error("repository {0} has no suite or tree {1}")]
    NoSuite(String, String),
    #[error("compressing an index: {0}")]
    Compress(String),
}

#[derive(Debug, Clone)]
pub struct Published {
    pub head: RefEntry,
    pub publication: Publication,
    /// False when the tree was already up to date and nothing was written.
    pub changed: bool,
}

/// Ref inputs: ref name -> generation, for the repository definition and every cell read.
pub type Inputs = BTreeMap<String, u64>;

/// The heads a publication is built from, by ref name (cells that do not exist yet are absent).
pub type Heads = BTreeMap<String, crate::store::RefEntry>;

/// The repository definition, and the head of its ref and of every cell the tree lists:
/// what a publication of the tree is built from. The cell heads are read side by side:
/// on S3 each is two requests, and a suite of 4 components and 5 architectures has 28
/// cells.
pub async fn current_heads<F: RepoFormat>(
    store: &Store,
    repo: &str,
    tree: &str,
) -> Result<(F::Definition, Heads), PublishError> {
    let repo_ref = F::definition_ref(repo)?;
    let repo_head = store
        .ref_head(&repo_ref)
        .await?
        .ok_or_else(|| PublishError::NoRepo(repo.to_string()))?;
    let definition: F::Definition = store.get_json(&repo_head.target).await?;
    let cells = F::tree_cells(repo, &definition, tree)?
        .ok_or_else(|| PublishError::NoSuite(repo.to_string(), tree.to_string()))?;
    let mut heads = read_heads(store, cells).await?;
    heads.insert(repo_ref.to_string(), repo_head);
    Ok((definition, heads))
}

/// The repository definition and the generations a publication of this tree would be
/// built from.
pub async fn current_inputs<F: RepoFormat>(
    store: &Store,
    repo: &str,
    tree: &str,
) -> Result<(F::Definition, Inputs), PublishError> {
    let (definition, heads) = current_heads::<F>(store, repo, tree).await?;
    Ok((definition, generations(&heads)))
}

/// The generations of `heads`: what a publication records as its inputs.
pub fn generations(heads: &Heads) -> Inputs {
    heads
        .iter()
        .map(|(name, head)| (name.clone(), head.generation))
        .collect()
}

/// Returns once the publication ref `reference` has moved past `current` (None: once it
/// exists): another process published while this one was building. Checks each second
/// (one request), only while a build runs.
pub async fn published_meanwhile(store: &Store, reference: &RefName, current: Option<u64>) {
    let next = current.map_or(0, |g| g + 1);
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if let Ok(Some(_)) = store.ref_entry(reference, next).await {
            return;
        }
    }
}

/// Builds with `build`, unless another process publishes `reference` past `current`
/// first: then None, and the caller starts over from what that one published. A daemon
/// building the same publication as the writer of a change (discovery's window ran out)
/// used to finish its build, lose the race, and serve nothing new until then.
pub async fn build_unless_published<T>(
    store: &Store,
    reference: &RefName,
    current: Option<u64>,
    build: impl std::future::Future<Output = Result<T, PublishError>>,
) -> Result<Option<T>, PublishError> {
    tokio::select! {
        built = build => built.map(Some),
        () = published_meanwhile(store, reference, current) => {
            tracing::info!(reference = %reference, "published elsewhere while building; starting over from that publication");
            Ok(None)
        }
    }
}

/// How many ref heads or manifests a publish reads at once: each is a request on S3.
const READ_PARALLEL: usize = 16;

/// The heads of `refs` that exist, read side by side.
pub async fn read_heads(
    store: &Store,
    refs: Vec<crate::store::RefName>,
) -> Result<Heads, PublishError> {
    let reads: Vec<_> = refs
        .into_iter()
        .map(|name| {
            let store = store.clone();
            async move {
                let head = store.ref_head(&name).await?;
                Ok::<_, crate::store::StoreError>(head.map(|head| (name.to_string(), head)))
            }
        })
        .collect();
    let read = crate::util::parallel::in_order(reads, READ_PARALLEL).await?;
    Ok(read.into_iter().flatten().collect())
}

/// The cell manifests `heads` name (every head under `cells/`), read side by side.
pub async fn read_cells(
    store: &Store,
    heads: &Heads,
) -> Result<BTreeMap<String, crate::repo::model::Cell>, PublishError> {
    let reads: Vec<_> = heads
        .iter()
        .filter(|(name, _)| name.starts_with("cells/"))
        .map(|(name, head)| {
            let (store, name, target) = (store.clone(), name.clone(), head.target);
            async move {
                let cell: crate::repo::model::Cell = store.get_json(&target).await?;
                Ok::<_, crate::store::StoreError>((name, cell))
            }
        })
        .collect();
    let read = crate::util::parallel::in_order(reads, READ_PARALLEL).await?;
    Ok(read.into_iter().collect())
}

/// The published head, and the publication itself when it was built from exactly `inputs`.
pub async fn up_to_date(
    store: &Store,
    reference: &RefName,
    inputs: &Inputs,
) -> Result<(Option<RefEntry>, Option<Published>), PublishError> {
    let current = store.ref_head(reference).await?;
    if let Some(head) = &current {
        let existing: Publication = store.get_json(&head.target).await?;
        if existing.inputs == *inputs {
            let published = Published {
                head: head.clone(),
                publication: existing,
                changed: false,
            };
            return Ok((current, Some(published)));
        }
    }
    Ok((current, None))
}

/// Store a built publication and flip the ref to it. None: another publisher won the race; re-check.
pub async fn advance(
    store: &Store,
    reference: &RefName,
    current: Option<RefEntry>,
    publication: Publication,
) -> Result<Option<Published>, PublishError> {
    let stored = store.put_json(&publication).await?;
    let note = format!(
        "publish {} files, {} pool chunks",
        publication.files.len(),
        publication.pool_chunks.len() + usize::from(!publication.pool.is_empty())
    );
    match store
        .ref_advance(
            reference,
            current.map(|h| h.generation),
            stored.digest,
            "manager",
            &note,
        )
        .await
    {
        Ok(head) => Ok(Some(Published {
            head,
            publication,
            changed: true,
        })),
        Err(StoreError::Conflict(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A parsed pool chunk (path -> file), shared by every publication that names it.
pub type PoolChunk = std::sync::Arc<BTreeMap<String, crate::repo::model::FileEntry>>;

/// A publication's pool paths, the inline ones and those of its pool chunks, in one
/// map for fast lookups; plus the shared chunks it was built from, which is all a
/// superseded publication keeps (at 100,000 packages, sixteen retained copies of the
/// map were most of the server's memory).
///
/// The map is a shared base and a small overlay of what changed since, so the next
/// publication's index costs the size of the change, not of the pool (copying and
/// dropping the whole map was a large part of a one-upload publish's CPU).
#[derive(Debug, Default)]
pub struct PoolIndex {
    base: std::sync::Arc<PoolPaths>,
    /// Paths added (Some) or taken out (None) since the base.
    changes: PoolChanges,
    sources: Vec<PoolChunk>,
}

type PoolPaths = std::collections::HashMap<std::sync::Arc<str>, crate::repo::model::FileEntry>;
type PoolChanges =
    std::collections::HashMap<std::sync::Arc<str>, Option<crate::repo::model::FileEntry>>;

impl PoolIndex {
    pub fn get(&self, path: &str) -> Option<&crate::repo::model::FileEntry> {
        match self.changes.get(path) {
            Some(changed) => changed.as_ref(),
            None => self.base.get(path),
        }
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &crate::repo::model::FileEntry)> {
        let unchanged = self
            .base
            .iter()
            .filter(|(path, _)| !self.changes.contains_key(&***path));
        let added = self
            .changes
            .iter()
            .filter_map(|(path, entry)| entry.as_ref().map(|e| (path, e)));
        unchanged.chain(added).map(|(path, entry)| (&**path, entry))
    }

    /// The chunks (and inline pool) the index was built from.
    pub fn sources(&self) -> &[PoolChunk] {
        &self.sources
    }
}

/// Loads pool chunks, keeping parsed ones in memory by digest: they never change,
/// and consecutive publications share all but the chunks that changed.
#[derive(Default)]
pub struct PoolLoader {
    chunks: std::sync::Mutex<
        std::collections::HashMap<
            crate::util::digest::Digest,
            std::sync::Arc<BTreeMap<String, crate::repo::model::FileEntry>>,
        >,
    >,
}

impl PoolLoader {
    async fn chunk(
        &self,
        store: &Store,
        digest: &crate::util::digest::Digest,
    ) -> Result<std::sync::Arc<BTreeMap<String, crate::repo::model::FileEntry>>, StoreError> {
        if let Some(found) = self.chunks.lock().ok().and_then(|c| c.get(digest).cloned()) {
            return Ok(found);
        }
        let loaded: BTreeMap<String, crate::repo::model::FileEntry> =
            store.get_json(digest).await?;
        let loaded = std::sync::Arc::new(loaded);
        if let Ok(mut cache) = self.chunks.lock() {
            // Bounded: a busy server's working set is a few hundred chunks per suite.
            if cache.len() > 65_536 {
                cache.clear();
            }
            cache.insert(*digest, std::sync::Arc::clone(&loaded));
        }
        Ok(loaded)
    }

    /// The pool index of `publication`. With the index of the publication it follows,
    /// only the chunks that changed are applied to a copy of that one, instead of
    /// rebuilding the whole map on every publish.
    pub async fn index(
        &self,
        store: &Store,
        publication: &Publication,
        previous: Option<&PoolIndex>,
    ) -> Result<PoolIndex, StoreError> {
        let mut sources = Vec::new();
        if !publication.pool.is_empty() {
            sources.push(std::sync::Arc::new(publication.pool.clone()));
        }
        for digest in &publication.pool_chunks {
            sources.push(self.chunk(store, digest).await?);
        }
        Ok(match previous {
            Some(previous) => PoolIndex::patched(previous, sources),
            None => PoolIndex::built(sources),
        })
    }
}

impl PoolIndex {
    fn built(sources: Vec<PoolChunk>) -> PoolIndex {
        let paths = sources
            .iter()
            .flat_map(|chunk| {
                chunk
                    .iter()
                    .map(|(k, v)| (std::sync::Arc::from(k.as_str()), *v))
            })
            .collect();
        PoolIndex {
            base: std::sync::Arc::new(paths),
            changes: PoolChanges::new(),
            sources,
        }
    }

    /// `previous` with the chunks it has and `sources` lacks taken out and the new ones
    /// put in, as changes over its base; built afresh once the changes grow large.
    fn patched(previous: &PoolIndex, sources: Vec<PoolChunk>) -> PoolIndex {
        use std::collections::HashSet;
        use std::sync::Arc;
        let old: HashSet<*const _> = previous.sources.iter().map(Arc::as_ptr).collect();
        let new: HashSet<*const _> = sources.iter().map(Arc::as_ptr).collect();
        let dropped: Vec<&PoolChunk> = previous
            .sources
            .iter()
            .filter(|c| !new.contains(&Arc::as_ptr(c)))
            .collect();
        let added: Vec<&PoolChunk> = sources
            .iter()
            .filter(|c| !old.contains(&Arc::as_ptr(c)))
            .collect();
        let changed: usize = dropped.iter().chain(&added).map(|c| c.len()).sum();
        if changed + previous.changes.len() > previous.base.len() / 8 + 1024 {
            return PoolIndex::built(sources);
        }
        let mut changes = previous.changes.clone();
        for path in dropped.iter().flat_map(|c| c.keys()) {
            // A path may also be listed by a chunk both publications keep.
            if !sources.iter().any(|c| c.contains_key(path)) {
                changes.insert(Arc::from(path.as_str()), None);
            }
        }
        for (path, entry) in added.iter().flat_map(|c| c.iter()) {
            changes.insert(Arc::from(path.as_str()), Some(*entry));
        }
        PoolIndex {
            base: Arc::clone(&previous.base),
            changes,
            sources,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_build_stops_when_another_process_publishes_first() {
        let store = Store::memory();
        let reference = RefName::new("published/apt/race/stable").unwrap();
        let target = store
            .put_blob(bytes::Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let first = store
            .ref_advance(&reference, None, target.digest, "test", "first")
            .await
            .unwrap();
        // A build that would take a minute, and another process publishing after 300 ms.
        let slow = async {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            Ok::<_, PublishError>("built")
        };
        let other = store.clone();
        let reference_again = reference.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            other
                .ref_advance(
                    &reference_again,
                    Some(first.generation),
                    target.digest,
                    "test",
                    "other",
                )
                .await
                .unwrap();
        });
        let started = std::time::Instant::now();
        let outcome = build_unless_published(&store, &reference, Some(first.generation), slow)
            .await
            .unwrap();
        assert_eq!(outcome, None);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // With nobody publishing meanwhile, the build's result comes back.
        let quick = async { Ok::<_, PublishError>("built") };
        let outcome = build_unless_published(&store, &reference, Some(first.generation + 1), quick)
            .await
            .unwrap();
        assert_eq!(outcome, Some("built"));
    }
}
