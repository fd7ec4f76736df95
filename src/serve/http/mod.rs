//! `caprepo serve`'s HTTP surface: the repository trees apt fetches from (public
//! at `/<repo>/`, or through a read cap at `/r/<cap>/`), the upload API build
//! workers push to, the public key, setup pages, `/healthz` and `/metrics`.
//! Every repository path is resolved through the published view, so a reader
//! sees one whole publication or the next, never a mix.

mod access_log;
mod admin;
mod auth;
pub mod connections;
mod error;
mod file_cache;
mod files;
pub mod pages;
pub mod pinning;
mod readcap;
pub mod release_api;
mod reply;
mod snapshots;
mod upload;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use ed25519_dalek::VerifyingKey;

use crate::caps::registry::RevocationCheck;
use crate::formats::deb::Limits;
use crate::repo::model::FileEntry;
use crate::serve::config::{Config, DataDir};
use crate::serve::manager::ManagerHandle;
use crate::serve::metrics::Metrics;
use crate::serve::views::Views;
use crate::store::Store;

pub use pages::sources_snippet;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub data: Arc<DataDir>,
    pub config: Arc<Config>,
    pub root_key: VerifyingKey,
    /// The signing agent: rpm uploads are signed on the way in.
    pub agent: crate::agent::AgentClient,
    pub revocations: Arc<RevocationCheck>,
    pub manager: ManagerHandle,
    pub metrics: Arc<Metrics>,
    pub limits: Arc<Limits>,
    pub snapshots: Arc<snapshots::SnapshotCache>,
    /// Small index files held in memory, by sha256.
    pub file_cache: Arc<file_cache::FileCache>,
    /// The public signing key, fetched from the agent once at start.
    pub public_key_armored: Arc<[u8]>,
    pub public_key_binary: Arc<[u8]>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::index))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/key.asc", get(pages::key_armored))
        .route("/key.gpg", get(pages::key_binary))
        .route(
            "/api/v1/upload/{file}",
            put(upload::upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v1/wait", get(upload::wait))
        .route("/api/v1/links", fenced_post(&state, readcap::register))
        .route("/api/v1/revoke", fenced_post(&state, admin::revoke))
        .route("/api/v1/release", fenced_post(&state, release_api::release))
        .route("/r/{cap}", get(readcap::page))
        .route("/r/{cap}/", get(readcap::page))
        .route("/r/{cap}/{*path}", get(readcap::file))
        .route("/{repo}", get(pages::repo_page))
        .route("/{repo}/", get(pages::repo_page))
        .route("/{repo}/{*path}", get(repository_file))
        .fallback(|| async { reply::not_found("no such page") })
        .layer(axum::middleware::from_fn(access_log::log))
        .with_state(state)
}

/// A POST route whose handler writes the store: it runs inside a write access, so a
/// gc never sweeps under it (see `crate::store::fence`). Uploads take theirs around
/// the store work only, since `?wait=true` then waits for the manager.
fn fenced_post<H, T>(state: &AppState, handler: H) -> axum::routing::MethodRouter<AppState>
where
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    axum::routing::post(handler).layer(axum::middleware::from_fn_with_state(
        state.clone(),
        write_access,
    ))
}

async fn write_access(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // The body first: a client that sends it slowly must not hold the lease meanwhile,
    // or it could keep every gc waiting (and every writer paused) for the body timeout.
    // Read as the handlers' own `Bytes` extractor would (same limit, same statuses).
    let (parts, body) = request.into_parts();
    let plain = axum::extract::Request::from_parts(parts.clone(), body);
    let body = match <axum::body::Bytes as axum::extract::FromRequest<()>>::from_request(plain, &())
        .await
    {
        Ok(bytes) => bytes,
        Err(rejection) => {
            return reply::error(rejection.status(), "body", &rejection.body_text());
        }
    };
    let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(body));
    let access = match state.store.write_access().await {
        Ok(access) => access,
        Err(e) => {
            return reply::error(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "storage",
                &format!("cannot take this server's writer lease: {e}"),
            );
        }
    };
    let response = next.run(request).await;
    drop(access);
    response
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(state): State<AppState>) -> Response {
    state
        .metrics
        .gc_writer_pauses
        .set(state.store.gc_pauses() as u64);
    if let Ok(mut counters) = state.metrics.change_log.lock() {
        *counters = state.store.change_log_counters();
    }
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

fn safe_path(path: &str) -> bool {
    !path
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
}

/// Resolve a path of a repository's tree. `only` limits it to what a read cap opens:
/// an APT suite, or an RPM release (`12`) or tree (`12/x86_64`).
pub(crate) fn resolve(
    views: &Views,
    repo: &str,
    only: Option<&str>,
    path: &str,
) -> Option<FileEntry> {
    if crate::caps::scope::validate_name("repository", repo).is_err() || !safe_path(path) {
        return None;
    }
    let allowed = |tree: &str| {
        only.is_none_or(|o| tree == o || tree.strip_prefix(o).is_some_and(|r| r.starts_with('/')))
    };
    if path.starts_with("pool/") {
        return views
            .suites_of(repo)
            .iter()
            .filter(|view| allowed(&view.current.suite))
            .find_map(|view| view.lookup(path));
    }
    let (tree, view) = view_of(views, repo, path)?;
    if !allowed(&tree) {
        return None;
    }
    view.lookup(path)
}

/// The suite (`dists/<suite>/...`) or RPM tree (`<release>/<arch>/...`) a path lies in,
/// and its view.
fn view_of(
    views: &Views,
    repo: &str,
    path: &str,
) -> Option<(String, std::sync::Arc<crate::serve::views::SuiteView>)> {
    let tree = match path.strip_prefix("dists/") {
        Some(rest) => rest.split('/').next().unwrap_or_default().to_string(),
        None => {
            let mut parts = path.splitn(3, '/');
            format!("{}/{}", parts.next()?, parts.next()?)
        }
    };
    let view = views.get(repo, &tree)?;
    Some((tree, view))
}

/// [`resolve`] for a requester whose connection and client remember what they were
/// served: a signature is the one published with the file they got (see [`pinning`]).
pub(crate) fn resolve_on(
    requester: Option<&pinning::Requester>,
    views: &Views,
    repo: &str,
    only: Option<&str>,
    path: &str,
) -> Option<FileEntry> {
    let resolved = resolve(views, repo, only, path);
    pinning::pin(requester, repo, path, resolved, |known, digest, wanted| {
        view_of(views, repo, path)?
            .1
            .counterpart(known, digest, wanted)
    })
}

/// `GET /<repo>/dists/...` and `/<repo>/pool/...` of public repositories.
async fn repository_file(
    State(state): State<AppState>,
    Path((repo, path)): Path<(String, String)>,
    requester: Option<axum::Extension<pinning::Requester>>,
    headers: HeaderMap,
) -> Response {
    state.metrics.http_requests.inc();
    let views = &state.manager.views;
    let entry = if !views.is_public(&repo) {
        None
    } else if let Some(rest) = path.strip_prefix("snapshots/") {
        let (snapshot, inner) = rest.split_once('/').unwrap_or((rest, ""));
        match state.snapshots.get(&state.store, &repo, snapshot).await {
            Some(snapshot) => snapshots::lookup(&snapshot, inner),
            None => None,
        }
    } else {
        resolve_on(requester.as_deref(), views, &repo, None, &path)
    };
    files::serve_or_404(
        &state,
        &path,
        entry,
        &headers,
        "no such file in the published repository",
    )
    .await
}
