//! What a publisher asks of whoever holds the signing key: the public key, a
//! clearsigned InRelease, detached signatures (Release.gpg, repomd.xml.asc, rpm
//! headers). In a server that is the agent over its socket ([`super::AgentClient`]);
//! in unit tests a key held in memory (`MemorySigner`), so publishing is tested
//! without another process.

use std::future::Future;
use std::pin::Pin;

use super::AgentClientError;

/// A signature, or the key, on its way.
pub type Signing<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, AgentClientError>> + Send + 'a>>;

pub trait Signer: Send + Sync {
    /// The public key, armored or binary.
    fn public_key(&self, armor: bool) -> Signing<'_>;
    /// `data` as a cleartext-signed message (InRelease).
    fn clearsign<'a>(&'a self, data: &'a [u8]) -> Signing<'a>;
    /// A detached signature of `data`, armored or binary.
    fn detach_sign<'a>(&'a self, data: &'a [u8], armor: bool) -> Signing<'a>;
}

impl Signer for super::AgentClient {
    fn public_key(&self, armor: bool) -> Signing<'_> {
        Box::pin(super::AgentClient::public_key(self, armor))
    }
    fn clearsign<'a>(&'a self, data: &'a [u8]) -> Signing<'a> {
        Box::pin(super::AgentClient::clearsign(self, data))
    }
    fn detach_sign<'a>(&'a self, data: &'a [u8], armor: bool) -> Signing<'a> {
        Box::pin(super::AgentClient::detach_sign(self, data, armor))
    }
}

/// A freshly generated Ed25519 key held in memory, signing as the agent would.
#[cfg(test)]
pub struct MemorySigner {
    cert: sequoia_openpgp::Cert,
}

#[cfg(test)]
impl MemorySigner {
    pub fn new() -> MemorySigner {
        let cert = super::openpgp::generate(
            "caprepo test key <test@localhost>",
            super::openpgp::KeyAlgo::Ed25519,
            None,
        )
        .expect("a test key");
        MemorySigner { cert }
    }

    /// The public key, binary: what `verify` and clients check signatures with.
    pub fn certificate(&self) -> Vec<u8> {
        super::openpgp::public_binary(&self.cert).expect("a public key")
    }

    fn sign(
        &self,
        with: impl FnOnce(
            &sequoia_openpgp::crypto::KeyPair,
        ) -> Result<Vec<u8>, super::openpgp::KeyError>,
    ) -> Result<Vec<u8>, AgentClientError> {
        let keypair = super::openpgp::signing_keypair(&self.cert, None)
            .map_err(|e| AgentClientError::Refused(e.to_string()))?;
        with(&keypair).map_err(|e| AgentClientError::Refused(e.to_string()))
    }
}

#[cfg(test)]
impl Default for MemorySigner {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
impl Signer for MemorySigner {
    fn public_key(&self, armor: bool) -> Signing<'_> {
        let key = if armor {
            super::openpgp::public_armored(&self.cert)
        } else {
            super::openpgp::public_binary(&self.cert)
        };
        Box::pin(async move { key.map_err(|e| AgentClientError::Refused(e.to_string())) })
    }
    fn clearsign<'a>(&'a self, data: &'a [u8]) -> Signing<'a> {
        let signed = self.sign(|keypair| super::openpgp::clearsign(keypair, data));
        Box::pin(async move { signed })
    }
    fn detach_sign<'a>(&'a self, data: &'a [u8], armor: bool) -> Signing<'a> {
        let signed = self.sign(|keypair| super::openpgp::detach_sign(keypair, data, armor));
        Box::pin(async move { signed })
    }
}
