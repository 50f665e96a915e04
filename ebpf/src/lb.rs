//! Service lookup and backend selection, shared by the socket programs and the
//! per-packet path.

use aya_ebpf::helpers::bpf_get_prandom_u32;
use lash_common::{
    Lb4AffinityKey, Lb4AffinityMatch, Lb4AffinityValue, Lb4Backend, Lb4Key, Lb4Service,
    BE_STATE_ACTIVE, LB_LOOKUP_SCOPE_EXT, LB_LOOKUP_SCOPE_INT, SVC_FLAG2_TWO_SCOPES,
    SVC_FLAG_AFFINITY,
};

use crate::maps::{LB4_AFFINITY, LB4_AFFINITY_MATCH, LB4_BACKENDS, LB4_SERVICES};

/// The frontend entry (slot 0) of the service at `address:port/proto` as
/// traffic from inside the cluster sees it, if any. `address` and `port` are
/// in network byte order.
///
/// Every connection lash translates starts inside the cluster (a socket on
/// this node, a pod's packet), so a service with two scopes is served from
/// its internal scope: the returned key carries that scope, and the slots are
/// looked up under it. A two-scope service whose internal entry is missing
/// comes back with no backends, so the caller refuses rather than letting the
/// frontend through untranslated.
#[inline(always)]
pub fn lookup_service(address: u32, port: u16, proto: u8) -> Option<(Lb4Key, Lb4Service)> {
    let mut key = Lb4Key {
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
    if svc.flags2 & SVC_FLAG2_TWO_SCOPES == 0 {
        return Some((key, svc));
    }
    key.scope = LB_LOOKUP_SCOPE_INT;
    // SAFETY: as above.
    let internal = unsafe { LB4_SERVICES.get(&key) }
        .copied()
        .unwrap_or(Lb4Service { count: 0, ..svc });
    Some((key, internal))
}

/// The backend id in `slot` (1..=count) of the service `frontend` (in the
/// scope the key names).
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

/// The affinity key of a client of `svc`, if the service has ClientIP
/// session affinity. `client_id` is a netns cookie (`netns`) or an IPv4
/// address as it sits in the packet.
#[inline(always)]
pub fn affinity_client(svc: &Lb4Service, client_id: u64, netns: bool) -> Option<Lb4AffinityKey> {
    if svc.flags & SVC_FLAG_AFFINITY == 0 {
        return None;
    }
    Some(Lb4AffinityKey {
        client_id,
        rev_nat_id: svc.rev_nat_index,
        flags: if netns {
            lash_common::AFFINITY_F_NETNS
        } else {
            0
        },
        pad1: 0,
        pad2: 0,
    })
}

/// The backend `client` got last from `svc`, while its affinity holds: the
/// service's timeout (slot 0's `backend_id`) has not passed since its last new
/// connection, and the backend is still one of the service's.
#[inline(always)]
fn affinity_backend(
    client: &Lb4AffinityKey,
    svc: &Lb4Service,
    now: u64,
) -> Option<(u32, Lb4Backend)> {
    // SAFETY: the value is copied out at once.
    let v = unsafe { LB4_AFFINITY.get(client) }.copied()?;
    if v.last_used + u64::from(svc.backend_id) <= now {
        return None;
    }
    let be = backend_of_service(v.backend_id, svc.rev_nat_index)?;
    Some((v.backend_id, be))
}

/// Notes that `client` got backend `id` now.
#[inline(always)]
pub fn remember_affinity(client: &Lb4AffinityKey, id: u32, now: u64) {
    let v = Lb4AffinityValue {
        last_used: now,
        backend_id: id,
        pad: 0,
    };
    // A failed update (no memory) only costs this client its stickiness.
    let _ = LB4_AFFINITY.insert(client, &v, 0);
}

/// The backend for a new connection to `svc`: the client's affinity backend
/// while it holds, else a random slot's; an affinity client's choice is
/// remembered either way, so its timeout counts from its last new connection
/// (kube-proxy's). None when the service has no usable backend.
#[inline(always)]
pub fn choose(
    frontend: &Lb4Key,
    svc: &Lb4Service,
    client: Option<&Lb4AffinityKey>,
) -> Option<(u32, Lb4Backend)> {
    if svc.count == 0 {
        return None;
    }
    let now = u64::from(crate::conntrack::now());
    if let Some(c) = client {
        if let Some((id, be)) = affinity_backend(c, svc, now) {
            remember_affinity(c, id, now);
            return Some((id, be));
        }
    }
    let id = backend_id_in_slot(frontend, random_slot(svc.count))?;
    let be = lookup_backend(id)?;
    if let Some(c) = client {
        remember_affinity(c, id, now);
    }
    Some((id, be))
}
