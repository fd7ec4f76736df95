//! The one error type HTTP handlers return: a status, a short machine-readable code and
//! a reason, answered as JSON (see `reply::error`). Domain errors become one here, and
//! only here do they get their HTTP status, so handlers can use `?`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::reply;
use crate::ingest::IngestError;
use crate::releases::ReleaseError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub reason: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, reason: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            reason: reason.into(),
        }
    }

    /// Whether the client can fix it (a 4xx), as opposed to a fault of the server.
    pub fn is_refusal(&self) -> bool {
        self.status.is_client_error()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        reply::error(self.status, self.code, &self.reason)
    }
}

impl From<IngestError> for ApiError {
    /// 4xx for anything the uploader can fix (413 for a limit, 403 outside the cap's
    /// scope, 404 for a missing cell, 409 for other bytes under the same identity), 500
    /// for the server's own faults.
    fn from(e: IngestError) -> ApiError {
        let status = match &e {
            _ if !e.is_uploaders() => StatusCode::INTERNAL_SERVER_ERROR,
            IngestError::Deb(e) if e.is_limit() => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Forbidden(_) => StatusCode::FORBIDDEN,
            IngestError::NotFound(_) => StatusCode::NOT_FOUND,
            IngestError::Conflict { .. } => StatusCode::CONFLICT,
            IngestError::Deb(_) | IngestError::BadPackage(_) | IngestError::BadTarget(_) => {
                StatusCode::BAD_REQUEST
            }
            IngestError::Store(_) | IngestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<ReleaseError> for ApiError {
    /// A release change outside the cap's scope is 403, a missing suite, tree or snapshot
    /// 404, a change to a tree another change holds 409 (try again), a malformed one
    /// 400, and a store that cannot be reached 503.
    fn from(e: ReleaseError) -> ApiError {
        match e {
            ReleaseError::Forbidden(reason) => {
                ApiError::new(StatusCode::FORBIDDEN, "outside-scope", reason)
            }
            ReleaseError::NotFound(reason) => {
                ApiError::new(StatusCode::NOT_FOUND, "not-found", reason)
            }
            ReleaseError::Busy(reason) => ApiError::new(StatusCode::CONFLICT, "busy", reason),
            ReleaseError::Invalid(reason) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid", reason)
            }
            ReleaseError::Store(e) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage", e.to_string())
            }
        }
    }
}
