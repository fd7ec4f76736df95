//! `kill -9` at random points, 20 times each, of a daemon taking uploads, of
//! `caprepo import`, and of `caprepo gc`: after each restart `verify` passes, and every
//! upload acknowledged before a kill is published. The kill points come from a seed
//! printed by each test (`CAPREPO_KILL_SEED` replays one).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

const KILLS: usize = 20;

/// xorshift64*: kill points that a printed seed replays.
struct Points(u64);

impl Points {
    fn new(test: &str) -> Points {
        let seed = std::env::var("CAPREPO_KILL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
            | 1;
        eprintln!("{test}: CAPREPO_KILL_SEED={seed}");
        Points(seed)
    }

    /// A delay in [0, max_ms) milliseconds.
    fn millis(&mut self, max_ms: u64) -> Duration {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        Duration::from_millis(self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % max_ms)
    }
}

/// The package names the published Packages of `suite` lists.
fn listed(server: &Server, repo: &str, suite: &str) -> BTreeSet<String> {
    server
        .get(&format!("/{repo}/dists/{suite}/main/binary-amd64/Packages"))
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("Package: "))
        .map(str::to_string)
        .collect()
}

fn name_of(deb: &std::path::Path) -> String {
    deb.file_name()
        .unwrap()
        .to_string_lossy()
        .split('_')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_daemon_killed_20_times_mid_upload_publishes_every_acknowledged_upload() {
    let mut points = Points::new("daemon");
    let data = DataDir::init(&[]);
    data.repo_add("kd", "stable", "main", "amd64");
    let cap = data.cap("apt/kd/dists/stable/main/binary-amd64", "1h");
    let work = tempfile::tempdir().unwrap();
    let debs = distinct_debs("kd-", work.path(), 3 * KILLS);
    let mut acknowledged = BTreeSet::new();
    for round in debs.chunks(3) {
        let server = Server::start(&data);
        // Uploads without --wait: acknowledged when stored, published after; the kill
        // may come before that publish, or in the middle of an upload.
        let url = server.url.clone();
        let files: Vec<PathBuf> = round.to_vec();
        let cap = cap.clone();
        let uploader = std::thread::spawn(move || {
            files
                .iter()
                .filter(|file| {
                    Command::new(bin())
                        .args(["upload", "--server", &url])
                        .env("CAPREPO_CAP", &cap)
                        .arg(file)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .unwrap()
                        .success()
                })
                .map(|f| name_of(f))
                .collect::<Vec<_>>()
        });
        std::thread::sleep(points.millis(400));
        server.kill9();
        acknowledged.extend(uploader.join().unwrap());
    }
    let server = Server::start(&data);
    let wanted = acknowledged.clone();
    server.wait_for(
        "/kd/dists/stable/main/binary-amd64/Packages",
        "every acknowledged upload published after the last restart",
        |r| {
            let names: BTreeSet<String> = r
                .text()
                .lines()
                .filter_map(|l| l.strip_prefix("Package: "))
                .map(str::to_string)
                .collect();
            wanted.is_subset(&names)
        },
    );
    eprintln!(
        "daemon: {} of {} uploads acknowledged across {KILLS} kills",
        acknowledged.len(),
        debs.len()
    );
    assert!(!acknowledged.is_empty(), "no upload was ever acknowledged");
    // Spool files of the killed daemons were swept at its restart.
    verify_ok(&data, "20 kills of the daemon");
    Apt::for_repo(&server, "kd", "stable", "main", &data.key(false), false).run_ok(&["update"]);
    server.stop();
}

#[test]
fn an_import_killed_20_times_leaves_a_store_that_verifies_and_a_rerun_completes() {
    let mut points = Points::new("import");
    let data = DataDir::init(&[]);
    // One suite per kill: each import has the whole of its work to do when it dies.
    let suites: Vec<String> = (0..KILLS).map(|i| format!("s{i:02}")).collect();
    data.repo_add("ki", &suites.join(","), "main", "amd64");
    let work = tempfile::tempdir().unwrap();
    let debs = distinct_debs("ki-", work.path(), 60);
    let dir = work.path().to_path_buf();
    // How long a whole import takes here, so that the kills land inside one.
    let probe = DataDir::init(&[]);
    probe.repo_add("ki", "s00", "main", "amd64");
    let timed = Instant::now();
    probe.cli(
        &["import"],
        &["apt/ki/dists/s00/main", dir.to_str().unwrap()],
    );
    let whole = (timed.elapsed().as_millis() as u64).max(50);
    let mut completed = 0;
    for suite in &suites {
        let mut import = Command::new(bin())
            .args(["import", "--data"])
            .arg(&data.path)
            .arg(format!("apt/ki/dists/{suite}/main"))
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(points.millis(whole));
        if import.try_wait().unwrap().is_some() {
            completed += 1;
        }
        let _ = import.kill();
        let _ = import.wait();
        // Its spool files are a dead process's: gc sweeps them; then the store verifies.
        data.cli(&["gc"], &["--grace", "1h"]);
        verify_ok(&data, "a killed import");
    }
    eprintln!(
        "import: {completed} of {KILLS} runs finished before their kill (a whole import: {whole} ms)"
    );
    for suite in &suites {
        let out = data.cli(
            &["import"],
            &[&format!("apt/ki/dists/{suite}/main"), dir.to_str().unwrap()],
        );
        assert!(out.contains(" 0 refused"), "{out}");
    }
    verify_ok(&data, "the imports that completed");
    let server = Server::start(&data);
    let names: BTreeSet<String> = debs.iter().map(|d| name_of(d)).collect();
    for suite in &suites {
        assert_eq!(listed(&server, "ki", suite), names, "{suite}");
    }
    server.stop();
}

#[test]
fn gc_killed_20_times_leaves_a_store_that_verifies_and_loses_no_acknowledged_upload() {
    let mut points = Points::new("gc");
    let data = DataDir::init(&[]);
    data.repo_add("kg", "stable", "main", "amd64");
    let server = Server::start(&data);
    let cap = data.cap("apt/kg/dists/stable/main/binary-amd64", "1h");
    let publish = data.cap_with("apt/kg", "publish", "1h", &[]);
    let work = tempfile::tempdir().unwrap();
    let debs = distinct_debs("kg-", work.path(), 2 * KILLS);
    let mut acknowledged = BTreeSet::new();
    let started = Instant::now();
    for (i, pair) in debs.chunks(2).enumerate() {
        // Garbage for gc to find: one package uploaded and removed, one kept.
        assert!(server.upload(&cap, pair, true).status.success());
        let body = format!(
            r#"{{"op":"rm","target":"apt/kg/stable","packages":["{}"]}}"#,
            name_of(&pair[0])
        );
        let removed = curl(&[
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {publish}"),
            "--data",
            &body,
            &format!("{}/api/v1/release", server.url),
        ]);
        assert_eq!(removed.status, 200, "{}", removed.text());
        acknowledged.insert(name_of(&pair[1]));
        let mut gc = Command::new(bin())
            .args(["gc", "--data"])
            .arg(&data.path)
            .args(["--grace", "0s", "--keep-generations", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(points.millis(if i % 2 == 0 { 300 } else { 1500 }));
        let _ = gc.kill();
        let _ = gc.wait();
        // The daemon was never stopped: uploads go on while the dead gc's lock is stale.
        verify_ok(&data, "a killed gc");
    }
    // A rerun completes what the killed ones began.
    data.cli(&["gc"], &["--grace", "0s", "--keep-generations", "1"]);
    verify_ok(&data, "the gc that completed");
    server.wait_for(
        "/kg/dists/stable/main/binary-amd64/Packages",
        "every acknowledged upload listed",
        |r| r.status == 200,
    );
    assert_eq!(listed(&server, "kg", "stable"), acknowledged);
    let apt = Apt::for_repo(&server, "kg", "stable", "main", &data.key(false), false);
    apt.run_ok(&["update"]);
    let names: Vec<&str> = acknowledged.iter().map(String::as_str).collect();
    let out = apt.download(&names);
    assert!(out.status.success(), "{}", output_text(&out));
    eprintln!("gc: {KILLS} kills in {:.1?}", started.elapsed());
    server.stop();
}
