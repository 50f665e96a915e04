//! All maps of the object. Pinned by name under the agent's --bpf-root, so they
//! outlive the agent process and a restarted agent finds them as it left them.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap},
};
use lash_common::{
    Ipv4RevnatEntry, Ipv4RevnatTuple, Lb4AffinityKey, Lb4AffinityVal, Lb4Backend, Lb4Key,
    Lb4ReverseNat, Lb4Service, LB4_AFFINITY_MAX, LB4_BACKENDS_MAX, LB4_REVERSE_NAT_MAX,
    LB4_REVERSE_SK_MAX, LB4_SERVICES_MAX,
};

/// (frontend, slot) -> service entry or backend id.
#[map(name = "lb4_services")]
pub static LB4_SERVICES: HashMap<Lb4Key, Lb4Service> = HashMap::pinned(LB4_SERVICES_MAX, 0);

/// backend id -> backend address.
#[map(name = "lb4_backends")]
pub static LB4_BACKENDS: HashMap<u32, Lb4Backend> = HashMap::pinned(LB4_BACKENDS_MAX, 0);

/// rev_nat_index (network order) -> frontend.
#[map(name = "lb4_reverse_nat")]
pub static LB4_REVERSE_NAT: HashMap<u16, Lb4ReverseNat> =
    HashMap::pinned(LB4_REVERSE_NAT_MAX, 0);

/// (socket cookie, backend) -> frontend, so recvmsg/getpeername show the VIP.
#[map(name = "lb4_reverse_sk")]
pub static LB4_REVERSE_SK: LruHashMap<Ipv4RevnatTuple, Ipv4RevnatEntry> =
    LruHashMap::pinned(LB4_REVERSE_SK_MAX, 0);

/// (socket cookie, frontend) -> backend: one backend per UDP socket and service.
#[map(name = "lb4_affinity")]
pub static LB4_AFFINITY: LruHashMap<Lb4AffinityKey, Lb4AffinityVal> =
    LruHashMap::pinned(LB4_AFFINITY_MAX, 0);
