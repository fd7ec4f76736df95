//! The `Packages` index: one deb822 stanza per binary package, the package's own
//! control paragraph plus where to fetch it (`Filename`) and how to check it
//! (`Size`, `SHA256`). apt verifies the downloaded .deb against these.

use crate::repo::model::AptPackage;

/// Fields the archive owns: a package may not smuggle its own values in.
const ARCHIVE_FIELDS: &[&str] = &["filename", "size", "md5sum", "sha1", "sha256", "sha512"];

/// A package's MD5 and SHA-1 (hex), for repositories that list the legacy hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyHashes {
    pub md5: String,
    pub sha1: String,
}

/// Render one stanza, ending with a blank line. `legacy` adds `MD5sum` and `SHA1` before
/// `SHA256`, in the order dpkg-scanpackages writes them.
pub fn stanza(package: &AptPackage, legacy: Option<&LegacyHashes>, out: &mut String) {
    let mut skipping = false;
    for line in package.control.lines() {
        if line.starts_with(' ') || line.starts_with('\t') {
            if !skipping {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        let name = line.split_once(':').map_or(line, |(n, _)| n);
        skipping = ARCHIVE_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(name));
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(&format!(
        "Filename: {}\nSize: {}\n",
        package.filename, package.size
    ));
    if let Some(legacy) = legacy {
        out.push_str(&format!("MD5sum: {}\nSHA1: {}\n", legacy.md5, legacy.sha1));
    }
    out.push_str(&format!("SHA256: {}\n\n", package.sha256));
}

/// A whole Packages file, sorted by name, version and architecture so equal
/// content always renders to equal bytes.
pub fn render(
    packages: &mut [&AptPackage],
    legacy: Option<&std::collections::HashMap<crate::util::digest::Digest, LegacyHashes>>,
) -> String {
    packages.sort_by(|a, b| {
        (&a.name, &a.version, &a.architecture).cmp(&(&b.name, &b.version, &b.architecture))
    });
    let mut out = String::new();
    for p in packages.iter() {
        stanza(p, legacy.and_then(|l| l.get(&p.sha256)), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::digest::Digest;

    #[test]
    fn archive_fields_are_replaced_not_duplicated() {
        let package = AptPackage {
            name: "hello".into(),
            version: "1.0".into(),
            architecture: "amd64".into(),
            source: "hello".into(),
            control: "Package: hello\nVersion: 1.0\nArchitecture: amd64\nSHA256: 00\n extra\nDescription: hi\n there\n".into(),
            filename: "pool/main/h/hello/hello_1.0_amd64.deb".into(),
            size: 12,
            sha256: Digest::of(b"x"),
            files: Digest::of(b""),
            uploaded_at: 0,
            uploaded_by: "t".into(),
        };
        let mut out = String::new();
        stanza(&package, None, &mut out);
        assert_eq!(
            out,
            format!(
                "Package: hello\nVersion: 1.0\nArchitecture: amd64\nDescription: hi\n there\nFilename: pool/main/h/hello/hello_1.0_amd64.deb\nSize: 12\nSHA256: {}\n\n",
                Digest::of(b"x")
            )
        );
    }
}
