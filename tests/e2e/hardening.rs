//! Hostile setups against real `caprepo agent` processes: agent sockets pointed at
//! shared or occupied places.

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
