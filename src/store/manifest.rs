//! The tag every manifest carries, so a stored JSON blob says what it is. The
//! manifests themselves belong to the layers that write them (repositories, cells
//! and publications in `repo::model`, capability registries in `caps`); the list
//! of kinds lives here, below them all, since `schema/` and `verify` read any blob
//! by its tag.

use serde::{Deserialize, Serialize};

/// Tag carried by every manifest so a blob says what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManifestKind {
    AptRepo,
    AptCell,
    AptChunk,
    AptPublication,
    AptSourceChunk,
    RpmRepo,
    RpmCell,
    RpmChunk,
    ClaimCell,
    ClaimChunk,
    RpmPublication,
    CapRegistry,
    CapRevocations,
}
