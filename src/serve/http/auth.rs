//! Bearer-cap authentication for API requests: parse the header, verify the
//! chain against the root key, check the time window, and hand back the grant.
//! Only the cap's id ever reaches a log line.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use ed25519_dalek::VerifyingKey;

use crate::caps::registry::RevocationCheck;
use crate::caps::{CapError, Grant, Right, Token};

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Why a request's cap was not good enough.
pub enum Denied {
    /// Missing, malformed, forged, expired: 401.
    Unauthorized(String),
    /// A valid cap without the needed right: 403.
    Forbidden(String),
    /// The revocation list could not be read: 503, try again.
    Unavailable,
}

impl Denied {
    pub fn into_response(self) -> Response {
        axum::response::IntoResponse::into_response(super::error::ApiError::from(self))
    }
}

impl From<Denied> for super::error::ApiError {
    fn from(denied: Denied) -> Self {
        use super::error::ApiError;
        match denied {
            Denied::Unauthorized(reason) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", reason)
            }
            Denied::Forbidden(reason) => {
                ApiError::new(StatusCode::FORBIDDEN, "missing-right", reason)
            }
            Denied::Unavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the revocation list cannot be read right now; try again",
            ),
        }
    }
}

/// Verify the request's bearer cap (signatures, time, revocation) and require one right.
pub async fn require(
    headers: &HeaderMap,
    root: &VerifyingKey,
    revocations: &RevocationCheck,
    right: Right,
) -> Result<Grant, Denied> {
    let token =
        bearer(headers).ok_or_else(|| Denied::Unauthorized(CapError::Missing.to_string()))?;
    verify(token, root, revocations, right).await
}

/// Verify a cap given in full (a bearer token, or the `<cap>` of a `/r/<cap>/` URL).
pub async fn verify(
    token: &str,
    root: &VerifyingKey,
    revocations: &RevocationCheck,
    right: Right,
) -> Result<Grant, Denied> {
    let grant = Token::parse(token)
        .and_then(|t| t.verify(root, crate::util::time::now_unix()))
        .map_err(|e| Denied::Unauthorized(e.to_string()))?;
    match revocations.revoked_id(&grant).await {
        Ok(None) => {}
        Ok(Some(id)) => return Err(Denied::Unauthorized(CapError::Revoked(id).to_string())),
        Err(e) => {
            // Fail closed: a revocation we cannot read is a revocation we cannot honour.
            tracing::error!(error = %e, "cannot read the revocation list");
            return Err(Denied::Unavailable);
        }
    }
    if !grant.has(right) {
        return Err(Denied::Forbidden(format!(
            "cap {} does not grant the {right} right",
            grant.log_id()
        )));
    }
    Ok(grant)
}
