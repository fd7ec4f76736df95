//! Storing a local file into a local-disk store without object_store's multipart
//! machinery: one trip to the blocking pool copies the file into a temp file
//! beside its final name while hashing it, then renames it into place. Bulk
//! imports may defer the fsync of each blob to one `syncfs` before any ref can
//! name them (see `Store::bulk`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::{BlobMeta, StoreError};
use crate::util::digest::{Digest, Hasher};

/// Copy buffers never exceed this; small packages get a buffer their own size, rather
/// than zeroing a 1 MiB buffer for each 4 KiB deb.
const MAX_BUFFER: u64 = 1024 * 1024;

pub(crate) fn buffer_for(size: u64) -> Vec<u8> {
    vec![0u8; size.clamp(4096, MAX_BUFFER) as usize]
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + use<> {
    let path = path.to_path_buf();
    move |e| StoreError::Io(path, e)
}

/// Blobs are named by their digest, so one already at its name holds these bytes.
fn already_stored(destination: &Path, digest: Digest) -> Option<BlobMeta> {
    std::fs::metadata(destination).ok().map(|meta| BlobMeta {
        digest,
        size: meta.len(),
    })
}

/// Writes a new file at `destination` the crash-safe way: into a temp file beside it
/// (filled by `fill`, which may refuse), fsynced unless deferred, then renamed into place.
fn install<T>(
    destination: &Path,
    sync: bool,
    fill: impl FnOnce(&mut std::fs::File, &Path) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let directory = destination
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&directory).map_err(io_error(&directory))?;
    let temporary = temporary_name(destination);
    let mut cleanup = RemoveUnlessKept(Some(temporary.clone()));
    let mut writer = std::fs::File::create(&temporary).map_err(io_error(&temporary))?;
    let filled = fill(&mut writer, &temporary)?;
    if sync {
        writer.sync_all().map_err(io_error(&temporary))?;
    }
    drop(writer);
    std::fs::rename(&temporary, destination).map_err(io_error(destination))?;
    cleanup.0 = None;
    if sync {
        std::fs::File::open(&directory)
            .and_then(|d| d.sync_all())
            .map_err(io_error(&directory))?;
    }
    Ok(filled)
}

/// Copies `source` to `<root>/<relative>`, refusing it if its bytes do not hash to
/// `expected` (a file changed behind our back must never be stored under a wrong name).
pub(crate) fn put_file(
    root: &Path,
    relative: &str,
    source: &Path,
    expected: Digest,
    sync: bool,
) -> Result<BlobMeta, StoreError> {
    let destination = root.join(relative);
    if let Some(stored) = already_stored(&destination, expected) {
        return Ok(stored);
    }
    let mut reader = std::fs::File::open(source).map_err(io_error(source))?;
    let length = reader.metadata().map_err(io_error(source))?.len();
    install(&destination, sync, |writer, temporary| {
        let mut hasher = Hasher::new();
        let mut buffer = buffer_for(length);
        loop {
            let n = reader.read(&mut buffer).map_err(io_error(source))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            writer
                .write_all(&buffer[..n])
                .map_err(io_error(temporary))?;
        }
        let (digest, size) = hasher.finish();
        if digest != expected {
            return Err(changed_while_stored(source, expected, digest));
        }
        Ok(BlobMeta { digest, size })
    })
}

/// Moves a private spool file into place by renaming it. Across filesystems (the spool
/// directory on another mount) it falls back to a hashing copy.
pub(crate) fn adopt_file(
    root: &Path,
    relative: &str,
    source: &Path,
    expected: Digest,
    sync: bool,
) -> Result<BlobMeta, StoreError> {
    if let Some(stored) = already_stored(&root.join(relative), expected) {
        return Ok(stored);
    }
    let size = std::fs::metadata(source).map_err(io_error(source))?.len();
    rename_into_place(root, relative, source, sync, || {
        put_file(root, relative, source, expected, sync).map(|_| ())
    })?;
    Ok(BlobMeta {
        digest: expected,
        size,
    })
}

/// Moves a file of ours to `<root>/<relative>` (replacing nothing: the name is new),
/// renaming it, or copying it across filesystems; its content is not checked here.
pub(crate) fn move_file(
    root: &Path,
    relative: &str,
    source: &Path,
    sync: bool,
) -> Result<(), StoreError> {
    rename_into_place(root, relative, source, sync, || {
        let mut reader = std::fs::File::open(source).map_err(io_error(source))?;
        install(&root.join(relative), sync, |writer, temporary| {
            std::io::copy(&mut reader, writer)
                .map(|_| ())
                .map_err(io_error(temporary))
        })
    })
}

/// Renames `source` to `<root>/<relative>`: with `sync`, the bytes reach the disk
/// before the name that promises them, and the directory entry after. Across
/// filesystems, where rename cannot work, `copy_across` writes the destination instead.
fn rename_into_place(
    root: &Path,
    relative: &str,
    source: &Path,
    sync: bool,
    copy_across: impl FnOnce() -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let destination = root.join(relative);
    if sync {
        std::fs::File::open(source)
            .and_then(|f| f.sync_all())
            .map_err(io_error(source))?;
    }
    let directory = destination
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.to_path_buf());
    std::fs::create_dir_all(&directory).map_err(io_error(&directory))?;
    match std::fs::rename(source, &destination) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => return copy_across(),
        Err(e) => return Err(StoreError::Io(destination, e)),
    }
    if sync {
        std::fs::File::open(&directory)
            .and_then(|d| d.sync_all())
            .map_err(io_error(&directory))?;
    }
    Ok(())
}

/// Writes a small in-memory blob to `<root>/<relative>` unless it is there already,
/// in one trip (object_store's put takes several).
pub(crate) fn put_bytes(
    root: &Path,
    relative: &str,
    bytes: &[u8],
    sync: bool,
) -> Result<(), StoreError> {
    let destination = root.join(relative);
    if destination.exists() {
        return Ok(());
    }
    install(&destination, sync, |writer, temporary| {
        writer.write_all(bytes).map_err(io_error(temporary))
    })
}

/// Reads a whole local file of at most `max` bytes; a missing one is `NotFound(what)`.
pub(crate) fn read_small(path: &Path, max: u64, what: &str) -> Result<bytes::Bytes, StoreError> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::NotFound(what.to_string()));
        }
        Err(e) => return Err(StoreError::Io(path.to_path_buf(), e)),
    };
    let size = file.metadata().map_err(io_error(path))?.len();
    if size > max {
        return Err(StoreError::TooLarge(what.to_string(), max));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.read_to_end(&mut bytes).map_err(io_error(path))?;
    Ok(bytes::Bytes::from(bytes))
}

/// Flushes every deferred write of the filesystem holding `root` in one call.
pub(crate) fn sync_filesystem(root: &Path) -> Result<(), StoreError> {
    let directory = std::fs::File::open(root).map_err(|e| StoreError::Io(root.to_path_buf(), e))?;
    rustix::fs::syncfs(&directory)
        .map_err(|e| StoreError::Io(root.to_path_buf(), std::io::Error::from(e)))
}

/// A file whose bytes no longer hash to the digest it was stored under: never stored.
pub(crate) fn changed_while_stored(file: &Path, expected: Digest, read: Digest) -> StoreError {
    StoreError::Corrupt(
        file.display().to_string(),
        format!("changed while being stored: expected {expected}, read {read}"),
    )
}

fn temporary_name(destination: &Path) -> PathBuf {
    use rand_core::RngCore;
    let mut name = destination.as_os_str().to_os_string();
    name.push(format!(".tmp-{:016x}", rand_core::OsRng.next_u64()));
    PathBuf::from(name)
}

/// Removes a half-written temp file when the copy fails part way.
struct RemoveUnlessKept(Option<PathBuf>);

impl Drop for RemoveUnlessKept {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn a_file_that_does_not_hash_as_expected_is_refused_and_leaves_nothing() {
        let work = tempfile::tempdir().unwrap();
        let source = work.path().join("package.deb");
        std::fs::write(&source, b"the bytes the uploader sent").unwrap();
        let wrong = Digest::of(b"other bytes");
        let root = work.path().join("store");
        let refused = put_file(&root, "blobs/sha256/ab/abc", &source, wrong, true);
        assert!(
            matches!(refused, Err(StoreError::Corrupt(..))),
            "{refused:?}"
        );
        assert!(entries(&root.join("blobs/sha256/ab")).is_empty());
    }

    #[test]
    fn a_stored_file_is_renamed_into_place_once() {
        let work = tempfile::tempdir().unwrap();
        let source = work.path().join("package.deb");
        std::fs::write(&source, vec![7u8; 3 * 1024 * 1024 + 5]).unwrap();
        let (digest, size) = crate::ingest::hash_file(&source).unwrap();
        let root = work.path().join("store");
        let stored = put_file(&root, "blobs/x/blob", &source, digest, false).unwrap();
        assert_eq!((stored.digest, stored.size), (digest, size));
        assert_eq!(
            std::fs::read(root.join("blobs/x/blob")).unwrap(),
            std::fs::read(&source).unwrap()
        );
        // Already there: nothing is rewritten, and no temp file is left behind.
        put_file(&root, "blobs/x/blob", &source, digest, true).unwrap();
        assert_eq!(entries(&root.join("blobs/x")), vec!["blob".to_string()]);
        sync_filesystem(&root).unwrap();
    }

    #[test]
    fn a_spool_is_renamed_into_place_and_a_stored_blob_is_left_alone() {
        let work = tempfile::tempdir().unwrap();
        let root = work.path().join("store");
        let spool = work.path().join("upload.part");
        std::fs::write(&spool, b"spooled bytes").unwrap();
        let digest = Digest::of(b"spooled bytes");
        let stored = adopt_file(&root, "blobs/y/blob", &spool, digest, true).unwrap();
        assert_eq!(stored.size, 13);
        assert!(!spool.exists(), "the spool was moved, not copied");
        assert_eq!(
            std::fs::read(root.join("blobs/y/blob")).unwrap(),
            b"spooled bytes"
        );
        // The same bytes again: the stored blob stays, the new spool is the caller's to remove.
        std::fs::write(&spool, b"spooled bytes").unwrap();
        adopt_file(&root, "blobs/y/blob", &spool, digest, true).unwrap();
        assert!(spool.exists());
        assert_eq!(entries(&root.join("blobs/y")), vec!["blob".to_string()]);
    }
}
