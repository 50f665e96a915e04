//! The tc programs of `lash_vxlan`, the node's VXLAN device (tunnel
//! routing only).
//!
//! from_overlay runs on the device's ingress, on every frame another node
//! sent through the tunnel, already decapsulated (counted as INGRESS): the
//! VNI is the sender's identity (for policy, to come); a frame for a pod on
//! this node gets its frontend back if it is the reply of a translated flow
//! and is delivered straight into the pod's namespace; anything else (the
//! node's own addresses) goes up the stack.
//!
//! to_overlay runs on the device's egress (counted as EGRESS): from-container
//! set the tunnel key of what it redirected here; what the node's own stack
//! routes to the device (its routes to the other nodes' pod ranges) gets the
//! key here, from the ipcache, as the node's traffic.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_skb_change_type,
    macros::classifier,
    programs::TcContext,
};
use lash_common::{
    endpoint::IDENTITY_REMOTE_NODE,
    metrics::{
        DROP_FRAG_NOSUPPORT, DROP_INVALID, DROP_NO_TUNNEL_ENDPOINT, METRIC_EGRESS,
        METRIC_INGRESS, REASON_FORWARDED,
    },
};

use crate::{
    ipcache,
    ipv4::{self, ETH_P_IP},
    lxc, metrics, tunnel,
};

/// skb->pkt_type for a frame addressed to this host.
const PACKET_HOST: u32 = 0;

#[classifier]
pub fn from_overlay(ctx: TcContext) -> i32 {
    counted(&ctx, METRIC_INGRESS, try_from_overlay(&ctx))
}

#[classifier]
pub fn to_overlay(ctx: TcContext) -> i32 {
    counted(&ctx, METRIC_EGRESS, try_to_overlay(&ctx))
}

#[inline(always)]
fn counted(ctx: &TcContext, dir: u8, r: Result<i32, i32>) -> i32 {
    match r {
        Ok(verdict) => {
            metrics::count(REASON_FORWARDED, dir, ctx.len());
            verdict
        }
        Err(reason) => {
            metrics::count(reason as u8, dir, ctx.len());
            TC_ACT_SHOT as i32
        }
    }
}

#[inline(always)]
fn try_from_overlay(ctx: &TcContext) -> Result<i32, i32> {
    // The device runs in collect_md mode: every frame it receives carries
    // the tunnel's metadata, the VNI being the sender's identity.
    let _src_identity = tunnel::received_identity(ctx).ok_or(DROP_INVALID as i32)?;
    let proto = ipv4::ethertype(ctx).ok_or(DROP_INVALID as i32)?;
    if proto == ETH_P_IP {
        match ipv4::parse(ctx) {
            Ok(mut p) => {
                if let Some(dst) = lxc::local_pod(p.daddr) {
                    lxc::restore_frontend(ctx, &mut p)?;
                    return lxc::deliver_local(ctx, &mut p, &dst);
                }
            }
            // A fragment: no ports to translate; the stack reassembles or
            // forwards it.
            Err(r) if r == DROP_FRAG_NOSUPPORT as i32 => {}
            Err(r) => return Err(r),
        }
    }
    // For the node itself. The inner frame still carries the sending pod's
    // MACs, which are not this device's: without this the stack would take
    // it for another host's frame and drop it.
    // SAFETY: the skb of this program.
    unsafe { bpf_skb_change_type(ctx.skb.skb, PACKET_HOST) };
    Ok(TC_ACT_OK as i32)
}

#[inline(always)]
fn try_to_overlay(ctx: &TcContext) -> Result<i32, i32> {
    if tunnel::received_identity(ctx).is_some() {
        // Keyed by from-container already.
        return Ok(TC_ACT_OK as i32);
    }
    if ipv4::ethertype(ctx) != Some(ETH_P_IP) {
        // The device is NOARP: nothing but IPv4 is routed to it.
        return Err(DROP_INVALID as i32);
    }
    let (saddr, daddr) = ipv4::addresses(ctx).ok_or(DROP_INVALID as i32)?;
    let node = tunnel::endpoint(daddr, ipcache::lookup(daddr))
        .ok_or(DROP_NO_TUNNEL_ENDPOINT as i32)?;
    // A pod's packet the stack routed here keeps its pod's identity; the
    // node's own traffic is remote-node on the wire, as Cilium marks it.
    let identity = lxc::local_pod(saddr).map_or(IDENTITY_REMOTE_NODE, |ep| ep.sec_id);
    tunnel::set_key(ctx, node, identity)?;
    Ok(TC_ACT_OK as i32)
}
