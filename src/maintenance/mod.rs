//! Keeping a store healthy for years: [`gc`] marks every blob reachable from the
//! refs (and snapshots) ([`mark`]) and sweeps the rest once they are older than a
//! grace period, so uploads in flight and clients still fetching an old by-hash file
//! are safe; [`verify`] re-hashes everything reachable, checks every ref and
//! manifest against schema/, and every published index against its signature;
//! [`repair`] mends what verify finds missing.

mod gc;
mod mark;
pub mod repair;
mod verify;

pub use gc::{DEFAULT_READER_WINDOW, GcOptions, GcRefused, GcReport, GcStage, gc};
pub use mark::{Marking, cache_entries, mark};
pub use verify::verify;

use futures::TryStreamExt;
use object_store::path::Path;

use crate::store::{RefEntry, RefName, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("listing the store: {0}")]
    List(#[from] object_store::Error),
    #[error(transparent)]
    Refused(#[from] GcRefused),
}

type Result<T> = std::result::Result<T, MaintenanceError>;

/// Every generation of every ref: (ref name, entry).
pub async fn all_ref_entries(store: &Store) -> Result<Vec<(String, RefEntry)>> {
    let listed: Vec<_> = store
        .object_store()
        .list(Some(&Path::from("refs")))
        .try_collect()
        .await?;
    let mut out = Vec::new();
    for meta in listed {
        let path = meta.location.to_string();
        let Some((name, file)) = path.strip_prefix("refs/").and_then(|r| r.rsplit_once('/')) else {
            continue;
        };
        let Some(generation) = file
            .strip_suffix(".json")
            .and_then(|g| g.parse::<u64>().ok())
        else {
            continue;
        };
        if let Some(entry) = store
            .ref_entry(&RefName::new(name.to_string())?, generation)
            .await?
        {
            out.push((name.to_string(), entry));
        }
    }
    Ok(out)
}

/// What kind of manifest a ref points at, from its name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RefKind {
    Repository,
    AptCell,
    AptSourceCell,
    RpmCell,
    Publication,
    CapList,
    /// A shard of a repository's path claims ([`crate::repo::claims`]).
    Claims,
    /// Batch markers point at no blob.
    Marker,
}

pub fn ref_kind(name: &str) -> RefKind {
    match name.split('/').next().unwrap_or_default() {
        "repos" => RefKind::Repository,
        "cells" if name.starts_with("cells/apt/") && name.ends_with("/source") => {
            RefKind::AptSourceCell
        }
        "cells" if name.starts_with("cells/apt/") => RefKind::AptCell,
        "cells" => RefKind::RpmCell,
        "published" | "snapshots" => RefKind::Publication,
        "caps" => RefKind::CapList,
        "claims" => RefKind::Claims,
        _ => RefKind::Marker,
    }
}

/// A problem found while walking; gc refuses to sweep when there are any.
pub type Problems = Vec<String>;
