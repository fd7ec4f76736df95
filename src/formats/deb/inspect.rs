//! Turning an uploaded file into a package description: walk the ar members,
//! decompress control.tar (gzip, xz, zstd or none) to read `control`, and stream
//! data.tar once to list its files for Contents. Every step is bounded.
//!
//! The ar layout is dpkg-deb's (`src/deb/extract.c`): `debian-binary` first, holding
//! `2.<minor>` and a newline; then exactly one `control.tar[.gz|.xz|.zst]`; then one
//! `data.tar[...]`. Members whose name starts with `_` are optional extras (debsigs'
//! `_gpgorigin`) and are skipped wherever they are after `debian-binary`. Any other
//! member before data.tar is refused, as dpkg-deb does ("premature member", "two control
//! members"); dpkg never reads past data.tar, but we refuse a non-`_` member there too,
//! so no tool can see a second data or control member we did not inspect. Empty
//! control or data members are refused, as dpkg-deb does.

use std::io::{self, BufRead, BufReader, Read, SeekFrom};

use super::ar::{self, ArError};
use super::control::{Control, ControlError, MAX_CONTROL_BYTES};
use super::limits::{Bounded, LimitUnit, Limits, limit_exceeded};
use super::paths::{BadPath, contents_path};
use super::tar::{EntryKind, TarError, TarWalker};
use crate::formats::package_bytes::{PackageBytes, ReadSeek};

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
    #[error("{member}: {why}")]
    BadTar { member: String, why: String },
    #[error("{member}: {why}")]
    BadPath { member: String, why: BadPath },
    #[error("{what} {}", unit.describe(*limit))]
    TooLarge {
        what: String,
        limit: u64,
        unit: LimitUnit,
    },
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
pub fn inspect_deb(source: PackageBytes<'_>, limits: &Limits) -> Result<DebInfo, DebError> {
    let (mut file, len) = source.open().map_err(DebError::Io)?;
    let file = &mut *file;
    let in_memory = source.bytes();
    let members = ar::members(file, len).map_err(|e| match e {
        ArError::BadMagic => DebError::NotADeb(e.to_string()),
        ArError::Truncated(..) | ArError::TruncatedHeader => DebError::Truncated(e.to_string()),
        other => DebError::NotADeb(other.to_string()),
    })?;

    let layout = member_layout(&members)?;
    let format_version = read_small(
        file,
        layout.debian_binary.offset,
        layout.debian_binary.size.min(64),
    )?;
    check_format_version(&format_version)?;
    let (control_member, data_member) = (layout.control, layout.data);
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

/// The members that matter, found by dpkg-deb's rules (see the module doc).
struct Layout<'a> {
    debian_binary: &'a ar::Member,
    control: &'a ar::Member,
    data: &'a ar::Member,
}

fn member_layout(members: &[ar::Member]) -> Result<Layout<'_>, DebError> {
    let (debian_binary, rest) = members
        .split_first()
        .ok_or(DebError::MissingMember("debian-binary"))?;
    if debian_binary.name != "debian-binary" {
        return Err(DebError::NotADeb(format!(
            "the first ar member is {:?}; a .deb starts with debian-binary",
            debian_binary.name
        )));
    }
    let is_stem = |member: &ar::Member, stem: &str| {
        member
            .name
            .strip_prefix(stem)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    };
    let (mut control, mut data) = (None::<&ar::Member>, None::<&ar::Member>);
    for member in rest.iter().filter(|m| !m.name.starts_with('_')) {
        let refuse = |why: String| Err(DebError::NotADeb(why));
        if data.is_some() {
            return refuse(format!(
                "member {:?} comes after data.tar; only optional members named _* may follow it",
                member.name
            ));
        }
        if is_stem(member, "control.tar") {
            if control.is_some() {
                return refuse(
                    "the archive contains two control members (dpkg-deb refuses that)".into(),
                );
            }
            control = Some(member);
        } else if is_stem(member, "data.tar") {
            if control.is_none() {
                return refuse(
                    "data.tar comes before control.tar; dpkg requires debian-binary, control.tar, data.tar in that order".into(),
                );
            }
            data = Some(member);
        } else {
            let before = if control.is_none() {
                "control.tar"
            } else {
                "data.tar"
            };
            return refuse(format!(
                "premature member {:?} before {before} (dpkg-deb refuses it; optional members are named _*)",
                member.name
            ));
        }
        if member.size == 0 {
            return refuse(format!("the {} member is empty", member.name));
        }
    }
    Ok(Layout {
        debian_binary,
        control: control.ok_or(DebError::MissingMember("control.tar"))?,
        data: data.ok_or(DebError::MissingMember("data.tar"))?,
    })
}

/// `debian-binary` as dpkg's `deb_version_parse` reads it: `<major>.<minor>` then a
/// newline; only major version 2 exists.
fn check_format_version(text: &[u8]) -> Result<(), DebError> {
    let shown = || {
        String::from_utf8_lossy(text)
            .trim()
            .chars()
            .take(20)
            .collect::<String>()
    };
    let line = text
        .split(|b| *b == b'\n')
        .next()
        .filter(|_| text.contains(&b'\n'))
        .ok_or_else(|| DebError::NotADeb("debian-binary has no newline".into()))?;
    let mut parts = line.splitn(2, |b| *b == b'.');
    let (major, minor) = (parts.next().unwrap_or_default(), parts.next());
    let number =
        |part: &[u8]| !part.is_empty() && part.len() <= 9 && part.iter().all(u8::is_ascii_digit);
    let well_formed = number(major) && minor.is_some_and(number);
    if !well_formed {
        return Err(DebError::NotADeb(format!(
            "debian-binary holds {:?}, not a format version such as 2.0",
            shown()
        )));
    }
    if !line.starts_with(b"2.") {
        return Err(DebError::Unsupported(format!(
            "debian-binary says format {:?}; only 2.x is supported",
            shown()
        )));
    }
    Ok(())
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
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<io::Error>());
    if let Some(limit) = limit_exceeded(&err).or_else(|| inner.and_then(limit_exceeded)) {
        return DebError::TooLarge {
            what: what.to_string(),
            limit,
            unit: LimitUnit::DecompressedBytes,
        };
    }
    DebError::Truncated(format!("{what}: {err}"))
}

fn tar_error(err: TarError, member: &str) -> DebError {
    match err {
        TarError::Io(e) => classify_io(e, member),
        TarError::Truncated => DebError::Truncated(format!("{member}: {err}")),
        other => DebError::BadTar {
            member: member.to_string(),
            why: other.to_string(),
        },
    }
}

/// Drain what follows the end-of-archive block, so the size bound and the compressed
/// stream's own integrity check still cover it.
fn drain(rest: impl Read, member: &str) -> Result<(), DebError> {
    let mut rest = rest;
    io::copy(&mut rest, &mut io::sink()).map_err(|e| classify_io(e, member))?;
    Ok(())
}

fn read_control_file(reader: impl Read, member: &str) -> Result<Vec<u8>, DebError> {
    let mut walker = TarWalker::new(reader);
    while let Some(entry) = walker.next_entry().map_err(|e| tar_error(e, member))? {
        let is_control = entry.kind == EntryKind::File
            && contents_path(&entry.name, false).is_ok_and(|p| p == Some("control"));
        if !is_control {
            continue;
        }
        let control = walker
            .read_body(MAX_CONTROL_BYTES)
            .map_err(|e| tar_error(e, member))?
            .ok_or_else(|| DebError::TooLarge {
                what: "the control file".into(),
                limit: MAX_CONTROL_BYTES as u64,
                unit: LimitUnit::Bytes,
            })?;
        // Keep reading to the end of control.tar so a bomb hidden after `control` is caught too.
        while walker
            .next_entry()
            .map_err(|e| tar_error(e, member))?
            .is_some()
        {}
        drain(walker.into_inner(), member)?;
        return Ok(control);
    }
    Err(DebError::NoControlFile)
}

/// The Contents paths of data.tar's non-directory entries; every name (directories
/// too) must pass the rules of [`super::paths`].
fn list_data_files(
    reader: impl Read,
    member: &str,
    limits: &Limits,
) -> Result<Vec<String>, DebError> {
    let mut walker = TarWalker::new(reader);
    let mut files = Vec::new();
    let mut name_bytes = 0usize;
    while let Some(entry) = walker.next_entry().map_err(|e| tar_error(e, member))? {
        let is_directory = entry.kind == EntryKind::Directory;
        let path = contents_path(&entry.name, is_directory).map_err(|why| DebError::BadPath {
            member: member.to_string(),
            why,
        })?;
        let Some(path) = path.filter(|_| !is_directory) else {
            continue;
        };
        let too_large = |limit: usize, unit| DebError::TooLarge {
            what: member.to_string(),
            limit: limit as u64,
            unit,
        };
        if files.len() >= limits.data_entries {
            return Err(too_large(limits.data_entries, LimitUnit::Files));
        }
        name_bytes += path.len();
        if name_bytes > limits.file_list_bytes {
            return Err(too_large(limits.file_list_bytes, LimitUnit::NameBytes));
        }
        files.push(path.to_string());
    }
    drain(walker.into_inner(), member)?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::deb::ar::tests::member as ar_member;
    use crate::formats::deb::tar::tests::{end, entry};
    use bytes::Bytes;

    const CONTROL: &[u8] = b"Package: hello\nVersion: 1.0-1\nArchitecture: amd64\n";

    fn control_tar(control: &[u8]) -> Vec<u8> {
        let mut tar = entry(b"./", b'5', b"");
        tar.extend(entry(b"./control", b'0', control));
        tar.extend(end());
        tar
    }

    fn data_tar(names: &[&[u8]]) -> Vec<u8> {
        let mut tar = entry(b"./", b'5', b"");
        tar.extend(entry(b"./usr/", b'5', b""));
        for name in names {
            tar.extend(entry(name, b'0', b"x"));
        }
        tar.extend(end());
        tar
    }

    /// An uncompressed .deb from (member name, body) pairs.
    fn deb(members: &[(&str, Vec<u8>)]) -> Bytes {
        let mut out = b"!<arch>\n".to_vec();
        for (name, body) in members {
            out.extend(ar_member(name, body));
        }
        Bytes::from(out)
    }

    fn good_members() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar", control_tar(CONTROL)),
            ("data.tar", data_tar(&[b"./usr/bin/hello"])),
        ]
    }

    fn inspect(bytes: &Bytes) -> Result<DebInfo, DebError> {
        inspect_deb(PackageBytes::Memory(bytes), &Limits::default())
    }

    fn refusal(bytes: &Bytes) -> String {
        inspect(bytes).expect_err("refused").to_string()
    }

    #[test]
    fn a_plain_deb_lists_its_files() {
        let info = inspect(&deb(&good_members())).unwrap();
        assert_eq!(info.control.package(), "hello");
        assert_eq!(info.files, vec!["usr/bin/hello".to_string()]);
    }

    #[test]
    fn members_follow_dpkg_debs_order_and_count() {
        let [binary, control, data] = <[_; 3]>::try_from(good_members()).unwrap();
        let twice = deb(&[
            binary.clone(),
            control.clone(),
            ("control.tar.gz", control.1.clone()),
            data.clone(),
        ]);
        assert!(refusal(&twice).contains("two control members"));
        let premature = deb(&[
            binary.clone(),
            ("extra", b"x".to_vec()),
            control.clone(),
            data.clone(),
        ]);
        assert!(refusal(&premature).contains("premature member \"extra\" before control.tar"));
        let between = deb(&[
            binary.clone(),
            control.clone(),
            ("extra", b"x".to_vec()),
            data.clone(),
        ]);
        assert!(refusal(&between).contains("before data.tar"));
        let data_first = deb(&[binary.clone(), data.clone(), control.clone()]);
        assert!(refusal(&data_first).contains("data.tar comes before control.tar"));
        let after = deb(&[
            binary.clone(),
            control.clone(),
            data.clone(),
            ("data.tar.gz", data.1.clone()),
        ]);
        assert!(refusal(&after).contains("after data.tar"));
        let empty = deb(&[binary.clone(), control.clone(), ("data.tar", Vec::new())]);
        assert!(refusal(&empty).contains("data.tar member is empty"));
        let no_data = deb(&[binary.clone(), control.clone()]);
        assert!(refusal(&no_data).contains("no data.tar member"));
        // Optional `_` members may stand anywhere after debian-binary.
        let extras = deb(&[
            binary,
            ("_note", b"x".to_vec()),
            control,
            ("_between", b"y".to_vec()),
            data,
            ("_gpgorigin", b"z".to_vec()),
        ]);
        assert_eq!(inspect(&extras).unwrap().control.package(), "hello");
    }

    #[test]
    fn debian_binary_is_a_format_version_and_a_newline() {
        for (text, why) in [
            (&b"2.0"[..], "no newline"),
            (b"2.0junk\n", "not a format version"),
            (b"2\n", "not a format version"),
            (b".0\n", "not a format version"),
            (b"3.0\n", "only 2.x"),
        ] {
            let mut members = good_members();
            members[0].1 = text.to_vec();
            let err = refusal(&deb(&members));
            assert!(err.contains(why), "{text:?}: {err}");
        }
        let mut members = good_members();
        members[0].1 = b"2.1\nanything after the line\n".to_vec();
        assert!(inspect(&deb(&members)).is_ok());
    }

    #[test]
    fn data_names_are_checked_and_limits_name_their_unit() {
        let mut members = good_members();
        members[2].1 = data_tar(&[b"./usr/bin/a\nusr/sbin/sshd"]);
        let err = refusal(&deb(&members));
        assert!(err.starts_with("data.tar: file name"), "{err}");
        assert!(err.contains("U+000A"), "{err}");
        members[2].1 = data_tar(&[b"./usr/../../etc/shadow"]);
        assert!(refusal(&deb(&members)).contains("\"..\" component"));

        members[2].1 = data_tar(&[b"./usr/a", b"./usr/b", b"./usr/c"]);
        let few_files = Limits {
            data_entries: 2,
            ..Limits::default()
        };
        let err = inspect_deb(PackageBytes::Memory(&deb(&members)), &few_files).unwrap_err();
        assert!(err.is_limit());
        assert_eq!(err.to_string(), "data.tar has more than 2 files");
        let few_bytes = Limits {
            file_list_bytes: 10,
            ..Limits::default()
        };
        let err = inspect_deb(PackageBytes::Memory(&deb(&members)), &few_bytes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "data.tar has more than 10 bytes of file names"
        );
    }

    #[test]
    fn a_huge_long_name_in_data_tar_is_refused_before_it_is_read() {
        let mut members = good_members();
        let mut tar = crate::formats::deb::tar::tests::header(b"././@LongLink", b'L', 200 << 20);
        tar.extend(vec![b'a'; 4096]); // the rest of the claimed name never arrives
        members[2].1 = tar;
        let err = refusal(&deb(&members));
        assert!(
            err.contains("long name or link claims 209715200 bytes"),
            "{err}"
        );
    }

    #[test]
    fn an_oversized_control_file_is_refused_by_size() {
        let mut members = good_members();
        let mut control = CONTROL.to_vec();
        control.extend(b"Description: x\n");
        control.extend(std::iter::repeat_n(b" y\n", MAX_CONTROL_BYTES / 3 + 1).flatten());
        members[1].1 = control_tar(&control);
        let err = inspect(&deb(&members)).unwrap_err();
        assert!(err.is_limit());
        assert_eq!(
            err.to_string(),
            format!("the control file is larger than {MAX_CONTROL_BYTES} bytes")
        );
    }
}
