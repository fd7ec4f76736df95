//! Hashing ahead for the next publish of an RPM tree. repomd.xml carries each
//! document's open-checksum (the sha256 of its whole uncompressed text) and the
//! sha256 of its .gz, and both start with the package count: every publish changes
//! the first bytes, so no earlier hash state resumes and 40 MB are hashed at 20,000
//! rpms. After publishing N packages, a server hashes the documents as they would
//! start with N + 1 while it is idle, and the next upload's publish hashes only
//! the parts it changed. The states near the end of those joins are written down in
//! the publication's layout record, so a restarted daemon, or another one on the
//! bucket, resumes there too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::fragments::{self, Document};
use super::open_text;
use crate::publish::layout::{COMPOSITE, PublishLayout};
use crate::store::resumable_hash::{PartBytes, ResumePoints};
use crate::store::{LazyPart, Result, Store};
use crate::util::digest::Digest;

/// Hashing ahead for one store's trees (in [`Store::cache`]).
#[derive(Default)]
struct HashAhead {
    /// Only long-running servers hash ahead ([`enable`]): a one-shot `caprepo import`
    /// would wait for work no publish will use before it could exit.
    enabled: AtomicBool,
    /// Per tree (`<repo>/<release>/<arch>`), held while hashing ahead for it, so its
    /// next publish waits for states about to be ready rather than hashing the same
    /// bytes beside them. Per tree, so a noarch upload's publish of one arch does not
    /// wait for the other arch's hashing.
    trees: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Held (shared) by every hashing ahead until its record is written, which happens
    /// after the tree's next publish may start; [`settle_all`] takes it whole.
    writing: Arc<tokio::sync::RwLock<()>>,
}

fn ahead_lock(store: &Store, tree: &str) -> Arc<tokio::sync::Mutex<()>> {
    match store.cache::<HashAhead>().trees.lock() {
        Ok(mut locks) => Arc::clone(locks.entry(tree.to_string()).or_default()),
        // A panic elsewhere poisoned the map: hashing ahead is an optimisation, go without.
        Err(_) => Arc::default(),
    }
}

/// Lets publishes through `store` hash ahead for the next one (a server does).
pub fn enable(store: &Store) {
    store
        .cache::<HashAhead>()
        .enabled
        .store(true, Ordering::Relaxed);
}

/// Waits until hashing ahead for `tree` (if any) is done.
pub async fn settled(store: &Store, tree: &str) {
    drop(ahead_lock(store, tree).lock().await);
}

/// Waits until every tree's hashing ahead, and the record written after it, is done:
/// a stopping server does, so that its successor resumes where it stopped.
pub async fn settle_all(store: &Store) {
    let ahead = store.cache::<HashAhead>();
    let locks: Vec<_> = match ahead.trees.lock() {
        Ok(locks) => locks.values().cloned().collect(),
        Err(_) => return,
    };
    for lock in locks {
        drop(lock.lock().await);
    }
    drop(ahead.writing.write().await);
}

/// After a publish of `tree` (`<repo>/<release>/<arch>`): hashes ahead for a publish of
/// one package more than `documents` (with their roots' opening tags `opens`) hold,
/// each document's new header followed by every chunk part, text and gzip, and then
/// writes `record` down for `publication` with the states after the last `last` parts
/// of each, so whichever process publishes the tree next resumes there. In the
/// background, which only long-running servers do ([`enable`]); otherwise, or while
/// still hashing ahead for an earlier publish of the tree, the record is written
/// without. Failing only costs the next publish the time it would have saved.
pub async fn after_publish(
    store: &Store,
    tree: &str,
    documents: &[Document],
    opens: [&str; 3],
    mut record: PublishLayout,
    publication: Digest,
    last: usize,
) {
    let ahead = store.cache::<HashAhead>();
    let lock = ahead
        .enabled
        .load(Ordering::Relaxed)
        .then(|| ahead_lock(store, tree).try_lock_owned().ok())
        .flatten();
    // Still hashing ahead for an earlier publish of this tree: that one's guess stands.
    let Some(guard) = lock else {
        record.write(store, &publication).await;
        return;
    };
    // The gzip headers are stored now, while the publisher may still write: the next
    // composite names them.
    let work = match prepare(store, documents, opens).await {
        Ok(work) => work,
        Err(e) => {
            tracing::warn!(error = %e, "cannot hash ahead for the next publish");
            record.write(store, &publication).await;
            return;
        }
    };
    let store = store.clone();
    let writing = Arc::clone(&ahead.writing).read_owned().await;
    tokio::spawn(async move {
        let hashing = work.into_iter().map(|(text, gz)| {
            let store = store.clone();
            async move {
                let text = store.parts_at_hand(&text).await?;
                let gz = store.parts_at_hand(&gz).await?;
                crate::store::blocking("hashing ahead", move || {
                    let points =
                        |parts: &[PartBytes], of: &dyn Fn(&[Digest]) -> Option<ResumePoints>| {
                            let digests: Vec<Digest> = parts.iter().map(|p| p.0).collect();
                            let sizes = parts.iter().map(|p| (p.0, p.1.len() as u64)).collect();
                            of(&digests).map(|points| (sizes, points))
                        };
                    open_text::hash_ahead(&store, &text);
                    store.hash_composite_ahead(&gz);
                    (
                        points(&text, &|d| open_text::resume_points(&store, d, last)),
                        points(&gz, &|d| store.composite_resume_points(d, last)),
                    )
                })
                .await
            }
        });
        for joins in futures::future::join_all(hashing).await {
            match joins {
                Ok((text, gz)) => {
                    for (kind, join) in [(open_text::TEXT_KIND, text), (COMPOSITE, gz)] {
                        if let Some((parts, points)) = join {
                            record.add_ahead(kind, parts, points);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot hash ahead for the next publish"),
            }
        }
        // The next publish may start now; the record is written beside it.
        drop(guard);
        record.write(&store, &publication).await;
        drop(writing);
    });
}

/// Each document's parts as the next publish would start: (text, gzip members).
async fn prepare(
    store: &Store,
    documents: &[Document],
    opens: [&str; 3],
) -> Result<Vec<(Vec<LazyPart>, Vec<LazyPart>)>> {
    let mut work = Vec::new();
    for (document, open) in documents.iter().zip(opens) {
        let header = fragments::header(open, document.packages + 1);
        let gz_header =
            crate::publish::compress::gzip(header.as_bytes()).map_err(fragments::gz_error)?;
        let chunks = 1..document.text.len().saturating_sub(1);
        let mut text = vec![fragments::text_part(header)];
        text.extend_from_slice(&document.text[chunks.clone()]);
        let (digest, bytes) = store.put_part(gz_header).await?;
        let mut gz = vec![(digest, Some(bytes))];
        gz.extend_from_slice(&document.gz[chunks]);
        work.push((text, gz));
    }
    Ok(work)
}
