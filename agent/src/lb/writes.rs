//! The write-order contract: how one service or backend is brought to a new
//! state in the maps. A connect() may run between any two writes, so every
//! intermediate state must be one the datapath can serve:
//! - a new or changed service: its backends first (the caller), then its
//!   reverse-NAT entry, then an affinity-match entry for every backend of the
//!   scope it will be served from, then its internal scope if it has two
//!   (slots, slot 0, slots past the new count), then its external slots, then
//!   its external frontend (slot 0, which carries the count and the
//!   two-scopes flag), then the external slots past the new count, then an
//!   internal scope it no longer has (slot 0 first), and last the match
//!   entries of backends it dropped;
//! - a removed service: external frontend first, then its slots, then the
//!   internal scope the same way, then its match entries, then its
//!   reverse-NAT entry;
//! - a backend is deleted only once no slot names it (the caller).
//!
//! The datapath serves a two-scope service from its internal scope, so the
//! match entries (which say "this backend is one of the service's") follow
//! that scope; a one-scope service's follow its only one.
//!
//! Every function follows each write that went through in the reconciler's
//! picture, so after a failure the picture is exact and the next reconcile
//! finishes the job.

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::Bound::{Excluded, Unbounded},
};

use super::{
    programmed::{ProgrammedBackend, ProgrammedService},
    reconcile::{Reconciler, Report},
    slots::assign_slots,
};
use crate::{
    maps::{
        lb4_backends, lb4_reverse_nat,
        lb4_services::{self, Head, Scope},
        LbMapWriter, MapWriteError,
    },
    model::{BackendState, DesiredService, L4Addr},
};

/// Whether `slots` holds exactly `want` in slots 1..=len.
fn same_slots(slots: &BTreeMap<u16, u32>, want: &[u32]) -> bool {
    slots.len() == want.len()
        && want
            .iter()
            .enumerate()
            .all(|(i, id)| slots.get(&(i as u16 + 1)) == Some(id))
}

impl Reconciler {
    /// Removes a service from the maps.
    pub(super) fn remove_service<M: LbMapWriter>(
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
            Self::remove_internal(fe, &mut s, maps)?;
            while let Some(&id) = s.matches.first() {
                maps.del_affinity_match(id, s.rev_nat)?;
                s.matches.remove(&id);
            }
            if s.rev_nat != 0 {
                maps.del_rev_nat(s.rev_nat)?;
                s.rev_nat = 0;
            }
            Ok(())
        })();
        self.set_service(*fe, Some(s));
        result
    }

    /// Removes the internal scope of `s` (slot 0 first, so nothing counts on
    /// the slots being deleted), following each delete in `s`.
    fn remove_internal<M: LbMapWriter>(
        fe: &L4Addr,
        s: &mut ProgrammedService,
        maps: &mut M,
    ) -> Result<(), MapWriteError> {
        if s.internal.has_frontend {
            maps.del_service(&lb4_services::key_in(fe, Scope::Internal, 0))?;
            s.internal.has_frontend = false;
            s.internal.count = 0;
        }
        while let Some((&slot, _)) = s.internal.slots.last_key_value() {
            maps.del_service(&lb4_services::key_in(fe, Scope::Internal, slot))?;
            s.internal.slots.remove(&slot);
        }
        Ok(())
    }

    /// Writes a backend if it is new or its state changed. Ok(true) if new.
    pub(super) fn put_backend<M: LbMapWriter>(
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

    /// Deletes the backends with these ids that no slot names any more.
    pub(super) fn delete_unnamed_backends<M: LbMapWriter>(
        &mut self,
        ids: impl IntoIterator<Item = u32>,
        maps: &mut M,
        report: &mut Report,
    ) {
        let doomed: Vec<(L4Addr, u32)> = ids
            .into_iter()
            .filter(|id| !self.refs.contains_key(id))
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

    /// Brings one service to its desired state; its backends must be in the
    /// maps already. Ok(true) if anything was written.
    pub(super) fn write_service<M: LbMapWriter>(
        &mut self,
        svc: &DesiredService,
        maps: &mut M,
    ) -> Result<bool, MapWriteError> {
        let fe = svc.frontend;
        let id_of = |a: &L4Addr| self.programmed.backends[a].id;
        let ids: Vec<u32> = svc.backends.iter().map(|(a, _)| id_of(a)).collect();
        let int_ids: Option<Vec<u32>> = svc
            .internal
            .as_ref()
            .map(|v| v.iter().map(|(a, _)| id_of(a)).collect());
        let head = Head::of(svc);

        let old = self
            .programmed
            .services
            .get(&fe)
            .cloned()
            .unwrap_or_default();
        let rev_nat = if old.rev_nat != 0 {
            old.rev_nat
        } else {
            self.alloc_rev_nat()
        };
        let slots = assign_slots(&old.slot_list(), &ids);
        let count = slots.len() as u16;
        let int_slots = int_ids
            .as_ref()
            .map(|i| assign_slots(&old.internal.slot_list(), i));
        let int_count = int_slots.as_ref().map_or(0, |s| s.len() as u16);
        // The scope connections are served from names the match entries.
        let wanted_matches: BTreeSet<u32> = int_slots
            .as_ref()
            .unwrap_or(&slots)
            .iter()
            .copied()
            .collect();
        let internal_unchanged = match &int_slots {
            Some(int) => {
                old.internal.has_frontend
                    && old.internal.count == int_count
                    && same_slots(&old.internal.slots, int)
            }
            None => old.internal.is_empty(),
        };
        let unchanged = old.has_frontend
            && old.count == count
            && old.rev_nat == rev_nat
            && old.head == head
            && old.matches == wanted_matches
            && same_slots(&old.slots, &slots)
            && internal_unchanged;
        if unchanged {
            return Ok(false);
        }

        // `cur` follows every write that went through.
        let mut cur = old.clone();
        let mut frontend_written = false;
        let result = (|| {
            if cur.rev_nat != rev_nat {
                maps.put_rev_nat(rev_nat, &lb4_reverse_nat::value(&fe))?;
                cur.rev_nat = rev_nat;
                crate::failpoint::hit("after-rev-nat");
            }
            // A service gaining its internal scope is served from its
            // external slots until the flag is written: those need their
            // entries until then too.
            let served_until_flag: BTreeSet<u32> =
                if int_slots.is_some() && !(old.has_frontend && old.head.two_scopes()) {
                    slots.iter().copied().collect()
                } else {
                    BTreeSet::new()
                };
            for id in wanted_matches.union(&served_until_flag) {
                if !old.matches.contains(id) {
                    maps.put_affinity_match(*id, rev_nat)?;
                    cur.matches.insert(*id);
                }
            }
            if let Some(int) = &int_slots {
                // The whole internal scope before the flag that sends
                // connections there.
                for (i, id) in int.iter().enumerate() {
                    let slot = i as u16 + 1;
                    if old.internal.slots.get(&slot) != Some(id) || old.rev_nat != rev_nat {
                        let v = lb4_services::slot_value(*id, rev_nat);
                        maps.put_service(&lb4_services::key_in(&fe, Scope::Internal, slot), &v)?;
                        cur.internal.slots.insert(slot, *id);
                    }
                }
                if !(old.internal.has_frontend
                    && old.internal.count == int_count
                    && old.head == head
                    && old.rev_nat == rev_nat)
                {
                    let v = lb4_services::frontend_value(int_count, rev_nat, head);
                    maps.put_service(&lb4_services::key_in(&fe, Scope::Internal, 0), &v)?;
                    cur.internal.has_frontend = true;
                    cur.internal.count = int_count;
                    if !cur.has_frontend {
                        cur.head = head;
                    }
                }
                let excess: Vec<u16> = cur
                    .internal
                    .slots
                    .range((Excluded(int_count), Unbounded))
                    .map(|(s, _)| *s)
                    .collect();
                for slot in excess {
                    maps.del_service(&lb4_services::key_in(&fe, Scope::Internal, slot))?;
                    cur.internal.slots.remove(&slot);
                }
            }
            for (i, id) in slots.iter().enumerate() {
                let slot = i as u16 + 1;
                if old.slots.get(&slot) != Some(id) || old.rev_nat != rev_nat {
                    let v = lb4_services::slot_value(*id, rev_nat);
                    maps.put_service(&lb4_services::key(&fe, slot), &v)?;
                    cur.slots.insert(slot, *id);
                }
            }
            let v = lb4_services::frontend_value(count, rev_nat, head);
            maps.put_service(&lb4_services::key(&fe, 0), &v)?;
            cur.has_frontend = true;
            cur.count = count;
            cur.head = head;
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
            if int_slots.is_none() {
                // The flag is gone from slot 0: nothing looks here any more.
                Self::remove_internal(&fe, &mut cur, maps)?;
            }
            // Only now has no served slot the dropped backends: their sockets
            // move.
            let dropped: Vec<u32> = cur.matches.difference(&wanted_matches).copied().collect();
            for id in dropped {
                maps.del_affinity_match(id, rev_nat)?;
                cur.matches.remove(&id);
            }
            Ok(())
        })();

        if let Err(e) = result {
            // Nothing became visible unless the frontend was written: take back
            // slots past the old count, an internal scope no flag points to,
            // match entries of backends no slot names, and a reverse-NAT entry
            // nobody uses.
            if !frontend_written {
                self.take_back_unseen(&fe, &old, rev_nat, &mut cur, maps);
            }
            self.set_service(fe, Some(cur));
            return Err(e);
        }
        self.set_service(fe, Some(cur));
        Ok(true)
    }

    /// After a failed write that never reached the external frontend: undo
    /// what no count or flag covers, as far as the maps let us.
    fn take_back_unseen<M: LbMapWriter>(
        &mut self,
        fe: &L4Addr,
        old: &ProgrammedService,
        rev_nat: u16,
        cur: &mut ProgrammedService,
        maps: &mut M,
    ) {
        let old_count = old.slots.len() as u16;
        let extra: Vec<u16> = cur
            .slots
            .range((Excluded(old_count), Unbounded))
            .map(|(s, _)| *s)
            .collect();
        for slot in extra {
            if maps.del_service(&lb4_services::key(fe, slot)).is_ok() {
                cur.slots.remove(&slot);
            }
        }
        // External slot 0 is as it was: the internal scope is looked at only
        // if it already had the flag.
        if old.has_frontend && old.head.two_scopes() {
            let int_count = cur.internal.count;
            let extra: Vec<u16> = cur
                .internal
                .slots
                .range((Excluded(int_count), Unbounded))
                .map(|(s, _)| *s)
                .collect();
            for slot in extra {
                if maps
                    .del_service(&lb4_services::key_in(fe, Scope::Internal, slot))
                    .is_ok()
                {
                    cur.internal.slots.remove(&slot);
                }
            }
        } else {
            let _ = Self::remove_internal(fe, cur, maps);
            if !cur.has_frontend && cur.internal.is_empty() {
                // No slot 0 left to carry a head (what a read-back finds).
                cur.head = Head::default();
            }
        }
        let named: BTreeSet<u32> = cur.slot_ids().collect();
        let unnamed: Vec<u32> = cur
            .matches
            .difference(&old.matches)
            .filter(|id| !named.contains(id))
            .copied()
            .collect();
        for id in unnamed {
            if maps.del_affinity_match(id, rev_nat).is_ok() {
                cur.matches.remove(&id);
            }
        }
        if !cur.has_frontend
            && cur.slots.is_empty()
            && cur.internal.is_empty()
            && cur.matches.is_empty()
            && old.rev_nat != rev_nat
            && maps.del_rev_nat(rev_nat).is_ok()
        {
            cur.rev_nat = old.rev_nat;
        }
    }
}
