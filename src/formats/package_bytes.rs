//! A package file being ingested: on disk, or read into memory once. An import
//! reads each small package whole, so hashing, inspecting and storing it open no
//! file again.

use std::io::{self, Cursor, Read, Seek};
use std::path::Path;

use bytes::Bytes;

/// Where a package's bytes are.
#[derive(Clone, Copy)]
pub enum PackageBytes<'a> {
    File(&'a Path),
    Memory(&'a Bytes),
}

/// A reader that can also seek: what ar and rpm header parsing need.
pub trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

impl<'a> PackageBytes<'a> {
    /// The package's bytes, when it is held in memory.
    pub fn bytes(self) -> Option<&'a [u8]> {
        match self {
            PackageBytes::File(_) => None,
            PackageBytes::Memory(bytes) => Some(bytes.as_ref()),
        }
    }

    /// A reader at the first byte, and the package's length.
    pub fn open(self) -> io::Result<(Box<dyn ReadSeek + 'a>, u64)> {
        match self {
            PackageBytes::File(path) => {
                let file = std::fs::File::open(path)?;
                let length = file.metadata()?.len();
                Ok((Box::new(file), length))
            }
            PackageBytes::Memory(bytes) => {
                Ok((Box::new(Cursor::new(bytes.as_ref())), bytes.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every fixture, good or malformed, inspects the same from memory as from disk.
    fn same_either_way<T: std::fmt::Debug>(dirs: &[&str], inspect: impl Fn(PackageBytes<'_>) -> T) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let mut seen = 0;
        for dir in dirs {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if !path.extension().is_some_and(|x| x == "deb" || x == "rpm") {
                    continue;
                }
                let bytes = Bytes::from(std::fs::read(&path).unwrap());
                let from_file = format!("{:?}", inspect(PackageBytes::File(&path)));
                let from_memory = format!("{:?}", inspect(PackageBytes::Memory(&bytes)));
                assert_eq!(from_file, from_memory, "{}", path.display());
                seen += 1;
            }
        }
        assert!(seen >= 5, "fixtures found: {seen}");
    }

    #[test]
    fn debs_inspect_the_same_from_memory_as_from_disk() {
        let limits = crate::formats::deb::Limits::default();
        same_either_way(&["debs", "malformed", "variants"], |source| {
            crate::formats::deb::inspect_deb(source, &limits)
        });
    }

    #[test]
    fn rpms_inspect_the_same_from_memory_as_from_disk() {
        same_either_way(
            &["rpms", "rpms/malformed"],
            crate::formats::rpm::inspect_rpm,
        );
    }
}
