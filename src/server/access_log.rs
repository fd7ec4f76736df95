//! One log line per request (debug level), with any capability in the path cut
//! down to its id: a read cap in a URL is a secret and must not reach the log.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use crate::caps::token::redact;

/// `/r/<cap>/dists/...` becomes `/r/cap:<id>/dists/...`.
pub fn redact_path(path: &str) -> String {
    match path.strip_prefix("/r/") {
        Some(rest) => {
            let (cap, tail) = rest.split_once('/').map_or((rest, ""), |(c, t)| (c, t));
            let cap = percent_decode(cap);
            let shown = if crate::caps::links::is_link(&cap) {
                crate::caps::links::redact(&cap)
            } else {
                redact(&cap)
            };
            if tail.is_empty() && !rest.ends_with('/') {
                format!("/r/{shown}")
            } else {
                format!("/r/{shown}/{tail}")
            }
        }
        None => path.to_string(),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(v) = u8::from_str_radix(
                std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                16,
            )
        {
            out.push(v);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn log(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = redact_path(request.uri().path());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    tracing::debug!(
        %method,
        path,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::redact_path;

    #[test]
    fn caps_in_paths_are_cut_to_their_id() {
        let root = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let scope = "apt/x".parse().unwrap();
        let cap = crate::caps::token::issue(&root, vec![crate::caps::Right::Read], &scope, 0, 10);
        let shown = redact_path(&format!("/r/{cap}/dists/stable/InRelease"));
        assert!(
            shown.starts_with("/r/cap:") && shown.ends_with("/dists/stable/InRelease"),
            "{shown}"
        );
        assert!(!shown.contains(&cap));
        assert_eq!(
            redact_path("/demo/dists/stable/InRelease"),
            "/demo/dists/stable/InRelease"
        );
        assert_eq!(redact_path("/r/garbage"), "/r/cap:<malformed>");
    }
}
