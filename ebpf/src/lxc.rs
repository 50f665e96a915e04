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

const ETH_P_IP: u16 = 0x0800;

#[classifier]
pub fn from_container(ctx: TcContext) -> i32 {
    // The EtherType, at offset 12 of the Ethernet header, network order.
    let Ok(proto) = ctx.load::<[u8; 2]>(12).map(u16::from_be_bytes) else {
        return TC_ACT_SHOT as i32;
    };
    match proto {
        arp::ETH_P_ARP => arp::respond(&ctx),
        ETH_P_IP => TC_ACT_OK as i32,
        // IPv6 and the rest are not served yet: pass them to the stack
        // rather than drop what a pod's own tooling may need.
        _ => TC_ACT_OK as i32,
    }
}
