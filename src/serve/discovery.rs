//! How the manager inside `caprepo serve` learns which suites and trees to publish when
//! something other than its own uploads changed the store: another daemon, `caprepo
//! import`, `repo add`, a promotion from the CLI.
//!
//! It follows the store's change log ([`crate::store::change_log`]): one request per
//! poll while nothing changes, and for each change only the suites it feeds. A cell
//! change is left to the daemon that took the upload for [`LEAVE_TO_WRITER`], whose
//! publication this one then serves (longer when publishes here or there have been
//! slower; see [`Discovery::leave_to_writer`]); other changes are published at once. A full scan
//! of every repository definition and cell head runs at start, when the follower fell
//! behind a pruned window, and as a slow safety net for a writer that died between its
//! ref write and its log append. The safety net's interval grows with what a scan costs
//! so that an idle daemon stays under one request a second however many cells there are:
//! polls cost `1 / POLL_INTERVAL` = 0.83 requests/s, scans at most
//! [`SCAN_BUDGET_PER_SECOND`] on average (a scan of N requests waits N / 0.1 s, at least
//! [`MIN_SCAN_INTERVAL`]): 0.93 requests/s in all.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::formats::Format;
use crate::publish::publication::current_inputs;
use crate::repo::definitions;
use crate::repo::format::{KnownDefinitions, RepoFormat, with_format};
use crate::serve::metrics::Metrics;
use crate::serve::views::{TreeKey, Views};
use crate::store::Store;
use crate::store::change_log::{Followed, Follower};

/// How often the manager reads the change log.
pub const POLL_INTERVAL: Duration = Duration::from_millis(1200);

/// Requests per second an idle daemon spends on safety scans, on average.
const SCAN_BUDGET_PER_SECOND: f64 = 0.1;

/// Safety scans never run more often than this, however small the store.
const MIN_SCAN_INTERVAL: Duration = Duration::from_secs(600);

/// After a failed scan, the next try.
const SCAN_RETRY: Duration = Duration::from_secs(10);

/// How long a daemon that learns of a cell change from the log leaves publishing it to
/// the daemon that took the upload (which publishes at once, and whose publication it
/// then serves), at least: N daemons building the same publication side by side cost the
/// store N times the requests and each other the race. Past this, it publishes itself.
const LEAVE_TO_WRITER: Duration = Duration::from_secs(3);

/// ... and at most, however slow publishes have been: the bound on how late a change
/// whose writer died is published.
const LEAVE_TO_WRITER_MAX: Duration = Duration::from_secs(60);

/// How many recent publish durations (own builds, and how long other daemons took to
/// publish a cell change seen here) the window is sized from.
const RECENT_PUBLISHES: usize = 16;

type Error = Box<dyn std::error::Error + Send + Sync>;

pub struct Discovery {
    store: Store,
    metrics: Arc<Metrics>,
    /// None until the log's head is known (at start, or after the store was unreachable then).
    follower: Option<Follower>,
    /// Repository definitions as last read, by name: what maps a changed ref to suites.
    known: KnownDefinitions,
    /// When the next full scan is due; None: at the next poll.
    next_scan: Option<Instant>,
    /// Cell changes left to the writer's daemon for now: the suite or tree, the cell and
    /// its generation, and when the change was seen here.
    left_to_writer: Vec<(TreeKey, String, u64, Instant)>,
    /// How long recent publishes took, newest last: this daemon's own builds, and the time
    /// from seeing a cell change to serving the writer's publication of it.
    recent_publishes: std::collections::VecDeque<Duration>,
    /// Publications of other daemons served since the manager last asked.
    adopted: usize,
}

impl Discovery {
    pub fn new(store: Store, metrics: Arc<Metrics>) -> Discovery {
        Discovery {
            store,
            metrics,
            follower: None,
            known: KnownDefinitions::default(),
            next_scan: None,
            left_to_writer: Vec::new(),
            recent_publishes: std::collections::VecDeque::new(),
            adopted: 0,
        }
    }

    /// Notes how long a publish took, here or (seen from here) on another daemon.
    pub fn note_publish(&mut self, took: Duration) {
        if self.recent_publishes.len() >= RECENT_PUBLISHES {
            self.recent_publishes.pop_front();
        }
        self.recent_publishes.push_back(took);
    }

    /// How long a cell change is left to its writer: twice the slowest recent publish,
    /// between [`LEAVE_TO_WRITER`] and [`LEAVE_TO_WRITER_MAX`]. A fixed window can be shorter
    /// than one publish of a large suite on a slow S3 server: every other daemon then
    /// built the same publication beside the writer, lost the race, and served nothing new
    /// until its own build ended, since a manager publishing does not poll.
    pub fn leave_to_writer(&self) -> Duration {
        let slowest = self
            .recent_publishes
            .iter()
            .max()
            .copied()
            .unwrap_or_default();
        (slowest * 2).clamp(LEAVE_TO_WRITER, LEAVE_TO_WRITER_MAX)
    }

    /// How many publications of other daemons this one started serving since the last
    /// call (the manager tells its subscribers, as after a publish of its own).
    pub fn take_adopted(&mut self) -> usize {
        std::mem::take(&mut self.adopted)
    }

    /// Serves what another daemon published at `generation` of `name`, read straight from
    /// the store (the entry, the manifest, new pool chunks): not rebuilt from the cells,
    /// which cost a read of every cell head of the suite.
    async fn adopt(
        &mut self,
        views: &Views,
        name: &str,
        key: TreeKey,
        generation: u64,
    ) -> Result<Vec<TreeKey>, Error> {
        let reference = crate::store::RefName::new(name)?;
        if !views
            .install_generation(&self.store, key.clone(), &reference, generation)
            .await?
        {
            // Pruned already: a newer entry follows; publish (adopts the head) to be sure.
            return Ok(vec![key]);
        }
        self.adopted += 1;
        Ok(Vec::new())
    }

    /// Suites and trees whose published state is behind the store, or due to be re-signed.
    /// Errors are logged; what they hid is found by a later poll or scan.
    pub async fn poll(&mut self, views: &Views) -> BTreeSet<TreeKey> {
        let mut stale = BTreeSet::new();
        match &mut self.follower {
            None => match Follower::at_head(&self.store).await {
                // Whatever changed before the position is the scan's, after it the follower's.
                Ok(follower) => {
                    self.follower = Some(follower);
                    self.next_scan = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the store's change log; will retry");
                    return stale;
                }
            },
            Some(follower) => {
                self.metrics.change_log_polls.inc();
                let followed = follower.poll(&self.store).await;
                self.metrics
                    .change_log_entries_followed
                    .set(follower.entries_read());
                match followed {
                    Ok(Followed::Changes(refs)) => {
                        for (name, generation) in refs {
                            match self.touched(views, &name, generation).await {
                                Ok(keys) if name.starts_with("cells/") => {
                                    let seen = Instant::now();
                                    self.left_to_writer.extend(
                                        keys.into_iter()
                                            .map(|key| (key, name.clone(), generation, seen)),
                                    );
                                }
                                Ok(keys) => stale.extend(keys),
                                Err(e) => {
                                    tracing::warn!(reference = name, error = %e, "cannot tell what a change touched; scanning everything");
                                    self.next_scan = None;
                                }
                            }
                        }
                    }
                    Ok(Followed::Behind) => {
                        tracing::info!(
                            "the change log was pruned past what this daemon had read; scanning everything"
                        );
                        self.next_scan = None;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "polling the store's change log failed")
                    }
                }
            }
        }
        if self.next_scan.is_none_or(|due| Instant::now() >= due) {
            match self.full_scan(views).await {
                Ok(found) => stale.extend(found),
                Err(e) => {
                    tracing::warn!(error = %e, "scanning the store for changes failed");
                    self.next_scan = Some(Instant::now() + SCAN_RETRY);
                }
            }
        }
        stale.extend(self.resign_due(views));
        let now = Instant::now();
        let leave = self.leave_to_writer();
        let mut writers_took = Vec::new();
        self.left_to_writer.retain(|(key, cell, generation, seen)| {
            let served = views.get(&key.0, &key.1).is_some_and(|v| {
                v.current
                    .inputs
                    .get(cell)
                    .is_some_and(|served| served >= generation)
            });
            let due = now >= *seen + leave;
            if served {
                writers_took.push(now - *seen);
            } else if due {
                stale.insert(key.clone());
            }
            !served && !due
        });
        for took in writers_took {
            self.note_publish(took);
        }
        stale
    }

    /// The suites or trees a changed ref feeds that do not yet reflect it.
    async fn touched(
        &mut self,
        views: &Views,
        name: &str,
        generation: u64,
    ) -> Result<Vec<TreeKey>, Error> {
        let key = |repo: &str, suite: String| (repo.to_string(), suite);
        let parts: Vec<&str> = name.split('/').collect();
        let touched = match parts.as_slice() {
            [
                area @ ("cells" | "published" | "batches"),
                format,
                repo,
                rest @ ..,
            ] => match Format::parse(format) {
                Some(format) => with_format!(format, F => {
                    self.ref_changed::<F>(views, area, name, repo, rest, generation)
                        .await?
                }),
                None => Vec::new(),
            },
            ["repos", format, repo] => match Format::parse(format) {
                Some(format) => {
                    let trees =
                        with_format!(format, F => self.definition_changed::<F>(views, repo).await?);
                    trees
                        .into_iter()
                        .filter(|tree| !has_input(views, repo, tree, name, generation))
                        .map(|tree| key(repo, tree))
                        .collect()
                }
                None => Vec::new(),
            },
            _ => Vec::new(),
        };
        Ok(touched)
    }

    /// The trees a change to `<area>/<format>/<repo>/<rest>` touches, for format `F`:
    /// a cell's trees that do not list it yet; a tree another daemon published, adopted;
    /// every tree of a suite or release whose batch opened or closed.
    async fn ref_changed<F: RepoFormat>(
        &mut self,
        views: &Views,
        area: &str,
        name: &str,
        repo: &str,
        rest: &[&str],
        generation: u64,
    ) -> Result<Vec<TreeKey>, Error> {
        let key = |tree: String| (repo.to_string(), tree);
        Ok(match area {
            "cells" if rest.len() == F::CELL_DEPTH => {
                let trees = match F::trees_of_cell_name(rest) {
                    Some(trees) => trees,
                    None => F::trees_of_cell(self.definition::<F>(repo).await?, rest),
                };
                trees
                    .into_iter()
                    .filter(|tree| !has_input(views, repo, tree, name, generation))
                    .map(key)
                    .collect()
            }
            // Another daemon published: serve what it published.
            "published" if rest.len() == F::TREE_DEPTH => {
                let tree = rest.join("/");
                if views
                    .get(repo, &tree)
                    .is_none_or(|v| v.generation < generation)
                {
                    self.adopt(views, name, key(tree), generation).await?
                } else {
                    Vec::new()
                }
            }
            // A batch opened or closed: publishing waits for (and resumes after) it.
            "batches" if rest.len() == 1 => {
                F::trees_of_unit(self.definition::<F>(repo).await?, rest[0])
                    .into_iter()
                    .map(key)
                    .collect()
            }
            _ => Vec::new(),
        })
    }

    /// A repository's definition as last read, read now if it is not known yet.
    async fn definition<F: RepoFormat>(&mut self, repo: &str) -> Result<&F::Definition, Error> {
        if !F::known(&mut self.known).contains_key(repo) {
            let definition = definitions::load_repo::<F>(&self.store, repo).await?;
            F::known(&mut self.known).insert(repo.to_string(), definition);
        }
        F::known(&mut self.known)
            .get(repo)
            .ok_or_else(|| format!("{} repository {repo} vanished", F::FORMAT).into())
    }

    /// A repository's definition changed: read it again; every tree it has may be stale.
    async fn definition_changed<F: RepoFormat>(
        &mut self,
        views: &Views,
        repo: &str,
    ) -> Result<Vec<String>, Error> {
        let definition = definitions::load_repo::<F>(&self.store, repo).await?;
        views.set_private(repo, F::is_private(&definition));
        let trees = F::trees(&definition);
        F::known(&mut self.known).insert(repo.to_string(), definition);
        Ok(trees)
    }

    /// APT suites whose Valid-Until is half gone: from what is cached, no request.
    fn resign_due(&self, views: &Views) -> Vec<TreeKey> {
        let now = crate::util::time::now_unix();
        let mut due = Vec::new();
        for (repo, definition) in &self.known.apt {
            for suite in &definition.suites {
                if views
                    .get(repo, &suite.name)
                    .is_some_and(|v| suite.needs_resign(v.current.built_at, now))
                {
                    due.push((repo.clone(), suite.name.clone()));
                }
            }
        }
        due
    }

    /// Reads every repository definition and the head of every cell: suites whose inputs
    /// moved past what is served. Schedules the next scan by what this one cost.
    async fn full_scan(&mut self, views: &Views) -> Result<Vec<TreeKey>, Error> {
        self.metrics.change_log_full_scans.inc();
        let started = Instant::now();
        // Requests, counted roughly: a listing or object read is one, a ref head two.
        let mut requests = 2u64;
        let mut stale = Vec::new();
        let mut known = KnownDefinitions::default();
        for format in Format::ALL {
            with_format!(format, F => {
                self.scan::<F>(views, &mut known, &mut stale, &mut requests)
                    .await?
            });
        }
        self.known = known;
        let interval = scan_interval(requests);
        self.next_scan = Some(Instant::now() + interval);
        tracing::info!(
            requests,
            ms = started.elapsed().as_millis() as u64,
            stale = stale.len(),
            next_in_secs = interval.as_secs(),
            "scanned every repository for changes"
        );
        Ok(stale)
    }
}

impl Discovery {
    /// One format's part of a full scan: every repository's definition and the inputs of
    /// each of its trees, against what is served.
    async fn scan<F: RepoFormat>(
        &self,
        views: &Views,
        known: &mut KnownDefinitions,
        stale: &mut Vec<TreeKey>,
        requests: &mut u64,
    ) -> Result<(), Error> {
        for repo in definitions::list_repos(&self.store, F::FORMAT).await? {
            let definition = definitions::load_repo::<F>(&self.store, &repo).await?;
            views.set_private(&repo, F::is_private(&definition));
            *requests += 3;
            for tree in F::trees(&definition) {
                let (_, inputs) = current_inputs::<F>(&self.store, &repo, &tree).await?;
                *requests += 3 + 2 * inputs.len() as u64;
                let view = views.get(&repo, &tree);
                if view.is_none_or(|v| v.current.inputs != inputs) {
                    stale.push((repo.clone(), tree));
                }
            }
            F::known(known).insert(repo, definition);
        }
        Ok(())
    }
}

/// True if the view of (repo, tree) already has `name` at `generation` as an input.
fn has_input(views: &Views, repo: &str, tree: &str, name: &str, generation: u64) -> bool {
    views.get(repo, tree).is_some_and(|v| {
        v.current
            .inputs
            .get(name)
            .is_some_and(|seen| *seen >= generation)
    })
}

/// How long after a scan of `requests` requests the next safety scan runs.
fn scan_interval(requests: u64) -> Duration {
    Duration::from_secs_f64(requests as f64 / SCAN_BUDGET_PER_SECOND).max(MIN_SCAN_INTERVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_left_to_a_writer_follows_how_long_publishes_take() {
        let store = crate::store::Store::memory();
        let mut discovery = Discovery::new(store, Arc::new(Metrics::default()));
        assert_eq!(discovery.leave_to_writer(), LEAVE_TO_WRITER);
        discovery.note_publish(Duration::from_millis(800));
        assert_eq!(discovery.leave_to_writer(), LEAVE_TO_WRITER);
        discovery.note_publish(Duration::from_secs(7));
        assert_eq!(discovery.leave_to_writer(), Duration::from_secs(14));
        discovery.note_publish(Duration::from_secs(600));
        assert_eq!(discovery.leave_to_writer(), LEAVE_TO_WRITER_MAX);
        // Slow publishes age out of the window.
        for _ in 0..RECENT_PUBLISHES {
            discovery.note_publish(Duration::from_secs(1));
        }
        assert_eq!(discovery.leave_to_writer(), LEAVE_TO_WRITER);
    }

    #[test]
    fn an_idle_daemon_stays_under_one_request_a_second_at_any_size() {
        for requests in [10u64, 1_000, 3_400, 100_000, 10_000_000] {
            let scans = requests as f64 / scan_interval(requests).as_secs_f64();
            let polls = 1.0 / POLL_INTERVAL.as_secs_f64();
            assert!(polls + scans <= 1.0, "{requests}: {}", polls + scans);
        }
    }
}
