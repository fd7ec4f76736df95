//! The manager inside `caprepo serve`: it notices changed suites (from this
//! server's uploads at once, and from anything else writing to the store through
//! the store's change log, see [`crate::serve::discovery`]), publishes them one at a time, and keeps the
//! in-memory view that HTTP readers resolve paths through. Uploads that arrive
//! while a publish runs pile up in the dirty set and go out together next round.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::agent::Signer;
use crate::formats::Format;
use crate::publish::publication::PublishError;
use crate::publish::publication::Published;
use crate::repo::definitions;
use crate::repo::format::{RepoFormat, with_format};
use crate::serve::metrics::Metrics;
use crate::serve::views::{KEEP_SUPERSEDED, TreeKey, Views};
use crate::store::Store;

#[derive(Clone)]
pub struct ManagerHandle {
    dirty: mpsc::UnboundedSender<TreeKey>,
    published: watch::Receiver<u64>,
    flush: mpsc::UnboundedSender<oneshot::Sender<usize>>,
    pub views: Arc<Views>,
}

impl ManagerHandle {
    /// Publishes every suite and tree whose cells moved past what is served, now, and
    /// answers how many it published: what a stopping server does, so that every upload
    /// it answered 2xx is published before it exits. None if the manager is gone.
    pub async fn flush(&self) -> Option<usize> {
        let (reply, answer) = oneshot::channel();
        self.flush.send(reply).ok()?;
        answer.await.ok()
    }

    /// Changes each time something is published.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.clone()
    }

    /// Ask for a poll of the change log now (after a change that touched several cells).
    pub fn poke(&self) {
        let _ = self.dirty.send((String::new(), String::new()));
    }

    pub fn mark_dirty(&self, repo: &str, suite: &str) {
        let _ = self.dirty.send((repo.to_string(), suite.to_string()));
    }

    /// True once every one of `trees` is published with `cell` at `generation` or later.
    pub fn is_published(&self, repo: &str, trees: &[String], cell: &str, generation: u64) -> bool {
        !trees.is_empty()
            && trees.iter().all(|tree| {
                self.views
                    .get(repo, tree)
                    .is_some_and(|v| v.current.inputs.get(cell).is_some_and(|g| *g >= generation))
            })
    }

    /// Wait until `is_published`, or the timeout.
    pub async fn wait_published(
        &self,
        repo: &str,
        trees: &[String],
        cell: &str,
        generation: u64,
        timeout: Duration,
    ) -> bool {
        let mut published = self.published.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.is_published(repo, trees, cell, generation) {
                return true;
            }
            match tokio::time::timeout_at(deadline, published.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }
}

pub struct Manager {
    store: Store,
    discovery: crate::serve::discovery::Discovery,
    agent: Arc<dyn Signer>,
    views: Arc<Views>,
    metrics: Arc<Metrics>,
    dirty_rx: mpsc::UnboundedReceiver<TreeKey>,
    flush_rx: mpsc::UnboundedReceiver<oneshot::Sender<usize>>,
    published_tx: watch::Sender<u64>,
    /// How long the last publish that built something took (µs; 0: it built nothing),
    /// for discovery's window left to writers.
    last_build_micros: std::sync::atomic::AtomicU64,
}

pub fn new(
    store: Store,
    agent: Arc<dyn Signer>,
    metrics: Arc<Metrics>,
) -> (Manager, ManagerHandle) {
    let (dirty_tx, dirty_rx) = mpsc::unbounded_channel();
    let (flush_tx, flush_rx) = mpsc::unbounded_channel();
    let (published_tx, published_rx) = watch::channel(0);
    let views = Arc::new(Views::default());
    let handle = ManagerHandle {
        dirty: dirty_tx,
        published: published_rx,
        flush: flush_tx,
        views: Arc::clone(&views),
    };
    (
        Manager {
            discovery: crate::serve::discovery::Discovery::new(store.clone(), Arc::clone(&metrics)),
            store,
            agent,
            views,
            metrics,
            dirty_rx,
            flush_rx,
            published_tx,
            last_build_micros: Default::default(),
        },
        handle,
    )
}

impl Manager {
    pub async fn run(mut self) {
        let mut poll = tokio::time::interval(crate::serve::discovery::POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Suites whose publish failed or waited for a batch: tried again each poll, since
        // the change that made them stale is already behind the change log's position.
        let mut retry: BTreeSet<TreeKey> = BTreeSet::new();
        loop {
            let mut dirty: BTreeSet<TreeKey> = BTreeSet::new();
            let mut flushed: Option<oneshot::Sender<usize>> = None;
            tokio::select! {
                Some(reply) = self.flush_rx.recv() => {
                    dirty.extend(self.discovery.poll(&self.views).await);
                    flushed = Some(reply);
                },
                received = self.dirty_rx.recv() => match received {
                    // An empty key asks for a poll of the change log now.
                    Some((repo, _)) if repo.is_empty() => {
                        dirty.extend(self.discovery.poll(&self.views).await);
                    }
                    Some(key) => { dirty.insert(key); }
                    None => return,
                },
                _ = poll.tick() => {
                    dirty.extend(self.discovery.poll(&self.views).await);
                    dirty.append(&mut retry);
                }
            }
            if self.discovery.take_adopted() > 0 {
                self.published_tx.send_modify(|n| *n += 1);
            }
            // Everything that arrived meanwhile goes into this round.
            while let Ok(key) = self.dirty_rx.try_recv() {
                if !key.0.is_empty() {
                    dirty.insert(key);
                }
            }
            let count = dirty.len();
            for (repo, suite) in dirty {
                if !self.publish(&repo, &suite).await {
                    retry.insert((repo, suite));
                }
                let built = self
                    .last_build_micros
                    .swap(0, std::sync::atomic::Ordering::Relaxed);
                if built > 0 {
                    self.discovery
                        .note_publish(std::time::Duration::from_micros(built));
                }
            }
            if let Some(reply) = flushed {
                let _ = reply.send(count);
            }
        }
    }

    /// Publishes one suite or tree; false if it must be tried again later.
    async fn publish(&self, repo: &str, suite: &str) -> bool {
        // A promotion or rollback is rewriting this suite's cells: publish once it is done.
        let unit = crate::releases::SuiteOrRelease::of_tree(repo, suite);
        if crate::releases::batch_open(&self.store, &unit)
            .await
            .unwrap_or(false)
        {
            tracing::debug!(repo, suite, "a batch is open; publishing after it closes");
            return false;
        }
        let started = Instant::now();
        // A publish reuses cached fragments and stored index files: no gc sweeps meanwhile.
        let access = match self.store.write_access().await {
            Ok(access) => access,
            Err(e) => {
                self.metrics.publish_failures.inc();
                tracing::error!(repo, suite, error = %e, "cannot take the writer lease; will retry on the next poll");
                return false;
            }
        };
        let result =
            crate::publish::publish_if_changed(&self.store, &*self.agent, repo, suite).await;
        drop(access);
        match result {
            Ok(Published {
                head,
                publication,
                changed,
            }) => {
                if changed {
                    let elapsed = started.elapsed();
                    self.metrics.record_publish(elapsed);
                    self.last_build_micros.store(
                        elapsed.as_micros().max(1) as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    tracing::info!(
                        repo,
                        suite,
                        generation = head.generation,
                        ms = elapsed.as_millis() as u64,
                        "published"
                    );
                }
                let key = (repo.to_string(), suite.to_string());
                if let Err(e) = self
                    .views
                    .install(&self.store, key, head.generation, publication)
                    .await
                {
                    self.metrics.publish_failures.inc();
                    tracing::error!(repo, suite, error = %e, "cannot load the published pool; will retry on the next poll");
                    return false;
                }
                self.published_tx.send_modify(|n| *n += 1);
                true
            }
            // Nothing to publish (a change log entry named a suite no longer defined): no retry.
            Err(e @ (PublishError::NoRepo(_) | PublishError::NoSuite(..))) => {
                tracing::debug!(repo, suite, error = %e, "not a published suite or tree");
                true
            }
            Err(e) => {
                self.metrics.publish_failures.inc();
                tracing::error!(repo, suite, error = %e, "publish failed; will retry on the next poll");
                false
            }
        }
    }
}

/// Load what is already published, so a restarted server serves at once.
pub async fn load_published(
    store: &Store,
    views: &Views,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Every APT suite and RPM tree, with its publication ref.
    let mut trees = Vec::new();
    for format in Format::ALL {
        with_format!(format, F => {
            for repo in definitions::list_repos(store, format).await? {
                let definition = definitions::load_repo::<F>(store, &repo).await?;
                views.set_private(&repo, F::is_private(&definition));
                for tree in F::trees(&definition) {
                    let reference = F::publication_ref(&repo, &tree)?;
                    trees.push((repo.clone(), tree, reference));
                }
            }
        });
    }
    // Side by side (on S3 each is a chain of requests, and one suite after another is
    // slow on a slow server), each one's generations in order.
    let loads: Vec<_> = trees
        .into_iter()
        .map(|(repo, tree, reference)| {
            let store = store.clone();
            async move {
                let Some(head) = store.ref_head(&reference).await? else {
                    return Ok::<_, Box<dyn std::error::Error + Send + Sync>>(());
                };
                // Replay the last few generations too, so their by-hash files stay fetchable after a restart.
                let first = head.generation.saturating_sub(KEEP_SUPERSEDED as u64);
                for generation in first..=head.generation {
                    let key = (repo.clone(), tree.clone());
                    views
                        .install_generation(&store, key, &reference, generation)
                        .await?;
                }
                Ok(())
            }
        })
        .collect();
    crate::util::parallel::in_order(loads, 8).await?;
    Ok(())
}
