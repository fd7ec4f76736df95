//! `caprepo serve`'s HTTP surface: the repository trees apt fetches from, the
//! upload API build workers push to, the public key, a setup page, `/healthz`
//! and `/metrics`. Every repository path is resolved through the published
//! view, so a reader sees one whole publication or the next, never a mix.

mod auth;
mod files;
pub mod pages;
mod reply;
mod upload;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use ed25519_dalek::VerifyingKey;

use crate::config::{Config, DataDir};
use crate::deb::Limits;
use crate::manager::ManagerHandle;
use crate::metrics::Metrics;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub data: Arc<DataDir>,
    pub config: Arc<Config>,
    pub root_key: VerifyingKey,
    pub manager: ManagerHandle,
    pub metrics: Arc<Metrics>,
    pub limits: Arc<Limits>,
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
        .route("/{repo}", get(pages::repo_page))
        .route("/{repo}/", get(pages::repo_page))
        .route("/{repo}/{*path}", get(repository_file))
        .fallback(|| async { reply::not_found("no such page") })
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// `GET /<repo>/dists/...` and `/<repo>/pool/...`.
async fn repository_file(
    State(state): State<AppState>,
    Path((repo, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    state.metrics.http_requests.inc();
    let not_found = || {
        state.metrics.http_not_found.inc();
        reply::not_found("no such file in the published repository")
    };
    if crate::caps::scope::validate_name("repository", &repo).is_err()
        || path
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return not_found();
    }
    let entry = if let Some(rest) = path.strip_prefix("dists/") {
        let suite = rest.split('/').next().unwrap_or_default();
        state
            .manager
            .views
            .get(&repo, suite)
            .and_then(|view| view.lookup(&path))
    } else if path.starts_with("pool/") {
        state
            .manager
            .views
            .suites_of(&repo)
            .iter()
            .find_map(|view| view.lookup(&path))
    } else {
        None
    };
    match entry {
        Some(entry) => files::serve(&state.store, &state.metrics, &path, entry, &headers).await,
        None => not_found(),
    }
}

pub use pages::sources_snippet;

pub fn status_json(status: StatusCode, code: &str, reason: &str) -> Response {
    reply::error(status, code, reason)
}
