//! A cap touches its own cell and nothing else: each test here is an attack by a
//! holder of a valid, narrow cap on something outside it (another suite's clients,
//! another repository's private packages, another cap's revocation or history),
//! run against a real server with real apt-get, rpmbuild and python's ed25519.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;
use crate::releases::{hello_rebuilt, hello_version};

fn sha256_file(path: &Path) -> String {
    sha256_hex(&std::fs::read(path).unwrap())
}

fn stanzas<'a>(packages: &'a str, name: &str) -> Vec<&'a str> {
    packages
        .split("\n\n")
        .filter(|s| s.starts_with(&format!("Package: {name}\n")))
        .collect()
}

fn field<'a>(stanza: &'a str, name: &str) -> &'a str {
    stanza
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_default()
}

/// Two suites share the repository's pool. A cap for `aaa` uploads hello 2.10-3 with
/// other bytes than stable's: stable's clients must still fetch stable's bytes.
#[test]
fn a_second_suite_cannot_replace_what_another_suite_serves_at_a_pool_path() {
    let data = DataDir::init(&[]);
    data.repo_add("pc", "stable,aaa", "main", "amd64");
    let server = Server::start(&data);
    let stable = data.cap("apt/pc/dists/stable/main/binary-amd64", "1h");
    let aaa = data.cap("apt/pc/dists/aaa/main/binary-amd64", "1h");
    let real = fixture("debs/hello_2.10-3_amd64.deb");
    let other = fixture("variants/hello-conflict.deb");
    assert!(
        server
            .upload(&stable, std::slice::from_ref(&real), true)
            .status
            .success()
    );
    let out = server.upload(&aaa, std::slice::from_ref(&other), true);
    assert!(
        out.status.success(),
        "another suite's identity gets its own path: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stable_packages = server
        .get("/pc/dists/stable/main/binary-amd64/Packages")
        .text();
    let aaa_packages = server
        .get("/pc/dists/aaa/main/binary-amd64/Packages")
        .text();
    let (s, a) = (
        stanzas(&stable_packages, "hello")[0],
        stanzas(&aaa_packages, "hello")[0],
    );
    assert_eq!(
        field(s, "Filename"),
        "pool/main/h/hello/hello_2.10-3_amd64.deb"
    );
    assert_ne!(field(s, "Filename"), field(a, "Filename"));
    // Each path serves its own bytes.
    for (stanza, file) in [(s, &real), (a, &other)] {
        let served = server.get(&format!("/pc/{}", field(stanza, "Filename")));
        assert_eq!(served.status, 200);
        assert_eq!(sha256_hex(&served.body), sha256_file(file));
    }
    // And real apt on each suite downloads and verifies its own package.
    let key = data.key(false);
    for (suite, file) in [("stable", &real), ("aaa", &other)] {
        let apt = Apt::for_repo(&server, "pc", suite, "main", &key, true);
        apt.run_ok(&["update"]);
        apt.run_ok(&["install", "-y", "--download-only", "hello"]);
        let downloaded = apt.archive("hello_2.10-3_amd64.deb");
        assert_eq!(sha256_file(&downloaded), sha256_file(file), "{suite}");
    }
    server.stop();
    assert!(data.cli(&["verify"], &[]).starts_with("ok"));
}

/// `2.10-3` and `1:2.10-3` share a file name (the epoch is not part of it): both are
/// published, each at its own path, and apt fetches each one's bytes.
#[test]
fn two_epochs_of_one_version_get_two_pool_paths() {
    let data = DataDir::init(&[]);
    data.repo_add("ep", "stable", "main", "amd64");
    let server = Server::start(&data);
    let cap = data.cap("apt/ep/dists/stable/main/binary-amd64", "1h");
    let work = tempfile::tempdir().unwrap();
    let plain = fixture("debs/hello_2.10-3_amd64.deb");
    let epoch = hello_version(work.path(), "1:2.10-3");
    let out = server.upload(&cap, &[plain.clone(), epoch.clone()], true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let packages = server
        .get("/ep/dists/stable/main/binary-amd64/Packages")
        .text();
    let listed = stanzas(&packages, "hello");
    assert_eq!(listed.len(), 2, "{packages}");
    assert_ne!(field(listed[0], "Filename"), field(listed[1], "Filename"));
    for stanza in &listed {
        let served = server.get(&format!("/ep/{}", field(stanza, "Filename")));
        assert_eq!(sha256_hex(&served.body), field(stanza, "SHA256"));
    }
    let apt = Apt::for_repo(&server, "ep", "stable", "main", &data.key(false), true);
    apt.run_ok(&["update"]);
    for (version, file) in [("2.10-3", &plain), ("1:2.10-3", &epoch)] {
        apt.run_ok(&["clean"]);
        apt.run_ok(&[
            "install",
            "-y",
            "--download-only",
            "--allow-downgrades",
            &format!("hello={version}"),
        ]);
        let name = format!("hello_{}_amd64.deb", version.replace(':', "%3a"));
        assert_eq!(
            sha256_file(&apt.archive(&name)),
            sha256_file(file),
            "{version}"
        );
    }
    server.stop();
}

/// A tiny real noarch rpm built by rpmbuild, with the given epoch.
fn noarch_rpm(dir: &Path, epoch: u32, summary: &str) -> PathBuf {
    named_noarch_rpm(dir, "epochy", epoch, summary)
}

fn named_noarch_rpm(dir: &Path, name: &str, epoch: u32, summary: &str) -> PathBuf {
    let top = dir.join(format!("top-{name}-{epoch}"));
    let spec = dir.join(format!("{name}-{epoch}.spec"));
    std::fs::write(
        &spec,
        format!(
            "Name: {name}\nVersion: 1.0\nRelease: 1\nEpoch: {epoch}\nSummary: {summary}\n\
             License: MIT\nBuildArch: noarch\n%description\nEpoch test.\n%files\n"
        ),
    )
    .unwrap();
    run_ok(
        Command::new("rpmbuild")
            .arg("--define")
            .arg(format!("_topdir {}", top.display()))
            .args(["--define", "_build_id_links none", "-bb"])
            .arg(&spec),
    );
    top.join(format!("RPMS/noarch/{name}-1.0-1.noarch.rpm"))
}

/// RPM: `0:1.0-1` and `1:1.0-1` of one noarch name share `Packages/e/epochy-1.0-1.noarch.rpm`;
/// the second is refused with a 409 that names the clash, and the first stays served.
#[test]
fn rpm_epochs_that_share_a_location_are_refused() {
    let data = DataDir::init(&[]);
    data.repo_add_rpm("re", "12", "x86_64,aarch64", &["--no-sign-packages"]);
    let server = Server::start(&data);
    let x86 = data.cap("rpm/re/12/x86_64", "1h");
    let arm = data.cap("rpm/re/12/aarch64", "1h");
    let work = tempfile::tempdir().unwrap();
    let zero = noarch_rpm(work.path(), 0, "first");
    let one = noarch_rpm(work.path(), 1, "second");
    assert_eq!(
        put(&server, "e.rpm", &zero, Some(&x86), "?wait=true").status,
        201
    );
    let clash = put(&server, "e.rpm", &one, Some(&arm), "?wait=true");
    assert_eq!(clash.status, 409, "{}", clash.text());
    assert!(clash.text().contains("epoch"), "{}", clash.text());
    for arch in ["x86_64", "aarch64"] {
        let served = server.get(&format!("/re/12/{arch}/Packages/e/epochy-1.0-1.noarch.rpm"));
        assert_eq!(sha256_hex(&served.body), sha256_file(&zero), "{arch}");
    }
    server.stop();
}

/// A public repository's upload cap names, in a .dsc, the sha256 and size of a package
/// stored for a private repository: refused, and nothing of it is served publicly.
#[test]
fn a_dsc_cannot_publish_a_blob_it_did_not_stage() {
    let data = DataDir::init(&[]);
    data.repo_add_with("secret", "stable", "main", "amd64", &["--private"]);
    data.repo_add("open", "stable", "main", "amd64");
    let server = Server::start(&data);
    let private_cap = data.cap("apt/secret/dists/stable/main/binary-amd64", "1h");
    let public_cap = data.cap("apt/open/dists/stable/main/binary-amd64", "1h");
    let secret = fixture("debs/tree_2.1.0-1_amd64.deb");
    assert!(
        server
            .upload(&private_cap, std::slice::from_ref(&secret), true)
            .status
            .success()
    );
    let size = std::fs::metadata(&secret).unwrap().len();
    let digest = sha256_file(&secret);
    let work = tempfile::tempdir().unwrap();
    let dsc = work.path().join("caprepo-hello_1.0-1.dsc");
    std::fs::write(
        &dsc,
        format!(
            "Format: 1.0\nSource: caprepo-hello\nBinary: caprepo-hello\nArchitecture: all\n\
             Version: 1.0-1\nMaintainer: x <x@example.invalid>\nChecksums-Sha256:\n \
             {digest} {size} caprepo-hello_1.0-1.tar.gz\n"
        ),
    )
    .unwrap();
    let reply = put(
        &server,
        "caprepo-hello_1.0-1.dsc",
        &dsc,
        Some(&public_cap),
        "?wait=true",
    );
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(
        reply.text().contains("not uploaded through a cap"),
        "{}",
        reply.text()
    );
    // A .changes that lists the private .deb is refused the same way.
    let changes = work.path().join("x_amd64.changes");
    std::fs::write(
        &changes,
        format!(
            "Format: 1.8\nSource: tree\nVersion: 2.1.0-1\nChecksums-Sha256:\n \
             {digest} {size} tree_2.1.0-1_amd64.deb\n"
        ),
    )
    .unwrap();
    let reply = put(
        &server,
        "x_amd64.changes",
        &changes,
        Some(&public_cap),
        "?wait=true",
    );
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(
        !server
            .get("/open/dists/stable/main/binary-amd64/Packages")
            .text()
            .contains("Package: tree\n")
    );
    assert_eq!(
        server
            .get("/open/pool/main/c/caprepo-hello/caprepo-hello_1.0-1.tar.gz")
            .status,
        404
    );
    assert_eq!(
        server
            .get("/open/pool/main/t/tree/tree_2.1.0-1_amd64.deb")
            .status,
        404
    );
    server.stop();
}

fn release(server: &Server, cap: &str, body: &str) -> HttpReply {
    let url = format!("{}/api/v1/release", server.url);
    let auth = format!("Authorization: Bearer {cap}");
    curl(&[
        "-X",
        "POST",
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "--data",
        body,
        &url,
    ])
}

/// A publish cap for testing moves packages out of stable, or switches testing to a
/// snapshot of stable: neither may change stable.
#[test]
fn release_operations_change_only_suites_inside_the_cap() {
    let data = DataDir::init(&[]);
    data.repo_add("mv", "stable,testing", "main", "amd64");
    let server = Server::start(&data);
    let upload = data.cap("apt/mv/dists/stable/main/binary-amd64", "1h");
    assert!(
        server
            .upload(&upload, &[fixture("debs/hello_2.10-3_amd64.deb")], true)
            .status
            .success()
    );
    let testing = data.cap_with("apt/mv/dists/testing", "publish", "1h", &[]);
    let moved = release(
        &server,
        &testing,
        r#"{"op":"promote","repo":"apt/mv","from":"stable","to":"testing","move":true}"#,
    );
    assert_eq!(moved.status, 403, "{}", moved.text());
    let stable_index = "/mv/dists/stable/main/binary-amd64/Packages";
    assert!(server.get(stable_index).text().contains("Package: hello\n"));
    // Blue/green across suites: testing takes stable's snapshot; stable is not rolled back.
    data.cli(&["snapshot", "create"], &["apt/mv/stable", "s1"]);
    assert!(
        server
            .upload(&upload, &[fixture("debs/tree_2.1.0-1_amd64.deb")], true)
            .status
            .success()
    );
    let switched = release(
        &server,
        &testing,
        r#"{"op":"snapshot-switch","tree":"apt/mv/testing","name":"s1"}"#,
    );
    assert_eq!(switched.status, 200, "{}", switched.text());
    server.wait_for(
        "/mv/dists/testing/main/binary-amd64/Packages",
        "switched",
        |r| r.text().contains("Package: hello\n"),
    );
    let stable = server.get(stable_index).text();
    assert!(
        stable.contains("Package: hello\n") && stable.contains("Package: tree\n"),
        "{stable}"
    );
    assert!(
        !server
            .get("/mv/dists/testing/main/binary-amd64/Packages")
            .text()
            .contains("Package: tree\n")
    );
    server.stop();
}

fn cap_id(data: &DataDir, cap: &str) -> String {
    serde_json::from_str::<serde_json::Value>(&data.cli(&["cap", "inspect", "--json"], &[cap]))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// An admin cap for apt/foo writes the id of an apt/foobar cap into a block of its own
/// and revokes "itself": the foobar cap must keep working, and uploads through such a
/// block are never attributed to the id it copied.
#[test]
fn a_chosen_block_id_revokes_nothing_and_signs_nothing_else() {
    let data = DataDir::init(&[]);
    data.repo_add("foo", "stable", "main", "amd64");
    data.repo_add("foobar", "stable", "main", "amd64");
    let server = Server::start(&data);
    let victim = data.cap("apt/foobar/dists/stable/main/binary-amd64", "1h");
    let victim_id = cap_id(&data, &victim);
    let admin = data.cap_with("apt/foo", "admin", "1h", &[]);
    let forged = attenuate_with_id(&admin, &victim_id, "apt/foo", "admin");
    let url = format!("{}/api/v1/revoke", server.url);
    let auth = format!("Authorization: Bearer {admin}");
    let body = serde_json::json!({ "cap": forged }).to_string();
    let revoked = curl(&["-X", "POST", "-H", &auth, "--data", &body, &url]);
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert_ne!(revoked.json()["revoked"], victim_id.as_str());
    let out = server.upload(&victim, &[fixture("debs/hello_2.10-3_amd64.deb")], true);
    assert!(
        out.status.success(),
        "the foobar cap still works: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An uploader cannot sign its uploads with someone else's id either.
    let uploader = data.cap("apt/foo/dists/stable/main/binary-amd64", "1h");
    let disguised = attenuate_with_id(
        &uploader,
        &victim_id,
        "apt/foo/dists/stable/main/binary-amd64",
        "upload",
    );
    let out = server.upload(&disguised, &[fixture("debs/tree_2.1.0-1_amd64.deb")], true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop();
    let history = data.cli(&["history"], &["apt/foo/stable"]);
    assert!(history.contains("tree"), "{history}");
    assert!(!history.contains(&victim_id), "{history}");
}

/// An amd64 cap may upload Architecture: all packages (they are built on one
/// architecture), but not one named like a package built for arm64: arm64 clients would
/// be offered it in place of their own.
#[test]
fn an_arch_all_upload_cannot_replace_another_architectures_package() {
    let data = DataDir::init(&[]);
    data.repo_add("sh", "stable", "main", "amd64,arm64");
    let server = Server::start(&data);
    let arm = data.cap("apt/sh/dists/stable/main/binary-arm64", "1h");
    let amd = data.cap("apt/sh/dists/stable/main/binary-amd64", "1h");
    let out = server.upload(&arm, &[fixture("malformed/arch-arm64.deb")], true);
    assert!(out.status.success(), "{}", output_text(&out));
    let work = tempfile::tempdir().unwrap();
    let all = hello_rebuilt(work.path(), "9.9-1", "all");
    let refused = put(
        &server,
        "hello_9.9-1_all.deb",
        &all,
        Some(&amd),
        "?wait=true",
    );
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(
        refused.text().contains("binary-arm64"),
        "{}",
        refused.text()
    );
    let arm_index = "/sh/dists/stable/main/binary-arm64/Packages";
    assert!(!server.get(arm_index).text().contains("Version: 9.9-1"));
    // Other arch:all packages still come through the amd64 cap, and a cap for the whole
    // component may upload this one.
    let out = server.upload(&amd, &[fixture("debs/lsb-base_11.6_all.deb")], true);
    assert!(out.status.success(), "{}", output_text(&out));
    let component = data.cap("apt/sh/dists/stable/main", "1h");
    let accepted = put(
        &server,
        "hello_9.9-1_all.deb",
        &all,
        Some(&component),
        "?wait=true&target=apt/sh/dists/stable/main",
    );
    assert!(
        accepted.status == 201 || accepted.status == 200,
        "{}",
        accepted.text()
    );
    assert!(server.get(arm_index).text().contains("Version: 9.9-1"));
    server.stop();
}

/// RPM: an x86_64 cap may upload noarch packages, but not one named like a package built
/// for aarch64, which dnf on aarch64 would then be offered.
#[test]
fn a_noarch_upload_cannot_replace_another_architectures_package() {
    let data = DataDir::init(&[]);
    data.repo_add_rpm("ns", "12", "x86_64,aarch64", &["--no-sign-packages"]);
    let server = Server::start(&data);
    let arm = data.cap("rpm/ns/12/aarch64", "1h");
    let x86 = data.cap("rpm/ns/12/x86_64", "1h");
    let built = fixture("rpms/aarch64-caprepo-1.0-1.aarch64.rpm");
    assert_eq!(
        put(&server, "a.rpm", &built, Some(&arm), "?wait=true").status,
        201
    );
    let work = tempfile::tempdir().unwrap();
    let shadow = named_noarch_rpm(work.path(), "aarch64-caprepo", 9, "shadow");
    let refused = put(&server, "s.rpm", &shadow, Some(&x86), "?wait=true");
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(refused.text().contains("aarch64"), "{}", refused.text());
    let other = named_noarch_rpm(work.path(), "fresh-caprepo", 0, "fresh");
    assert_eq!(
        put(&server, "f.rpm", &other, Some(&x86), "?wait=true").status,
        201
    );
    server.stop();
}
