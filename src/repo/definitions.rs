//! Repository definitions live in the store (`repos/apt/<name>`), not in the
//! config file, so `caprepo repo add` on a running server's data dir (or on
//! another machine sharing the bucket) takes effect without a restart: the
//! manager sees the new ref on its next poll and publishes the empty suites.

use crate::caps::scope::validate_name;
use crate::formats::Format;
use crate::repo::format::{Apt, RepoFormat, with_format};
use crate::repo::model::{self, AptRepo, ManifestKind, RpmRepo, SuiteDef};
use crate::store::{RefEntry, RefName, RefUpdate, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    #[error("a repository named {0} already exists")]
    Exists(String),
    #[error("no repository apt/{0}; create it with `caprepo repo add --data DIR apt {0} ...`")]
    NotFound(String),
}

pub struct NewAptRepo {
    pub name: String,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    pub architectures: Vec<String>,
    pub origin: Option<String>,
    pub label: Option<String>,
    pub private: bool,
    pub retention: Option<u32>,
    pub legacy_hashes: bool,
}

fn check_list(kind: &str, items: &[String]) -> Result<(), RepoError> {
    if items.is_empty() {
        return Err(RepoError::Invalid(format!("give at least one {kind}")));
    }
    for item in items {
        validate_name(kind, item).map_err(RepoError::Invalid)?;
    }
    let mut sorted = items.to_vec();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != items.len() {
        return Err(RepoError::Invalid(format!("a {kind} is listed twice")));
    }
    Ok(())
}

fn check_text(field: &str, value: &str) -> Result<(), RepoError> {
    if value.is_empty() || value.len() > 200 || value.chars().any(|c| c.is_control()) {
        return Err(RepoError::Invalid(format!(
            "{field} must be one line of 1-200 characters"
        )));
    }
    Ok(())
}

pub async fn add_apt_repo(
    store: &Store,
    new: NewAptRepo,
    actor: &str,
) -> Result<RefEntry, RepoError> {
    check_repo_name(&new.name)?;
    check_list("suite", &new.suites)?;
    check_list("component", &new.components)?;
    check_list("architecture", &new.architectures)?;
    for arch in &new.architectures {
        crate::formats::deb::control::validate_architecture(arch)
            .map_err(|e| RepoError::Invalid(e.to_string()))?;
    }
    if new
        .architectures
        .iter()
        .any(|a| a == "all" || a == "source")
    {
        return Err(RepoError::Invalid(
            "'all' is not an architecture to list: Architecture: all packages appear in every architecture's index".into(),
        ));
    }
    let origin = new.origin.unwrap_or_else(|| new.name.clone());
    let label = new.label.unwrap_or_else(|| new.name.clone());
    check_text("origin", &origin)?;
    check_text("label", &label)?;
    let definition = AptRepo {
        kind: ManifestKind::AptRepo,
        name: new.name.clone(),
        origin,
        label,
        private: new.private,
        suites: new
            .suites
            .iter()
            .map(|s| SuiteDef {
                name: s.clone(),
                codename: s.clone(),
                components: new.components.clone(),
                architectures: new.architectures.clone(),
                valid_for: None,
                not_automatic: false,
                but_automatic_upgrades: false,
            })
            .collect(),
        retention: new.retention,
        legacy_hashes: new.legacy_hashes,
    };
    create(
        store,
        model::repo_ref(&new.name)?,
        &new.name,
        &definition,
        actor,
    )
    .await
}

/// The names of every repository of one format.
pub async fn list_repos(store: &Store, format: Format) -> Result<Vec<String>, RepoError> {
    Ok(store.ref_children(&format!("repos/{format}")).await?)
}

/// A repository's definition, or [`RepoError::NotFound`].
pub async fn load_repo<F: RepoFormat>(
    store: &Store,
    name: &str,
) -> Result<F::Definition, RepoError> {
    load_definition(store, &F::definition_ref(name)?, name).await
}

/// APT and RPM repositories share the URL space `/<name>/`, so a name is taken once.
async fn refuse_name_taken(store: &Store, name: &str) -> Result<(), RepoError> {
    if store.ref_head(&model::repo_ref(name)?).await?.is_some()
        || store.ref_head(&model::rpm_repo_ref(name)?).await?.is_some()
    {
        return Err(RepoError::Exists(name.to_string()));
    }
    Ok(())
}

pub struct NewRpmRepo {
    pub name: String,
    pub releases: Vec<String>,
    pub architectures: Vec<String>,
    pub private: bool,
    pub sign_packages: bool,
    pub retention: Option<u32>,
}

pub async fn add_rpm_repo(
    store: &Store,
    new: NewRpmRepo,
    actor: &str,
) -> Result<RefEntry, RepoError> {
    check_repo_name(&new.name)?;
    check_list("release", &new.releases)?;
    // A release is the first segment of its trees' URLs, beside the paths every
    // repository serves: `snapshots/`, and `dists/` and `pool/`, which the server reads as
    // APT paths, so a release of one of those names would never be reachable.
    if let Some(reserved) = new
        .releases
        .iter()
        .find(|r| matches!(r.as_str(), "snapshots" | "dists" | "pool"))
    {
        return Err(RepoError::Invalid(format!(
            "{reserved:?} is reserved for the server's own URLs (snapshots/, dists/, pool/); pick another release name"
        )));
    }
    check_list("architecture", &new.architectures)?;
    for arch in &new.architectures {
        let ok = arch
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok || matches!(arch.as_str(), "noarch" | "src" | "source") {
            return Err(RepoError::Invalid(format!(
                "{arch:?} is not a binary architecture like x86_64 or aarch64 (noarch and src packages go into every architecture's tree)"
            )));
        }
    }
    let definition = RpmRepo {
        kind: ManifestKind::RpmRepo,
        name: new.name.clone(),
        private: new.private,
        releases: new.releases,
        architectures: new.architectures,
        sign_packages: new.sign_packages,
        retention: new.retention,
    };
    create(
        store,
        model::rpm_repo_ref(&new.name)?,
        &new.name,
        &definition,
        actor,
    )
    .await
}

/// Top-level path segments the server uses itself (`/r/<cap>/`, `/api/`, the key,
/// `/healthz`, `/metrics`): no repository may take these names, or its files would be
/// shadowed by the server's routes.
pub const RESERVED_NAMES: &[&str] = &["r", "api", "key.asc", "key.gpg", "healthz", "metrics"];

/// The current definition a repository ref points at.
async fn load_definition<T: serde::de::DeserializeOwned>(
    store: &Store,
    reference: &crate::store::RefName,
    name: &str,
) -> Result<T, RepoError> {
    let head = store
        .ref_head(reference)
        .await?
        .ok_or_else(|| RepoError::NotFound(name.to_string()))?;
    Ok(store.get_json(&head.target).await?)
}

fn check_repo_name(name: &str) -> Result<(), RepoError> {
    validate_name("repository", name).map_err(RepoError::Invalid)?;
    if RESERVED_NAMES.contains(&name) {
        return Err(RepoError::Invalid(format!(
            "{name:?} is a path the server uses itself; pick another repository name"
        )));
    }
    Ok(())
}

/// Store a new repository's definition and create its ref; losing the race means it exists.
async fn create(
    store: &Store,
    reference: crate::store::RefName,
    name: &str,
    definition: &impl serde::Serialize,
    actor: &str,
) -> Result<RefEntry, RepoError> {
    refuse_name_taken(store, name).await?;
    let stored = store.put_json(definition).await?;
    match store
        .ref_advance(&reference, None, stored.digest, actor, "create repository")
        .await
    {
        Ok(entry) => Ok(entry),
        Err(StoreError::Conflict(_)) => Err(RepoError::Exists(name.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Change a repository's settings (retention for now), by compare-and-swap on its ref.
pub async fn set_retention(
    store: &Store,
    format: Format,
    name: &str,
    retention: Option<u32>,
    actor: &str,
) -> Result<RefEntry, RepoError> {
    if retention == Some(0) {
        return Err(RepoError::Invalid(
            "--retention must keep at least 1 version".into(),
        ));
    }
    let note = format!(
        "set retention {}",
        retention.map_or("unlimited".to_string(), |n| n.to_string())
    );
    with_format!(format, F => {
        update_definition::<F>(store, name, actor, &note, |definition| {
            *F::retention_mut(definition) = retention;
            Ok(())
        })
        .await
    })
}

/// Turn the legacy MD5 and SHA-1 fields of an APT repository's Packages and Release on or off.
pub async fn set_legacy_hashes(
    store: &Store,
    name: &str,
    on: bool,
    actor: &str,
) -> Result<RefEntry, RepoError> {
    let note = format!("set legacy hashes {}", if on { "on" } else { "off" });
    update_definition::<Apt>(store, name, actor, &note, |definition| {
        definition.legacy_hashes = on;
        Ok(())
    })
    .await
}

/// Rewrite a repository's definition with `change`, by compare-and-swap on its ref.
async fn update_definition<F: RepoFormat>(
    store: &Store,
    name: &str,
    actor: &str,
    note: &str,
    change: impl Fn(&mut F::Definition) -> Result<(), RepoError>,
) -> Result<RefEntry, RepoError> {
    let reference = F::definition_ref(name)?;
    let change = &change;
    let (_, entry) = store
        .update_ref(&reference, actor, |head| async move {
            let head = head.ok_or_else(|| RepoError::NotFound(name.to_string()))?;
            let mut definition: F::Definition = store.get_json(&head.target).await?;
            change(&mut definition)?;
            let stored = store.put_json(&definition).await?;
            Ok::<_, RepoError>(RefUpdate::Advance {
                target: stored.digest,
                note: note.to_string(),
                value: (),
            })
        })
        .await?;
    written(entry, &reference)
}

/// The entry an update that always advances wrote.
fn written(entry: Option<RefEntry>, reference: &RefName) -> Result<RefEntry, RepoError> {
    entry.ok_or_else(|| RepoError::Store(StoreError::Conflict(reference.to_string())))
}

/// Keep the newest `keep` versions of each (name, architecture), as ordered by `cmp`.
pub fn apply_retention<T>(
    packages: Vec<T>,
    keep: Option<u32>,
    key: impl Fn(&T) -> (String, String),
    cmp: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> Vec<T> {
    let Some(keep) = keep else { return packages };
    let mut groups: std::collections::BTreeMap<(String, String), Vec<T>> =
        std::collections::BTreeMap::new();
    for package in packages {
        groups.entry(key(&package)).or_default().push(package);
    }
    let mut out = Vec::new();
    for (_, mut versions) in groups {
        versions.sort_by(|a, b| cmp(b, a));
        versions.truncate(keep as usize);
        out.extend(versions);
    }
    out
}

/// The packages retention keeps (the newest `keep` versions of each name and
/// architecture; every one when `keep` is None), in no particular order.
pub fn retained<P: crate::repo::model::Record>(packages: Vec<&P>, keep: Option<u32>) -> Vec<&P> {
    apply_retention(
        packages,
        keep,
        |p| p.retention_group(),
        |a, b| a.version_cmp(b),
    )
}

/// Release-file options of one APT suite.
pub struct SuiteOptions {
    /// Some(None) clears Valid-Until; None leaves it.
    pub valid_for: Option<Option<u64>>,
    pub not_automatic: Option<bool>,
    pub but_automatic_upgrades: Option<bool>,
}

pub async fn set_suite_options(
    store: &Store,
    repo: &str,
    suite: &str,
    options: &SuiteOptions,
    actor: &str,
) -> Result<RefEntry, RepoError> {
    let note = format!("set options of suite {suite}");
    update_definition::<Apt>(store, repo, actor, &note, |definition| {
        let def = definition
            .suites
            .iter_mut()
            .find(|s| s.name == suite)
            .ok_or_else(|| RepoError::Invalid(format!("apt/{repo} has no suite {suite}")))?;
        if let Some(valid_for) = options.valid_for {
            def.valid_for = valid_for;
        }
        if let Some(flag) = options.not_automatic {
            def.not_automatic = flag;
        }
        if let Some(flag) = options.but_automatic_upgrades {
            def.but_automatic_upgrades = flag;
        }
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use crate::testing::apt_package;

    #[test]
    fn retention_keeps_the_newest_versions_of_each_name_by_dpkg_order() {
        let packages = [
            apt_package("a", "1.9", b"a19"),
            apt_package("a", "1.10", b"a110"),
            apt_package("a", "1:0.1", b"a-epoch"),
            apt_package("b", "2", b"b2"),
        ];
        let versions = |keep| {
            let mut kept: Vec<String> = super::retained(packages.iter().collect(), keep)
                .into_iter()
                .map(|p| format!("{} {}", p.name, p.version))
                .collect();
            kept.sort();
            kept
        };
        // 1:0.1 is newest (epoch), then 1.10, then 1.9; b has one version.
        assert_eq!(versions(Some(1)), ["a 1:0.1", "b 2"]);
        assert_eq!(versions(Some(2)), ["a 1.10", "a 1:0.1", "b 2"]);
        assert_eq!(versions(None).len(), 4);
    }
}
