//! HTTP behaviour caches and apt rely on: ETag is the sha256, If-None-Match gives
//! 304, Range gives 206, HEAD has headers only, immutable paths say so; plus
//! /healthz, /metrics and the setup page.

use crate::harness::*;

#[test]
fn etag_range_head_and_cache_headers() {
    let data = DataDir::init(&[]);
    data.repo_add("h", "stable", "main", "amd64");
    let server = Server::start(&data);
    let cap = data.cap("apt/h/dists/stable/main/binary-amd64", "1h");
    assert!(
        server
            .upload(&cap, &[fixture("debs/hello_2.10-3_amd64.deb")], true)
            .status
            .success()
    );
    let original = std::fs::read(fixture("debs/hello_2.10-3_amd64.deb")).unwrap();
    let url = format!("{}/h/pool/main/h/hello/hello_2.10-3_amd64.deb", server.url);

    let whole = curl(&[&url]);
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, original);
    let etag = whole.header("etag").unwrap();
    assert_eq!(etag, format!("\"{}\"", sha256_hex(&original)));
    assert!(whole.header("cache-control").unwrap().contains("immutable"));
    assert_eq!(
        whole.header("content-type").unwrap(),
        "application/vnd.debian.binary-package"
    );

    // A second request admits a small package to memory; later ones (and the HEAD below)
    // are answered from there, with the same bytes and headers.
    for _ in 0..2 {
        let again = curl(&[&url]);
        assert_eq!(again.body, original);
        assert_eq!(again.header("etag").unwrap(), etag);
        assert_eq!(
            again.header("content-type").unwrap(),
            "application/vnd.debian.binary-package"
        );
        assert!(again.header("cache-control").unwrap().contains("immutable"));
    }

    let not_modified = curl(&["-H", &format!("If-None-Match: {etag}"), &url]);
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());

    let part = curl(&["-H", "Range: bytes=100-199", &url]);
    assert_eq!(part.status, 206);
    assert_eq!(part.body, &original[100..200]);
    assert_eq!(
        part.header("content-range").unwrap(),
        format!("bytes 100-199/{}", original.len())
    );
    let tail = curl(&["-H", "Range: bytes=-10", &url]);
    assert_eq!(tail.body, &original[original.len() - 10..]);
    assert_eq!(curl(&["-H", "Range: bytes=999999-", &url]).status, 416);

    let head = curl(&["-I", &url]);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length").unwrap(),
        original.len().to_string()
    );
    // curl -I writes the headers where the body would go: no package bytes may follow them.
    assert!(
        !head.text().contains("!<arch>"),
        "HEAD must not send the body"
    );

    let in_release = server.get("/h/dists/stable/InRelease");
    assert!(
        in_release
            .header("cache-control")
            .unwrap()
            .contains("max-age=30")
    );
    assert_eq!(server.get("/healthz").text(), "ok\n");
    let metrics = server.get("/metrics").text();
    assert!(
        metrics.contains("caprepo_uploads_stored_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("# TYPE caprepo_publishes_total counter"));
    let page = server.get("/h/").text();
    assert!(
        page.contains("Signed-By: /etc/apt/keyrings/h.gpg") && page.contains("Suites: stable"),
        "{page}"
    );
}

#[test]
fn restart_keeps_packages_and_serves_at_once() {
    let data = DataDir::init(&[]);
    data.repo_add("p", "stable", "main", "amd64");
    let server = Server::start(&data);
    let cap = data.cap("apt/p/dists/stable/main/binary-amd64", "1h");
    assert!(
        server
            .upload(&cap, &[fixture("debs/tree_2.1.0-1_amd64.deb")], true)
            .status
            .success()
    );
    let before = server.get("/p/dists/stable/InRelease").body;
    server.stop();
    let again = Server::start(&data);
    let after = again.get("/p/dists/stable/InRelease");
    assert_eq!(after.status, 200);
    assert_eq!(
        after.body, before,
        "the same publication is served after a restart, not rebuilt"
    );
}
