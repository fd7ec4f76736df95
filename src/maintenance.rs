//! Keeping a store healthy for years: `gc` marks every blob reachable from the
//! refs (and snapshots) and sweeps the rest once they are older than a grace
//! period, so uploads in flight and clients still fetching an old by-hash file
//! are safe; `verify` re-hashes everything reachable, checks every ref and
//! manifest against schema/, and every published index against its signature.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path;

use crate::digest::Digest;
use crate::model::{AptPublication, Cell, Chunk, RpmPackage};
use crate::store::{ListedComposite, RefEntry, RefName, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("listing the store: {0}")]
    List(#[from] object_store::Error),
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
    /// A shard of a repository's path claims ([`crate::claims`]).
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

/// Mark every blob reachable from the given ref entries, and the parts of the marked
/// `composites` (the store's listing, taken once by the caller). Manifests are read
/// (and so hash-checked) once each.
pub async fn mark(
    store: &Store,
    entries: &[(String, RefEntry)],
    composites: &[ListedComposite],
    problems: &mut Problems,
) -> Result<HashSet<Digest>> {
    let mut marked: HashSet<Digest> = HashSet::new();
    let mut seen_manifests: HashSet<Digest> = HashSet::new();
    for (name, entry) in entries {
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
                mark_cell::<crate::model::AptPackage>(
                    store,
                    &entry.target,
                    &mut marked,
                    &mut seen_manifests,
                    |p, m| {
                        m.insert(p.sha256);
                        m.insert(p.files);
                    },
                )
                .await
            }
            RefKind::AptSourceCell => {
                mark_cell::<crate::model::AptSource>(
                    store,
                    &entry.target,
                    &mut marked,
                    &mut seen_manifests,
                    |p, m| {
                        m.insert(p.dsc.sha256);
                        m.extend(p.files.iter().map(|f| f.sha256));
                    },
                )
                .await
            }
            RefKind::RpmCell => {
                mark_cell::<RpmPackage>(
                    store,
                    &entry.target,
                    &mut marked,
                    &mut seen_manifests,
                    |p, m| {
                        m.insert(p.sha256);
                        m.extend(p.entry_blobs());
                    },
                )
                .await
            }
            // A claim keeps its shard's manifests, not the content it names: that lives as
            // long as a cell or publication does.
            RefKind::Claims => {
                mark_cell::<crate::claims::Claim>(
                    store,
                    &entry.target,
                    &mut marked,
                    &mut seen_manifests,
                    |_, _| {},
                )
                .await
            }
            RefKind::Publication => match store.get_json::<AptPublication>(&entry.target).await {
                Ok(publication) => {
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
                        if !seen_manifests.insert(*chunk) {
                            continue;
                        }
                        match store
                            .get_json::<BTreeMap<String, crate::model::FileEntry>>(chunk)
                            .await
                        {
                            Ok(pool) => marked.extend(pool.values().map(|f| f.sha256)),
                            Err(e) => walked = Err(e),
                        }
                    }
                    walked
                }
                Err(e) => Err(e),
            },
            _ => store.get_blob(&entry.target).await.map(|_| ()),
        };
        if let Err(e) = walked {
            problems.push(format!("{context}: {e}"));
        }
    }
    mark_composite_parts(store, composites, &mut marked, problems).await;
    Ok(marked)
}

/// A marked composite (a joined index file) keeps the blobs it is made of.
async fn mark_composite_parts(
    store: &Store,
    composites: &[ListedComposite],
    marked: &mut HashSet<Digest>,
    problems: &mut Problems,
) {
    for (digest, ..) in composites {
        if !marked.contains(digest) {
            continue;
        }
        match store.composite(digest).await {
            Ok(Some(record)) => marked.extend(record.parts.iter().map(|p| p.sha256)),
            Ok(None) => {}
            Err(e) => problems.push(format!("composite {digest}: {e}")),
        }
    }
}

async fn mark_cell<P: crate::model::Record>(
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

/// Index fragments cached per cell chunk: keep those of live chunks (so the next
/// publish stays incremental) and drop the entries of chunks nothing references.
async fn mark_caches(store: &Store, marked: &mut HashSet<Digest>, dry_run: bool) -> Result<()> {
    let mut listed: Vec<_> = Vec::new();
    // Each entry's name starts with the digest it belongs to: a chunk's, or for
    // legacy hashes a package's; it goes when that is no longer marked.
    for prefix in [
        "cache/apt-fragments",
        "cache/rpm-fragments",
        "cache/legacy-hashes",
    ] {
        let found: Vec<_> = store
            .object_store()
            .list(Some(&Path::from(prefix)))
            .try_collect()
            .await?;
        listed.extend(found);
    }
    let mut stale = Vec::new();
    for meta in listed {
        let name = meta.location.to_string();
        let Some(chunk) = meta
            .location
            .filename()
            .and_then(|f| f.split('-').next())
            .and_then(|d| d.parse::<Digest>().ok())
        else {
            continue;
        };
        if !marked.contains(&chunk) {
            stale.push(meta.location.clone());
            continue;
        }
        let Ok(Some(bytes)) = store.get_named(&name, 64 * 1024 * 1024).await else {
            continue;
        };
        if name.starts_with("cache/apt-fragments/")
            && let Ok(f) = serde_json::from_slice::<crate::apt::fragments::Fragment>(&bytes)
        {
            marked.extend([f.text, f.gz, f.xz, f.contents, f.contents_gz]);
        } else if let Ok(f) = serde_json::from_slice::<crate::rpmrepo::fragments::Fragment>(&bytes)
        {
            marked.extend(f.parts.iter().flat_map(|p| [p.text, p.gz]));
        }
    }
    if !dry_run {
        delete_all(store, stale).await?;
    }
    Ok(())
}

/// Deletes every path, in the backend's batches.
async fn delete_all(store: &Store, paths: Vec<Path>) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let stream = Box::pin(futures::stream::iter(paths.into_iter().map(Ok)));
    store
        .object_store()
        .delete_stream(stream)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// What is under `blobs/`: each blob with its size and age in seconds, and the temp
/// files that a local write interrupted by a crash left beside them (`<hex>.tmp-<n>`).
#[derive(Default)]
struct BlobListing {
    blobs: Vec<(Digest, u64, i64)>,
    leftovers: Vec<(Path, u64, i64)>,
}

async fn list_blobs(store: &Store) -> Result<BlobListing> {
    let listed: Vec<_> = store
        .object_store()
        .list(Some(&Path::from("blobs/sha256")))
        .try_collect()
        .await?;
    let now = crate::time::now_unix();
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

#[derive(Debug, Default)]
pub struct GcReport {
    pub reachable: usize,
    pub swept: usize,
    pub swept_bytes: u64,
    /// Unreachable but younger than the grace period.
    pub kept_young: usize,
    pub pruned_generations: usize,
    /// Live blobs written loose because their pack was mostly dead and went.
    pub packed_rewritten: usize,
    /// Dead packed blobs kept because their pack is young or at least half alive.
    pub packed_held: usize,
}

/// Drop all but the newest `keep` generations of every ref (snapshots are never pruned).
async fn prune_history(
    store: &Store,
    keep: u64,
    dry_run: bool,
) -> Result<(Vec<(String, RefEntry)>, usize)> {
    let entries = all_ref_entries(store).await?;
    let mut newest: BTreeMap<&str, u64> = BTreeMap::new();
    for (name, entry) in &entries {
        let slot = newest.entry(name.as_str()).or_insert(0);
        *slot = (*slot).max(entry.generation);
    }
    let mut kept = Vec::new();
    let mut pruned = 0;
    for (name, entry) in &entries {
        let head = newest.get(name.as_str()).copied().unwrap_or(0);
        if entry.generation + keep > head || name.starts_with("snapshots/") {
            kept.push((name.clone(), entry.clone()));
            continue;
        }
        pruned += 1;
        if !dry_run {
            let path = Path::from(format!("refs/{name}/{:020}.json", entry.generation));
            store
                .object_store()
                .delete_stream(Box::pin(futures::stream::once(async { Ok(path) })))
                .try_collect::<Vec<_>>()
                .await?;
        }
    }
    Ok((kept, pruned))
}

pub async fn gc(
    store: &Store,
    grace: Duration,
    keep_generations: Option<u64>,
    dry_run: bool,
) -> Result<(GcReport, Problems)> {
    let mut report = GcReport::default();
    let entries = match keep_generations {
        Some(keep) => {
            let (kept, pruned) = prune_history(store, keep.max(1), dry_run).await?;
            report.pruned_generations = pruned;
            kept
        }
        None => all_ref_entries(store).await?,
    };
    let mut problems = Problems::new();
    let composites = crate::store::list_composites(store).await?;
    let mut marked = mark(store, &entries, &composites, &mut problems).await?;
    mark_caches(store, &mut marked, dry_run).await?;
    report.reachable = marked.len();
    if !problems.is_empty() {
        // A manifest we could not read may reference blobs we would otherwise sweep.
        return Ok((report, problems));
    }
    let mut doomed = Vec::new();
    let listing = list_blobs(store).await?;
    // A temp file is only ever written by a live write for a moment; past the grace
    // period it was left by a crash, and nothing can name it.
    for (path, size, age) in listing.leftovers {
        if age >= grace.as_secs() as i64 {
            report.swept += 1;
            report.swept_bytes += size;
            doomed.push(path);
        }
    }
    // A composite record nothing names goes like any blob; its parts were judged in `mark`.
    let blobs = listing
        .blobs
        .into_iter()
        .map(|(digest, size, age)| (digest, size, age, crate::store::blob_path(&digest)));
    for (digest, size, age, path) in blobs.chain(composites) {
        if marked.contains(&digest) {
            continue;
        }
        if age < grace.as_secs() as i64 {
            report.kept_young += 1;
            continue;
        }
        report.swept += 1;
        report.swept_bytes += size;
        doomed.push(path);
    }
    let packs = crate::pack_sweep::sweep_packs(store, &marked, grace, dry_run).await?;
    report.swept += packs.swept;
    report.swept_bytes += packs.swept_bytes;
    report.packed_rewritten = packs.rewritten;
    report.packed_held = packs.held;
    if !dry_run {
        delete_all(store, doomed).await?;
        delete_all(store, packs.indexes).await?;
        delete_all(store, packs.packs).await?;
    }
    Ok((report, problems))
}

/// Everything `verify` checks, as a list of problems (empty: healthy).
pub async fn verify(store: &Store, certificate: &[u8]) -> Result<Problems> {
    let entries = all_ref_entries(store).await?;
    let mut problems = Problems::new();
    check_schemas(store, &entries, &mut problems).await;
    let composites = crate::store::list_composites(store).await?;
    let marked = mark(store, &entries, &composites, &mut problems).await?;
    check_composite_schemas(store, &composites, &marked, &mut problems).await;
    store.refresh_packs().await?;
    for (name, why) in store.unreadable_packs() {
        problems.push(format!("pack {name}: its index cannot be read: {why}"));
    }
    for digest in &marked {
        match store.stream_blob(digest, None).await {
            Ok(stream) => {
                let mut hasher = crate::digest::Hasher::new();
                let mut body = stream.body;
                let mut failed = None;
                loop {
                    match body.try_next().await {
                        Ok(Some(chunk)) => hasher.update(&chunk),
                        Ok(None) => break,
                        Err(e) => {
                            failed = Some(e.to_string());
                            break;
                        }
                    }
                }
                let (actual, _) = hasher.finish();
                if let Some(e) = failed {
                    problems.push(format!("blob {digest}: cannot be read: {e}"));
                } else if actual != *digest {
                    problems.push(format!(
                        "blob {digest}: content hashes to {actual} (corrupted)"
                    ));
                }
            }
            Err(e) => problems.push(format!("blob {digest}: {e}")),
        }
    }
    check_published(store, &entries, certificate, &mut problems).await;
    problems.sort();
    problems.dedup();
    Ok(problems)
}

const SCHEMAS: &[(&str, &str)] = &[
    ("ref-entry", include_str!("../schema/ref-entry.schema.json")),
    ("apt-repo", include_str!("../schema/apt-repo.schema.json")),
    ("apt-cell", include_str!("../schema/apt-cell.schema.json")),
    ("apt-chunk", include_str!("../schema/apt-chunk.schema.json")),
    (
        "apt-source-chunk",
        include_str!("../schema/apt-source-chunk.schema.json"),
    ),
    (
        "apt-publication",
        include_str!("../schema/apt-publication.schema.json"),
    ),
    ("rpm-repo", include_str!("../schema/rpm-repo.schema.json")),
    ("rpm-cell", include_str!("../schema/rpm-cell.schema.json")),
    ("rpm-chunk", include_str!("../schema/rpm-chunk.schema.json")),
    (
        "claim-cell",
        include_str!("../schema/claim-cell.schema.json"),
    ),
    (
        "claim-chunk",
        include_str!("../schema/claim-chunk.schema.json"),
    ),
    (
        "rpm-publication",
        include_str!("../schema/rpm-publication.schema.json"),
    ),
    (
        "cap-registry",
        include_str!("../schema/cap-registry.schema.json"),
    ),
    (
        "cap-revocations",
        include_str!("../schema/cap-revocations.schema.json"),
    ),
    ("composite", include_str!("../schema/composite.schema.json")),
];

/// The records of the composites publications name, against composite.schema.json.
async fn check_composite_schemas(
    store: &Store,
    composites: &[ListedComposite],
    marked: &HashSet<Digest>,
    problems: &mut Problems,
) {
    let Some(validator) = validator("composite") else {
        return;
    };
    for (digest, _, _, path) in composites {
        if !marked.contains(digest) {
            continue;
        }
        let Ok(Some(bytes)) = store.get_named(path.as_ref(), 64 * 1024 * 1024).await else {
            continue;
        };
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            problems.push(format!("composite {digest}: its record is not JSON"));
            continue;
        };
        for error in validator.iter_errors(&value) {
            problems.push(format!(
                "composite {digest}: does not match composite.schema.json at {}: {error}",
                error.instance_path()
            ));
        }
    }
}

fn validator(name: &str) -> Option<jsonschema::Validator> {
    let text = SCHEMAS.iter().find(|(n, _)| *n == name)?.1;
    let schema: serde_json::Value = serde_json::from_str(text).ok()?;
    jsonschema::draft202012::new(&schema).ok()
}

async fn check_schemas(store: &Store, entries: &[(String, RefEntry)], problems: &mut Problems) {
    let validators: BTreeMap<&str, jsonschema::Validator> = SCHEMAS
        .iter()
        .filter_map(|(name, _)| validator(name).map(|v| (*name, v)))
        .collect();
    let check = |what: &str, schema: &str, value: &serde_json::Value, problems: &mut Problems| {
        if let Some(v) = validators.get(schema) {
            for error in v.iter_errors(value) {
                problems.push(format!(
                    "{what}: does not match {schema}.schema.json at {}: {error}",
                    error.instance_path()
                ));
            }
        }
    };
    let mut seen = HashSet::new();
    for (name, entry) in entries {
        let Ok(value) = serde_json::to_value(entry) else {
            continue;
        };
        check(
            &format!("ref {name} generation {}", entry.generation),
            "ref-entry",
            &value,
            problems,
        );
        if !seen.insert(entry.target) {
            continue;
        }
        let schema = match (ref_kind(name), name.split('/').nth(1)) {
            (RefKind::Repository, Some("apt")) => "apt-repo",
            (RefKind::Repository, _) => "rpm-repo",
            (RefKind::AptCell, _) | (RefKind::AptSourceCell, _) => "apt-cell",
            (RefKind::RpmCell, _) => "rpm-cell",
            (RefKind::Publication, Some("apt")) => "apt-publication",
            (RefKind::Publication, _) => "rpm-publication",
            (RefKind::CapList, _) if name.ends_with("issued") => "cap-registry",
            (RefKind::CapList, _) => "cap-revocations",
            (RefKind::Claims, _) => "claim-cell",
            (RefKind::Marker, _) => continue,
        };
        let Ok(manifest) = store.get_json::<serde_json::Value>(&entry.target).await else {
            continue;
        };
        check(
            &format!(
                "{name} generation {} manifest {}",
                entry.generation, entry.target
            ),
            schema,
            &manifest,
            problems,
        );
        let chunk_schema = match schema {
            "apt-cell" if name.ends_with("/source") => "apt-source-chunk",
            "apt-cell" => "apt-chunk",
            "rpm-cell" => "rpm-chunk",
            "claim-cell" => "claim-chunk",
            _ => continue,
        };
        for chunk in manifest["chunks"].as_array().into_iter().flatten() {
            let Some(digest) = chunk["digest"]
                .as_str()
                .and_then(|d| d.parse::<Digest>().ok())
            else {
                continue;
            };
            if seen.insert(digest)
                && let Ok(value) = store.get_json::<serde_json::Value>(&digest).await
            {
                check(&format!("chunk {digest}"), chunk_schema, &value, problems);
            }
        }
    }
}

/// The newest publication of every tree: its index files match what Release or
/// repomd.xml promise, and the signatures verify with the repository key.
async fn check_published(
    store: &Store,
    entries: &[(String, RefEntry)],
    certificate: &[u8],
    problems: &mut Problems,
) {
    let mut newest: BTreeMap<&str, &RefEntry> = BTreeMap::new();
    for (name, entry) in entries.iter().filter(|(n, _)| n.starts_with("published/")) {
        if newest
            .get(name.as_str())
            .is_none_or(|e| e.generation < entry.generation)
        {
            newest.insert(name, entry);
        }
    }
    for (name, entry) in newest {
        let Ok(publication) = store.get_json::<AptPublication>(&entry.target).await else {
            continue;
        };
        let read = async |path: &str| match publication.files.get(path) {
            Some(file) => store.get_blob(&file.sha256).await.ok(),
            None => None,
        };
        if name.starts_with("published/apt/") {
            let dists = format!("dists/{}", publication.suite);
            let Some(release) = read(&format!("{dists}/Release")).await else {
                problems.push(format!("{name}: no Release"));
                continue;
            };
            let text = String::from_utf8_lossy(&release);
            for line in text
                .lines()
                .skip_while(|l| *l != "SHA256:")
                .skip(1)
                .take_while(|l| l.starts_with(' '))
            {
                let parts: Vec<&str> = line.split_whitespace().collect();
                let (Some(hash), Some(size), Some(path)) =
                    (parts.first(), parts.get(1), parts.get(2))
                else {
                    continue;
                };
                let listed = publication.files.get(&format!("{dists}/{path}"));
                if listed.is_none_or(|f| f.sha256.hex() != *hash || f.size.to_string() != *size) {
                    problems.push(format!(
                        "{name}: Release lists {path} with {hash}, but the published file differs"
                    ));
                }
            }
            match read(&format!("{dists}/Release.gpg")).await {
                Some(signature)
                    if crate::agent::openpgp::verify_detached(
                        certificate,
                        &signature,
                        &release,
                    ) => {}
                _ => problems.push(format!(
                    "{name}: Release.gpg does not verify with the repository key"
                )),
            }
            match read(&format!("{dists}/InRelease")).await {
                Some(signed)
                    if crate::agent::openpgp::verify_cleartext(certificate, &signed)
                        .is_some_and(|t| t.trim_end() == text.trim_end()) => {}
                _ => problems.push(format!(
                    "{name}: InRelease does not verify or does not carry Release"
                )),
            }
        } else {
            let base = format!("{}/repodata", publication.suite);
            let Some(repomd) = read(&format!("{base}/repomd.xml")).await else {
                problems.push(format!("{name}: no repomd.xml"));
                continue;
            };
            let text = String::from_utf8_lossy(&repomd);
            for href in text
                .split("<location href=\"")
                .skip(1)
                .filter_map(|s| s.split('"').next())
            {
                let declared = href
                    .strip_prefix("repodata/")
                    .and_then(|f| f.split('-').next())
                    .unwrap_or_default();
                let listed = publication
                    .files
                    .get(&format!("{}/{href}", publication.suite));
                if listed.is_none_or(|f| f.sha256.hex() != declared) {
                    problems.push(format!(
                        "{name}: repomd.xml names {href}, but the published file differs"
                    ));
                }
            }
            match read(&format!("{base}/repomd.xml.asc")).await {
                Some(signature)
                    if crate::agent::openpgp::verify_detached(certificate, &signature, &repomd) => {
                }
                _ => problems.push(format!(
                    "{name}: repomd.xml.asc does not verify with the repository key"
                )),
            }
        }
    }
}
