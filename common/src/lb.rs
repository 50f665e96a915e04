//! Keys and values of the socket load-balancing maps (see `maps` for the
//! table of maps themselves).

use core::mem::size_of;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// `scope` in [`Lb4Key`]: the backends of the external traffic policy; the
/// only scope of a service without [`SVC_FLAG2_TWO_SCOPES`].
pub const LB_LOOKUP_SCOPE_EXT: u8 = 0;
/// `scope` in [`Lb4Key`]: the backends of the internal traffic policy, present
/// only for a service whose slot 0 in the external scope carries
/// [`SVC_FLAG2_TWO_SCOPES`]. Traffic from inside the cluster (every socket and
/// pod lash sees) looks here.
pub const LB_LOOKUP_SCOPE_INT: u8 = 1;

/// Key of lb4_services: one entry per (frontend, slot). Slot 0 is the service
/// itself; slots 1..=count each name one backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lb4Key {
    /// Service VIP, network byte order.
    pub address: u32,
    /// Service port, network byte order.
    pub dport: u16,
    /// 0 for the frontend entry, 1..=count for backend slots. Host order.
    pub backend_slot: u16,
    pub proto: u8,
    pub scope: u8,
    pub pad: [u8; 2],
}

/// Value of lb4_services.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Lb4Service {
    /// In a backend slot: the backend id. In slot 0: the session-affinity
    /// timeout in seconds when the service has [`SVC_FLAG_AFFINITY`], else 0.
    pub backend_id: u32,
    /// In slot 0: number of backend slots. Host order.
    pub count: u16,
    /// Index into lb4_reverse_nat, network byte order.
    pub rev_nat_index: u16,
    pub flags: u8,
    pub flags2: u8,
    pub qcount: u16,
}

/// Service flags (`Lb4Service::flags`), Cilium's bit values.
pub const SVC_FLAG_EXTERNAL_IP: u8 = 1 << 0;
pub const SVC_FLAG_NODEPORT: u8 = 1 << 1;
pub const SVC_FLAG_EXT_LOCAL_SCOPE: u8 = 1 << 2;
pub const SVC_FLAG_HOSTPORT: u8 = 1 << 3;
pub const SVC_FLAG_AFFINITY: u8 = 1 << 4;
pub const SVC_FLAG_LOADBALANCER: u8 = 1 << 5;
pub const SVC_FLAG_ROUTABLE: u8 = 1 << 6;
pub const SVC_FLAG_SOURCE_RANGE: u8 = 1 << 7;

/// Second service flags byte (`Lb4Service::flags2`), Cilium's bit values.
pub const SVC_FLAG2_LOCALREDIRECT: u8 = 1 << 0;
pub const SVC_FLAG2_NAT_46X64: u8 = 1 << 1;
pub const SVC_FLAG2_L7LOADBALANCER: u8 = 1 << 2;
pub const SVC_FLAG2_LOOPBACK: u8 = 1 << 3;
/// internalTrafficPolicy=Local: the internal backends are this node's only.
pub const SVC_FLAG2_INT_LOCAL_SCOPE: u8 = 1 << 4;
/// The external and internal policies differ: the internal scope
/// ([`LB_LOOKUP_SCOPE_INT`]) holds the backends for traffic from inside.
pub const SVC_FLAG2_TWO_SCOPES: u8 = 1 << 5;

/// Value of lb4_backends, keyed by a host-order `u32` backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Lb4Backend {
    /// Network byte order.
    pub address: u32,
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    /// One of the `BE_STATE_*` values.
    pub flags: u8,
    pub cluster_id: u8,
    pub pad: [u8; 3],
}

pub const BE_STATE_ACTIVE: u8 = 0;
pub const BE_STATE_TERMINATING: u8 = 1;
pub const BE_STATE_QUARANTINED: u8 = 2;
pub const BE_STATE_MAINTENANCE: u8 = 3;

/// Value of lb4_reverse_nat, keyed by a network-order `u16` rev_nat_index: the
/// frontend a translated socket reports back to its application. Packed to 6
/// bytes, as Cilium's `struct lb4_reverse_nat` is.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Lb4ReverseNat {
    pub address: u32,
    pub port: u16,
}

/// How many services one socket keeps a translation for at a time. A socket
/// that talks to more (an unconnected UDP socket sending to many VIPs) reuses
/// its own oldest entry; no other socket can take its entries away.
pub const SOCK_LB_ENTRIES: usize = 8;

/// One service a socket was sent to, and the backend it got: the forward
/// choice (kept for UDP, so every datagram of the socket goes to one backend)
/// and the reverse view (so recvmsg/getpeername show the frontend).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockLbEntry {
    /// Frontend address, network order; 0 marks an unused entry (0.0.0.0 is
    /// never a Service).
    pub frontend_address: u32,
    /// Frontend port, network order.
    pub frontend_port: u16,
    /// The frontend's rev-NAT index, network order: the reverse view holds
    /// only while lb4_reverse_nat still maps it to this frontend.
    pub rev_nat_index: u16,
    /// Backend address, network order.
    pub backend_address: u32,
    /// Backend port, network order.
    pub backend_port: u16,
    /// `SOCK_LB_*` flags.
    pub flags: u16,
    /// Host order; checked against lb4_affinity_match before a UDP socket
    /// reuses it.
    pub backend_id: u32,
}

/// The socket moved on from this backend (its own backend left the service):
/// the entry serves only the reverse view of replies still on their way.
pub const SOCK_LB_RETIRED: u16 = 1;

/// Value of lb4_sock_state, a socket-local storage map: the socket's
/// translations live and die with the socket itself, so no amount of other
/// sockets' churn can evict them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockLbState {
    pub entries: [SockLbEntry; SOCK_LB_ENTRIES],
    /// Which entry to reuse next once all are taken (round robin).
    pub next: u32,
    pub pad: u32,
}

/// Index (u32 key) into lb4_sock_events: a socket the programs translated but
/// could not give per-socket state (no memory for its storage). Its connect or
/// datagram still proceeds; its replies and getpeername() show the backend,
/// and a UDP socket picks a backend per datagram.
pub const SOCK_EV_NO_STATE: u32 = 0;
/// A socket used more than [`SOCK_LB_ENTRIES`] services and reused its
/// oldest entry.
pub const SOCK_EV_ENTRY_REUSED: u32 = 1;
/// Number of counters in lb4_sock_events.
pub const SOCK_EV_COUNT: u32 = 2;

/// Key of lb4_affinity_match: present while backend `backend_id` is one of the
/// service `rev_nat_id`'s backends. Written by the agent; the programs check it
/// before reusing a socket's earlier choice, so a choice outlives slot moves but
/// never the backend's membership (Cilium's `lb_affinity_match`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
pub struct Lb4AffinityMatch {
    /// Host order.
    pub backend_id: u32,
    /// Network order, like everywhere else.
    pub rev_nat_id: u16,
    pub pad: u16,
}

/// Key of lb4_affinity: one client of one service with session affinity
/// (Cilium's `lb4_affinity_key`). Socket LB knows the client by its network
/// namespace's cookie (at connect() the source address is not chosen yet);
/// the per-packet path by its address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
pub struct Lb4AffinityKey {
    /// With [`AFFINITY_F_NETNS`]: the netns cookie (host order). Without: the
    /// client's IPv4 address, network order, in the low four bytes in memory
    /// (the union Cilium has), the other four zero.
    pub client_id: u64,
    /// The service's rev-NAT index, network order.
    pub rev_nat_id: u16,
    /// [`AFFINITY_F_NETNS`] or 0.
    pub flags: u8,
    pub pad1: u8,
    pub pad2: u32,
}

/// `Lb4AffinityKey::flags`: `client_id` is a netns cookie.
pub const AFFINITY_F_NETNS: u8 = 1;

/// Value of lb4_affinity (Cilium's `lb_affinity_val`): the backend a client
/// got last, and when (monotonic seconds, the conntrack clock). Valid while
/// `last_used + timeout` has not passed and lb4_affinity_match still has the
/// backend in the service.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Lb4AffinityValue {
    pub last_used: u64,
    /// Host order.
    pub backend_id: u32,
    pub pad: u32,
}

// The layouts are a contract with bpftool users and with the kernel verifier:
// a change here must be deliberate.
const _: () = assert!(size_of::<Lb4Key>() == 12);
const _: () = assert!(size_of::<Lb4Service>() == 12);
const _: () = assert!(size_of::<Lb4Backend>() == 12);
const _: () = assert!(size_of::<Lb4ReverseNat>() == 6);
const _: () = assert!(size_of::<Lb4AffinityMatch>() == 8);
const _: () = assert!(size_of::<Lb4AffinityKey>() == 16);
const _: () = assert!(size_of::<Lb4AffinityValue>() == 16);
const _: () = assert!(size_of::<SockLbEntry>() == 20);
const _: () = assert!(size_of::<SockLbState>() == 20 * SOCK_LB_ENTRIES + 8);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all types are repr(C), Copy, and have explicit padding fields, so
    // every byte pattern is a valid value and no byte is uninitialised.
    unsafe impl aya::Pod for Lb4Key {}
    unsafe impl aya::Pod for Lb4Service {}
    unsafe impl aya::Pod for Lb4Backend {}
    unsafe impl aya::Pod for Lb4ReverseNat {}
    unsafe impl aya::Pod for Lb4AffinityMatch {}
    unsafe impl aya::Pod for Lb4AffinityKey {}
    unsafe impl aya::Pod for Lb4AffinityValue {}
    unsafe impl aya::Pod for SockLbEntry {}
    unsafe impl aya::Pod for SockLbState {}
}
