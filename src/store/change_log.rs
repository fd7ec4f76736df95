//! The store-wide change log: how a daemon learns what other processes changed without
//! reading every ref of every cell.
//!
//! It is a ref like the others, `refs/changes/<generation, 20 digits>.json`, advanced with
//! the same create-if-absent put. Each entry names refs that moved and the generation
//! they moved to (in its note, as JSON; its target is that note's digest and names no
//! blob). A reader that has read generation g asks for g+1: one request when nothing
//! changed, however many cells the store holds.
//!
//! Writing: every successful [`Store::ref_advance`] of a ref a daemon must notice
//! (cells, repository definitions, publications, batch markers) hands the change to this
//! process's appender and waits until it is in the log. The appender is one task per
//! process that takes every change waiting and writes them as one entry, so many
//! writers at once cost one append, not one each. A change is appended only after its
//! ref write succeeded, so a reader that follows an entry always finds the ref there
//! (the backends here read their own and others' writes at once). A process that dies
//! between the two writes leaves a change the log never names: readers catch it with
//! the full scan they do at start and, slowly, as a safety net.
//!
//! Reading: see [`Follower`]. History is bounded by [`prune_change_log`]; a follower that
//! fell behind the pruned window learns so and does a full scan instead.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{RefName, Result, Store, StoreError};
use crate::util::digest::Digest;

/// The log's ref name: `refs/changes/`.
pub const CHANGE_LOG_REF: &str = "changes";

/// Refs whose changes a daemon must notice: what it publishes from (cells, repository
/// definitions), what other daemons published, and batches that hold publishing back.
/// Caps are not here: daemons read the revocation list's head on each request and cache
/// nothing else. Snapshots never change once written and are read on demand.
const LOGGED_PREFIXES: [&str; 4] = ["cells/", "repos/", "published/", "batches/"];

/// At most this many refs in one entry (an import or a promotion touches many cells);
/// more go in several entries. Keeps an entry a few tens of KiB.
const MAX_REFS_PER_ENTRY: usize = 500;

/// How long a ref write waits for its change to reach the log before it gives up
/// waiting (the write stands; the safety scan finds it).
const APPEND_WAIT: Duration = Duration::from_secs(30);

/// Entries younger than this are never pruned, whatever `keep` says: a follower that
/// polls at all reads every entry before it can go. A follower that could not poll for
/// longer finds the gap in its next listing (see [`Follower`]). Measured by the
/// backend's modification time against this host's clock, so it also absorbs skew.
pub const PRUNE_MIN_AGE: Duration = Duration::from_secs(3600);

/// A follower lists instead of probing once every this many polls, to notice entries
/// pruned before it read them (a probe of a deleted generation looks like "nothing new").
const LIST_EVERY: u32 = 30;

/// True for refs whose advances go into the change log.
pub fn is_logged(name: &str) -> bool {
    LOGGED_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn log_ref() -> Result<RefName> {
    RefName::new(CHANGE_LOG_REF)
}

fn entry_path(generation: u64) -> Path {
    Path::from(format!("refs/{CHANGE_LOG_REF}/{generation:020}.json"))
}

fn generation_of(location: &Path) -> Option<u64> {
    let digits = location.filename()?.strip_suffix(".json")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// What one entry's note holds.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Changes {
    /// Ref name -> the generation it was advanced to.
    refs: BTreeMap<String, u64>,
}

/// Counters of this process's side of the log and of ref races, for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ChangeLogCounters {
    /// Entries this process appended.
    pub appends: u64,
    /// Appends that lost the compare-and-swap to another process and were retried.
    pub append_conflicts: u64,
    /// Batches of changes that could not be appended (left to the safety scan).
    pub append_failures: u64,
    /// Cell writes that lost the compare-and-swap to another writer and were retried.
    pub cell_write_conflicts: u64,
}

/// This process's appender, shared by every clone of a [`Store`].
pub struct ChangeLogWriter {
    pending: Mutex<Pending>,
    /// The last ticket whose change is appended (or given up on).
    appended: watch::Sender<u64>,
    appends: AtomicU64,
    append_conflicts: AtomicU64,
    append_failures: AtomicU64,
    cell_write_conflicts: AtomicU64,
}

#[derive(Default)]
struct Pending {
    refs: BTreeMap<String, u64>,
    /// Tickets count the changes handed in; the appender publishes how far it got.
    next_ticket: u64,
    appender_running: bool,
}

impl Default for ChangeLogWriter {
    fn default() -> Self {
        ChangeLogWriter {
            pending: Mutex::default(),
            appended: watch::channel(0).0,
            appends: AtomicU64::new(0),
            append_conflicts: AtomicU64::new(0),
            append_failures: AtomicU64::new(0),
            cell_write_conflicts: AtomicU64::new(0),
        }
    }
}

impl Store {
    /// Hands a ref advance that already succeeded to the change log and waits until it
    /// is appended. Never fails: the ref write stands whatever happens here, and a change
    /// the log misses is found by the daemons' safety scan.
    pub(crate) async fn log_change(&self, name: &RefName, generation: u64) {
        if !is_logged(name.as_str()) {
            return;
        }
        let ticket = {
            let Ok(mut pending) = self.changes.pending.lock() else {
                return;
            };
            let slot = pending
                .refs
                .entry(name.as_str().to_string())
                .or_insert(generation);
            *slot = (*slot).max(generation);
            pending.next_ticket += 1;
            if !pending.appender_running {
                pending.appender_running = true;
                // A task of its own: a caller that is cancelled (a dropped HTTP request)
                // does not take the batch down with it.
                tokio::spawn(self.clone().append_pending());
            }
            pending.next_ticket
        };
        let mut appended = self.changes.appended.subscribe();
        if tokio::time::timeout(APPEND_WAIT, appended.wait_for(|done| *done >= ticket))
            .await
            .is_err()
        {
            tracing::warn!(
                reference = %name,
                "the change log did not take this change in time; daemons find it at their next full scan"
            );
        }
    }

    /// Counts a lost compare-and-swap on a ref (for the conflict-retry rate).
    pub(crate) fn note_ref_conflict(&self, name: &RefName) {
        if name.as_str().starts_with("cells/") {
            self.changes
                .cell_write_conflicts
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn change_log_counters(&self) -> ChangeLogCounters {
        let c = &self.changes;
        ChangeLogCounters {
            appends: c.appends.load(Ordering::Relaxed),
            append_conflicts: c.append_conflicts.load(Ordering::Relaxed),
            append_failures: c.append_failures.load(Ordering::Relaxed),
            cell_write_conflicts: c.cell_write_conflicts.load(Ordering::Relaxed),
        }
    }

    /// The appender: writes what is pending, as few entries as fit, until nothing is.
    async fn append_pending(self) {
        loop {
            let (batch, ticket) = {
                let Ok(mut pending) = self.changes.pending.lock() else {
                    return;
                };
                if pending.refs.is_empty() {
                    pending.appender_running = false;
                    return;
                }
                (std::mem::take(&mut pending.refs), pending.next_ticket)
            };
            let mut batch: Vec<(String, u64)> = batch.into_iter().collect();
            while !batch.is_empty() {
                let rest = batch.split_off(batch.len().min(MAX_REFS_PER_ENTRY));
                let refs = std::mem::replace(&mut batch, rest).into_iter().collect();
                if let Err(error) = self.append_entry(Changes { refs }).await {
                    self.changes.append_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, "cannot append to the change log; daemons find these changes at their next full scan");
                }
            }
            self.changes
                .appended
                .send_modify(|done| *done = (*done).max(ticket));
        }
    }

    /// Appends one entry at the head of the log, retrying when another process got there first.
    async fn append_entry(&self, changes: Changes) -> Result<u64> {
        let name = log_ref()?;
        let note = serde_json::to_string(&changes)
            .map_err(|e| StoreError::Corrupt(CHANGE_LOG_REF.to_string(), e.to_string()))?;
        let target = Digest::of(note.as_bytes());
        // The head this process last saw: appending costs one put while nobody else appends.
        let head = match self.cached_head(&name) {
            Some(g) => Some(g),
            None => self.ref_head(&name).await?.map(|h| h.generation),
        };
        let (entry, conflicts) = self
            .append_unfenced(&name, head, target, "change-log", &note)
            .await?;
        self.changes.appends.fetch_add(1, Ordering::Relaxed);
        self.changes
            .append_conflicts
            .fetch_add(u64::from(conflicts), Ordering::Relaxed);
        Ok(entry.generation)
    }

    fn cached_head(&self, name: &RefName) -> Option<u64> {
        self.ref_heads
            .lock()
            .ok()
            .and_then(|heads| heads.get(name.as_str()).copied())
    }

    /// Generations of the log after `after` (all if None), ascending: one listing.
    async fn change_log_listing(&self, after: Option<u64>) -> Result<Vec<u64>> {
        let prefix = Path::from(format!("refs/{CHANGE_LOG_REF}"));
        let listed: Vec<_> = match after {
            Some(g) => {
                self.inner
                    .list_with_offset(Some(&prefix), &entry_path(g))
                    .try_collect()
                    .await?
            }
            None => self.inner.list(Some(&prefix)).try_collect().await?,
        };
        let mut generations: Vec<u64> = listed
            .iter()
            .filter_map(|meta| generation_of(&meta.location))
            .filter(|g| after.is_none_or(|after| *g > after))
            .collect();
        generations.sort_unstable();
        Ok(generations)
    }
}

/// What a poll of the log found.
#[derive(Debug, PartialEq)]
pub enum Followed {
    /// Refs that moved since the last poll (empty: nothing), with their newest generation.
    Changes(BTreeMap<String, u64>),
    /// Entries this follower had not read were pruned (or could not be read): it cannot
    /// know what changed and must scan everything. It now stands at the log's head.
    Behind,
}

/// A reader of the change log that remembers how far it got.
#[derive(Debug)]
pub struct Follower {
    /// The last generation read; None while the log is empty.
    position: Option<u64>,
    polls_since_listing: u32,
    /// After a failed poll the next one lists: the follower may have been away long.
    list_next: bool,
    entries_read: u64,
}

impl Follower {
    /// A follower standing at the log's head now (one listing). Whatever changed before
    /// is the caller's full scan's business; everything after, the follower's.
    pub async fn at_head(store: &Store) -> Result<Follower> {
        let position = store.change_log_listing(None).await?.last().copied();
        Ok(Follower {
            position,
            polls_since_listing: 0,
            list_next: false,
            entries_read: 0,
        })
    }

    pub fn position(&self) -> Option<u64> {
        self.position
    }

    /// Entries this follower has read since it started.
    pub fn entries_read(&self) -> u64 {
        self.entries_read
    }

    fn next(&self) -> u64 {
        self.position.map_or(0, |g| g + 1)
    }

    /// Reads every entry after the position. Costs one request when nothing changed;
    /// every [`LIST_EVERY`]th poll (and the one after a failure) lists instead, which is
    /// how a follower notices entries that were pruned before it read them.
    pub async fn poll(&mut self, store: &Store) -> Result<Followed> {
        let result = self.poll_inner(store).await;
        self.list_next = result.is_err();
        result
    }

    async fn poll_inner(&mut self, store: &Store) -> Result<Followed> {
        let name = log_ref()?;
        self.polls_since_listing += 1;
        if self.list_next || self.polls_since_listing >= LIST_EVERY {
            self.polls_since_listing = 0;
            let listed = store.change_log_listing(self.position).await?;
            match listed.first() {
                None => return Ok(Followed::Changes(BTreeMap::new())),
                Some(&first) if first != self.next() => {
                    self.position = listed.last().copied();
                    return Ok(Followed::Behind);
                }
                Some(_) => {}
            }
        }
        let mut changed: BTreeMap<String, u64> = BTreeMap::new();
        while let Some(entry) = store.ref_entry(&name, self.next()).await? {
            self.position = Some(entry.generation);
            self.entries_read += 1;
            let Ok(changes) = serde_json::from_str::<Changes>(&entry.note) else {
                tracing::warn!(
                    generation = entry.generation,
                    "a change log entry does not parse; scanning everything instead"
                );
                return Ok(Followed::Behind);
            };
            for (reference, generation) in changes.refs {
                let slot = changed.entry(reference).or_insert(generation);
                *slot = (*slot).max(generation);
            }
        }
        Ok(Followed::Changes(changed))
    }
}

/// Deletes all but the newest `keep` entries of the change log (at least one is always
/// kept, so appenders never restart it at generation 0), and none younger than
/// [`PRUNE_MIN_AGE`]. Answers how many went. For gc.
pub async fn prune_change_log(store: &Store, keep: usize) -> Result<usize> {
    prune_older_than(store, keep, PRUNE_MIN_AGE).await
}

async fn prune_older_than(store: &Store, keep: usize, min_age: Duration) -> Result<usize> {
    let prefix = Path::from(format!("refs/{CHANGE_LOG_REF}"));
    let listed: Vec<_> = store.inner.list(Some(&prefix)).try_collect().await?;
    let mut entries: Vec<(u64, i64)> = listed
        .iter()
        .filter_map(|meta| {
            Some((
                generation_of(&meta.location)?,
                meta.last_modified.timestamp(),
            ))
        })
        .collect();
    entries.sort_unstable();
    let keep = keep.max(1);
    let newest_old = entries.len().saturating_sub(keep);
    let now = crate::util::time::now_unix();
    let doomed: Vec<Path> = entries[..newest_old]
        .iter()
        .filter(|(_, modified)| now - modified >= min_age.as_secs() as i64)
        .map(|(generation, _)| entry_path(*generation))
        .collect();
    let count = doomed.len();
    store.delete_paths(doomed).await?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn advance(store: &Store, name: &str) -> u64 {
        let reference = RefName::new(name).unwrap();
        let head = store.ref_head(&reference).await.unwrap();
        store
            .ref_advance(
                &reference,
                head.map(|h| h.generation),
                Digest::of(name.as_bytes()),
                "test",
                "test",
            )
            .await
            .unwrap()
            .generation
    }

    fn changes(pairs: &[(&str, u64)]) -> Followed {
        Followed::Changes(pairs.iter().map(|(n, g)| (n.to_string(), *g)).collect())
    }

    #[tokio::test]
    async fn a_follower_sees_every_logged_ref_advance_of_another_process_once() {
        let writer = Store::memory();
        // Another process: the same objects, its own caches and appender.
        let reader = Store::from_object_store(writer.inner.clone(), "reader".into());
        let mut follower = Follower::at_head(&reader).await.unwrap();
        assert_eq!(follower.poll(&reader).await.unwrap(), changes(&[]));

        advance(&writer, "cells/apt/r/stable/main/amd64").await;
        advance(&writer, "cells/apt/r/stable/main/amd64").await;
        advance(&writer, "repos/apt/r").await;
        // Not logged: nothing a daemon caches.
        advance(&writer, "caps/issued").await;
        assert_eq!(
            follower.poll(&reader).await.unwrap(),
            changes(&[("cells/apt/r/stable/main/amd64", 1), ("repos/apt/r", 0)])
        );
        assert_eq!(follower.poll(&reader).await.unwrap(), changes(&[]));
        // A follower started now stands after all of it.
        let late = Follower::at_head(&reader).await.unwrap();
        assert_eq!(late.position(), follower.position());
    }

    #[tokio::test]
    async fn concurrent_writers_share_entries_and_lose_nothing() {
        let store = Store::memory();
        let mut follower = Follower::at_head(&store).await.unwrap();
        let writes = (0..40).map(|i| {
            let store = store.clone();
            async move { advance(&store, &format!("cells/apt/r/s{i}/main/amd64")).await }
        });
        futures::future::join_all(writes).await;
        let Followed::Changes(seen) = follower.poll(&store).await.unwrap() else {
            panic!("not behind");
        };
        assert_eq!(seen.len(), 40, "every write is in the log once it returned");
        let counters = store.change_log_counters();
        assert!(
            counters.appends < 40,
            "writes that overlap share an entry ({} entries)",
            counters.appends
        );
    }

    #[tokio::test]
    async fn a_follower_behind_a_pruned_window_is_told_to_scan() {
        let store = Store::memory();
        advance(&store, "cells/apt/r/s/main/amd64").await;
        let mut follower = Follower::at_head(&store).await.unwrap();
        for i in 0..5 {
            advance(&store, &format!("cells/apt/r/s{i}/main/amd64")).await;
        }
        // Nothing is younger than the minimum age here: only `keep` protects.
        assert_eq!(
            prune_older_than(&store, 2, Duration::ZERO).await.unwrap(),
            4
        );
        // A probe of the next generation finds nothing; the listing finds the gap.
        follower.polls_since_listing = LIST_EVERY;
        assert_eq!(follower.poll(&store).await.unwrap(), Followed::Behind);
        assert_eq!(follower.position(), Some(5));
        advance(&store, "repos/apt/r").await;
        assert_eq!(
            follower.poll(&store).await.unwrap(),
            changes(&[("repos/apt/r", 0)])
        );
    }

    #[tokio::test]
    async fn pruning_keeps_young_entries_and_always_the_head() {
        let store = Store::memory();
        for i in 0..3 {
            advance(&store, &format!("cells/apt/r/s{i}/main/amd64")).await;
        }
        assert_eq!(prune_change_log(&store, 1).await.unwrap(), 0, "all young");
        assert_eq!(
            prune_older_than(&store, 0, Duration::ZERO).await.unwrap(),
            2
        );
        assert_eq!(store.change_log_listing(None).await.unwrap(), vec![2]);
        // The next append continues after the head, not at 0.
        advance(&store, "repos/apt/x").await;
        assert_eq!(store.change_log_listing(None).await.unwrap(), vec![2, 3]);
    }
}
