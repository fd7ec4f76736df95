//! One log line per request (debug level), with every capability and read link in
//! the path or query cut down to its id: a read cap in a URL is a secret and must
//! not reach the log, however the client spelled the URL.
//!
//! Redaction goes by what a piece of the URL holds, not by which route it matched, so
//! `/%72/<cap>/`, `/R/<cap>/`, `/r//<cap>/` and `?x=<cap>` are cut as surely as
//! `/r/<cap>/`. A path segment or query item is cut whole when, percent-decoded (again
//! and again, for double encodings), it
//! - contains `caprepo1` or `cr1-` in any case (a cap, or a read link);
//! - follows a segment that decodes to `r` in any case, empty and `.` segments skipped
//!   (whatever sits where a read cap goes);
//! - holds 43 or more base64url characters in a row, mixing upper case, lower case
//!   and digits (an ed25519 key or signature of a cap whose prefix was mangled).
//!   Package names and hex digests are never mixed-case runs that long.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use crate::caps::{links, token};

/// What a secret piece of a URL is logged as: `cap:<id>`, `link:<6 hex>`, or
/// `cap:<malformed>`.
fn shown(decoded: &str) -> String {
    let lower = decoded.to_ascii_lowercase();
    if links::is_link(&lower) {
        links::redact(&lower)
    } else {
        token::redact(decoded)
    }
}

/// Percent-decode until nothing changes (at most 4 rounds: `%252563` is still `c`).
fn decode_fully(text: &str) -> String {
    let mut current = text.to_string();
    for _ in 0..4 {
        let next = percent_decode(&current);
        if next == current {
            break;
        }
        current = next;
    }
    current
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes.get(i + 1).copied(), bytes.get(i + 2).copied()) {
            (Some(high), Some(low))
                if bytes[i] == b'%' && hex(high).is_some() && hex(low).is_some() =>
            {
                let value = hex(high).unwrap_or(0) * 16 + hex(low).unwrap_or(0);
                out.push(value as u8);
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// 43+ base64url characters in a row with upper case, lower case and digits mixed.
fn has_key_like_run(text: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .any(|run| {
            run.len() >= 43
                && run.bytes().any(|b| b.is_ascii_uppercase())
                && run.bytes().any(|b| b.is_ascii_lowercase())
                && run.bytes().any(|b| b.is_ascii_digit())
        })
}

fn holds_secret(decoded: &str) -> bool {
    let lower = decoded.to_ascii_lowercase();
    lower.contains("caprepo1") || lower.contains("cr1-") || has_key_like_run(decoded)
}

/// A request's path and query as logged.
pub fn redact_target(path: &str, query: Option<&str>) -> String {
    let mut out = String::with_capacity(path.len());
    let mut after_r = false;
    for (i, raw) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let decoded = decode_fully(raw);
        let filler = decoded.is_empty() || decoded == ".";
        if (after_r && !filler) || holds_secret(&decoded) {
            out.push_str(&shown(&decoded));
        } else {
            out.push_str(raw);
        }
        if !filler {
            after_r = decoded.eq_ignore_ascii_case("r");
        }
    }
    if let Some(query) = query {
        out.push('?');
        for (i, item) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            for (j, part) in item.split('=').enumerate() {
                if j > 0 {
                    out.push('=');
                }
                let decoded = decode_fully(&part.replace('+', " "));
                if holds_secret(&decoded) {
                    out.push_str(&shown(&decoded));
                } else {
                    out.push_str(part);
                }
            }
        }
    }
    out
}

pub async fn log(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = redact_target(request.uri().path(), request.uri().query());
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
    use super::redact_target;

    fn read_cap() -> String {
        let root = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let scope = "apt/x".parse().unwrap();
        crate::caps::token::issue(&root, vec![crate::caps::Right::Read], &scope, 0, 10)
    }

    #[test]
    fn caps_in_paths_are_cut_to_their_id() {
        let cap = read_cap();
        let shown = redact_target(&format!("/r/{cap}/dists/stable/InRelease"), None);
        assert!(
            shown.starts_with("/r/cap:") && shown.ends_with("/dists/stable/InRelease"),
            "{shown}"
        );
        assert!(!shown.contains(&cap));
        assert_eq!(
            redact_target("/demo/dists/stable/InRelease", None),
            "/demo/dists/stable/InRelease"
        );
        assert_eq!(redact_target("/r/garbage", None), "/r/cap:<malformed>");
    }

    #[test]
    fn every_spelling_of_a_cap_or_link_is_cut() {
        let cap = read_cap();
        let id_shown = redact_target(&format!("/r/{cap}"), None);
        let encoded: String = cap.bytes().map(|b| format!("%{b:02x}")).collect();
        let link = crate::caps::links::link_of(&cap);
        let proof = cap.rsplit('.').next().unwrap().to_string();
        for path in [
            format!("/%72/{cap}/dists/x"),
            format!("/R/{cap}/"),
            format!("/r//{cap}/"),
            format!("//r/./{cap}"),
            format!("/r/{encoded}"),
            format!("/x/{}", encoded.replace('%', "%25")),
            format!("/r/{cap}junk"),
            format!("/{}", cap.replacen("caprepo1", "CAPREPO1", 1)),
            format!("/pool/{}", &cap["caprepo1.".len()..]),
            format!("/r/{}", link.to_uppercase()),
            format!("/%72%2F{link}"),
            format!("/x/{proof}"),
        ] {
            let shown = redact_target(&path, None);
            assert!(
                !shown.contains(&cap) && !shown.contains(&proof) && !shown.contains(&encoded),
                "{path} -> {shown}"
            );
            assert!(
                !shown.to_ascii_lowercase().contains(&link[4..]),
                "{path} -> {shown}"
            );
        }
        assert_eq!(
            redact_target(&format!("/%72/{cap}"), None),
            id_shown.replacen("/r/", "/%72/", 1)
        );
        let with_query = redact_target("/healthz", Some(&format!("a=1&cap={encoded}&{link}")));
        assert!(
            with_query.starts_with("/healthz?a=1&cap=cap:"),
            "{with_query}"
        );
        assert!(with_query.ends_with("&link:") || with_query.contains("&link:"));
        assert!(!with_query.contains(&link) && !with_query.contains(&encoded));
    }

    #[test]
    fn package_paths_and_digests_are_logged_as_they_are() {
        for path in [
            "/demo/pool/main/g/golang-github-hashicorp-go-retryablehttp/golang-github-hashicorp-go-retryablehttp-dev_0.7.2-1_all.deb",
            "/demo/dists/stable/main/binary-amd64/by-hash/SHA256/6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "/demo/12/x86_64/repodata/6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d-primary.xml.gz",
            "/demo/12/x86_64/Packages/p/perl-Data-Dumper-2.183-1.fc38.x86_64.rpm",
        ] {
            assert_eq!(redact_target(path, None), path);
        }
    }
}
