//! Tunnel routing: which node carries a remote address, and the VXLAN
//! encapsulation towards it. The program sets the tunnel key (outer
//! destination, VNI) as metadata on the skb; `lash_vxlan`, a VXLAN device in
//! external (collect_md) mode, builds the outer headers from it.

use core::mem::size_of;

use aya_ebpf::{
    bindings::{bpf_tunnel_key, BPF_F_ZERO_CSUM_TX, TC_ACT_REDIRECT},
    helpers::{bpf_redirect, bpf_skb_get_tunnel_key, bpf_skb_set_tunnel_key},
    programs::TcContext,
};
use lash_common::{
    endpoint::RemoteEndpointInfo, metrics::DROP_WRITE_ERROR, tunnel::TunnelKey,
};

use crate::{config, maps::TUNNEL_MAP};

/// TTL of the outer header.
const OUTER_TTL: u8 = 64;

/// The node carrying `daddr` (network order): the tunnel endpoint of its
/// ipcache entry, else the tunnel map's entry for the address masked to the
/// pod-range size; None when neither knows it.
#[inline(always)]
pub fn endpoint(daddr: u32, info: Option<RemoteEndpointInfo>) -> Option<u32> {
    if let Some(i) = info {
        if i.tunnel_endpoint != 0 {
            return Some(i.tunnel_endpoint);
        }
    }
    let bits = config::pod_cidr_bits();
    if bits == 0 || bits > 32 {
        return None;
    }
    // The mask in host order, then laid out as the address is (wire order).
    let mask = (u32::MAX << (32 - bits)).to_be();
    // SAFETY: the value is copied out at once.
    unsafe { TUNNEL_MAP.get(&TunnelKey::v4(daddr & mask)) }.map(|v| v.ip4)
}

/// Sets the tunnel key: outer destination `node` (network order) and VNI
/// `identity` (the sender's security identity, which the receiving node
/// reads back), TTL 64, no outer UDP checksum (the inner packet has its own).
#[inline(always)]
pub fn set_key(ctx: &TcContext, node: u32, identity: u32) -> Result<(), i32> {
    // SAFETY: a plain C struct; all zeroes is its "nothing set".
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    key.tunnel_id = identity;
    // The helper takes the outer address in host order.
    key.__bindgen_anon_1.remote_ipv4 = u32::from_be(node);
    key.tunnel_ttl = OUTER_TTL;
    // SAFETY: the skb of this program, a key on our stack and its size.
    let r = unsafe {
        bpf_skb_set_tunnel_key(
            ctx.skb.skb,
            &mut key,
            size_of::<bpf_tunnel_key>() as u32,
            u64::from(BPF_F_ZERO_CSUM_TX),
        )
    };
    if r < 0 {
        return Err(DROP_WRITE_ERROR as i32);
    }
    Ok(())
}

/// Encapsulates towards `node` and hands the frame to `lash_vxlan`.
#[inline(always)]
pub fn encap_and_redirect(ctx: &TcContext, node: u32, identity: u32) -> Result<i32, i32> {
    set_key(ctx, node, identity)?;
    // SAFETY: plain helper call.
    let r = unsafe { bpf_redirect(config::tunnel_ifindex(), 0) };
    if r == i64::from(TC_ACT_REDIRECT) {
        Ok(TC_ACT_REDIRECT as i32)
    } else {
        Err(DROP_WRITE_ERROR as i32)
    }
}

/// The VNI of a frame that came out of the tunnel (the sending side's
/// identity), or None for a frame without tunnel metadata.
#[inline(always)]
pub fn received_identity(ctx: &TcContext) -> Option<u32> {
    // SAFETY: as in `set_key`.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    // SAFETY: the skb of this program, a key on our stack and its size.
    let r = unsafe {
        bpf_skb_get_tunnel_key(
            ctx.skb.skb,
            &mut key,
            size_of::<bpf_tunnel_key>() as u32,
            0,
        )
    };
    (r == 0).then_some(key.tunnel_id)
}
