//! Change discovery between daemons on one S3 bucket: what one daemon or the CLI writes
//! reaches another through the store's change log, and an idle daemon's requests to the
//! store do not grow with the number of cells (counted at a proxy in front of the S3
//! server, so every request the daemon makes is seen).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::harness::*;

/// A TCP proxy in front of the S3 server that counts the HTTP requests passing through.
struct CountingProxy {
    url: String,
    requests: Arc<AtomicU64>,
}

impl CountingProxy {
    fn start(upstream: &str) -> CountingProxy {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("an http:// endpoint")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&requests);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (Ok(client_out), Ok(mut server_out)) = (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                std::thread::spawn(move || {
                    let mut client_out = client_out;
                    let mut server = server;
                    let _ = std::io::copy(&mut server, &mut client_out);
                    let _ = client_out.shutdown(std::net::Shutdown::Both);
                });
                let counted = Arc::clone(&counted);
                std::thread::spawn(move || {
                    let _ = forward_requests(client, &mut server_out, &counted);
                    let _ = server_out.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        CountingProxy { url, requests }
    }

    /// Requests since the last call.
    fn take(&self) -> u64 {
        self.requests.swap(0, Ordering::SeqCst)
    }
}

/// Copies HTTP/1.1 requests from a client to the server one by one, counting them: the
/// head up to its blank line, then a Content-Length or chunked body.
fn forward_requests(
    client: TcpStream,
    server: &mut TcpStream,
    counted: &AtomicU64,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        counted.fetch_add(1, Ordering::SeqCst);
        server.write_all(head.as_bytes())?;
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (key, value) = l.split_once(':')?;
                key.eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_string())
            })
        };
        if let Some(length) = header("content-length").and_then(|v| v.parse::<u64>().ok()) {
            std::io::copy(&mut (&mut reader).take(length), server)?;
        } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let mut size_line = String::new();
                reader.read_line(&mut size_line)?;
                server.write_all(size_line.as_bytes())?;
                let size =
                    u64::from_str_radix(size_line.trim().split(';').next().unwrap_or(""), 16)
                        .unwrap_or(0);
                // The chunk and its CRLF; after the last (empty) chunk, the closing CRLF.
                std::io::copy(&mut (&mut reader).take(size + 2), server)?;
                if size == 0 {
                    break;
                }
            }
        }
    }
}

fn metric(server: &Server, name: &str) -> u64 {
    let body = server.get("/metrics").text();
    body.lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name} "))?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{body}")) as u64
}

/// Waits until `server` answers `path` with a body containing `wanted`; the time it took.
fn time_until_served(server: &Server, path: &str, wanted: &str) -> Duration {
    let started = Instant::now();
    loop {
        let reply = server.get(path);
        if reply.status == 200 && reply.text().contains(wanted) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{path} never listed {wanted:?}:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn changes_reach_another_daemon_through_the_change_log_and_idle_costs_do_not_grow_with_cells() {
    let s3 = S3::start();
    let data = s3.data_dir("changes");
    // 8 suites x 4 components x 8 architectures: 256 cells, 384 cell refs with all and source.
    // Reading each of them once a second (what daemons did) is hundreds of requests a second.
    let suites: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
    data.repo_add(
        "farm",
        &suites.join(","),
        "main,contrib,non-free,extra",
        "amd64,arm64,armhf,i386,ppc64el,s390x,riscv64,mips64el",
    );
    // Daemon B: the same keys and bucket, its store requests through the counting proxy.
    let proxy = CountingProxy::start(&s3.endpoint);
    let second = data.for_another_daemon();
    let config = second.path.join("caprepo.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains(&s3.endpoint));
    std::fs::write(&config, text.replace(&s3.endpoint, &proxy.url)).unwrap();
    let a = Server::start(&data);
    let b = Server::start(&second);
    // Both publish the new suites at start; what is timed below starts after that.
    for suite in &suites {
        for server in [&a, &b] {
            time_until_served(server, &format!("/farm/dists/{suite}/InRelease"), "Suite:");
        }
    }

    // An upload on A is served by B.
    let cap = data.cap("apt/farm/dists/s3/contrib/binary-amd64", "1h");
    let out = a.upload(&cap, &[fixture("debs/hello_2.10-3_amd64.deb")], true);
    assert!(out.status.success(), "{}", output_text(&out));
    let took = time_until_served(
        &b,
        "/farm/dists/s3/contrib/binary-amd64/Packages",
        "Package: hello\n",
    );
    assert!(
        took < Duration::from_secs(10),
        "B served it after {took:?}:\n{}",
        b.log_text()
    );

    // A repository added from the CLI is served by B.
    data.repo_add("added", "stable", "main", "amd64");
    let took = time_until_served(&b, "/added/dists/stable/InRelease", "Suite: stable");
    assert!(
        took < Duration::from_secs(10),
        "B served it after {took:?}:\n{}",
        b.log_text()
    );

    // Idle: B's requests to the store over a few seconds, once its publishing is done.
    let mut quiet = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    proxy.take();
    while quiet < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        quiet = if proxy.take() <= 2 { quiet + 1 } else { 0 };
    }
    let window = Duration::from_secs(8);
    proxy.take();
    // (Reading /metrics asks B, not the store.)
    let polls = metric(&b, "caprepo_change_log_polls_total");
    std::thread::sleep(window);
    let requests = proxy.take();
    let polls = metric(&b, "caprepo_change_log_polls_total") - polls;
    assert!(
        requests <= 2 * window.as_secs(),
        "an idle daemon made {requests} requests in {window:?} with 384 cell refs"
    );
    // It made them following the log, about one a poll.
    assert!(
        polls >= 4,
        "B kept following the log while idle ({polls} polls)"
    );
    // B learned of both changes from the log: it scanned every cell once, at start.
    assert!(metric(&b, "caprepo_change_log_entries_followed_total") >= 2);
    assert_eq!(metric(&b, "caprepo_change_log_full_scans_total"), 1);
    a.stop();
    b.stop();
}
