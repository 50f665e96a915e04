//! Socket-level load balancing: translate a Service frontend to a backend when a
//! socket connects or sends, and back again when it receives or asks for its peer.
//! No packet ever carries the VIP: the socket talks to the backend directly.
//!
//! The IPv6 hooks serve IPv6 sockets that use IPv4 through v4-mapped addresses
//! (`::ffff:10.96.0.10`, what Java and other dual-stack clients do): they
//! translate through the same IPv4 maps and hand the backend back v4-mapped.
//! Pure IPv6 destinations are left alone.

use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{bpf_get_netns_cookie, bpf_set_retval},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use lash_common::{
    Lb4Backend, Lb4Key, Lb4Service, SockLbEntry, IPPROTO_TCP, IPPROTO_UDP, SVC_FLAG_AFFINITY,
};

use crate::{
    lb::{affinity_client, backend_of_service, choose, lookup_service},
    maps::LB4_REVERSE_NAT,
    sock_state,
};

/// Verdicts of cgroup/sock_addr programs: 1 lets the call proceed; 0 fails it
/// with the errno set by bpf_set_retval (EPERM if none was set).
const SYS_PROCEED: i32 = 1;
const SYS_REJECT: i32 = 0;

const ECONNREFUSED: i32 = 111;

#[cgroup_sock_addr(connect4)]
pub fn sock4_connect(ctx: SockAddrContext) -> i32 {
    verdict(xlate_fwd::<V4>(&ctx))
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sock4_sendmsg(ctx: SockAddrContext) -> i32 {
    verdict(xlate_fwd::<V4>(&ctx))
}

#[cgroup_sock_addr(recvmsg4)]
pub fn sock4_recvmsg(ctx: SockAddrContext) -> i32 {
    xlate_rev::<V4>(&ctx);
    // recvmsg cannot be rejected; the kernel requires 1.
    SYS_PROCEED
}

#[cgroup_sock_addr(getpeername4)]
pub fn sock4_getpeername(ctx: SockAddrContext) -> i32 {
    xlate_rev::<V4>(&ctx);
    SYS_PROCEED
}

#[cgroup_sock_addr(connect6)]
pub fn sock6_connect(ctx: SockAddrContext) -> i32 {
    verdict(xlate_fwd::<V4Mapped>(&ctx))
}

/// Today's kernels hand a v4-mapped sendto() of an IPv6 UDP socket to the
/// IPv4 path before this hook runs (so sendmsg4 translates it); this one is
/// for kernels that do not, and costs pure IPv6 sends one comparison.
#[cgroup_sock_addr(sendmsg6)]
pub fn sock6_sendmsg(ctx: SockAddrContext) -> i32 {
    verdict(xlate_fwd::<V4Mapped>(&ctx))
}

#[cgroup_sock_addr(recvmsg6)]
pub fn sock6_recvmsg(ctx: SockAddrContext) -> i32 {
    xlate_rev::<V4Mapped>(&ctx);
    SYS_PROCEED
}

#[cgroup_sock_addr(getpeername6)]
pub fn sock6_getpeername(ctx: SockAddrContext) -> i32 {
    xlate_rev::<V4Mapped>(&ctx);
    SYS_PROCEED
}

/// Where a hook keeps the IPv4 address it translates. Each program reads only
/// the context fields its hook may touch, which the verifier checks per hook.
trait Family {
    /// The IPv4 address (network order) and port (network order), or None
    /// when the address is not IPv4 in this family's form.
    ///
    /// # Safety
    /// `sa` is the context the kernel passed to the program.
    unsafe fn read(sa: *const bpf_sock_addr) -> Option<(u32, u16)>;
    /// Replaces the address read by `read` (same form).
    ///
    /// # Safety
    /// As `read`, in a hook where the address is writable.
    unsafe fn write(sa: *mut bpf_sock_addr, address: u32, port: u16);
}

/// AF_INET sockets: user_ip4.
struct V4;

impl Family for V4 {
    #[inline(always)]
    unsafe fn read(sa: *const bpf_sock_addr) -> Option<(u32, u16)> {
        // user_port holds the port in network order in its low 16 bits.
        // SAFETY: per the trait contract.
        unsafe { Some(((*sa).user_ip4, (*sa).user_port as u16)) }
    }

    #[inline(always)]
    unsafe fn write(sa: *mut bpf_sock_addr, address: u32, port: u16) {
        // SAFETY: per the trait contract.
        unsafe {
            (*sa).user_ip4 = address;
            (*sa).user_port = u32::from(port);
        }
    }
}

/// AF_INET6 sockets with a v4-mapped address: `::ffff:a.b.c.d` is
/// user_ip6 = [0, 0, htonl(0xffff), a.b.c.d].
struct V4Mapped;

const V4_MAPPED_MARK: u32 = 0xffff_u32.to_be();

impl Family for V4Mapped {
    #[inline(always)]
    unsafe fn read(sa: *const bpf_sock_addr) -> Option<(u32, u16)> {
        // SAFETY: per the trait contract.
        let ip6 = unsafe { (*sa).user_ip6 };
        if ip6[0] != 0 || ip6[1] != 0 || ip6[2] != V4_MAPPED_MARK {
            return None;
        }
        // SAFETY: per the trait contract.
        Some((ip6[3], unsafe { (*sa).user_port } as u16))
    }

    #[inline(always)]
    unsafe fn write(sa: *mut bpf_sock_addr, address: u32, port: u16) {
        // The first three words already say "v4-mapped".
        // SAFETY: per the trait contract.
        unsafe {
            (*sa).user_ip6[3] = address;
            (*sa).user_port = u32::from(port);
        }
    }
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
fn xlate_fwd<F: Family>(ctx: &SockAddrContext) -> Result<(), i32> {
    let sa = ctx.sock_addr;
    // SAFETY: the kernel hands us a valid bpf_sock_addr for the program's life.
    let proto = unsafe { (*sa).protocol } as u8;
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return Ok(());
    }
    // SAFETY: as above.
    let Some((daddr, dport)) = (unsafe { F::read(sa) }) else {
        return Ok(());
    };
    let Some((frontend, svc)) = lookup_service(daddr, dport, proto) else {
        return Ok(()); // not a service: untouched
    };
    if svc.count == 0 {
        return Err(ECONNREFUSED);
    }
    let backend = choose_backend(ctx, &frontend, &svc)?;
    // SAFETY: as above; connect and sendmsg hooks may rewrite the address.
    unsafe { F::write(sa, backend.address, backend.port) };
    Ok(())
}

/// The backend for this socket, recorded in the socket's state for the reverse
/// view. A UDP socket keeps the backend it got first for as long as that
/// backend is one of the service's, wherever its slot moves; a TCP connect
/// picks at random, or, for a service with session affinity, takes the
/// backend its network namespace got last while that holds (the source
/// address is not chosen yet at connect(), so the namespace stands for the
/// client, as in Cilium).
#[inline(always)]
fn choose_backend(
    ctx: &SockAddrContext,
    frontend: &Lb4Key,
    svc: &Lb4Service,
) -> Result<Lb4Backend, i32> {
    let client = if svc.flags & SVC_FLAG_AFFINITY != 0 {
        // SAFETY: the context the kernel passed; the helper only reads it.
        let cookie = unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) };
        affinity_client(svc, cookie, true)
    } else {
        None
    };
    let Some(state) = sock_state::get_or_create(ctx) else {
        // Without state the socket still gets a backend; it only loses the
        // reverse view and, for UDP, the stickiness (counted).
        return choose(frontend, svc, client.as_ref())
            .map(|(_, be)| be)
            .ok_or(ECONNREFUSED);
    };
    let udp = frontend.proto == IPPROTO_UDP;
    let current = sock_state::find_frontend(state, frontend.address, frontend.dport);
    if udp {
        if let Some(i) = current {
            let e = &mut state.entries[i & (lash_common::SOCK_LB_ENTRIES - 1)];
            if let Some(be) = backend_of_service(e.backend_id, svc.rev_nat_index) {
                // The id still names this service's backend; keep the record
                // in step should the agent have changed its address.
                if e.backend_address != be.address || e.backend_port != be.port {
                    e.backend_address = be.address;
                    e.backend_port = be.port;
                }
                return Ok(be);
            }
        }
    }
    let (id, be) = choose(frontend, svc, client.as_ref()).ok_or(ECONNREFUSED)?;
    let entry = SockLbEntry {
        frontend_address: frontend.address,
        frontend_port: frontend.dport,
        rev_nat_index: svc.rev_nat_index,
        backend_address: be.address,
        backend_port: be.port,
        flags: 0,
        backend_id: id,
    };
    sock_state::record(state, current, entry, udp);
    Ok(be)
}

/// Reverse translation: if this socket was sent to a backend on behalf of a
/// frontend, show the frontend instead.
#[inline(always)]
fn xlate_rev<F: Family>(ctx: &SockAddrContext) {
    let sa = ctx.sock_addr;
    // SAFETY: see xlate_fwd.
    let Some((addr, port)) = (unsafe { F::read(sa) }) else {
        return;
    };
    let Some(state) = sock_state::get(ctx) else {
        return; // never translated: nothing to undo
    };
    let Some(e) = sock_state::find_backend(state, addr, port) else {
        return;
    };
    // Only while the service still exists with that frontend: a stale entry
    // must not dress a reused backend address up as an old VIP.
    // SAFETY: copied out at once.
    let live = unsafe { LB4_REVERSE_NAT.get(&e.rev_nat_index) }.copied();
    if let Some(f) = live {
        if { f.address } == e.frontend_address && { f.port } == e.frontend_port {
            // SAFETY: see xlate_fwd; recvmsg and getpeername hooks may rewrite
            // the address they report.
            unsafe { F::write(sa, e.frontend_address, e.frontend_port) };
        }
    }
}
