//! The fence between gc and the writers of a store, so that gc may run at any time,
//! from any process, beside any number of writers on one bucket.
//!
//! The danger it closes: a writer finds an object already stored (a package uploaded
//! before, a cached index fragment, a composite part, a packed blob) and names it in
//! a ref a moment later, while a gc that marked before that ref existed deletes it.
//!
//! The protocol, in store objects only (no clocks compared but lease expiries):
//! - **gc lock** `refs/locks/gc/`: a ref whose entries carry a [`GcLock`] in their
//!   note. A gc takes it (compare-and-swap, so one gc per store at a time), marks
//!   with writers running, then advances it to `sweeping` (counting `sweeps`), waits
//!   until every writer lease is paused for it or expired, re-marks what changed
//!   meanwhile, deletes, and advances it to `idle`. It heartbeats the lock; a lock not
//!   heartbeaten for [`GC_STALE_AFTER`] seconds is abandoned (its gc died).
//! - **writer leases** `locks/writers/<id>.json`: every process that writes holds one
//!   while it writes, renewed every [`RENEW_EVERY`]. Renewing writes the lease first and
//!   reads the gc lock after; gc advances the lock first and lists leases after. With
//!   the read-after-write consistency every backend here gives, either gc sees the
//!   lease (and waits for it) or the writer sees `sweeping` (and pauses): never neither.
//! - **pausing**: a writer that sees `sweeping` lets its operations in flight finish,
//!   then writes its lease as paused for that gc and starts no operation until the
//!   lock leaves `sweeping` (or goes stale). It then forgets everything it remembered
//!   about what is stored, since any of it may be gone.
//! - **commits are checked**: every ref advance first checks that this process's lease
//!   is still valid by its own monotonic clock. A process that stalled past its lease
//!   (gc may have treated it as dead) renews first, and if a sweep began meanwhile
//!   the advance fails with [`StoreError::Fenced`] instead of naming swept objects.
//!
//! Operations hold a [`WriteAccess`] from their first look at the store to their last
//! ref advance. Only entry points take one (an upload, a publish, a CLI command):
//! taking a second inside the first could wait behind a pause that waits for the first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::PutMode;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::{RefEntry, RefName, Result, Store, StoreError};
use crate::util::digest::Digest;

/// How long a lease counts after it was written, by the writer's clock.
pub const LEASE_TTL: Duration = Duration::from_secs(30);
/// How often a busy writer renews its lease.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// A writer stops trusting its lease this long before gc would stop counting it.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// Clock difference between hosts that gc tolerates when it judges a lease expired.
pub const CLOCK_SKEW_SECS: i64 = 30;
/// A gc lock not heartbeaten for this long belongs to a gc that died.
pub const GC_STALE_AFTER: i64 = 120;
/// How often a gc heartbeats its lock and a paused writer looks at it.
pub const GC_HEARTBEAT: Duration = Duration::from_secs(15);
const PAUSED_POLL: Duration = Duration::from_millis(250);
/// How often a busy writer looks at the gc lock while a gc marks, so that it pauses
/// within about this long of gc asking.
const GC_WATCH: Duration = Duration::from_secs(1);

pub const GC_LOCK_REF: &str = "locks/gc";
const LEASES: &str = "locks/writers";

/// Where a gc is, as its lock's entries record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GcPhase {
    /// No gc holds the store.
    Idle,
    /// A gc is marking; writers go on.
    Marking,
    /// A gc waits for writers to pause, then deletes.
    Sweeping,
}

/// The state one entry of the gc lock records (in its note, as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcLock {
    /// Who holds it: a fresh id per gc run.
    pub holder: String,
    pub phase: GcPhase,
    /// How many times any gc entered `sweeping`: a writer that sees this change
    /// forgets what it knew about stored objects.
    pub sweeps: u64,
    /// Seconds since the epoch when the holder last wrote it.
    pub heartbeat: i64,
    /// The holder's process and host boot: on the same host, a gc whose process is gone
    /// (killed) holds nothing, without waiting for its heartbeat to go stale.
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub boot: Option<String>,
}

impl GcLock {
    /// True if a live gc holds the store.
    pub fn held(&self, now: i64) -> bool {
        if self.phase == GcPhase::Idle || now - self.heartbeat >= GC_STALE_AFTER {
            return false;
        }
        !gone_from_this_host(&self.boot, self.pid)
    }

    /// A lock state written by this process.
    pub fn ours(holder: String, phase: GcPhase, sweeps: u64) -> GcLock {
        GcLock {
            holder,
            phase,
            sweeps,
            heartbeat: crate::util::time::now_unix(),
            pid: std::process::id(),
            boot: this_boot().clone(),
        }
    }
}

/// A writer's lease, at `locks/writers/<writer>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub writer: String,
    pub pid: u32,
    /// The writer host's boot id: on the same host and boot, gc sees whether `pid` lives.
    #[serde(default)]
    pub boot: Option<String>,
    /// Seconds since the epoch, by the writer's clock, after which it writes nothing
    /// without renewing first.
    pub expires: i64,
    /// The gc holder this writer has paused for: it writes nothing until that gc is done.
    #[serde(default)]
    pub paused_for: Option<String>,
}

impl Lease {
    /// Whether gc must wait for this lease before it deletes (`gc`: its holder id). A
    /// writer of this host that is no longer running (a finished CLI command, a killed
    /// daemon) does not block; one elsewhere blocks until its lease expires.
    pub fn blocks(&self, gc: &str, now: i64) -> bool {
        if self.paused_for.as_deref() == Some(gc) || self.expires + CLOCK_SKEW_SECS <= now {
            return false;
        }
        !gone_from_this_host(&self.boot, self.pid)
    }
}

/// What one process knows of its own lease.
#[derive(Debug)]
struct LeaseState {
    /// Until when (monotonic) this process may advance refs without renewing.
    valid_until: Option<Instant>,
    /// The gc lock's `sweeps` at the last renewal.
    sweeps_seen: Option<u64>,
    /// A sweep happened while operations were in flight: they fail their commits.
    poisoned: bool,
    /// When an operation last started: the lease is renewed while it is recent.
    last_active: Instant,
    /// A gc was marking at the last renewal: renew often, to pause soon after it asks.
    gc_marking: bool,
}

/// One process's side of the fence, shared by every clone of its [`Store`].
pub(crate) struct Fence {
    writer: String,
    gate: Arc<tokio::sync::RwLock<()>>,
    state: Mutex<LeaseState>,
    renewing: tokio::sync::Mutex<()>,
    in_flight: Arc<AtomicUsize>,
    renewer_started: std::sync::Once,
    pauses: AtomicUsize,
}

impl Fence {
    pub(crate) fn new() -> Fence {
        Fence {
            writer: crate::util::ids::random_id(),
            gate: Arc::default(),
            state: Mutex::new(LeaseState {
                valid_until: None,
                sweeps_seen: None,
                poisoned: false,
                last_active: Instant::now(),
                gc_marking: false,
            }),
            renewing: tokio::sync::Mutex::new(()),
            in_flight: Arc::default(),
            renewer_started: std::sync::Once::new(),
            pauses: AtomicUsize::new(0),
        }
    }

    fn lease_fresh(&self) -> bool {
        self.state
            .lock()
            .map(|s| {
                s.valid_until
                    .is_some_and(|until| Instant::now() + LEASE_MARGIN < until)
            })
            .unwrap_or(false)
    }
}

/// Held by one write operation; while any is held, this process's lease stays active
/// and no gc deletes. Dropping it ends the operation.
pub struct WriteAccess {
    _gate: tokio::sync::OwnedRwLockReadGuard<()>,
    in_flight: Arc<AtomicUsize>,
}

impl Drop for WriteAccess {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Fence {
    /// Operations that started after a poisoning sweep are not affected by it.
    fn clear_poison_if_idle(&self) {
        if self.in_flight.load(Ordering::SeqCst) == 0
            && let Ok(mut state) = self.state.lock()
        {
            state.poisoned = false;
        }
    }
}

fn lease_path(writer: &str) -> Path {
    Path::from(format!("{LEASES}/{writer}.json"))
}

fn gc_lock_ref() -> Result<RefName> {
    RefName::new(GC_LOCK_REF)
}

/// This host's boot id (Linux), which tells this host and boot from any other. Read
/// once: gc asks for it for every lease on every look while it waits.
fn this_boot() -> &'static Option<String> {
    static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|id| id.trim().to_string())
            .filter(|id| !id.is_empty())
    })
}

/// True if a lock or lease written on this host and boot (`boot`) names a process that
/// is no longer running: it holds nothing. One written elsewhere cannot be checked.
fn gone_from_this_host(boot: &Option<String>, pid: u32) -> bool {
    boot.is_some() && boot == this_boot() && !process_alive(pid)
}

fn process_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    // EPERM: it exists, owned by someone else.
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

impl Store {
    /// Starts a write operation: waits while a gc sweeps, and keeps this process's
    /// lease active until the returned access is dropped.
    pub async fn write_access(&self) -> Result<WriteAccess> {
        self.start_renewer();
        loop {
            let gate = Arc::clone(&self.fence.gate).read_owned().await;
            self.fence.clear_poison_if_idle();
            if self.fence.lease_fresh() {
                self.fence.in_flight.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut state) = self.fence.state.lock() {
                    state.last_active = Instant::now();
                }
                return Ok(WriteAccess {
                    _gate: gate,
                    in_flight: Arc::clone(&self.fence.in_flight),
                });
            }
            drop(gate);
            self.renew_lease(true).await?;
        }
    }

    /// Called before every ref advance: fails with `Fenced` if a gc may have swept
    /// since this process last knew its lease to be valid.
    pub(crate) async fn check_fence(&self) -> Result<()> {
        let poisoned = self.fence.state.lock().map(|s| s.poisoned).unwrap_or(true);
        if poisoned {
            return Err(StoreError::Fenced);
        }
        if self.fence.lease_fresh() {
            return Ok(());
        }
        // Stalled past the lease (or the first write of the process): renew, but never
        // pause here, since the caller may be inside a write operation.
        self.renew_lease(false).await?;
        let state = self.fence.state.lock().map_err(|_| StoreError::Fenced)?;
        if state.poisoned || state.valid_until.is_none() {
            return Err(StoreError::Fenced);
        }
        Ok(())
    }

    /// The gc lock's newest entry, and what it records (Idle if never written).
    pub async fn gc_lock(&self) -> Result<(Option<RefEntry>, GcLock)> {
        let head = self.ref_head(&gc_lock_ref()?).await?;
        let lock = match &head {
            Some(entry) => serde_json::from_str(&entry.note)
                .map_err(|e| StoreError::Corrupt(format!("ref {GC_LOCK_REF}"), e.to_string()))?,
            None => GcLock {
                holder: String::new(),
                phase: GcPhase::Idle,
                sweeps: 0,
                heartbeat: 0,
                pid: 0,
                boot: None,
            },
        };
        Ok((head, lock))
    }

    /// Writes the gc lock's next entry; `Conflict` if another gc moved it.
    pub async fn advance_gc_lock(&self, expected: Option<u64>, lock: &GcLock) -> Result<RefEntry> {
        let note = serde_json::to_string(lock)
            .map_err(|e| StoreError::Corrupt(GC_LOCK_REF.to_string(), e.to_string()))?;
        // The entry names no blob: its state is the note, and its target that note's digest.
        let target = Digest::of(note.as_bytes());
        self.advance_unfenced(&gc_lock_ref()?, expected, target, "gc", &note)
            .await
    }

    /// Every writer lease in the store.
    pub async fn leases(&self) -> Result<Vec<(Path, Lease)>> {
        use futures::TryStreamExt;
        let listed: Vec<_> = self
            .inner
            .list(Some(&Path::from(LEASES)))
            .try_collect()
            .await?;
        let mut leases = Vec::new();
        for meta in listed {
            let Ok(found) = self
                .inner
                .get_opts(&meta.location, object_store::GetOptions::default())
                .await
            else {
                continue; // removed meanwhile
            };
            let bytes = found.bytes().await?;
            if let Ok(lease) = serde_json::from_slice::<Lease>(&bytes) {
                leases.push((meta.location, lease));
            }
        }
        Ok(leases)
    }

    async fn put_lease(&self, paused_for: Option<String>) -> Result<()> {
        self.write_lease(
            paused_for,
            crate::util::time::now_unix() + LEASE_TTL.as_secs() as i64,
        )
        .await
    }

    async fn write_lease(&self, paused_for: Option<String>, expires: i64) -> Result<()> {
        let lease = Lease {
            writer: self.fence.writer.clone(),
            pid: std::process::id(),
            boot: this_boot().clone(),
            expires,
            paused_for,
        };
        let body = serde_json::to_vec(&lease)
            .map_err(|e| StoreError::Corrupt("a writer lease".to_string(), e.to_string()))?;
        self.raw_put(
            &lease_path(&self.fence.writer),
            Bytes::from(body).into(),
            PutMode::Overwrite,
        )
        .await?;
        Ok(())
    }

    /// Writes this process's lease, then reads the gc lock. If a gc is sweeping and
    /// `may_pause`, waits for the operations in flight, pauses for it, and returns
    /// once it is done.
    async fn renew_lease(&self, may_pause: bool) -> Result<()> {
        let _one = self.fence.renewing.lock().await;
        let sent = Instant::now();
        self.put_lease(None).await?;
        let (_, lock) = self.gc_lock().await?;
        let now = crate::util::time::now_unix();
        if lock.phase == GcPhase::Sweeping && lock.held(now) {
            // This lease is active again, so the gc waits: nothing it deletes can be
            // named by what is in flight. The caller pauses, or fails its commit.
            if let Ok(mut state) = self.fence.state.lock() {
                state.valid_until = Some(sent + LEASE_TTL);
            }
            if may_pause {
                self.pause_for(lock).await?;
            }
            return Ok(());
        }
        let mut state = self.fence.state.lock().map_err(|_| StoreError::Fenced)?;
        state.gc_marking = lock.phase == GcPhase::Marking && lock.held(now);
        let mut fenced = false;
        if state.sweeps_seen != Some(lock.sweeps) {
            // A gc entered `sweeping` since the last renewal. While this lease was valid
            // without a break, that gc waited for it and deleted nothing (it died, or gave
            // up). Only if the lease lapsed may it have deleted what is in flight, and a
            // commit that asked for this renewal may name it. (First renewal of a process
            // that never noted the sweeps: it forgets what it holds, and nothing is in
            // flight that started under another lease.)
            let lapsed = state.valid_until.is_none_or(|until| until <= sent);
            if state.sweeps_seen.is_some() && lapsed {
                if self.fence.in_flight.load(Ordering::SeqCst) > 0 {
                    state.poisoned = true;
                }
                fenced = !may_pause;
            }
            self.forget_what_may_be_swept();
        }
        state.sweeps_seen = Some(lock.sweeps);
        state.valid_until = Some(sent + LEASE_TTL);
        if fenced {
            return Err(StoreError::Fenced);
        }
        Ok(())
    }

    /// Let the operations in flight finish, declare this process paused for `lock`'s
    /// gc, wait until that gc is done or dead, then forget what may have been swept.
    async fn pause_for(&self, lock: GcLock) -> Result<()> {
        let gate = Arc::clone(&self.fence.gate);
        let write = gate.write_owned();
        tokio::pin!(write);
        // While operations finish, their lease must stay active.
        let _exclusive = loop {
            tokio::select! {
                held = &mut write => break held,
                _ = tokio::time::sleep(RENEW_EVERY) => {
                    let sent = Instant::now();
                    self.put_lease(None).await?;
                    if let Ok(mut state) = self.fence.state.lock() {
                        state.valid_until = Some(sent + LEASE_TTL);
                    }
                }
            }
        };
        self.fence.pauses.fetch_add(1, Ordering::Relaxed);
        tracing::info!(gc = %lock.holder, "pausing writes while gc sweeps");
        if let Ok(mut state) = self.fence.state.lock() {
            state.valid_until = None;
        }
        self.put_lease(Some(lock.holder.clone())).await?;
        let started = Instant::now();
        let mut last_put = Instant::now();
        let resumed = loop {
            tokio::time::sleep(PAUSED_POLL).await;
            let now_lock = match self.gc_lock().await {
                Ok((_, l)) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the gc lock while paused; retrying");
                    continue;
                }
            };
            let now = crate::util::time::now_unix();
            if now_lock.holder != lock.holder
                || now_lock.phase != GcPhase::Sweeping
                || !now_lock.held(now)
            {
                break now_lock;
            }
            if last_put.elapsed() >= RENEW_EVERY {
                self.put_lease(Some(lock.holder.clone())).await?;
                last_put = Instant::now();
            }
        };
        self.forget_what_may_be_swept();
        let sent = Instant::now();
        self.put_lease(None).await?;
        if let Ok(mut state) = self.fence.state.lock() {
            state.sweeps_seen = Some(resumed.sweeps.max(lock.sweeps));
            state.valid_until = Some(sent + LEASE_TTL);
            state.poisoned = false;
        }
        tracing::info!(
            gc = %lock.holder,
            paused_ms = started.elapsed().as_millis() as u64,
            "gc done; writes resume"
        );
        Ok(())
    }

    /// Everything this process remembers as stored that a sweep may have removed:
    /// held bytes (and the fragment maps derived from them), the parts of remembered
    /// composites (taken as stored without a check), and the pack indexes read.
    fn forget_what_may_be_swept(&self) {
        self.forget_held();
        self.composites.part_hashes.clear();
        self.packs.forget_all();
    }

    /// Reads the gc lock once, so that a process that fills its caches before its
    /// first write knows which sweeps they already reflect. Without it, the first
    /// renewal forgets everything remembered.
    pub async fn note_gc_sweeps(&self) -> Result<()> {
        let (_, lock) = self.gc_lock().await?;
        if let Ok(mut state) = self.fence.state.lock() {
            state.sweeps_seen.get_or_insert(lock.sweeps);
        }
        Ok(())
    }

    /// How many times this process paused its writes for a gc.
    pub fn gc_pauses(&self) -> usize {
        self.fence.pauses.load(Ordering::Relaxed)
    }

    /// Keeps the lease of a busy process fresh, and notices a gc that wants to sweep
    /// even when no new operation starts (an import in flight is waited for, not cut).
    fn start_renewer(&self) {
        self.fence.renewer_started.call_once(|| {
            let store = self.clone();
            if tokio::runtime::Handle::try_current().is_err() {
                return;
            }
            tokio::spawn(async move {
                loop {
                    let marking = store
                        .fence
                        .state
                        .lock()
                        .map(|s| s.gc_marking)
                        .unwrap_or(false);
                    tokio::time::sleep(if marking { GC_WATCH } else { RENEW_EVERY }).await;
                    // Only this task still holds the store: nothing will write again.
                    if Arc::strong_count(&store.fence) <= 1 {
                        return;
                    }
                    let recent = store
                        .fence
                        .state
                        .lock()
                        .map(|s| s.last_active.elapsed() < LEASE_TTL)
                        .unwrap_or(false);
                    if store.fence.in_flight.load(Ordering::SeqCst) == 0 && !recent {
                        continue; // idle: let the lease lapse; the next operation renews it
                    }
                    if let Err(e) = store.renew_lease(true).await {
                        tracing::warn!(error = %e, "cannot renew this process's writer lease");
                    }
                }
            });
        });
    }

    /// Declares this process's lease expired, in the store and to itself, as if it
    /// had stalled past it.
    #[cfg(test)]
    pub(crate) async fn expire_lease_for_test(&self) {
        let _ = self
            .write_lease(None, crate::util::time::now_unix() - 3600)
            .await;
        if let Ok(mut state) = self.fence.state.lock() {
            state.valid_until = Some(Instant::now());
        }
    }
}
