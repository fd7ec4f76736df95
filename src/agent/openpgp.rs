//! The OpenPGP side of the agent: making the signing certificate, loading its
//! secret key, and producing the two signatures APT wants over a Release file:
//! InRelease (cleartext-signed, so one download carries file and signature) and
//! Release.gpg (an armored detached signature, for older clients and `sqv`).
//!
//! Keys are v4 with a single primary key that certifies and signs: no subkey
//! means no embedded back-signature, and the primary-user-ID flag is written
//! non-critical, because rpm 4.18 refuses certificates with unknown critical
//! subpackets (NOTES.md). The pure-Rust crypto backend's RSA is variable-time;
//! that is acceptable only because the key signs inside this one process.

use std::io::Write;

use openpgp::cert::{CertBuilder, CipherSuite};
use openpgp::crypto::{KeyPair, Password};
use openpgp::packet::Key;
use openpgp::packet::key::{SecretParts, UnspecifiedRole};
use openpgp::packet::signature::SignatureBuilder;
use openpgp::packet::signature::subpacket::{Subpacket, SubpacketValue};
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::SerializeInto;
use openpgp::serialize::stream::{Armorer, Message, Signer};
use openpgp::types::{Features, HashAlgorithm, KeyFlags, SignatureType};
use openpgp::{Cert, Profile, armor};
use sequoia_openpgp as openpgp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyAlgo {
    /// Ed25519 (EdDSA): small, fast; apt, gpgv and rpm >= 4.16 verify it.
    Ed25519,
    /// RSA 4096: for clients that cannot verify Ed25519 (EL7/EL8 rpm, FIPS mode).
    Rsa4096,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("OpenPGP: {0:#}")]
    OpenPgp(#[from] anyhow::Error),
    #[error("the signing key is passphrase-protected and no passphrase was given")]
    NeedPassphrase,
    #[error("wrong passphrase for the signing key")]
    WrongPassphrase,
    #[error("the key file holds no usable signing key")]
    NoSigningKey,
    #[error(
        "the signing key is {0}, which current clients refuse: apt 3.0 (sqv's policy) rejects DSA and RSA under 2048 bits, and rpm 4.x cannot verify DSA or ECDSA package signatures from caprepo; use an Ed25519 key or RSA of at least 2048 bits (better 4096), e.g. `caprepo init --key-algo rsa4096`"
    )]
    WeakKey(String),
}

/// Generate the repository signing certificate (secret parts included).
pub fn generate(
    userid: &str,
    algo: KeyAlgo,
    passphrase: Option<Password>,
) -> Result<Cert, KeyError> {
    let suite = match algo {
        KeyAlgo::Ed25519 => CipherSuite::Cv25519,
        KeyAlgo::Rsa4096 => CipherSuite::RSA4k,
    };
    let uid_template = SignatureBuilder::new(SignatureType::PositiveCertification)
        .modify_hashed_area(|mut area| {
            area.replace(Subpacket::new(SubpacketValue::PrimaryUserID(true), false)?)?;
            Ok(area)
        })?;
    let (cert, _revocation) = CertBuilder::new()
        .set_profile(Profile::RFC4880)?
        .set_cipher_suite(suite)
        .set_primary_key_flags(KeyFlags::empty().set_certification().set_signing())
        .set_validity_period(None)
        .set_features(Features::empty().set_seipdv1())?
        .set_password(passphrase)
        .add_userid_with(userid, uid_template)?
        .generate()?;
    Ok(cert)
}

pub fn secret_armored(cert: &Cert) -> Result<Vec<u8>, KeyError> {
    Ok(cert.as_tsk().armored().to_vec()?)
}

pub fn public_armored(cert: &Cert) -> Result<Vec<u8>, KeyError> {
    Ok(cert.armored().to_vec()?)
}

pub fn public_binary(cert: &Cert) -> Result<Vec<u8>, KeyError> {
    Ok(cert.to_vec()?)
}

pub fn parse_cert(bytes: &[u8]) -> Result<Cert, KeyError> {
    Ok(Cert::from_bytes(bytes)?)
}

pub fn fingerprint(cert: &Cert) -> String {
    cert.fingerprint().to_hex()
}

/// A short name of the primary key's algorithm, for the config file.
pub fn algorithm_name(cert: &Cert) -> String {
    match cert.primary_key().key().pk_algo() {
        openpgp::types::PublicKeyAlgorithm::RSAEncryptSign => {
            format!("rsa{}", cert.primary_key().key().mpis().bits().unwrap_or(0))
        }
        openpgp::types::PublicKeyAlgorithm::EdDSA | openpgp::types::PublicKeyAlgorithm::Ed25519 => {
            "ed25519".into()
        }
        other => other.to_string().to_lowercase(),
    }
}

/// The certificate's usable signing-capable secret key (still locked if protected).
fn signing_key(cert: &Cert) -> Result<Key<SecretParts, UnspecifiedRole>, KeyError> {
    let policy = StandardPolicy::new();
    let amalgamation = cert
        .keys()
        .secret()
        .with_policy(&policy, None)
        .supported()
        .alive()
        .revoked(false)
        .for_signing()
        .next()
        .ok_or(KeyError::NoSigningKey)?;
    Ok(amalgamation.key().clone())
}

/// Refuses a signing key the clients of a repository would refuse: what apt 3.0's sqv
/// policy and rpm accept is RSA of at least 2048 bits and EdDSA (Ed25519).
pub fn check_client_acceptable(cert: &Cert) -> Result<(), KeyError> {
    use openpgp::types::PublicKeyAlgorithm as Algo;
    let key = signing_key(cert)?;
    let bits = key.mpis().bits().unwrap_or(0);
    match key.pk_algo() {
        Algo::RSAEncryptSign if bits >= 2048 => Ok(()),
        Algo::EdDSA | Algo::Ed25519 => Ok(()),
        Algo::RSAEncryptSign => Err(KeyError::WeakKey(format!("RSA {bits}"))),
        other => Err(KeyError::WeakKey(format!("{other} ({bits} bits)"))),
    }
}

/// True if the certificate's signing key material is passphrase-protected.
pub fn needs_passphrase(cert: &Cert) -> Result<bool, KeyError> {
    Ok(signing_key(cert)?.secret().is_encrypted())
}

/// Unlock the signing key. The decrypted key lives only in sequoia's protected memory.
pub fn signing_keypair(cert: &Cert, passphrase: Option<&Password>) -> Result<KeyPair, KeyError> {
    let key = signing_key(cert)?;
    if key.secret().is_encrypted() {
        let passphrase = passphrase.ok_or(KeyError::NeedPassphrase)?;
        let unlocked = key
            .decrypt_secret(passphrase)
            .map_err(|_| KeyError::WrongPassphrase)?;
        Ok(unlocked.into_keypair()?)
    } else {
        Ok(key.into_keypair()?)
    }
}

/// InRelease: the text with its signature in one cleartext-signed message.
pub fn clearsign(keypair: &KeyPair, data: &[u8]) -> Result<Vec<u8>, KeyError> {
    // gpg never signs the final line ending; dropping it gives gpg-identical framing.
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let mut out = Vec::new();
    let message = Message::new(&mut out);
    let mut signer = Signer::new(message, keypair.clone())?
        .hash_algo(HashAlgorithm::SHA512)?
        .cleartext()
        .build()?;
    signer.write_all(body).map_err(anyhow::Error::from)?;
    signer.finalize()?;
    Ok(out)
}

/// Release.gpg / repomd.xml.asc: an armored detached signature.
pub fn detach_sign(keypair: &KeyPair, data: &[u8], armored: bool) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::new();
    let message = Message::new(&mut out);
    let message = if armored {
        Armorer::new(message).kind(armor::Kind::Signature).build()?
    } else {
        message
    };
    let mut signer = Signer::new(message, keypair.clone())?
        .hash_algo(HashAlgorithm::SHA512)?
        .detached()
        .build()?;
    signer.write_all(data).map_err(anyhow::Error::from)?;
    signer.finalize()?;
    Ok(out)
}

/// Accepts a signature when any signature in it verifies with the certificate.
struct VerifyWith(Cert);

impl openpgp::parse::stream::VerificationHelper for VerifyWith {
    fn get_certs(&mut self, _ids: &[openpgp::KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(vec![self.0.clone()])
    }

    fn check(
        &mut self,
        structure: openpgp::parse::stream::MessageStructure,
    ) -> openpgp::Result<()> {
        for layer in structure.into_iter() {
            if let openpgp::parse::stream::MessageLayer::SignatureGroup { results } = layer
                && results.iter().any(|r| r.is_ok())
            {
                return Ok(());
            }
        }
        Err(anyhow::anyhow!("no valid signature"))
    }
}

/// True if `signature` (armored or binary, detached) is a valid signature of `data` by `certificate`.
pub fn verify_detached(certificate: &[u8], signature: &[u8], data: &[u8]) -> bool {
    use openpgp::parse::stream::DetachedVerifierBuilder;
    let Ok(cert) = Cert::from_bytes(certificate) else {
        return false;
    };
    let policy = StandardPolicy::new();
    DetachedVerifierBuilder::from_bytes(signature)
        .and_then(|b| b.with_policy(&policy, None, VerifyWith(cert)))
        .and_then(|mut v| v.verify_bytes(data))
        .is_ok()
}

/// The text of a cleartext-signed message (InRelease) if its signature verifies.
pub fn verify_cleartext(certificate: &[u8], signed: &[u8]) -> Option<String> {
    use openpgp::parse::stream::VerifierBuilder;
    use std::io::Read;
    let cert = Cert::from_bytes(certificate).ok()?;
    let policy = StandardPolicy::new();
    let mut verifier = VerifierBuilder::from_bytes(signed)
        .ok()?
        .with_policy(&policy, None, VerifyWith(cert))
        .ok()?;
    let mut text = String::new();
    verifier.read_to_string(&mut text).ok()?;
    verifier.message_processed().then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrase_protects_and_unlocks() {
        let cert = generate(
            "t <t@localhost>",
            KeyAlgo::Ed25519,
            Some("correct horse".into()),
        )
        .unwrap();
        let reloaded = parse_cert(&secret_armored(&cert).unwrap()).unwrap();
        assert!(needs_passphrase(&reloaded).unwrap());
        assert!(matches!(
            signing_keypair(&reloaded, None),
            Err(KeyError::NeedPassphrase)
        ));
        assert!(matches!(
            signing_keypair(&reloaded, Some(&"wrong".into())),
            Err(KeyError::WrongPassphrase)
        ));
        let pair = signing_keypair(&reloaded, Some(&"correct horse".into())).unwrap();
        let signed = clearsign(&pair, b"Origin: x\nSuite: stable\n").unwrap();
        let text = String::from_utf8(signed).unwrap();
        assert!(text.starts_with("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: x\nSuite: stable\n-----BEGIN PGP SIGNATURE-----"), "{text}");
        let public = public_armored(&reloaded).unwrap();
        let detached = detach_sign(&pair, b"data", true).unwrap();
        assert!(verify_detached(&public, &detached, b"data"));
        assert!(!verify_detached(&public, &detached, b"date"));
        assert_eq!(
            verify_cleartext(&public, text.as_bytes()).as_deref(),
            Some("Origin: x\nSuite: stable")
        );
        assert!(!String::from_utf8_lossy(&public).contains("PRIVATE"));
    }
}
