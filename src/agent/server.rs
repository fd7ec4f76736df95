//! `caprepo agent`: the one process that holds the unlocked signing key. It
//! listens on a Unix socket created mode 0600 inside a 0700 directory, accepts
//! only peers running as its own uid, and answers sign requests; it never sends
//! secret key material, because no request can ask for it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sequoia_openpgp::Cert;
use sequoia_openpgp::crypto::KeyPair;
use tokio::net::{UnixListener, UnixStream};

use super::openpgp;
use super::protocol::{self, Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent socket {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("another agent is already listening on {0}")]
    AlreadyRunning(PathBuf),
}

struct Signer {
    keypair: KeyPair,
    public_armored: Vec<u8>,
    public_binary: Vec<u8>,
}

/// Bind the socket; returns once it accepts connections, with the serving future.
pub async fn bind(socket: &Path, cert: &Cert, keypair: KeyPair) -> Result<Agent, AgentError> {
    let io = |e| AgentError::Io(socket.to_path_buf(), e);
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    if socket.exists() {
        if UnixStream::connect(socket).await.is_ok() {
            return Err(AgentError::AlreadyRunning(socket.to_path_buf()));
        }
        std::fs::remove_file(socket).map_err(io)?; // stale socket from a crashed agent
    }
    let listener = UnixListener::bind(socket).map_err(io)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    // The socket file is ours, so its owner is our effective uid: no unsafe getuid needed.
    let own_uid = std::fs::metadata(socket).map_err(io)?.uid();
    let signer = Signer {
        public_armored: openpgp::public_armored(cert).unwrap_or_default(),
        public_binary: openpgp::public_binary(cert).unwrap_or_default(),
        keypair,
    };
    Ok(Agent {
        listener,
        own_uid,
        signer: Arc::new(signer),
        socket: socket.to_path_buf(),
    })
}

pub struct Agent {
    listener: UnixListener,
    own_uid: u32,
    signer: Arc<Signer>,
    socket: PathBuf,
}

impl Agent {
    pub async fn serve(self) {
        loop {
            let (stream, _) = match self.listener.accept().await {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "agent accept failed");
                    continue;
                }
            };
            let peer_uid = stream.peer_cred().map(|c| c.uid()).ok();
            if peer_uid != Some(self.own_uid) {
                tracing::warn!(?peer_uid, "agent refused a connection from another user");
                continue;
            }
            let signer = Arc::clone(&self.signer);
            tokio::spawn(async move {
                if let Err(e) = handle(stream, signer).await
                    && e.kind() != std::io::ErrorKind::UnexpectedEof
                {
                    tracing::debug!(error = %e, "agent connection ended");
                }
            });
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

async fn handle(mut stream: UnixStream, signer: Arc<Signer>) -> std::io::Result<()> {
    loop {
        let request: Request = protocol::read_frame(&mut stream).await?;
        let signer = Arc::clone(&signer);
        // RSA signing takes milliseconds of CPU; keep it off the reactor threads.
        let response = tokio::task::spawn_blocking(move || answer(&signer, request))
            .await
            .unwrap_or_else(|e| Response::error(format!("signing task failed: {e}")));
        protocol::write_frame(&mut stream, &response).await?;
    }
}

fn answer(signer: &Signer, request: Request) -> Response {
    let result = match request {
        Request::PublicKey { armor: true } => Ok(signer.public_armored.clone()),
        Request::PublicKey { armor: false } => Ok(signer.public_binary.clone()),
        Request::Clearsign { data } => protocol::decode(&data)
            .and_then(|d| openpgp::clearsign(&signer.keypair, &d).map_err(|e| e.to_string())),
        Request::DetachSign { data, armor } => protocol::decode(&data).and_then(|d| {
            openpgp::detach_sign(&signer.keypair, &d, armor).map_err(|e| e.to_string())
        }),
    };
    match result {
        Ok(bytes) => Response::data(&bytes),
        Err(e) => Response::error(e),
    }
}
