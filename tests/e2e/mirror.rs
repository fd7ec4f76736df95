//! Mirror targets: a `[[mirror]]` directory receives every publish,
//! incrementally and in reader-safe order, and nginx from Debian serves it on
//! 127.0.0.1 to real apt-get and dnf.

use std::process::{Child, Command};

use crate::harness::*;

struct Nginx {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn serve(root: &std::path::Path) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nuser root root;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  default_type application/octet-stream;\n  \
             server {{\n    listen 127.0.0.1:{port};\n    root {};\n  }}\n}}\n",
            root.display()
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .args([
                "-p",
                &d.to_string(),
                "-c",
                &format!("{d}/nginx.conf"),
                "-e",
                &format!("{d}/error.log"),
            ])
            .spawn()
            .expect("nginx is installed (.ci/run installs nginx-light)");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Nginx {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_mirrored_directory_served_by_nginx_works_for_apt_and_dnf() {
    let data = DataDir::init(&[]);
    let mirror = data.tmp.path().join("mirror");
    let config = data.path.join("caprepo.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[mirror]]\ndirectory = \"{}\"\ngrace = \"1d\"\n",
        mirror.display()
    ));
    std::fs::write(&config, text).unwrap();
    data.repo_add("pub", "stable", "main", "amd64");
    data.repo_add_rpm("fed", "12", "x86_64", &[]);
    data.repo_add_with("hidden", "stable", "main", "amd64", &["--private"]);
    let server = Server::start(&data);
    assert!(
        server
            .upload(
                &data.cap("apt/pub/dists/stable/main/binary-amd64", "1h"),
                &[fixture("debs/hello_2.10-3_amd64.deb")],
                true
            )
            .status
            .success()
    );
    assert!(
        server
            .upload(
                &data.cap("rpm/fed/12/x86_64", "1h"),
                &[fixture("rpms/standalone-caprepo-1.0-1.noarch.rpm")],
                true
            )
            .status
            .success()
    );
    let pool_file = mirror.join("pub/pool/main/h/hello/hello_2.10-3_amd64.deb");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !(pool_file.exists()
        && mirror.join("fed/12/x86_64/repodata/repomd.xml").exists()
        && mirror.join("pub/dists/stable/InRelease").exists())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "mirror not written:\n{}",
            server.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        !mirror.join("hidden").exists(),
        "private repositories are never mirrored"
    );
    // The mirror writes InRelease last, after the pool file this loop saw: wait for it.
    let served = server.get("/pub/dists/stable/InRelease").body;
    while std::fs::read(mirror.join("pub/dists/stable/InRelease")).ok() != Some(served.clone()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the mirror holds what the server publishes:\n{}",
            server.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let nginx = Nginx::serve(&mirror);
    let sources = format!(
        "Types: deb\nURIs: {}/pub/\nSuites: stable\nComponents: main\nSigned-By: KEYRING\n",
        nginx.url
    );
    let apt = Apt::new(&sources, &data.key(false), true);
    apt.run_ok(&["update"]);
    apt.run_ok(&["install", "-y", "--download-only", "hello"]);

    let out = Dnf::at(&format!("{}/fed", nginx.url), &server.url, "12")
        .run(&["install", "standalone-caprepo"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Incremental: another upload rewrites the indices, not the pool files already there.
    // nginx answers apt's If-Modified-Since by whole seconds: an InRelease rewritten in
    // the same second as the one apt fetched would be a 304, and apt would keep the old.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let before = std::fs::metadata(&pool_file).unwrap().modified().unwrap();
    assert!(
        server
            .upload(
                &data.cap("apt/pub/dists/stable/main/binary-amd64", "1h"),
                &[fixture("debs/tree_2.1.0-1_amd64.deb")],
                true
            )
            .status
            .success()
    );
    let tree = mirror.join("pub/pool/main/t/tree/tree_2.1.0-1_amd64.deb");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !tree.exists()
        || std::fs::read(mirror.join("pub/dists/stable/InRelease")).unwrap()
            != server.get("/pub/dists/stable/InRelease").body
    {
        assert!(
            std::time::Instant::now() < deadline,
            "mirror did not follow the publish"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        std::fs::metadata(&pool_file).unwrap().modified().unwrap(),
        before,
        "unchanged files are not rewritten"
    );
    apt.run_ok(&["update"]);
    apt.run_ok(&["install", "-y", "--download-only", "tree"]);
}

/// Waits until the mirror at `root` holds the InRelease the server publishes for `repo`.
fn wait_mirrored(server: &Server, root: &std::path::Path, repo: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let served = format!("/{repo}/dists/stable/InRelease");
    let mirrored = root.join(format!("{repo}/dists/stable/InRelease"));
    while std::fs::read(&mirrored).ok() != Some(server.get(&served).body) {
        assert!(
            std::time::Instant::now() < deadline,
            "mirror {} did not follow the publish:\n{}",
            root.display(),
            server.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A file no publication references any more leaves a mirror once the mirror's grace
/// period has passed, and not before. A removed package's pool file stays referenced
/// by the 16 superseded publications the server keeps (clients may still follow their
/// InRelease), so it takes 17 more publishes to drop out; then the mirror with a grace
/// of 0s deletes it and the one with a grace of 1d keeps it.
#[test]
fn a_mirror_prunes_unreferenced_files_only_after_its_grace_period() {
    let data = DataDir::init(&[]);
    let (prompt, patient) = (
        data.tmp.path().join("prompt"),
        data.tmp.path().join("patient"),
    );
    let config = data.path.join("caprepo.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    for (dir, grace) in [(&prompt, "0s"), (&patient, "1d")] {
        text.push_str(&format!(
            "\n[[mirror]]\ndirectory = \"{}\"\ngrace = \"{grace}\"\n",
            dir.display()
        ));
    }
    std::fs::write(&config, text).unwrap();
    data.repo_add("pub", "stable", "main", "amd64");
    let server = Server::start(&data);
    let cap = data.cap("apt/pub/dists/stable/main/binary-amd64", "1h");
    let upload = |deb: &str| {
        let out = server.upload(&cap, &[fixture(deb)], true);
        assert!(out.status.success(), "{}", output_text(&out));
    };
    upload("debs/hello_2.10-3_amd64.deb");
    let hello = "pub/pool/main/h/hello/hello_2.10-3_amd64.deb";
    for root in [&prompt, &patient] {
        wait_mirrored(&server, root, "pub");
        assert!(root.join(hello).exists(), "{} has hello", root.display());
    }

    data.cli(&["rm"], &["apt/pub/stable", "hello"]);
    server.wait_for(
        "/pub/dists/stable/main/binary-amd64/Packages",
        "hello removed",
        |r| !r.text().contains("Package: hello\n"),
    );
    // Seventeen more publishes: tree added and removed in turn.
    for round in 0..17 {
        if round % 2 == 0 {
            upload("debs/tree_2.1.0-1_amd64.deb");
        } else {
            data.cli(&["rm"], &["apt/pub/stable", "tree"]);
            server.wait_for(
                "/pub/dists/stable/main/binary-amd64/Packages",
                "tree removed",
                |r| !r.text().contains("Package: tree\n"),
            );
        }
        if round == 1 {
            // Syncs run one after another, so once this publish is mirrored, every sync
            // that saw the removal has finished, pruning included.
            wait_mirrored(&server, &prompt, "pub");
            assert!(
                prompt.join(hello).exists(),
                "still referenced by the superseded publications a client may follow"
            );
        }
    }
    // The pruning comes after the files in a sync: wait for it, not for InRelease.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while prompt.join(hello).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no publication references hello's pool file and the grace of 0s has passed, \
             yet the mirror keeps it:\n{}",
            server.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    wait_mirrored(&server, &patient, "pub");
    assert!(
        patient.join(hello).exists(),
        "the mirror with a grace of 1d keeps it"
    );
    assert!(
        prompt
            .join("pub/pool/main/t/tree/tree_2.1.0-1_amd64.deb")
            .exists(),
        "what the current publication lists stays"
    );
}

#[test]
fn a_bucket_mirror_receives_every_publish() {
    let s3 = S3::start();
    let bucket = format!("mirror-{}", free_port());
    assert_eq!(
        curl(&["-X", "PUT", &format!("{}/{bucket}", s3.endpoint)]).status,
        200
    );
    let data = DataDir::init(&[]);
    let config = data.path.join("caprepo.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[mirror]]\nbucket = \"{bucket}\"\nendpoint = \"{}\"\nallow_http = true\n",
        s3.endpoint
    ));
    std::fs::write(&config, text).unwrap();
    data.repo_add("pub", "stable", "main", "amd64");
    let server = Server::start_with(
        &data,
        &[],
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
    );
    let cap = data.cap("apt/pub/dists/stable/main/binary-amd64", "1h");
    assert!(
        server
            .upload(&cap, &[fixture("debs/hello_2.10-3_amd64.deb")], true)
            .status
            .success()
    );
    let in_bucket = |key: &str| curl(&[&format!("{}/{bucket}/{key}", s3.endpoint)]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let mirrored = in_bucket("pub/dists/stable/InRelease");
        if mirrored.status == 200 && mirrored.body == server.get("/pub/dists/stable/InRelease").body
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the bucket never got the publish:\n{}",
            server.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let package = in_bucket("pub/pool/main/h/hello/hello_2.10-3_amd64.deb");
    assert_eq!(
        package.body,
        std::fs::read(fixture("debs/hello_2.10-3_amd64.deb")).unwrap()
    );
}
