//! Source packages: a `.dsc` names its tarballs and diffs by size and SHA-256.
//! Those files are uploaded first (kept as blobs, unpublished, until something
//! references them; gc sweeps them otherwise); the `.dsc` (or a `.changes`
//! listing it) is accepted once every file it names is in the store with the
//! promised digest. Publishing writes `Sources` per component for `deb-src`.

use crate::deb::control::{Control, ControlError};
use crate::digest::Digest;
use crate::model::{AptSource, SourceFile};

/// File names source uploads may carry (besides .deb): the .dsc, .changes, tarballs and diffs.
pub fn is_source_file(name: &str) -> bool {
    const ENDINGS: &[&str] = &[
        ".dsc",
        ".changes",
        ".buildinfo",
        ".tar.gz",
        ".tar.xz",
        ".tar.bz2",
        ".tar.zst",
        ".tar.lzma",
        ".diff.gz",
        ".tar.gz.asc",
        ".tar.xz.asc",
    ];
    ENDINGS.iter().any(|e| name.ends_with(e))
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("bad .dsc/.changes: {0}")]
    Control(#[from] ControlError),
    #[error("{0}")]
    Invalid(String),
}

/// `Checksums-Sha256` of a .dsc or .changes: (name, sha256, size) per file.
pub fn checksums(control: &Control) -> Result<Vec<SourceFile>, SourceError> {
    let listing = control.get("Checksums-Sha256").ok_or_else(|| {
        SourceError::Invalid("no Checksums-Sha256 field: build it with dpkg-source >= 1.15".into())
    })?;
    let mut out = Vec::new();
    for line in listing.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [hash, size, name] = parts.as_slice() else {
            return Err(SourceError::Invalid(format!(
                "bad Checksums-Sha256 line {line:?}"
            )));
        };
        let sha256: Digest = hash
            .parse()
            .map_err(|_| SourceError::Invalid(format!("bad SHA-256 {hash:?}")))?;
        let size: u64 = size
            .parse()
            .map_err(|_| SourceError::Invalid(format!("bad size {size:?}")))?;
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+~:-".contains(&b));
        if !plain {
            return Err(SourceError::Invalid(format!(
                "file name {name:?} is not a plain file name"
            )));
        }
        out.push(SourceFile {
            name: name.to_string(),
            sha256,
            size,
        });
    }
    if out.is_empty() {
        return Err(SourceError::Invalid(
            "Checksums-Sha256 lists no files".into(),
        ));
    }
    Ok(out)
}

/// The Sources stanza: the .dsc's fields, `Source` as `Package`, the pool `Directory`,
/// and the .dsc itself added to the checksum list (apt fetches it too).
pub fn stanza(source: &AptSource, out: &mut String) {
    let mut skipping = false;
    for line in source.control.lines() {
        if line.starts_with(' ') || line.starts_with('\t') {
            if !skipping {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        let name = line.split_once(':').map_or(line, |(n, _)| n);
        // MD5/SHA1 lists would lack the .dsc line we add; apt takes the strongest list it has.
        skipping = [
            "Files",
            "Checksums-Sha1",
            "Checksums-Sha256",
            "Checksums-Sha512",
            "Directory",
        ]
        .iter()
        .any(|f| f.eq_ignore_ascii_case(name));
        if skipping {
            continue;
        }
        if name.eq_ignore_ascii_case("Source") {
            out.push_str(&format!("Package:{}\n", &line[name.len() + 1..]));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(&format!(
        "Directory: {}\nChecksums-Sha256:\n",
        source.directory
    ));
    for file in std::iter::once(&source.dsc).chain(source.files.iter()) {
        out.push_str(&format!(" {} {} {}\n", file.sha256, file.size, file.name));
    }
    out.push('\n');
}

pub fn render(sources: &mut [&AptSource]) -> String {
    sources.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    let mut out = String::new();
    for source in sources.iter() {
        stanza(source, &mut out);
    }
    out
}
