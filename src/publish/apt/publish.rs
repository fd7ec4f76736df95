//! Publishing a suite: read the repository definition and the head of every cell,
//! render Packages (plain, .gz, .xz) per component and architecture, write Release,
//! have the agent sign it (InRelease, Release.gpg), store every file as a blob and
//! only then advance the suite's published ref. Readers resolve paths through
//! one published manifest, so they see the old suite or the new one, never a mix.

use crate::publish::fragment_cache::Rendering;
use crate::repo::format::{Apt, RepoFormat};
use std::collections::BTreeMap;

use bytes::Bytes;

use super::release::IndexFile;
use super::{fragments, release, sources};
use crate::agent::Signer;
use crate::publish::compress;
use crate::publish::layout;
use crate::publish::publication;
use crate::repo::cells;
use crate::repo::model::{
    self, AptPackage, AptRepo, AptSource, FileEntry, ManifestKind, Publication,
};
use crate::store::{BlobMeta, Store, StoreError};

pub use crate::publish::publication::{PublishError, Published};

/// Publish a suite if its inputs changed since the last publication.
pub async fn publish_suite(
    store: &Store,
    agent: &dyn Signer,
    repo: &str,
    suite: &str,
) -> Result<Published, PublishError> {
    let reference = Apt::publication_ref(repo, suite)?;
    loop {
        let (definition, heads) = publication::current_heads::<Apt>(store, repo, suite).await?;
        let inputs = publication::generations(&heads);
        let (current, fresh) = publication::up_to_date(store, &reference, &inputs).await?;
        let suite_def = definition.suites.iter().find(|s| s.name == suite);
        if let Some(published) = fresh {
            // Unchanged, unless its Valid-Until is near: then the same content is re-signed.
            let resign = suite_def.is_some_and(|d| {
                d.needs_resign(
                    published.publication.built_at,
                    crate::util::time::now_unix(),
                )
            });
            if !resign {
                return Ok(published);
            }
        }
        // The layout the current publication was built with, if another process (or
        // this one before a restart) built it: this publish then resumes from it.
        if let Some(head) = &current {
            layout::take_up::<AptPackage>(store, &head.target).await;
        }
        let building = build(store, agent, &definition, suite, &heads);
        let generation = current.as_ref().map(|head| head.generation);
        let Some((built, record)) =
            publication::build_unless_published(store, &reference, generation, building).await?
        else {
            continue;
        };
        if let Some(published) = publication::advance(store, &reference, current, built).await? {
            record.write(store, &published.head.target).await;
            return Ok(published);
        }
    }
}

/// The fragments of one component and architecture, laid out over the last base
/// (`layout`), and its index files stored: Packages, .gz, .xz, Contents, Contents.gz.
async fn store_index_files(
    store: &Store,
    file: &str,
    slots: &[layout::Slot],
    rendering: Rendering,
) -> Result<
    (
        Vec<std::sync::Arc<fragments::Fragment>>,
        Vec<BlobMeta>,
        layout::PublishLayout,
    ),
    StoreError,
> {
    let mut record = layout::PublishLayout::default();
    let laid_out = layout::fragments_for::<AptPackage>(store, file, slots, rendering).await?;
    let parts = laid_out.fragments;
    // States after the deltas, the parts around them and the last base part: what the
    // next publish, which changes at most the deltas, resumes from.
    let last = laid_out.laid.delta_count() + 1;
    let joined = fragments::join(store, &parts).await?;
    let mut stored = Vec::new();
    for file_parts in joined.files() {
        let digests: Vec<crate::util::digest::Digest> = file_parts.iter().map(|p| p.0).collect();
        let meta = store.put_composite(file_parts).await?;
        record.add_composite(store, meta.digest, &digests, last);
        stored.push(meta);
    }
    record.add_file::<AptPackage>(store, laid_out.laid).await?;
    Ok((parts, stored, record))
}

/// MD5, SHA-1 and SHA-512 of a stored index file, for Release's legacy hash lists.
async fn legacy_index_hashes(store: &Store, sha256: &str) -> Result<[String; 3], PublishError> {
    use futures::TryStreamExt;
    use sha1::Digest as _;
    let digest: crate::util::digest::Digest = sha256
        .parse()
        .map_err(|_| StoreError::Corrupt(sha256.to_string(), "not a digest".into()))?;
    let (mut md5, mut sha1, mut sha512) = (md5::Md5::new(), sha1::Sha1::new(), sha2::Sha512::new());
    let mut body = store.stream_blob(&digest, None).await?.body;
    while let Some(chunk) = body.try_next().await? {
        md5.update(&chunk);
        sha1.update(&chunk);
        sha512.update(&chunk);
    }
    Ok([
        hex::encode(md5.finalize()),
        hex::encode(sha1.finalize()),
        hex::encode(sha512.finalize()),
    ])
}

async fn build(
    store: &Store,
    agent: &dyn Signer,
    definition: &AptRepo,
    suite: &str,
    heads: &publication::Heads,
) -> Result<(Publication, layout::PublishLayout), PublishError> {
    // Built from exactly the cells `heads` names, read side by side.
    let cells = publication::read_cells(store, heads).await?;
    let cell = |name: crate::store::RefName| -> crate::repo::model::Cell {
        cells
            .get(name.as_str())
            .cloned()
            .unwrap_or(crate::repo::model::Cell {
                kind: ManifestKind::AptCell,
                chunks: Vec::new(),
            })
    };
    let suite_def = definition
        .suites
        .iter()
        .find(|s| s.name == suite)
        .ok_or_else(|| PublishError::NoSuite(definition.name.clone(), suite.to_string()))?;
    let repo = definition.name.as_str();
    let rendering = Rendering {
        retention: definition.retention,
        legacy_hashes: definition.legacy_hashes,
    };
    let dists = format!("dists/{suite}");
    let mut files: BTreeMap<String, FileEntry> = BTreeMap::new();
    let mut pool: BTreeMap<String, FileEntry> = BTreeMap::new();
    let mut pool_chunks: Vec<crate::util::digest::Digest> = Vec::new();
    let mut index_files: Vec<IndexFile> = Vec::new();
    let mut record = layout::PublishLayout::default();

    for component in &suite_def.components {
        let source_cell = cell(model::cell_ref(repo, suite, component, "source")?);
        let source_records: Vec<AptSource> = cells::all_packages(store, &source_cell).await?;
        let mut listed_sources = crate::repo::definitions::retained(
            source_records.iter().collect(),
            definition.retention,
        );
        for source in &listed_sources {
            for file in std::iter::once(&source.dsc).chain(source.files.iter()) {
                pool.insert(
                    format!("{}/{}", source.directory, file.name),
                    FileEntry {
                        sha256: file.sha256,
                        size: file.size,
                    },
                );
            }
        }
        let text = sources::render(&mut listed_sources);
        let compressed = tokio::task::spawn_blocking(move || {
            let gz = compress::gzip(text.as_bytes())?;
            let xz = compress::xz(text.as_bytes())?;
            Ok::<_, std::io::Error>([
                ("Sources", Bytes::from(text)),
                ("Sources.gz", Bytes::from(gz)),
                ("Sources.xz", Bytes::from(xz)),
            ])
        })
        .await
        .map_err(|e| PublishError::Compress(e.to_string()))?
        .map_err(|e| PublishError::Compress(e.to_string()))?;
        for (name, bytes) in compressed {
            let meta = store.put_blob(bytes).await?;
            let entry = FileEntry {
                sha256: meta.digest,
                size: meta.size,
            };
            let dir = format!("{component}/source");
            files.insert(format!("{dists}/{dir}/{name}"), entry);
            files.insert(
                format!("{dists}/{dir}/by-hash/SHA256/{}", meta.digest),
                entry,
            );
            index_files.push(IndexFile {
                path: format!("{dir}/{name}"),
                size: meta.size,
                sha256: meta.digest.hex(),
                legacy: None,
            });
        }
        let arch_all = cell(model::cell_ref(repo, suite, component, "all")?);
        for arch in &suite_def.architectures {
            let own = cell(model::cell_ref(repo, suite, component, arch)?);
            // One fragment per chunk, laid out so that an upload renders and hashes only what it adds.
            let slots: Vec<layout::Slot> = own
                .chunks
                .iter()
                .map(|c| (false, c.bucket, c.digest).into())
                .chain(
                    arch_all
                        .chunks
                        .iter()
                        .map(|c| (true, c.bucket, c.digest).into()),
                )
                .collect();
            let file = format!("{repo}/{suite}/{component}/{arch}");
            // A part gc swept while its bytes were held here is NotFound: start over from the store.
            let (parts, stored, laid) =
                crate::publish::fragment_cache::retry_after_forgetting(store, || {
                    store_index_files(store, &file, &slots, rendering)
                })
                .await?;
            record.extend(laid);
            pool_chunks.extend(
                parts
                    .iter()
                    .filter(|f| f.listed() > 0)
                    .filter_map(|f| f.pool_chunk),
            );
            let dir = format!("{component}/binary-{arch}");
            let paths = [
                format!("{dir}/Packages"),
                format!("{dir}/Packages.gz"),
                format!("{dir}/Packages.xz"),
                format!("{component}/Contents-{arch}"),
                format!("{component}/Contents-{arch}.gz"),
            ];
            for (path, meta) in paths.into_iter().zip(stored) {
                let entry = FileEntry {
                    sha256: meta.digest,
                    size: meta.size,
                };
                let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                files.insert(format!("{dists}/{path}"), entry);
                files.insert(
                    format!("{dists}/{dir}/by-hash/SHA256/{}", meta.digest),
                    entry,
                );
                index_files.push(IndexFile {
                    path,
                    size: meta.size,
                    sha256: meta.digest.hex(),
                    legacy: None,
                });
            }
        }
    }

    if definition.legacy_hashes {
        for file in &mut index_files {
            file.legacy = Some(legacy_index_hashes(store, &file.sha256).await?);
        }
    }
    let built_at = crate::util::time::now_unix();
    let release_text = release::render(definition, suite_def, built_at, &index_files);
    let in_release = agent.clearsign(release_text.as_bytes()).await?;
    let release_gpg = agent.detach_sign(release_text.as_bytes(), true).await?;
    for (name, bytes) in [
        ("Release", Bytes::from(release_text)),
        ("InRelease", Bytes::from(in_release)),
        ("Release.gpg", Bytes::from(release_gpg)),
    ] {
        let meta = store.put_blob(bytes).await?;
        files.insert(
            format!("{dists}/{name}"),
            FileEntry {
                sha256: meta.digest,
                size: meta.size,
            },
        );
    }

    let publication = Publication {
        kind: ManifestKind::AptPublication,
        repo: repo.to_string(),
        suite: suite.to_string(),
        built_at,
        inputs: publication::generations(heads),
        files,
        pool,
        pool_chunks: {
            pool_chunks.sort();
            pool_chunks.dedup();
            pool_chunks
        },
    };
    Ok((publication, record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::openpgp::{verify_cleartext, verify_detached};
    use crate::agent::sign::MemorySigner;
    use crate::testing::apt_package;

    /// apt/farm (stable, main, amd64) on a memory store, holding `packages` with their
    /// bytes stored (and an empty file list each).
    async fn suite_with(packages: &[(&str, &str)]) -> Store {
        let store = crate::testing::apt_farm(&["stable"]).await;
        store.put_blob(Bytes::new()).await.unwrap();
        let cell = model::cell_ref("farm", "stable", "main", "amd64").unwrap();
        for (name, version) in packages {
            let bytes = format!("the .deb of {name} {version}");
            store.put_blob(Bytes::from(bytes.clone())).await.unwrap();
            let package = apt_package(name, version, bytes.as_bytes());
            cells::add_package(&store, &cell, package, "t")
                .await
                .unwrap();
        }
        store
    }

    /// What one store's publishes keep in memory is that store's. A second store in the
    /// same process with the same packages (same chunk digests) used to find the first
    /// one's fragments, name parts it did not have, fail, and drop every cache in the
    /// process (the held-bytes epoch went 0 -> 2) before rendering its own.
    #[tokio::test]
    async fn two_stores_in_one_process_publish_from_their_own_blobs() {
        let signer = MemorySigner::new();
        let key = signer.certificate();
        let first = suite_with(&[("alpha", "1"), ("beta", "2")]).await;
        publish_suite(&first, &signer, "farm", "stable")
            .await
            .unwrap();
        let second = suite_with(&[("alpha", "1"), ("beta", "2")]).await;
        let (first_epoch, second_epoch) = (first.held_epoch(), second.held_epoch());
        let published = publish_suite(&second, &signer, "farm", "stable")
            .await
            .unwrap();
        assert_eq!(
            (first.held_epoch(), second.held_epoch()),
            (first_epoch, second_epoch),
            "a publish had to forget what it held"
        );
        for (path, entry) in &published.publication.files {
            let bytes = second.get_blob(&entry.sha256).await;
            assert!(bytes.is_ok(), "{path}: {bytes:?}");
        }
        let problems = crate::maintenance::verify(&second, &key).await.unwrap();
        assert!(problems.is_empty(), "{problems:?}");
    }

    async fn file(store: &Store, published: &Published, path: &str) -> Bytes {
        let entry = published.publication.files[path];
        store.get_blob(&entry.sha256).await.unwrap()
    }

    #[tokio::test]
    async fn a_suite_publishes_signed_indices_listing_its_packages_and_verifies() {
        let store = suite_with(&[("alpha", "1"), ("beta", "2")]).await;
        let signer = MemorySigner::new();
        let published = publish_suite(&store, &signer, "farm", "stable")
            .await
            .unwrap();
        assert!(published.changed);
        let key = signer.certificate();

        // InRelease is Release, signed; Release.gpg signs Release.
        let release = file(&store, &published, "dists/stable/Release").await;
        let in_release = file(&store, &published, "dists/stable/InRelease").await;
        let signed = verify_cleartext(&key, &in_release).expect("InRelease verifies");
        assert_eq!(
            signed.trim_end(),
            String::from_utf8_lossy(&release).trim_end()
        );
        let release_gpg = file(&store, &published, "dists/stable/Release.gpg").await;
        assert!(verify_detached(&key, &release_gpg, &release));
        assert!(!verify_detached(&key, &release_gpg, b"another Release"));

        // Packages lists both, and Release names it with its sha256.
        let packages = file(
            &store,
            &published,
            "dists/stable/main/binary-amd64/Packages",
        )
        .await;
        let text = String::from_utf8_lossy(&packages);
        assert!(
            text.contains("Package: alpha\n") && text.contains("Package: beta\n"),
            "{text}"
        );
        let sha256 = crate::util::digest::Digest::of(&packages).hex();
        assert!(
            String::from_utf8_lossy(&release).contains(&format!("{sha256} ")),
            "Release does not name Packages' sha256"
        );

        // Unchanged inputs publish nothing new; the store checks out.
        let again = publish_suite(&store, &signer, "farm", "stable")
            .await
            .unwrap();
        assert!(!again.changed);
        assert_eq!(again.head.generation, published.head.generation);
        let problems = crate::maintenance::verify(&store, &key).await.unwrap();
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[tokio::test]
    async fn one_more_package_publishes_a_new_generation_that_lists_it() {
        let store = suite_with(&[("alpha", "1")]).await;
        let signer = MemorySigner::new();
        let first = publish_suite(&store, &signer, "farm", "stable")
            .await
            .unwrap();
        let cell = model::cell_ref("farm", "stable", "main", "amd64").unwrap();
        store.put_blob(Bytes::from_static(b"gamma")).await.unwrap();
        cells::add_package(&store, &cell, apt_package("gamma", "1", b"gamma"), "t")
            .await
            .unwrap();
        let second = publish_suite(&store, &signer, "farm", "stable")
            .await
            .unwrap();
        assert_eq!(second.head.generation, first.head.generation + 1);
        let packages = file(&store, &second, "dists/stable/main/binary-amd64/Packages").await;
        assert!(String::from_utf8_lossy(&packages).contains("Package: gamma\n"));
        // The pool file is reachable through the publication.
        assert!(second.publication.pool_chunks.len() + second.publication.pool.len() > 0);
    }
}
