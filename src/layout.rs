//! The order of chunk fragments inside one index file (APT's Packages and Contents,
//! RPM's primary, filelists and other). Clients read entries in any order, but
//! Release and repomd.xml carry the sha256 of the whole file, and a hash can only be
//! resumed over an unchanged prefix. So a server remembers the layout it last
//! published from scratch (its *base*) and, while uploads only add packages, keeps
//! every base fragment in place and appends the added packages as small delta
//! fragments: a publish then renders and hashes the delta, not the changed chunk and
//! everything after it. Anything else (a removal, retention dropping a version, a
//! server restart, a delta grown large) lays the file out from scratch again, and
//! that becomes the new base.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, LazyLock};

use crate::digest::Digest;
use crate::fragment_memory::{Fragments, Rendering};
use crate::model::{Chunk, Record};
use crate::store::{Result, Store};

/// A kind of package whose index files are joined from per-chunk fragments.
pub trait Fragmented: Record + PartialEq {
    /// Names the kind in the memories' keys (`apt`, `rpm`).
    const KIND: &'static str;
    type Fragment: Send + Sync + 'static;
    /// One chunk's fragment, remembered or rendered now. Owned inputs, so that rendering
    /// several side by side keeps the manager's future `Send` (see `render_chunks`).
    fn fragment(
        store: Store,
        chunk: Digest,
        rendering: Rendering,
    ) -> impl Future<Output = Result<Arc<Self::Fragment>>> + Send;
    /// How many packages a fragment lists.
    fn listed(fragment: &Self::Fragment) -> usize;
}

/// The fragments of `chunks`, in order, rendering the missing ones side by side.
async fn rendered<P: Fragmented>(
    store: &Store,
    chunks: &[Digest],
    rendering: Rendering,
) -> Result<Vec<Arc<P::Fragment>>> {
    crate::fragment_memory::render_chunks(store, chunks, rendering, P::fragment).await
}

/// One cell chunk in an index file: (from the file's shared cell, `all` for APT or
/// `noarch` for RPM; bucket; chunk digest).
pub type Slot = (bool, u8, Digest);

/// An index file's fragments in publishing order, with the chunk each renders.
pub struct LaidOut<F> {
    pub chunks: Vec<Digest>,
    pub fragments: Vec<Arc<F>>,
}

/// What an index file was last laid out from scratch from, in file order.
#[derive(Debug)]
struct Base {
    slots: Vec<Slot>,
    /// Packages the base lists, to bound the delta against.
    packages: usize,
}

/// Bases by kind, store, file and retention; dropped with the fragment memory.
static BASES: LazyLock<Fragments<Base>> = LazyLock::new(|| Fragments::bounded(4096));

/// The packages a changed chunk adds to its base chunk, as a chunk of their own, or
/// None when the change is not a pure addition. Keyed by kind, both digests and retention.
static DELTAS: LazyLock<Fragments<Option<(Digest, usize)>>> =
    LazyLock::new(|| Fragments::bounded(65_536));

/// A delta may list this many packages, plus an eighth of the base, before the file is
/// laid out from scratch again (which renders the chunks that changed since the base).
const DELTA_ALLOWANCE: usize = 1024;

/// The fragments of an index file made of `slots`, in the order to publish them.
/// `file` names the file (repository, suite or release, component, architecture).
pub async fn fragments_for<P: Fragmented>(
    store: &Store,
    file: &str,
    slots: &[Slot],
    rendering: Rendering,
) -> Result<LaidOut<P::Fragment>> {
    let key = format!("{} {} {file} {rendering:?}", P::KIND, store.description());
    if let Some(base) = BASES.get(&key)
        && let Some(laid_out) = over_base::<P>(store, &base, slots, rendering).await?
    {
        return Ok(laid_out);
    }
    let chunks: Vec<Digest> = slots.iter().map(|s| s.2).collect();
    let fragments = rendered::<P>(store, &chunks, rendering).await?;
    let packages = fragments.iter().map(|f| P::listed(f)).sum();
    BASES.remember(
        &key,
        Base {
            slots: slots.to_vec(),
            packages,
        },
    );
    Ok(LaidOut { chunks, fragments })
}

/// The base's fragments followed by the deltas of every chunk changed since, or None
/// if some change is not a pure addition or the delta has grown too large.
async fn over_base<P: Fragmented>(
    store: &Store,
    base: &Base,
    slots: &[Slot],
    rendering: Rendering,
) -> Result<Option<LaidOut<P::Fragment>>> {
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
        match delta::<P>(store, before, now, rendering).await? {
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
    let mut chunks: Vec<Digest> = base.slots.iter().map(|s| s.2).collect();
    let mut fragments = rendered::<P>(store, &chunks, rendering).await?;
    fragments.extend(rendered::<P>(store, &deltas, rendering).await?);
    chunks.extend(deltas);
    Ok(Some(LaidOut { chunks, fragments }))
}

/// The chunk of packages `now` has beyond `was`, stored so its fragment can be rendered
/// and cached like any chunk's, and how many; None unless `now` only adds to `was` and
/// retention keeps every package of `now` (so the base's fragment of `was` still holds).
async fn delta<P: Fragmented>(
    store: &Store,
    was: Option<&Digest>,
    now: &Digest,
    rendering: Rendering,
) -> Result<Option<(Digest, usize)>> {
    let key = format!(
        "{} {}",
        was.map_or("-".to_string(), |d| d.hex()),
        crate::fragment_memory::cache_key(&format!("{}-delta", P::KIND), now, rendering)
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
        Some(was) => crate::cells::chunk::<P>(store, was).await?,
        None => Arc::new(Chunk {
            kind: P::CHUNK_KIND,
            packages: Vec::new(),
        }),
    };
    let after = crate::cells::chunk::<P>(store, now).await?;
    let found = added_packages(&before.packages, &after.packages, rendering.retention);
    let stored = match found {
        Some(added) => {
            let count = added.len();
            let chunk = Chunk {
                kind: P::CHUNK_KIND,
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
/// unchanged and retention drops nothing from `after`.
fn added_packages<P: Record + PartialEq>(
    before: &[P],
    after: &[P],
    retention: Option<u32>,
) -> Option<Vec<P>> {
    if crate::repos::retained(after.iter().collect(), retention).len() != after.len() {
        return None;
    }
    let listed: HashMap<_, &P> = after.iter().map(|p| (p.identity(), p)).collect();
    if before.iter().any(|p| listed.get(&p.identity()) != Some(&p)) {
        return None;
    }
    let had: HashSet<_> = before.iter().map(|p| p.identity()).collect();
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
    use crate::model::AptPackage;

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
