//! The cap root key: the ed25519 key that signs the first block of every cap.
//! Its secret stays in the data dir (mode 0600) for `caprepo cap issue`; servers
//! only need the public half, which lives in caprepo.toml.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey};
use zeroize::Zeroize;

#[derive(Debug, thiserror::Error)]
pub enum RootKeyError {
    #[error("cap root key {0}: {1}")]
    Io(String, std::io::Error),
    #[error("cap root key {0} is not 64 hex characters")]
    Malformed(String),
    #[error("{0:?} is not a hex ed25519 public key")]
    BadPublic(String),
}

pub fn generate() -> SigningKey {
    SigningKey::generate(&mut rand_core::OsRng)
}

/// Write the secret key, refusing to replace an existing file.
pub fn save(key: &SigningKey, path: &Path) -> Result<(), RootKeyError> {
    let err = |e| RootKeyError::Io(path.display().to_string(), e);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    let mut text = hex::encode(key.to_bytes());
    text.push('\n');
    let written = file
        .write_all(text.as_bytes())
        .and_then(|_| file.sync_all());
    text.zeroize();
    written.map_err(err)
}

pub fn load(path: &Path) -> Result<SigningKey, RootKeyError> {
    let mut text = std::fs::read_to_string(path)
        .map_err(|e| RootKeyError::Io(path.display().to_string(), e))?;
    let mut bytes = [0u8; 32];
    let decoded = hex::decode_to_slice(text.trim(), &mut bytes);
    text.zeroize();
    decoded.map_err(|_| RootKeyError::Malformed(path.display().to_string()))?;
    let key = SigningKey::from_bytes(&bytes);
    bytes.zeroize();
    Ok(key)
}

pub fn public_hex(key: &SigningKey) -> String {
    hex::encode(key.verifying_key().to_bytes())
}

pub fn parse_public(text: &str) -> Result<VerifyingKey, RootKeyError> {
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| RootKeyError::BadPublic(text.to_string()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| RootKeyError::BadPublic(text.to_string()))
}
