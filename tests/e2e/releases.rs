//! Release management: several versions per package ordered as dpkg and rpm
//! order them, retention applied on publish, and what the clients pick.

use std::path::PathBuf;

use crate::harness::*;

/// hello rebuilt with another version (a real package, made by dpkg-deb).
pub fn hello_version(dir: &std::path::Path, version: &str) -> PathBuf {
    hello_rebuilt(dir, version, "amd64")
}

/// hello rebuilt with another version and architecture (`all`, say), by dpkg-deb.
pub fn hello_rebuilt(dir: &std::path::Path, version: &str, arch: &str) -> PathBuf {
    let file_name = format!("hello_{}_{arch}.deb", version.replace(':', "%3a"));
    hello_edited(dir, &file_name, |control| {
        control
            .replacen("Version: 2.10-3", &format!("Version: {version}"), 1)
            .replacen("Architecture: amd64", &format!("Architecture: {arch}"), 1)
    })
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
    data.repo_add_rpm("fed", "12", "x86_64", &["--retention", "1"]);
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
    std::io::Read::read_to_string(
        &mut flate2::read::MultiGzDecoder::new(&gz[..]),
        &mut primary,
    )
    .unwrap();
    assert!(primary.contains("packages=\"1\""), "{primary}");
    assert!(primary.contains("rel=\"2\"") && !primary.contains("ver=\"1.0\" rel=\"1\""));
}

fn packages_of(server: &Server, path: &str) -> String {
    server.get(path).text()
}

#[test]
fn promote_remove_snapshot_rollback_history_and_audit_through_real_apt() {
    let data = DataDir::init(&[]);
    data.repo_add("rel", "stable,testing", "main", "amd64");
    let server = Server::start(&data);
    let work = tempfile::tempdir().unwrap();
    let testing = data.cap("apt/rel/dists/testing/main/binary-amd64", "1h");
    let files = vec![
        fixture("debs/hello_2.10-3_amd64.deb"),
        fixture("debs/tree_2.1.0-1_amd64.deb"),
        fixture("debs/sensible-utils_0.0.17+nmu1_all.deb"),
    ];
    assert!(server.upload(&testing, &files, true).status.success());
    let stable_index = "/rel/dists/stable/main/binary-amd64/Packages";

    // Promote only hello (and the arch-all package) from testing to stable, atomically.
    run_ok(caprepo().args(["promote", "--data"]).arg(&data.path).args([
        "apt/rel",
        "testing",
        "stable",
        "--package",
        "hello",
        "--package",
        "sensible-utils",
    ]));
    server.wait_for(stable_index, "promoted", |r| {
        r.text().contains("Package: hello\n")
    });
    let stable = packages_of(&server, stable_index);
    assert!(
        !stable.contains("Package: tree\n"),
        "only the selected packages move"
    );
    let apt = Apt::for_repo(&server, "rel", "stable", "main", &data.key(false), true);
    apt.run_ok(&["update"]);
    apt.run_ok(&["install", "-y", "--download-only", "hello"]);

    // Snapshot stable, then change it.
    run_ok(
        caprepo()
            .args(["snapshot", "create", "--data"])
            .arg(&data.path)
            .args(["apt/rel/stable", "before-b1"]),
    );
    let frozen = server.get("/rel/snapshots/before-b1/dists/stable/InRelease");
    assert_eq!(frozen.status, 200);
    let listed = data.cli(&["snapshot", "list"], &["apt/rel"]);
    assert!(listed.starts_with("before-b1\t"), "{listed}");
    // A repository kind other than apt or rpm is refused, not answered with an empty list.
    let typo = caprepo()
        .args(["snapshot", "list", "--data"])
        .arg(&data.path)
        .arg("deb/rel")
        .output()
        .unwrap();
    assert!(!typo.status.success());
    assert!(
        String::from_utf8_lossy(&typo.stderr)
            .contains("name the repository as apt/NAME or rpm/NAME"),
        "{}",
        String::from_utf8_lossy(&typo.stderr)
    );
    let stable_cap = data.cap("apt/rel/dists/stable/main/binary-amd64", "1h");
    assert!(
        server
            .upload(
                &stable_cap,
                &[hello_version(work.path(), "2.10-3+b1")],
                true
            )
            .status
            .success()
    );
    assert!(packages_of(&server, stable_index).contains("Version: 2.10-3+b1\n"));
    // The snapshot still serves the same bytes, also through a pinned read cap.
    assert_eq!(
        server
            .get("/rel/snapshots/before-b1/dists/stable/InRelease")
            .body,
        frozen.body
    );
    let pinned = data.cap_with("apt/rel/snapshots/before-b1", "read", "1d", &[]);
    let pinned_apt = Apt::new(
        &format!(
            "Types: deb\nURIs: {}/r/{pinned}/\nSuites: stable\nComponents: main\nSigned-By: KEYRING\n",
            server.url
        ),
        &data.key(false),
        true,
    );
    pinned_apt.run_ok(&["update"]);
    pinned_apt.run_ok(&["install", "-y", "--download-only", "hello"]);
    assert!(
        pinned_apt.archive("hello_2.10-3_amd64.deb").exists(),
        "the pinned snapshot still offers 2.10-3 as newest"
    );

    // Remove, then roll back to before the removal.
    run_ok(
        caprepo()
            .args(["rm", "--data"])
            .arg(&data.path)
            .args(["apt/rel/stable", "hello=2.10-3+b1"]),
    );
    server.wait_for(stable_index, "removed", |r| !r.text().contains("2.10-3+b1"));
    run_ok(
        caprepo()
            .args(["rollback", "--data"])
            .arg(&data.path)
            .arg("apt/rel/stable"),
    );
    server.wait_for(stable_index, "rolled back", |r| {
        r.text().contains("Version: 2.10-3+b1\n")
    });
    apt.run_ok(&["update"]);
    apt.run_ok(&["install", "-y", "--download-only", "hello"]);
    assert!(
        apt.archive("hello_2.10-3+b1_amd64.deb").exists(),
        "apt sees the rolled-back suite"
    );

    // Blue/green: switch stable to the snapshot.
    run_ok(
        caprepo()
            .args(["snapshot", "switch", "--data"])
            .arg(&data.path)
            .args(["apt/rel/stable", "before-b1"]),
    );
    server.wait_for(stable_index, "switched", |r| {
        !r.text().contains("2.10-3+b1") && r.text().contains("Version: 2.10-3\n")
    });
    // Across suites, as over HTTP: testing takes stable's snapshot (the CLI refused this
    // while the API allowed it; both now carry out one ReleaseRequest).
    let switched = run_ok(
        caprepo()
            .args(["snapshot", "switch", "--data"])
            .arg(&data.path)
            .args(["apt/rel/testing", "before-b1"]),
    );
    assert!(
        switched.contains("apt/rel/testing switched to snapshot before-b1"),
        "{switched}"
    );
    server.wait_for(
        "/rel/dists/testing/main/binary-amd64/Packages",
        "testing switched",
        |r| !r.text().contains("Package: tree\n") && r.text().contains("Version: 2.10-3\n"),
    );

    // History names who changed what; audit has every kind of event.
    let history = run_ok(
        caprepo()
            .args(["history", "--json", "--data"])
            .arg(&data.path)
            .arg("apt/rel/stable"),
    );
    let rows: serde_json::Value = serde_json::from_str(&history).unwrap();
    let notes: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| format!("{} by {}", c["what"], c["by"]))
        })
        .collect();
    for expected in [
        "promote from apt/rel/testing",
        "add hello 2.10-3+b1",
        "rm hello",
        "rollback to publication",
        "switch to snapshot before-b1",
    ] {
        assert!(
            notes.iter().any(|n| n.contains(expected)),
            "history lacks {expected}: {notes:#?}"
        );
    }
    let audit = run_ok(caprepo().args(["audit", "--data"]).arg(&data.path));
    for expected in [
        "create repository",
        "add hello",
        "promote from",
        "rm hello",
        "rollback to publication",
        "issue ",
        "snapshot apt/rel/stable",
    ] {
        assert!(audit.contains(expected), "audit lacks {expected}:\n{audit}");
    }
}

#[test]
fn dnf_installs_from_a_promoted_rpm_release() {
    let data = DataDir::init(&[]);
    data.repo_add_rpm("fed", "12,13", "x86_64", &[]);
    let server = Server::start(&data);
    let cap = data.cap("rpm/fed/12/x86_64", "1h");
    assert!(
        server
            .upload(
                &cap,
                &[fixture("rpms/standalone-caprepo-1.0-1.noarch.rpm")],
                true
            )
            .status
            .success()
    );
    run_ok(
        caprepo()
            .args(["promote", "--data"])
            .arg(&data.path)
            .args(["rpm/fed", "12", "13"]),
    );
    server.wait_for("/fed/13/x86_64/repodata/repomd.xml", "promoted", |r| {
        r.status == 200
            && server
                .get("/fed/13/x86_64/Packages/s/standalone-caprepo-1.0-1.noarch.rpm")
                .status
                == 200
    });
    let out = Dnf::at(&format!("{}/fed", server.url), &server.url, "13")
        .run(&["install", "standalone-caprepo"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn valid_until_is_resigned_before_it_expires_and_suite_flags_reach_release() {
    let data = DataDir::init(&[]);
    data.repo_add("vu", "stable,backports", "main", "amd64");
    let server = Server::start(&data);
    data.cli(
        &["repo", "set"],
        &["apt/vu", "--suite", "stable", "--valid-for", "6s"],
    );
    data.cli(
        &["repo", "set"],
        &[
            "apt/vu",
            "--suite",
            "backports",
            "--not-automatic",
            "true",
            "--but-automatic-upgrades",
            "true",
        ],
    );
    let first = server.wait_for("/vu/dists/stable/Release", "Valid-Until", |r| {
        r.text().contains("Valid-Until: ")
    });
    let backports = server.wait_for("/vu/dists/backports/Release", "flags", |r| {
        r.text().contains("NotAutomatic: yes")
    });
    assert!(backports.text().contains("ButAutomaticUpgrades: yes\n"));
    let apt = Apt::for_repo(&server, "vu", "stable", "main", &data.key(false), false);
    apt.run_ok(&["update"]);
    // At half-life the manager re-signs the unchanged suite, so clients never see it expire.
    let resigned = server.wait_for("/vu/dists/stable/Release", "re-signed", |r| {
        r.text() != first.text()
    });
    let valid_until = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("Valid-Until: "))
            .unwrap()
            .to_string()
    };
    assert_ne!(valid_until(&resigned.text()), valid_until(&first.text()));
    std::thread::sleep(std::time::Duration::from_secs(4));
    apt.run_ok(&["update"]);
    server.stop();
    let verified = data.cli(&["verify"], &[]);
    assert!(
        verified.starts_with("ok"),
        "suite options match the schema: {verified}"
    );
}

#[test]
fn release_commands_work_over_http_with_a_publish_cap_within_its_scope() {
    let data = DataDir::init(&[]);
    data.repo_add("rel", "stable,testing", "main", "amd64");
    let server = Server::start(&data);
    let upload = data.cap("apt/rel/dists/testing/main/binary-amd64", "1h");
    assert!(
        server
            .upload(&upload, &[fixture("debs/hello_2.10-3_amd64.deb")], true)
            .status
            .success()
    );
    let publish_stable = data.cap_with("apt/rel/dists/stable", "publish", "1h", &[]);
    let publish_testing = data.cap_with("apt/rel/dists/testing", "publish", "1h", &[]);
    let remote = |cap: &str, args: &[&str]| {
        caprepo()
            .args(args)
            .args(["--server", &server.url, "--cap", cap])
            .output()
            .unwrap()
    };
    // Into stable needs a cap covering stable, with the publish right.
    for (cap, why) in [(&publish_testing, "outside"), (&upload, "publish right")] {
        let out = remote(cap, &["promote", "apt/rel", "testing", "stable"]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(why),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = remote(
        &publish_stable,
        &["promote", "apt/rel", "testing", "stable"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.wait_for(
        "/rel/dists/stable/main/binary-amd64/Packages",
        "promoted over HTTP",
        |r| r.text().contains("Package: hello\n"),
    );
    assert!(
        remote(
            &publish_stable,
            &["snapshot", "create", "apt/rel/stable", "s1"]
        )
        .status
        .success()
    );
    assert!(
        remote(&publish_stable, &["rm", "apt/rel/stable", "hello"])
            .status
            .success()
    );
    server.wait_for(
        "/rel/dists/stable/main/binary-amd64/Packages",
        "removed",
        |r| !r.text().contains("Package: hello\n"),
    );
    assert!(
        remote(&publish_stable, &["rollback", "apt/rel/stable"])
            .status
            .success()
    );
    server.wait_for(
        "/rel/dists/stable/main/binary-amd64/Packages",
        "rolled back",
        |r| r.text().contains("Package: hello\n"),
    );
    // The audit trail names the cap, never the whole token.
    let audit = data.cli(&["audit"], &[]);
    let id = serde_json::from_str::<serde_json::Value>(
        &data.cli(&["cap", "inspect", "--json"], &[&publish_stable]),
    )
    .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        audit.contains(&id) && audit.contains("promote from apt/rel/testing"),
        "{audit}"
    );
}
