//! Hostile peers against real `caprepo serve` and `caprepo agent` processes: agent
//! sockets pointed at shared or occupied places, and every spelling of a cap in a URL
//! with the log at trace level.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

fn agent(data: &DataDir, socket: &Path) -> Command {
    let mut command = caprepo();
    command
        .args(["agent", "--data"])
        .arg(&data.path)
        .arg("--socket")
        .arg(socket)
        .stdin(Stdio::null());
    command
}

/// Run `caprepo agent` on a socket and wait until the socket answers.
fn start_agent(data: &DataDir, socket: &Path) -> Child {
    let mut child = agent(data, socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the agent exited ({status}) instead of serving on {socket:?}");
        }
        assert!(Instant::now() < deadline, "the agent never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Run `caprepo agent` on a socket it must refuse: it exits non-zero within 30 s; answers its message.
fn refused_agent(data: &DataDir, socket: &Path) -> String {
    let mut child = agent(data, socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            stop(child);
            panic!("the agent started on {socket:?} instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", output_text(&out));
    output_text(&out)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn agent_refuses_a_shared_directory_and_leaves_its_mode_alone() {
    let data = DataDir::init(&[]);
    let shared = data.tmp.path().join("shared-tmp");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let error = refused_agent(&data, &shared.join("agent.sock"));
    assert!(
        error.contains("writable") && error.contains("shared-tmp"),
        "a clear reason naming the directory: {error}"
    );
    assert_eq!(mode(&shared), 0o1777, "the directory's mode is unchanged");
    assert!(!shared.join("agent.sock").exists());

    // A directory another user owns is refused too (we run as root in CI; skip otherwise).
    if rustix::process::geteuid().is_root() {
        let foreign = data.tmp.path().join("foreign");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
        let error = refused_agent(&data, &foreign.join("agent.sock"));
        assert!(error.contains("owned by uid 65534"), "{error}");
        assert_eq!(mode(&foreign), 0o700);
    }

    // A missing directory is created 0700, and the socket in it 0600.
    let fresh = data.tmp.path().join("fresh/run");
    let agent = start_agent(&data, &fresh.join("agent.sock"));
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(mode(&fresh.join("agent.sock")), 0o600);
    stop(agent);
    assert!(
        !fresh.join("agent.sock").exists(),
        "the agent removes its own socket when it stops"
    );
}

#[test]
fn agent_leaves_a_regular_file_alone_and_replaces_only_a_stale_socket() {
    let data = DataDir::init(&[]);
    let dir = data.tmp.path().join("run");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();

    let file = dir.join("agent.sock");
    std::fs::write(&file, "precious").unwrap();
    let error = refused_agent(&data, &file);
    assert!(error.contains("not a socket"), "{error}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
    std::fs::remove_file(&file).unwrap();

    // A socket nobody answers on (a crashed agent's) is replaced.
    let stale = std::os::unix::net::UnixListener::bind(&file).unwrap();
    drop(stale);
    assert!(std::os::unix::net::UnixStream::connect(&file).is_err());
    let agent = start_agent(&data, &file);

    // A live one is not: a second agent refuses and the first keeps answering.
    let error = refused_agent(&data, &file);
    assert!(error.contains("already listening"), "{error}");
    assert!(std::os::unix::net::UnixStream::connect(&file).is_ok());
    stop(agent);
}

/// Every byte of `text` as %XX.
fn encode_all(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// The byte at `index` as %xx (lower-case hex), the rest as is.
fn encode_one(text: &str, index: usize) -> String {
    let mut out = String::new();
    for (i, b) in text.bytes().enumerate() {
        if i == index {
            out.push_str(&format!("%{b:02x}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

#[test]
fn no_spelling_of_a_cap_or_link_in_a_request_reaches_the_log_at_trace_level() {
    let data = DataDir::init(&[]);
    data.repo_add("secret", "stable", "main", "amd64");
    let cap = data.cap_with("apt/secret", "read", "1h", &["--long"]);
    let link = data.cap_with("apt/secret", "read", "1h", &[]);
    let upload = data.cap("apt/secret/dists/stable/main/binary-amd64", "1h");
    assert!(cap.starts_with("caprepo1.") && link.starts_with("cr1-"));
    let server = Server::start_with(&data, &[], &[("CAPREPO_LOG", "trace")]);
    let rest = cap.strip_prefix("caprepo1.").unwrap();

    let mut spellings: Vec<String> = vec![
        cap.clone(),
        encode_all(&cap),
        encode_one(&cap, 12),
        encode_one(&cap, cap.len() - 1),
        encode_all(&encode_all(&cap)),
        format!("CAPREPO1.{rest}"),
        format!("{cap}junk"),
        format!("{cap}%00"),
        format!("{cap}%2Fdists"),
        link.clone(),
        link.to_uppercase(),
        encode_one(&link, 20),
        encode_all(&link),
        format!("{link}x"),
    ];
    spellings.push(format!("x{}", spellings[0]));
    let mut paths = Vec::new();
    for token in &spellings {
        for prefix in [
            "/r/", "/%72/", "/%52/", "/R/", "/r//", "//r/", "/r/./", "/x/", "/",
        ] {
            paths.push(format!("{prefix}{token}/dists/stable/InRelease"));
            paths.push(format!("{prefix}{token}"));
        }
        paths.push(format!("/secret/pool/{token}"));
        paths.push(format!("/healthz?cap={token}"));
        paths.push(format!("/r/{link}/dists/stable/InRelease?x={token}&y=1"));
    }
    for path in &paths {
        let reply = curl(&["--path-as-is", &format!("{}{path}", server.url)]);
        assert!(reply.status >= 200, "{path}: no answer");
    }
    for token in [&cap, &upload, &format!("{upload}x"), &encode_all(&upload)] {
        let reply = curl(&[
            "-X",
            "PUT",
            "--data-binary",
            "x",
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("{}/api/v1/upload/a.deb?cap={token}", server.url),
        ]);
        assert!(reply.status >= 400, "{}", reply.text());
    }

    let log = server.log_text();
    let logged_requests = log.matches("request").count();
    assert!(
        logged_requests >= paths.len(),
        "the access log saw the requests ({logged_requests} of {}):\n{log}",
        paths.len()
    );
    let mut secrets: Vec<String> = cap
        .split('.')
        .chain(upload.split('.'))
        .filter(|part| part.len() >= 16)
        .map(str::to_string)
        .collect();
    secrets.push(link["cr1-".len()..].to_string());
    let lower = log.to_lowercase();
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()) && !lower.contains(&secret.to_lowercase()),
            "a secret part {secret:?} reached the log"
        );
    }
    for spelling in &spellings {
        assert!(
            !log.contains(spelling.as_str()),
            "the spelling {spelling:?} reached the log"
        );
    }
}
