//! Cells: the unit an upload cap names (`dists/<suite>/<component>/binary-<arch>`).
//! Adding a package rewrites one chunk and the cell manifest, then advances the
//! cell's ref by compare-and-swap; concurrent uploaders retry on conflict, so
//! none of their packages is lost.

use crate::digest::Digest;
use crate::model::{AptCell, AptChunk, AptPackage, ChunkRef, ManifestKind, bucket_of};
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

pub async fn load_cell(store: &Store, name: &RefName) -> Result<(Option<RefEntry>, AptCell)> {
    match store.ref_head(name).await? {
        Some(head) => {
            let cell: AptCell = store.get_json(&head.target).await?;
            Ok((Some(head), cell))
        }
        None => Ok((
            None,
            AptCell {
                kind: ManifestKind::AptCell,
                chunks: Vec::new(),
            },
        )),
    }
}

async fn load_chunk(store: &Store, cell: &AptCell, bucket: u8) -> Result<AptChunk> {
    match cell.chunks.iter().find(|c| c.bucket == bucket) {
        Some(chunk) => store.get_json(&chunk.digest).await,
        None => Ok(AptChunk {
            kind: ManifestKind::AptChunk,
            packages: Vec::new(),
        }),
    }
}

/// Look up one package by identity.
pub async fn find(
    store: &Store,
    name: &RefName,
    package: &str,
    version: &str,
    arch: &str,
) -> Result<Option<AptPackage>> {
    let (_, cell) = load_cell(store, name).await?;
    let chunk = load_chunk(store, &cell, bucket_of(package)).await?;
    Ok(chunk
        .packages
        .into_iter()
        .find(|p| p.name == package && p.version == version && p.architecture == arch))
}

/// Every package of a cell, in chunk order.
pub async fn all_packages(store: &Store, cell: &AptCell) -> Result<Vec<AptPackage>> {
    let mut out = Vec::new();
    for chunk in &cell.chunks {
        let loaded: AptChunk = store.get_json(&chunk.digest).await?;
        out.extend(loaded.packages);
    }
    Ok(out)
}

/// Add a package to a cell, retrying on compare-and-swap conflicts.
pub async fn add_package(
    store: &Store,
    name: &RefName,
    package: AptPackage,
    actor: &str,
) -> Result<AddOutcome> {
    const MAX_ATTEMPTS: usize = 64;
    for attempt in 0..MAX_ATTEMPTS {
        let (head, mut cell) = load_cell(store, name).await?;
        let bucket = bucket_of(&package.name);
        let mut chunk = load_chunk(store, &cell, bucket).await?;
        if let Some(existing) = chunk.packages.iter().find(|p| {
            p.name == package.name
                && p.version == package.version
                && p.architecture == package.architecture
        }) {
            let generation = head.map_or(0, |h| h.generation);
            return Ok(if existing.sha256 == package.sha256 {
                AddOutcome::AlreadyPresent { generation }
            } else {
                AddOutcome::Conflict {
                    existing: existing.sha256,
                }
            });
        }
        let note = format!(
            "add {} {} {}",
            package.name, package.version, package.architecture
        );
        chunk.packages.push(package.clone());
        chunk.packages.sort_by(|a, b| {
            (&a.name, &a.version, &a.architecture).cmp(&(&b.name, &b.version, &b.architecture))
        });
        let stored = store.put_json(&chunk).await?;
        let chunk_ref = ChunkRef {
            bucket,
            digest: stored.digest,
            packages: chunk.packages.len() as u32,
        };
        match cell.chunks.binary_search_by_key(&bucket, |c| c.bucket) {
            Ok(i) => cell.chunks[i] = chunk_ref,
            Err(i) => cell.chunks.insert(i, chunk_ref),
        }
        let manifest = store.put_json(&cell).await?;
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
                return Ok(AddOutcome::Added {
                    generation: entry.generation,
                });
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
