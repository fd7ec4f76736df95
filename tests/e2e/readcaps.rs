//! The whole capability model through real processes: private repositories
//! read by apt through a read-cap URL, revocation honoured on the next request
//! (by every server on the store), offline attenuation, not-yet-valid caps, and
//! caps never written whole to the log.

use crate::harness::*;

fn issue(data: &DataDir, scope: &str, rights: &str, extra: &[&str]) -> String {
    data.cap_with(scope, rights, "30d", extra)
}

fn cap_id(data: &DataDir, cap: &str) -> String {
    let out = run_ok(
        caprepo()
            .args(["cap", "inspect", "--json", "--data"])
            .arg(&data.path)
            .arg(cap),
    );
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    json["chain"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn private_repository_is_read_by_apt_through_a_read_cap_until_revoked() {
    let data = DataDir::init(&[]);
    data.cli(
        &["repo", "add"],
        &[
            "apt",
            "secret",
            "--suites",
            "stable, testing",
            "--components",
            "main",
            "--architectures",
            "amd64",
            "--private",
        ],
    );
    let server = Server::start(&data);
    let upload = data.cap("apt/secret/dists/stable/main/binary-amd64", "1h");
    assert!(
        server
            .upload(&upload, &[fixture("debs/hello_2.10-3_amd64.deb")], true)
            .status
            .success()
    );

    // The public path does not exist for a private repository, nor does its page.
    for path in [
        "/secret/dists/stable/InRelease",
        "/secret/pool/main/h/hello/hello_2.10-3_amd64.deb",
        "/secret/",
    ] {
        assert_eq!(server.get(path).status, 404, "{path}");
    }
    assert!(!server.get("/").text().contains("secret"));

    let read = issue(&data, "apt/secret", "read", &[]);
    assert!(
        read.starts_with("cr1-") && read.len() == 44,
        "a read cap prints as a short read link: {read}"
    );
    let key = data.key(false);
    let sources = format!(
        "Types: deb\nURIs: {}/r/{read}/\nSuites: stable\nComponents: main\nSigned-By: KEYRING\n",
        server.url
    );
    let apt = Apt::new(&sources, &key, true);
    apt.run_ok(&["update"]);
    apt.run_ok(&["install", "-y", "--download-only", "hello"]);
    let got = std::fs::read(apt.archive("hello_2.10-3_amd64.deb")).unwrap();
    assert_eq!(
        sha256_hex(&got),
        sha256_hex(&std::fs::read(fixture("debs/hello_2.10-3_amd64.deb")).unwrap())
    );

    // A suite-scoped read cap opens that suite only.
    let stable_only = issue(&data, "apt/secret/dists/stable", "read", &[]);
    assert_eq!(
        server
            .get(&format!("/r/{stable_only}/dists/stable/InRelease"))
            .status,
        200
    );
    assert_eq!(
        server
            .get(&format!("/r/{stable_only}/dists/testing/InRelease"))
            .status,
        404
    );
    // An upload cap is not a read cap, and a read cap cannot upload.
    assert_eq!(
        server
            .get(&format!("/r/{upload}/dists/stable/InRelease"))
            .status,
        403
    );
    let long_read = issue(&data, "apt/secret", "read", &["--long"]);
    assert!(long_read.starts_with("caprepo1."));
    assert_eq!(
        put(
            &server,
            "hello.deb",
            &fixture("debs/tree_2.1.0-1_amd64.deb"),
            Some(&long_read),
            ""
        )
        .status,
        403
    );
    // The full form works in a URL too (curl has no file-name limit), and cap publish turns it into a link.
    assert_eq!(
        server
            .get(&format!("/r/{long_read}/dists/stable/InRelease"))
            .status,
        200
    );
    let via_long = run_ok(
        caprepo()
            .args(["cap", "publish", "--server", &server.url])
            .arg(&long_read),
    );
    assert!(
        via_long.contains(&format!("{}/r/cr1-", server.url)),
        "{via_long}"
    );
    assert_eq!(
        server
            .get("/r/cr1-0000000000000000000000000000000000000000/dists/stable/InRelease")
            .status,
        401
    );

    // cap publish prints the setup; the same page serves a browser.
    let published = run_ok(
        caprepo()
            .args(["cap", "publish", "--server", &server.url])
            .arg(&read),
    );
    assert!(
        published.contains(&format!("URIs: {}/r/{read}/", server.url)),
        "{published}"
    );
    assert!(published.contains("Signed-By: /etc/apt/keyrings/secret.gpg"));
    assert!(published.contains(&format!(
        "deb [signed-by=/etc/apt/keyrings/secret.gpg] {}/r/{read}/ stable main",
        server.url
    )));
    assert!(published.contains(&format!("{}/key.gpg", server.url)));
    let html = curl(&[
        "-H",
        "Accept: text/html",
        &format!("{}/r/{read}/", server.url),
    ]);
    assert!(html.text().starts_with("<!doctype html>") && html.text().contains("Signed-By"));

    // Revoke: the very next request fails, for apt too.
    let id = cap_id(&data, &read);
    run_ok(
        caprepo()
            .args(["cap", "revoke", "--data"])
            .arg(&data.path)
            .arg(&id),
    );
    let refused = server.get(&format!("/r/{read}/dists/stable/InRelease"));
    assert_eq!(refused.status, 401);
    assert!(
        refused.json()["reason"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    let out = apt.run(&["update"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("401"),
        "apt-get update must fail with 401 after revocation:\n{text}"
    );
    assert_eq!(
        server
            .get(&format!("/r/{stable_only}/dists/stable/InRelease"))
            .status,
        200,
        "other caps unaffected"
    );

    let list = run_ok(
        caprepo()
            .args(["cap", "list", "--json", "--data"])
            .arg(&data.path),
    );
    let rows: serde_json::Value = serde_json::from_str(&list).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap();
    assert_eq!(row["state"], "revoked");
    let inspected = caprepo()
        .args(["cap", "inspect", "--json", "--data"])
        .arg(&data.path)
        .arg(&read)
        .output()
        .unwrap();
    assert!(!inspected.status.success());
    let json: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(json["revoked"], true);
    for field in ["id", "scope", "rights", "not_before", "expires"] {
        assert!(!json[field].is_null(), "{field}");
    }

    // The debug log saw every request, and never a whole cap.
    let log = server.log_text();
    assert!(
        log.contains("/r/cap:"),
        "access log lines name read caps by id"
    );
    for cap in [&read, &stable_only, &upload, &long_read] {
        assert!(!log.contains(cap.as_str()), "a cap reached the log");
        for secret in cap.split('.').skip(1) {
            assert!(!log.contains(secret), "part of a cap reached the log");
        }
    }
}

#[test]
fn attenuated_caps_work_offline_and_die_with_their_parent_on_every_server() {
    let data = DataDir::init(&[]);
    data.repo_add("rp", "stable", "main,contrib", "amd64,arm64");
    let first = Server::start(&data);
    // A second daemon on the same store, sharing the first one's signing agent.
    let socket = data.path.join("run/agent.sock");
    let second = Server::start_with(&data, &["--agent-socket", socket.to_str().unwrap()], &[]);

    let parent = issue(&data, "apt/rp", "upload,read", &[]);
    let child = run_ok(
        caprepo()
            .args([
                "cap",
                "attenuate",
                "--scope",
                "apt/rp/dists/stable/main/binary-amd64",
                "--rights",
                "upload",
                "--expires",
                "1h",
            ])
            .arg(&parent),
    )
    .trim()
    .to_string();
    assert_ne!(child, parent);
    let out = second.upload(&child, &[fixture("debs/hello_2.10-3_amd64.deb")], true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The child is narrower: not into arm64, not read.
    assert_eq!(
        put(
            &first,
            "x.deb",
            &fixture("malformed/arch-arm64.deb"),
            Some(&child),
            ""
        )
        .status,
        403
    );
    assert_eq!(
        first
            .get(&format!("/r/{child}/dists/stable/InRelease"))
            .status,
        403
    );

    // The command refuses to widen and prints nothing.
    for args in [
        vec!["--scope", "apt/rp"],
        vec!["--scope", "apt/other"],
        vec!["--rights", "upload,admin"],
        vec!["--expires", "3650d"],
    ] {
        let out = caprepo()
            .args(["cap", "attenuate"])
            .args(&args)
            .arg(&child)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(out.stdout.is_empty());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("refusing to widen"),
            "{args:?}"
        );
    }

    // Revoking the parent revokes the child, on both servers, at the next request.
    run_ok(
        caprepo()
            .args(["cap", "revoke", "--data"])
            .arg(&data.path)
            .arg(cap_id(&data, &parent)),
    );
    for server in [&first, &second] {
        let reply = put(
            server,
            "tree.deb",
            &fixture("debs/tree_2.1.0-1_amd64.deb"),
            Some(&child),
            "",
        );
        assert_eq!(reply.status, 401, "{}", reply.text());
        assert!(reply.json()["reason"].as_str().unwrap().contains("revoked"));
    }
}

#[test]
fn not_yet_valid_and_widened_by_hand_caps_are_refused() {
    let data = DataDir::init(&[]);
    data.repo_add("rp", "stable", "main", "amd64");
    let server = Server::start(&data);
    let later = issue(
        &data,
        "apt/rp/dists/stable/main/binary-amd64",
        "upload",
        &["--not-before", "1h"],
    );
    let reply = put(
        &server,
        "hello.deb",
        &fixture("debs/hello_2.10-3_amd64.deb"),
        Some(&later),
        "",
    );
    assert_eq!(reply.status, 401);
    assert!(
        reply.json()["reason"]
            .as_str()
            .unwrap()
            .contains("not valid before")
    );

    // Hand-craft a wider block: sign it with the proof key the token carries.
    let narrow = issue(
        &data,
        "apt/rp/dists/stable/main/binary-amd64",
        "upload",
        &[],
    );
    let wider = attenuate_with_id(&narrow, &"ab".repeat(16), "apt/rp", "upload");
    let reply = put(
        &server,
        "hello.deb",
        &fixture("debs/hello_2.10-3_amd64.deb"),
        Some(&wider),
        "?target=apt/rp/dists/stable/main",
    );
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert!(reply.json()["reason"].as_str().unwrap().contains("widen"));
}

#[test]
fn admin_caps_revoke_within_their_scope_only() {
    let data = DataDir::init(&[]);
    data.repo_add("rp", "stable", "main", "amd64");
    data.repo_add("other", "stable", "main", "amd64");
    let server = Server::start(&data);
    let admin = data.cap_with("apt/rp", "admin", "1h", &[]);
    let foreign_admin = data.cap_with("apt/other", "admin", "1h", &[]);
    let upload = data.cap("apt/rp/dists/stable/main/binary-amd64", "1h");
    let attenuated = run_ok(
        caprepo()
            .args(["cap", "attenuate", "--expires", "30min"])
            .arg(&upload),
    )
    .trim()
    .to_string();
    let revoke = |admin: &str, target: &str| {
        caprepo()
            .args([
                "cap",
                "revoke",
                "--server",
                &server.url,
                "--admin-cap",
                admin,
                target,
            ])
            .output()
            .unwrap()
    };

    // Not an admin, or an admin of another repository: refused, nothing revoked.
    let out = revoke(&upload, &cap_id(&data, &upload));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("admin"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = revoke(&foreign_admin, &cap_id(&data, &upload));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("outside"));
    assert!(
        server
            .upload(&attenuated, &[fixture("debs/hello_2.10-3_amd64.deb")], true)
            .status
            .success()
    );

    // The admin revokes an attenuated cap by presenting it: its parent keeps working.
    let out = revoke(&admin, &attenuated);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply = put(
        &server,
        "tree.deb",
        &fixture("debs/tree_2.1.0-1_amd64.deb"),
        Some(&attenuated),
        "",
    );
    assert_eq!(reply.status, 401);
    let reply = put(
        &server,
        "tree.deb",
        &fixture("debs/tree_2.1.0-1_amd64.deb"),
        Some(&upload),
        "",
    );
    assert_eq!(reply.status, 201, "{}", reply.text());

    // And an issued cap by id.
    assert!(revoke(&admin, &cap_id(&data, &upload)).status.success());
    let reply = put(
        &server,
        "gobjc.deb",
        &fixture("debs/gobjc_12.2.0-3_amd64.deb"),
        Some(&upload),
        "",
    );
    assert_eq!(reply.status, 401);
    assert!(reply.json()["reason"].as_str().unwrap().contains("revoked"));
}
