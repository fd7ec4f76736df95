//! Per-chunk index fragments, so a one-package change re-renders and recompresses
//! one chunk instead of the suite. A cell chunk (content-addressed, so its digest
//! names exactly its packages) renders once into its Packages stanzas, a gzip
//! member, an xz block and its Contents lines; these are cached as blobs under
//! `cache/apt-fragments/<chunk>-<retention>`. Publishing joins fragments: gzip
//! members concatenate (apt reads multi-member gzip) and xz blocks are joined
//! into one stream (apt reads one multi-block stream, not concatenated streams).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::compress::{self, XzBlock};
use super::{contents, packages};
use crate::digest::Digest;
use crate::model::{AptChunk, AptPackage, FileEntry};
use crate::store::{Result, Store, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fragment {
    pub text: Digest,
    pub gz: Digest,
    pub xz: Digest,
    pub xz_block: XzBlock,
    pub contents: Digest,
    pub contents_gz: Digest,
    /// Pool files of the packages this fragment lists: (path, sha256, size).
    pub pool: Vec<(String, Digest, u64)>,
    /// The same, as a blob a publication can name (a JSON object path -> file).
    #[serde(default)]
    pub pool_chunk: Option<Digest>,
}

/// Fragments never change for a given key, so a server keeps the recent ones in memory.
static MEMORY: std::sync::LazyLock<crate::fragment_memory::Fragments<Fragment>> =
    std::sync::LazyLock::new(Default::default);

async fn fragment_bytes(store: &Store, digest: &Digest) -> Result<Bytes> {
    crate::fragment_memory::bytes(store, digest).await
}

/// The fragments of `chunks`, in order, rendering the missing ones side by side.
pub async fn fragments(
    store: &Store,
    chunks: &[Digest],
    retention: Option<u32>,
) -> Result<Vec<Fragment>> {
    crate::fragment_memory::render_chunks(
        store,
        chunks,
        retention,
        |store, chunk, retention| async move { fragment(&store, &chunk, retention).await },
    )
    .await
}

/// The fragment for a chunk, from the cache or rendered now.
pub async fn fragment(store: &Store, chunk: &Digest, retention: Option<u32>) -> Result<Fragment> {
    let key = crate::fragment_memory::cache_key("apt", chunk, retention);
    if let Some(found) = MEMORY.get(&key) {
        return Ok(found);
    }
    if let Some(bytes) = store.get_named(&key, 64 * 1024 * 1024).await?
        && let Ok(cached) = serde_json::from_slice::<Fragment>(&bytes)
        && store.has_blob(&cached.xz).await?
        && store.has_blob(&cached.text).await?
        && let Some(chunk) = cached.pool_chunk
        && store.has_blob(&chunk).await?
    {
        MEMORY.remember(&key, &cached);
        return Ok(cached);
    }
    let loaded: AptChunk = store.get_json(chunk).await?;
    let kept = crate::repos::apply_retention(
        loaded.packages.iter().collect::<Vec<&AptPackage>>(),
        retention,
        |p| (p.name.clone(), p.architecture.clone()),
        |a, b| crate::versions::dpkg_cmp(&a.version, &b.version),
    );
    let pool: Vec<(String, Digest, u64)> = kept
        .iter()
        .map(|p| (p.filename.clone(), p.sha256, p.size))
        .collect();
    let contents_text = contents::render(store, &kept).await?;
    let mut kept = kept;
    let text = packages::render(&mut kept);
    let compressed = tokio::task::spawn_blocking(move || {
        Ok::<_, std::io::Error>((
            compress::gzip(text.as_bytes())?,
            compress::xz_block(text.as_bytes())?,
            compress::gzip(contents_text.as_bytes())?,
            text,
            contents_text,
        ))
    })
    .await
    .map_err(|e| StoreError::Corrupt("fragment".into(), e.to_string()))?
    .map_err(|e| StoreError::Corrupt("fragment".into(), e.to_string()))?;
    let (gz, xz_block, contents_gz, text, contents_text) = compressed;
    let pool_map: std::collections::BTreeMap<&String, FileEntry> = kept_pool(&pool).collect();
    let pool_chunk = store.put_json(&pool_map).await?.digest;
    let fragment = Fragment {
        pool_chunk: Some(pool_chunk),
        text: store.put_blob(Bytes::from(text)).await?.digest,
        gz: store.put_blob(Bytes::from(gz)).await?.digest,
        xz: store
            .put_blob(Bytes::from(xz_block.bytes.clone()))
            .await?
            .digest,
        xz_block,
        contents: store.put_blob(Bytes::from(contents_text)).await?.digest,
        contents_gz: store.put_blob(Bytes::from(contents_gz)).await?.digest,
        pool,
    };
    let json = serde_json::to_vec(&fragment)
        .map_err(|e| StoreError::Corrupt(key.clone(), e.to_string()))?;
    store.put_named(&key, Bytes::from(json)).await?;
    MEMORY.remember(&key, &fragment);
    Ok(fragment)
}

fn kept_pool(pool: &[(String, Digest, u64)]) -> impl Iterator<Item = (&String, FileEntry)> {
    pool.iter().map(|(path, sha256, size)| {
        (
            path,
            FileEntry {
                sha256: *sha256,
                size: *size,
            },
        )
    })
}

/// The index files of a list of fragments, each as the parts that make it up.
pub struct Joined {
    pub packages: Vec<Bytes>,
    pub packages_gz: Vec<Bytes>,
    pub packages_xz: Vec<Bytes>,
    pub contents: Vec<Bytes>,
    pub contents_gz: Vec<Bytes>,
}

async fn parts(store: &Store, digests: impl Iterator<Item = Digest>) -> Result<Vec<Bytes>> {
    let mut out = Vec::new();
    for digest in digests {
        out.push(fragment_bytes(store, &digest).await?);
    }
    Ok(out)
}

pub async fn join(store: &Store, fragments: &[Fragment]) -> Result<Joined> {
    let mut blocks = Vec::new();
    for f in fragments.iter().filter(|f| f.xz_block.uncompressed > 0) {
        let mut block = f.xz_block.clone();
        block.bytes = fragment_bytes(store, &f.xz).await?.to_vec();
        blocks.push(block);
    }
    let packages_xz = compress::xz_stream(&blocks.iter().collect::<Vec<_>>())
        .map_err(|e| StoreError::Corrupt("xz".into(), e.to_string()))?;
    // An empty index is still a valid (empty) gzip file.
    let non_empty_gz = |parts: Vec<Bytes>| -> Result<Vec<Bytes>> {
        if parts.iter().all(Bytes::is_empty) {
            compress::gzip(b"")
                .map(|empty| vec![Bytes::from(empty)])
                .map_err(|e| StoreError::Corrupt("gzip".into(), e.to_string()))
        } else {
            Ok(parts)
        }
    };
    Ok(Joined {
        packages: parts(store, fragments.iter().map(|f| f.text)).await?,
        packages_gz: non_empty_gz(parts(store, fragments.iter().map(|f| f.gz)).await?)?,
        packages_xz: vec![Bytes::from(packages_xz)],
        contents: parts(store, fragments.iter().map(|f| f.contents)).await?,
        contents_gz: non_empty_gz(parts(store, fragments.iter().map(|f| f.contents_gz)).await?)?,
    })
}

pub fn pool_entries(fragments: &[Fragment]) -> impl Iterator<Item = (String, FileEntry)> + '_ {
    fragments.iter().flat_map(|f| {
        f.pool.iter().map(|(path, sha256, size)| {
            (
                path.clone(),
                FileEntry {
                    sha256: *sha256,
                    size: *size,
                },
            )
        })
    })
}
