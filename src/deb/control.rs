//! A binary package's `control` file: one deb822 paragraph of `Field: value`
//! lines (continuation lines start with a space or tab). We keep the text exactly
//! as shipped, because Packages stanzas are that text plus Filename/Size/SHA256,
//! and we check it strictly, because a bad stanza would break `apt-get update`
//! for every user of the repository.
//!
//! Parsed by hand rather than with `debcontrol` (unmaintained since 2020, see
//! README design notes): we need line-accurate errors and byte-exact text.

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

impl Control {
    /// One deb822 paragraph, checked for syntax only.
    pub fn parse_paragraph(bytes: &[u8]) -> Result<Self, ControlError> {
        let text = std::str::from_utf8(bytes).map_err(|_| ControlError::NotUtf8)?;
        let mut fields: Vec<(String, String)> = Vec::new();
        let mut kept = String::with_capacity(text.len());
        let mut blank_seen_at: Option<usize> = None;
        for (index, raw_line) in text.split('\n').enumerate() {
            let line_no = index + 1;
            let line = raw_line.strip_suffix('\r').unwrap_or(raw_line);
            let syntax = |why: String| ControlError::Syntax { line: line_no, why };
            if line.trim().is_empty() {
                if !fields.is_empty() {
                    blank_seen_at.get_or_insert(line_no);
                }
                continue;
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
                        "{line:?} is neither \"Field: value\" nor a continuation line"
                    )));
                };
                validate_field_name(name).map_err(|why| syntax(why.to_string()))?;
                if fields.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                    return Err(syntax(format!("field {name} appears twice")));
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
        if let Some(source) = self.get("Source") {
            let (source_name, source_version) = split_source(source);
            validate_package_name(source_name).map_err(|_| ControlError::Invalid {
                field: "Source",
                value: source.to_string(),
                why: "the source name must be a valid package name",
            })?;
            if let Some(v) = source_version {
                validate_version(v)?;
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
            .map(|s| split_source(s).0)
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

fn split_source(value: &str) -> (&str, Option<&str>) {
    match value.split_once('(') {
        Some((name, rest)) => (name.trim(), Some(rest.trim_end_matches(')').trim())),
        None => (value.trim(), None),
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

/// Debian policy 5.6.12: `[epoch:]upstream_version[-debian_revision]`.
pub fn validate_version(version: &str) -> Result<(), ControlError> {
    let invalid = |why| {
        Err(ControlError::Invalid {
            field: "Version",
            value: version.chars().take(100).collect(),
            why,
        })
    };
    if version.is_empty() || version.len() > 200 {
        return invalid("a version has 1 to 200 characters");
    }
    let rest = match version.split_once(':') {
        Some((epoch, rest)) => {
            if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_digit()) {
                return invalid("the epoch before ':' must be a number");
            }
            rest
        }
        None => version,
    };
    let (upstream, revision) = match rest.rsplit_once('-') {
        Some((u, r)) => (u, Some(r)),
        None => (rest, None),
    };
    if !upstream.starts_with(|c: char| c.is_ascii_digit()) {
        return invalid("the upstream version must start with a digit");
    }
    if !upstream
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".+~-".contains(&b))
    {
        return invalid("the upstream version uses only letters, digits and . + ~ -");
    }
    if let Some(revision) = revision
        && (revision.is_empty()
            || !revision
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".+~".contains(&b)))
    {
        return invalid(
            "the Debian revision after the last '-' uses only letters, digits and . + ~",
        );
    }
    Ok(())
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
            Control::parse(b"A: 1\n\nB: 2\n"),
            Err(ControlError::Syntax { line: 3, .. })
        ));
        assert!(matches!(
            Control::parse(b"A: 1\na: 2\n"),
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
        for good in [
            "1.0",
            "1:2.10-3",
            "2.10-3+deb12u1",
            "1.0~rc1-1",
            "0-1-2",
            "7",
        ] {
            assert!(validate_version(good).is_ok(), "{good}");
        }
        for bad in [
            "not a version",
            "a1.0",
            ":1",
            "1.0-",
            "1.0_1",
            "x:1.0",
            "1:a",
            "",
        ] {
            assert!(validate_version(bad).is_err(), "{bad}");
        }
        for good in ["amd64", "all", "arm64", "kfreebsd-amd64"] {
            assert!(validate_architecture(good).is_ok(), "{good}");
        }
        for bad in ["AMD64", "any", "source", "", "../x"] {
            assert!(validate_architecture(bad).is_err(), "{bad}");
        }
    }
}
