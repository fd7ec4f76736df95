//! Real apt-get against a caprepo server: an empty suite updates cleanly, an
//! uploaded package installs, Architecture: all reaches every arch, and a
//! repository added to a running server appears without a restart.

use crate::harness::*;

#[test]
fn empty_suite_is_already_a_valid_signed_repository() {
    let data = DataDir::init(&[]);
    data.repo_add("fresh", "stable", "main", "amd64");
    let server = Server::start(&data);
    server.wait_for("/fresh/dists/stable/InRelease", "published", |r| {
        r.status == 200
    });
    let apt = Apt::for_repo(&server, "fresh", "stable", "main", &data.key(false), false);
    let out = apt.run_ok(&["update"]);
    assert!(
        !out.contains("W:") && !out.contains("E:"),
        "apt-get update warned:\n{out}"
    );
    let packages = server.get("/fresh/dists/stable/main/binary-amd64/Packages.gz");
    assert_eq!(
        packages.status, 200,
        "a new repository has at least a Packages.gz"
    );
}

#[test]
fn upload_with_wait_then_apt_get_installs_with_hashes_checked() {
    let data = DataDir::init(&[]);
    data.repo_add("demo", "stable,testing", "main,contrib", "amd64,arm64");
    let server = Server::start(&data);
    let cap = data.cap("apt/demo/dists/stable/main/binary-amd64", "1h");
    let files = [
        fixture("debs/hello_2.10-3_amd64.deb"),
        fixture("debs/tree_2.1.0-1_amd64.deb"),
        fixture("debs/sensible-utils_0.0.17+nmu1_all.deb"),
        fixture("debs/gobjc_12.2.0-3_amd64.deb"),
    ];
    let out = server.upload(&cap, &files, true);
    assert!(
        out.status.success(),
        "upload --wait failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("all 4 file(s) published"));

    // --wait means the signed index already lists them: no polling needed here.
    let amd64 = server
        .get("/demo/dists/stable/main/binary-amd64/Packages")
        .text();
    for name in ["hello", "tree", "sensible-utils", "gobjc"] {
        assert!(
            amd64.contains(&format!("Package: {name}\n")),
            "{name} missing from amd64:\n{amd64}"
        );
    }
    assert!(
        amd64.contains("Filename: pool/main/g/gcc-defaults/gobjc_12.2.0-3_amd64.deb"),
        "epoch dropped, source dir"
    );
    // Contents from the file lists kept at upload: which package ships which file.
    let contents = server.get("/demo/dists/stable/main/Contents-amd64").text();
    let hello_line = contents
        .lines()
        .find(|l| l.starts_with("usr/bin/hello "))
        .unwrap_or_default();
    assert!(hello_line.ends_with(" devel/hello"), "{hello_line:?}");
    assert!(
        contents
            .lines()
            .any(|l| l.starts_with("usr/bin/sensible-editor ")),
        "arch-all files are listed too"
    );
    let gz = server.get("/demo/dists/stable/main/Contents-amd64.gz").body;
    let mut unpacked = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::MultiGzDecoder::new(&gz[..]),
        &mut unpacked,
    )
    .unwrap();
    assert_eq!(unpacked, contents);
    let arm64 = server
        .get("/demo/dists/stable/main/binary-arm64/Packages")
        .text();
    assert!(
        arm64.contains("Package: sensible-utils\n"),
        "Architecture: all is listed for arm64 too"
    );
    assert!(!arm64.contains("Package: hello\n"));

    let key = data.key(false);
    let apt = Apt::for_repo(&server, "demo", "stable", "main contrib", &key, true);
    apt.run_ok(&["update"]);
    apt.run_ok(&["install", "-y", "--download-only", "hello", "tree"]);
    // Packages.xz is one multi-block xz stream and Packages.gz several gzip members, joined per
    // chunk: apt reads both (xz by default, gz when told to).
    let gz_apt = Apt::for_repo(&server, "demo", "stable", "main contrib", &key, true);
    let gz_only = gz_apt.run_ok(&[
        "update",
        "-o",
        "Acquire::CompressionTypes::Order::=gz",
        "-o",
        "Acquire::CompressionTypes::xz=false",
    ]);
    assert!(
        gz_only.contains("Packages [") && !gz_only.contains("E:") && !gz_only.contains("W:"),
        "{gz_only}"
    );
    gz_apt.run_ok(&["install", "-y", "--download-only", "tree"]);
    for (file, fixture_name) in [
        ("hello_2.10-3_amd64.deb", "debs/hello_2.10-3_amd64.deb"),
        ("tree_2.1.0-1_amd64.deb", "debs/tree_2.1.0-1_amd64.deb"),
    ] {
        let downloaded = std::fs::read(apt.archive(file)).unwrap();
        assert_eq!(
            sha256_hex(&downloaded),
            sha256_hex(&std::fs::read(fixture(fixture_name)).unwrap())
        );
    }

    // Install for real into a scratch root with dpkg --root.
    let clean = Apt::for_repo(&server, "demo", "stable", "main", &key, false);
    clean.run_ok(&["update"]);
    clean.run_ok(&["install", "-y", "--download-only", "sensible-utils"]);
    let scratch = tempfile::tempdir().unwrap();
    for dir in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        std::fs::create_dir_all(scratch.path().join(dir)).unwrap();
    }
    std::fs::write(scratch.path().join("var/lib/dpkg/status"), "").unwrap();
    std::fs::write(scratch.path().join("var/lib/dpkg/available"), "").unwrap();
    run_ok(
        std::process::Command::new("dpkg")
            .arg(format!("--root={}", scratch.path().display()))
            .arg("--log=/dev/null")
            .arg("-i")
            .arg(clean.archive("sensible-utils_0.0.17+nmu1_all.deb")),
    );
    assert!(scratch.path().join("usr/bin/sensible-editor").exists());
    let status = std::fs::read_to_string(scratch.path().join("var/lib/dpkg/status")).unwrap();
    assert!(
        status.contains("Package: sensible-utils\nStatus: install ok installed"),
        "{status}"
    );

    // The other suite stayed empty: the cap wrote into exactly one cell.
    let testing = server.get("/demo/dists/testing/main/binary-amd64/Packages");
    assert_eq!((testing.status, testing.body.len()), (200, 0));
}

#[test]
fn compression_variants_are_accepted_and_install() {
    let data = DataDir::init(&[]);
    // Each variant has the same name, version and arch but other bytes, so each gets its own repository.
    let variants = [
        ("gz", "variants/hello_2.10-3_amd64.gzip.deb"),
        ("zst", "variants/hello_2.10-3_amd64.zstd.deb"),
        ("none", "variants/hello_2.10-3_amd64.none.deb"),
    ];
    for (repo, _) in variants {
        data.repo_add(repo, "stable", "main", "amd64");
    }
    let server = Server::start(&data);
    for (repo, file) in variants {
        let cap = data.cap(&format!("apt/{repo}/dists/stable/main/binary-amd64"), "1h");
        let out = server.upload(&cap, &[fixture(file)], true);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let apt = Apt::for_repo(&server, repo, "stable", "main", &data.key(false), true);
        apt.run_ok(&["update"]);
        apt.run_ok(&["install", "-y", "--download-only", "hello"]);
        let got = std::fs::read(apt.archive("hello_2.10-3_amd64.deb")).unwrap();
        assert_eq!(
            sha256_hex(&got),
            sha256_hex(&std::fs::read(fixture(file)).unwrap()),
            "{file}"
        );
    }
}

#[test]
fn repo_add_on_a_running_server_takes_effect_without_restart() {
    let data = DataDir::init(&[]);
    data.repo_add("first", "stable", "main", "amd64");
    let server = Server::start(&data);
    assert_eq!(server.get("/later/dists/stable/InRelease").status, 404);
    data.repo_add("later", "bookworm", "main", "amd64");
    server.wait_for(
        "/later/dists/bookworm/InRelease",
        "published after repo add",
        |r| r.status == 200,
    );
    let apt = Apt::for_repo(
        &server,
        "later",
        "bookworm",
        "main",
        &data.key(false),
        false,
    );
    apt.run_ok(&["update"]);
    // And caps for it work at once.
    let cap = data.cap("apt/later/dists/bookworm/main/binary-amd64", "1h");
    let out = server.upload(&cap, &[fixture("debs/hello_2.10-3_amd64.deb")], true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The index files a Release lists match what is served, and every compressed form
/// holds the same text as the plain one. Returns the plain Packages text.
fn consistent_packages(server: &Server, repo: &str) -> String {
    let release = server.get(&format!("/{repo}/dists/stable/Release")).text();
    let dir = format!("/{repo}/dists/stable/main/binary-amd64");
    let served = |name: &str| server.get(&format!("{dir}/{name}")).body;
    for name in ["Packages", "Packages.gz", "Packages.xz"] {
        let body = served(name);
        let listed = format!(
            " {} {:>16} main/binary-amd64/{name}\n",
            sha256_hex(&body),
            body.len()
        );
        assert!(release.contains(&listed), "{name} != Release:\n{release}");
    }
    let plain = String::from_utf8(served("Packages")).unwrap();
    let mut gunzipped = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::MultiGzDecoder::new(&served("Packages.gz")[..]),
        &mut gunzipped,
    )
    .unwrap();
    let mut unxzed = String::new();
    std::io::Read::read_to_string(
        &mut liblzma::read::XzDecoder::new(&served("Packages.xz")[..]),
        &mut unxzed,
    )
    .unwrap();
    assert_eq!(gunzipped, plain);
    assert_eq!(unxzed, plain);
    plain
}

/// Uploads one at a time only append to the published files (a delta after the base
/// layout); a removal lays them out afresh. Both must stay whole and consistent for apt.
#[test]
fn one_upload_at_a_time_then_a_removal_keep_every_index_whole() {
    let data = DataDir::init(&[]);
    data.repo_add("seq", "stable", "main", "amd64");
    let server = Server::start(&data);
    let cap = data.cap("apt/seq/dists/stable/main/binary-amd64", "1h");
    let debs = [
        "debs/hello_2.10-3_amd64.deb",
        "debs/tree_2.1.0-1_amd64.deb",
        "debs/lsb-base_11.6_all.deb",
        "debs/sensible-utils_0.0.17+nmu1_all.deb",
        "debs/gobjc_12.2.0-3_amd64.deb",
    ];
    let names = ["hello", "tree", "lsb-base", "sensible-utils", "gobjc"];
    for (done, deb) in debs.iter().enumerate() {
        let out = server.upload(&cap, &[fixture(deb)], true);
        assert!(out.status.success(), "{}", output_text(&out));
        let packages = consistent_packages(&server, "seq");
        for name in &names[..=done] {
            assert_eq!(
                packages.matches(&format!("Package: {name}\n")).count(),
                1,
                "{name} listed once after {} uploads:\n{packages}",
                done + 1
            );
        }
    }
    let apt = Apt::for_repo(&server, "seq", "stable", "main", &data.key(false), true);
    apt.run_ok(&["update"]);
    apt.run_ok(&["install", "-y", "--download-only", "tree"]);

    data.cli(&["rm"], &["apt/seq/stable", "tree"]);
    server.wait_for(
        "/seq/dists/stable/main/binary-amd64/Packages",
        "removed",
        |r| !r.text().contains("Package: tree\n"),
    );
    let packages = consistent_packages(&server, "seq");
    for name in ["hello", "lsb-base", "sensible-utils", "gobjc"] {
        assert_eq!(packages.matches(&format!("Package: {name}\n")).count(), 1);
    }
    let out = server.upload(&cap, &[fixture("debs/tree_2.1.0-1_amd64.deb")], true);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(
        consistent_packages(&server, "seq")
            .matches("Package: tree\n")
            .count(),
        1
    );
    apt.run_ok(&["update"]);
    apt.run_ok(&["install", "-y", "--download-only", "tree"]);
}
