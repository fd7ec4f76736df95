//! Reading an uploaded `.rpm` without loading its payload: the lead, the
//! signature header and the main header through the `rpm` crate, then the
//! payload streamed once through SHA-256 and compared with the digest the
//! header promises, so a corrupted package is refused before anything is stored.

use std::io::{BufReader, Read, Seek, SeekFrom};

use rpm::{DependencyFlags, PackageMetadata};
use sha2::Sha256;

use super::header::{self, Header, HeaderError, Headers};
use super::text;
use crate::formats::package_bytes::PackageBytes;

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
    /// Our own checks of the header structure (rpm's `hdrblobVerifyInfo` and kin) failed.
    #[error("the rpm header is malformed: {0}")]
    BadHeader(String),
    /// The `rpm` crate panicked on headers our checks let through.
    #[error("the rpm header could not be parsed")]
    Unparsable,
    /// A header string repodata cannot carry.
    #[error("the package cannot be listed in repodata: {0}")]
    Unrenderable(String),
    #[error("could not read the uploaded file: {0}")]
    Io(std::io::Error),
}

/// Bound on header-derived lists, so a hostile header cannot make us build huge repodata.
const MAX_FILES: usize = 500_000;
const MAX_TEXT: usize = 1024 * 1024;

/// Main header tags repodata reads (rpm's lib/rpmtag.h).
mod tag {
    pub const NAME: u32 = 1000;
    pub const VERSION: u32 = 1001;
    pub const RELEASE: u32 = 1002;
    pub const EPOCH: u32 = 1003;
    pub const SUMMARY: u32 = 1004;
    pub const DESCRIPTION: u32 = 1005;
    pub const BUILDTIME: u32 = 1006;
    pub const BUILDHOST: u32 = 1007;
    pub const SIZE: u32 = 1009;
    pub const VENDOR: u32 = 1011;
    pub const LICENSE: u32 = 1014;
    pub const PACKAGER: u32 = 1015;
    pub const GROUP: u32 = 1016;
    pub const URL: u32 = 1020;
    pub const ARCH: u32 = 1022;
    pub const OLDFILENAMES: u32 = 1027;
    pub const FILEMODES: u32 = 1030;
    pub const FILEFLAGS: u32 = 1037;
    pub const SOURCERPM: u32 = 1044;
    pub const ARCHIVESIZE: u32 = 1046;
    pub const CHANGELOGTIME: u32 = 1080;
    pub const CHANGELOGNAME: u32 = 1081;
    pub const CHANGELOGTEXT: u32 = 1082;
    pub const SOURCEPACKAGE: u32 = 1106;
    pub const DIRINDEXES: u32 = 1116;
    pub const BASENAMES: u32 = 1117;
    pub const DIRNAMES: u32 = 1118;
    pub const LONGSIZE: u32 = 5009;
    /// Also the signature header's tag for the same value.
    pub const LONGARCHIVESIZE: u32 = 271;
    pub const PAYLOADDIGEST: u32 = 5092;
    /// Signature header.
    pub const SIG_PAYLOADSIZE: u32 = 1007;
    /// (name, flags, version) tags of each dependency kind.
    pub const PROVIDES: [u32; 3] = [1047, 1112, 1113];
    pub const REQUIRES: [u32; 3] = [1049, 1048, 1050];
    pub const CONFLICTS: [u32; 3] = [1054, 1053, 1055];
    pub const OBSOLETES: [u32; 3] = [1090, 1114, 1115];
    pub const RECOMMENDS: [u32; 3] = [5046, 5048, 5047];
    pub const SUGGESTS: [u32; 3] = [5049, 5051, 5050];
    pub const SUPPLEMENTS: [u32; 3] = [5052, 5054, 5053];
    pub const ENHANCES: [u32; 3] = [5055, 5057, 5056];
}

/// rpm's `RPMFILE_GHOST` file flag.
const FILE_GHOST: u64 = 1 << 6;

/// One header string as repodata carries it (see `text::decode`), bounded.
fn decoded(raw: &[u8], field: &str) -> Result<String, RpmError> {
    let value = text::decode(raw).map_err(|why| RpmError::Invalid(format!("{field} {why}")))?;
    Ok(if value.len() > MAX_TEXT {
        value.chars().take(MAX_TEXT).collect()
    } else {
        value
    })
}

/// A string tag; a missing tag is an empty string, as createrepo_c writes it.
fn string(header: &Header, tag: u32, field: &str) -> Result<String, RpmError> {
    decoded(header.string(tag).unwrap_or_default(), field)
}

/// Parallel arrays must agree in length: createrepo_c would silently zip them to the
/// shortest, the `rpm` crate refuses them, and a package that lists 0x0fffffff file
/// names but no more modes is not one rpm could install.
fn same_length(field: &str, lengths: &[(&str, usize)]) -> Result<(), RpmError> {
    let (first_name, first) = lengths[0];
    match lengths.iter().find(|(_, n)| *n != first) {
        None => Ok(()),
        Some((name, n)) => Err(RpmError::Invalid(format!(
            "the {field} list is inconsistent: {first} {first_name} but {n} {name}"
        ))),
    }
}

fn deps(
    header: &Header,
    [names, flags, versions]: [u32; 3],
    kind: &str,
) -> Result<Vec<Dep>, RpmError> {
    let names = header.strings(names).unwrap_or_default();
    let flags = header.numbers(flags).unwrap_or_default();
    let versions = header.strings(versions).unwrap_or_default();
    same_length(
        kind,
        &[
            ("names", names.len()),
            ("flags", flags.len()),
            ("versions", versions.len()),
        ],
    )?;
    names
        .iter()
        .zip(&flags)
        .zip(&versions)
        .map(|((name, &flags), version)| {
            Ok(Dep {
                name: decoded(name, &format!("{kind} name"))?,
                flags: flags as u32,
                version: decoded(version, &format!("{kind} version"))?,
            })
        })
        .collect()
}

fn files(header: &Header) -> Result<Vec<FileItem>, RpmError> {
    let kind_of = |mode: u64, flags: u64| {
        // S_ISDIR, then the ghost flag, as createrepo_c decides.
        if mode & 0o170000 == 0o040000 {
            FileKind::Dir
        } else if flags & FILE_GHOST != 0 {
            FileKind::Ghost
        } else {
            FileKind::File
        }
    };
    let modes = header.numbers(tag::FILEMODES).unwrap_or_default();
    let flags = header.numbers(tag::FILEFLAGS).unwrap_or_default();
    let paths: Vec<String> = if let Some(basenames) = header.strings(tag::BASENAMES) {
        let dirnames = header.strings(tag::DIRNAMES).unwrap_or_default();
        let indexes = header.numbers(tag::DIRINDEXES).unwrap_or_default();
        same_length(
            "file",
            &[
                ("names", basenames.len()),
                ("directory indexes", indexes.len()),
                ("modes", modes.len()),
                ("flags", flags.len()),
            ],
        )?;
        if basenames.len() > MAX_FILES {
            return Err(RpmError::Invalid(format!("more than {MAX_FILES} files")));
        }
        let dirnames = dirnames
            .iter()
            .map(|d| decoded(d, "a directory name"))
            .collect::<Result<Vec<_>, _>>()?;
        basenames
            .iter()
            .zip(&indexes)
            .map(|(base, &index)| {
                let dir = usize::try_from(index)
                    .ok()
                    .and_then(|i| dirnames.get(i))
                    .ok_or_else(|| {
                        RpmError::Invalid(format!(
                            "a file names directory {index}, but there are {}",
                            dirnames.len()
                        ))
                    })?;
                Ok(format!("{dir}{}", decoded(base, "a file name")?))
            })
            .collect::<Result<_, RpmError>>()?
    } else if let Some(old) = header.strings(tag::OLDFILENAMES) {
        // rpm < 4 wrote whole paths; librpm converts them on reading.
        same_length(
            "file",
            &[
                ("names", old.len()),
                ("modes", modes.len()),
                ("flags", flags.len()),
            ],
        )?;
        if old.len() > MAX_FILES {
            return Err(RpmError::Invalid(format!("more than {MAX_FILES} files")));
        }
        old.iter()
            .map(|path| decoded(path, "a file name"))
            .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    Ok(paths
        .into_iter()
        .zip(modes.iter().zip(&flags))
        .map(|(path, (&mode, &flags))| FileItem {
            path,
            kind: kind_of(mode, flags),
        })
        .collect())
}

/// Newest first, as in the header; only the entries createrepo_c keeps.
fn changelog(header: &Header) -> Result<Vec<(String, u64, String)>, RpmError> {
    let times = header.numbers(tag::CHANGELOGTIME).unwrap_or_default();
    let authors = header.strings(tag::CHANGELOGNAME).unwrap_or_default();
    let texts = header.strings(tag::CHANGELOGTEXT).unwrap_or_default();
    same_length(
        "changelog",
        &[
            ("times", times.len()),
            ("authors", authors.len()),
            ("texts", texts.len()),
        ],
    )?;
    times
        .iter()
        .zip(&authors)
        .zip(&texts)
        .take(CHANGELOG_LIMIT)
        .map(|((&time, author), body)| {
            // createrepo_c drops trailing spaces (only spaces) from the author, keeping the first byte.
            let keep = author.iter().rposition(|&b| b != b' ').map_or(1, |i| i + 1);
            let author = &author[..keep.min(author.len())];
            Ok((
                decoded(author, "a changelog author")?,
                time,
                decoded(body, "a changelog entry")?,
            ))
        })
        .collect()
}

fn archive_size(signature: &Header, main: &Header) -> u64 {
    main.number(tag::LONGARCHIVESIZE)
        .or_else(|| main.number(tag::ARCHIVESIZE))
        .or_else(|| signature.number(tag::LONGARCHIVESIZE))
        .or_else(|| signature.number(tag::SIG_PAYLOADSIZE))
        .unwrap_or(0)
}

/// Run a call into the `rpm` crate, turning a panic in it (a bug there, on input our
/// own checks let through) into a refused package rather than a crashed request.
fn guarded<T>(call: impl FnOnce() -> T) -> Result<T, RpmError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).map_err(|_| RpmError::Unparsable)
}

/// Read and check the lead and both headers, never allocating more than the file holds.
fn read_checked_headers(source: PackageBytes<'_>) -> Result<(Headers, u64), RpmError> {
    let (file, len) = source.open().map_err(RpmError::Io)?;
    let headers = header::read_headers(&mut BufReader::new(file), len).map_err(|e| match e {
        HeaderError::NoLead => RpmError::NotAnRpm(e.to_string()),
        HeaderError::Truncated(_) => RpmError::Damaged(e.to_string()),
        HeaderError::Bad { .. } => RpmError::BadHeader(e.to_string()),
        HeaderError::Io(e) => RpmError::Io(std::io::Error::other(e)),
    })?;
    Ok((headers, len))
}

/// The `rpm` crate's view of headers that passed our checks.
fn crate_metadata(headers: &Headers) -> Result<PackageMetadata, RpmError> {
    guarded(|| PackageMetadata::parse(&mut &headers.bytes[..]))?.map_err(|e| match e {
        rpm::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            RpmError::Damaged("the file ends inside its headers".into())
        }
        other => RpmError::BadHeader(other.to_string()),
    })
}

/// Parse headers only (lead, signature header, main header), checked first.
pub fn read_metadata(source: PackageBytes<'_>) -> Result<(PackageMetadata, u64), RpmError> {
    let (headers, len) = read_checked_headers(source)?;
    let meta = crate_metadata(&headers)?;
    Ok((meta, len))
}

/// createrepo_c keeps the newest ten changelog entries, written oldest first: no more
/// are read.
pub const CHANGELOG_LIMIT: usize = 10;

/// Inspect and verify an `.rpm`, on local disk or in memory: what its header says.
/// Whether its repodata entries can be written is [`super::inspect_rpm`]'s to check.
pub fn parse_rpm(source: PackageBytes<'_>) -> Result<RpmInfo, RpmError> {
    let (headers, _) = read_checked_headers(source)?;
    let meta = crate_metadata(&headers)?;
    match guarded(|| meta.verify_digests())? {
        Ok(()) | Err(rpm::Error::NoHeaderDigestError) => {}
        Err(e @ rpm::Error::DigestMismatchError { .. }) => {
            return Err(RpmError::DigestMismatch(e.to_string()));
        }
        Err(e) => return Err(RpmError::Damaged(e.to_string())),
    }
    verify_payload(source, &headers)?;
    let main = &headers.main;

    let name = string(main, tag::NAME, "name")?;
    let version = string(main, tag::VERSION, "version")?;
    let release = string(main, tag::RELEASE, "release")?;
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
    let arch = if is_source_package(main) {
        "src".to_string()
    } else {
        let arch = string(main, tag::ARCH, "arch")?;
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

    let info = RpmInfo {
        epoch: main.number(tag::EPOCH).unwrap_or(0) as u32,
        summary: string(main, tag::SUMMARY, "summary")?,
        description: string(main, tag::DESCRIPTION, "description")?,
        packager: string(main, tag::PACKAGER, "packager")?,
        url: string(main, tag::URL, "url")?,
        license: string(main, tag::LICENSE, "license")?,
        vendor: string(main, tag::VENDOR, "vendor")?,
        group: string(main, tag::GROUP, "group")?,
        buildhost: string(main, tag::BUILDHOST, "buildhost")?,
        sourcerpm: if arch == "src" {
            String::new()
        } else {
            string(main, tag::SOURCERPM, "sourcerpm")?
        },
        build_time: main.number(tag::BUILDTIME).unwrap_or(0),
        installed_size: main
            .number(tag::LONGSIZE)
            .or_else(|| main.number(tag::SIZE))
            .unwrap_or(0),
        archive_size: archive_size(&headers.signature, main),
        provides: deps(main, tag::PROVIDES, "provides")?,
        requires: deps(main, tag::REQUIRES, "requires")?,
        conflicts: deps(main, tag::CONFLICTS, "conflicts")?,
        obsoletes: deps(main, tag::OBSOLETES, "obsoletes")?,
        suggests: deps(main, tag::SUGGESTS, "suggests")?,
        enhances: deps(main, tag::ENHANCES, "enhances")?,
        recommends: deps(main, tag::RECOMMENDS, "recommends")?,
        supplements: deps(main, tag::SUPPLEMENTS, "supplements")?,
        files: files(main)?,
        changelog: changelog(main)?,
        name,
        version,
        release,
        arch,
        header_start: headers.main_start,
        header_end: headers.payload_start,
    };
    Ok(info)
}

/// As the `rpm` crate (and librpm for old source rpms) decides.
fn is_source_package(main: &Header) -> bool {
    if main.contains(tag::SOURCEPACKAGE) {
        return true;
    }
    if main.contains(tag::SOURCERPM) {
        return false;
    }
    main.strings(tag::DIRNAMES)
        .is_some_and(|dirs| dirs.len() == 1 && dirs[0].is_empty())
}

/// Stream the payload through SHA-256 and compare with the header's payload digest; for
/// a package rpm < 4.14 built (no payload digest), stream header and payload through MD5
/// and compare with the signature header's MD5, as `rpm -K` does. Either way a payload
/// altered after the build is refused.
fn verify_payload(source: PackageBytes<'_>, headers: &Headers) -> Result<(), RpmError> {
    /// RPMSIGTAG_MD5: MD5 of the main header and the payload.
    const SIGNATURE_MD5: u32 = 1004;
    let (legacy, expected) = match headers.main.string(tag::PAYLOADDIGEST) {
        Some(expected) => (
            false,
            String::from_utf8_lossy(expected).to_ascii_lowercase(),
        ),
        None => match headers.signature.binary(SIGNATURE_MD5) {
            Some(md5) => (true, hex::encode(md5)),
            // Neither: the header digests, checked, are all there is (as for rpm -K).
            None => return Ok(()),
        },
    };
    let (actual, what) = if legacy {
        let md5 = digest_from::<md5::Md5>(source, headers.main_start)?;
        (md5, "header and payload MD5")
    } else {
        let sha256 = digest_from::<Sha256>(source, headers.payload_start)?;
        (sha256, "payload SHA-256")
    };
    if actual != expected {
        return Err(RpmError::DigestMismatch(format!(
            "{what} is {actual}, the header says {expected} (truncated or altered)"
        )));
    }
    Ok(())
}

/// The hex digest of the package's bytes from `start` to its end.
fn digest_from<D: sha2::Digest>(source: PackageBytes<'_>, start: u64) -> Result<String, RpmError> {
    let mut hasher = D::new();
    match source {
        PackageBytes::Memory(bytes) => {
            let rest = usize::try_from(start)
                .ok()
                .and_then(|start| bytes.get(start..))
                .ok_or_else(|| RpmError::Damaged("the file ends inside its headers".into()))?;
            hasher.update(rest);
        }
        PackageBytes::File(_) => {
            let (mut file, _) = source.open().map_err(RpmError::Io)?;
            file.seek(SeekFrom::Start(start)).map_err(RpmError::Io)?;
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
    Ok(hex::encode(hasher.finalize()))
}

/// Flag bits that make createrepo_c write `pre="1"`.
pub const PRE_FLAGS: u32 = DependencyFlags::PREREQ.bits()
    | DependencyFlags::SCRIPT_PRE.bits()
    | DependencyFlags::SCRIPT_POST.bits();

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/rpms")
            .join(name)
    }

    fn inspect(name: &str) -> Result<RpmInfo, RpmError> {
        parse_rpm(PackageBytes::File(&fixture(name)))
    }

    fn refusal(name: &str) -> String {
        inspect(name).unwrap_err().to_string()
    }

    /// rpm < 4.14 wrote no payload digest: its MD5 over header and payload is what `rpm -K`
    /// checks, and an altered payload must be refused whether or not the repository signs.
    #[test]
    fn a_legacy_package_with_an_altered_payload_is_refused_by_its_md5() {
        assert!(inspect("legacy-caprepo-1.0-1.noarch.rpm").is_ok());
        let mut bytes = std::fs::read(fixture("legacy-caprepo-1.0-1.noarch.rpm")).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        let bytes = bytes::Bytes::from(bytes);
        let why = parse_rpm(PackageBytes::Memory(&bytes))
            .unwrap_err()
            .to_string();
        assert!(why.contains("header and payload MD5"), "{why}");
    }

    #[test]
    fn a_corrupt_header_index_is_refused_as_rpm_refuses_it() {
        // rpm -K: "tag[50]: BAD, tag 1117 type 8 offset 1608 count 268435455 len 20".
        let why = refusal("malformed/basenames-count.rpm");
        assert!(
            why.starts_with("the rpm header is malformed: main header: tag[50]: BAD, tag 1117"),
            "{why}"
        );
        // rpm -K: "tag[5]: BAD, tag 1004 type 9 offset 6288 count 1 len 4".
        let why = refusal("malformed/offset-outside.rpm");
        assert!(
            why.contains("tag[5]: BAD, tag 1004") && why.contains("outside"),
            "{why}"
        );
    }

    /// The `rpm` crate 0.30.2 panics on a header entry whose offset is past its data
    /// store (`Header::parse_header` slices `bytes[entry.offset as usize..]`); the guard
    /// turns that into a refusal, should our own checks ever let such input through.
    #[test]
    fn a_panic_in_the_rpm_crate_becomes_a_refusal() {
        let bytes = std::fs::read(fixture("malformed/offset-outside.rpm")).unwrap();
        let quiet = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let unguarded = std::panic::catch_unwind(|| PackageMetadata::parse(&mut &bytes[..]));
        let guarded_parse = guarded(|| PackageMetadata::parse(&mut &bytes[..]));
        std::panic::set_hook(quiet);
        assert!(
            unguarded.is_err(),
            "the crate no longer panics here: update the note"
        );
        let why = guarded_parse.err().map(|e| e.to_string());
        assert_eq!(why.as_deref(), Some("the rpm header could not be parsed"));
    }

    #[test]
    fn latin1_strings_become_utf8_and_carriage_returns_stay() {
        let info = inspect("latin1-caprepo-1.0-1.noarch.rpm").unwrap();
        assert_eq!(info.summary, "Latin-1 text: Skyttä writes ÜTF-8 badly");
        assert_eq!(info.packager, "Jürgen <fixtures@caprepo.invalid>");
        assert!(
            info.files
                .iter()
                .any(|f| f.path == "/usr/share/latin1-caprepo/café.txt")
        );
        assert_eq!(
            info.changelog[0].0,
            "Ville Skyttä <fixtures@caprepo.invalid> - 1.0-1"
        );
        assert_eq!(
            info.changelog[0].2,
            "- Initial fixture package, naïvely encoded."
        );
        let info = inspect("cr-caprepo-1.0-1.noarch.rpm").unwrap();
        assert_eq!(info.summary, "Carriage\rreturn inside the Summary");
    }
}
