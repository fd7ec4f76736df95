//! `caprepo gc` and `caprepo verify`: the operator's housekeeping.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::repo::open_store;
use crate::maintenance;
use crate::serve::config::DataDir;

#[derive(clap::Args)]
pub struct GcArgs {
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Report what would be freed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Never sweep blobs younger than this, so uploads in flight and clients fetching old
    /// by-hash files are safe.
    #[arg(long, value_name = "DURATION", default_value = "1d")]
    grace: String,
    /// Also forget all but the newest N generations of every ref (history and rollback reach
    /// back only that far; snapshots are kept). Default: keep all history.
    #[arg(long, value_name = "N")]
    keep_generations: Option<u64>,
    /// How long to wait for every writer (daemons, imports, CLI commands on this store)
    /// to pause before giving up without sweeping. Daemons notice within 5 s; writers that
    /// paused wait meanwhile, so this bounds how long a long import can stall them.
    #[arg(long, value_name = "DURATION", default_value = "15s")]
    pause_timeout: String,
    /// With --keep-generations: a publication superseded less than this long ago is kept
    /// (with what it names), so a client that just read its InRelease or repomd.xml still
    /// fetches what it lists. Raise it for slow mirrors.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    reader_window: String,
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Repair what verify finds missing, then verify again: drop packages whose blobs are
    /// gone from their cells (re-upload them), set a publication that names a missing file
    /// back to its newest whole generation, delete history generations and cache entries
    /// that name missing blobs. Says what it did; deletes nothing that is present.
    #[arg(long)]
    fix: bool,
    /// With --fix: say what would be repaired, change nothing.
    #[arg(long, requires = "fix")]
    dry_run: bool,
}

pub async fn gc(args: GcArgs) -> Result<ExitCode> {
    let data = DataDir::new(&args.data);
    let store = open_store(&data)?;
    let grace = crate::util::time::parse_duration(&args.grace).map_err(anyhow::Error::msg)?;
    if !args.dry_run {
        let swept = crate::store::spool::sweep(&data.spool_dir())
            .with_context(|| format!("sweeping {}", data.spool_dir().display()))?;
        if swept.files > 0 {
            println!(
                "removed {} spool file(s) of processes that died, {} bytes",
                swept.files, swept.bytes
            );
        }
    }
    let options = maintenance::GcOptions {
        grace,
        keep_generations: args.keep_generations,
        dry_run: args.dry_run,
        pause_timeout: crate::util::time::parse_duration(&args.pause_timeout)
            .map_err(anyhow::Error::msg)?,
        reader_window: crate::util::time::parse_duration(&args.reader_window)
            .map_err(anyhow::Error::msg)?,
    };
    let say = |stage: maintenance::GcStage| {
        if let Some(what) = match stage {
            maintenance::GcStage::Marking => Some("marking what the refs reach (writers go on)"),
            maintenance::GcStage::WaitingForWriters => Some("waiting for writers to pause"),
            maintenance::GcStage::Sweeping => {
                Some("writers paused: marking what changed, then deleting")
            }
            maintenance::GcStage::Done => None,
        } {
            eprintln!("caprepo gc: {what}");
        }
    };
    let (report, problems) = match maintenance::gc(&store, &options, &say).await {
        Ok(done) => done,
        Err(maintenance::MaintenanceError::Refused(why)) => {
            eprintln!("caprepo: gc: {why}");
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e).context("gc"),
    };
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("caprepo: {problem}");
        }
        eprintln!("caprepo: gc swept nothing: the store has problems above (run `caprepo verify`)");
        return Ok(ExitCode::FAILURE);
    }
    let verb = if args.dry_run { "would free" } else { "freed" };
    println!(
        "{verb} {} blob(s), {} bytes; {} reachable; {} unreachable but younger than {}{}",
        report.swept,
        report.swept_bytes,
        report.reachable,
        report.kept_young,
        args.grace,
        if report.pruned_generations > 0 {
            format!(
                "; {} old ref generation(s) {}",
                report.pruned_generations,
                if args.dry_run {
                    "would be pruned"
                } else {
                    "pruned"
                }
            )
        } else {
            String::new()
        }
    );
    if report.packed_rewritten + report.packed_held > 0 {
        println!(
            "packs: {} live blob(s) {} loose from mostly dead packs; {} dead packed blob(s) kept \
             in packs that are young or at least half alive",
            report.packed_rewritten,
            if args.dry_run {
                "would be written"
            } else {
                "written"
            },
            report.packed_held
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn verify(args: VerifyArgs) -> Result<ExitCode> {
    let data = DataDir::new(&args.data);
    let store = open_store(&data)?;
    let certificate = std::fs::read(data.public_key_armored()).with_context(|| {
        format!(
            "reading the public key {}",
            data.public_key_armored().display()
        )
    })?;
    if args.fix {
        // A repair writes cells and refs: it holds a writer lease like any writer.
        let _access = store
            .write_access()
            .await
            .context("taking a writer lease on the store")?;
        let report = crate::maintenance::repair::repair(&store, args.dry_run).await?;
        if report.actions.is_empty() {
            println!("repair: nothing names a missing object");
        }
        for action in &report.actions {
            println!(
                "{}{action}",
                if args.dry_run {
                    "would repair: "
                } else {
                    "repaired: "
                }
            );
        }
        if args.dry_run {
            return Ok(ExitCode::SUCCESS);
        }
    }
    let mut problems = maintenance::verify(&store, &certificate).await?;
    // Spool files no live process holds: left by a crash; `serve` and `gc` remove them.
    for (path, size) in crate::store::spool::leftovers(&data.spool_dir())
        .with_context(|| format!("reading {}", data.spool_dir().display()))?
    {
        problems.push(format!(
            "{}: {size} bytes left in the spool by a process that died (`caprepo gc` or the next `serve` removes it)",
            path.display()
        ));
    }
    if problems.is_empty() {
        println!("ok: every reachable blob, ref, manifest and published signature checks out");
        return Ok(ExitCode::SUCCESS);
    }
    for problem in &problems {
        println!("{problem}");
    }
    eprintln!("caprepo: verify found {} problem(s)", problems.len());
    Ok(ExitCode::FAILURE)
}
