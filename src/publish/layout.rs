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
//!
//! What a publish laid out is written down beside its publication ([`PublishLayout`]): the
//! base, the deltas over it and the hash states near the end of every joined file. The
//! next publish of the suite, by a restarted daemon or another one on the bucket, takes
//! it up and costs what a publish by the process that wrote it would.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::publish::fragment_cache::{FragmentCache, Rendering};
use crate::repo::model::{Chunk, Record};
use crate::store::resumable_hash::ResumePoints;
use crate::store::{Result, Store};
use crate::util::digest::Digest;

/// A kind of package whose index files are joined from per-chunk fragments.
pub trait Fragmented: Record + PartialEq {
    /// Names the kind in the memories' keys (`apt`, `rpm`).
    const KIND: &'static str;
    type Fragment: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static;
    /// One chunk's fragment, remembered or rendered now. Owned inputs, so that rendering
    /// several side by side keeps the manager's future `Send` (see `render_chunks`).
    fn fragment(
        store: Store,
        chunk: Digest,
        rendering: Rendering,
    ) -> impl Future<Output = Result<Arc<Self::Fragment>>> + Send;
    /// How many packages a fragment lists.
    fn listed(fragment: &Self::Fragment) -> usize;
    /// What a layout record keeps of a base fragment: what joining and publishing read.
    type Summary: Serialize + serde::de::DeserializeOwned;
    /// The summary of `chunk`'s fragment in the index file `file`, or None if this
    /// process no longer knows enough of it (the record then keeps no fragments).
    fn summary(
        store: &Store,
        file: &str,
        chunk: &Digest,
        rendering: Rendering,
        fragment: &Self::Fragment,
    ) -> Option<Self::Summary>;
    /// Keeps a summary taken up from a layout record of `file`, as if rendered here.
    fn remember(
        store: &Store,
        file: &str,
        chunk: &Digest,
        rendering: Rendering,
        summary: Self::Summary,
    );
    /// Takes up a join hashed ahead of kind `kind` that this package kind wrote down
    /// (see [`AheadJoin`]); the store's own kinds are taken up by the layout.
    fn take_up_ahead(_store: &Store, _join: &AheadJoin) {}
}

/// The fragments of `chunks`, in order, rendering the missing ones side by side.
async fn rendered<P: Fragmented>(
    store: &Store,
    chunks: &[Digest],
    rendering: Rendering,
) -> Result<Vec<Arc<P::Fragment>>> {
    crate::publish::fragment_cache::render_chunks(store, chunks, rendering, P::fragment).await
}

/// One cell chunk in an index file. Written down (in a base) as the tuple
/// `[shared, bucket, chunk]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(bool, u8, Digest)", into = "(bool, u8, Digest)")]
pub struct Slot {
    /// From the file's shared cell (`all` for APT, `noarch` for RPM), not its own.
    pub shared: bool,
    /// The chunk's bucket in its cell.
    pub bucket: u8,
    pub chunk: Digest,
}

impl Slot {
    /// Where the slot sits: two cells of a file may use the same bucket.
    fn place(&self) -> (bool, u8) {
        (self.shared, self.bucket)
    }
}

impl From<(bool, u8, Digest)> for Slot {
    fn from((shared, bucket, chunk): (bool, u8, Digest)) -> Slot {
        Slot {
            shared,
            bucket,
            chunk,
        }
    }
}

impl From<Slot> for (bool, u8, Digest) {
    fn from(slot: Slot) -> Self {
        (slot.shared, slot.bucket, slot.chunk)
    }
}

/// An index file's fragments in publishing order, with the chunk each renders.
pub struct LaidOut<F> {
    pub chunks: Vec<Digest>,
    pub fragments: Vec<Arc<F>>,
    /// How the file was laid out, for the publication's [`PublishLayout`].
    pub laid: FileLayout<F>,
}

/// What an index file was last laid out from scratch from, in file order.
#[derive(Debug, Serialize, Deserialize)]
struct Base {
    slots: Vec<Slot>,
    /// Packages the base lists, to bound the delta against.
    packages: usize,
    rendering: Rendering,
    /// The blobs this base and its fragments' summaries are written down as, once they are.
    #[serde(skip)]
    stored: OnceLock<(Digest, Option<Digest>)>,
}

/// How one index file was laid out: its base and the deltas over it.
pub struct FileLayout<F> {
    /// Names the file without the store: kind, file and rendering.
    key: String,
    /// The index file (repository, suite or tree, component, architecture).
    file: String,
    base: Arc<Base>,
    /// The base chunks' fragments, in base order.
    base_fragments: Vec<Arc<F>>,
    /// The delta memories the layout used: (key, delta chunk and count).
    deltas: Vec<(String, Option<(Digest, usize)>)>,
}

impl<F> FileLayout<F> {
    /// How many delta fragments follow the base's.
    pub fn delta_count(&self) -> usize {
        self.deltas.iter().filter(|(_, d)| d.is_some()).count()
    }
}

/// What one publish of a suite or tree laid out, written beside its publication under
/// `cache/publish-layouts/<publication digest>` (so gc drops it with the publication).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishLayout {
    /// By file (kind, file, rendering): the base blob and the deltas over it.
    files: BTreeMap<String, FileRecord>,
    /// Each joined file the publish stored, with hash states near its end.
    composites: Vec<(Digest, ResumePoints)>,
    /// Joins hashed ahead for the next publish, after this one (RPM documents, whose
    /// first part changes with the package count).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ahead: Vec<AheadJoin>,
}

/// A join hashed ahead, written down: its parts and sizes, and the states known after
/// some of them. The parts are listed whole: the join is not stored anywhere else.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AheadJoin {
    /// What the states hash: [`COMPOSITE`] (a stored composite's parts, which are blobs)
    /// or a kind a package kind takes up itself ([`Fragmented::take_up_ahead`]).
    pub kind: String,
    pub parts: Vec<(Digest, u64)>,
    pub points: ResumePoints,
}

/// The [`AheadJoin`] kind of a composite blob expected soon: its parts are blobs.
pub const COMPOSITE: &str = "composite";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRecord {
    /// The index file, for [`Fragmented::remember`] (absent in records from before it).
    #[serde(default)]
    file: String,
    base: Digest,
    /// The base chunks' fragment summaries, in base order.
    fragments: Option<Digest>,
    deltas: Vec<(String, Option<(Digest, usize)>)>,
}

/// Where the record of the publication `publication` is kept.
pub fn record_path(publication: &Digest) -> String {
    format!("{LAYOUT_RECORDS}/{publication}")
}

pub(crate) const LAYOUT_RECORDS: &str = "cache/publish-layouts";

impl PublishLayout {
    /// Adds one file's layout, writing its base down if this process has not yet.
    pub async fn add_file<P: Fragmented>(
        &mut self,
        store: &Store,
        laid: FileLayout<P::Fragment>,
    ) -> Result<()> {
        let (base, fragments) = match laid.base.stored.get() {
            Some(stored) => *stored,
            None => {
                let summaries: Option<Vec<P::Summary>> = laid
                    .base_fragments
                    .iter()
                    .zip(&laid.base.slots)
                    .map(|(f, slot)| {
                        P::summary(store, &laid.file, &slot.chunk, laid.base.rendering, f)
                    })
                    .collect();
                let fragments = match summaries {
                    Some(summaries) => Some(store.put_json(&summaries).await?.digest),
                    None => None,
                };
                let stored = (store.put_json(&*laid.base).await?.digest, fragments);
                let _ = laid.base.stored.set(stored);
                stored
            }
        };
        self.files.insert(
            laid.key,
            FileRecord {
                file: laid.file,
                base,
                fragments,
                deltas: laid.deltas,
            },
        );
        Ok(())
    }

    /// Adds a joined file just stored from `parts`, with the hash states after its last
    /// `last` parts (and the one before): enough to resume past its base.
    pub fn add_composite(
        &mut self,
        store: &Store,
        composite: Digest,
        parts: &[Digest],
        last: usize,
    ) {
        if let Some(points) = store.composite_resume_points(parts, last) {
            self.composites.push((composite, points));
        }
    }

    /// Adds a join hashed ahead, with the states after its last `last` parts (and the
    /// one before), as [`PartHashes::resume_points`](crate::store::resumable_hash::PartHashes::resume_points)
    /// exported them.
    pub fn add_ahead(&mut self, kind: &str, parts: Vec<(Digest, u64)>, points: ResumePoints) {
        if !points.0.is_empty() {
            self.ahead.push(AheadJoin {
                kind: kind.to_string(),
                parts,
                points,
            });
        }
    }

    /// Adds what another record holds (one file's layout, say).
    pub fn extend(&mut self, other: PublishLayout) {
        self.files.extend(other.files);
        self.composites.extend(other.composites);
        self.ahead.extend(other.ahead);
    }

    /// Every blob the record names, for gc to keep while its publication lives: the
    /// parts of a composite hashed ahead too (its first part is named nowhere else).
    pub fn blobs(&self) -> Vec<Digest> {
        self.files
            .values()
            .flat_map(|f| {
                [Some(f.base), f.fragments]
                    .into_iter()
                    .flatten()
                    .chain(f.deltas.iter().filter_map(|(_, d)| d.map(|d| d.0)))
            })
            .chain(
                self.ahead
                    .iter()
                    .filter(|join| join.kind == COMPOSITE)
                    .flat_map(|join| join.parts.iter().map(|p| p.0)),
            )
            .collect()
    }

    /// Writes the record down for `publication`. Failing costs only the next publish by
    /// another process its head start.
    pub async fn write(&self, store: &Store, publication: &Digest) {
        let written = match serde_json::to_vec(self) {
            Ok(json) => {
                store
                    .put_named(&record_path(publication), Bytes::from(json))
                    .await
            }
            Err(e) => Err(crate::store::StoreError::Corrupt(
                "layout record".into(),
                e.to_string(),
            )),
        };
        match written {
            Ok(()) => made_here(store, publication),
            Err(e) => {
                tracing::warn!(error = %e, "cannot write the publish layout down; the next restart lays out from scratch")
            }
        }
    }
}

/// Notes that this store handle made `publication`'s layout, so its next publish does not
/// take up the record (written later, after hashing ahead) of what it holds already.
pub fn made_here(store: &Store, publication: &Digest) {
    let memory = store.cache::<LayoutMemory>();
    memory.taken_up.remember(store, &publication.hex(), ());
}

/// What one store's publishes laid out, kept between publishes; dropped with the
/// store's held bytes.
struct LayoutMemory {
    /// Bases by kind, file and retention.
    bases: FragmentCache<Base>,
    /// The packages a changed chunk adds to its base chunk, as a chunk of their own, or
    /// None when the change is not a pure addition. Keyed by kind, both digests and
    /// retention.
    deltas: FragmentCache<Option<(Digest, usize)>>,
    /// Publications whose layout this handle made or took up: their layout is in
    /// memory already.
    taken_up: FragmentCache<()>,
}

impl Default for LayoutMemory {
    fn default() -> Self {
        LayoutMemory {
            bases: FragmentCache::bounded(4096),
            deltas: FragmentCache::bounded(65_536),
            taken_up: FragmentCache::bounded(4096),
        }
    }
}

/// Takes up the layout another process (or this one before a restart) wrote down for
/// `publication`, unless this process made it or took it up already. A missing or
/// unreadable record only means the next publish lays out from scratch.
pub async fn take_up<P: Fragmented>(store: &Store, publication: &Digest) {
    let memory = store.cache::<LayoutMemory>();
    let known = publication.hex();
    if memory.taken_up.get(store, &known).is_some() {
        return;
    }
    match read_record(store, publication).await {
        Ok(Some(record)) => {
            tracing::info!(
                publication = %publication,
                files = record.files.len(),
                ahead = record.ahead.len(),
                "taking up the layout the last publish wrote down"
            );
            if let Err(e) = install::<P>(store, &record).await {
                tracing::warn!(error = %e, "cannot take up the last publish's layout; laying out from scratch");
            }
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the last publish's layout; laying out from scratch")
        }
    }
    memory.taken_up.remember(store, &known, ());
}

/// A publication's layout record, if one was written.
pub async fn read_record(store: &Store, publication: &Digest) -> Result<Option<PublishLayout>> {
    let Some(bytes) = store
        .get_named(&record_path(publication), 64 * 1024 * 1024)
        .await?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| crate::store::StoreError::Corrupt(record_path(publication), e.to_string()))
}

/// Takes up the files of kind `P` a record lays out. The blobs it names are kept by its
/// publication, which is current while the caller holds its write access: nothing
/// taken up needs checking.
async fn install<P: Fragmented>(store: &Store, record: &PublishLayout) -> Result<()> {
    let memory = store.cache::<LayoutMemory>();
    let ours = format!("{} ", P::KIND);
    for (key, file) in record
        .files
        .iter()
        .filter(|(key, _)| key.starts_with(&ours))
    {
        if memory.bases.get(store, key).is_none() {
            let base: Base = store.get_json(&file.base).await?;
            if let Some(fragments) = file.fragments {
                let summaries: Vec<P::Summary> = store.get_json(&fragments).await?;
                if summaries.len() != base.slots.len() {
                    return Err(crate::store::StoreError::Corrupt(
                        format!("layout fragments {fragments}"),
                        "not one per base chunk".into(),
                    ));
                }
                for (slot, summary) in base.slots.iter().zip(summaries) {
                    P::remember(store, &file.file, &slot.chunk, base.rendering, summary);
                }
            }
            let _ = base.stored.set((file.base, file.fragments));
            memory.bases.remember(store, key, base);
        }
        for (delta_key, delta) in &file.deltas {
            if memory.deltas.get(store, delta_key).is_none() {
                memory.deltas.remember(store, delta_key, *delta);
            }
        }
    }
    for (composite, points) in &record.composites {
        store.take_up_composite(composite, points).await?;
    }
    for join in &record.ahead {
        if join.kind == COMPOSITE {
            store.take_up_join(&join.parts, &join.points);
        } else {
            P::take_up_ahead(store, join);
        }
    }
    Ok(())
}

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
    let memory = store.cache::<LayoutMemory>();
    let file_key = format!("{} {file} {rendering:?}", P::KIND);
    if let Some(base) = memory.bases.get(store, &file_key)
        && let Some((chunks, fragments, deltas)) =
            over_base::<P>(store, &base, slots, rendering).await?
    {
        let base_fragments = fragments[..base.slots.len()].to_vec();
        return Ok(LaidOut {
            chunks,
            fragments,
            laid: FileLayout {
                key: file_key,
                file: file.to_string(),
                base,
                base_fragments,
                deltas,
            },
        });
    }
    let chunks: Vec<Digest> = slots.iter().map(|s| s.chunk).collect();
    let fragments = rendered::<P>(store, &chunks, rendering).await?;
    let packages = fragments.iter().map(|f| P::listed(f)).sum();
    let base = memory.bases.remember(
        store,
        &file_key,
        Base {
            slots: slots.to_vec(),
            packages,
            rendering,
            stored: OnceLock::new(),
        },
    );
    Ok(LaidOut {
        chunks,
        laid: FileLayout {
            key: file_key,
            file: file.to_string(),
            base,
            base_fragments: fragments.clone(),
            deltas: Vec::new(),
        },
        fragments,
    })
}

/// A layout over a base: the chunks and fragments in file order, and the deltas used.
type OverBase<F> = (
    Vec<Digest>,
    Vec<Arc<F>>,
    Vec<(String, Option<(Digest, usize)>)>,
);

/// The base's fragments followed by the deltas of every chunk changed since, or None
/// if some change is not a pure addition or the delta has grown too large.
async fn over_base<P: Fragmented>(
    store: &Store,
    base: &Base,
    slots: &[Slot],
    rendering: Rendering,
) -> Result<Option<OverBase<P::Fragment>>> {
    let current: HashMap<(bool, u8), Digest> = slots.iter().map(|s| (s.place(), s.chunk)).collect();
    let mut deltas = Vec::new();
    let mut used = Vec::new();
    let mut added = 0;
    let was: HashMap<(bool, u8), Digest> =
        base.slots.iter().map(|s| (s.place(), s.chunk)).collect();
    if was.keys().any(|slot| !current.contains_key(slot)) {
        // A bucket emptied: packages were removed.
        return Ok(None);
    }
    for slot in slots {
        let now = &slot.chunk;
        let before = was.get(&slot.place());
        if before == Some(now) {
            continue;
        }
        // A bucket the base did not have is all new.
        let (delta_key, found) = delta::<P>(store, before, now, rendering).await?;
        used.push((delta_key, found));
        match found {
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
    let mut chunks: Vec<Digest> = base.slots.iter().map(|s| s.chunk).collect();
    let mut fragments = rendered::<P>(store, &chunks, rendering).await?;
    fragments.extend(rendered::<P>(store, &deltas, rendering).await?);
    chunks.extend(deltas);
    Ok(Some((chunks, fragments, used)))
}

/// The chunk of packages `now` has beyond `was`, stored so its fragment can be rendered
/// and cached like any chunk's, and how many; None unless `now` only adds to `was` and
/// retention keeps every package of `now` (so the base's fragment of `was` still holds).
/// With the key it is remembered under.
async fn delta<P: Fragmented>(
    store: &Store,
    was: Option<&Digest>,
    now: &Digest,
    rendering: Rendering,
) -> Result<(String, Option<(Digest, usize)>)> {
    let key = format!(
        "{} {}",
        was.map_or("-".to_string(), |d| d.hex()),
        crate::publish::fragment_cache::cache_key(&format!("{}-delta", P::KIND), now, rendering)
    );
    let memory = store.cache::<LayoutMemory>();
    if let Some(found) = memory.deltas.get(store, &key) {
        if let Some((chunk, _)) = *found
            && !store.has_blob(&chunk).await?
        {
            // gc swept the delta chunk (nothing but this memory names it): make it again.
        } else {
            return Ok((key, *found));
        }
    }
    let before = match was {
        Some(was) => crate::repo::cells::chunk::<P>(store, was).await?,
        None => Arc::new(Chunk {
            kind: P::CHUNK_KIND,
            packages: Vec::new(),
        }),
    };
    let after = crate::repo::cells::chunk::<P>(store, now).await?;
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
    memory.deltas.remember(store, &key, stored);
    Ok((key, stored))
}

/// The packages of `after` not in `before`, if `after` keeps every package of `before`
/// unchanged and retention drops nothing from `after`.
fn added_packages<P: Record + PartialEq>(
    before: &[P],
    after: &[P],
    retention: Option<u32>,
) -> Option<Vec<P>> {
    if crate::repo::definitions::retained(after.iter().collect(), retention).len() != after.len() {
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
    use crate::testing::apt_package as package;

    /// Bases written before `Slot` had names must still read, and new ones read the same.
    #[test]
    fn a_slot_is_written_down_as_the_tuple_it_was() {
        let chunk = Digest::of(b"chunk");
        let slot = Slot {
            shared: true,
            bucket: 7,
            chunk,
        };
        let json = serde_json::to_string(&slot).unwrap();
        assert_eq!(json, serde_json::to_string(&(true, 7u8, chunk)).unwrap());
        assert_eq!(serde_json::from_str::<Slot>(&json).unwrap(), slot);
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
