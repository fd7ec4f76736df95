//! Refs: the only mutable state. A ref is an append-only log of generations,
//! `refs/<name>/<generation, 20 digits>.json`, each entry naming a manifest digest.
//! Advancing a ref creates generation N+1 with a create-if-absent put, which every
//! `object_store` backend implements (a hard link on local disk, `If-None-Match: *`
//! on S3); losing that race is a compare-and-swap failure the caller retries.

use std::fmt;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{GetOptions, PutMode, PutPayload};
use serde::{Deserialize, Serialize};

use super::{Result, Store, StoreError};
use crate::util::digest::Digest;

/// What one try of [`Store::update_ref`] decided from the head it was shown.
pub enum RefUpdate<T> {
    /// Advance the ref from that head to `target`, noting `note`; `value` is the result
    /// once it is written.
    Advance {
        target: Digest,
        note: String,
        value: T,
    },
    /// Nothing to write (the ref already says what was wanted): `value` is the result.
    Unchanged(T),
    /// Read the head again and decide anew, not counting a try: `decide` waited for
    /// something (another change's batch to close), and must bound that wait itself.
    Reread,
}

/// Advances [`Store::update_ref`] tries before it gives up with a conflict.
pub const REF_UPDATE_TRIES: u32 = 64;

/// The pause after the `tries`-th conflict on one ref: a random part of a window that
/// doubles from 2 ms to 64 ms.
fn conflict_pause(tries: u32) -> std::time::Duration {
    use std::hash::BuildHasher;
    let window = 1u64 << tries.clamp(1, 6);
    // A hasher with fresh random keys: a random number without a dependency for it.
    let random = std::collections::hash_map::RandomState::new().hash_one(tries);
    std::time::Duration::from_micros(random % (window * 1000))
}

/// One generation of a ref. Kept small: it is read on every head probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefEntry {
    pub generation: u64,
    pub target: Digest,
    /// Seconds since the Unix epoch.
    pub time: i64,
    /// Who made the change: a cap id, `cli`, or `manager`.
    pub actor: String,
    /// What changed, for history and audit.
    pub note: String,
}

/// A validated ref name such as `cells/apt/demo/stable/main/amd64`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RefName(String);

impl RefName {
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
            });
        if ok {
            Ok(RefName(name))
        } else {
            Err(StoreError::BadRefName(name))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn dir(&self) -> Path {
        Path::from(format!("refs/{}", self.0))
    }

    /// Where one generation of the ref is stored.
    pub(crate) fn generation_path(&self, generation: u64) -> Path {
        Path::from(format!("refs/{}/{:020}.json", self.0, generation))
    }
}

impl fmt::Display for RefName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn parse_generation(file_name: &str) -> Option<u64> {
    let digits = file_name.strip_suffix(".json")?;
    if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

impl Store {
    async fn read_generation(&self, name: &RefName, generation: u64) -> Result<Option<RefEntry>> {
        match self
            .inner
            .get_opts(&name.generation_path(generation), GetOptions::default())
            .await
        {
            Ok(found) => {
                let bytes = found.bytes().await?;
                let entry: RefEntry = serde_json::from_slice(&bytes).map_err(|e| {
                    StoreError::Corrupt(
                        format!("ref {name} generation {generation}"),
                        e.to_string(),
                    )
                })?;
                if entry.generation != generation {
                    return Err(StoreError::Corrupt(
                        format!("ref {name} generation {generation}"),
                        format!("entry says generation {}", entry.generation),
                    ));
                }
                Ok(Some(entry))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// All generations present, ascending. Lists the ref's directory.
    pub async fn ref_generations(&self, name: &RefName) -> Result<Vec<u64>> {
        let listed = self.inner.list_with_delimiter(Some(&name.dir())).await?;
        let mut generations: Vec<u64> = listed
            .objects
            .iter()
            .filter_map(|meta| meta.location.filename().and_then(parse_generation))
            .collect();
        generations.sort_unstable();
        Ok(generations)
    }

    /// The newest generation of a ref, or None if it was never written.
    ///
    /// Generations are dense, so once a head is known we probe N+1, N+2, ...
    /// instead of listing the whole log on every read.
    pub async fn ref_head(&self, name: &RefName) -> Result<Option<RefEntry>> {
        let cached = self
            .ref_heads
            .lock()
            .map(|m| m.get(name.as_str()).copied())
            .unwrap_or(None);
        let start = match cached {
            Some(g) => g,
            None => match self.ref_generations(name).await?.last() {
                Some(&g) => g,
                None => return Ok(None),
            },
        };
        let mut head = match self.read_generation(name, start).await? {
            Some(entry) => entry,
            // The cached generation vanished (history pruned or store swapped): fall back to a listing.
            None => {
                self.forget_head(name);
                let Some(&g) = self.ref_generations(name).await?.last() else {
                    return Ok(None);
                };
                match self.read_generation(name, g).await? {
                    Some(entry) => entry,
                    None => return Ok(None),
                }
            }
        };
        while let Some(next) = self.read_generation(name, head.generation + 1).await? {
            head = next;
        }
        self.remember_head(name, head.generation);
        Ok(Some(head))
    }

    pub async fn ref_entry(&self, name: &RefName, generation: u64) -> Result<Option<RefEntry>> {
        self.read_generation(name, generation).await
    }

    /// Advance a ref from `expected` (None: the ref must not exist yet) to a new
    /// target. Fails with `StoreError::Conflict` if someone else advanced it first.
    /// A ref daemons follow is in the change log when this returns.
    pub async fn ref_advance(
        &self,
        name: &RefName,
        expected: Option<u64>,
        target: Digest,
        actor: &str,
        note: &str,
    ) -> Result<RefEntry> {
        // On a bulk handle, whatever the ref may name is sealed and made
        // durable first, and the ref itself right after.
        self.finish_bulk().await?;
        // Nothing this write names may have been swept by a gc it did not fence off.
        self.check_fence().await?;
        let advanced = match self
            .advance_unfenced(name, expected, target, actor, note)
            .await
        {
            Ok(advanced) => advanced,
            Err(e) => {
                if matches!(e, StoreError::Conflict(_)) {
                    self.note_ref_conflict(name);
                }
                return Err(e);
            }
        };
        self.finish_bulk().await?;
        // Only now that the ref is written may the log name it (see `change_log`).
        self.log_change(name, advanced.generation).await;
        Ok(advanced)
    }

    /// Compare-and-swap a ref, the one way every ref update is written: read its head,
    /// let `decide` say what to do from it, and advance from exactly that head. When
    /// another writer advanced it first, wait a little (longer after each conflict, with
    /// jitter, so writers that collided do not collide again in step) and decide again
    /// from the new head, up to [`REF_UPDATE_TRIES`] advances. Returns `decide`'s value
    /// and the entry written, if one was.
    pub async fn update_ref<T, E, Decided>(
        &self,
        name: &RefName,
        actor: &str,
        mut decide: impl FnMut(Option<RefEntry>) -> Decided,
    ) -> std::result::Result<(T, Option<RefEntry>), E>
    where
        E: From<StoreError>,
        Decided: std::future::Future<Output = std::result::Result<RefUpdate<T>, E>>,
    {
        let mut tries = 0;
        while tries < REF_UPDATE_TRIES {
            let head = self.ref_head(name).await?;
            let expected = head.as_ref().map(|h| h.generation);
            let (target, note, value) = match decide(head).await? {
                RefUpdate::Unchanged(value) => return Ok((value, None)),
                RefUpdate::Reread => continue,
                RefUpdate::Advance {
                    target,
                    note,
                    value,
                } => (target, note, value),
            };
            tries += 1;
            match self.ref_advance(name, expected, target, actor, &note).await {
                Ok(entry) => return Ok((value, Some(entry))),
                Err(StoreError::Conflict(_)) => tokio::time::sleep(conflict_pause(tries)).await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict(format!("{name} (gave up after {REF_UPDATE_TRIES} tries)")).into())
    }

    /// The same compare-and-swap loop for a ref whose entries are appended whatever its
    /// head says (the change log): nothing to decide, so the first try advances from
    /// `head`, the generation this process last saw, without reading the ref, and the head
    /// is read only after a conflict; the same growing random pause and bound as
    /// [`Store::update_ref`]. Not fenced: such a log names no blobs. Returns the entry and
    /// how many conflicts it took.
    pub(crate) async fn append_unfenced(
        &self,
        name: &RefName,
        mut head: Option<u64>,
        target: Digest,
        actor: &str,
        note: &str,
    ) -> Result<(RefEntry, u32)> {
        for tries in 1..=REF_UPDATE_TRIES {
            match self.advance_unfenced(name, head, target, actor, note).await {
                Ok(entry) => return Ok((entry, tries - 1)),
                Err(StoreError::Conflict(_)) => {
                    // Another process appended: find the new head (probing on from ours).
                    head = self.ref_head(name).await?.map(|h| h.generation);
                    tokio::time::sleep(conflict_pause(tries)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict(format!(
            "{name} (gave up after {REF_UPDATE_TRIES} tries)"
        )))
    }

    /// A ref advance that does not check the gc fence: for the gc lock itself.
    pub(crate) async fn advance_unfenced(
        &self,
        name: &RefName,
        expected: Option<u64>,
        target: Digest,
        actor: &str,
        note: &str,
    ) -> Result<RefEntry> {
        let generation = expected.map_or(0, |g| g + 1);
        let entry = RefEntry {
            generation,
            target,
            time: crate::util::time::now_unix(),
            actor: actor.to_string(),
            note: note.to_string(),
        };
        let body = serde_json::to_vec(&entry)
            .map_err(|e| StoreError::Corrupt(name.to_string(), e.to_string()))?;
        let payload = PutPayload::from(Bytes::from(body));
        match self
            .raw_put(&name.generation_path(generation), payload, PutMode::Create)
            .await
        {
            Ok(_) => {
                self.remember_head(name, generation);
                Ok(entry)
            }
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => {
                Err(StoreError::Conflict(name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Names of refs directly below a prefix, e.g. the repositories under `repos/apt`.
    pub async fn ref_children(&self, prefix: &str) -> Result<Vec<String>> {
        let listed = self
            .inner
            .list_with_delimiter(Some(&Path::from(format!("refs/{prefix}"))))
            .await?;
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    fn remember_head(&self, name: &RefName, generation: u64) {
        if let Ok(mut heads) = self.ref_heads.lock() {
            let slot = heads.entry(name.as_str().to_string()).or_insert(generation);
            *slot = (*slot).max(generation);
        }
    }

    fn forget_head(&self, name: &RefName) {
        if let Ok(mut heads) = self.ref_heads.lock() {
            heads.remove(name.as_str());
        }
    }
}
