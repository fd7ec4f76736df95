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

pub fn xz(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = liblzma::write::XzEncoder::new(Vec::with_capacity(data.len() / 5), 6);
    encoder.write_all(data)?;
    encoder.finish()
}
