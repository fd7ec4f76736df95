//! Signatures that match what a client was served.
//!
//! dnf and zypper fetch `repodata/repomd.xml` and then `repodata/repomd.xml.asc` as two
//! requests; a publish between them used to hand the client a signature of the new
//! repomd.xml for the old one it held ("Bad GPG signature"), so a refresh could fail
//! while publishing, 1 round in 25 with uploads back to back. APT has InRelease, but a
//! client reading `Release` and `Release.gpg` meets the same race.
//!
//! Two memories tie the halves of a pair together; either finds the publication of the
//! half served first among the current one and those the server retains after a
//! publish, and serves the other half from it:
//! - **The connection.** zypper fetches the signature, the key and then repomd.xml on one
//!   keep-alive connection, and may fetch a half again. Each connection remembers what
//!   it was served of each pair for 30 s from the first half, and every later fetch of
//!   either half on it within that window comes from the same publication.
//! - **The client.** dnf (librepo 1.14) closes its connection after repomd.xml and fetches
//!   the signature on a new one. The server remembers, per client address and
//!   User-Agent, the first half of each pair it served for 10 s; the other half fetched
//!   next by that client, on any connection, comes from the same publication, and the
//!   pair is then done, so the client's next refresh gets what is current (never an old
//!   publication for longer than one pair). Two clients behind one address with one
//!   User-Agent that refresh in the same instant across a publish can still cross their
//!   pairs; each then fails one refresh, as every client did before.
//!
//! A half no longer retained, or a client nobody remembers, gets the current file.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::repo::model::FileEntry;
use crate::util::digest::Digest;

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

/// How long the client memory holds a first half for its other half: librepo fetches the
/// signature within milliseconds of repomd.xml; a longer wait would serve a client that
/// fetched repomd.xml alone (no signature check) an old pair on its next refresh.
const CLIENT_WINDOW: Duration = Duration::from_secs(10);

/// How many first halves the client memory holds at most (about 200 bytes each); past
/// it, expired ones go, and if none has, all of them (pinning is then as if not there).
const CLIENT_PAIRS: usize = 16_384;

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

/// A client as the server tells it apart: its address and (a keyed hash of) its
/// User-Agent.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct ClientId {
    address: IpAddr,
    agent: u64,
}

/// The first half of a pair one client was served, waiting for its other half.
#[derive(Clone, Copy)]
struct FirstHalf {
    signature: bool,
    digest: Digest,
    at: Instant,
}

/// First halves of signed pairs served to each client, server-wide (see the module
/// documentation).
#[derive(Default)]
pub struct ClientMemory {
    open: Mutex<HashMap<(ClientId, String), FirstHalf>>,
    /// Keys the User-Agent hash, so nobody can pick agents that collide.
    hasher: std::collections::hash_map::RandomState,
}

impl ClientMemory {
    fn client(&self, address: IpAddr, user_agent: &[u8]) -> ClientId {
        ClientId {
            address,
            agent: self.hasher.hash_one(user_agent),
        }
    }

    /// The other half of the pair at `key` this client was served first, if it was
    /// within the window and this is the half it has not fetched: the pair is then done.
    fn take_other_half(&self, client: ClientId, key: &str, signature: bool) -> Option<Digest> {
        let mut open = self.open.lock().ok()?;
        let entry = (client, key.to_string());
        let first = open.get(&entry).copied()?;
        if first.at.elapsed() > CLIENT_WINDOW || first.signature == signature {
            return None;
        }
        open.remove(&entry);
        Some(first.digest)
    }

    /// Remembers the first half of a pair served to a client.
    fn open(&self, client: ClientId, key: String, signature: bool, digest: Digest) {
        let Ok(mut open) = self.open.lock() else {
            return;
        };
        if open.len() >= CLIENT_PAIRS && !open.contains_key(&(client, key.clone())) {
            open.retain(|_, first| first.at.elapsed() <= CLIENT_WINDOW);
            if open.len() >= CLIENT_PAIRS {
                open.clear();
            }
        }
        let first = FirstHalf {
            signature,
            digest,
            at: Instant::now(),
        };
        open.insert((client, key), first);
    }

    /// Forgets a pair a connection completed.
    fn close(&self, client: ClientId, key: &str) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(&(client, key.to_string()));
        }
    }
}

/// Who is asking, as pinning needs it: the connection's memory and the client's. A
/// request extension, made per request by the serving loop.
#[derive(Clone)]
pub struct Requester {
    connection: ConnectionMemory,
    clients: Arc<ClientMemory>,
    client: ClientId,
}

impl Requester {
    pub fn new(
        connection: ConnectionMemory,
        clients: Arc<ClientMemory>,
        address: IpAddr,
        user_agent: &[u8],
    ) -> Requester {
        let client = clients.client(address, user_agent);
        Requester {
            connection,
            clients,
            client,
        }
    }
}

/// The file to serve for `path` of `repo` to this requester: `resolved` (what the path
/// names now), unless it is one half of a signed pair whose other half this connection
/// or this client was just served from an earlier publication; then that publication's
/// half, which `counterpart(known path, its sha256, wanted path)` finds among those
/// retained.
pub fn pin(
    requester: Option<&Requester>,
    repo: &str,
    path: &str,
    resolved: Option<FileEntry>,
    counterpart: impl FnOnce(&str, &Digest, &str) -> Option<FileEntry>,
) -> Option<FileEntry> {
    let (Some(requester), Some(_)) = (requester, resolved) else {
        return resolved;
    };
    let Some((data, signature, is_signature)) = pair_of(path) else {
        return resolved;
    };
    let key = format!("{repo}/{data}");
    let (connection, clients, client) =
        (&requester.connection, &requester.clients, requester.client);
    // The other half was served on this connection, or first to this client: this one
    // must come from the same publication. Otherwise (a new pair, or this half fetched
    // again): what is current.
    let on_connection = connection
        .recent(&key)
        .and_then(|served| served.half(!is_signature));
    let other = match on_connection {
        Some(other) => {
            clients.close(client, &key);
            Some(other)
        }
        None => clients.take_other_half(client, &key, is_signature),
    };
    let pinned = match other {
        Some(other) => {
            let (known, wanted) = if is_signature {
                (&data, &signature)
            } else {
                (&signature, &data)
            };
            // The connection holds the pair from here, as if it had served both: dnf
            // may fetch the signature again on it.
            if on_connection.is_none() {
                connection.record(key.clone(), !is_signature, other);
            }
            counterpart(known, &other, wanted).or(resolved)
        }
        None => resolved,
    };
    if let Some(served) = pinned {
        if other.is_none() {
            clients.open(client, key.clone(), is_signature, served.sha256);
        }
        connection.record(key, is_signature, served.sha256);
    }
    pinned
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &[u8]) -> FileEntry {
        FileEntry {
            sha256: Digest::of(text),
            size: 1,
        }
    }

    const DATA: &str = "12/x86_64/repodata/repomd.xml";
    const SIG: &str = "12/x86_64/repodata/repomd.xml.asc";

    /// Two publications, old and new, of one pair, and a server's client memory.
    struct Pairs {
        old_data: FileEntry,
        old_sig: FileEntry,
        new_data: FileEntry,
        new_sig: FileEntry,
        clients: Arc<ClientMemory>,
    }

    impl Pairs {
        fn new() -> Pairs {
            Pairs {
                old_data: entry(b"old repomd"),
                old_sig: entry(b"old sig"),
                new_data: entry(b"new repomd"),
                new_sig: entry(b"new sig"),
                clients: Arc::default(),
            }
        }

        /// A new connection from `address` with User-Agent `agent`.
        fn connect(&self, address: [u8; 4], agent: &str) -> Requester {
            Requester::new(
                ConnectionMemory::default(),
                Arc::clone(&self.clients),
                IpAddr::from(address),
                agent.as_bytes(),
            )
        }

        /// What `pin` serves on `requester` when `current` is published (the old
        /// publication is retained).
        fn fetch(&self, on: &Requester, repo: &str, path: &str, current: FileEntry) -> FileEntry {
            let counterpart = |known: &str, digest: &Digest, wanted: &str| {
                let old = if known == DATA {
                    self.old_data
                } else {
                    self.old_sig
                };
                (digest == &old.sha256).then_some(if wanted == DATA {
                    self.old_data
                } else {
                    self.old_sig
                })
            };
            pin(Some(on), repo, path, Some(current), counterpart).expect("a file")
        }
    }

    #[test]
    fn the_second_half_of_a_pair_matches_the_first_on_one_connection_whichever_comes_first() {
        let p = Pairs::new();
        // Each case is another client, so only the connection ties the halves.
        // repomd.xml, a publish, then the signature: the old signature.
        let c = p.connect([127, 0, 0, 1], "one");
        assert_eq!(p.fetch(&c, "r", DATA, p.old_data), p.old_data);
        assert_eq!(p.fetch(&c, "r", SIG, p.new_sig), p.old_sig);
        // Within the window, a half fetched again matches the pair.
        assert_eq!(p.fetch(&c, "r", SIG, p.new_sig), p.old_sig);
        assert_eq!(p.fetch(&c, "r", DATA, p.new_data), p.old_data);
        // The signature twice, a publish, repomd.xml, the signature again: all old.
        let c = p.connect([127, 0, 0, 1], "two");
        for _ in 0..2 {
            assert_eq!(p.fetch(&c, "r", SIG, p.old_sig), p.old_sig);
        }
        assert_eq!(p.fetch(&c, "r", DATA, p.new_data), p.old_data);
        assert_eq!(p.fetch(&c, "r", SIG, p.new_sig), p.old_sig);
        // zypper: the signature, a publish, then repomd.xml: the old repomd.xml.
        let c = p.connect([127, 0, 0, 1], "three");
        assert_eq!(p.fetch(&c, "r", SIG, p.old_sig), p.old_sig);
        assert_eq!(p.fetch(&c, "r", DATA, p.new_data), p.old_data);
        // Another repository's pair is its own; no requester means what is current.
        let c = p.connect([127, 0, 0, 1], "four");
        p.fetch(&c, "r", DATA, p.old_data);
        assert_eq!(p.fetch(&c, "s", SIG, p.new_sig), p.new_sig);
        assert_eq!(
            pin(None, "r", SIG, Some(p.new_sig), |_, _, _| Some(p.old_sig)),
            Some(p.new_sig)
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

    #[test]
    fn a_client_that_reconnects_for_the_signature_gets_the_one_of_its_repomd() {
        let p = Pairs::new();
        let agent = "libdnf (Debian GNU/Linux 12; generic; Linux.x86_64)";
        // dnf: repomd.xml on one connection, a publish, the signature on another.
        let first = p.connect([127, 0, 0, 1], agent);
        assert_eq!(p.fetch(&first, "r", DATA, p.old_data), p.old_data);
        let second = p.connect([127, 0, 0, 1], agent);
        assert_eq!(p.fetch(&second, "r", SIG, p.new_sig), p.old_sig);
        // That connection holds the pair: the signature again is the same one.
        assert_eq!(p.fetch(&second, "r", SIG, p.new_sig), p.old_sig);
        // The pair is done: the client's next refresh gets what is current.
        let next = p.connect([127, 0, 0, 1], agent);
        assert_eq!(p.fetch(&next, "r", DATA, p.new_data), p.new_data);
        let again = p.connect([127, 0, 0, 1], agent);
        assert_eq!(p.fetch(&again, "r", SIG, p.new_sig), p.new_sig);

        // Another address, or another User-Agent, is another client.
        let dnf = p.connect([127, 0, 0, 1], agent);
        assert_eq!(p.fetch(&dnf, "r", DATA, p.old_data), p.old_data);
        for other in [
            p.connect([127, 0, 0, 2], agent),
            p.connect([127, 0, 0, 1], "zypper"),
        ] {
            assert_eq!(p.fetch(&other, "r", SIG, p.new_sig), p.new_sig);
        }
        // ...and neither took the first client's pair from it.
        let dnf = p.connect([127, 0, 0, 1], agent);
        assert_eq!(p.fetch(&dnf, "r", SIG, p.new_sig), p.old_sig);

        // A half fetched alone, then the same half again, pins nothing: only the
        // other half completes a pair.
        let lone = p.connect([10, 0, 0, 1], agent);
        assert_eq!(p.fetch(&lone, "r", DATA, p.old_data), p.old_data);
        let lone = p.connect([10, 0, 0, 1], agent);
        assert_eq!(p.fetch(&lone, "r", DATA, p.new_data), p.new_data);
    }

    #[test]
    fn the_client_memory_stays_bounded() {
        let p = Pairs::new();
        for i in 0..(CLIENT_PAIRS as u32 + 10) {
            let c = p.connect(i.to_be_bytes(), "many");
            p.fetch(&c, "r", DATA, p.old_data);
        }
        let held = p.clients.open.lock().map(|open| open.len()).unwrap_or(0);
        assert!((1..=CLIENT_PAIRS).contains(&held), "{held} pairs held");
    }
}
