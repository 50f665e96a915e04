//! The picture of what the maps hold, as the reconciler believes it, and how
//! it is read back from the maps when an agent starts.

use std::collections::{BTreeMap, BTreeSet};

use lash_common::{Lb4Backend, Lb4Key, Lb4Service};

use crate::{
    maps::{
        lb4_backends,
        lb4_services::{self, Head, Scope},
    },
    model::{BackendState, L4Addr},
};

/// What the maps hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Programmed {
    pub backends: BTreeMap<L4Addr, ProgrammedBackend>,
    pub services: BTreeMap<L4Addr, ProgrammedService>,
    /// Reverse-NAT indexes no service names: left by a crash between writing
    /// a new service's reverse-NAT entry and its slots. The next full reconcile
    /// deletes them.
    pub orphan_rev_nats: BTreeSet<u16>,
    /// Affinity-match entries (backend id, rev-NAT index) of no known service.
    pub orphan_matches: BTreeSet<(u32, u16)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgrammedBackend {
    pub id: u32,
    pub state: BackendState,
}

/// What the maps hold of one service: its external scope (the only one of
/// most services) in the flat fields, its internal scope in `internal`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgrammedService {
    /// Host order; 0 when no reverse-NAT entry is known.
    pub rev_nat: u16,
    /// Flags and affinity timeout of slot 0 (both scopes carry the same).
    pub head: Head,
    /// Whether slot 0 exists. False for leftovers of an interrupted write.
    pub has_frontend: bool,
    /// The count slot 0 carries (0 without it). After an interrupted write it
    /// can differ from the number of slots.
    pub count: u16,
    /// slot (1..) -> backend id, every slot entry present in the map.
    pub slots: BTreeMap<u16, u32>,
    /// The internal scope, empty unless the service has two scopes (or an
    /// interrupted write left some of one).
    pub internal: ScopeSlots,
    /// Backend ids with an affinity-match entry under `rev_nat`.
    pub matches: BTreeSet<u32>,
}

/// The entries of the internal scope.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeSlots {
    pub has_frontend: bool,
    pub count: u16,
    pub slots: BTreeMap<u16, u32>,
}

impl ScopeSlots {
    pub fn slot_list(&self) -> Vec<u32> {
        slot_list(&self.slots)
    }

    pub fn entries(&self) -> usize {
        usize::from(self.has_frontend) + self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        !self.has_frontend && self.slots.is_empty()
    }
}

/// The backend ids of slots 1..=n, up to the first hole.
fn slot_list(slots: &BTreeMap<u16, u32>) -> Vec<u32> {
    let count = slots.len() as u16;
    (1..=count).map_while(|s| slots.get(&s).copied()).collect()
}

impl ProgrammedService {
    /// The backend ids of the external scope's slots 1..=n, up to the first hole.
    pub fn slot_list(&self) -> Vec<u32> {
        slot_list(&self.slots)
    }

    /// lb4_services entries this service takes, both scopes.
    pub fn entries(&self) -> usize {
        usize::from(self.has_frontend) + self.slots.len() + self.internal.entries()
    }

    /// Every backend id a slot of either scope names (with repeats).
    pub fn slot_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .values()
            .chain(self.internal.slots.values())
            .copied()
    }

    /// Whether nothing of it is left in any map.
    pub fn is_gone(&self) -> bool {
        !self.has_frontend
            && self.slots.is_empty()
            && self.internal.is_empty()
            && self.matches.is_empty()
            && self.rev_nat == 0
    }
}

impl Programmed {
    /// Rebuilds the picture from map contents (agent start). Entries we cannot
    /// read (foreign protocols, states we never write) are left alone;
    /// reverse-NAT and affinity-match entries of no service are noted as
    /// orphans. Reverse-NAT indexes and match indexes are in host order.
    pub fn from_entries(
        services: impl IntoIterator<Item = (Lb4Key, Lb4Service)>,
        backends: impl IntoIterator<Item = (u32, Lb4Backend)>,
        rev_nats: impl IntoIterator<Item = u16>,
        matches: impl IntoIterator<Item = (u32, u16)>,
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
            let (Some(fe), Some(scope)) =
                (lb4_services::frontend_of(&k), lb4_services::scope_of(&k))
            else {
                continue;
            };
            let s = p.services.entry(fe).or_default();
            if s.rev_nat == 0 || (k.backend_slot == 0 && scope == Scope::External) {
                s.rev_nat = lb4_services::rev_nat_of(&v);
            }
            match (scope, k.backend_slot) {
                (Scope::External, 0) => {
                    s.has_frontend = true;
                    s.count = v.count;
                    s.head = Head::read(&v);
                }
                (Scope::External, slot) => {
                    s.slots.insert(slot, v.backend_id);
                }
                (Scope::Internal, 0) => {
                    s.internal.has_frontend = true;
                    s.internal.count = v.count;
                    if !s.has_frontend {
                        s.head = Head::read(&v);
                    }
                }
                (Scope::Internal, slot) => {
                    s.internal.slots.insert(slot, v.backend_id);
                }
            }
        }
        let by_rev_nat: BTreeMap<u16, L4Addr> = p
            .services
            .iter()
            .filter(|(_, s)| s.rev_nat != 0)
            .map(|(fe, s)| (s.rev_nat, *fe))
            .collect();
        p.orphan_rev_nats = rev_nats
            .into_iter()
            .filter(|r| !by_rev_nat.contains_key(r))
            .collect();
        for (id, rn) in matches {
            match by_rev_nat.get(&rn) {
                Some(fe) => {
                    p.services
                        .get_mut(fe)
                        .expect("indexed above")
                        .matches
                        .insert(id);
                }
                None => {
                    p.orphan_matches.insert((id, rn));
                }
            }
        }
        p
    }
}
