//! The agent's wire protocol on its Unix socket: each message is a 4-byte
//! big-endian length and a JSON body. Requests name an operation; nothing in the
//! protocol can ask for secret key material, so none can leak through it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Release files and rpm headers are far smaller; anything bigger is a confused client.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The public certificate, armored or binary.
    PublicKey { armor: bool },
    /// Cleartext-sign text (InRelease).
    Clearsign { data: String },
    /// Detached signature (Release.gpg, repomd.xml.asc), armored or binary.
    DetachSign { data: String, armor: bool },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn data(bytes: &[u8]) -> Self {
        Response {
            ok: true,
            data: Some(B64.encode(bytes)),
            error: None,
        }
    }
    pub fn error(message: impl Into<String>) -> Self {
        Response {
            ok: false,
            data: None,
            error: Some(message.into()),
        }
    }
}

pub fn encode(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    B64.decode(text)
        .map_err(|e| format!("bad base64 in agent message: {e}"))
}

pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    writer: &mut W,
    value: &T,
) -> std::io::Result<()> {
    let body = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    if body.len() > MAX_FRAME {
        return Err(std::io::Error::other("agent message too large"));
    }
    writer.write_all(&(body.len() as u32).to_be_bytes()).await?;
    writer.write_all(&body).await?;
    writer.flush().await
}

pub async fn read_frame<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(
    reader: &mut R,
) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    reader.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "agent message of {len} bytes exceeds {MAX_FRAME}"
        )));
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(std::io::Error::other)
}
