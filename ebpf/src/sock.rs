//! Socket-level load balancing: translate a Service frontend to a backend when a
//! socket connects or sends, and back again when it receives or asks for its peer.
//! No packet ever carries the VIP: the socket talks to the backend directly.

use aya_ebpf::{
    helpers::{bpf_get_socket_cookie, bpf_set_retval},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
    EbpfContext,
};
use lash_common::{
    Ipv4RevnatEntry, Ipv4RevnatTuple, Lb4AffinityKey, Lb4AffinityVal, Lb4Backend, Lb4Key,
    IPPROTO_TCP, IPPROTO_UDP,
};

use crate::{
    lb::{backend_id_in_slot, lookup_backend, lookup_service, random_slot},
    maps::{LB4_AFFINITY, LB4_REVERSE_NAT, LB4_REVERSE_SK},
};

/// Verdicts of cgroup/sock_addr programs: 1 lets the call proceed; 0 fails it
/// with the errno set by bpf_set_retval (EPERM if none was set).
const SYS_PROCEED: i32 = 1;
const SYS_REJECT: i32 = 0;

const ECONNREFUSED: i32 = 111;

#[cgroup_sock_addr(connect4)]
pub fn sock4_connect(ctx: SockAddrContext) -> i32 {
    verdict(sock4_xlate_fwd(&ctx))
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sock4_sendmsg(ctx: SockAddrContext) -> i32 {
    verdict(sock4_xlate_fwd(&ctx))
}

#[cgroup_sock_addr(recvmsg4)]
pub fn sock4_recvmsg(ctx: SockAddrContext) -> i32 {
    sock4_xlate_rev(&ctx);
    // recvmsg cannot be rejected; the kernel requires 1.
    SYS_PROCEED
}

#[cgroup_sock_addr(getpeername4)]
pub fn sock4_getpeername(ctx: SockAddrContext) -> i32 {
    sock4_xlate_rev(&ctx);
    SYS_PROCEED
}

/// Turn a translation result into the program's return value: a failed lookup of
/// a known service fails the syscall, so the VIP never leaves as a destination.
#[inline(always)]
fn verdict(r: Result<(), i32>) -> i32 {
    match r {
        Ok(()) => SYS_PROCEED,
        Err(errno) => {
            // SAFETY: plain helper call; sock_addr programs may set the retval.
            unsafe { bpf_set_retval(-errno) };
            SYS_REJECT
        }
    }
}

/// Forward translation: if the destination is a service frontend, rewrite it to
/// one of its backends. Err(errno) when it is a service we cannot serve.
#[inline(always)]
fn sock4_xlate_fwd(ctx: &SockAddrContext) -> Result<(), i32> {
    let sa = ctx.sock_addr;
    // SAFETY: the kernel hands us a valid bpf_sock_addr for the program's life.
    let (daddr, dport_raw, proto) = unsafe { ((*sa).user_ip4, (*sa).user_port, (*sa).protocol) };
    let proto = proto as u8;
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return Ok(());
    }
    // user_port holds the port in network order in its low 16 bits.
    let dport = dport_raw as u16;
    let Some((frontend, svc)) = lookup_service(daddr, dport, proto) else {
        return Ok(()); // not a service: untouched
    };
    if svc.count == 0 {
        return Err(ECONNREFUSED);
    }
    // SAFETY: the context pointer is the one the kernel gave this program.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };

    let backend = if proto == IPPROTO_UDP {
        pick_sticky(&frontend, svc.count, cookie)?
    } else {
        pick_random(&frontend, svc.count)?.2
    };

    // Remember the frontend for this socket and backend, so replies and
    // getpeername() show the address the application asked for.
    let rev_key = Ipv4RevnatTuple {
        cookie,
        address: backend.address,
        port: backend.port,
        pad: 0,
    };
    let rev_val = Ipv4RevnatEntry {
        address: daddr,
        port: dport,
        rev_nat_index: svc.rev_nat_index,
    };
    // A failed insert only costs the reverse view, never the connection.
    let _ = LB4_REVERSE_SK.insert(&rev_key, &rev_val, 0);

    // SAFETY: see above; these fields are writable in connect4 and sendmsg4.
    unsafe {
        (*sa).user_ip4 = backend.address;
        (*sa).user_port = u32::from(backend.port);
    }
    Ok(())
}

/// A random slot, the backend id it holds, and that backend.
#[inline(always)]
fn pick_random(frontend: &Lb4Key, count: u16) -> Result<(u16, u32, Lb4Backend), i32> {
    let slot = random_slot(count);
    let id = backend_id_in_slot(frontend, slot).ok_or(ECONNREFUSED)?;
    let be = lookup_backend(id).ok_or(ECONNREFUSED)?;
    Ok((slot, id, be))
}

/// The backend this socket already uses for the service, while it is still in
/// the service; otherwise a fresh random one, remembered for the next datagram.
#[inline(always)]
fn pick_sticky(frontend: &Lb4Key, count: u16, cookie: u64) -> Result<Lb4Backend, i32> {
    let key = Lb4AffinityKey {
        cookie,
        address: frontend.address,
        dport: frontend.dport,
        proto: frontend.proto,
        pad: 0,
    };
    // SAFETY: copied out at once.
    if let Some(prev) = unsafe { LB4_AFFINITY.get(&key) }.copied() {
        if prev.slot >= 1
            && prev.slot <= count
            && backend_id_in_slot(frontend, prev.slot) == Some(prev.backend_id)
        {
            if let Some(be) = lookup_backend(prev.backend_id) {
                return Ok(be);
            }
        }
    }
    let (slot, id, be) = pick_random(frontend, count)?;
    let val = Lb4AffinityVal {
        backend_id: id,
        slot,
        pad: 0,
    };
    let _ = LB4_AFFINITY.insert(&key, &val, 0);
    Ok(be)
}

/// Reverse translation: if this socket was sent to a backend on behalf of a
/// frontend, show the frontend instead.
#[inline(always)]
fn sock4_xlate_rev(ctx: &SockAddrContext) {
    let sa = ctx.sock_addr;
    // SAFETY: see sock4_xlate_fwd.
    let (addr, port_raw) = unsafe { ((*sa).user_ip4, (*sa).user_port) };
    // SAFETY: see sock4_xlate_fwd.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = Ipv4RevnatTuple {
        cookie,
        address: addr,
        port: port_raw as u16,
        pad: 0,
    };
    // SAFETY: copied out at once.
    let Some(entry) = (unsafe { LB4_REVERSE_SK.get(&key) }).copied() else {
        return;
    };
    // Only while the service still exists with that frontend: a stale entry
    // must not dress a reused backend address up as an old VIP.
    // SAFETY: copied out at once.
    let live = unsafe { LB4_REVERSE_NAT.get(&entry.rev_nat_index) }.copied();
    match live {
        Some(f) if { f.address } == entry.address && { f.port } == entry.port => {
            // SAFETY: user_ip4/user_port are writable in recvmsg4/getpeername4.
            unsafe {
                (*sa).user_ip4 = entry.address;
                (*sa).user_port = u32::from(entry.port);
            }
        }
        _ => {
            let _ = LB4_REVERSE_SK.remove(&key);
        }
    }
}
