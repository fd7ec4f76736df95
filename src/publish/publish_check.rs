//! The last look at each package's part of an index before it is published.
//!
//! Uploads are checked when they arrive (the deb, control and rpm parsers refuse what
//! dpkg-deb, rpm and createrepo_c refuse), but a record stored before a fix, or one that
//! slips through a future parser gap, would otherwise reach a Packages file or a
//! primary.xml that every client of the tree then fails to read. So publishing checks
//! each package's stanza or repodata entries on its own and leaves out (and logs) a
//! package that fails, instead of publishing a tree no client can read.
//!
//! The checks are linear scans: they run on every chunk a publish renders, a cold
//! import's included.

use std::collections::HashSet;

use crate::repo::model::AptPackage;

/// Why `package`'s Packages stanza would not be a well-formed deb822 paragraph, if it
/// would not be one: a blank or malformed line, a control character, a field given
/// twice, or an archive value (name, version, architecture, file name) that would
/// break its line.
pub fn stanza_problem(package: &AptPackage) -> Option<String> {
    for (what, value) in [
        ("name", package.name.as_str()),
        ("version", package.version.as_str()),
        ("architecture", package.architecture.as_str()),
        ("file name", package.filename.as_str()),
    ] {
        if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Some(format!(
                "its {what} {value:?} is empty or holds white space"
            ));
        }
    }
    let mut seen: HashSet<String> = HashSet::new();
    for (number, line) in package.control.lines().enumerate() {
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return Some(format!("line {} holds a control character", number + 1));
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if number == 0 {
                return Some("it starts with a continuation line".into());
            }
            if line.trim().is_empty() {
                return Some(format!("line {} is a blank continuation", number + 1));
            }
            continue;
        }
        let Some((field, _)) = line.split_once(':') else {
            return Some(format!(
                "line {} is neither a field nor a continuation",
                number + 1
            ));
        };
        let plain = !field.is_empty()
            && !field.starts_with('#')
            && !field.starts_with('-')
            && field.bytes().all(|b| (0x21..=0x7e).contains(&b));
        if !plain {
            return Some(format!("line {} has a malformed field name", number + 1));
        }
        if !seen.insert(field.to_ascii_lowercase()) {
            return Some(format!("field {field} is given twice"));
        }
    }
    None
}

/// Why `text` (a package's primary, filelists or other entry) cannot be part of an XML
/// 1.0 document, if it cannot: XML allows no C0 control character but tab, line feed
/// and carriage return, escaped or not, and neither U+FFFE nor U+FFFF.
pub fn xml_text_problem(text: &[u8]) -> Option<String> {
    if let Some(at) = text
        .iter()
        .position(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
    {
        return Some(format!("control character 0x{:02x} at byte {at}", text[at]));
    }
    if text
        .windows(3)
        .any(|w| w[0] == 0xef && w[1] == 0xbf && w[2] >= 0xbe)
    {
        return Some("the noncharacter U+FFFE or U+FFFF".into());
    }
    if std::str::from_utf8(text).is_err() {
        return Some("bytes that are not UTF-8".into());
    }
    // A character reference to a control character is as ill-formed as the character.
    let mut rest = text;
    while let Some(at) = rest.windows(2).position(|w| w == b"&#") {
        rest = &rest[at + 2..];
        let end = rest.iter().position(|&b| b == b';').unwrap_or(rest.len());
        let reference = std::str::from_utf8(&rest[..end]).unwrap_or("");
        let value = match reference.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => reference.parse::<u32>().ok(),
        };
        let allowed = value.and_then(char::from_u32).is_some_and(|c| {
            matches!(c, '\t' | '\n' | '\r')
                || (!c.is_control() && c != '\u{fffe}' && c != '\u{ffff}')
                || ('\u{7f}'..='\u{9f}').contains(&c)
        });
        if !allowed {
            return Some(format!("the character reference &#{reference};"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::digest::Digest;

    fn package(control: &str) -> AptPackage {
        AptPackage {
            name: "hello".into(),
            version: "1.0".into(),
            architecture: "amd64".into(),
            source: "hello".into(),
            control: control.into(),
            filename: "pool/main/h/hello/hello_1.0_amd64.deb".into(),
            size: 1,
            sha256: Digest::of(b"x"),
            files: Digest::of(b""),
            uploaded_at: 0,
            uploaded_by: "t".into(),
        }
    }

    #[test]
    fn stanzas_that_would_break_a_packages_file_are_found() {
        let good =
            "Package: hello\nVersion: 1.0\nArchitecture: amd64\nDescription: hi\n there\n .\n";
        assert_eq!(stanza_problem(&package(good)), None);
        for bad in [
            "Package: hello\n\nVersion: 1.0\n",
            "Package: hello\nVersion: 1.0\x00\n",
            "Package: hello\nPackage: again\n",
            " leading: continuation\n",
            "Package: hello\nno colon here\n",
            "Package: hello\nBad Field: x\n",
            "Package: hel\rlo\nVersion: 1\n",
        ] {
            assert!(stanza_problem(&package(bad)).is_some(), "{bad:?}");
        }
        let mut spaced = package(good);
        spaced.filename = "pool/main/h/hello/x\nPackage: evil".into();
        assert!(stanza_problem(&spaced).is_some());
    }

    #[test]
    fn xml_that_no_reader_accepts_is_found() {
        assert_eq!(
            xml_text_problem(b"<summary>fine &#13; &amp;</summary>\n"),
            None
        );
        assert_eq!(xml_text_problem("<s>Skyttä &#x85;</s>".as_bytes()), None);
        for bad in [
            &b"<summary>bell\x07</summary>"[..],
            b"<summary>&#7;</summary>",
            b"<summary>&#x1b;</summary>",
            b"<summary>\xef\xbf\xbe</summary>",
            b"<summary>\xff</summary>",
        ] {
            assert!(xml_text_problem(bad).is_some(), "{bad:?}");
        }
    }
}
