//! All maps of the object. Pinned by name under the agent's --bpf-root, so they
//! outlive the agent process and a restarted agent finds them as it left them.
//! Names and default sizes come from lash_common::maps, the one table of maps.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{bpf_map_type::BPF_MAP_TYPE_SK_STORAGE, BPF_F_NO_PREALLOC},
    macros::{btf_map, map},
    maps::{HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap},
};
use lash_common::{
    ct::{CtEntry, Ipv4CtTuple},
    endpoint::{EndpointInfo, EndpointKey, RemoteEndpointInfo},
    maps as def,
    metrics::{MetricsKey, MetricsValue},
    tunnel::{TunnelKey, TunnelValue},
    Lb4AffinityKey, Lb4AffinityMatch, Lb4AffinityValue, Lb4Backend, Lb4Key, Lb4ReverseNat,
    Lb4Service, SockLbState,
};

/// (frontend, slot) -> service entry or backend id.
#[map(name = "lb4_services")]
pub static LB4_SERVICES: HashMap<Lb4Key, Lb4Service> =
    HashMap::pinned(def::LB4_SERVICES.max_entries, 0);

/// backend id -> backend address.
#[map(name = "lb4_backends")]
pub static LB4_BACKENDS: HashMap<u32, Lb4Backend> =
    HashMap::pinned(def::LB4_BACKENDS.max_entries, 0);

/// rev_nat_index (network order) -> frontend.
#[map(name = "lb4_reverse_nat")]
pub static LB4_REVERSE_NAT: HashMap<u16, Lb4ReverseNat> =
    HashMap::pinned(def::LB4_REVERSE_NAT.max_entries, 0);

/// (backend id, rev-NAT index) -> 0 while the backend belongs to the service.
/// Written by the agent only.
#[map(name = "lb4_affinity_match")]
pub static LB4_AFFINITY_MATCH: HashMap<Lb4AffinityMatch, u8> =
    HashMap::pinned(def::LB4_AFFINITY_MATCH.max_entries, 0);

/// (client, service) -> the backend it got last and when: session affinity.
/// Written by the programs, the one service map they write; an LRU, so old
/// clients make room by themselves.
#[map(name = "lb4_affinity")]
pub static LB4_AFFINITY: LruHashMap<Lb4AffinityKey, Lb4AffinityValue> =
    LruHashMap::pinned(def::LB4_AFFINITY.max_entries, 0);

/// Local address -> how to deliver to it (pods) or that it is the node's own.
/// Read by the ARP responder and the IPv4 path; the agent's endpoint writer
/// comes with the CNI ADD (the programs never write it).
#[map(name = "lxc")]
pub static LXC: HashMap<EndpointKey, EndpointInfo> = HashMap::pinned(def::LXC.max_entries, 0);

/// Address prefix -> identity and tunnel endpoint. aya's LPM key is the
/// prefix length followed by the data: the 20 bytes of `IpcacheKey` after its
/// `prefixlen` (see `ipcache::lookup`). Written by the agent only.
#[map(name = "ipcache")]
pub static IPCACHE: LpmTrie<[u8; 20], RemoteEndpointInfo> =
    LpmTrie::pinned(def::IPCACHE.max_entries, 0);

/// A remote node's pod-range base -> the node's address: the tunnel's
/// destination when a remote pod's ipcache entry names none. Written by the
/// agent only.
#[map(name = "tunnel_map")]
pub static TUNNEL_MAP: HashMap<TunnelKey, TunnelValue> =
    HashMap::pinned(def::TUNNEL_MAP.max_entries, 0);

/// Conntrack of TCP flows.
#[map(name = "ct4_global")]
pub static CT4_GLOBAL: LruHashMap<Ipv4CtTuple, CtEntry> =
    LruHashMap::pinned(def::CT4_GLOBAL.max_entries, 0);

/// Conntrack of everything but TCP.
#[map(name = "ct_any4_global")]
pub static CT_ANY4_GLOBAL: LruHashMap<Ipv4CtTuple, CtEntry> =
    LruHashMap::pinned(def::CT_ANY4_GLOBAL.max_entries, 0);

/// Forwarded and dropped packets by reason and direction, per CPU.
#[map(name = "metrics")]
pub static METRICS: PerCpuHashMap<MetricsKey, MetricsValue> =
    PerCpuHashMap::pinned(def::METRICS.max_entries, 0);

/// Counters of what the socket programs had to do without (`SOCK_EV_*`), per
/// CPU: the BPF target has no atomic add to offer, and a reader sums anyway.
#[map(name = "lb4_sock_events")]
pub static LB4_SOCK_EVENTS: PerCpuArray<u64> =
    PerCpuArray::pinned(def::LB4_SOCK_EVENTS.max_entries, 0);

/// Per socket: its services and backends, freed by the kernel with the socket.
#[btf_map(name = "lb4_sock_state")]
pub static LB4_SOCK_STATE: SockStorage<SockLbState> = SockStorage::new();

/// Adds one to counter `ev` of lb4_sock_events.
#[inline(always)]
pub fn count_event(ev: u32) {
    if let Some(p) = LB4_SOCK_EVENTS.get_ptr_mut(ev) {
        // SAFETY: this CPU's copy of a map value, valid while the map lives.
        // A program preempted on this CPU by another run could lose an
        // increment: the counts are for operators, not for decisions.
        unsafe { *p += 1 };
    }
}

/// A socket-local storage map, declared the BTF way: the kernel creates this
/// kind only with the BTF ids of its key and value, which the legacy `maps`
/// section cannot carry. aya-ebpf has such a declaration too, but without the
/// `pinning` field; ours is pinned by name like every other map, so a
/// restarted agent's programs see the state sockets already have.
///
/// The fields are never read: the loader reads their BTF types, where each
/// array length encodes one attribute.
#[repr(C)]
pub struct SockStorage<V> {
    r#type: *const [i32; BPF_MAP_TYPE_SK_STORAGE as usize],
    key: *const i32,
    value: *const V,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
    /// LIBBPF_PIN_BY_NAME.
    pinning: *const [i32; 1],
}

// SAFETY: the struct holds only null placeholders that are never dereferenced;
// the kernel owns the map's data.
unsafe impl<V> Sync for SockStorage<V> {}

impl<V> SockStorage<V> {
    pub const fn new() -> Self {
        SockStorage {
            r#type: core::ptr::null(),
            key: core::ptr::null(),
            value: core::ptr::null(),
            max_entries: core::ptr::null(),
            map_flags: core::ptr::null(),
            pinning: core::ptr::null(),
        }
    }

    /// The map as the helpers take it (the loader patches the reference).
    #[inline(always)]
    pub fn as_ptr(&self) -> *mut c_void {
        (self as *const Self).cast_mut().cast()
    }
}
