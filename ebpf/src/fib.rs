//! Native routing: a packet for another node is forwarded by a lookup in the
//! kernel's routing table (the agent's routes to the other nodes' pod
//! ranges) and sent straight out of the device it names, MACs and TTL set
//! here, instead of going up through the host stack.

use core::mem::size_of;

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup, bpf_redir_neigh, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        TC_ACT_OK, TC_ACT_REDIRECT,
    },
    helpers::{bpf_fib_lookup as fib_lookup, bpf_redirect, bpf_redirect_neigh},
    programs::TcContext,
};
use lash_common::metrics::{DROP_TTL_EXCEEDED, DROP_WRITE_ERROR};

use crate::ipv4::{self, Packet, ETH_HLEN};

const AF_INET: u8 = 2;

/// Forwards `p` by the FIB. What the FIB does not forward (the node's own
/// addresses, no route, forwarding off) goes to the stack, which decides
/// and counts as it would without us.
#[inline(always)]
pub fn forward(ctx: &TcContext, p: &mut Packet) -> Result<i32, i32> {
    // SAFETY: a plain C struct; all zeroes is a valid start.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = p.proto;
    params.sport = p.sport;
    params.dport = p.dport;
    params.__bindgen_anon_1.tot_len = (p.len as usize).saturating_sub(ETH_HLEN) as u16;
    params.__bindgen_anon_3.ipv4_src = p.saddr;
    params.__bindgen_anon_4.ipv4_dst = p.daddr;
    // SAFETY: reading the ifindex of the skb the program runs on.
    params.ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    // SAFETY: the skb of this program, params on our stack and their size.
    let r = unsafe {
        fib_lookup(
            ctx.skb.skb.cast(),
            &mut params,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    let r = r as u32;
    if r != BPF_FIB_LKUP_RET_SUCCESS && r != BPF_FIB_LKUP_RET_NO_NEIGH {
        return Ok(TC_ACT_OK as i32);
    }
    if p.ttl <= 1 {
        return Err(DROP_TTL_EXCEEDED as i32);
    }
    ipv4::dec_ttl(ctx, p)?;
    let sent = if r == BPF_FIB_LKUP_RET_SUCCESS {
        ipv4::set_macs(ctx, params.dmac, params.smac)?;
        // SAFETY: plain helper call.
        unsafe { bpf_redirect(params.ifindex, 0) }
    } else {
        // The next hop's MAC is not known yet: the kernel resolves it (ARP)
        // and sends. After the lookup, ipv4_dst holds the next hop.
        // SAFETY: a plain C struct; all zeroes is a valid start.
        let mut nh: bpf_redir_neigh = unsafe { core::mem::zeroed() };
        nh.nh_family = u32::from(AF_INET);
        // SAFETY: reading the union member the lookup wrote.
        nh.__bindgen_anon_1.ipv4_nh = unsafe { params.__bindgen_anon_4.ipv4_dst };
        // SAFETY: nh on our stack and its size.
        unsafe {
            bpf_redirect_neigh(
                params.ifindex,
                &mut nh,
                size_of::<bpf_redir_neigh>() as i32,
                0,
            )
        }
    };
    if sent == i64::from(TC_ACT_REDIRECT) {
        Ok(TC_ACT_REDIRECT as i32)
    } else {
        Err(DROP_WRITE_ERROR as i32)
    }
}
