//! The reconciler: owns the picture of the maps and brings them to the desired
//! state, either for a few changed frontends ([`Reconciler::apply`]) or for the
//! whole desired set ([`Reconciler::reconcile`], which is `apply` of the
//! difference plus a sweep of leftovers). Both go through one admission rule
//! (admission.rs) and one write order (writes.rs).

use std::collections::{BTreeMap, BTreeSet};

use super::{
    admission::{self, Ask, Usage},
    programmed::{Programmed, ProgrammedService},
};
use crate::{
    maps::LbMapWriter,
    model::{BackendState, Change, DesiredService, L4Addr},
};

/// What one reconcile did.
#[derive(Debug, Default)]
pub struct Report {
    pub services_written: usize,
    pub services_removed: usize,
    pub backends_added: usize,
    pub backends_removed: usize,
    /// One line per service that could not be programmed, naming it and why.
    /// Such a service keeps what it had before.
    pub errors: Vec<String>,
}

/// A change borrowed from the caller: a full reconcile does not clone the
/// desired set to turn it into changes.
#[derive(Clone, Copy, Debug)]
enum Step<'a> {
    Upsert(&'a DesiredService),
    Remove(L4Addr),
}

/// Owns the programmed picture and brings the maps to the desired state.
#[derive(Debug, Default)]
pub struct Reconciler {
    pub(super) programmed: Programmed,
    /// Backend ids in use and their addresses, so allocation is O(log n) and a
    /// backend can be found by id.
    pub(super) backend_ids: BTreeMap<u32, L4Addr>,
    /// Backend id -> how many slots name it, kept by `set_service`, so the
    /// clean-up after a change looks only at the backends it touched.
    pub(super) refs: BTreeMap<u32, usize>,
    /// lb4_services entries in use, kept by `set_service`.
    entries: usize,
    /// lb4_affinity_match entries in use, kept by `set_service`.
    matches: usize,
    /// Reverse-NAT indexes in use (orphans included until deleted).
    rev_nats: BTreeSet<u16>,
    next_backend_id: u32,
    next_rev_nat: u16,
    /// Per frontend, the backends it last asked to have active. A backend is
    /// written active while any frontend wants it so, terminating otherwise
    /// ([`BackendState::merge`]); the maps hold only that result, so this is
    /// what lets one change recompute it.
    wants_active: BTreeMap<L4Addr, BTreeSet<L4Addr>>,
    /// Backend -> how many frontends of `wants_active` name it.
    active_users: BTreeMap<L4Addr, usize>,
}

impl Reconciler {
    pub fn new(programmed: Programmed) -> Self {
        let backend_ids = programmed
            .backends
            .iter()
            .map(|(a, b)| (b.id, *a))
            .collect();
        let services = programmed.services.clone();
        let mut rev_nats: BTreeSet<u16> = programmed.orphan_rev_nats.clone();
        rev_nats.extend(programmed.orphan_matches.iter().map(|(_, rn)| *rn));
        let mut r = Reconciler {
            programmed: Programmed {
                services: BTreeMap::new(),
                ..programmed
            },
            backend_ids,
            rev_nats,
            next_backend_id: 1,
            next_rev_nat: 1,
            ..Default::default()
        };
        // Until a full reconcile says otherwise, a service wants active what
        // is active in the maps.
        for (fe, s) in services {
            let active = s
                .slot_ids()
                .filter_map(|id| r.backend_ids.get(&id))
                .filter(|a| r.programmed.backends[*a].state == BackendState::Active)
                .copied()
                .collect();
            r.set_wants_active(fe, active);
            r.set_service(fe, Some(s));
        }
        r
    }

    pub fn programmed(&self) -> &Programmed {
        &self.programmed
    }

    /// Records the programmed state of `fe` (None or nothing left: gone),
    /// keeping the counts and indexes in step. Every change to
    /// `programmed.services` goes through here.
    pub(super) fn set_service(&mut self, fe: L4Addr, svc: Option<ProgrammedService>) {
        if let Some(old) = self.programmed.services.remove(&fe) {
            if old.rev_nat != 0 {
                self.rev_nats.remove(&old.rev_nat);
            }
            self.entries -= old.entries();
            self.matches -= old.matches.len();
            for id in old.slot_ids() {
                if let Some(n) = self.refs.get_mut(&id) {
                    *n -= 1;
                    if *n == 0 {
                        self.refs.remove(&id);
                    }
                }
            }
        }
        if let Some(new) = svc.filter(|s| !s.is_gone()) {
            if new.rev_nat != 0 {
                self.rev_nats.insert(new.rev_nat);
            }
            self.entries += new.entries();
            self.matches += new.matches.len();
            for id in new.slot_ids() {
                *self.refs.entry(id).or_default() += 1;
            }
            self.programmed.services.insert(fe, new);
        }
    }

    /// Records which backends `fe` wants active (empty: none, or `fe` gone);
    /// returns the backends whose resulting state this may change.
    fn set_wants_active(&mut self, fe: L4Addr, active: BTreeSet<L4Addr>) -> Vec<L4Addr> {
        let old = self.wants_active.remove(&fe).unwrap_or_default();
        let mut changed = Vec::new();
        for a in old.difference(&active) {
            if let Some(n) = self.active_users.get_mut(a) {
                *n -= 1;
                if *n == 0 {
                    self.active_users.remove(a);
                    changed.push(*a);
                }
            }
        }
        for a in active.difference(&old) {
            let n = self.active_users.entry(*a).or_insert(0);
            *n += 1;
            if *n == 1 {
                changed.push(*a);
            }
        }
        if !active.is_empty() {
            self.wants_active.insert(fe, active);
        }
        changed
    }

    /// The state a backend must have: [`BackendState::merge`] over every
    /// service that lists it, kept as a count of services wanting it active.
    fn wanted_state(&self, addr: &L4Addr) -> BackendState {
        if self.active_users.contains_key(addr) {
            BackendState::Active
        } else {
            BackendState::Terminating
        }
    }

    fn usage(&self) -> Usage {
        Usage {
            services: self.entries,
            backends: self.programmed.backends.len(),
            rev_nats: self.rev_nats.len(),
            matches: self.matches,
        }
    }

    pub(super) fn alloc_backend_id(&mut self) -> u32 {
        let mut id = self.next_backend_id.max(1);
        while self.backend_ids.contains_key(&id) {
            id = id.checked_add(1).unwrap_or(1);
        }
        self.next_backend_id = id.wrapping_add(1);
        id
    }

    /// A rev-NAT index no service holds. Reserved right away, so a second
    /// allocation before the service is recorded cannot return it again.
    pub(super) fn alloc_rev_nat(&mut self) -> u16 {
        let mut idx = self.next_rev_nat.max(1);
        while self.rev_nats.contains(&idx) {
            idx = idx.checked_add(1).unwrap_or(1);
        }
        self.next_rev_nat = idx.wrapping_add(1);
        idx
    }

    /// Applies changes to some frontends, leaving every other one as it is.
    /// Cost is in the size of the change.
    pub fn apply<M: LbMapWriter>(&mut self, changes: &[Change], maps: &mut M) -> Report {
        let steps: Vec<Step<'_>> = changes
            .iter()
            .map(|c| match c {
                Change::Upsert(d) => Step::Upsert(d),
                Change::Remove(fe) => Step::Remove(*fe),
            })
            .collect();
        let mut report = Report::default();
        self.run(steps, maps, &mut report);
        report
    }

    /// Brings the maps to exactly `desired`: what is not in it is removed,
    /// leftovers of interrupted writes (reverse-NAT and match entries of no
    /// service, unnamed backends) are swept. Two entries for one frontend are a
    /// clash the first name wins ([`DesiredService::outranks`]).
    pub fn reconcile<M: LbMapWriter>(
        &mut self,
        desired: &[DesiredService],
        maps: &mut M,
    ) -> Report {
        let mut report = Report::default();
        self.sweep_orphans(maps, &mut report);

        let mut owners: BTreeMap<L4Addr, &DesiredService> = BTreeMap::new();
        for d in desired {
            match owners.get_mut(&d.frontend) {
                None => {
                    owners.insert(d.frontend, d);
                }
                Some(owner) => {
                    let (winner, loser) = if d.outranks(owner) {
                        (d, *owner)
                    } else {
                        (*owner, d)
                    };
                    report.errors.push(DesiredService::clash_error(
                        &loser.name,
                        &d.frontend,
                        &winner.name,
                    ));
                    *owner = winner;
                }
            }
        }
        // Frontends that wanted backends active but are no longer desired
        // (e.g. never programmed because they did not fit).
        let stale: Vec<L4Addr> = self
            .wants_active
            .keys()
            .filter(|fe| !owners.contains_key(*fe) && !self.programmed.services.contains_key(*fe))
            .copied()
            .collect();
        let mut restate = Vec::new();
        for fe in stale {
            restate.extend(self.set_wants_active(fe, BTreeSet::new()));
        }

        let mut steps: Vec<Step<'_>> = self
            .programmed
            .services
            .keys()
            .filter(|fe| !owners.contains_key(*fe))
            .map(|fe| Step::Remove(*fe))
            .collect();
        steps.extend(owners.values().map(|d| Step::Upsert(d)));
        self.run(steps, maps, &mut report);
        self.restate(restate, maps, &mut report);

        // Backends no slot names, whoever left them.
        let unnamed: Vec<u32> = self.backend_ids.keys().copied().collect();
        self.delete_unnamed_backends(unnamed, maps, &mut report);
        report
    }

    /// Deletes reverse-NAT and match entries that belong to no service.
    fn sweep_orphans<M: LbMapWriter>(&mut self, maps: &mut M, report: &mut Report) {
        for (id, rn) in std::mem::take(&mut self.programmed.orphan_matches) {
            if let Err(e) = maps.del_affinity_match(id, rn) {
                report
                    .errors
                    .push(format!("removing a leftover affinity-match entry: {e}"));
                self.programmed.orphan_matches.insert((id, rn));
            }
        }
        for rn in std::mem::take(&mut self.programmed.orphan_rev_nats) {
            match maps.del_rev_nat(rn) {
                Ok(()) => {
                    if !self.programmed.orphan_matches.iter().any(|(_, r)| *r == rn) {
                        self.rev_nats.remove(&rn);
                    }
                }
                Err(e) => {
                    report
                        .errors
                        .push(format!("removing leftover reverse-NAT entry {rn}: {e}"));
                    self.programmed.orphan_rev_nats.insert(rn);
                }
            }
        }
        // Match entries' indexes were reserved in `new`; free those whose
        // entries are gone and that no service uses.
        let in_use: BTreeSet<u16> = self
            .programmed
            .services
            .values()
            .map(|s| s.rev_nat)
            .chain(self.programmed.orphan_rev_nats.iter().copied())
            .chain(self.programmed.orphan_matches.iter().map(|(_, r)| *r))
            .collect();
        self.rev_nats.retain(|r| in_use.contains(r));
    }

    /// Removals first (they free room), then upserts in name order, each
    /// admitted against the room left at that moment.
    fn run<M: LbMapWriter>(&mut self, steps: Vec<Step<'_>>, maps: &mut M, report: &mut Report) {
        let mut upserts: Vec<&DesiredService> = Vec::new();
        let mut touched_backends: BTreeSet<u32> = BTreeSet::new();
        // Backends whose wanted state may have changed.
        let mut restate: BTreeSet<L4Addr> = BTreeSet::new();
        for step in steps {
            match step {
                Step::Remove(fe) => {
                    let Some(s) = self.programmed.services.get(&fe) else {
                        continue;
                    };
                    touched_backends.extend(s.slot_ids());
                    match self.remove_service(&fe, maps) {
                        Ok(()) => {
                            report.services_removed += 1;
                            restate.extend(self.set_wants_active(fe, BTreeSet::new()));
                        }
                        Err(e) => report.errors.push(format!("removing service {fe}: {e}")),
                    }
                }
                Step::Upsert(d) => upserts.push(d),
            }
        }
        // Backends the removals left unnamed go before anything is admitted,
        // so their room counts.
        self.delete_unnamed_backends(std::mem::take(&mut touched_backends), maps, report);

        upserts.sort_by(|a, b| a.name.cmp(&b.name).then(a.frontend.cmp(&b.frontend)));
        let cap = maps.capacity();
        for d in upserts {
            let list = dedup_backends(&d.backends);
            let internal = d.internal.as_deref().map(dedup_backends);
            // Every backend of either scope, once: what goes into lb4_backends
            // and lb4_affinity_match.
            let mut all = list.clone();
            if let Some(int) = &internal {
                let ext: BTreeSet<L4Addr> = list.iter().map(|(a, _)| *a).collect();
                all.extend(int.iter().filter(|(a, _)| !ext.contains(a)).copied());
            }
            let old = self.programmed.services.get(&d.frontend);
            let ask = Ask {
                held_entries: old.map_or(0, ProgrammedService::entries),
                entries: 1 + list.len() + internal.as_ref().map_or(0, |i| 1 + i.len()),
                backends: list.len().max(internal.as_ref().map_or(0, Vec::len)),
                // At most every backend of either scope at once (a service
                // gaining its internal scope holds both sets for a moment).
                matches: all.len(),
                new_backends: all
                    .iter()
                    .filter(|(a, _)| !self.programmed.backends.contains_key(a))
                    .count(),
                new_rev_nat: old.is_none_or(|s| s.rev_nat == 0),
                held_matches: old.map_or(0, |s| s.matches.len()),
            };
            if let Err(why) = admission::admit(self.usage(), ask, cap) {
                let kept = if old.is_some() {
                    "kept as it was"
                } else {
                    "not programmed"
                };
                report.errors.push(format!(
                    "service {} ({}): {why}; {kept}",
                    d.name, d.frontend
                ));
                continue;
            }
            if let Some(s) = old {
                touched_backends.extend(s.slot_ids());
            }
            // A backend is active for this frontend if either scope has it so.
            let active = all
                .iter()
                .filter(|(_, s)| *s == BackendState::Active)
                .map(|(a, _)| *a)
                .chain(
                    internal
                        .iter()
                        .flatten()
                        .filter(|(_, s)| *s == BackendState::Active)
                        .map(|(a, _)| *a),
                )
                .collect();
            restate.extend(self.set_wants_active(d.frontend, active));
            let mut failed = false;
            for (addr, _) in &all {
                let state = self.wanted_state(addr);
                match self.put_backend(addr, state, maps) {
                    Ok(true) => report.backends_added += 1,
                    Ok(false) => {}
                    Err(e) => {
                        report.errors.push(format!(
                            "service {} ({}): backend {addr}: {e}; kept as it was",
                            d.name, d.frontend
                        ));
                        failed = true;
                        break;
                    }
                }
            }
            if !failed {
                let d = DesiredService {
                    backends: list.clone(),
                    internal: internal.clone(),
                    ..d.clone()
                };
                match self.write_service(&d, maps) {
                    Ok(true) => report.services_written += 1,
                    Ok(false) => {}
                    Err(e) => {
                        report.errors.push(format!(
                            "service {} ({}): {e}; kept as it was",
                            d.name, d.frontend
                        ));
                        failed = true;
                    }
                }
            }
            if failed {
                // Backends written for it that no slot names are taken back.
                touched_backends.extend(
                    all.iter()
                        .filter_map(|(a, _)| self.programmed.backends.get(a).map(|b| b.id)),
                );
            }
        }
        // Backends that lost a slot in this change and are named by none now.
        self.delete_unnamed_backends(touched_backends, maps, report);
        self.restate(restate, maps, report);
    }

    /// Rewrites the state of backends that stay but that a service stopped
    /// (or started) wanting active, e.g. the last service with it active went.
    fn restate<M: LbMapWriter>(
        &mut self,
        addrs: impl IntoIterator<Item = L4Addr>,
        maps: &mut M,
        report: &mut Report,
    ) {
        for addr in addrs {
            if self.programmed.backends.contains_key(&addr) {
                let state = self.wanted_state(&addr);
                if let Err(e) = self.put_backend(&addr, state, maps) {
                    report.errors.push(format!("backend {addr}: {e}"));
                }
            }
        }
    }
}

/// A service's backends with repeats dropped (first one wins): a backend
/// takes one slot however often an EndpointSlice lists it.
fn dedup_backends(backends: &[(L4Addr, BackendState)]) -> Vec<(L4Addr, BackendState)> {
    let mut seen = BTreeSet::new();
    backends
        .iter()
        .filter(|(a, _)| seen.insert(*a))
        .copied()
        .collect()
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
