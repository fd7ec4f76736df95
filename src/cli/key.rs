//! `caprepo key export`: the public signing key for `Signed-By` (binary, as apt
//! keyrings in /etc/apt/keyrings/*.gpg) or armored (`--armor`, for .asc and rpm).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::serve::config::DataDir;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Print the public key on stdout.
    Export {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// ASCII-armored instead of binary.
        #[arg(long)]
        armor: bool,
    },
}

pub async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Export { data, armor } => {
            let data = DataDir::new(data);
            let path = if armor {
                data.public_key_armored()
            } else {
                data.public_key_binary()
            };
            let bytes = std::fs::read(&path)
                .with_context(|| format!("reading {} (made by `caprepo init`)", path.display()))?;
            std::io::stdout().write_all(&bytes)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
