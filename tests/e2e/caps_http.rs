//! Upload caps over HTTP: missing, malformed, forged, expired and foreign caps
//! get 401; a package or target outside the cap's cell gets 403; Architecture:
//! all may come through any binary-<arch> cap of its component. And the cap
//! never appears whole in the server's log.

use crate::harness::*;

#[test]
fn cap_failures_are_401_and_scope_failures_are_403() {
    let data = DataDir::init(&[]);
    data.repo_add("rp", "stable,testing", "main,contrib", "amd64,arm64");
    data.repo_add("other", "stable", "main", "amd64");
    let server = Server::start(&data);
    let deb = fixture("debs/hello_2.10-3_amd64.deb");
    let good = data.cap("apt/rp/dists/stable/main/binary-amd64", "1h");

    let foreign = DataDir::init(&[]);
    foreign.repo_add("rp", "stable", "main", "amd64");
    let forged = foreign.cap("apt/rp/dists/stable/main/binary-amd64", "1h");
    let short = data.cap("apt/rp/dists/stable/main/binary-amd64", "1s");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let mut tampered = good.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });

    let cases: Vec<(Option<&str>, &str)> = vec![
        (None, "no capability"),
        (Some("not-a-cap"), "malformed"),
        (Some(&good[..good.len() / 2]), "malformed"),
        (Some(&forged), "bad signature"),
        (Some(&short), "expired"),
        (Some(&tampered), "capability"),
    ];
    for (cap, reason) in cases {
        let reply = put(&server, "hello.deb", &deb, cap, "");
        assert_eq!(reply.status, 401, "{reason}: {}", reply.text());
        assert!(
            reply.json()["reason"].as_str().unwrap().contains(reason),
            "{reason}: {}",
            reply.text()
        );
    }

    // Siblings of the cap's cell: other suite, component, arch, repository.
    for target in [
        "apt/rp/dists/testing/main",
        "apt/rp/dists/stable/contrib",
        "apt/other/dists/stable/main",
        "apt/rp/dists/stable/main/binary-arm64",
    ] {
        let reply = put(
            &server,
            "hello.deb",
            &deb,
            Some(&good),
            &format!("?target={target}"),
        );
        assert_eq!(reply.status, 403, "{target}: {}", reply.text());
    }
    let arm = put(
        &server,
        "hello.deb",
        &fixture("malformed/arch-arm64.deb"),
        Some(&good),
        "",
    );
    assert_eq!(arm.status, 403);

    // An arch-all package through an arm64 cap lands in every arch's index.
    let arm_cap = data.cap("apt/rp/dists/stable/main/binary-arm64", "1h");
    let out = server.upload(&arm_cap, &[fixture("debs/lsb-base_11.6_all.deb")], true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for arch in ["amd64", "arm64"] {
        let packages = server
            .get(&format!("/rp/dists/stable/main/binary-{arch}/Packages"))
            .text();
        assert!(packages.contains("Package: lsb-base\n"), "{arch}");
    }

    // A suite-wide cap needs a target naming the component, and works with one.
    let wide = data.cap("apt/rp/dists/stable", "1h");
    let reply = put(&server, "hello.deb", &deb, Some(&wide), "");
    assert_eq!(reply.status, 400);
    assert!(reply.json()["reason"].as_str().unwrap().contains("--to"));
    let out = caprepo()
        .args([
            "upload",
            "--server",
            &server.url,
            "--to",
            "apt/rp/dists/stable/contrib",
            "--wait",
        ])
        .env("CAPREPO_CAP", &wide)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        server
            .get("/rp/dists/stable/contrib/binary-amd64/Packages")
            .text()
            .contains("Package: hello")
    );

    // cap issue refuses scopes that name nothing real.
    for scope in [
        "apt/nosuch",
        "apt/rp/dists/sid",
        "apt/rp/dists/stable/non-free",
        "apt/rp/dists/stable/main/binary-s390x",
        "apt/rp/../x",
    ] {
        let out = caprepo()
            .args(["cap", "issue", "--data"])
            .arg(&data.path)
            .args(["--scope", scope, "--rights", "upload", "--expires", "1h"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{scope}");
        assert!(out.stdout.is_empty());
    }

    // The log names caps by id only.
    let log = server.log_text();
    for cap in [&good, &arm_cap, &wide, &forged] {
        let secret = cap.rsplit('.').next().unwrap();
        assert!(
            !log.contains(cap.as_str()) && !log.contains(secret),
            "a cap leaked into the log"
        );
    }
}

#[test]
fn cap_inspect_shows_what_a_cap_grants() {
    let data = DataDir::init(&[]);
    data.repo_add("rp", "stable", "main", "amd64");
    let cap = data.cap("apt/rp/dists/stable/main/binary-amd64", "1h");
    let out = run_ok(
        caprepo()
            .args(["cap", "inspect", "--json", "--data"])
            .arg(&data.path)
            .arg(&cap),
    );
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["scope"], "apt/rp/dists/stable/main/binary-amd64");
    assert_eq!(json["rights"], serde_json::json!(["upload"]));
    assert_eq!(json["valid"], true);
    assert!(json["expires"].as_str().unwrap().ends_with('Z'));
    assert!(
        !out.contains(cap.rsplit('.').next().unwrap()),
        "no secret parts"
    );
}
