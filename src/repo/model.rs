//! Repository state as immutable manifests. A repository definition, each cell's
//! package list (split into chunks so one upload rewrites one chunk), and each
//! published suite are canonical JSON blobs named by their sha256; refs point at
//! them. `schema/` holds the JSON Schema of every manifest here.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::{RefName, Result};
use crate::util::digest::Digest;

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
    /// Keep only the newest N versions of each package (per architecture) in the published indices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<u32>,
    /// Also list the legacy MD5 and SHA-1 hashes: `MD5sum` and `SHA1` in Packages, `MD5Sum` and
    /// `SHA1` in Release, for mirroring tools that read them. SHA-256 alone is the default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub legacy_hashes: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteDef {
    pub name: String,
    pub codename: String,
    pub components: Vec<String>,
    pub architectures: Vec<String>,
    /// Seconds a Release stays valid (`Valid-Until`); the manager re-signs at half-life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_for: Option<u64>,
    /// `NotAutomatic: yes`: apt installs from this suite only when asked (like experimental).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_automatic: bool,
    /// `ButAutomaticUpgrades: yes`: ... but upgrades what was installed from it (like backports).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub but_automatic_upgrades: bool,
}

impl SuiteDef {
    /// True when a publication built at `built_at` should be re-signed before its Valid-Until.
    pub fn needs_resign(&self, built_at: i64, now: i64) -> bool {
        self.valid_for
            .is_some_and(|valid| now >= built_at + (valid as i64) / 2)
    }
}

pub use crate::store::ManifestKind;

/// `cells/apt/<repo>/<suite>/<component>/<arch>` or `cells/rpm/<repo>/<release>/<arch>`:
/// the packages of one cell. For APT, `all` is a cell of its own per component and
/// is merged into every arch's index; for RPM, `noarch` and `src` are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cell {
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
pub struct Chunk<P> {
    pub kind: ManifestKind,
    /// Sorted by identity (name, version, architecture).
    pub packages: Vec<P>,
}

pub type AptChunk = Chunk<AptPackage>;

/// What cells need to know of a package record, APT or RPM.
pub trait Record: Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static {
    const CELL_KIND: ManifestKind;
    const CHUNK_KIND: ManifestKind;
    fn name(&self) -> &str;
    /// Name, full version and architecture: two packages with the same identity conflict.
    /// The version is borrowed where the record stores it whole (APT), since cell writes
    /// compare and sort identities many times per package.
    fn identity(&self) -> (&str, Cow<'_, str>, &str);
    /// The uploaded bytes: the same identity with other bytes is a conflict.
    fn upload_digest(&self) -> Digest;
    /// What retention counts versions within: name and architecture.
    fn retention_group(&self) -> (String, String);
    /// Orders two versions of one retention group, oldest first.
    fn version_cmp(&self, other: &Self) -> std::cmp::Ordering;
    /// The path clients fetch the package at (relative to its repository or tree): two
    /// records of a cell with other bytes may never share it, whatever their identities
    /// (`1.0-1` and `1:1.0-1` have one file name: the epoch is not part of it).
    fn served_path(&self) -> Cow<'_, str>;
}

impl Record for AptPackage {
    const CELL_KIND: ManifestKind = ManifestKind::AptCell;
    const CHUNK_KIND: ManifestKind = ManifestKind::AptChunk;
    fn name(&self) -> &str {
        &self.name
    }
    fn identity(&self) -> (&str, Cow<'_, str>, &str) {
        (&self.name, Cow::Borrowed(&self.version), &self.architecture)
    }
    fn upload_digest(&self) -> Digest {
        self.sha256
    }
    fn retention_group(&self) -> (String, String) {
        (self.name.clone(), self.architecture.clone())
    }
    fn version_cmp(&self, other: &Self) -> std::cmp::Ordering {
        crate::util::versions::dpkg_cmp(&self.version, &other.version)
    }
    fn served_path(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.filename)
    }
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

/// `published/apt/<repo>/<suite>` and `published/rpm/<repo>/<release>/<arch>`: everything
/// a client can fetch for one APT suite or RPM tree (`kind` says which).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publication {
    pub kind: ManifestKind,
    pub repo: String,
    pub suite: String,
    pub built_at: i64,
    /// The repository definition and cell generations this was built from.
    pub inputs: BTreeMap<String, u64>,
    /// Paths such as `dists/<suite>/InRelease`, including every `by-hash/SHA256/<hex>` alias.
    pub files: BTreeMap<String, FileEntry>,
    /// Pool paths listed inline (source packages, RPM trees).
    pub pool: BTreeMap<String, FileEntry>,
    /// Blobs of further pool paths, one per cell chunk (a JSON object path -> file), so a
    /// one-package change writes one small blob instead of the suite's whole pool list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pool_chunks: Vec<Digest>,
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

/// `repos/rpm/<name>`: an RPM repository's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpmRepo {
    pub kind: ManifestKind,
    pub name: String,
    pub private: bool,
    /// Releases, e.g. `12`, `13`: what `$releasever` expands to.
    pub releases: Vec<String>,
    /// Binary architectures, e.g. `x86_64`; `noarch` and `src` packages are added to these.
    pub architectures: Vec<String>,
    /// Sign every uploaded package's header with the agent's key.
    pub sign_packages: bool,
    /// Keep only the newest N versions of each package (per architecture) in the published repodata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<u32>,
}

/// One package in an RPM cell. Its repodata entries are rendered at upload and kept as blobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpmPackage {
    pub name: String,
    pub epoch: u32,
    pub version: String,
    pub release: String,
    pub arch: String,
    /// Path relative to the release/arch tree, `Packages/<first letter>/<file>`.
    pub location: String,
    /// The stored (signed, when the repository signs) package.
    pub size: u64,
    pub sha256: Digest,
    /// The bytes the build worker uploaded; identity conflicts are judged on these.
    pub uploaded_sha256: Digest,
    pub signed: bool,
    /// Records written before `entries` name each repodata entry's blob; read, never written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filelists: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other: Option<Digest>,
    /// The package's primary, filelists and other entries, one after another in one blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<RpmEntries>,
    pub uploaded_at: i64,
    pub uploaded_by: String,
}

/// One blob holding a package's three repodata entries: one file to create per package
/// instead of three, which is what bounds a bulk import (file creation, not hashing).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpmEntries {
    pub digest: Digest,
    /// Bytes of primary, filelists and other, in that order: the blob is their concatenation.
    pub sizes: [u64; 3],
}

impl RpmPackage {
    /// Every blob holding this package's repodata entries.
    pub fn entry_blobs(&self) -> Vec<Digest> {
        let mut blobs: Vec<Digest> = [self.primary, self.filelists, self.other]
            .into_iter()
            .flatten()
            .collect();
        blobs.extend(self.entries.map(|e| e.digest));
        blobs
    }
}

impl RpmPackage {
    pub fn evr(&self) -> String {
        format!("{}:{}-{}", self.epoch, self.version, self.release)
    }
}

impl Record for RpmPackage {
    const CELL_KIND: ManifestKind = ManifestKind::RpmCell;
    const CHUNK_KIND: ManifestKind = ManifestKind::RpmChunk;
    fn name(&self) -> &str {
        &self.name
    }
    fn identity(&self) -> (&str, Cow<'_, str>, &str) {
        (&self.name, Cow::Owned(self.evr()), &self.arch)
    }
    fn upload_digest(&self) -> Digest {
        self.uploaded_sha256
    }
    fn retention_group(&self) -> (String, String) {
        (self.name.clone(), self.arch.clone())
    }
    fn version_cmp(&self, other: &Self) -> std::cmp::Ordering {
        crate::util::versions::rpm_cmp(
            (self.epoch, &self.version, &self.release),
            (other.epoch, &other.version, &other.release),
        )
    }
    fn served_path(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.location)
    }
}

pub fn rpm_repo_ref(repo: &str) -> Result<RefName> {
    RefName::new(format!("repos/rpm/{repo}"))
}

pub fn rpm_cell_ref(repo: &str, release: &str, arch: &str) -> Result<RefName> {
    RefName::new(format!("cells/rpm/{repo}/{release}/{arch}"))
}

/// A published RPM tree: `<release>/<arch>` or `<release>/source`.
pub fn rpm_publication_ref(repo: &str, release: &str, tree: &str) -> Result<RefName> {
    RefName::new(format!("published/rpm/{repo}/{release}/{tree}"))
}

/// One source package in a component's `source` cell: the `.dsc` and the files it names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AptSource {
    pub name: String,
    pub version: String,
    /// Pool directory, `pool/<component>/<prefix>/<source>`.
    pub directory: String,
    pub dsc: SourceFile,
    /// The files the .dsc lists (tarballs, diffs), all stored as blobs.
    pub files: Vec<SourceFile>,
    /// The .dsc paragraph, its PGP armor (if any) removed.
    pub control: String,
    pub uploaded_at: i64,
    pub uploaded_by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceFile {
    pub name: String,
    pub sha256: Digest,
    pub size: u64,
    /// MD5 and SHA-1 (hex), computed from the stored bytes at upload, for the `Files` and
    /// `Checksums-Sha1` lists Debian Policy requires in Sources. Records written before
    /// they were kept have neither, and their stanzas list SHA-256 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
}

impl Record for AptSource {
    const CELL_KIND: ManifestKind = ManifestKind::AptCell;
    const CHUNK_KIND: ManifestKind = ManifestKind::AptSourceChunk;
    fn name(&self) -> &str {
        &self.name
    }
    fn identity(&self) -> (&str, Cow<'_, str>, &str) {
        (&self.name, Cow::Borrowed(&self.version), "source")
    }
    fn upload_digest(&self) -> Digest {
        self.dsc.sha256
    }
    fn retention_group(&self) -> (String, String) {
        (self.name.clone(), String::new())
    }
    fn version_cmp(&self, other: &Self) -> std::cmp::Ordering {
        crate::util::versions::dpkg_cmp(&self.version, &other.version)
    }
    fn served_path(&self) -> Cow<'_, str> {
        Cow::Owned(format!("{}/{}", self.directory, self.dsc.name))
    }
}
