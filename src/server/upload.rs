//! `PUT /api/v1/upload/<file name>`: stream the body to a spool file while
//! hashing it (the package is never held in memory), then run the ingest
//! pipeline under the cap's scope. `?wait=true` answers only once the package
//! is in the signed index; `GET /api/v1/wait` does the same for earlier uploads.

use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::{AppState, auth, reply};
use crate::caps::{Right, Scope};
use crate::digest::Hasher;
use crate::ingest::{self, Ingested, Spooled};

const WAIT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Deserialize, Default)]
pub struct UploadQuery {
    /// Cell or component to upload into, when the cap covers more than one.
    target: Option<String>,
    #[serde(default)]
    wait: Option<String>,
}

#[derive(Serialize)]
struct UploadAnswer<'a> {
    #[serde(flatten)]
    ingested: &'a Ingested,
    published: bool,
}

/// Removes the spool file however the request ends.
struct SpoolGuard(PathBuf);

impl Drop for SpoolGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn valid_file_name(name: &str) -> bool {
    name.len() <= 255
        && name.ends_with(".deb")
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+~:-%".contains(&b))
}

pub async fn upload(
    State(state): State<AppState>,
    Path(file_name): Path<String>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let refused = |response: Response| {
        state.metrics.uploads_refused.inc();
        response
    };
    let grant =
        match auth::require(&headers, &state.root_key, &state.revocations, Right::Upload).await {
            Ok(g) => g,
            Err(denied) => return refused(denied.into_response()),
        };
    if !valid_file_name(&file_name) {
        return refused(reply::error(
            StatusCode::BAD_REQUEST,
            "bad-file-name",
            "the file name must end in .deb and use only letters, digits and . _ + ~ : - (no slashes)",
        ));
    }
    let target: Scope = match query.target.as_deref() {
        Some(text) => match text.parse() {
            Ok(scope) => scope,
            Err(e) => {
                return refused(reply::error(
                    StatusCode::BAD_REQUEST,
                    "bad-target",
                    &e.to_string(),
                ));
            }
        },
        None => grant.scope.clone(),
    };
    let max = state.config.server.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return refused(reply::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            &format!("uploads are limited to {max} bytes"),
        ));
    }

    let spool_path = state
        .data
        .spool_dir()
        .join(format!("upload-{}.part", crate::caps::token::new_id()));
    let guard = SpoolGuard(spool_path.clone());
    let spooled = match receive(body, &spool_path, max).await {
        Ok((digest, size)) => Spooled {
            path: spool_path,
            digest,
            size,
        },
        Err((status, code, reason)) => return refused(reply::error(status, code, &reason)),
    };
    state.metrics.upload_bytes.add(spooled.size);

    let actor = grant.log_id().to_string();
    let result = ingest::ingest(
        &state.store,
        &state.limits,
        &spooled,
        &target,
        &grant.scope,
        &actor,
    )
    .await;
    drop(guard);
    let ingested = match result {
        Ok(i) => i,
        Err(e) => {
            let status =
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            tracing::info!(cap = %actor, file = %file_name, status = status.as_u16(), reason = %e, "upload refused");
            if status.is_server_error() {
                return reply::error(status, e.code(), &e.to_string());
            }
            return refused(reply::error(status, e.code(), &e.to_string()));
        }
    };
    if ingested.status == "stored" {
        state.metrics.uploads_stored.inc();
    } else {
        state.metrics.uploads_already_present.inc();
    }
    tracing::info!(
        cap = %actor, package = %ingested.package.name, version = %ingested.package.version,
        cell = %ingested.cell, status = ingested.status, "upload accepted"
    );
    let addr = &ingested.addr;
    state.manager.mark_dirty(&addr.repo, &addr.suite);
    let wait = query
        .wait
        .as_deref()
        .is_some_and(|w| w == "true" || w == "1");
    let cell_ref = addr.ref_name().map(|r| r.to_string()).unwrap_or_default();
    let published = if wait {
        state
            .manager
            .wait_published(
                &addr.repo,
                &addr.suite,
                &cell_ref,
                ingested.cell_generation,
                WAIT_TIMEOUT,
            )
            .await
    } else {
        is_published(&state, &ingested, &cell_ref)
    };
    let status = if ingested.status == "stored" {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    reply::json(
        status,
        &UploadAnswer {
            ingested: &ingested,
            published,
        },
    )
}

fn is_published(state: &AppState, ingested: &Ingested, cell_ref: &str) -> bool {
    state
        .manager
        .views
        .get(&ingested.addr.repo, &ingested.addr.suite)
        .and_then(|v| v.current.inputs.get(cell_ref).copied())
        .is_some_and(|g| g >= ingested.cell_generation)
}

async fn receive(
    body: Body,
    spool: &std::path::Path,
    max: u64,
) -> Result<(crate::digest::Digest, u64), (StatusCode, &'static str, String)> {
    let internal = |e: std::io::Error| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "spool",
            format!("cannot spool the upload: {e}"),
        )
    };
    if let Some(dir) = spool.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(internal)?;
    }
    let mut file = tokio::io::BufWriter::with_capacity(
        1 << 20,
        tokio::fs::File::create(spool).await.map_err(internal)?,
    );
    let mut hasher = Hasher::new();
    let mut stream = body.into_data_stream();
    loop {
        let chunk = match stream.try_next().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "body",
                    format!("the upload was interrupted: {e}"),
                ));
            }
        };
        hasher.update(&chunk);
        if hasher.len() > max {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                format!("uploads are limited to {max} bytes"),
            ));
        }
        file.write_all(&chunk).await.map_err(internal)?;
    }
    file.flush().await.map_err(internal)?;
    if hasher.is_empty() {
        return Err((
            StatusCode::BAD_REQUEST,
            "empty",
            "the upload is empty".into(),
        ));
    }
    Ok(hasher.finish())
}

#[derive(Deserialize)]
pub struct WaitQuery {
    cell: String,
    generation: u64,
    #[serde(default)]
    timeout: Option<u64>,
}

/// `GET /api/v1/wait?cell=<scope>&generation=N`: block until that cell generation is published.
pub async fn wait(
    State(state): State<AppState>,
    Query(query): Query<WaitQuery>,
    headers: HeaderMap,
) -> Response {
    let grant =
        match auth::require(&headers, &state.root_key, &state.revocations, Right::Upload).await {
            Ok(g) => g,
            Err(denied) => return denied.into_response(),
        };
    let cell: Scope = match query.cell.parse() {
        Ok(s) => s,
        Err(e) => return reply::error(StatusCode::BAD_REQUEST, "bad-cell", &e.to_string()),
    };
    let (Some(repo), (Some(suite), Some(component), Some(arch))) = (cell.repo(), cell.apt_parts())
    else {
        return reply::error(
            StatusCode::BAD_REQUEST,
            "bad-cell",
            "name a whole cell: apt/<repo>/dists/<suite>/<component>/binary-<arch>",
        );
    };
    // Architecture: all packages land in binary-all, which any binary-<arch> cap of the component may upload to.
    let component_scope: Option<Scope> =
        format!("apt/{repo}/dists/{suite}/{component}").parse().ok();
    let allowed = grant.scope.covers(&cell)
        || (arch == "all"
            && component_scope.is_some_and(|c| c.covers(&grant.scope) || grant.scope.covers(&c)));
    if !allowed {
        return reply::error(
            StatusCode::FORBIDDEN,
            "outside-scope",
            &format!("{cell} is outside the cap's scope"),
        );
    }
    let Ok(cell_ref) = crate::model::cell_ref(repo, suite, component, arch) else {
        return reply::error(StatusCode::BAD_REQUEST, "bad-cell", "invalid cell");
    };
    let timeout = Duration::from_secs(query.timeout.unwrap_or(120).min(600));
    let published = state
        .manager
        .wait_published(repo, suite, cell_ref.as_str(), query.generation, timeout)
        .await;
    #[derive(Serialize)]
    struct Answer {
        published: bool,
    }
    let status = if published {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    reply::json(status, &Answer { published })
}
