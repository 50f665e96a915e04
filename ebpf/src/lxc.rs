//! The tc programs of a pod's host-side veth (`lxc*`).
//!
//! from-container runs on the lxc's ingress, that is on every frame the pod
//! sends. This first slice serves ARP (the responder) and leaves IPv4 to the
//! host stack; source checks, per-packet service translation, conntrack and
//! local delivery come next, in this order of the packet's path.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};

use crate::arp;

#[classifier]
pub fn from_container(ctx: TcContext) -> i32 {
    // The EtherType, at offset 12 of the Ethernet header, network order.
    let Ok(proto) = ctx.load::<[u8; 2]>(12).map(u16::from_be_bytes) else {
        return TC_ACT_SHOT as i32;
    };
    // IPv4 goes to the stack until its path lands here; IPv6 and the rest
    // are not served yet and pass too, rather than drop what a pod's own
    // tooling may need.
    if proto == arp::ETH_P_ARP {
        arp::respond(&ctx)
    } else {
        TC_ACT_OK as i32
    }
}

/// The lxc's egress: what the host stack delivers into the pod.
#[classifier]
pub fn to_container(_ctx: TcContext) -> i32 {
    TC_ACT_OK as i32
}
