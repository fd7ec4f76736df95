//! One package's entries in primary.xml, filelists.xml and other.xml, written
//! exactly as createrepo_c 0.17 writes them (element order, 2-space indent,
//! which files go into primary, how dependency flags, epochs and pre-requires
//! are spelled, which requires are dropped). Rendered once per stored package
//! and cached as blobs; publishing only concatenates.

use std::fmt::Write;

use super::inspect::{Dep, FileItem, FileKind, PRE_FLAGS, RpmInfo};

/// Text content: `&`, `<`, `>` (libxml2 leaves quotes alone in text).
pub fn text(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Attribute values: also `"`.
pub fn attr(value: &str) -> String {
    text(value).replace('"', "&quot;")
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

/// createrepo_c keeps the newest ten changelog entries, written oldest first.
pub const CHANGELOG_LIMIT: usize = 10;

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
}
