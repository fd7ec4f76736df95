//! What the store remembers about caps: the registry of issued caps (for
//! `cap list` and for scoping revocations) and the revocation list, which every
//! server checks on every request. Both are manifests behind refs, so a
//! revocation made with `--data` on one machine is honoured at once by every
//! server sharing the store.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::token::{Grant, Right};
use crate::store::ManifestKind;
use crate::store::{RefName, Result, Store, StoreError};

/// `caps/issued`: every cap issued from this data dir's root key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    pub kind: ManifestKind,
    pub caps: BTreeMap<String, IssuedCap>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuedCap {
    pub scope: String,
    pub rights: Vec<Right>,
    pub nbf: i64,
    pub exp: i64,
    pub issued_at: i64,
    pub issued_by: String,
}

/// `caps/revoked`: ids whose caps, and every cap derived from them, are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocations {
    pub kind: ManifestKind,
    pub revoked: BTreeMap<String, Revocation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    pub time: i64,
    pub by: String,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            kind: ManifestKind::CapRegistry,
            caps: BTreeMap::new(),
        }
    }
}

impl Default for Revocations {
    fn default() -> Self {
        Revocations {
            kind: ManifestKind::CapRevocations,
            revoked: BTreeMap::new(),
        }
    }
}

fn registry_ref() -> Result<RefName> {
    RefName::new("caps/issued")
}

fn revocations_ref() -> Result<RefName> {
    RefName::new("caps/revoked")
}

async fn load<T: Default + serde::de::DeserializeOwned>(
    store: &Store,
    name: &RefName,
) -> Result<(Option<u64>, T)> {
    match store.ref_head(name).await? {
        Some(head) => Ok((Some(head.generation), store.get_json(&head.target).await?)),
        None => Ok((None, T::default())),
    }
}

/// Apply a change to a ref'd manifest with compare-and-swap, retrying on conflicts.
async fn update<T, F>(
    store: &Store,
    name: &RefName,
    actor: &str,
    note: &str,
    change: F,
) -> Result<T>
where
    T: Default + Clone + Serialize + serde::de::DeserializeOwned,
    F: Fn(&mut T),
{
    let change = &change;
    let (value, _) = store
        .update_ref(name, actor, |head| async move {
            let mut value = match &head {
                Some(head) => store.get_json(&head.target).await?,
                None => T::default(),
            };
            change(&mut value);
            let stored = store.put_json(&value).await?;
            Ok::<_, StoreError>(crate::store::RefUpdate::Advance {
                target: stored.digest,
                note: note.to_string(),
                value,
            })
        })
        .await?;
    Ok(value)
}

pub async fn record_issued(store: &Store, id: &str, cap: IssuedCap) -> Result<()> {
    let note = format!("issue {id} {} {}", cap.scope, rights_text(&cap.rights));
    let actor = cap.issued_by.clone();
    update::<Registry, _>(store, &registry_ref()?, &actor, &note, |registry| {
        registry.caps.insert(id.to_string(), cap.clone());
    })
    .await?;
    Ok(())
}

pub async fn issued(store: &Store) -> Result<Registry> {
    Ok(load::<Registry>(store, &registry_ref()?).await?.1)
}

pub async fn revoke(store: &Store, id: &str, actor: &str) -> Result<Revocations> {
    let revocation = Revocation {
        time: crate::util::time::now_unix(),
        by: actor.to_string(),
    };
    update::<Revocations, _>(
        store,
        &revocations_ref()?,
        actor,
        &format!("revoke {id}"),
        |list| {
            list.revoked
                .entry(id.to_string())
                .or_insert_with(|| revocation.clone());
        },
    )
    .await
}

pub async fn revocations(store: &Store) -> Result<Revocations> {
    Ok(load::<Revocations>(store, &revocations_ref()?).await?.1)
}

pub fn rights_text(rights: &[Right]) -> String {
    rights
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The revocation list as a server sees it: the ref head is probed on every
/// check (one cheap read), the list itself reloaded only when it moved.
pub struct RevocationCheck {
    store: Store,
    cached: Mutex<(Option<u64>, Arc<HashSet<String>>)>,
}

impl RevocationCheck {
    pub fn new(store: Store) -> Self {
        RevocationCheck {
            store,
            cached: Mutex::new((None, Arc::default())),
        }
    }

    /// The first id in the grant's chain that is revoked, if any.
    pub async fn revoked_id(&self, grant: &Grant) -> Result<Option<String>> {
        let name = revocations_ref()?;
        let head = self.store.ref_head(&name).await?;
        let generation = head.as_ref().map(|h| h.generation);
        let known = self
            .cached
            .lock()
            .ok()
            .and_then(|c| (c.0 == generation).then(|| Arc::clone(&c.1)));
        let set = match (known, head) {
            (Some(set), _) => set,
            (None, None) => Arc::default(),
            (None, Some(head)) => {
                let list: Revocations = self.store.get_json(&head.target).await?;
                let set: Arc<HashSet<String>> = Arc::new(list.revoked.into_keys().collect());
                if let Ok(mut cached) = self.cached.lock() {
                    *cached = (generation, Arc::clone(&set));
                }
                set
            }
        };
        Ok(grant
            .chain_ids
            .iter()
            .chain(&grant.written_ids)
            .find(|id| set.contains(*id))
            .cloned())
    }
}
