//! Reading blobs straight from local files: a whole blob file, or a blob's slice of a
//! pack file, checked against the range asked for. Shared by loose blobs and packs.

use std::ops::Range;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use super::{Result, StoreError};
use crate::util::digest::Digest;

/// The byte range a read asked for, or all of a blob of `size` bytes.
pub(super) fn checked_range(
    digest: &Digest,
    range: Option<Range<u64>>,
    size: u64,
) -> Result<Range<u64>> {
    match range {
        Some(r) if r.start <= r.end && r.end <= size => Ok(r),
        Some(r) => Err(StoreError::Corrupt(
            format!("blob {digest}"),
            format!("range {}..{} is outside its {size} bytes", r.start, r.end),
        )),
        None => Ok(0..size),
    }
}

/// Blobs are checked on every whole read: a flipped byte on disk is an error, never content.
pub(super) fn check_digest(bytes: Bytes, digest: &Digest) -> Result<Bytes> {
    let actual = Digest::of(&bytes);
    if actual != *digest {
        return Err(StoreError::Corrupt(
            format!("blob {digest}"),
            format!("content hashes to {actual}"),
        ));
    }
    Ok(bytes)
}

/// Local reads up to this size come back in one piece; longer ones stream.
pub(super) const READ_WHOLE: u64 = 1 << 20;

/// A local blob read whole, or opened for streaming.
enum LocalBody {
    Whole(Bytes),
    Open(std::fs::File, std::path::PathBuf),
}

/// Streams `length` bytes from `start` of a local file (a blob inside a pack).
pub(super) async fn stream_local_slice(
    file_path: &std::path::Path,
    digest: &Digest,
    start: u64,
    length: u64,
) -> Result<BoxStream<'static, Result<Bytes>>> {
    let range = Some(0..length);
    let (_, _, body) = open_local(file_path, digest, start, Some(length), range).await?;
    Ok(body)
}

/// Opens the blob that sits at `base` of a local file, `size` bytes long (the rest of
/// the file when `None`), and reads `range` of it.
pub(super) async fn open_local(
    file_path: &std::path::Path,
    digest: &Digest,
    base: u64,
    size: Option<u64>,
    range: Option<Range<u64>>,
) -> Result<(u64, Range<u64>, BoxStream<'static, Result<Bytes>>)> {
    use std::io::{Read, Seek};
    let path = file_path.to_path_buf();
    let digest = *digest;
    let opened = super::blocking("opening a local blob", move || -> Result<_> {
        let io_error = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::NotFound(format!("blob {digest}"))
            } else {
                StoreError::Io(path.clone(), e)
            }
        };
        let mut file = std::fs::File::open(&path).map_err(io_error)?;
        let size = match size {
            Some(size) => size,
            None => file.metadata().map_err(io_error)?.len(),
        };
        let range = checked_range(&digest, range, size)?;
        file.seek(std::io::SeekFrom::Start(base + range.start))
            .map_err(io_error)?;
        let length = range.end - range.start;
        if length <= READ_WHOLE {
            let mut bytes = Vec::with_capacity(length as usize);
            file.take(length)
                .read_to_end(&mut bytes)
                .map_err(io_error)?;
            return Ok((size, range, LocalBody::Whole(Bytes::from(bytes))));
        }
        Ok((size, range, LocalBody::Open(file, path)))
    })
    .await??;
    let (size, range, body) = opened;
    let body = match body {
        LocalBody::Whole(bytes) => futures::stream::once(async move { Ok(bytes) }).boxed(),
        LocalBody::Open(file, path) => {
            use tokio::io::AsyncReadExt;
            tokio_util::io::ReaderStream::with_capacity(
                tokio::fs::File::from_std(file).take(range.end - range.start),
                256 * 1024,
            )
            .map_err(move |e| StoreError::Io(path.clone(), e))
            .boxed()
        }
    };
    Ok((size, range, body))
}
