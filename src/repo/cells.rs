//! Cells: the unit an upload cap names (`dists/<suite>/<component>/binary-<arch>`).
//! Adding a package rewrites one chunk and the cell manifest, then advances the
//! cell's ref by compare-and-swap; concurrent uploaders retry on conflict, so
//! none of their packages is lost.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::repo::model::{Cell, Chunk, ChunkRef, Record, bucket_of};
use crate::store::{RefEntry, RefName, RefUpdate, Result, Store, StoreError};
use crate::util::digest::Digest;

#[derive(Debug, Clone, PartialEq)]
pub enum AddOutcome {
    /// The package is now in the cell at this generation.
    Added { generation: u64 },
    /// The same bytes were already there: a successful no-op.
    AlreadyPresent { generation: u64 },
    /// Same name, version and architecture, different bytes: refused.
    Conflict { existing: Digest },
}

pub async fn load_cell<P: Record>(
    store: &Store,
    name: &RefName,
) -> Result<(Option<RefEntry>, Cell)> {
    let head = store.ref_head(name).await?;
    let cell = cell_at::<P>(store, head.as_ref()).await?;
    Ok((head, cell))
}

/// The cell manifest `head` names, or an empty cell of kind `P` when there is no head.
pub async fn cell_at<P: Record>(store: &Store, head: Option<&RefEntry>) -> Result<Cell> {
    match head {
        Some(head) => store.get_json(&head.target).await,
        None => Ok(Cell {
            kind: P::CELL_KIND,
            chunks: Vec::new(),
        }),
    }
}

/// Chunks parsed lately, by digest, per store (in [`Store::cache`]). A chunk never
/// changes, and one upload's chunk is read when the upload checks for the package,
/// again when it adds it, and again by the publish after: at 100,000 packages that is
/// 400 records parsed each time. Bounded by the chunks' stored (JSON) size, and
/// emptied when full.
struct ParsedChunks {
    parsed: Mutex<Parsed>,
    /// The bound, in stored bytes ([`hold_parsed_chunks`]).
    budget: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct Parsed {
    chunks: HashMap<Digest, Arc<dyn Any + Send + Sync>>,
    bytes: usize,
}

impl Default for ParsedChunks {
    fn default() -> Self {
        ParsedChunks {
            parsed: Mutex::default(),
            budget: std::sync::atomic::AtomicUsize::new(PARSED_BYTES),
        }
    }
}

/// A server's bound: what 64 chunks of a 100,000-package cell take (about 250 KiB of
/// JSON each), and every chunk of a 20,000-package one.
const PARSED_BYTES: usize = 16 << 20;

/// Lets `store` hold up to `bytes` of parsed chunks: an import writes every chunk of a
/// cold cell and its publish reads each one back right after, instead of parsing them
/// again.
pub fn hold_parsed_chunks(store: &Store, bytes: usize) {
    let cache = store.cache::<ParsedChunks>();
    cache
        .budget
        .store(bytes, std::sync::atomic::Ordering::Relaxed);
}

fn remember_chunk<P: Record>(
    store: &Store,
    digest: Digest,
    chunk: Arc<Chunk<P>>,
    stored_bytes: usize,
) {
    let cache = store.cache::<ParsedChunks>();
    let budget = cache.budget.load(std::sync::atomic::Ordering::Relaxed);
    if let Ok(mut parsed) = cache.parsed.lock() {
        if parsed.bytes.saturating_add(stored_bytes) > budget {
            parsed.chunks.clear();
            parsed.bytes = 0;
        }
        if parsed.chunks.insert(digest, chunk).is_none() {
            parsed.bytes = parsed.bytes.saturating_add(stored_bytes);
        }
    }
}

/// A chunk of packages, parsed once and shared.
pub async fn chunk<P: Record>(store: &Store, digest: &Digest) -> Result<Arc<Chunk<P>>> {
    let held = store
        .cache::<ParsedChunks>()
        .parsed
        .lock()
        .ok()
        .and_then(|p| p.chunks.get(digest).cloned());
    if let Some(found) = held.and_then(|any| any.downcast::<Chunk<P>>().ok()) {
        return Ok(found);
    }
    let bytes = store.get_blob(digest).await?;
    let parsed: Arc<Chunk<P>> = Arc::new(
        serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("manifest {digest}"), e.to_string()))?,
    );
    remember_chunk(store, *digest, Arc::clone(&parsed), bytes.len());
    Ok(parsed)
}

async fn load_chunk<P: Record>(store: &Store, cell: &Cell, bucket: u8) -> Result<Arc<Chunk<P>>> {
    match cell.chunks.iter().find(|c| c.bucket == bucket) {
        Some(found) => chunk(store, &found.digest).await,
        None => Ok(Arc::new(Chunk {
            kind: P::CHUNK_KIND,
            packages: Vec::new(),
        })),
    }
}

/// Whether the cell holds any version of a package of this name.
pub async fn has_name<P: Record>(store: &Store, name: &RefName, package: &str) -> Result<bool> {
    let (_, cell) = load_cell::<P>(store, name).await?;
    let chunk = load_chunk::<P>(store, &cell, bucket_of(package)).await?;
    Ok(chunk.packages.iter().any(|p| p.name() == package))
}

/// Look up one package by identity (name, full version, architecture).
pub async fn find<P: Record>(
    store: &Store,
    name: &RefName,
    package: &str,
    version: &str,
    arch: &str,
) -> Result<Option<P>> {
    let (_, cell) = load_cell::<P>(store, name).await?;
    let chunk = load_chunk::<P>(store, &cell, bucket_of(package)).await?;
    Ok(chunk
        .packages
        .iter()
        .find(|p| p.identity() == (package, version.into(), arch))
        .cloned())
}

/// Every package of a cell, in chunk order.
pub async fn all_packages<P: Record>(store: &Store, cell: &Cell) -> Result<Vec<P>> {
    let mut out = Vec::new();
    for chunk in &cell.chunks {
        let loaded: Chunk<P> = store.get_json(&chunk.digest).await?;
        out.extend(loaded.packages);
    }
    Ok(out)
}

/// Add a package to a cell, retrying on compare-and-swap conflicts.
pub async fn add_package<P: Record>(
    store: &Store,
    name: &RefName,
    package: P,
    actor: &str,
) -> Result<AddOutcome> {
    let mut outcomes = add_packages(store, name, vec![package], actor).await?;
    outcomes.pop().ok_or_else(|| {
        StoreError::Corrupt(name.to_string(), "no outcome for the one package".into())
    })
}

/// One bucket's share of a cell write: the packages at `indices` merged into the
/// bucket's chunk (`existing`), which is stored again if any was added. Returns the new
/// chunk's reference, if it changed, and each package's outcome.
async fn merge_into_chunk<P: Record>(
    store: Store,
    existing: Option<Digest>,
    bucket: u8,
    packages: Arc<Vec<P>>,
    indices: Vec<usize>,
    generation: u64,
) -> Result<(Option<ChunkRef>, Vec<(usize, AddOutcome)>)> {
    let mut chunk = match existing {
        Some(digest) => Chunk::clone(&*chunk::<P>(&store, &digest).await?),
        None => Chunk {
            kind: P::CHUNK_KIND,
            packages: Vec::new(),
        },
    };
    let mut outcomes = Vec::with_capacity(indices.len());
    for i in indices {
        let package = &packages[i];
        // Names first: an rpm's identity formats its EVR, an allocation per comparison.
        // The same identity, or another one served at the same path (an epoch apart).
        let same = chunk.packages.iter().find(|p| {
            p.name() == package.name()
                && (p.identity() == package.identity()
                    || (p.upload_digest() != package.upload_digest()
                        && p.served_path() == package.served_path()))
        });
        outcomes.push((
            i,
            match same {
                Some(existing) if existing.upload_digest() == package.upload_digest() => {
                    AddOutcome::AlreadyPresent { generation }
                }
                Some(existing) => AddOutcome::Conflict {
                    existing: existing.upload_digest(),
                },
                None => {
                    chunk.packages.push(package.clone());
                    // The generation is filled in once the ref advance has succeeded.
                    AddOutcome::Added { generation: 0 }
                }
            },
        ));
    }
    if !outcomes
        .iter()
        .any(|(_, o)| matches!(o, AddOutcome::Added { .. }))
    {
        return Ok((None, outcomes));
    }
    // The same order as by identity, which starts with the name.
    chunk.packages.sort_by(|a, b| {
        a.name()
            .cmp(b.name())
            .then_with(|| a.identity().cmp(&b.identity()))
    });
    let stored = store.put_json(&chunk).await?;
    let chunk_ref = ChunkRef {
        bucket,
        digest: stored.digest,
        packages: chunk.packages.len() as u32,
    };
    // The publish after this upload reads it next.
    remember_chunk(&store, stored.digest, Arc::new(chunk), stored.size as usize);
    Ok((Some(chunk_ref), outcomes))
}

/// Add many packages to one cell with one ref advance: each affected chunk is
/// rewritten once. Returns one outcome per package, in order.
pub async fn add_packages<P: Record>(
    store: &Store,
    name: &RefName,
    packages: Vec<P>,
    actor: &str,
) -> Result<Vec<AddOutcome>> {
    let packages = Arc::new(packages);
    let packages = &packages;
    let (outcomes, entry) = store
        .update_ref(name, actor, |head| async move {
            let mut cell = cell_at::<P>(store, head.as_ref()).await?;
            let generation = head.as_ref().map_or(0, |h| h.generation);
            let mut by_bucket: std::collections::BTreeMap<u8, Vec<usize>> =
                std::collections::BTreeMap::new();
            for (i, p) in packages.iter().enumerate() {
                by_bucket.entry(bucket_of(p.name())).or_default().push(i);
            }
            // Each bucket's chunk is merged, serialized and stored in a task of its own: a
            // cold import writes hundreds of chunks, which one thread did one by one.
            let merges: Vec<_> = by_bucket
                .into_iter()
                .map(|(bucket, indices)| {
                    let existing = cell
                        .chunks
                        .iter()
                        .find(|c| c.bucket == bucket)
                        .map(|c| c.digest);
                    tokio::spawn(merge_into_chunk(
                        store.clone(),
                        existing,
                        bucket,
                        Arc::clone(packages),
                        indices,
                        generation,
                    ))
                })
                .collect();
            let mut outcomes: Vec<Option<AddOutcome>> = vec![None; packages.len()];
            let mut changed = false;
            for merge in merges {
                let (chunk_ref, merged) = merge
                    .await
                    .map_err(|e| StoreError::Task("a cell write", e.to_string()))??;
                for (i, outcome) in merged {
                    outcomes[i] = Some(outcome);
                }
                if let Some(chunk_ref) = chunk_ref {
                    match cell
                        .chunks
                        .binary_search_by_key(&chunk_ref.bucket, |c| c.bucket)
                    {
                        Ok(i) => cell.chunks[i] = chunk_ref,
                        Err(i) => cell.chunks.insert(i, chunk_ref),
                    }
                    changed = true;
                }
            }
            let outcomes: Vec<AddOutcome> = outcomes
                .into_iter()
                .map(|o| o.unwrap_or(AddOutcome::AlreadyPresent { generation: 0 }))
                .collect();
            if !changed {
                return Ok(RefUpdate::Unchanged(outcomes));
            }
            let manifest = store.put_json(&cell).await?;
            let note = match packages.as_slice() {
                [one] => {
                    let (id_name, id_version, id_arch) = one.identity();
                    format!("add {id_name} {id_version} {id_arch}")
                }
                _ => format!(
                    "import {} packages",
                    outcomes
                        .iter()
                        .filter(|o| matches!(o, AddOutcome::Added { .. }))
                        .count()
                ),
            };
            Ok::<_, StoreError>(RefUpdate::Advance {
                target: manifest.digest,
                note,
                value: outcomes,
            })
        })
        .await?;
    // Packages added in this write got its generation.
    let Some(entry) = entry else {
        return Ok(outcomes);
    };
    Ok(outcomes
        .into_iter()
        .map(|o| match o {
            AddOutcome::Added { .. } => AddOutcome::Added {
                generation: entry.generation,
            },
            other => other,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::model::AptPackage;
    use crate::testing::apt_package;

    fn cell() -> RefName {
        crate::repo::model::cell_ref("farm", "stable", "main", "amd64").unwrap()
    }

    #[tokio::test]
    async fn adding_again_is_a_no_op_and_other_bytes_under_one_identity_are_refused() {
        let store = Store::memory();
        let (a, b) = (apt_package("a", "1", b"a1"), apt_package("b", "1", b"b1"));
        let added = add_packages(&store, &cell(), vec![a.clone(), b], "t").await;
        assert_eq!(
            added.unwrap(),
            [
                AddOutcome::Added { generation: 0 },
                AddOutcome::Added { generation: 0 }
            ]
        );
        // The same bytes again: nothing written.
        let again = add_package(&store, &cell(), a.clone(), "t").await.unwrap();
        assert_eq!(again, AddOutcome::AlreadyPresent { generation: 0 });
        assert_eq!(
            store.ref_head(&cell()).await.unwrap().unwrap().generation,
            0
        );
        // Other bytes under a's name, version and architecture.
        let other = apt_package("a", "1", b"other bytes");
        let refused = add_package(&store, &cell(), other, "t").await.unwrap();
        assert_eq!(refused, AddOutcome::Conflict { existing: a.sha256 });
        let (_, current) = load_cell::<AptPackage>(&store, &cell()).await.unwrap();
        let listed = all_packages::<AptPackage>(&store, &current).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.contains(&a));
    }

    #[tokio::test]
    async fn writers_side_by_side_lose_no_package() {
        let store = Store::memory();
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..4 {
                        let name = format!("w{w}-{i}");
                        let package = apt_package(&name, "1", name.as_bytes());
                        add_package(&store, &cell(), package, "t").await.unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        let (head, current) = load_cell::<AptPackage>(&store, &cell()).await.unwrap();
        let listed = all_packages::<AptPackage>(&store, &current).await.unwrap();
        assert_eq!(listed.len(), 32, "a package was lost");
        assert_eq!(head.unwrap().generation, 31, "one generation per package");
    }
}
