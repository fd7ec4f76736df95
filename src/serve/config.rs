//! The data directory an operator points every command at: `caprepo.toml`, the
//! agent's key files, the cap root key, the agent socket, the upload spool and,
//! by default, the local object store. One place, so one `--data` is enough.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::StorageConfig;

pub const CONFIG_FILE: &str = "caprepo.toml";

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }

    /// The agent's certificate with its secret key, passphrase-protected unless made with --no-passphrase.
    pub fn signing_key(&self) -> PathBuf {
        self.keys_dir().join("signing-key.asc")
    }

    pub fn public_key_armored(&self) -> PathBuf {
        self.keys_dir().join("signing-key.pub.asc")
    }

    pub fn public_key_binary(&self) -> PathBuf {
        self.keys_dir().join("signing-key.pub.gpg")
    }

    pub fn cap_root_key(&self) -> PathBuf {
        self.keys_dir().join("cap-root.key")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    pub fn default_agent_socket(&self) -> PathBuf {
        self.run_dir().join("agent.sock")
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.root.join("spool")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub storage: StorageConfig,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub agent: AgentConfig,
    pub caps: CapsConfig,
    pub signing: SigningConfig,
    /// `[[mirror]]` targets that every publish is copied to.
    #[serde(default, rename = "mirror", skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorConfig>,
    /// `[gc]`: garbage collection inside `caprepo serve`, on a schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc: Option<GcConfig>,
}

/// `[gc]` in caprepo.toml. Every daemon with it tries on its schedule; the store's gc
/// lock lets one run at a time, and the others skip that round.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GcConfig {
    /// How often, e.g. "1h" (first run one interval after start).
    pub interval: String,
    /// Unreachable blobs younger than this are kept (default "1d").
    #[serde(default = "default_gc_grace")]
    pub grace: String,
    /// Prune ref history to the newest N generations (default: keep all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_generations: Option<u64>,
    /// How long gc waits for writers to pause before it gives the round up (default "15s").
    #[serde(default = "default_gc_pause_timeout")]
    pub pause_timeout: String,
    /// A publication superseded less than this long ago is kept for the clients reading it
    /// (default "60s").
    #[serde(default = "default_gc_reader_window")]
    pub reader_window: String,
}

fn default_gc_grace() -> String {
    "1d".into()
}

fn default_gc_pause_timeout() -> String {
    "15s".into()
}

fn default_gc_reader_window() -> String {
    "60s".into()
}

impl GcConfig {
    /// The parsed schedule: [interval, grace, pause timeout, reader window], or what is wrong.
    pub fn durations(&self) -> Result<[std::time::Duration; 4], String> {
        let parse = |key: &str, text: &str| {
            crate::util::time::parse_duration(text)
                .map_err(|e| format!("[gc] {key} = {text:?}: {e}"))
        };
        let interval = parse("interval", &self.interval)?;
        if interval < std::time::Duration::from_secs(1) {
            return Err(format!(
                "[gc] interval = {:?}: give at least 1s",
                self.interval
            ));
        }
        Ok([
            interval,
            parse("grace", &self.grace)?,
            parse("pause_timeout", &self.pause_timeout)?,
            parse("reader_window", &self.reader_window)?,
        ])
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Default for `serve --listen`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Largest accepted upload, bytes.
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
    // The keys below are written out only when changed, so that a caprepo.toml made by
    // `init` still loads in an older caprepo (the tables refuse unknown keys).
    /// Most connections served at once. Unset: three quarters of the open-file limit left
    /// after 128 descriptors for the store, spools and the agent (at most 16,384).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Seconds a client has to send a whole request head: from when it connects, or from
    /// the first byte of its next request on a kept-alive connection.
    #[serde(
        default = "default_header_timeout",
        skip_serializing_if = "is_default_header_timeout"
    )]
    pub header_timeout_secs: u64,
    /// Seconds a kept-alive connection may wait for its next request.
    #[serde(
        default = "default_idle_timeout",
        skip_serializing_if = "is_default_idle_timeout"
    )]
    pub idle_timeout_secs: u64,
    /// Seconds a request body (an upload) may stall before the request fails.
    #[serde(
        default = "default_body_timeout",
        skip_serializing_if = "is_default_body_timeout"
    )]
    pub body_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            max_upload_bytes: default_max_upload(),
            max_connections: None,
            header_timeout_secs: default_header_timeout(),
            idle_timeout_secs: default_idle_timeout(),
            body_timeout_secs: default_body_timeout(),
        }
    }
}

impl ServerConfig {
    /// Refuse bounds that would make the server useless (a zero timeout cuts every client).
    pub fn check(&self) -> Result<(), String> {
        for (key, value) in [
            ("header_timeout_secs", self.header_timeout_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("body_timeout_secs", self.body_timeout_secs),
        ] {
            if value == 0 || value > 86_400 {
                return Err(format!(
                    "[server] {key} = {value}: give a number of seconds from 1 to 86400"
                ));
            }
        }
        if self.max_connections == Some(0) {
            return Err("[server] max_connections = 0: give at least 1, or leave it out to derive it from the open-file limit".into());
        }
        Ok(())
    }
}

fn default_header_timeout() -> u64 {
    10
}

fn is_default_header_timeout(secs: &u64) -> bool {
    *secs == default_header_timeout()
}

fn default_idle_timeout() -> u64 {
    60
}

fn is_default_idle_timeout(secs: &u64) -> bool {
    *secs == default_idle_timeout()
}

fn default_body_timeout() -> u64 {
    60
}

fn is_default_body_timeout(secs: &u64) -> bool {
    *secs == default_body_timeout()
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

fn default_max_upload() -> u64 {
    8 * 1024 * 1024 * 1024
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Socket of an agent started separately. When unset, `serve` starts its own agent child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// File holding the signing key's passphrase (for unattended starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CapsConfig {
    /// Hex ed25519 public key that verifies the first block of every cap.
    pub root_public_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    pub fingerprint: String,
    pub algorithm: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no caprepo data dir at {0} (no {CONFIG_FILE}); create one with `caprepo init --data {0}`"
    )]
    Missing(String),
    #[error("reading {0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0} is not valid: {1}")]
    Invalid(String, String),
}

impl Config {
    pub fn load(data: &DataDir) -> Result<Config, ConfigError> {
        let path = data.config_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::Missing(data.root().display().to_string()));
            }
            Err(e) => return Err(ConfigError::Io(path.display().to_string(), e)),
        };
        let config: Config = toml::from_str(&text)
            .map_err(|e| ConfigError::Invalid(path.display().to_string(), e.to_string()))?;
        config
            .server
            .check()
            .map_err(|e| ConfigError::Invalid(path.display().to_string(), e))?;
        if let Some(gc) = &config.gc {
            gc.durations()
                .map_err(|e| ConfigError::Invalid(path.display().to_string(), e))?;
        }
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!("# caprepo configuration; see README.md \"Configuration\".\n{body}")
    }
}

/// A `[[mirror]]` entry of caprepo.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// A directory to publish into (created if missing)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<PathBuf>,
    /// ...or an S3-compatible bucket (credentials from AWS_* variables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub allow_http: bool,
    /// How long files nothing references any more are kept, e.g. "1d".
    #[serde(default = "default_grace")]
    pub grace: String,
}

fn default_grace() -> String {
    "1d".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(server_table: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[storage]\nbackend = \"local\"\npath = \"store\"\n\n[server]\n{server_table}\n\n\
             [caps]\nroot_public_key = \"00\"\n\n[signing]\nfingerprint = \"F\"\nalgorithm = \"ed25519\"\n"
        );
        std::fs::write(dir.path().join(CONFIG_FILE), text).unwrap();
        Config::load(&DataDir::new(dir.path()))
    }

    #[test]
    fn connection_bounds_default_load_and_refuse_zero() {
        let config = load("").unwrap();
        assert_eq!(config.server, ServerConfig::default());
        // Written out only when changed, so an older caprepo still reads what `init` writes.
        assert!(
            !config.to_toml().contains("timeout"),
            "{}",
            config.to_toml()
        );
        let config = load("header_timeout_secs = 3\nmax_connections = 50").unwrap();
        assert_eq!(
            (
                config.server.header_timeout_secs,
                config.server.max_connections
            ),
            (3, Some(50))
        );
        assert!(config.to_toml().contains("header_timeout_secs = 3"));
        for bad in [
            "header_timeout_secs = 0",
            "idle_timeout_secs = 0",
            "body_timeout_secs = 100000",
            "max_connections = 0",
        ] {
            let error = load(bad).unwrap_err().to_string();
            let key = bad.split(' ').next().unwrap();
            assert!(error.contains(key), "{bad}: {error}");
        }
    }
}
