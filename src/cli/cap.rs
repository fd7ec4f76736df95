//! `caprepo cap`: issue caps from the data dir's root key, attenuate any cap
//! offline, revoke and list issued caps, show what a cap grants, and print the
//! setup a user needs for a read cap.

use crate::repo::format::{Apt, Rpm};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use super::{repo::open_store, split_list};
use crate::caps::links;
use crate::caps::registry::{self, IssuedCap};
use crate::caps::{Right, Scope, Token, keys as cap_keys};
use crate::repo::definitions;
use crate::serve::config::{Config, DataDir};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Issue a cap from the root key; prints the cap alone on stdout.
    Issue(IssueArgs),
    /// Derive a narrower cap offline, without the server or the root key; prints it on stdout.
    ///
    /// The result is the intersection with CAP: a scope inside CAP's, a subset of its rights,
    /// an expiry no later than its. Asking for more is refused.
    Attenuate {
        /// The cap to narrow (or set CAPREPO_CAP).
        #[arg(env = "CAPREPO_CAP", hide_env_values = true)]
        cap: String,
        /// A scope inside the cap's, e.g. apt/NAME/dists/stable/main/binary-amd64.
        #[arg(long)]
        scope: Option<String>,
        /// Comma-separated subset of the cap's rights.
        #[arg(long)]
        rights: Option<String>,
        /// Lifetime from now, e.g. 1h; may not end after the cap's own expiry.
        #[arg(long)]
        expires: Option<String>,
    },
    /// Revoke a cap: it and every cap derived from it stop working on the next request.
    ///
    /// Locally with --data DIR, or through a server with an admin cap covering the cap's scope.
    Revoke {
        /// The data dir (the operator's way).
        #[arg(
            long,
            value_name = "DIR",
            required_unless_present = "server",
            conflicts_with = "server"
        )]
        data: Option<PathBuf>,
        /// A server to ask instead, with --admin-cap.
        #[arg(long, value_name = "URL", requires = "admin_cap")]
        server: Option<String>,
        /// An admin cap whose scope covers the cap to revoke (or set CAPREPO_ADMIN_CAP).
        #[arg(long, env = "CAPREPO_ADMIN_CAP", hide_env_values = true)]
        admin_cap: Option<String>,
        /// The cap id (see `cap list` or `cap inspect`), or the cap itself.
        id: String,
    },
    /// List the caps issued from this data dir.
    List {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what a cap grants (no secret parts). With --data, also whether it verifies and is revoked.
    Inspect {
        /// The cap (or set CAPREPO_CAP).
        #[arg(env = "CAPREPO_CAP", hide_env_values = true)]
        cap: String,
        /// Verify against this data dir's root key and revocation list.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print what a user needs to read through a read cap: key URL, .sources stanza, .list line.
    Publish {
        /// The read cap (or set CAPREPO_CAP).
        #[arg(env = "CAPREPO_CAP", hide_env_values = true)]
        cap: String,
        /// The server's public base URL, e.g. https://apt.example.org.
        #[arg(long, value_name = "URL")]
        server: String,
    },
}

#[derive(clap::Args)]
pub struct IssueArgs {
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// What the cap covers: apt/NAME, apt/NAME/dists/SUITE, ..., apt/NAME/dists/SUITE/COMPONENT/binary-ARCH.
    #[arg(long)]
    scope: String,
    /// Comma-separated rights: upload (into cells), read (a repository or suite), publish, admin.
    #[arg(long, default_value = "upload")]
    rights: String,
    /// Lifetime, e.g. 1h, 30d, 90min.
    #[arg(long, default_value = "1h")]
    expires: String,
    /// Valid only from this long from now, e.g. 1h (default: at once).
    #[arg(long, value_name = "DURATION")]
    not_before: Option<String>,
    /// For read-only caps: print the full, attenuable cap instead of its short read link
    /// (apt cannot use the full form in a URL: its cache file names would pass 255 bytes).
    #[arg(long)]
    long: bool,
}

pub async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Issue(args) => issue(args).await,
        Command::Attenuate {
            cap,
            scope,
            rights,
            expires,
        } => attenuate(&cap, scope, rights, expires),
        Command::Revoke {
            data,
            server,
            admin_cap,
            id,
        } => match (data, server, admin_cap) {
            (Some(data), _, _) => revoke(data, &id).await,
            (None, Some(server), Some(admin)) => revoke_remote(&server, &admin, &id).await,
            _ => bail!("give --data DIR, or --server URL with --admin-cap CAP"),
        },
        Command::List { data, json } => list(data, json).await,
        Command::Inspect { cap, data, json } => inspect(&cap, data, json).await,
        Command::Publish { cap, server } => publish(&cap, &server).await,
    }
}

fn parse_rights(text: &str) -> Result<Vec<Right>> {
    let mut rights = split_list(text)
        .iter()
        .map(|r| r.parse::<Right>().map_err(anyhow::Error::msg))
        .collect::<Result<Vec<_>>>()?;
    rights.sort();
    rights.dedup();
    if rights.is_empty() {
        bail!("--rights needs at least one right");
    }
    Ok(rights)
}

fn seconds(text: &str) -> Result<i64> {
    Ok(crate::util::time::parse_duration(text)
        .map_err(anyhow::Error::msg)?
        .as_secs() as i64)
}

/// Refuse scopes that name things that do not exist, and read caps below suite level.
async fn check_scope(data: &DataDir, scope: &Scope, rights: &[Right]) -> Result<()> {
    let (suite, component, arch) = scope.apt_parts();
    if rights.contains(&Right::Read) && scope.kind() == "apt" && component.is_some() {
        bail!(
            "a read cap names a repository or a suite (apt/NAME or apt/NAME/dists/SUITE): apt reads whole suites"
        );
    }
    if let (Some(repo), Some(snapshot)) = (scope.repo(), scope.snapshot()) {
        let store = open_store(data)?;
        let found = match crate::formats::Format::parse(scope.kind()) {
            Some(format) => crate::releases::snapshot_get(&store, format, repo, snapshot).await?,
            None => None,
        };
        if found.is_none() {
            bail!(
                "{}/{repo} has no snapshot {snapshot}; make it with `caprepo snapshot create`",
                scope.kind()
            );
        }
        return Ok(());
    }
    if let (Some(repo), "rpm") = (scope.repo(), scope.kind()) {
        let definition = definitions::load_repo::<Rpm>(&open_store(data)?, repo).await?;
        let segments = scope.segments();
        if let Some(release) = segments.get(2)
            && !definition.releases.contains(release)
        {
            bail!("rpm/{repo} has no release {release}");
        }
        if let Some(arch) = segments.get(3)
            && !definition.architectures.contains(arch)
        {
            bail!(
                "rpm/{repo} has no architecture {arch} (it has {})",
                definition.architectures.join(", ")
            );
        }
        return Ok(());
    }
    let (Some(repo), "apt") = (scope.repo(), scope.kind()) else {
        return Ok(());
    };
    let store = open_store(data)?;
    let definition = definitions::load_repo::<Apt>(&store, repo).await?;
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
    Ok(())
}

async fn issue(args: IssueArgs) -> Result<ExitCode> {
    let data = DataDir::new(&args.data);
    let scope: Scope = args.scope.parse()?;
    let rights = parse_rights(&args.rights)?;
    let lifetime = seconds(&args.expires)?;
    check_scope(&data, &scope, &rights).await?;
    let root = cap_keys::load(&data.cap_root_key())
        .context("loading the cap root key (only the data dir's owner can issue caps)")?;
    let now = crate::util::time::now_unix();
    // A minute of slack absorbs clock skew between this machine and the servers.
    let nbf = match &args.not_before {
        Some(delay) => now + seconds(delay)?,
        None => now - 60,
    };
    let exp = nbf.max(now).saturating_add(lifetime);
    let token = crate::caps::token::issue(&root, rights.clone(), &scope, nbf, exp);
    let id = Token::parse(&token)?.summary().id;
    let (store, _access) = super::repo::open_store_for_writing(&data).await?;
    let record = IssuedCap {
        scope: scope.to_string(),
        rights,
        nbf,
        exp,
        issued_at: now,
        issued_by: "cli".into(),
    };
    let read_only = record.rights == [Right::Read];
    registry::record_issued(&store, &id, record)
        .await
        .context("recording the cap in the registry")?;
    if read_only && !args.long {
        println!(
            "{}",
            links::register(&store, &token)
                .await
                .context("storing the read link")?
        );
    } else {
        println!("{token}");
    }
    Ok(ExitCode::SUCCESS)
}

fn attenuate(
    cap: &str,
    scope: Option<String>,
    rights: Option<String>,
    expires: Option<String>,
) -> Result<ExitCode> {
    if links::is_link(cap) {
        bail!(
            "{cap} is a read link, a reference to a cap kept by the server; attenuate a full cap (cap issue --long)"
        );
    }
    let token = Token::parse(cap)?;
    let parent = token.summary();
    let parent_scope: Scope = parent.scope.parse()?;
    let scope: Scope = match scope {
        Some(text) => text.parse()?,
        None => parent_scope.clone(),
    };
    if !parent_scope.covers(&scope) {
        bail!("refusing to widen: {scope} is not inside the cap's scope {parent_scope}");
    }
    let rights = match rights {
        Some(text) => parse_rights(&text)?,
        None => parent.rights.clone(),
    };
    if let Some(extra) = rights.iter().find(|r| !parent.rights.contains(r)) {
        bail!(
            "refusing to widen: the cap does not hold the {extra} right (it has {})",
            registry::rights_text(&parent.rights)
        );
    }
    let exp = match expires {
        Some(text) => {
            let wanted = crate::util::time::now_unix().saturating_add(seconds(&text)?);
            if wanted > parent.exp {
                bail!(
                    "refusing to widen: the cap expires at {}, before {text} from now",
                    crate::util::time::rfc3339(parent.exp)
                );
            }
            wanted
        }
        None => parent.exp,
    };
    println!("{}", token.attenuate(rights, &scope, parent.nbf, exp));
    Ok(ExitCode::SUCCESS)
}

async fn revoke_remote(server: &str, admin: &str, target: &str) -> Result<ExitCode> {
    let body = if target.starts_with(crate::caps::token::PREFIX) {
        serde_json::json!({ "cap": target })
    } else {
        serde_json::json!({ "id": target })
    };
    let answer =
        super::post_to_server(server, "revoke", admin, body.to_string().into_bytes()).await?;
    println!("revoked {}", answer["revoked"].as_str().unwrap_or(target));
    Ok(ExitCode::SUCCESS)
}

async fn revoke(data: PathBuf, id: &str) -> Result<ExitCode> {
    // A whole cap names the id of its last block: revoking it spares its parents.
    let owned;
    let id = if id.starts_with(crate::caps::token::PREFIX) {
        owned = Token::parse(id)?
            .summary()
            .chain_ids
            .last()
            .cloned()
            .unwrap_or_default();
        owned.as_str()
    } else {
        id
    };
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "{id:?} is not a cap id (32 hex characters; see `caprepo cap list` or `caprepo cap inspect`)"
        );
    }
    let data = DataDir::new(data);
    let (store, _access) = super::repo::open_store_for_writing(&data).await?;
    let known = registry::issued(&store).await?.caps.contains_key(id);
    registry::revoke(&store, &id.to_ascii_lowercase(), "cli").await?;
    println!(
        "revoked {id}{}",
        if known {
            ""
        } else {
            " (not issued here: an attenuated cap's id, or a typo)"
        }
    );
    Ok(ExitCode::SUCCESS)
}

async fn list(data: PathBuf, json: bool) -> Result<ExitCode> {
    let store = open_store(&DataDir::new(data))?;
    let issued = registry::issued(&store).await?;
    let revoked = registry::revocations(&store).await?;
    let now = crate::util::time::now_unix();
    let rows: Vec<serde_json::Value> = issued
        .caps
        .iter()
        .map(|(id, cap)| {
            let state = if revoked.revoked.contains_key(id) {
                "revoked"
            } else if now >= cap.exp {
                "expired"
            } else {
                "valid"
            };
            serde_json::json!({
                "id": id,
                "scope": cap.scope,
                "rights": cap.rights,
                "not_before": crate::util::time::rfc3339(cap.nbf),
                "expires": crate::util::time::rfc3339(cap.exp),
                "issued": crate::util::time::rfc3339(cap.issued_at),
                "state": state,
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for row in &rows {
            println!(
                "{}  {:<8} {:<16} {}  expires {}",
                row["id"].as_str().unwrap_or_default(),
                row["state"].as_str().unwrap_or_default(),
                row["rights"]
                    .as_array()
                    .map(|r| r
                        .iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(","))
                    .unwrap_or_default(),
                row["scope"].as_str().unwrap_or_default(),
                row["expires"].as_str().unwrap_or_default(),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn inspect(cap: &str, data: Option<PathBuf>, json: bool) -> Result<ExitCode> {
    let resolved;
    let cap = if links::is_link(cap) {
        let Some(dir) = &data else {
            bail!("{cap} is a read link; give --data DIR to look up the cap it names");
        };
        let store = open_store(&DataDir::new(dir))?;
        resolved = links::resolve(&store, cap)
            .await?
            .with_context(|| format!("no read link {cap} in this store"))?;
        resolved.as_str()
    } else {
        cap
    };
    let token = Token::parse(cap)?;
    let summary = token.summary();
    let mut problem: Option<String> = None;
    let mut revoked: Option<bool> = None;
    if let Some(dir) = data {
        let data = DataDir::new(dir);
        let config = Config::load(&data)?;
        let root = cap_keys::parse_public(&config.caps.root_public_key)?;
        if let Err(e) = token.verify(&root, crate::util::time::now_unix()) {
            problem = Some(e.to_string());
        }
        let list = registry::revocations(&open_store(&data)?).await?;
        let hit = summary
            .chain_ids
            .iter()
            .find(|id| list.revoked.contains_key(*id));
        revoked = Some(hit.is_some());
        if let (Some(id), None) = (hit, &problem) {
            problem = Some(format!("capability {id} has been revoked"));
        }
    }
    let rights: Vec<String> = summary.rights.iter().map(|r| r.to_string()).collect();
    if json {
        let mut value = serde_json::json!({
            "id": summary.id,
            "chain": summary.chain_ids,
            "scope": summary.scope,
            "rights": rights,
            "not_before": crate::util::time::rfc3339(summary.nbf),
            "expires": crate::util::time::rfc3339(summary.exp),
        });
        if let Some(revoked) = revoked {
            value["revoked"] = serde_json::Value::Bool(revoked);
            value["valid"] = serde_json::Value::Bool(problem.is_none());
        }
        if let Some(problem) = &problem {
            value["problem"] = serde_json::Value::String(problem.clone());
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("id:         {}", summary.id);
        if summary.chain_ids.len() > 1 {
            println!("chain:      {}", summary.chain_ids.join(" > "));
        }
        println!("scope:      {}", summary.scope);
        println!("rights:     {}", rights.join(","));
        println!("not before: {}", crate::util::time::rfc3339(summary.nbf));
        println!("expires:    {}", crate::util::time::rfc3339(summary.exp));
        match (&revoked, &problem) {
            (None, _) => println!("valid:      not checked (give --data DIR to verify)"),
            (Some(_), None) => println!("valid:      yes"),
            (Some(_), Some(p)) => println!("valid:      no ({p})"),
        }
    }
    Ok(if problem.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn publish(cap: &str, server: &str) -> Result<ExitCode> {
    let base = server.trim_end_matches('/');
    let client = super::http_client(base)?;
    let (link, expires) = if links::is_link(cap) {
        (cap.to_string(), None)
    } else {
        let summary = Token::parse(cap)?.summary();
        if !summary.rights.contains(&Right::Read) {
            bail!("this cap has no read right; issue one with --rights read");
        }
        // Full caps are too long for apt's cache file names: register the short link.
        let body = super::post_to_server(base, "links", cap, Vec::new())
            .await
            .context("registering the read cap's short link (is --server the public URL?)")?;
        let link = body["link"]
            .as_str()
            .context("the server answered no link")?
            .to_string();
        (link, Some(summary.exp))
    };
    let response = client
        .get(format!("{base}/r/{link}/"))
        .header(reqwest::header::ACCEPT, "text/plain")
        .send()
        .await
        .with_context(|| format!("asking {base} (is it the server's public URL?)"))?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        bail!(
            "the server refused the read cap ({status}): {}",
            text.trim()
        );
    }
    print!("{text}");
    let until = expires
        .map(|e| format!(" It expires {}.", crate::util::time::rfc3339(e)))
        .unwrap_or_default();
    println!("# The URL above carries a read capability: treat it as a secret.{until}");
    Ok(ExitCode::SUCCESS)
}
