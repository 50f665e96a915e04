//! The write-order contract: how one service or backend is brought to a new
//! state in the maps. A connect() may run between any two writes, so every
//! intermediate state must be one the datapath can serve:
//! - a new or changed service: its backends first (the caller), then its
//!   reverse-NAT entry, then an affinity-match entry for every backend it gets,
//!   then its slots, then its frontend (slot 0, which carries the count), then
//!   the slots past the new count, and last the match entries of backends it
//!   dropped;
//! - a removed service: frontend first, then its slots, then its match
//!   entries, then its reverse-NAT entry;
//! - a backend is deleted only once no slot names it (the caller).
//!
//! Every function follows each write that went through in the reconciler's
//! picture, so after a failure the picture is exact and the next reconcile
//! finishes the job.

use std::ops::Bound::{Excluded, Unbounded};

use super::{
    programmed::{ProgrammedBackend, ProgrammedService},
    reconcile::{Reconciler, Report},
    slots::assign_slots,
};
use crate::{
    maps::{lb4_backends, lb4_reverse_nat, lb4_services, LbMapWriter, MapWriteError},
    model::{BackendState, DesiredService, L4Addr},
};

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
            .unwrap_or_default();
        let rev_nat = if old.rev_nat != 0 {
            old.rev_nat
        } else {
            self.alloc_rev_nat()
        };
        let slots = assign_slots(&old.slot_list(), &ids);
        let count = slots.len() as u16;
        let wanted_matches: std::collections::BTreeSet<u32> = slots.iter().copied().collect();
        let unchanged = old.has_frontend
            && old.count == count
            && old.rev_nat == rev_nat
            && old.flags == flags
            && old.matches == wanted_matches
            && old.slots.len() == slots.len()
            && slots
                .iter()
                .enumerate()
                .all(|(i, id)| old.slots.get(&(i as u16 + 1)) == Some(id));
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
            for id in wanted_matches.difference(&old.matches) {
                maps.put_affinity_match(*id, rev_nat)?;
                cur.matches.insert(*id);
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
            // Only now has no slot the dropped backends: their sockets move.
            let dropped: Vec<u32> = cur.matches.difference(&wanted_matches).copied().collect();
            for id in dropped {
                maps.del_affinity_match(id, rev_nat)?;
                cur.matches.remove(&id);
            }
            Ok(())
        })();

        if let Err(e) = result {
            // Nothing became visible unless the frontend was written: take back
            // slots past the old count, match entries of backends no slot
            // names, and a reverse-NAT entry nobody uses.
            if !frontend_written {
                self.take_back_unseen(&fe, &old, rev_nat, &mut cur, maps);
            }
            self.set_service(fe, Some(cur));
            return Err(e);
        }
        self.set_service(fe, Some(cur));
        Ok(true)
    }

    /// After a failed write that never reached the frontend: undo what no
    /// count covers, as far as the maps let us.
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
        let named: std::collections::BTreeSet<u32> = cur.slots.values().copied().collect();
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
            && cur.matches.is_empty()
            && old.rev_nat != rev_nat
            && maps.del_rev_nat(rev_nat).is_ok()
        {
            cur.rev_nat = old.rev_nat;
        }
    }
}
