//! [`MemoryStore`](super::MemoryStore)'s idle-client sweep: under the store's one lock, so
//! the check and the delete are one step.

use std::collections::HashSet;

use super::State;
use crate::store::{Client, ClientSource};

/// Deletes the dynamic clients idle since before `idle_before` that hold nothing live at
/// `now` (see [`ClientStore::sweep_idle_clients`](crate::store::ClientStore::sweep_idle_clients)),
/// with their remembered consents; returns how many clients went.
pub(super) fn sweep_idle_clients(s: &mut State, idle_before: u64, now: u64) -> u64 {
    sweep_clients(s, now, |c| c.last_used_at.max(c.issued_at) < idle_before)
}

/// Deletes the dynamic clients never used since their registration before
/// `registered_before` that hold nothing live at `now` (see
/// [`ClientStore::sweep_unused_clients`](crate::store::ClientStore::sweep_unused_clients)),
/// with their remembered consents; returns how many clients went.
pub(super) fn sweep_unused_clients(s: &mut State, registered_before: u64, now: u64) -> u64 {
    sweep_clients(s, now, |c| {
        c.last_used_at == 0 && c.issued_at < registered_before
    })
}

/// Deletes the dynamic clients `doomed` picks that hold nothing live at `now`.
fn sweep_clients(s: &mut State, now: u64, doomed: impl Fn(&Client) -> bool) -> u64 {
    let mut in_use: HashSet<&str> = HashSet::new();
    in_use.extend(
        s.families
            .values()
            .filter_map(|f| f.active(now))
            .map(|f| f.client_id.as_str()),
    );
    in_use.extend(
        s.codes
            .values()
            .filter(|c| c.code.expires_at > now)
            .map(|c| c.code.client_id.as_str()),
    );
    in_use.extend(
        s.pending
            .values()
            .filter(|p| p.expires_at > now)
            .map(|p| p.client_id.as_str()),
    );
    let gone: Vec<String> = s
        .clients
        .values()
        .filter(|c| {
            c.source == ClientSource::Dynamic && doomed(c) && !in_use.contains(c.client_id.as_str())
        })
        .map(|c| c.client_id.clone())
        .collect();
    for id in &gone {
        s.clients.remove(id);
    }
    if !gone.is_empty() {
        let gone: HashSet<&str> = gone.iter().map(String::as_str).collect();
        s.consents
            .retain(|(_, client_id), _| !gone.contains(client_id.as_str()));
    }
    let State {
        clients,
        fingerprints,
        ..
    } = s;
    fingerprints.retain(|_, id| clients.contains_key(id));
    gone.len() as u64
}
