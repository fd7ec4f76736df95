//! Reading an uploaded `.rpm` without loading its payload: the lead, the
//! signature header and the main header through the `rpm` crate, then the
//! payload streamed once through SHA-256 and compared with the digest the
//! header promises, so a corrupted package is refused before anything is stored.

use std::io::{BufReader, Read, Seek, SeekFrom};

use rpm::{DependencyFlags, FileFlags, FileType, IndexSignatureTag, IndexTag, PackageMetadata};
use sha2::{Digest as _, Sha256};

use crate::package_source::PackageSource;

/// What repodata needs to know about one package, read from its headers.
#[derive(Debug, Clone)]
pub struct RpmInfo {
    pub name: String,
    pub epoch: u32,
    pub version: String,
    pub release: String,
    /// `src` for source packages, else the header's arch (`noarch`, `x86_64`, ...).
    pub arch: String,
    pub summary: String,
    pub description: String,
    pub packager: String,
    pub url: String,
    pub license: String,
    pub vendor: String,
    pub group: String,
    pub buildhost: String,
    pub sourcerpm: String,
    pub build_time: u64,
    pub installed_size: u64,
    pub archive_size: u64,
    pub provides: Vec<Dep>,
    pub requires: Vec<Dep>,
    pub conflicts: Vec<Dep>,
    pub obsoletes: Vec<Dep>,
    pub suggests: Vec<Dep>,
    pub enhances: Vec<Dep>,
    pub recommends: Vec<Dep>,
    pub supplements: Vec<Dep>,
    pub files: Vec<FileItem>,
    /// Newest first, as in the header.
    pub changelog: Vec<(String, u64, String)>,
    /// Byte range of the main header in the file (primary.xml's `rpm:header-range`).
    pub header_start: u64,
    pub header_end: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dep {
    pub name: String,
    pub flags: u32,
    /// `[epoch:]version[-release]` as written in the header.
    pub version: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileItem {
    pub path: String,
    pub kind: FileKind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FileKind {
    File,
    Dir,
    Ghost,
}

#[derive(Debug, thiserror::Error)]
pub enum RpmError {
    #[error("not an RPM package: {0}")]
    NotAnRpm(String),
    #[error("the package is truncated or damaged: {0}")]
    Damaged(String),
    #[error("digest mismatch: {0}; the package is corrupted")]
    DigestMismatch(String),
    #[error("invalid package: {0}")]
    Invalid(String),
    #[error("could not read the uploaded file: {0}")]
    Io(std::io::Error),
}

/// Bound on header-derived lists, so a hostile header cannot make us build huge repodata.
const MAX_FILES: usize = 500_000;
const MAX_TEXT: usize = 1024 * 1024;

/// A header string, bounded; missing tags are empty strings, as createrepo_c writes them.
fn text(value: Result<&str, rpm::Error>) -> String {
    value.unwrap_or_default().chars().take(MAX_TEXT).collect()
}

fn deps(list: Result<Vec<rpm::Dependency>, rpm::Error>) -> Vec<Dep> {
    list.unwrap_or_default()
        .into_iter()
        .map(|d| Dep {
            name: d.name,
            flags: d.flags.bits(),
            version: d.version,
        })
        .collect()
}

fn archive_size(meta: &PackageMetadata) -> u64 {
    let header = &meta.header;
    header
        .get_entry_data_as_u64(IndexTag::RPMTAG_LONGARCHIVESIZE)
        .or_else(|_| {
            header
                .get_entry_data_as_u32(IndexTag::RPMTAG_ARCHIVESIZE)
                .map(u64::from)
        })
        .or_else(|_| {
            meta.signature
                .get_entry_data_as_u64(IndexSignatureTag::RPMSIGTAG_LONGARCHIVESIZE)
        })
        .or_else(|_| {
            meta.signature
                .get_entry_data_as_u32(IndexSignatureTag::RPMSIGTAG_PAYLOADSIZE)
                .map(u64::from)
        })
        .unwrap_or(0)
}

/// Parse headers only (lead, signature header, main header).
pub fn read_metadata(source: PackageSource<'_>) -> Result<(PackageMetadata, u64), RpmError> {
    let (mut file, len) = source.open().map_err(RpmError::Io)?;
    let mut magic = [0u8; 4];
    if file.read_exact(&mut magic).is_err() || magic != [0xed, 0xab, 0xee, 0xdb] {
        return Err(RpmError::NotAnRpm(
            "no RPM lead (an .rpm starts with the bytes ed ab ee db)".into(),
        ));
    }
    let parsed = match source.bytes() {
        // A package held in memory is parsed from its bytes: no buffer, no copy.
        Some(mut bytes) => PackageMetadata::parse(&mut bytes),
        None => {
            file.seek(SeekFrom::Start(0)).map_err(RpmError::Io)?;
            PackageMetadata::parse(&mut BufReader::new(file))
        }
    };
    let meta = parsed.map_err(|e| match e {
        rpm::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            RpmError::Damaged("the file ends inside its headers".into())
        }
        rpm::Error::InvalidMagic { .. } => {
            RpmError::NotAnRpm("no RPM lead (an .rpm starts with ed ab ee db)".into())
        }
        other => RpmError::NotAnRpm(other.to_string()),
    })?;
    Ok((meta, len))
}

/// Inspect and verify an `.rpm`, on local disk or in memory.
pub fn inspect_rpm(source: PackageSource<'_>) -> Result<RpmInfo, RpmError> {
    let (meta, len) = read_metadata(source)?;
    let offsets = meta.get_package_segment_offsets();
    if offsets.payload > len {
        return Err(RpmError::Damaged("the file ends inside its headers".into()));
    }
    match meta.verify_digests() {
        Ok(()) | Err(rpm::Error::NoHeaderDigestError) => {}
        Err(e @ rpm::Error::DigestMismatchError { .. }) => {
            return Err(RpmError::DigestMismatch(e.to_string()));
        }
        Err(e) => return Err(RpmError::Damaged(e.to_string())),
    }
    verify_payload(source, &meta, offsets.payload)?;

    let name = meta
        .get_name()
        .map_err(|e| RpmError::Invalid(format!("no name: {e}")))?
        .to_string();
    let version = meta
        .get_version()
        .map_err(|e| RpmError::Invalid(format!("no version: {e}")))?
        .to_string();
    let release = meta
        .get_release()
        .map_err(|e| RpmError::Invalid(format!("no release: {e}")))?
        .to_string();
    for (field, value) in [
        ("name", &name),
        ("version", &version),
        ("release", &release),
    ] {
        let ok = !value.is_empty()
            && value.len() <= 255
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+~^-".contains(&b))
            && !value.starts_with(['.', '-']);
        if !ok || (field != "name" && value.contains('-')) {
            return Err(RpmError::Invalid(format!(
                "{field} {value:?} is not a valid RPM {field}"
            )));
        }
    }
    let arch = if meta.is_source_package() {
        "src".to_string()
    } else {
        let arch = meta
            .get_arch()
            .map_err(|e| RpmError::Invalid(format!("no arch: {e}")))?
            .to_string();
        if arch.is_empty()
            || arch.len() > 64
            || !arch.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(RpmError::Invalid(format!(
                "arch {arch:?} is not a valid RPM architecture"
            )));
        }
        arch
    };

    let mut files = Vec::new();
    for entry in meta.get_file_entries().unwrap_or_default() {
        if files.len() == MAX_FILES {
            return Err(RpmError::Invalid(format!("more than {MAX_FILES} files")));
        }
        let kind = if entry.file_type() == FileType::Dir {
            FileKind::Dir
        } else if entry.flags().contains(FileFlags::GHOST) {
            FileKind::Ghost
        } else {
            FileKind::File
        };
        files.push(FileItem {
            path: format!("{}{}", entry.dirname(), entry.basename()),
            kind,
        });
    }
    let changelog = meta
        .get_changelog_entries()
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.name.trim_end().to_string(), c.timestamp, c.description))
        .collect();

    Ok(RpmInfo {
        epoch: meta.get_epoch().unwrap_or(0),
        summary: text(meta.get_summary()),
        description: text(meta.get_description()),
        packager: text(meta.get_packager()),
        url: text(meta.get_url()),
        license: text(meta.get_license()),
        vendor: text(meta.get_vendor()),
        group: text(meta.get_group()),
        buildhost: text(meta.get_build_host()),
        sourcerpm: if arch == "src" {
            String::new()
        } else {
            text(meta.get_source_rpm())
        },
        build_time: meta.get_build_time().unwrap_or(0),
        installed_size: meta.get_installed_size().unwrap_or(0),
        archive_size: archive_size(&meta),
        provides: deps(meta.get_provides()),
        requires: deps(meta.get_requires()),
        conflicts: deps(meta.get_conflicts()),
        obsoletes: deps(meta.get_obsoletes()),
        suggests: deps(meta.get_suggests()),
        enhances: deps(meta.get_enhances()),
        recommends: deps(meta.get_recommends()),
        supplements: deps(meta.get_supplements()),
        files,
        changelog,
        name,
        version,
        release,
        arch,
        header_start: offsets.header,
        header_end: offsets.payload,
    })
}

/// Stream the payload through SHA-256 and compare with the header's payload digest.
fn verify_payload(
    source: PackageSource<'_>,
    meta: &PackageMetadata,
    payload_offset: u64,
) -> Result<(), RpmError> {
    let Ok(expected) = meta
        .header
        .get_entry_data_as_string_array(IndexTag::RPMTAG_PAYLOADSHA256)
    else {
        return Ok(()); // rpm < 4.14 wrote no payload digest; the header digests were checked
    };
    let Some(expected) = expected.first().map(|s| s.to_ascii_lowercase()) else {
        return Ok(());
    };
    let mut hasher = Sha256::new();
    match source {
        PackageSource::Memory(bytes) => {
            let payload = usize::try_from(payload_offset)
                .ok()
                .and_then(|start| bytes.get(start..))
                .ok_or_else(|| RpmError::Damaged("the file ends inside its headers".into()))?;
            hasher.update(payload);
        }
        PackageSource::File(_) => {
            let (mut file, _) = source.open().map_err(RpmError::Io)?;
            file.seek(SeekFrom::Start(payload_offset))
                .map_err(RpmError::Io)?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = file.read(&mut buf).map_err(RpmError::Io)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
        }
    }
    let actual = hex::encode(hasher.finalize());
    if actual != expected {
        return Err(RpmError::DigestMismatch(format!(
            "payload SHA-256 is {actual}, the header says {expected} (truncated or altered)"
        )));
    }
    Ok(())
}

/// Flag bits that make createrepo_c write `pre="1"`.
pub const PRE_FLAGS: u32 = DependencyFlags::PREREQ.bits()
    | DependencyFlags::SCRIPT_PRE.bits()
    | DependencyFlags::SCRIPT_POST.bits();
