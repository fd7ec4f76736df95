//! What readers see of every published suite and RPM tree: the current publication of
//! each, the superseded ones whose immutable files (by-hash, hashed repodata, pool
//! files) stay fetchable, and whether each repository is private. The manager installs
//! publications here; HTTP handlers, discovery and mirrors read it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use crate::repo::model::{FileEntry, Publication};
use crate::store::Store;

/// (repository, APT suite or RPM tree `<release>/<arch>`)
pub type TreeKey = (String, String);

/// How many superseded publications keep their by-hash and pool files reachable.
/// A client that read an older InRelease fetches indices by hash; they must still resolve.
pub(crate) const KEEP_SUPERSEDED: usize = 16;

/// Index files whose names never change meaning: APT's by-hash aliases and RPM's
/// `repodata/<sha256>-*.xml.gz`. These stay fetchable after a newer publish.
pub fn immutable_path(path: &str) -> bool {
    path.contains("/by-hash/")
        || path
            .rsplit_once("/repodata/")
            .is_some_and(|(_, name)| name.len() > 65 && name.as_bytes()[64] == b'-')
}

/// What readers see of one suite.
#[derive(Debug, Clone)]
pub struct SuiteView {
    pub generation: u64,
    pub current: Arc<Publication>,
    pool: Arc<crate::publish::publication::PoolIndex>,
    /// Superseded publications, newest last, with the pool chunks they named: their
    /// immutable files stay fetchable.
    retained: Vec<(
        Arc<Publication>,
        Vec<crate::publish::publication::PoolChunk>,
    )>,
    /// The retained publications' pool chunks that the current one does not name, each
    /// once, newest first: what a lookup missing the current pool searches.
    retained_chunks: Vec<crate::publish::publication::PoolChunk>,
}

impl SuiteView {
    fn new(
        generation: u64,
        current: Arc<Publication>,
        pool: Arc<crate::publish::publication::PoolIndex>,
        previous: Option<&SuiteView>,
    ) -> SuiteView {
        let mut retained = previous
            .map(|p| {
                let mut order = p.retained.clone();
                order.push((Arc::clone(&p.current), p.pool.sources().to_vec()));
                order
            })
            .unwrap_or_default();
        if retained.len() > KEEP_SUPERSEDED {
            retained.drain(..retained.len() - KEEP_SUPERSEDED);
        }
        let mut seen: std::collections::HashSet<*const _> =
            pool.sources().iter().map(Arc::as_ptr).collect();
        let retained_chunks = retained
            .iter()
            .rev()
            .flat_map(|(_, chunks)| chunks.iter())
            .filter(|chunk| seen.insert(Arc::as_ptr(chunk)))
            .cloned()
            .collect();
        SuiteView {
            generation,
            current,
            pool,
            retained,
            retained_chunks,
        }
    }

    /// Every pool file this publication lists.
    pub fn pool(&self) -> &crate::publish::publication::PoolIndex {
        &self.pool
    }

    /// Resolve a path relative to the repository root. Older publications are searched
    /// only for names that never change meaning (pool files, by-hash, hashed repodata).
    pub fn lookup(&self, path: &str) -> Option<FileEntry> {
        if let Some(found) = self.current.files.get(path).or_else(|| self.pool.get(path)) {
            return Some(*found);
        }
        if let Some(found) = self.retained_chunks.iter().find_map(|c| c.get(path)) {
            return Some(*found);
        }
        if !immutable_path(path) {
            return None;
        }
        self.retained
            .iter()
            .rev()
            .find_map(|(old, _)| old.files.get(path))
            .copied()
    }

    /// The file at `wanted` in the publication (current or retained) in which the file
    /// at `known` had the sha256 `digest`: the other half of a signed pair a client
    /// fetched across a publish (see `serve::http::pinning`).
    pub fn counterpart(
        &self,
        known: &str,
        digest: &crate::util::digest::Digest,
        wanted: &str,
    ) -> Option<FileEntry> {
        std::iter::once(&self.current)
            .chain(self.retained.iter().rev().map(|(old, _)| old))
            .find(|publication| {
                publication
                    .files
                    .get(known)
                    .is_some_and(|f| f.sha256 == *digest)
            })
            .and_then(|publication| publication.files.get(wanted))
            .copied()
    }

    /// Immutable paths of superseded publications (for mirror pruning).
    pub fn retained_paths(&self) -> impl Iterator<Item = (&String, &FileEntry)> {
        self.retained.iter().flat_map(|(old, chunks)| {
            chunks
                .iter()
                .flat_map(|chunk| chunk.iter())
                .chain(old.files.iter().filter(|(p, _)| immutable_path(p)))
        })
    }
}

/// Published state of every suite, shared with the HTTP handlers.
#[derive(Default)]
pub struct Views {
    /// Parsed pool chunks, shared by consecutive publications.
    loader: crate::publish::publication::PoolLoader,
    suites: RwLock<HashMap<TreeKey, Arc<SuiteView>>>,
    /// Repository name -> private. A repository missing here is treated as private (fail closed).
    private: RwLock<HashMap<String, bool>>,
}

impl Views {
    pub fn get(&self, repo: &str, suite: &str) -> Option<Arc<SuiteView>> {
        let suites = self.suites.read().ok()?;
        suites.get(&(repo.to_string(), suite.to_string())).cloned()
    }

    pub fn suites_of(&self, repo: &str) -> Vec<Arc<SuiteView>> {
        let Ok(suites) = self.suites.read() else {
            return Vec::new();
        };
        let mut found: Vec<_> = suites
            .iter()
            .filter(|((r, _), _)| r == repo)
            .map(|(_, v)| Arc::clone(v))
            .collect();
        found.sort_by(|a, b| a.current.suite.cmp(&b.current.suite));
        found
    }

    pub fn set_private(&self, repo: &str, private: bool) {
        if let Ok(mut map) = self.private.write() {
            map.insert(repo.to_string(), private);
        }
    }

    /// True only for repositories known to be public: private and unknown ones need a read cap.
    pub fn is_public(&self, repo: &str) -> bool {
        self.private
            .read()
            .map(|m| m.get(repo) == Some(&false))
            .unwrap_or(false)
    }

    pub fn repos(&self) -> BTreeSet<String> {
        self.suites
            .read()
            .map(|s| s.keys().map(|(r, _)| r.clone()).collect())
            .unwrap_or_default()
    }

    /// Load a publication's pool index and make it what readers see.
    pub async fn install(
        &self,
        store: &Store,
        key: TreeKey,
        generation: u64,
        publication: Publication,
    ) -> Result<(), crate::store::StoreError> {
        let previous = self.get(&key.0, &key.1);
        let pool = Arc::new(
            self.loader
                .index(store, &publication, previous.as_ref().map(|v| &*v.pool))
                .await?,
        );
        self.install_indexed(key, generation, publication, pool);
        Ok(())
    }

    /// Serves generation `generation` of the publication ref `reference`, read from the
    /// store. False if that generation is gone (pruned).
    pub async fn install_generation(
        &self,
        store: &Store,
        key: TreeKey,
        reference: &crate::store::RefName,
        generation: u64,
    ) -> Result<bool, crate::store::StoreError> {
        let Some(entry) = store.ref_entry(reference, generation).await? else {
            return Ok(false);
        };
        let publication: Publication = store.get_json(&entry.target).await?;
        self.install(store, key, generation, publication).await?;
        Ok(true)
    }

    fn install_indexed(
        &self,
        key: TreeKey,
        generation: u64,
        publication: Publication,
        pool: Arc<crate::publish::publication::PoolIndex>,
    ) {
        if let Ok(mut suites) = self.suites.write() {
            let previous = suites.get(&key).cloned();
            if previous
                .as_ref()
                .is_some_and(|p| p.generation >= generation)
            {
                return;
            }
            let view = SuiteView::new(generation, Arc::new(publication), pool, previous.as_deref());
            suites.insert(key, Arc::new(view));
        }
    }
}
