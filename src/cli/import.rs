//! `caprepo import`: the bulk path for migrations and benchmarks. Inspects and
//! stores every .deb (several at a time), adds them to their cells with one
//! write per cell, and publishes once, signed, at the end, through the running
//! server's agent or one started for the purpose.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;

use super::repo::open_store;
use crate::agent::AgentClient;
use crate::caps::Scope;
use crate::cells::{self, AddOutcome};
use crate::config::{Config, DataDir};
use crate::deb::Limits;
use crate::ingest::{self, Spooled};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Where the packages go: apt/NAME/dists/SUITE/COMPONENT.
    scope: String,
    /// .deb files, or directories searched for them.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in
                std::fs::read_dir(&path).with_context(|| format!("reading {}", path.display()))?
            {
                stack.push(entry?.path());
            }
        } else if path.extension().is_some_and(|e| e == "deb") {
            out.push(path);
        } else if paths.contains(&path) {
            bail!(
                "{} is not a .deb (this version imports APT packages; upload rpms with caprepo upload)",
                path.display()
            );
        }
    }
    out.sort();
    Ok(out)
}

async fn agent_for(
    data: &DataDir,
    config: &Config,
) -> Result<(AgentClient, Option<crate::daemon::AgentChild>)> {
    let socket = config
        .agent
        .socket
        .clone()
        .unwrap_or_else(|| data.default_agent_socket());
    let client = AgentClient::new(&socket);
    if client.public_key(true).await.is_ok() {
        return Ok((client, None)); // a running server's agent
    }
    let mut child =
        crate::daemon::AgentChild::spawn(data, &socket, config.agent.passphrase_file.as_deref())
            .await?;
    child.wait_ready(&client).await?;
    Ok((client, Some(child)))
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let data = DataDir::new(&args.data);
    let config = Config::load(&data)?;
    let store = open_store(&data)?;
    let scope: Scope = args.scope.parse()?;
    let (Some(_), (Some(_), Some(_), None)) = (scope.repo(), scope.apt_parts()) else {
        bail!("import into a component: apt/NAME/dists/SUITE/COMPONENT");
    };
    let files = collect(&args.paths)?;
    let started = Instant::now();
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(files.len() as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
        ) {
            bar.set_style(style);
        }
        bar.set_message("importing");
        Some(bar)
    } else {
        None
    };
    let limits = Limits::default();
    let prepared: Vec<(PathBuf, Result<_, String>)> = futures::stream::iter(files.iter().cloned())
        .map(|path| {
            let (store, limits, scope, bar) =
                (store.clone(), limits.clone(), scope.clone(), bar.clone());
            async move {
                let hashed = {
                    let path = path.clone();
                    tokio::task::spawn_blocking(move || ingest::hash_file(&path)).await
                };
                let result = match hashed {
                    Ok(Ok((digest, size))) => {
                        let spooled = Spooled {
                            path: path.clone(),
                            digest,
                            size,
                        };
                        ingest::prepare(&store, &limits, &spooled, &scope, "import")
                            .await
                            .map_err(|e| e.to_string())
                    }
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Some(bar) = &bar {
                    bar.inc(1);
                }
                (path, result)
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let mut refused = 0;
    let mut by_cell: BTreeMap<
        String,
        (
            crate::store::RefName,
            Vec<(PathBuf, crate::model::AptPackage)>,
        ),
    > = BTreeMap::new();
    let mut suites: BTreeMap<(String, String), ()> = BTreeMap::new();
    for (path, result) in prepared {
        match result {
            Ok((cell, package, answer)) => {
                for tree in &answer.target.trees {
                    suites.insert((answer.target.repo.clone(), tree.clone()), ());
                }
                by_cell
                    .entry(cell.to_string())
                    .or_insert_with(|| (cell, Vec::new()))
                    .1
                    .push((path, package));
            }
            Err(e) => {
                refused += 1;
                eprintln!("caprepo: {}: refused: {e}", path.display());
            }
        }
    }
    let (mut stored, mut present) = (0, 0);
    for (_, (cell, items)) in by_cell {
        let (paths, packages): (Vec<PathBuf>, Vec<_>) = items.into_iter().unzip();
        for (path, outcome) in paths
            .iter()
            .zip(cells::add_packages(&store, &cell, packages, "import").await?)
        {
            match outcome {
                AddOutcome::Added { .. } => stored += 1,
                AddOutcome::AlreadyPresent { .. } => present += 1,
                AddOutcome::Conflict { existing } => {
                    refused += 1;
                    eprintln!(
                        "caprepo: {}: refused: same name, version and arch stored with other bytes ({existing})",
                        path.display()
                    );
                }
            }
        }
    }
    let stored_at = started.elapsed();
    let (agent, _child) = agent_for(&data, &config).await?;
    for (repo, suite) in suites.keys() {
        crate::apt::publish::publish_suite(&store, &agent, repo, suite)
            .await
            .with_context(|| format!("publishing apt/{repo}/{suite}"))?;
    }
    println!(
        "imported {stored} new, {present} already present, {refused} refused; stored in {:.2?}, published and signed in {:.2?}",
        stored_at,
        started
            .elapsed()
            .saturating_sub(stored_at)
            .max(Duration::ZERO)
    );
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
