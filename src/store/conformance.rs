//! One behavioural test suite for the store, run against every backend we ship:
//! local disk (the embedded default), memory, and an S3-compatible server on
//! 127.0.0.1 (moto), so the compare-and-swap semantics are checked where they run.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;

use super::{RefName, Store, StoreError, at_hand};
use crate::util::digest::Digest;

pub(crate) async fn run_all(store: &Store) {
    blobs_are_content_addressed(store).await;
    streamed_file_blob(store).await;
    composites_read_like_blobs(store).await;
    packed_blobs_read_like_loose_ones(store).await;
    refs_compare_and_swap(store).await;
    update_ref_loses_no_update(store).await;
    concurrent_advances_lose_nothing(store).await;
}

async fn blobs_are_content_addressed(store: &Store) {
    let a = store
        .put_blob(Bytes::from_static(b"hello blob"))
        .await
        .unwrap();
    assert_eq!(a.digest, Digest::of(b"hello blob"));
    let again = store
        .put_blob(Bytes::from_static(b"hello blob"))
        .await
        .unwrap();
    assert_eq!(a.digest, again.digest, "same bytes, same name");
    assert_eq!(
        store.get_blob(&a.digest).await.unwrap(),
        Bytes::from_static(b"hello blob")
    );
    let missing = Digest::of(b"never stored");
    assert!(matches!(
        store.get_blob(&missing).await,
        Err(StoreError::NotFound(_))
    ));
    let ranged = store.stream_blob(&a.digest, Some(6..10)).await.unwrap();
    assert_eq!(ranged.size, 10);
    use futures::TryStreamExt;
    let body: Vec<Bytes> = ranged.body.try_collect().await.unwrap();
    assert_eq!(body.concat(), b"blob");
}

/// A blob (or a range of it) read through `stream_blob`.
async fn streamed(store: &Store, digest: &Digest, range: Option<std::ops::Range<u64>>) -> Vec<u8> {
    use futures::TryStreamExt;
    let chunks: Vec<Bytes> = store
        .stream_blob(digest, range)
        .await
        .unwrap()
        .body
        .try_collect()
        .await
        .unwrap();
    chunks.concat()
}

async fn packed_blobs_read_like_loose_ones(store: &Store) {
    use futures::TryStreamExt;
    let tag = format!(
        "{} {:?}",
        store.description(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)
    );
    let spool = tempfile::tempdir().unwrap();
    let bulk = store.bulk(spool.path()).unwrap();
    let small = Bytes::from(format!("a small packed blob, {tag}"));
    let repeated = Bytes::from(format!("a longer one, {tag}; ").repeat(200));
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(format!("a package file, {tag}").as_bytes())
        .unwrap();
    let file_bytes = Bytes::from(std::fs::read(file.path()).unwrap());
    let a = bulk.put_blob(small.clone()).await.unwrap();
    let b = bulk.put_blob(repeated.clone()).await.unwrap();
    bulk.put_blob(small.clone()).await.unwrap();
    let c = bulk
        .put_blob_from_file(file.path(), Digest::of(&file_bytes))
        .await
        .unwrap();
    assert!(matches!(
        bulk.put_blob_from_file(file.path(), Digest::of(b"other bytes"))
            .await,
        Err(StoreError::Corrupt(..))
    ));
    // Too big to gain from a pack: stored by itself at once.
    let big = Bytes::from(vec![b'x'; super::packs::MAX_PACKED_BLOB as usize + 1]);
    let big_meta = bulk.put_blob(big).await.unwrap();
    assert!(
        store
            .exists(&super::blob_path(&big_meta.digest))
            .await
            .unwrap()
    );

    // Until the pack is sealed nothing may name its blobs, and no other reader finds
    // them; the handle that wrote them reads them back.
    let reader = store.without_packs_known();
    assert!(!reader.has_blob(&a.digest).await.unwrap());
    assert!(bulk.has_blob(&b.digest).await.unwrap());
    assert_eq!(
        bulk.blob_size(&b.digest).await.unwrap(),
        repeated.len() as u64
    );
    assert_eq!(bulk.get_blob(&a.digest).await.unwrap(), small);
    assert_eq!(
        streamed(&bulk, &b.digest, Some(5..9)).await,
        &repeated[5..9]
    );
    bulk.finish_bulk().await.unwrap();
    assert!(
        !store.exists(&super::blob_path(&a.digest)).await.unwrap(),
        "a small blob is packed, not a file of its own"
    );
    for (meta, bytes) in [(a, &small), (b, &repeated), (c, &file_bytes)] {
        assert_eq!(&reader.get_blob(&meta.digest).await.unwrap(), bytes);
        assert!(reader.has_blob(&meta.digest).await.unwrap());
        assert_eq!(
            reader.blob_size(&meta.digest).await.unwrap(),
            bytes.len() as u64
        );
        assert_eq!(streamed(&reader, &meta.digest, None).await, &bytes[..]);
    }
    let ranged = reader.stream_blob(&b.digest, Some(3..40)).await.unwrap();
    assert_eq!(
        (ranged.size, ranged.range.clone()),
        (repeated.len() as u64, 3..40)
    );
    let body: Vec<Bytes> = ranged.body.try_collect().await.unwrap();
    assert_eq!(&body.concat()[..], &repeated[3..40]);
    assert!(matches!(
        reader
            .stream_blob(&a.digest, Some(0..small.len() as u64 + 1))
            .await,
        Err(StoreError::Corrupt(..))
    ));
    let listed = reader.refresh_packs().await.unwrap().packs;
    let pack = listed
        .iter()
        .find(|p| p.pack.index.find(&a.digest).is_some())
        .expect("the pack is listed");
    assert_eq!(
        pack.pack.index.entries().count(),
        3,
        "one entry per blob, once"
    );

    // A ref advanced through a bulk handle seals its pack first: what it names is there.
    let bulk = store.bulk(spool.path()).unwrap();
    let named = bulk
        .put_blob(Bytes::from(format!("named by a ref, {tag}")))
        .await
        .unwrap();
    let name = RefName::new(format!(
        "packed-test/{}",
        &Digest::of(tag.as_bytes()).hex()[..16]
    ))
    .unwrap();
    bulk.ref_advance(&name, None, named.digest, "test", "packed")
        .await
        .unwrap();
    assert!(
        store
            .without_packs_known()
            .has_blob(&named.digest)
            .await
            .unwrap()
    );

    // A flipped byte inside the pack: whole reads of that blob are refused.
    let path = super::pack_path(pack.pack.index.name());
    let mut damaged = store
        .get_named_path(&path, u64::MAX)
        .await
        .unwrap()
        .unwrap()
        .to_vec();
    let at = pack.pack.index.find(&a.digest).unwrap().offset as usize;
    damaged[at] ^= 1;
    store
        .raw_put(&path, damaged.into(), object_store::PutMode::Overwrite)
        .await
        .unwrap();
    assert!(matches!(
        store.without_packs_known().get_blob(&a.digest).await,
        Err(StoreError::Corrupt(..))
    ));
}

async fn composites_read_like_blobs(store: &Store) {
    use futures::{StreamExt, TryStreamExt};
    // Unique to this backend, so parts held in memory by another backend's run don't count.
    let tag = format!(
        "{} {:?}",
        store.description(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)
    );
    let texts = [
        format!("first part of {tag}\n"),
        format!("second, {tag}\n"),
        "third\n".into(),
    ];
    let mut parts = Vec::new();
    for text in &texts {
        let bytes = Bytes::from(text.clone());
        parts.push((store.put_blob(bytes.clone()).await.unwrap().digest, bytes));
    }
    let whole = texts.concat();
    let meta = store.put_composite(at_hand(&parts)).await.unwrap();
    assert_eq!(
        (meta.digest, meta.size),
        (Digest::of(whole.as_bytes()), whole.len() as u64)
    );
    assert_eq!(
        store.get_blob(&meta.digest).await.unwrap(),
        whole.as_bytes()
    );
    // Ranges inside one part, across a boundary, and to the end.
    let first = texts[0].len() as u64;
    for range in [
        2..5,
        first - 3..first + 4,
        0..whole.len() as u64,
        first..whole.len() as u64,
    ] {
        let stream = store
            .stream_blob(&meta.digest, Some(range.clone()))
            .await
            .unwrap();
        assert_eq!(stream.size, whole.len() as u64);
        let body: Vec<Bytes> = stream.body.try_collect().await.unwrap();
        assert_eq!(
            body.concat(),
            &whole.as_bytes()[range.start as usize..range.end as usize]
        );
    }
    // The next file that shares the first parts hashes right (its prefix is resumed).
    let changed = Bytes::from(format!("a new third part, {tag}\n"));
    let mut next = parts[..2].to_vec();
    next.push((
        store.put_blob(changed.clone()).await.unwrap().digest,
        changed.clone(),
    ));
    let next_whole = [texts[0].as_bytes(), texts[1].as_bytes(), &changed].concat();
    let next_digests: Vec<Digest> = next.iter().map(|p| p.0).collect();
    let meta = store.put_composite(at_hand(&next)).await.unwrap();
    assert_eq!(meta.digest, Digest::of(&next_whole));
    assert_eq!(store.get_blob(&meta.digest).await.unwrap(), next_whole);
    // Another process takes up the states written down for it, forgets nothing it
    // needs, and hashes a successor right without the bytes of the parts it resumes
    // past; a part not at hand and not resumed past is read from the store.
    let points = store.composite_resume_points(&next_digests, 1).unwrap();
    store.composites.part_hashes.clear();
    store
        .take_up_composite(&meta.digest, &points)
        .await
        .unwrap();
    let later = Bytes::from(format!("appended later, {tag}\n"));
    let later_digest = store.put_blob(later.clone()).await.unwrap().digest;
    let successor = vec![
        (next[0].0, None),
        (next[1].0, None),
        (next[2].0, None),
        (later_digest, Some(later.clone())),
    ];
    let successor_whole = [&next_whole[..], &later].concat();
    let meta = store.put_composite(successor).await.unwrap();
    assert_eq!(
        (meta.digest, meta.size),
        (Digest::of(&successor_whole), successor_whole.len() as u64)
    );
    assert_eq!(store.get_blob(&meta.digest).await.unwrap(), successor_whole);
    store.composites.part_hashes.clear();
    let unresumed = store
        .put_composite(vec![(parts[0].0, None), (later_digest, None)])
        .await
        .unwrap();
    assert_eq!(
        unresumed.digest,
        Digest::of(&[texts[0].as_bytes(), &later].concat())
    );
    // One part is the part itself; no parts is the empty blob.
    let single = store.put_composite(at_hand(&parts[..1])).await.unwrap();
    assert_eq!(single.digest, parts[0].0);
    let empty = store.put_composite(Vec::new()).await.unwrap();
    assert_eq!(empty.digest, Digest::of(b""));
    // A part the store lacks is refused before any record names it ...
    let lost = Bytes::from(format!("never stored, {tag}"));
    assert!(matches!(
        store
            .put_composite(vec![
                (parts[0].0, None),
                (Digest::of(&lost), Some(lost.clone()))
            ])
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store
            .put_composite(vec![(parts[0].0, None), (Digest::of(&lost), None)])
            .await,
        Err(StoreError::NotFound(_))
    ));
    // ... and a part that goes missing later is an error that names it, never wrong content.
    let fragile = Bytes::from(format!("deleted later, {tag}"));
    let fragile_digest = store.put_blob(fragile.clone()).await.unwrap().digest;
    let record = store
        .put_composite(vec![(parts[1].0, None), (fragile_digest, Some(fragile))])
        .await
        .unwrap();
    let doomed = futures::stream::iter([Ok(super::blob_path(&fragile_digest))]).boxed();
    let _: Vec<_> = store
        .object_store()
        .delete_stream(doomed)
        .try_collect()
        .await
        .unwrap();
    match store.get_blob(&record.digest).await {
        Err(StoreError::Corrupt(_, why)) => assert!(why.contains("missing"), "{why}"),
        other => panic!("expected a missing part, got {other:?}"),
    }
}

async fn streamed_file_blob(store: &Store) {
    // Larger than one multipart part, so the streaming path really splits it.
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let chunk: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    let mut hasher = crate::util::digest::Hasher::new();
    for _ in 0..9 {
        file.write_all(&chunk).unwrap();
        hasher.update(&chunk);
    }
    file.flush().unwrap();
    let (digest, size) = hasher.finish();
    let meta = store.put_blob_from_file(file.path(), digest).await.unwrap();
    assert_eq!((meta.digest, meta.size), (digest, size));
    assert_eq!(store.blob_size(&digest).await.unwrap(), size);

    // A spool file that does not match the digest the caller claims is refused, and nothing is stored.
    let wrong = Digest::of(b"a different claim");
    assert!(matches!(
        store.put_blob_from_file(file.path(), wrong).await,
        Err(StoreError::Corrupt(..))
    ));
    assert!(!store.has_blob(&wrong).await.unwrap());
}

/// Writers that each add one to a counter through `update_ref`, side by side: every
/// addition lands (each conflict decides again from the new head); a decision that
/// leaves the ref alone writes nothing, and a reread is not a try.
async fn update_ref_loses_no_update(store: &Store) {
    use super::RefUpdate;
    let name = RefName::new("test/update-ref-counter").unwrap();
    let (writers, each) = (8u64, 5u64);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store =
            Store::from_object_store(Arc::clone(store.object_store()), format!("counter {w}"));
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..each {
                let store = &store;
                store
                    .update_ref(&name, "w", |head| async move {
                        let count: u64 = match head {
                            Some(head) => store.get_json(&head.target).await?,
                            None => 0,
                        };
                        let target = store.put_json(&(count + 1)).await?.digest;
                        Ok::<_, StoreError>(RefUpdate::Advance {
                            target,
                            note: format!("{}", count + 1),
                            value: (),
                        })
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let head = store.ref_head(&name).await.unwrap().unwrap();
    let count: u64 = store.get_json(&head.target).await.unwrap();
    assert_eq!(count, writers * each, "an update was lost");
    assert_eq!(head.generation + 1, writers * each);

    let mut reread = false;
    let (value, entry) = store
        .update_ref(&name, "w", |_| {
            let first = !reread;
            reread = true;
            async move {
                Ok::<_, StoreError>(if first {
                    RefUpdate::Reread
                } else {
                    RefUpdate::Unchanged("as it was")
                })
            }
        })
        .await
        .unwrap();
    assert_eq!((value, entry), ("as it was", None));
    assert!(reread);
    assert_eq!(
        store.ref_head(&name).await.unwrap().unwrap().generation,
        head.generation,
        "nothing was written"
    );
}

async fn refs_compare_and_swap(store: &Store) {
    let name = RefName::new("test/cas").unwrap();
    assert!(store.ref_head(&name).await.unwrap().is_none());
    let one = Digest::of(b"1");
    let two = Digest::of(b"2");
    let first = store
        .ref_advance(&name, None, one, "test", "create")
        .await
        .unwrap();
    assert_eq!(first.generation, 0);
    // A second creator that also believed the ref absent loses.
    assert!(matches!(
        store.ref_advance(&name, None, two, "test", "racer").await,
        Err(StoreError::Conflict(_))
    ));
    let second = store
        .ref_advance(&name, Some(0), two, "test", "update")
        .await
        .unwrap();
    assert_eq!(second.generation, 1);
    assert!(matches!(
        store
            .ref_advance(&name, Some(0), one, "test", "stale")
            .await,
        Err(StoreError::Conflict(_))
    ));
    let head = store.ref_head(&name).await.unwrap().unwrap();
    assert_eq!((head.generation, head.target), (1, two));
    assert_eq!(store.ref_generations(&name).await.unwrap(), vec![0, 1]);
    assert_eq!(
        store.ref_entry(&name, 0).await.unwrap().unwrap().target,
        one
    );

    // A second handle on the same backend (another daemon) sees the head too.
    let other = Store::from_object_store(Arc::clone(store.object_store()), "other".into());
    assert_eq!(other.ref_head(&name).await.unwrap().unwrap().generation, 1);
    other
        .ref_advance(&name, Some(1), one, "other", "from elsewhere")
        .await
        .unwrap();
    assert_eq!(
        store.ref_head(&name).await.unwrap().unwrap().generation,
        2,
        "probing finds newer generations"
    );
    assert_eq!(
        store.ref_children("test").await.unwrap(),
        vec!["cas".to_string()]
    );

    for bad in ["", "a//b", "../x", "a/./b", "a b", "a/\u{2215}b"] {
        assert!(RefName::new(bad).is_err(), "{bad:?}");
    }
}

async fn concurrent_advances_lose_nothing(store: &Store) {
    let name = RefName::new("test/counter").unwrap();
    let writers = 8;
    let per_writer = 5;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store =
            Store::from_object_store(Arc::clone(store.object_store()), format!("writer {w}"));
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for i in 0..per_writer {
                loop {
                    let head = store.ref_head(&name).await.unwrap();
                    let target = Digest::of(format!("{w}-{i}").as_bytes());
                    match store
                        .ref_advance(
                            &name,
                            head.map(|h| h.generation),
                            target,
                            "w",
                            &format!("{w}-{i}"),
                        )
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Conflict(_)) => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            conflicts
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let generations = store.ref_generations(&name).await.unwrap();
    assert_eq!(
        generations.len(),
        writers * per_writer,
        "every advance got its own generation"
    );
    let mut notes = Vec::new();
    for g in generations {
        notes.push(store.ref_entry(&name, g).await.unwrap().unwrap().note);
    }
    notes.sort();
    notes.dedup();
    assert_eq!(
        notes.len(),
        writers * per_writer,
        "no write was lost or duplicated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_filesystem_backend() {
    let dir = tempfile::tempdir().unwrap();
    run_all(&Store::local(dir.path()).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_memory_backend() {
    run_all(&Store::memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_backend_on_loopback() {
    let server = crate::testing::S3Server::start().await;
    let store = Store::open(&server.config("conformance"), std::path::Path::new("/")).unwrap();
    run_all(&store).await;
}

/// An import's spool on another filesystem than a local store (here tmpfs under
/// /dev/shm): rename fails with EXDEV, and sealing must copy each pack across, then
/// remove the spool copy, and every blob must read back from a fresh handle.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn packs_sealed_across_filesystems_read_back() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir_in("/dev/shm").expect("this test needs a tmpfs at /dev/shm");
    let device = |path: &std::path::Path| std::fs::metadata(path).unwrap().dev();
    assert_ne!(
        device(dir.path()),
        device(spool.path()),
        "the spool must be on another filesystem than the store for this test to mean anything"
    );
    let store = Store::local(dir.path()).unwrap();
    let bulk = store.bulk(spool.path()).unwrap();
    let blobs: Vec<Bytes> = (0..50)
        .map(|i| Bytes::from(format!("blob {i} packed across filesystems; ").repeat(i + 1)))
        .collect();
    let mut digests = Vec::new();
    for blob in &blobs {
        digests.push(bulk.put_blob(blob.clone()).await.unwrap().digest);
    }
    bulk.finish_bulk().await.unwrap();
    let left: Vec<_> = std::fs::read_dir(spool.path()).unwrap().collect();
    assert!(
        left.is_empty(),
        "the spool copy of the pack was removed: {left:?}"
    );
    let packs: Vec<String> = std::fs::read_dir(dir.path().join("packs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(packs.len(), 2, "one pack and its index: {packs:?}");
    let fresh = Store::local(dir.path()).unwrap();
    for (digest, blob) in digests.iter().zip(&blobs) {
        assert_eq!(&fresh.get_blob(digest).await.unwrap(), blob);
    }
}
