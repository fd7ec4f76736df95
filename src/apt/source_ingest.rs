//! Uploading source packages: tarballs and diffs are stored as they come
//! ("staged": blobs nothing references yet), then a `.dsc` is accepted once
//! every file it names is stored with the promised size and SHA-256, and a
//! `.changes` upload ingests the `.dsc` and `.deb` files it lists after checking
//! each one's checksum. Everything lands in the component the cap covers.

use std::path::Path;

use futures::TryStreamExt;
use tokio::io::AsyncWriteExt;

use super::sources::{self, SourceError};
use crate::caps::Scope;
use crate::cells::{self, AddOutcome};
use crate::deb::Limits;
use crate::deb::control::Control;
use crate::digest::Digest;
use crate::ingest::{self, IngestError, Ingested, PackageId, PublishTarget, Spooled};
use crate::model::{self, AptSource, SourceFile};
use crate::repos;
use crate::store::Store;

impl From<SourceError> for IngestError {
    fn from(e: SourceError) -> Self {
        IngestError::BadPackage(e.to_string())
    }
}

/// Where a source upload lands: (repository, suite, component).
async fn component_of(
    store: &Store,
    target: &Scope,
    granted: &Scope,
) -> Result<(String, String, String), IngestError> {
    if target.kind() != "apt" {
        return Err(IngestError::BadTarget(format!(
            "source packages go to apt/... scopes, not {target}"
        )));
    }
    let repo = target
        .repo()
        .ok_or_else(|| IngestError::BadTarget(format!("{target} names no repository")))?;
    let definition = repos::load_apt_repo(store, repo).await?;
    // Source packages belong to a component, like Architecture: all: any arch cap of it may add them.
    let addr = ingest::resolve_cell(&definition, target, granted, "all")?;
    Ok((addr.repo, addr.suite, addr.component))
}

fn answer(
    spooled: &Spooled,
    id: PackageId,
    cell: String,
    status: &'static str,
    generation: u64,
    target: PublishTarget,
) -> Ingested {
    Ingested {
        digest: spooled.digest,
        size: spooled.size,
        package: id,
        pool_path: String::new(),
        cell,
        status,
        cell_generation: generation,
        target,
    }
}

/// A tarball, diff or signature: store it and wait for the .dsc that names it.
pub async fn stage(
    store: &Store,
    spooled: &Spooled,
    name: &str,
    target: &Scope,
    granted: &Scope,
) -> Result<Ingested, IngestError> {
    let (repo, suite, component) = component_of(store, target, granted).await?;
    store.put_blob_file(&spooled.path, spooled.digest).await?;
    let id = PackageId {
        name: name.to_string(),
        version: String::new(),
        architecture: "source".into(),
    };
    let cell = format!("apt/{repo}/dists/{suite}/{component}/source");
    let target = PublishTarget {
        repo,
        trees: Vec::new(),
        cell_ref: String::new(),
    };
    Ok(answer(spooled, id, cell, "staged", 0, target))
}

/// A .dsc or .changes is a small signed text; anything larger than a control file is refused
/// before it is read into memory.
async fn read_control_file(spooled: &Spooled, what: &str) -> Result<Vec<u8>, IngestError> {
    if spooled.size > crate::deb::control::MAX_CONTROL_BYTES as u64 {
        return Err(IngestError::BadPackage(format!(
            "the {what} is larger than 1 MiB"
        )));
    }
    tokio::fs::read(&spooled.path)
        .await
        .map_err(|e| IngestError::Internal(e.to_string()))
}

/// A `.dsc`: every file it names must be stored with that size and digest.
pub async fn ingest_dsc(
    store: &Store,
    spooled: &Spooled,
    target: &Scope,
    granted: &Scope,
    actor: &str,
) -> Result<Ingested, IngestError> {
    let (repo, suite, component) = component_of(store, target, granted).await?;
    let bytes = read_control_file(spooled, ".dsc").await?;
    let control = Control::parse_dsc(&bytes).map_err(SourceError::from)?;
    let files = sources::checksums(&control)?;
    for file in &files {
        match store.blob_size(&file.sha256).await {
            Ok(size) if size == file.size => {}
            Ok(size) => {
                return Err(IngestError::BadPackage(format!(
                    "{} is stored with {size} bytes, the .dsc says {}",
                    file.name, file.size
                )));
            }
            Err(_) => {
                return Err(IngestError::BadPackage(format!(
                    "{} (sha256 {}) is not uploaded: upload the files a .dsc names before the .dsc",
                    file.name, file.sha256
                )));
            }
        }
    }
    let name = control.get("Source").unwrap_or_default().to_string();
    let version = control.get("Version").unwrap_or_default().to_string();
    let prefix = if name.starts_with("lib") && name.len() > 3 {
        &name[..4]
    } else {
        &name[..1]
    };
    let file_version = version.split_once(':').map_or(version.as_str(), |(_, v)| v);
    let dsc = SourceFile {
        name: format!("{name}_{file_version}.dsc"),
        sha256: spooled.digest,
        size: spooled.size,
    };
    let record = AptSource {
        directory: format!("pool/{component}/{prefix}/{name}"),
        dsc,
        files,
        control: control.text().to_string(),
        uploaded_at: crate::time::now_unix(),
        uploaded_by: actor.to_string(),
        name: name.clone(),
        version: version.clone(),
    };
    let cell_ref = model::cell_ref(&repo, &suite, &component, "source")?;
    let cell = format!("apt/{repo}/dists/{suite}/{component}/source");
    let id = PackageId {
        name: name.clone(),
        version: version.clone(),
        architecture: "source".into(),
    };
    let publish = PublishTarget {
        repo: repo.clone(),
        trees: vec![suite.clone()],
        cell_ref: cell_ref.to_string(),
    };
    store.put_blob_file(&spooled.path, spooled.digest).await?;
    match cells::add_package(store, &cell_ref, record, actor).await? {
        AddOutcome::Added { generation } => {
            Ok(answer(spooled, id, cell, "stored", generation, publish))
        }
        AddOutcome::AlreadyPresent { generation } => Ok(answer(
            spooled,
            id,
            cell,
            "already-present",
            generation,
            publish,
        )),
        AddOutcome::Conflict { existing } => Err(IngestError::Conflict {
            identity: format!("source {name} {version}"),
            cell,
            existing,
        }),
    }
}

async fn blob_to_file(store: &Store, digest: &Digest, path: &Path) -> Result<(), IngestError> {
    let stream = store.stream_blob(digest, None).await?;
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| IngestError::Internal(e.to_string()))?;
    let mut body = stream.body;
    while let Some(chunk) = body.try_next().await? {
        file.write_all(&chunk)
            .await
            .map_err(|e| IngestError::Internal(e.to_string()))?;
    }
    file.flush()
        .await
        .map_err(|e| IngestError::Internal(e.to_string()))?;
    Ok(())
}

/// A `.changes`: check every listed file against its checksum, then ingest its .dsc and .debs.
pub async fn ingest_changes(
    store: &Store,
    limits: &Limits,
    spooled: &Spooled,
    target: &Scope,
    granted: &Scope,
    actor: &str,
) -> Result<Ingested, IngestError> {
    // The target must name one component; the .dsc and .debs inside are placed through it.
    component_of(store, target, granted).await?;
    let bytes = read_control_file(spooled, ".changes").await?;
    let text = String::from_utf8(bytes)
        .map_err(|_| IngestError::BadPackage("the .changes is not UTF-8".into()))?;
    let control = Control::parse_paragraph(crate::deb::control::strip_clearsign(&text).as_bytes())
        .map_err(SourceError::from)?;
    let files = sources::checksums(&control)?;
    for file in &files {
        if store.blob_size(&file.sha256).await.ok() != Some(file.size) {
            return Err(IngestError::BadPackage(format!(
                "{} is not uploaded with the size and SHA-256 the .changes lists; upload the files before the .changes",
                file.name
            )));
        }
    }
    let mut last: Option<Ingested> = None;
    let mut trees = Vec::new();
    for file in files
        .iter()
        .filter(|f| f.name.ends_with(".dsc") || f.name.ends_with(".deb"))
    {
        let path = spooled
            .path
            .with_extension(format!("part-{}", &file.sha256.hex()[..12]));
        blob_to_file(store, &file.sha256, &path).await?;
        let inner = Spooled {
            path: path.clone(),
            digest: file.sha256,
            size: file.size,
            movable: false,
            bytes: None,
        };
        let result = if file.name.ends_with(".dsc") {
            ingest_dsc(store, &inner, target, granted, actor).await
        } else {
            ingest::ingest(store, limits, &inner, target, granted, actor).await
        };
        let _ = tokio::fs::remove_file(&path).await;
        let done = result?;
        trees.extend(done.target.trees.clone());
        last = Some(done);
    }
    store.put_blob_file(&spooled.path, spooled.digest).await?;
    let mut summary =
        last.ok_or_else(|| IngestError::BadPackage("the .changes lists no .dsc or .deb".into()))?;
    trees.sort();
    trees.dedup();
    summary.target.trees = trees;
    summary.digest = spooled.digest;
    summary.size = spooled.size;
    Ok(summary)
}
