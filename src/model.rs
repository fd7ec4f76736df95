//! Repository state as immutable manifests. A repository definition, each cell's
//! package list (split into chunks so one upload rewrites one chunk), and each
//! published suite are canonical JSON blobs named by their sha256; refs point at
//! them. `schema/` holds the JSON Schema of every manifest here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::store::{RefName, Result};

/// `repos/apt/<name>`: an APT repository's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AptRepo {
    pub kind: ManifestKind,
    pub name: String,
    pub origin: String,
    pub label: String,
    pub private: bool,
    pub suites: Vec<SuiteDef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteDef {
    pub name: String,
    pub codename: String,
    pub components: Vec<String>,
    pub architectures: Vec<String>,
}

/// Tag carried by every manifest so a blob says what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManifestKind {
    AptRepo,
    AptCell,
    AptChunk,
    AptPublication,
    CapRegistry,
    CapRevocations,
}

/// `cells/apt/<repo>/<suite>/<component>/<arch>`: the packages of one cell. `all`
/// is a cell of its own per component and is merged into every arch's index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AptCell {
    pub kind: ManifestKind,
    pub chunks: Vec<ChunkRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkRef {
    /// First byte of sha256(package name): an even spread, stable as the cell grows.
    pub bucket: u8,
    pub digest: Digest,
    pub packages: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AptChunk {
    pub kind: ManifestKind,
    /// Sorted by (name, version, architecture).
    pub packages: Vec<AptPackage>,
}

/// One binary package in a cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AptPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub source: String,
    /// The control paragraph as shipped in the .deb (surrounding blank lines dropped).
    pub control: String,
    /// Pool path relative to the repository root, `pool/<component>/<prefix>/<source>/<file>`.
    pub filename: String,
    pub size: u64,
    pub sha256: Digest,
    /// Blob with the package's file list (one path per line), kept for Contents.
    pub files: Digest,
    pub uploaded_at: i64,
    pub uploaded_by: String,
}

/// `published/apt/<repo>/<suite>`: everything a client can fetch for one suite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AptPublication {
    pub kind: ManifestKind,
    pub repo: String,
    pub suite: String,
    pub built_at: i64,
    /// The repository definition and cell generations this was built from.
    pub inputs: BTreeMap<String, u64>,
    /// Paths such as `dists/<suite>/InRelease`, including every `by-hash/SHA256/<hex>` alias.
    pub files: BTreeMap<String, FileEntry>,
    /// Pool paths of every package this suite lists.
    pub pool: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub sha256: Digest,
    pub size: u64,
}

pub fn repo_ref(repo: &str) -> Result<RefName> {
    RefName::new(format!("repos/apt/{repo}"))
}

pub fn cell_ref(repo: &str, suite: &str, component: &str, arch: &str) -> Result<RefName> {
    RefName::new(format!("cells/apt/{repo}/{suite}/{component}/{arch}"))
}

pub fn publication_ref(repo: &str, suite: &str) -> Result<RefName> {
    RefName::new(format!("published/apt/{repo}/{suite}"))
}

pub fn bucket_of(name: &str) -> u8 {
    Digest::of(name.as_bytes()).as_bytes()[0]
}
