//! Test harness: real `caprepo` processes (the binary cargo built) on 127.0.0.1,
//! real data dirs in temp directories, curl for raw HTTP, and an isolated apt.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_caprepo")
}

pub fn caprepo() -> Command {
    let mut command = Command::new(bin());
    command
        .env_remove("CAPREPO_PASSPHRASE")
        .env_remove("CAPREPO_CAP");
    // The S3 test server (moto) takes any credentials; set unless the run gave its own.
    for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        if std::env::var_os(key).is_none() {
            command.env(key, "testing");
        }
    }
    command
}

pub fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(relative)
}

pub fn run_ok(command: &mut Command) -> String {
    let out = command.output().expect("command runs");
    assert!(
        out.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command's stdout and stderr together, for assertion messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `caprepo verify` on a data dir must pass; `after` says what it followed.
pub fn verify_ok(data: &DataDir, after: &str) {
    let out = caprepo()
        .args(["verify", "--data"])
        .arg(&data.path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify after {after}:\n{}",
        output_text(&out)
    );
}

/// A data dir made by `caprepo init`.
pub struct DataDir {
    pub tmp: tempfile::TempDir,
    pub path: PathBuf,
}

impl DataDir {
    pub fn init(extra: &[&str]) -> DataDir {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        let mut command = caprepo();
        command.args(["init", "--data"]).arg(&path);
        if !extra
            .iter()
            .any(|a| a.starts_with("--passphrase") || *a == "--with-passphrase-env")
        {
            command.arg("--no-passphrase");
        }
        command.args(extra.iter().filter(|a| **a != "--with-passphrase-env"));
        if extra.contains(&"--with-passphrase-env") {
            command.env("CAPREPO_PASSPHRASE", "test passphrase");
        }
        run_ok(&mut command);
        DataDir { tmp, path }
    }

    /// Run `caprepo <command...> --data DIR <args...>` and return its stdout; fails the test on error.
    pub fn cli(&self, command: &[&str], args: &[&str]) -> String {
        run_ok(
            caprepo()
                .args(command)
                .arg("--data")
                .arg(&self.path)
                .args(args),
        )
    }

    pub fn repo_add_rpm(&self, name: &str, releases: &str, arches: &str, extra: &[&str]) {
        let mut args = vec![
            "rpm",
            name,
            "--releases",
            releases,
            "--architectures",
            arches,
        ];
        args.extend_from_slice(extra);
        self.cli(&["repo", "add"], &args);
    }

    pub fn repo_add(&self, name: &str, suites: &str, components: &str, arches: &str) {
        self.repo_add_with(name, suites, components, arches, &[]);
    }

    /// `repo add` of an APT repository with more options (`--private`, `--legacy-hashes`).
    pub fn repo_add_with(
        &self,
        name: &str,
        suites: &str,
        components: &str,
        arches: &str,
        extra: &[&str],
    ) {
        run_ok(
            caprepo()
                .args(["repo", "add", "--data"])
                .arg(&self.path)
                .args([
                    "apt",
                    name,
                    "--suites",
                    suites,
                    "--components",
                    components,
                    "--architectures",
                    arches,
                ])
                .args(extra),
        );
    }

    pub fn cap(&self, scope: &str, expires: &str) -> String {
        self.cap_with(scope, "upload", expires, &[])
    }

    /// `cap issue` with any rights and extra flags; checks the cap alone is on stdout.
    pub fn cap_with(&self, scope: &str, rights: &str, expires: &str, extra: &[&str]) -> String {
        let out = run_ok(
            caprepo()
                .args(["cap", "issue", "--data"])
                .arg(&self.path)
                .args(["--scope", scope, "--rights", rights, "--expires", expires])
                .args(extra),
        );
        let cap = out.trim().to_string();
        assert!(
            (cap.starts_with("caprepo1.") || cap.starts_with("cr1-")) && !cap.contains('\n'),
            "the cap alone on stdout: {out:?}"
        );
        cap
    }

    pub fn key(&self, armor: bool) -> Vec<u8> {
        let mut command = caprepo();
        command.args(["key", "export", "--data"]).arg(&self.path);
        if armor {
            command.arg("--armor");
        }
        let out = command.output().unwrap();
        assert!(out.status.success());
        out.stdout
    }

    /// Another daemon's data dir on the same store: the same config and keys, its own
    /// spool and agent socket (what a second host gets).
    pub fn for_another_daemon(&self) -> DataDir {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        run_ok(Command::new("cp").arg("-a").arg(&self.path).arg(&path));
        for own in ["spool", "run"] {
            let _ = std::fs::remove_dir_all(path.join(own));
        }
        DataDir { tmp, path }
    }

    /// Every file of the local store with its size: "nothing stored" means this did not change.
    /// Every stored object and its size, but the layout records of publications: an
    /// RPM publish writes its record in the background once it has hashed ahead for
    /// the next one, after its upload was answered, so a record may appear between two
    /// snapshots that no request in between caused.
    pub fn store_snapshot(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        let root = self.path.join("store");
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path.strip_prefix(&root).unwrap().display().to_string();
                    if !rel.starts_with("cache/publish-layouts/") {
                        out.insert(rel, entry.metadata().unwrap().len());
                    }
                }
            }
        }
        out
    }
}

pub struct Server {
    pub url: String,
    child: Child,
    pub log: PathBuf,
}

impl Server {
    pub fn start(data: &DataDir) -> Server {
        Self::start_with(data, &[], &[])
    }

    pub fn start_with(data: &DataDir, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let log = data.tmp.path().join(format!("serve-{port}.log"));
        let mut command = caprepo();
        command
            .args(["serve", "--data"])
            .arg(&data.path)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("CAPREPO_LOG", "info,caprepo=debug")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap());
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().unwrap();
        let mut server = Server {
            url: format!("http://127.0.0.1:{port}"),
            child,
            log,
        };
        server.wait_healthy();
        server
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "caprepo serve exited early ({status}):\n{}",
                    self.log_text()
                );
            }
            if curl(&[&format!("{}/healthz", self.url)]).status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server did not become healthy:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn upload(&self, cap: &str, files: &[PathBuf], wait: bool) -> Output {
        let mut command = caprepo();
        command.args(["upload", "--server", &self.url, "--cap", cap]);
        if wait {
            command.arg("--wait");
        }
        command.args(files).output().unwrap()
    }

    pub fn get(&self, path: &str) -> HttpReply {
        curl(&[&format!("{}{path}", self.url)])
    }

    /// Wait until a published file satisfies a predicate (publishing is asynchronous).
    pub fn wait_for(
        &self,
        path: &str,
        what: &str,
        predicate: impl Fn(&HttpReply) -> bool,
    ) -> HttpReply {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reply = self.get(path);
            if predicate(&reply) {
                return reply;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {path}: {what}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stop(mut self) {
        self.terminate();
    }

    /// The server process's id (for /proc, or signals of a test's own).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: the server gets no chance to clean up.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
    }
}

pub struct HttpReply {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Run curl with extra arguments; returns status, headers and body.
pub fn curl(args: &[&str]) -> HttpReply {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("h");
    let body = dir.path().join("b");
    let out = Command::new("curl")
        .args(["-s", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&headers)
        .args(["-w", "%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed");
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    HttpReply {
        status,
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

/// Raw upload through the HTTP API, to check status codes and JSON reasons.
pub fn put(server: &Server, name: &str, file: &Path, cap: Option<&str>, query: &str) -> HttpReply {
    let url = format!("{}/api/v1/upload/{name}{query}", server.url);
    let data = format!("@{}", file.display());
    let auth;
    let mut args = vec![
        "-X",
        "PUT",
        "--data-binary",
        data.as_str(),
        "-H",
        "Content-Type: application/octet-stream",
    ];
    if let Some(cap) = cap {
        auth = format!("Authorization: Bearer {cap}");
        args.extend(["-H", auth.as_str()]);
    }
    args.push(&url);
    curl(&args)
}

/// Where a local store keeps a blob stored by itself (not packed).
pub fn blob_file(data: &DataDir, digest: &str) -> std::path::PathBuf {
    data.path
        .join("store/blobs/sha256")
        .join(&digest[..2])
        .join(digest)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// An apt isolated from the system through APT_CONFIG: its own lists, cache, state and keyring.
pub struct Apt {
    pub root: tempfile::TempDir,
}

impl Apt {
    /// `status_from_system`: copy /var/lib/dpkg/status so dependencies like libc6 resolve.
    pub fn new(sources: &str, key: &[u8], status_from_system: bool) -> Apt {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for dir in [
            "etc/apt/sources.list.d",
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "etc/apt/trusted.gpg.d",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
            "var/lib/dpkg",
            "var/log/apt",
        ] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        if status_from_system {
            std::fs::copy("/var/lib/dpkg/status", r.join("var/lib/dpkg/status")).unwrap();
        } else {
            std::fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
        }
        std::fs::write(r.join("key.gpg"), key).unwrap();
        let d = r.display();
        let conf = format!(
            "Dir::Etc \"{d}/etc/apt\";\nDir::Etc::sourcelist \"{d}/etc/apt/sources.list\";\n\
             Dir::Etc::sourceparts \"{d}/etc/apt/sources.list.d\";\nDir::Etc::parts \"{d}/etc/apt/apt.conf.d\";\n\
             Dir::Etc::preferencesparts \"{d}/etc/apt/preferences.d\";\nDir::Etc::trusted \"{d}/etc/apt/trusted.gpg\";\n\
             Dir::Etc::trustedparts \"{d}/etc/apt/trusted.gpg.d\";\nDir::State \"{d}/var/lib/apt\";\n\
             Dir::State::status \"{d}/var/lib/dpkg/status\";\nDir::Cache \"{d}/var/cache/apt\";\nDir::Log \"{d}/var/log/apt\";\n\
             APT::Architecture \"amd64\";\nAPT::Architectures {{ \"amd64\"; }};\nAcquire::Languages \"none\";\n\
             Acquire::Retries \"0\";\nDebug::NoLocking \"true\";\n"
        );
        std::fs::write(r.join("apt.conf"), conf).unwrap();
        std::fs::write(
            r.join("etc/apt/sources.list.d/test.sources"),
            sources.replace("KEYRING", &format!("{d}/key.gpg")),
        )
        .unwrap();
        Apt { root }
    }

    pub fn for_repo(
        server: &Server,
        repo: &str,
        suite: &str,
        components: &str,
        key: &[u8],
        status: bool,
    ) -> Apt {
        let sources = format!(
            "Types: deb\nURIs: {}/{repo}/\nSuites: {suite}\nComponents: {components}\nSigned-By: KEYRING\n",
            server.url
        );
        Apt::new(&sources, key, status)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("apt-get")
            .env("APT_CONFIG", self.root.path().join("apt.conf"))
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(args)
            .output()
            .unwrap()
    }

    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "apt-get {args:?} failed:\n{text}");
        text
    }

    /// `apt-get download NAMES...` into this apt's root directory (see [`Apt::root`]).
    pub fn download(&self, names: &[&str]) -> Output {
        Command::new("apt-get")
            .current_dir(self.root.path())
            .env("APT_CONFIG", self.root.path().join("apt.conf"))
            .arg("download")
            .args(names)
            .output()
            .unwrap()
    }

    pub fn archive(&self, file_name: &str) -> PathBuf {
        self.root
            .path()
            .join("var/cache/apt/archives")
            .join(file_name)
    }
}

/// An isolated dnf: its own config, reposdir, cache and installroot, with gpgcheck=1 and
/// repo_gpgcheck=1 against one repository.
pub struct Dnf {
    dir: tempfile::TempDir,
    releasever: String,
}

impl Dnf {
    /// dnf pointed at `repo` on a caprepo server, for release 12.
    pub fn new(server: &Server, repo: &str) -> Dnf {
        Dnf::at(&format!("{}/{repo}", server.url), &server.url, "12")
    }

    /// dnf pointed at `<repo_url>/$releasever/$basearch/` (a caprepo server or a mirror of it),
    /// trusting the key at `<key_server>/key.asc`.
    pub fn at(repo_url: &str, key_server: &str, releasever: &str) -> Dnf {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::create_dir_all(dir.path().join("repos.d")).unwrap();
        std::fs::write(
            dir.path().join("dnf.conf"),
            format!("[main]\ngpgcheck=1\nrepo_gpgcheck=1\nreposdir={d}/repos.d\ncachedir={d}/cache\nlogdir={d}/log\npersistdir={d}/persist\nplugins=0\n"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("repos.d/caprepo.repo"),
            format!(
                "[caprepo]\nname=caprepo\nbaseurl={repo_url}/$releasever/$basearch/\nenabled=1\ngpgcheck=1\nrepo_gpgcheck=1\ngpgkey={key_server}/key.asc\nmetadata_expire=0\n",
            ),
        )
        .unwrap();
        Dnf {
            dir,
            releasever: releasever.to_string(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("dnf")
            .arg("-c")
            .arg(self.dir.path().join("dnf.conf"))
            .arg(format!("--installroot={}", self.root().display()))
            .arg(format!("--releasever={}", self.releasever))
            .arg("-y")
            .args(args)
            .output()
            .unwrap()
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
}

/// Appends a block to `token` carrying `id`, signed with the token's proof key, as any
/// holder can; prints the new token.
pub fn attenuate_with_id(token: &str, id: &str, scope: &str, rights: &str) -> String {
    let script = format!(
        r#"
import base64, json
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization
tok = "{token}"
parts = tok[len("caprepo1."):].split(".")
d = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
e = lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")
proof = Ed25519PrivateKey.from_private_bytes(d(parts[-1]))
parent = json.loads(d(parts[-3]))
nxt = Ed25519PrivateKey.generate()
pub = nxt.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
block = dict(v=1, id="{id}", rights=["{rights}"], scope="{scope}", nbf=parent["nbf"], exp=parent["exp"], next=pub)
payload = json.dumps(block, separators=(",", ":")).encode()
raw = nxt.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
print("caprepo1." + ".".join(parts[:-1] + [e(payload), e(proof.sign(payload)), e(raw)]))
"#
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python3 with cryptography: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The text inside a gzip stream (a served or exported Packages.gz, Sources.gz, primary.xml.gz).
pub fn gunzip_text(gz: &[u8]) -> String {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(gz), &mut text)
        .expect("a gzip stream of UTF-8 text");
    text
}

/// zypper on its own root (`--root`), non-interactive, trusting the repository's key on
/// first sight, for release 12.
pub fn zypper(root: &Path, args: &[&str]) -> Output {
    Command::new("zypper")
        .arg("--root")
        .arg(root)
        .args([
            "--non-interactive",
            "--gpg-auto-import-keys",
            "--releasever",
            "12",
        ])
        .args(args)
        .output()
        .unwrap()
}

/// hello (a real package) with its control file edited, rebuilt by dpkg-deb as `dir/<file_name>`.
pub fn hello_edited(dir: &Path, file_name: &str, edit: impl FnOnce(String) -> String) -> PathBuf {
    let tree = dir.join(format!("tree-{file_name}"));
    run_ok(
        Command::new("dpkg-deb")
            .arg("-R")
            .arg(fixture("debs/hello_2.10-3_amd64.deb"))
            .arg(&tree),
    );
    let control_path = tree.join("DEBIAN/control");
    let control = std::fs::read_to_string(&control_path).unwrap();
    std::fs::write(&control_path, edit(control)).unwrap();
    let out = dir.join(file_name);
    run_ok(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "-b"])
            .arg(&tree)
            .arg(&out),
    );
    out
}

/// Real packages with distinct names (`<prefix>NN`), rebuilt from hello.
pub fn distinct_debs(prefix: &str, dir: &Path, count: usize) -> Vec<PathBuf> {
    (0..count)
        .map(|i| {
            let name = format!("{prefix}{i:02}");
            hello_edited(dir, &format!("{name}_2.10-3_amd64.deb"), |control| {
                control.replacen("Package: hello", &format!("Package: {name}"), 1)
            })
        })
        .collect()
}

/// An rpm database in a temporary directory that trusts one OpenPGP key.
pub struct RpmKeyring {
    dir: tempfile::TempDir,
}

impl RpmKeyring {
    pub fn new(armored_key: &[u8]) -> RpmKeyring {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key.asc"), armored_key).unwrap();
        run_ok(
            Command::new("rpmkeys")
                .arg("--dbpath")
                .arg(dir.path().join("rpmdb"))
                .arg("--import")
                .arg(dir.path().join("key.asc")),
        );
        RpmKeyring { dir }
    }

    /// `rpmkeys -K` at signature level: its output, which says "digests signatures OK"
    /// for a package signed by the key.
    pub fn check(&self, rpm: &Path) -> String {
        run_ok(
            Command::new("rpmkeys")
                .arg("--dbpath")
                .arg(self.dir.path().join("rpmdb"))
                .args(["--define", "_pkgverify_level signature", "-K"])
                .arg(rpm),
        )
    }
}

/// Distinct small rpms (`<prefix>-NNNNNN-1.0-1.x86_64.rpm`) from bench/gen_rpms.py.
pub fn distinct_rpms(prefix: &str, dir: &Path, count: usize) -> Vec<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/gen_rpms.py");
    run_ok(
        Command::new("python3")
            .arg(script)
            .arg(dir)
            .arg(count.to_string())
            .args(["--prefix", prefix]),
    );
    (0..count)
        .map(|i| dir.join(format!("{prefix}-{i:06}-1.0-1.x86_64.rpm")))
        .collect()
}

/// An S3-compatible server on loopback: the one .ci/run started, or a moto we start.
pub struct S3 {
    pub endpoint: String,
    child: Option<Child>,
}

impl S3 {
    pub fn start() -> S3 {
        if let Ok(endpoint) = std::env::var("CAPREPO_TEST_S3_ENDPOINT") {
            return S3 {
                endpoint,
                child: None,
            };
        }
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto is installed (.ci/run installs it)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "moto did not start");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        S3 {
            endpoint: format!("http://127.0.0.1:{port}"),
            child: Some(child),
        }
    }
}

impl S3 {
    /// A data dir whose store is a new bucket of this server.
    pub fn data_dir(&self, prefix: &str) -> DataDir {
        let bucket = self.bucket(prefix);
        DataDir::init(&[
            "--s3-bucket",
            &bucket,
            "--s3-endpoint",
            &self.endpoint,
            "--s3-allow-http",
        ])
    }

    /// A new bucket, named after `prefix` and a free port so runs never share one.
    pub fn bucket(&self, prefix: &str) -> String {
        let bucket = format!("{prefix}-{}", free_port());
        assert_eq!(
            curl(&["-X", "PUT", &format!("{}/{bucket}", self.endpoint)]).status,
            200
        );
        bucket
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
