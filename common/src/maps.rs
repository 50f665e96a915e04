//! The one table of every map lash pins: name, kind, key and value size, and
//! default capacity. The kernel side sizes its map definitions from it, the
//! agent's loader checks pinned maps against it, and `agent status`, the CLI
//! and `agent uninstall` walk it. Adding a map is one entry here (plus its
//! definition in ebpf/src/maps.rs).

use core::mem::size_of;

use crate::ct::{CtEntry, Ipv4CtTuple};
use crate::endpoint::{EndpointInfo, EndpointKey, IpcacheKey, RemoteEndpointInfo};
use crate::lb::*;
use crate::metrics::{MetricsKey, MetricsValue};
use crate::tunnel::{TunnelKey, TunnelValue};

/// The BPF map type, as `bpftool map show` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    Hash,
    /// A hash whose least recently used entries make room for new ones.
    LruHash,
    /// One value per CPU and key: a reader sums.
    PerCpuHash,
    PerCpuArray,
    /// Longest-prefix match; created with BPF_F_NO_PREALLOC.
    LpmTrie,
    /// Socket-local storage: one value per socket, freed with the socket.
    /// Keyed by a socket fd from user space; has no capacity (max_entries 0).
    SkStorage,
}

impl MapKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            MapKind::Hash => "hash",
            MapKind::LruHash => "lru_hash",
            MapKind::PerCpuHash => "percpu_hash",
            MapKind::PerCpuArray => "percpu_array",
            MapKind::LpmTrie => "lpm_trie",
            MapKind::SkStorage => "sk_storage",
        }
    }
}

/// Who decides a map's capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sizing {
    /// `agent run --lb-map-max` (default: `max_entries`).
    LbMapMax,
    /// Always `max_entries`.
    Fixed,
}

/// One pinned map.
#[derive(Clone, Copy, Debug)]
pub struct MapDef {
    /// The pinned name under --bpf-root, as bpftool shows it.
    pub name: &'static str,
    pub kind: MapKind,
    pub key_size: u32,
    pub value_size: u32,
    /// Default capacity, compiled into the object; the loader may override it.
    pub max_entries: u32,
    pub sizing: Sizing,
}

const fn def<K, V>(name: &'static str, kind: MapKind, max_entries: u32, sizing: Sizing) -> MapDef {
    MapDef {
        name,
        kind,
        key_size: size_of::<K>() as u32,
        value_size: size_of::<V>() as u32,
        max_entries,
        sizing,
    }
}

/// Default capacity of the maps `--lb-map-max` sizes.
pub const LB_MAP_MAX_DEFAULT: u32 = 65536;

/// (frontend, slot) -> service entry (slot 0) or backend id.
pub const LB4_SERVICES: MapDef = def::<Lb4Key, Lb4Service>(
    "lb4_services",
    MapKind::Hash,
    LB_MAP_MAX_DEFAULT,
    Sizing::LbMapMax,
);
/// backend id -> backend address and state.
pub const LB4_BACKENDS: MapDef = def::<u32, Lb4Backend>(
    "lb4_backends",
    MapKind::Hash,
    LB_MAP_MAX_DEFAULT,
    Sizing::LbMapMax,
);
/// rev-NAT index -> frontend.
pub const LB4_REVERSE_NAT: MapDef =
    def::<u16, Lb4ReverseNat>("lb4_reverse_nat", MapKind::Hash, 65536, Sizing::Fixed);
/// Per socket: the services it was sent to and the backends it got (the UDP
/// choice and the reverse view for recvmsg/getpeername). Lives exactly as
/// long as the socket, so nothing is sized or evicted.
pub const LB4_SOCK_STATE: MapDef =
    def::<i32, SockLbState>("lb4_sock_state", MapKind::SkStorage, 0, Sizing::Fixed);
/// Counters of what the socket programs could not do (`SOCK_EV_*` indexes),
/// one u64 per CPU: a reader sums them.
pub const LB4_SOCK_EVENTS: MapDef = def::<u32, u64>(
    "lb4_sock_events",
    MapKind::PerCpuArray,
    SOCK_EV_COUNT,
    Sizing::Fixed,
);
/// (backend id, rev-NAT index) -> 0: the backend is one of that service's.
pub const LB4_AFFINITY_MATCH: MapDef = def::<Lb4AffinityMatch, u8>(
    "lb4_affinity_match",
    MapKind::Hash,
    LB_MAP_MAX_DEFAULT,
    Sizing::LbMapMax,
);
/// (client, service) -> the backend it got last and when: ClientIP session
/// affinity. Written by the programs (Cilium's `lb4_affinity`); an LRU, so
/// clients of the past make room without the agent's help, and an entry is
/// honoured only while its backend is still in the service (lb4_affinity_match)
/// and the service's timeout has not passed.
pub const LB4_AFFINITY: MapDef = def::<Lb4AffinityKey, Lb4AffinityValue>(
    "lb4_affinity",
    MapKind::LruHash,
    LB_MAP_MAX_DEFAULT,
    Sizing::LbMapMax,
);

/// Local address -> endpoint (a pod on this node: ifindex, MACs, id) or the
/// node's own address (flag host). Sized as Cilium's default.
pub const LXC: MapDef =
    def::<EndpointKey, EndpointInfo>("lxc", MapKind::Hash, 65535, Sizing::Fixed);

/// Address prefix -> what it is (security identity, the node carrying it).
/// Longest prefix wins; sized as Cilium's default.
pub const IPCACHE: MapDef =
    def::<IpcacheKey, RemoteEndpointInfo>("ipcache", MapKind::LpmTrie, 512000, Sizing::Fixed);
/// Connection tracking of TCP flows (see `ct` for the tuple convention).
pub const CT4_GLOBAL: MapDef =
    def::<Ipv4CtTuple, CtEntry>("ct4_global", MapKind::LruHash, 524288, Sizing::Fixed);
/// Connection tracking of every other protocol.
pub const CT_ANY4_GLOBAL: MapDef =
    def::<Ipv4CtTuple, CtEntry>("ct_any4_global", MapKind::LruHash, 262144, Sizing::Fixed);
/// Packets and bytes the tc programs forwarded or dropped, by reason and
/// direction, per CPU.
pub const METRICS: MapDef =
    def::<MetricsKey, MetricsValue>("metrics", MapKind::PerCpuHash, 1024, Sizing::Fixed);

/// A remote node's pod-range base -> that node's address: where the tunnel
/// goes when a remote pod's ipcache entry names no node. Sized as Cilium's.
pub const TUNNEL_MAP: MapDef =
    def::<TunnelKey, TunnelValue>("tunnel_map", MapKind::Hash, 65536, Sizing::Fixed);

/// Every map, in the order listings show them.
pub const ALL: &[MapDef] = &[
    LB4_SERVICES,
    LB4_BACKENDS,
    LB4_REVERSE_NAT,
    LB4_AFFINITY_MATCH,
    LB4_AFFINITY,
    LB4_SOCK_STATE,
    LB4_SOCK_EVENTS,
    LXC,
    IPCACHE,
    TUNNEL_MAP,
    CT4_GLOBAL,
    CT_ANY4_GLOBAL,
    METRICS,
];
