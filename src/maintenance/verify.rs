//! verify: every reachable blob re-hashed, every ref and manifest checked against
//! schema/, and every published index checked against its signature.

use std::collections::{BTreeMap, HashSet};

use futures::TryStreamExt;

use crate::repo::model::Publication;
use crate::store::{ListedComposite, RefEntry, Store};
use crate::util::digest::Digest;

use super::mark::mark;
use super::{Problems, RefKind, Result, all_ref_entries, ref_kind};

/// Everything `verify` checks, as a list of problems (empty: healthy).
pub async fn verify(store: &Store, certificate: &[u8]) -> Result<Problems> {
    let entries = all_ref_entries(store).await?;
    let mut problems = Problems::new();
    check_schemas(store, &entries, &mut problems).await;
    let composites = crate::store::list_composites(store).await?;
    let marked = mark(store, &entries, &composites, &mut problems).await?;
    check_composite_schemas(store, &composites, &marked, &mut problems).await;
    store.refresh_packs().await?;
    for (name, why) in store.unreadable_packs() {
        problems.push(format!("pack {name}: its index cannot be read: {why}"));
    }
    for digest in &marked {
        match store.stream_blob(digest, None).await {
            Ok(stream) => {
                let mut hasher = crate::util::digest::Hasher::new();
                let mut body = stream.body;
                let mut failed = None;
                loop {
                    match body.try_next().await {
                        Ok(Some(chunk)) => hasher.update(&chunk),
                        Ok(None) => break,
                        Err(e) => {
                            failed = Some(e.to_string());
                            break;
                        }
                    }
                }
                let (actual, _) = hasher.finish();
                if let Some(e) = failed {
                    problems.push(format!("blob {digest}: cannot be read: {e}"));
                } else if actual != *digest {
                    problems.push(format!(
                        "blob {digest}: content hashes to {actual} (corrupted)"
                    ));
                }
            }
            Err(e) => problems.push(format!("blob {digest}: {e}")),
        }
    }
    check_published(store, &entries, certificate, &mut problems).await;
    problems.sort();
    problems.dedup();
    Ok(problems)
}

const SCHEMAS: &[(&str, &str)] = &[
    (
        "ref-entry",
        include_str!("../../schema/ref-entry.schema.json"),
    ),
    (
        "apt-repo",
        include_str!("../../schema/apt-repo.schema.json"),
    ),
    (
        "apt-cell",
        include_str!("../../schema/apt-cell.schema.json"),
    ),
    (
        "apt-chunk",
        include_str!("../../schema/apt-chunk.schema.json"),
    ),
    (
        "apt-source-chunk",
        include_str!("../../schema/apt-source-chunk.schema.json"),
    ),
    (
        "apt-publication",
        include_str!("../../schema/apt-publication.schema.json"),
    ),
    (
        "rpm-repo",
        include_str!("../../schema/rpm-repo.schema.json"),
    ),
    (
        "rpm-cell",
        include_str!("../../schema/rpm-cell.schema.json"),
    ),
    (
        "rpm-chunk",
        include_str!("../../schema/rpm-chunk.schema.json"),
    ),
    (
        "claim-cell",
        include_str!("../../schema/claim-cell.schema.json"),
    ),
    (
        "claim-chunk",
        include_str!("../../schema/claim-chunk.schema.json"),
    ),
    (
        "rpm-publication",
        include_str!("../../schema/rpm-publication.schema.json"),
    ),
    (
        "cap-registry",
        include_str!("../../schema/cap-registry.schema.json"),
    ),
    (
        "cap-revocations",
        include_str!("../../schema/cap-revocations.schema.json"),
    ),
    (
        "composite",
        include_str!("../../schema/composite.schema.json"),
    ),
];

/// The records of the composites publications name, against composite.schema.json.
async fn check_composite_schemas(
    store: &Store,
    composites: &[ListedComposite],
    marked: &HashSet<Digest>,
    problems: &mut Problems,
) {
    let Some(validator) = validator("composite") else {
        return;
    };
    for (digest, _, _, path) in composites {
        if !marked.contains(digest) {
            continue;
        }
        let Ok(Some(bytes)) = store.get_named(path.as_ref(), 64 * 1024 * 1024).await else {
            continue;
        };
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            problems.push(format!("composite {digest}: its record is not JSON"));
            continue;
        };
        for error in validator.iter_errors(&value) {
            problems.push(format!(
                "composite {digest}: does not match composite.schema.json at {}: {error}",
                error.instance_path()
            ));
        }
    }
}

fn validator(name: &str) -> Option<jsonschema::Validator> {
    let text = SCHEMAS.iter().find(|(n, _)| *n == name)?.1;
    let schema: serde_json::Value = serde_json::from_str(text).ok()?;
    jsonschema::draft202012::new(&schema).ok()
}

async fn check_schemas(store: &Store, entries: &[(String, RefEntry)], problems: &mut Problems) {
    let validators: BTreeMap<&str, jsonschema::Validator> = SCHEMAS
        .iter()
        .filter_map(|(name, _)| validator(name).map(|v| (*name, v)))
        .collect();
    let check = |what: &str, schema: &str, value: &serde_json::Value, problems: &mut Problems| {
        if let Some(v) = validators.get(schema) {
            for error in v.iter_errors(value) {
                problems.push(format!(
                    "{what}: does not match {schema}.schema.json at {}: {error}",
                    error.instance_path()
                ));
            }
        }
    };
    let mut seen = HashSet::new();
    for (name, entry) in entries {
        let Ok(value) = serde_json::to_value(entry) else {
            continue;
        };
        check(
            &format!("ref {name} generation {}", entry.generation),
            "ref-entry",
            &value,
            problems,
        );
        if !seen.insert(entry.target) {
            continue;
        }
        let schema = match (ref_kind(name), name.split('/').nth(1)) {
            (RefKind::Repository, Some("apt")) => "apt-repo",
            (RefKind::Repository, _) => "rpm-repo",
            (RefKind::AptCell, _) | (RefKind::AptSourceCell, _) => "apt-cell",
            (RefKind::RpmCell, _) => "rpm-cell",
            (RefKind::Publication, Some("apt")) => "apt-publication",
            (RefKind::Publication, _) => "rpm-publication",
            (RefKind::CapList, _) if name.ends_with("issued") => "cap-registry",
            (RefKind::CapList, _) => "cap-revocations",
            (RefKind::Claims, _) => "claim-cell",
            (RefKind::Marker, _) => continue,
        };
        let Ok(manifest) = store.get_json::<serde_json::Value>(&entry.target).await else {
            continue;
        };
        check(
            &format!(
                "{name} generation {} manifest {}",
                entry.generation, entry.target
            ),
            schema,
            &manifest,
            problems,
        );
        let chunk_schema = match schema {
            "apt-cell" if name.ends_with("/source") => "apt-source-chunk",
            "apt-cell" => "apt-chunk",
            "rpm-cell" => "rpm-chunk",
            "claim-cell" => "claim-chunk",
            _ => continue,
        };
        for chunk in manifest["chunks"].as_array().into_iter().flatten() {
            let Some(digest) = chunk["digest"]
                .as_str()
                .and_then(|d| d.parse::<Digest>().ok())
            else {
                continue;
            };
            if seen.insert(digest)
                && let Ok(value) = store.get_json::<serde_json::Value>(&digest).await
            {
                check(&format!("chunk {digest}"), chunk_schema, &value, problems);
            }
        }
    }
}

/// The newest publication of every tree: its index files match what Release or
/// repomd.xml promise, and the signatures verify with the repository key.
async fn check_published(
    store: &Store,
    entries: &[(String, RefEntry)],
    certificate: &[u8],
    problems: &mut Problems,
) {
    let mut newest: BTreeMap<&str, &RefEntry> = BTreeMap::new();
    for (name, entry) in entries.iter().filter(|(n, _)| n.starts_with("published/")) {
        if newest
            .get(name.as_str())
            .is_none_or(|e| e.generation < entry.generation)
        {
            newest.insert(name, entry);
        }
    }
    for (name, entry) in newest {
        let Ok(publication) = store.get_json::<Publication>(&entry.target).await else {
            continue;
        };
        let read = async |path: &str| match publication.files.get(path) {
            Some(file) => store.get_blob(&file.sha256).await.ok(),
            None => None,
        };
        if name.starts_with("published/apt/") {
            let dists = format!("dists/{}", publication.suite);
            let Some(release) = read(&format!("{dists}/Release")).await else {
                problems.push(format!("{name}: no Release"));
                continue;
            };
            let text = String::from_utf8_lossy(&release);
            for line in text
                .lines()
                .skip_while(|l| *l != "SHA256:")
                .skip(1)
                .take_while(|l| l.starts_with(' '))
            {
                let parts: Vec<&str> = line.split_whitespace().collect();
                let (Some(hash), Some(size), Some(path)) =
                    (parts.first(), parts.get(1), parts.get(2))
                else {
                    continue;
                };
                let listed = publication.files.get(&format!("{dists}/{path}"));
                if listed.is_none_or(|f| f.sha256.hex() != *hash || f.size.to_string() != *size) {
                    problems.push(format!(
                        "{name}: Release lists {path} with {hash}, but the published file differs"
                    ));
                }
            }
            match read(&format!("{dists}/Release.gpg")).await {
                Some(signature)
                    if crate::agent::openpgp::verify_detached(
                        certificate,
                        &signature,
                        &release,
                    ) => {}
                _ => problems.push(format!(
                    "{name}: Release.gpg does not verify with the repository key"
                )),
            }
            match read(&format!("{dists}/InRelease")).await {
                Some(signed)
                    if crate::agent::openpgp::verify_cleartext(certificate, &signed)
                        .is_some_and(|t| t.trim_end() == text.trim_end()) => {}
                _ => problems.push(format!(
                    "{name}: InRelease does not verify or does not carry Release"
                )),
            }
        } else {
            let base = format!("{}/repodata", publication.suite);
            let Some(repomd) = read(&format!("{base}/repomd.xml")).await else {
                problems.push(format!("{name}: no repomd.xml"));
                continue;
            };
            let text = String::from_utf8_lossy(&repomd);
            for href in text
                .split("<location href=\"")
                .skip(1)
                .filter_map(|s| s.split('"').next())
            {
                let declared = href
                    .strip_prefix("repodata/")
                    .and_then(|f| f.split('-').next())
                    .unwrap_or_default();
                let listed = publication
                    .files
                    .get(&format!("{}/{href}", publication.suite));
                if listed.is_none_or(|f| f.sha256.hex() != declared) {
                    problems.push(format!(
                        "{name}: repomd.xml names {href}, but the published file differs"
                    ));
                }
            }
            match read(&format!("{base}/repomd.xml.asc")).await {
                Some(signature)
                    if crate::agent::openpgp::verify_detached(certificate, &signature, &repomd) => {
                }
                _ => problems.push(format!(
                    "{name}: repomd.xml.asc does not verify with the repository key"
                )),
            }
        }
    }
}
