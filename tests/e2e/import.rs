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
