//! `Contents-<arch>`: which package ships which file, per component and
//! architecture, for `apt-file` and friends. Built from the file list each
//! package's upload stored (one small blob per package), so publishing never
//! reopens a .deb; the per-package lists are what make this incremental.
//!
//! Every path in a list passed `deb::paths::contents_path` at upload, so it renders
//! into one valid line; a list stored before that rule existed is filtered through it
//! again here, so an old upload cannot forge a line either.

use std::collections::{BTreeMap, BTreeSet};

use crate::repo::model::AptPackage;
use crate::store::{Result, Store};

/// The package's `Section`, defaulting as the archive does.
fn section(package: &AptPackage) -> &str {
    package
        .control
        .lines()
        .find_map(|line| line.strip_prefix("Section:"))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("misc")
}

/// Render Contents: one line per path, `path<spaces>section/package[,section/package...]`, sorted.
pub async fn render(store: &Store, packages: &[&AptPackage]) -> Result<String> {
    // Local reads are a blocking-pool trip each: a few at once keep both cores busy.
    let reads: Vec<_> = packages
        .iter()
        .map(|p| {
            let (store, files) = (store.clone(), p.files);
            async move { store.held_or_get(&files).await }
        })
        .collect();
    let lists: Vec<bytes::Bytes> = crate::util::parallel::in_order(reads, 8).await?;
    let mut owners: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (package, list) in packages.iter().zip(lists) {
        let owner = format!("{}/{}", section(package), package.name);
        for path in String::from_utf8_lossy(&list).split('\n').filter(|path| {
            crate::formats::deb::paths::contents_path(path.as_bytes(), false) == Ok(Some(path))
        }) {
            owners
                .entry(path.to_string())
                .or_default()
                .insert(owner.clone());
        }
    }
    let mut out = String::new();
    for (path, who) in owners {
        let who: Vec<String> = who.into_iter().collect();
        out.push_str(&format!("{path:<55} {}\n", who.join(",")));
    }
    Ok(out)
}
