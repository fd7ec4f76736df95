//! What differs between repository formats in the repository model: where a
//! definition is stored, which trees it publishes, which cells feed a tree. Each
//! format is a unit type ([`Apt`], [`Rpm`]) implementing [`RepoFormat`]; code that
//! works on any format is generic over it, and [`with_format!`] picks the type for a
//! [`Format`] value in one place. The layers above extend the same types
//! (`ingest::format::IngestFormat`, `publish::PublishFormat`).
//!
//! A third format would be one more `Format` variant, one more unit type here and in
//! [`with_format!`], and its impls beside its parsing, ingest and publishing code.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::formats::Format;
use crate::repo::model::{self, AptRepo, RpmRepo};
use crate::store::{RefName, StoreError};

/// A repository format as the repository model sees it.
pub trait RepoFormat: Send + Sync + 'static {
    const FORMAT: Format;
    /// What the unit of a release change is called in messages: `suite` or `release`.
    const UNIT_NOUN: &'static str;
    /// How many names follow the repository in a cell's ref (`<suite>/<component>/<arch>`,
    /// `<release>/<arch>`) and in a tree's name (`<suite>`, `<release>/<arch>`).
    const CELL_DEPTH: usize;
    const TREE_DEPTH: usize;
    /// A repository's stored definition (`repos/<format>/<name>`).
    type Definition: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;

    /// The ref a repository's definition lives at.
    fn definition_ref(repo: &str) -> Result<RefName, StoreError>;
    /// Private repositories are served only with a read capability.
    fn is_private(definition: &Self::Definition) -> bool;
    /// Every tree the repository publishes: APT suites, RPM `<release>/<arch>` and
    /// `<release>/source`.
    fn trees(definition: &Self::Definition) -> Vec<String>;
    /// The ref a published tree's publications are appended to.
    fn publication_ref(repo: &str, tree: &str) -> Result<RefName, StoreError>;
    /// The unit a tree belongs to, which release batches lock and promotions move:
    /// the APT suite itself, the RPM release of `<release>/<arch>`.
    fn unit_of(tree: &str) -> &str;
    /// Every cell that can feed `unit` (a suite or a release), or None when the
    /// definition has no such unit.
    fn unit_cells(
        repo: &str,
        definition: &Self::Definition,
        unit: &str,
    ) -> Result<Option<Vec<RefName>>, StoreError>;
    /// Every cell a tree's indices list, or None when the definition has no such tree.
    fn tree_cells(
        repo: &str,
        definition: &Self::Definition,
        tree: &str,
    ) -> Result<Option<Vec<RefName>>, StoreError>;
    /// The trees that list a cell, named by the parts of its ref after the repository
    /// (`<suite>/<component>/<arch>`, `<release>/<arch>`).
    fn trees_of_cell(definition: &Self::Definition, cell: &[&str]) -> Vec<String>;
    /// The same when the cell's name alone says (an APT cell's suite), so that no
    /// definition need be read; None when it does not (an RPM noarch cell feeds every
    /// architecture of its release).
    fn trees_of_cell_name(cell: &[&str]) -> Option<Vec<String>> {
        let _ = cell;
        None
    }
    /// The cell a whole-cell capability scope names (`apt/NAME/dists/SUITE/COMPONENT/binary-ARCH`,
    /// `rpm/NAME/RELEASE/ARCH`), and whether it is shared by every architecture of its
    /// suite or release (APT `all`, RPM `noarch` and `src`).
    fn cell_of_scope(scope: &crate::caps::Scope) -> Option<(RefName, bool)>;
    /// How many versions of each package the published indices keep (None: all).
    fn retention_mut(definition: &mut Self::Definition) -> &mut Option<u32>;
    /// The capability scope that covers a unit: `apt/NAME/dists/SUITE`, `rpm/NAME/RELEASE`.
    fn unit_scope(repo: &str, unit: &str) -> String;
    /// This format's part of `known`.
    fn known(known: &mut KnownDefinitions) -> &mut BTreeMap<String, Self::Definition>;
    /// The trees of a unit (a suite or a release), also when the definition does not list
    /// the unit yet: a daemon may hear of a batch before the definition that added it.
    fn trees_of_unit(definition: &Self::Definition, unit: &str) -> Vec<String>;
}

/// Repository definitions as last read, by format and name (a daemon's change
/// discovery keeps them so a change to one cell costs no definition read).
#[derive(Debug, Default)]
pub struct KnownDefinitions {
    pub apt: BTreeMap<String, AptRepo>,
    pub rpm: BTreeMap<String, RpmRepo>,
}

/// APT repositories: suites of components of architectures.
pub struct Apt;

/// RPM repositories: releases of architectures.
pub struct Rpm;

/// Runs `$body` with the type name `$F` bound to the [`RepoFormat`] type of `$format`.
/// The one place a [`Format`] value turns into a type:
/// `with_format!(format, F => F::publication_ref(repo, tree))`.
#[macro_export]
macro_rules! with_format {
    ($format:expr, $F:ident => $body:expr) => {
        match $format {
            $crate::formats::Format::Apt => {
                type $F = $crate::repo::format::Apt;
                $body
            }
            $crate::formats::Format::Rpm => {
                type $F = $crate::repo::format::Rpm;
                $body
            }
        }
    };
}
pub use with_format;

impl RepoFormat for Apt {
    const FORMAT: Format = Format::Apt;
    const UNIT_NOUN: &'static str = "suite";
    const CELL_DEPTH: usize = 3;
    const TREE_DEPTH: usize = 1;
    type Definition = AptRepo;

    fn definition_ref(repo: &str) -> Result<RefName, StoreError> {
        model::repo_ref(repo)
    }

    fn is_private(definition: &AptRepo) -> bool {
        definition.private
    }

    fn trees(definition: &AptRepo) -> Vec<String> {
        definition.suites.iter().map(|s| s.name.clone()).collect()
    }

    fn publication_ref(repo: &str, tree: &str) -> Result<RefName, StoreError> {
        model::publication_ref(repo, tree)
    }

    fn unit_of(tree: &str) -> &str {
        tree
    }

    fn unit_cells(
        repo: &str,
        definition: &AptRepo,
        unit: &str,
    ) -> Result<Option<Vec<RefName>>, StoreError> {
        let Some(suite) = definition.suites.iter().find(|s| s.name == unit) else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for component in &suite.components {
            for arch in suite
                .architectures
                .iter()
                .map(String::as_str)
                .chain(["all", "source"])
            {
                out.push(model::cell_ref(repo, unit, component, arch)?);
            }
        }
        Ok(Some(out))
    }

    fn tree_cells(
        repo: &str,
        definition: &AptRepo,
        tree: &str,
    ) -> Result<Option<Vec<RefName>>, StoreError> {
        Self::unit_cells(repo, definition, tree)
    }

    fn unit_scope(repo: &str, unit: &str) -> String {
        format!("apt/{repo}/dists/{unit}")
    }

    fn retention_mut(definition: &mut AptRepo) -> &mut Option<u32> {
        &mut definition.retention
    }

    fn known(known: &mut KnownDefinitions) -> &mut BTreeMap<String, AptRepo> {
        &mut known.apt
    }

    fn trees_of_cell(_: &AptRepo, cell: &[&str]) -> Vec<String> {
        cell.first()
            .map(|suite| suite.to_string())
            .into_iter()
            .collect()
    }

    /// The suite is the tree, whatever the definition says yet.
    fn trees_of_unit(_: &AptRepo, unit: &str) -> Vec<String> {
        vec![unit.to_string()]
    }

    fn trees_of_cell_name(cell: &[&str]) -> Option<Vec<String>> {
        Some(
            cell.first()
                .map(|suite| suite.to_string())
                .into_iter()
                .collect(),
        )
    }

    fn cell_of_scope(scope: &crate::caps::Scope) -> Option<(RefName, bool)> {
        let repo = scope.repo()?;
        if scope.segments().len() != 6 {
            return None;
        }
        let (Some(suite), Some(component), Some(arch)) = scope.apt_parts() else {
            return None;
        };
        Some((
            model::cell_ref(repo, suite, component, arch).ok()?,
            arch == "all",
        ))
    }
}

impl RepoFormat for Rpm {
    const FORMAT: Format = Format::Rpm;
    const UNIT_NOUN: &'static str = "release";
    const CELL_DEPTH: usize = 2;
    const TREE_DEPTH: usize = 2;
    type Definition = RpmRepo;

    fn definition_ref(repo: &str) -> Result<RefName, StoreError> {
        model::rpm_repo_ref(repo)
    }

    fn is_private(definition: &RpmRepo) -> bool {
        definition.private
    }

    fn trees(definition: &RpmRepo) -> Vec<String> {
        let mut out = Vec::new();
        for release in &definition.releases {
            for arch in &definition.architectures {
                out.push(format!("{release}/{arch}"));
            }
            out.push(format!("{release}/source"));
        }
        out
    }

    fn publication_ref(repo: &str, tree: &str) -> Result<RefName, StoreError> {
        let (release, arch) = tree.split_once('/').unwrap_or((tree, ""));
        model::rpm_publication_ref(repo, release, arch)
    }

    fn unit_of(tree: &str) -> &str {
        tree.split('/').next().unwrap_or_default()
    }

    fn unit_cells(
        repo: &str,
        definition: &RpmRepo,
        unit: &str,
    ) -> Result<Option<Vec<RefName>>, StoreError> {
        if !definition.releases.iter().any(|r| r == unit) {
            return Ok(None);
        }
        definition
            .architectures
            .iter()
            .map(String::as_str)
            .chain(["noarch", "src"])
            .map(|arch| model::rpm_cell_ref(repo, unit, arch))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    fn tree_cells(
        repo: &str,
        definition: &RpmRepo,
        tree: &str,
    ) -> Result<Option<Vec<RefName>>, StoreError> {
        let Some((release, tree_arch)) = tree.split_once('/') else {
            return Ok(None);
        };
        let known = definition.releases.iter().any(|r| r == release)
            && (tree_arch == "source" || definition.architectures.iter().any(|a| a == tree_arch));
        if !known {
            return Ok(None);
        }
        // A binary tree lists its arch and noarch; the source tree lists src.
        let arches = if tree_arch == "source" {
            vec!["src"]
        } else {
            vec![tree_arch, "noarch"]
        };
        arches
            .into_iter()
            .map(|arch| model::rpm_cell_ref(repo, release, arch))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    fn unit_scope(repo: &str, unit: &str) -> String {
        format!("rpm/{repo}/{unit}")
    }

    fn retention_mut(definition: &mut RpmRepo) -> &mut Option<u32> {
        &mut definition.retention
    }

    fn known(known: &mut KnownDefinitions) -> &mut BTreeMap<String, RpmRepo> {
        &mut known.rpm
    }

    /// Every architecture's tree and the source tree, from the architectures alone: a
    /// daemon may hear of a release's batch before the definition that added it.
    fn trees_of_unit(definition: &RpmRepo, unit: &str) -> Vec<String> {
        definition
            .architectures
            .iter()
            .map(|arch| format!("{unit}/{arch}"))
            .chain([format!("{unit}/source")])
            .collect()
    }

    fn cell_of_scope(scope: &crate::caps::Scope) -> Option<(RefName, bool)> {
        let [_, repo, release, arch] = scope.segments() else {
            return None;
        };
        let shared = arch == "noarch" || arch == "src";
        Some((model::rpm_cell_ref(repo, release, arch).ok()?, shared))
    }

    fn trees_of_cell(definition: &RpmRepo, cell: &[&str]) -> Vec<String> {
        let [release, cell_arch] = cell else {
            return Vec::new();
        };
        match *cell_arch {
            "src" => vec![format!("{release}/source")],
            // noarch packages are in every binary tree of the release.
            "noarch" => definition
                .architectures
                .iter()
                .map(|a| format!("{release}/{a}"))
                .collect(),
            arch => vec![format!("{release}/{arch}")],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_count(format: Format, apt: &AptRepo, rpm: &RpmRepo) -> usize {
        with_format!(format, F => {
            let _ = F::UNIT_NOUN;
            match F::FORMAT {
                Format::Apt => Apt::trees(apt).len(),
                Format::Rpm => Rpm::trees(rpm).len(),
            }
        })
    }

    #[test]
    fn each_format_names_its_trees_units_and_refs() {
        let apt = AptRepo {
            kind: model::ManifestKind::AptRepo,
            name: "farm".into(),
            origin: "farm".into(),
            label: "farm".into(),
            private: false,
            suites: vec![model::SuiteDef {
                name: "stable".into(),
                codename: "stable".into(),
                components: vec!["main".into()],
                architectures: vec!["amd64".into()],
                valid_for: None,
                not_automatic: false,
                but_automatic_upgrades: false,
            }],
            retention: None,
            legacy_hashes: false,
        };
        let rpm = RpmRepo {
            kind: model::ManifestKind::RpmRepo,
            name: "el".into(),
            private: true,
            releases: vec!["9".into()],
            architectures: vec!["x86_64".into(), "aarch64".into()],
            sign_packages: false,
            retention: None,
        };
        assert_eq!(Apt::trees(&apt), ["stable"]);
        assert_eq!(Rpm::trees(&rpm), ["9/x86_64", "9/aarch64", "9/source"]);
        assert_eq!(tree_count(Format::Rpm, &apt, &rpm), 3);
        for tree in Rpm::trees(&rpm) {
            assert_eq!(Format::of_tree(&tree), Format::Rpm);
            assert_eq!(Rpm::unit_of(&tree), "9");
        }
        assert_eq!(
            Rpm::publication_ref("el", "9/x86_64").unwrap().to_string(),
            "published/rpm/el/9/x86_64"
        );
        assert_eq!(
            Apt::publication_ref("farm", "stable").unwrap().to_string(),
            "published/apt/farm/stable"
        );
        let cells = Apt::unit_cells("farm", &apt, "stable").unwrap().unwrap();
        let cells: Vec<String> = cells.iter().map(ToString::to_string).collect();
        assert_eq!(
            cells,
            [
                "cells/apt/farm/stable/main/amd64",
                "cells/apt/farm/stable/main/all",
                "cells/apt/farm/stable/main/source"
            ]
        );
        assert_eq!(Rpm::unit_cells("el", &rpm, "9").unwrap().unwrap().len(), 4);
        assert!(Rpm::unit_cells("el", &rpm, "8").unwrap().is_none());
        assert!(Apt::unit_cells("farm", &apt, "beta").unwrap().is_none());
        let listed = |tree| -> Vec<String> {
            let cells = Rpm::tree_cells("el", &rpm, tree).unwrap();
            cells.into_iter().flatten().map(|c| c.to_string()).collect()
        };
        assert_eq!(
            listed("9/x86_64"),
            ["cells/rpm/el/9/x86_64", "cells/rpm/el/9/noarch"]
        );
        assert_eq!(listed("9/source"), ["cells/rpm/el/9/src"]);
        assert!(Rpm::tree_cells("el", &rpm, "9/ppc64le").unwrap().is_none());
        assert!(Rpm::tree_cells("el", &rpm, "9").unwrap().is_none());
        assert_eq!(
            Rpm::trees_of_cell(&rpm, &["9", "noarch"]),
            ["9/x86_64", "9/aarch64"]
        );
        assert_eq!(Rpm::trees_of_cell(&rpm, &["9", "src"]), ["9/source"]);
        assert_eq!(Rpm::trees_of_unit(&rpm, "9"), Rpm::trees(&rpm));
        // A release the cached definition does not list yet still names its trees.
        assert_eq!(Rpm::trees_of_unit(&rpm, "10").len(), 3);
        assert_eq!(
            Apt::trees_of_cell(&apt, &["stable", "main", "all"]),
            ["stable"]
        );
    }
}
