//! Pool layout: `pool/<component>/<prefix>/<source>/<name>_<version>_<arch>.deb`,
//! as the Debian archive lays it out. The prefix is the source's first letter,
//! or `libX` for `lib*` sources, so no directory grows too large.

/// The pool path of a binary package, relative to the repository root.
pub fn pool_path(component: &str, source: &str, name: &str, version: &str, arch: &str) -> String {
    let prefix = if source.starts_with("lib") && source.len() > 3 {
        &source[..4]
    } else {
        &source[..1]
    };
    // The epoch is not part of file names (dpkg-name drops it: a ':' would need escaping in URLs).
    let file_version = version.split_once(':').map_or(version, |(_, rest)| rest);
    format!("pool/{component}/{prefix}/{source}/{name}_{file_version}_{arch}.deb")
}

#[cfg(test)]
mod tests {
    use super::pool_path;

    #[test]
    fn layout_matches_the_debian_archive() {
        assert_eq!(
            pool_path("main", "hello", "hello", "2.10-3", "amd64"),
            "pool/main/h/hello/hello_2.10-3_amd64.deb"
        );
        assert_eq!(
            pool_path("main", "gcc-defaults", "gobjc", "4:12.2.0-3", "amd64"),
            "pool/main/g/gcc-defaults/gobjc_12.2.0-3_amd64.deb"
        );
        assert_eq!(
            pool_path("contrib", "libfoo", "libfoo1", "1.0", "all"),
            "pool/contrib/libf/libfoo/libfoo1_1.0_all.deb"
        );
        assert_eq!(
            pool_path("main", "lib", "lib", "1", "all"),
            "pool/main/l/lib/lib_1_all.deb"
        );
    }
}
