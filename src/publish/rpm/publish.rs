//! Publishing one RPM tree (`<release>/<arch>` or `<release>/source`): gather the
//! package entries rendered at upload, wrap them into primary, filelists and
//! other XML, gzip them under content-addressed names, write repomd.xml and have
//! the agent sign it (repomd.xml.asc, for `repo_gpgcheck=1`). Blobs first, then
//! one ref flip, as for APT.

use crate::publish::fragment_cache::Rendering;
use std::collections::BTreeMap;

use bytes::Bytes;

use super::fragments;
use crate::agent::Signer;
use crate::publish::layout;
use crate::publish::publication;
use crate::publish::publication::{PublishError, Published};
use crate::repo::format::{RepoFormat, Rpm};
use crate::repo::model::{FileEntry, ManifestKind, Publication, RpmPackage, RpmRepo};
use crate::store::Store;

pub async fn publish_tree(
    store: &Store,
    agent: &dyn Signer,
    repo: &str,
    tree: &str,
) -> Result<Published, PublishError> {
    let reference = Rpm::publication_ref(repo, tree)?;
    loop {
        let (definition, heads) = publication::current_heads::<Rpm>(store, repo, tree).await?;
        let inputs = publication::generations(&heads);
        let (current, fresh) = publication::up_to_date(store, &reference, &inputs).await?;
        if let Some(published) = fresh {
            return Ok(published);
        }
        // The layout the current publication was built with, if another process (or
        // this one before a restart) built it: this publish then resumes from it.
        if let Some(head) = &current {
            layout::take_up::<RpmPackage>(store, &head.target).await;
        }
        let building = build(store, agent, &definition, tree, &heads);
        let generation = current.as_ref().map(|head| head.generation);
        let Some((built, built_layout)) =
            publication::build_unless_published(store, &reference, generation, building).await?
        else {
            continue;
        };
        let advanced = publication::advance(store, &reference, current, built).await?;
        if let Some(published) = advanced {
            layout::made_here(store, &published.head.target);
            // Published: now the idle time until the next upload can hash ahead for it,
            // and then write down where the next publish resumes.
            super::hash_ahead::after_publish(
                store,
                &format!("{repo}/{tree}"),
                &built_layout.documents,
                [PRIMARY_OPEN, FILELISTS_OPEN, OTHER_OPEN],
                built_layout.record,
                published.head.target,
                built_layout.resume_last,
            )
            .await;
            return Ok(published);
        }
    }
}

const PRIMARY_OPEN: &str = "<metadata xmlns=\"http://linux.duke.edu/metadata/common\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\"";
const FILELISTS_OPEN: &str = "<filelists xmlns=\"http://linux.duke.edu/metadata/filelists\"";
const OTHER_OPEN: &str = "<otherdata xmlns=\"http://linux.duke.edu/metadata/other\"";

/// What a build laid out, beside its publication.
struct BuiltLayout {
    /// primary, filelists and other.
    documents: Vec<fragments::Document>,
    /// The fragments and composites, to write down once hashed ahead.
    record: layout::PublishLayout,
    /// How many trailing parts of each document the next publish may change (the
    /// deltas over the base, and the last base part), plus one for chunks that render
    /// nothing.
    resume_last: usize,
}

async fn build(
    store: &Store,
    agent: &dyn Signer,
    definition: &RpmRepo,
    tree: &str,
    heads: &publication::Heads,
) -> Result<(Publication, BuiltLayout), PublishError> {
    let repo = definition.name.as_str();
    // Built from exactly the cells `heads` names.
    let cells = publication::read_cells(store, heads).await?;
    let mut slots: Vec<layout::Slot> = Vec::new();
    let listed = Rpm::tree_cells(repo, definition, tree)?
        .ok_or_else(|| PublishError::NoSuite(repo.to_string(), tree.to_string()))?;
    for (index, name) in listed.iter().enumerate() {
        let Some(cell) = cells.get(name.as_str()) else {
            continue;
        };
        // The second cell (noarch) is the tree's shared one.
        slots.extend(
            cell.chunks
                .iter()
                .map(|c| layout::Slot::from((index == 1, c.bucket, c.digest))),
        );
    }
    let inputs = publication::generations(heads);
    let file = format!("{repo}/{tree}");
    // A part gc swept while its bytes were held here is NotFound: start over from the store.
    let Gathered {
        pool_chunks,
        documents,
        stored,
        record,
        resume_last,
    } = crate::publish::fragment_cache::retry_after_forgetting(store, || {
        gather(store, tree, &file, &slots, definition.retention)
    })
    .await?;
    let mut files: BTreeMap<String, FileEntry> = BTreeMap::new();
    let built_at = crate::util::time::now_unix();
    let mut repomd = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<repomd xmlns=\"http://linux.duke.edu/metadata/repo\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\">\n  <revision>{built_at}</revision>\n"
    );
    for ((kind, document), meta) in ["primary", "filelists", "other"]
        .into_iter()
        .zip(&documents)
        .zip(stored)
    {
        let href = format!("repodata/{}-{kind}.xml.gz", meta.digest);
        files.insert(
            format!("{tree}/{href}"),
            FileEntry {
                sha256: meta.digest,
                size: meta.size,
            },
        );
        repomd.push_str(&format!(
            "  <data type=\"{kind}\">\n    <checksum type=\"sha256\">{}</checksum>\n    <open-checksum type=\"sha256\">{}</open-checksum>\n    <location href=\"{href}\"/>\n    <timestamp>{built_at}</timestamp>\n    <size>{}</size>\n    <open-size>{}</open-size>\n  </data>\n",
            meta.digest, document.open_checksum, meta.size, document.open_size
        ));
    }
    repomd.push_str("</repomd>\n");
    let signature = agent.detach_sign(repomd.as_bytes(), true).await?;
    let key = agent.public_key(true).await?;
    for (name, bytes) in [
        ("repomd.xml", Bytes::from(repomd)),
        ("repomd.xml.asc", Bytes::from(signature)),
        ("repomd.xml.key", Bytes::from(key)),
    ] {
        let meta = store.put_blob(bytes).await?;
        files.insert(
            format!("{tree}/repodata/{name}"),
            FileEntry {
                sha256: meta.digest,
                size: meta.size,
            },
        );
    }
    let publication = Publication {
        kind: ManifestKind::RpmPublication,
        repo: repo.to_string(),
        suite: tree.to_string(),
        built_at,
        inputs,
        files,
        pool: BTreeMap::new(),
        pool_chunks,
    };
    let built = BuiltLayout {
        documents,
        record,
        resume_last,
    };
    Ok((publication, built))
}

/// What [`gather`] found and stored of a tree.
struct Gathered {
    /// The blobs naming the tree's pool files.
    pool_chunks: Vec<crate::util::digest::Digest>,
    documents: Vec<fragments::Document>,
    /// The three documents' .gz files.
    stored: Vec<crate::store::BlobMeta>,
    record: layout::PublishLayout,
    resume_last: usize,
}

/// The pool chunks naming a tree's files, and its three joined documents, stored.
async fn gather(
    store: &Store,
    tree: &str,
    file: &str,
    slots: &[layout::Slot],
    retention: Option<u32>,
) -> Result<Gathered, crate::store::StoreError> {
    // Laid out over the last base, so one upload renders and hashes only what it adds.
    let layout::LaidOut {
        chunks,
        fragments: parts,
        laid,
    } = layout::fragments_for::<RpmPackage>(store, file, slots, Rendering::retaining(retention))
        .await?;
    let mut pool_chunks = Vec::new();
    for (chunk, fragment) in chunks.iter().zip(&parts) {
        pool_chunks.push(
            fragments::pool_chunk(
                store,
                tree,
                chunk,
                Rendering::retaining(retention),
                fragment,
            )
            .await?,
        );
    }
    pool_chunks.sort();
    pool_chunks.dedup();
    // Each document's open-checksum hashes all of its text that was not hashed ahead
    // (hash_ahead): the three side by side, once hashing ahead is done.
    super::hash_ahead::settled(store, file).await;
    let (primary, filelists, other) = tokio::try_join!(
        fragments::document(store, &parts, 0, PRIMARY_OPEN, "</metadata>"),
        fragments::document(store, &parts, 1, FILELISTS_OPEN, "</filelists>"),
        fragments::document(store, &parts, 2, OTHER_OPEN, "</otherdata>"),
    )?;
    let documents = vec![primary, filelists, other];
    let resume_last = laid.delta_count() + 2;
    let stored = futures::future::try_join_all(
        documents
            .iter()
            .map(|document| store.put_composite(document.gz.clone())),
    )
    .await?;
    let mut record = layout::PublishLayout::default();
    for (document, meta) in documents.iter().zip(&stored) {
        let digests: Vec<crate::util::digest::Digest> = document.gz.iter().map(|p| p.0).collect();
        record.add_composite(store, meta.digest, &digests, resume_last);
    }
    record.add_file::<RpmPackage>(store, laid).await?;
    Ok(Gathered {
        pool_chunks,
        documents,
        stored,
        record,
        resume_last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::openpgp::verify_detached;
    use crate::agent::sign::MemorySigner;
    use crate::repo::definitions::NewRpmRepo;
    use crate::repo::model::RpmEntries;
    use crate::util::digest::Digest;

    /// An x86_64 record of `name` whose entries are one element per document.
    async fn package(store: &Store, name: &str) -> RpmPackage {
        let texts = [
            format!("<package><name>{name}</name></package>\n"),
            format!("<package name=\"{name}\"/>\n"),
            format!("<package name=\"{name}\"><version/></package>\n"),
        ];
        let entries = store.put_blob(Bytes::from(texts.concat())).await.unwrap();
        RpmPackage {
            entries: Some(RpmEntries {
                digest: entries.digest,
                sizes: texts.map(|t| t.len() as u64),
            }),
            ..crate::testing::rpm_package(name)
        }
    }

    /// Every document repomd.xml lists, with its checksums as repomd.xml states them.
    async fn documents_hold(store: &Store, published: &Published) -> usize {
        let repomd = &published.publication.files["12/x86_64/repodata/repomd.xml"];
        let repomd = store.get_blob(&repomd.sha256).await.unwrap();
        let text = String::from_utf8_lossy(&repomd).into_owned();
        let mut checked = 0;
        for block in text.split("<data type=").skip(1) {
            let value = |open: &str| {
                block
                    .split(open)
                    .nth(1)
                    .unwrap()
                    .split('<')
                    .next()
                    .unwrap()
                    .to_string()
            };
            let href = value("<location href=\"");
            let href = href.split('"').next().unwrap();
            let entry = published.publication.files[&format!("12/x86_64/{href}")];
            let gz = store.get_blob(&entry.sha256).await.unwrap();
            assert_eq!(Digest::of(&gz).hex(), value("<checksum type=\"sha256\">"));
            let mut plain = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&gz[..]), &mut plain)
                .unwrap();
            assert_eq!(
                Digest::of(&plain).hex(),
                value("<open-checksum type=\"sha256\">")
            );
            assert_eq!(plain.len().to_string(), value("<open-size>"));
            checked += 1;
        }
        checked
    }

    #[tokio::test]
    async fn a_tree_publishes_a_signed_repomd_whose_checksums_hold_as_it_grows() {
        let store = Store::memory();
        let new = NewRpmRepo {
            name: "farm".into(),
            releases: vec!["12".into()],
            architectures: vec!["x86_64".into()],
            private: false,
            sign_packages: false,
            retention: None,
        };
        crate::repo::definitions::add_rpm_repo(&store, new, "t")
            .await
            .unwrap();
        let signer = MemorySigner::new();
        let cell = crate::repo::model::rpm_cell_ref("farm", "12", "x86_64").unwrap();
        // One package at a time: each publish lays out over the last (base and deltas),
        // and every repomd.xml must state its documents' checksums.
        for (round, name) in ["alpha", "beta", "gamma", "delta"].into_iter().enumerate() {
            let record = package(&store, name).await;
            crate::repo::cells::add_package(&store, &cell, record, "t")
                .await
                .unwrap();
            let published = publish_tree(&store, &signer, "farm", "12/x86_64")
                .await
                .unwrap();
            assert_eq!(published.head.generation, round as u64);
            assert_eq!(documents_hold(&store, &published).await, 3);
            let files = &published.publication.files;
            let repomd = store
                .get_blob(&files["12/x86_64/repodata/repomd.xml"].sha256)
                .await
                .unwrap();
            let signature = store
                .get_blob(&files["12/x86_64/repodata/repomd.xml.asc"].sha256)
                .await
                .unwrap();
            assert!(verify_detached(&signer.certificate(), &signature, &repomd));
            let primary = files
                .iter()
                .find(|(path, _)| path.ends_with("-primary.xml.gz"))
                .map(|(_, entry)| entry.sha256)
                .unwrap();
            let gz = store.get_blob(&primary).await.unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(
                &mut flate2::read::MultiGzDecoder::new(&gz[..]),
                &mut text,
            )
            .unwrap();
            assert!(
                text.contains(&format!("packages=\"{}\"", round + 1)),
                "{text}"
            );
            assert!(text.contains(&format!("<name>{name}</name>")), "{text}");
        }
    }
}
