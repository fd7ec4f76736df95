//! The `Release` file: the root of trust for one suite. It names every index
//! file with its size and SHA256; apt checks the signature on Release (InRelease
//! or Release.gpg) and then each index against it. `Acquire-By-Hash: yes` tells
//! apt to fetch indices as `by-hash/SHA256/<hex>`, which never change, so a
//! client that read an older Release can still fetch the matching indices while
//! a new publish replaces the named files (no "Hash Sum mismatch").

use crate::repo::model::{AptRepo, SuiteDef};

pub struct IndexFile {
    /// Path relative to `dists/<suite>/`, e.g. `main/binary-amd64/Packages.xz`.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// MD5, SHA-1 and SHA-512 (hex), for a repository that lists the legacy hashes.
    pub legacy: Option<[String; 3]>,
}

pub fn render(repo: &AptRepo, suite: &SuiteDef, date_unix: i64, files: &[IndexFile]) -> String {
    let mut out = String::new();
    out.push_str(&format!("Origin: {}\n", repo.origin));
    out.push_str(&format!("Label: {}\n", repo.label));
    out.push_str(&format!("Suite: {}\n", suite.name));
    out.push_str(&format!("Codename: {}\n", suite.codename));
    out.push_str(&format!(
        "Date: {}\n",
        crate::util::time::rfc2822_utc(date_unix)
    ));
    out.push_str(&format!(
        "Architectures: {}\n",
        suite.architectures.join(" ")
    ));
    out.push_str(&format!("Components: {}\n", suite.components.join(" ")));
    if let Some(valid_for) = suite.valid_for {
        out.push_str(&format!(
            "Valid-Until: {}\n",
            crate::util::time::rfc2822_utc(date_unix.saturating_add(valid_for as i64))
        ));
    }
    if suite.not_automatic {
        out.push_str("NotAutomatic: yes\n");
    }
    if suite.but_automatic_upgrades {
        out.push_str("ButAutomaticUpgrades: yes\n");
    }
    out.push_str("Acquire-By-Hash: yes\n");
    // With the legacy hashes on, the families apt-ftparchive lists, in its order.
    let legacy = files.iter().all(|f| f.legacy.is_some()) && !files.is_empty();
    let families: &[(&str, Option<usize>)] = if legacy {
        &[
            ("MD5Sum", Some(0)),
            ("SHA1", Some(1)),
            ("SHA256", None),
            ("SHA512", Some(2)),
        ]
    } else {
        &[("SHA256", None)]
    };
    for (family, index) in families {
        out.push_str(&format!("{family}:\n"));
        for file in files {
            let hash = match (index, &file.legacy) {
                (Some(i), Some(legacy)) => legacy[*i].as_str(),
                _ => file.sha256.as_str(),
            };
            out.push_str(&format!(" {hash} {:>16} {}\n", file.size, file.path));
        }
    }
    out
}
