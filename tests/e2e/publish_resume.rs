//! A publish resumes from the layout the last one wrote down (its base, deltas and hash
//! states): after a restart, and on another daemon on the same bucket. Whatever it
//! resumes from, every file a client fetches must hash to what Release says, and real
//! apt-get must install from it.

use crate::harness::*;

/// Every file Release lists under SHA256 is served with that sha256 and size, by path
/// and by hash.
fn release_hashes_hold(server: &Server, repo: &str, suite: &str) -> usize {
    let release = server.get(&format!("/{repo}/dists/{suite}/Release")).text();
    let section = release
        .split("\nSHA256:\n")
        .nth(1)
        .expect("Release has a SHA256 section");
    let mut checked = 0;
    for line in section.lines().take_while(|l| l.starts_with(' ')) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [sha256, size, path] = fields[..] else {
            panic!("odd Release line {line:?}");
        };
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
        for url in [
            format!("/{repo}/dists/{suite}/{path}"),
            format!("/{repo}/dists/{suite}/{dir}/by-hash/SHA256/{sha256}"),
        ] {
            let reply = server.get(&url);
            assert_eq!(reply.status, 200, "{url}");
            assert_eq!(reply.body.len().to_string(), size, "{url}");
            assert_eq!(
                sha256_hex(&reply.body),
                sha256,
                "{url} does not hash to Release's"
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 5,
        "Release lists only {checked} files:\n{release}"
    );
    checked
}

fn upload_ok(server: &Server, cap: &str, debs: &[std::path::PathBuf]) {
    let out = server.upload(cap, debs, true);
    assert!(out.status.success(), "{}", output_text(&out));
}

/// Installs every package by name with apt-get from the published suite.
fn apt_installs(server: &Server, data: &DataDir, repo: &str, names: &[String]) {
    let apt = Apt::for_repo(server, repo, "stable", "main", &data.key(false), false);
    apt.run_ok(&["update"]);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let out = apt.download(&names);
    assert!(out.status.success(), "{}", output_text(&out));
}

#[test]
fn a_restarted_daemon_resumes_the_last_layout_and_every_file_still_hashes_right() {
    let data = DataDir::init(&[]);
    data.repo_add("resume", "stable", "main", "amd64");
    let cap = data.cap("apt/resume/dists/stable/main/binary-amd64", "1h");
    let dir = tempfile::tempdir().unwrap();
    let debs = distinct_debs("resumed", dir.path(), 24);
    let server = Server::start(&data);
    // A base, then deltas over it, one upload at a time.
    upload_ok(&server, &cap, &debs[..12]);
    for deb in &debs[12..16] {
        upload_ok(&server, &cap, std::slice::from_ref(deb));
    }
    release_hashes_hold(&server, "resume", "stable");
    server.stop();
    for (round, deb) in debs[16..].iter().enumerate() {
        let server = Server::start(&data);
        upload_ok(&server, &cap, std::slice::from_ref(deb));
        release_hashes_hold(&server, "resume", "stable");
        let log = server.log_text();
        assert!(
            log.contains("taking up the layout the last publish wrote down"),
            "restart {round} laid out from scratch:\n{log}"
        );
        server.stop();
    }
    let server = Server::start(&data);
    let names: Vec<String> = (0..24).map(|i| format!("resumed{i:02}")).collect();
    apt_installs(&server, &data, "resume", &names);
    server.stop();
    verify_ok(&data, "publishes resumed across restarts");
}

#[test]
fn daemons_on_one_bucket_take_turns_resuming_each_others_layouts() {
    let s3 = S3::start();
    let a_data = s3.data_dir("resume");
    a_data.repo_add("turns", "stable", "main", "amd64");
    let b_data = a_data.for_another_daemon();
    let cap = a_data.cap("apt/turns/dists/stable/main/binary-amd64", "1h");
    let dir = tempfile::tempdir().unwrap();
    let debs = distinct_debs("turns", dir.path(), 12);
    let a = Server::start(&a_data);
    let b = Server::start(&b_data);
    upload_ok(&a, &cap, &debs[..4]);
    for (i, deb) in debs[4..].iter().enumerate() {
        let (writer, other) = if i % 2 == 0 { (&b, &a) } else { (&a, &b) };
        upload_ok(writer, &cap, std::slice::from_ref(deb));
        release_hashes_hold(writer, "turns", "stable");
        // The other daemon serves the same files once it notices the change.
        let in_release = writer.get("/turns/dists/stable/InRelease").text();
        other.wait_for(
            "/turns/dists/stable/InRelease",
            "the other daemon's publication",
            |reply| reply.text() == in_release,
        );
    }
    assert!(
        a.log_text()
            .contains("taking up the layout the last publish wrote down")
            && b.log_text()
                .contains("taking up the layout the last publish wrote down"),
        "a daemon laid out from scratch after the other published"
    );
    let names: Vec<String> = (0..12).map(|i| format!("turns{i:02}")).collect();
    apt_installs(&a, &a_data, "turns", &names);
    a.stop();
    b.stop();
    verify_ok(&a_data, "two daemons took turns publishing");
}

/// Every document repomd.xml lists is served with its checksum and size, and
/// uncompresses to its open-checksum and open-size (which a resumed publish computes
/// from hash states written down by another process).
fn repomd_hashes_hold(server: &Server, repo: &str, tree: &str) {
    let repomd = server
        .get(&format!("/{repo}/{tree}/repodata/repomd.xml"))
        .text();
    let field = |block: &str, open: &str| -> String {
        block
            .split(open)
            .nth(1)
            .and_then(|rest| rest.split('<').next())
            .map(|value| value.rsplit('>').next().unwrap_or(value).to_string())
            .unwrap_or_else(|| panic!("no {open} in {block}"))
    };
    let mut checked = 0;
    for block in repomd.split("<data type=").skip(1) {
        let href = block
            .split("<location href=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a location");
        let url = format!("/{repo}/{tree}/{href}");
        let reply = server.get(&url);
        assert_eq!(reply.status, 200, "{url}");
        assert_eq!(
            sha256_hex(&reply.body),
            field(block, "<checksum type=\"sha256\""),
            "{url}"
        );
        assert_eq!(reply.body.len().to_string(), field(block, "<size"), "{url}");
        let text = gunzip_text(&reply.body);
        assert_eq!(
            sha256_hex(text.as_bytes()),
            field(block, "<open-checksum type=\"sha256\""),
            "{url}: the open-checksum does not hash the document"
        );
        assert_eq!(text.len().to_string(), field(block, "<open-size"), "{url}");
        checked += 1;
    }
    assert_eq!(checked, 3, "repomd.xml lists 3 documents:\n{repomd}");
}

/// The same for an RPM tree: its documents start with the package count, so a publish
/// resumes from the states the last one hashed ahead for one package more and wrote
/// down; after a restart they must still hash right, and dnf must read them.
#[test]
fn a_restarted_daemon_resumes_the_last_rpm_layout_and_every_document_still_hashes_right() {
    let data = DataDir::init(&[]);
    data.repo_add_rpm("resumer", "12", "x86_64", &["--no-sign-packages"]);
    let cap = data.cap("rpm/resumer/12/x86_64", "1h");
    let dir = tempfile::tempdir().unwrap();
    let rpms = distinct_rpms("resumer", dir.path(), 20);
    let server = Server::start(&data);
    // A base, then deltas over it, one upload at a time.
    upload_ok(&server, &cap, &rpms[..10]);
    for rpm in &rpms[10..13] {
        upload_ok(&server, &cap, std::slice::from_ref(rpm));
    }
    repomd_hashes_hold(&server, "resumer", "12/x86_64");
    server.stop();
    for (round, rpm) in rpms[13..].iter().enumerate() {
        let server = Server::start(&data);
        upload_ok(&server, &cap, std::slice::from_ref(rpm));
        repomd_hashes_hold(&server, "resumer", "12/x86_64");
        let log = server.log_text();
        // The stop before this start waited for the hashing ahead: its record has the
        // three documents' text and gzip joins.
        assert!(
            log.lines().any(
                |l| l.contains("taking up the layout the last publish wrote down")
                    && l.contains("ahead=6")
            ),
            "restart {round} did not take up the joins hashed ahead:\n{log}"
        );
        server.stop();
    }
    let server = Server::start(&data);
    let dnf = Dnf::new(&server, "resumer");
    let out = dnf.run(&["--refresh", "repoquery", "resumer*"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let listed = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("resumer-"))
        .count();
    assert_eq!(listed, 20, "dnf lists every rpm:\n{}", output_text(&out));
    server.stop();
    verify_ok(&data, "RPM publishes resumed across restarts");
}

/// Two daemons on one bucket alternate RPM uploads: each publish takes up the record,
/// joins hashed ahead included, that the other daemon wrote, and every document still
/// hashes to what repomd.xml says.
#[test]
fn daemons_on_one_bucket_take_turns_resuming_each_others_rpm_layouts() {
    let s3 = S3::start();
    let a_data = s3.data_dir("rpmturns");
    a_data.repo_add_rpm("rturns", "12", "x86_64", &["--no-sign-packages"]);
    let b_data = a_data.for_another_daemon();
    let cap = a_data.cap("rpm/rturns/12/x86_64", "1h");
    let dir = tempfile::tempdir().unwrap();
    let rpms = distinct_rpms("rturns", dir.path(), 10);
    let a = Server::start(&a_data);
    let b = Server::start(&b_data);
    upload_ok(&a, &cap, &rpms[..4]);
    let repomd = "/rturns/12/x86_64/repodata/repomd.xml";
    for (i, rpm) in rpms[4..].iter().enumerate() {
        let (writer, other) = if i % 2 == 0 { (&b, &a) } else { (&a, &b) };
        upload_ok(writer, &cap, std::slice::from_ref(rpm));
        repomd_hashes_hold(writer, "rturns", "12/x86_64");
        let published = writer.get(repomd).text();
        other.wait_for(repomd, "the other daemon's publication", |reply| {
            reply.text() == published
        });
    }
    for (name, daemon) in [("a", &a), ("b", &b)] {
        let log = daemon.log_text();
        assert!(
            log.lines().any(
                |l| l.contains("taking up the layout the last publish wrote down")
                    && l.contains("ahead=6")
            ),
            "daemon {name} never took up the other's joins hashed ahead:\n{log}"
        );
    }
    let dnf = Dnf::new(&a, "rturns");
    let out = dnf.run(&["--refresh", "repoquery", "rturns*"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let listed = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("rturns-"))
        .count();
    assert_eq!(listed, 10, "dnf lists every rpm:\n{}", output_text(&out));
    a.stop();
    b.stop();
    verify_ok(&a_data, "two daemons took turns publishing an RPM tree");
}
