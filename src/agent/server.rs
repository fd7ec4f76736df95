//! `caprepo agent`: the one process that holds the unlocked signing key. It
//! listens on a Unix socket created mode 0600 in a directory only its own user can
//! write (created 0700 when missing, refused when shared), accepts only peers
//! running as its own uid, and answers sign requests; it never sends secret key
//! material, because no request can ask for it.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
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
    #[error(
        "refusing to put the agent socket in {0}: {1}; use a directory of its own (created 0700 if missing)"
    )]
    UnsafeDirectory(PathBuf, String),
    #[error("refusing to replace {0}: it exists and is not a socket{1}")]
    NotASocket(PathBuf, String),
}

struct Signer {
    keypair: KeyPair,
    public_armored: Vec<u8>,
    public_binary: Vec<u8>,
}

/// The directory the socket goes in: created 0700 if missing; if it exists, it must be
/// ours and writable by nobody else, or another user could swap the socket for theirs.
/// Never chmod an existing directory: `--socket /tmp/x.sock` must not close up /tmp.
fn prepare_directory(dir: &Path, own_uid: u32) -> Result<(), AgentError> {
    let io = |e| AgentError::Io(dir.to_path_buf(), e);
    let unsafe_dir = |why: String| AgentError::UnsafeDirectory(dir.to_path_buf(), why);
    match std::fs::metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        Err(e) => return Err(io(e)),
    }
    let meta = std::fs::metadata(dir).map_err(io)?;
    if !meta.is_dir() {
        return Err(unsafe_dir("it is not a directory".into()));
    }
    if meta.uid() != own_uid {
        return Err(unsafe_dir(format!(
            "it is owned by uid {}, not by us (uid {own_uid})",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "it is group- or world-writable (mode {mode:04o})"
        )));
    }
    Ok(())
}

/// Make room for the socket: nothing there, or a socket of ours nobody answers on (an
/// agent that crashed). Anything else stays where it is.
async fn clear_stale_socket(socket: &Path, own_uid: u32) -> Result<(), AgentError> {
    let io = |e| AgentError::Io(socket.to_path_buf(), e);
    let meta = match std::fs::symlink_metadata(socket) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    let file_type = meta.file_type();
    if !file_type.is_socket() {
        let what = if file_type.is_symlink() {
            " (a symbolic link)"
        } else if file_type.is_dir() {
            " (a directory)"
        } else if file_type.is_file() {
            " (a regular file)"
        } else {
            ""
        };
        return Err(AgentError::NotASocket(socket.to_path_buf(), what.into()));
    }
    if meta.uid() != own_uid {
        return Err(AgentError::NotASocket(
            socket.to_path_buf(),
            format!(" of ours (it is a socket of uid {})", meta.uid()),
        ));
    }
    match UnixStream::connect(socket).await {
        Ok(_) => Err(AgentError::AlreadyRunning(socket.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(socket).map_err(io)
        }
        // Anything but "nobody listens" (a full backlog, EACCES): leave it be.
        Err(e) => Err(io(e)),
    }
}

/// Bind the socket; returns once it accepts connections, with the serving future.
pub async fn bind(socket: &Path, cert: &Cert, keypair: KeyPair) -> Result<Agent, AgentError> {
    let io = |e| AgentError::Io(socket.to_path_buf(), e);
    let own_uid = rustix::process::geteuid().as_raw();
    let dir = match socket.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    prepare_directory(dir, own_uid)?;
    clear_stale_socket(socket, own_uid).await?;
    let listener = UnixListener::bind(socket).map_err(io)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    let made = std::fs::symlink_metadata(socket).map_err(io)?;
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
        made: (made.dev(), made.ino()),
    })
}

pub struct Agent {
    listener: UnixListener,
    own_uid: u32,
    signer: Arc<Signer>,
    socket: PathBuf,
    /// (device, inode) of the socket we bound: the only file Drop may remove.
    made: (u64, u64),
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
        // Another agent may have replaced our socket after we stopped answering: remove
        // only the very socket we made.
        if let Ok(meta) = std::fs::symlink_metadata(&self.socket)
            && meta.file_type().is_socket()
            && (meta.dev(), meta.ino()) == self.made
        {
            let _ = std::fs::remove_file(&self.socket);
        }
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
