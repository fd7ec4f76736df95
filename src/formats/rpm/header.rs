//! The two headers of an `.rpm` (signature header and main header), read from
//! the file and checked the way rpm 4.18's own reader checks them (lib/header.c:
//! `hdrblobRead`, `hdrblobVerifyRegion`, `hdrblobVerifyInfo`) before any
//! third-party parser sees them: sane tag counts and data sizes, a well-formed
//! region, and every index entry of a valid type, aligned, inside the data store,
//! not overlapping its neighbour, strings NUL-terminated, counts bounded.
//!
//! It also gives raw access to the entries' data: repodata needs header strings
//! as bytes, because createrepo_c decides per string whether it is UTF-8 or Latin-1.

use std::io::Read;

/// The lead: a fixed 96-byte block before the signature header.
pub const LEAD_SIZE: usize = 96;
const LEAD_MAGIC: [u8; 4] = [0xed, 0xab, 0xee, 0xdb];
/// Header magic and version 1; four reserved bytes follow.
const HEADER_MAGIC: [u8; 4] = [0x8e, 0xad, 0xe8, 0x01];
/// Magic, reserved bytes, entry count, data size.
const INTRO_SIZE: usize = 16;
/// One index entry: tag, type, offset, count (big-endian u32 each).
const ENTRY_SIZE: usize = 16;

/// rpm's `HEADER_TAGS_MAX`, `HEADER_DATA_MAX` and `HEADER_ARRAY_MAX`.
const MAIN_TAGS_MAX: usize = 0xffff;
const MAIN_DATA_MAX: usize = 0x0fff_ffff;
const ARRAY_MAX: usize = 0x000f_ffff;
/// rpm's tighter limits for the signature header.
const SIGNATURE_TAGS_MAX: usize = 32;
const SIGNATURE_DATA_MAX: usize = 64 * 1024 * 1024;
/// Tags below this are reserved for regions and the i18n table (`hdrchkTag`).
const FIRST_DATA_TAG: u32 = 100;

/// Region tags: the first entry of a header points at a trailer that says how
/// many entries and bytes the signed ("immutable") region spans.
const TAG_HEADERIMAGE: u32 = 61;
const TAG_HEADERSIGNATURES: u32 = 62;
const TAG_HEADERIMMUTABLE: u32 = 63;

pub const TYPE_CHAR: u32 = 1;
pub const TYPE_INT8: u32 = 2;
pub const TYPE_INT16: u32 = 3;
pub const TYPE_INT32: u32 = 4;
pub const TYPE_INT64: u32 = 5;
pub const TYPE_STRING: u32 = 6;
pub const TYPE_BIN: u32 = 7;
pub const TYPE_STRING_ARRAY: u32 = 8;
pub const TYPE_I18NSTRING: u32 = 9;

/// Which of the two headers: they differ in limits, region tag and type checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Signature,
    Main,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Signature => "signature header",
            Which::Main => "main header",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HeaderError {
    #[error("no RPM lead (an .rpm starts with the bytes ed ab ee db)")]
    NoLead,
    #[error("the file ends inside its headers (in the {0})")]
    Truncated(&'static str),
    #[error("{which}: {what}")]
    Bad { which: &'static str, what: String },
    #[error("could not read the uploaded file: {0}")]
    Io(String),
}

fn bad(which: Which, what: impl Into<String>) -> HeaderError {
    HeaderError::Bad {
        which: which.name(),
        what: what.into(),
    }
}

/// One index entry, checked: its data is `store[offset..offset + len]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    pub tag: u32,
    pub kind: u32,
    pub offset: usize,
    pub count: usize,
    pub len: usize,
}

/// A checked header: its index and its data store.
#[derive(Debug, Clone)]
pub struct Header {
    entries: Vec<Entry>,
    store: Vec<u8>,
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(word)
}

/// rpm's `typeAlign`, which equals `typeSizes` for the fixed-size types.
fn alignment(kind: u32) -> usize {
    match kind {
        TYPE_INT16 => 2,
        TYPE_INT32 => 4,
        TYPE_INT64 => 8,
        _ => 1,
    }
}

/// Bytes taken by `count` NUL-terminated strings at the start of `data`, if they all end inside it.
fn strings_len(data: &[u8], count: usize) -> Option<usize> {
    let mut used = 0;
    for _ in 0..count {
        used += data[used..].iter().position(|&b| b == 0)? + 1;
    }
    Some(used)
}

/// The type class rpm 4.18's tag table gives the tags repodata reads; a known tag
/// with another type is refused in the main header (`hdrchkTagType`). Unknown tags
/// pass, for forward compatibility, as in rpm.
fn expected_type(tag: u32) -> Option<u32> {
    Some(match tag {
        1000..=1002 | 1004 | 1005 | 1007 | 1011 | 1014..=1016 | 1020 | 1022 | 1044 | 5062 => {
            TYPE_STRING
        }
        1027 | 1047 | 1049 | 1050 | 1054 | 1055 | 1081 | 1082 | 1090 | 1113 | 1115 | 1117
        | 1118 | 5046 | 5047 | 5049 | 5050 | 5052 | 5053 | 5055 | 5056 => TYPE_STRING_ARRAY,
        1003 | 1006 | 1009 | 1037 | 1048 | 1053 | 1080 | 1106 | 1112 | 1114 | 1116 | 5048
        | 5051 | 5054 | 5057 => TYPE_INT32,
        1030 => TYPE_INT16,
        5009 => TYPE_INT64,
        _ => return None,
    })
}

fn is_string(kind: u32) -> bool {
    matches!(kind, TYPE_STRING | TYPE_STRING_ARRAY | TYPE_I18NSTRING)
}

impl Header {
    /// Check a header whose intro (magic, counts) starts `bytes`; `bytes` may run on
    /// past its end. Returns the header and how many bytes it spans (no padding).
    pub fn parse(bytes: &[u8], which: Which) -> Result<(Header, usize), HeaderError> {
        if bytes.len() < INTRO_SIZE {
            return Err(HeaderError::Truncated(which.name()));
        }
        if bytes[..4] != HEADER_MAGIC {
            return Err(bad(which, "no header magic (8e ad e8 01)"));
        }
        let (il, dl) = (be32(bytes, 8) as usize, be32(bytes, 12) as usize);
        let size = check_sizes(which, il, dl)?;
        let Some(blob) = bytes.get(INTRO_SIZE..size) else {
            return Err(HeaderError::Truncated(which.name()));
        };
        let (index, store) = blob.split_at(il * ENTRY_SIZE);
        let entries = verify(which, index, store)?;
        Ok((
            Header {
                entries,
                store: store.to_vec(),
            },
            size,
        ))
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn find(&self, tag: u32) -> Option<&Entry> {
        self.entries.iter().find(|e| e.tag == tag)
    }

    pub fn contains(&self, tag: u32) -> bool {
        self.find(tag).is_some()
    }

    fn data(&self, entry: &Entry) -> &[u8] {
        &self.store[entry.offset..entry.offset + entry.len]
    }

    /// A string-class entry's strings, as bytes without their NULs; None when absent
    /// or not a string type.
    pub fn strings(&self, tag: u32) -> Option<Vec<&[u8]>> {
        let entry = self.find(tag).filter(|e| is_string(e.kind))?;
        let data = self.data(entry);
        // Checked: the entry holds exactly `count` NUL-terminated strings.
        Some(data[..data.len() - 1].split(|&b| b == 0).collect())
    }

    /// The first string of a string-class entry (an i18n string's untranslated text).
    pub fn string(&self, tag: u32) -> Option<&[u8]> {
        self.strings(tag).and_then(|s| s.into_iter().next())
    }

    /// A binary entry's bytes (an MD5 digest, a signature); None when absent or not binary.
    pub fn binary(&self, tag: u32) -> Option<&[u8]> {
        let entry = self.find(tag).filter(|e| e.kind == TYPE_BIN)?;
        Some(self.data(entry))
    }

    /// An integer entry's values; None when absent or not an integer type.
    pub fn numbers(&self, tag: u32) -> Option<Vec<u64>> {
        let entry = self.find(tag)?;
        let data = self.data(entry);
        let width = match entry.kind {
            TYPE_CHAR | TYPE_INT8 => 1,
            TYPE_INT16 => 2,
            TYPE_INT32 => 4,
            TYPE_INT64 => 8,
            _ => return None,
        };
        Some(
            data.chunks_exact(width)
                .map(|c| c.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b)))
                .collect(),
        )
    }

    pub fn number(&self, tag: u32) -> Option<u64> {
        self.numbers(tag).and_then(|n| n.first().copied())
    }
}

/// `hdrblobVerifyLengths` and `hdrblobInit`'s size check; the header's total size.
fn check_sizes(which: Which, il: usize, dl: usize) -> Result<usize, HeaderError> {
    let (tags_max, data_max) = match which {
        Which::Signature => (SIGNATURE_TAGS_MAX, SIGNATURE_DATA_MAX),
        Which::Main => (MAIN_TAGS_MAX, MAIN_DATA_MAX),
    };
    if il < 1 || il > tags_max {
        return Err(bad(
            which,
            format!("{il} index entries (rpm allows 1 to {tags_max})"),
        ));
    }
    if dl > data_max {
        return Err(bad(
            which,
            format!("a {dl}-byte data store (rpm allows {data_max})"),
        ));
    }
    Ok(INTRO_SIZE + il * ENTRY_SIZE + dl)
}

fn raw_entry(index: &[u8], i: usize) -> (u32, u32, u32, u32) {
    let at = i * ENTRY_SIZE;
    (
        be32(index, at),
        be32(index, at + 4),
        be32(index, at + 8),
        be32(index, at + 12),
    )
}

/// The region: (entries it spans, bytes it spans) when the header has one.
fn verify_region(which: Which, index: &[u8], store: &[u8]) -> Result<Option<usize>, HeaderError> {
    let region_tag = match which {
        Which::Signature => TAG_HEADERSIGNATURES,
        Which::Main => TAG_HEADERIMMUTABLE,
    };
    let (tag, kind, offset, count) = raw_entry(index, 0);
    if tag != region_tag {
        // Legacy headers have no region; rpm reads them, and so does the entry check below.
        return Ok(None);
    }
    if kind != TYPE_BIN || count as usize != ENTRY_SIZE {
        return Err(bad(
            which,
            format!("region tag: BAD, type {kind} count {count} (a region is 16 binary bytes)"),
        ));
    }
    let offset = offset as usize;
    let Some(trailer) = store.get(offset..offset + ENTRY_SIZE) else {
        return Err(bad(
            which,
            format!(
                "region offset: BAD, its trailer at {offset} is outside the {}-byte data store",
                store.len()
            ),
        ));
    };
    let (mut trailer_tag, trailer_kind, trailer_offset, trailer_count) = raw_entry(trailer, 0);
    // rpm: some old packages have HEADERIMAGE in the signature region trailer.
    if which == Which::Signature && trailer_tag == TAG_HEADERIMAGE {
        trailer_tag = TAG_HEADERSIGNATURES;
    }
    if trailer_tag != region_tag || trailer_kind != TYPE_BIN || trailer_count as usize != ENTRY_SIZE
    {
        return Err(bad(
            which,
            format!(
                "region trailer: BAD, tag {trailer_tag} type {trailer_kind} count {trailer_count}"
            ),
        ));
    }
    // The trailer's offset is minus the region's index size.
    let region_index_bytes = (trailer_offset as i32).unsigned_abs() as usize;
    let region_entries = region_index_bytes / ENTRY_SIZE;
    let region_data = offset + ENTRY_SIZE;
    let entries = index.len() / ENTRY_SIZE;
    if (trailer_offset as i32) > 0
        || region_index_bytes % ENTRY_SIZE != 0
        || region_entries > entries
    {
        return Err(bad(
            which,
            format!("region size: BAD, it spans {region_entries} of {entries} entries"),
        ));
    }
    // In package files the main header's region is the whole header (`exact_size`).
    if which == Which::Main && (region_entries != entries || region_data != store.len()) {
        return Err(bad(
            which,
            format!(
                "region: tag number mismatch, it spans {region_entries} of {entries} entries and {region_data} of {} bytes",
                store.len()
            ),
        ));
    }
    Ok(Some(region_data))
}

/// `hdrblobVerifyRegion` then `hdrblobVerifyInfo`: every entry after the region tag.
fn verify(which: Which, index: &[u8], store: &[u8]) -> Result<Vec<Entry>, HeaderError> {
    let dl = store.len();
    let region_data = verify_region(which, index, store)?;
    let first = usize::from(region_data.is_some());
    let mut entries = Vec::with_capacity(index.len() / ENTRY_SIZE);
    if region_data.is_some() {
        let (tag, kind, offset, count) = raw_entry(index, 0);
        entries.push(Entry {
            tag,
            kind,
            offset: offset as usize,
            count: count as usize,
            len: ENTRY_SIZE,
        });
    }
    let mut end = 0usize;
    for i in first..index.len() / ENTRY_SIZE {
        let (tag, kind, offset, count) = raw_entry(index, i);
        // Numbered as `rpm -K` numbers them: from the first entry after the region tag.
        let at = i - first;
        let fail = |why: String| {
            bad(
                which,
                format!(
                    "tag[{at}]: BAD, tag {tag} type {kind} offset {offset} count {count}: {why}"
                ),
            )
        };
        let (offset_signed, count_signed) = (offset as i32, count as i32);
        if offset_signed < 0 || offset as usize > dl {
            return Err(fail(format!(
                "the offset is outside the {dl}-byte data store"
            )));
        }
        let (offset, count) = (offset as usize, count as usize);
        if end > offset {
            return Err(fail("its data overlaps the previous entry's".into()));
        }
        if tag < FIRST_DATA_TAG {
            return Err(fail(format!("tags below {FIRST_DATA_TAG} are reserved")));
        }
        if !(TYPE_CHAR..=TYPE_I18NSTRING).contains(&kind) {
            return Err(fail("no such data type".into()));
        }
        if count_signed < 1 || count > dl {
            return Err(fail(format!(
                "the count is outside 1..={dl} (the data store's size)"
            )));
        }
        if offset % alignment(kind) != 0 {
            return Err(fail("the offset is not aligned for its type".into()));
        }
        if kind != TYPE_BIN && count > ARRAY_MAX {
            return Err(fail(format!("more than {ARRAY_MAX} items")));
        }
        if which == Which::Main
            && let Some(expected) = expected_type(tag)
            && expected != kind
            && !(is_string(expected) && is_string(kind))
        {
            return Err(fail(format!("this tag has type {expected}")));
        }
        let rest = &store[offset..];
        let len = match kind {
            TYPE_STRING if count != 1 => None,
            TYPE_STRING | TYPE_STRING_ARRAY | TYPE_I18NSTRING => strings_len(rest, count),
            _ => Some(count * alignment(kind)).filter(|&len| len <= rest.len()),
        };
        let Some(len) = len.filter(|&len| len > 0) else {
            return Err(fail(if is_string(kind) {
                "its strings do not end (NUL) inside the data store".into()
            } else {
                "its data does not fit in the data store".into()
            }));
        };
        end = offset + len;
        if let Some(region_data) = region_data
            && end > region_data - ENTRY_SIZE
            && offset < region_data
        {
            return Err(fail("its data overlaps the region trailer".into()));
        }
        entries.push(Entry {
            tag,
            kind,
            offset,
            count,
            len,
        });
    }
    Ok(entries)
}

/// The lead and both headers of a package, checked, with their bytes.
#[derive(Debug)]
pub struct Headers {
    /// Lead, signature header and its padding, main header: what a header parser reads.
    pub bytes: Vec<u8>,
    pub signature: Header,
    pub main: Header,
    /// Where the main header starts and ends (the payload's start).
    pub main_start: u64,
    pub payload_start: u64,
}

/// Read and check the lead and both headers from `file`, which holds `len` bytes.
/// Never allocates more than the file holds.
pub fn read_headers(file: &mut impl Read, len: u64) -> Result<Headers, HeaderError> {
    let mut bytes = vec![0u8; LEAD_SIZE];
    if len < LEAD_SIZE as u64 || file.read_exact(&mut bytes).is_err() || bytes[..4] != LEAD_MAGIC {
        return Err(HeaderError::NoLead);
    }
    grow(file, len, &mut bytes, INTRO_SIZE, Which::Signature)?;
    let signature = read_header(file, len, &mut bytes, Which::Signature)?;
    // The signature header is padded to a multiple of 8 bytes.
    let padding = (8 - (bytes.len() - LEAD_SIZE) % 8) % 8;
    let main_start = bytes.len() + padding;
    grow(file, len, &mut bytes, padding + INTRO_SIZE, Which::Main)?;
    let main = read_header(file, len, &mut bytes, Which::Main)?;
    debug_assert!(bytes.len() >= main_start);
    Ok(Headers {
        payload_start: bytes.len() as u64,
        main_start: main_start as u64,
        bytes,
        signature,
        main,
    })
}

/// Read one header whose 16-byte intro already ends `bytes`; `bytes` then ends with it.
fn read_header(
    file: &mut impl Read,
    len: u64,
    bytes: &mut Vec<u8>,
    which: Which,
) -> Result<Header, HeaderError> {
    let start = bytes.len() - INTRO_SIZE;
    let intro = &bytes[start..];
    if intro[..4] != HEADER_MAGIC {
        return Err(bad(which, "no header magic (8e ad e8 01)"));
    }
    let size = check_sizes(which, be32(intro, 8) as usize, be32(intro, 12) as usize)?;
    grow(file, len, bytes, size - INTRO_SIZE, which)?;
    let (header, parsed) = Header::parse(&bytes[start..], which)?;
    debug_assert_eq!(parsed, size);
    Ok(header)
}

/// Append `more` bytes from `file`, refusing before allocating when the file is shorter.
fn grow(
    file: &mut impl Read,
    len: u64,
    bytes: &mut Vec<u8>,
    more: usize,
    which: Which,
) -> Result<(), HeaderError> {
    let have = bytes.len();
    if (have + more) as u64 > len {
        return Err(HeaderError::Truncated(which.name()));
    }
    bytes.resize(have + more, 0);
    file.read_exact(&mut bytes[have..])
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => HeaderError::Truncated(which.name()),
            _ => HeaderError::Io(e.to_string()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A main header with a region: NAME "hi", EPOCH [7], BASENAMES ["a", "b"],
    /// then the region trailer. `patch` edits the raw entries (tag, type, offset,
    /// count) after the region tag before they are written.
    fn main_header(patch: impl FnOnce(&mut Vec<[u32; 4]>, &mut Vec<u8>)) -> Vec<u8> {
        let mut store = b"hi\0\0".to_vec(); // NAME at 0, padding to align EPOCH
        store.extend_from_slice(&7u32.to_be_bytes()); // EPOCH at 4
        store.extend_from_slice(b"a\0b\0"); // BASENAMES at 8
        let mut entries = vec![
            [1000, TYPE_STRING, 0, 1],
            [1003, TYPE_INT32, 4, 1],
            [1117, TYPE_STRING_ARRAY, 8, 2],
        ];
        patch(&mut entries, &mut store);
        let il = entries.len() as u32 + 1;
        let trailer_at = store.len() as u32;
        store.extend(
            [63, TYPE_BIN, (-(16 * il as i32)) as u32, 16]
                .iter()
                .flat_map(|v| v.to_be_bytes()),
        );
        let mut out = HEADER_MAGIC.to_vec();
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&il.to_be_bytes());
        out.extend_from_slice(&(store.len() as u32).to_be_bytes());
        for entry in std::iter::once([63, TYPE_BIN, trailer_at, 16]).chain(entries) {
            out.extend(entry.iter().flat_map(|v| v.to_be_bytes()));
        }
        out.extend_from_slice(&store);
        out
    }

    fn refusal(bytes: &[u8]) -> String {
        match Header::parse(bytes, Which::Main) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_well_formed_header_reads_back() {
        let bytes = main_header(|_, _| {});
        let (header, size) = Header::parse(&bytes, Which::Main).unwrap();
        assert_eq!(size, bytes.len());
        assert_eq!(header.string(1000), Some(&b"hi"[..]));
        assert_eq!(header.numbers(1003), Some(vec![7]));
        assert_eq!(header.strings(1117), Some(vec![&b"a"[..], &b"b"[..]]));
        assert_eq!(header.string(1001), None);
        assert_eq!(header.numbers(1000), None, "a string is not a number");
    }

    /// Each check rpm's hdrblobVerifyInfo makes, broken one at a time.
    #[test]
    fn every_malformed_index_entry_is_refused_like_rpm_refuses_it() {
        type Patch = fn(&mut Vec<[u32; 4]>, &mut Vec<u8>);
        let cases: [(&str, Patch, &str); 10] = [
            (
                "count past the store",
                |e, _| e[2][3] = 0x0fff_ffff,
                "tag[2]: BAD, tag 1117",
            ),
            (
                "offset past the store",
                |e, _| e[0][2] = 0x1000,
                "offset is outside",
            ),
            (
                "negative offset",
                |e, _| e[0][2] = 0xffff_fff0,
                "offset is outside",
            ),
            ("zero count", |e, _| e[1][3] = 0, "count is outside"),
            ("no such type", |e, _| e[0][1] = 10, "no such data type"),
            ("null type", |e, _| e[0][1] = 0, "no such data type"),
            ("misaligned int32", |e, _| e[1][2] = 5, "not aligned"),
            ("reserved tag", |e, _| e[0][0] = 99, "reserved"),
            (
                "wrong type for a known tag",
                |e, _| e[1][1] = TYPE_INT16,
                "this tag has type 4",
            ),
            (
                "overlapping data",
                |e, _| e[1][2] = 0,
                "overlaps the previous",
            ),
        ];
        for (what, patch, expected) in cases {
            let why = refusal(&main_header(patch));
            assert!(why.contains(expected), "{what}: {why}");
        }
        // A STRING holds exactly one string.
        let why = refusal(&main_header(|e, _| e[0][3] = 2));
        assert!(why.contains("tag[0]: BAD"), "{why}");
        // Data running into the region trailer.
        let why = refusal(&main_header(|e, _| {
            e[2][3] = 3;
        }));
        assert!(why.contains("tag[2]: BAD"), "{why}");
    }

    #[test]
    fn a_legacy_header_without_region_is_read_and_its_strings_must_end() {
        let legacy = |store: &[u8]| {
            let mut out = HEADER_MAGIC.to_vec();
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(&1u32.to_be_bytes());
            out.extend_from_slice(&(store.len() as u32).to_be_bytes());
            out.extend(
                [1000, TYPE_STRING, 0, 1]
                    .iter()
                    .flat_map(|v: &u32| v.to_be_bytes()),
            );
            out.extend_from_slice(store);
            out
        };
        let (header, _) = Header::parse(&legacy(b"hi\0"), Which::Main).unwrap();
        assert_eq!(header.string(1000), Some(&b"hi"[..]));
        assert!(refusal(&legacy(b"hi!")).contains("do not end (NUL)"));
    }

    #[test]
    fn sizes_and_the_region_are_checked_before_anything_else() {
        let good = main_header(|_, _| {});
        let set = |at: usize, value: u32| {
            let mut bytes = good.clone();
            bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
            bytes
        };
        assert!(refusal(&set(8, 0x10000)).contains("65536 index entries"));
        assert!(refusal(&set(8, 0)).contains("0 index entries"));
        assert!(refusal(&set(12, 0x1000_0000)).contains("data store"));
        assert_eq!(
            Header::parse(&set(12, 0x0fff_0000), Which::Main).unwrap_err(),
            HeaderError::Truncated("main header"),
            "a header claiming more bytes than there are is truncated"
        );
        assert!(refusal(&set(0, 0)).contains("magic"));
        // The region tag's type, its trailer's tag, the size it claims.
        assert!(refusal(&set(16 + 4, TYPE_INT32)).contains("region tag: BAD"));
        let trailer = good.len() - 16;
        assert!(refusal(&set(trailer, 62)).contains("region trailer: BAD"));
        assert!(refusal(&set(trailer + 8, (-32i32) as u32)).contains("tag number mismatch"));
        assert!(refusal(&set(16 + 8, 0x7fff_0000)).contains("region offset: BAD"));
        // The signature header allows 32 entries at most.
        let mut sig = set(8, 33);
        sig[16..20].copy_from_slice(&62u32.to_be_bytes());
        assert!(
            Header::parse(&sig, Which::Signature)
                .unwrap_err()
                .to_string()
                .contains("33 index entries")
        );
    }

    #[test]
    fn reading_from_a_file_never_allocates_past_its_length() {
        // A lead, then a signature header claiming a 64 MiB store, in a 200-byte file.
        let mut file = LEAD_MAGIC.to_vec();
        file.resize(LEAD_SIZE, 0);
        file.extend_from_slice(&HEADER_MAGIC);
        file.extend_from_slice(&[0; 4]);
        file.extend_from_slice(&1u32.to_be_bytes());
        file.extend_from_slice(&(64u32 << 20).to_be_bytes());
        file.resize(200, 0);
        let len = file.len() as u64;
        assert_eq!(
            read_headers(&mut &file[..], len).unwrap_err(),
            HeaderError::Truncated("signature header")
        );
        assert_eq!(
            read_headers(&mut &b"text"[..], 4).unwrap_err(),
            HeaderError::NoLead
        );
    }
}
