//! Uploading an `.rpm`: verify it, place it in its `<release>/<arch>` cell (or the
//! release's shared `noarch` / `src` cell), refuse identity conflicts, have the
//! agent sign its header when the repository signs packages, render its
//! repodata entries against the stored bytes, and add it to the cell.

use crate::repo::format::{RepoFormat, Rpm};
use std::path::Path;

use bytes::Bytes;

use super::rpm_sign;
use crate::agent::Signer;
use crate::caps::Scope;
use crate::formats::package_bytes::PackageBytes;
use crate::formats::rpm::inspect::{self, RpmError, RpmInfo};
use crate::formats::rpm::xml;
use crate::ingest::{
    IngestError, Ingested, PackageId, PlacedPackage, PublishTarget, Spooled, add_to_cell,
    check_existing,
};
use crate::repo::definitions;
use crate::repo::model::{self, RpmEntries, RpmPackage, RpmRepo};

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

fn location(info: &RpmInfo) -> String {
    let first = info.name.chars().next().unwrap_or('_').to_ascii_lowercase();
    format!(
        "Packages/{first}/{}-{}-{}.{}.rpm",
        info.name, info.version, info.release, info.arch
    )
}

/// Name, version, release and arch become the package's file name in the tree
/// (`<name>-<version>-<release>.<arch>.rpm`): each must be one plain path segment in
/// the characters `schema/rpm-chunk.schema.json` allows (no '/', white space, control
/// characters, markup; no '-' in version or release, as rpmbuild requires), and the
/// whole name must fit a file system's 255 bytes.
fn check_file_name(info: &RpmInfo) -> Result<(), IngestError> {
    let fields = [
        ("name", info.name.as_str()),
        ("version", info.version.as_str()),
        ("release", info.release.as_str()),
        ("arch", info.arch.as_str()),
    ];
    for (field, value) in fields {
        let mut chars = value.chars();
        let first_ok = chars.next().is_some_and(|c| {
            if field == "arch" {
                c.is_ascii_lowercase() || c.is_ascii_digit()
            } else {
                c.is_ascii_alphanumeric() || "_+~^".contains(c)
            }
        });
        let rest_ok = chars.all(|c| match field {
            "arch" => c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_',
            "name" => c.is_ascii_alphanumeric() || "._+~^-".contains(c),
            _ => c.is_ascii_alphanumeric() || "._+~^".contains(c),
        });
        if !(first_ok && rest_ok) {
            return Err(IngestError::BadPackage(format!(
                "the rpm's {field} {:?} cannot be part of its file name: use letters, digits \
                 and . _ + ~ ^ (and - in the name only; lowercase, digits and _ in the arch)",
                value.chars().take(100).collect::<String>()
            )));
        }
    }
    let file_name = format!(
        "{}-{}-{}.{}.rpm",
        info.name, info.version, info.release, info.arch
    );
    if file_name.len() > 255 {
        return Err(IngestError::BadPackage(format!(
            "the package's file name would be {} bytes long; file systems and clients allow 255",
            file_name.len()
        )));
    }
    Ok(())
}

/// A `noarch` package is listed in every architecture's tree of its release, and any arch
/// cap of the release may upload it. It may not take the name of a package built for an
/// architecture the cap does not cover: dnf on that architecture would be offered it too.
async fn refuse_shadowing(
    store: &crate::store::Store,
    definition: &RpmRepo,
    placed: &Placed,
    granted: &Scope,
) -> Result<(), IngestError> {
    if placed.cell_arch != "noarch" {
        return Ok(());
    }
    for arch in &definition.architectures {
        let scope: Scope = format!("rpm/{}/{}/{arch}", definition.name, placed.release)
            .parse()
            .map_err(|e: crate::caps::scope::ScopeError| IngestError::BadTarget(e.to_string()))?;
        if granted.covers(&scope) {
            continue;
        }
        let cell = model::rpm_cell_ref(&definition.name, &placed.release, arch)?;
        if crate::repo::cells::has_name::<RpmPackage>(store, &cell, &placed.info.name).await? {
            return Err(IngestError::Forbidden(format!(
                "{} is built for {arch} in rpm/{}/{}; a noarch {} would be offered to {arch} \
                 clients too, so it needs a cap that covers rpm/{}/{}/{arch} as well",
                placed.info.name,
                definition.name,
                placed.release,
                placed.info.name,
                definition.name,
                placed.release
            )));
        }
    }
    Ok(())
}

/// The RPM repository a target scope names.
pub async fn target_repo(
    store: &crate::store::Store,
    target: &Scope,
) -> Result<RpmRepo, IngestError> {
    let repo = target
        .repo()
        .ok_or_else(|| IngestError::BadTarget(format!("{target} names no repository")))?;
    definitions::load_repo::<Rpm>(store, repo)
        .await
        .map_err(|e| match e {
            definitions::RepoError::NotFound(name) => {
                IngestError::NotFound(format!("no repository rpm/{name}"))
            }
            other => IngestError::from(other),
        })
}

/// An rpm verified and placed in its cell: everything but the blobs and the cell write.
struct Placed {
    info: RpmInfo,
    release: String,
    cell_arch: String,
    cell_ref: crate::store::RefName,
    evr: String,
    location: String,
    publish: PublishTarget,
}

async fn place(
    definition: &RpmRepo,
    spooled: &Spooled,
    target: &Scope,
    granted: &Scope,
) -> Result<Placed, IngestError> {
    let spooled = spooled.clone();
    let info =
        tokio::task::spawn_blocking(move || crate::formats::rpm::inspect_rpm(spooled.source()))
            .await
            .map_err(|e| IngestError::Internal(e.to_string()))??;
    place_inspected(definition, info, target, granted)
}

fn place_inspected(
    definition: &RpmRepo,
    info: RpmInfo,
    target: &Scope,
    granted: &Scope,
) -> Result<Placed, IngestError> {
    check_file_name(&info)?;
    let (release, cell_arch) = resolve_cell(definition, target, granted, &info.arch)?;
    let cell_ref = model::rpm_cell_ref(&definition.name, &release, &cell_arch)?;
    let evr = format!("{}:{}-{}", info.epoch, info.version, info.release);
    let publish = PublishTarget {
        repo: definition.name.clone(),
        trees: Rpm::trees_of_cell(definition, &[&release, &cell_arch]),
        cell_ref: cell_ref.to_string(),
    };
    Ok(Placed {
        location: location(&info),
        info,
        release,
        cell_arch,
        cell_ref,
        evr,
        publish,
    })
}

impl PlacedPackage for Placed {
    type Record = RpmPackage;

    fn cell_ref(&self) -> &crate::store::RefName {
        &self.cell_ref
    }

    fn identity(&self) -> (&str, &str, &str) {
        (&self.info.name, &self.evr, &self.info.arch)
    }

    fn answer(
        &self,
        spooled: &Spooled,
        status: crate::ingest::UploadStatus,
        generation: u64,
    ) -> Ingested {
        let tree_arch = if self.cell_arch == "src" {
            "source"
        } else {
            self.cell_arch.as_str()
        };
        Ingested {
            digest: spooled.digest,
            size: spooled.size,
            package: PackageId {
                name: self.info.name.clone(),
                version: self.evr.clone(),
                architecture: self.info.arch.clone(),
            },
            cell: self.cell_scope(),
            pool_path: format!("{}/{tree_arch}/{}", self.release, self.location),
            status,
            cell_generation: generation,
            target: self.publish.clone(),
        }
    }

    fn conflict(&self, existing: crate::util::digest::Digest) -> IngestError {
        IngestError::Conflict {
            identity: format!("{} {} ({})", self.info.name, self.evr, self.info.arch),
            cell: self.cell_scope(),
            existing,
        }
    }
}

impl Placed {
    fn cell_scope(&self) -> String {
        format!(
            "rpm/{}/{}/{}",
            self.publish.repo, self.release, self.cell_arch
        )
    }

    /// Sign (when the repository signs packages), store the package and its
    /// rendered repodata entries; the record to add to the cell.
    async fn store(
        &self,
        store: &crate::store::Store,
        agent: &dyn Signer,
        definition: &RpmRepo,
        spooled: &Spooled,
        scratch: &Path,
        actor: &str,
    ) -> Result<RpmPackage, IngestError> {
        let sign_packages = definition.sign_packages;
        // Sign into a file of our own in `scratch` (never beside an imported file, which is
        // the user's); the stored blob is the signed package.
        let signed = match sign_packages {
            true => Some(
                crate::store::spool::SpoolFile::create(
                    scratch.join(format!("signed-{}.rpm", crate::util::ids::random_id())),
                )
                .map_err(|e| IngestError::Internal(format!("spooling the signed package: {e}")))?,
            ),
            false => None,
        };
        let stored_path: &Path = match &signed {
            Some(spool) => {
                let signed_path = spool.path();
                rpm_sign::sign_with_agent(agent, &spooled.path, signed_path).await?;
                signed_path
            }
            None => &spooled.path,
        };
        let stored_owned = stored_path.to_path_buf();
        let (digest, header_start, header_end) = if sign_packages {
            tokio::task::spawn_blocking(move || {
                let (digest, _) = crate::ingest::hash_file(&stored_owned)
                    .map_err(|e| IngestError::Internal(e.to_string()))?;
                let (meta, _) = inspect::read_metadata(PackageBytes::File(&stored_owned))?;
                let offsets = meta.get_package_segment_offsets();
                Ok::<_, IngestError>((digest, offsets.header, offsets.payload))
            })
            .await
            .map_err(|e| IngestError::Internal(e.to_string()))??
        } else {
            // The stored bytes are the uploaded ones: inspection already found the header range.
            (spooled.digest, self.info.header_start, self.info.header_end)
        };
        let blob = match &signed {
            // The signed copy is ours alone.
            Some(spool) => {
                store
                    .put_blob_from_spool(spool.path(), digest, true)
                    .await?
            }
            None => spooled.store_in(store).await?,
        };
        let hex = blob.digest.hex();
        let now = crate::util::time::now_unix();
        let stored = xml::Stored {
            sha256: &hex,
            size: blob.size,
            location: &self.location,
            file_time: now,
            header_start,
            header_end,
        };
        let info = &self.info;
        let texts = [
            xml::primary(info, &stored),
            xml::filelists(info, &hex),
            xml::other(info, &hex),
        ];
        let sizes = texts.each_ref().map(|t| t.len() as u64);
        let entries = store.put_blob_and_hold(Bytes::from(texts.concat())).await?;
        Ok(RpmPackage {
            name: info.name.clone(),
            epoch: info.epoch,
            version: info.version.clone(),
            release: info.release.clone(),
            arch: info.arch.clone(),
            location: self.location.clone(),
            size: blob.size,
            sha256: blob.digest,
            uploaded_sha256: spooled.digest,
            signed: sign_packages,
            primary: None,
            filelists: None,
            other: None,
            entries: Some(RpmEntries {
                digest: entries.digest,
                sizes,
            }),
            uploaded_at: now,
            uploaded_by: actor.to_string(),
        })
    }
}

/// Everything after authentication: verify, place, refuse conflicts, sign, store, add.
pub async fn ingest(
    store: &crate::store::Store,
    agent: &dyn Signer,
    spooled: &Spooled,
    target: &Scope,
    granted: &Scope,
    actor: &str,
) -> Result<Ingested, IngestError> {
    let definition = target_repo(store, target).await?;
    let placed = place(&definition, spooled, target, granted).await?;
    refuse_shadowing(store, &definition, &placed, granted).await?;
    // Refuse before signing or writing anything: a refused upload leaves the store as it was.
    if let Some(answer) = check_existing(store, &placed, spooled).await? {
        return Ok(answer);
    }
    // An upload's spool directory holds the signed copy too.
    let scratch = spooled.path.parent().unwrap_or(Path::new("."));
    let record = placed
        .store(store, agent, &definition, spooled, scratch, actor)
        .await?;
    add_to_cell(store, &placed, spooled, record, actor).await
}

/// For bulk imports: place, sign and store an rpm the caller verified (`inspect_rpm`,
/// in the same trip to the blocking pool that read it), leaving the cell write
/// to the caller (who batches many packages into one write per cell). Signed copies
/// are written to `scratch`, never beside the user's file.
#[allow(
    clippy::too_many_arguments,
    reason = "one import run's shared parts plus the package; bundling them would only rename them"
)]
pub async fn prepare(
    store: &crate::store::Store,
    agent: &dyn Signer,
    definition: &RpmRepo,
    info: RpmInfo,
    spooled: &Spooled,
    target: &Scope,
    scratch: &Path,
    actor: &str,
) -> Result<(crate::store::RefName, RpmPackage, Ingested), IngestError> {
    let placed = place_inspected(definition, info, target, target)?;
    let record = placed
        .store(store, agent, definition, spooled, scratch, actor)
        .await?;
    Ok((
        placed.cell_ref.clone(),
        record,
        placed.answer(spooled, crate::ingest::UploadStatus::Stored, 0),
    ))
}
