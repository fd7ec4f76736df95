//! gc: prune old generations, wait for writers to pause (the gc lock and writer
//! leases of `store::fence`), mark, mark again what changed meanwhile, and sweep
//! unreachable blobs older than the grace period, loose and packed.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use object_store::path::Path;

use crate::store::fence::{GC_HEARTBEAT, GC_STALE_AFTER, GcLock, GcPhase};
use crate::store::{ListedComposite, RefEntry, RefName, Store, StoreError};
use crate::util::digest::Digest;

use super::mark::{BlobListing, Marking, list_blobs};
use super::{Problems, Result, all_ref_entries};

#[derive(Debug, Default)]
pub struct GcReport {
    pub reachable: usize,
    pub swept: usize,
    pub swept_bytes: u64,
    /// Unreachable but younger than the grace period.
    pub kept_young: usize,
    pub pruned_generations: usize,
    /// Live blobs written loose because their pack was mostly dead and went.
    pub packed_rewritten: usize,
    /// Dead packed blobs kept because their pack is young or at least half alive.
    pub packed_held: usize,
    /// Leases of writers gone for over an hour, removed.
    pub leases_removed: usize,
    /// Change log entries pruned (see `store::change_log`).
    pub change_log_pruned: usize,
}

/// Change log entries gc keeps (the log's own rule also keeps every entry under an hour
/// old, which a following daemon has read).
const CHANGE_LOG_KEPT: usize = 1000;

/// How long a superseded publication stays reachable by default, whatever the grace
/// period: a client that read its InRelease or repomd.xml a moment ago still fetches
/// what it names.
pub const DEFAULT_READER_WINDOW: Duration = Duration::from_secs(60);

/// Drop all but the newest `keep` generations of every ref. Snapshots are never pruned,
/// nor a generation superseded less than `grace` ago, nor a publication superseded less
/// than `reader_window` ago, so a reader that just read it is safe.
async fn prune_history(
    store: &Store,
    keep: u64,
    grace: Duration,
    reader_window: Duration,
    dry_run: bool,
) -> Result<(Vec<(String, RefEntry)>, usize)> {
    let entries = all_ref_entries(store).await?;
    let mut newest: BTreeMap<&str, u64> = BTreeMap::new();
    let mut superseded_at: BTreeMap<(&str, u64), i64> = BTreeMap::new();
    for (name, entry) in &entries {
        let slot = newest.entry(name.as_str()).or_insert(0);
        *slot = (*slot).max(entry.generation);
        if entry.generation > 0 {
            superseded_at.insert((name.as_str(), entry.generation - 1), entry.time);
        }
    }
    let now = crate::util::time::now_unix();
    let mut kept = Vec::new();
    let mut doomed = Vec::new();
    for (name, entry) in &entries {
        let head = newest.get(name.as_str()).copied().unwrap_or(0);
        let window = if name.starts_with("published/") {
            grace.max(reader_window).as_secs() as i64
        } else {
            grace.as_secs() as i64
        };
        let recently_superseded = superseded_at
            .get(&(name.as_str(), entry.generation))
            .is_some_and(|at| now - at < window);
        // Snapshots are kept; the change log has its own pruning, which keeps what
        // followers may not have read yet.
        let own_pruning = name.starts_with("snapshots/") || name == "changes";
        if entry.generation + keep > head || recently_superseded || own_pruning {
            kept.push((name.clone(), entry.clone()));
            continue;
        }
        doomed.push(RefName::new(name.clone())?.generation_path(entry.generation));
    }
    let pruned = doomed.len();
    if !dry_run {
        store.delete_paths(doomed).await?;
    }
    Ok((kept, pruned))
}

/// How a gc runs.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Unreachable blobs younger than this are kept.
    pub grace: Duration,
    /// Prune ref history to the newest N generations (None: keep all).
    pub keep_generations: Option<u64>,
    /// Report only; take no lock and change nothing.
    pub dry_run: bool,
    /// How long to wait for writers to pause before giving up this round.
    pub pause_timeout: Duration,
    /// How long a superseded publication stays reachable for clients that just read it
    /// (see [`DEFAULT_READER_WINDOW`]).
    pub reader_window: Duration,
}

/// Where a gc run is, for logs and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcStage {
    Marking,
    WaitingForWriters,
    Sweeping,
    Done,
}

/// Why a gc could not run.
#[derive(Debug, thiserror::Error)]
pub enum GcRefused {
    #[error(
        "another gc holds the store ({holder}, last seen {age} s ago); try again when it is done"
    )]
    Busy { holder: String, age: i64 },
    #[error(
        "{count} writer(s) did not pause within {secs} s ({writers}); nothing was swept. \
         A long import holds its writes until it ends: run gc after it"
    )]
    WritersBusy {
        count: usize,
        secs: u64,
        writers: String,
    },
    #[error(
        "this gc lost its lock (it stalled past {GC_STALE_AFTER} s and another took over); nothing more was swept"
    )]
    LockLost,
}

/// The gc lock while this run holds it: every change is a compare-and-swap from the
/// entry we wrote last, so a run that stalled and was taken over finds out.
struct HeldLock {
    store: Store,
    state: tokio::sync::Mutex<(u64, GcLock)>,
}

impl HeldLock {
    async fn take(store: &Store) -> Result<HeldLock> {
        let (head, current) = store.gc_lock().await?;
        let now = crate::util::time::now_unix();
        if current.held(now) {
            return Err(GcRefused::Busy {
                holder: current.holder,
                age: now - current.heartbeat,
            }
            .into());
        }
        let lock = GcLock::ours(
            crate::util::ids::random_id(),
            GcPhase::Marking,
            current.sweeps,
        );
        let entry = match store
            .advance_gc_lock(head.map(|h| h.generation), &lock)
            .await
        {
            Ok(entry) => entry,
            Err(StoreError::Conflict(_)) => {
                return Err(GcRefused::Busy {
                    holder: "another gc that started just now".to_string(),
                    age: 0,
                }
                .into());
            }
            Err(e) => return Err(e.into()),
        };
        Ok(HeldLock {
            store: store.clone(),
            state: tokio::sync::Mutex::new((entry.generation, lock)),
        })
    }

    async fn holder(&self) -> String {
        self.state.lock().await.1.holder.clone()
    }

    /// Writes the lock again with `change` applied (and a fresh heartbeat).
    async fn update(&self, change: impl FnOnce(&mut GcLock)) -> Result<()> {
        let mut state = self.state.lock().await;
        let mut next = state.1.clone();
        change(&mut next);
        next.heartbeat = crate::util::time::now_unix();
        match self.store.advance_gc_lock(Some(state.0), &next).await {
            Ok(entry) => {
                *state = (entry.generation, next);
                Ok(())
            }
            Err(StoreError::Conflict(_)) => Err(GcRefused::LockLost.into()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Collects garbage, safely beside any number of writers (see [`crate::store::fence`]):
/// marks while they write, then has them pause, marks what changed meanwhile, and
/// deletes only what nothing reached. `stage` hears where it is.
pub async fn gc(
    store: &Store,
    options: &GcOptions,
    stage: &(dyn Fn(GcStage) + Send + Sync),
) -> Result<(GcReport, Problems)> {
    if options.dry_run {
        return gc_dry(store, options).await;
    }
    let lock = std::sync::Arc::new(HeldLock::take(store).await?);
    let beating = {
        let lock = std::sync::Arc::clone(&lock);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(GC_HEARTBEAT).await;
                if lock.update(|_| {}).await.is_err() {
                    return;
                }
            }
        })
    };
    let result = gc_locked(store, options, &lock, stage).await;
    beating.abort();
    // Release the lock even after a failure: writers resume at once instead of
    // waiting for it to go stale. A lost lock is someone else's now.
    let released = lock.update(|l| l.phase = GcPhase::Idle).await;
    stage(GcStage::Done);
    let (report, problems) = result?;
    released?;
    Ok((report, problems))
}

async fn gc_locked(
    store: &Store,
    options: &GcOptions,
    lock: &HeldLock,
    stage: &(dyn Fn(GcStage) + Send + Sync),
) -> Result<(GcReport, Problems)> {
    let grace = options.grace.as_secs() as i64;
    // First pass, with writers running: everything reachable now.
    stage(GcStage::Marking);
    let FirstPass {
        mut report,
        mut problems,
        mut marking,
        ..
    } = first_pass(store, options).await?;
    if !problems.is_empty() {
        // A manifest we could not read may reference blobs we would otherwise sweep.
        return Ok((report, problems));
    }
    // The candidates: what existed before the pause, unreached and old enough. Anything
    // written after this listing is not a candidate at all.
    let listing = list_blobs(store).await?;

    // Second pass, with every writer paused: what the refs, caches and composites
    // written meanwhile reach.
    stage(GcStage::WaitingForWriters);
    lock.update(|l| {
        l.phase = GcPhase::Sweeping;
        l.sweeps += 1;
    })
    .await?;
    wait_for_writers(store, &lock.holder().await, options.pause_timeout).await?;
    stage(GcStage::Sweeping);
    let entries = all_ref_entries(store).await?;
    marking.entries(store, &entries, &mut problems).await;
    let stale_caches = marking.caches(store).await?;
    let composites = crate::store::list_composites(store).await?;
    marking
        .composite_parts(store, &composites, &mut problems)
        .await;
    report.reachable = marking.marked.len();
    if !problems.is_empty() {
        return Ok((report, problems));
    }
    let marked = &marking.marked;
    let doomed = judge(listing, composites, marked, grace, &mut report);
    let packs = crate::store::pack_sweep::sweep_packs(store, marked, options.grace, false).await?;
    count_packs(&mut report, &packs);
    // Cache entries first: one naming a deleted blob would only send a publish to the
    // store for nothing, but order costs nothing. Indexes go before their packs.
    store.delete_paths(stale_caches).await?;
    store.delete_paths(doomed).await?;
    store.delete_paths(packs.indexes).await?;
    store.delete_paths(packs.packs).await?;
    report.leases_removed = remove_dead_leases(store).await?;
    report.change_log_pruned =
        crate::store::change_log::prune_change_log(store, CHANGE_LOG_KEPT).await?;
    Ok((report, problems))
}

/// What goes: crash leftovers, blobs and composite records that nothing marked, each
/// once older than `grace`; counted in `report`. A temp file is only ever written by a
/// live write for a moment: past the grace period it was left by a crash, and nothing
/// can name it. A composite record goes like any blob; its parts were judged in the mark.
fn judge(
    listing: BlobListing,
    composites: Vec<ListedComposite>,
    marked: &HashSet<Digest>,
    grace: i64,
    report: &mut GcReport,
) -> Vec<Path> {
    let mut doomed = Vec::new();
    for (path, size, age) in listing.leftovers {
        if age >= grace {
            report.swept += 1;
            report.swept_bytes += size;
            doomed.push(path);
        }
    }
    let blobs = listing
        .blobs
        .into_iter()
        .map(|(digest, size, age)| (digest, size, age, crate::store::blob_path(&digest)));
    for (digest, size, age, path) in blobs.chain(composites) {
        if marked.contains(&digest) {
            continue;
        }
        if age < grace {
            report.kept_young += 1;
            continue;
        }
        report.swept += 1;
        report.swept_bytes += size;
        doomed.push(path);
    }
    doomed
}

fn count_packs(report: &mut GcReport, packs: &crate::store::pack_sweep::PackSweep) {
    report.swept += packs.swept;
    report.swept_bytes += packs.swept_bytes;
    report.packed_rewritten = packs.rewritten;
    report.packed_held = packs.held;
}

/// Waits until every writer lease is paused for this gc (`holder`) or expired.
async fn wait_for_writers(store: &Store, holder: &str, timeout: Duration) -> Result<()> {
    let started = std::time::Instant::now();
    let mut logged = false;
    loop {
        let now = crate::util::time::now_unix();
        let blocking: Vec<String> = store
            .leases()
            .await?
            .into_iter()
            .filter(|(_, lease)| lease.blocks(holder, now))
            .map(|(_, lease)| {
                format!(
                    "{} (pid {})",
                    &lease.writer[..8.min(lease.writer.len())],
                    lease.pid
                )
            })
            .collect();
        if blocking.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(GcRefused::WritersBusy {
                count: blocking.len(),
                secs: timeout.as_secs(),
                writers: blocking.join(", "),
            }
            .into());
        }
        if !logged && started.elapsed() >= Duration::from_secs(5) {
            tracing::info!(writers = %blocking.join(", "), "gc waits for writers to pause");
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Leases of writers gone for an hour: nothing renews them any more.
async fn remove_dead_leases(store: &Store) -> Result<usize> {
    let now = crate::util::time::now_unix();
    let dead: Vec<Path> = store
        .leases()
        .await?
        .into_iter()
        .filter(|(_, lease)| lease.expires + 3600 < now)
        .map(|(path, _)| path)
        .collect();
    let count = dead.len();
    store.delete_paths(dead).await?;
    Ok(count)
}

/// What gc's first pass (and a dry run) finds: the refs pruned (unless dry) and
/// everything they, the fragment caches and the composites reach.
struct FirstPass {
    report: GcReport,
    problems: Problems,
    marking: Marking,
    composites: Vec<ListedComposite>,
}

async fn first_pass(store: &Store, options: &GcOptions) -> Result<FirstPass> {
    let mut report = GcReport::default();
    let mut problems = Problems::new();
    let entries = match options.keep_generations {
        Some(keep) => {
            let (kept, pruned) = prune_history(
                store,
                keep.max(1),
                options.grace,
                options.reader_window,
                options.dry_run,
            )
            .await?;
            report.pruned_generations = pruned;
            kept
        }
        None => all_ref_entries(store).await?,
    };
    let mut marking = Marking::default();
    marking.entries(store, &entries, &mut problems).await;
    marking.caches(store).await?;
    let composites = crate::store::list_composites(store).await?;
    marking
        .composite_parts(store, &composites, &mut problems)
        .await;
    report.reachable = marking.marked.len();
    Ok(FirstPass {
        report,
        problems,
        marking,
        composites,
    })
}

/// What a gc would do, with no lock taken and nothing changed.
async fn gc_dry(store: &Store, options: &GcOptions) -> Result<(GcReport, Problems)> {
    let grace = options.grace.as_secs() as i64;
    let FirstPass {
        mut report,
        problems,
        marking,
        composites,
    } = first_pass(store, options).await?;
    if !problems.is_empty() {
        return Ok((report, problems));
    }
    let listing = list_blobs(store).await?;
    judge(listing, composites, &marking.marked, grace, &mut report);
    let packs =
        crate::store::pack_sweep::sweep_packs(store, &marking.marked, options.grace, true).await?;
    count_packs(&mut report, &packs);
    Ok((report, problems))
}

#[cfg(test)]
mod tests {
    //! The gc fence against writers, on the in-memory store: each interleaving the
    //! protocol must survive, as a test that fails without it.

    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::maintenance::MaintenanceError;

    fn options(pause_timeout: Duration) -> GcOptions {
        GcOptions {
            grace: Duration::ZERO,
            keep_generations: None,
            dry_run: false,
            pause_timeout,
            reader_window: DEFAULT_READER_WINDOW,
        }
    }

    fn quiet(_: GcStage) {}

    /// A ref naming one blob, like a cell naming a package (a Marker-free ref kind).
    async fn name_it(store: &Store, digest: Digest) -> Result<RefEntry> {
        let reference = RefName::new("caps/test-list")?;
        let head = store.ref_head(&reference).await?.map(|h| h.generation);
        Ok(store
            .ref_advance(&reference, head, digest, "test", "names it")
            .await?)
    }

    #[tokio::test]
    async fn one_gc_at_a_time() {
        let store = Store::memory();
        let first = HeldLock::take(&store).await.unwrap();
        let second = HeldLock::take(&store).await;
        assert!(
            matches!(
                second,
                Err(MaintenanceError::Refused(GcRefused::Busy { .. }))
            ),
            "a second gc must not take a held lock"
        );
        first.update(|l| l.phase = GcPhase::Idle).await.unwrap();
        assert!(
            HeldLock::take(&store).await.is_ok(),
            "a released lock is free"
        );
    }

    #[tokio::test]
    async fn a_writer_in_flight_keeps_gc_from_sweeping_and_what_it_names_survives() {
        let store = Store::memory();
        // An old blob nothing names: what a re-upload finds and reuses.
        let reused = store
            .put_blob(Bytes::from_static(b"a package"))
            .await
            .unwrap();
        let access = store.write_access().await.unwrap();
        assert!(store.has_blob(&reused.digest).await.unwrap());
        // gc starts while the writer is between its look and its commit.
        let gc_store = store.clone();
        let running =
            tokio::spawn(
                async move { gc(&gc_store, &options(Duration::from_secs(20)), &quiet).await },
            );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !running.is_finished(),
            "gc must wait for the writer in flight"
        );
        name_it(&store, reused.digest).await.unwrap();
        drop(access);
        let (report, problems) = running.await.unwrap().unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert!(
            store.has_blob(&reused.digest).await.unwrap(),
            "the blob a writer named while gc marked was swept ({report:?})"
        );
        // And what nothing names still goes.
        let garbage = store
            .put_blob(Bytes::from_static(b"garbage"))
            .await
            .unwrap();
        gc(&store, &options(Duration::from_secs(20)), &quiet)
            .await
            .unwrap();
        assert!(!store.has_blob(&garbage.digest).await.unwrap());
        assert!(store.has_blob(&reused.digest).await.unwrap());
    }

    #[tokio::test]
    async fn gc_gives_up_without_deleting_when_a_writer_never_pauses() {
        let store = Store::memory();
        let garbage = store
            .put_blob(Bytes::from_static(b"garbage"))
            .await
            .unwrap();
        let _access = store.write_access().await.unwrap();
        let outcome = gc(&store, &options(Duration::from_millis(500)), &quiet).await;
        assert!(
            matches!(
                outcome,
                Err(MaintenanceError::Refused(GcRefused::WritersBusy { .. }))
            ),
            "{outcome:?}"
        );
        assert!(store.has_blob(&garbage.digest).await.unwrap());
        let (_, lock) = store.gc_lock().await.unwrap();
        assert_eq!(
            lock.phase,
            GcPhase::Idle,
            "a gc that gave up releases its lock"
        );
    }

    #[tokio::test]
    async fn a_writer_that_outlived_its_lease_cannot_commit_after_a_sweep() {
        let store = Store::memory();
        let reused = store
            .put_blob(Bytes::from_static(b"a package"))
            .await
            .unwrap();
        let access = store.write_access().await.unwrap();
        // The writer stalls: its lease lapses (here: declared expired) and gc, which no
        // longer counts it, sweeps the blob it was about to name.
        store.expire_lease_for_test().await;
        gc(&store, &options(Duration::from_secs(5)), &quiet)
            .await
            .unwrap();
        assert!(!store.has_blob(&reused.digest).await.unwrap());
        let committed = name_it(&store, reused.digest).await;
        assert!(
            matches!(committed, Err(MaintenanceError::Store(StoreError::Fenced))),
            "a commit after a sweep it did not fence off must fail: {committed:?}"
        );
        drop(access);
        // A new operation starts clean.
        let _again = store.write_access().await.unwrap();
        let fresh = store
            .put_blob(Bytes::from_static(b"a package"))
            .await
            .unwrap();
        name_it(&store, fresh.digest).await.unwrap();
    }

    #[tokio::test]
    async fn a_paused_writer_resumes_after_the_sweep_and_forgets_what_was_swept() {
        let store = Store::memory();
        let writer = store.clone();
        // The writer is idle, so it pauses at once when it renews; the gc runs to the end.
        gc(&store, &options(Duration::from_secs(5)), &quiet)
            .await
            .unwrap();
        let _access = writer.write_access().await.unwrap();
        let (_, lock) = store.gc_lock().await.unwrap();
        assert_eq!(lock.sweeps, 1);
        assert_eq!(lock.phase, GcPhase::Idle);
    }

    #[tokio::test]
    async fn a_crashed_gc_leaves_a_stale_lock_that_the_next_gc_takes_over() {
        let store = Store::memory();
        let (head, _) = store.gc_lock().await.unwrap();
        // A gc that died while sweeping, three minutes ago.
        let dead = GcLock {
            heartbeat: crate::util::time::now_unix() - 180,
            ..GcLock::ours("dead".into(), GcPhase::Sweeping, 7)
        };
        store
            .advance_gc_lock(head.map(|h| h.generation), &dead)
            .await
            .unwrap();
        // Writers do not wait for it...
        let access = tokio::time::timeout(Duration::from_secs(5), store.write_access()).await;
        assert!(access.is_ok(), "a writer waited for a dead gc");
        drop(access);
        // ...and a new gc runs (once the writer, busy a moment ago, renews and pauses).
        gc(&store, &options(Duration::from_secs(30)), &quiet)
            .await
            .unwrap();
        let (_, lock) = store.gc_lock().await.unwrap();
        assert_eq!((lock.phase, lock.sweeps), (GcPhase::Idle, 8));
    }

    #[tokio::test]
    async fn a_killed_gc_of_this_host_holds_nothing_even_with_a_fresh_heartbeat() {
        let store = Store::memory();
        let mut exited = std::process::Command::new("true").spawn().unwrap();
        exited.wait().unwrap();
        let (head, _) = store.gc_lock().await.unwrap();
        let killed = GcLock {
            pid: exited.id(),
            ..GcLock::ours("killed".into(), GcPhase::Sweeping, 3)
        };
        store
            .advance_gc_lock(head.map(|h| h.generation), &killed)
            .await
            .unwrap();
        let (_, lock) = store.gc_lock().await.unwrap();
        assert!(!lock.held(crate::util::time::now_unix()));
        // A live holder (this process) does hold it.
        let live = GcLock::ours("live".into(), GcPhase::Sweeping, 3);
        assert!(live.held(crate::util::time::now_unix()));
        gc(&store, &options(Duration::from_secs(5)), &quiet)
            .await
            .unwrap();
    }
}
