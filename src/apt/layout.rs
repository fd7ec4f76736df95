//! The order of chunk fragments inside one Packages (and Contents) file. apt reads
//! stanzas in any order, but Release must carry the sha256 of the whole file, and a
//! hash can only be resumed over an unchanged prefix. So a server remembers the
//! layout it last published from scratch (its *base*) and, while uploads only add
//! packages, keeps every base fragment in place and appends the added packages as
//! small delta fragments: a publish then renders and hashes the delta, not the
//! changed chunk and everything after it. Anything else (a removal, retention
//! dropping a version, a server restart, a delta grown large) lays the file out
//! from scratch again, and that becomes the new base.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use super::fragments::{self, Fragment};
use crate::digest::Digest;
use crate::fragment_memory::Fragments;
use crate::model::{AptPackage, Chunk, Record};
use crate::store::{Result, Store};

/// One cell chunk in an index file: (from the `all` cell, bucket, chunk digest).
pub type Slot = (bool, u8, Digest);

/// What an index file was last laid out from scratch from, in file order.
#[derive(Debug)]
struct Base {
    slots: Vec<Slot>,
    /// Packages the base lists, to bound the delta against.
    packages: usize,
}

/// Bases by store, file and retention; dropped with the fragment memory.
static BASES: LazyLock<Fragments<Base>> = LazyLock::new(|| Fragments::bounded(4096));

/// The packages a changed chunk adds to its base chunk, as a chunk of their own, or
/// None when the change is not a pure addition. Keyed by both digests and retention.
static DELTAS: LazyLock<Fragments<Option<(Digest, usize)>>> =
    LazyLock::new(|| Fragments::bounded(65_536));

/// A delta may list this many packages, plus an eighth of the base, before the file is
/// laid out from scratch again (which renders the chunks that changed since the base).
const DELTA_ALLOWANCE: usize = 1024;

/// The fragments of an index file made of `slots`, in the order to publish them.
/// `file` names the file (repository, suite, component, architecture).
pub async fn fragments_for(
    store: &Store,
    file: &str,
    slots: &[Slot],
    retention: Option<u32>,
) -> Result<Vec<Arc<Fragment>>> {
    let key = format!("{} {file} {retention:?}", store.description());
    if let Some(base) = BASES.get(&key)
        && let Some(laid_out) = over_base(store, &base, slots, retention).await?
    {
        return Ok(laid_out);
    }
    let chunks: Vec<Digest> = slots.iter().map(|s| s.2).collect();
    let laid_out = fragments::fragments(store, &chunks, retention).await?;
    let packages = laid_out.iter().map(|f| f.pool.len()).sum();
    BASES.remember(
        &key,
        Base {
            slots: slots.to_vec(),
            packages,
        },
    );
    Ok(laid_out)
}

/// The base's fragments followed by the deltas of every chunk changed since, or None
/// if some change is not a pure addition or the delta has grown too large.
async fn over_base(
    store: &Store,
    base: &Base,
    slots: &[Slot],
    retention: Option<u32>,
) -> Result<Option<Vec<Arc<Fragment>>>> {
    let current: HashMap<(bool, u8), Digest> = slots.iter().map(|s| ((s.0, s.1), s.2)).collect();
    let mut deltas = Vec::new();
    let mut added = 0;
    let was: HashMap<(bool, u8), Digest> = base.slots.iter().map(|s| ((s.0, s.1), s.2)).collect();
    if was.keys().any(|slot| !current.contains_key(slot)) {
        // A bucket emptied: packages were removed.
        return Ok(None);
    }
    for (all, bucket, now) in slots {
        let before = was.get(&(*all, *bucket));
        if before == Some(now) {
            continue;
        }
        // A bucket the base did not have is all new.
        match delta(store, before, now, retention).await? {
            Some((chunk, count)) => {
                deltas.push(chunk);
                added += count;
            }
            None => return Ok(None),
        }
    }
    if added > DELTA_ALLOWANCE + base.packages / 8 {
        return Ok(None);
    }
    let base_chunks: Vec<Digest> = base.slots.iter().map(|s| s.2).collect();
    let mut laid_out = fragments::fragments(store, &base_chunks, retention).await?;
    laid_out.extend(fragments::fragments(store, &deltas, retention).await?);
    Ok(Some(laid_out))
}

/// The chunk of packages `now` has beyond `was`, stored so its fragment can be rendered
/// and cached like any chunk's, and how many; None unless `now` only adds to `was` and
/// retention keeps every package of `now` (so the base's fragment of `was` still holds).
async fn delta(
    store: &Store,
    was: Option<&Digest>,
    now: &Digest,
    retention: Option<u32>,
) -> Result<Option<(Digest, usize)>> {
    let key = format!(
        "{} {}",
        was.map_or("-".to_string(), |d| d.hex()),
        crate::fragment_memory::cache_key("apt-delta", now, retention)
    );
    if let Some(found) = DELTAS.get(&key) {
        if let Some((chunk, _)) = *found
            && !store.has_blob(&chunk).await?
        {
            // gc swept the delta chunk (nothing but this memory names it): make it again.
        } else {
            return Ok(*found);
        }
    }
    let before = match was {
        Some(was) => crate::cells::chunk::<AptPackage>(store, was).await?,
        None => Arc::new(Chunk {
            kind: AptPackage::CHUNK_KIND,
            packages: Vec::new(),
        }),
    };
    let after = crate::cells::chunk::<AptPackage>(store, now).await?;
    let found = added_packages(&before.packages, &after.packages, retention);
    let stored = match found {
        Some(added) => {
            let count = added.len();
            let chunk = Chunk {
                kind: AptPackage::CHUNK_KIND,
                packages: added,
            };
            Some((store.put_json(&chunk).await?.digest, count))
        }
        None => None,
    };
    DELTAS.remember(&key, stored);
    Ok(stored)
}

/// The packages of `after` not in `before`, if `after` keeps every package of `before`
/// (same identity, same bytes) and retention drops nothing from `after`.
fn added_packages(
    before: &[AptPackage],
    after: &[AptPackage],
    retention: Option<u32>,
) -> Option<Vec<AptPackage>> {
    let kept = crate::repos::apply_retention(
        after.iter().collect::<Vec<_>>(),
        retention,
        |p| (p.name.clone(), p.architecture.clone()),
        |a, b| crate::versions::dpkg_cmp(&a.version, &b.version),
    );
    if kept.len() != after.len() {
        return None;
    }
    let listed: HashMap<_, _> = after.iter().map(|p| (p.identity(), p.sha256)).collect();
    if before
        .iter()
        .any(|p| listed.get(&p.identity()) != Some(&p.sha256))
    {
        return None;
    }
    let had: std::collections::HashSet<_> = before.iter().map(|p| p.identity()).collect();
    Some(
        after
            .iter()
            .filter(|p| !had.contains(&p.identity()))
            .cloned()
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(name: &str, version: &str, bytes: &[u8]) -> AptPackage {
        AptPackage {
            name: name.into(),
            version: version.into(),
            architecture: "amd64".into(),
            source: name.into(),
            control: format!("Package: {name}\nVersion: {version}\n"),
            filename: format!("pool/main/{name}_{version}_amd64.deb"),
            size: bytes.len() as u64,
            sha256: Digest::of(bytes),
            files: Digest::of(b""),
            uploaded_at: 0,
            uploaded_by: "t".into(),
        }
    }

    #[test]
    fn only_pure_additions_that_retention_keeps_are_deltas() {
        let a = package("a", "1", b"a1");
        let b = package("b", "1", b"b1");
        let b2 = package("b", "2", b"b2");
        // New names and new versions are additions.
        let one = std::slice::from_ref;
        let added = added_packages(one(&a), &[a.clone(), b.clone()], None).unwrap();
        assert_eq!(added, vec![b.clone()]);
        let added = added_packages(one(&b), &[b.clone(), b2.clone()], Some(2)).unwrap();
        assert_eq!(added, vec![b2.clone()]);
        // Nothing added is an empty delta.
        assert_eq!(added_packages(one(&a), one(&a), None), Some(vec![]));
        // A removal, different bytes under the same identity, or retention dropping the
        // older version all change what the base's fragment lists: no delta.
        assert_eq!(added_packages(&[a.clone(), b.clone()], one(&a), None), None);
        let swapped = package("a", "1", b"other bytes");
        assert_eq!(added_packages(one(&a), &[swapped], None), None);
        assert_eq!(added_packages(one(&b), &[b.clone(), b2], Some(1)), None);
    }
}
