//! Path claims: which content each served path of a repository names, across every
//! cell of it.
//!
//! Cells are written one at a time, each by its own cap, but some paths are shared by
//! several cells: an APT pool (`pool/<component>/...`) serves every suite of the
//! repository, and an RPM release's `Packages/` serves `noarch` packages in every
//! architecture's tree. Two uploads through different cells, or two identities that
//! map onto one file name (`1.0-1` and `1:1.0-1`: the epoch is not part of the file
//! name), would otherwise put two contents under one path, and whichever the server
//! found first would be what clients of the other cell fetch.
//!
//! So before a package's record names a path, the path is *claimed* for the package's
//! uploaded bytes, once and for good (pool files are served as immutable, so a cache
//! may keep them forever). A path already claimed for other bytes is not taken over:
//! the package gets a path of its own under `sha256-<first 16 hex digits>/` beside the
//! usual one ([`own_path`]), which is claimed in turn. Nothing one cell uploads can
//! change what another cell's clients fetch.
//!
//! Claims are kept like cells ([`crate::repo::cells`]), sharded 16 ways by the path's sha256
//! under `claims/<kind>/<repo>/<hex digit>`: a claim is a compare-and-swap on one
//! small ref, atomic between daemons sharing a bucket, and a bulk import claims all its
//! paths with one write per shard. Staged source files (tarballs a later `.dsc` names)
//! are claimed as `staged/<suite>/<component>/<sha256>`, so that a `.dsc` or `.changes`
//! can only name files uploaded through a cap of its own cell.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::repo::cells::{self, AddOutcome};
use crate::repo::model::{ManifestKind, Record};
use crate::store::{RefName, Result, Store};
use crate::util::digest::Digest;

/// One claimed path and the uploaded bytes it names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    pub path: String,
    pub sha256: Digest,
}

impl Record for Claim {
    const CELL_KIND: ManifestKind = ManifestKind::ClaimCell;
    const CHUNK_KIND: ManifestKind = ManifestKind::ClaimChunk;
    fn name(&self) -> &str {
        &self.path
    }
    fn identity(&self) -> (&str, Cow<'_, str>, &str) {
        (&self.path, Cow::Borrowed(""), "")
    }
    fn upload_digest(&self) -> Digest {
        self.sha256
    }
    fn retention_group(&self) -> (String, String) {
        (self.path.clone(), String::new())
    }
    fn version_cmp(&self, _other: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
    fn served_path(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.path)
    }
}

/// Which repository's paths: `apt` or `rpm`, and its name.
#[derive(Debug, Clone, Copy)]
pub struct Domain<'a> {
    pub kind: &'a str,
    pub repo: &'a str,
}

impl Domain<'_> {
    /// The shard ref holding `path`'s claim.
    fn shard(&self, path: &str) -> Result<RefName> {
        let first = Digest::of(path.as_bytes()).as_bytes()[0] >> 4;
        RefName::new(format!("claims/{}/{}/{first:x}", self.kind, self.repo))
    }
}

/// What claiming a path found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// The path is now, or already was, this content's.
    Ours,
    /// The path names other content.
    Taken(Digest),
}

/// Claim each `(path, digest)`; one outcome per pair, in order. A path listed twice with
/// other bytes goes to the first.
pub async fn claim_all(
    store: &Store,
    domain: Domain<'_>,
    claims: Vec<Claim>,
    actor: &str,
) -> Result<Vec<Claimed>> {
    let mut by_shard: BTreeMap<RefName, Vec<(usize, Claim)>> = BTreeMap::new();
    for (i, claim) in claims.into_iter().enumerate() {
        by_shard
            .entry(domain.shard(&claim.path)?)
            .or_default()
            .push((i, claim));
    }
    let total: usize = by_shard.values().map(Vec::len).sum();
    let mut out = vec![Claimed::Ours; total];
    for (shard, entries) in by_shard {
        let (indices, claims): (Vec<usize>, Vec<Claim>) = entries.into_iter().unzip();
        let wanted: Vec<Digest> = claims.iter().map(|c| c.sha256).collect();
        let outcomes = cells::add_packages(store, &shard, claims, actor).await?;
        for ((i, outcome), digest) in indices.into_iter().zip(outcomes).zip(wanted) {
            out[i] = match outcome {
                AddOutcome::Conflict { existing } if existing != digest => Claimed::Taken(existing),
                _ => Claimed::Ours,
            };
        }
    }
    Ok(out)
}

/// Claim one path for `digest`.
pub async fn claim(
    store: &Store,
    domain: Domain<'_>,
    path: &str,
    digest: Digest,
    actor: &str,
) -> Result<Claimed> {
    let claim = Claim {
        path: path.to_string(),
        sha256: digest,
    };
    let mut outcomes = claim_all(store, domain, vec![claim], actor).await?;
    Ok(outcomes.pop().unwrap_or(Claimed::Ours))
}

/// The content `path` is claimed for, if any.
pub async fn lookup(store: &Store, domain: Domain<'_>, path: &str) -> Result<Option<Digest>> {
    Ok(
        cells::find::<Claim>(store, &domain.shard(path)?, path, "", "")
            .await?
            .map(|c| c.sha256),
    )
}

/// The path a package gets when its usual one names other content: the same file name
/// in a directory named by its own digest, beside the usual one.
pub fn own_path(path: &str, digest: &Digest) -> String {
    let prefix = &digest.hex()[..16];
    match path.rsplit_once('/') {
        Some((dir, file)) => format!("{dir}/sha256-{prefix}/{file}"),
        None => format!("sha256-{prefix}/{path}"),
    }
}

/// The path a package of `digest` is served at: `usual` when it is free or already
/// this content's, else [`own_path`]. `Err` names the content holding both (only
/// possible if someone claimed this content's own path for other bytes).
pub async fn place(
    store: &Store,
    domain: Domain<'_>,
    usual: &str,
    digest: Digest,
    actor: &str,
) -> Result<std::result::Result<String, Digest>> {
    let mut placed = place_all(store, domain, vec![(usual.to_string(), digest)], actor).await?;
    Ok(placed.pop().unwrap_or(Ok(usual.to_string())))
}

/// [`place`] for many packages at once, with one write per shard and round.
pub async fn place_all(
    store: &Store,
    domain: Domain<'_>,
    wanted: Vec<(String, Digest)>,
    actor: &str,
) -> Result<Vec<std::result::Result<String, Digest>>> {
    let claims: Vec<Claim> = wanted
        .iter()
        .map(|(path, digest)| Claim {
            path: path.clone(),
            sha256: *digest,
        })
        .collect();
    let first = claim_all(store, domain, claims, actor).await?;
    let mut placed: Vec<std::result::Result<String, Digest>> = Vec::with_capacity(wanted.len());
    let mut second: Vec<(usize, Claim)> = Vec::new();
    for (i, ((path, digest), outcome)) in wanted.iter().zip(first).enumerate() {
        match outcome {
            Claimed::Ours => placed.push(Ok(path.clone())),
            Claimed::Taken(_) => {
                let own = own_path(path, digest);
                placed.push(Ok(own.clone()));
                second.push((
                    i,
                    Claim {
                        path: own,
                        sha256: *digest,
                    },
                ));
            }
        }
    }
    if !second.is_empty() {
        let (indices, claims): (Vec<usize>, Vec<Claim>) = second.into_iter().unzip();
        let outcomes = claim_all(store, domain, claims, actor).await?;
        for (i, outcome) in indices.into_iter().zip(outcomes) {
            if let Claimed::Taken(existing) = outcome {
                placed[i] = Err(existing);
            }
        }
    }
    Ok(placed)
}

/// The claim that marks a staged source file as uploaded through a cap of this cell.
pub fn staged_path(suite: &str, component: &str, digest: &Digest) -> String {
    format!("staged/{suite}/{component}/{}", digest.hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain() -> Domain<'static> {
        Domain {
            kind: "apt",
            repo: "r",
        }
    }

    #[tokio::test]
    async fn a_path_names_one_content_and_a_second_gets_its_own() {
        let store = Store::memory();
        let usual = "pool/main/h/hello/hello_1.0-1_amd64.deb";
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        assert_eq!(
            place(&store, domain(), usual, a, "t").await.unwrap(),
            Ok(usual.to_string())
        );
        // The same bytes again (another suite, or a retry) keep the usual path.
        assert_eq!(
            place(&store, domain(), usual, a, "t").await.unwrap(),
            Ok(usual.to_string())
        );
        let own = place(&store, domain(), usual, b, "t")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(own, own_path(usual, &b));
        assert!(own.starts_with("pool/main/h/hello/sha256-"), "{own}");
        assert!(own.ends_with("/hello_1.0-1_amd64.deb"), "{own}");
        assert_eq!(lookup(&store, domain(), usual).await.unwrap(), Some(a));
        assert_eq!(lookup(&store, domain(), &own).await.unwrap(), Some(b));
        // Another repository's paths are its own.
        let other = Domain {
            kind: "apt",
            repo: "s",
        };
        assert_eq!(
            place(&store, other, usual, b, "t").await.unwrap(),
            Ok(usual.to_string())
        );
    }

    #[tokio::test]
    async fn many_paths_are_placed_at_once() {
        let store = Store::memory();
        let wanted: Vec<(String, Digest)> = (0..300)
            .map(|i| {
                (
                    format!("pool/main/p/p{i}/p{i}_1_all.deb"),
                    Digest::of(&[i as u8, 1]),
                )
            })
            .collect();
        let placed = place_all(&store, domain(), wanted.clone(), "t")
            .await
            .unwrap();
        assert!(
            placed
                .iter()
                .zip(&wanted)
                .all(|(p, (w, _))| p.as_ref() == Ok(w))
        );
        let clashing: Vec<(String, Digest)> = wanted
            .iter()
            .map(|(path, _)| (path.clone(), Digest::of(path.as_bytes())))
            .collect();
        let placed = place_all(&store, domain(), clashing.clone(), "t")
            .await
            .unwrap();
        for (p, (path, digest)) in placed.iter().zip(&clashing) {
            assert_eq!(p.as_ref(), Ok(&own_path(path, digest)));
        }
    }
}
