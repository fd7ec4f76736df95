//! Capabilities: bearer tokens that grant rights (upload, read, publish, admin)
//! over one scope, verified offline against the data dir's ed25519 root key. A
//! build worker's cap names exactly one cell, so it can publish its arch and
//! tamper with nothing else.

pub mod keys;
pub mod links;
pub mod registry;
pub mod scope;
pub mod token;

#[cfg(test)]
mod properties;

pub use scope::Scope;
pub use token::{CapError, Grant, Right, Token};
