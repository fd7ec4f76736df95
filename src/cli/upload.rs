//! `caprepo upload`: what a build worker runs. Streams each file to the server
//! with its cap (a progress bar on a terminal), reports each result, and with
//! --wait returns only once every file is in the signed index.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use serde::Deserialize;

#[derive(clap::Args)]
pub struct Args {
    /// Server base URL, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    server: String,
    /// Upload cap (or set CAPREPO_CAP, which keeps it out of `ps`).
    #[arg(long, env = "CAPREPO_CAP", hide_env_values = true)]
    cap: String,
    /// Return only once every file is published in the signed index.
    #[arg(long)]
    wait: bool,
    /// Target cell or component when the cap covers more than one, e.g. apt/NAME/dists/stable/main.
    #[arg(long, value_name = "SCOPE")]
    to: Option<String>,
    /// Files to upload: .deb to an apt/... cap, .rpm to an rpm/... cap, and a source
    /// package's .dsc with its tarballs (or its .changes with everything it lists).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Deserialize)]
struct Accepted {
    digest: String,
    package: Package,
    cell: String,
    status: String,
    cell_generation: u64,
    published: bool,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    version: String,
    architecture: String,
}

#[derive(Deserialize)]
struct Refusal {
    error: String,
    reason: String,
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let base = args.server.trim_end_matches('/').to_string();
    let client = super::http_client(&base)?;
    let mut failures = 0;
    let mut to_wait: Vec<(String, u64, String)> = Vec::new();
    for path in &args.files {
        match upload_one(&client, &base, &args, path).await {
            Ok(accepted) => {
                println!(
                    "{}: {} {} {} ({}) in {} sha256:{}",
                    path.display(),
                    accepted.status,
                    accepted.package.name,
                    accepted.package.version,
                    accepted.package.architecture,
                    accepted.cell,
                    accepted.digest
                );
                if args.wait && !accepted.published && accepted.status != "staged" {
                    to_wait.push((
                        accepted.cell,
                        accepted.cell_generation,
                        path.display().to_string(),
                    ));
                }
            }
            Err(e) => {
                failures += 1;
                eprintln!("caprepo: {}: {e:#}", path.display());
            }
        }
    }
    for (cell, generation, file) in to_wait {
        let url = format!("{base}/api/v1/wait?cell={cell}&generation={generation}&timeout=300");
        let response = client
            .get(&url)
            .bearer_auth(&args.cap)
            .send()
            .await
            .with_context(|| format!("waiting for {file}"))?;
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        let published = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["published"].as_bool())
            .unwrap_or(false);
        if !published {
            failures += 1;
            eprintln!(
                "caprepo: {file}: not published yet ({status}); the server's manager may be failing, check its log"
            );
        }
    }
    if args.wait && failures == 0 {
        println!("all {} file(s) published", args.files.len());
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn upload_one(
    client: &reqwest::Client,
    base: &str,
    args: &Args,
    path: &PathBuf,
) -> Result<Accepted> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no usable file name", path.display()))?;
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata().await?.len();
    let progress = if std::io::stderr().is_terminal() && size > 1 << 20 {
        let bar = indicatif::ProgressBar::new(size);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        ) {
            bar.set_style(style);
        }
        bar.set_message(name.to_string());
        Some(bar)
    } else {
        None
    };
    let bar = progress.clone();
    let stream =
        tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).inspect(move |chunk| {
            if let (Some(bar), Ok(chunk)) = (&bar, chunk) {
                bar.inc(chunk.len() as u64);
            }
        });
    let mut url = format!("{base}/api/v1/upload/{name}");
    if let Some(target) = &args.to {
        url.push_str(&format!("?target={target}"));
    }
    let response = client
        .put(&url)
        .bearer_auth(&args.cap)
        .header(reqwest::header::CONTENT_LENGTH, size)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .with_context(|| format!("sending to {base} (is `caprepo serve` running there?)"))?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let status = response.status();
    let body = response
        .bytes()
        .await
        .context("reading the server's answer")?;
    if status.is_success() {
        return serde_json::from_slice(&body)
            .with_context(|| format!("unexpected answer from the server ({status})"));
    }
    match serde_json::from_slice::<Refusal>(&body) {
        Ok(refusal) => bail!(
            "refused ({} {}): {}",
            status.as_u16(),
            refusal.error,
            refusal.reason
        ),
        Err(_) => bail!(
            "refused ({status}): {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(300)
                .collect::<String>()
        ),
    }
}
