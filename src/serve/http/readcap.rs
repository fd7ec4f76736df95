//! Read capabilities in URLs: `/r/<cap>/` serves the tree of the repository the
//! cap names, limited to one suite when the scope names one, so apt needs
//! nothing but the URL. This is how private repositories are read. The cap is
//! checked (signatures, time, revocation) on every request.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::auth::Denied;
use super::error::ApiError;
use super::{AppState, auth, files, pages, reply};
use crate::caps::{Grant, Right, links};

/// The repository and (optionally) suite a read cap opens.
fn read_target(grant: &Grant) -> Result<(String, Option<String>), Denied> {
    let scope = &grant.scope;
    let segments = scope.segments();
    match (scope.kind(), scope.repo(), scope.apt_parts()) {
        (_, Some(repo), _) if scope.snapshot().is_some() => Ok((
            repo.to_string(),
            scope.snapshot().map(|s| format!("snapshots/{s}")),
        )),
        ("apt", Some(repo), (suite, None, _)) if segments.len() != 3 => {
            Ok((repo.to_string(), suite.map(str::to_string)))
        }
        ("rpm", Some(repo), _) => Ok((
            repo.to_string(),
            (segments.len() > 2).then(|| segments[2..].join("/")),
        )),
        _ => Err(Denied::Forbidden(format!(
            "a read cap names a repository or a suite (apt/NAME, apt/NAME/dists/SUITE, rpm/NAME[/RELEASE[/ARCH]]), not {scope}"
        ))),
    }
}

/// Accept a full cap or a read link (`cr1-...`), which names a full cap kept in the store.
async fn authorize(state: &AppState, cap: &str) -> Result<(String, Option<String>), Denied> {
    let token = if links::is_link(cap) {
        match links::resolve(&state.store, cap).await {
            Ok(Some(token)) => token,
            Ok(None) => {
                return Err(Denied::Unauthorized("unknown read link".into()));
            }
            Err(e) => {
                // The store's error names the object, `links/<hex>`: the link itself.
                let kind = match e {
                    crate::store::StoreError::Io(..) => "i/o",
                    _ => "store",
                };
                tracing::error!(link = %links::redact(cap), kind, "cannot read a read link");
                return Err(Denied::Unavailable);
            }
        }
    } else {
        cap.to_string()
    };
    let grant = auth::verify(&token, &state.root_key, &state.revocations, Right::Read).await?;
    read_target(&grant)
}

/// `POST /api/v1/links` with a read cap as bearer: keep it in the store and answer its short link.
pub async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let grant = auth::require(&headers, &state.root_key, &state.revocations, Right::Read).await?;
    read_target(&grant)?;
    let token = auth::bearer(&headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "no capability given",
        )
    })?;
    let link = links::register(&state.store, token).await.map_err(|e| {
        tracing::error!(error = %e, "cannot store a read link");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the link could not be stored; try again",
        )
    })?;
    #[derive(serde::Serialize)]
    struct Answer {
        link: String,
        path: String,
    }
    let path = format!("/r/{link}/");
    Ok(reply::json(StatusCode::OK, &Answer { link, path }))
}

/// `GET /r/<cap>/...`
pub async fn file(
    State(state): State<AppState>,
    Path((cap, path)): Path<(String, String)>,
    requester: Option<axum::Extension<super::pinning::Requester>>,
    headers: HeaderMap,
) -> Response {
    state.metrics.http_requests.inc();
    match path.as_str() {
        "key.gpg" => return pages::key_binary(State(state)).await,
        "key.asc" => return pages::key_armored(State(state)).await,
        _ => {}
    }
    let (repo, suite) = match authorize(&state, &cap).await {
        Ok(target) => target,
        Err(denied) => return denied.into_response(),
    };
    let entry = match suite.as_deref().and_then(|s| s.strip_prefix("snapshots/")) {
        // A cap pinned to a snapshot serves that frozen tree, whatever the suite does since.
        Some(snapshot) => match state.snapshots.get(&state.store, &repo, snapshot).await {
            Some(snapshot) => super::snapshots::lookup(&snapshot, &path),
            None => None,
        },
        None => super::resolve_on(
            requester.as_deref(),
            &state.manager.views,
            &repo,
            suite.as_deref(),
            &path,
        ),
    };
    files::serve_or_404(
        &state,
        &path,
        entry,
        &headers,
        "no such file in what this read cap opens",
    )
    .await
}

/// `GET /r/<cap>/`: the setup text (or page, for a browser) for this read cap.
pub async fn page(
    State(state): State<AppState>,
    Path(cap): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (repo, suite) = match authorize(&state, &cap).await {
        Ok(target) => target,
        Err(denied) => return denied.into_response(),
    };
    let base = pages::base_url_of(&headers);
    let uri = format!("{base}/r/{cap}/");
    let Some(snippet) =
        pages::setup_snippet(&state.manager.views, &base, &uri, &repo, suite.as_deref())
    else {
        return reply::not_found("nothing is published yet in what this read cap opens");
    };
    pages::setup_page(&format!("{repo} (read capability)"), &snippet, &headers)
}
