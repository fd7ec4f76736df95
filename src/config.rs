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
    pub mirrors: Vec<crate::mirror::MirrorConfig>,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            max_upload_bytes: default_max_upload(),
        }
    }
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
        toml::from_str(&text)
            .map_err(|e| ConfigError::Invalid(path.display().to_string(), e.to_string()))
    }

    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!("# caprepo configuration; see README.md \"Configuration\".\n{body}")
    }
}
