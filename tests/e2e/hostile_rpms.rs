//! Hostile and odd rpms against a real server: corrupt header indexes (which
//! rpm -K refuses) and C0 control characters (which XML 1.0 cannot carry) are
//! refused at upload with a JSON reason and nothing stored, so one package can
//! never make a tree unreadable to dnf; header text with carriage returns or in
//! Latin-1 is published with the values createrepo_c gives it.

use std::path::PathBuf;

use crate::harness::*;

fn rpm(name: &str) -> PathBuf {
    fixture(&format!("rpms/{name}"))
}

#[test]
fn rpms_with_corrupt_headers_or_control_characters_are_refused_and_nothing_is_stored() {
    let data = DataDir::init(&[]);
    data.repo_add_rpm("fed", "12", "x86_64", &[]);
    let server = Server::start(&data);
    let cap = data.cap("rpm/fed/12/x86_64", "1h");
    let good = put(
        &server,
        "ok.rpm",
        &rpm("standalone-caprepo-1.0-1.noarch.rpm"),
        Some(&cap),
        "?wait=true",
    );
    assert_eq!(good.status, 201, "{}", good.text());
    let before = data.store_snapshot();
    for (file, reason) in [
        // rpm -K: "tag[50]: BAD, tag 1117 type 8 offset 1608 count 268435455 len 20"
        (
            "malformed/basenames-count.rpm",
            "the rpm header is malformed: main header: tag[50]: BAD, tag 1117",
        ),
        // rpm -K: "tag[5]: BAD, tag 1004 type 9 offset 6288 count 1 len 4"; the rpm crate panics.
        (
            "malformed/offset-outside.rpm",
            "the rpm header is malformed: main header: tag[5]: BAD, tag 1004",
        ),
        (
            "malformed/control-caprepo-1.0-1.noarch.rpm",
            "summary contains the control character U+0001",
        ),
    ] {
        let reply = put(&server, "x.rpm", &rpm(file), Some(&cap), "?wait=true");
        assert_eq!(reply.status, 400, "{file}: {}", reply.text());
        let why = reply.json()["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(why.contains(reason), "{file}: {why}");
        assert!(
            !reply.text().contains("panicked"),
            "{file}: {}",
            reply.text()
        );
        let out = server.upload(&cap, &[rpm(file)], false);
        assert!(!out.status.success(), "{file}: {}", output_text(&out));
    }
    assert_eq!(
        data.store_snapshot(),
        before,
        "a refused upload changed the store"
    );
    assert!(
        !server.log_text().contains("panicked"),
        "{}",
        server.log_text()
    );
}

/// A noarch package is listed in every arch tree of its release, so before the fix one
/// control character uploaded through an aarch64 cap broke x86_64 users' dnf too.
#[test]
fn a_noarch_rpm_with_a_control_character_cannot_break_another_arch_tree() {
    let data = DataDir::init(&[]);
    data.repo_add_rpm("fed", "12", "x86_64,aarch64", &[]);
    let server = Server::start(&data);
    let x86 = data.cap("rpm/fed/12/x86_64", "1h");
    let arm = data.cap("rpm/fed/12/aarch64", "1h");
    let out = server.upload(&x86, &[rpm("standalone-caprepo-1.0-1.noarch.rpm")], true);
    assert!(out.status.success(), "{}", output_text(&out));
    let reply = put(
        &server,
        "control.rpm",
        &rpm("malformed/control-caprepo-1.0-1.noarch.rpm"),
        Some(&arm),
        "?wait=true",
    );
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(
        reply.json()["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("summary")
    );
    // A later good upload republishes the trees: both must still be readable.
    let out = server.upload(&arm, &[rpm("aarch64-caprepo-1.0-1.aarch64.rpm")], true);
    assert!(out.status.success(), "{}", output_text(&out));
    for tree in ["/fed/12/x86_64", "/fed/12/aarch64"] {
        let primary = server.get(&format!("{tree}/repodata/repomd.xml")).text();
        assert!(primary.contains("primary"), "{tree}: {primary}");
    }
    let dnf = Dnf::new(&server, "fed");
    let out = dnf.run(&["install", "standalone-caprepo"]);
    assert!(out.status.success(), "dnf install: {}", output_text(&out));
    let listed = dnf.run(&["repoquery", "--qf", "%{name}", "*-caprepo"]);
    assert!(
        !output_text(&listed).contains("control-caprepo"),
        "{}",
        output_text(&listed)
    );
}

/// createrepo_c writes a CR as `&#13;` (a raw one reaches readers as LF) and converts
/// Latin-1 header strings to UTF-8: the values we publish must be the same.
#[test]
fn carriage_returns_and_latin1_text_publish_the_values_createrepo_c_gives_them() {
    let data = DataDir::init(&[]);
    data.repo_add_rpm("fed", "12", "x86_64", &[]);
    let server = Server::start(&data);
    let cap = data.cap("rpm/fed/12/x86_64", "1h");
    let out = server.upload(
        &cap,
        &[
            rpm("cr-caprepo-1.0-1.noarch.rpm"),
            rpm("latin1-caprepo-1.0-1.noarch.rpm"),
        ],
        true,
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let work = tempfile::tempdir().unwrap();
    let compared = crate::rpm::compare_with_createrepo_c(&server, "fed/12/x86_64", work.path());
    assert!(
        compared.contains("compared 6 records, 0 differences"),
        "{compared}"
    );
    // And dnf reads them: the summary comes back with its CR and its umlauts.
    let out =
        Dnf::new(&server, "fed").run(&["repoquery", "--qf", "%{name}|%{summary}", "*-caprepo"]);
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("latin1-caprepo|Latin-1 text: Skyttä writes ÜTF-8 badly"),
        "{text}"
    );
    assert!(text.contains("cr-caprepo|Carriage\rreturn"), "{text:?}");
}
