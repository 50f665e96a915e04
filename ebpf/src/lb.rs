//! Service lookup and backend selection, shared by the socket programs.

use aya_ebpf::helpers::bpf_get_prandom_u32;
use lash_common::{
    Lb4AffinityMatch, Lb4Backend, Lb4Key, Lb4Service, BE_STATE_ACTIVE, LB_LOOKUP_SCOPE_EXT,
};

use crate::maps::{LB4_AFFINITY_MATCH, LB4_BACKENDS, LB4_SERVICES};

/// The frontend entry (slot 0) of the service at `address:port/proto`, if any.
/// `address` and `port` are in network byte order.
#[inline(always)]
pub fn lookup_service(address: u32, port: u16, proto: u8) -> Option<(Lb4Key, Lb4Service)> {
    let key = Lb4Key {
        address,
        dport: port,
        backend_slot: 0,
        proto,
        scope: LB_LOOKUP_SCOPE_EXT,
        pad: [0; 2],
    };
    // SAFETY: the value is copied out at once; a concurrent update can at worst
    // give a value from just before or after it, both valid services.
    let svc = unsafe { LB4_SERVICES.get(&key) }.copied()?;
    Some((key, svc))
}

/// The backend id in `slot` (1..=count) of the service `frontend`.
#[inline(always)]
pub fn backend_id_in_slot(frontend: &Lb4Key, slot: u16) -> Option<u32> {
    let key = Lb4Key {
        backend_slot: slot,
        ..*frontend
    };
    // SAFETY: see lookup_service.
    unsafe { LB4_SERVICES.get(&key) }.map(|s| s.backend_id)
}

/// A slot chosen uniformly at random among `count` slots (count > 0).
#[inline(always)]
pub fn random_slot(count: u16) -> u16 {
    // SAFETY: a helper without arguments.
    let r = unsafe { bpf_get_prandom_u32() };
    (r % u32::from(count)) as u16 + 1
}

/// The backend with `id`, if it exists and takes new connections.
#[inline(always)]
pub fn lookup_backend(id: u32) -> Option<Lb4Backend> {
    // SAFETY: see lookup_service.
    let be = unsafe { LB4_BACKENDS.get(&id) }.copied()?;
    // The agent puts terminating backends in slots only when a service has
    // nothing else; any other state means "do not use".
    if be.flags == BE_STATE_ACTIVE || be.flags == lash_common::BE_STATE_TERMINATING {
        Some(be)
    } else {
        None
    }
}

/// The backend with `id`, if it is still one of the backends of the service
/// with `rev_nat_index` (network order) and takes new connections. Which slot
/// it sits in does not matter: slots move when other backends leave.
#[inline(always)]
pub fn backend_of_service(id: u32, rev_nat_index: u16) -> Option<Lb4Backend> {
    let key = Lb4AffinityMatch {
        backend_id: id,
        rev_nat_id: rev_nat_index,
        pad: 0,
    };
    // SAFETY: only presence is read.
    unsafe { LB4_AFFINITY_MATCH.get(&key) }?;
    lookup_backend(id)
}
