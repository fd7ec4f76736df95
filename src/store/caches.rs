//! Caches the layers above the store keep per store handle: each is a type of the
//! layer that fills it (APT fragments, layout bases, parsed chunks...), made on first
//! use and shared by every clone of the handle. Keeping them here, rather than in
//! statics, means two stores in one process (two tests, a test beside a server) never
//! see each other's entries, while the store itself knows nothing of what they hold.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Store;

/// One value per cache type.
#[derive(Default)]
pub(crate) struct Caches(Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>);

impl Store {
    /// This handle's cache of type `T`, made with `T::default()` on first use.
    pub fn cache<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let Ok(mut caches) = self.caches.0.lock() else {
            // A panic while the map was locked: serve an empty cache rather than fail.
            return Arc::new(T::default());
        };
        let entry = caches
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()));
        match Arc::clone(entry).downcast::<T>() {
            Ok(cache) => cache,
            Err(_) => Arc::new(T::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Default)]
    struct Counter(AtomicUsize);

    #[test]
    fn clones_share_a_cache_and_other_stores_have_their_own() {
        let store = Store::memory();
        store.cache::<Counter>().0.fetch_add(1, Ordering::Relaxed);
        store
            .clone()
            .cache::<Counter>()
            .0
            .fetch_add(1, Ordering::Relaxed);
        assert_eq!(store.cache::<Counter>().0.load(Ordering::Relaxed), 2);
        assert_eq!(
            Store::memory().cache::<Counter>().0.load(Ordering::Relaxed),
            0
        );
    }
}
