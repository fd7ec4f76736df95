//! Uploading source packages: tarballs and diffs are stored as they come
//! ("staged": blobs nothing references yet), then a `.dsc` is accepted once
//! every file it names is stored with the promised size and SHA-256, and a
//! `.changes` upload ingests the `.dsc` and `.deb` files it lists after checking
//! each one's checksum. Everything lands in the component the cap covers.

use crate::repo::format::Apt;
use std::path::Path;

use futures::TryStreamExt;
use tokio::io::AsyncWriteExt;

use crate::caps::Scope;
use crate::formats::deb::Limits;
use crate::formats::deb::control::Control;
use crate::ingest::{self, IngestError, Ingested, PackageId, PublishTarget, Spooled};
use crate::publish::apt::sources::{self, SourceError};
use crate::repo::cells::{self, AddOutcome};
use crate::repo::claims;
use crate::repo::definitions;
use crate::repo::model::{self, AptSource, SourceFile};
use crate::store::Store;
use crate::util::digest::Digest;

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
    let definition = definitions::load_repo::<Apt>(store, repo).await?;
    // Source packages belong to a component, like Architecture: all: any arch cap of it may add them.
    let addr = ingest::resolve_cell(&definition, target, granted, "all")?;
    Ok((addr.repo, addr.suite, addr.component))
}

fn answer(
    spooled: &Spooled,
    id: PackageId,
    cell: String,
    status: crate::ingest::UploadStatus,
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

/// The claims domain of an APT repository's pool.
fn pool(repo: &str) -> claims::Domain<'_> {
    claims::Domain { kind: "apt", repo }
}

/// Whether a file a `.dsc` or `.changes` names may be published through this cell: it
/// was staged through a cap of the cell, or the repository's pool already serves these
/// bytes at `pool_path`. Anything else in the store (another repository's package, a
/// private one) is not the uploader's to publish, whatever digest it can name.
async fn may_publish(
    store: &Store,
    repo: &str,
    suite: &str,
    component: &str,
    digest: &Digest,
    pool_path: Option<&str>,
) -> Result<bool, IngestError> {
    let staged = claims::staged_path(suite, component, digest);
    if claims::lookup(store, pool(repo), &staged).await? == Some(*digest) {
        return Ok(true);
    }
    Ok(match pool_path {
        Some(path) => claims::lookup(store, pool(repo), path).await? == Some(*digest),
        None => false,
    })
}

/// A tarball, diff or signature: store it and wait for the .dsc that names it.
pub async fn stage(
    store: &Store,
    spooled: &Spooled,
    name: &str,
    target: &Scope,
    granted: &Scope,
    actor: &str,
) -> Result<Ingested, IngestError> {
    let (repo, suite, component) = component_of(store, target, granted).await?;
    store
        .put_blob_from_file(&spooled.path, spooled.digest)
        .await?;
    // Only what was staged through a cap of this cell may be named by its .dsc files.
    let staged = claims::staged_path(&suite, &component, &spooled.digest);
    claims::claim(store, pool(&repo), &staged, spooled.digest, actor).await?;
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
    Ok(answer(
        spooled,
        id,
        cell,
        crate::ingest::UploadStatus::Staged,
        0,
        target,
    ))
}

/// A .dsc or .changes is a small signed text; anything larger than a control file is refused
/// before it is read into memory.
async fn read_control_file(spooled: &Spooled, what: &str) -> Result<Vec<u8>, IngestError> {
    if spooled.size > crate::formats::deb::control::MAX_CONTROL_BYTES as u64 {
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
    let name = control.get("Source").unwrap_or_default().to_string();
    let version = control.get("Version").unwrap_or_default().to_string();
    let usual_directory = source_directory(&component, &name);
    for file in &files {
        let published_at = format!("{usual_directory}/{}", file.name);
        if !may_publish(
            store,
            &repo,
            &suite,
            &component,
            &file.sha256,
            Some(&published_at),
        )
        .await?
        {
            return Err(IngestError::BadPackage(format!(
                "{} (sha256 {}) was not uploaded through a cap of apt/{repo}/dists/{suite}/{component}: \
                 upload the files a .dsc names before the .dsc, through a cap of this cell",
                file.name, file.sha256
            )));
        }
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
    let files = with_legacy_hashes(store, &control, files).await?;
    let file_version = version.split_once(':').map_or(version.as_str(), |(_, v)| v);
    let (md5, sha1) = legacy_hashes(&bytes);
    let dsc = SourceFile {
        name: format!("{name}_{file_version}.dsc"),
        sha256: spooled.digest,
        size: spooled.size,
        md5: Some(md5),
        sha1: Some(sha1),
    };
    let directory = claim_directory(store, &repo, &usual_directory, &dsc, &files, actor).await?;
    let record = AptSource {
        directory,
        dsc,
        files,
        control: control.text().to_string(),
        uploaded_at: crate::util::time::now_unix(),
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
    store
        .put_blob_from_file(&spooled.path, spooled.digest)
        .await?;
    match cells::add_package(store, &cell_ref, record, actor).await? {
        AddOutcome::Added { generation } => Ok(answer(
            spooled,
            id,
            cell,
            crate::ingest::UploadStatus::Stored,
            generation,
            publish,
        )),
        AddOutcome::AlreadyPresent { generation } => Ok(answer(
            spooled,
            id,
            cell,
            crate::ingest::UploadStatus::AlreadyPresent,
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

/// MD5 and SHA-1 of some bytes, hex: what Sources' `Files` and `Checksums-Sha1` list.
fn legacy_hashes(bytes: &[u8]) -> (String, String) {
    use sha1::Digest as _;
    (
        hex::encode(md5::Md5::digest(bytes)),
        hex::encode(sha1::Sha1::digest(bytes)),
    )
}

/// Each listed file with its MD5 and SHA-1, computed from the stored bytes. Where the .dsc
/// lists them too (`Files`, `Checksums-Sha1`), they must agree, as dpkg-source checks.
async fn with_legacy_hashes(
    store: &Store,
    control: &Control,
    files: Vec<SourceFile>,
) -> Result<Vec<SourceFile>, IngestError> {
    use sha1::Digest as _;
    let claimed_md5 = sources::listed_hashes(control, "Files", 32)?;
    let claimed_sha1 = sources::listed_hashes(control, "Checksums-Sha1", 40)?;
    let mut out = Vec::with_capacity(files.len());
    // Each distinct content is read once, however often it is listed.
    let mut known: std::collections::HashMap<Digest, (String, String)> = Default::default();
    for mut file in files {
        let (md5, sha1) = match known.get(&file.sha256) {
            Some(found) => found.clone(),
            None => {
                let (mut md5, mut sha1) = (md5::Md5::new(), sha1::Sha1::new());
                let mut body = store.stream_blob(&file.sha256, None).await?.body;
                while let Some(chunk) = body.try_next().await? {
                    md5.update(&chunk);
                    sha1.update(&chunk);
                }
                let found = (hex::encode(md5.finalize()), hex::encode(sha1.finalize()));
                known.insert(file.sha256, found.clone());
                found
            }
        };
        for (field, claimed, computed) in [
            ("Files", claimed_md5.get(&file.name), &md5),
            ("Checksums-Sha1", claimed_sha1.get(&file.name), &sha1),
        ] {
            if let Some((hash, size)) = claimed
                && (hash != computed || *size != file.size)
            {
                return Err(IngestError::BadPackage(format!(
                    "the .dsc's {field} entry for {} ({hash}, {size} bytes) does not match the \
                     uploaded file ({computed}, {} bytes)",
                    file.name, file.size
                )));
            }
        }
        file.md5 = Some(md5);
        file.sha1 = Some(sha1);
        out.push(file);
    }
    Ok(out)
}

/// `pool/<component>/<prefix>/<source>`, as the Debian archive lays it out.
fn source_directory(component: &str, name: &str) -> String {
    let prefix = if name.starts_with("lib") && name.len() > 3 {
        &name[..4]
    } else {
        &name[..1]
    };
    format!("pool/{component}/{prefix}/{name}")
}

/// Claims the pool paths of a source package's files in `usual`, or, when one of them
/// names other bytes there, in a directory named by the .dsc's digest beside it (see
/// [`crate::repo::claims`]): a source package is served from one directory.
async fn claim_directory(
    store: &Store,
    repo: &str,
    usual: &str,
    dsc: &SourceFile,
    files: &[SourceFile],
    actor: &str,
) -> Result<String, IngestError> {
    let own = claims::own_path(&format!("{usual}/{}", dsc.name), &dsc.sha256);
    let own = own
        .rsplit_once('/')
        .map_or(usual.to_string(), |(dir, _)| dir.to_string());
    for directory in [usual.to_string(), own] {
        let wanted: Vec<claims::Claim> = std::iter::once(dsc)
            .chain(files)
            .map(|f| claims::Claim {
                path: format!("{directory}/{}", f.name),
                sha256: f.sha256,
            })
            .collect();
        let outcomes = claims::claim_all(store, pool(repo), wanted, actor).await?;
        if outcomes.iter().all(|o| *o == claims::Claimed::Ours) {
            return Ok(directory);
        }
    }
    Err(IngestError::Conflict {
        identity: format!("source files of {}", dsc.name),
        cell: format!("apt/{repo} {usual}"),
        existing: dsc.sha256,
    })
}

/// A stored blob copied into a spool file of this process's own (locked, removed when
/// dropped; see `crate::store::spool`), for the inspection that reads packages from files.
async fn blob_to_spool(
    store: &Store,
    digest: &Digest,
    path: &Path,
) -> Result<crate::store::spool::SpoolFile, IngestError> {
    let spool = crate::store::spool::SpoolFile::create(path.to_path_buf())
        .map_err(|e| IngestError::Internal(e.to_string()))?;
    let stream = store.stream_blob(digest, None).await?;
    let mut file = tokio::fs::File::from_std(
        spool
            .handle()
            .map_err(|e| IngestError::Internal(e.to_string()))?,
    );
    let mut body = stream.body;
    while let Some(chunk) = body.try_next().await? {
        file.write_all(&chunk)
            .await
            .map_err(|e| IngestError::Internal(e.to_string()))?;
    }
    file.flush()
        .await
        .map_err(|e| IngestError::Internal(e.to_string()))?;
    Ok(spool)
}

/// Whether the .deb or .dsc at `spooled` is already in the cell `target` names, with
/// these very bytes.
async fn already_in_cell(
    store: &Store,
    limits: &Limits,
    spooled: &Spooled,
    target: &Scope,
    granted: &Scope,
    dsc: bool,
) -> Result<bool, IngestError> {
    if !dsc {
        return ingest::already_in_cell(store, limits, spooled, target, granted).await;
    }
    let (repo, suite, component) = component_of(store, target, granted).await?;
    let bytes = read_control_file(spooled, ".dsc").await?;
    let control = Control::parse_dsc(&bytes).map_err(SourceError::from)?;
    let name = control.get("Source").unwrap_or_default();
    let version = control.get("Version").unwrap_or_default();
    let cell_ref = model::cell_ref(&repo, &suite, &component, "source")?;
    Ok(
        cells::find::<AptSource>(store, &cell_ref, name, version, "source")
            .await?
            .is_some_and(|found| found.dsc.sha256 == spooled.digest),
    )
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
    let (repo, suite, component) = component_of(store, target, granted).await?;
    let bytes = read_control_file(spooled, ".changes").await?;
    let text = String::from_utf8(bytes)
        .map_err(|_| IngestError::BadPackage("the .changes is not UTF-8".into()))?;
    let control =
        Control::parse_paragraph(crate::formats::deb::control::strip_clearsign(&text).as_bytes())
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
            .with_file_name(format!("upload-{}.part", crate::util::ids::random_id()));
        let staged = may_publish(store, &repo, &suite, &component, &file.sha256, None).await?;
        let copy = blob_to_spool(store, &file.sha256, &path).await?;
        let inner = Spooled {
            path: path.clone(),
            digest: file.sha256,
            size: file.size,
            movable: false,
            bytes: None,
        };
        let result = async {
            // Unless staged here, a listed package must already be in this cell with these
            // bytes: a .changes confirms uploads, it does not publish what it names.
            if !staged
                && !already_in_cell(store, limits, &inner, target, granted, file.name.ends_with(".dsc"))
                    .await?
            {
                return Err(IngestError::BadPackage(format!(
                    "{} (sha256 {}) was not uploaded through a cap of apt/{repo}/dists/{suite}/{component}: \
                     upload it to this cell before the .changes",
                    file.name, file.sha256
                )));
            }
            if file.name.ends_with(".dsc") {
                ingest_dsc(store, &inner, target, granted, actor).await
            } else {
                ingest::ingest(store, limits, &inner, target, granted, actor).await
            }
        }
        .await;
        drop(copy);
        let done = result?;
        trees.extend(done.target.trees.clone());
        last = Some(done);
    }
    store
        .put_blob_from_file(&spooled.path, spooled.digest)
        .await?;
    let mut summary =
        last.ok_or_else(|| IngestError::BadPackage("the .changes lists no .dsc or .deb".into()))?;
    trees.sort();
    trees.dedup();
    summary.target.trees = trees;
    summary.digest = spooled.digest;
    summary.size = spooled.size;
    Ok(summary)
}
