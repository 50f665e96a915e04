//! Turns desired services into map writes, against what the maps already hold.
//!
//! Ordering is the point of this module. A connect() may run between any two
//! writes, so every intermediate state must be a valid one:
//! - a new or changed service: backends first, then its slots, then its
//!   frontend (slot 0, which carries the count), then slots beyond the new count;
//! - a removed service: frontend first, then its slots, then its reverse-NAT
//!   entry; backends go last, once no slot names them.
//!
//! A backend keeps its slot while it stays in a service (see [`assign_slots`]), so
//! UDP sockets that stuck to it keep it.

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::Bound::{Excluded, Unbounded},
};

use lash_common::{Lb4Backend, Lb4Key, Lb4ReverseNat, Lb4Service};
use thiserror::Error;

use super::{BackendState, DesiredService, L4Addr};
use crate::maps::{lb4_backends, lb4_reverse_nat, lb4_services};

/// A failed map write.
#[derive(Debug, Error)]
#[error("{op} in {map}: {source}")]
pub struct MapWriteError {
    pub map: &'static str,
    pub op: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// How many entries each map can hold.
#[derive(Clone, Copy, Debug)]
pub struct Capacity {
    pub services: usize,
    pub backends: usize,
    pub rev_nat: usize,
}

/// The writes the reconciler needs; implemented by the pinned maps and by a fake
/// in tests.
pub trait LbMapWriter {
    fn put_service(&mut self, key: &Lb4Key, value: &Lb4Service) -> Result<(), MapWriteError>;
    fn del_service(&mut self, key: &Lb4Key) -> Result<(), MapWriteError>;
    fn put_backend(&mut self, id: u32, value: &Lb4Backend) -> Result<(), MapWriteError>;
    fn del_backend(&mut self, id: u32) -> Result<(), MapWriteError>;
    fn put_rev_nat(&mut self, index: u16, value: &Lb4ReverseNat) -> Result<(), MapWriteError>;
    fn del_rev_nat(&mut self, index: u16) -> Result<(), MapWriteError>;
    fn capacity(&self) -> Capacity;
}

/// What the maps hold, as the reconciler believes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Programmed {
    pub backends: BTreeMap<L4Addr, ProgrammedBackend>,
    pub services: BTreeMap<L4Addr, ProgrammedService>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgrammedBackend {
    pub id: u32,
    pub state: BackendState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgrammedService {
    /// Host order; 0 when no reverse-NAT entry is known.
    pub rev_nat: u16,
    pub flags: u8,
    /// Whether slot 0 exists. False for leftovers of an interrupted write.
    pub has_frontend: bool,
    /// The count slot 0 carries (0 without it). After an interrupted write it
    /// can differ from the number of slots.
    pub count: u16,
    /// slot (1..) -> backend id, every slot entry present in the map.
    pub slots: BTreeMap<u16, u32>,
}

impl ProgrammedService {
    fn slot_list(&self) -> Vec<u32> {
        let count = self.slots.len() as u16;
        (1..=count)
            .map_while(|s| self.slots.get(&s).copied())
            .collect()
    }
}

impl Programmed {
    /// Rebuilds the picture from map contents (agent start). Entries we cannot
    /// read (foreign protocols, states we never write) are left alone.
    pub fn from_entries(
        services: impl IntoIterator<Item = (Lb4Key, Lb4Service)>,
        backends: impl IntoIterator<Item = (u32, Lb4Backend)>,
    ) -> Self {
        let mut p = Programmed::default();
        for (id, v) in backends {
            if let (Some(addr), Some(state)) =
                (lb4_backends::addr_of(&v), lb4_backends::state_of(&v))
            {
                p.backends.insert(addr, ProgrammedBackend { id, state });
            }
        }
        for (k, v) in services {
            let Some(fe) = lb4_services::frontend_of(&k) else {
                continue;
            };
            let s = p.services.entry(fe).or_insert_with(|| ProgrammedService {
                rev_nat: 0,
                flags: 0,
                has_frontend: false,
                count: 0,
                slots: BTreeMap::new(),
            });
            if k.backend_slot == 0 {
                s.has_frontend = true;
                s.count = v.count;
                s.rev_nat = lb4_services::rev_nat_of(&v);
                s.flags = v.flags;
            } else {
                if s.rev_nat == 0 {
                    s.rev_nat = lb4_services::rev_nat_of(&v);
                }
                s.slots.insert(k.backend_slot, v.backend_id);
            }
        }
        p
    }
}

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

/// One frontend to bring to a new state: `Some` to program it as given, `None`
/// to remove it. What [`Reconciler::apply`] takes from an incremental source.
#[derive(Clone, Debug)]
pub enum Change {
    Upsert(DesiredService),
    Remove(L4Addr),
}

/// Owns the programmed picture and brings the maps to the desired state.
#[derive(Debug, Default)]
pub struct Reconciler {
    programmed: Programmed,
    /// Backend ids in use and their addresses, so allocation is O(log n) and a
    /// backend can be found by id.
    backend_ids: BTreeMap<u32, L4Addr>,
    /// Backend id -> how many slots name it, kept by `set_service`, so the
    /// clean-up after a change looks only at the backends it touched.
    refs: BTreeMap<u32, usize>,
    /// lb4_services entries in use, kept by `set_service`.
    entries: usize,
    rev_nats: BTreeSet<u16>,
    next_backend_id: u32,
    next_rev_nat: u16,
    /// Per frontend, the backends it last asked to have active. A backend is
    /// written active while any frontend wants it so, terminating otherwise;
    /// the maps hold only that result, so `apply` needs this to recompute it.
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
        let mut refs: BTreeMap<u32, usize> = BTreeMap::new();
        let mut entries = 0;
        for s in programmed.services.values() {
            entries += usize::from(s.has_frontend) + s.slots.len();
            for id in s.slots.values() {
                *refs.entry(*id).or_default() += 1;
            }
        }
        let rev_nats = programmed
            .services
            .values()
            .map(|s| s.rev_nat)
            .filter(|r| *r != 0)
            .collect();
        // Until a full reconcile says otherwise, a service wants active what
        // is active in the maps.
        let active_ids: BTreeMap<u32, L4Addr> = programmed
            .backends
            .iter()
            .filter(|(_, b)| b.state == BackendState::Active)
            .map(|(a, b)| (b.id, *a))
            .collect();
        let wanted: Vec<(L4Addr, BTreeSet<L4Addr>)> = programmed
            .services
            .iter()
            .map(|(fe, s)| {
                let active = s
                    .slots
                    .values()
                    .filter_map(|id| active_ids.get(id).copied())
                    .collect();
                (*fe, active)
            })
            .collect();
        let mut r = Reconciler {
            programmed,
            backend_ids,
            refs,
            entries,
            rev_nats,
            next_backend_id: 1,
            next_rev_nat: 1,
            wants_active: BTreeMap::new(),
            active_users: BTreeMap::new(),
        };
        for (fe, active) in wanted {
            r.set_wants_active(fe, active);
        }
        r
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

    /// The state a backend must have: active if any service wants it active.
    fn wanted_state(&self, addr: &L4Addr) -> BackendState {
        if self.active_users.contains_key(addr) {
            BackendState::Active
        } else {
            BackendState::Terminating
        }
    }

    /// Records the programmed state of `fe` (None: gone), keeping the rev-NAT
    /// index set in step. Every change to `programmed.services` goes through here.
    fn set_service(&mut self, fe: L4Addr, svc: Option<ProgrammedService>) {
        if let Some(old) = self.programmed.services.remove(&fe) {
            self.rev_nats.remove(&old.rev_nat);
            self.entries -= usize::from(old.has_frontend) + old.slots.len();
            for id in old.slots.values() {
                if let Some(n) = self.refs.get_mut(id) {
                    *n -= 1;
                    if *n == 0 {
                        self.refs.remove(id);
                    }
                }
            }
        }
        if let Some(new) = svc {
            if new.rev_nat != 0 {
                self.rev_nats.insert(new.rev_nat);
            }
            self.entries += usize::from(new.has_frontend) + new.slots.len();
            for id in new.slots.values() {
                *self.refs.entry(*id).or_default() += 1;
            }
            self.programmed.services.insert(fe, new);
        }
    }

    /// Applies changes to some frontends, leaving every other one as it is.
    /// Removals go first (they free room), then upserts in name order. Cost is
    /// in the size of the change, plus a scan of slots for backend clean-up.
    pub fn apply<M: LbMapWriter>(&mut self, changes: &[Change], maps: &mut M) -> Report {
        let mut report = Report::default();
        let mut upserts: Vec<&DesiredService> = Vec::new();
        let mut touched_backends: BTreeSet<u32> = BTreeSet::new();
        // Backends whose wanted state may have changed.
        let mut restate: BTreeSet<L4Addr> = BTreeSet::new();
        for c in changes {
            if let Change::Remove(fe) = c {
                if let Some(s) = self.programmed.services.get(fe) {
                    touched_backends.extend(s.slots.values().copied());
                    match self.remove_service(fe, maps) {
                        Ok(()) => {
                            report.services_removed += 1;
                            restate.extend(self.set_wants_active(*fe, BTreeSet::new()));
                        }
                        Err(e) => report.errors.push(format!("removing service {fe}: {e}")),
                    }
                }
            } else if let Change::Upsert(d) = c {
                upserts.push(d);
            }
        }
        upserts.sort_by(|a, b| a.name.cmp(&b.name).then(a.frontend.cmp(&b.frontend)));
        let cap = maps.capacity();
        for d in upserts {
            let list = dedup_backends(&d.backends);
            let old = self.programmed.services.get(&d.frontend);
            let old_entries = old.map_or(0, |s| usize::from(s.has_frontend) + s.slots.len());
            let entries = self.entries;
            let new_backends = list
                .iter()
                .filter(|(a, _)| !self.programmed.backends.contains_key(a))
                .count();
            let new_rev_nat = usize::from(old.is_none_or(|s| s.rev_nat == 0));
            if list.len() > u16::MAX as usize {
                report.errors.push(format!(
                    "service {} ({}): {} backends, at most {} fit a service",
                    d.name,
                    d.frontend,
                    list.len(),
                    u16::MAX
                ));
                continue;
            }
            if entries - old_entries + 1 + list.len() > cap.services
                || self.programmed.backends.len() + new_backends > cap.backends
                || self.rev_nats.len() + new_rev_nat > cap.rev_nat.min(u16::MAX as usize)
            {
                report.errors.push(format!(
                    "service {} ({}): maps full (lb4_services needs {} entries, {} of {} in use; \
                     lb4_backends {} more, {} of {} in use); {}",
                    d.name,
                    d.frontend,
                    1 + list.len(),
                    entries,
                    cap.services,
                    new_backends,
                    self.programmed.backends.len(),
                    cap.backends,
                    if old.is_some() {
                        "kept as it was"
                    } else {
                        "not programmed"
                    }
                ));
                continue;
            }
            if let Some(s) = old {
                touched_backends.extend(s.slots.values().copied());
            }
            let active = list
                .iter()
                .filter(|(_, s)| *s == BackendState::Active)
                .map(|(a, _)| *a)
                .collect();
            restate.extend(self.set_wants_active(d.frontend, active));
            let mut failed = false;
            for (addr, _) in &list {
                // A backend shared with another service stays active while any
                // service has it active.
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
                    list.iter()
                        .filter_map(|(a, _)| self.programmed.backends.get(a).map(|b| b.id)),
                );
            }
        }
        // Backends that lost a slot in this change and are named by none now.
        let unnamed: Vec<u32> = touched_backends
            .into_iter()
            .filter(|id| !self.refs.contains_key(id))
            .collect();
        self.delete_backends(unnamed, maps, &mut report);
        // Backends that stay but that a service stopped (or started) wanting
        // active, e.g. the last service with it active went.
        for addr in restate {
            if self.programmed.backends.contains_key(&addr) {
                let state = self.wanted_state(&addr);
                if let Err(e) = self.put_backend(&addr, state, maps) {
                    report.errors.push(format!("backend {addr}: {e}"));
                }
            }
        }
        report
    }

    pub fn programmed(&self) -> &Programmed {
        &self.programmed
    }

    pub fn reconcile<M: LbMapWriter>(
        &mut self,
        desired: &[DesiredService],
        maps: &mut M,
    ) -> Report {
        let mut report = Report::default();
        let desired = self.admit(desired, maps.capacity(), &mut report);
        self.wants_active.clear();
        self.active_users.clear();
        for (fe, svc) in &desired {
            let active = svc
                .backends
                .iter()
                .filter(|(_, s)| *s == BackendState::Active)
                .map(|(a, _)| *a)
                .collect();
            self.set_wants_active(*fe, active);
        }

        // 1. Services no longer wanted: frontend, slots, reverse NAT.
        let gone: Vec<L4Addr> = self
            .programmed
            .services
            .keys()
            .filter(|fe| !desired.contains_key(*fe))
            .copied()
            .collect();
        for fe in gone {
            match self.remove_service(&fe, maps) {
                Ok(()) => report.services_removed += 1,
                Err(e) => report.errors.push(format!("removing service {fe}: {e}")),
            }
        }

        // 2. Backends the wanted services need, before any slot names them.
        let mut wanted_backends: BTreeMap<L4Addr, BackendState> = BTreeMap::new();
        for svc in desired.values() {
            for (addr, state) in &svc.backends {
                let e = wanted_backends.entry(*addr).or_insert(*state);
                if *state == BackendState::Active {
                    *e = BackendState::Active;
                }
            }
        }
        let mut failed_backends = BTreeSet::new();
        for (addr, state) in &wanted_backends {
            match self.put_backend(addr, *state, maps) {
                Ok(true) => report.backends_added += 1,
                Ok(false) => {}
                Err(e) => {
                    report.errors.push(format!("backend {addr}: {e}"));
                    failed_backends.insert(*addr);
                }
            }
        }

        // 3. Each service: slots, frontend, then excess slots.
        for (fe, svc) in &desired {
            if let Some(missing) = svc
                .backends
                .iter()
                .find(|(a, _)| failed_backends.contains(a))
            {
                report.errors.push(format!(
                    "service {} ({fe}): backend {} could not be written; kept as it was",
                    svc.name, missing.0
                ));
                continue;
            }
            match self.write_service(svc, maps) {
                Ok(true) => report.services_written += 1,
                Ok(false) => {}
                Err(e) => report
                    .errors
                    .push(format!("service {} ({fe}): {e}; kept as it was", svc.name)),
            }
        }

        // 4. Backends no slot names any more.
        let unnamed: Vec<u32> = self
            .backend_ids
            .keys()
            .filter(|id| !self.refs.contains_key(id))
            .copied()
            .collect();
        self.delete_backends(unnamed, maps, &mut report);
        report
    }

    /// Drops desired services that clash or do not fit, with an error each. A
    /// dropped service that is already programmed stays as it is.
    fn admit(
        &self,
        desired: &[DesiredService],
        cap: Capacity,
        report: &mut Report,
    ) -> BTreeMap<L4Addr, DesiredService> {
        let mut sorted: Vec<&DesiredService> = desired.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name).then(a.frontend.cmp(&b.frontend)));

        let mut out: BTreeMap<L4Addr, DesiredService> = BTreeMap::new();
        let mut service_entries = 0usize;
        let mut backends: BTreeSet<L4Addr> = BTreeSet::new();
        for svc in sorted {
            if let Some(other) = out.get(&svc.frontend) {
                report.errors.push(format!(
                    "service {}: frontend {} is already taken by {}; ignored",
                    svc.name, svc.frontend, other.name
                ));
                continue;
            }
            let backends_list = dedup_backends(&svc.backends);
            let uniq: BTreeSet<L4Addr> = backends_list.iter().map(|(a, _)| *a).collect();
            let need_entries = 1 + backends_list.len();
            let new_backends = uniq.difference(&backends).count();
            if backends_list.len() > u16::MAX as usize {
                report.errors.push(format!(
                    "service {} ({}): {} backends, at most {} fit a service",
                    svc.name,
                    svc.frontend,
                    backends_list.len(),
                    u16::MAX
                ));
            } else if service_entries + need_entries > cap.services
                || backends.len() + new_backends > cap.backends
                || out.len() + 1 > cap.rev_nat.min(u16::MAX as usize)
            {
                report.errors.push(format!(
                    "service {} ({}): maps full (lb4_services needs {} more of {} entries, \
                     lb4_backends {} more of {}); not programmed",
                    svc.name, svc.frontend, need_entries, cap.services, new_backends, cap.backends
                ));
            } else {
                service_entries += need_entries;
                backends.extend(uniq);
                out.insert(
                    svc.frontend,
                    DesiredService {
                        backends: backends_list,
                        ..svc.clone()
                    },
                );
                continue;
            }
            // Not admitted: keep what is programmed for it, if anything. What
            // it keeps still takes room in the maps.
            if self.programmed.services.contains_key(&svc.frontend) {
                if let Some(keep) = self.as_desired(&svc.frontend, &svc.name) {
                    service_entries += 1 + keep.backends.len();
                    backends.extend(keep.backends.iter().map(|(a, _)| *a));
                    out.insert(svc.frontend, keep);
                }
            }
        }
        out
    }

    /// The programmed state of a service, expressed as a desired one.
    fn as_desired(&self, fe: &L4Addr, name: &str) -> Option<DesiredService> {
        let s = self.programmed.services.get(fe)?;
        let by_id: BTreeMap<u32, (L4Addr, BackendState)> = self
            .programmed
            .backends
            .iter()
            .map(|(a, b)| (b.id, (*a, b.state)))
            .collect();
        Some(DesiredService {
            name: name.to_string(),
            frontend: *fe,
            kind: Default::default(),
            backends: s
                .slot_list()
                .iter()
                .filter_map(|id| by_id.get(id).copied())
                .collect(),
        })
    }

    fn remove_service<M: LbMapWriter>(
        &mut self,
        fe: &L4Addr,
        maps: &mut M,
    ) -> Result<(), MapWriteError> {
        // Work on a copy and record it whatever happens, so the counts kept
        // by set_service follow every delete that went through.
        let mut s = self
            .programmed
            .services
            .get(fe)
            .cloned()
            .expect("caller checked");
        let result = (|| {
            if s.has_frontend {
                maps.del_service(&lb4_services::key(fe, 0))?;
                s.has_frontend = false;
                s.count = 0;
            }
            while let Some((&slot, _)) = s.slots.last_key_value() {
                maps.del_service(&lb4_services::key(fe, slot))?;
                s.slots.remove(&slot);
            }
            if s.rev_nat != 0 {
                maps.del_rev_nat(s.rev_nat)?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.set_service(*fe, None);
                Ok(())
            }
            Err(e) => {
                self.set_service(*fe, Some(s));
                Err(e)
            }
        }
    }

    /// Writes a backend if it is new or its state changed. Ok(true) if new.
    fn put_backend<M: LbMapWriter>(
        &mut self,
        addr: &L4Addr,
        state: BackendState,
        maps: &mut M,
    ) -> Result<bool, MapWriteError> {
        if let Some(b) = self.programmed.backends.get_mut(addr) {
            if b.state != state {
                maps.put_backend(b.id, &lb4_backends::value(addr, state))?;
                b.state = state;
            }
            return Ok(false);
        }
        let id = self.alloc_backend_id();
        maps.put_backend(id, &lb4_backends::value(addr, state))?;
        self.backend_ids.insert(id, *addr);
        self.programmed
            .backends
            .insert(*addr, ProgrammedBackend { id, state });
        Ok(true)
    }

    /// Deletes the backends with these ids. Callers pass only backends that no
    /// slot names any more.
    fn delete_backends<M: LbMapWriter>(
        &mut self,
        ids: Vec<u32>,
        maps: &mut M,
        report: &mut Report,
    ) {
        let doomed: Vec<(L4Addr, u32)> = ids
            .into_iter()
            .filter_map(|id| self.backend_ids.get(&id).map(|a| (*a, id)))
            .collect();
        for (addr, id) in doomed {
            match maps.del_backend(id) {
                Ok(()) => {
                    self.programmed.backends.remove(&addr);
                    self.backend_ids.remove(&id);
                    report.backends_removed += 1;
                }
                Err(e) => report.errors.push(format!("removing backend {addr}: {e}")),
            }
        }
    }

    fn alloc_backend_id(&mut self) -> u32 {
        let mut id = self.next_backend_id.max(1);
        while self.backend_ids.contains_key(&id) {
            id = id.checked_add(1).unwrap_or(1);
        }
        self.next_backend_id = id.wrapping_add(1);
        id
    }

    /// A rev-NAT index no service holds. Reserved right away, so a second
    /// allocation before the service is recorded cannot return it again.
    fn alloc_rev_nat(&mut self) -> u16 {
        let mut idx = self.next_rev_nat.max(1);
        while self.rev_nats.contains(&idx) {
            idx = idx.checked_add(1).unwrap_or(1);
        }
        self.next_rev_nat = idx.wrapping_add(1);
        idx
    }

    /// Brings one service to its desired state. Ok(true) if anything was written.
    fn write_service<M: LbMapWriter>(
        &mut self,
        svc: &DesiredService,
        maps: &mut M,
    ) -> Result<bool, MapWriteError> {
        let fe = svc.frontend;
        let ids: Vec<u32> = svc
            .backends
            .iter()
            .map(|(a, _)| self.programmed.backends[a].id)
            .collect();
        let flags = svc.kind.flags();

        let old = self
            .programmed
            .services
            .get(&fe)
            .cloned()
            .unwrap_or(ProgrammedService {
                rev_nat: 0,
                flags: 0,
                has_frontend: false,
                count: 0,
                slots: BTreeMap::new(),
            });
        let rev_nat = if old.rev_nat != 0 {
            old.rev_nat
        } else {
            self.alloc_rev_nat()
        };
        let slots = assign_slots(&old.slot_list(), &ids);
        let count = slots.len() as u16;
        let unchanged = old.has_frontend
            && old.count == count
            && old.rev_nat == rev_nat
            && old.flags == flags
            && old.slots.len() == slots.len()
            && slots
                .iter()
                .enumerate()
                .all(|(i, id)| old.slots.get(&(i as u16 + 1)) == Some(id));
        if unchanged {
            return Ok(false);
        }

        // `cur` follows every write that went through, so on failure the
        // picture stays exact and the next reconcile finishes the job.
        let mut cur = old.clone();
        let mut frontend_written = false;
        let result = (|| {
            if cur.rev_nat != rev_nat {
                maps.put_rev_nat(rev_nat, &lb4_reverse_nat::value(&fe))?;
                cur.rev_nat = rev_nat;
            }
            for (i, id) in slots.iter().enumerate() {
                let slot = i as u16 + 1;
                if old.slots.get(&slot) != Some(id) || old.rev_nat != rev_nat {
                    let v = lb4_services::slot_value(*id, rev_nat);
                    maps.put_service(&lb4_services::key(&fe, slot), &v)?;
                    cur.slots.insert(slot, *id);
                }
            }
            let v = lb4_services::frontend_value(count, rev_nat, flags);
            maps.put_service(&lb4_services::key(&fe, 0), &v)?;
            cur.has_frontend = true;
            cur.count = count;
            cur.flags = flags;
            frontend_written = true;
            // Excluded, not count + 1: count may be u16::MAX.
            let excess: Vec<u16> = cur
                .slots
                .range((Excluded(count), Unbounded))
                .map(|(s, _)| *s)
                .collect();
            for slot in excess {
                maps.del_service(&lb4_services::key(&fe, slot))?;
                cur.slots.remove(&slot);
            }
            Ok(())
        })();

        if let Err(e) = result {
            // Nothing became visible unless the frontend was written: take back
            // slots past the old count and a reverse-NAT entry nobody uses.
            if !frontend_written {
                let old_count = old.slots.len() as u16;
                let extra: Vec<u16> = cur
                    .slots
                    .range((Excluded(old_count), Unbounded))
                    .map(|(s, _)| *s)
                    .collect();
                for slot in extra {
                    if maps.del_service(&lb4_services::key(&fe, slot)).is_ok() {
                        cur.slots.remove(&slot);
                    }
                }
                if !cur.has_frontend && cur.slots.is_empty() && old.rev_nat != rev_nat {
                    if maps.del_rev_nat(rev_nat).is_ok() {
                        cur.rev_nat = old.rev_nat;
                    }
                }
            }
            if cur.has_frontend || !cur.slots.is_empty() || cur.rev_nat != 0 {
                self.set_service(fe, Some(cur));
            } else {
                self.set_service(fe, None);
            }
            return Err(e);
        }
        self.set_service(fe, Some(cur));
        Ok(true)
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

/// Slot contents for a service whose backends become `new`, starting from `old`:
/// a backend that stays keeps its slot, newcomers fill the holes first, and the
/// last slots move into holes that remain, so the result is exactly `new`
/// (deduplicated) in 1..=len.
pub fn assign_slots(old: &[u32], new: &[u32]) -> Vec<u32> {
    let mut seen = BTreeSet::new();
    let new: Vec<u32> = new.iter().copied().filter(|id| seen.insert(*id)).collect();
    let wanted: BTreeSet<u32> = new.iter().copied().collect();
    let mut placed = BTreeSet::new();
    let mut slots: Vec<Option<u32>> = old
        .iter()
        .map(|id| (wanted.contains(id) && placed.insert(*id)).then_some(*id))
        .collect();
    let mut newcomers = new.iter().copied().filter(|id| !placed.contains(id));
    for s in slots.iter_mut().filter(|s| s.is_none()) {
        match newcomers.next() {
            Some(id) => *s = Some(id),
            None => break,
        }
    }
    slots.extend(newcomers.map(Some));
    // Fill remaining holes from the tail.
    let mut i = 0;
    while i < slots.len() {
        if slots[i].is_none() {
            match slots.pop() {
                Some(Some(last)) => slots[i] = Some(last),
                Some(None) => continue,
                None => break,
            }
        }
        i += 1;
    }
    slots.into_iter().flatten().collect()
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
