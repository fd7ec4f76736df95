//! The data dir's spool: files a process writes before they become blobs (uploads being
//! received, packs being filled by an import, rpms being signed).
//!
//! A process killed with `kill -9` cannot remove its spool files, and with uploads in
//! flight every kill would leave some behind. So each spool file is created with an
//! exclusive `flock(2)` that its owner holds as long as the file is its own, and the
//! kernel releases when the owner dies, however it dies. [`sweep`] (run when `serve`
//! starts and by `gc`) removes the spool files nobody holds a lock on; [`leftovers`]
//! lists them for `verify`. A file another live process is writing is never touched,
//! whichever process sweeps, so several processes may share one data dir.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// Names the spool's own files take: `upload-<id>.part`, `pack-<id>.part`, `signed-<id>.rpm`.
fn is_spool_file(name: &str) -> bool {
    (name.starts_with("upload-") || name.starts_with("pack-")) && name.ends_with(".part")
        || name.starts_with("signed-") && name.ends_with(".rpm")
}

/// Creates `path` (which must not exist) for reading and writing, locked as its
/// creator's for as long as the returned file (or a clone of it) stays open.
pub fn create_locked(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    flock(&file, FlockOperation::NonBlockingLockExclusive)?;
    Ok(file)
}

/// A spool file owned by this process: locked while it lives, removed when dropped
/// (unless it was moved into the store meanwhile, which the removal then ignores).
pub struct SpoolFile {
    path: PathBuf,
    file: File,
}

impl SpoolFile {
    pub fn create(path: PathBuf) -> io::Result<SpoolFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = create_locked(&path)?;
        Ok(SpoolFile { path, file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Another handle on the same open file: writing through it keeps the lock held.
    pub fn handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What a sweep found: spool files of dead processes, and their bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub files: u64,
    pub bytes: u64,
}

/// The spool files in `dir` that no live process holds, with their sizes. `remove`
/// deletes each one while holding its lock, so no process can claim it meanwhile.
fn unowned(dir: &Path, remove: bool) -> io::Result<Vec<(PathBuf, u64)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let named = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_spool_file);
        if !named {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue; // its owner is alive
        }
        let size = file.metadata().map_or(0, |m| m.len());
        if remove && std::fs::remove_file(&path).is_err() {
            continue;
        }
        found.push((path, size));
    }
    Ok(found)
}

/// Removes the spool files of processes that died without removing them.
pub fn sweep(dir: &Path) -> io::Result<Swept> {
    let removed = unowned(dir, true)?;
    Ok(Swept {
        files: removed.len() as u64,
        bytes: removed.iter().map(|(_, size)| size).sum(),
    })
}

/// The spool files of dead processes, left in place: what `verify` reports.
pub fn leftovers(dir: &Path) -> io::Result<Vec<(PathBuf, u64)>> {
    unowned(dir, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_no_live_process_holds_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let held = SpoolFile::create(dir.path().join("upload-held.part")).unwrap();
        // A dead process's file: created, then its lock gone with its descriptor.
        drop(create_locked(&dir.path().join("upload-dead.part")).unwrap());
        std::fs::write(dir.path().join("pack-dead.part"), b"12345").unwrap();
        std::fs::write(dir.path().join("unrelated.txt"), b"x").unwrap();
        assert_eq!(leftovers(dir.path()).unwrap().len(), 2);
        let swept = sweep(dir.path()).unwrap();
        assert_eq!(swept, Swept { files: 2, bytes: 5 });
        assert!(held.path().exists(), "a live owner's file stays");
        assert!(dir.path().join("unrelated.txt").exists());
        assert!(leftovers(dir.path()).unwrap().is_empty());
        let path = held.path().to_path_buf();
        drop(held);
        assert!(!path.exists(), "the owner removes its file when done");
    }
}
