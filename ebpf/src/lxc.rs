//! The tc programs of a pod's host-side veth (`lxc*`).
//!
//! from-container runs on the lxc's ingress, on every frame the pod sends
//! (counted as EGRESS, the pod's point of view, as Cilium does):
//! 1. ARP goes to the responder, IPv4 on, anything else is dropped;
//! 2. the source address must be the pod's own, behind this very lxc;
//! 3. a service frontend socket LB did not translate is translated here; a
//!    pod that reached itself (hairpin) is given the loopback address
//!    169.254.42.1 as source, and its replies are sent back to it;
//! 4. conntrack: a reply to a translated flow gets the frontend back as its
//!    source; any other packet creates or refreshes its flow's entry;
//! 5. a destination that is a pod on this node is delivered straight into
//!    its namespace;
//! 6. the ipcache says what any other destination is: a pod or node
//!    elsewhere is encapsulated to its node (tunnel routing) or forwarded by
//!    a FIB lookup (native routing); the rest (this node, the world, and
//!    whatever the chosen routing cannot place) goes to the host stack.
//!
//! to-container runs on the lxc's egress, on what the host stack delivers
//! into the pod (counted as INGRESS): replies of translated flows get the
//! frontend back as their source.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::bpf_redirect_peer,
    macros::classifier,
    programs::TcContext,
};
use lash_common::{
    ct::{CT_F_LB_LOOPBACK, LB_LOOPBACK_V4, TUPLE_F_OUT},
    endpoint::{mac_from_u64, EndpointInfo, EndpointKey, ENDPOINT_F_HOST},
    tunnel::{ROUTING_NATIVE, ROUTING_TUNNEL},
    metrics::{
        DROP_FRAG_NOSUPPORT, DROP_INVALID, DROP_INVALID_SIP, DROP_NO_SERVICE, DROP_TTL_EXCEEDED,
        DROP_UNKNOWN_L3, DROP_UNROUTABLE,
        METRIC_EGRESS, METRIC_INGRESS, REASON_FORWARDED,
    },
};

use crate::{
    arp, config,
    conntrack::{self, Ct, Dir},
    fib, ipcache,
    ipv4::{self, End, Packet, ETH_P_IP},
    maps::LXC,
    metrics, nat, tunnel,
};

#[classifier]
pub fn from_container(ctx: TcContext) -> i32 {
    let Some(proto) = ipv4::ethertype(&ctx) else {
        metrics::count(DROP_INVALID, METRIC_EGRESS, ctx.len());
        return TC_ACT_SHOT as i32;
    };
    if proto == arp::ETH_P_ARP {
        return arp::respond(&ctx);
    }
    match try_from_container(&ctx, proto) {
        Ok(verdict) => {
            metrics::count(REASON_FORWARDED, METRIC_EGRESS, ctx.len());
            verdict
        }
        Err(reason) => {
            metrics::count(reason as u8, METRIC_EGRESS, ctx.len());
            TC_ACT_SHOT as i32
        }
    }
}

/// The verdict for a frame from the pod, or the drop code.
#[inline(always)]
fn try_from_container(ctx: &TcContext, proto: u16) -> Result<i32, i32> {
    // With IPv6 off (as here), Cilium drops everything but ARP and IPv4.
    if proto != ETH_P_IP {
        return Err(DROP_UNKNOWN_L3 as i32);
    }
    let mut p = ipv4::parse(ctx)?;
    let src = source_endpoint(ctx, &p)?;
    let now = conntrack::now();

    // A pod's address is never a service frontend (those are VIPs, node
    // addresses and external IPs): traffic to a local pod skips the service
    // lookup, and the lookup of its endpoint is made once, here.
    let mut dst = local_pod(p.daddr);
    let mut rev_nat_index = 0;
    let mut hairpin = false;
    if dst.is_none() {
        rev_nat_index = nat::xlate_to_backend(ctx, &mut p, now)?;
        if rev_nat_index != 0 {
            dst = local_pod(p.daddr);
            // The pod reached itself through a service: it would drop a
            // packet from its own address as a martian, so the flow comes
            // from the loopback address instead (its replies come back here).
            hairpin = p.daddr == p.saddr;
            if hairpin {
                ipv4::set_addr(ctx, &mut p, End::Source, LB_LOOPBACK_V4)?;
            }
        }
    }
    // The loopback address is only ever the far end of a hairpin flow: a
    // packet to it that is not such a flow's reply (its entry expired, or
    // the pod's server spoke first) has nowhere to go, and must not create
    // an entry that would later take the flow's packets for replies.
    let to_loopback = p.daddr == LB_LOOPBACK_V4;
    match conntrack::lookup(&p, true) {
        Ct::Reply(e) => {
            conntrack::refresh(e, &p, Dir::Reply, now);
            // SAFETY: a pointer into the map's value, from this lookup.
            let (index, flags) = unsafe { ((*e).rev_nat_index, (*e).flags) };
            if to_loopback {
                if flags & CT_F_LB_LOOPBACK == 0 {
                    return Err(DROP_UNROUTABLE as i32);
                }
                // The reply of a hairpin flow goes back to its sender, from
                // the frontend; without the frontend it would reach the pod
                // from its own address, which the pod drops anyway.
                let sender = p.saddr;
                if !nat::xlate_to_frontend(ctx, &mut p, index)? {
                    return Err(DROP_NO_SERVICE as i32);
                }
                ipv4::set_addr(ctx, &mut p, End::Destination, sender)?;
                dst = Some(src);
            } else if index != 0 {
                nat::xlate_to_frontend(ctx, &mut p, index)?;
            }
        }
        Ct::Established(_) | Ct::New if to_loopback => return Err(DROP_UNROUTABLE as i32),
        Ct::Established(e) => conntrack::refresh(e, &p, Dir::Forward, now),
        Ct::New => {
            let key = conntrack::tuple(&p, TUPLE_F_OUT);
            let flags = if hairpin { CT_F_LB_LOOPBACK } else { 0 };
            conntrack::create(&key, &p, rev_nat_index, 0, src.sec_id, flags, now)?;
        }
    }

    match dst {
        // Its identity (for policy, to come) is in its endpoint entry.
        Some(dst) => deliver_local(ctx, &mut p, &dst),
        None => route_elsewhere(ctx, &mut p, src.sec_id),
    }
}

/// A packet for anything but a pod on this node. The ipcache entry also
/// carries the destination's identity, for policy to come (a miss is the
/// world).
#[inline(always)]
fn route_elsewhere(ctx: &TcContext, p: &mut Packet, src_identity: u32) -> Result<i32, i32> {
    let info = ipcache::lookup(p.daddr);
    match config::routing() {
        ROUTING_TUNNEL => match tunnel::endpoint(p.daddr, info) {
            Some(node) => {
                if p.ttl <= 1 {
                    return Err(DROP_TTL_EXCEEDED as i32);
                }
                ipv4::dec_ttl(ctx, p)?;
                tunnel::encap_and_redirect(ctx, node, src_identity)
            }
            // Not on another node (this node, the world): the stack.
            None => Ok(TC_ACT_OK as i32),
        },
        ROUTING_NATIVE => fib::forward(ctx, p),
        _ => Ok(TC_ACT_OK as i32),
    }
}

/// The endpoint of the pod on this node with address `addr`, if any (the
/// node's own addresses are host entries, not pods).
#[inline(always)]
pub fn local_pod(addr: u32) -> Option<EndpointInfo> {
    // SAFETY: the value is copied out at once.
    match unsafe { LXC.get(&EndpointKey::v4(addr)) } {
        Some(ep) if ep.flags & ENDPOINT_F_HOST == 0 => Some(*ep),
        _ => None,
    }
}

/// The endpoint sending `p`: its source address must be a pod's (not the
/// node's) whose lxc is the one the frame came in on.
#[inline(always)]
fn source_endpoint(ctx: &TcContext, p: &Packet) -> Result<EndpointInfo, i32> {
    let invalid = DROP_INVALID_SIP as i32;
    // SAFETY: the value is copied out at once.
    let ep = unsafe { LXC.get(&EndpointKey::v4(p.saddr)) }
        .copied()
        .ok_or(invalid)?;
    // SAFETY: reading the ifindex of the skb the program runs on.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if ep.flags & ENDPOINT_F_HOST != 0 || ep.ifindex != ifindex {
        return Err(invalid);
    }
    Ok(ep)
}

/// Hands `p` to the pod `dst` on this node: routed as a router would (TTL,
/// MACs), then moved into the pod's namespace through its veth peer without
/// going through the host stack.
#[inline(always)]
pub fn deliver_local(ctx: &TcContext, p: &mut Packet, dst: &EndpointInfo) -> Result<i32, i32> {
    if p.ttl <= 1 {
        return Err(DROP_TTL_EXCEEDED as i32);
    }
    ipv4::dec_ttl(ctx, p)?;
    ipv4::set_macs(ctx, mac_from_u64(dst.mac), mac_from_u64(dst.node_mac))?;
    // SAFETY: plain helper call.
    let r = unsafe { bpf_redirect_peer(dst.ifindex, 0) };
    if r == i64::from(TC_ACT_REDIRECT) {
        Ok(TC_ACT_REDIRECT as i32)
    } else {
        Err(DROP_INVALID as i32)
    }
}

#[classifier]
pub fn to_container(ctx: TcContext) -> i32 {
    match try_to_container(&ctx) {
        Ok(verdict) => {
            metrics::count(REASON_FORWARDED, METRIC_INGRESS, ctx.len());
            verdict
        }
        Err(reason) => {
            metrics::count(reason as u8, METRIC_INGRESS, ctx.len());
            TC_ACT_SHOT as i32
        }
    }
}

/// The verdict for a frame the host stack delivers into the pod.
#[inline(always)]
fn try_to_container(ctx: &TcContext) -> Result<i32, i32> {
    let Some(proto) = ipv4::ethertype(ctx) else {
        return Err(DROP_INVALID as i32);
    };
    if proto != ETH_P_IP {
        // ARP from the node and the rest: the stack decided, not ours to judge.
        return Ok(TC_ACT_OK as i32);
    }
    let mut p = match ipv4::parse(ctx) {
        Ok(p) => p,
        // The stack forwarded a fragment: no translation applies to its
        // ports, so let it in rather than break fragmented traffic the pod
        // did not send through us.
        Err(r) if r == DROP_FRAG_NOSUPPORT as i32 => return Ok(TC_ACT_OK as i32),
        Err(r) => return Err(r),
    };
    restore_frontend(ctx, &mut p)?;
    Ok(TC_ACT_OK as i32)
}

/// On the way into a pod: a reply to a flow the pod sent to a service
/// frontend (translated per packet) gets the frontend back as its source.
/// Only replies matter: a flow the pod started has its OUT entry from
/// from-container; flows from outside are not tracked (no policy needs
/// them yet).
#[inline(always)]
pub fn restore_frontend(ctx: &TcContext, p: &mut Packet) -> Result<(), i32> {
    if let Ct::Reply(e) = conntrack::lookup(p, false) {
        conntrack::refresh(e, p, Dir::Reply, conntrack::now());
        // SAFETY: a pointer into the map's value, from this lookup.
        let index = unsafe { (*e).rev_nat_index };
        if index != 0 {
            nat::xlate_to_frontend(ctx, p, index)?;
        }
    }
    Ok(())
}
