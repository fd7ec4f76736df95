//! Serving stored blobs over HTTP the way caches and apt like it: the ETag is the
//! sha256 (content never changes under a name), `If-None-Match` gets a 304, a
//! single `Range` gets a 206, and pool and by-hash files are marked immutable.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::AppState;
use super::file_cache::FileCache;
use super::reply;
use crate::repo::model::FileEntry;
use crate::serve::metrics::Metrics;
use crate::store::Store;

pub fn content_type(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("deb") => "application/vnd.debian.binary-package",
        Some("gz") => "application/gzip",
        Some("xz") => "application/x-xz",
        Some("gpg") | Some("asc") => "application/pgp-signature",
        Some("html") => "text/html; charset=utf-8",
        _ if path.contains("/by-hash/") => "application/octet-stream",
        _ => "text/plain; charset=utf-8",
    }
}

/// Immutable paths can be cached forever; named index files change with every publish.
pub fn cache_control(path: &str) -> &'static str {
    if path.starts_with("pool/") || path.contains("/by-hash/") {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=30"
    }
}

enum RangeRequest {
    Whole,
    Part(u64, u64),
    Unsatisfiable,
}

fn parse_range(headers: &HeaderMap, size: u64) -> RangeRequest {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeRequest::Whole;
    };
    let Some(spec) = value.strip_prefix("bytes=") else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole; // multiple ranges: answering with the whole body is allowed
    }
    let Some((start, end)) = spec.split_once('-') else {
        return RangeRequest::Unsatisfiable;
    };
    let (start, end) = match (start.trim(), end.trim()) {
        ("", suffix) => match suffix.parse::<u64>() {
            Ok(0) | Err(_) => return RangeRequest::Unsatisfiable,
            Ok(n) => (size.saturating_sub(n), size.saturating_sub(1)),
        },
        (s, "") => match s.parse::<u64>() {
            Ok(s) => (s, size.saturating_sub(1)),
            Err(_) => return RangeRequest::Unsatisfiable,
        },
        (s, e) => match (s.parse::<u64>(), e.parse::<u64>()) {
            (Ok(s), Ok(e)) if s <= e => (s, e.min(size.saturating_sub(1))),
            _ => return RangeRequest::Unsatisfiable,
        },
    };
    if size == 0 || start >= size {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Part(start, end)
    }
}

fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').any(|t| {
                t.trim() == etag || t.trim() == "*" || t.trim().trim_start_matches("W/") == etag
            })
        })
}

fn body_headers(h: &mut HeaderMap, path: &str, length: u64) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
}

/// The file a path resolved to, or a 404 that says where it was looked for.
pub async fn serve_or_404(
    state: &AppState,
    path: &str,
    entry: Option<FileEntry>,
    headers: &HeaderMap,
    not_found: &str,
) -> Response {
    match entry {
        Some(entry) => {
            serve(
                &state.store,
                &state.metrics,
                &state.file_cache,
                path,
                entry,
                headers,
            )
            .await
        }
        None => {
            state.metrics.http_not_found.inc();
            reply::not_found(not_found)
        }
    }
}

async fn serve(
    store: &Store,
    metrics: &Metrics,
    cache: &FileCache,
    path: &str,
    entry: FileEntry,
    headers: &HeaderMap,
) -> Response {
    let etag = format!("\"{}\"", entry.sha256);
    let common = |response: &mut Response| {
        let h = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&etag) {
            h.insert(header::ETAG, v);
        }
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache_control(path)),
        );
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    };
    if etag_matches(headers, &etag) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        common(&mut response);
        return response;
    }
    let (status, range) = match parse_range(headers, entry.size) {
        RangeRequest::Whole => (StatusCode::OK, None),
        RangeRequest::Part(start, end) => (StatusCode::PARTIAL_CONTENT, Some(start..end + 1)),
        RangeRequest::Unsatisfiable => {
            let mut response = reply::error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "bad-range",
                "the requested range is outside the file",
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", entry.size)) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return response;
        }
    };
    if range.is_none()
        && let Some(pool) = cache.admit(path, entry.size, &entry.sha256)
    {
        let bytes = match cache.get(pool, &entry.sha256) {
            Some(bytes) => Some(bytes),
            None => match store.get_blob(&entry.sha256).await {
                Ok(bytes) => {
                    cache.insert(pool, entry.sha256, bytes.clone());
                    Some(bytes)
                }
                // The streaming path below reports the failure.
                Err(_) => None,
            },
        };
        if let Some(bytes) = bytes {
            metrics.http_bytes_served.add(bytes.len() as u64);
            let length = bytes.len() as u64;
            let mut response = Response::new(Body::from(bytes));
            common(&mut response);
            body_headers(response.headers_mut(), path, length);
            return response;
        }
    }
    let stream = match store.stream_blob(&entry.sha256, range.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(path, error = %e, "a published file's blob cannot be read");
            return reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage",
                "the file could not be read from storage",
            );
        }
    };
    let length = stream.range.end - stream.range.start;
    metrics.http_bytes_served.add(length);
    let mut response = Response::new(Body::from_stream(
        stream.body.map(|r| r.map_err(std::io::Error::other)),
    ));
    *response.status_mut() = status;
    common(&mut response);
    let h = response.headers_mut();
    body_headers(h, path, length);
    if let Some(range) = range
        && let Ok(v) = HeaderValue::from_str(&format!(
            "bytes {}-{}/{}",
            range.start,
            range.start + length - 1,
            entry.size
        ))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    response
}
