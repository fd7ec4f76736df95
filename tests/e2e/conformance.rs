//! Packages and Release against the reference tools over the same real debs:
//! every stanza field-equal to dpkg-scanpackages' (apart from Filename, which is where
//! each keeps the file), with the repository's legacy hash option off (SHA-256 only) and
//! on (MD5sum and SHA1 too), and Release listing the hash families apt-ftparchive lists.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::harness::*;

const DEBS: &[&str] = &[
    "debs/hello_2.10-3_amd64.deb",
    "debs/tree_2.1.0-1_amd64.deb",
    "debs/gobjc_12.2.0-3_amd64.deb",
    "debs/lsb-base_11.6_all.deb",
    "debs/sensible-utils_0.0.17+nmu1_all.deb",
];

/// deb822 paragraphs as (Package, Version, Architecture) -> field -> value.
fn paragraphs(text: &str) -> BTreeMap<(String, String, String), BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for stanza in text.split("\n\n").filter(|s| !s.trim().is_empty()) {
        let mut fields: BTreeMap<String, String> = BTreeMap::new();
        let mut last = String::new();
        for line in stanza.lines() {
            if line.starts_with(' ') || line.starts_with('\t') {
                if let Some(value) = fields.get_mut(&last) {
                    value.push('\n');
                    value.push_str(line);
                }
            } else if let Some((name, value)) = line.split_once(':') {
                last = name.to_string();
                fields.insert(last.clone(), value.trim().to_string());
            }
        }
        let key = ["Package", "Version", "Architecture"].map(|f| fields[f].clone());
        out.insert(key.into(), fields);
    }
    out
}

fn scanpackages(dir: &Path) -> String {
    run_ok(
        Command::new("dpkg-scanpackages")
            .current_dir(dir)
            .args(["-m", "pool", "/dev/null"]),
    )
}

fn without(
    mut stanzas: BTreeMap<(String, String, String), BTreeMap<String, String>>,
    fields: &[&str],
) -> BTreeMap<(String, String, String), BTreeMap<String, String>> {
    for stanza in stanzas.values_mut() {
        for field in fields {
            stanza.remove(*field);
        }
    }
    stanzas
}

#[test]
fn packages_equal_dpkg_scanpackages_with_and_without_legacy_hashes() {
    let data = DataDir::init(&[]);
    data.repo_add_with("old", "stable", "main", "amd64", &["--legacy-hashes"]);
    data.repo_add("new", "stable", "main", "amd64");
    let server = Server::start(&data);
    let files: Vec<_> = DEBS.iter().map(|d| fixture(d)).collect();
    for repo in ["old", "new"] {
        let cap = data.cap(&format!("apt/{repo}/dists/stable/main/binary-amd64"), "1h");
        let out = server.upload(&cap, &files, true);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join("pool")).unwrap();
    for file in &files {
        std::fs::copy(
            file,
            work.path().join("pool").join(file.file_name().unwrap()),
        )
        .unwrap();
    }
    let reference = paragraphs(&scanpackages(work.path()));
    assert_eq!(reference.len(), DEBS.len());

    let legacy = paragraphs(
        &server
            .get("/old/dists/stable/main/binary-amd64/Packages")
            .text(),
    );
    assert_eq!(
        without(legacy, &["Filename"]),
        without(reference.clone(), &["Filename"])
    );
    let plain = paragraphs(
        &server
            .get("/new/dists/stable/main/binary-amd64/Packages")
            .text(),
    );
    assert_eq!(
        without(plain, &["Filename"]),
        without(reference, &["Filename", "MD5sum", "SHA1"])
    );

    // Release lists the families apt-ftparchive lists, and each hash is the file's.
    let release = server.get("/old/dists/stable/Release").text();
    let families: Vec<&str> = release
        .lines()
        .filter(|l| !l.starts_with(' ') && l.ends_with(':'))
        .collect();
    let dists = work.path().join("dists/s/main/binary-amd64");
    std::fs::create_dir_all(&dists).unwrap();
    std::fs::write(dists.join("Packages"), b"").unwrap();
    let ftparchive = run_ok(
        Command::new("apt-ftparchive")
            .current_dir(work.path())
            .args(["release", "dists/s"]),
    );
    let theirs: Vec<&str> = ftparchive
        .lines()
        .filter(|l| !l.starts_with(' ') && l.ends_with(':'))
        .collect();
    assert_eq!(families, theirs, "{release}");
    let packages = server
        .get("/old/dists/stable/main/binary-amd64/Packages")
        .body;
    let line = |family: &str| {
        release
            .lines()
            .skip_while(|l| *l != family)
            .skip(1)
            .take_while(|l| l.starts_with(' '))
            .find(|l| l.ends_with(" main/binary-amd64/Packages"))
            .unwrap_or_else(|| panic!("{family} lists Packages: {release}"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let digest = |program: &str| {
        let path = work.path().join("Packages.served");
        std::fs::write(&path, &packages).unwrap();
        run_ok(Command::new(program).arg(&path))
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    for (family, program) in [
        ("MD5Sum:", "md5sum"),
        ("SHA1:", "sha1sum"),
        ("SHA256:", "sha256sum"),
        ("SHA512:", "sha512sum"),
    ] {
        assert_eq!(line(family), digest(program), "{family}");
    }
    // Real apt reads the suite with its legacy lists, and verifies what it downloads.
    let apt = Apt::for_repo(&server, "old", "stable", "main", &data.key(false), true);
    apt.run_ok(&["update"]);
    apt.run_ok(&["install", "-y", "--download-only", "hello"]);

    // Turned off again, the suite lists SHA-256 only.
    server.stop();
    data.cli(&["repo", "set"], &["apt/old", "--legacy-hashes", "false"]);
    let server = Server::start(&data);
    server.wait_for("/old/dists/stable/Release", "SHA-256 only", |r| {
        !r.text().contains("MD5Sum:")
    });
    assert!(
        !server
            .get("/old/dists/stable/main/binary-amd64/Packages")
            .text()
            .contains("MD5sum:")
    );
    server.stop();
    assert!(data.cli(&["verify"], &[]).starts_with("ok"));
}
