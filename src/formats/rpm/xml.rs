//! One package's entries in primary.xml, filelists.xml and other.xml, written
//! exactly as createrepo_c 0.17 writes them (element order, 2-space indent,
//! which files go into primary, how dependency flags, epochs and pre-requires
//! are spelled, which requires are dropped). Rendered once per stored package
//! and cached as blobs; publishing only concatenates.

use std::fmt::Write;

use super::inspect::{CHANGELOG_LIMIT, Dep, FileItem, FileKind, PRE_FLAGS, RpmInfo};

/// Escape `value` for XML, as libxml2 escapes what createrepo_c writes: `&`, `<`,
/// `>` always and CR as `&#13;` (a raw CR would reach readers as LF); in attributes
/// also `"`, and TAB and LF, which attribute-value normalisation would turn into
/// spaces. Other characters are written as they are: libxml2 writes non-ASCII as
/// character references, which parse to the same values. Characters XML cannot carry
/// at all never get here (`check_renderable`).
fn escape(value: &str, in_attribute: bool) -> std::borrow::Cow<'_, str> {
    let special = |c: char| {
        matches!(c, '&' | '<' | '>' | '\r') || (in_attribute && matches!(c, '"' | '\n' | '\t'))
    };
    if !value.contains(special) {
        return value.into();
    }
    let mut out = String::with_capacity(value.len() + 16);
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            '"' if in_attribute => out.push_str("&quot;"),
            '\n' if in_attribute => out.push_str("&#10;"),
            '\t' if in_attribute => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
    out.into()
}

/// Text content.
pub fn text(value: &str) -> std::borrow::Cow<'_, str> {
    escape(value, false)
}

/// Attribute values (always written between double quotes).
pub fn attr(value: &str) -> std::borrow::Cow<'_, str> {
    escape(value, true)
}

/// createrepo_c's `cr_is_primary`: files every resolver may need without filelists.
pub fn is_primary_file(path: &str) -> bool {
    path.starts_with("/etc/") || path == "/usr/lib/sendmail" || path.contains("bin/")
}

fn flag_name(flags: u32) -> Option<&'static str> {
    match flags & 0xf {
        2 => Some("LT"),
        4 => Some("GT"),
        8 => Some("EQ"),
        10 => Some("LE"),
        12 => Some("GE"),
        _ => None,
    }
}

/// `[epoch:]version[-release]` split as createrepo_c splits it; None for a non-numeric epoch.
fn split_evr(evr: &str) -> Option<(String, String, Option<String>)> {
    let (epoch, rest) = match evr.split_once(':') {
        Some((e, rest)) if e.bytes().all(|b| b.is_ascii_digit()) && !e.is_empty() => {
            (e.to_string(), rest)
        }
        Some((_, _)) => return None,
        None => ("0".to_string(), evr),
    };
    Some(match rest.split_once('-') {
        Some((v, r)) => (epoch, v.to_string(), Some(r.to_string())),
        None => (epoch, rest.to_string(), None),
    })
}

fn entry(out: &mut String, dep: &Dep, pre: bool) {
    let _ = write!(out, "      <rpm:entry name=\"{}\"", attr(&dep.name));
    if let Some(flags) = flag_name(dep.flags)
        && let Some((epoch, version, release)) = split_evr(&dep.version)
    {
        let _ = write!(out, " flags=\"{flags}\" epoch=\"{}\"", attr(&epoch));
        if !version.is_empty() {
            let _ = write!(out, " ver=\"{}\"", attr(&version));
        }
        if let Some(release) = release.filter(|r| !r.is_empty()) {
            let _ = write!(out, " rel=\"{}\"", attr(&release));
        }
    }
    if pre {
        out.push_str(" pre=\"1\"");
    }
    out.push_str("/>\n");
}

fn dep_list(out: &mut String, element: &str, deps: &[(Dep, bool)]) {
    if deps.is_empty() {
        return;
    }
    let _ = writeln!(out, "    <rpm:{element}>");
    for (dep, pre) in deps {
        entry(out, dep, *pre);
    }
    let _ = writeln!(out, "    </rpm:{element}>");
}

/// The requires createrepo_c keeps, each with its pre flag.
fn filtered_requires(info: &RpmInfo) -> Vec<(Dep, bool)> {
    let flag_text = |d: &Dep| flag_name(d.flags).unwrap_or("");
    let own_primary_file = |name: &str| {
        name.starts_with('/') && is_primary_file(name) && info.files.iter().any(|f| f.path == name)
    };
    let provided = |d: &Dep| {
        info.provides
            .iter()
            .any(|p| p.name == d.name && flag_text(p) == flag_text(d) && p.version == d.version)
    };
    let mut kept: Vec<(Dep, bool)> = Vec::new();
    let mut libc_highest: Option<Dep> = None;
    for dep in &info.requires {
        if dep.name.starts_with("rpmlib(") || own_primary_file(&dep.name) || provided(dep) {
            continue;
        }
        if dep.flags & 0xf != 0 && split_evr(&dep.version).is_none() {
            continue;
        }
        let pre = dep.flags & PRE_FLAGS != 0;
        if let Some((last, last_pre)) = kept.iter().rev().find(|(d, _)| d.name == dep.name)
            && flag_text(last) == flag_text(dep)
            && last.version == dep.version
            && *last_pre == pre
        {
            continue;
        }
        if dep.name.starts_with("libc.so.6") {
            if libc_highest
                .as_ref()
                .is_none_or(|h| glibc_version(&dep.name) > glibc_version(&h.name))
            {
                libc_highest = Some(dep.clone());
            }
            continue;
        }
        kept.push((dep.clone(), pre));
    }
    if let Some(libc) = libc_highest {
        let pre = libc.flags & PRE_FLAGS != 0;
        kept.push((libc, pre));
    }
    kept
}

/// `libc.so.6(GLIBC_2.34)(64bit)` -> [2, 34]; plain `libc.so.6` sorts lowest.
fn glibc_version(name: &str) -> Vec<u64> {
    name.split_once("GLIBC_")
        .map(|(_, rest)| {
            rest.split(')')
                .next()
                .unwrap_or("")
                .split('.')
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn plain(deps: &[Dep]) -> Vec<(Dep, bool)> {
    deps.iter()
        .filter(|d| d.flags & 0xf == 0 || split_evr(&d.version).is_some())
        .map(|d| (d.clone(), false))
        .collect()
}

fn file_lines(out: &mut String, files: &[FileItem], indent: &str, only_primary: bool) {
    for file in files
        .iter()
        .filter(|f| !only_primary || is_primary_file(&f.path))
    {
        let kind = match file.kind {
            FileKind::Dir => " type=\"dir\"",
            FileKind::Ghost => " type=\"ghost\"",
            FileKind::File => "",
        };
        let _ = writeln!(out, "{indent}<file{kind}>{}</file>", text(&file.path));
    }
}

/// Facts about the stored file that primary.xml records.
pub struct Stored<'a> {
    pub sha256: &'a str,
    pub size: u64,
    pub location: &'a str,
    /// createrepo_c writes the file's mtime; we write when it entered the repository.
    pub file_time: i64,
    pub header_start: u64,
    pub header_end: u64,
}

fn version_element(info: &RpmInfo) -> String {
    format!(
        "<version epoch=\"{}\" ver=\"{}\" rel=\"{}\"/>",
        info.epoch,
        attr(&info.version),
        attr(&info.release)
    )
}

pub fn primary(info: &RpmInfo, stored: &Stored) -> String {
    let mut out = String::with_capacity(2048);
    out.push_str("<package type=\"rpm\">\n");
    let _ = writeln!(out, "  <name>{}</name>", text(&info.name));
    let _ = writeln!(out, "  <arch>{}</arch>", text(&info.arch));
    let _ = writeln!(out, "  {}", version_element(info));
    let _ = writeln!(
        out,
        "  <checksum type=\"sha256\" pkgid=\"YES\">{}</checksum>",
        stored.sha256
    );
    let _ = writeln!(out, "  <summary>{}</summary>", text(&info.summary));
    let _ = writeln!(
        out,
        "  <description>{}</description>",
        text(&info.description)
    );
    let _ = writeln!(out, "  <packager>{}</packager>", text(&info.packager));
    let _ = writeln!(out, "  <url>{}</url>", text(&info.url));
    let _ = writeln!(
        out,
        "  <time file=\"{}\" build=\"{}\"/>",
        stored.file_time, info.build_time
    );
    let _ = writeln!(
        out,
        "  <size package=\"{}\" installed=\"{}\" archive=\"{}\"/>",
        stored.size, info.installed_size, info.archive_size
    );
    let _ = writeln!(out, "  <location href=\"{}\"/>", attr(stored.location));
    out.push_str("  <format>\n");
    let _ = writeln!(
        out,
        "    <rpm:license>{}</rpm:license>",
        text(&info.license)
    );
    let _ = writeln!(out, "    <rpm:vendor>{}</rpm:vendor>", text(&info.vendor));
    let _ = writeln!(out, "    <rpm:group>{}</rpm:group>", text(&info.group));
    let _ = writeln!(
        out,
        "    <rpm:buildhost>{}</rpm:buildhost>",
        text(&info.buildhost)
    );
    let _ = writeln!(
        out,
        "    <rpm:sourcerpm>{}</rpm:sourcerpm>",
        text(&info.sourcerpm)
    );
    let _ = writeln!(
        out,
        "    <rpm:header-range start=\"{}\" end=\"{}\"/>",
        stored.header_start, stored.header_end
    );
    dep_list(&mut out, "provides", &plain(&info.provides));
    dep_list(&mut out, "requires", &filtered_requires(info));
    dep_list(&mut out, "conflicts", &plain(&info.conflicts));
    dep_list(&mut out, "obsoletes", &plain(&info.obsoletes));
    dep_list(&mut out, "suggests", &plain(&info.suggests));
    dep_list(&mut out, "enhances", &plain(&info.enhances));
    dep_list(&mut out, "recommends", &plain(&info.recommends));
    dep_list(&mut out, "supplements", &plain(&info.supplements));
    file_lines(&mut out, &info.files, "    ", true);
    out.push_str("  </format>\n</package>\n");
    out
}

fn package_open(info: &RpmInfo, sha256: &str) -> String {
    format!(
        "<package pkgid=\"{sha256}\" name=\"{}\" arch=\"{}\">\n  {}\n",
        attr(&info.name),
        attr(&info.arch),
        version_element(info)
    )
}

pub fn filelists(info: &RpmInfo, sha256: &str) -> String {
    let mut out = package_open(info, sha256);
    file_lines(&mut out, &info.files, "  ", false);
    out.push_str("</package>\n");
    out
}

pub fn other(info: &RpmInfo, sha256: &str) -> String {
    let mut out = package_open(info, sha256);
    // Header order is newest first. Entries with equal times get bumped so dates stay unique:
    // each further equal entry adds one second to every earlier entry of the run.
    let mut entries: Vec<(String, u64, String)> = Vec::new();
    let mut run_start = 0;
    for (index, (author, time, body)) in info.changelog.iter().take(CHANGELOG_LIMIT).enumerate() {
        if index > 0 && info.changelog[index - 1].1 == *time {
            for earlier in &mut entries[run_start..] {
                earlier.1 += 1;
            }
        } else {
            run_start = entries.len();
        }
        entries.push((author.clone(), *time, body.clone()));
    }
    for (author, time, body) in entries.iter().rev() {
        let _ = writeln!(
            out,
            "  <changelog author=\"{}\" date=\"{time}\">{}</changelog>",
            attr(author),
            text(body)
        );
    }
    out.push_str("</package>\n");
    out
}

/// Refuse, naming the field, a package whose repodata would not be XML: every
/// string that goes into primary, filelists and other (createrepo_c's
/// `cr_Package_contains_forbidden_control_chars` checks the same strings: the
/// dependencies it keeps, every file, the changelog entries it keeps), then the
/// rendered entries themselves, so that a gap in the escaping fails one upload
/// instead of every tree that would list the package.
pub fn check_renderable(info: &RpmInfo) -> Result<(), String> {
    use super::text::check_field;
    for (field, value) in [
        ("name", &info.name),
        ("arch", &info.arch),
        ("version", &info.version),
        ("release", &info.release),
        ("summary", &info.summary),
        ("description", &info.description),
        ("url", &info.url),
        ("license", &info.license),
        ("vendor", &info.vendor),
        ("group", &info.group),
        ("buildhost", &info.buildhost),
        ("sourcerpm", &info.sourcerpm),
        ("packager", &info.packager),
    ] {
        check_field(field, value)?;
    }
    for (kind, deps) in [
        ("provides", plain(&info.provides)),
        ("requires", filtered_requires(info)),
        ("conflicts", plain(&info.conflicts)),
        ("obsoletes", plain(&info.obsoletes)),
        ("suggests", plain(&info.suggests)),
        ("enhances", plain(&info.enhances)),
        ("recommends", plain(&info.recommends)),
        ("supplements", plain(&info.supplements)),
    ] {
        for (dep, _) in &deps {
            check_field(&format!("the {kind} name {:?}", dep.name), &dep.name)?;
            check_field(
                &format!("the version of {kind} {:?}", dep.name),
                &dep.version,
            )?;
        }
    }
    for file in &info.files {
        check_field(&format!("the file name {:?}", file.path), &file.path)?;
    }
    for (author, time, body) in info.changelog.iter().take(CHANGELOG_LIMIT) {
        check_field(&format!("the changelog author of {time}"), author)?;
        check_field(
            &format!("the changelog entry of {time} by {author:?}"),
            body,
        )?;
    }
    // Facts about the stored file are digits, hex and a path made of the checked NEVRA.
    let stored = Stored {
        sha256: &"0".repeat(64),
        size: 0,
        location: "Packages/x.rpm",
        file_time: 0,
        header_start: info.header_start,
        header_end: info.header_end,
    };
    for (document, fragment) in [
        ("primary", primary(info, &stored)),
        ("filelists", filelists(info, stored.sha256)),
        ("other", other(info, stored.sha256)),
    ] {
        check_well_formed(&fragment).map_err(|why| format!("its {document} entry {why}"))?;
    }
    Ok(())
}

/// Whether `xml`, a run of rendered entries (no XML declaration, `rpm:` prefixes
/// allowed), is well-formed XML 1.0 once wrapped in a root element: elements nest
/// and close, attributes are quoted and unique, every reference is one of the five
/// predefined entities or a character reference to a legal character, and no
/// character XML forbids appears, raw or referenced. Cheap enough to run on every
/// entry at upload and on every document before it is published.
pub fn check_well_formed(xml: &str) -> Result<(), String> {
    use quick_xml::events::Event;
    if let Some(c) = xml.chars().find(|&c| super::text::forbidden_in_xml(c)) {
        return Err(format!(
            "is not well-formed XML: it holds the character U+{:04X}",
            c as u32
        ));
    }
    let wrapped = format!(
        "<caprepo xmlns=\"http://linux.duke.edu/metadata/common\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\">{xml}</caprepo>"
    );
    let mut reader = quick_xml::Reader::from_str(&wrapped);
    reader.config_mut().check_end_names = true;
    let fail = |at: u64, why: String| format!("is not well-formed XML (at byte {at}): {why}");
    let legal = |c: char| !super::text::forbidden_in_xml(c);
    // Open elements, the wrapper included; once it closes, nothing may follow.
    let mut depth = 0usize;
    let mut closed = false;
    loop {
        let at = reader.buffer_position();
        let event = reader.read_event().map_err(|e| fail(at, e.to_string()))?;
        if closed && !matches!(event, Event::Eof) {
            return Err(fail(at, "it closes an element it did not open".into()));
        }
        match event {
            Event::Start(ref element) | Event::Empty(ref element) => {
                if matches!(event, Event::Start(_)) {
                    depth += 1;
                }
                let mut names = Vec::new();
                for attribute in element.attributes() {
                    let attribute = attribute.map_err(|e| fail(at, e.to_string()))?;
                    if names.contains(&attribute.key) {
                        return Err(fail(at, "an attribute appears twice".into()));
                    }
                    names.push(attribute.key);
                    let value = attribute
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|e| fail(at, e.to_string()))?;
                    if !value.chars().all(legal) {
                        return Err(fail(
                            at,
                            "an attribute refers to a character XML forbids".into(),
                        ));
                    }
                    if attribute.value.contains('<') {
                        return Err(fail(at, "a raw < in an attribute value".into()));
                    }
                }
            }
            Event::End(_) => {
                depth -= 1;
                closed = depth == 0;
            }
            Event::Text(content) => {
                if content.xml10_content().contains("]]>") {
                    return Err(fail(at, "]]> in text".into()));
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = reference
                    .resolve_char_ref()
                    .map_err(|e| fail(at, e.to_string()))?;
                match resolved {
                    Some(c) if !legal(c) => {
                        return Err(fail(at, format!("a reference to U+{:04X}", c as u32)));
                    }
                    Some(_) => {}
                    None if matches!(&*reference, "amp" | "lt" | "gt" | "quot" | "apos") => {}
                    None => {
                        return Err(fail(at, format!("an undeclared entity &{};", &*reference)));
                    }
                }
            }
            Event::Eof => break,
            Event::CData(_) | Event::Comment(_) => {}
            Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {
                return Err(fail(
                    at,
                    "a declaration or processing instruction inside an entry".into(),
                ));
            }
        }
    }
    if !closed {
        return Err(fail(
            wrapped.len() as u64,
            "an element is not closed".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evr_and_flags_are_spelled_like_createrepo_c() {
        assert_eq!(
            split_evr("2:1.0-1"),
            Some(("2".into(), "1.0".into(), Some("1".into())))
        );
        assert_eq!(split_evr("4.0"), Some(("0".into(), "4.0".into(), None)));
        assert_eq!(
            split_evr("1.0-1-2"),
            Some(("0".into(), "1.0".into(), Some("1-2".into())))
        );
        assert_eq!(split_evr("x:1"), None);
        assert_eq!(flag_name(12), Some("GE"));
        assert_eq!(flag_name(8 | 64), Some("EQ"));
        assert_eq!(flag_name(0), None);
        assert!(
            is_primary_file("/usr/sbin/x")
                && is_primary_file("/etc/x.conf")
                && is_primary_file("/opt/bin/y")
        );
        assert!(!is_primary_file("/usr/share/doc/x"));
        assert_eq!(attr("a \"b\" <c>&"), "a &quot;b&quot; &lt;c&gt;&amp;");
        assert!(
            glibc_version("libc.so.6(GLIBC_2.34)(64bit)")
                > glibc_version("libc.so.6(GLIBC_2.3.4)(64bit)")
        );
    }

    #[test]
    fn values_survive_escaping_as_xml_readers_parse_them() {
        assert_eq!(
            text("a\rb <c> & \"d\"\t\n"),
            "a&#13;b &lt;c&gt; &amp; \"d\"\t\n"
        );
        assert_eq!(attr("a\rb\tc\nd\"e"), "a&#13;b&#9;c&#10;d&quot;e");
        assert_eq!(text("]]>"), "]]&gt;");
        assert!(matches!(
            text("plain Skyttä"),
            std::borrow::Cow::Borrowed(_)
        ));
        // What quick-xml reads back from `<e a="..">..</e>` is what went in.
        for value in [
            "a\rb",
            "tab\there",
            "line\nfeed",
            "q\"uote'",
            "<&>]]>",
            "Ünï€😀",
        ] {
            let doc = format!("<e a=\"{}\">{}</e>", attr(value), text(value));
            let mut reader = quick_xml::Reader::from_str(&doc);
            let mut read_text = String::new();
            let mut read_attr = String::new();
            loop {
                match reader.read_event().unwrap() {
                    quick_xml::events::Event::Start(e) => {
                        let a = e.attributes().next().unwrap().unwrap();
                        read_attr = a
                            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                            .unwrap()
                            .into_owned();
                    }
                    quick_xml::events::Event::Text(t) => read_text.push_str(&t.xml10_content()),
                    quick_xml::events::Event::GeneralRef(r) => {
                        match r.resolve_char_ref().unwrap() {
                            Some(c) => read_text.push(c),
                            None => read_text.push_str(match &*r {
                                "amp" => "&",
                                "lt" => "<",
                                "gt" => ">",
                                other => panic!("{other}"),
                            }),
                        }
                    }
                    quick_xml::events::Event::Eof => break,
                    _ => {}
                }
            }
            assert_eq!(read_attr, value, "attribute {doc}");
            assert_eq!(read_text, value.replace("\r\n", "\n"), "text {doc}");
        }
    }

    #[test]
    fn only_well_formed_fragments_pass() {
        let good = "<package type=\"rpm\">\n  <name>a&amp;b &#13; &#xE4;</name>\n  <rpm:entry name=\"x\"/>\n</package>\n<package/>\n";
        assert_eq!(check_well_formed(good), Ok(()));
        assert_eq!(check_well_formed(""), Ok(()));
        for (bad, why) in [
            ("<summary>a\u{1}b</summary>", "U+0001"),
            ("<summary>a&#1;b</summary>", "U+0001"),
            ("<summary>a&#xFFFE;b</summary>", "U+FFFE"),
            ("<summary>a\u{ffff}</summary>", "U+FFFF"),
            ("<summary>a & b</summary>", "well-formed"),
            ("<summary>&nbsp;</summary>", "undeclared entity"),
            ("<summary>a]]>b</summary>", "]]>"),
            ("<summary>a</description>", "well-formed"),
            ("<summary>a", "well-formed"),
            ("</caprepo><x/>", "well-formed"),
            ("<e a=\"<\"/>", "well-formed"),
            ("<e a=\"1\" a=\"2\"/>", "well-formed"),
            ("<e a=1/>", "well-formed"),
            ("<?xml version=\"1.0\"?>", "well-formed"),
        ] {
            let err = check_well_formed(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    /// Every string createrepo_c checks, and only the dependencies and changelog
    /// entries it keeps, refused by name.
    #[test]
    fn control_characters_are_refused_wherever_repodata_would_carry_them() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/rpms/hello-caprepo-1.0-1.x86_64.rpm");
        let clean = super::super::inspect::parse_rpm(
            crate::formats::package_bytes::PackageBytes::File(&path),
        )
        .unwrap();
        assert_eq!(check_renderable(&clean), Ok(()));
        let dep = |name: &str, version: &str| Dep {
            name: name.into(),
            flags: if version.is_empty() { 0 } else { 8 },
            version: version.into(),
        };
        type Edit = Box<dyn Fn(&mut RpmInfo)>;
        let cases: Vec<(Edit, Option<&str>)> = vec![
            (
                Box::new(|i| i.description.push('\u{7}')),
                Some("description contains"),
            ),
            (
                Box::new(|i| i.packager.push('\u{1b}')),
                Some("packager contains"),
            ),
            (
                Box::new(|i| i.sourcerpm.push('\u{0}')),
                Some("sourcerpm contains"),
            ),
            (
                Box::new(move |i| i.provides.push(dep("evil\u{2}", ""))),
                Some("the provides name"),
            ),
            (
                Box::new(move |i| i.requires.push(dep("lib", "1\u{3}"))),
                Some("the version of requires"),
            ),
            (
                Box::new(move |i| i.suggests.push(dep("s\u{4}", ""))),
                Some("the suggests name"),
            ),
            (
                Box::new(|i| i.files[0].path.push('\u{5}')),
                Some("the file name"),
            ),
            (
                Box::new(|i| i.changelog[0].0.push('\u{6}')),
                Some("changelog author"),
            ),
            (
                Box::new(|i| i.changelog[1].2.push('\u{8}')),
                Some("changelog entry"),
            ),
            // TAB, LF and CR are allowed, and so is a dropped requirement.
            (Box::new(|i| i.summary.push_str("\t\n\r")), None),
            (
                Box::new(move |i| i.requires.push(dep("rpmlib(Evil\u{1})", "1"))),
                None,
            ),
        ];
        for (edit, expected) in cases {
            let mut info = clean.clone();
            edit(&mut info);
            match (check_renderable(&info), expected) {
                (Ok(()), None) => {}
                (Err(why), Some(expected)) => assert!(why.contains(expected), "{why}"),
                (got, expected) => panic!("{got:?}, expected {expected:?}"),
            }
        }
    }
}
