//! The signatures on Release, checked by the tools apt trusts: gpgv for InRelease
//! and Release.gpg, sqv for Release.gpg; a tampered Release fails both. Also the
//! agent: a passphrase-protected key, RSA-4096, and a separately started agent
//! with the server never touching the key file.

use std::process::Command;

use crate::harness::*;

fn verify_suite(server: &Server, data: &DataDir, repo: &str) {
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("key.gpg");
    std::fs::write(&keyring, data.key(false)).unwrap();
    let release = server.wait_for(&format!("/{repo}/dists/stable/Release"), "published", |r| {
        r.status == 200
    });
    let in_release = server.get(&format!("/{repo}/dists/stable/InRelease"));
    let release_gpg = server.get(&format!("/{repo}/dists/stable/Release.gpg"));
    assert!(
        String::from_utf8_lossy(&release_gpg.body).starts_with("-----BEGIN PGP SIGNATURE-----"),
        "armored"
    );
    std::fs::write(dir.path().join("Release"), &release.body).unwrap();
    std::fs::write(dir.path().join("InRelease"), &in_release.body).unwrap();
    std::fs::write(dir.path().join("Release.gpg"), &release_gpg.body).unwrap();
    // gpgv and sqv take the same arguments: --keyring FILE [SIGNATURE] FILE.
    let verifier = |tool: &'static str| {
        let keyring = keyring.clone();
        let cwd = dir.path().to_path_buf();
        move |args: &[&str]| {
            Command::new(tool)
                .arg("--keyring")
                .arg(&keyring)
                .args(args)
                .current_dir(&cwd)
                .output()
                .unwrap()
        }
    };
    let gpgv = verifier("gpgv");
    let sqv = verifier("sqv");
    let ok = |out: std::process::Output, what: &str| {
        assert!(
            out.status.success(),
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(gpgv(&["InRelease"]), "gpgv InRelease");
    ok(gpgv(&["Release.gpg", "Release"]), "gpgv Release.gpg");
    ok(sqv(&["Release.gpg", "Release"]), "sqv Release.gpg");
    // InRelease carries exactly the Release text.
    let text = String::from_utf8_lossy(&in_release.body);
    assert!(
        text.contains(
            &String::from_utf8_lossy(&release.body)
                .trim_end()
                .to_string()
        )
    );

    // Tamper: change one character of the Release text and of InRelease's signed body.
    let tampered =
        String::from_utf8_lossy(&release.body).replacen("Suite: stable", "Suite: stablf", 1);
    std::fs::write(dir.path().join("Release"), tampered).unwrap();
    assert!(
        !gpgv(&["Release.gpg", "Release"]).status.success(),
        "gpgv must refuse a tampered Release"
    );
    assert!(
        !sqv(&["Release.gpg", "Release"]).status.success(),
        "sqv must refuse a tampered Release"
    );
    std::fs::write(
        dir.path().join("InRelease"),
        text.replacen("Suite: stable", "Suite: stablf", 1),
    )
    .unwrap();
    assert!(
        !gpgv(&["InRelease"]).status.success(),
        "gpgv must refuse a tampered InRelease"
    );
}

#[test]
fn gpgv_and_sqv_verify_and_catch_tampering() {
    let data = DataDir::init(&[]);
    data.repo_add("signed", "stable", "main", "amd64");
    let server = Server::start(&data);
    let cap = data.cap("apt/signed/dists/stable/main/binary-amd64", "1h");
    assert!(
        server
            .upload(&cap, &[fixture("debs/hello_2.10-3_amd64.deb")], true)
            .status
            .success()
    );
    verify_suite(&server, &data, "signed");
    // Release names SHA256 for every index file, and each matches what is served.
    let release = server.get("/signed/dists/stable/Release").text();
    for field in [
        "Origin: signed",
        "Label: signed",
        "Suite: stable",
        "Codename: stable",
        "Architectures: amd64",
        "Components: main",
        "Acquire-By-Hash: yes",
        "Date: ",
    ] {
        assert!(release.contains(field), "Release lacks {field}:\n{release}");
    }
    let lines: Vec<&str> = release
        .lines()
        .skip_while(|l| *l != "SHA256:")
        .skip(1)
        .collect();
    assert_eq!(
        lines.len(),
        8,
        "Sources (3 forms), Packages (3), Contents-amd64 (2)"
    );
    for line in lines {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (hash, size, path) = (parts[0], parts[1], parts[2]);
        let named = server.get(&format!("/signed/dists/stable/{path}"));
        assert_eq!(
            (sha256_hex(&named.body), named.body.len().to_string()),
            (hash.to_string(), size.to_string()),
            "{path}"
        );
        let dir = path.rsplit_once('/').unwrap().0;
        let by_hash = server.get(&format!("/signed/dists/stable/{dir}/by-hash/SHA256/{hash}"));
        assert_eq!(sha256_hex(&by_hash.body), hash, "by-hash {path}");
    }
}

#[test]
fn passphrase_protected_rsa4096_key_signs_through_the_agent() {
    let data = DataDir::init(&["--with-passphrase-env", "--key-algo", "rsa4096"]);
    let secret = std::fs::read_to_string(data.path.join("keys/signing-key.asc")).unwrap();
    assert!(secret.contains("PRIVATE KEY"));
    // Without the passphrase the agent cannot unlock the key and serve says why.
    let out = caprepo()
        .args(["agent", "--data"])
        .arg(&data.path)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CAPREPO_PASSPHRASE"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wrong = caprepo()
        .args(["agent", "--data"])
        .arg(&data.path)
        .env("CAPREPO_PASSPHRASE", "nope")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong passphrase"));

    data.repo_add("rsa", "stable", "main", "amd64");
    let server = Server::start_with(&data, &[], &[("CAPREPO_PASSPHRASE", "test passphrase")]);
    verify_suite(&server, &data, "rsa");
    let key = data.key(true);
    assert!(String::from_utf8_lossy(&key).contains("BEGIN PGP PUBLIC KEY BLOCK"));
    assert_eq!(
        server.get("/key.asc").body,
        key,
        "the stable key URL serves the same key"
    );
    assert_eq!(server.get("/key.gpg").body, data.key(false));
}

#[test]
fn separately_started_agent_signs_while_the_server_never_reads_the_key() {
    let data = DataDir::init(&["--with-passphrase-env"]);
    data.repo_add("ext", "stable", "main", "amd64");
    let socket = data.tmp.path().join("agent-run/agent.sock");
    let mut agent = caprepo()
        .args(["agent", "--data"])
        .arg(&data.path)
        .arg("--socket")
        .arg(&socket)
        .env("CAPREPO_PASSPHRASE", "test passphrase")
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !socket.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "agent socket never appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(socket.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    // Take the key file away: the agent holds the key in memory, the server never needs the file.
    std::fs::rename(
        data.path.join("keys/signing-key.asc"),
        data.tmp.path().join("moved-away.asc"),
    )
    .unwrap();
    let server = Server::start_with(&data, &["--agent-socket", socket.to_str().unwrap()], &[]);
    verify_suite(&server, &data, "ext");
    server.stop();
    let _ = agent.kill();
    let _ = agent.wait();
}

/// A signing key current clients refuse is refused at `init`, with what to do instead:
/// apt 3.0's sqv policy rejects DSA, and rpm 4.x reads no DSA signature caprepo writes.
#[test]
fn init_refuses_a_dsa_signing_key_that_clients_reject() {
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("gnupg");
    std::fs::create_dir(&home).unwrap();
    let gpg = |args: &[&str]| {
        let out = std::process::Command::new("gpg")
            .env("GNUPGHOME", &home)
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "gpg {args:?}: {}", output_text(&out));
        out.stdout
    };
    let mut keys = Vec::new();
    for (uid, algo) in [
        ("dsa@example.invalid", "dsa2048"),
        ("rsa@example.invalid", "rsa3072"),
    ] {
        gpg(&["--quick-gen-key", uid, algo, "sign", "never"]);
        let file = work.path().join(format!("{algo}.asc"));
        std::fs::write(&file, gpg(&["--armor", "--export-secret-keys", uid])).unwrap();
        keys.push((algo, file));
    }
    for (algo, file) in keys {
        let data = work.path().join(format!("data-{algo}"));
        let out = caprepo()
            .args(["init", "--no-passphrase", "--data"])
            .arg(&data)
            .arg("--signing-key")
            .arg(&file)
            .output()
            .unwrap();
        if algo == "dsa2048" {
            assert!(!out.status.success(), "a DSA key was accepted");
            let text = output_text(&out);
            assert!(text.contains("DSA") && text.contains("rsa4096"), "{text}");
        } else {
            assert!(out.status.success(), "{algo}: {}", output_text(&out));
        }
    }
}
