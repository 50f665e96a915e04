//! Keys and values of the local-endpoint map (`lxc`) and the ipcache: which
//! addresses are pods on this node (and through which interface, with which
//! MACs), and what every other address is.

use core::mem::{offset_of, size_of};

/// `family` of an [`EndpointKey`] or [`IpcacheKey`]: IPv4.
pub const ENDPOINT_KEY_IPV4: u8 = 1;

/// `flags` of an [`EndpointInfo`]: the address is the node's own, not a pod's.
/// Such entries carry nothing else; the listing prints them as `(localhost)`.
pub const ENDPOINT_F_HOST: u32 = 1;

/// Key of `lxc`: one local address (a pod's, or the node's own).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
pub struct EndpointKey {
    /// Network order.
    pub ip4: u32,
    /// Where an IPv6 address would continue.
    pub pad: [u32; 3],
    pub family: u8,
    /// Always 0.
    pub key: u8,
    pub cluster_id: u16,
}

impl EndpointKey {
    /// The key of `ip4` (network order).
    pub const fn v4(ip4: u32) -> Self {
        EndpointKey {
            ip4,
            pad: [0; 3],
            family: ENDPOINT_KEY_IPV4,
            key: 0,
            cluster_id: 0,
        }
    }
}

/// Value of `lxc`: how to deliver to a local pod.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EndpointInfo {
    /// The host-side lxc veth.
    pub ifindex: u32,
    pub unused: u16,
    /// The endpoint id (`id=` in `agent bpf endpoint list`).
    pub lxc_id: u16,
    /// [`ENDPOINT_F_HOST`] or 0.
    pub flags: u32,
    pub pad: u32,
    /// The pod-side MAC, in wire order from the first byte in memory.
    pub mac: u64,
    /// The host-side lxc MAC, likewise.
    pub node_mac: u64,
    /// Security identity.
    pub sec_id: u32,
    pub pad2: [u32; 3],
}

/// A MAC as the `u64` fields above hold it: byte 0 in memory is the first octet.
pub const fn mac_to_u64(mac: [u8; 6]) -> u64 {
    u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0])
}

/// The inverse of [`mac_to_u64`].
pub const fn mac_from_u64(v: u64) -> [u8; 6] {
    let b = v.to_le_bytes();
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

/// Bits of an [`IpcacheKey`] that come before the address: an LPM trie
/// matches on `prefixlen` bits counted from the start of the data after it,
/// and cluster id, padding and family (32 bits) always match exactly.
pub const IPCACHE_STATIC_PREFIX: u32 = 32;

/// Key of `ipcache` (an LPM trie): a prefix of addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
pub struct IpcacheKey {
    /// [`IPCACHE_STATIC_PREFIX`] + the bits of the IP prefix: 64 for a /32.
    pub prefixlen: u32,
    pub cluster_id: u16,
    pub pad1: u8,
    pub family: u8,
    /// Network order.
    pub ip4: u32,
    pub pad: [u32; 3],
}

impl IpcacheKey {
    /// The key of `ip4/bits` (network order); the lookup key of one address
    /// is `v4(ip, 32)`.
    pub const fn v4(ip4: u32, bits: u32) -> Self {
        IpcacheKey {
            prefixlen: IPCACHE_STATIC_PREFIX + bits,
            cluster_id: 0,
            pad1: 0,
            family: ENDPOINT_KEY_IPV4,
            ip4,
            pad: [0; 3],
        }
    }

    /// The bits of the IP prefix.
    pub const fn bits(&self) -> u32 {
        self.prefixlen.saturating_sub(IPCACHE_STATIC_PREFIX)
    }
}

/// Value of `ipcache`: what an address is.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RemoteEndpointInfo {
    /// Security identity (see the `IDENTITY_*` constants); a miss means world.
    pub sec_identity: u32,
    /// The node carrying the address, network order; 0 for local or world.
    pub tunnel_endpoint: u32,
    pub pad: u16,
    /// Encryption key index; 0.
    pub key: u8,
    /// Bit 0: reach it without the tunnel.
    pub flags: u8,
}

/// Reserved security identities.
pub const IDENTITY_HOST: u32 = 1;
pub const IDENTITY_WORLD: u32 = 2;
pub const IDENTITY_UNMANAGED: u32 = 3;
pub const IDENTITY_HEALTH: u32 = 4;
pub const IDENTITY_INIT: u32 = 5;
pub const IDENTITY_REMOTE_NODE: u32 = 6;

const _: () = assert!(size_of::<EndpointKey>() == 20);
const _: () = assert!(size_of::<EndpointInfo>() == 48);
const _: () = assert!(size_of::<IpcacheKey>() == 24);
const _: () = assert!(size_of::<RemoteEndpointInfo>() == 12);
const _: () = assert!(offset_of!(EndpointInfo, mac) == 16);
const _: () = assert!(offset_of!(EndpointInfo, node_mac) == 24);
const _: () = assert!(offset_of!(EndpointInfo, sec_id) == 32);
const _: () = assert!(offset_of!(IpcacheKey, ip4) == 8);
const _: () = assert!(offset_of!(RemoteEndpointInfo, flags) == 11);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipcache_prefix_lengths_count_the_static_prefix() {
        let ip = u32::from_be_bytes([10, 0, 1, 18]).to_be();
        assert_eq!(IpcacheKey::v4(ip, 32).prefixlen, 64);
        assert_eq!(IpcacheKey::v4(ip, 24).prefixlen, 56);
        assert_eq!(IpcacheKey::v4(0, 0).prefixlen, 32);
        assert_eq!(IpcacheKey::v4(ip, 24).bits(), 24);
    }

    #[test]
    fn macs_keep_wire_order_in_memory() {
        let mac = [0x12, 0x52, 0xe3, 0x7e, 0x87, 0x4f];
        let v = mac_to_u64(mac);
        assert_eq!(
            &v.to_ne_bytes()[..6],
            &mac,
            "byte 0 in memory is the first octet"
        );
        assert_eq!(mac_from_u64(v), mac);
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: repr(C), Copy, explicit padding: every byte pattern is a valid
    // value and no byte is uninitialised.
    unsafe impl aya::Pod for EndpointKey {}
    unsafe impl aya::Pod for EndpointInfo {}
    unsafe impl aya::Pod for IpcacheKey {}
    unsafe impl aya::Pod for RemoteEndpointInfo {}
}
