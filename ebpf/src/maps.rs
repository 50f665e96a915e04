//! All maps of the object. Pinned by name under the agent's --bpf-root, so they
//! outlive the agent process and a restarted agent finds them as it left them.
//! Names and default sizes come from lash_common::maps, the one table of maps.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap},
};
use lash_common::{
    maps as def, Ipv4RevnatEntry, Ipv4RevnatTuple, Lb4AffinityKey, Lb4AffinityMatch,
    Lb4AffinityVal, Lb4Backend, Lb4Key, Lb4ReverseNat, Lb4Service,
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

/// (socket cookie, backend) -> frontend, so recvmsg/getpeername show the VIP.
#[map(name = "lb4_reverse_sk")]
pub static LB4_REVERSE_SK: LruHashMap<Ipv4RevnatTuple, Ipv4RevnatEntry> =
    LruHashMap::pinned(def::LB4_REVERSE_SK.max_entries, 0);

/// (socket cookie, frontend) -> backend: one backend per UDP socket and service.
#[map(name = "lb4_affinity")]
pub static LB4_AFFINITY: LruHashMap<Lb4AffinityKey, Lb4AffinityVal> =
    LruHashMap::pinned(def::LB4_AFFINITY.max_entries, 0);

/// (backend id, rev-NAT index) -> 0 while the backend belongs to the service.
/// Written by the agent only.
#[map(name = "lb4_affinity_match")]
pub static LB4_AFFINITY_MATCH: HashMap<Lb4AffinityMatch, u8> =
    HashMap::pinned(def::LB4_AFFINITY_MATCH.max_entries, 0);
