//! Release-manager commands: remove, promote, snapshot, rollback, history and
//! audit. Each works on the store of a data dir; a server on the same data dir
//! (or bucket) picks the change up within a second and publishes it once.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::repo::open_store;
use crate::releases::ReleaseRequest;
use crate::releases::{self, PublishedTree};
use crate::repo::model::Publication;
use crate::serve::config::DataDir;
use crate::store::{RefName, Store};

#[derive(clap::Args)]
pub struct RmArgs {
    /// The data dir (or use --server with a publish cap).
    #[arg(long, value_name = "DIR", required_unless_present = "server")]
    data: Option<PathBuf>,
    /// A running server to ask instead of opening the data dir.
    #[arg(long, value_name = "URL", requires = "cap")]
    server: Option<String>,
    /// A cap with the publish right over the suite or release (or set CAPREPO_CAP).
    #[arg(long, env = "CAPREPO_CAP", hide_env_values = true)]
    cap: Option<String>,
    /// The suite or release: apt/NAME/SUITE or rpm/NAME/RELEASE.
    target: String,
    /// Packages: NAME or NAME=VERSION (for RPM, VERSION is EPOCH:VERSION-RELEASE or VERSION-RELEASE).
    #[arg(required = true)]
    packages: Vec<String>,
}

#[derive(clap::Args)]
pub struct PromoteArgs {
    /// The data dir (or use --server with a publish cap).
    #[arg(long, value_name = "DIR", required_unless_present = "server")]
    data: Option<PathBuf>,
    /// A running server to ask instead of opening the data dir.
    #[arg(long, value_name = "URL", requires = "cap")]
    server: Option<String>,
    /// A cap with the publish right over the suite or release (or set CAPREPO_CAP).
    #[arg(long, env = "CAPREPO_CAP", hide_env_values = true)]
    cap: Option<String>,
    /// apt/NAME or rpm/NAME.
    repo: String,
    /// Suite or release to copy from.
    from: String,
    /// Suite or release to copy to.
    to: String,
    /// Only these packages (NAME or NAME=VERSION); default: everything.
    #[arg(long = "package", value_name = "P")]
    packages: Vec<String>,
    /// Remove what was copied from the source (a move).
    #[arg(long = "move")]
    move_them: bool,
}

#[derive(clap::Subcommand)]
pub enum SnapshotCommand {
    /// Freeze what a suite (apt/NAME/SUITE) or RPM tree (rpm/NAME/RELEASE/ARCH) publishes now.
    Create {
        /// The data dir (or use --server with a publish cap).
        #[arg(long, value_name = "DIR", required_unless_present = "server")]
        data: Option<PathBuf>,
        /// A running server to ask instead of opening the data dir.
        #[arg(long, value_name = "URL", requires = "cap")]
        server: Option<String>,
        /// A cap with the publish right over the suite or release (or set CAPREPO_CAP).
        #[arg(long, env = "CAPREPO_CAP", hide_env_values = true)]
        cap: Option<String>,
        tree: String,
        name: String,
    },
    /// List a repository's snapshots (apt/NAME or rpm/NAME).
    List {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        repo: String,
    },
    /// Make a suite serve a snapshot's packages again (blue/green switch): one publish.
    Switch {
        /// The data dir (or use --server with a publish cap).
        #[arg(long, value_name = "DIR", required_unless_present = "server")]
        data: Option<PathBuf>,
        /// A running server to ask instead of opening the data dir.
        #[arg(long, value_name = "URL", requires = "cap")]
        server: Option<String>,
        /// A cap with the publish right over the suite or release (or set CAPREPO_CAP).
        #[arg(long, env = "CAPREPO_CAP", hide_env_values = true)]
        cap: Option<String>,
        tree: String,
        name: String,
    },
}

#[derive(clap::Args)]
pub struct RollbackArgs {
    /// The data dir (or use --server with a publish cap).
    #[arg(long, value_name = "DIR", required_unless_present = "server")]
    data: Option<PathBuf>,
    /// A running server to ask instead of opening the data dir.
    #[arg(long, value_name = "URL", requires = "cap")]
    server: Option<String>,
    /// A cap with the publish right over the suite or release (or set CAPREPO_CAP).
    #[arg(long, env = "CAPREPO_CAP", hide_env_values = true)]
    cap: Option<String>,
    /// apt/NAME/SUITE or rpm/NAME/RELEASE/ARCH.
    tree: String,
    /// The publication generation to go back to (default: the one before the newest; see `history`).
    #[arg(long, value_name = "GENERATION")]
    to: Option<u64>,
}

#[derive(clap::Args)]
pub struct HistoryArgs {
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// apt/NAME/SUITE or rpm/NAME/RELEASE/ARCH.
    tree: String,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct AuditArgs {
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Only events newer than this, e.g. 1h or 7d.
    #[arg(long, value_name = "DURATION")]
    since: Option<String>,
    #[arg(long)]
    json: bool,
}

/// Send a release change to a running server (`--server URL --cap CAP`).
/// Carries a release request out: through a running server (`--server URL` with a publish
/// cap), or on the data dir. Either way the same [`ReleaseRequest::apply`] runs and says
/// what changed.
async fn run(
    request: ReleaseRequest,
    data: &Option<PathBuf>,
    server: Option<&str>,
    cap: Option<&str>,
) -> Result<ExitCode> {
    let message = match server {
        Some(server) => {
            let answer = super::post_to_server(
                server,
                "release",
                cap.unwrap_or_default(),
                serde_json::to_vec(&request)?,
            )
            .await?;
            answer["message"].as_str().unwrap_or("done").to_string()
        }
        None => {
            let (store, _access) = local_store(data).await?;
            request.apply(&store, "cli").await?
        }
    };
    println!("{message}; the server publishes it once");
    Ok(ExitCode::SUCCESS)
}

/// The local store of a release command, which writes it: with the writer lease
/// held until the command ends (see `crate::store::fence`).
async fn local_store(data: &Option<PathBuf>) -> Result<(Store, crate::store::fence::WriteAccess)> {
    let data = data.as_ref().context("give --data DIR or --server URL")?;
    super::repo::open_store_for_writing(&DataDir::new(data)).await
}

pub async fn rm(args: RmArgs) -> Result<ExitCode> {
    let request = ReleaseRequest::Rm {
        target: args.target.clone(),
        packages: args.packages.clone(),
    };
    run(
        request,
        &args.data,
        args.server.as_deref(),
        args.cap.as_deref(),
    )
    .await
}

pub async fn promote(args: PromoteArgs) -> Result<ExitCode> {
    let request = ReleaseRequest::Promote {
        repo: args.repo.clone(),
        from: args.from.clone(),
        to: args.to.clone(),
        packages: args.packages.clone(),
        r#move: args.move_them,
    };
    run(
        request,
        &args.data,
        args.server.as_deref(),
        args.cap.as_deref(),
    )
    .await
}

pub async fn snapshot(command: SnapshotCommand) -> Result<ExitCode> {
    match command {
        SnapshotCommand::Create {
            data,
            server,
            cap,
            tree,
            name,
        } => {
            let request = ReleaseRequest::Snapshot { tree, name };
            return run(request, &data, server.as_deref(), cap.as_deref()).await;
        }
        SnapshotCommand::List { data, repo } => {
            let store = open_store(&DataDir::new(&data))?;
            let (format, name) = repo
                .split_once('/')
                .and_then(|(format, name)| Some((crate::formats::Format::parse(format)?, name)))
                .context("name the repository as apt/NAME or rpm/NAME")?;
            for (snapshot, entry) in releases::snapshot_list(&store, format, name).await? {
                println!(
                    "{snapshot}\t{}\t{}",
                    crate::util::time::rfc3339(entry.time),
                    entry.note
                );
            }
        }
        SnapshotCommand::Switch {
            data,
            server,
            cap,
            tree,
            name,
        } => {
            let request = ReleaseRequest::SnapshotSwitch { tree, name };
            return run(request, &data, server.as_deref(), cap.as_deref()).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn rollback(args: RollbackArgs) -> Result<ExitCode> {
    let request = ReleaseRequest::Rollback {
        tree: args.tree.clone(),
        to: args.to,
    };
    run(
        request,
        &args.data,
        args.server.as_deref(),
        args.cap.as_deref(),
    )
    .await
}

/// What each publication of a tree changed: the cell ref entries between it and the one before.
pub async fn history(args: HistoryArgs) -> Result<ExitCode> {
    let store = open_store(&DataDir::new(&args.data))?;
    let tree = PublishedTree::parse(&args.tree)?;
    let reference = tree.publication_ref()?;
    let mut previous: Option<Publication> = None;
    let loader = crate::publish::publication::PoolLoader::default();
    let mut rows = Vec::new();
    for generation in store.ref_generations(&reference).await? {
        let Some(entry) = store.ref_entry(&reference, generation).await? else {
            continue;
        };
        let publication: Publication = store.get_json(&entry.target).await?;
        let mut changes = Vec::new();
        for (cell, &to) in &publication.inputs {
            let from = previous.as_ref().and_then(|p| p.inputs.get(cell).copied());
            let start = from.map_or(0, |g| g + 1);
            if from.is_some_and(|g| g >= to) {
                continue;
            }
            let cell_ref = RefName::new(cell.clone())?;
            for g in start..=to {
                if let Some(change) = store.ref_entry(&cell_ref, g).await? {
                    changes.push(serde_json::json!({
                        "ref": cell, "generation": g, "time": crate::util::time::rfc3339(change.time),
                        "by": change.actor, "what": change.note,
                    }));
                }
            }
        }
        rows.push(serde_json::json!({
            "generation": generation,
            "time": crate::util::time::rfc3339(entry.time),
            "packages": loader.index(&store, &publication, None).await?.len(),
            "changes": changes,
        }));
        previous = Some(publication);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    for row in &rows {
        println!(
            "generation {}  {}  {} packages",
            row["generation"],
            row["time"].as_str().unwrap_or(""),
            row["packages"]
        );
        for change in row["changes"].as_array().into_iter().flatten() {
            println!(
                "    {}  {}  by {}",
                change["time"].as_str().unwrap_or(""),
                change["what"].as_str().unwrap_or(""),
                change["by"].as_str().unwrap_or("")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every change recorded in the store: the ref logs are the audit trail.
pub async fn audit(args: AuditArgs) -> Result<ExitCode> {
    let store = open_store(&DataDir::new(&args.data))?;
    let since = match &args.since {
        Some(text) => {
            crate::util::time::now_unix()
                - crate::util::time::parse_duration(text)
                    .map_err(anyhow::Error::msg)?
                    .as_secs() as i64
        }
        None => i64::MIN,
    };
    let mut events = audit_events(&store).await?;
    events.retain(|e| e.1.time >= since);
    events.sort_by(|a, b| (a.1.time, &a.0, a.1.generation).cmp(&(b.1.time, &b.0, b.1.generation)));
    if args.json {
        let rows: Vec<_> = events
            .iter()
            .map(|(name, e)| {
                serde_json::json!({"time": crate::util::time::rfc3339(e.time), "ref": name, "generation": e.generation, "by": e.actor, "what": e.note})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for (name, e) in &events {
            println!(
                "{}  {:<34} {}  ({name} #{})",
                crate::util::time::rfc3339(e.time),
                e.actor,
                e.note,
                e.generation
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every ref generation except the manager's publications and batch markers: the changes people made.
async fn audit_events(store: &Store) -> Result<Vec<(String, crate::store::RefEntry)>> {
    let mut events = crate::maintenance::all_ref_entries(store).await?;
    // Publications are the manager's work; the changes that caused them are in the cells.
    events.retain(|(name, _)| !name.starts_with("published/") && !name.starts_with("batches/"));
    Ok(events)
}
