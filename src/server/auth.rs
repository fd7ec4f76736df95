//! Bearer-cap authentication for API requests: parse the header, verify the
//! chain against the root key, check the time window, and hand back the grant.
//! Only the cap's id ever reaches a log line.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use super::reply;
use crate::caps::{Grant, Right, Token};
use ed25519_dalek::VerifyingKey;

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Verify the request's cap and require one right.
pub fn require(headers: &HeaderMap, root: &VerifyingKey, right: Right) -> Result<Grant, Response> {
    let unauthorized =
        |reason: String| reply::error(StatusCode::UNAUTHORIZED, "unauthorized", &reason);
    let token =
        bearer(headers).ok_or_else(|| unauthorized(crate::caps::CapError::Missing.to_string()))?;
    let grant = Token::parse(token)
        .and_then(|t| t.verify(root, crate::time::now_unix()))
        .map_err(|e| unauthorized(e.to_string()))?;
    if !grant.has(right) {
        return Err(reply::error(
            StatusCode::FORBIDDEN,
            "missing-right",
            &format!("cap {} does not grant the {right} right", grant.log_id()),
        ));
    }
    Ok(grant)
}
