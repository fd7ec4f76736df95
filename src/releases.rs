//! Release management on the content-addressed state: snapshots (a name for
//! one published manifest), rollback and blue/green switches (restore every
//! cell of a suite to the state a publication was built from), remove and
//! promote. Changes that touch several cells run inside a batch, which the
//! manager waits for, so readers see the old suite or the new one, never half.

use crate::formats::Format;
use crate::repo::format::{RepoFormat, with_format};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::repo::cells;
use crate::repo::model::{
    AptPackage, AptSource, Cell, Chunk, ChunkRef, Publication, Record, RpmPackage, bucket_of,
};
use crate::store::{RefEntry, RefName, RefUpdate, Store, StoreError};
use crate::util::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    /// Another release change held the tree for longer than we wait.
    #[error("{0}")]
    Busy(String),
}

type Result<T> = std::result::Result<T, ReleaseError>;

/// A published tree: `apt/<repo>/<suite>` or `rpm/<repo>/<release>/<arch>`.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedTree {
    pub format: Format,
    pub repo: String,
    /// APT suite, or RPM `<release>/<arch>`.
    pub name: String,
}

impl PublishedTree {
    pub fn parse(text: &str) -> Result<PublishedTree> {
        let parts: Vec<&str> = text.split('/').collect();
        let bad = || {
            ReleaseError::Invalid(format!(
                "{text:?}: name a suite as apt/NAME/SUITE or an RPM tree as rpm/NAME/RELEASE/ARCH"
            ))
        };
        let (format, repo, name) = match parts.as_slice() {
            ["apt", repo, suite] => (Format::Apt, *repo, suite.to_string()),
            ["rpm", repo, release, arch] => (Format::Rpm, *repo, format!("{release}/{arch}")),
            _ => return Err(bad()),
        };
        for part in name.split('/').chain([repo]) {
            crate::caps::scope::validate_name("name", part).map_err(ReleaseError::Invalid)?;
        }
        Ok(PublishedTree {
            format,
            repo: repo.to_string(),
            name,
        })
    }

    pub fn publication_ref(&self) -> Result<RefName> {
        Ok(with_format!(self.format, F => F::publication_ref(&self.repo, &self.name))?)
    }

    /// The suite or release this tree belongs to.
    pub fn unit(&self) -> SuiteOrRelease {
        SuiteOrRelease::of_tree(&self.repo, &self.name)
    }

    pub fn display(&self) -> String {
        format!("{}/{}/{}", self.format, self.repo, self.name)
    }
}

/// What a batch locks and what promote moves: an APT suite or an RPM release (all its arches).
#[derive(Debug, Clone, PartialEq)]
pub struct SuiteOrRelease {
    pub format: Format,
    pub repo: String,
    pub name: String,
}

impl SuiteOrRelease {
    pub fn parse(kind_repo: &str, name: &str) -> Result<SuiteOrRelease> {
        let bad = || {
            ReleaseError::Invalid(format!(
                "{kind_repo:?}: name the repository as apt/NAME or rpm/NAME"
            ))
        };
        let (format, repo) = kind_repo.split_once('/').ok_or_else(bad)?;
        let format = Format::parse(format).ok_or_else(bad)?;
        crate::caps::scope::validate_name("repository", repo).map_err(ReleaseError::Invalid)?;
        crate::caps::scope::validate_name("suite or release", name)
            .map_err(ReleaseError::Invalid)?;
        Ok(SuiteOrRelease {
            format,
            repo: repo.to_string(),
            name: name.to_string(),
        })
    }

    /// The suite or release a published tree (APT suite, RPM `<release>/<arch>`) is of.
    pub fn of_tree(repo: &str, tree: &str) -> SuiteOrRelease {
        let format = Format::of_tree(tree);
        SuiteOrRelease {
            format,
            repo: repo.to_string(),
            name: with_format!(format, F => F::unit_of(tree)).to_string(),
        }
    }

    fn batch_ref(&self) -> Result<RefName> {
        Ok(RefName::new(format!(
            "batches/{}/{}/{}",
            self.format, self.repo, self.name
        ))?)
    }

    pub fn display(&self) -> String {
        format!("{}/{}/{}", self.format, self.repo, self.name)
    }

    /// Every cell that can feed this suite or release, from the repository definition.
    pub async fn cells(&self, store: &Store) -> Result<Vec<String>> {
        with_format!(self.format, F => self.cells_of::<F>(store).await)
    }

    async fn cells_of<F: RepoFormat>(&self, store: &Store) -> Result<Vec<String>> {
        let definition = crate::repo::definitions::load_repo::<F>(store, &self.repo)
            .await
            .map_err(|e| ReleaseError::NotFound(e.to_string()))?;
        let cells = F::unit_cells(&self.repo, &definition, &self.name)?.ok_or_else(|| {
            ReleaseError::NotFound(format!(
                "{}/{} has no {} {}",
                self.format,
                self.repo,
                F::UNIT_NOUN,
                self.name
            ))
        })?;
        Ok(cells.iter().map(ToString::to_string).collect())
    }
}

/// How long an open batch holds back publishing before it counts as abandoned (a crashed CLI).
const BATCH_LEASE_SECONDS: i64 = 120;

/// True while a batch is changing the tree's cells; the manager does not publish it meanwhile.
pub async fn batch_open(store: &Store, unit: &SuiteOrRelease) -> Result<bool> {
    let Some(head) = store.ref_head(&unit.batch_ref()?).await? else {
        return Ok(false);
    };
    Ok(head.note.starts_with("open")
        && crate::util::time::now_unix() - head.time < BATCH_LEASE_SECONDS)
}

/// How long a release change waits for another one on the same tree to finish: as long
/// as one may hold it (on a slow bucket, several changes queue behind each other).
const BATCH_WAIT: std::time::Duration = std::time::Duration::from_secs(BATCH_LEASE_SECONDS as u64);

async fn set_batch(store: &Store, unit: &SuiteOrRelease, note: &str, actor: &str) -> Result<()> {
    let name = unit.batch_ref()?;
    let started = std::time::Instant::now();
    let mut backoff = std::time::Duration::from_millis(20);
    store
        .update_ref(&name, actor, |head| {
            let held_open = note == "open"
                && head.is_some_and(|h| {
                    h.note == "open" && crate::util::time::now_unix() - h.time < BATCH_LEASE_SECONDS
                });
            let pause = backoff;
            if held_open {
                backoff = (backoff * 2).min(std::time::Duration::from_millis(500));
            }
            async move {
                if !held_open {
                    return Ok(RefUpdate::Advance {
                        target: Digest::of(note.as_bytes()),
                        note: note.to_string(),
                        value: (),
                    });
                }
                // Changes to one tree take turns: a promotion and a removal sent at once
                // both happen, one after the other.
                if started.elapsed() >= BATCH_WAIT {
                    return Err(ReleaseError::Busy(format!(
                        "another change to {} has been in progress for {} s; try again shortly",
                        unit.display(),
                        BATCH_WAIT.as_secs()
                    )));
                }
                tokio::time::sleep(pause).await;
                Ok(RefUpdate::Reread)
            }
        })
        .await?;
    Ok(())
}

/// Run `work` with the tree's batch open, closing it whatever happens.
pub async fn in_batch<T>(
    store: &Store,
    unit: &SuiteOrRelease,
    actor: &str,
    work: impl AsyncFnOnce() -> Result<T>,
) -> Result<T> {
    set_batch(store, unit, "open", actor).await?;
    let result = work().await;
    set_batch(store, unit, "closed", actor).await?;
    result
}

/// Point a cell at `target` (None: empty), whatever it holds now.
async fn set_cell<P: Record>(
    store: &Store,
    cell: &RefName,
    target: Option<Digest>,
    actor: &str,
    note: &str,
) -> Result<()> {
    let target = match target {
        Some(t) => t,
        None => {
            store
                .put_json(&Cell {
                    kind: P::CELL_KIND,
                    chunks: Vec::new(),
                })
                .await?
                .digest
        }
    };
    store
        .update_ref(cell, actor, |head| async move {
            Ok::<_, ReleaseError>(if head.is_some_and(|h| h.target == target) {
                RefUpdate::Unchanged(())
            } else {
                RefUpdate::Advance {
                    target,
                    note: note.to_string(),
                    value: (),
                }
            })
        })
        .await?;
    Ok(())
}

/// The cells a tree is built from, with the manifest each pointed at for a publication.
async fn cells_of_publication(
    store: &Store,
    publication: &Publication,
) -> Result<BTreeMap<String, Digest>> {
    let mut out = BTreeMap::new();
    for (name, generation) in &publication.inputs {
        if !name.starts_with("cells/") {
            continue;
        }
        let reference = RefName::new(name.clone())?;
        let entry = store
            .ref_entry(&reference, *generation)
            .await?
            .ok_or_else(|| {
                ReleaseError::NotFound(format!(
                    "{name} generation {generation} is gone (history pruned?)"
                ))
            })?;
        out.insert(name.clone(), entry.target);
    }
    Ok(out)
}

/// The cells one tree lists: the whole suite for APT; the arch, noarch (or src) for an RPM tree.
async fn tree_cells(store: &Store, tree: &PublishedTree) -> Result<Vec<String>> {
    let all = tree.unit().cells(store).await?;
    if tree.format == Format::Apt {
        return Ok(all);
    }
    let arch = tree.name.split('/').nth(1).unwrap_or_default();
    let keep: Vec<&str> = if arch == "source" {
        vec!["src"]
    } else {
        vec![arch, "noarch"]
    };
    Ok(all
        .into_iter()
        .filter(|c| keep.iter().any(|k| c.ends_with(&format!("/{k}"))))
        .collect())
}

/// The name `cell` (of any suite or release of the tree's repository) has in `tree`'s
/// suite or release: `cells/<kind>/<repo>/<unit>/...` with the unit replaced.
fn cell_in_tree(cell: &str, tree: &PublishedTree) -> Option<String> {
    let mut parts: Vec<&str> = cell.split('/').collect();
    if parts.len() < 5
        || parts[0] != "cells"
        || parts[1] != tree.format.name()
        || parts[2] != tree.repo
    {
        return None;
    }
    let unit = tree.unit();
    // An RPM tree's package locations are claimed per release: its cells stay in theirs.
    if tree.format == Format::Rpm && parts[3] != unit.name {
        return None;
    }
    parts[3] = &unit.name;
    Some(parts.join("/"))
}

/// Make the tree's cells what they were when `publication` was built. The manager then
/// publishes once: readers flip from the current suite to the restored one.
pub async fn restore(
    store: &Store,
    tree: &PublishedTree,
    publication: &Publication,
    actor: &str,
    note: &str,
) -> Result<usize> {
    // Only the tree's own cells change. A snapshot of another suite (blue/green) names that
    // suite's cells: they are read as the same component and architecture of this tree, and
    // never written, so a cap for this tree cannot roll back a suite it does not cover.
    let mut names: Vec<String> = tree_cells(store, tree).await?;
    names.sort();
    names.dedup();
    let wanted: BTreeMap<String, Digest> = cells_of_publication(store, publication)
        .await?
        .into_iter()
        .filter_map(|(name, digest)| Some((cell_in_tree(&name, tree)?, digest)))
        .filter(|(name, _)| names.binary_search(name).is_ok())
        .collect();
    in_batch(store, &tree.unit(), actor, async || {
        for name in &names {
            let reference = RefName::new(name.clone())?;
            let target = wanted.get(name).copied();
            if tree.format == Format::Apt {
                set_cell::<AptPackage>(store, &reference, target, actor, note).await?;
            } else {
                set_cell::<RpmPackage>(store, &reference, target, actor, note).await?;
            }
        }
        Ok(names.len())
    })
    .await
}

/// The publication of a tree at a generation (None: the one before the newest).
pub async fn publication_at(
    store: &Store,
    tree: &PublishedTree,
    generation: Option<u64>,
) -> Result<(RefEntry, Publication)> {
    let reference = tree.publication_ref()?;
    let head = store.ref_head(&reference).await?.ok_or_else(|| {
        ReleaseError::NotFound(format!("{} has never been published", tree.display()))
    })?;
    let generation = match generation {
        Some(g) => g,
        None => head
            .generation
            .checked_sub(1)
            .ok_or_else(|| ReleaseError::NotFound("there is no earlier generation".into()))?,
    };
    let entry = store
        .ref_entry(&reference, generation)
        .await?
        .ok_or_else(|| {
            ReleaseError::NotFound(format!("{} has no generation {generation}", tree.display()))
        })?;
    let publication = store.get_json(&entry.target).await?;
    Ok((entry, publication))
}

// ---- snapshots -------------------------------------------------------------------------------

pub fn snapshot_ref(tree: &PublishedTree, snapshot: &str) -> Result<RefName> {
    crate::caps::scope::validate_name("snapshot", snapshot).map_err(ReleaseError::Invalid)?;
    Ok(RefName::new(format!(
        "snapshots/{}/{}/{snapshot}",
        tree.format, tree.repo
    ))?)
}

/// Freeze what a tree publishes now under a name. Costs one small ref: the bytes are shared.
pub async fn snapshot_create(
    store: &Store,
    tree: &PublishedTree,
    snapshot: &str,
    actor: &str,
) -> Result<RefEntry> {
    let head = store
        .ref_head(&tree.publication_ref()?)
        .await?
        .ok_or_else(|| {
            ReleaseError::NotFound(format!("{} is not published yet", tree.display()))
        })?;
    let note = format!("snapshot {} generation {}", tree.display(), head.generation);
    match store
        .ref_advance(
            &snapshot_ref(tree, snapshot)?,
            None,
            head.target,
            actor,
            &note,
        )
        .await
    {
        Ok(entry) => Ok(entry),
        Err(StoreError::Conflict(_)) => Err(ReleaseError::Invalid(format!(
            "snapshot {snapshot} of {}/{} exists already; snapshots never change, pick a new name",
            tree.format, tree.repo
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The publication a snapshot names.
pub async fn snapshot_get(
    store: &Store,
    format: Format,
    repo: &str,
    snapshot: &str,
) -> Result<Option<Publication>> {
    crate::caps::scope::validate_name("snapshot", snapshot).map_err(ReleaseError::Invalid)?;
    let reference = RefName::new(format!("snapshots/{format}/{repo}/{snapshot}"))?;
    match store.ref_head(&reference).await? {
        Some(head) => Ok(Some(store.get_json(&head.target).await?)),
        None => Ok(None),
    }
}

pub async fn snapshot_list(
    store: &Store,
    format: Format,
    repo: &str,
) -> Result<Vec<(String, RefEntry)>> {
    let mut out = Vec::new();
    for name in store
        .ref_children(&format!("snapshots/{format}/{repo}"))
        .await?
    {
        let reference = RefName::new(format!("snapshots/{format}/{repo}/{name}"))?;
        if let Some(head) = store.ref_head(&reference).await? {
            out.push((name, head));
        }
    }
    Ok(out)
}

// ---- remove and promote --------------------------------------------------------------------

/// Which packages a removal or promotion selects: `name` or `name=version`.
pub struct Selector {
    pub name: String,
    pub version: Option<String>,
}

impl Selector {
    pub fn parse(text: &str) -> Selector {
        match text.split_once('=') {
            Some((name, version)) => Selector {
                name: name.to_string(),
                version: Some(version.to_string()),
            },
            None => Selector {
                name: text.to_string(),
                version: None,
            },
        }
    }

    fn matches(&self, name: &str, version: &str) -> bool {
        self.name == name && self.version.as_deref().is_none_or(|v| v == version)
    }
}

/// Rewrite a cell keeping only packages `keep` accepts, plus `add`. Returns how many were dropped.
async fn rewrite_cell<P: Record>(
    store: &Store,
    cell: &RefName,
    keep: &(dyn Fn(&P) -> bool + Sync),
    add: &[P],
    actor: &str,
    note: &str,
) -> Result<(usize, usize)> {
    let (counts, _) = store
        .update_ref(cell, actor, |head| async move {
        let current = cells::cell_at::<P>(store, head.as_ref()).await?;
        let mut all: Vec<P> = cells::all_packages::<P>(store, &current).await?;
        let before = all.len();
        all.retain(|p| keep(p));
        let dropped = before - all.len();
        let mut added = 0;
        for package in add {
            match all.iter().find(|p| p.identity() == package.identity()) {
                Some(existing) if existing.upload_digest() != package.upload_digest() => {
                    let (name, version, arch) = package.identity();
                    return Err(ReleaseError::Invalid(format!(
                        "{name} {version} ({arch}) exists in {cell} with other contents; remove it there first"
                    )));
                }
                Some(_) => {}
                None => {
                    all.push(package.clone());
                    added += 1;
                }
            }
        }
        if dropped == 0 && added == 0 {
            return Ok(RefUpdate::Unchanged((0, 0)));
        }
        let mut buckets: BTreeMap<u8, Vec<P>> = BTreeMap::new();
        for p in all {
            buckets.entry(bucket_of(p.name())).or_default().push(p);
        }
        let mut chunks = Vec::new();
        for (bucket, mut packages) in buckets {
            packages.sort_by(|a, b| a.identity().cmp(&b.identity()));
            let count = packages.len() as u32;
            let stored = store
                .put_json(&Chunk {
                    kind: P::CHUNK_KIND,
                    packages,
                })
                .await?;
            chunks.push(ChunkRef {
                bucket,
                digest: stored.digest,
                packages: count,
            });
        }
        let manifest = store
            .put_json(&Cell {
                kind: P::CELL_KIND,
                chunks,
            })
            .await?;
        Ok(RefUpdate::Advance {
            target: manifest.digest,
            note: note.to_string(),
            value: (dropped, added),
        })
        })
        .await?;
    Ok(counts)
}

/// Remove selected packages from every cell of a suite or release. Returns how many records went.
pub async fn remove(
    store: &Store,
    unit: &SuiteOrRelease,
    selectors: &[Selector],
    actor: &str,
) -> Result<usize> {
    let names = unit.cells(store).await?;
    let wanted = |name: &str, version: &str| selectors.iter().any(|s| s.matches(name, version));
    let note = format!(
        "rm {}",
        selectors
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    in_batch(store, unit, actor, async || {
        let mut removed = 0;
        for name in &names {
            let cell = RefName::new(name.clone())?;
            removed += if name.ends_with("/source") {
                rewrite_cell::<AptSource>(
                    store,
                    &cell,
                    &|p| !wanted(&p.name, &p.version),
                    &[],
                    actor,
                    &note,
                )
                .await?
                .0
            } else if unit.format == Format::Apt {
                rewrite_cell::<AptPackage>(
                    store,
                    &cell,
                    &|p| !wanted(&p.name, &p.version),
                    &[],
                    actor,
                    &note,
                )
                .await?
                .0
            } else {
                rewrite_cell::<RpmPackage>(
                    store,
                    &cell,
                    &|p| {
                        !wanted(&p.name, &p.evr())
                            && !wanted(&p.name, &format!("{}-{}", p.version, p.release))
                    },
                    &[],
                    actor,
                    &note,
                )
                .await?
                .0
            };
        }
        Ok(removed)
    })
    .await
}

/// Copy (or move) packages from one suite or release into another of the same repository.
pub async fn promote(
    store: &Store,
    from: &SuiteOrRelease,
    to: &SuiteOrRelease,
    selectors: &[Selector],
    move_them: bool,
    actor: &str,
) -> Result<usize> {
    if from.format != to.format || from.repo != to.repo || from.name == to.name {
        return Err(ReleaseError::Invalid(
            "promote between two suites (apt/NAME A B) or releases (rpm/NAME A B) of one repository".into(),
        ));
    }
    let source_cells = from.cells(store).await?;
    let target_cells = to.cells(store).await?;
    let selected = |name: &str, version: &str| {
        selectors.is_empty() || selectors.iter().any(|s| s.matches(name, version))
    };
    let note = format!("promote from {}", from.display());
    // Same component and arch: the part of the cell name after the suite or release.
    let source_prefix = format!("cells/{}/{}/{}/", from.format, from.repo, from.name);
    let target_prefix = format!("cells/{}/{}/{}/", to.format, to.repo, to.name);
    let counterpart = |source: &str| {
        let suffix = source.strip_prefix(&source_prefix)?;
        let target = format!("{target_prefix}{suffix}");
        target_cells.contains(&target).then_some(target)
    };
    in_batch(store, to, actor, async || {
        let mut copied = 0;
        for source in &source_cells {
            let Some(target) = counterpart(source) else {
                continue;
            };
            let (source_ref, target_ref) = (RefName::new(source.clone())?, RefName::new(target)?);
            if source.ends_with("/source") {
                copied += promote_cell::<AptSource>(
                    store,
                    &source_ref,
                    &target_ref,
                    &|p| selected(&p.name, &p.version),
                    move_them,
                    actor,
                    &note,
                )
                .await?;
            } else if from.format == Format::Apt {
                copied += promote_cell::<AptPackage>(
                    store,
                    &source_ref,
                    &target_ref,
                    &|p| selected(&p.name, &p.version),
                    move_them,
                    actor,
                    &note,
                )
                .await?;
            } else {
                copied += promote_cell::<RpmPackage>(
                    store,
                    &source_ref,
                    &target_ref,
                    &|p| selected(&p.name, &p.evr()),
                    move_them,
                    actor,
                    &note,
                )
                .await?;
            }
        }
        Ok(copied)
    })
    .await
}

async fn promote_cell<P: Record>(
    store: &Store,
    source: &RefName,
    target: &RefName,
    selected: &(dyn Fn(&P) -> bool + Sync),
    move_them: bool,
    actor: &str,
    note: &str,
) -> Result<usize> {
    let (_, cell) = cells::load_cell::<P>(store, source).await?;
    let mut picked: Vec<P> = cells::all_packages(store, &cell).await?;
    picked.retain(|p| selected(p));
    if picked.is_empty() {
        return Ok(0);
    }
    let (_, added) = rewrite_cell(store, target, &|_: &P| true, &picked, actor, note).await?;
    if move_them {
        let moved = |p: &P| picked.iter().any(|q| q.identity() == p.identity());
        rewrite_cell::<P>(store, source, &|p| !moved(p), &[], actor, note).await?;
    }
    Ok(added)
}

// ---- release requests -------------------------------------------------------------------------

/// One release manager's command, as the CLI and `POST /api/v1/release` take it: the same
/// JSON over HTTP, and the same [`ReleaseRequest::apply`] either way.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ReleaseRequest {
    Promote {
        repo: String,
        from: String,
        to: String,
        #[serde(default)]
        packages: Vec<String>,
        #[serde(default)]
        r#move: bool,
    },
    Rm {
        target: String,
        packages: Vec<String>,
    },
    Snapshot {
        tree: String,
        name: String,
    },
    SnapshotSwitch {
        tree: String,
        name: String,
    },
    Rollback {
        tree: String,
        #[serde(default)]
        to: Option<u64>,
    },
}

impl ReleaseRequest {
    /// Every suite or release the request changes (what a cap must cover).
    pub fn changes(&self) -> Result<Vec<SuiteOrRelease>> {
        // Every suite or release the request changes: a move changes its source too. What it
        // copies from (the source of a promotion, a snapshot switched to) may be any suite or
        // release of the repository: the rule is that a cap changes nothing outside itself,
        // and a publish cap's holder decides what its own suites list.
        Ok(match self {
            ReleaseRequest::Promote {
                repo,
                from,
                to,
                r#move,
                ..
            } => {
                let mut changed = vec![SuiteOrRelease::parse(repo, to)?];
                if *r#move {
                    changed.push(SuiteOrRelease::parse(repo, from)?);
                }
                changed
            }
            ReleaseRequest::Rm { target, .. } => vec![unit_of_target(target)?],
            ReleaseRequest::Snapshot { tree, .. }
            | ReleaseRequest::SnapshotSwitch { tree, .. }
            | ReleaseRequest::Rollback { tree, .. } => vec![PublishedTree::parse(tree)?.unit()],
        })
    }

    /// Carries the request out as `actor`; the message says what changed.
    pub async fn apply(self, store: &Store, actor: &str) -> Result<String> {
        match self {
            ReleaseRequest::Promote {
                repo,
                from,
                to,
                packages,
                r#move,
            } => {
                let from = SuiteOrRelease::parse(&repo, &from)?;
                let to = SuiteOrRelease::parse(&repo, &to)?;
                let selectors: Vec<Selector> =
                    packages.iter().map(|p| Selector::parse(p)).collect();
                let n = promote(store, &from, &to, &selectors, r#move, actor).await?;
                Ok(format!(
                    "{} {n} package(s) from {} to {}",
                    if r#move { "moved" } else { "copied" },
                    from.display(),
                    to.display()
                ))
            }
            ReleaseRequest::Rm { target, packages } => {
                let unit = unit_of_target(&target)?;
                let selectors: Vec<Selector> =
                    packages.iter().map(|p| Selector::parse(p)).collect();
                let n = remove(store, &unit, &selectors, actor).await?;
                if n == 0 {
                    return Err(ReleaseError::NotFound(format!(
                        "nothing matched in {}",
                        unit.display()
                    )));
                }
                Ok(format!(
                    "removed {n} package record(s) from {}",
                    unit.display()
                ))
            }
            ReleaseRequest::Snapshot { tree, name } => {
                let tree = PublishedTree::parse(&tree)?;
                let entry = snapshot_create(store, &tree, &name, actor).await?;
                Ok(format!("snapshot {name}: {}", entry.note))
            }
            ReleaseRequest::SnapshotSwitch { tree, name } => {
                let tree = PublishedTree::parse(&tree)?;
                let publication = snapshot_get(store, tree.format, &tree.repo, &name)
                    .await?
                    .ok_or_else(|| ReleaseError::NotFound(format!("no snapshot {name}")))?;
                restore(
                    store,
                    &tree,
                    &publication,
                    actor,
                    &format!("switch to snapshot {name}"),
                )
                .await?;
                Ok(format!("{} switched to snapshot {name}", tree.display()))
            }
            ReleaseRequest::Rollback { tree, to } => {
                let tree = PublishedTree::parse(&tree)?;
                let (entry, publication) = publication_at(store, &tree, to).await?;
                restore(
                    store,
                    &tree,
                    &publication,
                    actor,
                    &format!("rollback to publication {}", entry.generation),
                )
                .await?;
                Ok(format!(
                    "{} rolled back to publication {}",
                    tree.display(),
                    entry.generation
                ))
            }
        }
    }
}

fn unit_of_target(target: &str) -> Result<SuiteOrRelease> {
    let parts: Vec<&str> = target.split('/').collect();
    match parts.as_slice() {
        [kind, repo, name] => SuiteOrRelease::parse(&format!("{kind}/{repo}"), name),
        _ => Err(ReleaseError::Invalid(format!(
            "{target:?}: name apt/NAME/SUITE or rpm/NAME/RELEASE"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::apt_package;

    /// apt/farm with suites stable and testing, component main, amd64, on a memory store.
    async fn repository() -> Store {
        crate::testing::apt_farm(&["stable", "testing"]).await
    }

    fn cell(suite: &str) -> RefName {
        crate::repo::model::cell_ref("farm", suite, "main", "amd64").unwrap()
    }

    async fn add(store: &Store, suite: &str, packages: Vec<AptPackage>) {
        cells::add_packages(store, &cell(suite), packages, "test")
            .await
            .unwrap();
    }

    /// "name version" of every package the suite's amd64 cell lists, sorted.
    async fn listed(store: &Store, suite: &str) -> Vec<String> {
        let (_, current) = cells::load_cell::<AptPackage>(store, &cell(suite))
            .await
            .unwrap();
        let mut names: Vec<String> = cells::all_packages::<AptPackage>(store, &current)
            .await
            .unwrap()
            .into_iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn promote_copies_or_moves_what_is_selected_and_remove_takes_it_out() {
        let store = repository().await;
        let (stable, testing) = (
            SuiteOrRelease::parse("apt/farm", "stable").unwrap(),
            SuiteOrRelease::parse("apt/farm", "testing").unwrap(),
        );
        add(
            &store,
            "stable",
            vec![apt_package("a", "1", b"a1"), apt_package("b", "1", b"b1")],
        )
        .await;
        // Copy one: the source keeps it; promoting it again copies nothing.
        let a = [Selector::parse("a")];
        assert_eq!(
            promote(&store, &stable, &testing, &a, false, "t")
                .await
                .unwrap(),
            1
        );
        assert_eq!(listed(&store, "testing").await, ["a 1"]);
        assert_eq!(listed(&store, "stable").await, ["a 1", "b 1"]);
        assert_eq!(
            promote(&store, &stable, &testing, &a, false, "t")
                .await
                .unwrap(),
            0
        );
        // Move one, selected by version.
        let b = [Selector::parse("b=1")];
        assert_eq!(
            promote(&store, &stable, &testing, &b, true, "t")
                .await
                .unwrap(),
            1
        );
        assert_eq!(listed(&store, "stable").await, ["a 1"]);
        assert_eq!(listed(&store, "testing").await, ["a 1", "b 1"]);
        // A version not there selects nothing.
        let none = [Selector::parse("a=2")];
        assert_eq!(
            promote(&store, &stable, &testing, &none, false, "t")
                .await
                .unwrap(),
            0
        );

        // Other bytes under the same name and version in the target: refused, and the
        // target is unchanged.
        add(
            &store,
            "stable",
            vec![apt_package("c", "1", b"c in stable")],
        )
        .await;
        add(
            &store,
            "testing",
            vec![apt_package("c", "1", b"c in testing")],
        )
        .await;
        let c = [Selector::parse("c")];
        let refused = promote(&store, &stable, &testing, &c, false, "t").await;
        assert!(
            matches!(refused, Err(ReleaseError::Invalid(_))),
            "{refused:?}"
        );
        assert_eq!(listed(&store, "testing").await, ["a 1", "b 1", "c 1"]);

        // Remove takes the selected records out of the suite only.
        assert_eq!(remove(&store, &testing, &a, "t").await.unwrap(), 1);
        assert_eq!(listed(&store, "testing").await, ["b 1", "c 1"]);
        assert_eq!(listed(&store, "stable").await, ["a 1", "c 1"]);
        assert_eq!(remove(&store, &testing, &a, "t").await.unwrap(), 0);
        // Every change closed the batch it opened.
        assert!(!batch_open(&store, &testing).await.unwrap());

        // Promotion within one suite, or across repositories or kinds, is refused.
        let other = SuiteOrRelease::parse("apt/other", "testing").unwrap();
        for (from, to) in [(&stable, &stable), (&stable, &other)] {
            let refused = promote(&store, from, to, &a, false, "t").await;
            assert!(
                matches!(refused, Err(ReleaseError::Invalid(_))),
                "{refused:?}"
            );
        }
    }

    #[tokio::test]
    async fn rollback_restores_an_earlier_publication_and_a_snapshot_keeps_one() {
        use crate::agent::sign::MemorySigner;
        use crate::publish::apt::publish::publish_suite;
        let store = repository().await;
        store.put_blob(bytes::Bytes::new()).await.unwrap();
        let signer = MemorySigner::new();
        let tree = PublishedTree::parse("apt/farm/stable").unwrap();
        let packages_of = async |publication: &Publication| {
            let entry = publication.files["dists/stable/main/binary-amd64/Packages"];
            let text = store.get_blob(&entry.sha256).await.unwrap();
            String::from_utf8_lossy(&text).into_owned()
        };

        add(&store, "stable", vec![apt_package("alpha", "1", b"alpha")]).await;
        let first = publish_suite(&store, &signer, "farm", "stable")
            .await
            .unwrap();
        let snapshot = snapshot_create(&store, &tree, "before-beta", "t")
            .await
            .unwrap();
        assert_eq!(snapshot.target, first.head.target);
        add(&store, "stable", vec![apt_package("beta", "1", b"beta")]).await;
        let second = publish_suite(&store, &signer, "farm", "stable")
            .await
            .unwrap();
        assert!(
            packages_of(&second.publication)
                .await
                .contains("Package: beta\n")
        );

        // Roll back to the generation before the newest: the cells are what they were,
        // and the next publish lists alpha alone.
        let (entry, earlier) = publication_at(&store, &tree, None).await.unwrap();
        assert_eq!(entry.generation, first.head.generation);
        restore(&store, &tree, &earlier, "t", "rollback")
            .await
            .unwrap();
        assert_eq!(listed(&store, "stable").await, ["alpha 1"]);
        let third = publish_suite(&store, &signer, "farm", "stable")
            .await
            .unwrap();
        assert_eq!(third.head.generation, second.head.generation + 1);
        let text = packages_of(&third.publication).await;
        assert!(
            text.contains("Package: alpha\n") && !text.contains("beta"),
            "{text}"
        );
        assert!(!batch_open(&store, &tree.unit()).await.unwrap());

        // The snapshot still names the first publication; its name cannot be taken again.
        let kept = snapshot_get(&store, Format::Apt, "farm", "before-beta")
            .await
            .unwrap()
            .expect("the snapshot");
        assert_eq!(kept.files, first.publication.files);
        let again = snapshot_create(&store, &tree, "before-beta", "t").await;
        assert!(matches!(again, Err(ReleaseError::Invalid(_))), "{again:?}");
    }

    /// The request both the CLI and the HTTP API carry out: switching testing to a
    /// snapshot of stable (blue/green across suites) restores testing's cells from it and
    /// leaves stable as it is; a move names both suites it changes.
    #[tokio::test]
    async fn a_switch_request_restores_a_suite_from_a_snapshot_of_another() {
        use crate::agent::sign::MemorySigner;
        use crate::publish::apt::publish::publish_suite;
        let store = repository().await;
        store.put_blob(bytes::Bytes::new()).await.unwrap();
        let signer = MemorySigner::new();
        add(&store, "stable", vec![apt_package("alpha", "1", b"alpha")]).await;
        publish_suite(&store, &signer, "farm", "stable")
            .await
            .unwrap();
        let snapshot = ReleaseRequest::Snapshot {
            tree: "apt/farm/stable".into(),
            name: "s1".into(),
        };
        snapshot.apply(&store, "t").await.unwrap();
        add(&store, "stable", vec![apt_package("beta", "1", b"beta")]).await;

        let switch = ReleaseRequest::SnapshotSwitch {
            tree: "apt/farm/testing".into(),
            name: "s1".into(),
        };
        let changed: Vec<String> = switch
            .changes()
            .unwrap()
            .iter()
            .map(SuiteOrRelease::display)
            .collect();
        assert_eq!(changed, ["apt/farm/testing"]);
        let message = switch.apply(&store, "t").await.unwrap();
        assert_eq!(message, "apt/farm/testing switched to snapshot s1");
        assert_eq!(listed(&store, "testing").await, ["alpha 1"]);
        assert_eq!(listed(&store, "stable").await, ["alpha 1", "beta 1"]);

        let missing = ReleaseRequest::SnapshotSwitch {
            tree: "apt/farm/testing".into(),
            name: "none".into(),
        };
        let refused = missing.apply(&store, "t").await;
        assert!(
            matches!(refused, Err(ReleaseError::NotFound(_))),
            "{refused:?}"
        );

        let moved = ReleaseRequest::Promote {
            repo: "apt/farm".into(),
            from: "stable".into(),
            to: "testing".into(),
            packages: Vec::new(),
            r#move: true,
        };
        let changed: Vec<String> = moved
            .changes()
            .unwrap()
            .iter()
            .map(SuiteOrRelease::display)
            .collect();
        assert_eq!(changed, ["apt/farm/testing", "apt/farm/stable"]);
    }
}
