//! `POST /api/v1/revoke`: the admin right over HTTP. An admin cap may revoke any
//! cap whose scope lies inside its own: one named by id (looked up in the
//! registry of issued caps) or one presented whole (needed for caps attenuated
//! offline, which the registry never saw).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

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

pub async fn revoke(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let admin =
        match auth::require(&headers, &state.root_key, &state.revocations, Right::Admin).await {
            Ok(g) => g,
            Err(denied) => return denied.into_response(),
        };
    let bad = |reason: &str| reply::error(StatusCode::BAD_REQUEST, "bad-request", reason);
    let request: RevokeRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return bad(&format!(
                "send JSON {{\"id\": \"<cap id>\"}} or {{\"cap\": \"<cap>\"}}: {e}"
            ));
        }
    };
    let (id, scope) = match (request.id, request.cap) {
        (Some(id), None) => {
            let issued = match registry::issued(&state.store).await {
                Ok(r) => r,
                Err(e) => {
                    return reply::error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        &e.to_string(),
                    );
                }
            };
            match issued.caps.get(&id) {
                Some(cap) => match cap.scope.parse::<Scope>() {
                    Ok(scope) => (id, scope),
                    Err(e) => return bad(&e.to_string()),
                },
                None => {
                    return reply::error(
                        StatusCode::NOT_FOUND,
                        "unknown-cap",
                        "no issued cap has this id; for an attenuated cap send the cap itself as \"cap\"",
                    );
                }
            }
        }
        (None, Some(cap)) => match Token::parse(&cap).and_then(|t| t.verify_chain(&state.root_key))
        {
            Ok(target) => (target.log_id().to_string(), target.scope),
            Err(e) => return bad(&format!("the cap to revoke does not verify: {e}")),
        },
        _ => return bad("give exactly one of \"id\" and \"cap\""),
    };
    if !admin.scope.covers(&scope) {
        return reply::error(
            StatusCode::FORBIDDEN,
            "outside-scope",
            &format!(
                "the cap's scope {scope} is outside the admin cap's scope {}",
                admin.scope
            ),
        );
    }
    match registry::revoke(&state.store, &id, admin.log_id()).await {
        Ok(_) => {
            tracing::info!(admin = admin.log_id(), revoked = %id, "cap revoked");
            #[derive(serde::Serialize)]
            struct Answer<'a> {
                revoked: &'a str,
            }
            reply::json(StatusCode::OK, &Answer { revoked: &id })
        }
        Err(e) => reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &e.to_string(),
        ),
    }
}
