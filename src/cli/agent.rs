//! `caprepo agent`: unlock the signing key (passphrase from a file, the
//! environment or a prompt) and answer sign requests on a Unix socket.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use tokio::io::AsyncReadExt;

use super::passphrase;
use crate::agent::{openpgp, server};
use crate::serve::config::DataDir;

#[derive(clap::Args)]
pub struct Args {
    /// The data dir whose keys/signing-key.asc to hold.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Socket path (default DIR/run/agent.sock); created mode 0600. Its directory must be
    /// ours and not group- or world-writable; it is created 0700 when missing.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Read the passphrase from this file (else CAPREPO_PASSPHRASE, else a prompt).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Exit when standard input closes (used by `serve` so its agent child dies with it).
    #[arg(long, hide = true)]
    exit_on_stdin_eof: bool,
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let data = DataDir::new(&args.data);
    let key_path = data.signing_key();
    let bytes = std::fs::read(&key_path).with_context(|| {
        format!(
            "reading the signing key {} (made by `caprepo init`)",
            key_path.display()
        )
    })?;
    let cert = openpgp::parse_cert(&bytes)?;
    let keypair = if openpgp::needs_passphrase(&cert)? {
        let secret = passphrase::obtain(args.passphrase_file.as_deref())?;
        openpgp::signing_keypair(&cert, Some(&secret.as_str().into()))?
    } else {
        openpgp::signing_keypair(&cert, None)?
    };
    drop(bytes);
    let socket = args.socket.unwrap_or_else(|| data.default_agent_socket());
    let agent = server::bind(&socket, &cert, keypair).await?;
    tracing::info!(socket = %socket.display(), fingerprint = %openpgp::fingerprint(&cert), "signing agent ready");
    let stdin_closed = async {
        if args.exit_on_stdin_eof {
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 64];
            while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = agent.serve() => {}
        _ = crate::serve::daemon::shutdown_signal() => {}
        _ = stdin_closed => {}
    }
    Ok(ExitCode::SUCCESS)
}
