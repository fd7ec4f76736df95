//! Package signing by the agent, so `gpgcheck=1` works without any gpg,
//! passphrase file or expect script on the build worker. The agent signs the
//! main header (the bytes rpm verifies); we rebuild only the signature header
//! around that signature and stream the rest of the file unchanged.

use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use rpm::{Header, HeaderEntry, IndexSignatureTag, PackageMetadata, SignatureHeaderBuilder};

use crate::agent::AgentClient;

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("reading the package to sign: {0}")]
    Rpm(#[from] rpm::Error),
    #[error("writing the signed package: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentClientError),
}

/// The bytes rpm's header signature covers: the main header as it sits in the file.
pub fn bytes_to_sign(path: &Path) -> Result<Vec<u8>, SignError> {
    let mut reader = BufReader::new(File::open(path)?);
    Ok(PackageMetadata::parse(&mut reader)?.header_bytes()?)
}

/// Write `dest`: `source` with `signature` (a binary OpenPGP signature over the
/// main header) added to its signature header. The payload is copied, never loaded.
pub fn write_signed(source: &Path, dest: &Path, signature: Vec<u8>) -> Result<(), SignError> {
    let mut reader = BufReader::new(File::open(source)?);
    let mut meta = PackageMetadata::parse(&mut reader)?;
    let payload_offset = meta.get_package_segment_offsets().payload;
    let original = meta.signature.clone();
    let signed = SignatureHeaderBuilder::from_existing(&original)?
        .add_openpgp_signature(signature)
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

/// Sign `source` into `dest` through the agent.
pub async fn sign_with_agent(
    agent: &AgentClient,
    source: &Path,
    dest: &Path,
) -> Result<(), SignError> {
    let source_path = source.to_path_buf();
    let header = tokio::task::spawn_blocking(move || bytes_to_sign(&source_path))
        .await
        .map_err(|e| SignError::Io(std::io::Error::other(e)))??;
    let signature = agent.detach_sign(&header, false).await?;
    let (source, dest) = (source.to_path_buf(), dest.to_path_buf());
    tokio::task::spawn_blocking(move || write_signed(&source, &dest, signature))
        .await
        .map_err(|e| SignError::Io(std::io::Error::other(e)))?
}
