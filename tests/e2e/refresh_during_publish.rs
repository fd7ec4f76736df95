//! No refresh fails while a publish runs: real dnf (repo_gpgcheck=1) and zypper refresh
//! an RPM tree in a loop while 100 publishes run back to back. dnf and zypper fetch
//! repomd.xml and then repomd.xml.asc; a publish between the two used to hand them a
//! signature of the new repomd.xml for the old one (see `src/serve/http/pinning.rs`).

use std::process::Command;
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

/// dnf (librepo 1.14) closes its connection after repomd.xml and fetches
/// repomd.xml.asc on a new one, so remembering pairs per connection did not help it;
/// the soak caught 1 refresh in 57 failing with "Bad GPG signature". Here, by hand:
/// repomd.xml, a publish, the signature on a new connection from the same client: it
/// must verify against the repomd.xml that client holds, while other clients, and the
/// same client's next refresh, get what is current.
#[test]
fn a_signature_fetched_on_a_new_connection_matches_the_repomd_fetched_before_a_publish() {
    let data = DataDir::init(&[]);
    data.repo_add_rpm("pair", "12", "x86_64", &["--no-sign-packages"]);
    let server = Server::start(&data);
    let upload = data.cap("rpm/pair/12/x86_64", "1h");
    let work = tempfile::tempdir().unwrap();
    let rpms = distinct_rpms("pairr", &work.path().join("rpms"), 3);
    let publish = |rpm: &std::path::PathBuf| {
        let out = server.upload(&upload, std::slice::from_ref(rpm), true);
        assert!(out.status.success(), "{}", output_text(&out));
    };
    publish(&rpms[0]);
    let keyring = work.path().join("key.gpg");
    std::fs::write(&keyring, data.key(false)).unwrap();
    let dnf = "libdnf (Debian GNU/Linux 12; generic; Linux.x86_64)";
    // Each call is a new curl process: a new connection.
    let fetch = |file: &str, agent: &str, from: &str| {
        let url = format!("{}/pair/12/x86_64/repodata/{file}", server.url);
        let reply = curl(&["-A", agent, "--interface", from, &url]);
        assert_eq!(reply.status, 200, "{url}");
        reply.body
    };
    let verifies = |signature: &[u8], signed: &[u8]| {
        let (sig, file) = (work.path().join("s.asc"), work.path().join("repomd.xml"));
        std::fs::write(&sig, signature).unwrap();
        std::fs::write(&file, signed).unwrap();
        Command::new("gpgv")
            .arg("--keyring")
            .arg(&keyring)
            .arg(&sig)
            .arg(&file)
            .output()
            .unwrap()
            .status
            .success()
    };

    for round in 0..2 {
        let held = fetch("repomd.xml", dnf, "127.0.0.1");
        publish(&rpms[1 + round]);
        // Other clients (another address, another User-Agent) get the new pair.
        let current = fetch("repomd.xml", dnf, "127.0.0.2");
        assert_ne!(current, held, "the publish changed repomd.xml");
        for (agent, from) in [(dnf, "127.0.0.2"), ("libzypp/17.31", "127.0.0.1")] {
            let signature = fetch("repomd.xml.asc", agent, from);
            assert!(
                verifies(&signature, &current),
                "round {round}: {agent} at {from} got a signature of an old repomd.xml"
            );
        }
        // The first client gets the signature of what it holds, however it connects.
        let signature = fetch("repomd.xml.asc", dnf, "127.0.0.1");
        assert!(
            verifies(&signature, &held),
            "round {round}: the signature does not match the repomd.xml fetched before \
             the publish"
        );
        // Its next refresh is current.
        let next = fetch("repomd.xml", dnf, "127.0.0.1");
        assert_eq!(next, current, "round {round}: the next refresh is current");
        let signature = fetch("repomd.xml.asc", dnf, "127.0.0.1");
        assert!(
            verifies(&signature, &current),
            "round {round}: next signature"
        );
    }
    server.stop();
}
