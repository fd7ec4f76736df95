//! `caprepo demo`: the embedded default in one command. Creates a demo data dir
//! (unencrypted demo key, a `demo` repository), imports the fixture packages,
//! prints what to paste into sources.list, and serves on loopback.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::init;
use crate::agent::openpgp::KeyAlgo;
use crate::caps::Scope;
use crate::formats::deb::Limits;
use crate::ingest::{self, Spooled};
use crate::repo::definitions::{self, NewAptRepo};
use crate::serve::config::{Config, DataDir};
use crate::store::Store;

#[derive(clap::Args)]
pub struct Args {
    /// Data dir to create or reuse.
    #[arg(long, value_name = "DIR", default_value = "./caprepo-data")]
    data: PathBuf,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Directory holding demo-signing-key.asc and demo-cap-root.key (generated fresh if absent).
    #[arg(long, value_name = "DIR", default_value = "keys")]
    keys: PathBuf,
    /// Directory of .deb files to import into the demo repository on first run.
    #[arg(long, value_name = "DIR", default_value = "fixtures/debs")]
    packages: PathBuf,
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let data = DataDir::new(&args.data);
    if !data.config_path().exists() {
        let demo_key = args.keys.join("demo-signing-key.asc");
        let demo_root = args.keys.join("demo-cap-root.key");
        init::run(init::Args {
            data: args.data.clone(),
            key_algo: KeyAlgo::Ed25519,
            no_passphrase: true,
            passphrase_file: None,
            user_id: "caprepo DEMO key, not for production <demo@localhost>".into(),
            s3_bucket: None,
            s3_endpoint: None,
            s3_allow_http: false,
            signing_key: demo_key.exists().then_some(demo_key),
            cap_root_key: demo_root.exists().then_some(demo_root),
        })
        .await?;
        let config = Config::load(&data)?;
        let store = Store::open(&config.storage, data.root())?;
        definitions::add_apt_repo(
            &store,
            NewAptRepo {
                name: "demo".into(),
                suites: vec!["stable".into()],
                components: vec!["main".into()],
                architectures: vec!["amd64".into(), "arm64".into()],
                origin: Some("caprepo demo".into()),
                label: Some("caprepo demo".into()),
                private: false,
                retention: None,
                legacy_hashes: false,
            },
            "demo",
        )
        .await?;
        import_dir(&store, &args.packages).await?;
    }
    let base = format!("http://{}", args.listen);
    println!("\nPaste this to use the demo repository (the key is a DEMO key):\n");
    print!(
        "{}",
        crate::serve::http::sources_snippet(
            &base,
            &format!("{base}/demo/"),
            "demo",
            &[("stable".to_string(), vec!["main".to_string()])]
        )
    );
    crate::serve::daemon::serve(crate::serve::daemon::ServeOptions {
        data,
        listen: Some(args.listen),
        agent_socket: None,
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

async fn import_dir(store: &Store, dir: &std::path::Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        eprintln!(
            "caprepo: no {} to import; the demo repository starts empty",
            dir.display()
        );
        return Ok(());
    };
    let target: Scope = "apt/demo/dists/stable/main".parse()?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    paths.sort();
    for path in paths {
        let (digest, size) =
            ingest::hash_file(&path).with_context(|| format!("reading {}", path.display()))?;
        let spooled = Spooled {
            path: path.clone(),
            digest,
            size,
            movable: false,
            bytes: None,
        };
        match ingest::ingest(
            store,
            &Limits::default(),
            &spooled,
            &target,
            &target,
            "demo",
        )
        .await
        {
            Ok(done) => eprintln!(
                "caprepo: imported {} {} ({})",
                done.package.name, done.package.version, done.package.architecture
            ),
            Err(e) => eprintln!("caprepo: skipped {}: {e}", path.display()),
        }
    }
    Ok(())
}
