//! A [`Store`] in memory, for unit tests of the service's orchestration without a database. Every
//! operation runs under one lock, so a decision always rests on the state it changes; it keeps the
//! event log so that tests can count what was appended.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::error::{self, Error};
use super::store::{
    Changes, Committed, ConnectionStats, Decide, NewEvent, Snapshot, Store, TotpChange,
};

/// Users, their factors and their events.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    users: HashMap<String, Snapshot>,
    events: Vec<(String, NewEvent)>,
}

impl MemoryStore {
    /// The types of the events appended for `user_id`, in order.
    pub fn event_types(&self, user_id: &str) -> Vec<&'static str> {
        let state = self.state.lock().unwrap();
        state
            .events
            .iter()
            .filter(|(user, _)| user == user_id)
            .map(|(_, event)| event.event_type)
            .collect()
    }
}

impl State {
    /// Stores `changes` over the user's row (`None`: a new user).
    fn apply(&mut self, changes: &Changes, before: Option<Snapshot>) {
        let version = before.as_ref().map_or(0, |s| s.user.version + 1);
        let totp = match &changes.totp {
            TotpChange::Keep => before.and_then(|s| s.totp),
            TotpChange::Put(totp) => Some(totp.clone()),
            TotpChange::Delete => None,
        };
        let mut user = changes.user.clone();
        user.version = version;
        let user_id = user.user_id.clone();
        for event in &changes.events {
            self.events.push((user_id.clone(), event.clone()));
        }
        self.users.insert(user_id, Snapshot { user, totp });
    }
}

/// What a written change left.
fn answer(changes: Changes) -> Result<Committed, Error> {
    Ok(Committed {
        details: changes.user.details(),
        user: changes.user,
        outcome: changes.outcome,
    })
}

#[async_trait]
impl Store for MemoryStore {
    async fn insert_user(&self, changes: Changes) -> Result<Committed, Error> {
        let mut state = self.state.lock().unwrap();
        if state.users.contains_key(&changes.user.user_id) {
            return Err(error::USER_ALREADY_EXISTS.into());
        }
        state.apply(&changes, None);
        answer(changes)
    }

    async fn load(&self, user_id: &str) -> Result<Option<Snapshot>, Error> {
        Ok(self.state.lock().unwrap().users.get(user_id).cloned())
    }

    async fn update(&self, user_id: &str, decide: Decide) -> Result<Committed, Error> {
        let mut state = self.state.lock().unwrap();
        let before = state.users.get(user_id).cloned();
        let changes = decide(before.clone())?;
        state.apply(&changes, before);
        answer(changes)
    }

    async fn totp_sealed_with_other_key(
        &self,
        key_id: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<String>, Error> {
        let state = self.state.lock().unwrap();
        let mut ids: Vec<String> = state
            .users
            .values()
            .filter(|s| s.totp.as_ref().is_some_and(|t| t.secret.key_id != key_id))
            .map(|s| s.user.user_id.clone())
            .filter(|id| id.as_str() > after)
            .collect();
        ids.sort();
        ids.truncate(limit as usize);
        Ok(ids)
    }

    fn connection_stats(&self) -> ConnectionStats {
        ConnectionStats::default()
    }

    async fn close(&self) {}

    async fn ping(&self) -> Result<(), Error> {
        Ok(())
    }
}
