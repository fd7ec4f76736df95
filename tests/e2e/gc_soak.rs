//! gc is safe beside writers: 8 uploaders upload, re-upload identical bytes, remove,
//! upload removed packages again and promote, while `caprepo gc --grace 0s
//! --keep-generations 1` runs back to back from another process and apt-get and dnf
//! refresh in a loop. Afterwards `verify` is clean, every acknowledged upload is
//! listed and fetched by real apt-get and dnf, and no client fetch failed meanwhile.
//! (Before the gc fence, re-uploads acknowledged as stored were listed while their
//! pool files were gone.) Runs `CAPREPO_SOAK_SECONDS` (default 40) on local disk.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;

fn soak_time() -> Duration {
    Duration::from_secs(
        std::env::var("CAPREPO_SOAK_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(40),
    )
}

/// What clients must find at the end, as the acknowledged answers left it.
#[derive(Default, Debug)]
struct Ledger {
    /// Deb name -> (in stable, ever promoted to testing); rpm name -> (in release 12, _).
    packages: BTreeMap<String, (bool, bool)>,
}

#[derive(Clone)]
struct Package {
    name: String,
    file: PathBuf,
    rpm: bool,
}

struct Soak {
    /// The daemons: uploader `i` goes through `server_urls[i % len]`.
    server_urls: Vec<String>,
    data: PathBuf,
    deb_cap: String,
    rpm_cap: String,
    publish_cap: String,
    rpm_publish_cap: String,
}

impl Soak {
    fn upload(&self, via: usize, package: &Package) -> Result<(), String> {
        let cap = if package.rpm {
            &self.rpm_cap
        } else {
            &self.deb_cap
        };
        let out = caprepo()
            .args([
                "upload",
                "--server",
                &self.server_urls[via % self.server_urls.len()],
            ])
            .arg("--wait")
            .env("CAPREPO_CAP", cap)
            .arg(&package.file)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("upload {}: {}", package.name, output_text(&out)))
        }
    }

    /// Removal through the HTTP API (a write inside the server's lease).
    fn remove(&self, via: usize, package: &Package) -> Result<(), String> {
        let target = if package.rpm {
            "rpm/soakr/12"
        } else {
            "apt/soak/stable"
        };
        let body = format!(
            r#"{{"op":"rm","target":"{target}","packages":["{}"]}}"#,
            package.name
        );
        let cap = if package.rpm {
            &self.rpm_publish_cap
        } else {
            &self.publish_cap
        };
        let reply = curl(&[
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {cap}"),
            "--data",
            &body,
            &format!(
                "{}/api/v1/release",
                self.server_urls[via % self.server_urls.len()]
            ),
        ]);
        if reply.status == 200 {
            Ok(())
        } else {
            Err(format!(
                "rm {}: {} {}",
                package.name,
                reply.status,
                reply.text()
            ))
        }
    }

    /// Promotion through the CLI on the data dir (a writer process of its own).
    fn promote(&self, package: &Package) -> Result<(), String> {
        let out = caprepo()
            .args(["promote", "--data"])
            .arg(&self.data)
            .args(["apt/soak", "stable", "testing", "--package", &package.name])
            .output()
            .unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("promote {}: {}", package.name, output_text(&out)))
        }
    }
}

#[test]
fn gc_back_to_back_beside_8_uploaders_and_refreshing_clients_loses_nothing() {
    let data = DataDir::init(&[]);
    data.repo_add("soak", "stable,testing", "main", "amd64");
    data.repo_add_rpm("soakr", "12", "x86_64", &[]);
    let server = Server::start(&data);
    soak(&data, &[server]);
}

/// The same on the S3 test server, with two daemons on one bucket: uploads and
/// removals alternate between them, apt reads from one and dnf from the other.
#[test]
fn gc_back_to_back_beside_two_daemons_on_one_s3_bucket_loses_nothing() {
    let s3 = S3::start();
    let data = s3.data_dir("soak");
    data.repo_add("soak", "stable,testing", "main", "amd64");
    data.repo_add_rpm("soakr", "12", "x86_64", &[]);
    let second = data.for_another_daemon();
    let servers = [Server::start(&data), Server::start(&second)];
    soak(&data, &servers);
}

fn soak(data: &DataDir, servers: &[Server]) {
    let server = &servers[0];
    let work = tempfile::tempdir().unwrap();
    let debs = distinct_debs("soak-d", work.path(), 18);
    let rpms = distinct_rpms("soakr", &work.path().join("rpms"), 6);
    let soak = Arc::new(Soak {
        server_urls: servers.iter().map(|s| s.url.clone()).collect(),
        data: data.path.clone(),
        deb_cap: data.cap("apt/soak/dists/stable/main/binary-amd64", "1h"),
        rpm_cap: data.cap("rpm/soakr/12/x86_64", "1h"),
        publish_cap: data.cap_with("apt/soak", "publish", "1h", &[]),
        rpm_publish_cap: data.cap_with("rpm/soakr", "publish", "1h", &[]),
    });
    let package = |file: &PathBuf, rpm: bool| Package {
        name: if rpm {
            file.file_name().unwrap().to_string_lossy()
                [..file.file_name().unwrap().len() - "-1.0-1.x86_64.rpm".len()]
                .to_string()
        } else {
            file.file_name()
                .unwrap()
                .to_string_lossy()
                .split('_')
                .next()
                .unwrap()
                .to_string()
        },
        file: file.clone(),
        rpm,
    };
    // 6 deb uploaders with 3 packages each, 2 rpm uploaders with 3 each.
    let mut owned: Vec<Vec<Package>> = debs
        .chunks(3)
        .map(|c| c.iter().map(|f| package(f, false)).collect())
        .collect();
    owned.extend(
        rpms.chunks(3)
            .map(|c| c.iter().map(|f| package(f, true)).collect::<Vec<_>>()),
    );
    assert_eq!(owned.len(), 8);

    // Everything once, then aged past the grace period: every later re-upload reuses an
    // object gc may judge old.
    for (i, packages) in owned.iter().enumerate() {
        for p in packages {
            soak.upload(i, p).unwrap();
        }
    }
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for p in owned.iter().flatten() {
        ledger
            .lock()
            .unwrap()
            .packages
            .insert(p.name.clone(), (true, false));
    }
    std::thread::sleep(Duration::from_secs(1));

    let deadline = Instant::now() + soak_time();
    let stop = Arc::new(AtomicBool::new(false));
    let uploaders: Vec<_> = owned
        .into_iter()
        .enumerate()
        .map(|(i, packages)| {
            let soak = Arc::clone(&soak);
            let ledger = Arc::clone(&ledger);
            std::thread::spawn(move || {
                let mut done = 0usize;
                let mut step = i; // start the workers out of step
                while Instant::now() < deadline {
                    let p = &packages[step % packages.len()];
                    let present = ledger.lock().unwrap().packages[&p.name].0;
                    let action = (step / packages.len()) % 4;
                    step += 1;
                    let outcome = if !present {
                        soak.upload(i, p).map(|()| (true, None))
                    } else {
                        match action {
                            // Identical bytes again: the dedupe path.
                            0 => soak.upload(i, p).map(|()| (true, None)),
                            1 if !p.rpm => soak.promote(p).map(|()| (true, Some(true))),
                            _ => soak.remove(i, p).map(|()| (false, None)),
                        }
                    };
                    let (now_present, promoted) = outcome.unwrap_or_else(|e| {
                        panic!("uploader {i}: an operation failed during gc: {e}")
                    });
                    let mut ledger = ledger.lock().unwrap();
                    let entry = ledger.packages.get_mut(&p.name).unwrap();
                    entry.0 = now_present;
                    if promoted == Some(true) {
                        entry.1 = true;
                    }
                    done += 1;
                }
                done
            })
        })
        .collect();

    // gc back to back from another process.
    let gc = {
        let data_path = data.path.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let (mut runs, mut freed, mut gave_up) = (0usize, 0usize, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                let out = caprepo()
                    .args(["gc", "--data"])
                    .arg(&data_path)
                    .args(["--grace", "0s", "--keep-generations", "1"])
                    .output()
                    .unwrap();
                let text = output_text(&out);
                if out.status.success() {
                    runs += 1;
                    let n: usize = text
                        .split("freed ")
                        .nth(1)
                        .and_then(|t| t.split(' ').next())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    freed += n;
                } else {
                    assert!(
                        text.contains("did not pause"),
                        "gc failed beside writers:\n{text}"
                    );
                    gave_up.push(text);
                }
            }
            (runs, freed, gave_up)
        })
    };

    // Clients refresh in a loop: none may fail.
    let key = data.key(false);
    let apt_reader = {
        let stop = Arc::clone(&stop);
        let apt = Apt::for_repo(
            servers.last().unwrap_or(server),
            "soak",
            "stable",
            "main",
            &key,
            false,
        );
        std::thread::spawn(move || {
            let (mut runs, mut failures) = (0, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                let out = apt.run(&["update"]);
                let text = output_text(&out);
                runs += 1;
                if !out.status.success() || text.contains("W: ") || text.contains("E: ") {
                    failures.push(text);
                }
            }
            (runs, failures)
        })
    };
    let dnf_reader = {
        let stop = Arc::clone(&stop);
        let url = server.url.clone();
        std::thread::spawn(move || {
            let dnf = Dnf::at(&format!("{url}/soakr"), &url, "12");
            let (mut runs, mut failures) = (0, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                let out = dnf.run(&["--refresh", "makecache"]);
                runs += 1;
                if !out.status.success() {
                    failures.push(output_text(&out));
                }
            }
            (runs, failures)
        })
    };

    let operations: usize = uploaders.into_iter().map(|u| u.join().unwrap()).sum();
    stop.store(true, Ordering::SeqCst);
    let (gc_runs, freed, gave_up) = gc.join().unwrap();
    let (apt_runs, apt_failures) = apt_reader.join().unwrap();
    let (dnf_runs, dnf_failures) = dnf_reader.join().unwrap();
    eprintln!(
        "soak: {operations} operations, {gc_runs} gc runs freeing {freed} objects \
         ({} gave up), {apt_runs} apt-get updates, {dnf_runs} dnf refreshes",
        gave_up.len()
    );
    assert!(
        apt_failures.is_empty(),
        "{} of {apt_runs} apt-get updates failed during gc:\n{}",
        apt_failures.len(),
        apt_failures.join("\n---\n")
    );
    assert!(
        dnf_failures.is_empty(),
        "{} of {dnf_runs} dnf refreshes failed during gc:\n{}",
        dnf_failures.len(),
        dnf_failures.join("\n---\n")
    );
    assert!(operations >= 16, "only {operations} operations ran");
    assert!(gc_runs >= 2, "gc completed only {gc_runs} times");
    assert!(
        freed > 0,
        "gc never freed anything: the soak did not test it"
    );

    // A last gc, then the store checks out and every acknowledged answer holds.
    data.cli(&["gc"], &["--grace", "0s", "--keep-generations", "1"]);
    verify_ok(data, "the soak");

    let ledger = ledger.lock().unwrap();
    let files: BTreeMap<String, PathBuf> = debs
        .iter()
        .map(|f| (package(f, false).name, f.clone()))
        .collect();
    for (suite, wanted) in [("stable", 0usize), ("testing", 1)] {
        // Another daemon's last changes reach this one within its poll.
        let expected: std::collections::BTreeSet<&str> = files
            .keys()
            .filter(|name| {
                let state = ledger.packages[*name];
                if wanted == 0 { state.0 } else { state.1 }
            })
            .map(String::as_str)
            .collect();
        server.wait_for(
            &format!("/soak/dists/{suite}/main/binary-amd64/Packages"),
            "the acknowledged state published",
            |r| {
                let listed: std::collections::BTreeSet<&str> = r
                    .text()
                    .lines()
                    .filter_map(|l| l.strip_prefix("Package: "))
                    .map(|n| expected.get(n).copied().unwrap_or("(unexpected)"))
                    .collect();
                listed == expected
            },
        );
        let apt = Apt::for_repo(server, "soak", suite, "main", &key, false);
        apt.run_ok(&["update"]);
        for (name, file) in &files {
            let state = ledger.packages[name];
            let expected = if wanted == 0 { state.0 } else { state.1 };
            let out = apt.download(&[name]);
            assert_eq!(
                out.status.success(),
                expected,
                "{suite}: {name} acknowledged {} but apt-get download says:\n{}",
                if expected { "present" } else { "removed" },
                output_text(&out)
            );
            if expected {
                let fetched =
                    std::fs::read(apt.root.path().join(format!("{name}_2.10-3_amd64.deb")))
                        .unwrap();
                assert_eq!(fetched, std::fs::read(file).unwrap(), "{suite}: {name}");
                std::fs::remove_file(apt.root.path().join(format!("{name}_2.10-3_amd64.deb")))
                    .unwrap();
            }
        }
    }
    // dnf lists exactly the rpms acknowledged present (the generated rpms require
    // glibc, so dnf resolves rather than installs them), and each one it locates is
    // fetched and verifies with the repository key.
    let present_rpms: std::collections::BTreeSet<String> = ledger
        .packages
        .iter()
        .filter(|(name, (present, _))| name.starts_with("soakr") && *present)
        .map(|(name, _)| name.clone())
        .collect();
    let dnf = Dnf::new(server, "soakr");
    let deadline = Instant::now() + Duration::from_secs(30);
    let locations = loop {
        let out = dnf.run(&["--refresh", "repoquery", "--location", "soakr*"]);
        assert!(out.status.success(), "dnf repoquery: {}", output_text(&out));
        let locations: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("http"))
            .map(str::to_string)
            .collect();
        let listed: std::collections::BTreeSet<String> = locations
            .iter()
            .filter_map(|url| url.rsplit('/').next())
            .map(|file| file.trim_end_matches("-1.0-1.x86_64.rpm").to_string())
            .collect();
        if listed == present_rpms {
            break locations;
        }
        assert!(
            Instant::now() < deadline,
            "dnf lists {listed:?}, but {present_rpms:?} were acknowledged"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let keyring = RpmKeyring::new(&data.key(true));
    for url in &locations {
        let fetched = curl(&[url]);
        assert_eq!(fetched.status, 200, "{url}");
        let file = work.path().join("fetched.rpm");
        std::fs::write(&file, &fetched.body).unwrap();
        let checked = keyring.check(&file);
        assert!(
            checked.contains("digests signatures OK"),
            "{url}: {checked}"
        );
    }
}
