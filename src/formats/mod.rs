//! The package formats caprepo takes in: Debian binary and source packages
//! ([`deb`]) and RPM packages ([`rpm`]), each parsed with bounds of its own and
//! refused where the reference tools (dpkg-deb, rpm -K) refuse; [`package_bytes`] is
//! the bytes of one upload, in memory or in a spool file.

pub mod deb;
pub mod package_bytes;
pub mod rpm;

/// The repository formats caprepo serves. What the manager, discovery, releases, uploads
/// and imports do differently for each is behind the traits over it
/// (`repo::format::RepoFormat`, `ingest::format::IngestFormat`, `publish::PublishFormat`);
/// the name is how the format is written in scopes, refs and URLs (`apt/...`, `rpm/...`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// APT repositories of `.deb` (and Debian source) packages: suites of components.
    Apt,
    /// RPM repositories of `.rpm` packages: releases of architectures.
    Rpm,
}

impl Format {
    /// Every format, in the order a daemon loads and lists them.
    pub const ALL: [Format; 2] = [Format::Apt, Format::Rpm];

    pub fn name(self) -> &'static str {
        match self {
            Format::Apt => "apt",
            Format::Rpm => "rpm",
        }
    }

    /// The format named `apt` or `rpm`; None for anything else (a scope's `*`).
    pub fn parse(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The format of a published tree's name: APT suites are one name, RPM trees are
    /// `<release>/<arch>` (APT suite names never contain a slash).
    pub fn of_tree(tree: &str) -> Format {
        if tree.contains('/') {
            Format::Rpm
        } else {
            Format::Apt
        }
    }

    /// The format a package file of this name is uploaded to: `.rpm` to RPM; `.deb`,
    /// `.dsc`, `.changes` and the files of a Debian source package to APT.
    pub fn of_file(file_name: &str) -> Option<Format> {
        if file_name.ends_with(".rpm") {
            Some(Format::Rpm)
        } else if file_name.ends_with(".deb") || deb::paths::is_source_file(file_name) {
            Some(Format::Apt)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::Format;

    #[test]
    fn formats_are_named_as_in_scopes_and_parse_back() {
        for format in Format::ALL {
            assert_eq!(Format::parse(format.name()), Some(format));
            assert_eq!(
                serde_json::to_string(&format).unwrap(),
                format!("\"{format}\"")
            );
        }
        assert_eq!(Format::parse("*"), None);
    }

    #[test]
    fn trees_and_files_tell_their_format() {
        assert_eq!(Format::of_tree("bookworm"), Format::Apt);
        assert_eq!(Format::of_tree("el9/x86_64"), Format::Rpm);
        assert_eq!(Format::of_file("hello_1.0_amd64.deb"), Some(Format::Apt));
        assert_eq!(Format::of_file("hello_1.0.orig.tar.gz"), Some(Format::Apt));
        assert_eq!(Format::of_file("hello_1.0.dsc"), Some(Format::Apt));
        assert_eq!(Format::of_file("hello-1.0-1.x86_64.rpm"), Some(Format::Rpm));
        assert_eq!(Format::of_file("notes.txt"), None);
    }
}
