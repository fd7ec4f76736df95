//! `caprepo repo`: define and list repositories. Definitions go into the store,
//! so a server running on the same data dir picks them up within a second.

use crate::formats::Format;
use crate::repo::format::{Apt, Rpm};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use super::split_list;
use crate::repo::definitions::{self, NewAptRepo};
use crate::serve::config::{Config, DataDir};
use crate::store::Store;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Add a repository: `repo add --data DIR apt NAME --suites stable,testing --components main --architectures amd64,arm64`
    /// or `repo add --data DIR rpm NAME --releases 12,13 --architectures x86_64,aarch64`.
    Add(AddArgs),
    /// Change a repository's settings, e.g. `repo set --data DIR apt/NAME --retention 3`.
    Set {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// apt/NAME or rpm/NAME.
        repo: String,
        /// Publish only the newest N versions of each package.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "unlimited_retention")]
        retention: Option<u32>,
        /// Publish every version again.
        #[arg(long)]
        unlimited_retention: bool,
        /// APT: also list MD5 and SHA-1 (`MD5sum`/`SHA1` in Packages, `MD5Sum`/`SHA1` in
        /// Release) for mirroring tools that read them; `false` lists SHA-256 only again.
        #[arg(long, value_name = "BOOL")]
        legacy_hashes: Option<bool>,
        /// APT: the suite the options below apply to.
        #[arg(long, value_name = "SUITE")]
        suite: Option<String>,
        /// APT: Release files expire this long after they are signed (`Valid-Until`); the
        /// server re-signs them at half-life, so clients never see an expired suite.
        #[arg(
            long,
            value_name = "DURATION",
            requires = "suite",
            conflicts_with = "no_valid_until"
        )]
        valid_for: Option<String>,
        /// APT: drop `Valid-Until`.
        #[arg(long, requires = "suite")]
        no_valid_until: bool,
        /// APT: `NotAutomatic: yes` (apt installs from the suite only when asked).
        #[arg(long, value_name = "BOOL", requires = "suite")]
        not_automatic: Option<bool>,
        /// APT: `ButAutomaticUpgrades: yes` (with NotAutomatic: upgrades what came from it).
        #[arg(long, value_name = "BOOL", requires = "suite")]
        but_automatic_upgrades: Option<bool>,
    },
    /// List repositories.
    List {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
    },
}

#[derive(clap::Args)]
pub struct AddArgs {
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Repository kind: apt or rpm.
    kind: String,
    /// Repository name: lowercase letters, digits, . _ + -.
    name: String,
    /// APT: comma-separated suites, e.g. stable,testing.
    #[arg(long, value_name = "LIST", required_if_eq("kind", "apt"))]
    suites: Option<String>,
    /// APT: comma-separated components, e.g. main,contrib.
    #[arg(long, value_name = "LIST", required_if_eq("kind", "apt"))]
    components: Option<String>,
    /// RPM: comma-separated releases, what $releasever expands to, e.g. 12,13.
    #[arg(long, value_name = "LIST", required_if_eq("kind", "rpm"))]
    releases: Option<String>,
    /// RPM: do not sign uploaded packages with the agent's key (signing is on by default).
    #[arg(long)]
    no_sign_packages: bool,
    /// Publish only the newest N versions of each package (default: all).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    retention: Option<u32>,
    /// Comma-separated architectures, e.g. amd64,arm64 or x86_64,aarch64 (all/noarch packages go into every one).
    #[arg(long, value_name = "LIST")]
    architectures: String,
    /// Release file Origin (default: the name).
    #[arg(long)]
    origin: Option<String>,
    /// Release file Label (default: the name).
    #[arg(long)]
    label: Option<String>,
    /// Readable only through read caps (`caprepo cap issue --rights read`); the public path answers 404.
    #[arg(long)]
    private: bool,
    /// APT: also list MD5 and SHA-1 hashes in Packages and Release, as Debian's archive does,
    /// for mirroring tools that read them (apt itself needs SHA-256 only, the default).
    #[arg(long)]
    legacy_hashes: bool,
}

pub fn open_store(data: &DataDir) -> Result<Store> {
    let config = Config::load(data)?;
    Ok(Store::open(&config.storage, data.root())?)
}

/// The store, for a command that writes it, with this process's writer lease taken
/// for the whole command: a gc waits for it (see `crate::store::fence`).
pub async fn open_store_for_writing(
    data: &DataDir,
) -> Result<(Store, crate::store::fence::WriteAccess)> {
    let store = open_store(data)?;
    let access = store
        .write_access()
        .await
        .context("taking a writer lease on the store")?;
    Ok((store, access))
}

pub async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Add(args) => {
            let (store, _access) = open_store_for_writing(&DataDir::new(&args.data)).await?;
            match args.kind.as_str() {
                "apt" => {
                    let new = NewAptRepo {
                        name: args.name.clone(),
                        suites: split_list(args.suites.as_deref().unwrap_or_default()),
                        components: split_list(args.components.as_deref().unwrap_or_default()),
                        architectures: split_list(&args.architectures),
                        origin: args.origin,
                        label: args.label,
                        private: args.private,
                        retention: args.retention,
                        legacy_hashes: args.legacy_hashes,
                    };
                    definitions::add_apt_repo(&store, new, "cli").await?;
                    println!(
                        "Added apt/{}; a running server publishes its empty suites within a second.",
                        args.name
                    );
                }
                "rpm" => {
                    if args.legacy_hashes {
                        bail!(
                            "--legacy-hashes is for APT repositories: repomd.xml names SHA-256 only"
                        );
                    }
                    let new = definitions::NewRpmRepo {
                        name: args.name.clone(),
                        releases: split_list(args.releases.as_deref().unwrap_or_default()),
                        architectures: split_list(&args.architectures),
                        private: args.private,
                        sign_packages: !args.no_sign_packages,
                        retention: args.retention,
                    };
                    definitions::add_rpm_repo(&store, new, "cli").await?;
                    println!(
                        "Added rpm/{}; a running server publishes its empty trees within a second.",
                        args.name
                    );
                }
                other => bail!("unknown repository kind {other:?}: use apt or rpm"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Set {
            data,
            repo,
            retention,
            unlimited_retention,
            legacy_hashes,
            suite,
            valid_for,
            no_valid_until,
            not_automatic,
            but_automatic_upgrades,
        } => {
            let Some((kind, name)) = repo.split_once('/') else {
                bail!("name the repository as apt/NAME or rpm/NAME");
            };
            let (store, _access) = open_store_for_writing(&DataDir::new(&data)).await?;
            if let Some(suite) = suite {
                if kind != "apt" {
                    bail!("--suite and Release options are for APT repositories");
                }
                let valid_for = match (valid_for, no_valid_until) {
                    (Some(text), _) => Some(Some(
                        crate::util::time::parse_duration(&text)
                            .map_err(anyhow::Error::msg)?
                            .as_secs(),
                    )),
                    (None, true) => Some(None),
                    (None, false) => None,
                };
                let options = definitions::SuiteOptions {
                    valid_for,
                    not_automatic,
                    but_automatic_upgrades,
                };
                definitions::set_suite_options(&store, name, &suite, &options, "cli").await?;
                println!(
                    "{repo}/{suite}: Release options set; a running server re-signs within a second."
                );
                if retention.is_none() && !unlimited_retention && legacy_hashes.is_none() {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            if let Some(on) = legacy_hashes {
                if kind != "apt" {
                    bail!("--legacy-hashes is for APT repositories: repomd.xml names SHA-256 only");
                }
                definitions::set_legacy_hashes(&store, name, on, "cli").await?;
                println!(
                    "{repo}: legacy MD5 and SHA-1 hashes {}; a running server republishes within a second.",
                    if on { "listed" } else { "no longer listed" }
                );
                if retention.is_none() && !unlimited_retention {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            if retention.is_none() && !unlimited_retention {
                bail!(
                    "nothing to set: give --retention N, --unlimited-retention, --legacy-hashes BOOL, or --suite S with Release options"
                );
            }
            let format = Format::parse(kind).ok_or_else(|| {
                definitions::RepoError::Invalid(format!("unknown repository kind {kind:?}"))
            })?;
            definitions::set_retention(&store, format, name, retention, "cli").await?;
            println!(
                "{repo}: retention {}; a running server republishes within a second.",
                retention.map_or("unlimited".into(), |n| n.to_string())
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::List { data } => {
            let store = open_store(&DataDir::new(&data))?;
            for name in definitions::list_repos(&store, Format::Apt).await? {
                let repo = definitions::load_repo::<Apt>(&store, &name).await?;
                for suite in &repo.suites {
                    println!(
                        "apt/{name}\t{}\t{}\t{}",
                        suite.name,
                        suite.components.join(","),
                        suite.architectures.join(",")
                    );
                }
            }
            for name in definitions::list_repos(&store, Format::Rpm).await? {
                let repo = definitions::load_repo::<Rpm>(&store, &name).await?;
                println!(
                    "rpm/{name}\t{}\t{}\tsign={}",
                    repo.releases.join(","),
                    repo.architectures.join(","),
                    repo.sign_packages
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
