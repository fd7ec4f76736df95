//! Newer clients than the host's Debian 12: a Debian 13 (trixie) root, built by
//! tests/tools/trixie-root.sh and entered with chroot, runs its own apt 3.0
//! (which verifies InRelease with sqv and refuses SHA-1 signatures and weak
//! keys that apt 2.6 took) and rpm 4.20 against a caprepo server on 127.0.0.1.
//!
//! The root is cached: at `CAPREPO_TEST_TRIXIE_ROOT` when set (CI sets it),
//! else under cargo's target tmp dir; the script builds it there when it is
//! missing, so these tests always run the real clients and never skip. Each
//! test works in its own copy of the root, so installs and imported keys never
//! leak into the cache or into another test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::harness::*;

/// The cached trixie root, built (or found complete) once per test process.
fn cached_trixie_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = std::env::var_os("CAPREPO_TEST_TRIXIE_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("trixie-root"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/trixie-root.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} {} failed (it needs root and debootstrap):\n{}",
            script.display(),
            dir.display(),
            output_text(&out)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// A private copy of the trixie root, removed when dropped.
struct TrixieRoot {
    tmp: tempfile::TempDir,
}

impl TrixieRoot {
    fn scratch() -> TrixieRoot {
        let tmp = tempfile::tempdir().unwrap();
        run_ok(
            Command::new("cp")
                .arg("-a")
                .arg(cached_trixie_root())
                .arg(tmp.path().join("root")),
        );
        TrixieRoot { tmp }
    }

    fn path(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    /// `inside` is an absolute path in the root.
    fn host_path(&self, inside: &str) -> PathBuf {
        self.path().join(inside.trim_start_matches('/'))
    }

    fn write(&self, inside: &str, bytes: &[u8]) {
        let path = self.host_path(inside);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// Runs a command of the root's own (chroot) in directory `cwd`, with an
    /// environment of its own rather than the host's.
    fn run_in(&self, cwd: &str, args: &[&str]) -> Output {
        Command::new("chroot")
            .arg(self.path())
            .args(["/usr/bin/env", "-i", "-C", cwd])
            .args([
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/root",
                "LC_ALL=C.UTF-8",
                "DEBIAN_FRONTEND=noninteractive",
            ])
            .args(args)
            .output()
            .unwrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_in("/", args)
    }

    /// Like `run`, failing the test with the client's output when it fails.
    fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let text = output_text(&out);
        assert!(out.status.success(), "(trixie) {args:?} failed:\n{text}");
        text
    }
}

/// Lines apt printed as errors, warnings, notices or (with --audit) audit ("A:")
/// findings, such as "Policy will reject signature within a year".
fn warnings(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|line| ["E:", "W:", "N:", "A:"].iter().any(|p| line.starts_with(p)))
        .collect()
}

fn source(name: &str) -> PathBuf {
    fixture(&format!("sources/{name}"))
}

const SOURCE_FILES: [&str; 3] = [
    "caprepo-hello_1.0.orig.tar.xz",
    "caprepo-hello_1.0-1.debian.tar.xz",
    "caprepo-hello_1.0-1.dsc",
];

/// Point the root's apt at one caprepo repository only (binary and source),
/// trusting the key in `key` (binary OpenPGP) through Signed-By.
fn use_only_caprepo(root: &TrixieRoot, server: &Server, repo: &str, key: &[u8]) {
    std::fs::remove_file(root.host_path("/etc/apt/sources.list")).ok();
    for entry in std::fs::read_dir(root.host_path("/etc/apt/sources.list.d")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    root.write("/etc/apt/keyrings/caprepo.gpg", key);
    root.write(
        "/etc/apt/sources.list.d/caprepo.sources",
        format!(
            "Types: deb deb-src\nURIs: {}/{repo}/\nSuites: stable\nComponents: main\n\
             Signed-By: /etc/apt/keyrings/caprepo.gpg\n",
            server.url
        )
        .as_bytes(),
    );
}

/// `apt-get update --audit` succeeds with InRelease checked by sqv (apt's
/// sqv method logs the call under Debug::Acquire::sqv) and nothing to warn of.
fn update_verified_by_sqv(root: &TrixieRoot) {
    let update = root.run_ok(&[
        "apt-get",
        "--audit",
        "-o",
        "Debug::Acquire::sqv=1",
        "update",
    ]);
    assert!(
        update.contains("Executing /usr/bin/sqv") && update.contains("sqv succeeded"),
        "apt 3.0 did not verify with sqv:\n{update}"
    );
    assert!(
        warnings(&update).is_empty(),
        "apt 3.0 warned on update:\n{update}"
    );
}

#[test]
fn trixie_apt_3_verifies_with_sqv_then_installs_and_unpacks_sources() {
    let data = DataDir::init(&[]);
    data.repo_add("trixie", "stable", "main", "amd64");
    let server = Server::start(&data);
    let cap = data.cap("apt/trixie/dists/stable/main/binary-amd64", "1h");
    let mut files: Vec<PathBuf> = [
        "hello_2.10-3_amd64.deb",
        "tree_2.1.0-1_amd64.deb",
        "sensible-utils_0.0.17+nmu1_all.deb",
        "lsb-base_11.6_all.deb",
    ]
    .iter()
    .map(|name| fixture(&format!("debs/{name}")))
    .collect();
    files.extend(SOURCE_FILES.map(source));
    let out = server.upload(&cap, &files, true);
    assert!(out.status.success(), "{}", output_text(&out));

    let root = TrixieRoot::scratch();
    let version = root.run_ok(&["apt-get", "--version"]);
    assert!(version.starts_with("apt 3."), "not apt 3.x: {version}");

    // A key that did not sign the repository: apt 3.0 refuses it, so the
    // successes below come from a real signature check.
    let stranger = DataDir::init(&[]);
    use_only_caprepo(&root, &server, "trixie", &stranger.key(false));
    let refused = root.run(&["apt-get", "update"]);
    let refused_text = output_text(&refused);
    assert!(
        refused_text.contains("is not signed") || refused_text.contains("NO_PUBKEY"),
        "apt 3.0 took a repository signed by another key:\n{refused_text}"
    );

    use_only_caprepo(&root, &server, "trixie", &data.key(false));
    update_verified_by_sqv(&root);

    // No /dev/pts in a plain chroot: dpkg's output goes through a pipe, not a pty.
    let install = root.run_ok(&[
        "apt-get",
        "-o",
        "Dpkg::Use-Pty=0",
        "install",
        "-y",
        "--no-install-recommends",
        "hello",
    ]);
    assert!(install.contains("Setting up hello (2.10-3)"), "{install}");
    assert!(warnings(&install).is_empty(), "{install}");
    let greeting = root.run_ok(&["hello"]);
    assert_eq!(greeting.trim(), "Hello, world!");

    // apt downloads sources as the _apt user: give it a directory it can write.
    std::fs::create_dir(root.host_path("/srv/sources")).unwrap();
    run_ok(
        Command::new("chmod")
            .arg("0777")
            .arg(root.host_path("/srv/sources")),
    );
    let fetched = root.run_in("/srv/sources", &["apt-get", "source", "caprepo-hello"]);
    let fetched_text = output_text(&fetched);
    assert!(
        fetched.status.success(),
        "apt-get source failed:\n{fetched_text}"
    );
    assert!(
        warnings(&fetched_text).is_empty(),
        "apt 3.0 warned on source:\n{fetched_text}"
    );
    for name in SOURCE_FILES {
        assert_eq!(
            std::fs::read(root.host_path(&format!("/srv/sources/{name}"))).unwrap(),
            std::fs::read(source(name)).unwrap(),
            "{name}"
        );
    }
    let unpacked = root.host_path("/srv/sources/caprepo-hello-1.0/debian/control");
    assert!(
        std::fs::read_to_string(&unpacked)
            .unwrap_or_default()
            .contains("Source: caprepo-hello"),
        "dpkg-source did not unpack the package:\n{fetched_text}"
    );
}

#[test]
fn trixie_rpm_4_20_verifies_agent_signed_rpms_for_each_key_algorithm() {
    for key_algo in ["ed25519", "rsa4096"] {
        let data = DataDir::init(&["--key-algo", key_algo]);
        data.repo_add_rpm("el", "12", "x86_64", &[]);
        let server = Server::start(&data);
        let cap = data.cap("rpm/el/12/x86_64", "1h");
        let out = server.upload(
            &cap,
            &[fixture("rpms/hello-caprepo-1.0-1.x86_64.rpm")],
            true,
        );
        assert!(out.status.success(), "{}", output_text(&out));
        let served = server.get("/el/12/x86_64/Packages/h/hello-caprepo-1.0-1.x86_64.rpm");
        assert_eq!(served.status, 200);
        let key = server.get("/key.asc");
        assert_eq!(key.status, 200);

        let root = TrixieRoot::scratch();
        let version = root.run_ok(&["rpm", "--version"]);
        assert!(
            version.starts_with("RPM version 4.20."),
            "not rpm 4.20: {version}"
        );
        root.write("/tmp/hello-caprepo.rpm", &served.body);
        root.write("/tmp/caprepo-key.asc", &key.body);

        // Before the key is trusted the signature cannot check out: rpmkeys
        // really looks at it.
        let untrusted = root.run(&["rpmkeys", "--checksig", "/tmp/hello-caprepo.rpm"]);
        assert!(
            !untrusted.status.success() && output_text(&untrusted).contains("SIGNATURES NOT OK"),
            "{key_algo}: {}",
            output_text(&untrusted)
        );

        root.run_ok(&["rpmkeys", "--import", "/tmp/caprepo-key.asc"]);
        let checked = root.run_ok(&["rpmkeys", "--checksig", "/tmp/hello-caprepo.rpm"]);
        assert!(
            checked.contains("digests signatures OK"),
            "{key_algo}: rpm 4.20 did not verify the agent's signature:\n{checked}"
        );
    }
}

/// RSA-4096 (the key for old rpm and FIPS clients) is above apt 3.0's "next"
/// and "future" policies (>= rsa3072), so it brings no "will reject" warning.
#[test]
fn trixie_apt_3_takes_an_rsa4096_repository_key_without_warning() {
    let data = DataDir::init(&["--key-algo", "rsa4096"]);
    data.repo_add("rsa", "stable", "main", "amd64");
    let server = Server::start(&data);
    let cap = data.cap("apt/rsa/dists/stable/main/binary-amd64", "1h");
    let out = server.upload(&cap, &[fixture("debs/hello_2.10-3_amd64.deb")], true);
    assert!(out.status.success(), "{}", output_text(&out));
    let root = TrixieRoot::scratch();
    use_only_caprepo(&root, &server, "rsa", &data.key(false));
    update_verified_by_sqv(&root);
    let download = root.run_ok(&["apt-get", "install", "-y", "--download-only", "hello"]);
    assert!(
        root.host_path("/var/cache/apt/archives/hello_2.10-3_amd64.deb")
            .exists(),
        "{download}"
    );
}
