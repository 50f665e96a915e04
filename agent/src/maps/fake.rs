//! An in-memory fake of the maps the reconciler writes, for tests. It behaves
//! like the kernel on a full hash map (E2BIG for a new key), can fail chosen
//! writes, and checks after every single write what a concurrent connect()
//! relies on, so a wrong write order shows up even when the end state is right.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
};

use lash_common::{Lb4Backend, Lb4Key, Lb4ReverseNat, Lb4Service};

use super::{
    lb4_backends, lb4_reverse_nat,
    lb4_services::{self, Head, Scope},
    Capacity, LbMapWriter, MapWriteError,
};
use crate::model::L4Addr;

/// One attempted write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A slot of the external scope (the only one of most services).
    PutService(L4Addr, u16),
    DelService(L4Addr, u16),
    /// A slot of the internal scope.
    PutInternal(L4Addr, u16),
    DelInternal(L4Addr, u16),
    PutBackend(u32, L4Addr),
    DelBackend(u32),
    PutRevNat(u16),
    DelRevNat(u16),
    PutMatch(u32, u16),
    DelMatch(u32, u16),
}

impl Op {
    pub fn frontend(&self) -> Option<L4Addr> {
        match self {
            Op::PutService(fe, _)
            | Op::DelService(fe, _)
            | Op::PutInternal(fe, _)
            | Op::DelInternal(fe, _) => Some(*fe),
            _ => None,
        }
    }
}

pub type FailRule = Box<dyn FnMut(&Op) -> bool + Send>;

/// lb4_services, lb4_backends and lb4_reverse_nat as BTreeMaps, with the
/// kernel's behaviour on a full hash map (E2BIG for a new key) and injectable
/// failures.
pub struct FakeMaps {
    pub services: BTreeMap<Lb4Key, Lb4Service>,
    pub backends: BTreeMap<u32, Lb4Backend>,
    /// Keyed by the host-order index, as the trait passes it.
    pub rev_nat: BTreeMap<u16, Lb4ReverseNat>,
    /// lb4_affinity_match as (backend id, host-order rev-NAT index).
    pub matches: BTreeSet<(u32, u16)>,
    pub cap: Capacity,
    /// Every write attempted, failed ones included.
    pub ops: Vec<Op>,
    /// The writes that failed.
    pub failed: Vec<Op>,
    /// Datapath invariant violations seen after any write.
    pub violations: Vec<String>,
    /// Makes a write fail (EIO) when it returns true.
    pub fail_if: Option<FailRule>,
    /// Check the invariant after every write (off for huge services).
    pub checking: bool,
}

fn io_err(map: &'static str, op: &'static str, errno: i32) -> MapWriteError {
    MapWriteError {
        map,
        op,
        source: io::Error::from_raw_os_error(errno),
    }
}

impl FakeMaps {
    pub fn new() -> Self {
        Self::with_capacity(1024, 1024, 1024)
    }

    pub fn with_capacity(services: usize, backends: usize, rev_nat: usize) -> Self {
        FakeMaps {
            services: BTreeMap::new(),
            backends: BTreeMap::new(),
            rev_nat: BTreeMap::new(),
            matches: BTreeSet::new(),
            cap: Capacity {
                services,
                backends,
                rev_nat,
                // Sized like lb4_services by --lb-map-max: one match per slot
                // always fits.
                affinity_match: services,
            },
            ops: Vec::new(),
            failed: Vec::new(),
            violations: Vec::new(),
            fail_if: None,
            checking: true,
        }
    }

    /// The first write matching `pred` fails; later ones go through.
    pub fn fail_once(&mut self, pred: impl Fn(&Op) -> bool + Send + 'static) {
        let mut fired = false;
        self.fail_if = Some(Box::new(move |op| {
            if !fired && pred(op) {
                fired = true;
                true
            } else {
                false
            }
        }));
    }

    /// Write number `n` (0-based, counted from now) fails; with `sticky`, every
    /// write after it fails too.
    pub fn fail_at(&mut self, n: usize, sticky: bool) {
        let mut seen = 0usize;
        self.fail_if = Some(Box::new(move |_| {
            let this = seen;
            seen += 1;
            this == n || (sticky && this > n)
        }));
    }

    pub fn heal(&mut self) {
        self.fail_if = None;
    }

    pub fn take_ops(&mut self) -> Vec<Op> {
        self.failed.clear();
        std::mem::take(&mut self.ops)
    }

    /// Logs a write and decides whether it fails.
    pub fn attempt(
        &mut self,
        op: Op,
        map: &'static str,
        what: &'static str,
    ) -> Result<(), MapWriteError> {
        self.ops.push(op.clone());
        if self.fail_if.as_mut().is_some_and(|f| f(&op)) {
            self.failed.push(op);
            return Err(io_err(map, what, libc::EIO));
        }
        Ok(())
    }

    /// What a connect() may rely on at any moment: a frontend (of either
    /// scope) with count n has slots 1..=n, each naming a backend that exists,
    /// and its reverse-NAT entry exists and names the frontend; a frontend
    /// flagged two-scopes has its internal scope.
    pub fn check_invariant(&mut self, after: &Op) {
        if !self.checking {
            return;
        }
        let mut problems = Vec::new();
        for (k, v) in &self.services {
            if k.backend_slot != 0 {
                continue;
            }
            let (Some(fe), Some(scope)) = (lb4_services::frontend_of(k), lb4_services::scope_of(k))
            else {
                problems.push(format!(
                    "frontend key with unknown protocol or scope: {k:?}"
                ));
                continue;
            };
            if scope == Scope::External
                && Head::read(v).two_scopes()
                && !self
                    .services
                    .contains_key(&lb4_services::key_in(&fe, Scope::Internal, 0))
            {
                problems.push(format!("{fe}: two scopes but no internal scope"));
            }
            // The scope connections are served from: the internal one of a
            // two-scope service.
            let served = match scope {
                Scope::Internal => true,
                Scope::External => !Head::read(v).two_scopes(),
            };
            for slot in 1..=v.count {
                match self.services.get(&lb4_services::key_in(&fe, scope, slot)) {
                    None => problems.push(format!(
                        "{fe} ({scope:?}): count {} but slot {slot} is missing",
                        v.count
                    )),
                    Some(s) if !self.backends.contains_key(&s.backend_id) => {
                        problems.push(format!(
                            "{fe} ({scope:?}): slot {slot} names backend {} which is not in lb4_backends",
                            s.backend_id
                        ))
                    }
                    // A UDP socket on this backend must keep it while it is
                    // one of the service's.
                    Some(s)
                        if served
                            && !self
                                .matches
                                .contains(&(s.backend_id, lb4_services::rev_nat_of(v))) =>
                    {
                        problems.push(format!(
                            "{fe} ({scope:?}): slot {slot} names backend {} without an affinity-match entry",
                            s.backend_id
                        ))
                    }
                    Some(_) => {}
                }
            }
            let rn = lb4_services::rev_nat_of(v);
            match self.rev_nat.get(&rn) {
                None => problems.push(format!("{fe}: rev_nat {rn} is not in lb4_reverse_nat")),
                Some(r) if lb4_reverse_nat::addr_of(r) != (fe.ip, fe.port) => problems.push(
                    format!("{fe}: rev_nat {rn} names {:?}", lb4_reverse_nat::addr_of(r)),
                ),
                Some(_) => {}
            }
        }
        let n = self.ops.len();
        self.violations.extend(
            problems
                .into_iter()
                .map(|p| format!("after write #{n} ({after:?}): {p}")),
        );
    }

    #[track_caller]
    pub fn assert_no_violations(&self) {
        assert!(
            self.violations.is_empty(),
            "datapath invariant violated:\n{}",
            self.violations.join("\n")
        );
    }

    /// The invariant plus what a completed reconcile leaves: no slot beyond a
    /// frontend's count, no slot without a frontend, slots carry their
    /// frontend's rev_nat, an internal scope only under a two-scopes flag and
    /// with the same head, and no backend or reverse-NAT entry nobody uses.
    #[track_caller]
    pub fn assert_clean(&self) {
        self.assert_no_violations();
        let mut counts = BTreeMap::new();
        for (k, v) in &self.services {
            if k.backend_slot == 0 {
                counts.insert(
                    (
                        lb4_services::frontend_of(k).unwrap(),
                        lb4_services::scope_of(k).unwrap(),
                    ),
                    (v.count, v.rev_nat_index, Head::read(v)),
                );
            }
        }
        for ((fe, scope), (_, rn, head)) in &counts {
            if *scope == Scope::Internal {
                let ext = counts.get(&(*fe, Scope::External));
                assert!(
                    ext.is_some_and(|(_, _, h)| h.two_scopes()),
                    "{fe}: an internal scope without two-scopes on the external one"
                );
                let (_, ext_rn, ext_head) = ext.unwrap();
                assert_eq!((rn, head), (ext_rn, ext_head), "{fe}: scopes disagree");
            }
        }
        let mut used_backends = BTreeSet::new();
        let mut used_rev_nat = BTreeSet::new();
        let mut used_matches = BTreeSet::new();
        for (k, v) in &self.services {
            let fe = lb4_services::frontend_of(k).unwrap();
            let scope = lb4_services::scope_of(k).unwrap();
            let (count, rn, head) = counts.get(&(fe, scope)).copied().unwrap_or_else(|| {
                panic!(
                    "{fe} ({scope:?}): slot {} without a frontend",
                    k.backend_slot
                )
            });
            let served = scope == Scope::Internal || !head.two_scopes();
            assert_eq!(v.rev_nat_index, rn, "{fe}: slot {} rev_nat", k.backend_slot);
            if k.backend_slot == 0 {
                used_rev_nat.insert(lb4_services::rev_nat_of(v));
            } else {
                assert!(
                    k.backend_slot <= count,
                    "{fe} ({scope:?}): slot {} beyond count {count}",
                    k.backend_slot
                );
                used_backends.insert(v.backend_id);
                if served {
                    used_matches.insert((v.backend_id, rn_host(rn)));
                }
            }
        }
        let backends: BTreeSet<u32> = self.backends.keys().copied().collect();
        assert_eq!(backends, used_backends, "backends nobody uses");
        let rev_nat: BTreeSet<u16> = self.rev_nat.keys().copied().collect();
        assert_eq!(rev_nat, used_rev_nat, "reverse-NAT entries nobody uses");
        assert_eq!(
            self.matches, used_matches,
            "affinity-match entries must be exactly the served scope's (backend, service) pairs"
        );
    }

    /// The service at `fe` as the datapath sees it (its external scope).
    pub fn view(&self, fe: &L4Addr) -> Option<View> {
        self.view_in(fe, Scope::External)
    }

    /// One scope of the service at `fe`.
    pub fn view_in(&self, fe: &L4Addr, scope: Scope) -> Option<View> {
        let v = self.services.get(&lb4_services::key_in(fe, scope, 0))?;
        let ids: Vec<u32> = (1..=v.count)
            .map(|s| self.services[&lb4_services::key_in(fe, scope, s)].backend_id)
            .collect();
        Some(View {
            count: v.count,
            rev_nat: lb4_services::rev_nat_of(v),
            head: Head::read(v),
            backends: ids
                .iter()
                .map(|id| lb4_backends::addr_of(&self.backends[id]).unwrap())
                .collect(),
            ids,
        })
    }

    /// Every slot key present for `fe`'s external scope, 0 included.
    pub fn slot_keys(&self, fe: &L4Addr) -> Vec<u16> {
        self.services
            .keys()
            .filter(|k| {
                lb4_services::frontend_of(k) == Some(*fe)
                    && lb4_services::scope_of(k) == Some(Scope::External)
            })
            .map(|k| k.backend_slot)
            .collect()
    }

    pub fn backend_id(&self, addr: &L4Addr) -> Option<u32> {
        self.backends
            .iter()
            .find(|(_, v)| lb4_backends::addr_of(v) == Some(*addr))
            .map(|(id, _)| *id)
    }

    /// Whether any slot of any service names backend `id`.
    pub fn slot_names(&self, id: u32) -> bool {
        self.services
            .iter()
            .any(|(k, v)| k.backend_slot != 0 && v.backend_id == id)
    }
}

/// A network-order rev-NAT index as the host-order one the trait passes.
fn rn_host(rn: u16) -> u16 {
    u16::from_be(rn)
}

fn put_limited<K: Ord + Copy, V: Copy>(
    map: &mut BTreeMap<K, V>,
    cap: usize,
    key: K,
    value: V,
    name: &'static str,
) -> Result<(), MapWriteError> {
    if !map.contains_key(&key) && map.len() >= cap {
        return Err(io_err(name, "update", libc::E2BIG));
    }
    map.insert(key, value);
    Ok(())
}

impl LbMapWriter for FakeMaps {
    fn put_service(&mut self, key: &Lb4Key, value: &Lb4Service) -> Result<(), MapWriteError> {
        let fe = lb4_services::frontend_of(key).expect("the reconciler writes TCP/UDP only");
        let op = match lb4_services::scope_of(key).expect("a scope we know") {
            Scope::External => Op::PutService(fe, key.backend_slot),
            Scope::Internal => Op::PutInternal(fe, key.backend_slot),
        };
        self.attempt(op.clone(), lash_common::maps::LB4_SERVICES.name, "update")?;
        let r = put_limited(
            &mut self.services,
            self.cap.services,
            *key,
            *value,
            lash_common::maps::LB4_SERVICES.name,
        );
        self.check_invariant(&op);
        r
    }
    fn del_service(&mut self, key: &Lb4Key) -> Result<(), MapWriteError> {
        let fe = lb4_services::frontend_of(key).expect("the reconciler writes TCP/UDP only");
        let op = match lb4_services::scope_of(key).expect("a scope we know") {
            Scope::External => Op::DelService(fe, key.backend_slot),
            Scope::Internal => Op::DelInternal(fe, key.backend_slot),
        };
        self.attempt(op.clone(), lash_common::maps::LB4_SERVICES.name, "delete")?;
        self.services.remove(key);
        self.check_invariant(&op);
        Ok(())
    }
    fn put_backend(&mut self, id: u32, value: &Lb4Backend) -> Result<(), MapWriteError> {
        assert_ne!(id, 0, "backend id 0 means 'no backend' in the datapath");
        let op = Op::PutBackend(id, lb4_backends::addr_of(value).expect("TCP/UDP"));
        self.attempt(op.clone(), lash_common::maps::LB4_BACKENDS.name, "update")?;
        let r = put_limited(
            &mut self.backends,
            self.cap.backends,
            id,
            *value,
            lash_common::maps::LB4_BACKENDS.name,
        );
        self.check_invariant(&op);
        r
    }
    fn del_backend(&mut self, id: u32) -> Result<(), MapWriteError> {
        let op = Op::DelBackend(id);
        self.attempt(op.clone(), lash_common::maps::LB4_BACKENDS.name, "delete")?;
        self.backends.remove(&id);
        self.check_invariant(&op);
        Ok(())
    }
    fn put_rev_nat(&mut self, index: u16, value: &Lb4ReverseNat) -> Result<(), MapWriteError> {
        assert_ne!(index, 0, "rev_nat index 0 means 'none'");
        let op = Op::PutRevNat(index);
        self.attempt(
            op.clone(),
            lash_common::maps::LB4_REVERSE_NAT.name,
            "update",
        )?;
        let r = put_limited(
            &mut self.rev_nat,
            self.cap.rev_nat,
            index,
            *value,
            lash_common::maps::LB4_REVERSE_NAT.name,
        );
        self.check_invariant(&op);
        r
    }
    fn del_rev_nat(&mut self, index: u16) -> Result<(), MapWriteError> {
        let op = Op::DelRevNat(index);
        self.attempt(
            op.clone(),
            lash_common::maps::LB4_REVERSE_NAT.name,
            "delete",
        )?;
        self.rev_nat.remove(&index);
        self.check_invariant(&op);
        Ok(())
    }
    fn put_affinity_match(&mut self, id: u32, index: u16) -> Result<(), MapWriteError> {
        let op = Op::PutMatch(id, index);
        let name = lash_common::maps::LB4_AFFINITY_MATCH.name;
        self.attempt(op.clone(), name, "update")?;
        let r = if !self.matches.contains(&(id, index))
            && self.matches.len() >= self.cap.affinity_match
        {
            Err(io_err(name, "update", libc::E2BIG))
        } else {
            self.matches.insert((id, index));
            Ok(())
        };
        self.check_invariant(&op);
        r
    }
    fn del_affinity_match(&mut self, id: u32, index: u16) -> Result<(), MapWriteError> {
        let op = Op::DelMatch(id, index);
        self.attempt(
            op.clone(),
            lash_common::maps::LB4_AFFINITY_MATCH.name,
            "delete",
        )?;
        self.matches.remove(&(id, index));
        self.check_invariant(&op);
        Ok(())
    }
    fn capacity(&self) -> Capacity {
        self.cap
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub count: u16,
    pub rev_nat: u16,
    pub head: Head,
    pub backends: Vec<L4Addr>,
    pub ids: Vec<u32>,
}
