//! Source packages: files first, then the .dsc (checked against what was
//! stored), Sources per component, and real `apt-get source` through deb-src;
//! a .changes upload verifies every checksum it lists.

use std::process::Command;

use crate::harness::*;

fn source(name: &str) -> std::path::PathBuf {
    fixture(&format!("sources/{name}"))
}

#[test]
fn dsc_after_its_files_then_apt_get_source_fetches_and_verifies_them() {
    let data = DataDir::init(&[]);
    data.repo_add("src", "stable,testing", "main", "amd64");
    let server = Server::start(&data);
    let cap = data.cap("apt/src/dists/stable/main/binary-amd64", "1h");

    // A .dsc whose files are not uploaded yet is refused, and nothing is stored.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let before = data.store_snapshot();
    let early = put(
        &server,
        "caprepo-hello_1.0-1.dsc",
        &source("caprepo-hello_1.0-1.dsc"),
        Some(&cap),
        "",
    );
    assert_eq!(early.status, 400, "{}", early.text());
    assert!(
        early.json()["reason"]
            .as_str()
            .unwrap()
            .contains("upload the files a .dsc names before the .dsc")
    );
    assert_eq!(data.store_snapshot(), before);

    let files = [
        "caprepo-hello_1.0.orig.tar.xz",
        "caprepo-hello_1.0-1.debian.tar.xz",
        "caprepo-hello_1.0-1.dsc",
    ]
    .map(source);
    let out = server.upload(&cap, &files, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("staged caprepo-hello_1.0.orig.tar.xz")
            && stdout.contains("stored caprepo-hello 1.0-1 (source)"),
        "{stdout}"
    );

    let sources = server.get("/src/dists/stable/main/source/Sources").text();
    assert!(
        sources.contains("Package: caprepo-hello\n")
            && sources.contains("Directory: pool/main/c/caprepo-hello\n"),
        "{sources}"
    );
    assert!(
        sources.contains(" caprepo-hello_1.0-1.dsc\n"),
        "the .dsc is listed with its checksum"
    );
    assert!(
        server
            .get("/src/dists/stable/Release")
            .text()
            .contains("main/source/Sources.xz")
    );

    // Real apt with deb-src downloads the source package and checks every hash.
    let apt = Apt::new(
        &format!(
            "Types: deb-src\nURIs: {}/src/\nSuites: stable\nComponents: main\nSigned-By: KEYRING\n",
            server.url
        ),
        &data.key(false),
        false,
    );
    apt.run_ok(&["update"]);
    let work = tempfile::tempdir().unwrap();
    let out = Command::new("apt-get")
        .env("APT_CONFIG", apt.root.path().join("apt.conf"))
        .args(["source", "--download-only", "caprepo-hello"])
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "apt-get source: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "caprepo-hello_1.0-1.dsc",
        "caprepo-hello_1.0.orig.tar.xz",
        "caprepo-hello_1.0-1.debian.tar.xz",
    ] {
        assert_eq!(
            std::fs::read(work.path().join(name)).unwrap(),
            std::fs::read(source(name)).unwrap(),
            "{name}"
        );
    }
    run_ok(
        Command::new("dpkg-source")
            .args(["-x", "caprepo-hello_1.0-1.dsc", "unpacked"])
            .current_dir(work.path()),
    );

    // A .dsc with a wrong checksum names a file nobody uploaded: refused.
    let bad = put(
        &server,
        "bad-checksum.dsc",
        &source("malformed/bad-checksum.dsc"),
        Some(&cap),
        "",
    );
    assert_eq!(bad.status, 400);
    // The maintainer-signed .dsc is accepted with its armor removed (same source, other bytes: a conflict).
    let testing = data.cap("apt/src/dists/testing/main/binary-amd64", "1h");
    let signed = put(
        &server,
        "caprepo-hello_1.0-1.dsc",
        &source("signed/caprepo-hello_1.0-1.dsc"),
        Some(&testing),
        "?wait=true",
    );
    assert!(
        signed.status == 201 || signed.status == 200,
        "{}",
        signed.text()
    );
}

#[test]
fn a_changes_upload_checks_every_listed_file() {
    let data = DataDir::init(&[]);
    data.repo_add("chg", "unstable", "main", "amd64");
    let server = Server::start(&data);
    let cap = data.cap("apt/chg/dists/unstable/main/binary-amd64", "1h");
    let missing = put(
        &server,
        "x.changes",
        &source("malformed/missing-file.changes"),
        Some(&cap),
        "",
    );
    assert_eq!(missing.status, 400, "{}", missing.text());
    // A .changes is read into memory to be checked, so one past the control-file bound is refused.
    let huge = data.path.join("huge.changes");
    std::fs::write(&huge, vec![b'#'; 1024 * 1024 + 1]).unwrap();
    let too_big = put(&server, "huge.changes", &huge, Some(&cap), "");
    assert_eq!(too_big.status, 400, "{}", too_big.text());
    assert!(
        too_big.text().contains("larger than 1 MiB"),
        "{}",
        too_big.text()
    );
    let files = [
        "caprepo-hello_1.0.orig.tar.xz",
        "caprepo-hello_1.0-1.debian.tar.xz",
        "caprepo-hello_1.0-1_all.deb",
        "caprepo-hello_1.0-1.dsc",
        "caprepo-hello_1.0-1_amd64.changes",
    ]
    .map(source);
    let out = server.upload(&cap, &files, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        server
            .get("/chg/dists/unstable/main/source/Sources")
            .text()
            .contains("Package: caprepo-hello\n")
    );
    assert!(
        server
            .get("/chg/dists/unstable/main/binary-amd64/Packages")
            .text()
            .contains("Package: caprepo-hello\n")
    );
    server.stop();
    assert!(
        data.cli(&["verify"], &[]).starts_with("ok"),
        "source manifests match their schemas"
    );
}

/// A deb822 paragraph as field -> value (continuation lines joined with '\n'), for comparing
/// stanzas field by field in any order.
fn fields(stanza: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut last: Option<String> = None;
    for line in stanza.lines() {
        if let Some(rest) = line.strip_prefix(' ') {
            if let Some(name) = &last {
                let value: &mut String = out.get_mut(name).unwrap();
                value.push('\n');
                value.push_str(rest);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.insert(name.to_string(), value.trim().to_string());
            last = Some(name.to_string());
        }
    }
    out
}

/// Sources stanzas carry what dpkg-scansources writes over the same files, value for value
/// (Files and Checksums-Sha1 included), apart from Directory, which is where each keeps them.
#[test]
fn sources_stanzas_equal_dpkg_scansources() {
    let data = DataDir::init(&[]);
    data.repo_add("dss", "stable", "main", "amd64");
    let server = Server::start(&data);
    let cap = data.cap("apt/dss/dists/stable/main/binary-amd64", "1h");
    let names = [
        "caprepo-hello_1.0.orig.tar.xz",
        "caprepo-hello_1.0-1.debian.tar.xz",
        "caprepo-hello_1.0-1.dsc",
    ];
    let out = server.upload(&cap, &names.map(source), true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = server.get("/dss/dists/stable/main/source/Sources").text();
    let work = tempfile::tempdir().unwrap();
    let pool = work.path().join("pool");
    std::fs::create_dir(&pool).unwrap();
    for name in names {
        std::fs::copy(source(name), pool.join(name)).unwrap();
    }
    let theirs = run_ok(
        Command::new("dpkg-scansources")
            .current_dir(work.path())
            .args(["pool", "/dev/null"]),
    );
    let (mut ours, mut theirs) = (fields(&ours), fields(&theirs));
    for stanza in [&mut ours, &mut theirs] {
        assert!(stanza.remove("Directory").is_some());
    }
    assert!(
        ours.contains_key("Files") && ours.contains_key("Checksums-Sha1"),
        "{ours:#?}"
    );
    assert_eq!(ours, theirs);

    // A .dsc whose own Files list disagrees with the uploaded bytes is refused, as dpkg-source
    // refuses it.
    let dsc = std::fs::read_to_string(source("caprepo-hello_1.0-1.dsc")).unwrap();
    let lying = dsc.replace(
        "fada37b714164c3ea2041140a7793185",
        "00000000000000000000000000000000",
    );
    assert_ne!(lying, dsc);
    let path = work.path().join("caprepo-hello_1.0-1.dsc");
    std::fs::write(&path, lying).unwrap();
    let reply = put(&server, "caprepo-hello_1.0-1.dsc", &path, Some(&cap), "");
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("Files entry"), "{}", reply.text());
    server.stop();
}
