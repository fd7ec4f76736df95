//! Running `caprepo serve`: open the store, reach the signing agent (starting a
//! child `caprepo agent` when none is configured, so the embedded default is one
//! command), start the manager, and serve HTTP until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::agent::AgentClient;
use crate::caps::keys as cap_keys;
use crate::formats::deb::Limits;
use crate::serve::config::{Config, DataDir};
use crate::serve::http::{self, AppState};
use crate::serve::manager;
use crate::serve::metrics::Metrics;
use crate::store::Store;

pub struct ServeOptions {
    pub data: DataDir,
    pub listen: Option<String>,
    pub agent_socket: Option<PathBuf>,
}

/// An agent child that dies with us: its stdin is a pipe we hold, and it exits on EOF.
pub struct AgentChild {
    child: tokio::process::Child,
}

impl AgentChild {
    pub async fn spawn(
        data: &DataDir,
        socket: &std::path::Path,
        passphrase_file: Option<&std::path::Path>,
    ) -> Result<Self> {
        let exe =
            std::env::current_exe().context("cannot find our own executable to start the agent")?;
        let mut command = tokio::process::Command::new(exe);
        command
            .arg("agent")
            .arg("--data")
            .arg(data.root())
            .arg("--socket")
            .arg(socket)
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .kill_on_drop(true);
        if let Some(file) = passphrase_file {
            command.arg("--passphrase-file").arg(file);
        }
        let child = command.spawn().context("starting the signing agent")?;
        Ok(AgentChild { child })
    }

    /// Wait until the agent answers, failing early if it exits (wrong passphrase, ...).
    pub async fn wait_ready(&mut self, client: &AgentClient) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the signing agent exited ({status}) before it was ready; see its message above"
                );
            }
            if client.public_key(true).await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the signing agent did not start within 5 minutes");
            }
            // An agent is ready within tens of milliseconds; an import waits for it.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

pub async fn serve(options: ServeOptions) -> Result<()> {
    let config = Config::load(&options.data)?;
    let open_files = raise_open_file_limit();
    let connection_limits = connection_limits(&config.server, open_files);
    let store = Store::open(&config.storage, options.data.root()).context("opening the store")?;
    // Spool files of processes that died (kill -9 mid-upload) would otherwise pile up.
    match crate::store::spool::sweep(&options.data.spool_dir()) {
        Ok(swept) if swept.files > 0 => tracing::info!(
            files = swept.files,
            bytes = swept.bytes,
            "removed spool files left by processes that died"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot sweep the spool directory"),
    }
    // A server stays up between uploads: idle time to hash the next RPM publish ahead.
    crate::publish::rpm::hash_ahead::enable(&store);
    let root_key = cap_keys::parse_public(&config.caps.root_public_key)?;

    let configured_socket = options
        .agent_socket
        .clone()
        .or_else(|| config.agent.socket.clone());
    let (agent, _child) = match configured_socket {
        Some(socket) => {
            let client = AgentClient::new(socket);
            client
                .wait_ready(Duration::from_secs(10))
                .await
                .context("the configured signing agent does not answer")?;
            (client, None)
        }
        None => {
            let socket = options.data.default_agent_socket();
            let client = AgentClient::new(&socket);
            let mut child = AgentChild::spawn(
                &options.data,
                &socket,
                config.agent.passphrase_file.as_deref(),
            )
            .await?;
            child.wait_ready(&client).await?;
            (client, Some(child))
        }
    };
    let public_key_armored: Arc<[u8]> = agent.public_key(true).await?.into();
    let public_key_binary: Arc<[u8]> = agent.public_key(false).await?.into();

    let metrics = Arc::new(Metrics::default());
    let (manager, handle) =
        manager::new(store.clone(), Arc::new(agent.clone()), Arc::clone(&metrics));
    // What is loaded next reflects the sweeps done so far (see `store::fence`).
    if let Err(e) = store.note_gc_sweeps().await {
        tracing::warn!(error = %e, "cannot read the gc lock; the first write will forget what was loaded");
    }
    if let Err(e) = manager::load_published(&store, &handle.views).await {
        tracing::warn!(error = %e, "could not load every published suite at start; the manager will republish");
    }
    tokio::spawn(manager.run());
    if let Some(gc) = &config.gc {
        tokio::spawn(run_gc(gc.clone(), store.clone(), Arc::clone(&metrics)));
    }
    for config in &config.mirrors {
        let mirror =
            crate::serve::mirror::Mirror::open(config).context("opening a [[mirror]] target")?;
        tokio::spawn(run_mirror(mirror, store.clone(), handle.clone()));
    }

    let listen = options
        .listen
        .unwrap_or_else(|| config.server.listen.clone());
    let address: SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen {listen:?} is not an address like 127.0.0.1:8080"))?;
    let state = AppState {
        store: store.clone(),
        data: Arc::new(options.data.clone()),
        config: Arc::new(config),
        root_key,
        agent: agent.clone(),
        snapshots: Arc::default(),
        file_cache: Arc::default(),
        revocations: Arc::new(crate::caps::registry::RevocationCheck::new(store.clone())),
        manager: handle,
        metrics,
        limits: Arc::new(Limits::default()),
        public_key_armored,
        public_key_binary,
    };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, store = state.store.description(), "serving");
    eprintln!("caprepo: serving http://{bound}/ (Ctrl-C to stop)");
    tracing::info!(
        max_connections = connection_limits.max_connections,
        open_files,
        header_timeout_secs = connection_limits.header_timeout.as_secs(),
        idle_timeout_secs = connection_limits.idle_timeout.as_secs(),
        body_timeout_secs = connection_limits.body_timeout.as_secs(),
        "connection limits"
    );
    let manager = state.manager.clone();
    let store = state.store.clone();
    http::connections::serve(
        listener,
        http::router(state),
        connection_limits,
        shutdown_signal(),
    )
    .await;
    drain(&manager, &store).await;
    Ok(())
}

/// How long a stopping server may spend publishing what it acknowledged.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// The last thing a stopping server does: publish every upload it answered 2xx (and
/// anything else whose cells moved), so a stop never strands an acknowledged upload
/// until some daemon's next start, and say so in the log.
async fn drain(manager: &crate::serve::manager::ManagerHandle, store: &Store) {
    tracing::info!("stopped accepting; publishing what was acknowledged before exiting");
    let started = std::time::Instant::now();
    match tokio::time::timeout(DRAIN_TIMEOUT, manager.flush()).await {
        Ok(Some(published)) => tracing::info!(
            trees = published,
            ms = started.elapsed().as_millis() as u64,
            "drained: every acknowledged upload is published; exiting"
        ),
        Ok(None) => {
            tracing::error!("the manager is gone; acknowledged uploads publish at the next start")
        }
        Err(_) => tracing::error!(
            secs = DRAIN_TIMEOUT.as_secs(),
            "publishing did not finish in time; acknowledged uploads publish at the next start"
        ),
    }
    // What the last publishes hash ahead and write down for the next start: a second
    // or so at 20,000 rpms; without it the next start's first publish starts over.
    if tokio::time::timeout(
        SETTLE_TIMEOUT,
        crate::publish::rpm::hash_ahead::settle_all(store),
    )
    .await
    .is_err()
    {
        tracing::warn!("stopping before the last publishes' layouts were written down");
    }
}

/// How long a stopping server waits for the last publishes' layouts to be written down.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Descriptors kept out of the connection budget: store files, spool files, the agent
/// socket, the S3 client's connections, tokio's own.
const RESERVED_FILES: u64 = 128;

/// Connections served at once when `max_connections` is not set, at most.
const DEFAULT_MAX_CONNECTIONS: u64 = 16_384;

/// Raise the soft RLIMIT_NOFILE to the hard limit (services often start with a soft limit
/// of 1024 and a far higher hard one), say so, and answer the soft limit now in force.
fn raise_open_file_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // RLIM_INFINITY is not a valid RLIMIT_NOFILE; the kernel's own ceiling (fs.nr_open) is 2^20 by default.
    let hard = limit.maximum.unwrap_or(1 << 20);
    let soft = limit.current.unwrap_or(hard);
    if soft >= hard {
        tracing::info!(open_files = soft, "open-file limit");
        return soft;
    }
    match setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: limit.maximum,
        },
    ) {
        Ok(()) => {
            tracing::info!("raised the open-file limit from {soft} to {hard} (its hard limit)");
            hard
        }
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open-file limit from {soft} to {hard}");
            soft
        }
    }
}

/// The serving loop's bounds: the configured ones, with the connection count kept
/// below what the open-file limit leaves after [`RESERVED_FILES`].
fn connection_limits(
    config: &crate::serve::config::ServerConfig,
    open_files: u64,
) -> http::connections::ConnectionLimits {
    let room = (open_files.saturating_sub(RESERVED_FILES) * 3 / 4).max(1);
    let max_connections = match config.max_connections {
        Some(wanted) if wanted as u64 > room => {
            tracing::warn!(
                "[server] max_connections = {wanted} does not fit the open-file limit of {open_files}; serving at most {room}"
            );
            room
        }
        Some(wanted) => wanted as u64,
        None => room.min(DEFAULT_MAX_CONNECTIONS),
    };
    http::connections::ConnectionLimits {
        max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
        header_timeout: Duration::from_secs(config.header_timeout_secs),
        idle_timeout: Duration::from_secs(config.idle_timeout_secs),
        body_timeout: Duration::from_secs(config.body_timeout_secs),
    }
}

pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
}

/// Keep one mirror target in step with every publish (and catch up at start).
/// `[gc]`: a gc round every interval. Every daemon with `[gc]` tries; the store's gc
/// lock lets one run, and the others count a skipped round.
async fn run_gc(config: crate::serve::config::GcConfig, store: Store, metrics: Arc<Metrics>) {
    use crate::maintenance::{GcOptions, GcStage, MaintenanceError, gc};
    // Checked when the config was loaded.
    let Ok([interval, grace, pause_timeout, reader_window]) = config.durations() else {
        return;
    };
    let options = GcOptions {
        grace,
        keep_generations: config.keep_generations,
        dry_run: false,
        pause_timeout,
        reader_window,
    };
    loop {
        tokio::time::sleep(interval).await;
        let started = std::time::Instant::now();
        let stage_metrics = Arc::clone(&metrics);
        let stage = move |stage: GcStage| {
            let (code, what) = match stage {
                GcStage::Marking => (1, "marking"),
                GcStage::WaitingForWriters => (2, "waiting for writers to pause"),
                GcStage::Sweeping => (3, "sweeping"),
                GcStage::Done => (0, "done"),
            };
            stage_metrics.gc_stage.set(code);
            tracing::info!(stage = what, "gc");
        };
        match gc(&store, &options, &stage).await {
            Ok((report, problems)) if problems.is_empty() => {
                metrics.gc_runs.inc();
                metrics.gc_swept_blobs.add(report.swept as u64);
                metrics.gc_reclaimed_bytes.add(report.swept_bytes);
                metrics
                    .gc_last_seconds_millis
                    .set(started.elapsed().as_millis() as u64);
                tracing::info!(
                    swept = report.swept,
                    bytes = report.swept_bytes,
                    reachable = report.reachable,
                    kept_young = report.kept_young,
                    pruned_generations = report.pruned_generations,
                    ms = started.elapsed().as_millis() as u64,
                    "gc done"
                );
            }
            Ok((_, problems)) => {
                metrics.gc_failures.inc();
                tracing::error!(
                    problems = problems.len(),
                    first = %problems.first().map(String::as_str).unwrap_or_default(),
                    "gc swept nothing: the store has problems (run `caprepo verify`)"
                );
            }
            Err(MaintenanceError::Refused(crate::maintenance::GcRefused::Busy {
                holder, ..
            })) => {
                metrics.gc_skipped.inc();
                tracing::info!(%holder, "gc skipped: another gc holds the store");
            }
            Err(e) => {
                metrics.gc_failures.inc();
                tracing::warn!(error = %e, "gc round failed; the next round tries again");
            }
        }
        metrics.gc_stage.set(0);
    }
}

async fn run_mirror(
    mirror: crate::serve::mirror::Mirror,
    store: Store,
    handle: crate::serve::manager::ManagerHandle,
) {
    let mut published = handle.subscribe();
    loop {
        match mirror.sync(&store, &handle.views).await {
            Ok(0) => {}
            Ok(written) => tracing::info!(mirror = mirror.name(), written, "mirror updated"),
            Err(e) => {
                tracing::error!(mirror = mirror.name(), error = %e, "mirror sync failed; retrying on the next publish")
            }
        }
        if published.changed().await.is_err() {
            return;
        }
        // Let a burst of publishes settle into one sync.
        tokio::time::sleep(Duration::from_millis(200)).await;
        published.borrow_and_update();
    }
}
