//! `POST /api/v1/release`: the release manager's commands (promote, rm, snapshot,
//! switch, rollback, history) against a running server, authorized by a cap
//! with the `publish` right whose scope covers the suite or release changed.
//! The CLI sends the same JSON when given `--server URL --cap CAP`.

use crate::repo::format::{RepoFormat, with_format};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;

use super::error::ApiError;
use super::{AppState, auth, reply};
use crate::caps::{Right, Scope};
use crate::releases::{ReleaseError, ReleaseRequest, SuiteOrRelease};

#[derive(Serialize)]
struct Answer {
    message: String,
}

/// The scope a change must be covered by: the suite (apt/NAME/dists/SUITE) or release (rpm/NAME/RELEASE).
fn unit_scope(unit: &SuiteOrRelease) -> Result<Scope, String> {
    let text = with_format!(unit.format, F => F::unit_scope(&unit.repo, &unit.name));
    text.parse()
        .map_err(|e: crate::caps::scope::ScopeError| e.to_string())
}

pub async fn release(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let grant = auth::require(
        &headers,
        &state.root_key,
        &state.revocations,
        Right::Publish,
    )
    .await?;
    let request: ReleaseRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            format!("not a release request: {e}"),
        )
    })?;
    let actor = grant.log_id().to_string();
    let store = &state.store;
    // Check the cap covers every suite or release the request changes, then do it.
    for changed in &request.changes()? {
        let scope = unit_scope(changed).map_err(ReleaseError::Invalid)?;
        if !grant.scope.covers(&scope) {
            return Err(ReleaseError::Forbidden(format!(
                "{scope} is outside the cap's scope {}",
                grant.scope
            ))
            .into());
        }
    }
    let result = request.apply(store, &actor).await;
    let message = result?;
    tracing::info!(cap = %actor, %message, "release change");
    state.manager.poke();
    Ok(reply::json(StatusCode::OK, &Answer { message }))
}
