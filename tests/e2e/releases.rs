//! Release management: several versions per package ordered as dpkg and rpm
//! order them, retention applied on publish, and what the clients pick.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::*;

/// hello rebuilt with another version (a real package, made by dpkg-deb).
pub fn hello_version(dir: &std::path::Path, version: &str) -> PathBuf {
    let tree = dir.join(format!("tree-{version}"));
    run_ok(
        Command::new("dpkg-deb")
            .arg("-R")
            .arg(fixture("debs/hello_2.10-3_amd64.deb"))
            .arg(&tree),
    );
    let control_path = tree.join("DEBIAN/control");
    let control = std::fs::read_to_string(&control_path).unwrap();
    std::fs::write(
        &control_path,
        control.replacen("Version: 2.10-3", &format!("Version: {version}"), 1),
    )
    .unwrap();
    let out = dir.join(format!("hello_{}_amd64.deb", version.replace(':', "%3a")));
    run_ok(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "-b"])
            .arg(&tree)
            .arg(&out),
    );
    out
}

#[test]
fn several_versions_apt_picks_the_newest_and_retention_trims_on_publish() {
    let data = DataDir::init(&[]);
    data.repo_add("rel", "stable", "main", "amd64");
    let server = Server::start(&data);
    let cap = data.cap("apt/rel/dists/stable/main/binary-amd64", "1h");
    let work = tempfile::tempdir().unwrap();
    let files = vec![
        fixture("debs/hello_2.10-3_amd64.deb"),
        hello_version(work.path(), "2.10-3+b1"),
        hello_version(work.path(), "2.10-4~rc1"),
        hello_version(work.path(), "2.10-2"),
    ];
    let out = server.upload(&cap, &files, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let packages = server
        .get("/rel/dists/stable/main/binary-amd64/Packages")
        .text();
    for v in ["2.10-3", "2.10-3+b1", "2.10-4~rc1", "2.10-2"] {
        assert!(packages.contains(&format!("Version: {v}\n")), "{v} listed");
    }
    // 2.10-4~rc1 sorts after 2.10-3+b1 (the revision 4~rc1 > 3+b1): apt's candidate.
    let apt = Apt::for_repo(&server, "rel", "stable", "main", &data.key(false), true);
    apt.run_ok(&["update"]);
    apt.run_ok(&["install", "-y", "--download-only", "hello"]);
    assert!(
        apt.archive("hello_2.10-4~rc1_amd64.deb").exists(),
        "apt picked the newest version"
    );
    // Users can pin an older one.
    apt.run_ok(&["install", "-y", "--download-only", "hello=2.10-2"]);
    assert!(apt.archive("hello_2.10-2_amd64.deb").exists());

    run_ok(
        caprepo()
            .args(["repo", "set", "--data"])
            .arg(&data.path)
            .args(["apt/rel", "--retention", "2"]),
    );
    let trimmed = server.wait_for(
        "/rel/dists/stable/main/binary-amd64/Packages",
        "retention applied",
        |r| r.text().matches("Package: hello\n").count() == 2,
    );
    let text = trimmed.text();
    assert!(
        text.contains("Version: 2.10-4~rc1\n") && text.contains("Version: 2.10-3+b1\n"),
        "{text}"
    );
    assert!(!text.contains("Version: 2.10-2\n"));
}

#[test]
fn rpm_retention_keeps_the_newest_release() {
    let data = DataDir::init(&[]);
    run_ok(
        caprepo()
            .args(["repo", "add", "--data"])
            .arg(&data.path)
            .args([
                "rpm",
                "fed",
                "--releases",
                "12",
                "--architectures",
                "x86_64",
                "--retention",
                "1",
            ]),
    );
    let server = Server::start(&data);
    let cap = data.cap("rpm/fed/12/x86_64", "1h");
    let files = [
        "hello-caprepo-1.0-2.x86_64.rpm",
        "hello-caprepo-1.0-1.x86_64.rpm",
    ]
    .map(|f| fixture(&format!("rpms/{f}")));
    assert!(server.upload(&cap, &files, true).status.success());
    let repomd = server.get("/fed/12/x86_64/repodata/repomd.xml").text();
    let href = repomd
        .split("href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let gz = server.get(&format!("/fed/12/x86_64/{href}")).body;
    let mut primary = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut primary)
        .unwrap();
    assert!(primary.contains("packages=\"1\""), "{primary}");
    assert!(primary.contains("rel=\"2\"") && !primary.contains("ver=\"1.0\" rel=\"1\""));
}
