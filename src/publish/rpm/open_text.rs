//! The open-checksum of an RPM repodata document: repomd.xml carries the sha256 of each
//! document's whole uncompressed text, which a publish joins from per-chunk parts.
//! States of recent joins are kept (and taken up from layout records), so a publish
//! hashes only the parts after the longest prefix hashed before or hashed ahead (see
//! `hash_ahead`). Text parts are named by their digest, so one scope serves
//! every tree of a store.

use std::sync::Arc;

use crate::publish::layout::AheadJoin;
use crate::store::resumable_hash::{PartBytes, PartHashes, ResumePoints};
use crate::store::{LazyPart, Result, Store};
use crate::util::digest::Digest;

/// Hash states of recent documents' text, per store (in [`Store::cache`]). A tree
/// keeps three (one per document) between publishes: 64 cover 21 trees, at about 40 KB
/// each at 20,000 rpms (states, not bytes).
struct OpenText(PartHashes);

impl Default for OpenText {
    fn default() -> Self {
        OpenText(PartHashes::new(64))
    }
}

const SCOPE: &str = "rpm document text";

/// The [`AheadJoin`] kind of a document's text hashed ahead (its parts are not stored
/// as one blob: only the .gz is served).
pub const TEXT_KIND: &str = "rpm document text";

/// The open-checksum and open-size of a document's text parts, resumed where they
/// were hashed ahead (here, or by the process whose layout was taken up): only the
/// parts after that are read.
pub async fn open_checksum(store: &Store, text: &[LazyPart]) -> Result<(Digest, u64)> {
    let digests: Vec<Digest> = text.iter().map(|p| p.0).collect();
    let states = store.cache::<OpenText>();
    let resumed = states.0.resume(SCOPE, &digests);
    tracing::debug!(parts = text.len(), resumed = resumed.len(), "open-checksum");
    let rest = store.parts_at_hand(&text[resumed.len()..]).await?;
    crate::store::blocking("hashing a repodata document", move || {
        states.0.hash(Arc::from(SCOPE), resumed, &rest)
    })
    .await
}

/// Hashes a document's text ahead of the publish expected to start with it. Blocking.
pub fn hash_ahead(store: &Store, text: &[PartBytes]) {
    store
        .cache::<OpenText>()
        .0
        .hash_ahead(Arc::from(SCOPE), text);
}

/// The states after the last `last` parts of the text joined from exactly `parts`
/// (and the one before), to write down.
pub fn resume_points(store: &Store, parts: &[Digest], last: usize) -> Option<ResumePoints> {
    store
        .cache::<OpenText>()
        .0
        .resume_points(SCOPE, parts, last)
}

/// Takes up a document's text hashed ahead by another process.
pub fn take_up(store: &Store, join: &AheadJoin) {
    if join.kind == TEXT_KIND {
        let states = store.cache::<OpenText>();
        states
            .0
            .take_up(Arc::from(SCOPE), join.parts.iter().copied(), &join.points);
    }
}
