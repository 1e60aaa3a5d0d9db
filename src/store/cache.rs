//! The last known state of recently seen users, kept in process so that a command on a user seen
//! a moment ago (register then verify, a retyped code, a check after enrolment) can decide without
//! reading the database first.
//!
//! It is safe because nothing is ever *committed* on the strength of a cached state alone: every
//! write is conditional on the user's row `version` (see [`super::sql`]), which the database bumps
//! on each change, by any instance. A stale entry makes that condition fail, and the command reads
//! the database and decides again. A *refusal* decided on a cached state writes nothing, so it is
//! never answered from the cache: the command re-reads and decides again (a user unlocked or
//! enrolled by another instance must not be refused on old news).
//!
//! Entries hold what the database holds (the secret stays sealed). The oldest entry leaves first
//! when the cache is full; a capacity of 0 turns caching off.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::domain::store::Snapshot;

/// A bounded map from user id to that user's newest known snapshot.
pub struct SnapshotCache {
    capacity: usize,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    /// Boxed behind `Arc`: the table's slots stay small (a snapshot inline is ~400 bytes, and a
    /// hash table keeps up to twice as many slots as entries).
    by_user: HashMap<Arc<str>, Arc<Snapshot>>,
    /// Users in the order they entered; the front leaves first. Same keys as `by_user`.
    arrival: VecDeque<Arc<str>>,
}

impl SnapshotCache {
    pub fn new(capacity: usize) -> Self {
        SnapshotCache {
            capacity,
            entries: Mutex::default(),
        }
    }

    /// The cached snapshot of `user_id`, if any.
    pub fn get(&self, user_id: &str) -> Option<Snapshot> {
        if self.capacity == 0 {
            return None;
        }
        let cached = self.lock().by_user.get(user_id).cloned();
        cached.map(|snapshot| Snapshot::clone(&snapshot))
    }

    /// Remembers `snapshot` unless a newer version of the same user is already known (a slower
    /// command may report an older state after a faster one reported a newer).
    pub fn put(&self, snapshot: Snapshot) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.lock();
        if let Some(known) = entries.by_user.get_mut(snapshot.user.user_id.as_str()) {
            if known.user.version <= snapshot.user.version {
                *known = Arc::new(snapshot);
            }
            return;
        }
        let user_id: Arc<str> = Arc::from(snapshot.user.user_id.as_str());
        entries.by_user.insert(user_id.clone(), Arc::new(snapshot));
        entries.arrival.push_back(user_id);
        while entries.by_user.len() > self.capacity {
            let Some(oldest) = entries.arrival.pop_front() else {
                break;
            };
            entries.by_user.remove(&oldest);
        }
    }

    /// How many users are cached.
    pub fn len(&self) -> usize {
        self.lock().by_user.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock cannot leave the maps half-changed in a way that matters
        // (at worst one entry too many), so a poisoned lock is used as is.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Counts only: the entries hold sealed secrets and personal data.
impl fmt::Debug for SnapshotCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotCache")
            .field("capacity", &self.capacity)
            .field("cached", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::clock::Timestamp;
    use crate::domain::types::{Profile, UserRecord, UserState};

    fn snapshot(user_id: &str, version: u64) -> Snapshot {
        Snapshot {
            user: UserRecord {
                user_id: user_id.to_owned(),
                resource_owner: "org".to_owned(),
                username: String::new(),
                email: "a@example.com".to_owned(),
                email_verified: false,
                profile: Profile::default(),
                state: UserState::Active,
                sequence: version + 1,
                created_at: Timestamp(0),
                change_date: Timestamp(0),
                failed_attempts: 0,
                locked_until: None,
                recovery_codes: Vec::new(),
                version,
            },
            totp: None,
        }
    }

    fn cached_version(cache: &SnapshotCache, user_id: &str) -> Option<u64> {
        cache.get(user_id).map(|s| s.user.version)
    }

    #[test]
    fn keeps_the_newest_version_of_each_user() {
        let cache = SnapshotCache::new(4);
        cache.put(snapshot("a", 3));
        cache.put(snapshot("a", 2));
        assert_eq!(cached_version(&cache, "a"), Some(3));
        cache.put(snapshot("a", 5));
        assert_eq!(cached_version(&cache, "a"), Some(5));
        assert_eq!(cached_version(&cache, "b"), None);
    }

    #[test]
    fn the_oldest_user_leaves_when_full_and_updates_do_not_grow_it() {
        let cache = SnapshotCache::new(2);
        cache.put(snapshot("a", 0));
        cache.put(snapshot("b", 0));
        for version in 1..100 {
            cache.put(snapshot("a", version));
        }
        assert_eq!(cache.len(), 2);
        cache.put(snapshot("c", 0));
        assert_eq!(cache.len(), 2);
        assert_eq!(cached_version(&cache, "a"), None);
        assert_eq!(cached_version(&cache, "b"), Some(0));
        assert_eq!(cached_version(&cache, "c"), Some(0));
        assert_eq!(cache.lock().arrival.len(), 2);
    }

    #[test]
    fn capacity_zero_caches_nothing() {
        let cache = SnapshotCache::new(0);
        cache.put(snapshot("a", 0));
        assert!(cache.is_empty());
        assert_eq!(cached_version(&cache, "a"), None);
    }
}
