//! RPM repositories: dnf/yum and zypper read `repodata/repomd.xml` (signed by
//! `repomd.xml.asc`), which names primary, filelists and other XML files by
//! their sha256. Each package's entries are rendered once at upload, the way
//! createrepo_c 0.17 writes them, and publishing concatenates them.

pub mod header;
pub mod inspect;
pub mod text;
pub mod xml;

pub use inspect::{RpmError, RpmInfo};

use crate::formats::package_bytes::PackageBytes;

/// Inspect and verify an `.rpm`, and refuse, before anything is stored, one whose
/// repodata entries would not be XML (see [`xml::check_renderable`]).
pub fn inspect_rpm(source: PackageBytes<'_>) -> Result<RpmInfo, RpmError> {
    let info = inspect::parse_rpm(source)?;
    xml::check_renderable(&info).map_err(RpmError::Unrenderable)?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_control_character_in_the_summary_is_refused_naming_the_field() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/rpms/malformed/control-caprepo-1.0-1.noarch.rpm");
        // The header parses; its summary could not be written into primary.xml.
        assert!(super::inspect::parse_rpm(super::PackageBytes::File(&path)).is_ok());
        let why = super::inspect_rpm(super::PackageBytes::File(&path))
            .unwrap_err()
            .to_string();
        assert!(
            why.contains("summary contains the control character U+0001"),
            "{why}"
        );
    }
}
