//! Marking: every blob reachable from the refs, through cells, chunks, publications,
//! composites and the fragment cache entries that name blobs.

use std::collections::{BTreeMap, HashSet};

use futures::TryStreamExt;
use object_store::path::Path;

use crate::repo::model::{Cell, Chunk, Publication, RpmPackage};
use crate::store::{ListedComposite, RefEntry, Store, StoreError};
use crate::util::digest::Digest;

use super::{Problems, RefKind, Result, ref_kind};

/// Mark every blob reachable from the given ref entries, and the parts of the marked
/// `composites` (the store's listing, taken once by the caller). Manifests are read
/// (and so hash-checked) once each.
pub async fn mark(
    store: &Store,
    entries: &[(String, RefEntry)],
    composites: &[ListedComposite],
    problems: &mut Problems,
) -> Result<HashSet<Digest>> {
    let mut marking = Marking::default();
    marking.entries(store, entries, problems).await;
    marking.composite_parts(store, composites, problems).await;
    Ok(marking.marked)
}

/// What a mark has reached so far, so that gc can mark again, after writers paused,
/// only what changed since its first pass.
#[derive(Default)]
pub struct Marking {
    pub marked: HashSet<Digest>,
    /// Manifests (cells, chunks, publications) already walked.
    seen_manifests: HashSet<Digest>,
    /// Ref generations already walked.
    seen_entries: HashSet<(String, u64)>,
    /// Composites whose parts are marked.
    composites_walked: HashSet<Digest>,
    /// Fragment cache entries read: the chunk (or package) each belongs to and the
    /// blobs it names. An entry's content never changes under its name.
    cache_entries: BTreeMap<String, (Digest, Vec<Digest>)>,
}

impl Marking {
    /// Marks everything the ref entries reach that is not marked yet.
    pub async fn entries(
        &mut self,
        store: &Store,
        entries: &[(String, RefEntry)],
        problems: &mut Problems,
    ) {
        let marked = &mut self.marked;
        let seen_manifests = &mut self.seen_manifests;
        for (name, entry) in entries {
            if !self.seen_entries.insert((name.clone(), entry.generation)) {
                continue;
            }
            let kind = ref_kind(name);
            if kind == RefKind::Marker {
                continue;
            }
            marked.insert(entry.target);
            if !seen_manifests.insert(entry.target) {
                continue;
            }
            let context = format!("{name} generation {}", entry.generation);
            let walked = match kind {
                RefKind::AptCell => {
                    mark_cell::<crate::repo::model::AptPackage>(
                        store,
                        &entry.target,
                        marked,
                        seen_manifests,
                        |p, m| {
                            m.insert(p.sha256);
                            m.insert(p.files);
                        },
                    )
                    .await
                }
                RefKind::AptSourceCell => {
                    mark_cell::<crate::repo::model::AptSource>(
                        store,
                        &entry.target,
                        marked,
                        seen_manifests,
                        |p, m| {
                            m.insert(p.dsc.sha256);
                            m.extend(p.files.iter().map(|f| f.sha256));
                        },
                    )
                    .await
                }
                RefKind::RpmCell => {
                    mark_cell::<RpmPackage>(store, &entry.target, marked, seen_manifests, |p, m| {
                        m.insert(p.sha256);
                        m.extend(p.entry_blobs());
                    })
                    .await
                }
                // A claim keeps its shard's manifests, and a staged source file (which
                // nothing else names until its .dsc arrives) its content; other claims
                // name content that lives as long as a cell or publication does.
                RefKind::Claims => {
                    mark_cell::<crate::repo::claims::Claim>(
                        store,
                        &entry.target,
                        marked,
                        seen_manifests,
                        |claim, m| {
                            if claim.path.starts_with("staged/") {
                                m.insert(claim.sha256);
                            }
                        },
                    )
                    .await
                }
                RefKind::Publication => {
                    mark_publication(store, &entry.target, marked, seen_manifests).await
                }
                _ => store.get_blob(&entry.target).await.map(|_| ()),
            };
            if let Err(e) = walked {
                problems.push(format!("{context}: {e}"));
            }
        }
    }

    /// A marked composite (a joined index file) keeps the blobs it is made of.
    pub async fn composite_parts(
        &mut self,
        store: &Store,
        composites: &[ListedComposite],
        problems: &mut Problems,
    ) {
        for (digest, ..) in composites {
            if !self.marked.contains(digest) || !self.composites_walked.insert(*digest) {
                continue;
            }
            match store.composite(digest).await {
                Ok(Some(record)) => self.marked.extend(record.parts.iter().map(|p| p.sha256)),
                Ok(None) => {}
                Err(e) => problems.push(format!("composite {digest}: {e}")),
            }
        }
    }

    /// Index fragments cached per cell chunk: those of marked chunks keep the blobs
    /// they name (so the next publish stays incremental). Returns the entries of
    /// chunks nothing marks, for the caller to delete.
    pub(super) async fn caches(&mut self, store: &Store) -> Result<Vec<Path>> {
        let listed = list_cache_entries(store).await?;
        let mut stale = Vec::new();
        for meta in listed {
            let name = meta.location.to_string();
            let Some(owner) = meta
                .location
                .filename()
                .and_then(|f| f.split('-').next())
                .and_then(|d| d.parse::<Digest>().ok())
            else {
                continue;
            };
            if !self.marked.contains(&owner) {
                stale.push(meta.location.clone());
                continue;
            }
            if !self.cache_entries.contains_key(&name) {
                let Ok(Some(bytes)) = store.get_named(&name, 64 * 1024 * 1024).await else {
                    continue;
                };
                self.cache_entries
                    .insert(name.clone(), (owner, cached_blobs(&name, &bytes)));
            }
            if let Some((_, blobs)) = self.cache_entries.get(&name) {
                self.marked.extend(blobs.iter().copied());
            }
        }
        Ok(stale)
    }
}

/// Every fragment cache entry (APT, RPM, legacy hashes, publish layouts). Each one's
/// name starts with the digest it belongs to: a chunk's, for legacy hashes a package's,
/// for a publish layout its publication's.
async fn list_cache_entries(store: &Store) -> Result<Vec<object_store::ObjectMeta>> {
    let mut listed: Vec<_> = Vec::new();
    for prefix in [
        "cache/apt-fragments",
        "cache/rpm-fragments",
        "cache/legacy-hashes",
        crate::publish::layout::LAYOUT_RECORDS,
    ] {
        let found: Vec<_> = store
            .object_store()
            .list(Some(&Path::from(prefix)))
            .try_collect()
            .await?;
        listed.extend(found);
    }
    Ok(listed)
}

/// Every fragment cache entry with the blobs it names (for repair).
pub async fn cache_entries(store: &Store) -> Result<Vec<(Path, Vec<Digest>)>> {
    let mut out = Vec::new();
    for meta in list_cache_entries(store).await? {
        let name = meta.location.to_string();
        if let Ok(Some(bytes)) = store.get_named(&name, 64 * 1024 * 1024).await {
            let blobs = cached_blobs(&name, &bytes);
            out.push((meta.location, blobs));
        }
    }
    Ok(out)
}

/// The blobs a fragment cache entry names.
fn cached_blobs(name: &str, bytes: &[u8]) -> Vec<Digest> {
    if name.starts_with(crate::publish::layout::LAYOUT_RECORDS) {
        serde_json::from_slice::<crate::publish::layout::PublishLayout>(bytes)
            .map(|record| record.blobs())
            .unwrap_or_default()
    } else if name.starts_with("cache/apt-fragments/")
        && let Ok(f) = serde_json::from_slice::<crate::publish::apt::fragments::Fragment>(bytes)
    {
        vec![f.text, f.gz, f.xz, f.contents, f.contents_gz]
    } else if let Ok(f) = serde_json::from_slice::<crate::publish::rpm::fragments::Fragment>(bytes)
    {
        f.parts.iter().flat_map(|p| [p.text, p.gz]).collect()
    } else {
        Vec::new()
    }
}

async fn mark_publication(
    store: &Store,
    target: &Digest,
    marked: &mut HashSet<Digest>,
    seen: &mut HashSet<Digest>,
) -> std::result::Result<(), StoreError> {
    let publication = store.get_json::<Publication>(target).await?;
    marked.extend(
        publication
            .files
            .values()
            .chain(publication.pool.values())
            .map(|f| f.sha256),
    );
    let mut walked = Ok(());
    for chunk in &publication.pool_chunks {
        marked.insert(*chunk);
        if !seen.insert(*chunk) {
            continue;
        }
        match store
            .get_json::<BTreeMap<String, crate::repo::model::FileEntry>>(chunk)
            .await
        {
            Ok(pool) => marked.extend(pool.values().map(|f| f.sha256)),
            Err(e) => walked = Err(e),
        }
    }
    walked
}

async fn mark_cell<P: crate::repo::model::Record>(
    store: &Store,
    cell: &Digest,
    marked: &mut HashSet<Digest>,
    seen: &mut HashSet<Digest>,
    package_blobs: impl Fn(&P, &mut HashSet<Digest>),
) -> std::result::Result<(), StoreError> {
    let cell: Cell = store.get_json(cell).await?;
    for chunk in cell.chunks {
        marked.insert(chunk.digest);
        if !seen.insert(chunk.digest) {
            continue;
        }
        let chunk: Chunk<P> = store.get_json(&chunk.digest).await?;
        for package in &chunk.packages {
            package_blobs(package, marked);
        }
    }
    Ok(())
}

/// What is under `blobs/`: each blob with its size and age in seconds, and the temp
/// files that a local write interrupted by a crash left beside them (`<hex>.tmp-<n>`).
#[derive(Default)]
pub(super) struct BlobListing {
    pub(super) blobs: Vec<(Digest, u64, i64)>,
    pub(super) leftovers: Vec<(Path, u64, i64)>,
}

pub(super) async fn list_blobs(store: &Store) -> Result<BlobListing> {
    let listed: Vec<_> = store
        .object_store()
        .list(Some(&Path::from("blobs/sha256")))
        .try_collect()
        .await?;
    let now = crate::util::time::now_unix();
    let mut listing = BlobListing::default();
    for meta in listed {
        let age = now - meta.last_modified.timestamp();
        let Some(name) = meta.location.filename() else {
            continue;
        };
        if let Ok(digest) = name.parse::<Digest>() {
            listing.blobs.push((digest, meta.size, age));
        } else if name.contains(".tmp-") {
            listing
                .leftovers
                .push((meta.location.clone(), meta.size, age));
        }
    }
    Ok(listing)
}
