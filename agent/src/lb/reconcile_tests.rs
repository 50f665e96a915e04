//! The reconciler against an in-memory fake of the maps it writes. After every
//! single write the fake checks what a concurrent connect() relies on, so a
//! wrong write order shows up as a violation even when the end state is right.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use super::{Reconciler, Report};
use crate::{
    lb::{programmed::Programmed, slots::assign_slots},
    maps::{
        fake::{FakeMaps, Op, View},
        lb4_backends, lb4_reverse_nat,
        lb4_services::{self, Scope},
    },
    model::{BackendState, Change, DesiredService, L4Addr, Proto, ServiceKind},
};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// What the reconciler would read back from these maps at start: the same
/// `from_entries` the pinned maps go through.
fn picture(maps: &FakeMaps) -> Programmed {
    Programmed::from_entries(
        maps.services.iter().map(|(k, v)| (*k, *v)),
        maps.backends.iter().map(|(k, v)| (*k, *v)),
        maps.rev_nat.keys().copied(),
        maps.matches.iter().copied(),
    )
}

/// Frontend 10.96.0.n:80/TCP.
fn fe(n: u8) -> L4Addr {
    L4Addr {
        ip: Ipv4Addr::new(10, 96, 0, n),
        port: 80,
        proto: Proto::Tcp,
    }
}

/// Backend 10.244.0.n:8080/TCP.
fn be(n: u8) -> L4Addr {
    L4Addr {
        ip: Ipv4Addr::new(10, 244, 0, n),
        port: 8080,
        proto: Proto::Tcp,
    }
}

fn bes(ns: &[u8]) -> Vec<L4Addr> {
    ns.iter().map(|n| be(*n)).collect()
}

/// Service "default/NAME" at `frontend` with active backends be(n) for n in `backends`.
fn svc(name: &str, frontend: L4Addr, backends: &[u8]) -> DesiredService {
    svc_at(name, frontend, &bes(backends))
}

fn svc_at(name: &str, frontend: L4Addr, backends: &[L4Addr]) -> DesiredService {
    DesiredService::plain(
        format!("default/{name}"),
        frontend,
        ServiceKind::ClusterIP,
        backends
            .iter()
            .map(|b| (*b, BackendState::Active))
            .collect(),
    )
}

fn fresh() -> (Reconciler, FakeMaps) {
    (Reconciler::new(Programmed::default()), FakeMaps::new())
}

/// Reconciles and checks the invariant held after every write.
#[track_caller]
fn reconcile(rec: &mut Reconciler, maps: &mut FakeMaps, desired: &[DesiredService]) -> Report {
    let report = rec.reconcile(desired, maps);
    maps.assert_no_violations();
    report
}

/// Reconciles, expecting no error, and checks the result is clean and exactly
/// what the reconciler believes.
#[track_caller]
fn reconcile_ok(rec: &mut Reconciler, maps: &mut FakeMaps, desired: &[DesiredService]) -> Report {
    let report = reconcile(rec, maps, desired);
    assert!(report.errors.is_empty(), "errors: {:#?}", report.errors);
    maps.assert_clean();
    assert_eq!(
        &picture(&maps),
        rec.programmed(),
        "picture differs from the maps"
    );
    report
}

fn counts(r: &Report) -> (usize, usize, usize, usize) {
    (
        r.services_written,
        r.services_removed,
        r.backends_added,
        r.backends_removed,
    )
}

#[track_caller]
fn assert_error_mentions(report: &Report, needles: &[&str]) {
    assert!(
        report
            .errors
            .iter()
            .any(|e| needles.iter().all(|n| e.contains(n))),
        "no error mentions all of {needles:?}; errors: {:#?}",
        report.errors
    );
}

/// The datapath serves exactly `desired`: backends as sets (slot order is the
/// reconciler's business), and no other frontend.
#[track_caller]
fn assert_serves(maps: &FakeMaps, desired: &[DesiredService]) {
    for s in desired {
        let v = maps
            .view(&s.frontend)
            .unwrap_or_else(|| panic!("{} not programmed", s.name));
        let got: BTreeSet<L4Addr> = v.backends.iter().copied().collect();
        let want: BTreeSet<L4Addr> = s.backends.iter().map(|(a, _)| *a).collect();
        assert_eq!(got, want, "{}", s.name);
        assert_eq!(v.count as usize, want.len(), "{}", s.name);
    }
    let frontends = maps.services.keys().filter(|k| k.backend_slot == 0).count();
    assert_eq!(frontends, desired.len(), "frontends in the map");
}

// ---------------------------------------------------------------------------
// Reconcile
// ---------------------------------------------------------------------------

#[test]
fn fresh_programming_of_several_services() {
    let (mut rec, mut maps) = fresh();
    let dns = L4Addr {
        ip: Ipv4Addr::new(10, 96, 0, 10),
        port: 53,
        proto: Proto::Udp,
    };
    let dns_be = L4Addr {
        ip: Ipv4Addr::new(10, 244, 0, 1), // same IP as be(1), other port and protocol
        port: 53,
        proto: Proto::Udp,
    };
    let desired = vec![
        svc("a", fe(1), &[1, 2, 3]),
        svc("b", fe(2), &[4, 5]),
        svc_at("kube-dns:dns", dns, &[dns_be]),
    ];
    let r = reconcile_ok(&mut rec, &mut maps, &desired);
    assert_eq!(counts(&r), (3, 0, 6, 0));

    for s in &desired {
        let v = maps.view(&s.frontend).unwrap();
        // A fresh service takes its backends in the order given.
        let want: Vec<L4Addr> = s.backends.iter().map(|(a, _)| *a).collect();
        assert_eq!(v.backends, want, "{}", s.name);
        assert_eq!(v.count as usize, want.len());
        assert_ne!(v.rev_nat, 0);
    }
    assert_eq!(maps.services.len(), 3 + 6);
    assert_eq!(maps.backends.len(), 6);
    assert_eq!(maps.rev_nat.len(), 3);
    let rev_nats: BTreeSet<u16> = desired
        .iter()
        .map(|s| maps.view(&s.frontend).unwrap().rev_nat)
        .collect();
    assert_eq!(rev_nats.len(), 3, "rev_nat indexes are distinct");
    for v in maps.backends.values() {
        assert_eq!(lb4_backends::state_of(v), Some(BackendState::Active));
    }
    assert_serves(&maps, &desired);

    // Each service's backends and match entries go in before any of its
    // slots names them; a frontend comes after its slots.
    let ops = maps.take_ops();
    for s in &desired {
        let first_slot = ops
            .iter()
            .position(|o| matches!(o, Op::PutService(f, _) if *f == s.frontend))
            .unwrap();
        for (b, _) in &s.backends {
            let put = ops
                .iter()
                .position(|o| matches!(o, Op::PutBackend(_, a) if a == b))
                .unwrap();
            assert!(put < first_slot, "{}: backend {b} after a slot", s.name);
        }
        let matches = ops[..first_slot]
            .iter()
            .filter(|o| matches!(o, Op::PutMatch(..)))
            .count();
        assert!(
            matches >= s.backends.len(),
            "{}: match entries after a slot",
            s.name
        );
    }
    for s in &desired {
        let fe0 = ops
            .iter()
            .position(|o| *o == Op::PutService(s.frontend, 0))
            .unwrap();
        let last_slot = ops
            .iter()
            .rposition(|o| matches!(o, Op::PutService(f, n) if *f == s.frontend && *n > 0))
            .unwrap();
        assert!(last_slot < fe0, "{}: frontend before its slots", s.name);
    }
}

#[test]
fn growing_keeps_positions_and_shrinking_deletes_slots_beyond_count() {
    let (mut rec, mut maps) = fresh();
    reconcile_ok(&mut rec, &mut maps, &[svc("a", fe(1), &[1, 2])]);
    let first = maps.view(&fe(1)).unwrap();
    maps.take_ops();

    let r = reconcile_ok(&mut rec, &mut maps, &[svc("a", fe(1), &[1, 2, 3, 4])]);
    assert_eq!(counts(&r), (1, 0, 2, 0));
    let grown = maps.view(&fe(1)).unwrap();
    assert_eq!(grown.count, 4);
    assert_eq!(grown.backends, bes(&[1, 2, 3, 4]));
    assert_eq!(
        grown.ids[..2],
        first.ids[..],
        "kept backends keep id and slot"
    );
    assert_eq!(grown.rev_nat, first.rev_nat);
    assert_eq!(maps.slot_keys(&fe(1)), [0, 1, 2, 3, 4]);
    // Only the new slots and the frontend were written.
    let ops = maps.take_ops();
    let service_writes: Vec<&Op> = ops
        .iter()
        .filter(|o| matches!(o, Op::PutService(..) | Op::DelService(..)))
        .collect();
    assert_eq!(
        service_writes,
        [
            &Op::PutService(fe(1), 3),
            &Op::PutService(fe(1), 4),
            &Op::PutService(fe(1), 0)
        ]
    );

    // Drop 2 and 3: 1 stays in slot 1, 4 moves into the hole at slot 2.
    let id1 = maps.backend_id(&be(1)).unwrap();
    let id4 = maps.backend_id(&be(4)).unwrap();
    let r = reconcile_ok(&mut rec, &mut maps, &[svc("a", fe(1), &[4, 1])]);
    assert_eq!(counts(&r), (1, 0, 0, 2));
    let shrunk = maps.view(&fe(1)).unwrap();
    assert_eq!(shrunk.count, 2);
    assert_eq!(shrunk.backends, bes(&[1, 4]));
    assert_eq!(shrunk.ids, [id1, id4], "ids survive a shrink");
    assert_eq!(
        maps.slot_keys(&fe(1)),
        [0, 1, 2],
        "slots beyond count deleted"
    );
    assert_eq!(maps.backend_id(&be(2)), None);
    assert_eq!(maps.backend_id(&be(3)), None);

    // Down to one, then back up.
    reconcile_ok(&mut rec, &mut maps, &[svc("a", fe(1), &[4])]);
    assert_eq!(maps.slot_keys(&fe(1)), [0, 1]);
    assert_eq!(maps.view(&fe(1)).unwrap().backends, bes(&[4]));
    reconcile_ok(&mut rec, &mut maps, &[svc("a", fe(1), &[5, 4, 6])]);
    let v = maps.view(&fe(1)).unwrap();
    assert_eq!(v.backends[0], be(4), "the survivor keeps slot 1");
    assert_eq!(v.count, 3);
    maps.assert_clean();
}

#[test]
fn removed_backend_leaves_every_slot_and_goes_once_unreferenced() {
    let (mut rec, mut maps) = fresh();
    reconcile_ok(
        &mut rec,
        &mut maps,
        &[svc("a", fe(1), &[1, 2, 3]), svc("b", fe(2), &[2, 4])],
    );
    let id2 = maps.backend_id(&be(2)).unwrap();
    assert_eq!(maps.backends.len(), 4, "a shared backend is one entry");

    // 2 leaves a but stays in b.
    let r = reconcile_ok(
        &mut rec,
        &mut maps,
        &[svc("a", fe(1), &[1, 3]), svc("b", fe(2), &[2, 4])],
    );
    assert_eq!(counts(&r), (1, 0, 0, 0));
    assert!(!maps.view(&fe(1)).unwrap().ids.contains(&id2));
    assert!(maps
        .services
        .iter()
        .filter(|(k, _)| lb4_services::frontend_of(k) == Some(fe(1)))
        .all(|(_, v)| v.backend_id != id2));
    assert_eq!(maps.backend_id(&be(2)), Some(id2), "still used by b");
    assert_eq!(maps.view(&fe(2)).unwrap().backends, bes(&[2, 4]));

    // 2 leaves b too: gone from every slot and from the map.
    let r = reconcile_ok(
        &mut rec,
        &mut maps,
        &[svc("a", fe(1), &[1, 3]), svc("b", fe(2), &[4])],
    );
    assert_eq!(counts(&r), (1, 0, 0, 1));
    assert!(!maps.slot_names(id2));
    assert!(!maps.backends.contains_key(&id2));
    let ops = maps.take_ops();
    assert_eq!(ops.last(), Some(&Op::DelBackend(id2)), "backends go last");
}

#[test]
fn removed_service_takes_its_frontend_slots_and_rev_nat() {
    let (mut rec, mut maps) = fresh();
    reconcile_ok(
        &mut rec,
        &mut maps,
        &[svc("a", fe(1), &[1, 2]), svc("b", fe(2), &[2, 3])],
    );
    let a = maps.view(&fe(1)).unwrap();
    let b = maps.view(&fe(2)).unwrap();
    maps.take_ops();

    let r = reconcile_ok(&mut rec, &mut maps, &[svc("b", fe(2), &[2, 3])]);
    assert_eq!(counts(&r), (0, 1, 0, 1));
    assert!(maps.slot_keys(&fe(1)).is_empty());
    assert!(!maps.rev_nat.contains_key(&a.rev_nat));
    assert_eq!(maps.backend_id(&be(1)), None);
    assert_eq!(
        maps.backend_id(&be(2)),
        Some(a.ids[1]),
        "shared backend kept"
    );
    assert_eq!(maps.view(&fe(2)), Some(b));

    let ops = maps.take_ops();
    assert_eq!(ops[0], Op::DelService(fe(1), 0), "frontend goes first");
    assert!(
        ops.iter().all(|o| o.frontend() != Some(fe(2))),
        "b untouched"
    );
    assert!(!rec.programmed().services.contains_key(&fe(1)));

    // Everything gone: the maps are empty.
    reconcile_ok(&mut rec, &mut maps, &[]);
    assert!(maps.services.is_empty() && maps.backends.is_empty() && maps.rev_nat.is_empty());
}

#[test]
fn zero_backend_service_is_a_frontend_with_count_zero() {
    let (mut rec, mut maps) = fresh();
    let r = reconcile_ok(&mut rec, &mut maps, &[svc("a", fe(1), &[])]);
    assert_eq!(counts(&r), (1, 0, 0, 0));
    let v = maps.view(&fe(1)).unwrap();
    assert_eq!(v.count, 0);
    assert!(maps.rev_nat.contains_key(&v.rev_nat));
    assert_eq!(maps.slot_keys(&fe(1)), [0]);

    reconcile_ok(&mut rec, &mut maps, &[svc("a", fe(1), &[1])]);
    assert_eq!(maps.view(&fe(1)).unwrap().count, 1);

    let r = reconcile_ok(&mut rec, &mut maps, &[svc("a", fe(1), &[])]);
    assert_eq!(counts(&r), (1, 0, 0, 1));
    let after = maps.view(&fe(1)).unwrap();
    assert_eq!(after.count, 0);
    assert_eq!(after.rev_nat, v.rev_nat);
    assert_eq!(maps.slot_keys(&fe(1)), [0]);
    assert!(maps.backends.is_empty());
}

fn mixed_desired() -> Vec<DesiredService> {
    let mut terminating = svc("c", fe(3), &[6, 7]);
    terminating.backends[1].1 = BackendState::Terminating;
    vec![
        svc("a", fe(1), &[1, 2, 3]),
        svc("b", fe(2), &[3, 4, 5]),
        terminating,
        svc("d", fe(4), &[]),
    ]
}

#[test]
fn second_reconcile_with_same_input_writes_nothing() {
    let (mut rec, mut maps) = fresh();
    let desired = mixed_desired();
    reconcile_ok(&mut rec, &mut maps, &desired);
    let programmed = rec.programmed().clone();
    maps.take_ops();

    let r = reconcile_ok(&mut rec, &mut maps, &desired);
    assert_eq!(counts(&r), (0, 0, 0, 0));
    assert_eq!(maps.take_ops(), Vec::<Op>::new());

    // Nor does the same input in another order.
    let mut reversed = desired.clone();
    reversed.reverse();
    let r = reconcile_ok(&mut rec, &mut maps, &reversed);
    assert_eq!(counts(&r), (0, 0, 0, 0));
    assert_eq!(maps.take_ops(), Vec::<Op>::new());
    assert_eq!(rec.programmed(), &programmed);
}

#[test]
fn backend_state_change_rewrites_only_the_backend() {
    let (mut rec, mut maps) = fresh();
    reconcile_ok(&mut rec, &mut maps, &[svc("a", fe(1), &[1, 2])]);
    let before = maps.view(&fe(1)).unwrap();
    maps.take_ops();

    let mut draining = svc("a", fe(1), &[1, 2]);
    draining.backends[1].1 = BackendState::Terminating;
    let r = reconcile_ok(&mut rec, &mut maps, &[draining]);
    assert_eq!(counts(&r), (0, 0, 0, 0));
    assert_eq!(maps.take_ops(), [Op::PutBackend(before.ids[1], be(2))]);
    assert_eq!(
        lb4_backends::state_of(&maps.backends[&before.ids[1]]),
        Some(BackendState::Terminating)
    );
    assert_eq!(maps.view(&fe(1)), Some(before));
}

#[test]
fn shared_backend_is_active_if_any_service_has_it_active() {
    let (mut rec, mut maps) = fresh();
    let mut b = svc("b", fe(2), &[1]);
    b.backends[0].1 = BackendState::Terminating;
    reconcile_ok(&mut rec, &mut maps, &[svc("a", fe(1), &[1]), b.clone()]);
    let id = maps.backend_id(&be(1)).unwrap();
    assert_eq!(
        lb4_backends::state_of(&maps.backends[&id]),
        Some(BackendState::Active)
    );
    reconcile_ok(&mut rec, &mut maps, &[b]);
    assert_eq!(
        lb4_backends::state_of(&maps.backends[&id]),
        Some(BackendState::Terminating)
    );
}

#[test]
fn duplicate_backends_in_a_service_take_one_slot() {
    let (mut rec, mut maps) = fresh();
    reconcile_ok(&mut rec, &mut maps, &[svc("a", fe(1), &[1, 2, 1, 2, 3])]);
    assert_eq!(maps.view(&fe(1)).unwrap().backends, bes(&[1, 2, 3]));
}

#[test]
fn restart_recovers_ids_and_rev_nat_without_writes() {
    let (mut rec, mut maps) = fresh();
    let desired = mixed_desired();
    reconcile_ok(&mut rec, &mut maps, &desired);
    let before = rec.programmed().clone();
    let views: Vec<View> = desired
        .iter()
        .map(|s| maps.view(&s.frontend).unwrap())
        .collect();
    maps.take_ops();

    // A new agent reads the maps back.
    let recovered = picture(&maps);
    assert_eq!(recovered, before);
    let mut rec = Reconciler::new(recovered);
    let r = reconcile_ok(&mut rec, &mut maps, &desired);
    assert_eq!(counts(&r), (0, 0, 0, 0));
    assert_eq!(maps.take_ops(), Vec::<Op>::new());
    assert_eq!(rec.programmed(), &before);
    for (s, v) in desired.iter().zip(&views) {
        assert_eq!(maps.view(&s.frontend).as_ref(), Some(v), "{}", s.name);
    }

    // What comes next gets ids and indexes nobody holds.
    let old_backends = maps.backends.clone();
    let old_rev_nat = maps.rev_nat.clone();
    let mut more = desired.clone();
    more.push(svc("e", fe(5), &[1, 8, 9]));
    let r = reconcile_ok(&mut rec, &mut maps, &more);
    assert_eq!(counts(&r), (1, 0, 2, 0));
    for (id, v) in &old_backends {
        assert_eq!(maps.backends.get(id), Some(v), "backend {id} overwritten");
    }
    for (idx, v) in &old_rev_nat {
        assert_eq!(maps.rev_nat.get(idx), Some(v), "rev_nat {idx} overwritten");
    }
    assert!(!old_rev_nat.contains_key(&maps.view(&fe(5)).unwrap().rev_nat));
    assert_serves(&maps, &more);
}

#[test]
fn restart_finishes_or_cleans_an_interrupted_write() {
    // A crash left slots and the reverse-NAT entry of fe(1) but no frontend.
    let leftovers = || {
        let mut maps = FakeMaps::new();
        maps.backends
            .insert(7, lb4_backends::value(&be(1), BackendState::Active));
        maps.backends
            .insert(9, lb4_backends::value(&be(2), BackendState::Active));
        maps.rev_nat.insert(3, lb4_reverse_nat::value(&fe(1)));
        maps.services
            .insert(lb4_services::key(&fe(1), 1), lb4_services::slot_value(7, 3));
        maps.services
            .insert(lb4_services::key(&fe(1), 2), lb4_services::slot_value(9, 3));
        let p = picture(&maps);
        let s = &p.services[&fe(1)];
        assert!(!s.has_frontend);
        assert_eq!(s.rev_nat, 3);
        (Reconciler::new(p), maps)
    };

    let (mut rec, mut maps) = leftovers();
    reconcile_ok(&mut rec, &mut maps, &[svc("a", fe(1), &[1, 2, 3])]);
    let v = maps.view(&fe(1)).unwrap();
    assert_eq!(v.rev_nat, 3);
    assert_eq!(v.ids[..2], [7, 9]);
    assert_eq!(v.backends, bes(&[1, 2, 3]));

    let (mut rec, mut maps) = leftovers();
    reconcile_ok(&mut rec, &mut maps, &[]);
    assert!(maps.services.is_empty() && maps.backends.is_empty() && maps.rev_nat.is_empty());
}

#[test]
fn restart_after_a_crash_between_slots_and_frontend_finishes_the_write() {
    // Growing a from 3 to 4 backends: backend and slot 4 were written, then the
    // agent died before the frontend (count still 3).
    let (mut rec, mut maps) = fresh();
    reconcile_ok(&mut rec, &mut maps, &[svc("a", fe(1), &[1, 2, 3])]);
    let rn = maps.view(&fe(1)).unwrap().rev_nat;
    maps.backends
        .insert(40, lb4_backends::value(&be(4), BackendState::Active));
    maps.services.insert(
        lb4_services::key(&fe(1), 4),
        lb4_services::slot_value(40, rn),
    );
    assert_eq!(maps.view(&fe(1)).unwrap().count, 3);

    let mut rec = Reconciler::new(picture(&maps));
    reconcile_ok(&mut rec, &mut maps, &[svc("a", fe(1), &[1, 2, 3, 4])]);
    let v = maps.view(&fe(1)).unwrap();
    assert_eq!(v.count, 4, "the frontend must be brought to the slots");
    assert_eq!(v.backends, bes(&[1, 2, 3, 4]));

    // Shrinking, the agent died after the frontend but before deleting slot 4;
    // then the backend came back.
    let (mut rec, mut maps) = fresh();
    reconcile_ok(&mut rec, &mut maps, &[svc("a", fe(1), &[1, 2, 3])]);
    let f = maps.services[&lb4_services::key(&fe(1), 0)];
    maps.services.insert(
        lb4_services::key(&fe(1), 0),
        lb4_services::frontend_value(2, lb4_services::rev_nat_of(&f), Default::default()),
    );
    let mut rec = Reconciler::new(picture(&maps));
    reconcile_ok(&mut rec, &mut maps, &[svc("a", fe(1), &[1, 2, 3])]);
    assert_eq!(maps.view(&fe(1)).unwrap().count, 3);
}

/// Slots are u16: a service can have 65535 backends, and the slot after the
/// last must not overflow.
#[test]
fn service_with_as_many_backends_as_slots() {
    let n = u16::MAX as usize;
    let addrs: Vec<L4Addr> = (0..=n as u32)
        .map(|i| L4Addr {
            ip: Ipv4Addr::from(0x0af4_0000 + i),
            port: 8080,
            proto: Proto::Tcp,
        })
        .collect();
    let mut maps = FakeMaps::with_capacity(n + 1, n, 16);
    maps.checking = false; // O(n) per write
    for (i, a) in addrs[..n].iter().enumerate() {
        maps.backends
            .insert(i as u32 + 1, lb4_backends::value(a, BackendState::Active));
    }
    let mut rec = Reconciler::new(picture(&maps));

    let r = rec.reconcile(&[svc_at("big", fe(1), &addrs[..n])], &mut maps);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    maps.checking = true;
    maps.check_invariant(&Op::PutService(fe(1), 0));
    maps.assert_clean();
    assert_eq!(maps.view(&fe(1)).unwrap().count, u16::MAX);

    // One too many: refused, and what is programmed stays.
    maps.take_ops();
    maps.checking = false;
    let r = rec.reconcile(&[svc_at("big", fe(1), &addrs)], &mut maps);
    assert_error_mentions(&r, &["default/big", "65536 backends", "at most 65535"]);
    assert!(maps.take_ops().is_empty());

    // One fewer: the last slot moves into slot 1 and goes.
    maps.checking = false;
    let r = rec.reconcile(&[svc_at("big", fe(1), &addrs[1..n])], &mut maps);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    maps.checking = true;
    maps.check_invariant(&Op::PutService(fe(1), 0));
    maps.assert_clean();
    let v = maps.view(&fe(1)).unwrap();
    assert_eq!(v.count, u16::MAX - 1);
    assert_eq!(v.backends[0], addrs[n - 1]);
    assert_eq!(maps.slot_keys(&fe(1)).last(), Some(&(u16::MAX - 1)));
}

#[test]
fn from_entries_leaves_what_it_cannot_read_alone() {
    let mut maps = FakeMaps::new();
    maps.backends
        .insert(1, lb4_backends::value(&be(1), BackendState::Active));
    let mut quarantined = lb4_backends::value(&be(2), BackendState::Active);
    quarantined.flags = lash_common::BE_STATE_QUARANTINED;
    maps.backends.insert(2, quarantined);
    let mut icmp = lb4_services::key(&fe(1), 0);
    icmp.proto = 1;
    maps.services
        .insert(icmp, lb4_services::frontend_value(0, 5, Default::default()));
    maps.services.insert(
        lb4_services::key(&fe(2), 0),
        lb4_services::frontend_value(1, 4, Default::default()),
    );
    maps.services
        .insert(lb4_services::key(&fe(2), 1), lb4_services::slot_value(1, 4));
    let p = picture(&maps);
    assert_eq!(p.backends.keys().copied().collect::<Vec<_>>(), [be(1)]);
    assert_eq!(p.services.keys().copied().collect::<Vec<_>>(), [fe(2)]);
    let s = &p.services[&fe(2)];
    assert!(s.has_frontend);
    assert_eq!((s.rev_nat, s.slots.clone()), (4, BTreeMap::from([(1, 1)])));
}

#[test]
fn frontend_clash_first_name_wins() {
    let (mut rec, mut maps) = fresh();
    // "b" comes first in the input, "a" first by name.
    let desired = [svc("b", fe(1), &[2]), svc("a", fe(1), &[1])];
    let r = reconcile(&mut rec, &mut maps, &desired);
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert_error_mentions(
        &r,
        &[
            "default/b",
            "10.96.0.1:80/TCP",
            "already taken by default/a",
        ],
    );
    maps.assert_clean();
    assert_eq!(maps.view(&fe(1)).unwrap().backends, bes(&[1]));
    assert_eq!(
        maps.backend_id(&be(2)),
        None,
        "the loser's backends are not written"
    );

    // Stable: the same input again changes nothing and says so again.
    maps.take_ops();
    let r = reconcile(&mut rec, &mut maps, &desired);
    assert_eq!(r.errors.len(), 1);
    assert_eq!(maps.take_ops(), Vec::<Op>::new());
}

#[test]
fn map_full_service_is_reported_and_nothing_of_it_written() {
    let mut maps = FakeMaps::with_capacity(5, 1024, 1024);
    let mut rec = Reconciler::new(Programmed::default());
    // a: 3 entries, b: 4 (does not fit after a), c: 2 (fits).
    let desired = [
        svc("a", fe(1), &[1, 2]),
        svc("b", fe(2), &[3, 4, 5]),
        svc("c", fe(3), &[6]),
    ];
    let r = reconcile(&mut rec, &mut maps, &desired);
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert_error_mentions(
        &r,
        &["default/b", "10.96.0.2:80/TCP", "maps full", "lb4_services"],
    );
    maps.assert_clean();
    assert_serves(&maps, &[desired[0].clone(), desired[2].clone()]);
    assert!(maps.slot_keys(&fe(2)).is_empty());
    for b in [3, 4, 5] {
        assert_eq!(maps.backend_id(&be(b)), None);
    }
    assert_eq!(maps.rev_nat.len(), 2);
    assert!(
        maps.failed.is_empty() && !maps.ops.iter().any(|o| o.frontend() == Some(fe(2))),
        "a service that does not fit is not attempted"
    );
}

#[test]
fn map_full_on_backends_counts_shared_backends_once() {
    let mut maps = FakeMaps::with_capacity(1024, 3, 1024);
    let mut rec = Reconciler::new(Programmed::default());
    let r = reconcile(
        &mut rec,
        &mut maps,
        &[svc("a", fe(1), &[1, 2]), svc("b", fe(2), &[3, 4])],
    );
    assert_error_mentions(&r, &["default/b", "maps full", "lb4_backends"]);
    maps.assert_clean();
    assert!(maps.view(&fe(2)).is_none());

    // Sharing 2 with a, b needs one more backend only: it fits.
    reconcile_ok(
        &mut rec,
        &mut maps,
        &[svc("a", fe(1), &[1, 2]), svc("b", fe(2), &[2, 3])],
    );
    assert_eq!(maps.backends.len(), 3);
}

#[test]
fn map_full_on_rev_nat() {
    let mut maps = FakeMaps::with_capacity(1024, 1024, 1);
    let mut rec = Reconciler::new(Programmed::default());
    let r = reconcile(
        &mut rec,
        &mut maps,
        &[svc("a", fe(1), &[1]), svc("b", fe(2), &[2])],
    );
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert_error_mentions(&r, &["default/b", "maps full"]);
    maps.assert_clean();
    assert!(maps.view(&fe(1)).is_some() && maps.view(&fe(2)).is_none());
}

#[test]
fn programmed_service_that_no_longer_fits_keeps_its_programming() {
    let mut maps = FakeMaps::with_capacity(6, 1024, 1024);
    let mut rec = Reconciler::new(Programmed::default());
    reconcile_ok(
        &mut rec,
        &mut maps,
        &[svc("a", fe(1), &[1, 2]), svc("b", fe(2), &[3, 4])],
    );
    let b_before = maps.view(&fe(2)).unwrap();
    maps.take_ops();

    // b grows to 4 entries: 3 + 4 > 6.
    let r = reconcile(
        &mut rec,
        &mut maps,
        &[svc("a", fe(1), &[1, 2]), svc("b", fe(2), &[3, 4, 5])],
    );
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert_error_mentions(&r, &["default/b", "maps full"]);
    maps.assert_clean();
    assert_eq!(
        maps.view(&fe(2)),
        Some(b_before.clone()),
        "b keeps what it had"
    );
    assert_eq!(maps.backend_id(&be(5)), None);
    assert_eq!(maps.take_ops(), Vec::<Op>::new(), "nothing to write");

    // Once a is gone there is room.
    reconcile_ok(&mut rec, &mut maps, &[svc("b", fe(2), &[3, 4, 5])]);
    let b = maps.view(&fe(2)).unwrap();
    assert_eq!(b.backends, bes(&[3, 4, 5]));
    assert_eq!(b.ids[..2], b_before.ids[..]);
    assert_eq!(b.rev_nat, b_before.rev_nat);
}

#[test]
fn kept_service_counts_against_capacity() {
    // a keeps 4 entries it no longer fits into; b holds 2; c (3) would need 9 of 8.
    let mut maps = FakeMaps::with_capacity(8, 1024, 1024);
    let mut rec = Reconciler::new(Programmed::default());
    reconcile_ok(
        &mut rec,
        &mut maps,
        &[svc("a", fe(1), &[1, 2, 3]), svc("b", fe(2), &[4])],
    );
    maps.take_ops();

    let desired = [
        svc("a", fe(1), &[1, 2, 3, 10, 11, 12, 13, 14]),
        svc("b", fe(2), &[4]),
        svc("c", fe(3), &[5, 6]),
    ];
    let r = reconcile(&mut rec, &mut maps, &desired);
    assert_error_mentions(&r, &["default/a", "maps full"]);
    assert_error_mentions(&r, &["default/c", "maps full"]);
    maps.assert_clean();
    assert!(maps.view(&fe(3)).is_none());
    assert_eq!(maps.view(&fe(1)).unwrap().backends, bes(&[1, 2, 3]));
    // Over capacity is a steady state: it must not write (and undo) each time.
    assert!(
        maps.failed.is_empty(),
        "writes that failed: {:?}",
        maps.failed
    );
    assert_eq!(maps.take_ops(), Vec::<Op>::new());
    let r = reconcile(&mut rec, &mut maps, &desired);
    assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
    assert_eq!(maps.take_ops(), Vec::<Op>::new());
}

#[test]
fn map_full_at_write_time_is_rolled_back() {
    // The reconciler believes the map is empty, but something else fills it:
    // the kernel's E2BIG must leave nothing half-written.
    let mut maps = FakeMaps::with_capacity(4, 1024, 1024);
    let mut rec = Reconciler::new(Programmed::default());
    maps.services.insert(
        lb4_services::key(
            &L4Addr {
                ip: Ipv4Addr::new(192, 168, 0, 1),
                port: 1,
                proto: Proto::Tcp,
            },
            5,
        ),
        lb4_services::slot_value(1, 1),
    );
    let r = reconcile(&mut rec, &mut maps, &[svc("a", fe(1), &[1, 2, 3])]);
    assert_error_mentions(&r, &["default/a", "lb4_services", "kept as it was"]);
    assert!(maps.slot_keys(&fe(1)).is_empty());
    assert!(maps.rev_nat.is_empty(), "unused rev_nat entry taken back");
    assert!(maps.backends.is_empty(), "unused backends taken back");
    assert!(!rec.programmed().services.contains_key(&fe(1)));
    assert_eq!(&picture(&maps).backends, &rec.programmed().backends);
}

#[test]
fn failed_slot_write_is_reported_and_finished_next_time() {
    let (mut rec, mut maps) = fresh();
    reconcile_ok(&mut rec, &mut maps, &[svc("a", fe(1), &[1, 2])]);
    let before = maps.view(&fe(1)).unwrap();

    maps.fail_once(|o| *o == Op::PutService(fe(1), 4));
    let grown = [svc("a", fe(1), &[1, 2, 3, 4, 5])];
    let r = reconcile(&mut rec, &mut maps, &grown);
    assert_eq!(maps.failed, [Op::PutService(fe(1), 4)]);
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert_error_mentions(
        &r,
        &[
            "default/a",
            "10.96.0.1:80/TCP",
            "os error 5",
            "kept as it was",
        ],
    );
    // The frontend was not rewritten: the datapath still sees the old service,
    // and the slot written before the failure is taken back.
    assert_eq!(maps.view(&fe(1)), Some(before.clone()));
    assert_eq!(maps.slot_keys(&fe(1)), [0, 1, 2]);
    assert_eq!(&picture(&maps), rec.programmed());
    maps.assert_clean();

    maps.heal();
    reconcile_ok(&mut rec, &mut maps, &grown);
    let v = maps.view(&fe(1)).unwrap();
    assert_eq!(v.backends, bes(&[1, 2, 3, 4, 5]));
    assert_eq!(v.ids[..2], before.ids[..]);
}

#[test]
fn failed_write_of_a_new_service_leaves_nothing_visible() {
    let (mut rec, mut maps) = fresh();
    reconcile_ok(&mut rec, &mut maps, &[svc("a", fe(1), &[1])]);
    maps.fail_once(|o| *o == Op::PutService(fe(2), 2));
    let desired = [svc("a", fe(1), &[1]), svc("b", fe(2), &[2, 3, 4])];
    let r = reconcile(&mut rec, &mut maps, &desired);
    assert_error_mentions(&r, &["default/b", "kept as it was"]);
    maps.assert_clean();
    assert!(maps.slot_keys(&fe(2)).is_empty());
    assert_eq!(maps.rev_nat.len(), 1);
    assert!(!rec.programmed().services.contains_key(&fe(2)));
    assert_eq!(&picture(&maps), rec.programmed());

    maps.heal();
    reconcile_ok(&mut rec, &mut maps, &desired);
    assert_serves(&maps, &desired);
}

#[test]
fn failed_frontend_write_takes_back_new_slots() {
    let (mut rec, mut maps) = fresh();
    reconcile_ok(&mut rec, &mut maps, &[svc("a", fe(1), &[1])]);
    let before = maps.view(&fe(1)).unwrap();
    maps.fail_once(|o| *o == Op::PutService(fe(1), 0));
    let r = reconcile(&mut rec, &mut maps, &[svc("a", fe(1), &[1, 2, 3])]);
    assert_error_mentions(&r, &["default/a"]);
    maps.assert_clean();
    assert_eq!(maps.view(&fe(1)), Some(before));
    assert_eq!(&picture(&maps), rec.programmed());
    maps.heal();
    reconcile_ok(&mut rec, &mut maps, &[svc("a", fe(1), &[1, 2, 3])]);
}

#[test]
fn failed_delete_of_an_excess_slot_is_finished_next_time() {
    let (mut rec, mut maps) = fresh();
    reconcile_ok(&mut rec, &mut maps, &[svc("a", fe(1), &[1, 2, 3, 4])]);
    let id4 = maps.backend_id(&be(4)).unwrap();
    maps.fail_once(|o| *o == Op::DelService(fe(1), 4));
    let shrunk = [svc("a", fe(1), &[1, 2])];
    let r = reconcile(&mut rec, &mut maps, &shrunk);
    assert_error_mentions(&r, &["default/a"]);
    assert_eq!(maps.view(&fe(1)).unwrap().backends, bes(&[1, 2]));
    // Slot 4 is still there; the backend it names must be too.
    assert_eq!(maps.slot_keys(&fe(1)), [0, 1, 2, 4]);
    assert!(maps.backends.contains_key(&id4));
    assert_eq!(&picture(&maps), rec.programmed());

    maps.heal();
    maps.take_ops();
    let r = reconcile_ok(&mut rec, &mut maps, &shrunk);
    assert_eq!(counts(&r), (1, 0, 0, 1));
    assert_eq!(maps.slot_keys(&fe(1)), [0, 1, 2]);
    assert!(!maps.backends.contains_key(&id4));
}

#[test]
fn failed_removal_keeps_serving_and_is_finished_next_time() {
    let (mut rec, mut maps) = fresh();
    reconcile_ok(
        &mut rec,
        &mut maps,
        &[svc("a", fe(1), &[1, 2]), svc("b", fe(2), &[3])],
    );
    let a = maps.view(&fe(1)).unwrap();
    maps.fail_once(|o| *o == Op::DelService(fe(1), 0));
    let r = reconcile(&mut rec, &mut maps, &[svc("b", fe(2), &[3])]);
    assert_error_mentions(&r, &["removing service 10.96.0.1:80/TCP", "os error 5"]);
    maps.assert_clean();
    assert_eq!(maps.view(&fe(1)), Some(a), "still served, whole");

    // A failure half-way through the slots.
    maps.fail_once(|o| *o == Op::DelService(fe(1), 1));
    let r = reconcile(&mut rec, &mut maps, &[svc("b", fe(2), &[3])]);
    assert_error_mentions(&r, &["removing service 10.96.0.1:80/TCP"]);
    assert!(maps.view(&fe(1)).is_none());
    assert_eq!(&picture(&maps), rec.programmed());

    maps.heal();
    reconcile_ok(&mut rec, &mut maps, &[svc("b", fe(2), &[3])]);
    assert!(maps.slot_keys(&fe(1)).is_empty());
    assert_serves(&maps, &[svc("b", fe(2), &[3])]);
}

#[test]
fn failed_backend_write_holds_back_only_its_services() {
    let (mut rec, mut maps) = fresh();
    maps.fail_once(|o| matches!(o, Op::PutBackend(_, a) if *a == be(3)));
    let desired = [
        svc("a", fe(1), &[1, 2]),
        svc("b", fe(2), &[2, 3]),
        svc("c", fe(3), &[4]),
    ];
    let r = reconcile(&mut rec, &mut maps, &desired);
    assert_error_mentions(&r, &["backend 10.244.0.3:8080/TCP", "os error 5"]);
    assert_error_mentions(
        &r,
        &["default/b", "backend 10.244.0.3:8080/TCP", "kept as it was"],
    );
    maps.assert_clean();
    assert!(maps.view(&fe(2)).is_none());
    assert_serves(&maps, &[desired[0].clone(), desired[2].clone()]);

    maps.heal();
    reconcile_ok(&mut rec, &mut maps, &desired);
    assert_serves(&maps, &desired);
}

/// Every write of a busy transition fails in turn, once or from then on: the
/// invariant holds throughout, and a reconcile with working maps ends in the
/// desired state.
#[test]
fn any_failed_write_is_safe_and_recovered() {
    let start = [
        svc("a", fe(1), &[1, 2, 3]),
        svc("b", fe(2), &[3, 4]),
        svc("c", fe(3), &[5]),
        svc("e", fe(5), &[9, 10, 11, 12]),
    ];
    let target = [
        svc("a", fe(1), &[2, 6, 7, 1]), // grows, loses 3
        // b removed
        svc("c", fe(3), &[]),      // empties
        svc("d", fe(4), &[4, 8]),  // new, takes b's backend 4
        svc("e", fe(5), &[12, 9]), // shrinks with a move
    ];
    let setup = || {
        let (mut rec, mut maps) = fresh();
        reconcile_ok(&mut rec, &mut maps, &start);
        maps.take_ops();
        (rec, maps)
    };
    let (mut rec, mut maps) = setup();
    reconcile_ok(&mut rec, &mut maps, &target);
    let writes = maps.take_ops().len();
    assert!(writes > 20, "a busy transition: {writes} writes");

    for sticky in [false, true] {
        for n in 0..writes {
            let (mut rec, mut maps) = setup();
            maps.fail_at(n, sticky);
            let r = rec.reconcile(&target, &mut maps);
            let ctx = format!("write #{n} failing (sticky: {sticky})");
            assert!(
                maps.violations.is_empty(),
                "{ctx}: {}",
                maps.violations.join("\n")
            );
            assert!(!maps.failed.is_empty(), "{ctx}: nothing failed");
            assert!(!r.errors.is_empty(), "{ctx}: failure not reported");

            maps.heal();
            let r = rec.reconcile(&target, &mut maps);
            assert!(r.errors.is_empty(), "{ctx}: recovery errors {:?}", r.errors);
            maps.assert_clean();
            assert_serves(&maps, &target);
            assert_eq!(&picture(&maps), rec.programmed(), "{ctx}");
            maps.take_ops();
            rec.reconcile(&target, &mut maps);
            assert_eq!(
                maps.take_ops(),
                Vec::<Op>::new(),
                "{ctx}: not settled after recovery"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// assign_slots
// ---------------------------------------------------------------------------

#[test]
fn assign_slots_keeps_positions_of_kept_backends() {
    assert_eq!(assign_slots(&[1, 2, 3], &[3, 2, 1]), [1, 2, 3]);
    assert_eq!(assign_slots(&[1, 2, 3], &[1, 2, 3, 4]), [1, 2, 3, 4]);
    assert_eq!(assign_slots(&[5, 6], &[7, 6, 5]), [5, 6, 7]);
}

#[test]
fn assign_slots_fills_holes_with_newcomers() {
    assert_eq!(assign_slots(&[1, 2, 3], &[1, 3, 4]), [1, 4, 3]);
    assert_eq!(assign_slots(&[1, 2, 3, 4], &[5, 6, 4, 1]), [1, 5, 6, 4]);
    // More newcomers than holes: the rest go at the end, in the order given.
    assert_eq!(assign_slots(&[1, 2], &[9, 8, 2, 7]), [9, 2, 8, 7]);
}

#[test]
fn assign_slots_compacts_from_the_tail() {
    assert_eq!(assign_slots(&[1, 2, 3], &[1, 3]), [1, 3]);
    assert_eq!(assign_slots(&[1, 2, 3, 4, 5], &[5, 3]), [5, 3]);
    assert_eq!(assign_slots(&[1, 2, 3, 4, 5], &[1, 5]), [1, 5]);
    assert_eq!(assign_slots(&[1, 2, 3, 4], &[4]), [4]);
    assert_eq!(assign_slots(&[1, 2, 3, 4], &[1]), [1]);
    assert_eq!(assign_slots(&[1, 2, 3, 4, 5, 6], &[2, 6, 4]), [6, 2, 4]);
}

#[test]
fn assign_slots_dedups() {
    assert_eq!(assign_slots(&[], &[1, 1, 2, 1]), [1, 2]);
    assert_eq!(assign_slots(&[1, 1, 2], &[1, 2]), [1, 2]);
    assert_eq!(assign_slots(&[2, 2], &[2, 3, 3]), [2, 3]);
}

#[test]
fn assign_slots_empty() {
    assert_eq!(assign_slots(&[], &[]), Vec::<u32>::new());
    assert_eq!(assign_slots(&[1, 2, 3], &[]), Vec::<u32>::new());
    assert_eq!(assign_slots(&[], &[3, 1, 2]), [3, 1, 2]);
}

/// For many pseudo-random inputs: the result is `new` deduplicated (as a set,
/// same length) and every kept backend whose old slot still exists stays in it.
#[test]
fn assign_slots_properties() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for _ in 0..5000 {
        let old: Vec<u32> = (0..rand(8)).map(|_| rand(10) as u32 + 1).collect();
        let new: Vec<u32> = (0..rand(8)).map(|_| rand(10) as u32 + 1).collect();
        let got = assign_slots(&old, &new);
        let want: BTreeSet<u32> = new.iter().copied().collect();
        assert_eq!(got.len(), want.len(), "{old:?} -> {new:?}: {got:?}");
        assert_eq!(
            got.iter().copied().collect::<BTreeSet<_>>(),
            want,
            "{old:?} -> {new:?}: {got:?}"
        );
        let mut first_pos = BTreeMap::new();
        for (i, id) in old.iter().enumerate() {
            first_pos.entry(*id).or_insert(i);
        }
        for (id, pos) in first_pos {
            if want.contains(&id) && pos < got.len() {
                assert_eq!(got[pos], id, "{old:?} -> {new:?}: {got:?} moved {id}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Incremental apply
// ---------------------------------------------------------------------------

fn up(d: DesiredService) -> Change {
    Change::Upsert(d)
}

fn rm(frontend: L4Addr) -> Change {
    Change::Remove(frontend)
}

/// Applies and checks the invariant held after every write.
#[track_caller]
fn apply(rec: &mut Reconciler, maps: &mut FakeMaps, changes: &[Change]) -> Report {
    let report = rec.apply(changes, maps);
    maps.assert_no_violations();
    report
}

/// Applies, expecting no error, and checks the result is clean and exactly
/// what the reconciler believes.
#[track_caller]
fn apply_ok(rec: &mut Reconciler, maps: &mut FakeMaps, changes: &[Change]) -> Report {
    let report = apply(rec, maps, changes);
    assert!(report.errors.is_empty(), "errors: {:#?}", report.errors);
    maps.assert_clean();
    assert_eq!(
        &picture(&maps),
        rec.programmed(),
        "picture differs from the maps"
    );
    report
}

/// A full reconcile of `desired` on this reconciler writes nothing: what the
/// incremental path left is exactly what a full reconcile wants.
#[track_caller]
fn assert_settled(rec: &mut Reconciler, maps: &mut FakeMaps, desired: &[DesiredService]) {
    maps.take_ops();
    let r = reconcile(rec, maps, desired);
    assert!(r.errors.is_empty(), "errors: {:#?}", r.errors);
    assert_eq!(maps.take_ops(), Vec::<Op>::new(), "a full reconcile wrote");
}

impl FakeMaps {
    /// What the maps serve, ids left out: frontend -> its backends with their
    /// states, sorted (a multiset).
    fn served(&self) -> BTreeMap<(L4Addr, Scope), Vec<(L4Addr, BackendState)>> {
        self.services
            .iter()
            .filter(|(k, _)| k.backend_slot == 0)
            .map(|(k, v)| {
                let fe = lb4_services::frontend_of(k).unwrap();
                let scope = lb4_services::scope_of(k).unwrap();
                let mut b: Vec<(L4Addr, BackendState)> = (1..=v.count)
                    .map(|s| {
                        let id = self.services[&lb4_services::key_in(&fe, scope, s)].backend_id;
                        let be = &self.backends[&id];
                        (
                            lb4_backends::addr_of(be).unwrap(),
                            lb4_backends::state_of(be).unwrap(),
                        )
                    })
                    .collect();
                b.sort();
                ((fe, scope), b)
            })
            .collect()
    }

    /// Backend entries no slot names.
    fn unreferenced_backends(&self) -> Vec<u32> {
        self.backends
            .keys()
            .copied()
            .filter(|id| !self.slot_names(*id))
            .collect()
    }

    fn state(&self, addr: &L4Addr) -> Option<BackendState> {
        let id = self.backend_id(addr)?;
        lb4_backends::state_of(&self.backends[&id])
    }
}

/// What `desired` (one service per frontend) must look like in the maps,
/// worked out without the reconciler: each scope's backends deduplicated
/// (first mention wins), and a backend active if any service has it active.
fn expected_served(
    desired: &[DesiredService],
) -> BTreeMap<(L4Addr, Scope), Vec<(L4Addr, BackendState)>> {
    let mut lists: BTreeMap<(L4Addr, Scope), Vec<(L4Addr, BackendState)>> = BTreeMap::new();
    let mut active: BTreeSet<L4Addr> = BTreeSet::new();
    for d in desired {
        let scopes = [
            (Scope::External, Some(&d.backends)),
            (Scope::Internal, d.internal.as_ref()),
        ];
        for (scope, backends) in scopes {
            let Some(backends) = backends else { continue };
            let mut seen = BTreeSet::new();
            let list: Vec<(L4Addr, BackendState)> = backends
                .iter()
                .filter(|(a, _)| seen.insert(*a))
                .copied()
                .collect();
            active.extend(
                list.iter()
                    .filter(|(_, s)| *s == BackendState::Active)
                    .map(|(a, _)| *a),
            );
            lists.insert((d.frontend, scope), list);
        }
    }
    lists
        .into_iter()
        .map(|(fe, list)| {
            let mut b: Vec<(L4Addr, BackendState)> = list
                .into_iter()
                .map(|(a, _)| {
                    let s = if active.contains(&a) {
                        BackendState::Active
                    } else {
                        BackendState::Terminating
                    };
                    (a, s)
                })
                .collect();
            b.sort();
            (fe, b)
        })
        .collect()
}

fn with_states(mut d: DesiredService, terminating: &[u8]) -> DesiredService {
    for (a, s) in &mut d.backends {
        if terminating.iter().any(|n| be(*n) == *a) {
            *s = BackendState::Terminating;
        }
    }
    d
}

#[test]
fn apply_keeps_the_invariant_through_upserts_and_removes() {
    let (mut rec, mut maps) = fresh();
    let r = apply_ok(
        &mut rec,
        &mut maps,
        &[up(svc("a", fe(1), &[1, 2])), up(svc("b", fe(2), &[3]))],
    );
    assert_eq!(counts(&r), (2, 0, 3, 0));
    assert_serves(&maps, &[svc("a", fe(1), &[1, 2]), svc("b", fe(2), &[3])]);
    let b = maps.view(&fe(2)).unwrap();
    let first = maps.view(&fe(1)).unwrap();
    maps.take_ops();

    // Grow: new backends first, then the new slots, then the frontend; b untouched.
    let r = apply_ok(&mut rec, &mut maps, &[up(svc("a", fe(1), &[1, 2, 4, 5]))]);
    assert_eq!(counts(&r), (1, 0, 2, 0));
    let grown = maps.view(&fe(1)).unwrap();
    assert_eq!(grown.backends, bes(&[1, 2, 4, 5]));
    assert_eq!(
        grown.ids[..2],
        first.ids[..],
        "kept backends keep their slots"
    );
    assert_eq!(grown.rev_nat, first.rev_nat);
    let ops = maps.take_ops();
    assert!(
        matches!(ops[..2], [Op::PutBackend(_, x), Op::PutBackend(_, y)] if x == be(4) && y == be(5))
    );
    let (id4, id5) = (
        maps.backend_id(&be(4)).unwrap(),
        maps.backend_id(&be(5)).unwrap(),
    );
    assert_eq!(
        ops[2..],
        [
            Op::PutMatch(id4, first.rev_nat),
            Op::PutMatch(id5, first.rev_nat),
            Op::PutService(fe(1), 3),
            Op::PutService(fe(1), 4),
            Op::PutService(fe(1), 0)
        ]
    );

    // Shrink: frontend first, then the slots beyond the count, then backends.
    let id1 = maps.backend_id(&be(1)).unwrap();
    let id2 = maps.backend_id(&be(2)).unwrap();
    let r = apply_ok(&mut rec, &mut maps, &[up(svc("a", fe(1), &[5, 4]))]);
    assert_eq!(counts(&r), (1, 0, 0, 2));
    assert_eq!(maps.slot_keys(&fe(1)), [0, 1, 2]);
    assert_eq!(maps.view(&fe(1)).unwrap().count, 2);
    let ops = maps.take_ops();
    let fe0 = ops
        .iter()
        .position(|o| *o == Op::PutService(fe(1), 0))
        .unwrap();
    for slot in [3, 4] {
        let del = ops
            .iter()
            .position(|o| *o == Op::DelService(fe(1), slot))
            .unwrap();
        assert!(fe0 < del, "slot {slot} deleted before the count shrank");
    }
    assert!(ops[ops.len() - 2..].contains(&Op::DelBackend(id1)));
    assert!(ops[ops.len() - 2..].contains(&Op::DelBackend(id2)));

    // Every backend replaced.
    let old_ids = maps.view(&fe(1)).unwrap().ids;
    let r = apply_ok(&mut rec, &mut maps, &[up(svc("a", fe(1), &[6, 7, 8]))]);
    assert_eq!(counts(&r), (1, 0, 3, 2));
    assert_eq!(maps.view(&fe(1)).unwrap().backends, bes(&[6, 7, 8]));
    for id in old_ids {
        assert!(!maps.backends.contains_key(&id));
    }
    let ops = maps.take_ops();
    assert!(
        matches!(ops.last(), Some(Op::DelBackend(_))),
        "backends go last"
    );

    // Empty, then remove: frontend first, then slots, then match entries,
    // then rev-NAT, then backends.
    apply_ok(&mut rec, &mut maps, &[up(svc("a", fe(1), &[6]))]);
    let a = maps.view(&fe(1)).unwrap();
    maps.take_ops();
    let r = apply_ok(&mut rec, &mut maps, &[rm(fe(1))]);
    assert_eq!(counts(&r), (0, 1, 0, 1));
    assert_eq!(
        maps.take_ops(),
        [
            Op::DelService(fe(1), 0),
            Op::DelService(fe(1), 1),
            Op::DelMatch(a.ids[0], a.rev_nat),
            Op::DelRevNat(a.rev_nat),
            Op::DelBackend(a.ids[0])
        ]
    );
    assert_eq!(maps.view(&fe(2)), Some(b), "b untouched throughout");

    // Removing what is not there, or upserting what is there, writes nothing.
    let r = apply_ok(
        &mut rec,
        &mut maps,
        &[rm(fe(1)), rm(fe(9)), up(svc("b", fe(2), &[3]))],
    );
    assert_eq!(counts(&r), (0, 0, 0, 0));
    assert_eq!(maps.take_ops(), Vec::<Op>::new());
    assert_settled(&mut rec, &mut maps, &[svc("b", fe(2), &[3])]);
}

#[test]
fn apply_removes_before_upserting_so_a_frontend_can_change_hands() {
    let mut maps = FakeMaps::with_capacity(5, 1024, 1024);
    let mut rec = Reconciler::new(Programmed::default());
    apply_ok(&mut rec, &mut maps, &[up(svc("a", fe(1), &[1, 2, 3]))]);
    // a goes and b (3 entries) comes: it fits only once a's 4 are gone.
    let r = apply_ok(
        &mut rec,
        &mut maps,
        &[up(svc("b", fe(2), &[4, 5])), rm(fe(1))],
    );
    assert_eq!(counts(&r), (1, 1, 2, 3));
    assert_serves(&maps, &[svc("b", fe(2), &[4, 5])]);
}

/// The property: applying only what changed leaves the maps serving what a
/// full reconcile of everything would, and a full reconcile afterwards has
/// nothing to do.
#[test]
fn apply_equals_full_reconcile_on_random_edits() {
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn chance(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }
    }

    let dns = L4Addr {
        ip: Ipv4Addr::new(10, 96, 0, 1),
        port: 80,
        proto: Proto::Udp, // same IP and port as fe(1), other protocol
    };
    let frontends: Vec<L4Addr> = (1..=6).map(fe).chain([dns]).collect();
    let udp_be = L4Addr {
        ip: Ipv4Addr::new(10, 244, 0, 1),
        port: 8080,
        proto: Proto::Udp,
    };
    let backends: Vec<L4Addr> = (1..=8).map(be).chain([udp_be]).collect();

    let mut shared_mixed_steps = 0;
    let mut state_only_steps = 0;
    let mut two_scope_steps = 0;
    for seed in [0x2545_f491_4f6c_dd1d_u64, 7, 0xdead_beef, 42] {
        let mut rng = XorShift(seed);
        let (mut inc_rec, mut inc) = fresh();
        let (mut full_rec, mut full) = fresh();
        let mut desired: BTreeMap<L4Addr, DesiredService> = BTreeMap::new();
        let random_backend = |rng: &mut XorShift| {
            let state = if rng.chance(30) {
                BackendState::Terminating
            } else {
                BackendState::Active
            };
            (backends[rng.below(backends.len())], state)
        };
        for step in 0..300 {
            let mut changed: BTreeSet<L4Addr> = BTreeSet::new();
            let mut only_states = true;
            for _ in 0..1 + rng.below(3) {
                let f = frontends[rng.below(frontends.len())];
                changed.insert(f);
                let name = format!(
                    "default/s{}",
                    frontends.iter().position(|x| *x == f).unwrap()
                );
                let cur = desired.get(&f).cloned();
                let op = rng.below(10);
                let Some(mut d) = cur.filter(|_| op >= 2) else {
                    only_states = false;
                    if op < 2 {
                        desired.remove(&f);
                    } else {
                        let n = rng.below(6);
                        let list = (0..n).map(|_| random_backend(&mut rng)).collect();
                        desired.insert(
                            f,
                            DesiredService::plain(name, f, ServiceKind::ClusterIP, list),
                        );
                    }
                    continue;
                };
                match op {
                    2..=3 => {
                        only_states = false;
                        let n = rng.below(6);
                        d.backends = (0..n).map(|_| random_backend(&mut rng)).collect();
                    }
                    4..=5 => {
                        only_states = false;
                        let b = random_backend(&mut rng);
                        let at = rng.below(d.backends.len() + 1);
                        d.backends.insert(at, b);
                    }
                    6 if !d.backends.is_empty() => {
                        only_states = false;
                        let at = rng.below(d.backends.len());
                        d.backends.remove(at);
                    }
                    7..=8 if !d.backends.is_empty() => {
                        let at = rng.below(d.backends.len());
                        let s = &mut d.backends[at].1;
                        *s = match s {
                            BackendState::Active => BackendState::Terminating,
                            BackendState::Terminating => BackendState::Active,
                        };
                    }
                    // Another scope shape: an internal backend set gained
                    // or lost, with other flags and affinity.
                    9 if rng.chance(60) => {
                        only_states = false;
                        d.internal = if d.internal.is_some() {
                            None
                        } else {
                            let n = rng.below(5);
                            Some((0..n).map(|_| random_backend(&mut rng)).collect())
                        };
                        d.kind = if d.internal.is_some() {
                            ServiceKind::NodePort
                        } else {
                            ServiceKind::ClusterIP
                        };
                        d.policy.external_local = d.internal.is_some() && rng.chance(50);
                        d.policy.internal_local = d.internal.is_some() && !d.policy.external_local;
                        d.affinity_timeout = rng.chance(50).then_some(60);
                    }
                    _ => d.backends.reverse(), // same set, other order
                }
                desired.insert(f, d);
            }
            if only_states {
                state_only_steps += 1;
            }
            let mut changes: Vec<Change> = changed
                .iter()
                .map(|f| match desired.get(f) {
                    Some(d) => up(d.clone()),
                    None => rm(*f),
                })
                .collect();
            if rng.chance(50) {
                changes.reverse();
            }
            let want: Vec<DesiredService> = desired.values().cloned().collect();
            let ctx = format!("seed {seed:#x} step {step}: {changes:#?}");

            let r = apply(&mut inc_rec, &mut inc, &changes);
            assert!(r.errors.is_empty(), "{ctx}: {:?}", r.errors);
            inc.assert_clean();
            assert_eq!(inc.unreferenced_backends(), Vec::<u32>::new(), "{ctx}");
            assert_eq!(&picture(&inc), inc_rec.programmed(), "{ctx}");

            let r = reconcile(&mut full_rec, &mut full, &want);
            assert!(r.errors.is_empty(), "{ctx}: {:?}", r.errors);
            full.assert_clean();

            let expected = expected_served(&want);
            assert_eq!(full.served(), expected, "{ctx}: full reconcile");
            assert_eq!(inc.served(), expected, "{ctx}: incremental apply");

            // A full reconcile on the incremental side changes nothing. Not on
            // every step for every seed, so that state the incremental path
            // keeps has to hold up over many applies in a row.
            if seed % 2 == 1 || step % 8 == 7 {
                assert_settled(&mut inc_rec, &mut inc, &want);
            }

            let mut users: BTreeMap<L4Addr, BTreeSet<BackendState>> = BTreeMap::new();
            for d in &want {
                two_scope_steps += usize::from(d.internal.is_some());
                for (a, s) in d.backends.iter().chain(d.internal.iter().flatten()) {
                    users.entry(*a).or_default().insert(*s);
                }
            }
            if users.values().any(|s| s.len() == 2) {
                shared_mixed_steps += 1;
            }
        }
        assert_settled(
            &mut inc_rec,
            &mut inc,
            &desired.values().cloned().collect::<Vec<_>>(),
        );
    }
    // The walk went where it matters.
    assert!(shared_mixed_steps > 100, "{shared_mixed_steps}");
    assert!(state_only_steps > 20, "{state_only_steps}");
    assert!(two_scope_steps > 300, "{two_scope_steps}");
}

#[test]
fn apply_of_an_upsert_that_does_not_fit_writes_nothing_for_it() {
    let mut maps = FakeMaps::with_capacity(6, 1024, 1024);
    let mut rec = Reconciler::new(Programmed::default());
    apply_ok(
        &mut rec,
        &mut maps,
        &[up(svc("a", fe(1), &[1, 2])), up(svc("b", fe(2), &[3, 4]))],
    );
    let b_before = maps.view(&fe(2)).unwrap();
    maps.take_ops();

    // b grows to 4 entries: 3 + 4 > 6. It keeps what it had.
    let r = apply(&mut rec, &mut maps, &[up(svc("b", fe(2), &[3, 4, 5]))]);
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert_error_mentions(
        &r,
        &[
            "default/b",
            "10.96.0.2:80/TCP",
            "maps full",
            "kept as it was",
        ],
    );
    assert_eq!(maps.take_ops(), Vec::<Op>::new(), "nothing written");
    maps.assert_clean();
    assert_eq!(maps.view(&fe(2)), Some(b_before.clone()));
    assert_eq!(maps.backend_id(&be(5)), None);
    assert_eq!(&picture(&maps), rec.programmed());

    // A new service that does not fit is not programmed at all, and the
    // others in the same change still are.
    let r = apply(
        &mut rec,
        &mut maps,
        &[up(svc("c", fe(3), &[6])), up(svc("a", fe(1), &[2, 1]))],
    );
    assert_error_mentions(&r, &["default/c", "maps full", "not programmed"]);
    assert!(maps.slot_keys(&fe(3)).is_empty());
    assert_eq!(maps.backend_id(&be(6)), None);
    assert!(
        !maps.ops.iter().any(|o| o.frontend() == Some(fe(3))),
        "not attempted"
    );
    maps.assert_clean();

    // Backends: room for 4, a and b hold 4.
    let mut maps2 = FakeMaps::with_capacity(1024, 4, 1024);
    let mut rec2 = Reconciler::new(Programmed::default());
    apply_ok(
        &mut rec2,
        &mut maps2,
        &[up(svc("a", fe(1), &[1, 2])), up(svc("b", fe(2), &[3, 4]))],
    );
    maps2.take_ops();
    let r = apply(&mut rec2, &mut maps2, &[up(svc("b", fe(2), &[3, 4, 5]))]);
    assert_error_mentions(&r, &["default/b", "maps full", "lb4_backends"]);
    assert_eq!(maps2.take_ops(), Vec::<Op>::new());
    // Sharing a's backend needs no new entry: fits.
    apply_ok(&mut rec2, &mut maps2, &[up(svc("b", fe(2), &[3, 4, 1]))]);

    // Reverse NAT: room for 2.
    let mut maps3 = FakeMaps::with_capacity(1024, 1024, 2);
    let mut rec3 = Reconciler::new(Programmed::default());
    apply_ok(
        &mut rec3,
        &mut maps3,
        &[up(svc("a", fe(1), &[1])), up(svc("b", fe(2), &[2]))],
    );
    let r = apply(&mut rec3, &mut maps3, &[up(svc("c", fe(3), &[3]))]);
    assert_error_mentions(&r, &["default/c", "maps full"]);
    assert!(maps3.view(&fe(3)).is_none());
    maps3.assert_clean();

    // Once a is gone, b grows (same apply: removals go first).
    apply_ok(
        &mut rec,
        &mut maps,
        &[up(svc("b", fe(2), &[3, 4, 5])), rm(fe(1))],
    );
    let b = maps.view(&fe(2)).unwrap();
    assert_eq!(b.backends, bes(&[3, 4, 5]));
    assert_eq!(b.ids[..2], b_before.ids[..]);
    assert_eq!(b.rev_nat, b_before.rev_nat);
}

#[test]
fn apply_keeps_a_shared_backend_while_another_service_uses_it() {
    let (mut rec, mut maps) = fresh();
    apply_ok(
        &mut rec,
        &mut maps,
        &[up(svc("a", fe(1), &[1, 2])), up(svc("b", fe(2), &[2, 3]))],
    );
    let id2 = maps.backend_id(&be(2)).unwrap();
    assert_eq!(maps.backends.len(), 3, "a shared backend is one entry");

    let r = apply_ok(&mut rec, &mut maps, &[rm(fe(1))]);
    assert_eq!(counts(&r), (0, 1, 0, 1));
    assert_eq!(maps.backend_id(&be(1)), None);
    assert_eq!(maps.backend_id(&be(2)), Some(id2), "still used by b");
    assert_eq!(maps.view(&fe(2)).unwrap().backends, bes(&[2, 3]));

    // a back; then 2 leaves b but stays in a.
    apply_ok(&mut rec, &mut maps, &[up(svc("a", fe(1), &[1, 2]))]);
    let id2 = maps.backend_id(&be(2)).unwrap();
    let r = apply_ok(&mut rec, &mut maps, &[up(svc("b", fe(2), &[3]))]);
    assert_eq!(counts(&r), (1, 0, 0, 0));
    assert_eq!(maps.backend_id(&be(2)), Some(id2));
    assert_settled(
        &mut rec,
        &mut maps,
        &[svc("a", fe(1), &[1, 2]), svc("b", fe(2), &[3])],
    );
}

#[test]
fn apply_keeps_a_shared_backend_active_while_any_service_has_it_active() {
    let (mut rec, mut maps) = fresh();
    let a = svc("a", fe(1), &[1, 2]);
    let b_term = with_states(svc("b", fe(2), &[2, 3]), &[2]);
    apply_ok(&mut rec, &mut maps, &[up(a.clone()), up(b_term.clone())]);
    assert_eq!(maps.state(&be(2)), Some(BackendState::Active));

    // Terminating in b after it was active there: a still has it active.
    let (mut rec2, mut maps2) = fresh();
    apply_ok(
        &mut rec2,
        &mut maps2,
        &[up(a.clone()), up(svc("b", fe(2), &[2, 3]))],
    );
    apply_ok(&mut rec2, &mut maps2, &[up(b_term.clone())]);
    assert_eq!(maps2.state(&be(2)), Some(BackendState::Active));

    // Both terminating: terminating, whichever order it happened in.
    let a_term = with_states(a.clone(), &[2]);
    apply_ok(&mut rec2, &mut maps2, &[up(a_term.clone())]);
    assert_eq!(maps2.state(&be(2)), Some(BackendState::Terminating));
    assert_settled(&mut rec2, &mut maps2, &[a_term.clone(), b_term.clone()]);
    apply_ok(&mut rec2, &mut maps2, &[up(a.clone())]);
    assert_eq!(maps2.state(&be(2)), Some(BackendState::Active));

    // The service that had it active goes: terminating in what is left.
    apply_ok(&mut rec, &mut maps, &[rm(fe(1))]);
    assert_eq!(maps.state(&be(2)), Some(BackendState::Terminating));
    assert_settled(&mut rec, &mut maps, &[b_term.clone()]);

    // Or drops it.
    apply_ok(&mut rec, &mut maps, &[up(a.clone())]);
    assert_eq!(maps.state(&be(2)), Some(BackendState::Active));
    apply_ok(&mut rec, &mut maps, &[up(svc("a", fe(1), &[1]))]);
    assert_eq!(maps.state(&be(2)), Some(BackendState::Terminating));
    assert_settled(&mut rec, &mut maps, &[svc("a", fe(1), &[1]), b_term]);
}

/// After a full reconcile (as at agent start) the incremental path knows which
/// service wants which backend active.
#[test]
fn apply_after_reconcile_and_restart_knows_backend_states() {
    let a = svc("a", fe(1), &[1, 2]);
    let b_term = with_states(svc("b", fe(2), &[2, 3]), &[2]);
    let (mut rec, mut maps) = fresh();
    reconcile_ok(&mut rec, &mut maps, &[a.clone(), b_term.clone()]);
    apply_ok(&mut rec, &mut maps, &[rm(fe(1))]);
    assert_eq!(maps.state(&be(2)), Some(BackendState::Terminating));

    let (mut rec, mut maps) = fresh();
    reconcile_ok(&mut rec, &mut maps, &[a.clone(), b_term.clone()]);
    let mut rec = Reconciler::new(picture(&maps));
    reconcile_ok(&mut rec, &mut maps, &[a, b_term.clone()]);
    apply_ok(&mut rec, &mut maps, &[rm(fe(1))]);
    assert_eq!(maps.state(&be(2)), Some(BackendState::Terminating));
    assert_settled(&mut rec, &mut maps, &[b_term]);
}

/// Every write of a busy incremental change fails in turn, once or from then
/// on: the invariant holds throughout, the failure is reported, nothing is
/// left that no slot names (unless deleting it was what failed), and the full
/// reconcile the agent then runs ends in the desired state.
#[test]
fn any_failed_write_of_apply_is_safe_and_recovered() {
    let start = [
        svc("a", fe(1), &[1, 2, 3]),
        svc("b", fe(2), &[3, 4]),
        svc("c", fe(3), &[5]),
        svc("e", fe(5), &[9, 10, 11, 12]),
    ];
    let changes = [
        up(with_states(svc("a", fe(1), &[2, 6, 7, 1]), &[7])),
        rm(fe(2)),
        up(svc("c", fe(3), &[])),
        up(svc("d", fe(4), &[4, 8])),
        up(svc("e", fe(5), &[12, 9])),
    ];
    let target = [
        with_states(svc("a", fe(1), &[2, 6, 7, 1]), &[7]),
        svc("c", fe(3), &[]),
        svc("d", fe(4), &[4, 8]),
        svc("e", fe(5), &[12, 9]),
    ];
    let setup = || {
        let (mut rec, mut maps) = fresh();
        apply_ok(
            &mut rec,
            &mut maps,
            &start.iter().cloned().map(up).collect::<Vec<_>>(),
        );
        maps.take_ops();
        (rec, maps)
    };
    let (mut rec, mut maps) = setup();
    apply_ok(&mut rec, &mut maps, &changes);
    assert_serves(&maps, &target);
    let writes = maps.take_ops().len();
    assert!(writes > 20, "a busy change: {writes} writes");

    for sticky in [false, true] {
        for n in 0..writes {
            let (mut rec, mut maps) = setup();
            maps.fail_at(n, sticky);
            let r = rec.apply(&changes, &mut maps);
            let ctx = format!("write #{n} failing (sticky: {sticky})");
            assert!(
                maps.violations.is_empty(),
                "{ctx}: {}",
                maps.violations.join("\n")
            );
            assert!(!maps.failed.is_empty(), "{ctx}: nothing failed");
            assert!(!r.errors.is_empty(), "{ctx}: failure not reported");
            if !sticky && !matches!(maps.failed[0], Op::DelBackend(_)) {
                assert_eq!(
                    maps.unreferenced_backends(),
                    Vec::<u32>::new(),
                    "{ctx}: backends left behind ({:?})",
                    maps.failed
                );
            }

            maps.heal();
            let r = rec.reconcile(&target, &mut maps);
            assert!(r.errors.is_empty(), "{ctx}: recovery errors {:?}", r.errors);
            maps.assert_clean();
            assert_serves(&maps, &target);
            assert_eq!(maps.served(), expected_served(&target), "{ctx}");
            assert_settled(&mut rec, &mut maps, &target);
        }
    }
}

/// A backend that stays in a service keeps its affinity-match entry through
/// any slot move, so a UDP socket on it is never re-balanced; the entry of a
/// backend that leaves goes only after no slot names it.
#[test]
fn affinity_match_follows_membership_not_slots() {
    let (mut rec, mut maps) = fresh();
    reconcile_ok(&mut rec, &mut maps, &[svc("a", fe(1), &[1, 2, 3, 4])]);
    let before = maps.view(&fe(1)).unwrap();
    maps.take_ops();
    // be(1) sits in slot 1: removing it moves be(4) from slot 4 into the hole.
    apply_ok(&mut rec, &mut maps, &[up(svc("a", fe(1), &[2, 3, 4]))]);
    let after = maps.view(&fe(1)).unwrap();
    assert_eq!(after.ids[0], before.ids[3], "the tail moved into the hole");
    let ops = maps.take_ops();
    let gone = before.ids[0];
    assert_eq!(
        ops.iter()
            .filter(|o| matches!(o, Op::DelMatch(..)))
            .collect::<Vec<_>>(),
        [&Op::DelMatch(gone, before.rev_nat)],
        "only the leaving backend loses its match entry: {ops:?}"
    );
    let del = ops
        .iter()
        .position(|o| matches!(o, Op::DelMatch(..)))
        .unwrap();
    let fe0 = ops
        .iter()
        .position(|o| *o == Op::PutService(fe(1), 0))
        .unwrap();
    assert!(fe0 < del, "match entry deleted while a slot still named it");
    assert!(!ops.iter().any(|o| matches!(o, Op::PutMatch(..))));
}

/// What a crash right after writing a new service's reverse-NAT entry (or its
/// match entries) leaves is found at restart and swept by the first full
/// reconcile; nothing else is touched.
#[test]
fn restart_sweeps_leftover_rev_nat_and_match_entries() {
    let (mut rec, mut maps) = fresh();
    reconcile_ok(&mut rec, &mut maps, &[svc("a", fe(1), &[1, 2])]);
    let a = maps.view(&fe(1)).unwrap();
    // The crashed agent's half-written service b: rev-NAT 9 and one match.
    maps.rev_nat.insert(9, lb4_reverse_nat::value(&fe(2)));
    maps.matches.insert((a.ids[0], 9));
    let p = picture(&maps);
    assert_eq!(p.orphan_rev_nats, BTreeSet::from([9]));
    assert_eq!(p.orphan_matches, BTreeSet::from([(a.ids[0], 9)]));
    let mut rec = Reconciler::new(p);
    maps.take_ops();
    let desired = [svc("a", fe(1), &[1, 2]), svc("b", fe(2), &[3])];
    reconcile_ok(&mut rec, &mut maps, &desired);
    let ops = maps.take_ops();
    assert_eq!(
        ops[..2],
        [Op::DelMatch(a.ids[0], 9), Op::DelRevNat(9)],
        "{ops:?}"
    );
    assert_eq!(maps.view(&fe(1)), Some(a), "a untouched");
    assert_serves(&maps, &desired);
    // Nothing left to sweep: the next restart finds a clean picture.
    let p = picture(&maps);
    assert!(p.orphan_rev_nats.is_empty() && p.orphan_matches.is_empty());
}

// ---------------------------------------------------------------------------
// Kinds, policies, two scopes and session affinity (issue 8, section 2)
// ---------------------------------------------------------------------------

mod scopes {
    use super::*;
    use crate::{maps::lb4_services::Head, model::TrafficPolicy};
    use lash_common::{
        SVC_FLAG2_INT_LOCAL_SCOPE, SVC_FLAG2_TWO_SCOPES, SVC_FLAG_AFFINITY, SVC_FLAG_EXTERNAL_IP,
        SVC_FLAG_EXT_LOCAL_SCOPE, SVC_FLAG_LOADBALANCER, SVC_FLAG_NODEPORT, SVC_FLAG_ROUTABLE,
    };

    fn actives(ns: &[u8]) -> Vec<(L4Addr, BackendState)> {
        bes(ns)
            .into_iter()
            .map(|b| (b, BackendState::Active))
            .collect()
    }

    /// Service "default/NAME" at `frontend` of `kind`, external backends
    /// `ext`, internal ones `int` (two scopes) if given.
    fn scoped(
        name: &str,
        frontend: L4Addr,
        kind: ServiceKind,
        ext: &[u8],
        int: Option<&[u8]>,
        policy: TrafficPolicy,
        affinity: Option<u32>,
    ) -> DesiredService {
        DesiredService {
            internal: int.map(actives),
            policy,
            affinity_timeout: affinity,
            ..DesiredService::plain(format!("default/{name}"), frontend, kind, actives(ext))
        }
    }

    const EXT_LOCAL: TrafficPolicy = TrafficPolicy {
        external_local: true,
        internal_local: false,
    };
    const INT_LOCAL: TrafficPolicy = TrafficPolicy {
        external_local: false,
        internal_local: true,
    };
    const CLUSTER: TrafficPolicy = TrafficPolicy {
        external_local: false,
        internal_local: false,
    };

    /// Backends of one scope, as a set.
    fn in_scope(maps: &FakeMaps, fe: &L4Addr, scope: Scope) -> Option<BTreeSet<L4Addr>> {
        Some(maps.view_in(fe, scope)?.backends.into_iter().collect())
    }

    /// The datapath serves exactly `desired`, both scopes.
    #[track_caller]
    fn assert_serves_scopes(maps: &FakeMaps, desired: &[DesiredService]) {
        for d in desired {
            let set = |v: &[(L4Addr, BackendState)]| v.iter().map(|(a, _)| *a).collect();
            assert_eq!(
                in_scope(maps, &d.frontend, Scope::External),
                Some(set(&d.backends)),
                "{} external",
                d.name
            );
            assert_eq!(
                in_scope(maps, &d.frontend, Scope::Internal),
                d.internal.as_deref().map(set),
                "{} internal",
                d.name
            );
            assert_eq!(
                maps.view(&d.frontend).unwrap().head,
                Head::of(d),
                "{}",
                d.name
            );
        }
    }

    /// One row per frontend shape: what slot 0 of each scope says, and which
    /// backends each scope and lb4_affinity_match hold.
    #[test]
    fn each_shape_gives_ciliums_entries() {
        struct Row {
            what: &'static str,
            svc: DesiredService,
            flags: u8,
            flags2: u8,
            timeout: u32,
            ext: &'static [u8],
            int: Option<&'static [u8]>,
            /// lb4_affinity_match: the scope connections are served from.
            matches: &'static [u8],
        }
        let np = ServiceKind::NodePort;
        let rows = [
            Row {
                what: "ClusterIP",
                svc: scoped(
                    "a",
                    fe(1),
                    ServiceKind::ClusterIP,
                    &[1, 2],
                    None,
                    CLUSTER,
                    None,
                ),
                flags: 0,
                flags2: 0,
                timeout: 0,
                ext: &[1, 2],
                int: None,
                matches: &[1, 2],
            },
            Row {
                what: "ClusterIP, internalTrafficPolicy Local",
                svc: scoped(
                    "a",
                    fe(1),
                    ServiceKind::ClusterIP,
                    &[1],
                    None,
                    INT_LOCAL,
                    None,
                ),
                flags: 0,
                flags2: SVC_FLAG2_INT_LOCAL_SCOPE,
                timeout: 0,
                ext: &[1],
                int: None,
                matches: &[1],
            },
            Row {
                what: "NodePort with affinity",
                svc: scoped("a", fe(1), np, &[1, 2], None, CLUSTER, Some(10800)),
                flags: SVC_FLAG_NODEPORT | SVC_FLAG_ROUTABLE | SVC_FLAG_AFFINITY,
                flags2: 0,
                timeout: 10800,
                ext: &[1, 2],
                int: None,
                matches: &[1, 2],
            },
            Row {
                what: "NodePort, externalTrafficPolicy Local: two scopes",
                svc: scoped("a", fe(1), np, &[1], Some(&[1, 2, 3]), EXT_LOCAL, None),
                flags: SVC_FLAG_NODEPORT | SVC_FLAG_ROUTABLE | SVC_FLAG_EXT_LOCAL_SCOPE,
                flags2: SVC_FLAG2_TWO_SCOPES,
                timeout: 0,
                ext: &[1],
                int: Some(&[1, 2, 3]),
                matches: &[1, 2, 3],
            },
            Row {
                what: "ExternalIP, internalTrafficPolicy Local, affinity: two scopes",
                svc: scoped(
                    "a",
                    fe(1),
                    ServiceKind::ExternalIP,
                    &[1, 2, 3],
                    Some(&[3]),
                    INT_LOCAL,
                    Some(60),
                ),
                flags: SVC_FLAG_EXTERNAL_IP | SVC_FLAG_ROUTABLE | SVC_FLAG_AFFINITY,
                flags2: SVC_FLAG2_TWO_SCOPES | SVC_FLAG2_INT_LOCAL_SCOPE,
                timeout: 60,
                ext: &[1, 2, 3],
                int: Some(&[3]),
                matches: &[3],
            },
            Row {
                what: "LoadBalancer, Local with no local endpoint: an empty internal scope",
                svc: scoped(
                    "a",
                    fe(1),
                    ServiceKind::LoadBalancer,
                    &[1, 2],
                    Some(&[]),
                    INT_LOCAL,
                    None,
                ),
                flags: SVC_FLAG_LOADBALANCER | SVC_FLAG_ROUTABLE,
                flags2: SVC_FLAG2_TWO_SCOPES | SVC_FLAG2_INT_LOCAL_SCOPE,
                timeout: 0,
                ext: &[1, 2],
                int: Some(&[]),
                matches: &[],
            },
        ];
        for r in rows {
            let (mut rec, mut maps) = fresh();
            reconcile_ok(&mut rec, &mut maps, std::slice::from_ref(&r.svc));
            let ext = maps.view_in(&fe(1), Scope::External).unwrap();
            let want = Head {
                flags: r.flags,
                flags2: r.flags2,
                affinity_timeout: r.timeout,
            };
            assert_eq!(ext.head, want, "{}", r.what);
            assert_eq!(ext.backends, bes(r.ext), "{}", r.what);
            let slot0 = maps.services[&lb4_services::key(&fe(1), 0)];
            assert_eq!(slot0.backend_id, r.timeout, "{}: timeout in slot 0", r.what);
            match r.int {
                None => assert!(
                    maps.view_in(&fe(1), Scope::Internal).is_none(),
                    "{}",
                    r.what
                ),
                Some(int) => {
                    let v = maps.view_in(&fe(1), Scope::Internal).unwrap();
                    assert_eq!(v.head, want, "{}: both scopes' slot 0 agree", r.what);
                    assert_eq!(v.rev_nat, ext.rev_nat, "{}", r.what);
                    assert_eq!(v.backends, bes(int), "{}", r.what);
                }
            }
            let matched: BTreeSet<u32> = maps.matches.iter().map(|(id, _)| *id).collect();
            let want: BTreeSet<u32> = r
                .matches
                .iter()
                .map(|n| maps.backend_id(&be(*n)).unwrap())
                .collect();
            assert_eq!(matched, want, "{}: match entries", r.what);
            // Every backend of either scope is in lb4_backends.
            let all: BTreeSet<L4Addr> = maps
                .backends
                .values()
                .map(|b| lb4_backends::addr_of(b).unwrap())
                .collect();
            let want: BTreeSet<L4Addr> = bes(r.ext)
                .into_iter()
                .chain(bes(r.int.unwrap_or(&[])))
                .collect();
            assert_eq!(all, want, "{}: backends", r.what);
            // Nothing more to write.
            maps.take_ops();
            reconcile_ok(&mut rec, &mut maps, std::slice::from_ref(&r.svc));
            assert_eq!(maps.take_ops(), Vec::<Op>::new(), "{}: settled", r.what);
        }
    }

    /// One scope to two and back, through a reconcile and through
    /// incremental applies: the internal scope is whole before the flag goes
    /// on, and the flag is off before the scope goes (the fake checks after
    /// every write).
    #[test]
    fn gaining_and_losing_the_internal_scope_keeps_the_datapath_whole() {
        let np = ServiceKind::NodePort;
        let one = scoped("a", fe(1), np, &[1, 2, 3], None, CLUSTER, None);
        let two = scoped("a", fe(1), np, &[1], Some(&[1, 2, 3, 4]), EXT_LOCAL, None);
        let two_moved = scoped("a", fe(1), np, &[5], Some(&[2, 4, 5]), EXT_LOCAL, Some(30));
        let (mut rec, mut maps) = fresh();
        for step in [&one, &two, &two_moved, &one, &two_moved] {
            reconcile_ok(&mut rec, &mut maps, std::slice::from_ref(step));
            assert_serves_scopes(&maps, std::slice::from_ref(step));
            rec.apply(&[Change::Upsert(step.clone())], &mut maps);
            maps.assert_clean();
        }
        // The flag goes on after the internal slot 0, and off before it goes.
        let (mut rec, mut maps) = fresh();
        reconcile_ok(&mut rec, &mut maps, std::slice::from_ref(&one));
        maps.take_ops();
        reconcile_ok(&mut rec, &mut maps, std::slice::from_ref(&two));
        let ops = maps.take_ops();
        let pos = |op: &Op| ops.iter().position(|o| o == op).unwrap();
        assert!(
            pos(&Op::PutInternal(fe(1), 0)) < pos(&Op::PutService(fe(1), 0)),
            "{ops:?}"
        );
        reconcile_ok(&mut rec, &mut maps, std::slice::from_ref(&one));
        let ops = maps.take_ops();
        let pos = |op: &Op| ops.iter().position(|o| o == op).unwrap();
        assert!(
            pos(&Op::PutService(fe(1), 0)) < pos(&Op::DelInternal(fe(1), 0)),
            "{ops:?}"
        );
        // Removing it removes both scopes.
        reconcile_ok(&mut rec, &mut maps, &[]);
        assert!(maps.services.is_empty());
        assert!(maps.matches.is_empty());
    }

    /// A write failing anywhere in a transition between scope shapes leaves
    /// a datapath that serves, and the next reconcile finishes the job.
    #[test]
    fn any_failed_write_between_scope_shapes_is_safe_and_recovered() {
        let np = ServiceKind::NodePort;
        let start = [
            scoped("a", fe(1), np, &[1, 2, 3], None, CLUSTER, None),
            scoped("b", fe(2), np, &[4], Some(&[4, 5, 6]), EXT_LOCAL, Some(10)),
        ];
        let target = [
            // Gains an internal scope.
            scoped("a", fe(1), np, &[1], Some(&[1, 2, 7]), EXT_LOCAL, Some(60)),
            // Loses its internal scope.
            scoped("b", fe(2), np, &[4, 5], None, CLUSTER, None),
            // New with two scopes.
            scoped(
                "c",
                fe(3),
                ServiceKind::ExternalIP,
                &[8, 9],
                Some(&[9]),
                INT_LOCAL,
                None,
            ),
        ];
        let setup = || {
            let (mut rec, mut maps) = fresh();
            reconcile_ok(&mut rec, &mut maps, &start);
            maps.take_ops();
            (rec, maps)
        };
        let (mut rec, mut maps) = setup();
        reconcile_ok(&mut rec, &mut maps, &target);
        assert_serves_scopes(&maps, &target);
        let writes = maps.take_ops().len();
        assert!(writes > 20, "a busy transition: {writes} writes");
        for sticky in [false, true] {
            for n in 0..writes {
                let (mut rec, mut maps) = setup();
                maps.fail_at(n, sticky);
                let r = rec.reconcile(&target, &mut maps);
                let ctx = format!("write #{n} failing (sticky: {sticky})");
                assert!(
                    maps.violations.is_empty(),
                    "{ctx}: {}",
                    maps.violations.join("\n")
                );
                assert!(!r.errors.is_empty(), "{ctx}: failure not reported");
                maps.heal();
                let r = rec.reconcile(&target, &mut maps);
                assert!(r.errors.is_empty(), "{ctx}: recovery errors {:?}", r.errors);
                maps.assert_clean();
                assert_serves_scopes(&maps, &target);
                assert_eq!(&picture(&maps), rec.programmed(), "{ctx}");
                maps.take_ops();
                rec.reconcile(&target, &mut maps);
                assert_eq!(maps.take_ops(), Vec::<Op>::new(), "{ctx}: not settled");
            }
        }
    }

    /// A restarted agent reads both scopes back and writes nothing.
    #[test]
    fn restart_reads_both_scopes_back() {
        let desired = [
            scoped(
                "a",
                fe(1),
                ServiceKind::NodePort,
                &[1],
                Some(&[1, 2]),
                EXT_LOCAL,
                Some(60),
            ),
            scoped(
                "b",
                fe(2),
                ServiceKind::ClusterIP,
                &[3],
                None,
                INT_LOCAL,
                None,
            ),
        ];
        let (mut rec, mut maps) = fresh();
        reconcile_ok(&mut rec, &mut maps, &desired);
        maps.take_ops();
        let mut again = Reconciler::new(picture(&maps));
        reconcile_ok(&mut again, &mut maps, &desired);
        assert_eq!(maps.take_ops(), Vec::<Op>::new());
    }
}
