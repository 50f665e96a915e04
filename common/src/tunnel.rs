//! Key and value of `tunnel_map`: which node carries a remote pod range,
//! keyed by the range's base address. The programs fall back to it when a
//! remote pod's ipcache entry names no tunnel endpoint, masking the address
//! to the cluster's pod-range size (every node's range has the same size,
//! as in Cilium).

use core::mem::size_of;

use crate::endpoint::ENDPOINT_KEY_IPV4;

/// Key of `tunnel_map`: a remote node's pod-range base address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
pub struct TunnelKey {
    /// Network order, masked to the range.
    pub ip4: u32,
    /// Where an IPv6 address would continue.
    pub pad: [u32; 3],
    pub family: u8,
    pub pad1: u8,
    pub cluster_id: u16,
}

impl TunnelKey {
    pub const fn v4(ip4: u32) -> Self {
        TunnelKey {
            ip4,
            pad: [0; 3],
            family: ENDPOINT_KEY_IPV4,
            pad1: 0,
            cluster_id: 0,
        }
    }
}

/// Value of `tunnel_map`: the node's address, the outer destination.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TunnelValue {
    /// Network order.
    pub ip4: u32,
    pub pad: [u32; 3],
    pub family: u8,
    /// Encryption key index; 0.
    pub key: u8,
    pub pad1: u16,
}

impl TunnelValue {
    pub const fn v4(ip4: u32) -> Self {
        TunnelValue {
            ip4,
            pad: [0; 3],
            family: ENDPOINT_KEY_IPV4,
            key: 0,
            pad1: 0,
        }
    }
}

/// The UDP port of the VXLAN device (Cilium's, not IANA's 4789).
pub const VXLAN_PORT: u16 = 8472;

/// Bytes VXLAN adds to every packet (outer IPv4, UDP, VXLAN and inner
/// Ethernet headers): the overlay MTU is the underlay's minus this.
pub const VXLAN_OVERHEAD: u32 = 50;

/// `LASH_ROUTING` of the programs: what from-container does with a packet
/// for another node.
pub const ROUTING_STACK: u32 = 0;
/// Encapsulate to the node in the ipcache / tunnel map (VXLAN).
pub const ROUTING_TUNNEL: u32 = 1;
/// Forward by a FIB lookup, the kernel's routes to the other nodes.
pub const ROUTING_NATIVE: u32 = 2;

const _: () = assert!(size_of::<TunnelKey>() == 20);
const _: () = assert!(size_of::<TunnelValue>() == 20);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: repr(C), Copy, explicit padding: every byte pattern is a valid
    // value and no byte is uninitialised.
    unsafe impl aya::Pod for TunnelKey {}
    unsafe impl aya::Pod for TunnelValue {}
}
