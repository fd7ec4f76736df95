//! Human-facing pages: `/` lists repositories, `/<repo>/` shows copy-paste setup
//! (the key, a deb822 `.sources` stanza with `Signed-By`, the one-line form), and
//! the public key at the stable URLs `/key.asc` and `/key.gpg`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};

use super::{AppState, reply};

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let safe = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".:-[]".contains(&b));
    format!("http://{}", if safe { host } else { "localhost" })
}

pub async fn index(State(state): State<AppState>) -> Html<String> {
    let mut body = String::from(
        "<!doctype html><meta charset=utf-8><title>caprepo</title><h1>caprepo</h1><ul>",
    );
    for repo in state.manager.views.repos() {
        let r = escape(&repo);
        body.push_str(&format!("<li><a href=\"/{r}/\">{r}</a></li>"));
    }
    body.push_str("</ul><p>Signing key: <a href=\"/key.asc\">/key.asc</a> (armored), <a href=\"/key.gpg\">/key.gpg</a> (binary).</p>");
    Html(body)
}

/// The setup text for one repository, also printed by `caprepo demo`.
pub fn sources_snippet(base: &str, repo: &str, suites: &[(String, Vec<String>)]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "curl -fsSL {base}/key.gpg | sudo tee /etc/apt/keyrings/{repo}.gpg >/dev/null\n\n"
    ));
    for (suite, components) in suites {
        out.push_str(&format!(
            "# /etc/apt/sources.list.d/{repo}-{suite}.sources\nTypes: deb\nURIs: {base}/{repo}/\nSuites: {suite}\nComponents: {}\nSigned-By: /etc/apt/keyrings/{repo}.gpg\n\n",
            components.join(" ")
        ));
        out.push_str(&format!(
            "# or one line in /etc/apt/sources.list.d/{repo}-{suite}.list\ndeb [signed-by=/etc/apt/keyrings/{repo}.gpg] {base}/{repo}/ {suite} {}\n\n",
            components.join(" ")
        ));
    }
    out
}

pub async fn repo_page(
    State(state): State<AppState>,
    Path(repo): Path<String>,
    headers: HeaderMap,
) -> Response {
    let views = state.manager.views.suites_of(&repo);
    if views.is_empty() {
        return reply::not_found("no such repository");
    }
    let suites: Vec<(String, Vec<String>)> = views
        .iter()
        .map(|v| {
            let mut components: Vec<String> = v
                .current
                .files
                .keys()
                .filter_map(|p| {
                    p.strip_prefix(&format!("dists/{}/", v.current.suite))
                        .and_then(|r| r.split_once('/'))
                        .map(|(c, _)| c.to_string())
                })
                .filter(|c| !c.contains('.') && c != "by-hash")
                .collect();
            components.dedup();
            (v.current.suite.clone(), components)
        })
        .collect();
    let snippet = sources_snippet(&base_url(&headers), &repo, &suites);
    let mut body = format!(
        "<!doctype html><meta charset=utf-8><title>{0}</title><h1>{0}</h1><h2>Setup</h2><pre>{1}</pre><h2>Suites</h2><ul>",
        escape(&repo),
        escape(&snippet)
    );
    for view in &views {
        body.push_str(&format!(
            "<li>{} (generation {}, {} packages)</li>",
            escape(&view.current.suite),
            view.generation,
            view.current.pool.len()
        ));
    }
    body.push_str("</ul>");
    Html(body).into_response()
}

fn key_response(bytes: &[u8], content_type: &'static str) -> Response {
    let mut response = bytes.to_vec().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub async fn key_armored(State(state): State<AppState>) -> Response {
    key_response(&state.public_key_armored, "application/pgp-keys")
}

pub async fn key_binary(State(state): State<AppState>) -> Response {
    key_response(&state.public_key_binary, "application/pgp-keys")
}
