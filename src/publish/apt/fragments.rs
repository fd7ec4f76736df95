//! Per-chunk index fragments, so a one-package change re-renders and recompresses
//! one chunk instead of the suite. A cell chunk (content-addressed, so its digest
//! names exactly its packages) renders once into its Packages stanzas, a gzip
//! member, an xz block and its Contents lines; these are cached as blobs under
//! `cache/apt-fragments/<chunk>-<retention>`. Publishing joins fragments: gzip
//! members concatenate (apt reads multi-member gzip) and xz blocks are joined
//! into one stream (apt reads one multi-block stream, not concatenated streams).

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{contents, packages};
use crate::publish::compress::{self, XzBlock};
use crate::publish::fragment_cache::Rendering;
use crate::repo::model::{AptPackage, FileEntry};
use crate::store::{LazyPart, Result, Store, StoreError, at_hand};
use crate::util::digest::Digest;

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
    /// How many packages `pool` lists, kept when a layout record leaves `pool` out.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub listed: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Fragment {
    /// How many packages the fragment lists.
    pub fn listed(&self) -> usize {
        self.listed.max(self.pool.len())
    }
}

/// Fragments never change for a given key, so a server keeps the recent ones in memory
/// (one map per store, in [`Store::cache`]).
#[derive(Default)]
struct AptFragments(crate::publish::fragment_cache::FragmentCache<Fragment>);

impl crate::publish::layout::Fragmented for AptPackage {
    const KIND: &'static str = "apt";
    type Fragment = Fragment;
    async fn fragment(store: Store, chunk: Digest, rendering: Rendering) -> Result<Arc<Fragment>> {
        fragment(&store, &chunk, rendering).await
    }
    fn listed(fragment: &Fragment) -> usize {
        fragment.listed()
    }
    type Summary = Fragment;
    fn summary(
        _: &Store,
        _: &str,
        _: &Digest,
        _: Rendering,
        fragment: &Fragment,
    ) -> Option<Fragment> {
        // Joining and publishing need the digests and the count, not the pool list
        // (the pool chunk holds it): a summary is a twentieth of the entry.
        Some(Fragment {
            pool: Vec::new(),
            listed: fragment.listed(),
            ..fragment.clone()
        })
    }
    fn remember(store: &Store, _: &str, chunk: &Digest, rendering: Rendering, fragment: Fragment) {
        let key = crate::publish::fragment_cache::cache_key("apt", chunk, rendering);
        let memory = store.cache::<AptFragments>();
        if memory.0.get(store, &key).is_none() {
            memory.0.remember(store, &key, fragment);
        }
    }
}

/// MD5 and SHA-1 of a stored package, for Packages' legacy `MD5sum` and `SHA1` fields:
/// computed from its bytes once and remembered under `cache/legacy-hashes/<sha256>`
/// (gc drops the entry with the package), since a fragment laid out from scratch again
/// would otherwise reread every package of its chunk.
async fn legacy_hashes(store: &Store, digest: &Digest) -> Result<packages::LegacyHashes> {
    use futures::TryStreamExt;
    use sha1::Digest as _;
    let key = format!("cache/legacy-hashes/{digest}");
    if let Some(bytes) = store.get_named(&key, 1024).await?
        && let Some((md5, sha1)) = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.trim().split_once(' '))
        && md5.len() == 32
        && sha1.len() == 40
    {
        return Ok(packages::LegacyHashes {
            md5: md5.to_string(),
            sha1: sha1.to_string(),
        });
    }
    let (mut md5, mut sha1) = (md5::Md5::new(), sha1::Sha1::new());
    let mut body = store.stream_blob(digest, None).await?.body;
    while let Some(chunk) = body.try_next().await? {
        md5.update(&chunk);
        sha1.update(&chunk);
    }
    let hashes = packages::LegacyHashes {
        md5: hex::encode(md5.finalize()),
        sha1: hex::encode(sha1.finalize()),
    };
    store
        .put_named(
            &key,
            Bytes::from(format!("{} {}\n", hashes.md5, hashes.sha1)),
        )
        .await?;
    Ok(hashes)
}

/// The fragment for a chunk, from the cache or rendered now.
pub async fn fragment(
    store: &Store,
    chunk: &Digest,
    rendering: Rendering,
) -> Result<Arc<Fragment>> {
    let key = crate::publish::fragment_cache::cache_key("apt", chunk, rendering);
    let memory = store.cache::<AptFragments>();
    if let Some(found) = memory.0.get(store, &key) {
        return Ok(found);
    }
    if let Some(bytes) = store.get_named(&key, 64 * 1024 * 1024).await?
        && let Ok(cached) = serde_json::from_slice::<Fragment>(&bytes)
        && store.has_blob(&cached.xz).await?
        && store.has_blob(&cached.text).await?
        && let Some(chunk) = cached.pool_chunk
        && store.has_blob(&chunk).await?
    {
        return Ok(memory.0.remember(store, &key, cached));
    }
    // Usually still held from the cell write that made it (an import, an upload).
    let loaded = crate::repo::cells::chunk::<AptPackage>(store, chunk).await?;
    let kept: Vec<&AptPackage> =
        crate::repo::definitions::retained(loaded.packages.iter().collect(), rendering.retention)
            .into_iter()
            .filter(
                |package| match crate::publish::publish_check::stanza_problem(package) {
                    // A record stored before a fix (or past a future parser gap) must not make the
                    // whole Packages file unreadable: it is left out, loudly, and the rest published.
                    Some(why) => {
                        tracing::error!(
                            package = %package.filename,
                            why,
                            "left out of Packages: its stanza would not be well-formed"
                        );
                        false
                    }
                    None => true,
                },
            )
            .collect();
    let pool: Vec<(String, Digest, u64)> = kept
        .iter()
        .map(|p| (p.filename.clone(), p.sha256, p.size))
        .collect();
    let contents_text = contents::render(store, &kept).await?;
    let legacy = if rendering.legacy_hashes {
        let mut hashes = std::collections::HashMap::with_capacity(kept.len());
        for package in &kept {
            hashes.insert(package.sha256, legacy_hashes(store, &package.sha256).await?);
        }
        Some(hashes)
    } else {
        None
    };
    let mut kept = kept;
    let text = packages::render(&mut kept, legacy.as_ref());
    // xz takes longest: it runs beside the two gzips, on the other core.
    let (text, contents_text) = (Bytes::from(text), Bytes::from(contents_text));
    let failed = |e: String| StoreError::Corrupt("fragment".into(), e);
    let xz_input = text.clone();
    let xz = tokio::task::spawn_blocking(move || compress::xz_block(&xz_input));
    let gz_inputs = (text.clone(), contents_text.clone());
    let gz = tokio::task::spawn_blocking(move || {
        Ok::<_, std::io::Error>((compress::gzip(&gz_inputs.0)?, compress::gzip(&gz_inputs.1)?))
    });
    let (xz, gz) = tokio::join!(xz, gz);
    let xz_block = xz
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(e.to_string()))?;
    let (gz, contents_gz) = gz
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(e.to_string()))?;
    let pool_map: std::collections::BTreeMap<&String, FileEntry> = kept_pool(&pool).collect();
    let pool_json = serde_json::to_vec(&pool_map).map_err(|e| failed(e.to_string()))?;
    // Stored side by side (each write is fsynced), and held: the join reads them next.
    let (pool_chunk, text, gz, xz, contents, contents_gz) = tokio::try_join!(
        store.put_blob(Bytes::from(pool_json)),
        store.put_part(text),
        store.put_part(gz),
        store.put_part(xz_block.bytes.clone()),
        store.put_part(contents_text),
        store.put_part(contents_gz),
    )?;
    let fragment = Fragment {
        listed: pool.len(),
        pool_chunk: Some(pool_chunk.digest),
        text: text.0,
        gz: gz.0,
        xz: xz.0,
        xz_block,
        contents: contents.0,
        contents_gz: contents_gz.0,
        pool,
    };
    let json = serde_json::to_vec(&fragment)
        .map_err(|e| StoreError::Corrupt(key.clone(), e.to_string()))?;
    store.put_named(&key, Bytes::from(json)).await?;
    Ok(memory.0.remember(store, &key, fragment))
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
    pub packages: Vec<LazyPart>,
    pub packages_gz: Vec<LazyPart>,
    pub packages_xz: Vec<LazyPart>,
    pub contents: Vec<LazyPart>,
    pub contents_gz: Vec<LazyPart>,
}

impl Joined {
    /// The five files' parts, in the order a publication lists them.
    pub fn files(self) -> [Vec<LazyPart>; 5] {
        [
            self.packages,
            self.packages_gz,
            self.packages_xz,
            self.contents,
            self.contents_gz,
        ]
    }
}

/// The fragment blobs `digests` name, with their bytes if held in memory: storing the
/// joined file reads the others only if its hash cannot resume past them. Empty ones
/// add nothing to a file and are left out (known by their digest, without reading them).
fn parts(store: &Store, digests: impl Iterator<Item = Digest>) -> Vec<LazyPart> {
    let empty = Digest::of(b"");
    digests
        .filter(|digest| *digest != empty)
        .map(|digest| (digest, store.held(&digest)))
        .collect()
}

/// The parts of each index file of one component and architecture, in order. Nothing
/// is concatenated here: the store keeps a joined file as the list of its parts.
pub async fn join(store: &Store, fragments: &[Arc<Fragment>]) -> Result<Joined> {
    let with_blocks: Vec<&Fragment> = fragments
        .iter()
        .map(|f| &**f)
        .filter(|f| f.xz_block.uncompressed > 0)
        .collect();
    let packages_xz = if with_blocks.is_empty() {
        let empty =
            compress::xz(b"").map_err(|e| StoreError::Corrupt("xz".into(), e.to_string()))?;
        at_hand(&[store.put_part(empty).await?])
    } else {
        let frame =
            compress::xz_frame(&with_blocks.iter().map(|f| &f.xz_block).collect::<Vec<_>>());
        let mut all = at_hand(&[store.put_part(frame.header).await?]);
        all.extend(parts(store, with_blocks.iter().map(|f| f.xz)));
        all.extend(at_hand(&[store.put_part(frame.tail).await?]));
        all
    };
    // An empty index is still a valid (empty) gzip file.
    let gz_or_empty = async |parts: Vec<LazyPart>| -> Result<Vec<LazyPart>> {
        if !parts.is_empty() {
            return Ok(parts);
        }
        let empty =
            compress::gzip(b"").map_err(|e| StoreError::Corrupt("gzip".into(), e.to_string()))?;
        Ok(at_hand(&[store.put_part(empty).await?]))
    };
    Ok(Joined {
        packages: parts(store, fragments.iter().map(|f| f.text)),
        packages_gz: gz_or_empty(parts(store, fragments.iter().map(|f| f.gz))).await?,
        packages_xz,
        contents: parts(store, fragments.iter().map(|f| f.contents)),
        contents_gz: gz_or_empty(parts(store, fragments.iter().map(|f| f.contents_gz))).await?,
    })
}
