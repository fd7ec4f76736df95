//! Resumable SHA-256 over files joined from parts. Release and repomd.xml carry the
//! sha256 of whole index files, which a publish joins from per-chunk parts; hashing
//! them whole each time is O(suite). The hash state after every part of recent
//! joins is kept, so the next join resumes after the longest run of leading parts
//! it shares with one of them.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::util::digest::{Digest, Sha256State};

/// A part named by its digest, with its bytes.
pub type PartBytes = (Digest, Bytes);

/// One remembered join: its parts and the hash state after each of them, where known
/// (a join taken up from another process knows only a few; see [`ResumePoints`]).
struct Prefix {
    /// What the join was for: states resume only within one scope (a composite's
    /// parts were checked in one store, say).
    scope: Arc<str>,
    parts: Vec<Digest>,
    sizes: Vec<u64>,
    states: Vec<Option<Sha256State>>,
}

/// The hash states of recent joins, the oldest forgotten first.
pub struct PartHashes {
    prefixes: Mutex<VecDeque<Prefix>>,
    limit: usize,
}

/// What a new join can resume from.
pub struct Resumed {
    /// The join's first parts whose hash is known, with their sizes.
    pub parts: Vec<Digest>,
    pub sizes: Vec<u64>,
    /// The states known after each of those parts (the last always is).
    states: Vec<Option<Sha256State>>,
    /// Parts after those that no remembered join of the scope names.
    pub unnamed: Vec<Digest>,
}

impl Resumed {
    /// How many leading parts need no hashing.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}

/// Hash states after some parts of a join, to be written down with what the join was
/// for, so that another process (a restarted daemon, another daemon on the bucket)
/// resumes where this one stopped: `(parts before the state, the state)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumePoints(pub Vec<(usize, Sha256State)>);

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

    /// The longest run of leading `digests` some remembered join of `scope` shares and
    /// knows the state after.
    pub fn resume(&self, scope: &str, digests: &[Digest]) -> Resumed {
        let Ok(remembered) = self.prefixes.lock() else {
            return Resumed {
                parts: Vec::new(),
                sizes: Vec::new(),
                states: Vec::new(),
                unnamed: digests.to_vec(),
            };
        };
        let ours: Vec<&Prefix> = remembered.iter().filter(|p| &*p.scope == scope).collect();
        let best = ours
            .iter()
            .map(|p| {
                let common = p
                    .parts
                    .iter()
                    .zip(digests)
                    .take_while(|(a, b)| a == b)
                    .count();
                // Back to the last part with a known state.
                let known = (1..=common)
                    .rev()
                    .find(|&n| p.states[n - 1].is_some())
                    .unwrap_or(0);
                (known, p)
            })
            .max_by_key(|(known, _)| *known);
        let (parts, sizes, states) = match best {
            Some((known, p)) if known > 0 => (
                p.parts[..known].to_vec(),
                p.sizes[..known].to_vec(),
                p.states[..known].to_vec(),
            ),
            _ => Default::default(),
        };
        let named: HashSet<&Digest> = ours.iter().flat_map(|p| p.parts.iter()).collect();
        let unnamed = digests[parts.len()..]
            .iter()
            .filter(|d| !named.contains(d))
            .copied()
            .collect();
        Resumed {
            parts,
            sizes,
            states,
            unnamed,
        }
    }

    /// The sha256 and size of `resumed`'s parts followed by `rest`; the states after
    /// every part are remembered.
    pub fn hash(&self, scope: Arc<str>, resumed: Resumed, rest: &[PartBytes]) -> (Digest, u64) {
        self.extend(scope, resumed, rest).finish()
    }

    /// Hashes `parts` ahead of a join expected to start with them, so that join
    /// resumes after them (see `publish::rpm::hash_ahead`).
    pub fn hash_ahead(&self, scope: Arc<str>, parts: &[PartBytes]) {
        let resumed = self.resume(&scope, &parts.iter().map(|p| p.0).collect::<Vec<_>>());
        let rest = &parts[resumed.len()..];
        self.extend(scope, resumed, rest);
    }

    /// States after the last `last` parts of the remembered join of exactly `digests`
    /// (and after the part before them), to write down: None if no such join is held.
    pub fn resume_points(
        &self,
        scope: &str,
        digests: &[Digest],
        last: usize,
    ) -> Option<ResumePoints> {
        let remembered = self.prefixes.lock().ok()?;
        let join = remembered
            .iter()
            .find(|p| &*p.scope == scope && p.parts == digests)?;
        let from = digests.len().saturating_sub(last).max(1);
        Some(ResumePoints(
            (from..=digests.len())
                .filter_map(|n| Some((n, join.states[n - 1].clone()?)))
                .collect(),
        ))
    }

    /// Takes up a join another process wrote down: its parts with their sizes, and the
    /// states it knew. Points past the parts are ignored.
    pub fn take_up(
        &self,
        scope: Arc<str>,
        parts: impl IntoIterator<Item = (Digest, u64)>,
        points: &ResumePoints,
    ) {
        let (parts, sizes): (Vec<Digest>, Vec<u64>) = parts.into_iter().unzip();
        let mut states = vec![None; parts.len()];
        let mut any = false;
        for (n, state) in &points.0 {
            // A state after n parts covers exactly their bytes.
            let bytes: u64 = sizes.iter().take(*n).sum();
            if *n >= 1 && *n <= parts.len() && state.len() == bytes {
                states[n - 1] = Some(state.clone());
                any = true;
            }
        }
        if any {
            self.remember(Prefix {
                scope,
                parts,
                sizes,
                states,
            });
        }
    }

    fn extend(&self, scope: Arc<str>, resumed: Resumed, rest: &[PartBytes]) -> Sha256State {
        let Resumed {
            mut parts,
            mut sizes,
            mut states,
            ..
        } = resumed;
        let mut hasher = states.last().cloned().flatten().unwrap_or_default();
        for (digest, bytes) in rest {
            hasher.update(bytes);
            parts.push(*digest);
            sizes.push(bytes.len() as u64);
            states.push(Some(hasher.clone()));
        }
        self.remember(Prefix {
            scope,
            parts,
            sizes,
            states,
        });
        hasher
    }

    fn remember(&self, prefix: Prefix) {
        if let Ok(mut remembered) = self.prefixes.lock() {
            // A join that is a prefix of this one adds nothing once this is kept.
            remembered.retain(|p| {
                p.scope != prefix.scope
                    || !prefix.parts.starts_with(&p.parts)
                    || p.states
                        .iter()
                        .zip(&prefix.states)
                        .any(|(had, has)| had.is_some() && has.is_none())
            });
            if remembered.len() >= self.limit {
                remembered.pop_front();
            }
            remembered.push_back(prefix);
        }
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
        assert!(none.is_empty());
        assert_eq!(
            hashes.hash(Arc::clone(&scope), none, &first),
            whole(&["head 1\n", "a\n", "b\n", "tail\n"])
        );
        // Same head, one part changed: resumes after the two shared parts.
        let second = parts(&["head 1\n", "a\n", "c\n", "tail\n"]);
        let resumed = hashes.resume(&scope, &second.iter().map(|p| p.0).collect::<Vec<_>>());
        assert_eq!(resumed.len(), 2);
        assert_eq!(resumed.unnamed, vec![Digest::of(b"c\n")]);
        let rest = &second[resumed.len()..];
        assert_eq!(
            hashes.hash(Arc::clone(&scope), resumed, rest),
            whole(&["head 1\n", "a\n", "c\n", "tail\n"])
        );
        // Another scope resumes nothing.
        assert!(hashes.resume("t", &[Digest::of(b"head 1\n")]).is_empty());
    }

    #[test]
    fn hashing_ahead_lets_the_next_join_resume_past_a_new_head() {
        let hashes = PartHashes::new(4);
        let scope: Arc<str> = Arc::from("s");
        hashes.hash_ahead(Arc::clone(&scope), &parts(&["head 2\n", "a\n", "b\n"]));
        let next = parts(&["head 2\n", "a\n", "b\n", "d\n", "tail\n"]);
        let resumed = hashes.resume(&scope, &next.iter().map(|p| p.0).collect::<Vec<_>>());
        assert_eq!(resumed.len(), 3);
        let rest = &next[resumed.len()..];
        assert_eq!(
            hashes.hash(scope, resumed, rest),
            whole(&["head 2\n", "a\n", "b\n", "d\n", "tail\n"])
        );
    }

    #[test]
    fn another_process_resumes_from_the_points_written_down() {
        let scope: Arc<str> = Arc::from("s");
        let writer = PartHashes::new(4);
        let first = parts(&["base a\n", "base b\n", "delta 1\n", "tail\n"]);
        let digests: Vec<Digest> = first.iter().map(|p| p.0).collect();
        let none = writer.resume(&scope, &digests);
        writer.hash(Arc::clone(&scope), none, &first);
        // The states after the base (2 parts) and everything after it.
        let points = writer.resume_points(&scope, &digests, 2).unwrap();
        assert_eq!(
            points.0.iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        let json = serde_json::to_string(&points).unwrap();

        let reader = PartHashes::new(4);
        let sizes = first.iter().map(|p| p.1.len() as u64);
        reader.take_up(
            Arc::clone(&scope),
            digests.into_iter().zip(sizes),
            &serde_json::from_str(&json).unwrap(),
        );
        // The delta changed: resumes after the base, with no bytes of it at hand.
        let next = parts(&["base a\n", "base b\n", "delta 2\n", "tail\n"]);
        let resumed = reader.resume(&scope, &next.iter().map(|p| p.0).collect::<Vec<_>>());
        assert_eq!(resumed.len(), 2);
        assert_eq!(resumed.sizes, vec![7, 7]);
        let rest = &next[resumed.len()..];
        assert_eq!(
            reader.hash(Arc::clone(&scope), resumed, rest),
            whole(&["base a\n", "base b\n", "delta 2\n", "tail\n"])
        );
        // A point whose length disagrees with the sizes is not taken up.
        let lying = ResumePoints(vec![(1, points.0[0].1.clone())]);
        let other = PartHashes::new(4);
        other.take_up(Arc::clone(&scope), [(first[0].0, 7)], &lying);
        assert!(other.resume(&scope, &[first[0].0]).is_empty());
    }
}
