//! The `ar` container that wraps every `.deb`: an 8-byte magic and a sequence of
//! members, each with a fixed 60-byte text header. We only walk headers and hand
//! out bounded readers over member bodies, so a package is never read whole.

use std::io::{self, Read, Seek, SeekFrom};

const MAGIC: &[u8; 8] = b"!<arch>\n";
const HEADER_LEN: usize = 60;

#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    pub offset: u64,
    pub size: u64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ArError {
    #[error("not an ar archive (a .deb starts with \"!<arch>\\n\")")]
    BadMagic,
    #[error("the archive is truncated: member {0:?} claims {1} bytes but the file ends first")]
    Truncated(String, u64),
    #[error("the archive is truncated inside a member header")]
    TruncatedHeader,
    #[error("malformed ar member header: {0}")]
    BadHeader(String),
    #[error("too many ar members (more than {0})")]
    TooManyMembers(usize),
}

/// List the members of an ar archive of total length `file_len`.
pub fn members<R: Read + Seek + ?Sized>(
    reader: &mut R,
    file_len: u64,
) -> Result<Vec<Member>, ArError> {
    const MAX_MEMBERS: usize = 64;
    let mut magic = [0u8; 8];
    if read_full(reader, &mut magic).map_err(|_| ArError::BadMagic)? != 8 || &magic != MAGIC {
        return Err(ArError::BadMagic);
    }
    let mut members = Vec::new();
    let mut pos = 8u64;
    while pos < file_len {
        if members.len() == MAX_MEMBERS {
            return Err(ArError::TooManyMembers(MAX_MEMBERS));
        }
        reader
            .seek(SeekFrom::Start(pos))
            .map_err(|_| ArError::TruncatedHeader)?;
        let mut header = [0u8; HEADER_LEN];
        let got = read_full(reader, &mut header).map_err(|_| ArError::TruncatedHeader)?;
        if got == 1 && header[0] == b'\n' && pos + 1 == file_len {
            break; // a trailing pad byte after the last odd-sized member
        }
        if got != HEADER_LEN {
            return Err(ArError::TruncatedHeader);
        }
        if &header[58..60] != b"`\n" {
            return Err(ArError::BadHeader(
                "missing the header terminator \"`\\n\"".into(),
            ));
        }
        let name = std::str::from_utf8(&header[0..16])
            .map_err(|_| ArError::BadHeader("member name is not text".into()))?
            .trim_end()
            .trim_end_matches('/')
            .to_string();
        if name.is_empty() || name.contains('/') {
            return Err(ArError::BadHeader(format!(
                "member name {name:?} is not a plain file name"
            )));
        }
        let size_text = std::str::from_utf8(&header[48..58])
            .map_err(|_| ArError::BadHeader("size is not text".into()))?;
        let size: u64 = size_text.trim_end().parse().map_err(|_| {
            ArError::BadHeader(format!(
                "member {name:?} has a non-numeric size {size_text:?}"
            ))
        })?;
        let offset = pos + HEADER_LEN as u64;
        let end = offset
            .checked_add(size)
            .ok_or_else(|| ArError::Truncated(name.clone(), size))?;
        if end > file_len {
            return Err(ArError::Truncated(name, size));
        }
        members.push(Member { name, offset, size });
        pos = end + (end % 2);
    }
    Ok(members)
}

fn read_full<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Cursor;

    /// One member: its 60-byte header, its body, and the pad byte after an odd body.
    pub(crate) fn member(name: &str, body: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            name,
            0,
            0,
            0,
            100644,
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        if body.len() % 2 == 1 {
            out.push(b'\n');
        }
        out
    }

    #[test]
    fn lists_members_with_padding() {
        let mut ar = MAGIC.to_vec();
        ar.extend(member("debian-binary", b"2.0\n"));
        ar.extend(member("control.tar.xz/", b"abc"));
        ar.extend(member("data.tar", b"xy"));
        let len = ar.len() as u64;
        let found = members(&mut Cursor::new(ar), len).unwrap();
        let names: Vec<_> = found.iter().map(|m| (m.name.as_str(), m.size)).collect();
        assert_eq!(
            names,
            vec![("debian-binary", 4), ("control.tar.xz", 3), ("data.tar", 2)]
        );
    }

    #[test]
    fn refuses_bad_magic_truncation_and_bad_sizes() {
        assert_eq!(
            members(&mut Cursor::new(b"hello".to_vec()), 5),
            Err(ArError::BadMagic)
        );
        let mut ar = MAGIC.to_vec();
        ar.extend(member("debian-binary", b"2.0\n"));
        let cut = ar.len() as u64 - 2;
        assert!(matches!(
            members(&mut Cursor::new(ar.clone()), cut),
            Err(ArError::Truncated(..))
        ));
        let mut bad = MAGIC.to_vec();
        bad.extend(
            format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                "x", 0, 0, 0, 0, "12z"
            )
            .into_bytes(),
        );
        let len = bad.len() as u64;
        assert!(matches!(
            members(&mut Cursor::new(bad), len),
            Err(ArError::BadHeader(_))
        ));
    }
}
