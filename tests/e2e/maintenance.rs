//! Operator housekeeping on a real store: `verify` passes on a healthy store and
//! names a flipped byte in a package blob; `gc` frees only unreachable blobs (and
//! temp files a crashed write left) older than the grace period, and `--dry-run`
//! changes nothing.

use crate::harness::*;

fn plant_orphan(data: &DataDir, content: &[u8], age: &str) -> std::path::PathBuf {
    plant(blob_file(data, &sha256_hex(content)), content, age)
}

/// The temp file a local write leaves beside its blob when the process dies mid-write.
fn plant_temp_file(data: &DataDir, content: &[u8], age: &str) -> std::path::PathBuf {
    let blob = blob_file(data, &sha256_hex(content));
    let mut name = blob.into_os_string();
    name.push(".tmp-00c0ffee00c0ffee");
    plant(name.into(), content, age)
}

/// A composite record (a joined index file's list of parts) that no publication names.
fn plant_orphan_composite(data: &DataDir, age: &str) -> std::path::PathBuf {
    let whole = sha256_hex(b"an index file nothing publishes any more");
    let record = format!(
        "{{\"size\":5,\"parts\":[{{\"sha256\":\"{}\",\"size\":5}}]}}",
        sha256_hex(b"gone.")
    );
    let path = data
        .path
        .join("store/composites/sha256")
        .join(&whole[..2])
        .join(&whole);
    plant(path, record.as_bytes(), age)
}

fn plant(path: std::path::PathBuf, content: &[u8], age: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, content).unwrap();
    run_ok(
        std::process::Command::new("touch")
            .args(["-d", age])
            .arg(&path),
    );
    path
}

#[test]
fn verify_finds_a_flipped_byte_and_gc_sweeps_only_old_unreachable_blobs() {
    let data = DataDir::init(&[]);
    data.repo_add("m", "stable", "main", "amd64");
    data.repo_add_rpm("mr", "12", "x86_64", &[]);
    let server = Server::start(&data);
    let deb = fixture("debs/hello_2.10-3_amd64.deb");
    assert!(
        server
            .upload(
                &data.cap("apt/m/dists/stable/main/binary-amd64", "1h"),
                std::slice::from_ref(&deb),
                true
            )
            .status
            .success()
    );
    let rpm = fixture("rpms/standalone-caprepo-1.0-1.noarch.rpm");
    assert!(
        server
            .upload(&data.cap("rpm/mr/12/x86_64", "1h"), &[rpm], true)
            .status
            .success()
    );
    server.stop();

    let healthy = data.cli(&["verify"], &[]);
    assert!(healthy.starts_with("ok"), "{healthy}");

    // A crashed upload left a blob nobody references: swept once old enough, never before.
    let old = plant_orphan(&data, b"left behind by a crashed upload", "3 days ago");
    let young = plant_orphan(&data, b"an upload still in flight", "1 minute ago");
    // ... and a write that died half way left its temp file: the same rule applies.
    let old_temp = plant_temp_file(&data, b"half a package", "3 days ago");
    let young_temp = plant_temp_file(&data, b"a write in progress", "1 minute ago");
    // ... and a joined index file (a composite) no publication names any more.
    let old_composite = plant_orphan_composite(&data, "3 days ago");
    let before = data.store_snapshot();
    let dry = data.cli(&["gc"], &["--dry-run"]);
    assert!(dry.contains("would free 3 blob(s)"), "{dry}");
    assert_eq!(data.store_snapshot(), before, "--dry-run changes nothing");
    let swept = data.cli(&["gc"], &[]);
    // Younger and unreachable: the young orphan, and the gzip headers a server stores
    // when it hashes ahead for its next RPM publish (how many depends on when it stopped).
    let younger: usize = swept
        .split(" unreachable but younger")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        swept.contains("freed 3 blob(s)") && (1..=4).contains(&younger),
        "{swept}"
    );
    assert!(!old.exists() && young.exists());
    assert!(!old_temp.exists() && young_temp.exists());
    assert!(!old_composite.exists());
    assert!(
        data.cli(&["verify"], &[]).starts_with("ok"),
        "gc removed nothing reachable"
    );
    // With no grace at all, the parts of published composites (Packages.xz is one: the
    // stream's header and index are blobs only its record names) still stay.
    assert!(
        data.store_snapshot()
            .keys()
            .any(|p| p.starts_with("composites/sha256/")),
        "Packages.xz is stored as a composite"
    );
    data.cli(&["gc"], &["--grace", "0s"]);
    assert!(
        data.cli(&["verify"], &[]).starts_with("ok"),
        "gc --grace 0s kept every part of every published composite"
    );

    // Flip one byte of the stored package: verify names it and fails.
    let package = blob_file(&data, &sha256_hex(&std::fs::read(&deb).unwrap()));
    let mut bytes = std::fs::read(&package).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&package, bytes).unwrap();
    let out = caprepo()
        .args(["verify", "--data"])
        .arg(&data.path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&sha256_hex(&std::fs::read(&deb).unwrap())) && report.contains("corrupted"),
        "{report}"
    );
    // gc never deletes a reachable blob, damaged or not: repair means re-uploading the same bytes.
    data.cli(&["gc"], &["--grace", "0s"]);
    assert!(package.exists());
}

fn spool_files(data: &DataDir) -> Vec<String> {
    std::fs::read_dir(data.path.join("spool"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("upload-"))
                .collect()
        })
        .unwrap_or_default()
}

/// `kill -9` in the middle of an upload leaves its spool file: verify reports it, gc
/// removes it, and a file a live server is still receiving is never touched.
#[test]
fn spool_files_of_a_killed_server_are_reported_and_swept() {
    let data = DataDir::init(&[]);
    data.repo_add("sp", "stable", "main", "amd64");
    let server = Server::start(&data);
    let cap = data.cap("apt/sp/dists/stable/main/binary-amd64", "1h");
    let big = data.path.join("big.deb");
    std::fs::write(&big, vec![0u8; 8 << 20]).unwrap();
    let url = format!("{}/api/v1/upload/big.deb", server.url);
    let trickle = || {
        std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "--limit-rate", "256K", "-T"])
            .arg(&big)
            .args(["-H", &format!("Authorization: Bearer {cap}"), &url])
            .spawn()
            .unwrap()
    };
    let wait_for_spool = |what: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while spool_files(&data).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: no spool file"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let mut first = trickle();
    wait_for_spool("first upload");
    // While the server lives, its spool file is its own: gc leaves it and verify is quiet
    // about it.
    let gc = data.cli(&["gc"], &["--grace", "1h"]);
    assert!(!gc.contains("spool file"), "{gc}");
    assert_eq!(spool_files(&data).len(), 1);
    server.kill9();
    let _ = first.kill();
    let _ = first.wait();
    let left = spool_files(&data);
    assert_eq!(left.len(), 1, "kill -9 leaves the spool file behind");
    let out = caprepo()
        .args(["verify", "--data"])
        .arg(&data.path)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{report}");
    assert!(
        report.contains(&left[0]) && report.contains("left in the spool"),
        "{report}"
    );
    let gc = data.cli(&["gc"], &["--grace", "1h"]);
    assert!(gc.contains("removed 1 spool file"), "{gc}");
    assert!(spool_files(&data).is_empty());
    assert!(data.cli(&["verify"], &[]).starts_with("ok"));
}

/// The newest generation a ref has in a local store, and the JSON it names.
fn newest(data: &DataDir, reference: &str) -> (u64, serde_json::Value) {
    let dir = data.path.join("store/refs").join(reference);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(files.last().unwrap()).unwrap()).unwrap();
    let target = entry["target"].as_str().unwrap().to_string();
    let manifest = std::fs::read(blob_file(data, &target)).unwrap();
    (
        entry["generation"].as_u64().unwrap(),
        serde_json::from_slice(&manifest).unwrap(),
    )
}

/// A stopping server publishes what changed before it exits: here a removal made by
/// the CLI an instant before SIGTERM, which the server's next poll would otherwise
/// have found only after its exit.
#[test]
fn sigterm_publishes_what_changed_before_the_server_exits() {
    let data = DataDir::init(&[]);
    data.repo_add("dr", "stable", "main", "amd64");
    let server = Server::start(&data);
    let cap = data.cap("apt/dr/dists/stable/main/binary-amd64", "1h");
    let out = server.upload(
        &cap,
        &[
            fixture("debs/hello_2.10-3_amd64.deb"),
            fixture("debs/tree_2.1.0-1_amd64.deb"),
        ],
        true,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    data.cli(&["rm"], &["apt/dr/stable", "hello"]);
    let log = server.log.clone();
    server.stop();
    let cell = "cells/apt/dr/stable/main/amd64";
    let (cell_generation, _) = newest(&data, cell);
    let (_, publication) = newest(&data, "published/apt/dr/stable");
    assert_eq!(
        publication["inputs"][cell].as_u64(),
        Some(cell_generation),
        "the last publication was built from the cell as it was at the stop"
    );
    let text = std::fs::read_to_string(log).unwrap();
    assert!(text.contains("drained"), "{text}");
}

/// A store whose refs name a blob it lost: verify and gc refuse; `verify --fix` drops
/// what is missing, says so, and leaves a store that verifies, collects, serves, and
/// takes the package back when it is uploaded again.
#[test]
fn verify_fix_drops_what_is_missing_and_the_store_works_again() {
    let data = DataDir::init(&[]);
    data.repo_add("fx", "stable", "main", "amd64");
    let server = Server::start(&data);
    let cap = data.cap("apt/fx/dists/stable/main/binary-amd64", "1h");
    let work = tempfile::tempdir().unwrap();
    let debs = distinct_debs("fix-me", work.path(), 2);
    assert!(server.upload(&cap, &debs, true).status.success());
    server.stop();

    // The first package's blob is lost (a disk error, a hand-deleted bucket object).
    let lost = blob_file(&data, &sha256_hex(&std::fs::read(&debs[0]).unwrap()));
    std::fs::remove_file(&lost).unwrap();
    let verify = caprepo()
        .args(["verify", "--data"])
        .arg(&data.path)
        .output()
        .unwrap();
    assert!(!verify.status.success());
    assert!(
        output_text(&verify).contains("not found"),
        "{}",
        output_text(&verify)
    );

    let dry = data.cli(&["verify"], &["--fix", "--dry-run"]);
    assert!(dry.contains("would repair: "), "{dry}");
    assert!(!lost.exists());
    let fixed = data.cli(&["verify"], &["--fix"]);
    assert!(
        fixed.contains("dropped fix-me00 2.10-3 amd64") && fixed.contains("re-upload"),
        "{fixed}"
    );
    assert!(fixed.contains("published/apt/fx/stable"), "{fixed}");
    assert!(fixed.trim_end().ends_with("checks out"), "{fixed}");
    data.cli(&["gc"], &["--grace", "0s"]);
    assert!(data.cli(&["verify"], &[]).starts_with("ok"));

    // Served again: the package left is fetched; the lost one comes back with its upload.
    let server = Server::start(&data);
    let apt = Apt::for_repo(&server, "fx", "stable", "main", &data.key(false), false);
    server.wait_for(
        "/fx/dists/stable/main/binary-amd64/Packages",
        "the repaired suite republished",
        |r| r.status == 200 && r.text().contains("fix-me01") && !r.text().contains("fix-me00"),
    );
    apt.run_ok(&["update"]);
    assert!(server.upload(&cap, &debs[..1], true).status.success());
    apt.run_ok(&["update"]);
    let out = apt.download(&["fix-me00", "fix-me01"]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(
        std::fs::read(apt.root.path().join("fix-me00_2.10-3_amd64.deb")).unwrap(),
        std::fs::read(&debs[0]).unwrap()
    );
    server.stop();
}

/// `[gc]` in caprepo.toml: the daemon collects on its schedule, beside its own uploads,
/// and `/metrics` and the log show the rounds and what they reclaimed.
#[test]
fn gc_runs_inside_serve_on_its_schedule_and_reports_in_metrics() {
    let data = DataDir::init(&[]);
    data.repo_add("sched", "stable", "main", "amd64");
    let config = data.path.join("caprepo.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(
        "\n[gc]\ninterval = \"2s\"\ngrace = \"0s\"\nkeep_generations = 1\nreader_window = \"0s\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let server = Server::start(&data);
    let cap = data.cap("apt/sched/dists/stable/main/binary-amd64", "1h");
    let publish = data.cap_with("apt/sched", "publish", "1h", &[]);
    let work = tempfile::tempdir().unwrap();
    let debs = distinct_debs("sched-", work.path(), 4);
    // Garbage for the schedule to find: packages uploaded, then removed.
    assert!(server.upload(&cap, &debs, true).status.success());
    let removed = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {publish}"),
        "--data",
        r#"{"op":"rm","target":"apt/sched/stable","packages":["sched-00","sched-01","sched-02"]}"#,
        &format!("{}/api/v1/release", server.url),
    ]);
    assert_eq!(removed.status, 200, "{}", removed.text());
    let metric = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1.0)
    };
    let reply = server.wait_for("/metrics", "a gc round that reclaimed bytes", |r| {
        metric(&r.text(), "caprepo_gc_reclaimed_bytes_total") > 0.0
    });
    let text = reply.text();
    assert!(metric(&text, "caprepo_gc_runs_total") >= 1.0, "{text}");
    assert!(
        metric(&text, "caprepo_gc_swept_blobs_total") >= 1.0,
        "{text}"
    );
    for name in [
        "caprepo_gc_stage",
        "caprepo_gc_failures_total",
        "caprepo_gc_skipped_total",
        "caprepo_gc_last_duration_seconds",
        "caprepo_gc_writer_pauses_total",
    ] {
        assert!(metric(&text, name) >= 0.0, "{name} missing:\n{text}");
    }
    assert!(
        server.log_text().contains("gc done"),
        "{}",
        server.log_text()
    );
    // Uploads go on between rounds, and what is published stays whole.
    assert!(server.upload(&cap, &debs[..1], true).status.success());
    let apt = Apt::for_repo(&server, "sched", "stable", "main", &data.key(false), false);
    apt.run_ok(&["update"]);
    server.stop();
    assert!(data.cli(&["verify"], &[]).starts_with("ok"));
}

/// A client that sends a release request's body slowly holds no writer lease meanwhile:
/// gc (and every writer it pauses) does not wait for it.
#[test]
fn a_slow_request_body_does_not_hold_gc_back() {
    use std::io::Write;
    let data = DataDir::init(&[]);
    data.repo_add("slow", "stable", "main", "amd64");
    let server = Server::start(&data);
    let cap = data.cap("apt/slow/dists/stable/main/binary-amd64", "1h");
    assert!(
        server
            .upload(&cap, &[fixture("debs/hello_2.10-3_amd64.deb")], true)
            .status
            .success()
    );
    let address = server.url.trim_start_matches("http://").to_string();
    let mut slow = std::net::TcpStream::connect(&address).unwrap();
    write!(
        slow,
        "POST /api/v1/release HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{"
    )
    .unwrap();
    slow.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let gc = caprepo()
        .args(["gc", "--data"])
        .arg(&data.path)
        .args(["--grace", "0s", "--pause-timeout", "12s"])
        .output()
        .unwrap();
    assert!(
        gc.status.success(),
        "gc waited for a request that has not sent its body:\n{}",
        output_text(&gc)
    );
    drop(slow);
    server.stop();
}
