//! `caprepo import`: bulk-load a directory of .debs, publish once, signed; a
//! second import of the same files is a no-op and a conflicting one is refused.

use std::process::Command;

use crate::harness::*;

#[test]
fn import_a_directory_then_apt_sees_every_package() {
    let data = DataDir::init(&[]);
    data.repo_add("bulk", "stable", "main", "amd64");
    let work = tempfile::tempdir().unwrap();
    let generator = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/gen_debs.py");
    run_ok(
        Command::new("python3")
            .arg(&generator)
            .arg(work.path().join("debs"))
            .arg("40"),
    );
    let out = data.cli(
        &["import"],
        &[
            "apt/bulk/dists/stable/main",
            work.path().join("debs").to_str().unwrap(),
            fixture("debs/hello_2.10-3_amd64.deb").to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("imported 41 new, 0 already present, 0 refused"),
        "{out}"
    );

    // Published and signed by import itself: a server started afterwards serves it at once.
    let server = Server::start(&data);
    let packages = server
        .get("/bulk/dists/stable/main/binary-amd64/Packages")
        .text();
    assert_eq!(packages.matches("Package: bench-").count(), 40);
    let apt = Apt::for_repo(&server, "bulk", "stable", "main", &data.key(false), true);
    apt.run_ok(&["update"]);
    apt.run_ok(&["install", "-y", "--download-only", "bench-000007"]);
    server.stop();

    let again = data.cli(
        &["import"],
        &[
            "apt/bulk/dists/stable/main",
            work.path().join("debs").to_str().unwrap(),
        ],
    );
    assert!(
        again.contains("imported 0 new, 40 already present, 0 refused"),
        "{again}"
    );
    let conflict = caprepo()
        .args(["import", "--data"])
        .arg(&data.path)
        .arg("apt/bulk/dists/stable/main")
        .arg(fixture("variants/hello-conflict.deb"))
        .output()
        .unwrap();
    assert!(!conflict.status.success());
    assert!(String::from_utf8_lossy(&conflict.stderr).contains("other bytes"));
    assert!(data.cli(&["verify"], &[]).starts_with("ok"));
}

#[test]
fn import_rpms_then_dnf_installs_a_signed_one() {
    let data = DataDir::init(&[]);
    data.repo_add_rpm("fed", "12", "x86_64,aarch64", &[]);
    let work = tempfile::tempdir().unwrap();
    let generator = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/gen_rpms.py");
    run_ok(
        Command::new("python3")
            .arg(&generator)
            .arg(work.path().join("rpms"))
            .arg("30"),
    );
    // The packages' directory is the user's: import must not write there, not even a
    // temporary signed copy. An immutable directory refuses any new file, even to root.
    let rpms = work.path().join("rpms");
    run_ok(Command::new("chattr").arg("+i").arg(&rpms));
    let _writable_again = ChattrOnDrop(rpms.clone());
    let out = data.cli(
        &["import"],
        &[
            "rpm/fed/12",
            work.path().join("rpms").to_str().unwrap(),
            fixture("rpms/standalone-caprepo-1.0-1.noarch.rpm")
                .to_str()
                .unwrap(),
            fixture("rpms/aarch64-caprepo-1.0-1.aarch64.rpm")
                .to_str()
                .unwrap(),
        ],
    );
    assert!(
        out.contains("imported 32 new, 0 already present, 0 refused"),
        "{out}"
    );

    // Every tree the packages land in is published, signed, by import itself.
    let server = Server::start(&data);
    let repomd = server.get("/fed/12/aarch64/repodata/repomd.xml");
    assert_eq!(repomd.status, 200);
    let dnf = Dnf::new(&server, "fed");
    let listed = dnf.run(&["repoquery", "--qf", "%{name}", "bench-*"]);
    assert_eq!(
        output_text(&listed).matches("bench-0000").count(),
        30,
        "{}",
        output_text(&listed)
    );
    // gpgcheck=1: the imported packages were signed by the agent on the way in.
    let installed = dnf.run(&["install", "standalone-caprepo"]);
    assert!(installed.status.success(), "{}", output_text(&installed));
    server.stop();

    let again = data.cli(
        &["import"],
        &["rpm/fed/12", work.path().join("rpms").to_str().unwrap()],
    );
    assert!(
        again.contains("imported 0 new, 30 already present, 0 refused"),
        "{again}"
    );
    let wrong = caprepo()
        .args(["import", "--data"])
        .arg(&data.path)
        .arg("rpm/fed/12")
        .arg(fixture("debs/hello_2.10-3_amd64.deb"))
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("is not a .rpm"));
    assert!(data.cli(&["verify"], &[]).starts_with("ok"));
}

/// Lifts `chattr +i` however the test ends, so the temp dir can be removed.
struct ChattrOnDrop(std::path::PathBuf);

impl Drop for ChattrOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// Where `needle` starts in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn imported_packages_live_in_a_pack_that_verify_checks_and_gc_frees() {
    let data = DataDir::init(&[]);
    data.repo_add("packed", "stable", "main", "amd64");
    let work = tempfile::tempdir().unwrap();
    let debs = work.path().join("debs");
    let generator = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/gen_debs.py");
    run_ok(Command::new("python3").arg(&generator).arg(&debs).arg("12"));
    let out = data.cli(
        &["import"],
        &["apt/packed/dists/stable/main", debs.to_str().unwrap()],
    );
    assert!(out.contains("imported 12 new"), "{out}");

    // Packs and their indexes instead of a file per package and per file list.
    let packs_dir = data.path.join("store/packs");
    let pack_files = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&packs_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "pack"))
            .collect()
    };
    let packs_holding = |bytes: &[u8]| -> Vec<std::path::PathBuf> {
        pack_files()
            .into_iter()
            .filter(|p| find(&std::fs::read(p).unwrap(), bytes).is_some())
            .collect()
    };
    assert!(!pack_files().is_empty());
    for pack in pack_files() {
        assert!(
            pack.with_extension("idx").exists(),
            "{} has an index",
            pack.display()
        );
    }
    let kept = debs.join("bench-000011_1.0-1_amd64.deb");
    let kept_bytes = std::fs::read(&kept).unwrap();
    let holding = packs_holding(&kept_bytes);
    assert_eq!(holding.len(), 1, "the package is packed once");
    let pack = holding[0].clone();
    assert!(!blob_file(&data, &sha256_hex(&kept_bytes)).exists());

    // A flipped byte inside the pack: verify names the package it belongs to.
    let original = std::fs::read(&pack).unwrap();
    let at = find(&original, &kept_bytes).expect("the package's bytes are in the pack");
    let mut damaged = original.clone();
    damaged[at + kept_bytes.len() / 2] ^= 1;
    std::fs::write(&pack, &damaged).unwrap();
    let report = caprepo()
        .args(["verify", "--data"])
        .arg(&data.path)
        .output()
        .unwrap();
    assert!(!report.status.success());
    let stdout = String::from_utf8_lossy(&report.stdout);
    assert!(
        stdout.contains(&sha256_hex(&kept_bytes)) && stdout.contains("corrupted"),
        "{stdout}"
    );
    std::fs::write(&pack, &original).unwrap();
    assert!(data.cli(&["verify"], &[]).starts_with("ok"));

    // Remove most packages and forget history: the mostly dead pack goes, and what is
    // still published is written loose first.
    let server = Server::start(&data);
    let removed: Vec<String> = (0..9).map(|i| format!("bench-{i:06}")).collect();
    let mut args = vec!["apt/packed/stable"];
    args.extend(removed.iter().map(String::as_str));
    data.cli(&["rm"], &args);
    server.wait_for(
        "/packed/dists/stable/main/binary-amd64/Packages",
        "removed",
        |r| !r.text().contains("Package: bench-000000\n"),
    );
    server.stop();
    // (No reader is left to protect: the server is stopped.)
    let swept = data.cli(
        &["gc"],
        &[
            "--grace",
            "0s",
            "--keep-generations",
            "1",
            "--reader-window",
            "0s",
        ],
    );
    assert!(swept.contains("live blob(s) written loose"), "{swept}");
    assert!(packs_holding(&kept_bytes).is_empty(), "{swept}");
    assert!(blob_file(&data, &sha256_hex(&kept_bytes)).exists());
    assert!(data.cli(&["verify"], &[]).starts_with("ok"));

    let server = Server::start(&data);
    let apt = Apt::for_repo(&server, "packed", "stable", "main", &data.key(false), true);
    apt.run_ok(&["update"]);
    apt.run_ok(&["install", "-y", "--download-only", "bench-000011"]);
    server.stop();
}
