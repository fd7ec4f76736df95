//! Signatures that match what a connection was served.
//!
//! dnf and zypper fetch `repodata/repomd.xml` and then `repodata/repomd.xml.asc` as two
//! requests; a publish between them used to hand the client a signature of the new
//! repomd.xml for the old one it held ("Bad GPG signature"), so a refresh could fail
//! while publishing, 1 round in 25 with uploads back to back. APT has InRelease, but a
//! client reading `Release` and `Release.gpg` meets the same race.
//!
//! Both clients reuse one keep-alive connection for the pair (zypper fetches the
//! signature first, dnf the file first, and dnf may fetch the signature again after),
//! so each connection remembers what it was served of each pair for 30 s from the first
//! half, and every later fetch of either half on it within that window comes from the
//! publication of the other half served: the current one, or one of those the server
//! retains after a publish. A new connection, or a half no longer retained, gets the
//! current file, as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::digest::Digest;
use crate::model::FileEntry;

/// Signed files and their detached signatures, by path suffix.
const PAIRS: &[(&str, &str)] = &[
    ("repodata/repomd.xml", "repodata/repomd.xml.asc"),
    ("/Release", "/Release.gpg"),
];

/// How many pairs one connection remembers: far more than a client fetches on it.
const REMEMBERED: usize = 64;

/// How long the first half of a pair waits for its other half: a client fetches the two
/// within a second; a half fetched alone (no signature check) must not pin a later refresh.
const PAIR_WINDOW: Duration = Duration::from_secs(30);

/// What a connection was served of one signed pair: each half's sha256 (once served),
/// and when the first half was. Both halves stay pinned for [`PAIR_WINDOW`] from then:
/// dnf may fetch a half again after the pair (a signature, then repomd.xml, then the
/// signature once more), and that fetch must match the others, not a newer publish.
#[derive(Clone, Copy)]
struct Served {
    data: Option<Digest>,
    signature: Option<Digest>,
    at: Instant,
}

impl Served {
    fn half(&self, signature: bool) -> Option<Digest> {
        if signature { self.signature } else { self.data }
    }
}

/// What one connection was served of signed pairs, keyed by repository and the signed
/// file's path. A request extension, one per connection.
#[derive(Clone, Default)]
pub struct ConnectionMemory(Arc<Mutex<HashMap<String, Served>>>);

impl ConnectionMemory {
    /// What this connection was served of the pair at `key` within the window.
    fn recent(&self, key: &str) -> Option<Served> {
        let seen = self.0.lock().ok()?;
        seen.get(key)
            .copied()
            .filter(|served| served.at.elapsed() <= PAIR_WINDOW)
    }

    /// Records that one half was served (starting the window if the pair is new).
    fn record(&self, key: String, signature: bool, digest: Digest) {
        let Ok(mut seen) = self.0.lock() else {
            return;
        };
        if seen.len() >= REMEMBERED && !seen.contains_key(&key) {
            seen.clear();
        }
        let fresh = Served {
            data: None,
            signature: None,
            at: Instant::now(),
        };
        let slot = seen.entry(key).or_insert(fresh);
        if slot.at.elapsed() > PAIR_WINDOW {
            *slot = fresh;
        }
        if signature {
            slot.signature = Some(digest);
        } else {
            slot.data = Some(digest);
        }
    }
}

/// The pair `path` belongs to: (signed file's path, signature's path, path is the signature).
fn pair_of(path: &str) -> Option<(String, String, bool)> {
    PAIRS.iter().find_map(|(data, signature)| {
        if let Some(prefix) = path.strip_suffix(signature) {
            Some((format!("{prefix}{data}"), path.to_string(), true))
        } else {
            path.strip_suffix(data)
                .map(|prefix| (path.to_string(), format!("{prefix}{signature}"), false))
        }
    })
}

/// The file to serve for `path` of `repo` on this connection: `resolved` (what the path
/// names now), unless it is one half of a signed pair whose other half this connection
/// was just served from an earlier publication; then that publication's half, which
/// `counterpart(known path, its sha256, wanted path)` finds among those retained.
pub fn pin(
    memory: Option<&ConnectionMemory>,
    repo: &str,
    path: &str,
    resolved: Option<FileEntry>,
    counterpart: impl FnOnce(&str, &Digest, &str) -> Option<FileEntry>,
) -> Option<FileEntry> {
    let (Some(memory), Some(_)) = (memory, resolved) else {
        return resolved;
    };
    let Some((data, signature, is_signature)) = pair_of(path) else {
        return resolved;
    };
    let key = format!("{repo}/{data}");
    let recent = memory.recent(&key);
    // The other half was served on this connection: this one must come from the same
    // publication. Otherwise (a new pair, or this half fetched again): what is current.
    let pinned = match recent.and_then(|served| served.half(!is_signature)) {
        Some(other) => {
            let (known, wanted) = if is_signature {
                (&data, &signature)
            } else {
                (&signature, &data)
            };
            counterpart(known, &other, wanted).or(resolved)
        }
        None => resolved,
    };
    if let Some(served) = pinned {
        memory.record(key, is_signature, served.sha256);
    }
    pinned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_half_of_a_pair_matches_the_first_whichever_comes_first() {
        let entry = |text: &[u8]| FileEntry {
            sha256: Digest::of(text),
            size: 1,
        };
        let (old_data, old_sig) = (entry(b"old repomd"), entry(b"old sig"));
        let (new_data, new_sig) = (entry(b"new repomd"), entry(b"new sig"));
        let data = "12/x86_64/repodata/repomd.xml";
        let sig = "12/x86_64/repodata/repomd.xml.asc";
        // The retained publications: each path's old and new version.
        let counterpart = |known: &str, digest: &Digest, wanted: &str| {
            let old = if known == data { old_data } else { old_sig };
            (digest == &old.sha256).then_some(if wanted == data { old_data } else { old_sig })
        };
        // One fetch on a connection: what `pin` serves when `current` is published.
        let fetch = |memory: &ConnectionMemory, repo: &str, path: &str, current: FileEntry| {
            pin(Some(memory), repo, path, Some(current), counterpart)
        };
        // dnf: repomd.xml, a publish, then the signature: the old signature.
        let memory = ConnectionMemory::default();
        assert_eq!(fetch(&memory, "r", data, old_data), Some(old_data));
        assert_eq!(fetch(&memory, "r", sig, new_sig), Some(old_sig));
        // Within the window, a half fetched again matches the pair (dnf fetches the
        // signature more than once in one refresh).
        assert_eq!(fetch(&memory, "r", sig, new_sig), Some(old_sig));
        assert_eq!(fetch(&memory, "r", data, new_data), Some(old_data));
        // The signature twice, a publish, repomd.xml, the signature again: all old.
        let memory = ConnectionMemory::default();
        for _ in 0..2 {
            assert_eq!(fetch(&memory, "r", sig, old_sig), Some(old_sig));
        }
        assert_eq!(fetch(&memory, "r", data, new_data), Some(old_data));
        assert_eq!(fetch(&memory, "r", sig, new_sig), Some(old_sig));
        // zypper: the signature, a publish, then repomd.xml: the old repomd.xml.
        let memory = ConnectionMemory::default();
        assert_eq!(fetch(&memory, "r", sig, old_sig), Some(old_sig));
        assert_eq!(fetch(&memory, "r", data, new_data), Some(old_data));
        // Another repository's pair is its own; no memory means what is current.
        let memory = ConnectionMemory::default();
        fetch(&memory, "r", data, old_data);
        assert_eq!(fetch(&memory, "s", sig, new_sig), Some(new_sig));
        assert_eq!(
            pin(None, "r", sig, Some(new_sig), counterpart),
            Some(new_sig)
        );
        assert_eq!(
            pair_of("dists/stable/Release.gpg"),
            Some((
                "dists/stable/Release".into(),
                "dists/stable/Release.gpg".into(),
                true
            ))
        );
        assert_eq!(pair_of("dists/stable/InRelease"), None);
    }
}
