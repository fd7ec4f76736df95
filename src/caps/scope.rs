//! Cap scopes: a cell path such as `apt/<repo>/dists/<suite>/<component>/binary-<arch>`
//! or `rpm/<repo>/<release>/<arch>`, or a prefix of one along its segments. Every
//! segment is checked against a strict alphabet, so no `..`, percent-encoding,
//! upper case or Unicode look-alike can name a sibling of the scope.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    segments: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid scope {scope:?}: {why}")]
pub struct ScopeError {
    pub scope: String,
    pub why: String,
}

/// Repository, suite, component, release and architecture names: lowercase ASCII
/// letters and digits, then also `.`, `_`, `+`, `-`; no `..`; at most 64 bytes.
pub fn validate_name(kind: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._+-".contains(&b))
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{kind} name {name:?} must be 1-64 characters of a-z, 0-9, '.', '_', '+', '-', starting with a letter or digit"
        ))
    }
}

impl Scope {
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The APT cell `apt/<repo>/dists/<suite>/<component>/binary-<arch>`.
    pub fn apt_cell(
        repo: &str,
        suite: &str,
        component: &str,
        arch: &str,
    ) -> Result<Scope, ScopeError> {
        format!("apt/{repo}/dists/{suite}/{component}/binary-{arch}").parse()
    }

    /// True if `other` is this scope or lies below it.
    pub fn covers(&self, other: &Scope) -> bool {
        other.segments.len() >= self.segments.len()
            && other.segments[..self.segments.len()] == self.segments[..]
    }

    pub fn kind(&self) -> &str {
        &self.segments[0]
    }

    pub fn repo(&self) -> Option<&str> {
        self.segments.get(1).map(String::as_str)
    }

    /// The snapshot a scope pins (`apt/NAME/snapshots/SNAP`, `rpm/NAME/snapshots/SNAP`).
    pub fn snapshot(&self) -> Option<&str> {
        (self.segments.get(2).map(String::as_str) == Some("snapshots"))
            .then(|| self.segments.get(3).map(String::as_str))
            .flatten()
    }

    /// For APT scopes under `dists`: (suite, component, arch) as far as the scope names them.
    pub fn apt_parts(&self) -> (Option<&str>, Option<&str>, Option<&str>) {
        if self.segments.get(2).is_some_and(|s| s != "dists") {
            return (None, None, None);
        }
        let s = |i: usize| self.segments.get(i).map(String::as_str);
        (s(3), s(4), s(5).and_then(|b| b.strip_prefix("binary-")))
    }
}

impl FromStr for Scope {
    type Err = ScopeError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why: String| ScopeError {
            scope: text.chars().take(200).collect(),
            why,
        };
        if text.len() > 512 {
            return Err(err("longer than 512 bytes".into()));
        }
        let segments: Vec<String> = text.split('/').map(str::to_string).collect();
        let kind = segments[0].as_str();
        let max = match kind {
            "apt" => 6,
            "rpm" => 4,
            _ => return Err(err("a scope starts with apt/ or rpm/".into())),
        };
        if segments.len() > max {
            return Err(err(format!("an {kind} scope has at most {max} segments")));
        }
        for (i, seg) in segments.iter().enumerate().skip(1) {
            match (kind, i) {
                ("apt", 2) if seg != "dists" && seg != "snapshots" => {
                    return Err(err(
                        "the third segment of an apt scope is \"dists\" (or \"snapshots\")".into(),
                    ));
                }
                ("apt", 2) => {}
                (_, 3) if segments[2] == "snapshots" => {
                    validate_name("snapshot", seg).map_err(err)?;
                }
                (_, 4..) if segments[2] == "snapshots" => {
                    return Err(err("a snapshot scope ends with the snapshot's name".into()));
                }
                ("apt", 5) => {
                    let arch = seg.strip_prefix("binary-").ok_or_else(|| {
                        err("the sixth segment of an apt scope is binary-<arch>".into())
                    })?;
                    validate_name("architecture", arch).map_err(err)?;
                }
                _ => {
                    let what = match (kind, i) {
                        (_, 1) => "repository",
                        ("apt", 3) => "suite",
                        ("apt", _) => "component",
                        ("rpm", 2) => "release",
                        _ => "architecture",
                    };
                    validate_name(what, seg).map_err(err)?;
                }
            }
        }
        Ok(Scope { segments })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.segments.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Scope {
        text.parse().unwrap()
    }

    #[test]
    fn prefixes_cover_cells_along_segments() {
        let cell = s("apt/demo/dists/stable/main/binary-amd64");
        assert!(s("apt/demo").covers(&cell));
        assert!(s("apt/demo/dists/stable").covers(&cell));
        assert!(cell.covers(&cell));
        assert!(!cell.covers(&s("apt/demo/dists/stable")));
        assert!(!s("apt/demo/dists/stable").covers(&s("apt/demo/dists/stable-security/main")));
        assert!(!s("apt/dem").covers(&cell));
        assert_eq!(
            cell.apt_parts(),
            (Some("stable"), Some("main"), Some("amd64"))
        );
    }

    #[test]
    fn refuses_tricks() {
        for bad in [
            "apt/demo/dists/../main",
            "apt/demo/dists/stable/main/binary-amd64/",
            "apt/demo/dists/stable/main/binary-%61md64",
            "apt/Demo",
            "apt/demo/pool",
            "apt/dеmo", // Cyrillic e
            "apt//dists",
            "apt/demo/dists/stable/main/amd64",
            "deb/demo",
            "apt/demo/dists/stable/main/binary-amd64/extra",
            "rpm/x/12/x86_64/more",
            "apt/demo/dists/st..able",
            "apt/demo/snapshots/a/b",
            "apt/demo/snapshots/A",
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad} should be refused");
        }
    }
}
