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
    for repo in state
        .manager
        .views
        .repos()
        .into_iter()
        .filter(|r| state.manager.views.is_public(r))
    {
        let r = escape(&repo);
        body.push_str(&format!("<li><a href=\"/{r}/\">{r}</a></li>"));
    }
    body.push_str("</ul><p>Signing key: <a href=\"/key.asc\">/key.asc</a> (armored), <a href=\"/key.gpg\">/key.gpg</a> (binary).</p>");
    Html(body)
}

/// The setup text for one repository, also printed by `caprepo demo` and `caprepo cap publish`.
/// `uri` is the repository root (`http://host/<repo>/` or `http://host/r/<cap>/`),
/// `name` names the keyring and the sources file.
pub fn sources_snippet(
    base: &str,
    uri: &str,
    name: &str,
    suites: &[(String, Vec<String>)],
) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "# the signing key: {base}/key.gpg (armored: {base}/key.asc)
"
    ));
    out.push_str(&format!(
        "curl -fsSL {base}/key.gpg | sudo tee /etc/apt/keyrings/{name}.gpg >/dev/null

"
    ));
    for (suite, components) in suites {
        let components = components.join(" ");
        out.push_str(&format!(
            "# /etc/apt/sources.list.d/{name}-{suite}.sources
Types: deb
URIs: {uri}
Suites: {suite}
Components: {components}
Signed-By: /etc/apt/keyrings/{name}.gpg

"
        ));
        out.push_str(&format!(
            "# or one line in /etc/apt/sources.list.d/{name}-{suite}.list
deb [signed-by=/etc/apt/keyrings/{name}.gpg] {uri} {suite} {components}

"
        ));
    }
    out
}

/// The `.repo` file for an RPM repository; `uri` is the repository root, ending in `/`.
pub fn repo_file_snippet(base: &str, uri: &str, name: &str) -> String {
    format!(
        "# /etc/yum.repos.d/{name}.repo (dnf, yum) or /etc/zypp/repos.d/{name}.repo (zypper)\n[{name}]\nname={name}\nbaseurl={uri}$releasever/$basearch/\nenabled=1\ngpgcheck=1\nrepo_gpgcheck=1\ngpgkey={base}/key.asc\n\n# source packages: {uri}<release>/source/\n"
    )
}

/// Setup text for whatever a repository is: APT sources or an RPM `.repo` file.
pub fn setup_snippet(
    views: &crate::serve::views::Views,
    base: &str,
    uri: &str,
    repo: &str,
    only: Option<&str>,
) -> Option<String> {
    let trees = views.suites_of(repo);
    if trees.is_empty() {
        return None;
    }
    if trees
        .iter()
        .any(|t| crate::formats::Format::of_tree(&t.current.suite) == crate::formats::Format::Rpm)
    {
        return Some(repo_file_snippet(base, uri, repo));
    }
    let suites = published_suites(views, repo, only);
    if suites.is_empty() {
        return None;
    }
    Some(sources_snippet(base, uri, repo, &suites))
}

/// Suites and their components as readers see them, optionally limited to one suite.
pub fn published_suites(
    views: &crate::serve::views::Views,
    repo: &str,
    only: Option<&str>,
) -> Vec<(String, Vec<String>)> {
    views
        .suites_of(repo)
        .iter()
        .filter(|v| only.is_none_or(|o| v.current.suite == o))
        .map(|v| suite_components(&v.current))
        .collect()
}

/// A published suite's name and the components its files show.
pub fn suite_components(publication: &crate::repo::model::Publication) -> (String, Vec<String>) {
    let prefix = format!("dists/{}/", publication.suite);
    let mut components: Vec<String> = publication
        .files
        .keys()
        .filter_map(|p| {
            p.strip_prefix(&prefix)
                .and_then(|r| r.split_once("/binary-"))
                .map(|(c, _)| c.to_string())
        })
        .collect();
    components.dedup();
    (publication.suite.clone(), components)
}

pub fn base_url_of(headers: &HeaderMap) -> String {
    base_url(headers)
}

/// HTML for browsers, plain text for `curl` and `caprepo cap publish`.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

pub fn setup_page(title: &str, snippet: &str, headers: &HeaderMap) -> Response {
    if wants_html(headers) {
        Html(format!(
            "<!doctype html><meta charset=utf-8><title>{0}</title><h1>{0}</h1><h2>Setup</h2><pre>{1}</pre>",
            escape(title),
            escape(snippet)
        ))
        .into_response()
    } else {
        snippet.to_string().into_response()
    }
}

pub async fn repo_page(
    State(state): State<AppState>,
    Path(repo): Path<String>,
    headers: HeaderMap,
) -> Response {
    let views = &state.manager.views;
    let base = base_url(&headers);
    let snippet = if views.is_public(&repo) {
        setup_snippet(views, &base, &format!("{base}/{repo}/"), &repo, None)
    } else {
        None
    };
    match snippet {
        Some(snippet) => setup_page(&repo, &snippet, &headers),
        None => reply::not_found("no such repository"),
    }
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
