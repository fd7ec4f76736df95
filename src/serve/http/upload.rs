//! `PUT /api/v1/upload/<file name>`: stream the body to a spool file while
//! hashing it (the package is never held in memory), then run the ingest
//! pipeline under the cap's scope. `?wait=true` answers only once the package
//! is in the signed index; `GET /api/v1/wait` does the same for earlier uploads.

use crate::formats::Format;
use crate::ingest::format::{IngestContext, IngestFormat};
use crate::repo::format::{RepoFormat, with_format};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::error::ApiError;
use super::{AppState, auth, reply};
use crate::caps::{Right, Scope};
use crate::ingest::{self, Ingested, Spooled};
use crate::util::digest::Hasher;

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

fn valid_file_name(name: &str) -> bool {
    name.len() <= 255
        && (name.ends_with(".deb")
            || name.ends_with(".rpm")
            || crate::formats::deb::paths::is_source_file(name))
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
    match accept(&state, &file_name, &query, &headers, body).await {
        Ok(response) => response,
        Err(e) => {
            if e.is_refusal() {
                state.metrics.uploads_refused.inc();
            }
            e.into_response()
        }
    }
}

/// Checks the cap, the name, the target and the size, spools the body, stores the
/// package in its cell, marks its trees for publishing and (with `?wait=true`) waits
/// for them.
async fn accept(
    state: &AppState,
    file_name: &str,
    query: &UploadQuery,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let grant = auth::require(headers, &state.root_key, &state.revocations, Right::Upload).await?;
    if !valid_file_name(file_name) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-file-name",
            "the file name must end in .deb, .rpm, .dsc, .changes or a source tarball/diff, and use only letters, digits and . _ + ~ : - (no slashes)",
        ));
    }
    let target: Scope = match query.target.as_deref() {
        Some(text) => text.parse().map_err(|e: crate::caps::scope::ScopeError| {
            ApiError::new(StatusCode::BAD_REQUEST, "bad-target", e.to_string())
        })?,
        None => grant.scope.clone(),
    };
    let max = state.config.server.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("uploads are limited to {max} bytes"),
        ));
    }

    let spool_path = state
        .data
        .spool_dir()
        .join(format!("upload-{}.part", crate::util::ids::random_id()));
    // Locked while this request owns it, removed when it ends (see `crate::store::spool`).
    let guard = crate::store::spool::SpoolFile::create(spool_path.clone()).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "spool",
            format!("cannot spool the upload: {e}"),
        )
    })?;
    let (digest, size) = receive(body, &guard, max)
        .await
        .map_err(|(status, code, reason)| ApiError::new(status, code, reason))?;
    let spooled = Spooled {
        path: spool_path,
        digest,
        size,
        movable: true,
        bytes: None,
    };
    state.metrics.upload_bytes.add(spooled.size);

    let actor = grant.log_id().to_string();
    // From the first look at what is stored to the cell write: no gc sweeps meanwhile.
    let access = state.store.write_access().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage",
            format!("cannot take this server's writer lease: {e}"),
        )
    })?;
    let result = store_upload(state, file_name, &spooled, &target, &grant.scope, &actor).await;
    drop(access);
    drop(guard);
    let ingested = result.map_err(|e| {
        let e = ApiError::from(e);
        tracing::info!(cap = %actor, file = %file_name, status = e.status.as_u16(), reason = %e.reason, "upload refused");
        e
    })?;
    if ingested.status == ingest::UploadStatus::Stored {
        state.metrics.uploads_stored.inc();
    } else {
        state.metrics.uploads_already_present.inc();
    }
    tracing::info!(
        cap = %actor, package = %ingested.package.name, version = %ingested.package.version,
        cell = %ingested.cell, status = %ingested.status, "upload accepted"
    );
    let target = &ingested.target;
    for tree in &target.trees {
        state.manager.mark_dirty(&target.repo, tree);
    }
    let wait = query
        .wait
        .as_deref()
        .is_some_and(|w| w == "true" || w == "1");
    let manager = &state.manager;
    let published = if target.trees.is_empty() {
        false // staged source files are published with the .dsc that names them
    } else if wait {
        manager
            .wait_published(
                &target.repo,
                &target.trees,
                &target.cell_ref,
                ingested.cell_generation,
                WAIT_TIMEOUT,
            )
            .await
    } else {
        manager.is_published(
            &target.repo,
            &target.trees,
            &target.cell_ref,
            ingested.cell_generation,
        )
    };
    let status = if ingested.status == ingest::UploadStatus::Stored {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(reply::json(
        status,
        &UploadAnswer {
            ingested: &ingested,
            published,
        },
    ))
}

/// Stores a spooled upload by what it is: an rpm, a .dsc, a .changes, a source file
/// staged for its .dsc, or a .deb.
async fn store_upload(
    state: &AppState,
    file_name: &str,
    spooled: &Spooled,
    target: &Scope,
    granted: &Scope,
    actor: &str,
) -> Result<Ingested, ingest::IngestError> {
    // An rpm, or anything for an RPM scope, is RPM's; everything else is APT's to take
    // or refuse (a .deb, a .dsc, a .changes, the files of a source package).
    let file_format = Format::of_file(file_name);
    let target_format = Format::parse(target.kind());
    let format = if file_format == Some(Format::Rpm) || target_format == Some(Format::Rpm) {
        if file_format != target_format {
            return Err(ingest::IngestError::BadTarget(format!(
                ".rpm files go to rpm/... scopes and .deb files to apt/... scopes (got {file_name} for {target})"
            )));
        }
        Format::Rpm
    } else {
        Format::Apt
    };
    let context = IngestContext {
        store: &state.store,
        signer: &state.agent,
        limits: &state.limits,
    };
    with_format!(format, F => {
        F::ingest_upload(&context, file_name, spooled, target, granted, actor).await
    })
}

async fn receive(
    body: Body,
    spool: &crate::store::spool::SpoolFile,
    max: u64,
) -> Result<(crate::util::digest::Digest, u64), (StatusCode, &'static str, String)> {
    let internal = |e: std::io::Error| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "spool",
            format!("cannot spool the upload: {e}"),
        )
    };
    let mut file = tokio::io::BufWriter::with_capacity(
        1 << 20,
        tokio::fs::File::from_std(spool.handle().map_err(internal)?),
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
) -> Result<Response, ApiError> {
    let grant = auth::require(&headers, &state.root_key, &state.revocations, Right::Upload).await?;
    // A component's source cell is named apt/<repo>/dists/<suite>/<component>/source.
    if let Some(component) = query.cell.strip_suffix("/source") {
        return wait_for_source(&state, &grant, component, query.generation, query.timeout).await;
    }
    let cell: Scope = query.cell.parse().map_err(bad_cell)?;
    let (format, repo, cell_ref, shared) = cell_ref_of(&cell).ok_or_else(|| {
        bad_cell(
            "name a whole cell: apt/<repo>/dists/<suite>/<component>/binary-<arch> or rpm/<repo>/<release>/<arch>",
        )
    })?;
    // Shared cells (APT `all`, RPM `noarch`/`src`) may be reached by any arch cap one level up.
    let parent: Option<Scope> = cell.segments()[..cell.segments().len() - 1]
        .join("/")
        .parse()
        .ok();
    let allowed = grant.scope.covers(&cell)
        || (shared && parent.is_some_and(|p| p.covers(&grant.scope) || grant.scope.covers(&p)));
    if !allowed {
        return Err(outside_scope(&cell));
    }
    let timeout = Duration::from_secs(query.timeout.unwrap_or(120).min(600));
    let trees = trees_of_cell(&state, format, &repo, &cell_ref).await?;
    let published = state
        .manager
        .wait_published(&repo, &trees, &cell_ref, query.generation, timeout)
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
    Ok(reply::json(status, &Answer { published }))
}

fn bad_cell(reason: impl ToString) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad-cell", reason.to_string())
}

fn outside_scope(scope: &Scope) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "outside-scope",
        format!("{scope} is outside the cap's scope"),
    )
}

/// The published trees that list a cell: its APT suite, or the RPM trees of its release.
async fn trees_of_cell(
    state: &AppState,
    format: Format,
    repo: &str,
    cell_ref: &str,
) -> Result<Vec<String>, ApiError> {
    // The parts of the ref after `cells/<format>/<repo>/`.
    let parts: Vec<&str> = cell_ref.split('/').skip(3).collect();
    with_format!(format, F => {
        if let Some(trees) = F::trees_of_cell_name(&parts) {
            return Ok(trees);
        }
        match crate::repo::definitions::load_repo::<F>(&state.store, repo).await {
            Ok(definition) => Ok(F::trees_of_cell(&definition, &parts)),
            Err(e) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no-such-cell",
                e.to_string(),
            )),
        }
    })
}

/// (format, repository, cell ref name, whether the cell is shared by every arch) for a
/// whole-cell scope.
fn cell_ref_of(cell: &Scope) -> Option<(Format, String, String, bool)> {
    let format = Format::parse(cell.kind())?;
    let repo = cell.repo()?.to_string();
    let (name, shared) = with_format!(format, F => F::cell_of_scope(cell))?;
    Some((format, repo, name.to_string(), shared))
}

async fn wait_for_source(
    state: &AppState,
    grant: &crate::caps::Grant,
    component: &str,
    generation: u64,
    timeout: Option<u64>,
) -> Result<Response, ApiError> {
    let scope: Scope = component.parse().map_err(bad_cell)?;
    let (Some(repo), (Some(suite), Some(component), None)) = (scope.repo(), scope.apt_parts())
    else {
        return Err(bad_cell("name apt/<repo>/dists/<suite>/<component>/source"));
    };
    if !(scope.covers(&grant.scope) || grant.scope.covers(&scope)) {
        return Err(outside_scope(&scope));
    }
    let cell_ref = crate::repo::model::cell_ref(repo, suite, component, "source")
        .map_err(|_| bad_cell("invalid cell"))?;
    let timeout = Duration::from_secs(timeout.unwrap_or(120).min(600));
    let trees = [suite.to_string()];
    let published = state
        .manager
        .wait_published(repo, &trees, cell_ref.as_str(), generation, timeout)
        .await;
    #[derive(Serialize)]
    struct Answer {
        published: bool,
    }
    Ok(reply::json(
        if published {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        },
        &Answer { published },
    ))
}
