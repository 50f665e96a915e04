//! Per-packet service translation, for flows socket LB did not translate
//! (a pod whose sockets are outside the agent's cgroup, raw sockets,
//! forwarded traffic): the frontend is rewritten to a backend on the way out,
//! and the backend back to the frontend on the replies. The service and
//! backend lookups are lb.rs's, shared with the socket programs.

use lash_common::{ct::TUPLE_F_SERVICE, metrics::DROP_NO_SERVICE, Lb4Backend, Lb4Key, Lb4Service};

use crate::{
    conntrack::{self, Dir},
    ipv4::{self, End, Packet},
    lb::{affinity_client, backend_of_service, choose, lookup_service},
    maps::LB4_REVERSE_NAT,
};

/// The backend for a new flow of `p` to `svc`: the client's (by source
/// address) while its session affinity holds, else a random one.
#[inline(always)]
fn pick(p: &Packet, frontend: &Lb4Key, svc: &Lb4Service) -> Result<(u32, Lb4Backend), i32> {
    // The address as it sits in the packet, in the low four bytes: the
    // layout of Cilium's client-address key.
    let client = affinity_client(svc, u64::from(p.saddr), false);
    choose(frontend, svc, client.as_ref()).ok_or(DROP_NO_SERVICE as i32)
}

/// If `p` is sent to a service frontend, rewrites its destination to the
/// flow's backend and returns the service's rev-NAT index (network order);
/// 0 when `p` is not for a service. The backend is remembered in a SERVICE
/// conntrack entry keyed by the untranslated packet, so every packet of the
/// flow goes to the same one while it stays in the service; a service with
/// session affinity gives a new flow the backend its client had last. A frontend with
/// no usable backend drops the packet: a VIP never leaves untranslated.
#[inline(always)]
pub fn xlate_to_backend(
    ctx: &aya_ebpf::programs::TcContext,
    p: &mut Packet,
    now: u32,
) -> Result<u16, i32> {
    if !p.has_ports() {
        return Ok(0);
    }
    let Some((frontend, svc)) = lookup_service(p.daddr, p.dport, p.proto) else {
        return Ok(0);
    };
    let key = conntrack::tuple(p, TUPLE_F_SERVICE);
    let be = match conntrack::map(p).get_ptr_mut(&key) {
        Some(e) => {
            // SAFETY: a pointer into the map's value, from this lookup.
            let id = unsafe { (*e).backend_id } as u32;
            let be = match backend_of_service(id, svc.rev_nat_index) {
                Some(be) => be,
                None => {
                    // The remembered backend left the service: the flow
                    // moves on to another one.
                    let (id, be) = pick(p, &frontend, &svc)?;
                    // SAFETY: as above.
                    unsafe {
                        (*e).backend_id = u64::from(id);
                        (*e).rev_nat_index = svc.rev_nat_index;
                    }
                    be
                }
            };
            conntrack::refresh(e, p, Dir::Forward, now);
            be
        }
        None => {
            let (id, be) = pick(p, &frontend, &svc)?;
            conntrack::create(&key, p, svc.rev_nat_index, id, 0, 0, now)?;
            be
        }
    };
    ipv4::set_addr(ctx, p, End::Destination, be.address)?;
    ipv4::set_port(ctx, p, End::Destination, be.port)?;
    Ok(svc.rev_nat_index)
}

/// Rewrites the source of a reply back to the frontend of the service with
/// `rev_nat_index`; false when that frontend is gone since, leaving the
/// packet as it is.
#[inline(always)]
pub fn xlate_to_frontend(
    ctx: &aya_ebpf::programs::TcContext,
    p: &mut Packet,
    rev_nat_index: u16,
) -> Result<bool, i32> {
    // SAFETY: the value is copied out at once.
    let Some(fe) = (unsafe { LB4_REVERSE_NAT.get(&rev_nat_index) }).copied() else {
        return Ok(false);
    };
    ipv4::set_addr(ctx, p, End::Source, fe.address)?;
    ipv4::set_port(ctx, p, End::Source, fe.port)?;
    Ok(true)
}
