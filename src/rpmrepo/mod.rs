//! RPM repositories: dnf/yum and zypper read `repodata/repomd.xml` (signed by
//! `repomd.xml.asc`), which names primary, filelists and other XML files by
//! their sha256. Each package's entries are rendered once at upload, the way
//! createrepo_c 0.17 writes them, and publishing concatenates them.

pub mod fragments;
pub mod header;
pub mod ingest;
pub mod inspect;
pub mod next_publish;
pub mod publish;
pub mod sign;
pub mod text;
pub mod xml;

pub use inspect::{RpmError, RpmInfo, inspect_rpm};
