//! gc for packs. A pack is one object, so its dead blobs cannot be deleted one by
//! one: a pack nothing reachable is in goes whole; one that is mostly dead has its
//! live blobs written loose first and then goes; one at least half alive is kept,
//! dead blobs and all, until retention empties it further. The index is deleted
//! before its pack, so a reader never finds an index without its pack.

use std::collections::HashSet;
use std::time::Duration;

use object_store::path::Path;

use crate::store::{Store, StoreError, pack_index_path, pack_path};
use crate::util::digest::Digest;

/// What gc did (or, dry, would do) to packs.
#[derive(Debug, Default)]
pub struct PackSweep {
    /// Dead packed blobs whose pack was removed.
    pub swept: usize,
    pub swept_bytes: u64,
    /// Live blobs written loose because their pack was mostly dead.
    pub rewritten: usize,
    /// Dead packed blobs kept because their pack is at least half alive, or young.
    pub held: usize,
    /// Indexes to delete, before `packs`: an index must never outlive its pack.
    pub indexes: Vec<Path>,
    pub packs: Vec<Path>,
}

/// Judges every pack against `marked`, writing loose the live blobs of packs that go
/// (unless dry); the caller deletes the returned `indexes`, then the `packs`.
pub async fn sweep_packs(
    store: &Store,
    marked: &HashSet<Digest>,
    grace: Duration,
    dry_run: bool,
) -> Result<PackSweep, StoreError> {
    let grace = grace.as_secs() as i64;
    let mut sweep = PackSweep::default();
    // One listing serves both the loaded packs and the crash leftovers below.
    let listing = store.refresh_packs().await?;
    let mut doomed_indexes = Vec::new();
    let mut doomed_packs = Vec::new();
    for listed in &listing.packs {
        let (mut live, mut dead) = (Vec::new(), Vec::new());
        for entry in listed.pack.index.entries() {
            if marked.contains(&entry.digest) {
                live.push(entry);
            } else {
                dead.push(entry);
            }
        }
        if dead.is_empty() {
            continue;
        }
        let live_bytes: u64 = live.iter().map(|e| e.length).sum();
        let dead_bytes: u64 = dead.iter().map(|e| e.length).sum();
        if listed.age < grace || live_bytes >= dead_bytes {
            sweep.held += dead.len();
            continue;
        }
        if !dry_run {
            for entry in &live {
                let bytes = store.get_blob(&entry.digest).await?;
                store.put_blob(bytes).await?;
            }
        }
        sweep.rewritten += live.len();
        sweep.swept += dead.len();
        sweep.swept_bytes += dead_bytes;
        let name = listed.pack.index.name();
        doomed_indexes.push(pack_index_path(name));
        doomed_packs.push(pack_path(name));
    }
    // Leftovers of a crash: a pack whose index was never written, or an index that
    // cannot be read (it names nothing, so nothing can depend on its pack).
    let unreadable: HashSet<String> = store
        .unreadable_packs()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    for (name, objects) in &listing.objects {
        let old = objects.age >= grace;
        if old && objects.index && unreadable.contains(name) {
            doomed_indexes.push(pack_index_path(name));
            if objects.pack {
                doomed_packs.push(pack_path(name));
            }
        } else if old && objects.pack && !objects.index {
            doomed_packs.push(pack_path(name));
        }
    }
    sweep.indexes = doomed_indexes;
    sweep.packs = doomed_packs;
    Ok(sweep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::{StreamExt, TryStreamExt};

    async fn delete(store: &Store, paths: Vec<Path>) {
        let stream = futures::stream::iter(paths.into_iter().map(Ok)).boxed();
        let _: Vec<Path> = store
            .object_store()
            .delete_stream(stream)
            .try_collect()
            .await
            .unwrap();
    }

    async fn packs_judged_by_what_is_alive(store: Store) {
        let spool = tempfile::tempdir().unwrap();
        let bulk = store.bulk(spool.path()).unwrap();
        let blobs: Vec<Bytes> = (0..4)
            .map(|i| Bytes::from(format!("packed blob number {i} of {}", store.description())))
            .collect();
        let mut digests = Vec::new();
        for bytes in &blobs {
            digests.push(bulk.put_blob(bytes.clone()).await.unwrap().digest);
        }
        bulk.finish_bulk().await.unwrap();
        let reader = store.without_packs_known();
        assert_eq!(reader.get_blob(&digests[0]).await.unwrap(), blobs[0]);

        let half: HashSet<Digest> = digests[..2].iter().copied().collect();
        let kept = sweep_packs(&store, &half, Duration::ZERO, false)
            .await
            .unwrap();
        assert_eq!(
            (kept.held, kept.swept, kept.indexes.len()),
            (2, 0, 0),
            "half alive: kept"
        );
        let one: HashSet<Digest> = digests[..1].iter().copied().collect();
        let young = sweep_packs(&store, &one, Duration::from_secs(3600), false)
            .await
            .unwrap();
        assert_eq!((young.held, young.indexes.len()), (3, 0), "young: kept");
        let dry = sweep_packs(&store, &one, Duration::ZERO, true)
            .await
            .unwrap();
        assert_eq!((dry.rewritten, dry.swept, dry.indexes.len()), (1, 3, 1));
        assert!(
            !store
                .exists(&crate::store::blob_path(&digests[0]))
                .await
                .unwrap(),
            "a dry run writes nothing"
        );

        let swept = sweep_packs(&store, &one, Duration::ZERO, false)
            .await
            .unwrap();
        assert_eq!((swept.rewritten, swept.swept), (1, 3));
        assert_eq!((swept.indexes.len(), swept.packs.len()), (1, 1));
        delete(&store, swept.indexes).await;
        delete(&store, swept.packs).await;
        // The reader that had read the pack's index still finds the live blob (now loose).
        assert_eq!(reader.get_blob(&digests[0]).await.unwrap(), blobs[0]);
        let fresh = store.without_packs_known();
        assert_eq!(fresh.get_blob(&digests[0]).await.unwrap(), blobs[0]);
        for dead in &digests[1..] {
            assert!(matches!(
                fresh.get_blob(dead).await,
                Err(StoreError::NotFound(_))
            ));
        }

        // A crash's leftovers: a pack without an index, an index that names nothing readable.
        store
            .put_bytes_at_for_test("packs/orphan.pack", Bytes::from_static(b"bytes"))
            .await;
        store
            .put_bytes_at_for_test("packs/garbled.idx", Bytes::from_static(b"not an index"))
            .await;
        let leftovers = sweep_packs(&store, &one, Duration::ZERO, false)
            .await
            .unwrap();
        assert_eq!(leftovers.indexes, vec![Path::from("packs/garbled.idx")]);
        assert_eq!(leftovers.packs, vec![Path::from("packs/orphan.pack")]);
        let young = sweep_packs(&store, &one, Duration::from_secs(3600), false)
            .await
            .unwrap();
        assert!(young.indexes.is_empty() && young.packs.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_local_disk() {
        let dir = tempfile::tempdir().unwrap();
        packs_judged_by_what_is_alive(Store::local(dir.path()).unwrap()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_memory() {
        packs_judged_by_what_is_alive(Store::memory()).await;
    }
}
