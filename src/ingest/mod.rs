//! The upload pipeline shared by HTTP uploads and local imports: inspect the
//! spooled file, decide which cell it belongs to and whether the cap covers that
//! cell, refuse identity conflicts, and only then store the blob and add the
//! package to its cell. Every refusal happens before anything is written.

pub mod dsc;
pub mod format;
mod pool;
pub mod rpm;
pub mod rpm_sign;

use crate::repo::format::Apt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Serialize;

use crate::caps::Scope;
use crate::formats::deb::{self, DebError, DebInfo, Limits};
use crate::formats::package_bytes::PackageBytes;
use crate::repo::cells::{self, AddOutcome};
use crate::repo::claims;
use crate::repo::definitions::{self, RepoError};
use crate::repo::model::{self, AptPackage, AptRepo, Record};
use crate::store::{Store, StoreError};
use crate::util::digest::Digest;
use pool::pool_path;

/// A cell of an APT repository: where one package lands.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct CellAddr {
    pub repo: String,
    pub suite: String,
    pub component: String,
    /// An architecture of the suite, or `all`.
    pub arch: String,
}

impl CellAddr {
    pub fn ref_name(&self) -> Result<crate::store::RefName, StoreError> {
        model::cell_ref(&self.repo, &self.suite, &self.component, &self.arch)
    }

    /// The scope string a cap names for this cell.
    pub fn scope_string(&self) -> String {
        format!(
            "apt/{}/dists/{}/{}/binary-{}",
            self.repo, self.suite, self.component, self.arch
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Deb(#[from] DebError),
    #[error("{0}")]
    BadPackage(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadTarget(String),
    #[error(
        "{identity} already exists in {cell} with different contents (sha256 {existing}), or another epoch of it does (the epoch is not part of the file name); bump the version to publish a rebuild"
    )]
    Conflict {
        identity: String,
        cell: String,
        existing: Digest,
    },
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<RepoError> for IngestError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Store(s) => IngestError::Store(s),
            RepoError::NotFound(name) => IngestError::NotFound(format!("no repository apt/{name}")),
            other => IngestError::BadTarget(other.to_string()),
        }
    }
}

impl IngestError {
    /// Whether the uploader can fix this (the package, the cap or the target), as
    /// opposed to a fault of the server or its storage.
    pub fn is_uploaders(&self) -> bool {
        !matches!(
            self,
            IngestError::Deb(DebError::Io(_)) | IngestError::Store(_) | IngestError::Internal(_)
        )
    }

    /// A short machine-readable code for the JSON answer.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::Deb(DebError::TooLarge { .. }) => "too-large",
            IngestError::Deb(DebError::Io(_)) => "io",
            IngestError::Deb(_) | IngestError::BadPackage(_) => "invalid-package",
            IngestError::Forbidden(_) => "outside-scope",
            IngestError::NotFound(_) => "no-such-cell",
            IngestError::BadTarget(_) => "bad-target",
            IngestError::Conflict { .. } => "conflict",
            IngestError::Store(_) => "storage",
            IngestError::Internal(_) => "internal",
        }
    }
}

/// What an upload did.
#[derive(Debug, Clone, Serialize)]
pub struct Ingested {
    pub digest: Digest,
    pub size: u64,
    pub package: PackageId,
    pub cell: String,
    pub pool_path: String,
    pub status: UploadStatus,
    pub cell_generation: u64,
    #[serde(skip)]
    pub target: PublishTarget,
}

/// What an upload did; answered as `"stored"`, `"already-present"` or `"staged"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UploadStatus {
    /// The package is new to its cell.
    Stored,
    /// The same bytes were uploaded to this cell before: nothing changed.
    AlreadyPresent,
    /// A source file kept until the `.dsc` that names it arrives.
    Staged,
}

impl UploadStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UploadStatus::Stored => "stored",
            UploadStatus::AlreadyPresent => "already-present",
            UploadStatus::Staged => "staged",
        }
    }
}

impl std::fmt::Display for UploadStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to republish after an upload, and which cell generation to wait for.
#[derive(Debug, Clone)]
pub struct PublishTarget {
    pub repo: String,
    /// Published trees that list the cell: an APT suite, or RPM `<release>/<arch>` trees.
    pub trees: Vec<String>,
    pub cell_ref: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PackageId {
    pub name: String,
    pub version: String,
    pub architecture: String,
}

/// Inspect a spooled upload off the async threads (it decompresses).
pub async fn inspect(spooled: &Spooled, limits: &Limits) -> Result<DebInfo, IngestError> {
    let (spooled, limits) = (spooled.clone(), limits.clone());
    tokio::task::spawn_blocking(move || deb::inspect_deb(spooled.source(), &limits))
        .await
        .map_err(|e| IngestError::Internal(e.to_string()))?
        .map_err(IngestError::from)
}

/// Decide the cell for a package of architecture `arch`, given the scope the
/// uploader aims at (`target`, at least down to the component) and the scope
/// its cap grants.
pub fn resolve_cell(
    definition: &AptRepo,
    target: &Scope,
    granted: &Scope,
    arch: &str,
) -> Result<CellAddr, IngestError> {
    if !granted.covers(target) {
        return Err(IngestError::Forbidden(format!(
            "the target {target} is outside the cap's scope {granted}"
        )));
    }
    let (Some(suite), Some(component), target_arch) = target.apt_parts() else {
        return Err(IngestError::BadTarget(format!(
            "the cap covers {target}, which is more than one component: name the target cell, \
             e.g. `caprepo upload --to {target}/<suite>/<component>` (or ?target= on the HTTP API)"
        )));
    };
    let suite_def = definition
        .suites
        .iter()
        .find(|s| s.name == suite)
        .ok_or_else(|| {
            IngestError::NotFound(format!(
                "repository apt/{} has no suite {suite}",
                definition.name
            ))
        })?;
    if !suite_def.components.iter().any(|c| c == component) {
        return Err(IngestError::NotFound(format!(
            "suite {suite} of apt/{} has no component {component}",
            definition.name
        )));
    }
    let addr = |arch: &str| CellAddr {
        repo: definition.name.clone(),
        suite: suite.to_string(),
        component: component.to_string(),
        arch: arch.to_string(),
    };
    if arch == "all" {
        // Architecture: all lands in the component's shared cell; any binary-<arch> cap of the
        // component may put it there, since it is listed in every arch's index anyway.
        if let Some(target_arch) = target_arch
            && !suite_def.architectures.iter().any(|a| a == target_arch)
        {
            return Err(IngestError::NotFound(format!(
                "suite {suite} has no architecture {target_arch}"
            )));
        }
        return Ok(addr("all"));
    }
    let cell = addr(arch);
    let cell_scope = Scope::apt_cell(&cell.repo, &cell.suite, &cell.component, arch)
        .map_err(|e| IngestError::BadTarget(e.to_string()))?;
    if !target.covers(&cell_scope) || !granted.covers(&cell_scope) {
        return Err(IngestError::Forbidden(format!(
            "the package is for architecture {arch}, but the cap only covers {granted}"
        )));
    }
    if !suite_def.architectures.iter().any(|a| a == arch) {
        return Err(IngestError::NotFound(format!(
            "suite {suite} of apt/{} has no architecture {arch} (it has {})",
            definition.name,
            suite_def.architectures.join(", ")
        )));
    }
    Ok(cell)
}

/// A spooled upload: a local file and its digest, computed while it was received.
/// Cheap to clone: inspection takes a copy to the blocking pool.
#[derive(Clone)]
pub struct Spooled {
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
    /// The file is a private spool that the store may take over by renaming it, instead
    /// of copying and re-hashing it (false for a user's own files, e.g. on import).
    pub movable: bool,
    /// The whole file, when it was read into memory (small packages on import).
    pub bytes: Option<Bytes>,
}

impl Spooled {
    /// Where inspection reads the package from: the in-memory copy when there is one.
    pub fn source(&self) -> PackageBytes<'_> {
        match &self.bytes {
            Some(bytes) => PackageBytes::Memory(bytes),
            None => PackageBytes::File(&self.path),
        }
    }

    /// Stores the package itself: from memory when it was read whole (its digest was
    /// computed from those bytes), else from its file (renamed in when `movable`).
    pub async fn store_in(&self, store: &Store) -> Result<crate::store::BlobMeta, StoreError> {
        match &self.bytes {
            Some(bytes) => store.put_blob_with_digest(self.digest, bytes.clone()).await,
            None => {
                store
                    .put_blob_from_spool(&self.path, self.digest, self.movable)
                    .await
            }
        }
    }
}

/// Everything after authentication: inspect, place, refuse conflicts, store, add.
/// A .deb inspected and placed: everything but the blobs and the cell.
struct Placed {
    addr: CellAddr,
    cell_ref: crate::store::RefName,
    id: PackageId,
    filename: String,
    info: DebInfo,
}

/// The APT repository a target scope names.
pub async fn target_repo(store: &Store, target: &Scope) -> Result<AptRepo, IngestError> {
    let repo = target
        .repo()
        .ok_or_else(|| IngestError::BadTarget(format!("{target} names no repository")))?;
    if target.kind() != "apt" {
        return Err(IngestError::BadTarget(format!(
            "{target} is not an APT scope; .deb files go to apt/..."
        )));
    }
    Ok(definitions::load_repo::<Apt>(store, repo).await?)
}

async fn place(
    definition: &AptRepo,
    limits: &Limits,
    spooled: &Spooled,
    target: &Scope,
    granted: &Scope,
) -> Result<Placed, IngestError> {
    let info = inspect(spooled, limits).await?;
    place_inspected(definition, info, target, granted)
}

fn place_inspected(
    definition: &AptRepo,
    info: DebInfo,
    target: &Scope,
    granted: &Scope,
) -> Result<Placed, IngestError> {
    let control = &info.control;
    let addr = resolve_cell(definition, target, granted, control.architecture())?;
    let cell_ref = addr.ref_name()?;
    let id = PackageId {
        name: control.package().to_string(),
        version: control.version().to_string(),
        architecture: control.architecture().to_string(),
    };
    let filename = pool_path(
        &addr.component,
        control.source_name(),
        &id.name,
        &id.version,
        &id.architecture,
    );
    Ok(Placed {
        addr,
        cell_ref,
        id,
        filename,
        info,
    })
}

impl PlacedPackage for Placed {
    type Record = AptPackage;

    fn cell_ref(&self) -> &crate::store::RefName {
        &self.cell_ref
    }

    fn identity(&self) -> (&str, &str, &str) {
        (&self.id.name, &self.id.version, &self.id.architecture)
    }

    fn answer(&self, spooled: &Spooled, status: UploadStatus, generation: u64) -> Ingested {
        Ingested {
            digest: spooled.digest,
            size: spooled.size,
            package: self.id.clone(),
            cell: self.addr.scope_string(),
            pool_path: self.filename.clone(),
            status,
            cell_generation: generation,
            target: PublishTarget {
                repo: self.addr.repo.clone(),
                trees: vec![self.addr.suite.clone()],
                cell_ref: self.cell_ref.to_string(),
            },
        }
    }

    fn conflict(&self, existing: Digest) -> IngestError {
        IngestError::Conflict {
            identity: format!(
                "{} {} ({})",
                self.id.name, self.id.version, self.id.architecture
            ),
            cell: self.addr.scope_string(),
            existing,
        }
    }
}

impl Placed {
    /// Store the package and its file list; the record to add to the cell.
    async fn store(
        &self,
        store: &Store,
        spooled: &Spooled,
        actor: &str,
    ) -> Result<AptPackage, IngestError> {
        let blob = spooled.store_in(store).await?;
        let mut file_list = self.info.files.join("\n");
        if !file_list.is_empty() {
            file_list.push('\n');
        }
        let files = store.put_blob_and_hold(Bytes::from(file_list)).await?;
        Ok(self.record(blob.digest, blob.size, files.digest, actor))
    }

    fn record(&self, sha256: Digest, size: u64, files: Digest, actor: &str) -> AptPackage {
        let control = &self.info.control;
        AptPackage {
            name: self.id.name.clone(),
            version: self.id.version.clone(),
            architecture: self.id.architecture.clone(),
            source: control.source_name().to_string(),
            control: control.text().to_string(),
            filename: self.filename.clone(),
            size,
            sha256,
            files,
            uploaded_at: crate::util::time::now_unix(),
            uploaded_by: actor.to_string(),
        }
    }

    /// Refuses a package whose Packages stanza would not be well-formed: publishing
    /// would leave it out (see [`crate::publish::publish_check`]), so the uploader hears it now.
    fn check_publishable(&self, spooled: &Spooled) -> Result<(), IngestError> {
        let record = self.record(spooled.digest, spooled.size, spooled.digest, "");
        match crate::publish::publish_check::stanza_problem(&record) {
            Some(why) => Err(IngestError::BadPackage(format!(
                "its Packages stanza would not be well-formed: {why}"
            ))),
            None => Ok(()),
        }
    }
}

/// Everything after authentication: inspect, place, refuse conflicts, store, add.
pub async fn ingest(
    store: &Store,
    limits: &Limits,
    spooled: &Spooled,
    target: &Scope,
    granted: &Scope,
    actor: &str,
) -> Result<Ingested, IngestError> {
    let definition = target_repo(store, target).await?;
    let mut placed = place(&definition, limits, spooled, target, granted).await?;
    placed.check_publishable(spooled)?;
    refuse_shadowing(store, &definition, &placed.addr, &placed.id.name, granted).await?;
    // Refuse before writing anything: a refused upload leaves the store as it was.
    if let Some(answer) = check_existing(store, &placed, spooled).await? {
        return Ok(answer);
    }
    let pool = claims::Domain {
        kind: "apt",
        repo: &definition.name,
    };
    placed.filename = claims::place(store, pool, &placed.filename, spooled.digest, actor)
        .await?
        .map_err(|existing| placed.conflict(existing))?;
    let package = placed.store(store, spooled, actor).await?;
    add_to_cell(store, &placed, spooled, package, actor).await
}

/// An `Architecture: all` package is listed in every architecture's index, and any
/// `binary-<arch>` cap of its component may upload it (arch:all packages are built on one
/// architecture's builders). It may not take the name of a package built for an
/// architecture the cap does not cover: clients of that architecture would then be
/// offered the newer of the two, so an amd64 cap could replace arm64's `openssl`.
async fn refuse_shadowing(
    store: &Store,
    definition: &AptRepo,
    addr: &CellAddr,
    name: &str,
    granted: &Scope,
) -> Result<(), IngestError> {
    if addr.arch != "all" {
        return Ok(());
    }
    let Some(suite) = definition.suites.iter().find(|s| s.name == addr.suite) else {
        return Ok(());
    };
    for arch in &suite.architectures {
        let scope = Scope::apt_cell(&addr.repo, &addr.suite, &addr.component, arch)
            .map_err(|e| IngestError::BadTarget(e.to_string()))?;
        if granted.covers(&scope) {
            continue;
        }
        let cell = model::cell_ref(&addr.repo, &addr.suite, &addr.component, arch)?;
        if cells::has_name::<AptPackage>(store, &cell, name).await? {
            return Err(IngestError::Forbidden(format!(
                "{name} is built for {arch} in {}; an Architecture: all {name} would be offered to \
                 {arch} clients too, so it needs a cap that covers binary-{arch} as well",
                addr.scope_string()
                    .rsplit_once("/binary-")
                    .map_or("", |(s, _)| s)
            )));
        }
    }
    Ok(())
}

/// Whether the .deb at `spooled` is already in the cell it would go to, with these bytes.
pub async fn already_in_cell(
    store: &Store,
    limits: &Limits,
    spooled: &Spooled,
    target: &Scope,
    granted: &Scope,
) -> Result<bool, IngestError> {
    let definition = target_repo(store, target).await?;
    let placed = place(&definition, limits, spooled, target, granted).await?;
    Ok(check_existing(store, &placed, spooled).await?.is_some())
}

/// A package of either kind, inspected and placed in its cell: what the shared
/// last steps of an upload need.
pub(crate) trait PlacedPackage {
    type Record: Record;
    fn cell_ref(&self) -> &crate::store::RefName;
    /// Name, full version and architecture: what identifies it within the cell.
    fn identity(&self) -> (&str, &str, &str);
    fn answer(&self, spooled: &Spooled, status: UploadStatus, generation: u64) -> Ingested;
    fn conflict(&self, existing: Digest) -> IngestError;
}

/// When the cell already holds the package's identity: the answer for the same
/// bytes, a conflict for other bytes; `None` when it is new.
pub(crate) async fn check_existing<P: PlacedPackage>(
    store: &Store,
    placed: &P,
    spooled: &Spooled,
) -> Result<Option<Ingested>, IngestError> {
    let (name, version, arch) = placed.identity();
    let Some(existing) =
        cells::find::<P::Record>(store, placed.cell_ref(), name, version, arch).await?
    else {
        return Ok(None);
    };
    if existing.upload_digest() != spooled.digest {
        return Err(placed.conflict(existing.upload_digest()));
    }
    let generation = store
        .ref_head(placed.cell_ref())
        .await?
        .map_or(0, |h| h.generation);
    Ok(Some(placed.answer(
        spooled,
        UploadStatus::AlreadyPresent,
        generation,
    )))
}

/// Adds the stored package to its cell and answers the uploader.
pub(crate) async fn add_to_cell<P: PlacedPackage>(
    store: &Store,
    placed: &P,
    spooled: &Spooled,
    record: P::Record,
    actor: &str,
) -> Result<Ingested, IngestError> {
    match cells::add_package(store, placed.cell_ref(), record, actor).await? {
        AddOutcome::Added { generation } => {
            Ok(placed.answer(spooled, UploadStatus::Stored, generation))
        }
        AddOutcome::AlreadyPresent { generation } => {
            Ok(placed.answer(spooled, UploadStatus::AlreadyPresent, generation))
        }
        AddOutcome::Conflict { existing } => Err(placed.conflict(existing)),
    }
}

/// For bulk imports: place and store a .deb the caller inspected (in the same trip to
/// the blocking pool that read it), leaving the cell write to the caller (who batches
/// many packages into one write per cell) and the pool path's claim to
/// [`claim_pool_paths`].
pub async fn prepare(
    store: &Store,
    definition: &AptRepo,
    info: DebInfo,
    spooled: &Spooled,
    target: &Scope,
    actor: &str,
) -> Result<(crate::store::RefName, AptPackage, Ingested), IngestError> {
    let placed = place_inspected(definition, info, target, target)?;
    placed.check_publishable(spooled)?;
    let package = placed.store(store, spooled, actor).await?;
    Ok((
        placed.cell_ref.clone(),
        package,
        placed.answer(spooled, UploadStatus::Stored, 0),
    ))
}

/// Hash a local file (for imports that did not come through the HTTP spool).
pub fn hash_file(path: &Path) -> std::io::Result<(Digest, u64)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = crate::util::digest::Hasher::new();
    let mut buf = crate::store::copy_buffer_for(file.metadata()?.len());
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

/// For bulk imports: claims the pool path of every package about to be added to
/// `repo`'s cells, in one write per claims shard, and moves a package whose usual path
/// names other bytes to its own ([`claims::own_path`]). A package whose own path is
/// taken too comes back as `Err` with the digest holding it.
pub async fn claim_pool_paths(
    store: &Store,
    repo: &str,
    packages: &mut [AptPackage],
    actor: &str,
) -> Result<Vec<Result<(), Digest>>, StoreError> {
    let wanted = packages
        .iter()
        .map(|p| (p.filename.clone(), p.sha256))
        .collect();
    let pool = claims::Domain { kind: "apt", repo };
    let placed = claims::place_all(store, pool, wanted, actor).await?;
    Ok(packages
        .iter_mut()
        .zip(placed)
        .map(|(package, placed)| {
            package.filename = placed?;
            Ok(())
        })
        .collect())
}
