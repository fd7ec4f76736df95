//! The server's side of the agent protocol: ask for a signature, get bytes back.
//! The server never opens the key file; it only knows the socket path.

use std::path::PathBuf;
use std::time::Duration;

use tokio::net::UnixStream;

use super::protocol::{self, Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum AgentClientError {
    #[error("cannot reach the signing agent at {0}: {1} (is `caprepo agent` running?)")]
    Connect(PathBuf, std::io::Error),
    #[error("signing agent connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("signing agent refused: {0}")]
    Refused(String),
}

#[derive(Debug, Clone)]
pub struct AgentClient {
    socket: PathBuf,
}

impl AgentClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        AgentClient {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    async fn call(&self, request: &Request) -> Result<Vec<u8>, AgentClientError> {
        let mut stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| AgentClientError::Connect(self.socket.clone(), e))?;
        protocol::write_frame(&mut stream, request).await?;
        let response: Response = protocol::read_frame(&mut stream).await?;
        match (response.ok, response.data) {
            (true, Some(data)) => protocol::decode(&data).map_err(AgentClientError::Refused),
            _ => Err(AgentClientError::Refused(
                response.error.unwrap_or_else(|| "no reason given".into()),
            )),
        }
    }

    pub async fn public_key(&self, armor: bool) -> Result<Vec<u8>, AgentClientError> {
        self.call(&Request::PublicKey { armor }).await
    }

    pub async fn clearsign(&self, data: &[u8]) -> Result<Vec<u8>, AgentClientError> {
        self.call(&Request::Clearsign {
            data: protocol::encode(data),
        })
        .await
    }

    pub async fn detach_sign(&self, data: &[u8], armor: bool) -> Result<Vec<u8>, AgentClientError> {
        self.call(&Request::DetachSign {
            data: protocol::encode(data),
            armor,
        })
        .await
    }

    /// Wait until the agent answers (it may be waiting for a passphrase at a prompt).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), AgentClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.public_key(true).await {
                Ok(_) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}
