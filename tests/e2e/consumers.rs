//! Real consumers of a caprepo repository: aptly, reprepro and debmirror mirror a
//! published suite with binaries and sources from a server on 127.0.0.1, verifying its
//! signature with the repository key, and end with the same bytes that were uploaded.
//! The suite carries SHA256 only (no MD5Sum/SHA1 in Release or Packages), which shows
//! none of these consumers needs the legacy hashes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness::*;

const BINARIES: [&str; 3] = [
    "debs/hello_2.10-3_amd64.deb",
    "debs/tree_2.1.0-1_amd64.deb",
    "debs/sensible-utils_0.0.17+nmu1_all.deb",
];

/// In upload order: a .dsc is accepted only after the files it names.
const SOURCE_FILES: [&str; 3] = [
    "sources/caprepo-hello_1.0.orig.tar.xz",
    "sources/caprepo-hello_1.0-1.debian.tar.xz",
    "sources/caprepo-hello_1.0-1.dsc",
];

/// What every mirror must list afterwards, as (package, version, architecture).
const EXPECTED: [(&str, &str, &str); 4] = [
    ("hello", "2.10-3", "amd64"),
    ("tree", "2.1.0-1", "amd64"),
    ("sensible-utils", "0.0.17+nmu1", "all"),
    ("caprepo-hello", "1.0-1", "source"),
];

/// A caprepo server publishing `stable/main` of one repository with three binaries
/// (one Architecture: all) and one source package, and the repository key as a binary
/// OpenPGP keyring file, the form gpgv, aptly and debmirror take with --keyring.
struct Upstream {
    /// Kept alive for the server: dropping it deletes the data dir.
    _data: DataDir,
    server: Server,
    repo: &'static str,
    keyring: PathBuf,
}

impl Upstream {
    fn publish(repo: &'static str, init: &[&str]) -> Upstream {
        let data = DataDir::init(init);
        data.repo_add(repo, "stable", "main", "amd64");
        let server = Server::start(&data);
        let cap = data.cap(&format!("apt/{repo}/dists/stable/main/binary-amd64"), "1h");
        let files: Vec<PathBuf> = BINARIES
            .iter()
            .chain(&SOURCE_FILES)
            .map(|f| fixture(f))
            .collect();
        let out = server.upload(&cap, &files, true);
        assert!(out.status.success(), "upload: {}", output_text(&out));

        // The claim "needs no legacy hashes" rests on the suite really having none.
        let release = server.get(&format!("/{repo}/dists/stable/Release")).text();
        assert!(
            release.contains("\nSHA256:\n")
                && !release.contains("\nMD5Sum:")
                && !release.contains("\nSHA1:"),
            "this suite is meant to carry SHA256 only:\n{release}"
        );
        let packages = server
            .get(&format!("/{repo}/dists/stable/main/binary-amd64/Packages"))
            .text();
        assert!(
            packages.contains("\nSHA256: ")
                && !packages.contains("\nMD5sum:")
                && !packages.contains("\nSHA1:"),
            "{packages}"
        );

        let keyring = data.tmp.path().join("caprepo-key.gpg");
        std::fs::write(&keyring, data.key(false)).unwrap();
        Upstream {
            _data: data,
            server,
            repo,
            keyring,
        }
    }

    /// The archive root a consumer is pointed at: the one holding dists/ and pool/.
    fn archive_url(&self) -> String {
        format!("{}/{}", self.server.url, self.repo)
    }
}

/// A fresh GNUPGHOME, so no tool reads or writes the user's keyrings.
fn gnupg_home(root: &Path) -> PathBuf {
    let home = root.join("gnupg");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    home
}

/// A command for `program` that sees only the keyrings in `gnupg`.
fn with_gnupg(program: &str, gnupg: &Path) -> Command {
    let mut command = Command::new(program);
    command.env("GNUPGHOME", gnupg);
    command
}

/// The long key id (the fingerprint's last 16 hex digits) of the key in a keyring file,
/// after importing it into `gnupg`. reprepro 5.3 takes no more than 16 digits in
/// VerifyRelease: a full fingerprint is "not a valid key id".
fn import_long_key_id(keyring: &Path, gnupg: &Path) -> String {
    run_ok(
        with_gnupg("gpg", gnupg)
            .args(["--batch", "--quiet", "--import"])
            .arg(keyring),
    );
    let listing = run_ok(
        with_gnupg("gpg", gnupg)
            .args(["--batch", "--with-colons", "--show-keys"])
            .arg(keyring),
    );
    // The first fpr record is the primary key's (subkeys, if any, follow it).
    let fingerprint = listing
        .lines()
        .find(|line| line.starts_with("fpr:"))
        .and_then(|line| line.split(':').nth(9))
        .filter(|fpr| fpr.len() >= 16)
        .unwrap_or_else(|| panic!("no fingerprint in:\n{listing}"));
    fingerprint[fingerprint.len() - 16..].to_string()
}

/// A keyring holding an unrelated repository's key: a consumer given it must refuse the
/// suite, which proves the consumer really checks the signature it fetched.
fn foreign_keyring(dir: &Path) -> PathBuf {
    let other = DataDir::init(&[]);
    let path = dir.join("foreign-key.gpg");
    std::fs::write(&path, other.key(false)).unwrap();
    path
}

/// Every uploaded file lies somewhere under `root` (whatever layout the mirror uses: file
/// names may carry a hash prefix) with exactly the uploaded bytes.
fn assert_mirrored_bytes(root: &Path, tool: &str) {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    for relative in BINARIES.iter().chain(&SOURCE_FILES) {
        let name = Path::new(relative).file_name().unwrap().to_str().unwrap();
        let matches: Vec<&PathBuf> = found
            .iter()
            .filter(|p| {
                let file = p.file_name().unwrap().to_str().unwrap();
                file == name || file.ends_with(&format!("_{name}"))
            })
            .collect();
        assert_eq!(
            matches.len(),
            1,
            "{tool}: {name} once under {}: {found:#?}",
            root.display()
        );
        assert_eq!(
            std::fs::read(matches[0]).unwrap(),
            std::fs::read(fixture(relative)).unwrap(),
            "{tool}: {name} differs from what was uploaded"
        );
    }
}

fn checked(out: Output, what: &str) -> String {
    let text = output_text(&out);
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// aptly with an isolated config: `mirror create -with-sources` and `mirror update`
/// against the server, verifying InRelease with the repository key through gpgv.
struct Aptly {
    config: PathBuf,
    gnupg: PathBuf,
}

impl Aptly {
    fn new(dir: &Path, provider: &str) -> Aptly {
        let config = dir.join("aptly.conf");
        let conf = serde_json::json!({
            "rootDir": dir.join("aptly-root"),
            "gpgProvider": provider,
            "downloadConcurrency": 2,
        });
        std::fs::write(&config, conf.to_string()).unwrap();
        Aptly {
            config,
            gnupg: gnupg_home(dir),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        with_gnupg("aptly", &self.gnupg)
            .arg(format!("-config={}", self.config.display()))
            .args(args)
            .output()
            .expect("aptly is installed")
    }

    fn mirror_create(&self, name: &str, keyring: &Path, url: &str, sources: bool) -> Output {
        let keyring = format!("-keyring={}", keyring.display());
        let archive = format!("{url}/");
        let mut args = vec!["mirror", "create"];
        if sources {
            args.push("-with-sources");
        }
        args.extend([keyring.as_str(), name, archive.as_str(), "stable", "main"]);
        self.run(&args)
    }
}

#[test]
fn aptly_mirrors_a_suite_with_sources_checking_its_signature() {
    let upstream = Upstream::publish("cons-aptly", &[]);
    let work = tempfile::tempdir().unwrap();
    let aptly = Aptly::new(work.path(), "gpg");

    // With another repository's key, aptly refuses the suite at creation.
    let foreign = foreign_keyring(work.path());
    let refused = aptly.mirror_create("impostor", &foreign, &upstream.archive_url(), true);
    assert!(
        !refused.status.success(),
        "aptly accepted a suite signed by a key it was not given:\n{}",
        output_text(&refused)
    );

    let created = aptly.mirror_create("caprepo", &upstream.keyring, &upstream.archive_url(), true);
    checked(created, "aptly mirror create");
    let keyring = format!("-keyring={}", upstream.keyring.display());
    let updated = checked(
        aptly.run(&["mirror", "update", &keyring, "caprepo"]),
        "aptly mirror update",
    );
    assert!(
        updated.contains("Good signature from \"caprepo repository signing key"),
        "{updated}"
    );
    let shown = checked(
        aptly.run(&["mirror", "show", "-with-packages", "caprepo"]),
        "aptly mirror show",
    );
    assert!(shown.contains("Download Sources: yes"), "{shown}");
    for (name, version, arch) in EXPECTED {
        let key = format!("\n  {name}_{version}_{arch}\n");
        assert!(
            format!("{shown}\n").contains(&key),
            "aptly lists {key:?}:\n{shown}"
        );
    }
    assert_mirrored_bytes(&work.path().join("aptly-root/pool"), "aptly");
    upstream.server.stop();
}

/// aptly's built-in verifier (gpgProvider "internal", Go's x/crypto/openpgp) cannot read
/// Ed25519 keys ("openpgp: unsupported feature: public key type: 22"); a repository made
/// with --key-algo rsa4096 is the one it verifies.
#[test]
fn aptly_internal_verifier_mirrors_an_rsa4096_repository() {
    let upstream = Upstream::publish("cons-rsa", &["--key-algo", "rsa4096"]);
    let work = tempfile::tempdir().unwrap();
    let aptly = Aptly::new(work.path(), "internal");
    let created = aptly.mirror_create("caprepo", &upstream.keyring, &upstream.archive_url(), false);
    checked(created, "aptly (internal verifier) mirror create");
    let keyring = format!("-keyring={}", upstream.keyring.display());
    let updated = checked(
        aptly.run(&["mirror", "update", &keyring, "caprepo"]),
        "aptly (internal verifier) mirror update",
    );
    assert!(updated.contains("openpgp: Good signature"), "{updated}");
    let shown = checked(
        aptly.run(&["mirror", "show", "-with-packages", "caprepo"]),
        "aptly mirror show",
    );
    assert!(shown.contains("\n  hello_2.10-3_amd64"), "{shown}");
    upstream.server.stop();
}

/// A reprepro base dir whose one distribution updates from the caprepo suite, binaries
/// and sources, accepting only a Release signed by `key_id`.
fn reprepro_base(dir: &Path, url: &str, key_id: &str) -> PathBuf {
    let base = dir.join("reprepro");
    std::fs::create_dir_all(base.join("conf")).unwrap();
    std::fs::write(
        base.join("conf/distributions"),
        "Codename: stable\nComponents: main\nArchitectures: amd64 source\nUpdate: caprepo\n",
    )
    .unwrap();
    std::fs::write(
        base.join("conf/updates"),
        format!(
            "Name: caprepo\nMethod: {url}\nSuite: stable\nComponents: main\n\
             Architectures: amd64 source\nVerifyRelease: {key_id}\n"
        ),
    )
    .unwrap();
    base
}

fn reprepro(gnupg: &Path, base: &Path, args: &[&str]) -> Output {
    with_gnupg("reprepro", gnupg)
        .arg("-b")
        .arg(base)
        .args(args)
        .output()
        .expect("reprepro is installed")
}

#[test]
fn reprepro_update_pulls_binaries_and_sources_verifying_the_release_key() {
    let upstream = Upstream::publish("cons-reprepro", &[]);
    let work = tempfile::tempdir().unwrap();
    let gnupg = gnupg_home(work.path());
    let long_id = import_long_key_id(&upstream.keyring, &gnupg);

    // Expecting another key, reprepro refuses the suite and installs nothing.
    let foreign = foreign_keyring(work.path());
    let wrong_base = reprepro_base(
        &work.path().join("wrong"),
        &upstream.archive_url(),
        &import_long_key_id(&foreign, &gnupg),
    );
    let refused = reprepro(&gnupg, &wrong_base, &["update"]);
    let text = output_text(&refused);
    assert!(
        !refused.status.success() && text.contains("Not enough signatures found"),
        "reprepro accepted a suite signed by a key it was not told to expect:\n{text}"
    );
    let nothing = checked(
        reprepro(&gnupg, &wrong_base, &["list", "stable"]),
        "reprepro list",
    );
    assert_eq!(nothing, "", "a refused update installs nothing");

    let base = reprepro_base(work.path(), &upstream.archive_url(), &long_id);
    checked(reprepro(&gnupg, &base, &["update"]), "reprepro update");
    let listed = checked(
        reprepro(&gnupg, &base, &["list", "stable"]),
        "reprepro list",
    );
    for (name, version, arch) in EXPECTED {
        // reprepro files Architecture: all packages under each architecture it carries.
        let arch = if arch == "all" { "amd64" } else { arch };
        let line = format!("stable|main|{arch}: {name} {version}");
        assert!(
            listed.lines().any(|l| l == line),
            "reprepro lists {line:?}:\n{listed}"
        );
    }
    assert_mirrored_bytes(&base.join("pool"), "reprepro");
    // Its own export is a repository too: the source package is in the Sources.gz it writes.
    let exported =
        gunzip_text(&std::fs::read(base.join("dists/stable/main/source/Sources.gz")).unwrap());
    assert!(exported.contains("Package: caprepo-hello\n"), "{exported}");
    upstream.server.stop();
}

fn debmirror(upstream: &Upstream, keyring: &Path, gnupg: &Path, dest: &Path) -> Output {
    let host = upstream
        .server
        .url
        .trim_start_matches("http://")
        .to_string();
    with_gnupg("debmirror", gnupg)
        .args([
            &format!("--host={host}"),
            &format!("--root={}", upstream.repo),
            "--method=http",
            "--dist=stable",
            "--section=main",
            "--arch=amd64",
            "--source",
            // Offline against one server: no rsync of trace files, no pdiffs; every
            // downloaded file checked against the indices' hashes, not only its size.
            "--rsync-extra=none",
            "--diff=none",
            "--checksums",
            "--nocleanup",
        ])
        .arg(format!("--keyring={}", keyring.display()))
        .arg(dest)
        .output()
        .expect("debmirror is installed")
}

#[test]
fn debmirror_mirrors_a_suite_with_sources_offline() {
    let upstream = Upstream::publish("cons-debmirror", &[]);
    let work = tempfile::tempdir().unwrap();
    let gnupg = gnupg_home(work.path());

    let foreign = foreign_keyring(work.path());
    let refused = debmirror(&upstream, &foreign, &gnupg, &work.path().join("impostor"));
    let text = output_text(&refused);
    assert!(
        !refused.status.success() && text.contains("signature does not verify"),
        "debmirror accepted a suite signed by a key it was not given:\n{text}"
    );

    let dest = work.path().join("mirror");
    checked(
        debmirror(&upstream, &upstream.keyring, &gnupg, &dest),
        "debmirror",
    );
    assert!(dest.join("dists/stable/InRelease").is_file());
    assert_mirrored_bytes(&dest.join("pool"), "debmirror");
    upstream.server.stop();
}
