//! `caprepo cap`: issue capability tokens from the data dir's root key, and
//! show what a token grants.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use super::{repo::open_store, split_list};
use crate::caps::{Right, Scope, Token, keys as cap_keys};
use crate::config::{Config, DataDir};
use crate::repos;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Issue a cap; prints the cap alone on stdout.
    Issue(IssueArgs),
    /// Show what a cap grants (no secret parts). Verifies it when --data is given.
    Inspect {
        /// The cap (or set CAPREPO_CAP).
        #[arg(env = "CAPREPO_CAP", hide_env_values = true)]
        cap: String,
        /// Verify against this data dir's root key.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
pub struct IssueArgs {
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// What the cap covers: apt/NAME, apt/NAME/dists/SUITE, ..., apt/NAME/dists/SUITE/COMPONENT/binary-ARCH.
    #[arg(long)]
    scope: String,
    /// Comma-separated rights: upload (read, publish, admin are reserved for later versions).
    #[arg(long, default_value = "upload")]
    rights: String,
    /// Lifetime, e.g. 1h, 30d, 90min.
    #[arg(long, default_value = "1h")]
    expires: String,
}

pub async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Issue(args) => issue(args).await,
        Command::Inspect { cap, data, json } => inspect(&cap, data, json),
    }
}

async fn issue(args: IssueArgs) -> Result<ExitCode> {
    let data = DataDir::new(&args.data);
    let scope: Scope = args.scope.parse()?;
    let rights = split_list(&args.rights)
        .iter()
        .map(|r| r.parse::<Right>().map_err(anyhow::Error::msg))
        .collect::<Result<Vec<_>>>()?;
    if rights.is_empty() {
        bail!("--rights needs at least one right");
    }
    let lifetime = crate::time::parse_duration(&args.expires).map_err(anyhow::Error::msg)?;
    if scope.kind() == "apt"
        && let Some(repo) = scope.repo()
    {
        let store = open_store(&data)?;
        let definition = repos::load_apt_repo(&store, repo).await?;
        let (suite, component, arch) = scope.apt_parts();
        if let Some(suite) = suite {
            let Some(def) = definition.suites.iter().find(|s| s.name == suite) else {
                bail!("apt/{repo} has no suite {suite}");
            };
            if let Some(component) = component
                && !def.components.iter().any(|c| c == component)
            {
                bail!("suite {suite} has no component {component}");
            }
            if let Some(arch) = arch
                && !def.architectures.iter().any(|a| a == arch)
            {
                bail!(
                    "suite {suite} has no architecture {arch} (it has {})",
                    def.architectures.join(", ")
                );
            }
        }
    }
    let root = cap_keys::load(&data.cap_root_key())
        .context("loading the cap root key (only the data dir's owner can issue caps)")?;
    let now = crate::time::now_unix();
    let expires = now.saturating_add(lifetime.as_secs() as i64);
    let token = crate::caps::token::issue(&root, rights, &scope, now - 60, expires);
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

fn inspect(cap: &str, data: Option<PathBuf>, json: bool) -> Result<ExitCode> {
    let token = Token::parse(cap)?;
    let verified = match data {
        Some(dir) => {
            let config = Config::load(&DataDir::new(dir))?;
            let root = cap_keys::parse_public(&config.caps.root_public_key)?;
            Some(token.verify(&root, crate::time::now_unix()))
        }
        None => None,
    };
    let summary = token.summary();
    if json {
        let mut value = serde_json::json!({
            "id": summary.id,
            "chain": summary.chain_ids,
            "scope": summary.scope,
            "rights": summary.rights.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            "not_before": crate::time::rfc3339(summary.nbf),
            "expires": crate::time::rfc3339(summary.exp),
        });
        if let Some(result) = &verified {
            value["valid"] = serde_json::Value::Bool(result.is_ok());
            if let Err(e) = result {
                value["problem"] = serde_json::Value::String(e.to_string());
            }
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("id:         {}", summary.id);
        println!("scope:      {}", summary.scope);
        println!(
            "rights:     {}",
            summary
                .rights
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        println!("not before: {}", crate::time::rfc3339(summary.nbf));
        println!("expires:    {}", crate::time::rfc3339(summary.exp));
        match &verified {
            Some(Ok(_)) => println!("valid:      yes"),
            Some(Err(e)) => println!("valid:      no ({e})"),
            None => println!("valid:      not checked (give --data DIR to verify)"),
        }
    }
    Ok(if matches!(verified, Some(Err(_))) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
