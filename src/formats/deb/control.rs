//! A binary package's `control` file: one deb822 paragraph of `Field: value`
//! lines (continuation lines start with a space or tab). We keep the text exactly
//! as shipped, because Packages stanzas are that text plus Filename/Size/SHA256,
//! and we check it strictly, because a bad stanza would break `apt-get update`
//! for every user of the repository.
//!
//! The syntax rules are dpkg's parser's (`lib/dpkg/parse.c`) where dpkg refuses
//! something, and stricter where a byte would change how apt reads the index:
//! - UTF-8 text; no control characters but tab and newline (a NUL ends dpkg's C
//!   strings early; apt takes `\r\n\r\n` as the end of a stanza, so no carriage
//!   returns either, not even CRLF line ends);
//! - field names of 2 or more printable ASCII characters (dpkg: user-defined names
//!   are at least 2 long), not starting with `-` or `#`, each at most once
//!   (case-insensitively);
//! - no line holding only spaces or tabs (dpkg: "blank line in value"; an empty line
//!   inside a value is written ` .`); exactly one paragraph; a binary package's control
//!   file ends with a newline (dpkg: "missing final newline");
//! - at most [`MAX_CONTROL_FIELDS`] fields in [`MAX_CONTROL_BYTES`] bytes.
//!
//! A binary package needs Package, Version and Architecture, as `dpkg-deb --build`
//! does; Maintainer and Description are only warnings there, and are not required here.
//!
//! Parsed by hand rather than with `debcontrol` (unmaintained since 2020, see
//! README design notes): we need line-accurate errors and byte-exact text.

use std::collections::HashSet;

use crate::util::versions::check_dpkg_version;

#[derive(Debug, Clone, PartialEq)]
pub struct Control {
    /// The paragraph exactly as shipped, without trailing blank lines, ending in one `\n`.
    text: String,
    fields: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ControlError {
    #[error("the control file is not UTF-8 text")]
    NotUtf8,
    #[error("the control file is empty")]
    Empty,
    #[error("control file line {line}: {why}")]
    Syntax { line: usize, why: String },
    #[error("the control file has no {0} field")]
    Missing(&'static str),
    #[error("invalid {field} {value:?}: {why}")]
    Invalid {
        field: &'static str,
        value: String,
        why: &'static str,
    },
}

/// The most bytes a control paragraph may have; real ones are a few KiB.
pub const MAX_CONTROL_BYTES: usize = 1024 * 1024;

/// The most fields a control paragraph may have; real ones have a few dozen.
pub const MAX_CONTROL_FIELDS: usize = 1000;

/// The longest file name of a package's .deb, in the pool and in apt's cache (NAME_MAX):
/// apt fails with "File name too long" past it.
pub const MAX_FILE_NAME_BYTES: usize = 255;

impl Control {
    /// One deb822 paragraph, checked for syntax only (see the module doc). Linear in its size.
    pub fn parse_paragraph(bytes: &[u8]) -> Result<Self, ControlError> {
        let text = std::str::from_utf8(bytes).map_err(|_| ControlError::NotUtf8)?;
        let mut fields: Vec<(String, String)> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut kept = String::with_capacity(text.len());
        let mut blank_seen_at: Option<usize> = None;
        for (index, line) in text.split('\n').enumerate() {
            let line_no = index + 1;
            let syntax = |why: String| ControlError::Syntax { line: line_no, why };
            if let Some(c) = line.chars().find(|c| c.is_control() && *c != '\t') {
                return Err(syntax(if c == '\r' {
                    "has a carriage return (CRLF line ends?); control files use LF line ends only"
                        .into()
                } else {
                    format!(
                        "has the control character U+{:04X}; control fields are text",
                        c as u32
                    )
                }));
            }
            if line.is_empty() {
                if !fields.is_empty() {
                    blank_seen_at.get_or_insert(line_no);
                }
                continue;
            }
            if line.trim().is_empty() {
                return Err(syntax(
                    "holds only spaces or tabs; dpkg refuses that (an empty line inside a value is written \" .\")".into(),
                ));
            }
            if let Some(blank) = blank_seen_at {
                return Err(ControlError::Syntax {
                    line: line_no,
                    why: format!(
                        "a second paragraph starts after the blank line {blank}; a control file has exactly one"
                    ),
                });
            }
            if line.starts_with(' ') || line.starts_with('\t') {
                let Some(last) = fields.last_mut() else {
                    return Err(syntax("continuation line before any field".into()));
                };
                last.1.push('\n');
                last.1.push_str(line);
            } else {
                let Some((name, value)) = line.split_once(':') else {
                    return Err(syntax(format!(
                        "{:?} is neither \"Field: value\" nor a continuation line",
                        line.chars().take(100).collect::<String>()
                    )));
                };
                validate_field_name(name).map_err(|why| syntax(why.to_string()))?;
                if !seen.insert(name.to_ascii_lowercase()) {
                    return Err(syntax(format!("field {name} appears twice")));
                }
                if fields.len() == MAX_CONTROL_FIELDS {
                    return Err(syntax(format!(
                        "more than {MAX_CONTROL_FIELDS} fields; real control files have a few dozen"
                    )));
                }
                fields.push((name.to_string(), value.trim().to_string()));
            }
            kept.push_str(line);
            kept.push('\n');
        }
        if fields.is_empty() {
            return Err(ControlError::Empty);
        }
        Ok(Control { text: kept, fields })
    }

    /// A binary package's control file: one paragraph with a valid Package, Version, Architecture.
    pub fn parse(bytes: &[u8]) -> Result<Self, ControlError> {
        let control = Self::parse_paragraph(bytes)?;
        if !bytes.ends_with(b"\n") {
            return Err(ControlError::Syntax {
                line: bytes.split(|b| *b == b'\n').count(),
                why: "the control file has no final newline (dpkg refuses that)".into(),
            });
        }
        control.validate()?;
        Ok(control)
    }

    /// A source package's `.dsc` (its PGP armor, if any, removed): Source and Version must be valid.
    pub fn parse_dsc(bytes: &[u8]) -> Result<Self, ControlError> {
        let text = std::str::from_utf8(bytes).map_err(|_| ControlError::NotUtf8)?;
        let control = Self::parse_paragraph(strip_clearsign(text).as_bytes())?;
        let source = control
            .get("Source")
            .ok_or(ControlError::Missing("Source"))?;
        validate_package_name(source).map_err(|_| ControlError::Invalid {
            field: "Source",
            value: source.chars().take(100).collect(),
            why: "a source package name uses only a-z, 0-9, '+', '-' and '.'",
        })?;
        validate_version(
            control
                .get("Version")
                .ok_or(ControlError::Missing("Version"))?,
        )?;
        Ok(control)
    }

    fn validate(&self) -> Result<(), ControlError> {
        let name = self
            .get("Package")
            .ok_or(ControlError::Missing("Package"))?;
        validate_package_name(name)?;
        let version = self
            .get("Version")
            .ok_or(ControlError::Missing("Version"))?;
        validate_version(version)?;
        let arch = self
            .get("Architecture")
            .ok_or(ControlError::Missing("Architecture"))?;
        validate_architecture(arch)?;
        // apt names the file it downloads <name>_<version, ':' as %3a>_<arch>.deb; the pool
        // name drops the epoch, so apt's is the longer of the two.
        let apt_file_name = format!("{name}_{}_{arch}.deb", version.replace(':', "%3a"));
        if apt_file_name.len() > MAX_FILE_NAME_BYTES {
            return Err(ControlError::Invalid {
                field: "Package",
                value: format!("{name} {version}").chars().take(100).collect(),
                why: "the package's file name <name>_<version>_<arch>.deb (apt writes ':' as %3a) would be longer than 255 bytes",
            });
        }
        if let Some(source) = self.get("Source") {
            let invalid = |why| ControlError::Invalid {
                field: "Source",
                value: source.chars().take(100).collect(),
                why,
            };
            let (source_name, source_version) = split_source(source)
                .ok_or_else(|| invalid("the Source field is \"name\" or \"name (version)\""))?;
            validate_package_name(source_name)
                .map_err(|_| invalid("the source name must be a valid package name"))?;
            let source_version = source_version.unwrap_or(version);
            check_dpkg_version(source_version).map_err(invalid)?;
            // The source's own files are <source>_<version without epoch>.debian.tar.xz and shorter.
            let file_version = source_version
                .split_once(':')
                .map_or(source_version, |(_, v)| v);
            if format!("{source_name}_{file_version}.debian.tar.xz").len() > MAX_FILE_NAME_BYTES {
                return Err(invalid(
                    "the source package's file names (<source>_<version>.debian.tar.xz) would be longer than 255 bytes",
                ));
            }
        }
        Ok(())
    }

    /// A field's value, with continuation lines joined by `\n` (field names are case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn package(&self) -> &str {
        self.get("Package").unwrap_or_default()
    }

    pub fn version(&self) -> &str {
        self.get("Version").unwrap_or_default()
    }

    pub fn architecture(&self) -> &str {
        self.get("Architecture").unwrap_or_default()
    }

    /// The source package name: `Source` without its optional `(version)`, else `Package`.
    pub fn source_name(&self) -> &str {
        self.get("Source")
            .and_then(split_source)
            .map(|(name, _)| name)
            .unwrap_or_else(|| self.package())
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(n, _)| n.as_str())
    }
}

/// The signed text of a clearsigned message (a .dsc or .changes signed by its maintainer);
/// unsigned text is returned as it is. The signature itself is not checked: the cap authorizes.
pub fn strip_clearsign(text: &str) -> String {
    let Some(rest) = text
        .trim_start()
        .strip_prefix("-----BEGIN PGP SIGNED MESSAGE-----")
    else {
        return text.to_string();
    };
    // Armor headers (Hash: ...) end at the first empty line.
    let body = rest.split_once("\n\n").map_or("", |(_, body)| body);
    let body = body
        .split("\n-----BEGIN PGP SIGNATURE-----")
        .next()
        .unwrap_or_default();
    body.lines()
        .map(|line| line.strip_prefix("- ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// A binary's `Source` field: `name` or `name (version)`, as dpkg-gencontrol writes it.
fn split_source(value: &str) -> Option<(&str, Option<&str>)> {
    match value.split_once('(') {
        Some((name, rest)) => {
            let version = rest.strip_suffix(')')?.trim();
            Some((name.trim(), Some(version)))
        }
        None => Some((value.trim(), None)),
    }
}

fn validate_field_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty field name before ':'");
    }
    if name.starts_with('-') || name.starts_with('#') {
        return Err("field names may not start with '-' or '#'");
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("field names are printable ASCII without spaces");
    }
    if name.len() < 2 {
        return Err("field names have at least 2 characters (dpkg refuses shorter ones)");
    }
    Ok(())
}

/// Debian policy 5.6.1: lowercase letters, digits, `+`, `-`, `.`; at least two
/// characters; starting with a letter or digit.
pub fn validate_package_name(name: &str) -> Result<(), ControlError> {
    let invalid = |why| {
        Err(ControlError::Invalid {
            field: "Package",
            value: name.chars().take(100).collect(),
            why,
        })
    };
    if name.len() < 2 || name.len() > 200 {
        return invalid("a package name has 2 to 200 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return invalid("a package name starts with a lowercase letter or a digit");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
    {
        return invalid("a package name uses only a-z, 0-9, '+', '-' and '.'");
    }
    Ok(())
}

/// Debian policy 5.6.12 and dpkg's `parseversion`: see [`check_dpkg_version`].
pub fn validate_version(version: &str) -> Result<(), ControlError> {
    let invalid = |why| ControlError::Invalid {
        field: "Version",
        value: version.chars().take(100).collect(),
        why,
    };
    if version.len() > 200 {
        return Err(invalid("a version has at most 200 characters"));
    }
    check_dpkg_version(version).map_err(invalid)
}

pub fn validate_architecture(arch: &str) -> Result<(), ControlError> {
    let ok = !arch.is_empty()
        && arch.len() <= 64
        && arch.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && arch
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && arch != "any"
        && arch != "source";
    if ok {
        Ok(())
    } else {
        Err(ControlError::Invalid {
            field: "Architecture",
            value: arch.chars().take(100).collect(),
            why: "a binary package names one architecture such as amd64, arm64 or all",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = "Package: hello\nVersion: 2.10-3\nArchitecture: amd64\nMaintainer: A <a@b>\nDescription: greet\n long text\n .\n more\n";

    #[test]
    fn parses_and_keeps_text() {
        let c = Control::parse(HELLO.as_bytes()).unwrap();
        assert_eq!(c.package(), "hello");
        assert_eq!(c.get("description"), Some("greet\n long text\n .\n more"));
        assert_eq!(c.text(), HELLO);
        assert_eq!(c.source_name(), "hello");
        let with_trailing = format!("\n{HELLO}\n\n");
        assert_eq!(
            Control::parse(with_trailing.as_bytes()).unwrap().text(),
            HELLO
        );
    }

    #[test]
    fn dsc_armor_is_stripped() {
        let signed = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nFormat: 3.0 (quilt)\nSource: foo\nVersion: 1.0-1\n- -dash line\n-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n";
        assert_eq!(
            strip_clearsign(signed),
            "Format: 3.0 (quilt)\nSource: foo\nVersion: 1.0-1\n-dash line\n"
        );
        assert_eq!(strip_clearsign("Source: foo\n"), "Source: foo\n");
        let dsc = Control::parse_dsc(b"Format: 3.0 (native)\nSource: foo\nVersion: 1.0\n").unwrap();
        assert_eq!(dsc.get("Source"), Some("foo"));
        assert!(Control::parse_dsc(b"Source: Foo!\nVersion: 1\n").is_err());
    }

    #[test]
    fn source_with_version() {
        let c = Control::parse(
            b"Package: libfoo1\nSource: foo (1.0-1)\nVersion: 1.0-1+b1\nArchitecture: all\n",
        )
        .unwrap();
        assert_eq!(c.source_name(), "foo");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = Control::parse(b"Package: hello\nthis line has no colon\n").unwrap_err();
        assert!(matches!(err, ControlError::Syntax { line: 2, .. }), "{err}");
        assert!(matches!(
            Control::parse(b" leading continuation\n"),
            Err(ControlError::Syntax { line: 1, .. })
        ));
        assert!(matches!(
            Control::parse(b"Aa: 1\n\nBb: 2\n"),
            Err(ControlError::Syntax { line: 3, .. })
        ));
        assert!(matches!(
            Control::parse(b"Aa: 1\naA: 2\n"),
            Err(ControlError::Syntax { line: 2, .. })
        ));
        assert_eq!(Control::parse(b"\n\n"), Err(ControlError::Empty));
        assert_eq!(Control::parse(&[0xff, 0xfe]), Err(ControlError::NotUtf8));
        assert_eq!(
            Control::parse(b"Version: 1\nArchitecture: all\n"),
            Err(ControlError::Missing("Package"))
        );
    }

    #[test]
    fn names_versions_architectures() {
        for good in ["hello", "libc6", "g++-12", "0ad", "python3.11"] {
            assert!(validate_package_name(good).is_ok(), "{good}");
        }
        for bad in ["Hello", "a", "hello_world", "-x", "hé", "Hello_World!"] {
            assert!(validate_package_name(bad).is_err(), "{bad}");
        }
        // The version rules themselves are tested in crate::util::versions.
        assert!(validate_version("1:2.10-3").is_ok());
        assert!(matches!(
            validate_version("not a version"),
            Err(ControlError::Invalid {
                field: "Version",
                ..
            })
        ));
        assert!(validate_version(&format!("1.{}", "0".repeat(199))).is_err());
        for good in ["amd64", "all", "arm64", "kfreebsd-amd64"] {
            assert!(validate_architecture(good).is_ok(), "{good}");
        }
        for bad in ["AMD64", "any", "source", "", "../x"] {
            assert!(validate_architecture(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod hardening_tests {
    //! The rules added against hostile uploads (issue 14).
    use super::*;

    const BASE: &str = "Package: hello\nVersion: 1.0-1\nArchitecture: amd64\n";

    fn syntax_error(text: &str) -> String {
        match Control::parse(text.as_bytes()) {
            Err(e @ ControlError::Syntax { .. }) => e.to_string(),
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn control_characters_and_carriage_returns_are_refused() {
        let nul = syntax_error(&format!("{BASE}Description: a\0b\n"));
        assert!(nul.contains("line 4") && nul.contains("U+0000"), "{nul}");
        let esc = syntax_error(&format!("{BASE}Description: a\n b\u{1b}[2J\n"));
        assert!(esc.contains("line 5") && esc.contains("U+001B"), "{esc}");
        let crlf = syntax_error(&BASE.replace('\n', "\r\n"));
        assert!(crlf.contains("carriage return"), "{crlf}");
        let lone_cr = syntax_error(&format!("{BASE}Description: a\rPackage: evil\n"));
        assert!(lone_cr.contains("carriage return"), "{lone_cr}");
        // Tabs are how some continuation lines start.
        assert!(Control::parse(format!("{BASE}Description: a\n\tb\n").as_bytes()).is_ok());
    }

    #[test]
    fn odd_lines_and_names_are_refused() {
        let blank = syntax_error(&format!("{BASE}Description: a\n  \n b\n"));
        assert!(
            blank.contains("line 5") && blank.contains("only spaces"),
            "{blank}"
        );
        let trailing = syntax_error(&format!("{BASE} \t\n"));
        assert!(trailing.contains("only spaces"), "{trailing}");
        let no_newline = syntax_error(BASE.trim_end());
        assert!(no_newline.contains("final newline"), "{no_newline}");
        for (line, why) in [
            ("X: 1", "at least 2"),
            ("X Y: 1", "printable ASCII"),
            ("Fé: 1", "printable ASCII"),
            ("-X: 1", "may not start"),
            ("#X: 1", "may not start"),
            (": 1", "empty field name"),
        ] {
            let err = syntax_error(&format!("{BASE}{line}\n"));
            assert!(err.contains(why), "{line:?}: {err}");
        }
        assert!(syntax_error(&format!("{BASE}PACKAGE: x\n")).contains("appears twice"));
    }

    #[test]
    fn fields_are_bounded_and_parsing_is_linear() {
        let fields = |n: usize| {
            let mut text = BASE.to_string();
            for i in 0..n {
                text.push_str(&format!("X{i:05}: 1\n"));
            }
            text
        };
        assert!(Control::parse(fields(MAX_CONTROL_FIELDS - 3).as_bytes()).is_ok());
        let err = syntax_error(&fields(MAX_CONTROL_FIELDS - 2));
        assert!(err.contains("more than 1000 fields"), "{err}");
        // A paragraph of 94,000 distinct fields (once a quadratic duplicate check's worth of
        // CPU) is refused at the bound, naming it.
        assert!(syntax_error(&fields(94_000)).contains("more than 1000 fields"));
    }

    #[test]
    fn file_names_fit_in_255_bytes() {
        let control = |name: &str, version: &str| {
            format!("Package: {name}\nVersion: {version}\nArchitecture: amd64\n")
        };
        // <name>_<version>_amd64.deb: name + version + 11 bytes.
        let name = "a".repeat(122);
        let version = format!("1{}", "0".repeat(121));
        assert!(Control::parse(control(&name, &version).as_bytes()).is_ok());
        let err = Control::parse(control(&name, &format!("{version}0")).as_bytes()).unwrap_err();
        assert!(err.to_string().contains("255 bytes"), "{err}");
        // apt writes the epoch's ':' as %3a in its file name.
        let with_epoch = format!("1:{}", "0".repeat(119));
        let err = Control::parse(control(&name, &with_epoch).as_bytes()).unwrap_err();
        assert!(err.to_string().contains("255 bytes"), "{err}");
        let long200 = "a".repeat(200);
        let err = Control::parse(control(&long200, &format!("1.{}", "0".repeat(198))).as_bytes())
            .unwrap_err();
        assert!(err.to_string().contains("255 bytes"), "{err}");
    }

    #[test]
    fn the_source_field_is_checked_too() {
        let with_source = |source: &str| format!("{BASE}Source: {source}\n");
        assert_eq!(
            Control::parse(with_source("foo (2:1.0-1)").as_bytes())
                .unwrap()
                .source_name(),
            "foo"
        );
        for (source, why) in [
            ("foo (1.0-1", "\"name (version)\""),
            ("foo (99999999999999999999:1)", "epoch"),
            ("Foo", "valid package name"),
        ] {
            let err = Control::parse(with_source(source).as_bytes()).unwrap_err();
            assert!(err.to_string().contains(why), "{source}: {err}");
        }
        let long = format!("{} (1.{})", "s".repeat(150), "0".repeat(100));
        let err = Control::parse(with_source(&long).as_bytes()).unwrap_err();
        assert!(err.to_string().contains("255 bytes"), "{err}");
    }

    #[test]
    fn epochs_dpkg_refuses_are_refused() {
        for version in ["99999999999999999999:1", "2147483648:1.0", "-1:1.0", "1:"] {
            let text = BASE.replace("1.0-1", version);
            let err = Control::parse(text.as_bytes()).unwrap_err();
            assert!(
                matches!(
                    err,
                    ControlError::Invalid {
                        field: "Version",
                        ..
                    }
                ),
                "{version}: {err}"
            );
        }
        assert!(Control::parse(BASE.replace("1.0-1", "2147483647:1.0").as_bytes()).is_ok());
    }
}
