//! The `caprepo` command line: one binary for the operator (init, repo, serve,
//! agent, key), the release manager (cap) and build workers (upload). Library
//! errors get context here, and every failure exits non-zero with a message that
//! says what to do next.

mod agent;
mod cap;
mod demo;
mod import;
mod init;
mod key;
mod maintenance;
mod passphrase;
mod release;
mod repo;
mod upload;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "caprepo",
    version,
    about = "APT repository manager on content-addressed storage, with capability-scoped uploads",
    long_about = "caprepo keeps every package and index as a blob named by its sha256, publishes a suite \
by flipping one pointer, and lets each build worker upload into exactly one \
dists/<suite>/<component>/binary-<arch> cell with a capability token.\n\n\
Typical first run:\n  caprepo init --data DIR\n  caprepo repo add --data DIR apt NAME --suites stable --components main --architectures amd64\n  \
caprepo serve --data DIR --listen 127.0.0.1:8080\n  CAP=$(caprepo cap issue --data DIR --scope apt/NAME/dists/stable/main/binary-amd64 --rights upload --expires 1h)\n  \
caprepo upload --server http://127.0.0.1:8080 --cap \"$CAP\" --wait hello_2.10-3_amd64.deb"
)]
struct Cli {
    /// Log as JSON lines instead of text (logs go to stderr; filter with CAPREPO_LOG, e.g. CAPREPO_LOG=debug).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data dir: config, agent signing key, cap root key. Refuses to overwrite.
    Init(init::Args),
    /// Define repositories (stored in the store, so a running server picks them up).
    #[command(subcommand)]
    Repo(repo::Command),
    /// Serve the repositories over HTTP, accept uploads and publish signed indices.
    Serve(ServeArgs),
    /// Run the signing agent: holds the OpenPGP secret key and signs on a Unix socket.
    Agent(agent::Args),
    /// Issue and inspect capability tokens.
    #[command(subcommand)]
    Cap(cap::Command),
    /// Upload .deb, .rpm and Debian source files (.dsc, .changes, tarballs) to a server with an
    /// upload cap.
    Upload(upload::Args),
    /// The repository signing key.
    #[command(subcommand)]
    Key(key::Command),
    /// Remove packages from a suite or release: `rm --data DIR apt/NAME/SUITE PACKAGE[=VERSION]...`.
    Rm(release::RmArgs),
    /// Copy packages between suites or releases, published atomically: `promote --data DIR apt/NAME testing stable`.
    Promote(release::PromoteArgs),
    /// Freeze, list and switch to snapshots of a suite or RPM tree.
    #[command(subcommand)]
    Snapshot(release::SnapshotCommand),
    /// Put a suite back as an earlier publication had it: `rollback --data DIR apt/NAME/SUITE [--to GENERATION]`.
    Rollback(release::RollbackArgs),
    /// List a suite's publications with time, who and what changed.
    History(release::HistoryArgs),
    /// Every recorded change: uploads, removals, promotions, snapshots, rollbacks, caps issued and revoked.
    Audit(release::AuditArgs),
    /// Bulk-load packages and publish once: `import --data DIR apt/NAME/dists/SUITE/COMPONENT PATH...` or `rpm/NAME/RELEASE PATH...`.
    Import(import::Args),
    /// Free blobs nothing references any more (after a grace period).
    Gc(maintenance::GcArgs),
    /// Re-hash every reachable blob and check every ref, manifest and published signature.
    Verify(maintenance::VerifyArgs),
    /// One command for a local try-out: a demo data dir, repository and key, then serve.
    Demo(demo::Args),
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The data dir made by `caprepo init`.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Address to listen on (default: server.listen in caprepo.toml, 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Use an agent started separately (`caprepo agent`) instead of starting one.
    #[arg(long, value_name = "PATH")]
    agent_socket: Option<PathBuf>,
}

fn init_logging(json: bool, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAPREPO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let long_running = matches!(
        cli.command,
        Command::Serve(_) | Command::Agent(_) | Command::Demo(_)
    );
    init_logging(cli.log_json, if long_running { "info" } else { "warn" });
    // reqwest and object_store's S3 client speak TLS through rustls; pick its ring backend once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("caprepo: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Init(args) => init::run(args).await,
            Command::Repo(command) => repo::run(command).await,
            Command::Serve(args) => {
                crate::serve::daemon::serve(crate::serve::daemon::ServeOptions {
                    data: crate::serve::config::DataDir::new(args.data),
                    listen: args.listen,
                    agent_socket: args.agent_socket,
                })
                .await
                .map(|()| ExitCode::SUCCESS)
            }
            Command::Agent(args) => agent::run(args).await,
            Command::Cap(command) => cap::run(command).await,
            Command::Upload(args) => upload::run(args).await,
            Command::Key(command) => key::run(command).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Rm(args) => release::rm(args).await,
            Command::Gc(args) => maintenance::gc(args).await,
            Command::Import(args) => import::run(args).await,
            Command::Verify(args) => maintenance::verify(args).await,
            Command::Promote(args) => release::promote(args).await,
            Command::Snapshot(command) => release::snapshot(command).await,
            Command::Rollback(args) => release::rollback(args).await,
            Command::History(args) => release::history(args).await,
            Command::Audit(args) => release::audit(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("caprepo: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parse `a,b,c` lists given to --suites and friends.
fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// An HTTP client for talking to `server`. For plain `http://` servers no TLS roots are
/// loaded: reading the system's certificate store was a noticeable part of every
/// `caprepo upload` seen end to end.
fn http_client(server: &str) -> anyhow::Result<reqwest::Client> {
    use anyhow::Context;
    let mut builder =
        reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(10));
    if server.starts_with("http://") {
        builder = builder.tls_certs_only([]);
    }
    builder.build().context("building the HTTP client")
}

/// POST a JSON body to one of the server's `/api/v1/` endpoints with a cap, and return the JSON
/// answer; a refusal becomes an error carrying the server's reason.
async fn post_to_server(
    server: &str,
    endpoint: &str,
    cap: &str,
    body: Vec<u8>,
) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context;
    let base = server.trim_end_matches('/');
    let response = http_client(base)?
        .post(format!("{base}/api/v1/{endpoint}"))
        .bearer_auth(cap)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .with_context(|| format!("asking {base}"))?;
    let status = response.status();
    let answer: serde_json::Value =
        serde_json::from_slice(&response.bytes().await?).unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!(
            "refused ({status}): {}",
            answer["reason"].as_str().unwrap_or("no reason")
        );
    }
    Ok(answer)
}
