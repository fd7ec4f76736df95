//! Resumable SHA-256 over files joined from parts. Release and repomd.xml carry the
//! sha256 of whole index files, which a publish joins from per-chunk parts; hashing
//! them whole each time is O(suite). The hash state after every part of recent
//! joins is kept, so the next join resumes after the longest run of leading parts
//! it shares with one of them.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::digest::{Digest, Hasher};

/// A part named by its digest, with its bytes.
pub type PartBytes = (Digest, Bytes);

/// One remembered join: its parts and the hash state after each of them.
struct Prefix {
    /// What the join was for: states resume only within one scope (a composite's
    /// parts were checked in one store, say).
    scope: Arc<str>,
    parts: Vec<Digest>,
    states: Vec<Hasher>,
}

/// The hash states of recent joins, the oldest forgotten first.
pub struct PartHashes {
    prefixes: Mutex<VecDeque<Prefix>>,
    limit: usize,
}

/// What a new join can resume from.
pub struct Resumed {
    /// The hash states after each of the join's first parts.
    pub states: Vec<Hasher>,
    /// Parts after those that no remembered join of the scope names.
    pub unnamed: Vec<Digest>,
}

impl PartHashes {
    pub const fn new(limit: usize) -> Self {
        PartHashes {
            prefixes: Mutex::new(VecDeque::new()),
            limit,
        }
    }

    /// Forgets every join: the parts they name may have been swept since.
    pub fn clear(&self) {
        if let Ok(mut remembered) = self.prefixes.lock() {
            remembered.clear();
        }
    }

    /// The longest run of leading `digests` some remembered join of `scope` shares.
    pub fn resume(&self, scope: &str, digests: &[Digest]) -> Resumed {
        let Ok(remembered) = self.prefixes.lock() else {
            return Resumed {
                states: Vec::new(),
                unnamed: digests.to_vec(),
            };
        };
        let ours: Vec<&Prefix> = remembered.iter().filter(|p| &*p.scope == scope).collect();
        let states = ours
            .iter()
            .map(|p| {
                let common = p
                    .parts
                    .iter()
                    .zip(digests)
                    .take_while(|(a, b)| a == b)
                    .count();
                (common, p)
            })
            .max_by_key(|(common, _)| *common)
            .map(|(common, p)| p.states[..common].to_vec())
            .unwrap_or_default();
        let named: HashSet<&Digest> = ours.iter().flat_map(|p| p.parts.iter()).collect();
        let unnamed = digests[states.len()..]
            .iter()
            .filter(|d| !named.contains(d))
            .copied()
            .collect();
        Resumed { states, unnamed }
    }

    /// The sha256 and size of the concatenation of `parts`, resuming after `states`
    /// (from [`PartHashes::resume`]); the states after every part are remembered.
    pub fn hash(&self, scope: Arc<str>, parts: &[PartBytes], states: Vec<Hasher>) -> (Digest, u64) {
        self.extend(scope, parts, states).finish()
    }

    /// Hashes `parts` ahead of a join expected to start with them, so that join
    /// resumes after them (see `rpmrepo::next_publish`).
    pub fn hash_ahead(&self, scope: Arc<str>, parts: &[PartBytes]) {
        let states = self.resume(&scope, &parts.iter().map(|p| p.0).collect::<Vec<_>>());
        self.extend(scope, parts, states.states);
    }

    fn extend(&self, scope: Arc<str>, parts: &[PartBytes], mut states: Vec<Hasher>) -> Hasher {
        let digests: Vec<Digest> = parts.iter().map(|(d, _)| *d).collect();
        let mut hasher = states.last().cloned().unwrap_or_default();
        for (_, bytes) in &parts[states.len().min(parts.len())..] {
            hasher.update(bytes);
            states.push(hasher.clone());
        }
        states.truncate(parts.len());
        if let Ok(mut remembered) = self.prefixes.lock() {
            // A join that is a prefix of this one adds nothing once this is kept.
            remembered.retain(|p| p.scope != scope || !digests.starts_with(&p.parts));
            if remembered.len() >= self.limit {
                remembered.pop_front();
            }
            remembered.push_back(Prefix {
                scope,
                parts: digests,
                states,
            });
        }
        hasher
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(texts: &[&'static str]) -> Vec<PartBytes> {
        texts
            .iter()
            .map(|t| (Digest::of(t.as_bytes()), Bytes::from_static(t.as_bytes())))
            .collect()
    }

    fn whole(texts: &[&str]) -> (Digest, u64) {
        let joined = texts.concat();
        (Digest::of(joined.as_bytes()), joined.len() as u64)
    }

    #[test]
    fn a_resumed_join_hashes_like_a_whole_one() {
        let hashes = PartHashes::new(4);
        let scope: Arc<str> = Arc::from("s");
        let first = parts(&["head 1\n", "a\n", "b\n", "tail\n"]);
        let none = hashes.resume(&scope, &first.iter().map(|p| p.0).collect::<Vec<_>>());
        assert!(none.states.is_empty());
        assert_eq!(
            hashes.hash(Arc::clone(&scope), &first, none.states),
            whole(&["head 1\n", "a\n", "b\n", "tail\n"])
        );
        // Same head, one part changed: resumes after the two shared parts.
        let second = parts(&["head 1\n", "a\n", "c\n", "tail\n"]);
        let resumed = hashes.resume(&scope, &second.iter().map(|p| p.0).collect::<Vec<_>>());
        assert_eq!(resumed.states.len(), 2);
        assert_eq!(resumed.unnamed, vec![Digest::of(b"c\n")]);
        assert_eq!(
            hashes.hash(Arc::clone(&scope), &second, resumed.states),
            whole(&["head 1\n", "a\n", "c\n", "tail\n"])
        );
        // Another scope resumes nothing.
        assert!(
            hashes
                .resume("t", &[Digest::of(b"head 1\n")])
                .states
                .is_empty()
        );
    }

    #[test]
    fn hashing_ahead_lets_the_next_join_resume_past_a_new_head() {
        let hashes = PartHashes::new(4);
        let scope: Arc<str> = Arc::from("s");
        hashes.hash_ahead(Arc::clone(&scope), &parts(&["head 2\n", "a\n", "b\n"]));
        let next = parts(&["head 2\n", "a\n", "b\n", "d\n", "tail\n"]);
        let resumed = hashes.resume(&scope, &next.iter().map(|p| p.0).collect::<Vec<_>>());
        assert_eq!(resumed.states.len(), 3);
        assert_eq!(
            hashes.hash(scope, &next, resumed.states),
            whole(&["head 2\n", "a\n", "b\n", "d\n", "tail\n"])
        );
    }
}
