//! `caprepo repo`: define and list repositories. Definitions go into the store,
//! so a server running on the same data dir picks them up within a second.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};

use super::split_list;
use crate::config::{Config, DataDir};
use crate::repos::{self, NewAptRepo};
use crate::store::Store;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Add a repository, e.g. `repo add --data DIR apt NAME --suites stable,testing --components main --architectures amd64,arm64`.
    Add(AddArgs),
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
    /// Repository kind: apt.
    kind: String,
    /// Repository name: lowercase letters, digits, . _ + -.
    name: String,
    /// Comma-separated suites, e.g. stable,testing.
    #[arg(long, value_name = "LIST")]
    suites: String,
    /// Comma-separated components, e.g. main,contrib.
    #[arg(long, value_name = "LIST")]
    components: String,
    /// Comma-separated architectures, e.g. amd64,arm64 (Architecture: all packages go into every one).
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
}

pub fn open_store(data: &DataDir) -> Result<Store> {
    let config = Config::load(data)?;
    Ok(Store::open(&config.storage, data.root())?)
}

pub async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Add(args) => {
            if args.kind != "apt" {
                bail!(
                    "unknown repository kind {:?}: this version manages apt repositories",
                    args.kind
                );
            }
            let store = open_store(&DataDir::new(&args.data))?;
            let new = NewAptRepo {
                name: args.name.clone(),
                suites: split_list(&args.suites),
                components: split_list(&args.components),
                architectures: split_list(&args.architectures),
                origin: args.origin,
                label: args.label,
                private: args.private,
            };
            repos::add_apt_repo(&store, new, "cli").await?;
            println!(
                "Added apt/{}; a running server publishes its empty suites within a second.",
                args.name
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::List { data } => {
            let store = open_store(&DataDir::new(&data))?;
            for name in repos::list_apt_repos(&store).await? {
                let repo = repos::load_apt_repo(&store, &name).await?;
                for suite in &repo.suites {
                    println!(
                        "apt/{name}\t{}\t{}\t{}",
                        suite.name,
                        suite.components.join(","),
                        suite.architectures.join(",")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
