//! Cells: the unit an upload cap names (`dists/<suite>/<component>/binary-<arch>`).
//! Adding a package rewrites one chunk and the cell manifest, then advances the
//! cell's ref by compare-and-swap; concurrent uploaders retry on conflict, so
//! none of their packages is lost.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use crate::digest::Digest;
use crate::model::{Cell, Chunk, ChunkRef, Record, bucket_of};
use crate::store::{RefEntry, RefName, Result, Store, StoreError};

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
    match store.ref_head(name).await? {
        Some(head) => {
            let cell: Cell = store.get_json(&head.target).await?;
            Ok((Some(head), cell))
        }
        None => Ok((
            None,
            Cell {
                kind: P::CELL_KIND,
                chunks: Vec::new(),
            },
        )),
    }
}

/// Chunks parsed lately, by digest. A chunk never changes, and one upload's chunk is
/// read when the upload checks for the package, again when it adds it, and again by
/// the publish after: at 100,000 packages that is 400 records parsed each time.
/// Bounded by count: a parsed chunk of that suite is a few hundred KiB.
static PARSED: LazyLock<Mutex<HashMap<Digest, Arc<dyn Any + Send + Sync>>>> =
    LazyLock::new(Default::default);

const PARSED_CHUNKS: usize = 64;

fn remember_chunk<P: Record>(digest: Digest, chunk: Arc<Chunk<P>>) {
    if let Ok(mut parsed) = PARSED.lock() {
        if parsed.len() >= PARSED_CHUNKS {
            parsed.clear();
        }
        parsed.insert(digest, chunk);
    }
}

/// A chunk of packages, parsed once and shared.
pub async fn chunk<P: Record>(store: &Store, digest: &Digest) -> Result<Arc<Chunk<P>>> {
    let held = PARSED.lock().ok().and_then(|p| p.get(digest).cloned());
    if let Some(found) = held.and_then(|any| any.downcast::<Chunk<P>>().ok()) {
        return Ok(found);
    }
    let parsed: Arc<Chunk<P>> = Arc::new(store.get_json(digest).await?);
    remember_chunk(*digest, Arc::clone(&parsed));
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
        .find(|p| p.identity() == (package, version.to_string(), arch))
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

/// Add many packages to one cell with one ref advance: each affected chunk is
/// rewritten once. Returns one outcome per package, in order.
pub async fn add_packages<P: Record>(
    store: &Store,
    name: &RefName,
    packages: Vec<P>,
    actor: &str,
) -> Result<Vec<AddOutcome>> {
    const MAX_ATTEMPTS: usize = 64;
    for attempt in 0..MAX_ATTEMPTS {
        let (head, mut cell) = load_cell::<P>(store, name).await?;
        let mut by_bucket: std::collections::BTreeMap<u8, Vec<usize>> =
            std::collections::BTreeMap::new();
        for (i, p) in packages.iter().enumerate() {
            by_bucket.entry(bucket_of(p.name())).or_default().push(i);
        }
        let mut outcomes: Vec<Option<AddOutcome>> = vec![None; packages.len()];
        let mut changed = false;
        for (bucket, indices) in by_bucket {
            let mut chunk = Chunk::clone(&*load_chunk::<P>(store, &cell, bucket).await?);
            let mut touched = false;
            for i in indices {
                let package = &packages[i];
                let same = chunk
                    .packages
                    .iter()
                    .find(|p| p.identity() == package.identity());
                outcomes[i] = Some(match same {
                    Some(existing) if existing.upload_digest() == package.upload_digest() => {
                        AddOutcome::AlreadyPresent {
                            generation: head.as_ref().map_or(0, |h| h.generation),
                        }
                    }
                    Some(existing) => AddOutcome::Conflict {
                        existing: existing.upload_digest(),
                    },
                    None => {
                        chunk.packages.push(package.clone());
                        touched = true;
                        // The generation is filled in once the ref advance has succeeded.
                        AddOutcome::Added { generation: 0 }
                    }
                });
            }
            if touched {
                chunk
                    .packages
                    .sort_by(|a, b| a.identity().cmp(&b.identity()));
                let stored = store.put_json(&chunk).await?;
                let chunk_ref = ChunkRef {
                    bucket,
                    digest: stored.digest,
                    packages: chunk.packages.len() as u32,
                };
                // The publish after this upload reads it next.
                remember_chunk(stored.digest, Arc::new(chunk));
                match cell.chunks.binary_search_by_key(&bucket, |c| c.bucket) {
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
            return Ok(outcomes);
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
        match store
            .ref_advance(
                name,
                head.map(|h| h.generation),
                manifest.digest,
                actor,
                &note,
            )
            .await
        {
            Ok(entry) => {
                return Ok(outcomes
                    .into_iter()
                    .map(|o| match o {
                        AddOutcome::Added { .. } => AddOutcome::Added {
                            generation: entry.generation,
                        },
                        other => other,
                    })
                    .collect());
            }
            Err(StoreError::Conflict(_)) => {
                // Someone else advanced the cell; back off a little and re-apply on top of theirs.
                let jitter = (attempt as u64 % 8) * 3
                    + (Digest::of(&attempt.to_le_bytes()).as_bytes()[0] as u64 % 5);
                tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict(format!(
        "{name} (gave up after {MAX_ATTEMPTS} attempts)"
    )))
}
