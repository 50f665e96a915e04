//! Keys and values of the socket load-balancing maps (see `maps` for the
//! table of maps themselves).

use core::mem::size_of;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// `scope` in [`Lb4Key`]: external traffic policy backends.
pub const LB_LOOKUP_SCOPE_EXT: u8 = 0;

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
    /// In a backend slot: the backend id. In slot 0: unused (affinity timeout).
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

/// Key of lb4_reverse_sk: which backend a given socket was sent to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Ipv4RevnatTuple {
    pub cookie: u64,
    /// Backend address, network order.
    pub address: u32,
    /// Backend port, network order.
    pub port: u16,
    pub pad: u16,
}

/// Value of lb4_reverse_sk: the frontend that socket asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Ipv4RevnatEntry {
    pub address: u32,
    pub port: u16,
    /// Network order, like everywhere else.
    pub rev_nat_index: u16,
}

/// Key of lb4_affinity: the backend an (unconnected) UDP socket was given for a
/// frontend, so every datagram of the socket goes to the same backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Lb4AffinityKey {
    pub cookie: u64,
    /// Frontend address, network order.
    pub address: u32,
    /// Frontend port, network order.
    pub dport: u16,
    pub proto: u8,
    pub pad: u8,
}

/// Value of lb4_affinity.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Lb4AffinityVal {
    pub backend_id: u32,
    /// The slot the backend was found in. The choice stands only while that slot
    /// still holds this backend and is within the service's count, so a backend
    /// taken out of a service is never used again for it.
    pub slot: u16,
    pub pad: u16,
}

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

// The layouts are a contract with bpftool users and with the kernel verifier:
// a change here must be deliberate.
const _: () = assert!(size_of::<Lb4Key>() == 12);
const _: () = assert!(size_of::<Lb4Service>() == 12);
const _: () = assert!(size_of::<Lb4Backend>() == 12);
const _: () = assert!(size_of::<Lb4ReverseNat>() == 6);
const _: () = assert!(size_of::<Ipv4RevnatTuple>() == 16);
const _: () = assert!(size_of::<Ipv4RevnatEntry>() == 8);
const _: () = assert!(size_of::<Lb4AffinityKey>() == 16);
const _: () = assert!(size_of::<Lb4AffinityVal>() == 8);
const _: () = assert!(size_of::<Lb4AffinityMatch>() == 8);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all types are repr(C), Copy, and have explicit padding fields, so
    // every byte pattern is a valid value and no byte is uninitialised.
    unsafe impl aya::Pod for Lb4Key {}
    unsafe impl aya::Pod for Lb4Service {}
    unsafe impl aya::Pod for Lb4Backend {}
    unsafe impl aya::Pod for Lb4ReverseNat {}
    unsafe impl aya::Pod for Ipv4RevnatTuple {}
    unsafe impl aya::Pod for Ipv4RevnatEntry {}
    unsafe impl aya::Pod for Lb4AffinityKey {}
    unsafe impl aya::Pod for Lb4AffinityVal {}
    unsafe impl aya::Pod for Lb4AffinityMatch {}
}
