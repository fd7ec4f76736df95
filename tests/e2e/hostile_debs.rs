//! Packages built by an attacker who holds a valid cap (issue 14). Each is refused
//! with a 4xx and a JSON reason before anything is stored (the cases are in
//! `refusals::CASES`); here: Contents cannot be forged through odd file names, and the
//! uploads that used to cost seconds of CPU or hundreds of MiB of memory are answered
//! quickly with the server's peak memory flat.

use std::time::{Duration, Instant};

use crate::harness::*;

/// A server with the real hello published in apt/rp stable main amd64, idle.
fn server_with_hello() -> (DataDir, Server, String) {
    let data = DataDir::init(&[]);
    data.repo_add("rp", "stable", "main", "amd64");
    let server = Server::start(&data);
    let cap = data.cap("apt/rp/dists/stable/main/binary-amd64", "1h");
    let out = server.upload(&cap, &[fixture("debs/hello_2.10-3_amd64.deb")], true);
    assert!(out.status.success(), "{}", output_text(&out));
    std::thread::sleep(Duration::from_millis(1500)); // let the manager go idle
    (data, server, cap)
}

#[test]
fn odd_file_names_cannot_forge_contents_and_apt_still_updates() {
    let (data, server, cap) = server_with_hello();
    for file in [
        "malformed/name-newline.deb",
        "malformed/name-carriage-return.deb",
        "malformed/name-dotdot.deb",
        "malformed/name-leading-dotdot.deb",
        "malformed/name-trailing-space.deb",
    ] {
        let reply = put(
            &server,
            "upload.deb",
            &fixture(file),
            Some(&cap),
            "?wait=true",
        );
        assert_eq!(reply.status, 400, "{file}: {}", reply.text());
    }
    let contents = server.get("/rp/dists/stable/main/Contents-amd64").text();
    assert!(
        contents
            .lines()
            .any(|l| l.starts_with("usr/bin/hello ") && l.ends_with(" devel/hello")),
        "{contents}"
    );
    for line in contents.lines() {
        let path = line
            .rsplit_once(' ')
            .map_or("", |(path, _)| path)
            .trim_end();
        assert!(
            path.starts_with("usr/") && !path.split('/').any(|s| s == ".." || s == "."),
            "unexpected Contents line {line:?}"
        );
        assert!(
            !path.contains("sshd") && !path.contains("shadow") && !path.contains("cron.d"),
            "forged Contents line {line:?}"
        );
    }
    let apt = Apt::for_repo(&server, "rp", "stable", "main", &data.key(false), false);
    let out = apt.run_ok(&["update"]);
    assert!(!out.contains("W:") && !out.contains("E:"), "{out}");
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

/// An upload through curl that gives up after a minute (a quadratic parse took minutes).
fn timed_put(server: &Server, cap: &str, file: &str) -> (HttpReply, Duration) {
    let started = Instant::now();
    let reply = curl(&[
        "--max-time",
        "60",
        "-X",
        "PUT",
        "--data-binary",
        &format!("@{}", fixture(file).display()),
        "-H",
        &format!("Authorization: Bearer {cap}"),
        &format!("{}/api/v1/upload/upload.deb", server.url),
    ]);
    (reply, started.elapsed())
}

#[test]
fn many_control_fields_are_refused_in_bounded_time() {
    let (_data, server, cap) = server_with_hello();
    let (reply, took) = timed_put(&server, &cap, "malformed/many-fields.deb");
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.json()["reason"].as_str().unwrap().contains("fields"));
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
}

#[test]
fn huge_long_names_are_refused_without_buffering_them() {
    let (_data, server, cap) = server_with_hello();
    let pid = server.pid();
    let before = vm_hwm_kib(pid);
    // Six at once: each claims 200 MiB of file name.
    let replies: Vec<(HttpReply, Duration)> = std::thread::scope(|scope| {
        let uploads: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| timed_put(&server, &cap, "malformed/long-name-bomb.deb")))
            .collect();
        uploads.into_iter().map(|u| u.join().unwrap()).collect()
    });
    for (reply, took) in &replies {
        assert_eq!(reply.status, 400, "{}", reply.text());
        assert!(
            reply.json()["reason"]
                .as_str()
                .unwrap()
                .contains("long name")
        );
        assert!(*took < Duration::from_secs(5), "answered after {took:?}");
    }
    let grown_mib = vm_hwm_kib(pid).saturating_sub(before) / 1024;
    eprintln!("six long-name bombs: server VmHWM {before} KiB before, grew {grown_mib} MiB");
    assert!(grown_mib < 64, "server VmHWM grew by {grown_mib} MiB");
}

#[test]
fn underscore_members_are_optional_extras_as_in_dpkg() {
    let (_data, server, cap) = server_with_hello();
    let reply = put(
        &server,
        "caprepo-underscore.deb",
        &fixture("variants/underscore-members.deb"),
        Some(&cap),
        "?wait=true",
    );
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(reply.json()["package"]["name"], "caprepo-underscore");
}
