//! JSON answers for the API: every refusal is a 4xx with `{"error": code,
//! "reason": text}` so a build worker's log says what to fix.

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = (status, Body::from(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    reason: &'a str,
}

pub fn error(status: StatusCode, code: &str, reason: &str) -> Response {
    let mut response = json(
        status,
        &ErrorBody {
            error: code,
            reason,
        },
    );
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"caprepo\""),
        );
    }
    response
}

pub fn not_found(what: &str) -> Response {
    error(StatusCode::NOT_FOUND, "not-found", what)
}
