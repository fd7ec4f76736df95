//! Turning an uploaded file into a package description: walk the ar members,
//! decompress control.tar (gzip, xz, zstd or none) to read `control`, and stream
//! data.tar once to list its files for Contents. Every step is bounded.

use std::io::{self, BufRead, BufReader, Read, SeekFrom};

use super::ar::{self, ArError};
use super::control::{Control, ControlError, MAX_CONTROL_BYTES};
use super::limits::{Bounded, Limits, limit_exceeded};
use crate::package_source::{PackageSource, ReadSeek};

/// What we learn from a valid `.deb`.
#[derive(Debug, Clone)]
pub struct DebInfo {
    pub control: Control,
    /// Paths of the non-directory entries of data.tar, without a leading `./`.
    pub files: Vec<String>,
    pub control_compression: Compression,
    pub data_compression: Compression,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("not a Debian package: {0}")]
    NotADeb(String),
    #[error("the package is truncated or damaged: {0}")]
    Truncated(String),
    #[error("the package has no {0} member")]
    MissingMember(&'static str),
    #[error("control.tar has no ./control file")]
    NoControlFile,
    #[error("bad control file: {0}")]
    Control(#[from] ControlError),
    #[error(
        "{what} decompresses to more than {limit} bytes; refusing it as a possible decompression bomb"
    )]
    TooLarge { what: String, limit: u64 },
    #[error("{0}")]
    Unsupported(String),
    #[error("could not read the uploaded file: {0}")]
    Io(io::Error),
}

impl DebError {
    /// True for refusals caused by limits (HTTP 413) rather than malformed input (HTTP 400).
    pub fn is_limit(&self) -> bool {
        matches!(self, DebError::TooLarge { .. })
    }
}

/// Inspect a `.deb`, on local disk or in memory.
pub fn inspect_deb(source: PackageSource<'_>, limits: &Limits) -> Result<DebInfo, DebError> {
    let (mut file, len) = source.open().map_err(DebError::Io)?;
    let file = &mut *file;
    let in_memory = source.bytes();
    let members = ar::members(file, len).map_err(|e| match e {
        ArError::BadMagic => DebError::NotADeb(e.to_string()),
        ArError::Truncated(..) | ArError::TruncatedHeader => DebError::Truncated(e.to_string()),
        other => DebError::NotADeb(other.to_string()),
    })?;

    let first = members
        .first()
        .ok_or(DebError::MissingMember("debian-binary"))?;
    if first.name != "debian-binary" {
        return Err(DebError::NotADeb(format!(
            "the first ar member is {:?}; a .deb starts with debian-binary",
            first.name
        )));
    }
    let format_version = read_small(file, first.offset, first.size.min(64))?;
    if !format_version.starts_with(b"2.") {
        return Err(DebError::Unsupported(format!(
            "debian-binary says format {:?}; only 2.x is supported",
            String::from_utf8_lossy(&format_version).trim()
        )));
    }

    let control_member = find_member(&members, "control.tar")?;
    let data_member = find_member(&members, "data.tar")?;
    if control_member.offset > data_member.offset {
        return Err(DebError::NotADeb(
            "control.tar comes after data.tar; dpkg requires debian-binary, control.tar, data.tar in that order".into(),
        ));
    }
    let control_compression = compression_of(&control_member.name, "control.tar")?;
    let data_compression = compression_of(&data_member.name, "data.tar")?;

    let control_bytes = {
        let reader = member_reader(in_memory, file, control_member)?;
        let decompressed = Bounded::new(
            decompressor(reader, control_compression)?,
            limits.control_tar,
        );
        read_control_file(decompressed, &control_member.name)?
    };
    let control = Control::parse(&control_bytes)?;

    let files = {
        let reader = member_reader(in_memory, file, data_member)?;
        let limit = limits.data_tar_for(data_member.size);
        let decompressed = Bounded::new(decompressor(reader, data_compression)?, limit);
        list_data_files(decompressed, &data_member.name, limits)?
    };

    Ok(DebInfo {
        control,
        files,
        control_compression,
        data_compression,
    })
}

fn find_member<'a>(
    members: &'a [ar::Member],
    stem: &'static str,
) -> Result<&'a ar::Member, DebError> {
    members
        .iter()
        .find(|m| {
            m.name == stem
                || m.name
                    .strip_prefix(stem)
                    .is_some_and(|rest| rest.starts_with('.'))
        })
        .ok_or(DebError::MissingMember(stem))
}

fn compression_of(name: &str, stem: &str) -> Result<Compression, DebError> {
    match name.strip_prefix(stem).unwrap_or_default() {
        "" => Ok(Compression::None),
        ".gz" => Ok(Compression::Gzip),
        ".xz" => Ok(Compression::Xz),
        ".zst" => Ok(Compression::Zstd),
        other => Err(DebError::Unsupported(format!(
            "{name}: compression {other:?} is not supported; rebuild with dpkg-deb -Zxz, -Zgzip, -Zzstd or -Znone"
        ))),
    }
}

fn read_small(file: &mut dyn ReadSeek, offset: u64, len: u64) -> Result<Vec<u8>, DebError> {
    file.seek(SeekFrom::Start(offset)).map_err(DebError::Io)?;
    let mut buf = Vec::new();
    Read::take(file, len)
        .read_to_end(&mut buf)
        .map_err(DebError::Io)?;
    Ok(buf)
}

/// A member's bytes as buffered input: a slice of a package held in memory (nothing
/// copied), or a buffered read of the file.
fn member_reader<'f>(
    in_memory: Option<&'f [u8]>,
    file: &'f mut dyn ReadSeek,
    member: &ar::Member,
) -> Result<Box<dyn BufRead + 'f>, DebError> {
    if let Some(bytes) = in_memory {
        let start = usize::try_from(member.offset).ok();
        let end = start.zip(usize::try_from(member.size).ok());
        return end
            .and_then(|(start, size)| bytes.get(start..start.checked_add(size)?))
            .map(|slice| Box::new(slice) as Box<dyn BufRead + 'f>)
            .ok_or_else(|| DebError::Truncated(format!("{} runs past the end", member.name)));
    }
    file.seek(SeekFrom::Start(member.offset))
        .map_err(DebError::Io)?;
    // Never a bigger buffer than the member: a few-KiB deb got (and zeroed) 256 KiB twice.
    let capacity = member.size.clamp(512, 256 * 1024) as usize;
    Ok(Box::new(BufReader::with_capacity(
        capacity,
        file.take(member.size),
    )))
}

/// xz and zstd decoders allocate a window chosen by the stream; cap that too.
const DECODER_MEMORY: u64 = 256 * 1024 * 1024;
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// The decoders read buffered input directly: their `read` forms add a zeroed 32 KiB
/// buffer and a copy per member, which showed in a cold import's profile.
fn decompressor<'r, R: BufRead + 'r>(
    reader: R,
    compression: Compression,
) -> Result<Box<dyn Read + 'r>, DebError> {
    Ok(match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Xz => {
            let stream = liblzma::stream::Stream::new_stream_decoder(
                DECODER_MEMORY,
                liblzma::stream::CONCATENATED,
            )
            .map_err(|e| DebError::Unsupported(format!("cannot start the xz decoder: {e}")))?;
            Box::new(liblzma::bufread::XzDecoder::new_stream(reader, stream))
        }
        Compression::Zstd => {
            let mut decoder =
                zstd::stream::read::Decoder::with_buffer(reader).map_err(DebError::Io)?;
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(DebError::Io)?;
            Box::new(decoder)
        }
    })
}

fn classify_io(err: io::Error, what: &str) -> DebError {
    if let Some(limit) = limit_exceeded(&err) {
        return DebError::TooLarge {
            what: what.to_string(),
            limit,
        };
    }
    if let Some(inner) = err.get_ref().and_then(|e| e.downcast_ref::<io::Error>())
        && let Some(limit) = limit_exceeded(inner)
    {
        return DebError::TooLarge {
            what: what.to_string(),
            limit,
        };
    }
    DebError::Truncated(format!("{what}: {err}"))
}

fn normalize_tar_path(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    let trimmed = text.trim_start_matches("./").trim_start_matches('/');
    if trimmed.is_empty() {
        None
    } else {
        Some(trimmed.to_string())
    }
}

fn read_control_file(reader: impl Read, member: &str) -> Result<Vec<u8>, DebError> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| classify_io(e, member))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| classify_io(e, member))?;
        let path = entry.path_bytes();
        if normalize_tar_path(&path).as_deref() == Some("control")
            && entry.header().entry_type().is_file()
        {
            let mut control = Vec::new();
            entry
                .by_ref()
                .take(MAX_CONTROL_BYTES as u64 + 1)
                .read_to_end(&mut control)
                .map_err(|e| classify_io(e, member))?;
            if control.len() > MAX_CONTROL_BYTES {
                return Err(DebError::TooLarge {
                    what: "the control file".into(),
                    limit: MAX_CONTROL_BYTES as u64,
                });
            }
            // Keep reading to the end of control.tar so a bomb hidden after `control` is caught too.
            let mut rest = archive.into_inner();
            io::copy(&mut rest, &mut io::sink()).map_err(|e| classify_io(e, member))?;
            return Ok(control);
        }
    }
    Err(DebError::NoControlFile)
}

fn list_data_files(
    reader: impl Read,
    member: &str,
    limits: &Limits,
) -> Result<Vec<String>, DebError> {
    let mut archive = tar::Archive::new(reader);
    let mut files = Vec::new();
    let mut name_bytes = 0usize;
    let entries = archive.entries().map_err(|e| classify_io(e, member))?;
    for entry in entries {
        let entry = entry.map_err(|e| classify_io(e, member))?;
        if entry.header().entry_type().is_dir() {
            continue;
        }
        if let Some(path) = normalize_tar_path(&entry.path_bytes()) {
            name_bytes += path.len();
            if files.len() >= limits.data_entries || name_bytes > limits.file_list_bytes {
                return Err(DebError::TooLarge {
                    what: format!("{member} file list"),
                    limit: limits.data_entries as u64,
                });
            }
            files.push(path);
        }
    }
    // tar stops at the end-of-archive marker; drain what follows so bounds still apply.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| classify_io(e, member))?;
    Ok(files)
}
