//! Connection tracking of IPv4 flows in `ct4_global` (TCP) and
//! `ct_any4_global` (the rest). The tuple convention is described in
//! lash_common::ct; in short, an entry's key is the packet that created it:
//! its addresses as they are, its four port bytes as they are (so the `dport`
//! field holds the source port), and a direction flag.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_coarse_ns, maps::LruHashMap};
use lash_common::{
    ct::{
        CtEntry, Ipv4CtTuple, CT_F_RX_CLOSING, CT_F_SEEN_NON_SYN, CT_F_TX_CLOSING,
        CT_LIFETIME_NONTCP, CT_LIFETIME_TCP, CT_LIFETIME_TCP_CLOSE, CT_LIFETIME_TCP_SYN,
        TUPLE_F_OUT,
    },
    metrics::DROP_CT_CREATE_FAILED,
};

use crate::{
    ipv4::{Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    maps::{CT4_GLOBAL, CT_ANY4_GLOBAL},
};

/// Which way a packet goes relative to the entry it is counted on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// The way of the packet that created the entry.
    Forward,
    /// The opposite way.
    Reply,
}

/// The outcome of a lookup. Pointers are to the map's value, valid for the
/// rest of the program run.
pub enum Ct {
    New,
    Established(*mut CtEntry),
    Reply(*mut CtEntry),
}

/// The map for the packet's protocol.
#[inline(always)]
pub fn map(p: &Packet) -> &'static LruHashMap<Ipv4CtTuple, CtEntry> {
    if p.is_tcp() {
        &CT4_GLOBAL
    } else {
        &CT_ANY4_GLOBAL
    }
}

/// The key of an entry created by packet `p` (see the module comment).
#[inline(always)]
pub fn tuple(p: &Packet, flags: u8) -> Ipv4CtTuple {
    Ipv4CtTuple {
        daddr: p.daddr,
        saddr: p.saddr,
        dport: p.sport,
        sport: p.dport,
        nexthdr: p.proto,
        flags,
    }
}

/// The key of the OUT entry `p` would be a reply to: both ends swapped.
#[inline(always)]
pub fn reply_tuple(p: &Packet) -> Ipv4CtTuple {
    Ipv4CtTuple {
        daddr: p.saddr,
        saddr: p.daddr,
        dport: p.dport,
        sport: p.sport,
        nexthdr: p.proto,
        flags: TUPLE_F_OUT,
    }
}

/// Looks `p` up as a reply to an OUT entry first (replies take precedence, as
/// in Cilium), then, if `forward`, as a packet of an OUT entry of its own.
#[inline(always)]
pub fn lookup(p: &Packet, forward: bool) -> Ct {
    let m = map(p);
    // A bare SYN opens a connection: it is never a reply, and skipping that
    // lookup is a third of a new flow's conntrack cost. (A simultaneous open,
    // where both ends send one, then has an entry per direction: harmless.)
    let opening = p.is_tcp() && p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if !opening {
        if let Some(e) = m.get_ptr_mut(&reply_tuple(p)) {
            return Ct::Reply(e);
        }
    }
    if forward {
        if let Some(e) = m.get_ptr_mut(&tuple(p, TUPLE_F_OUT)) {
            return Ct::Established(e);
        }
    }
    Ct::New
}

/// Monotonic seconds, the clock of `CtEntry::lifetime`. The coarse clock
/// (CLOCK_MONOTONIC_COARSE: the same time base, advanced once a tick) is
/// plenty for lifetimes in seconds, and cheaper per packet than the precise
/// one.
#[inline(always)]
pub fn now() -> u32 {
    // SAFETY: a helper without arguments.
    (unsafe { bpf_ktime_get_coarse_ns() } / 1_000_000_000) as u32
}

/// Counts `p` on entry `e` and sets its flags and expiry, Cilium's way: a TCP
/// flow lives 60 s until a packet without SYN shows the handshake is done,
/// then 8000 s; after FIN in both directions (or one RST, which ends both)
/// 10 s; a new SYN on a closed flow opens it again. Other protocols: 60 s
/// from the last packet.
#[inline(always)]
pub fn account(e: &mut CtEntry, p: &Packet, dir: Dir, now: u32) {
    e.packets += 1;
    e.bytes += u64::from(p.len);
    if !p.is_tcp() {
        e.lifetime = now + CT_LIFETIME_NONTCP;
        return;
    }
    let f = p.tcp_flags;
    let both_closing = CT_F_RX_CLOSING | CT_F_TX_CLOSING;
    if dir == Dir::Forward && f & (TCP_SYN | TCP_ACK) == TCP_SYN && e.flags & both_closing != 0 {
        // Port reuse: the closed flow starts over.
        e.flags &= !(both_closing | CT_F_SEEN_NON_SYN);
        e.tx_flags_seen = 0;
        e.rx_flags_seen = 0;
    }
    match dir {
        Dir::Forward => e.tx_flags_seen |= f,
        Dir::Reply => e.rx_flags_seen |= f,
    }
    if f & TCP_RST != 0 {
        e.flags |= both_closing;
    } else if f & TCP_FIN != 0 {
        e.flags |= match dir {
            Dir::Forward => CT_F_TX_CLOSING,
            Dir::Reply => CT_F_RX_CLOSING,
        };
    }
    if f & TCP_SYN == 0 {
        e.flags |= CT_F_SEEN_NON_SYN;
    }
    let lifetime = if e.flags & both_closing == both_closing {
        CT_LIFETIME_TCP_CLOSE
    } else if e.flags & CT_F_SEEN_NON_SYN != 0 {
        CT_LIFETIME_TCP
    } else {
        CT_LIFETIME_TCP_SYN
    };
    e.lifetime = now + lifetime;
}

/// Counts `p` on an existing entry.
#[inline(always)]
pub fn refresh(e: *mut CtEntry, p: &Packet, dir: Dir, now: u32) {
    // SAFETY: a pointer into the map's value, from a lookup of this run.
    // Concurrent runs on other CPUs may update the same entry: counters can
    // lose an increment, never become invalid.
    account(unsafe { &mut *e }, p, dir, now);
}

/// Creates the entry keyed `key` for packet `p`, its first, with `flags`
/// set from the start (CT_F_LB_LOOPBACK).
#[inline(always)]
pub fn create(
    key: &Ipv4CtTuple,
    p: &Packet,
    rev_nat_index: u16,
    backend_id: u32,
    src_sec_id: u32,
    flags: u16,
    now: u32,
) -> Result<(), i32> {
    let mut e = CtEntry {
        backend_id: u64::from(backend_id),
        rev_nat_index,
        src_sec_id,
        flags,
        ..CtEntry::default()
    };
    account(&mut e, p, Dir::Forward, now);
    match map(p).insert(key, &e, u64::from(BPF_NOEXIST)) {
        Ok(()) => Ok(()),
        // Another CPU created it first, with the same content: fine.
        Err(_) if map(p).get_ptr(key).is_some() => Ok(()),
        Err(_) => Err(DROP_CT_CREATE_FAILED as i32),
    }
}
