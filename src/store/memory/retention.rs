//! [`MemoryStore`](super::MemoryStore)'s idle-client sweep: under the store's one lock, so
//! the check and the delete are one step.

use std::collections::HashSet;

use super::State;
use crate::store::ClientSource;

/// Deletes the dynamic clients idle since before `idle_before` that hold nothing live at
/// `now` (see [`ClientStore::sweep_idle_clients`](crate::store::ClientStore::sweep_idle_clients)),
/// with their remembered consents; returns how many clients went.
pub(super) fn sweep_idle_clients(s: &mut State, idle_before: u64, now: u64) -> u64 {
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
            c.source == ClientSource::Dynamic
                && c.last_used_at.max(c.issued_at) < idle_before
                && !in_use.contains(c.client_id.as_str())
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
    gone.len() as u64
}
