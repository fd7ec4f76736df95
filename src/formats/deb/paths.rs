//! Which data.tar member names a package may ship, and their normal form: the form
//! listed in `Contents-<arch>` (one `path<spaces>section/package` line per path, so a
//! name must never be able to add, split or impersonate a line).
//!
//! The rule, checked on every entry (directories too) after GNU long names are applied:
//! - UTF-8 text with no control characters (C0 such as NUL, tab, newline and carriage
//!   return, DEL, C1): dpkg refuses newlines ("newline not allowed in archive object
//!   name"), and any of them would break or forge a Contents line;
//! - leading `/` and `./` are dropped, as dpkg does (`path_skip_slash_dotslash`); what is
//!   left is the path relative to the root, and only a directory may be the root itself;
//! - no `..` component anywhere (path traversal: dpkg would write outside the root), no
//!   `.` or empty component inside the path (a second spelling of another path), one
//!   trailing `/` allowed (directories);
//! - no whitespace at the start or end: Contents parsers split the path from the package
//!   list at the last run of whitespace, so `usr/sbin/sshd ` would read as `usr/sbin/sshd`;
//! - at most [`MAX_PATH_BYTES`] bytes in all (PATH_MAX) and 255 bytes per component
//!   (NAME_MAX): dpkg could not create anything longer.

use super::tar::MAX_PATH_BYTES;

/// The longest component of a path (Linux's NAME_MAX).
pub const MAX_COMPONENT_BYTES: usize = 255;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("file name {shown}: {why}")]
pub struct BadPath {
    /// The name as a Rust string literal, so control characters show as escapes.
    shown: String,
    why: String,
}

/// The Contents form of a member name (no leading `./`, no trailing `/`), or `None` for
/// the root directory entry itself.
pub fn contents_path(raw: &[u8], is_directory: bool) -> Result<Option<&str>, BadPath> {
    let bad = |why: String| BadPath {
        shown: format!("{:?}", String::from_utf8_lossy(&raw[..raw.len().min(300)])),
        why,
    };
    let text = std::str::from_utf8(raw).map_err(|_| bad("is not UTF-8".into()))?;
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(bad(format!(
            "has the control character U+{:04X}; dpkg refuses newlines in names and Contents lists one name per line",
            c as u32
        )));
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(bad(format!(
            "is {} bytes long; paths have at most {MAX_PATH_BYTES} bytes",
            raw.len()
        )));
    }
    let mut path = text;
    while let Some(rest) = path.strip_prefix('/').or_else(|| path.strip_prefix("./")) {
        path = rest;
    }
    if is_directory {
        path = path.strip_suffix('/').unwrap_or(path);
    }
    if path.is_empty() || path == "." {
        return if is_directory {
            Ok(None)
        } else {
            Err(bad("names the root directory but is not a directory".into()))
        };
    }
    for component in path.split('/') {
        match component {
            ".." => {
                return Err(bad(
                    "has a \"..\" component; a package may not write outside its root".into(),
                ));
            }
            "" | "." => {
                return Err(bad(
                    "has an empty or \".\" component; paths are written in their normal form"
                        .into(),
                ));
            }
            long if long.len() > MAX_COMPONENT_BYTES => {
                return Err(bad(format!(
                    "has a component of {} bytes; components have at most {MAX_COMPONENT_BYTES}",
                    long.len()
                )));
            }
            _ => {}
        }
    }
    if path.starts_with(char::is_whitespace) || path.ends_with(char::is_whitespace) {
        return Err(bad(
            "begins or ends with whitespace, which Contents cannot tell from the column separator"
                .into(),
        ));
    }
    Ok(Some(path))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> Result<Option<&str>, BadPath> {
        contents_path(name.as_bytes(), false)
    }

    #[test]
    fn normal_names_are_listed_without_leading_dot_slash() {
        assert_eq!(file("./usr/bin/hello"), Ok(Some("usr/bin/hello")));
        assert_eq!(file("usr/bin/hello"), Ok(Some("usr/bin/hello")));
        // dpkg strips leading slashes and "./" alike.
        assert_eq!(file("/usr/bin/hello"), Ok(Some("usr/bin/hello")));
        assert_eq!(file(".//./usr/bin/x"), Ok(Some("usr/bin/x")));
        assert_eq!(
            file("./usr/share/doc/my file.txt"),
            Ok(Some("usr/share/doc/my file.txt"))
        );
        assert_eq!(file("./usr/share/café"), Ok(Some("usr/share/café")));
        assert_eq!(file("./usr/lib/.hidden"), Ok(Some("usr/lib/.hidden")));
        assert_eq!(file("./usr/bin/a..b"), Ok(Some("usr/bin/a..b")));
        assert_eq!(contents_path(b"./usr/share/", true), Ok(Some("usr/share")));
        assert_eq!(contents_path(b"./", true), Ok(None));
        assert_eq!(contents_path(b".", true), Ok(None));
    }

    #[test]
    fn names_that_forge_or_escape_are_refused() {
        for (name, why) in [
            ("./usr/bin/a\nusr/sbin/sshd", "U+000A"),
            ("./usr/bin/a\rusr/sbin/sshd", "U+000D"),
            ("./usr/bin/a\0b", "U+0000"),
            ("./usr/bin/a\tb", "U+0009"),
            ("./usr/bin/\u{1b}[31m", "U+001B"),
            ("./usr/bin/\u{7f}", "U+007F"),
            ("./usr/bin/\u{85}", "U+0085"),
            ("usr/../../../etc/shadow", "\"..\" component"),
            ("../etc/cron.d/x", "\"..\" component"),
            ("./usr/bin/..", "\"..\" component"),
            ("/../etc/passwd", "\"..\" component"),
            ("./usr/./bin/x", "\".\" component"),
            ("./usr//bin/x", "empty"),
            ("./usr/bin/", "empty"),
            ("./usr/sbin/sshd ", "whitespace"),
            (" usr/sbin/sshd", "whitespace"),
            ("./usr/sbin/sshd\u{a0}", "whitespace"),
            ("./", "root directory"),
        ] {
            let err = file(name).expect_err(name);
            assert!(err.to_string().contains(why), "{name:?}: {err}");
        }
        let err = contents_path(&[b'u', b's', b'r', b'/', 0xff], false).unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }

    #[test]
    fn lengths_are_bounded_by_path_max_and_name_max() {
        let component = "a".repeat(MAX_COMPONENT_BYTES);
        let ok = format!("./usr/{component}");
        assert!(file(&ok).is_ok());
        let too_long_component = format!("./usr/{component}a");
        assert!(
            file(&too_long_component)
                .unwrap_err()
                .to_string()
                .contains("component of 256 bytes")
        );
        let deep = format!("usr/{}", "abcdefg/".repeat(511));
        assert_eq!(deep.len(), 4092);
        assert!(file(deep.trim_end_matches('/')).is_ok());
        let too_deep = format!("usr/{}x", "abcdefg/".repeat(512));
        assert!(
            file(&too_deep)
                .unwrap_err()
                .to_string()
                .contains("at most 4096 bytes")
        );
    }
}
