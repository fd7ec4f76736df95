//! Per-chunk repodata fragments, so adding one rpm recompresses one chunk: a
//! cell chunk's primary, filelists and other entries are joined (in file-name
//! order) and gzipped once, cached under `cache/rpm-fragments/<chunk>-<retention>`.
//! A published document is a small header member, the chunk members and a
//! footer member: dnf and zypper read multi-member gzip.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::publish::compress;
use crate::publish::fragment_cache::{FragmentCache, Rendering};
use crate::repo::model::{FileEntry, RpmPackage};
use crate::store::{LazyPart, Result, Store, StoreError};
use crate::util::digest::Digest;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Part {
    pub text: Digest,
    pub gz: Digest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fragment {
    pub count: u64,
    /// primary, filelists, other.
    pub parts: [Part; 3],
    /// Pool files relative to the tree: (location, sha256, size). None in a fragment
    /// taken up from a layout record ([`Summary`]): read from the cache when needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<Vec<(String, Digest, u64)>>,
}

/// What a layout record keeps of a fragment in one tree: what joining reads, and the
/// blob that lists the chunk's pool files for that tree (which a publication names).
/// The pool list itself is most of a fragment, so it is left out.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    count: u64,
    parts: [Part; 3],
    pool_chunk: Digest,
}

pub(crate) fn gz_error(e: std::io::Error) -> StoreError {
    StoreError::Corrupt("gzip".into(), e.to_string())
}

/// What one store's RPM publishes keep in memory (in [`Store::cache`]).
struct RpmFragments {
    /// Fragments never change for a given key, so a server keeps the recent ones.
    fragments: FragmentCache<Fragment>,
    /// Pool chunks by tree and fragment key: a noarch chunk is listed under every arch's
    /// tree, so its pool paths (and the blob naming them) differ per tree. Dropped with
    /// the fragments when the held bytes are, so a pool chunk gc swept is written again,
    /// not named blindly; bounded like the parsed pool chunks a server keeps
    /// (publication::PoolLoader).
    pool_chunks: FragmentCache<Digest>,
}

impl Default for RpmFragments {
    fn default() -> Self {
        RpmFragments {
            fragments: FragmentCache::new(),
            pool_chunks: FragmentCache::bounded(65_536),
        }
    }
}

/// A package's primary, filelists and other entries: one blob split at the recorded
/// sizes, or (records written before `entries`) three blobs.
async fn entry_texts(store: &Store, package: &RpmPackage) -> Result<[Bytes; 3]> {
    if let Some(entries) = package.entries {
        let whole = store.held_or_get(&entries.digest).await?;
        let [primary, filelists, other] = entries.sizes.map(|n| n as usize);
        let total = primary
            .checked_add(filelists)
            .and_then(|n| n.checked_add(other));
        if total != Some(whole.len()) {
            return Err(StoreError::Corrupt(
                format!("blob {}", entries.digest),
                format!(
                    "{} bytes, but the entries' sizes are {:?}",
                    whole.len(),
                    entries.sizes
                ),
            ));
        }
        return Ok([
            whole.slice(..primary),
            whole.slice(primary..primary + filelists),
            whole.slice(primary + filelists..),
        ]);
    }
    let mut texts: [Bytes; 3] = Default::default();
    for (text, blob) in texts
        .iter_mut()
        .zip([package.primary, package.filelists, package.other])
    {
        let blob = blob.ok_or_else(|| {
            StoreError::Corrupt(
                package.location.clone(),
                "no repodata entries recorded".into(),
            )
        })?;
        *text = store.get_blob(&blob).await?;
    }
    Ok(texts)
}

impl crate::publish::layout::Fragmented for RpmPackage {
    const KIND: &'static str = "rpm";
    type Fragment = Fragment;
    async fn fragment(store: Store, chunk: Digest, rendering: Rendering) -> Result<Arc<Fragment>> {
        fragment(&store, &chunk, rendering).await
    }
    fn listed(fragment: &Fragment) -> usize {
        fragment.count as usize
    }
    type Summary = Summary;
    fn summary(
        store: &Store,
        file: &str,
        chunk: &Digest,
        rendering: Rendering,
        f: &Fragment,
    ) -> Option<Summary> {
        let (_, tree) = file.split_once('/')?;
        let memory = store.cache::<RpmFragments>();
        let pool_chunk = *memory
            .pool_chunks
            .get(store, &pool_chunk_key(tree, chunk, rendering))?;
        Some(Summary {
            count: f.count,
            parts: f.parts.clone(),
            pool_chunk,
        })
    }
    fn remember(store: &Store, file: &str, chunk: &Digest, rendering: Rendering, summary: Summary) {
        let Some((_, tree)) = file.split_once('/') else {
            return;
        };
        let key = crate::publish::fragment_cache::cache_key("rpm", chunk, rendering);
        let memory = store.cache::<RpmFragments>();
        if memory.fragments.get(store, &key).is_none() {
            memory.fragments.remember(
                store,
                &key,
                Fragment {
                    count: summary.count,
                    parts: summary.parts,
                    pool: None,
                },
            );
        }
        memory.pool_chunks.remember(
            store,
            &pool_chunk_key(tree, chunk, rendering),
            summary.pool_chunk,
        );
    }
    fn take_up_ahead(store: &Store, join: &crate::publish::layout::AheadJoin) {
        super::open_text::take_up(store, join);
    }
}

/// Names the pool chunk of `chunk` in `tree` (`<release>/<arch>`) among
/// [`RpmFragments::pool_chunks`].
fn pool_chunk_key(tree: &str, chunk: &Digest, rendering: Rendering) -> String {
    format!(
        "{tree} {}",
        crate::publish::fragment_cache::cache_key("rpm", chunk, rendering)
    )
}

pub async fn fragment(
    store: &Store,
    chunk: &Digest,
    rendering: Rendering,
) -> Result<Arc<Fragment>> {
    let key = crate::publish::fragment_cache::cache_key("rpm", chunk, rendering);
    if let Some(found) = store.cache::<RpmFragments>().fragments.get(store, &key) {
        return Ok(found);
    }
    whole_fragment(store, chunk, rendering).await
}

/// A chunk's fragment with its pool list: from the cache, or rendered now (and cached).
async fn whole_fragment(
    store: &Store,
    chunk: &Digest,
    rendering: Rendering,
) -> Result<Arc<Fragment>> {
    let key = crate::publish::fragment_cache::cache_key("rpm", chunk, rendering);
    let memory = store.cache::<RpmFragments>();
    if let Some(bytes) = store.get_named(&key, 64 * 1024 * 1024).await?
        && let Ok(cached) = serde_json::from_slice::<Fragment>(&bytes)
        && cached.pool.is_some()
        && store.has_blob(&cached.parts[0].gz).await?
    {
        return Ok(memory.fragments.remember(store, &key, cached));
    }
    // Usually still held from the cell write that made it (an import, an upload).
    let loaded = crate::repo::cells::chunk::<RpmPackage>(store, chunk).await?;
    let mut kept =
        crate::repo::definitions::retained(loaded.packages.iter().collect(), rendering.retention);
    // createrepo_c orders packages by file name.
    kept.sort_by(|a, b| {
        a.location
            .rsplit('/')
            .next()
            .cmp(&b.location.rsplit('/').next())
    });
    let mut texts: [Vec<u8>; 3] = Default::default();
    let mut published = Vec::with_capacity(kept.len());
    for package in kept {
        let entries = entry_texts(store, package).await?;
        // One record rendered before a fix (or past a future gap) must not make every
        // tree that lists it unreadable: it is left out, loudly, and the rest published.
        if let Some(why) = entries
            .iter()
            .find_map(|entry| crate::publish::publish_check::xml_text_problem(entry))
        {
            tracing::error!(
                package = %package.location,
                why,
                "left out of repodata: its entries are not well-formed XML"
            );
            continue;
        }
        for (text, entry) in texts.iter_mut().zip(entries) {
            text.extend_from_slice(&entry);
        }
        published.push(package);
    }
    let kept = published;
    // Off the async threads, so chunks rendering side by side compress in parallel;
    // the three documents in one trip to the blocking pool.
    let compressed = crate::store::blocking("a repodata render", move || {
        texts.map(|text| {
            let gz = compress::gzip(&text);
            (text, gz)
        })
    })
    .await?;
    let mut parts = Vec::new();
    for (text, gz) in compressed {
        let gz = gz.map_err(gz_error)?;
        // Held as well as stored: the documents are joined from them right after.
        parts.push(Part {
            text: store.put_part(text).await?.0,
            gz: store.put_part(gz).await?.0,
        });
    }
    let parts: [Part; 3] = parts
        .try_into()
        .map_err(|_| StoreError::Corrupt(key.clone(), "three parts".into()))?;
    let fragment = Fragment {
        count: kept.len() as u64,
        parts,
        pool: Some(
            kept.iter()
                .map(|p| (p.location.clone(), p.sha256, p.size))
                .collect(),
        ),
    };
    let json = serde_json::to_vec(&fragment)
        .map_err(|e| StoreError::Corrupt(key.clone(), e.to_string()))?;
    store.put_named(&key, Bytes::from(json)).await?;
    Ok(memory.fragments.remember(store, &key, fragment))
}

/// The blob a publication of `tree` names for this chunk's pool files (path -> file).
pub async fn pool_chunk(
    store: &Store,
    tree: &str,
    chunk: &Digest,
    rendering: Rendering,
    fragment: &Arc<Fragment>,
) -> Result<Digest> {
    let key = pool_chunk_key(tree, chunk, rendering);
    let memory = store.cache::<RpmFragments>();
    if let Some(found) = memory.pool_chunks.get(store, &key) {
        return Ok(*found);
    }
    // Taken up from a layout record for another tree (a noarch chunk): the pool list is
    // in the cache.
    let whole = match fragment.pool {
        Some(_) => Arc::clone(fragment),
        None => whole_fragment(store, chunk, rendering).await?,
    };
    let entries: BTreeMap<String, FileEntry> = pool_entries(tree, &whole).collect();
    let digest = store.put_json(&entries).await?.digest;
    memory.pool_chunks.remember(store, &key, digest);
    Ok(digest)
}

/// One repodata document: its gzip members, its text, and the sha256 and size of the text.
pub struct Document {
    /// Stored blobs whose concatenation is the document's .gz file, with their bytes
    /// where this process holds them.
    pub gz: Vec<LazyPart>,
    /// Header, chunk texts and footer: their concatenation is the uncompressed
    /// document. Chunk texts are blobs; header and footer are always at hand.
    pub text: Vec<LazyPart>,
    pub packages: u64,
    pub open_checksum: Digest,
    pub open_size: u64,
}

/// The first line of a document (after the XML declaration): its root element and
/// the package count. The count is why a publish cannot simply resume an earlier hash.
pub fn header(open: &str, packages: u64) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{open} packages=\"{packages}\">\n")
}

/// A small text as a part: named by its digest, not stored (only the .gz is served).
pub fn text_part(text: String) -> LazyPart {
    (Digest::of(text.as_bytes()), Some(Bytes::from(text)))
}

/// One document of fragments, `which` of primary, filelists and other. Its parts are
/// only read if their hash is not known: after a restart, a publish that takes up the
/// last one's layout reads only what it added.
pub async fn document(
    store: &Store,
    fragments: &[Arc<Fragment>],
    which: usize,
    open: &str,
    close: &str,
) -> Result<Document> {
    let packages: u64 = fragments.iter().map(|f| f.count).sum();
    let header = header(open, packages);
    let gz_header = store
        .put_part(compress::gzip(header.as_bytes()).map_err(gz_error)?)
        .await?;
    let mut gz = vec![(gz_header.0, Some(gz_header.1))];
    let mut text = vec![text_part(header)];
    for f in fragments.iter().filter(|f| f.count > 0) {
        let part = &f.parts[which];
        text.push((part.text, store.held(&part.text)));
        gz.push((part.gz, store.held(&part.gz)));
    }
    text.push(text_part(close.to_string()));
    let gz_footer = store
        .put_part(compress::gzip(close.as_bytes()).map_err(gz_error)?)
        .await?;
    gz.push((gz_footer.0, Some(gz_footer.1)));
    // Tens of megabytes at 20,000 rpms, resumed after what the server hashed ahead
    // (hash_ahead hashes ahead) when the count and leading parts match.
    let (open_checksum, open_size) = super::open_text::open_checksum(store, &text).await?;
    Ok(Document {
        gz,
        text,
        packages,
        open_checksum,
        open_size,
    })
}

/// The pool files a fragment lists, by path in `tree`; none if it was taken up
/// without them (see [`pool_chunk`]).
pub fn pool_entries<'a>(
    tree: &'a str,
    fragment: &'a Fragment,
) -> impl Iterator<Item = (String, FileEntry)> + 'a {
    fragment
        .pool
        .iter()
        .flatten()
        .map(move |(location, sha256, size)| {
            (
                format!("{tree}/{location}"),
                FileEntry {
                    sha256: *sha256,
                    size: *size,
                },
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::model::{Chunk, ManifestKind, RpmEntries};
    use crate::testing::rpm_package as package;

    /// Records from before `entries` (a blob per entry) render beside new ones (one blob).
    #[tokio::test]
    async fn old_and_new_entry_records_render_into_one_fragment() {
        let store = Store::memory();
        let put = |text: &'static str| {
            let store = store.clone();
            async move { store.put_blob(Bytes::from(text)).await.unwrap().digest }
        };
        let mut old = package("aold");
        old.primary = Some(put("<p old/>").await);
        old.filelists = Some(put("<f old/>").await);
        old.other = Some(put("<o old/>").await);
        let mut new = package("bnew");
        new.entries = Some(RpmEntries {
            digest: put("<p new/><f new/><o new/>").await,
            sizes: [8, 8, 8],
        });
        let chunk = Chunk {
            kind: ManifestKind::RpmChunk,
            packages: vec![old.clone(), new.clone()],
        };
        let digest = store.put_json(&chunk).await.unwrap().digest;
        let rendered = fragment(&store, &digest, Rendering::default())
            .await
            .unwrap();
        assert_eq!(rendered.count, 2);
        for (part, expected) in
            rendered
                .parts
                .iter()
                .zip(["<p old/><p new/>", "<f old/><f new/>", "<o old/><o new/>"])
        {
            assert_eq!(
                &store.get_blob(&part.text).await.unwrap()[..],
                expected.as_bytes()
            );
        }

        // Sizes that do not add up to the blob are corruption, not a panic.
        let mut lying = package("clying");
        lying.entries = Some(RpmEntries {
            digest: put("<p/>").await,
            sizes: [u64::MAX, 2, 0],
        });
        let chunk = Chunk {
            kind: ManifestKind::RpmChunk,
            packages: vec![lying],
        };
        let digest = store.put_json(&chunk).await.unwrap().digest;
        assert!(matches!(
            fragment(&store, &digest, Rendering::default()).await,
            Err(StoreError::Corrupt(..))
        ));
    }
}
