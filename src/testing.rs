//! Test support: an S3-compatible server (moto) on 127.0.0.1 for the store's
//! conformance suite (set CAPREPO_TEST_S3_ENDPOINT to use one started elsewhere), and
//! package records for unit tests of cells, retention and releases.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::store::StorageConfig;

pub struct S3Server {
    endpoint: String,
    child: Option<Child>,
}

impl S3Server {
    pub async fn start() -> S3Server {
        // SAFETY of test setup: credentials for the local moto server only.
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            unsafe {
                std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
                std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
            }
        }
        if let Ok(endpoint) = std::env::var("CAPREPO_TEST_S3_ENDPOINT") {
            return S3Server {
                endpoint,
                child: None,
            };
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let port_text = port.to_string();
        let spawn = |program: &str, prefix: &[&str]| {
            Command::new(program)
                .args(prefix)
                .args(["-H", "127.0.0.1", "-p", &port_text])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        };
        let child = spawn("moto_server", &[])
            .or_else(|_| spawn("python3", &["-m", "moto.server"]))
            .expect(
                "moto is needed for the S3 tests: pip install 'moto[server]' (.ci/run installs it)",
            );
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        S3Server {
            endpoint,
            child: Some(child),
        }
    }

    /// A fresh bucket on this server, as a storage config.
    pub fn config(&self, bucket: &str) -> StorageConfig {
        let bucket = format!("{bucket}-{}", &crate::util::ids::random_id()[..8]);
        let status = Command::new("curl")
            .args([
                "-fsS",
                "-o",
                "/dev/null",
                "-X",
                "PUT",
                &format!("{}/{bucket}", self.endpoint),
            ])
            .status()
            .expect("curl is needed to create the test bucket");
        assert!(status.success(), "creating bucket {bucket} failed");
        StorageConfig::S3 {
            bucket,
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".into(),
            allow_http: true,
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An amd64 package record of `name` at `version` whose .deb is `bytes` (never stored:
/// cells, retention and releases only read the record).
pub fn apt_package(name: &str, version: &str, bytes: &[u8]) -> crate::repo::model::AptPackage {
    crate::repo::model::AptPackage {
        name: name.into(),
        version: version.into(),
        architecture: "amd64".into(),
        source: name.into(),
        control: format!("Package: {name}\nVersion: {version}\n"),
        filename: format!("pool/main/{}/{name}/{name}_{version}_amd64.deb", &name[..1]),
        size: bytes.len() as u64,
        sha256: crate::util::digest::Digest::of(bytes),
        files: crate::util::digest::Digest::of(b""),
        uploaded_at: 0,
        uploaded_by: "t".into(),
    }
}

/// An x86_64 rpm record of `name` 1-1 with no repodata entries recorded (tests add them).
pub fn rpm_package(name: &str) -> crate::repo::model::RpmPackage {
    let digest = crate::util::digest::Digest::of(name.as_bytes());
    crate::repo::model::RpmPackage {
        name: name.into(),
        epoch: 0,
        version: "1".into(),
        release: "1".into(),
        arch: "x86_64".into(),
        location: format!("Packages/{}/{name}-1-1.x86_64.rpm", &name[..1]),
        size: 1,
        sha256: digest,
        uploaded_sha256: digest,
        signed: false,
        primary: None,
        filelists: None,
        other: None,
        entries: None,
        uploaded_at: 0,
        uploaded_by: "t".into(),
    }
}

/// A memory store holding apt/farm with `suites`, component main and architecture amd64.
pub async fn apt_farm(suites: &[&str]) -> crate::store::Store {
    let store = crate::store::Store::memory();
    let new = crate::repo::definitions::NewAptRepo {
        name: "farm".into(),
        suites: suites.iter().map(|s| s.to_string()).collect(),
        components: vec!["main".into()],
        architectures: vec!["amd64".into()],
        origin: None,
        label: None,
        private: false,
        retention: None,
        legacy_hashes: false,
    };
    crate::repo::definitions::add_apt_repo(&store, new, "test")
        .await
        .expect("apt/farm added");
    store
}
