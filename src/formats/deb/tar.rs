//! The tar streams inside a `.deb` (control.tar and data.tar), walked one 512-byte
//! header at a time with the rules of dpkg's own extractor (`lib/dpkg/tarfn.c`), so a
//! package we accept is one `dpkg -i` can unpack.
//!
//! Hand-written rather than the `tar` crate because that crate reads a GNU long name
//! or a pax header whole into memory, however large the header claims it is: a 200 KiB
//! package claiming a 200 MiB name cost the server 480 MiB. Here every header's size is
//! checked before its body is read, so the memory an entry can make us hold is
//! [`MAX_PATH_BYTES`], whatever the archive claims.
//!
//! Entry types are dpkg's: files, hard links, symlinks, devices, directories, FIFOs and
//! GNU long names/links (`L`/`K`). Everything dpkg refuses is refused: pax extended
//! headers (`x`, `g`), GNU sparse/volume/multivolume/dumpdir entries, Solaris ACLs and
//! unknown types; so are bad header checksums, empty names, and names with a NUL inside.

use std::io::{self, Read};

const BLOCK: usize = 512;

/// The longest name (and link target) an entry may have: Linux's PATH_MAX. dpkg could
/// not create a longer path on the file system anyway.
pub const MAX_PATH_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("the tar stream ends inside an entry")]
    Truncated,
    #[error("invalid tar header at byte {offset}: {why}")]
    BadHeader { offset: u64, why: String },
    #[error(
        "a tar entry's long name or link claims {claimed} bytes; names are at most {MAX_PATH_BYTES} bytes (PATH_MAX)"
    )]
    LongNameTooLong { claimed: u64 },
    #[error("{0}")]
    Unsupported(String),
}

/// What an entry is, for the callers' purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    File,
    /// Symlinks, hard links, devices and FIFOs: listed, never read.
    Other,
}

/// One entry: its full name (long names applied) and the size of its body.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: Vec<u8>,
    pub kind: EntryKind,
    pub size: u64,
}

/// Reads entries in order; the body of the current entry is skipped unless read.
pub struct TarWalker<R> {
    reader: R,
    /// Bytes consumed from `reader`, for error messages.
    offset: u64,
    /// Unread body bytes of the current entry, padding included.
    pending: u64,
    /// Body bytes of the current entry that are data rather than padding.
    pending_data: u64,
    finished: bool,
}

impl<R: Read> TarWalker<R> {
    pub fn new(reader: R) -> Self {
        TarWalker {
            reader,
            offset: 0,
            pending: 0,
            pending_data: 0,
            finished: false,
        }
    }

    /// The next entry, or `None` at the end-of-archive block (or a clean end of stream).
    pub fn next_entry(&mut self) -> Result<Option<Entry>, TarError> {
        if self.finished {
            return Ok(None);
        }
        self.skip_body()?;
        let mut long_name: Option<Vec<u8>> = None;
        loop {
            let header_offset = self.offset;
            let mut header = [0u8; BLOCK];
            match self.read_block(&mut header)? {
                false => {
                    // A stream that stops between entries: dpkg takes it as the end.
                    self.finished = true;
                    return match long_name {
                        Some(_) => Err(TarError::Truncated),
                        None => Ok(None),
                    };
                }
                true if header.iter().all(|b| *b == 0) => {
                    self.finished = true;
                    return match long_name {
                        Some(_) => Err(TarError::Truncated),
                        None => Ok(None),
                    };
                }
                true => {}
            }
            let bad = |why: String| TarError::BadHeader {
                offset: header_offset,
                why,
            };
            verify_checksum(&header).map_err(bad)?;
            let size = parse_number(&header[124..136])
                .ok_or_else(|| bad("the size field is not a number".into()))?;
            let type_flag = header[156];
            let padded = size
                .checked_add(BLOCK as u64 - 1)
                .ok_or_else(|| bad("the size field overflows".into()))?
                / BLOCK as u64
                * BLOCK as u64;
            self.pending = padded;
            self.pending_data = size;
            let kind = match type_flag {
                b'L' | b'K' => {
                    // The name (or link target) of the next entry; a NUL usually ends it.
                    if size > MAX_PATH_BYTES as u64 + 1 {
                        return Err(TarError::LongNameTooLong { claimed: size });
                    }
                    let mut body = vec![0u8; size as usize];
                    self.read_exact_body(&mut body)?;
                    while body.last() == Some(&0) {
                        body.pop();
                    }
                    if body.contains(&0) {
                        return Err(bad("a GNU long name has a NUL byte inside".into()));
                    }
                    if type_flag == b'L' {
                        long_name = Some(body);
                    }
                    self.skip_body()?;
                    continue;
                }
                b'0' | 0 => EntryKind::File,
                b'5' => EntryKind::Directory,
                b'1' | b'2' | b'3' | b'4' | b'6' => EntryKind::Other,
                b'x' | b'g' => {
                    return Err(TarError::Unsupported(
                        "the tar stream has a pax extended header, which dpkg cannot unpack (\"unsupported PAX tar header type\"); build the package with dpkg-deb".into(),
                    ));
                }
                other => {
                    return Err(TarError::Unsupported(format!(
                        "the tar stream has an entry of type {:?}, which dpkg cannot unpack; build the package with dpkg-deb",
                        char::from(other)
                    )));
                }
            };
            let name = match long_name.take() {
                Some(name) => name,
                None => header_name(&header),
            };
            if name.is_empty() {
                return Err(bad("an entry has an empty name".into()));
            }
            // Pre-POSIX tars mark directories by a trailing slash on a file entry (as dpkg reads it).
            let kind = if kind == EntryKind::File && name.ends_with(b"/") {
                EntryKind::Directory
            } else {
                kind
            };
            return Ok(Some(Entry { name, kind, size }));
        }
    }

    /// The current entry's body if it has at most `max` bytes, else `Ok(None)` (left unread).
    pub fn read_body(&mut self, max: usize) -> Result<Option<Vec<u8>>, TarError> {
        if self.pending_data > max as u64 {
            return Ok(None);
        }
        let mut body = vec![0u8; self.pending_data as usize];
        self.read_exact_body(&mut body)?;
        Ok(Some(body))
    }

    /// Whatever follows the end of the archive (drained by callers so size bounds apply).
    pub fn into_inner(self) -> R {
        self.reader
    }

    fn read_exact_body(&mut self, buf: &mut [u8]) -> Result<(), TarError> {
        self.reader.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => TarError::Truncated,
            _ => TarError::Io(e),
        })?;
        self.offset += buf.len() as u64;
        self.pending -= buf.len() as u64;
        self.pending_data -= buf.len() as u64;
        Ok(())
    }

    fn skip_body(&mut self) -> Result<(), TarError> {
        if self.pending > 0 {
            let skipped = io::copy(&mut (&mut self.reader).take(self.pending), &mut io::sink())?;
            self.offset += skipped;
            if skipped < self.pending {
                return Err(TarError::Truncated);
            }
            self.pending = 0;
            self.pending_data = 0;
        }
        Ok(())
    }

    /// One whole block; `false` at a clean end of stream, an error for a partial block.
    fn read_block(&mut self, block: &mut [u8; BLOCK]) -> Result<bool, TarError> {
        let mut filled = 0;
        while filled < BLOCK {
            match self.reader.read(&mut block[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.offset += filled as u64;
        match filled {
            0 => Ok(false),
            BLOCK => Ok(true),
            _ => Err(TarError::Truncated),
        }
    }
}

/// The name field, with the ustar prefix when the header is POSIX ustar (GNU headers
/// use that space for other things, as dpkg knows).
fn header_name(header: &[u8; BLOCK]) -> Vec<u8> {
    let name = until_nul(&header[0..100]);
    let prefix = until_nul(&header[345..500]);
    if &header[257..263] == b"ustar\0" && !prefix.is_empty() {
        let mut full = prefix.to_vec();
        full.push(b'/');
        full.extend_from_slice(name);
        full
    } else {
        name.to_vec()
    }
}

fn until_nul(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    &field[..end]
}

/// dpkg's check: the unsigned sum of the header bytes, the checksum field counted as spaces.
fn verify_checksum(header: &[u8; BLOCK]) -> Result<(), String> {
    let stored = parse_number(&header[148..156]).ok_or("the checksum field is not a number")?;
    let computed: u64 = header
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                *b as u64
            }
        })
        .sum();
    if stored == computed {
        Ok(())
    } else {
        Err(format!(
            "checksum {stored} does not match the header ({computed})"
        ))
    }
}

/// An octal field (leading spaces, ended by a space or NUL), or GNU base-256 when the
/// top bit of the first byte is set (sizes of 8 GiB and more).
fn parse_number(field: &[u8]) -> Option<u64> {
    if let Some((&first, rest)) = field.split_first()
        && first & 0x80 != 0
    {
        if first & 0x40 != 0 {
            return None; // negative
        }
        let mut value = u64::from(first & 0x3f);
        for &b in rest {
            value = value.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(value);
    }
    let text = field.iter().skip_while(|b| **b == b' ');
    let mut value: u64 = 0;
    let mut digits = 0;
    for &b in text {
        match b {
            b'0'..=b'7' => {
                value = value.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
                digits += 1;
            }
            b' ' | 0 => break,
            _ => return None,
        }
    }
    (digits > 0).then_some(value)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One GNU-format header block with a valid checksum.
    pub(crate) fn header(name: &[u8], type_flag: u8, size: u64) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[136..147].copy_from_slice(b"14356066400");
        h[156] = type_flag;
        h[257..265].copy_from_slice(b"ustar  \0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|b| *b as u64).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    /// An entry: header, body, padding.
    pub(crate) fn entry(name: &[u8], type_flag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = header(name, type_flag, body.len() as u64);
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
        out
    }

    pub(crate) fn end() -> Vec<u8> {
        vec![0u8; 2 * BLOCK]
    }

    fn walk(bytes: &[u8]) -> Result<Vec<(Vec<u8>, EntryKind)>, TarError> {
        let mut walker = TarWalker::new(bytes);
        let mut out = Vec::new();
        while let Some(e) = walker.next_entry()? {
            out.push((e.name, e.kind));
        }
        Ok(out)
    }

    #[test]
    fn walks_files_dirs_links_and_long_names() {
        let long = format!("./usr/share/{}/file", "d".repeat(200));
        let mut tar = entry(b"./", b'5', b"");
        tar.extend(entry(b"./usr/bin/hello", b'0', b"#!/bin/sh\n"));
        tar.extend(entry(
            b"././@LongLink",
            b'L',
            format!("{long}\0").as_bytes(),
        ));
        tar.extend(entry(b"truncated-name", b'0', b"x"));
        tar.extend(entry(b"./usr/bin/hi", b'2', b""));
        tar.extend(entry(b"./old-style-dir/", b'0', b""));
        tar.extend(end());
        let got = walk(&tar).unwrap();
        assert_eq!(
            got,
            vec![
                (b"./".to_vec(), EntryKind::Directory),
                (b"./usr/bin/hello".to_vec(), EntryKind::File),
                (long.into_bytes(), EntryKind::File),
                (b"./usr/bin/hi".to_vec(), EntryKind::Other),
                (b"./old-style-dir/".to_vec(), EntryKind::Directory),
            ]
        );
    }

    #[test]
    fn reads_a_small_body_and_leaves_a_large_one() {
        let mut tar = entry(b"./control", b'0', b"Package: x\n");
        tar.extend(entry(b"./big", b'0', &[7u8; 2000]));
        tar.extend(end());
        let mut walker = TarWalker::new(&tar[..]);
        walker.next_entry().unwrap().unwrap();
        assert_eq!(
            walker.read_body(100).unwrap().unwrap(),
            b"Package: x\n".to_vec()
        );
        let big = walker.next_entry().unwrap().unwrap();
        assert_eq!(big.size, 2000);
        assert!(walker.read_body(100).unwrap().is_none());
        assert!(walker.next_entry().unwrap().is_none());
    }

    #[test]
    fn a_huge_long_name_is_refused_from_its_header_alone() {
        // The header claims 200 MiB and no body follows: nothing may be read or allocated.
        let mut tar = header(b"././@LongLink", b'L', 200 << 20);
        tar.extend(end());
        assert!(matches!(
            walk(&tar),
            Err(TarError::LongNameTooLong { claimed }) if claimed == 200 << 20
        ));
        let mut link = header(b"././@LongLink", b'K', MAX_PATH_BYTES as u64 + 2);
        link.extend(end());
        assert!(matches!(walk(&link), Err(TarError::LongNameTooLong { .. })));
        // PATH_MAX bytes plus the terminating NUL are fine.
        let name = vec![b'a'; MAX_PATH_BYTES];
        let mut ok = entry(b"././@LongLink", b'L', &[&name[..], b"\0"].concat());
        ok.extend(entry(b"x", b'0', b""));
        ok.extend(end());
        assert_eq!(walk(&ok).unwrap()[0].0, name);
    }

    #[test]
    fn refuses_what_dpkg_refuses() {
        for type_flag in [b'x', b'g', b'S', b'V', b'M', b'D', b'A', b'X', b'7', b'Z'] {
            let mut tar = entry(b"./f", type_flag, b"path=1\n");
            tar.extend(end());
            assert!(
                matches!(walk(&tar), Err(TarError::Unsupported(_))),
                "type {}",
                char::from(type_flag)
            );
        }
        let mut bad_sum = entry(b"./f", b'0', b"");
        bad_sum[0] = b'g';
        assert!(matches!(walk(&bad_sum), Err(TarError::BadHeader { .. })));
        let mut nul_inside = entry(b"././@LongLink", b'L', b"usr/bin/a\0usr/sbin/sshd\0");
        nul_inside.extend(entry(b"x", b'0', b""));
        assert!(matches!(walk(&nul_inside), Err(TarError::BadHeader { .. })));
        let mut empty_name = entry(b"", b'0', b"");
        empty_name.extend(end());
        assert!(matches!(walk(&empty_name), Err(TarError::BadHeader { .. })));
        // A long name with nothing after it, a body cut short, a partial header.
        let dangling = entry(b"././@LongLink", b'L', b"usr/x\0");
        assert!(matches!(walk(&dangling), Err(TarError::Truncated)));
        let cut = &entry(b"./f", b'0', &[1u8; 600])[..700];
        let mut walker = TarWalker::new(cut);
        walker.next_entry().unwrap();
        assert!(matches!(walker.next_entry(), Err(TarError::Truncated)));
        assert!(matches!(walk(&[0u8; 100]), Err(TarError::Truncated)));
    }

    #[test]
    fn numbers_are_octal_or_base_256() {
        assert_eq!(parse_number(b"00000001750\0"), Some(1000));
        assert_eq!(parse_number(b"  1750 \0\0\0\0\0"), Some(1000));
        assert_eq!(parse_number(b"\0\0\0\0"), None);
        assert_eq!(parse_number(b"12a4"), None);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[7] = 0x02; // 2 << 32
        assert_eq!(parse_number(&big), Some(2 << 32));
        big[0] = 0xff;
        assert_eq!(parse_number(&big), None);
    }
}
