//! Every refusal the upload path promises: the HTTP status, a JSON reason, a
//! non-zero CLI exit, and a store that did not change by a single file.

use crate::harness::*;

struct Case {
    file: &'static str,
    status: u16,
    reason: &'static str,
}

const CASES: &[Case] = &[
    Case {
        file: "malformed/not-a-deb.deb",
        status: 400,
        reason: "not a Debian package",
    },
    Case {
        file: "malformed/truncated.deb",
        status: 400,
        reason: "truncated",
    },
    Case {
        file: "malformed/truncated-in-control.deb",
        status: 400,
        reason: "truncated",
    },
    Case {
        file: "malformed/no-control.deb",
        status: 400,
        reason: "no ./control file",
    },
    Case {
        file: "malformed/bad-control-syntax.deb",
        status: 400,
        reason: "control file line",
    },
    Case {
        file: "malformed/bad-name.deb",
        status: 400,
        reason: "invalid Package",
    },
    Case {
        file: "malformed/bad-version.deb",
        status: 400,
        reason: "invalid Version",
    },
    Case {
        file: "malformed/no-debian-binary.deb",
        status: 400,
        reason: "debian-binary",
    },
    Case {
        file: "malformed/wrong-member-order.deb",
        status: 400,
        reason: "control.tar",
    },
    Case {
        file: "malformed/bomb-control.deb",
        status: 413,
        reason: "decompression bomb",
    },
    Case {
        file: "malformed/bomb-data.deb",
        status: 413,
        reason: "decompression bomb",
    },
    // Issue 14: what an attacker with a valid cap tried (tests/e2e/hostile_debs.rs has more).
    // data.tar member names (Contents forgery, path traversal)
    Case {
        file: "malformed/name-newline.deb",
        status: 400,
        reason: "U+000A",
    },
    Case {
        file: "malformed/name-carriage-return.deb",
        status: 400,
        reason: "U+000D",
    },
    Case {
        file: "malformed/name-dotdot.deb",
        status: 400,
        reason: "\"..\" component",
    },
    Case {
        file: "malformed/name-leading-dotdot.deb",
        status: 400,
        reason: "\"..\" component",
    },
    Case {
        file: "malformed/name-trailing-space.deb",
        status: 400,
        reason: "whitespace",
    },
    Case {
        file: "malformed/data-pax-header.deb",
        status: 400,
        reason: "pax",
    },
    Case {
        file: "malformed/long-name-bomb.deb",
        status: 400,
        reason: "long name",
    },
    // ar members in an order or number dpkg-deb refuses
    Case {
        file: "malformed/control-twice.deb",
        status: 400,
        reason: "two control members",
    },
    Case {
        file: "malformed/control-xz-and-gz.deb",
        status: 400,
        reason: "two control members",
    },
    Case {
        file: "malformed/member-before-control.deb",
        status: 400,
        reason: "before control.tar",
    },
    Case {
        file: "malformed/data-twice.deb",
        status: 400,
        reason: "after data.tar",
    },
    Case {
        file: "malformed/empty-data-member.deb",
        status: 400,
        reason: "empty",
    },
    // control files dpkg refuses, or that would corrupt the Packages index
    Case {
        file: "malformed/control-nul.deb",
        status: 400,
        reason: "U+0000",
    },
    Case {
        file: "malformed/control-crlf.deb",
        status: 400,
        reason: "carriage return",
    },
    Case {
        file: "malformed/control-latin1.deb",
        status: 400,
        reason: "not UTF-8",
    },
    Case {
        file: "malformed/control-blank-continuation.deb",
        status: 400,
        reason: "only spaces",
    },
    Case {
        file: "malformed/control-no-final-newline.deb",
        status: 400,
        reason: "final newline",
    },
    Case {
        file: "malformed/control-bad-field-name.deb",
        status: 400,
        reason: "field name",
    },
    Case {
        file: "malformed/control-missing-version.deb",
        status: 400,
        reason: "no Version field",
    },
    Case {
        file: "malformed/bad-architecture.deb",
        status: 400,
        reason: "invalid Architecture",
    },
    Case {
        file: "malformed/epoch-overflow.deb",
        status: 400,
        reason: "epoch",
    },
    Case {
        file: "malformed/epoch-too-big.deb",
        status: 400,
        reason: "epoch",
    },
    Case {
        file: "malformed/long-name-and-version.deb",
        status: 400,
        reason: "255",
    },
    Case {
        file: "malformed/many-fields.deb",
        status: 400,
        reason: "fields",
    },
    Case {
        file: "malformed/arch-arm64.deb",
        status: 403,
        reason: "architecture arm64",
    },
];

#[test]
fn each_bad_package_is_refused_with_a_reason_and_nothing_is_stored() {
    let data = DataDir::init(&[]);
    data.repo_add("rp", "stable", "main", "amd64,arm64");
    let server = Server::start(&data);
    let cap = data.cap("apt/rp/dists/stable/main/binary-amd64", "1h");
    // One good upload first, so "unchanged" covers an existing package too.
    assert!(
        server
            .upload(&cap, &[fixture("debs/hello_2.10-3_amd64.deb")], true)
            .status
            .success()
    );
    server.wait_for(
        "/rp/dists/stable/main/binary-amd64/Packages",
        "hello listed",
        |r| r.text().contains("hello"),
    );
    std::thread::sleep(std::time::Duration::from_millis(1500)); // let the manager go idle
    let before = data.store_snapshot();
    for case in CASES {
        let reply = put(&server, "upload.deb", &fixture(case.file), Some(&cap), "");
        assert_eq!(reply.status, case.status, "{}: {}", case.file, reply.text());
        let json = reply.json();
        let reason = json["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(case.reason),
            "{}: reason {reason:?} lacks {:?}",
            case.file,
            case.reason
        );
        assert!(json["error"].is_string(), "{}", case.file);
        // The CLI exits non-zero and says why.
        let out = server.upload(&cap, &[fixture(case.file)], false);
        assert!(!out.status.success(), "{}", case.file);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(case.reason),
            "{}: {}",
            case.file,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        data.store_snapshot(),
        before,
        "a refused upload changed the store"
    );
    assert!(
        server.log_text().lines().all(|l| !l.contains("panicked")),
        "no panics"
    );
}

#[test]
fn same_identity_with_other_bytes_conflicts_and_same_bytes_is_a_no_op() {
    let data = DataDir::init(&[]);
    data.repo_add("rp", "stable", "main", "amd64");
    let server = Server::start(&data);
    let cap = data.cap("apt/rp/dists/stable/main/binary-amd64", "1h");
    let first = put(
        &server,
        "hello_2.10-3_amd64.deb",
        &fixture("debs/hello_2.10-3_amd64.deb"),
        Some(&cap),
        "?wait=true",
    );
    assert_eq!(first.status, 201, "{}", first.text());
    let json = first.json();
    assert_eq!(json["status"], "stored");
    assert_eq!(json["published"], true);
    assert_eq!(json["package"]["name"], "hello");
    assert_eq!(json["cell"], "apt/rp/dists/stable/main/binary-amd64");
    assert_eq!(
        json["digest"],
        sha256_hex(&std::fs::read(fixture("debs/hello_2.10-3_amd64.deb")).unwrap())
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let before = data.store_snapshot();

    let again = put(
        &server,
        "hello_2.10-3_amd64.deb",
        &fixture("debs/hello_2.10-3_amd64.deb"),
        Some(&cap),
        "",
    );
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["status"], "already-present");

    let conflict = put(
        &server,
        "hello_2.10-3_amd64.deb",
        &fixture("variants/hello-conflict.deb"),
        Some(&cap),
        "",
    );
    assert_eq!(conflict.status, 409, "{}", conflict.text());
    assert!(
        conflict.json()["reason"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );
    assert_eq!(
        data.store_snapshot(),
        before,
        "neither the no-op nor the conflict wrote anything"
    );
    let out = server.upload(&cap, &[fixture("variants/hello-conflict.deb")], true);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("409"));
}

#[test]
fn bad_requests_get_4xx_not_5xx() {
    let data = DataDir::init(&[]);
    data.repo_add("rp", "stable", "main", "amd64");
    let server = Server::start(&data);
    let cap = data.cap("apt/rp/dists/stable/main/binary-amd64", "1h");
    let deb = fixture("debs/hello_2.10-3_amd64.deb");
    let empty = data.tmp.path().join("empty.deb");
    std::fs::write(&empty, b"").unwrap();
    for (name, file, query, status) in [
        ("hello.rpm", &deb, "", 400),
        ("..%2Fhello.deb", &deb, "", 400),
        ("hello.deb", &empty, "", 400),
        ("hello.deb", &deb, "?target=apt/rp/dists/testing/main", 403),
        ("hello.deb", &deb, "?target=apt/../x", 400),
    ] {
        let reply = put(&server, name, file, Some(&cap), query);
        assert_eq!(reply.status, status, "{name}{query}: {}", reply.text());
        assert!(reply.json()["reason"].is_string());
    }
    for path in [
        "/rp/dists/stable/../../../etc/passwd",
        "/rp/pool/%2e%2e/x",
        "/RP/dists/stable/InRelease",
        "/rp/dists/nosuch/InRelease",
    ] {
        let reply = server.get(path);
        assert!(
            reply.status == 404 || reply.status == 400,
            "{path}: {}",
            reply.status
        );
    }
}
