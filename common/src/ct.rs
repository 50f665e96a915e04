//! Keys and values of the connection tracking maps (`ct4_global` for TCP,
//! `ct_any4_global` for the rest), and the lifetimes the programs and the
//! agent's expiry sweep agree on.
//!
//! # The tuple convention
//!
//! An entry is keyed by the packet that created it, `S:s -> D:d`:
//!
//! | field | holds |
//! |---|---|
//! | `daddr` (bytes 0..4) | D, the packet's destination address |
//! | `saddr` (bytes 4..8) | S, the packet's source address |
//! | `dport` (bytes 8..10) | s, the packet's **source** port |
//! | `sport` (bytes 10..12) | d, the packet's **destination** port |
//! | `nexthdr` | the IP protocol |
//! | `flags` | `TUPLE_F_OUT` or `TUPLE_F_SERVICE` |
//!
//! The addresses are the packet's as they are; the port fields hold the L4
//! header's first four bytes as they are, which is why the field named
//! `dport` holds the source port (Cilium's layout, read the same way by its
//! tools). All in network order; protocols without ports have 0 in both.
//! A listing prints an entry as `saddr:dport -> daddr:sport`, the flow's
//! own direction.
//!
//! - OUT entries are created by from-container for what a pod sends, after
//!   service translation (D:d is the backend), with the service's
//!   `rev_nat_index` (0 if not translated) and the sender's identity in
//!   `src_sec_id`.
//! - A packet `S:s -> D:d` is a reply to the OUT entry keyed
//!   `{daddr: S, saddr: D, dport: d, sport: s, flags: OUT}`; that lookup
//!   comes first (both programs), the packet's own OUT key second
//!   (from-container only). Replies count on the entry they answer and
//!   create none.
//! - SERVICE entries are keyed by the packet before translation (D:d is the
//!   frontend) and carry the chosen `backend_id` (host order) and the
//!   service's `rev_nat_index`.
//!
//! `packets`/`bytes` count both directions; `tx_flags_seen` and
//! `rx_flags_seen` OR the TCP flags seen forward and in replies.

use core::mem::{offset_of, size_of};

/// `flags` of an [`Ipv4CtTuple`]: the direction the tuple was stored for.
pub const TUPLE_F_OUT: u8 = 0;
pub const TUPLE_F_IN: u8 = 1;
pub const TUPLE_F_RELATED: u8 = 2;
/// A service entry: remembers the backend chosen for a frontend, so every
/// packet of the flow goes to the same one and replies are translated back.
pub const TUPLE_F_SERVICE: u8 = 4;

/// Key of the conntrack maps (see the module comment for what each field
/// holds). Packed to 14 bytes as bpftool users know it.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct Ipv4CtTuple {
    /// Network order.
    pub daddr: u32,
    /// Network order.
    pub saddr: u32,
    /// Network order.
    pub dport: u16,
    /// Network order.
    pub sport: u16,
    pub nexthdr: u8,
    pub flags: u8,
}

/// `flags` of a [`CtEntry`].
pub const CT_F_RX_CLOSING: u16 = 1 << 0;
pub const CT_F_TX_CLOSING: u16 = 1 << 1;
pub const CT_F_LB_LOOPBACK: u16 = 1 << 3;
pub const CT_F_SEEN_NON_SYN: u16 = 1 << 4;
pub const CT_F_NODE_PORT: u16 = 1 << 5;
pub const CT_F_FROM_TUNNEL: u16 = 1 << 10;

/// The source a pod's packet is given when the service it reached picked
/// the pod itself as backend ("hairpin"): a packet from and to the same
/// address would be dropped by the pod's own stack as a martian. Cilium's
/// choice of link-local address, so captures read the same. As the address
/// sits in a packet (network order in memory).
pub const LB_LOOPBACK_V4: u32 = u32::from_ne_bytes([169, 254, 42, 1]);

/// Value of the conntrack maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CtEntry {
    pub reserved0: u64,
    /// Service entries: the chosen backend.
    pub backend_id: u64,
    pub packets: u64,
    pub bytes: u64,
    /// Monotonic seconds (bpf_ktime_get_coarse_ns / 1e9) at which the entry expires.
    pub lifetime: u32,
    /// `CT_F_*`.
    pub flags: u16,
    /// Network order; 0 when the flow was not translated.
    pub rev_nat_index: u16,
    pub ifindex: u16,
    pub tx_flags_seen: u8,
    pub rx_flags_seen: u8,
    pub src_sec_id: u32,
    pub last_tx_report: u32,
    pub last_rx_report: u32,
}

/// Lifetimes in seconds, Cilium's defaults: an established TCP flow, a TCP
/// flow that has not yet seen a non-SYN packet, a TCP flow closed in both
/// directions (FIN each way, or one RST), anything else. An entry's
/// `lifetime` is the monotonic second of its last packet plus one of these.
pub const CT_LIFETIME_TCP: u32 = 8000;
pub const CT_LIFETIME_TCP_SYN: u32 = 60;
pub const CT_LIFETIME_TCP_CLOSE: u32 = 10;
pub const CT_LIFETIME_NONTCP: u32 = 60;

const _: () = assert!(size_of::<Ipv4CtTuple>() == 14);
const _: () = assert!(size_of::<CtEntry>() == 56);
const _: () = assert!(offset_of!(Ipv4CtTuple, nexthdr) == 12);
const _: () = assert!(offset_of!(CtEntry, lifetime) == 32);
const _: () = assert!(offset_of!(CtEntry, rev_nat_index) == 38);
const _: () = assert!(offset_of!(CtEntry, src_sec_id) == 44);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: repr(C) (the tuple packed), Copy, explicit padding: every byte
    // pattern is a valid value and no byte is uninitialised.
    unsafe impl aya::Pod for Ipv4CtTuple {}
    unsafe impl aya::Pod for CtEntry {}
}
