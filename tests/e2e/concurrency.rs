//! Several build workers uploading into one cell at once lose nothing, and a
//! reader following InRelease during those publishes can always fetch every
//! index it names (by hash) with the hash it was promised.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::harness::*;

#[test]
fn concurrent_uploads_to_one_cell_lose_nothing_and_readers_never_see_a_missing_index() {
    let data = DataDir::init(&[]);
    data.repo_add("busy", "stable", "main", "amd64");
    let server = Arc::new(Server::start(&data));
    server.wait_for("/busy/dists/stable/InRelease", "first publish", |r| {
        r.status == 200
    });
    let cap = data.cap("apt/busy/dists/stable/main/binary-amd64", "1h");
    let work = tempfile::tempdir().unwrap();
    let packages = distinct_debs("hello-c", work.path(), 16);

    // A reader that keeps following InRelease to the by-hash files it names.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let server = Arc::clone(&server);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut checked = 0;
            while !stop.load(Ordering::Relaxed) {
                let in_release = server.get("/busy/dists/stable/InRelease").text();
                for line in in_release.lines().skip_while(|l| *l != "SHA256:").skip(1) {
                    if !line.starts_with(' ') {
                        break; // end of the SHA256 block: the signature follows
                    }
                    let parts: Vec<&str> = line.split_whitespace().collect();
                    let dir = parts[2]
                        .rsplit_once('/')
                        .map(|(d, _)| d)
                        .unwrap_or_else(|| panic!("odd line {line:?} in\n{in_release}"));
                    let fetched = server.get(&format!(
                        "/busy/dists/stable/{dir}/by-hash/SHA256/{}",
                        parts[0]
                    ));
                    assert_eq!(
                        fetched.status, 200,
                        "InRelease named {line} but it cannot be fetched"
                    );
                    assert_eq!(sha256_hex(&fetched.body), parts[0]);
                    checked += 1;
                }
            }
            checked
        })
    };

    let uploaders: Vec<_> = packages
        .iter()
        .cloned()
        .map(|file| {
            let url = server.url.clone();
            let cap = cap.clone();
            std::thread::spawn(move || {
                Command::new(bin())
                    .args(["upload", "--server", &url, "--cap", &cap])
                    .arg(&file)
                    .output()
                    .unwrap()
            })
        })
        .collect();
    for uploader in uploaders {
        let out = uploader.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let packages_file = server.wait_for(
        "/busy/dists/stable/main/binary-amd64/Packages",
        "all 16 published",
        |r| r.text().matches("Package: hello-c").count() == 16,
    );
    stop.store(true, Ordering::Relaxed);
    let checked = reader.join().unwrap();
    assert!(checked > 0, "the reader checked something");
    for i in 0..16 {
        assert!(
            packages_file
                .text()
                .contains(&format!("Package: hello-c{i:02}\n"))
        );
    }
    // Every upload advanced the cell's ref once: 16 generations, none lost.
    let generations = std::fs::read_dir(
        data.path
            .join("store/refs/cells/apt/busy/stable/main/amd64"),
    )
    .unwrap()
    .count();
    assert_eq!(generations, 16);
}
