//! RPM end to end: scoped rpm uploads signed by the agent, createrepo_c-equal
//! repodata, real dnf (gpgcheck=1, repo_gpgcheck=1) and zypper installing from a
//! caprepo server, rpmkeys verifying the signature, tampering caught by the
//! clients, refusals, and an APT repository beside it in the same server.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;

fn rpm(name: &str) -> PathBuf {
    fixture(&format!("rpms/{name}"))
}

fn add_rpm_repo(data: &DataDir, name: &str, extra: &[&str]) {
    data.repo_add_rpm(name, "12,13", "x86_64,aarch64", extra);
}

fn installed(root: &Path) -> String {
    String::from_utf8_lossy(
        &Command::new("rpm")
            .arg("--root")
            .arg(root)
            .arg("-qa")
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned()
}

#[test]
fn dnf_zypper_and_rpmkeys_accept_what_caprepo_publishes_and_it_equals_createrepo_c() {
    let data = DataDir::init(&[]);
    add_rpm_repo(&data, "fed", &[]);
    data.repo_add("debs", "stable", "main", "amd64");
    let server = Server::start(&data);
    let cap = data.cap("rpm/fed/12/x86_64", "1h");
    let files: Vec<PathBuf> = [
        "hello-caprepo-1.0-1.x86_64.rpm",
        "hello-caprepo-1.0-2.x86_64.rpm",
        "noarch-caprepo-0.5-1.noarch.rpm",
        "standalone-caprepo-1.0-1.noarch.rpm",
        "hello-caprepo-1.0-1.src.rpm",
        "lzma-caprepo-1.0-1.x86_64.rpm",
    ]
    .iter()
    .map(|f| rpm(f))
    .collect();
    let out = server.upload(&cap, &files, true);
    assert!(out.status.success(), "{}", output_text(&out));
    // An APT repository lives beside it in the same data dir and server.
    let deb_cap = data.cap("apt/debs/dists/stable/main/binary-amd64", "1h");
    assert!(
        server
            .upload(&deb_cap, &[fixture("debs/hello_2.10-3_amd64.deb")], true)
            .status
            .success()
    );
    Apt::for_repo(&server, "debs", "stable", "main", &data.key(false), true).run_ok(&["update"]);

    // noarch is listed for aarch64 too; src goes to the source tree.
    let aarch64 = server.get("/fed/12/aarch64/repodata/repomd.xml");
    assert_eq!(aarch64.status, 200);
    assert_eq!(server.get("/fed/12/source/repodata/repomd.xml").status, 200);
    assert_eq!(
        server.get("/fed/13/x86_64/repodata/repomd.xml").status,
        200,
        "empty releases are valid repositories"
    );

    // The key imports into rpm 4.18, and the served package verifies with it.
    let work = tempfile::tempdir().unwrap();
    let keyring = RpmKeyring::new(&data.key(true));
    let served = server.get("/fed/12/x86_64/Packages/h/hello-caprepo-1.0-1.x86_64.rpm");
    assert_eq!(served.status, 200);
    std::fs::write(work.path().join("hello.rpm"), &served.body).unwrap();
    let checked = keyring.check(&work.path().join("hello.rpm"));
    assert!(checked.contains("digests signatures OK"), "{checked}");
    assert_ne!(
        served.body,
        std::fs::read(rpm("hello-caprepo-1.0-1.x86_64.rpm")).unwrap(),
        "the served package is the signed one"
    );

    // createrepo_c over the very packages we serve writes the same records.
    for tree in ["12/x86_64", "12/source"] {
        let compared = compare_with_createrepo_c(&server, &format!("fed/{tree}"), work.path());
        assert!(compared.contains(", 0 differences"), "{tree}: {compared}");
    }

    // dnf with gpgcheck=1 and repo_gpgcheck=1 installs into its own root.
    let dnf = Dnf::new(&server, "fed");
    let out = dnf.run(&["install", "standalone-caprepo"]);
    assert!(out.status.success(), "dnf install: {}", output_text(&out));
    assert!(installed(&dnf.root()).contains("standalone-caprepo-1.0-1.noarch"));
    assert!(
        dnf.root()
            .join("usr/share/standalone-caprepo/hello.txt")
            .exists()
    );
    let info = dnf.run(&["repoquery", "--info", "hello-caprepo"]);
    assert!(output_text(&info).contains("1.0"), "{}", output_text(&info));

    // zypper (its own root) refreshes, installs and downloads with gpg checks on.
    let zroot = work.path().join("zypper-root");
    std::fs::create_dir_all(zroot.join("etc/zypp/repos.d")).unwrap();
    std::fs::write(
        zroot.join("etc/zypp/repos.d/caprepo.repo"),
        format!(
            "[caprepo]\nname=caprepo\nbaseurl={}/fed/$releasever/$basearch/\nenabled=1\nautorefresh=1\ntype=rpm-md\ngpgcheck=1\nrepo_gpgcheck=1\npkg_gpgcheck=1\ngpgkey={}/key.asc\n",
            server.url, server.url
        ),
    )
    .unwrap();
    for args in [
        &["refresh"][..],
        &["install", "standalone-caprepo"],
        &["download", "hello-caprepo"],
    ] {
        let out = zypper(&zroot, args);
        assert!(
            out.status.success(),
            "zypper {args:?}: {}",
            output_text(&out)
        );
    }
    assert!(installed(&zroot).contains("standalone-caprepo-1.0-1.noarch"));
}

#[test]
fn clients_refuse_a_tampered_index_or_a_swapped_package() {
    let data = DataDir::init(&[]);
    add_rpm_repo(&data, "fed", &[]);
    let server = Server::start(&data);
    let cap = data.cap("rpm/fed/12/x86_64", "1h");
    assert!(
        server
            .upload(&cap, &[rpm("standalone-caprepo-1.0-1.noarch.rpm")], true)
            .status
            .success()
    );
    let blob_file = |digest: &str| {
        data.path
            .join("store/blobs/sha256")
            .join(&digest[..2])
            .join(digest)
    };

    // Someone with write access to the bucket swaps the package for the unsigned original.
    let served = server.get("/fed/12/x86_64/Packages/s/standalone-caprepo-1.0-1.noarch.rpm");
    let etag = served.header("etag").unwrap().trim_matches('"').to_string();
    std::fs::copy(rpm("standalone-caprepo-1.0-1.noarch.rpm"), blob_file(&etag)).unwrap();
    let out = Dnf::new(&server, "fed").run(&["install", "standalone-caprepo"]);
    assert!(!out.status.success(), "dnf must refuse a swapped package");
    assert!(!installed(&Dnf::new(&server, "fed").root()).contains("standalone"));

    // ... or edits primary.xml.gz: repomd.xml's checksum no longer matches.
    let repomd = server.get("/fed/12/x86_64/repodata/repomd.xml").text();
    let primary = repomd
        .split("href=\"repodata/")
        .nth(1)
        .unwrap()
        .split('-')
        .next()
        .unwrap()
        .to_string();
    let tampered = {
        let gz = server
            .get(&format!("/fed/12/x86_64/repodata/{primary}-primary.xml.gz"))
            .body;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(&gz[..]), &mut text)
            .unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(
            &mut enc,
            text.replace("Dependency-free", "Trojaned").as_bytes(),
        )
        .unwrap();
        enc.finish().unwrap()
    };
    // The index is stored as a composite of per-chunk parts; a blob file at its name
    // takes precedence, which is what an attacker with write access to the store would plant.
    std::fs::create_dir_all(blob_file(&primary).parent().unwrap()).unwrap();
    std::fs::write(blob_file(&primary), tampered).unwrap();
    // The running server holds the index files it has served in memory; a fresh one (after a
    // restart, or another daemon on the same bucket) reads the tampered blob.
    drop(server);
    let server = Server::start(&data);
    let out = Dnf::new(&server, "fed").run(&["makecache"]);
    assert!(
        !out.status.success(),
        "dnf must refuse a tampered primary.xml.gz: {}",
        output_text(&out)
    );
}

#[test]
fn bad_rpms_are_refused_with_a_reason_and_nothing_is_stored() {
    let data = DataDir::init(&[]);
    add_rpm_repo(&data, "fed", &[]);
    let server = Server::start(&data);
    let cap = data.cap("rpm/fed/12/x86_64", "1h");
    let good = put(
        &server,
        "hello.rpm",
        &rpm("hello-caprepo-1.0-1.x86_64.rpm"),
        Some(&cap),
        "?wait=true",
    );
    assert_eq!(good.status, 201, "{}", good.text());
    assert_eq!(good.json()["package"]["version"], "2:1.0-1");
    assert_eq!(good.json()["published"], true);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let before = data.store_snapshot();
    for (file, status, reason) in [
        ("malformed/not-an-rpm.rpm", 400, "not an RPM"),
        ("malformed/truncated.rpm", 400, "headers"),
        ("malformed/truncated-payload.rpm", 400, "digest mismatch"),
        ("malformed/corrupt-payload.rpm", 400, "digest mismatch"),
        (
            "aarch64-caprepo-1.0-1.aarch64.rpm",
            403,
            "architecture aarch64",
        ),
        (
            "malformed/hello-caprepo-conflict-1.0-1.x86_64.rpm",
            409,
            "already exists",
        ),
        ("hello-caprepo-1.0-1.x86_64.rpm", 200, ""),
    ] {
        let reply = put(&server, "x.rpm", &rpm(file), Some(&cap), "");
        assert_eq!(reply.status, status, "{file}: {}", reply.text());
        if status >= 400 {
            let why = reply.json()["reason"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(why.contains(reason), "{file}: {why}");
            let out = server.upload(&cap, &[rpm(file)], false);
            assert!(!out.status.success(), "{file}");
        } else {
            assert_eq!(reply.json()["status"], "already-present");
        }
    }
    // A .rpm aimed at an APT scope, and a .deb at an RPM scope, are refused too.
    assert_eq!(
        put(
            &server,
            "hello.deb",
            &fixture("debs/hello_2.10-3_amd64.deb"),
            Some(&cap),
            ""
        )
        .status,
        400
    );
    assert_eq!(
        data.store_snapshot(),
        before,
        "a refused upload changed the store"
    );
}

#[test]
fn dnf_reads_a_private_rpm_repository_through_a_read_cap_until_it_is_revoked() {
    let data = DataDir::init(&[]);
    add_rpm_repo(&data, "hidden", &["--private"]);
    let server = Server::start(&data);
    let cap = data.cap("rpm/hidden/12/x86_64", "1h");
    assert!(
        server
            .upload(&cap, &[rpm("standalone-caprepo-1.0-1.noarch.rpm")], true)
            .status
            .success()
    );
    assert_eq!(
        server.get("/hidden/12/x86_64/repodata/repomd.xml").status,
        404,
        "private: no public path"
    );

    let read = data.cap_with("rpm/hidden", "read", "30d", &[]);
    let setup = run_ok(
        caprepo()
            .args(["cap", "publish", "--server", &server.url])
            .arg(&read),
    );
    assert!(
        setup.contains(&format!(
            "baseurl={}/r/{read}/$releasever/$basearch/",
            server.url
        )),
        "{setup}"
    );
    assert!(setup.contains("repo_gpgcheck=1") && setup.contains("gpgkey="));

    // The .repo stanza caprepo printed is what dnf uses.
    let dnf = Dnf::new(&server, &format!("r/{read}"));
    let out = dnf.run(&["install", "standalone-caprepo"]);
    assert!(
        out.status.success(),
        "dnf through a read cap: {}",
        output_text(&out)
    );
    assert!(installed(&dnf.root()).contains("standalone-caprepo"));

    let id = serde_json::from_str::<serde_json::Value>(&run_ok(
        caprepo()
            .args(["cap", "inspect", "--json", "--data"])
            .arg(&data.path)
            .arg(&read),
    ))
    .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    run_ok(
        caprepo()
            .args(["cap", "revoke", "--data"])
            .arg(&data.path)
            .arg(&id),
    );
    let out = Dnf::new(&server, &format!("r/{read}")).run(&["makecache"]);
    assert!(!out.status.success(), "dnf must fail after revocation");
    assert!(output_text(&out).contains("401"), "{}", output_text(&out));
}

/// Download the repodata of `tree` (`<repo>/<release>/<arch>`) and every package it
/// lists into `work`, run createrepo_c over those very packages, and compare the two
/// field by field (tests/tools/compare_repodata.py): its report.
pub fn compare_with_createrepo_c(server: &Server, tree: &str, work: &Path) -> String {
    let ours = work.join(format!("ours-{}", tree.replace('/', "-")));
    let theirs = work.join(format!("theirs-{}", tree.replace('/', "-")));
    std::fs::create_dir_all(ours.join("repodata")).unwrap();
    let repomd = server.get(&format!("/{tree}/repodata/repomd.xml"));
    std::fs::write(ours.join("repodata/repomd.xml"), &repomd.body).unwrap();
    for href in repomd
        .text()
        .split("href=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_string())
    {
        std::fs::write(
            ours.join(&href),
            server.get(&format!("/{tree}/{href}")).body,
        )
        .unwrap();
    }
    let primary = Command::new("sh")
        .arg("-c")
        .arg(format!("zcat {}/repodata/*-primary.xml.gz", ours.display()))
        .output()
        .unwrap();
    for location in String::from_utf8_lossy(&primary.stdout)
        .split("location href=\"")
        .skip(1)
    {
        let location = location.split('"').next().unwrap();
        let path = theirs.join(location);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, server.get(&format!("/{tree}/{location}")).body).unwrap();
    }
    run_ok(
        Command::new("createrepo_c")
            .arg("--no-database")
            .arg(&theirs),
    );
    run_ok(
        Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/compare_repodata.py"))
            .arg(&ours)
            .arg(&theirs),
    )
}

/// Every repodata file of `tree` checked against its repomd.xml: each .gz by sha256
/// and size, its text by open-checksum, open-size and package count. Returns primary.
fn consistent_repodata(server: &Server, tree: &str) -> String {
    let repomd = server.get(&format!("{tree}/repodata/repomd.xml")).text();
    let mut primary = String::new();
    for entry in repomd.split("<data type=\"").skip(1) {
        let kind = entry.split('"').next().unwrap();
        let field = |tag: &str| {
            let open = entry.find(&format!("<{tag}")).unwrap();
            let value = &entry[open..];
            let value = &value[value.find('>').unwrap() + 1..];
            value[..value.find('<').unwrap()].to_string()
        };
        let href = entry.split("href=\"").nth(1).unwrap().split('"').next();
        let gz = server.get(&format!("{tree}/{}", href.unwrap())).body;
        assert_eq!(sha256_hex(&gz), field("checksum"), "{kind} .gz");
        assert_eq!(gz.len().to_string(), field("size"), "{kind} .gz size");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(&gz[..]), &mut text)
            .unwrap();
        assert_eq!(
            sha256_hex(text.as_bytes()),
            field("open-checksum"),
            "{kind} text"
        );
        assert_eq!(
            text.len().to_string(),
            field("open-size"),
            "{kind} text size"
        );
        let counted = text.split("packages=\"").nth(1).unwrap().split('"').next();
        let entries = text.matches("<package ").count();
        assert_eq!(
            counted,
            Some(entries.to_string().as_str()),
            "{kind}:\n{text}"
        );
        if kind == "primary" {
            primary = text;
        }
    }
    assert!(!primary.is_empty(), "no primary in\n{repomd}");
    primary
}

/// Uploads one at a time add delta fragments after the base layout, and the server hashes
/// each document ahead for the next count; a removal lays the documents out afresh. Every
/// checksum repomd.xml carries must stay true, and dnf must keep installing.
#[test]
fn one_rpm_at_a_time_then_a_removal_keep_every_checksum_true() {
    let data = DataDir::init(&[]);
    data.repo_add_rpm("seq", "12", "x86_64", &[]);
    let server = Server::start(&data);
    let cap = data.cap("rpm/seq/12/x86_64", "1h");
    let tree = "/seq/12/x86_64";
    let uploads = [
        ("hello-caprepo-1.0-1.x86_64.rpm", "hello-caprepo"),
        ("noarch-caprepo-0.5-1.noarch.rpm", "noarch-caprepo"),
        ("lzma-caprepo-1.0-1.x86_64.rpm", "lzma-caprepo"),
        ("hello-caprepo-1.0-2.x86_64.rpm", "hello-caprepo"),
        ("standalone-caprepo-1.0-1.noarch.rpm", "standalone-caprepo"),
    ];
    for (done, (file, _)) in uploads.iter().enumerate() {
        let out = server.upload(&cap, &[rpm(file)], true);
        assert!(out.status.success(), "{}", output_text(&out));
        let primary = consistent_repodata(&server, tree);
        assert_eq!(primary.matches("<package ").count(), done + 1, "{primary}");
        for (_, name) in &uploads[..=done] {
            assert!(primary.contains(&format!("<name>{name}</name>")), "{name}");
        }
    }
    // Each publish hashed ahead for one package more, so every later publish of a
    // non-empty document resumed past its new header (the count) at least.
    let log = server.log_text();
    let hashed: Vec<(usize, usize)> = log
        .lines()
        .filter_map(|l| l.split("open-checksum parts=").nth(1))
        .filter_map(|rest| {
            let (parts, resumed) = rest.split_once(" resumed=")?;
            Some((parts.parse().ok()?, resumed.trim().parse().ok()?))
        })
        .filter(|(parts, _)| *parts > 2)
        .collect();
    assert_eq!(hashed.len(), 3 * uploads.len(), "{log}");
    assert!(
        hashed.iter().all(|(_, resumed)| *resumed >= 1),
        "a publish did not resume the states hashed ahead: {hashed:?}\n{log}"
    );
    let dnf = Dnf::new(&server, "seq");
    let out = dnf.run(&["install", "standalone-caprepo"]);
    assert!(out.status.success(), "dnf install: {}", output_text(&out));

    data.cli(&["rm"], &["rpm/seq/12", "lzma-caprepo"]);
    server.wait_for(&format!("{tree}/repodata/repomd.xml"), "removed", |_| {
        !consistent_repodata(&server, tree).contains("<name>lzma-caprepo</name>")
    });
    assert_eq!(
        consistent_repodata(&server, tree)
            .matches("<package ")
            .count(),
        4
    );
    let out = server.upload(&cap, &[rpm("lzma-caprepo-1.0-1.x86_64.rpm")], true);
    assert!(out.status.success(), "{}", output_text(&out));
    let primary = consistent_repodata(&server, tree);
    assert_eq!(primary.matches("<name>lzma-caprepo</name>").count(), 1);
    // lzma-caprepo needs /bin/sh, which the empty root lacks: dnf lists it instead.
    let out = Dnf::new(&server, "seq").run(&["repoquery", "lzma-caprepo"]);
    assert!(out.status.success(), "dnf repoquery: {}", output_text(&out));
    assert!(
        output_text(&out).contains("lzma-caprepo-0:1.0-1.x86_64"),
        "{}",
        output_text(&out)
    );
}

/// Every rpm in `fixtures/` that createrepo_c accepts (the project's own builds, the
/// CR, Latin-1 and legacy ones, and the upstream rpm 6.0 builds in v4 and v6 format)
/// publishes the repodata createrepo_c writes over the same packages, value for value.
#[test]
fn every_fixture_rpm_publishes_what_createrepo_c_writes() {
    let data = DataDir::init(&[]);
    data.repo_add_rpm("all", "12,13", "x86_64,aarch64", &[]);
    let server = Server::start(&data);
    let listed = |dir: &str| -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(fixture(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "rpm"))
            .collect();
        files.sort();
        files
    };
    // Release 12: the project's fixtures and the upstream v4 builds; 13: the v6 builds
    // (one NEVRA appears in both formats with other bytes).
    for (release, dirs) in [
        ("12", &["rpms", "rpms/upstream/v4"][..]),
        ("13", &["rpms/upstream/v6"]),
    ] {
        for arch in ["x86_64", "aarch64"] {
            let cap = data.cap(&format!("rpm/all/{release}/{arch}"), "1h");
            let files: Vec<PathBuf> = dirs
                .iter()
                .flat_map(|d| listed(d))
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy();
                    name.ends_with(&format!(".{arch}.rpm")) || name.ends_with(".noarch.rpm")
                })
                .collect();
            let out = server.upload(&cap, &files, true);
            assert!(
                out.status.success(),
                "{release}/{arch}: {}",
                output_text(&out)
            );
        }
    }
    let work = tempfile::tempdir().unwrap();
    for tree in ["all/12/x86_64", "all/12/aarch64", "all/13/x86_64"] {
        let report = compare_with_createrepo_c(&server, tree, work.path());
        eprintln!("{tree}: {}", report.trim());
        assert!(report.contains(" 0 differences"), "{tree}: {report}");
    }
    server.stop();
}
