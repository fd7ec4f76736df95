//! `POST /api/v1/release`: the release manager's commands (promote, rm, snapshot,
//! switch, rollback, history) against a running server, authorized by a cap
//! with the `publish` right whose scope covers the suite or release changed.
//! The CLI sends the same JSON when given `--server URL --cap CAP`.

use crate::repo::format::{RepoFormat, with_format};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::{AppState, auth, reply};
use crate::caps::{Right, Scope};
use crate::releases::{self, PublishedTree, ReleaseError, Selector, SuiteOrRelease};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ReleaseRequest {
    Promote {
        repo: String,
        from: String,
        to: String,
        #[serde(default)]
        packages: Vec<String>,
        #[serde(default)]
        r#move: bool,
    },
    Rm {
        target: String,
        packages: Vec<String>,
    },
    Snapshot {
        tree: String,
        name: String,
    },
    SnapshotSwitch {
        tree: String,
        name: String,
    },
    Rollback {
        tree: String,
        #[serde(default)]
        to: Option<u64>,
    },
}

#[derive(Serialize)]
struct Answer {
    message: String,
}

/// The scope a change must be covered by: the suite (apt/NAME/dists/SUITE) or release (rpm/NAME/RELEASE).
fn unit_scope(unit: &SuiteOrRelease) -> Result<Scope, String> {
    let text = with_format!(unit.format, F => F::unit_scope(&unit.repo, &unit.name));
    text.parse()
        .map_err(|e: crate::caps::scope::ScopeError| e.to_string())
}

fn unit_of_target(target: &str) -> Result<SuiteOrRelease, ReleaseError> {
    let parts: Vec<&str> = target.split('/').collect();
    match parts.as_slice() {
        [kind, repo, name] => SuiteOrRelease::parse(&format!("{kind}/{repo}"), name),
        _ => Err(ReleaseError::Invalid(format!(
            "{target:?}: name apt/NAME/SUITE or rpm/NAME/RELEASE"
        ))),
    }
}

pub async fn release(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let grant = auth::require(
        &headers,
        &state.root_key,
        &state.revocations,
        Right::Publish,
    )
    .await?;
    let request: ReleaseRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            format!("not a release request: {e}"),
        )
    })?;
    let actor = grant.log_id().to_string();
    let store = &state.store;
    // Work out what the request changes, check the cap covers it, then do it.
    let result: Result<String, ReleaseError> = async {
        // Every suite or release the request changes: a move changes its source too. What it
        // copies from (the source of a promotion, a snapshot switched to) may be any suite or
        // release of the repository: the rule is that a cap changes nothing outside itself,
        // and a publish cap's holder decides what its own suites list.
        let (unit, changed) = match &request {
            ReleaseRequest::Promote {
                repo,
                from,
                to,
                r#move,
                ..
            } => {
                let to = SuiteOrRelease::parse(repo, to)?;
                let mut changed = vec![to.clone()];
                if *r#move {
                    changed.push(SuiteOrRelease::parse(repo, from)?);
                }
                (to, changed)
            }
            ReleaseRequest::Rm { target, .. } => {
                let unit = unit_of_target(target)?;
                (unit.clone(), vec![unit])
            }
            ReleaseRequest::Snapshot { tree, .. }
            | ReleaseRequest::SnapshotSwitch { tree, .. }
            | ReleaseRequest::Rollback { tree, .. } => {
                let unit = PublishedTree::parse(tree)?.unit();
                (unit.clone(), vec![unit])
            }
        };
        for changed in &changed {
            let scope = unit_scope(changed).map_err(ReleaseError::Invalid)?;
            if !grant.scope.covers(&scope) {
                return Err(ReleaseError::Forbidden(format!(
                    "{scope} is outside the cap's scope {}",
                    grant.scope
                )));
            }
        }
        match request {
            ReleaseRequest::Promote {
                repo,
                from,
                to,
                packages,
                r#move,
            } => {
                let from = SuiteOrRelease::parse(&repo, &from)?;
                let to = SuiteOrRelease::parse(&repo, &to)?;
                let selectors: Vec<Selector> =
                    packages.iter().map(|p| Selector::parse(p)).collect();
                let n = releases::promote(store, &from, &to, &selectors, r#move, &actor).await?;
                Ok(format!(
                    "{} {n} package(s) from {} to {}",
                    if r#move { "moved" } else { "copied" },
                    from.display(),
                    to.display()
                ))
            }
            ReleaseRequest::Rm { packages, .. } => {
                let selectors: Vec<Selector> =
                    packages.iter().map(|p| Selector::parse(p)).collect();
                let n = releases::remove(store, &unit, &selectors, &actor).await?;
                if n == 0 {
                    return Err(ReleaseError::NotFound(format!(
                        "nothing matched in {}",
                        unit.display()
                    )));
                }
                Ok(format!(
                    "removed {n} package record(s) from {}",
                    unit.display()
                ))
            }
            ReleaseRequest::Snapshot { tree, name } => {
                let tree = PublishedTree::parse(&tree)?;
                let entry = releases::snapshot_create(store, &tree, &name, &actor).await?;
                Ok(format!("snapshot {name}: {}", entry.note))
            }
            ReleaseRequest::SnapshotSwitch { tree, name } => {
                let tree = PublishedTree::parse(&tree)?;
                let publication = releases::snapshot_get(store, tree.format, &tree.repo, &name)
                    .await?
                    .ok_or_else(|| ReleaseError::NotFound(format!("no snapshot {name}")))?;
                releases::restore(
                    store,
                    &tree,
                    &publication,
                    &actor,
                    &format!("switch to snapshot {name}"),
                )
                .await?;
                Ok(format!("{} switched to snapshot {name}", tree.display()))
            }
            ReleaseRequest::Rollback { tree, to } => {
                let tree = PublishedTree::parse(&tree)?;
                let (entry, publication) = releases::publication_at(store, &tree, to).await?;
                releases::restore(
                    store,
                    &tree,
                    &publication,
                    &actor,
                    &format!("rollback to publication {}", entry.generation),
                )
                .await?;
                Ok(format!(
                    "{} rolled back to publication {}",
                    tree.display(),
                    entry.generation
                ))
            }
        }
    }
    .await;
    let message = result?;
    tracing::info!(cap = %actor, %message, "release change");
    state.manager.poke();
    Ok(reply::json(StatusCode::OK, &Answer { message }))
}
