//! Source packages: a `.dsc` names its tarballs and diffs by size and SHA-256.
//! Those files are uploaded first (kept as blobs, unpublished, until something
//! references them; gc sweeps them otherwise); the `.dsc` (or a `.changes`
//! listing it) is accepted once every file it names is in the store with the
//! promised digest. Publishing writes `Sources` per component for `deb-src`.

use crate::formats::deb::control::{Control, ControlError};
use crate::repo::model::{AptSource, SourceFile};
use crate::util::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("bad .dsc/.changes: {0}")]
    Control(#[from] ControlError),
    #[error("{0}")]
    Invalid(String),
}

/// `Checksums-Sha256` of a .dsc or .changes: (name, sha256, size) per file.
/// How many files a `.dsc` or `.changes` may list: each is read whole (hashed, inspected),
/// so the list bounds the work one upload can ask for.
pub const MAX_LISTED_FILES: usize = 64;

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
        // `sha256-` names the directory a package gets when its usual path holds other
        // bytes (see `crate::repo::claims`): a file of that name would collide with it.
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && !name.starts_with("sha256-")
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+~:-".contains(&b));
        if !plain {
            return Err(SourceError::Invalid(format!(
                "file name {name:?} is not a plain file name"
            )));
        }
        if out.iter().any(|f: &SourceFile| f.name == *name) {
            return Err(SourceError::Invalid(format!("{name:?} is listed twice")));
        }
        if out.len() >= MAX_LISTED_FILES {
            return Err(SourceError::Invalid(format!(
                "more than {MAX_LISTED_FILES} files are listed; a source package has a handful"
            )));
        }
        out.push(SourceFile {
            name: name.to_string(),
            sha256,
            size,
            md5: None,
            sha1: None,
        });
    }
    if out.is_empty() {
        return Err(SourceError::Invalid(
            "Checksums-Sha256 lists no files".into(),
        ));
    }
    Ok(out)
}

/// What the .dsc's own `Files` (MD5) or `Checksums-Sha1` list says of each file: name ->
/// (lowercase hex, size). Absent fields give an empty map; a malformed line is an error,
/// as dpkg-source would refuse it.
pub fn listed_hashes(
    control: &Control,
    field: &str,
    hex_len: usize,
) -> Result<std::collections::HashMap<String, (String, u64)>, SourceError> {
    let mut out = std::collections::HashMap::new();
    let Some(listing) = control.get(field) else {
        return Ok(out);
    };
    for line in listing.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [hash, size, name] = parts.as_slice() else {
            return Err(SourceError::Invalid(format!("bad {field} line {line:?}")));
        };
        let size: u64 = size
            .parse()
            .map_err(|_| SourceError::Invalid(format!("bad size {size:?} in {field}")))?;
        if hash.len() != hex_len || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SourceError::Invalid(format!(
                "bad hash {hash:?} in {field}"
            )));
        }
        out.insert(name.to_string(), (hash.to_ascii_lowercase(), size));
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
        // The .dsc's own lists lack the .dsc line; all three are written again below.
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
    out.push_str(&format!("Directory: {}\n", source.directory));
    let all = || std::iter::once(&source.dsc).chain(source.files.iter());
    // Files (MD5) is mandatory in Sources (Debian Policy 5.6.21); with Checksums-Sha1 it is
    // written whenever every file's hashes are known, as dpkg-scansources writes them.
    if all().all(|f| f.md5.is_some() && f.sha1.is_some()) {
        out.push_str("Files:\n");
        for file in all() {
            let md5 = file.md5.as_deref().unwrap_or_default();
            out.push_str(&format!(" {md5} {} {}\n", file.size, file.name));
        }
        out.push_str("Checksums-Sha1:\n");
        for file in all() {
            let sha1 = file.sha1.as_deref().unwrap_or_default();
            out.push_str(&format!(" {sha1} {} {}\n", file.size, file.name));
        }
    }
    out.push_str("Checksums-Sha256:\n");
    for file in all() {
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

#[cfg(test)]
mod listing_tests {
    use super::*;

    fn dsc(listing: &str) -> Control {
        let text = format!("Source: xy\nVersion: 1.0-1\nChecksums-Sha256:\n{listing}");
        Control::parse_dsc(text.as_bytes()).unwrap()
    }

    /// Each listed file is read whole: a name listed twice, a name that could collide with
    /// an own-path directory, or a list longer than a source package has, is refused.
    #[test]
    fn listings_that_ask_for_more_work_or_collide_are_refused() {
        let line = |name: &str| format!(" {} 1 {name}\n", Digest::of(name.as_bytes()));
        assert!(
            checksums(&dsc(
                &(line("x_1.0.orig.tar.gz") + &line("x_1.0-1.debian.tar.xz"))
            ))
            .is_ok()
        );
        assert!(checksums(&dsc(&(line("x_1.0.tar.gz") + &line("x_1.0.tar.gz")))).is_err());
        assert!(checksums(&dsc(&line("sha256-0123456789abcdef"))).is_err());
        let many: String = (0..=MAX_LISTED_FILES)
            .map(|i| line(&format!("x_{i}.tar")))
            .collect();
        assert!(checksums(&dsc(&many)).is_err());
    }
}
