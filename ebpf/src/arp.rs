//! The ARP responder of a pod's lxc: every ARP request the pod sends, for any
//! address but its own, is answered with the host-side lxc MAC, so the pod
//! hands every packet to the lxc (where from-container takes it) without a
//! bridge or proxy ARP on the node.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::bpf_redirect,
    programs::TcContext,
};
use lash_common::endpoint::{mac_from_u64, EndpointKey, ENDPOINT_F_HOST};

use crate::maps::LXC;

pub const ETH_P_ARP: u16 = 0x0806;
const ARP_HRD_ETHER: u16 = 1;
const ETH_P_IP: u16 = 0x0800;
const ARP_OP_REQUEST: u16 = 1;
const ARP_OP_REPLY: u16 = 2;

/// Ethernet header plus an Ethernet/IPv4 ARP body.
const FRAME: usize = 42;

// Offsets in the frame.
const ETH_DST: usize = 0;
const ETH_SRC: usize = 6;
const ARP_HRD: usize = 14;
const ARP_PRO: usize = 16;
const ARP_HLN: usize = 18;
const ARP_PLN: usize = 19;
const ARP_OP: usize = 20;
const ARP_SHA: usize = 22;
const ARP_SPA: usize = 28;
const ARP_THA: usize = 32;
const ARP_TPA: usize = 38;

#[inline(always)]
fn be16(f: &[u8; FRAME], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

#[inline(always)]
fn copy6(f: &mut [u8; FRAME], to: usize, from: [u8; 6]) {
    let mut i = 0;
    while i < 6 {
        f[to + i] = from[i];
        i += 1;
    }
}

/// Handles an ARP frame arriving from a pod on its lxc. Returns the tc verdict:
/// a request answered in place and sent back out of the lxc, a request for
/// the pod's own address (duplicate address detection) passed on, anything
/// malformed or from a sender that is not this lxc's endpoint dropped.
#[inline(always)]
pub fn respond(ctx: &TcContext) -> i32 {
    let Ok(mut f) = ctx.load::<[u8; FRAME]>(0) else {
        return TC_ACT_SHOT as i32;
    };
    if be16(&f, ARP_HRD) != ARP_HRD_ETHER
        || be16(&f, ARP_PRO) != ETH_P_IP
        || f[ARP_HLN] != 6
        || f[ARP_PLN] != 4
    {
        return TC_ACT_SHOT as i32;
    }
    if be16(&f, ARP_OP) != ARP_OP_REQUEST {
        // Replies (gratuitous ones included) have nobody to reach here.
        return TC_ACT_OK as i32;
    }
    let sender_ip = [f[ARP_SPA], f[ARP_SPA + 1], f[ARP_SPA + 2], f[ARP_SPA + 3]];
    let target_ip = [f[ARP_TPA], f[ARP_TPA + 1], f[ARP_TPA + 2], f[ARP_TPA + 3]];
    if sender_ip == target_ip {
        return TC_ACT_OK as i32;
    }
    // The sender must be the endpoint behind this very lxc: a pod cannot get
    // answers in another pod's name.
    let key = EndpointKey::v4(u32::from_ne_bytes(sender_ip));
    // SAFETY: the value is copied out at once.
    let Some(ep) = (unsafe { LXC.get(&key) }).copied() else {
        return TC_ACT_SHOT as i32;
    };
    // SAFETY: reading the ifindex of the skb the program runs on.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if ep.flags & ENDPOINT_F_HOST != 0 || ep.ifindex != ifindex {
        return TC_ACT_SHOT as i32;
    }
    let lxc_mac = mac_from_u64(ep.node_mac);
    let requester_mac = [
        f[ARP_SHA],
        f[ARP_SHA + 1],
        f[ARP_SHA + 2],
        f[ARP_SHA + 3],
        f[ARP_SHA + 4],
        f[ARP_SHA + 5],
    ];
    copy6(&mut f, ETH_DST, requester_mac);
    copy6(&mut f, ETH_SRC, lxc_mac);
    f[ARP_OP] = 0;
    f[ARP_OP + 1] = ARP_OP_REPLY as u8;
    copy6(&mut f, ARP_SHA, lxc_mac);
    copy6(&mut f, ARP_THA, requester_mac);
    let mut i = 0;
    while i < 4 {
        f[ARP_SPA + i] = target_ip[i];
        f[ARP_TPA + i] = sender_ip[i];
        i += 1;
    }
    if ctx.store(0, &f, 0).is_err() {
        return TC_ACT_SHOT as i32;
    }
    // Back out of the lxc it came in on: egress of the host-side veth is
    // ingress of the pod's.
    // SAFETY: plain helper call.
    let r = unsafe { bpf_redirect(ifindex, 0) };
    if r == TC_ACT_REDIRECT as i64 {
        TC_ACT_REDIRECT as i32
    } else {
        TC_ACT_SHOT as i32
    }
}
