//! Package signing by the agent, so `gpgcheck=1` works without any gpg,
//! passphrase file or expect script on the build worker. The agent signs the
//! main header (the bytes rpm verifies); we rebuild only the signature header
//! around that signature and stream the rest of the file unchanged.
//!
//! Packages built by rpm older than 4.14 carry no payload digest, so a header
//! signature does not cover their payload and rpm (and dnf with `gpgcheck=1`)
//! wants the legacy header+payload signature too. For those the agent also
//! signs the bytes from the main header to the end of the file, as `rpmsign`
//! does, after the package's MD5 proved those bytes are the ones it was built with.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use md5::{Digest as _, Md5};
use rpm::{
    Header, HeaderEntry, IndexData, IndexSignatureTag, IndexTag, PackageMetadata,
    SignatureHeaderBuilder,
};
use sequoia_openpgp::types::PublicKeyAlgorithm;
use sequoia_openpgp::{Packet, parse::Parse};

use crate::agent::Signer;
use crate::agent::protocol::MAX_FRAME;
use crate::ingest::IngestError;

/// The most header+payload bytes one agent request can carry: the request is JSON with
/// the bytes in base64 (4 characters per 3 bytes), and 1 KiB is left for the envelope.
pub const MAX_LEGACY_SIGNED_BYTES: u64 = ((MAX_FRAME - 1024) / 4 * 3) as u64;

/// Header+payload signing holds the whole package in memory several times over (raw,
/// base64, JSON): one at a time bounds what concurrent legacy uploads can take. Process
/// wide on purpose: it bounds this process's memory, whichever store the upload is for,
/// and holds no repository data.
static LEGACY_SIGNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("reading the package to sign: {0}")]
    Rpm(#[from] rpm::Error),
    #[error("writing the signed package: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentClientError),
    #[error(
        "the package has no payload digest (rpm older than 4.14 built it), so rpm trusts only a \
         signature over its header and payload, {size} bytes; the signing agent takes at most \
         {MAX_LEGACY_SIGNED_BYTES} bytes in one request. Upload it to a repository created with \
         --no-sign-packages, or rebuild it with rpm 4.14 or newer"
    )]
    LegacyTooLarge { size: u64 },
    #[error(
        "the package has no payload digest (rpm older than 4.14 built it) and {0}, so nothing \
         proves its payload is the one it was built with; caprepo will not sign it"
    )]
    LegacyUnverifiable(&'static str),
    #[error("the signing agent made a {0} signature, which rpm has no signature tag for")]
    UnsupportedAlgorithm(String),
}

impl From<SignError> for IngestError {
    fn from(e: SignError) -> Self {
        match e {
            SignError::LegacyTooLarge { .. } | SignError::LegacyUnverifiable(_) => {
                IngestError::BadPackage(e.to_string())
            }
            other => IngestError::Internal(format!("signing the package: {other}")),
        }
    }
}

/// What the agent signs for one package.
pub struct SigningTarget {
    /// The main header as it sits in the file (rpm's header signature covers it).
    pub header: Vec<u8>,
    /// For a package without a payload digest: where its main header starts and how many
    /// bytes from there to the end of the file the header+payload signature covers.
    pub legacy_range: Option<(u64, u64)>,
}

/// Read the headers of `path` and decide what must be signed; refuse a package whose
/// header+payload signature the agent cannot make, before anything is signed.
pub fn signing_target(path: &Path) -> Result<SigningTarget, SignError> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let meta = PackageMetadata::parse(&mut BufReader::new(file))?;
    // rpmsign's rule (sign/rpmgensig.c): neither payload digest, so add the legacy signature.
    let has_payload_digest = meta.header.entry_is_present(IndexTag::RPMTAG_PAYLOADSHA256)
        || meta
            .header
            .entry_is_present(IndexTag::RPMTAG_PAYLOADSHA256ALT);
    let header_start = meta.get_package_segment_offsets().header;
    let legacy_size = file_len.saturating_sub(header_start);
    if !has_payload_digest && legacy_size > MAX_LEGACY_SIGNED_BYTES {
        return Err(SignError::LegacyTooLarge { size: legacy_size });
    }
    Ok(SigningTarget {
        header: meta.header_bytes()?,
        legacy_range: (!has_payload_digest).then_some((header_start, legacy_size)),
    })
}

/// Header and payload of a package without a payload digest, checked against the MD5 in
/// its signature header (rpm's only digest over them) before anything signs them.
/// `size` is at most MAX_LEGACY_SIGNED_BYTES (`signing_target` refuses more).
fn legacy_bytes(path: &Path, start: u64, size: u64) -> Result<Vec<u8>, SignError> {
    let mut reader = BufReader::new(File::open(path)?);
    let meta = PackageMetadata::parse(&mut reader)?;
    let expected = match meta.signature.entry(IndexSignatureTag::RPMSIGTAG_MD5) {
        Ok(IndexData::Bin(md5)) => md5,
        _ => return Err(SignError::LegacyUnverifiable("no MD5 digest")),
    };
    let mut file = reader.into_inner();
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity(size.min(MAX_LEGACY_SIGNED_BYTES) as usize);
    file.take(size).read_to_end(&mut bytes)?;
    if Md5::digest(&bytes).as_slice() != expected.as_slice() {
        return Err(SignError::LegacyUnverifiable(
            "its MD5 digest does not match its header and payload",
        ));
    }
    Ok(bytes)
}

/// The signature header tags rpm 4.18's `rpmsign` stores a signature of this key's
/// algorithm in: (header only, header+payload).
fn signature_tags(signature: &[u8]) -> Result<(IndexSignatureTag, IndexSignatureTag), SignError> {
    let algorithm = match Packet::from_bytes(signature) {
        Ok(Packet::Signature(sig)) => sig.pk_algo(),
        _ => return Err(SignError::UnsupportedAlgorithm("unparsable".into())),
    };
    #[allow(deprecated)] // RSASign is deprecated for new keys, but old keys still sign with it.
    match algorithm {
        PublicKeyAlgorithm::RSAEncryptSign | PublicKeyAlgorithm::RSASign => Ok((
            IndexSignatureTag::RPMSIGTAG_RSA,
            IndexSignatureTag::RPMSIGTAG_PGP,
        )),
        PublicKeyAlgorithm::DSA | PublicKeyAlgorithm::EdDSA | PublicKeyAlgorithm::Ed25519 => Ok((
            IndexSignatureTag::RPMSIGTAG_DSA,
            IndexSignatureTag::RPMSIGTAG_GPG,
        )),
        other => Err(SignError::UnsupportedAlgorithm(other.to_string())),
    }
}

/// Write `dest`: `source` with `signature` (a binary OpenPGP signature over the
/// main header) added to its signature header, and `legacy_signature` (over header
/// and payload) when the package needs one. The payload is copied, never loaded.
pub fn write_signed(
    source: &Path,
    dest: &Path,
    signature: Vec<u8>,
    legacy_signature: Option<Vec<u8>>,
) -> Result<(), SignError> {
    let (header_tag, legacy_tag) = signature_tags(&signature)?;
    let mut reader = BufReader::new(File::open(source)?);
    let mut meta = PackageMetadata::parse(&mut reader)?;
    let payload_offset = meta.get_package_segment_offsets().payload;
    let original = meta.signature.clone();
    let signed = SignatureHeaderBuilder::from_existing(&original)?
        .add_openpgp_signature(signature.clone())
        .build()?;
    // The builder keeps only digests and signatures; MD5 and PAYLOADSIZE cover the unchanged
    // header and payload, so they stay valid, and createrepo_c reads the archive size from them.
    let mut entries: Vec<HeaderEntry> = signed
        .get_all_entries()?
        .into_iter()
        .filter(|(tag, _)| *tag != u32::from(IndexSignatureTag::HEADER_SIGNATURES))
        .map(|(tag, data)| HeaderEntry::new(tag, data))
        .collect();
    for tag in [
        IndexSignatureTag::RPMSIGTAG_PAYLOADSIZE,
        IndexSignatureTag::RPMSIGTAG_MD5,
    ] {
        if let Ok(data) = original.entry(tag) {
            entries.push(HeaderEntry::new(u32::from(tag), data));
        }
    }
    // For a v6-format package the builder writes the signature only in RPMSIGTAG_OPENPGP,
    // which rpm before 6.0 does not read: dnf 4 would call the package unsigned. rpm 6
    // ignores the v4 tag once an OPENPGP one is present, so both can carry it.
    if !entries.iter().any(|e| e.tag == u32::from(header_tag)) {
        entries.push(HeaderEntry::new(
            u32::from(header_tag),
            IndexData::Bin(signature),
        ));
    }
    if let Some(legacy) = legacy_signature {
        entries.push(HeaderEntry::new(
            u32::from(legacy_tag),
            IndexData::Bin(legacy),
        ));
    }
    meta.signature =
        Header::<IndexSignatureTag>::from_entries(entries, IndexSignatureTag::HEADER_SIGNATURES);

    let mut out = BufWriter::new(File::create(dest)?);
    meta.write(&mut out)?;
    let mut rest = reader.into_inner();
    rest.seek(SeekFrom::Start(payload_offset))?;
    std::io::copy(&mut rest, &mut out)?;
    out.flush()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SignError> + Send + 'static,
) -> Result<T, SignError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| SignError::Io(std::io::Error::other(e)))?
}

/// Sign `source` into `dest` through the agent.
pub async fn sign_with_agent(
    agent: &dyn Signer,
    source: &Path,
    dest: &Path,
) -> Result<(), SignError> {
    let source_path = source.to_path_buf();
    let target = blocking(move || signing_target(&source_path)).await?;
    let signature = agent.detach_sign(&target.header, false).await?;
    let legacy_signature = match target.legacy_range {
        None => None,
        Some((start, size)) => {
            let _one_at_a_time = LEGACY_SIGNING
                .acquire()
                .await
                .map_err(|e| SignError::Io(std::io::Error::other(e)))?;
            let source_path = source.to_path_buf();
            let bytes = blocking(move || legacy_bytes(&source_path, start, size)).await?;
            Some(agent.detach_sign(&bytes, false).await?)
        }
    };
    let (source, dest) = (source.to_path_buf(), dest.to_path_buf());
    blocking(move || write_signed(&source, &dest, signature, legacy_signature)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::protocol::{self, Request};

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/rpms")
            .join(name)
    }

    #[test]
    fn the_largest_legacy_request_fits_one_agent_frame() {
        let data = vec![0xffu8; MAX_LEGACY_SIGNED_BYTES as usize];
        let request = Request::DetachSign {
            data: protocol::encode(&data),
            armor: false,
        };
        let frame = serde_json::to_vec(&request).unwrap().len();
        assert!(frame <= MAX_FRAME, "{frame} > {MAX_FRAME}");
        assert!(
            MAX_FRAME - frame < 1100,
            "the bound wastes {} bytes",
            MAX_FRAME - frame
        );
    }

    #[test]
    fn only_packages_without_a_payload_digest_need_the_legacy_signature() {
        let legacy = signing_target(&fixture("legacy-caprepo-1.0-1.noarch.rpm")).unwrap();
        let file_len = std::fs::metadata(fixture("legacy-caprepo-1.0-1.noarch.rpm"))
            .unwrap()
            .len();
        let (start, size) = legacy.legacy_range.expect("legacy range");
        assert_eq!(start + size, file_len);
        assert!(size > legacy.header.len() as u64);
        for modern in [
            "standalone-caprepo-1.0-1.noarch.rpm",
            "upstream/v6/rpm-basic-2.3.4-5.el9.noarch.rpm",
        ] {
            assert!(
                signing_target(&fixture(modern))
                    .unwrap()
                    .legacy_range
                    .is_none()
            );
        }
    }

    #[test]
    fn a_legacy_payload_that_fails_its_md5_is_not_signed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("altered.rpm");
        let mut bytes = std::fs::read(fixture("legacy-caprepo-1.0-1.noarch.rpm")).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (start, size) = signing_target(&path).unwrap().legacy_range.unwrap();
        let refused = legacy_bytes(&path, start, size).unwrap_err();
        assert!(
            matches!(refused, SignError::LegacyUnverifiable(_)),
            "{refused}"
        );
        let intact = fixture("legacy-caprepo-1.0-1.noarch.rpm");
        assert_eq!(
            legacy_bytes(&intact, start, size).unwrap().len() as u64,
            size
        );
    }
}
