//! Compressed forms of index files. apt fetches Packages.xz when Release lists
//! it, falling back to .gz; we always publish both plus the plain file.

use std::io::Write;

pub fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::new(6),
    );
    encoder.write_all(data)?;
    encoder.finish()
}

/// Preset 6 reserves an 8 MiB dictionary and clears its match-finder tables on every
/// encoder: for index chunks of a few KiB that clearing was the largest user-space cost of a
/// cold import (perf). A dictionary that just covers the input finds the same
/// matches, since no match can reach further back than the input's start.
pub fn xz(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use liblzma::stream::{Check, Filters, LzmaOptions, Stream};
    const PRESET: u32 = 6;
    const PRESET_DICTIONARY: usize = 8 << 20;
    const NICE_LENGTH: u32 = 16;
    // liblzma's smallest dictionary is 4 KiB.
    let dictionary = data
        .len()
        .clamp(4096, PRESET_DICTIONARY)
        .next_power_of_two();
    let mut options = LzmaOptions::new_preset(PRESET).map_err(std::io::Error::other)?;
    options.dict_size(dictionary.min(PRESET_DICTIONARY) as u32);
    // Index files are text with short repeats: hash chains with a nice length of 16
    // compress them in about half the time for an output a little larger (measured in
    // BENCHMARKS.md "Measurements behind the code").
    options.match_finder(liblzma::stream::MatchFinder::HashChain4);
    options.nice_len(NICE_LENGTH);
    let mut filters = Filters::new();
    filters.lzma2(&options);
    let stream =
        Stream::new_stream_encoder(&filters, Check::Crc64).map_err(std::io::Error::other)?;
    let mut encoder =
        liblzma::write::XzEncoder::new_stream(Vec::with_capacity(data.len() / 5), stream);
    encoder.write_all(data)?;
    encoder.finish()
}

/// One xz block, cut out of a single-block stream so that blocks made at
/// different times can be joined into one stream. apt 2.6 reads one xz stream
/// of many blocks (what `xz -T` writes) but not concatenated streams.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct XzBlock {
    /// Block header, compressed data, padding and check, as they sit in a stream.
    #[serde(skip)]
    pub bytes: Vec<u8>,
    /// The index record: block size without padding, and the uncompressed size.
    pub unpadded: u64,
    pub uncompressed: u64,
}

const XZ_HEADER_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0];
const XZ_FOOTER_MAGIC: [u8; 2] = [b'Y', b'Z'];

fn read_vli(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..63).step_by(7) {
        let byte = *bytes.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn write_vli(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn crc32(bytes: &[u8]) -> [u8; 4] {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum().to_le_bytes()
}

/// Compress one piece of text into a single xz block.
pub fn xz_block(data: &[u8]) -> std::io::Result<XzBlock> {
    let stream = xz(data)?;
    let bad = || std::io::Error::other("unexpected xz stream layout");
    // Footer: CRC32, backward size, stream flags, magic.
    let footer = stream.len().checked_sub(12).ok_or_else(bad)?;
    if stream[footer + 10..] != XZ_FOOTER_MAGIC || stream[..6] != XZ_HEADER_MAGIC {
        return Err(bad());
    }
    let backward = u32::from_le_bytes(
        stream[footer + 4..footer + 8]
            .try_into()
            .map_err(|_| bad())?,
    );
    let index_size = (backward as usize + 1) * 4;
    let index = footer.checked_sub(index_size).ok_or_else(bad)?;
    let mut pos = index + 1; // index indicator 0x00
    let records = read_vli(&stream, &mut pos).ok_or_else(bad)?;
    if records != 1 {
        return Err(bad());
    }
    let unpadded = read_vli(&stream, &mut pos).ok_or_else(bad)?;
    let uncompressed = read_vli(&stream, &mut pos).ok_or_else(bad)?;
    Ok(XzBlock {
        bytes: stream[12..index].to_vec(),
        unpadded,
        uncompressed,
    })
}

/// Join blocks (all made by `xz_block`, so with the same check type) into one stream.
pub fn xz_stream(blocks: &[&XzBlock]) -> std::io::Result<Vec<u8>> {
    if blocks.is_empty() {
        return xz(b"");
    }
    let frame = xz_frame(blocks);
    let mut out = frame.header;
    for block in blocks {
        out.extend_from_slice(&block.bytes);
    }
    out.extend_from_slice(&frame.tail);
    Ok(out)
}

/// What one xz stream puts around its blocks: the stream header before them, and the
/// index and footer after. Only the tail depends on the blocks (their sizes), so a
/// stored stream can be kept as header, the blocks' own blobs, and tail.
pub struct XzFrame {
    pub header: Vec<u8>,
    pub tail: Vec<u8>,
}

/// The frame of a stream of `blocks` (at least one).
pub fn xz_frame<B: std::borrow::Borrow<XzBlock>>(blocks: &[B]) -> XzFrame {
    // Our blocks come from liblzma's default: CRC64 check (stream flags 0x00 0x04).
    let flags = [0x00, 0x04];
    let mut header = XZ_HEADER_MAGIC.to_vec();
    header.extend_from_slice(&flags);
    header.extend_from_slice(&crc32(&flags));
    let mut index = vec![0x00];
    write_vli(blocks.len() as u64, &mut index);
    for block in blocks {
        write_vli(block.borrow().unpadded, &mut index);
        write_vli(block.borrow().uncompressed, &mut index);
    }
    while index.len() % 4 != 0 {
        index.push(0);
    }
    let index_crc = crc32(&index);
    index.extend_from_slice(&index_crc);
    let backward = (index.len() / 4 - 1) as u32;
    let mut tail = index;
    let mut footer_body = backward.to_le_bytes().to_vec();
    footer_body.extend_from_slice(&flags);
    tail.extend_from_slice(&crc32(&footer_body));
    tail.extend_from_slice(&footer_body);
    tail.extend_from_slice(&XZ_FOOTER_MAGIC);
    XzFrame { header, tail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn blocks_join_into_one_stream_that_decodes_to_their_concatenation() {
        let parts: Vec<Vec<u8>> = (0..5)
            .map(|i| {
                format!("Package: p{i}\nVersion: 1\n\n")
                    .repeat(50 + i * 30)
                    .into_bytes()
            })
            .collect();
        let blocks: Vec<XzBlock> = parts.iter().map(|p| xz_block(p).unwrap()).collect();
        let stream = xz_stream(&blocks.iter().collect::<Vec<_>>()).unwrap();
        let mut decoded = Vec::new();
        liblzma::read::XzDecoder::new(&stream[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, parts.concat());
        // The real xz tool agrees it is one valid stream.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.xz"), &stream).unwrap();
        let listing = std::process::Command::new("xz")
            .args(["--robot", "--list"])
            .arg(dir.path().join("p.xz"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&listing.stdout);
        assert!(
            listing.status.success() && text.lines().any(|l| l.starts_with("file\t1\t5\t")),
            "{text}"
        );
        let mut empty = Vec::new();
        liblzma::read::XzDecoder::new(&xz_stream(&[]).unwrap()[..])
            .read_to_end(&mut empty)
            .unwrap();
        assert!(empty.is_empty());
    }
}
