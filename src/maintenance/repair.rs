//! The way back for a store whose refs name blobs it no longer has (a lost disk
//! sector, a bucket object deleted by hand, or a gc from before the fence): until
//! then gc refuses to sweep and clients meet 404s. `caprepo verify --fix` drops what
//! is missing and says what it did:
//! - a cell's newest generation keeps every package whose blobs are all there; the
//!   others are dropped (re-upload them), in a new generation of the cell;
//! - a publication whose newest generation names a missing file goes back to its newest
//!   whole generation (the next publish of that tree rebuilds from the cells);
//! - an older generation of any ref that names something missing is deleted (history);
//! - a fragment cache entry naming a missing blob is deleted (the next publish renders
//!   the fragment again).
//!
//! Nothing present is deleted, and what a repair drops is what was already unreadable.

use std::collections::{BTreeMap, HashMap, HashSet};

use object_store::path::Path;

use crate::maintenance::{MaintenanceError, Marking, RefKind, all_ref_entries, ref_kind};
use crate::repo::model::{Cell, Chunk, ChunkRef, Record, RpmPackage};
use crate::store::{RefEntry, RefName, Store, StoreError};
use crate::util::digest::Digest;

type Result<T> = std::result::Result<T, MaintenanceError>;

/// What a repair did (or, dry, would do), one line per action.
#[derive(Debug, Default)]
pub struct RepairReport {
    pub actions: Vec<String>,
}

/// Whether blobs exist, each asked once.
#[derive(Default)]
struct Presence(HashMap<Digest, bool>);

impl Presence {
    async fn has(&mut self, store: &Store, digest: &Digest) -> Result<bool> {
        if let Some(known) = self.0.get(digest) {
            return Ok(*known);
        }
        let found = store.has_blob(digest).await?;
        self.0.insert(*digest, found);
        Ok(found)
    }

    async fn missing(&mut self, store: &Store, digests: &HashSet<Digest>) -> Result<Vec<Digest>> {
        let mut missing = Vec::new();
        for digest in digests {
            if !self.has(store, digest).await? {
                missing.push(*digest);
            }
        }
        missing.sort();
        Ok(missing)
    }
}

/// Everything one ref generation reaches, and whether its manifests could be read.
async fn reach(store: &Store, name: &str, entry: &RefEntry) -> (HashSet<Digest>, bool) {
    let mut marking = Marking::default();
    let mut problems = Vec::new();
    marking
        .entries(store, &[(name.to_string(), entry.clone())], &mut problems)
        .await;
    (marking.marked, problems.is_empty())
}

pub async fn repair(store: &Store, dry_run: bool) -> Result<RepairReport> {
    let mut report = RepairReport::default();
    let mut presence = Presence::default();
    let entries = all_ref_entries(store).await?;
    let mut by_ref: BTreeMap<String, Vec<RefEntry>> = BTreeMap::new();
    for (name, entry) in entries {
        by_ref.entry(name).or_default().push(entry);
    }
    for (name, mut generations) in by_ref {
        generations.sort_by_key(|e| e.generation);
        let kind = ref_kind(&name);
        if kind == RefKind::Marker {
            continue;
        }
        let Some(head) = generations.last().cloned() else {
            continue;
        };
        // Older generations are history; those that name something missing go, with
        // everything older, so that what is left of the log stays dense (a reader that
        // remembered an old head probes forward from it).
        let mut broken: Option<u64> = None;
        for entry in &generations[..generations.len() - 1] {
            let (reached, readable) = reach(store, &name, entry).await;
            if !readable || !presence.missing(store, &reached).await?.is_empty() {
                broken = Some(entry.generation);
            }
        }
        let (reached, readable) = reach(store, &name, &head).await;
        let missing = presence.missing(store, &reached).await?;
        let reference = RefName::new(name.clone())?;
        let head_replaced = if readable && missing.is_empty() {
            false
        } else {
            match kind {
                RefKind::AptCell => {
                    repair_cell::<crate::repo::model::AptPackage>(
                        store,
                        &reference,
                        &head,
                        &mut presence,
                        |p| vec![p.sha256, p.files],
                        dry_run,
                        &mut report,
                    )
                    .await?
                }
                RefKind::AptSourceCell => {
                    repair_cell::<crate::repo::model::AptSource>(
                        store,
                        &reference,
                        &head,
                        &mut presence,
                        |p| {
                            std::iter::once(p.dsc.sha256)
                                .chain(p.files.iter().map(|f| f.sha256))
                                .collect()
                        },
                        dry_run,
                        &mut report,
                    )
                    .await?
                }
                RefKind::RpmCell => {
                    repair_cell::<RpmPackage>(
                        store,
                        &reference,
                        &head,
                        &mut presence,
                        |p| {
                            let mut blobs = p.entry_blobs();
                            blobs.push(p.sha256);
                            blobs
                        },
                        dry_run,
                        &mut report,
                    )
                    .await?
                }
                RefKind::Publication if name.starts_with("published/") => {
                    repair_publication(
                        store,
                        &reference,
                        &generations,
                        &mut presence,
                        dry_run,
                        &mut report,
                    )
                    .await?
                }
                _ => {
                    report.actions.push(format!(
                        "{name} generation {}: names {} missing object(s){}; not repaired \
                         (re-create it: a snapshot, a cap list or a repository definition \
                         cannot be rebuilt from others)",
                        head.generation,
                        missing.len(),
                        first(&missing)
                    ));
                    false
                }
            }
        };
        let cutoff = if head_replaced {
            Some(head.generation)
        } else {
            broken
        };
        if let Some(cutoff) = cutoff {
            let doomed: Vec<Path> = generations
                .iter()
                .filter(|e| e.generation <= cutoff)
                .map(|e| reference.generation_path(e.generation))
                .collect();
            if !doomed.is_empty() {
                report.actions.push(format!(
                    "{name}: generations up to {cutoff} deleted from history ({} of them; \
                     history that names missing objects cannot be rolled back to)",
                    doomed.len()
                ));
                if !dry_run {
                    store.delete_paths(doomed).await?;
                }
            }
        }
    }
    repair_caches(store, &mut presence, dry_run, &mut report).await?;
    Ok(report)
}

fn first(missing: &[Digest]) -> String {
    missing
        .first()
        .map(|d| format!(", e.g. {d}"))
        .unwrap_or_default()
}

/// A new generation of the cell with the packages whose blobs are all present.
async fn repair_cell<P: Record>(
    store: &Store,
    reference: &RefName,
    head: &RefEntry,
    presence: &mut Presence,
    blobs_of: impl Fn(&P) -> Vec<Digest>,
    dry_run: bool,
    report: &mut RepairReport,
) -> Result<bool> {
    let cell: Cell = match store.get_json(&head.target).await {
        Ok(cell) => cell,
        Err(e) => {
            report.actions.push(format!(
                "{reference}: its manifest cannot be read ({e}); emptied: re-upload its packages"
            ));
            let empty = Cell {
                kind: P::CELL_KIND,
                chunks: Vec::new(),
            };
            write_cell(store, reference, head, &empty, "repair: emptied", dry_run).await?;
            return Ok(true);
        }
    };
    let mut chunks = Vec::new();
    let mut dropped = Vec::new();
    for chunk_ref in &cell.chunks {
        let chunk: Chunk<P> = match store.get_json(&chunk_ref.digest).await {
            Ok(chunk) => chunk,
            Err(_) => {
                dropped.push(format!(
                    "a chunk of {} package(s) ({})",
                    chunk_ref.packages, chunk_ref.digest
                ));
                continue;
            }
        };
        let mut kept = Vec::new();
        for package in chunk.packages {
            let mut whole = true;
            for blob in blobs_of(&package) {
                whole &= presence.has(store, &blob).await?;
            }
            if whole {
                kept.push(package);
            } else {
                let (name, version, arch) = package.identity();
                dropped.push(format!("{name} {version} {arch}"));
            }
        }
        if kept.is_empty() {
            continue;
        }
        if kept.len() == chunk_ref.packages as usize {
            chunks.push(chunk_ref.clone());
            continue;
        }
        let count = kept.len() as u32;
        let digest = if dry_run {
            chunk_ref.digest
        } else {
            store
                .put_json(&Chunk {
                    kind: chunk.kind,
                    packages: kept,
                })
                .await?
                .digest
        };
        chunks.push(ChunkRef {
            bucket: chunk_ref.bucket,
            digest,
            packages: count,
        });
    }
    report.actions.push(format!(
        "{reference}: dropped {} (their blobs are missing): re-upload them",
        dropped.join(", ")
    ));
    let repaired = Cell {
        kind: cell.kind,
        chunks,
    };
    let note = format!("repair: dropped {}", dropped.len());
    write_cell(store, reference, head, &repaired, &note, dry_run).await?;
    Ok(true)
}

async fn write_cell(
    store: &Store,
    reference: &RefName,
    head: &RefEntry,
    cell: &Cell,
    note: &str,
    dry_run: bool,
) -> Result<()> {
    if dry_run {
        return Ok(());
    }
    let target = store.put_json(cell).await?.digest;
    match store
        .ref_advance(reference, Some(head.generation), target, "repair", note)
        .await
    {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict(name)) => Err(StoreError::Conflict(format!(
            "{name} (a writer changed it during the repair; run it again)"
        ))
        .into()),
        Err(e) => Err(e.into()),
    }
}

/// The newest whole generation of a publication becomes its head again.
async fn repair_publication(
    store: &Store,
    reference: &RefName,
    generations: &[RefEntry],
    presence: &mut Presence,
    dry_run: bool,
    report: &mut RepairReport,
) -> Result<bool> {
    let Some(head) = generations.last() else {
        return Ok(false);
    };
    let mut whole = None;
    for entry in generations.iter().rev().skip(1) {
        let (reached, readable) = reach(store, reference.as_str(), entry).await;
        if readable && presence.missing(store, &reached).await?.is_empty() {
            whole = Some(entry.clone());
            break;
        }
    }
    match whole {
        Some(entry) => {
            report.actions.push(format!(
                "{reference}: generation {} names missing files; back to generation {}, which names \
                 none (the next publish of this tree, or a daemon's restart, rebuilds it)",
                head.generation, entry.generation
            ));
            if !dry_run {
                store
                    .ref_advance(
                        reference,
                        Some(head.generation),
                        entry.target,
                        "repair",
                        &format!("repair: back to generation {}", entry.generation),
                    )
                    .await?;
            }
        }
        None => {
            report.actions.push(format!(
                "{reference}: every generation names missing files; deleted (the next publish \
                 of this tree, or a daemon's restart, publishes it again)"
            ));
            if !dry_run {
                let paths = generations
                    .iter()
                    .map(|e| reference.generation_path(e.generation))
                    .collect();
                store.delete_paths(paths).await?;
            }
            // Nothing is left to cut history from.
            return Ok(false);
        }
    }
    Ok(true)
}

/// Fragment cache entries that name a missing blob are deleted.
async fn repair_caches(
    store: &Store,
    presence: &mut Presence,
    dry_run: bool,
    report: &mut RepairReport,
) -> Result<()> {
    let mut broken = Vec::new();
    for (path, blobs) in crate::maintenance::cache_entries(store).await? {
        for blob in blobs {
            if !presence.has(store, &blob).await? {
                broken.push(path);
                break;
            }
        }
    }
    if broken.is_empty() {
        return Ok(());
    }
    report.actions.push(format!(
        "deleted {} fragment cache entr{} naming missing blobs (the next publish renders them again)",
        broken.len(),
        if broken.len() == 1 { "y" } else { "ies" }
    ));
    if !dry_run {
        store.delete_paths(broken).await?;
    }
    Ok(())
}
