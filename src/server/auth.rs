//! Bearer-cap authentication for API requests: parse the header, verify the
//! chain against the root key, check the time window, and hand back the grant.
//! Only the cap's id ever reaches a log line.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use ed25519_dalek::VerifyingKey;

use super::reply;
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
}

impl Denied {
    pub fn into_response(self) -> Response {
        match self {
            Denied::Unauthorized(reason) => {
                reply::error(StatusCode::UNAUTHORIZED, "unauthorized", &reason)
            }
            Denied::Forbidden(reason) => {
                reply::error(StatusCode::FORBIDDEN, "missing-right", &reason)
            }
        }
    }
}

/// Verify the request's cap and require one right.
pub fn require(headers: &HeaderMap, root: &VerifyingKey, right: Right) -> Result<Grant, Denied> {
    let token =
        bearer(headers).ok_or_else(|| Denied::Unauthorized(CapError::Missing.to_string()))?;
    let grant = Token::parse(token)
        .and_then(|t| t.verify(root, crate::time::now_unix()))
        .map_err(|e| Denied::Unauthorized(e.to_string()))?;
    if !grant.has(right) {
        return Err(Denied::Forbidden(format!(
            "cap {} does not grant the {right} right",
            grant.log_id()
        )));
    }
    Ok(grant)
}
