//! `caprepo init`: make a data dir with its config, the agent's signing key
//! (passphrase-protected unless --no-passphrase) and the cap root key.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use super::passphrase;
use crate::agent::openpgp::{self, KeyAlgo};
use crate::caps::keys as cap_keys;
use crate::serve::config::{AgentConfig, CapsConfig, Config, DataDir, ServerConfig, SigningConfig};
use crate::store::StorageConfig;

#[derive(clap::Args)]
pub struct Args {
    /// Directory to create (or an empty one to fill).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Signing key algorithm. RSA-4096 reaches old rpm (EL7/EL8) and FIPS clients.
    #[arg(long, value_enum, default_value = "ed25519")]
    pub key_algo: KeyAlgo,
    /// Store the signing key unencrypted. DEMO AND TESTS ONLY: anyone who can read the file can sign.
    #[arg(long)]
    pub no_passphrase: bool,
    /// Read the new key's passphrase from this file (else CAPREPO_PASSPHRASE, else a prompt).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// User ID of the signing key.
    #[arg(
        long,
        default_value = "caprepo repository signing key <caprepo@localhost>"
    )]
    pub user_id: String,
    /// Use this existing OpenPGP secret key file instead of generating one (it keeps its passphrase, if any).
    #[arg(long, value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
    /// Use this existing cap root key file (64 hex characters) instead of generating one.
    #[arg(long, value_name = "FILE")]
    pub cap_root_key: Option<PathBuf>,
    /// Keep the store in this S3 bucket instead of DIR/store (credentials from AWS_* variables).
    #[arg(long, value_name = "BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3-compatible endpoint URL, e.g. http://127.0.0.1:9000.
    #[arg(long, value_name = "URL", requires = "s3_bucket")]
    pub s3_endpoint: Option<String>,
    /// Allow plain http to the S3 endpoint (loopback tests).
    #[arg(long, requires = "s3_bucket")]
    pub s3_allow_http: bool,
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let data = DataDir::new(&args.data);
    if data.config_path().exists() || data.signing_key().exists() || data.cap_root_key().exists() {
        bail!(
            "{} already holds a caprepo data dir; refusing to overwrite its keys (pick another --data)",
            args.data.display()
        );
    }
    std::fs::create_dir_all(data.keys_dir())
        .with_context(|| format!("creating {}", data.keys_dir().display()))?;
    std::fs::set_permissions(data.keys_dir(), std::fs::Permissions::from_mode(0o700))?;

    let cert = match &args.signing_key {
        Some(file) => import_signing_key(file)?,
        None => generate_signing_key(&args).await?,
    };
    write_new(&data.signing_key(), &openpgp::secret_armored(&cert)?, 0o600)?;
    write_new(
        &data.public_key_armored(),
        &openpgp::public_armored(&cert)?,
        0o644,
    )?;
    write_new(
        &data.public_key_binary(),
        &openpgp::public_binary(&cert)?,
        0o644,
    )?;

    let root = match &args.cap_root_key {
        Some(file) => cap_keys::load(file)?,
        None => cap_keys::generate(),
    };
    cap_keys::save(&root, &data.cap_root_key())?;

    let storage = match args.s3_bucket {
        Some(bucket) => StorageConfig::S3 {
            bucket,
            endpoint: args.s3_endpoint,
            region: "us-east-1".into(),
            allow_http: args.s3_allow_http,
        },
        None => StorageConfig::Local {
            path: PathBuf::from("store"),
        },
    };
    let config = Config {
        storage,
        server: ServerConfig::default(),
        agent: AgentConfig::default(),
        caps: CapsConfig {
            root_public_key: cap_keys::public_hex(&root),
        },
        mirrors: Vec::new(),
        signing: SigningConfig {
            fingerprint: openpgp::fingerprint(&cert),
            algorithm: openpgp::algorithm_name(&cert),
        },
        gc: None,
    };
    write_new(&data.config_path(), config.to_toml().as_bytes(), 0o644)?;
    crate::store::Store::open(&config.storage, data.root()).context("opening the new store")?;

    println!("Initialized caprepo data dir {}", args.data.display());
    println!(
        "  signing key  {} ({}){}",
        config.signing.fingerprint,
        config.signing.algorithm,
        if args.no_passphrase {
            ", UNENCRYPTED"
        } else {
            ""
        }
    );
    println!("  cap root key {}", data.cap_root_key().display());
    println!(
        "Next: caprepo repo add --data {} apt NAME --suites stable --components main --architectures amd64",
        args.data.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn generate_signing_key(args: &Args) -> Result<sequoia_openpgp::Cert> {
    let passphrase = if args.no_passphrase {
        eprintln!(
            "caprepo: WARNING: --no-passphrase stores the signing key UNENCRYPTED; use this for demos and tests only"
        );
        None
    } else {
        Some(passphrase::choose(args.passphrase_file.as_deref())?)
    };
    if args.key_algo == KeyAlgo::Rsa4096 {
        eprintln!("caprepo: generating an RSA-4096 key (this takes a few seconds)...");
    }
    let user_id = args.user_id.clone();
    let algo = args.key_algo;
    let secret = passphrase.as_ref().map(|p| p.as_str().into());
    Ok(tokio::task::spawn_blocking(move || openpgp::generate(&user_id, algo, secret)).await??)
}

fn import_signing_key(file: &Path) -> Result<sequoia_openpgp::Cert> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let cert = openpgp::parse_cert(&bytes)
        .with_context(|| format!("{} is not an OpenPGP key", file.display()))?;
    // Fails unless the file holds a usable signing-capable secret key.
    openpgp::needs_passphrase(&cert)
        .with_context(|| format!("{} holds no usable signing secret key", file.display()))?;
    openpgp::check_client_acceptable(&cert)
        .with_context(|| format!("{} cannot sign for apt and rpm clients", file.display()))?;
    Ok(cert)
}
