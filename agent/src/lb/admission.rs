//! Whether a service fits the maps: the one capacity rule, applied to every
//! service a full reconcile or an incremental change wants to write.
//!
//! Room is counted for the moment of the write, not after it: a service's new
//! backends, slots and match entries are written before the ones it drops are
//! deleted (see writes.rs), so both must fit at once.

use crate::maps::Capacity;

/// Entries in use now, across the maps the reconciler writes.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub services: usize,
    pub backends: usize,
    pub rev_nats: usize,
    pub matches: usize,
}

/// What one service asks for on top of what it holds now.
#[derive(Clone, Copy, Debug)]
pub struct Ask {
    /// lb4_services entries it holds now (frontends + slots, both scopes).
    pub held_entries: usize,
    /// lb4_services entries it needs: a frontend and a slot per backend, for
    /// each of its scopes.
    pub entries: usize,
    /// Backends of its largest scope, after deduplication.
    pub backends: usize,
    /// Backends of the scope the datapath serves (one affinity-match entry each).
    pub matches: usize,
    /// Of those, backends not in lb4_backends yet.
    pub new_backends: usize,
    /// Whether it needs a reverse-NAT index it does not have.
    pub new_rev_nat: bool,
    /// Affinity-match entries it holds now.
    pub held_matches: usize,
}

/// The most backends one service can have: slots are numbered by a u16.
pub const MAX_BACKENDS_PER_SERVICE: usize = u16::MAX as usize;

/// Ok if the service fits; else why not, for the error line that names it.
pub fn admit(used: Usage, ask: Ask, cap: Capacity) -> Result<(), String> {
    if ask.backends > MAX_BACKENDS_PER_SERVICE {
        return Err(format!(
            "{} backends, at most {MAX_BACKENDS_PER_SERVICE} fit a service",
            ask.backends
        ));
    }
    // Slots first, frontend after, excess deleted last: during the write the
    // service holds max(old, new) slots plus its frontend.
    let need_entries = ask.entries;
    let peak_entries = used.services - ask.held_entries + need_entries.max(ask.held_entries);
    let peak_matches = used.matches - ask.held_matches + ask.matches.max(ask.held_matches);
    let rev_nat_cap = cap.rev_nat.min(usize::from(u16::MAX));
    if peak_entries > cap.services
        || used.backends + ask.new_backends > cap.backends
        || used.rev_nats + usize::from(ask.new_rev_nat) > rev_nat_cap
        || peak_matches > cap.affinity_match
    {
        return Err(format!(
            "maps full (lb4_services needs {need_entries} entries, {} of {} in use; \
             lb4_backends {} more, {} of {} in use; lb4_reverse_nat {} of {} in use)",
            used.services,
            cap.services,
            ask.new_backends,
            used.backends,
            cap.backends,
            used.rev_nats,
            rev_nat_cap,
        ));
    }
    Ok(())
}
