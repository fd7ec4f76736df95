//! The signing agent: a separate process that alone holds the OpenPGP secret key
//! and signs Release files (and later rpm headers and repomd.xml) on request.

pub mod client;
pub mod openpgp;
pub mod protocol;
pub mod server;
pub mod sign;

pub use client::{AgentClient, AgentClientError};
pub use sign::Signer;
