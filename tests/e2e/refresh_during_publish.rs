//! No refresh fails while a publish runs: real dnf (repo_gpgcheck=1) and zypper refresh
//! an RPM tree in a loop while 100 publishes run back to back. dnf and zypper fetch
//! repomd.xml and then repomd.xml.asc; a publish between the two used to hand them a
//! signature of the new repomd.xml for the old one (see `src/server/pinning.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::harness::*;

#[test]
fn dnf_and_zypper_refresh_without_failure_while_100_publishes_run() {
    let data = DataDir::init(&[]);
    data.repo_add_rpm("busy", "12", "x86_64", &["--no-sign-packages"]);
    let server = Server::start(&data);
    let upload = data.cap("rpm/busy/12/x86_64", "1h");
    let publish = data.cap_with("rpm/busy/12", "publish", "1h", &[]);
    let package = fixture("rpms/standalone-caprepo-1.0-1.noarch.rpm");
    assert!(
        server
            .upload(&upload, std::slice::from_ref(&package), true)
            .status
            .success()
    );
    let work = tempfile::tempdir().unwrap();
    let zroot = work.path().join("zypper-root");
    std::fs::create_dir_all(zroot.join("etc/zypp/repos.d")).unwrap();
    std::fs::write(
        zroot.join("etc/zypp/repos.d/busy.repo"),
        format!(
            "[busy]\nname=busy\nbaseurl={}/busy/$releasever/$basearch/\nenabled=1\nautorefresh=1\n\
             type=rpm-md\ngpgcheck=1\nrepo_gpgcheck=1\npkg_gpgcheck=1\ngpgkey={}/key.asc\n",
            server.url, server.url
        ),
    )
    .unwrap();
    let first = zypper(&zroot, &["refresh", "--force"]);
    assert!(first.status.success(), "zypper: {}", output_text(&first));

    // Clients refresh in a loop until the publisher is done.
    let done = Arc::new(AtomicBool::new(false));
    let clients = [("dnf", 0usize), ("zypper", 1)].map(|(name, which)| {
        let done = Arc::clone(&done);
        let zroot = zroot.clone();
        let server_url = server.url.clone();
        std::thread::spawn(move || {
            // One dnf setup, its key imported by a first refresh, as on a real machine.
            let dnf = Dnf::at(&format!("{server_url}/busy"), &server_url, "12");
            if which == 0 {
                let first = dnf.run(&["--refresh", "makecache"]);
                assert!(first.status.success(), "{}", output_text(&first));
            }
            let (mut runs, mut failures) = (0, Vec::new());
            while !done.load(Ordering::SeqCst) {
                let out = if which == 0 {
                    dnf.run(&["--refresh", "makecache"])
                } else {
                    zypper(&zroot, &["refresh", "--force"])
                };
                runs += 1;
                if !out.status.success() {
                    failures.push(output_text(&out));
                }
            }
            (name, runs, failures)
        })
    });

    // 100 publishes back to back: the package removed and uploaded again, 50 times.
    let release = format!("{}/api/v1/release", server.url);
    let auth = format!("Authorization: Bearer {publish}");
    let repomd = "/busy/12/x86_64/repodata/repomd.xml";
    let mut last = server.get(repomd).body;
    let started = std::time::Instant::now();
    for _ in 0..50 {
        let removed = curl(&[
            "-X",
            "POST",
            "-H",
            &auth,
            "--data",
            r#"{"op":"rm","target":"rpm/busy/12","packages":["standalone-caprepo"]}"#,
            &release,
        ]);
        assert_eq!(removed.status, 200, "{}", removed.text());
        server.wait_for(repomd, "the removal published", |r| r.body != last);
        last = server.get(repomd).body;
        let out = server.upload(&upload, std::slice::from_ref(&package), true);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        server.wait_for(repomd, "the upload published", |r| r.body != last);
        last = server.get(repomd).body;
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::SeqCst);
    let mut total = 0;
    for client in clients {
        let (name, runs, failures) = client.join().unwrap();
        eprintln!("{name}: {runs} refreshes during 100 publishes in {elapsed:.1?}");
        assert!(runs > 0, "{name} never ran");
        assert!(
            failures.is_empty(),
            "{name}: {} of {runs} refreshes failed while publishing:\n{}",
            failures.len(),
            failures.join("\n---\n")
        );
        total += runs;
    }
    assert!(total >= 4, "the clients refreshed {total} times");
    server.stop();
}
