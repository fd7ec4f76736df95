//! Hostile peers against real `caprepo serve` and `caprepo agent` processes: more
//! idle connections than the server has file descriptors, slowloris clients,
//! keep-alive connections left open, uploads that stop mid-body, agent sockets
//! pointed at shared or occupied places, and every spelling of a cap in a URL
//! with the log at trace level.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// Set keys of the `[server]` table in a data dir's caprepo.toml (written by `init`).
fn set_server_keys(data: &DataDir, keys: &[(&str, i64)]) {
    let path = data.path.join("caprepo.toml");
    let mut config: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let server = config
        .entry("server")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .unwrap();
    for (key, value) in keys {
        server.insert(key.to_string(), toml::Value::Integer(*value));
    }
    std::fs::write(&path, config.to_string()).unwrap();
}

/// `caprepo serve` started through `sh` so that it runs under a given RLIMIT_NOFILE.
struct LimitedServer {
    url: String,
    port: u16,
    child: Child,
    log: PathBuf,
}

impl LimitedServer {
    fn start(data: &DataDir, soft: u64, hard: u64) -> LimitedServer {
        let port = free_port();
        let log = data.tmp.path().join(format!("serve-{port}.log"));
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -S -n {soft} && ulimit -H -n {hard} && exec \"$0\" \"$@\""
            ))
            .arg(bin())
            .args(["serve", "--data"])
            .arg(&data.path)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("CAPREPO_LOG", "info,caprepo=debug")
            .env_remove("CAPREPO_PASSPHRASE")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = LimitedServer {
            url: format!("http://127.0.0.1:{port}"),
            port,
            child,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while curl(&["--max-time", "2", &format!("{}/healthz", server.url)]).status != 200 {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("serve exited early ({status}):\n{}", server.log_text());
            }
            assert!(Instant::now() < deadline, "{}", server.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for LimitedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test process itself needs more than 1,100 descriptors.
fn raise_own_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        );
    }
}

#[test]
fn idle_connections_beyond_the_descriptor_limit_leave_healthz_and_uploads_working() {
    raise_own_fd_limit();
    let data = DataDir::init(&[]);
    data.repo_add("demo", "stable", "main", "amd64");
    let cap = data.cap("apt/demo/dists/stable/main/binary-amd64", "1h");
    // Hard limit 1024 like a default service; the soft limit below it is raised at start.
    let server = LimitedServer::start(&data, 256, 1024);
    let log = server.log_text();
    assert!(
        log.contains("raised the open-file limit from 256 to 1024"),
        "the server says it raised RLIMIT_NOFILE:\n{log}"
    );

    let mut idle = Vec::new();
    for _ in 0..1100 {
        let address = format!("127.0.0.1:{}", server.port).parse().unwrap();
        match TcpStream::connect_timeout(&address, Duration::from_secs(5)) {
            Ok(stream) => idle.push(stream),
            Err(e) => panic!("connection {} failed: {e}", idle.len()),
        }
    }

    let mut slowest = Duration::ZERO;
    for attempt in 0..3 {
        let started = Instant::now();
        let reply = curl(&["--max-time", "2", &format!("{}/healthz", server.url)]);
        assert_eq!(
            reply.status,
            200,
            "attempt {attempt}: /healthz with 1,100 idle connections open, after {:?}:\n{}",
            started.elapsed(),
            server.log_text()
        );
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("/healthz with 1,100 idle connections open: slowest of 3 took {slowest:?}");
    let url = format!("{}/api/v1/upload/hello_2.10-3_amd64.deb", server.url);
    let body = format!("@{}", fixture("debs/hello_2.10-3_amd64.deb").display());
    let auth = format!("Authorization: Bearer {cap}");
    let reply = curl(&[
        "--max-time",
        "30",
        "-X",
        "PUT",
        "--data-binary",
        &body,
        "-H",
        &auth,
        &url,
    ]);
    assert_eq!(
        reply.status,
        201,
        "upload with 1,100 idle connections open: {}\n{}",
        reply.text(),
        server.log_text()
    );
    drop(idle);
    let log = server.log_text();
    assert!(
        !log.contains("Too many open files"),
        "the server ran out of descriptors:\n{log}"
    );
}

/// Whether the server has closed a connection (EOF or reset), waiting up to `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while started.elapsed() < within {
        match stream.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

#[test]
fn slowloris_and_silent_connections_are_cut_after_the_header_timeout_and_idle_ones_after_the_idle_timeout()
 {
    let data = DataDir::init(&[]);
    set_server_keys(
        &data,
        &[("header_timeout_secs", 2), ("idle_timeout_secs", 6)],
    );
    let server = Server::start(&data);
    let address = server.url.trim_start_matches("http://").to_string();

    // Headers that never end, trickled one line every 300 ms.
    let mut slow = TcpStream::connect(&address).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let mut cut = None;
    while started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(300));
        if slow.write_all(b"X-Slow: 1\r\n").is_err() {
            cut = Some(started.elapsed());
            break;
        }
        if let Some(_after) = closed_within(&mut slow, Duration::from_millis(1)) {
            cut = Some(started.elapsed());
            break;
        }
    }
    let cut = cut.expect("a slowloris client was not cut within 10 s");
    assert!(
        cut >= Duration::from_millis(1500) && cut < Duration::from_secs(5),
        "cut after {cut:?}, the header timeout is 2 s"
    );

    // A connection that never sends a byte gets the same bound.
    let mut silent = TcpStream::connect(&address).unwrap();
    let after = closed_within(&mut silent, Duration::from_secs(10))
        .expect("a silent connection was not cut within 10 s");
    assert!(after < Duration::from_secs(5), "silent cut after {after:?}");

    // After a whole request the connection is kept alive past the header timeout,
    // and closed once it has been idle for the idle timeout.
    let mut kept = TcpStream::connect(&address).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let idle_for = closed_within(&mut kept, Duration::from_secs(12))
        .expect("an idle keep-alive connection was not closed within 12 s");
    assert!(
        idle_for > Duration::from_secs(4) && idle_for < Duration::from_secs(9),
        "idle keep-alive closed after {idle_for:?}; header timeout 2 s, idle timeout 6 s"
    );
    // The server still answers.
    assert_eq!(server.get("/healthz").status, 200);
}

fn spool_parts(data: &DataDir) -> Vec<PathBuf> {
    match std::fs::read_dir(data.path.join("spool")) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "part"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn an_upload_that_stops_mid_body_is_cut_and_its_spool_file_removed() {
    let data = DataDir::init(&[]);
    data.repo_add("demo", "stable", "main", "amd64");
    set_server_keys(&data, &[("body_timeout_secs", 2)]);
    let cap = data.cap("apt/demo/dists/stable/main/binary-amd64", "1h");
    let server = Server::start(&data);
    let package = std::fs::read(fixture("debs/hello_2.10-3_amd64.deb")).unwrap();

    let mut stream = TcpStream::connect(server.url.trim_start_matches("http://")).unwrap();
    let head = format!(
        "PUT /api/v1/upload/hello_2.10-3_amd64.deb HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {cap}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\n\r\n",
        package.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&package[..package.len() / 2]).unwrap();
    // The server is spooling it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while spool_parts(&data).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no spool file appeared:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let after = started.elapsed();
    assert!(
        after < Duration::from_secs(8),
        "the stalled upload was not cut within 8 s (body timeout 2 s)"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "a stalled upload is answered with a 4xx or cut: {answer}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !spool_parts(&data).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the spool file of the cut upload is still there: {:?}",
            spool_parts(&data)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A whole upload still goes through.
    let out = server.upload(&cap, &[fixture("debs/hello_2.10-3_amd64.deb")], false);
    assert!(out.status.success(), "{}", output_text(&out));
}

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
