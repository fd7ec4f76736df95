//! Packages rpm itself did not build the way rpm 4.18 does (issue 15): rpms without a
//! payload digest (rpm < 4.14), which need a header+payload signature besides the
//! header one, and real rpm 6.0 builds in the v4 and v6 package formats. Each is
//! signed by caprepo's agent, checked with the real `rpmkeys --checksig` against the
//! repository key, and installed by real dnf with `gpgcheck=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;

const LEGACY: &str = "legacy-caprepo-1.0-1.noarch.rpm";
const MODERN: &str = "standalone-caprepo-1.0-1.noarch.rpm";

/// The repository key imported into an rpm database of its own.
struct Keyring {
    dir: tempfile::TempDir,
}

impl Keyring {
    fn of(data: &DataDir) -> Keyring {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key.asc"), data.key(true)).unwrap();
        run_ok(
            Command::new("rpmkeys")
                .arg("--dbpath")
                .arg(dir.path().join("db"))
                .arg("--import")
                .arg(dir.path().join("key.asc")),
        );
        Keyring { dir }
    }

    /// `rpmkeys -Kv` of the package the server serves at `path`, which must pass with
    /// signatures required, as dnf's `gpgcheck=1` requires them.
    fn check_served(&self, server: &Server, path: &str) -> String {
        let served = server.get(path);
        assert_eq!(served.status, 200, "{path}");
        let file = self.dir.path().join("served.rpm");
        std::fs::write(&file, &served.body).unwrap();
        let verify = |verbose: &str| {
            Command::new("rpmkeys")
                .arg("--dbpath")
                .arg(self.dir.path().join("db"))
                .args(["--define", "_pkgverify_level signature", verbose])
                .arg(&file)
                .output()
                .unwrap()
        };
        let checked = verify("-K");
        assert!(
            checked.status.success() && output_text(&checked).contains("digests signatures OK"),
            "{path}: {}",
            output_text(&checked)
        );
        output_text(&verify("-Kv"))
    }
}

/// A signature header tag as `rpm -qp --qf` prints it, of the package served at `path`.
fn signature_tag(server: &Server, path: &str, tag: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.rpm");
    std::fs::write(&file, server.get(path).body).unwrap();
    run_ok(
        Command::new("rpm")
            .args(["-qp", "--nosignature", "--nodigest", "--qf"])
            .arg(format!("%{{{tag}:pgpsig}}"))
            .arg(&file),
    )
}

/// A data dir with the signing rpm repository `old` (release 12, x86_64), its server,
/// and a cap to upload there.
fn signing_repo(init: &[&str]) -> (DataDir, Server, String) {
    let data = DataDir::init(init);
    data.repo_add_rpm("old", "12", "x86_64", &[]);
    let server = Server::start(&data);
    let cap = data.cap("rpm/old/12/x86_64", "1h");
    (data, server, cap)
}

fn installed(root: &Path) -> String {
    run_ok(Command::new("rpm").arg("--root").arg(root).arg("-qa"))
}

#[test]
fn a_legacy_rpm_gets_a_header_and_payload_signature_that_rpmkeys_and_dnf_accept() {
    let (data, server, cap) = signing_repo(&[]);
    let out = server.upload(
        &cap,
        &[
            fixture(&format!("rpms/{LEGACY}")),
            fixture(&format!("rpms/{MODERN}")),
        ],
        true,
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let keys = Keyring::of(&data);

    let legacy_path = format!("/old/12/x86_64/Packages/l/{LEGACY}");
    let verbose = keys.check_served(&server, &legacy_path);
    // Both signatures, each verified: the header one and the header+payload one.
    let lines: Vec<&str> = verbose
        .lines()
        .filter(|l| l.contains("Signature"))
        .collect();
    assert_eq!(lines.len(), 2, "{verbose}");
    assert!(lines.iter().all(|l| l.ends_with(": OK")), "{verbose}");
    assert!(
        lines.iter().any(|l| l.trim_start().starts_with("V4 EdDSA")),
        "{verbose}"
    );
    // Where rpmsign 4.18 puts an EdDSA key's signatures: DSAHEADER and SIGGPG (1005).
    assert_ne!(signature_tag(&server, &legacy_path, "SIGGPG"), "(none)");
    assert_ne!(signature_tag(&server, &legacy_path, "DSAHEADER"), "(none)");

    // A package with a payload digest keeps its header-only signature.
    let modern_path = format!("/old/12/x86_64/Packages/s/{MODERN}");
    let verbose = keys.check_served(&server, &modern_path);
    assert_eq!(verbose.matches("Signature").count(), 1, "{verbose}");
    for tag in ["SIGGPG", "SIGPGP"] {
        assert_eq!(signature_tag(&server, &modern_path, tag), "(none)", "{tag}");
    }

    let dnf = Dnf::new(&server, "old");
    let out = dnf.run(&["install", "legacy-caprepo", "standalone-caprepo"]);
    assert!(out.status.success(), "dnf install: {}", output_text(&out));
    assert!(installed(&dnf.root()).contains("legacy-caprepo-1.0-1.noarch"));
    assert_eq!(
        std::fs::read_to_string(dnf.root().join("usr/share/legacy-caprepo/hello.txt")).unwrap(),
        "hello from legacy-caprepo\n"
    );
}

#[test]
fn an_rsa_key_signs_a_legacy_rpm_in_the_rsa_tags() {
    let (data, server, cap) = signing_repo(&["--key-algo", "rsa4096"]);
    let out = server.upload(&cap, &[fixture(&format!("rpms/{LEGACY}"))], true);
    assert!(out.status.success(), "{}", output_text(&out));
    let legacy_path = format!("/old/12/x86_64/Packages/l/{LEGACY}");
    let verbose = Keyring::of(&data).check_served(&server, &legacy_path);
    assert!(verbose.contains("    V4 RSA/SHA512 Signature"), "{verbose}");
    // rpmsign 4.18's tags for an RSA key: RSAHEADER and SIGPGP (1002).
    assert_ne!(signature_tag(&server, &legacy_path, "SIGPGP"), "(none)");
    assert_ne!(signature_tag(&server, &legacy_path, "RSAHEADER"), "(none)");
    assert_eq!(signature_tag(&server, &legacy_path, "SIGGPG"), "(none)");
}

/// Build, at test time, a package too big for one agent request and strip its payload
/// digest with the fixtures' own tool: a real rpmbuild package, not a committed 50 MB file.
fn big_legacy_rpm(dir: &Path) -> PathBuf {
    let spec = dir.join("big-legacy-caprepo.spec");
    std::fs::write(
        &spec,
        "%define _binary_payload w0.ufdio\n%define debug_package %{nil}\n%define __os_install_post %{nil}\n\
         %define _build_id_links none\n\
         Name: big-legacy-caprepo\nVersion: 1.0\nRelease: 1\nSummary: Too big to sign in one agent request\n\
         License: CC0-1.0\nBuildArch: noarch\nAutoReqProv: no\n%description\nRandom bytes.\n\
         %install\nmkdir -p %{buildroot}/usr/share/big\nhead -c 52428800 /dev/urandom > %{buildroot}/usr/share/big/blob\n\
         %files\n/usr/share/big/blob\n",
    )
    .unwrap();
    run_ok(
        Command::new("rpmbuild")
            .env("HOME", dir)
            .arg("-bb")
            .arg("--define")
            .arg(format!("_topdir {}", dir.join("top").display()))
            .arg(&spec),
    );
    let built = dir.join("top/RPMS/noarch/big-legacy-caprepo-1.0-1.noarch.rpm");
    let legacy = dir.join("big-legacy-caprepo-1.0-1.noarch.rpm");
    run_ok(
        Command::new("python3")
            .arg(fixture("rpms/strip-payload-digest.py"))
            .arg(&built)
            .arg(&legacy),
    );
    legacy
}

#[test]
fn a_legacy_rpm_too_big_for_the_agent_is_refused_with_a_reason() {
    let work = tempfile::tempdir().unwrap();
    let big = big_legacy_rpm(work.path());
    assert!(std::fs::metadata(&big).unwrap().len() > 64 * 1024 * 1024 * 3 / 4);
    let data = DataDir::init(&[]);
    data.repo_add_rpm("old", "12", "x86_64", &[]);
    data.repo_add_rpm("unsigned", "12", "x86_64", &["--no-sign-packages"]);
    let server = Server::start(&data);
    let upload_to = |repo: &str| {
        let cap = data.cap(&format!("rpm/{repo}/12/x86_64"), "1h");
        put(&server, "big.rpm", &big, Some(&cap), "?wait=true")
    };

    let started = std::time::Instant::now();
    let reply = upload_to("old");
    assert_eq!(reply.status, 400, "{}", reply.text());
    let why = reply.json()["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for words in [
        "no payload digest",
        "--no-sign-packages",
        "rpm 4.14 or newer",
    ] {
        assert!(why.contains(words), "{why}");
    }
    assert!(
        started.elapsed().as_secs() < 60,
        "refusing took {:?}",
        started.elapsed()
    );
    let served = server.get("/old/12/x86_64/Packages/b/big-legacy-caprepo-1.0-1.noarch.rpm");
    assert_eq!(served.status, 404);

    // What the reason advises works: a repository that does not sign packages takes it.
    let reply = upload_to("unsigned");
    assert!(reply.status < 300, "{}: {}", reply.status, reply.text());
}

#[test]
fn upstream_rpm_6_builds_in_both_formats_verify_and_install_with_rpm_4_18() {
    let data = DataDir::init(&[]);
    // v4 and v6 builds share NEVRAs: one repository per format.
    for format in ["v4", "v6"] {
        data.repo_add_rpm(&format!("up{format}"), "12", "x86_64", &[]);
    }
    let server = Server::start(&data);
    let keys = Keyring::of(&data);
    for format in ["v4", "v6"] {
        let repo = format!("up{format}");
        let dir = fixture(&format!("rpms/upstream/{format}"));
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "rpm"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}", dir.display());
        let cap = data.cap(&format!("rpm/{repo}/12/x86_64"), "1h");
        let out = server.upload(&cap, &files, true);
        assert!(out.status.success(), "{repo}: {}", output_text(&out));
        for file in &files {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            keys.check_served(&server, &format!("/{repo}/12/x86_64/Packages/r/{name}"));
        }
        // Every package without dependencies an empty root cannot meet (users, /bin/sh,
        // made-up names); rpm-special-files makes device nodes, which a container forbids.
        let installable: &[&str] = if format == "v4" {
            &["rpm-empty"]
        } else {
            &[
                "rpm-empty",
                "rpm-file-types",
                "rpm-hardlinks",
                "rpm-i18n",
                "rpm-with-patch",
            ]
        };
        let dnf = Dnf::new(&server, &repo);
        let mut args = vec!["install"];
        args.extend_from_slice(installable);
        let out = dnf.run(&args);
        assert!(
            out.status.success(),
            "{repo}: dnf install: {}",
            output_text(&out)
        );
        let now = installed(&dnf.root());
        for name in installable {
            assert!(now.contains(name), "{repo}: {name} not in {now}");
        }
        let listed = output_text(&dnf.run(&["repoquery", "--qf", "%{name}"]));
        assert_eq!(
            listed.matches("rpm-").count(),
            files.len(),
            "{repo}: {listed}"
        );
    }
}
