//! Hashing ahead for the next publish of an RPM tree. repomd.xml carries each
//! document's open-checksum (the sha256 of its whole uncompressed text) and the
//! sha256 of its .gz, and both start with the package count: every publish changes
//! the first bytes, so no earlier hash state resumes and 40 MB are hashed at 20,000
//! rpms. After publishing N packages, a server hashes the documents as they would
//! start with N + 1 while it is idle, and the next upload's publish hashes only
//! the parts it changed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use super::fragments::{self, Document};
use crate::digest::Digest;
use crate::prefix_hash::{PartBytes, PartHashes};
use crate::store::{Result, Store};

/// Hash states of recent documents' text. Text parts are named by their digest, so one
/// scope serves every tree and store. A tree keeps three (one per document) between
/// publishes: 64 cover 21 trees, at about 40 KB each at 20,000 rpms (states, not bytes).
static OPEN_TEXT: PartHashes = PartHashes::new(64);
const SCOPE: &str = "rpm document text";

/// Per tree (store and `<repo>/<release>/<arch>`), held while hashing ahead for it, so its
/// next publish waits for states about to be ready rather than hashing the same bytes
/// beside them. Per tree, so a noarch upload's publish of one arch does not wait for
/// the other arch's hashing.
static AHEAD: LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Default::default);

fn ahead_lock(store: &Store, tree: &str) -> Arc<tokio::sync::Mutex<()>> {
    let key = format!("{} {tree}", store.description());
    match AHEAD.lock() {
        Ok(mut locks) => Arc::clone(locks.entry(key).or_default()),
        // A panic elsewhere poisoned the map: hashing ahead is an optimisation, go without.
        Err(_) => Arc::default(),
    }
}

/// Only long-running servers hash ahead: a one-shot `caprepo import` would wait for
/// work no publish will use before it could exit.
static ENABLED: AtomicBool = AtomicBool::new(false);

pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The open-checksum and open-size of a document's text parts, resumed where they
/// were hashed ahead. Blocking: call it off the async threads.
pub fn open_checksum(text: &[PartBytes]) -> (Digest, u64) {
    let digests: Vec<Digest> = text.iter().map(|p| p.0).collect();
    let resumed = OPEN_TEXT.resume(SCOPE, &digests);
    tracing::debug!(parts = text.len(), resumed = resumed.len(), "open-checksum");
    let rest = &text[resumed.len()..];
    OPEN_TEXT.hash(Arc::from(SCOPE), resumed, rest)
}

/// Waits until hashing ahead for `tree` (if any) is done.
pub async fn settled(store: &Store, tree: &str) {
    drop(ahead_lock(store, tree).lock().await);
}

/// Hashes ahead for a publish of one package more than `documents` (with their
/// roots' opening tags `opens`) hold: each document's new header followed by every
/// chunk part, text and gzip. In the background; a no-op unless enabled. Failing
/// only costs the next publish the time it would have saved.
/// `tree` is `<repo>/<release>/<arch>`.
pub async fn hash_ahead(store: &Store, tree: &str, documents: &[Document], opens: [&str; 3]) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    // Still hashing ahead for an earlier publish of this tree: that one's guess stands.
    let Ok(guard) = ahead_lock(store, tree).try_lock_owned() else {
        return;
    };
    match prepare(store, documents, opens).await {
        Ok(work) => {
            let store = store.clone();
            tokio::spawn(async move {
                let hashing = work.into_iter().map(|(text, gz)| {
                    let store = store.clone();
                    tokio::task::spawn_blocking(move || {
                        OPEN_TEXT.hash_ahead(Arc::from(SCOPE), &text);
                        store.hash_composite_ahead(&gz);
                    })
                });
                let _ = futures::future::join_all(hashing).await;
                drop(guard);
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot hash ahead for the next publish"),
    }
}

/// Each document's parts as the next publish would start: (text, gzip members).
async fn prepare(
    store: &Store,
    documents: &[Document],
    opens: [&str; 3],
) -> Result<Vec<(Vec<PartBytes>, Vec<PartBytes>)>> {
    let mut work = Vec::new();
    for (document, open) in documents.iter().zip(opens) {
        let header = fragments::header(open, document.packages + 1);
        let gz_header =
            crate::apt::compress::gzip(header.as_bytes()).map_err(fragments::gz_error)?;
        let chunks = 1..document.text.len().saturating_sub(1);
        let mut text = vec![fragments::text_part(header)];
        text.extend_from_slice(&document.text[chunks.clone()]);
        // The gzip header member is stored now: the next composite names it.
        let mut gz = vec![store.put_part(gz_header).await?];
        gz.extend_from_slice(&document.gz[chunks]);
        work.push((text, gz));
    }
    Ok(work)
}
