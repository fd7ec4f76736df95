//! `POST /api/v1/revoke`: the admin right over HTTP. An admin cap may revoke any
//! cap whose scope lies inside its own: one named by id (looked up in the
//! registry of issued caps) or one presented whole (needed for caps attenuated
//! offline, which the registry never saw).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::error::ApiError;
use super::{AppState, auth, reply};
use crate::caps::registry;
use crate::caps::{Right, Scope, Token};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    cap: Option<String>,
}

pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let admin = auth::require(&headers, &state.root_key, &state.revocations, Right::Admin).await?;
    let bad = |reason: String| ApiError::new(StatusCode::BAD_REQUEST, "bad-request", reason);
    let unavailable = |e: crate::store::StoreError| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
    };
    let request: RevokeRequest = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "send JSON {{\"id\": \"<cap id>\"}} or {{\"cap\": \"<cap>\"}}: {e}"
        ))
    })?;
    let (id, scope) = match (request.id, request.cap) {
        (Some(id), None) => {
            let issued = registry::issued(&state.store).await.map_err(unavailable)?;
            let cap = issued.caps.get(&id).ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown-cap",
                    "no issued cap has this id; for an attenuated cap send the cap itself as \"cap\"",
                )
            })?;
            let scope = cap.scope.parse::<Scope>().map_err(|e| bad(e.to_string()))?;
            (id, scope)
        }
        (None, Some(cap)) => {
            let target = Token::parse(&cap)
                .and_then(|t| t.verify_chain(&state.root_key))
                .map_err(|e| bad(format!("the cap to revoke does not verify: {e}")))?;
            (target.log_id().to_string(), target.scope)
        }
        _ => return Err(bad("give exactly one of \"id\" and \"cap\"".into())),
    };
    if !admin.scope.covers(&scope) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "outside-scope",
            format!(
                "the cap's scope {scope} is outside the admin cap's scope {}",
                admin.scope
            ),
        ));
    }
    registry::revoke(&state.store, &id, admin.log_id())
        .await
        .map_err(unavailable)?;
    tracing::info!(admin = admin.log_id(), revoked = %id, "cap revoked");
    #[derive(serde::Serialize)]
    struct Answer<'a> {
        revoked: &'a str,
    }
    Ok(reply::json(StatusCode::OK, &Answer { revoked: &id }))
}
