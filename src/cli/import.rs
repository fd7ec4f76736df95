//! `caprepo import`: the bulk path for migrations and benchmarks. Inspects and
//! stores every .deb or .rpm (several at a time), adds them to their cells with
//! one write per cell, and publishes once, signed, at the end, through the
//! running server's agent or one started for the purpose.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use futures::StreamExt;

use crate::agent::AgentClient;
use crate::caps::Scope;
use crate::formats::Format;
use crate::formats::deb::Limits;
use crate::ingest::format::{IngestContext, IngestFormat};
use crate::ingest::{self, Ingested, Spooled};
use crate::publish::PublishFormat;
use crate::repo::cells::{self, AddOutcome};
use crate::repo::format::with_format;
use crate::repo::model::Record;
use crate::serve::config::{Config, DataDir};
use crate::store::{RefName, Store};

/// How many packages are inspected and stored at once: enough to overlap file
/// reads with hashing and decompression on a small machine.
const PARALLEL: usize = 4;

/// The parsed chunks an import holds for its publish, by their stored size: all of a
/// 100,000-package cold import's (20,000 debs make 13 MB of chunk JSON).
const IMPORT_PARSED_CHUNK_BYTES: usize = 256 << 20;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  caprepo import --data /srv/caprepo apt/acme/dists/stable/main ./build/debs/
  caprepo import --data /srv/caprepo rpm/acme/40 ./build/rpms/*.rpm

Already-stored packages are skipped; a package whose name, version and arch are
stored with other bytes is refused and reported, and the exit code is non-zero.")]
pub struct Args {
    /// The data directory `caprepo init` made.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Where the packages go: apt/NAME/dists/SUITE/COMPONENT for .deb files,
    /// rpm/NAME/RELEASE for .rpm files.
    scope: String,
    /// Package files, or directories searched (recursively) for them.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

fn collect(paths: &[PathBuf], extension: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in
                std::fs::read_dir(&path).with_context(|| format!("reading {}", path.display()))?
            {
                let entry = entry?;
                // The directory listing says what each entry is: no stat per package.
                let is_file = entry.file_type().is_ok_and(|t| t.is_file());
                if is_file && entry.path().extension().is_some_and(|e| e == extension) {
                    out.push(entry.path());
                } else if !is_file {
                    stack.push(entry.path());
                }
            }
        } else if path.extension().is_some_and(|e| e == extension) {
            out.push(path);
        } else if paths.contains(&path) {
            bail!(
                "{} is not a .{extension}, which is what this scope takes \
                 (.deb files go to apt/NAME/dists/SUITE/COMPONENT, .rpm files to rpm/NAME/RELEASE)",
                path.display()
            );
        }
    }
    out.sort();
    Ok(out)
}

/// The running server's agent, or one started for this import (`Some` child: wait
/// for it with `wait_ready` before the first signature).
async fn agent_for(
    data: &DataDir,
    config: &Config,
) -> Result<(AgentClient, Option<crate::serve::daemon::AgentChild>)> {
    let socket = config
        .agent
        .socket
        .clone()
        .unwrap_or_else(|| data.default_agent_socket());
    let client = AgentClient::new(&socket);
    if client.public_key(true).await.is_ok() {
        return Ok((client, None)); // a running server's agent
    }
    let child = crate::serve::daemon::AgentChild::spawn(
        data,
        &socket,
        config.agent.passphrase_file.as_deref(),
    )
    .await?;
    Ok((client, Some(child)))
}

/// What every package of one import run shares; each package is prepared in a task
/// of its own, so that rendering its entries and packing it use both cores.
struct Run<F: IngestFormat> {
    /// The bulk store handle: packs and deferred fsync (see `Store::bulk`).
    store: Store,
    agent: AgentClient,
    definition: F::Definition,
    scope: Scope,
    /// Where signed copies of rpms are written: the data dir's spool, on the store's filesystem.
    scratch: PathBuf,
}

/// Prepares one package on the blocking thread it was given: read, hash and inspect
/// it, then store it, driving the store's futures right there (for a local store and
/// a packed blob they finish without waiting): each hand-off between the blocking
/// pool and the async workers costs thread wake-ups.
fn prepare_one<F: IngestFormat>(
    run: &Run<F>,
    runtime: &tokio::runtime::Handle,
    path: PathBuf,
) -> Result<(RefName, F::Package, Ingested), String> {
    let Run {
        store,
        agent,
        definition,
        scope,
        scratch,
    } = run;
    let (digest, size, bytes) = load(&path).map_err(|e| e.to_string())?;
    let spooled = Spooled {
        path,
        digest,
        size,
        movable: false,
        bytes,
    };
    let limits = Limits::default();
    let info = F::inspect(&spooled, &limits).map_err(|e| e.to_string())?;
    let context = IngestContext {
        store,
        signer: agent,
        limits: &limits,
    };
    runtime
        .block_on(F::prepare(
            &context, definition, info, &spooled, scope, scratch, "import",
        ))
        .map_err(|e| e.to_string())
}

/// Hashes a package; one small enough to be packed is also kept in memory, so that
/// inspecting and storing it read no file again.
fn load(
    path: &std::path::Path,
) -> std::io::Result<(crate::util::digest::Digest, u64, Option<bytes::Bytes>)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    if size > crate::store::MAX_PACKED_BLOB {
        drop(file);
        let (digest, size) = ingest::hash_file(path)?;
        return Ok((digest, size, None));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.read_to_end(&mut bytes)?;
    let digest = crate::util::digest::Digest::of(&bytes);
    Ok((digest, bytes.len() as u64, Some(bytes.into())))
}

/// Tallies of what the cell writes did.
#[derive(Default)]
struct Counts {
    stored: usize,
    present: usize,
    refused: usize,
}

/// Packages headed for each cell, by cell name: its ref and (file, record) pairs.
type ByCell<P> = BTreeMap<String, (RefName, Vec<(PathBuf, P)>)>;

/// Adds every cell's packages in one write per cell.
async fn add_to_cells<P: Record>(
    store: &Store,
    by_cell: ByCell<P>,
    counts: &mut Counts,
) -> Result<()> {
    for (_, (cell, items)) in by_cell {
        let (paths, packages): (Vec<PathBuf>, Vec<P>) = items.into_iter().unzip();
        let outcomes = cells::add_packages(store, &cell, packages, "import").await?;
        for (path, outcome) in paths.iter().zip(outcomes) {
            match outcome {
                AddOutcome::Added { .. } => counts.stored += 1,
                AddOutcome::AlreadyPresent { .. } => counts.present += 1,
                AddOutcome::Conflict { existing } => {
                    counts.refused += 1;
                    eprintln!(
                        "caprepo: {}: refused: same name, version and arch stored with other bytes ({existing})",
                        path.display()
                    );
                }
            }
        }
    }
    Ok(())
}

/// Claims what the packages need across the repository in one pass (for APT, every
/// pool path: see [`crate::repo::claims`]); a package whose claim names other bytes is
/// refused and dropped from its cell.
async fn claim_batch<F: IngestFormat>(
    store: &Store,
    repo: &str,
    by_cell: &mut ByCell<F::Package>,
    counts: &mut Counts,
) -> Result<()> {
    let mut owners: Vec<(String, PathBuf)> = Vec::new();
    let mut packages: Vec<F::Package> = Vec::new();
    for (key, (_, items)) in by_cell.iter_mut() {
        for (path, package) in items.drain(..) {
            owners.push((key.clone(), path));
            packages.push(package);
        }
    }
    let outcomes = F::claim_batch(store, repo, &mut packages, "import")
        .await
        .context("claiming pool paths")?;
    for (((key, path), package), outcome) in owners.into_iter().zip(packages).zip(outcomes) {
        match outcome {
            Ok(()) => {
                if let Some((_, items)) = by_cell.get_mut(&key) {
                    items.push((path, package));
                }
            }
            Err(existing) => {
                counts.refused += 1;
                eprintln!(
                    "caprepo: {}: refused: its pool path {} names other bytes ({existing})",
                    path.display(),
                    package.served_path()
                );
            }
        }
    }
    Ok(())
}

fn progress_bar(len: usize) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
    {
        bar.set_style(style);
    }
    bar.set_message("importing");
    Some(bar)
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let data = DataDir::new(&args.data);
    let config = Config::load(&data)?;
    // Held to the end: an import's reuse of stored packages spans all its writes.
    let (store, _access) = super::repo::open_store_for_writing(&data).await?;
    let scope: Scope = args.scope.parse()?;
    let Some(format) = Format::parse(scope.kind()) else {
        bail!(
            "import into one component or release: apt/NAME/dists/SUITE/COMPONENT or rpm/NAME/RELEASE \
             (got {scope})"
        );
    };
    with_format!(format, F => import::<F>(&args, &data, &config, &store, scope).await)
}

/// Imports `args.paths` into `scope`, a scope of format `F`.
async fn import<F: IngestFormat + PublishFormat>(
    args: &Args,
    data: &DataDir,
    config: &Config,
    store: &Store,
    scope: Scope,
) -> Result<ExitCode> {
    let definition = F::import_target(store, &scope).await?;
    let files = collect(&args.paths, F::PACKAGE_EXTENSION)?;
    let started = Instant::now();
    // RPM imports may sign each package header; both publish signed indices at the end.
    // A started agent loads its key while the packages are stored, unless they are signed.
    let (agent, mut child) = agent_for(data, config).await?;
    if let (Some(child), true) = (&mut child, F::signs_packages(&definition)) {
        child.wait_ready(&agent).await?;
    }
    // Small blobs go into packs and nothing is fsynced one by one; the packs are
    // sealed and flushed before any cell names them, so a crash mid-import leaves
    // only unreferenced blobs.
    let scratch = data.spool_dir();
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("creating the spool directory {}", scratch.display()))?;
    let bulk = store.bulk(&scratch)?;
    // The publish at the end reads back every chunk the cell writes make.
    crate::repo::cells::hold_parsed_chunks(&bulk, IMPORT_PARSED_CHUNK_BYTES);
    let run = std::sync::Arc::new(Run::<F> {
        store: bulk.clone(),
        agent: agent.clone(),
        definition,
        scope: scope.clone(),
        scratch: scratch.clone(),
    });
    let bar = progress_bar(files.len());
    // Each package is prepared on a blocking thread of its own (see `prepare_one`);
    // futures polled inside one stream would share one thread.
    let runtime = tokio::runtime::Handle::current();
    let preparing = futures::stream::iter(files)
        .map(|path| {
            let (run, runtime) = (run.clone(), runtime.clone());
            let task = tokio::task::spawn_blocking(move || {
                let result = prepare_one(&run, &runtime, path.clone());
                (path, result)
            });
            async move {
                task.await
                    .unwrap_or_else(|e| (PathBuf::new(), Err(format!("internal error: {e}"))))
            }
        })
        .buffer_unordered(PARALLEL)
        .inspect(|_| {
            if let Some(bar) = &bar {
                bar.inc(1);
            }
        })
        .collect::<Vec<(PathBuf, Result<_, String>)>>();
    // An agent that cannot start (a wrong passphrase) stops the import at once.
    let agent_ready = async {
        match &mut child {
            Some(child) => child.wait_ready(&agent).await,
            None => Ok(()),
        }
    };
    let preparing = async { Ok::<_, anyhow::Error>(preparing.await) };
    let (prepared, ()) = tokio::try_join!(preparing, agent_ready)?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    bulk.finish_bulk()
        .await
        .context("flushing the imported blobs to disk")?;

    let mut counts = Counts::default();
    let mut trees: BTreeSet<(String, String)> = BTreeSet::new();
    let mut by_cell: ByCell<F::Package> = BTreeMap::new();
    for (path, result) in prepared {
        let (cell, package, answer) = match result {
            Ok(prepared) => prepared,
            Err(e) => {
                counts.refused += 1;
                eprintln!("caprepo: {}: refused: {e}", path.display());
                continue;
            }
        };
        for tree in &answer.target.trees {
            trees.insert((answer.target.repo.clone(), tree.clone()));
        }
        by_cell
            .entry(cell.to_string())
            .or_insert_with(|| (cell, Vec::new()))
            .1
            .push((path, package));
    }
    // Cells and index fragments go into packs too, through the same bulk handle;
    // every ref advance seals and flushes them first (see `Store::bulk`).
    let store = bulk;
    let repo = scope.repo().unwrap_or_default();
    claim_batch::<F>(&store, repo, &mut by_cell, &mut counts).await?;
    add_to_cells(&store, by_cell, &mut counts).await?;
    let stored_at = started.elapsed();
    for (repo, tree) in &trees {
        F::publish(&store, &agent, repo, tree)
            .await
            .with_context(|| format!("publishing {}/{repo}/{tree}", F::FORMAT))?;
    }
    // What the publish wrote after its last ref (caches) is sealed too.
    store
        .finish_bulk()
        .await
        .context("flushing the published indices to disk")?;
    println!(
        "imported {} new, {} already present, {} refused; stored in {:.2?}, published and signed in {:.2?}",
        counts.stored,
        counts.present,
        counts.refused,
        stored_at,
        started.elapsed().saturating_sub(stored_at)
    );
    Ok(if counts.refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
