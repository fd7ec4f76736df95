//! Uploading an `.rpm`: verify it, place it in its `<release>/<arch>` cell (or the
//! release's shared `noarch` / `src` cell), refuse identity conflicts, have the
//! agent sign its header when the repository signs packages, render its
//! repodata entries against the stored bytes, and add it to the cell.

use std::path::Path;

use bytes::Bytes;

use super::inspect::{self, RpmError, RpmInfo};
use super::{sign, xml};
use crate::agent::AgentClient;
use crate::caps::Scope;
use crate::cells::{self, AddOutcome};
use crate::ingest::{IngestError, Ingested, PackageId, PublishTarget, Spooled};
use crate::model::{self, RpmPackage, RpmRepo};
use crate::repos;

impl From<RpmError> for IngestError {
    fn from(e: RpmError) -> Self {
        match e {
            RpmError::Io(io) => IngestError::Internal(io.to_string()),
            other => IngestError::BadPackage(other.to_string()),
        }
    }
}

/// The cell a package of `arch` goes to, checked against the target and the cap.
fn resolve_cell(
    definition: &RpmRepo,
    target: &Scope,
    granted: &Scope,
    arch: &str,
) -> Result<(String, String), IngestError> {
    if !granted.covers(target) {
        return Err(IngestError::Forbidden(format!(
            "the target {target} is outside the cap's scope {granted}"
        )));
    }
    let segments = target.segments();
    let Some(release) = segments.get(2) else {
        return Err(IngestError::BadTarget(format!(
            "the cap covers {target}, which is more than one release: name it, e.g. `caprepo upload --to {target}/<release>`"
        )));
    };
    if !definition.releases.contains(release) {
        return Err(IngestError::NotFound(format!(
            "rpm/{} has no release {release}",
            definition.name
        )));
    }
    let target_arch = segments.get(3);
    if let Some(target_arch) = target_arch
        && !definition.architectures.contains(target_arch)
    {
        return Err(IngestError::NotFound(format!(
            "rpm/{} has no architecture {target_arch}",
            definition.name
        )));
    }
    if arch == "noarch" || arch == "src" {
        // Shared by every architecture of the release: any arch cap of the release may add them.
        return Ok((release.clone(), arch.to_string()));
    }
    let cell: Scope = format!("rpm/{}/{release}/{arch}", definition.name)
        .parse()
        .map_err(|e: crate::caps::scope::ScopeError| IngestError::BadPackage(e.to_string()))?;
    if !target.covers(&cell) || !granted.covers(&cell) {
        return Err(IngestError::Forbidden(format!(
            "the package is for architecture {arch}, but the cap only covers {granted}"
        )));
    }
    if !definition.architectures.iter().any(|a| a == arch) {
        return Err(IngestError::NotFound(format!(
            "rpm/{} has no architecture {arch} (it has {})",
            definition.name,
            definition.architectures.join(", ")
        )));
    }
    Ok((release.clone(), arch.to_string()))
}

/// The published trees that list a cell: its own arch, every arch for noarch, `source` for src.
pub fn trees_of(definition: &RpmRepo, release: &str, cell_arch: &str) -> Vec<String> {
    match cell_arch {
        "src" => vec![format!("{release}/source")],
        "noarch" => definition
            .architectures
            .iter()
            .map(|a| format!("{release}/{a}"))
            .collect(),
        arch => vec![format!("{release}/{arch}")],
    }
}

fn location(info: &RpmInfo) -> String {
    let first = info.name.chars().next().unwrap_or('_').to_ascii_lowercase();
    format!(
        "Packages/{first}/{}-{}-{}.{}.rpm",
        info.name, info.version, info.release, info.arch
    )
}

pub async fn ingest(
    store: &crate::store::Store,
    agent: &AgentClient,
    spooled: &Spooled,
    target: &Scope,
    granted: &Scope,
    actor: &str,
) -> Result<Ingested, IngestError> {
    let repo = target
        .repo()
        .ok_or_else(|| IngestError::BadTarget(format!("{target} names no repository")))?;
    let definition = repos::load_rpm_repo(store, repo)
        .await
        .map_err(|e| match e {
            repos::RepoError::NotFound(name) => {
                IngestError::NotFound(format!("no repository rpm/{name}"))
            }
            other => IngestError::from(other),
        })?;
    let path = spooled.path.clone();
    let info = tokio::task::spawn_blocking(move || inspect::inspect_rpm(&path))
        .await
        .map_err(|e| IngestError::Internal(e.to_string()))??;
    let (release, cell_arch) = resolve_cell(&definition, target, granted, &info.arch)?;
    let cell_ref = model::rpm_cell_ref(repo, &release, &cell_arch)?;
    let evr = format!("{}:{}-{}", info.epoch, info.version, info.release);
    let id = PackageId {
        name: info.name.clone(),
        version: evr.clone(),
        architecture: info.arch.clone(),
    };
    let cell_scope = format!("rpm/{repo}/{release}/{cell_arch}");
    let publish = PublishTarget {
        repo: repo.to_string(),
        trees: trees_of(&definition, &release, &cell_arch),
        cell_ref: cell_ref.to_string(),
    };
    let location = location(&info);
    let answer = |status, generation| Ingested {
        digest: spooled.digest,
        size: spooled.size,
        package: id.clone(),
        cell: cell_scope.clone(),
        pool_path: format!(
            "{release}/{}/{location}",
            if cell_arch == "src" {
                "source"
            } else {
                cell_arch.as_str()
            }
        ),
        status,
        cell_generation: generation,
        target: publish.clone(),
    };
    let conflict = |existing| IngestError::Conflict {
        identity: format!("{} {evr} ({})", info.name, info.arch),
        cell: cell_scope.clone(),
        existing,
    };

    if let Some(existing) =
        cells::find::<RpmPackage>(store, &cell_ref, &info.name, &evr, &info.arch).await?
    {
        if existing.uploaded_sha256 != spooled.digest {
            return Err(conflict(existing.uploaded_sha256));
        }
        let generation = store.ref_head(&cell_ref).await?.map_or(0, |h| h.generation);
        return Ok(answer("already-present", generation));
    }

    // Sign into a second spool file; the stored blob is the signed package.
    let signed_path = spooled.path.with_extension("signed");
    let _cleanup = RemoveOnDrop(signed_path.clone());
    let stored_path: &Path = if definition.sign_packages {
        sign::sign_with_agent(agent, &spooled.path, &signed_path)
            .await
            .map_err(|e| IngestError::Internal(format!("signing the package: {e}")))?;
        &signed_path
    } else {
        &spooled.path
    };
    let stored_owned = stored_path.to_path_buf();
    let (digest, size, header_start, header_end) = tokio::task::spawn_blocking(move || {
        let (digest, size) = crate::ingest::hash_file(&stored_owned)
            .map_err(|e| IngestError::Internal(e.to_string()))?;
        let (meta, _) = inspect::read_metadata(&stored_owned)?;
        let offsets = meta.get_package_segment_offsets();
        Ok::<_, IngestError>((digest, size, offsets.header, offsets.payload))
    })
    .await
    .map_err(|e| IngestError::Internal(e.to_string()))??;
    let blob = store.put_blob_file(stored_path, digest).await?;
    let hex = blob.digest.hex();
    let now = crate::time::now_unix();
    let stored = xml::Stored {
        sha256: &hex,
        size,
        location: &location,
        file_time: now,
        header_start,
        header_end,
    };
    let primary = store
        .put_blob(Bytes::from(xml::primary(&info, &stored)))
        .await?;
    let filelists = store
        .put_blob(Bytes::from(xml::filelists(&info, &hex)))
        .await?;
    let other = store.put_blob(Bytes::from(xml::other(&info, &hex))).await?;
    let record = RpmPackage {
        name: info.name.clone(),
        epoch: info.epoch,
        version: info.version.clone(),
        release: info.release.clone(),
        arch: info.arch.clone(),
        location: location.clone(),
        size: blob.size,
        sha256: blob.digest,
        uploaded_sha256: spooled.digest,
        signed: definition.sign_packages,
        primary: primary.digest,
        filelists: filelists.digest,
        other: other.digest,
        uploaded_at: now,
        uploaded_by: actor.to_string(),
    };
    match cells::add_package(store, &cell_ref, record, actor).await? {
        AddOutcome::Added { generation } => Ok(answer("stored", generation)),
        AddOutcome::AlreadyPresent { generation } => Ok(answer("already-present", generation)),
        AddOutcome::Conflict { existing } => Err(conflict(existing)),
    }
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
