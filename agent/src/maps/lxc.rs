//! The `lxc` map: this node's local addresses, pods (how to deliver to them)
//! and the node's own (flag host). Decoding for the CLI; the endpoint writer
//! of the CNI work adds the encoding next to it.

use std::{net::Ipv4Addr, path::Path};

use lash_common::{
    endpoint::{mac_from_u64, EndpointInfo, EndpointKey, ENDPOINT_F_HOST, ENDPOINT_KEY_IPV4},
    maps::LXC,
};
use serde::Serialize;

use super::{
    pinned::{collect, open},
    MapsError,
};

/// One entry, decoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LocalAddress {
    pub ip: Ipv4Addr,
    /// The node's own address: nothing else is set.
    pub host: bool,
    pub id: u16,
    pub sec_id: u32,
    pub flags: u32,
    pub ifindex: u32,
    /// Pod-side MAC.
    pub mac: String,
    /// Host-side lxc MAC.
    pub node_mac: String,
}

/// `12:52:E3:7E:87:4F`, as Cilium's listing prints MACs.
pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The entry for `key`/`v`; None for a key that is not IPv4.
pub fn decode(key: &EndpointKey, v: &EndpointInfo) -> Option<LocalAddress> {
    if key.family != ENDPOINT_KEY_IPV4 {
        return None;
    }
    Some(LocalAddress {
        ip: Ipv4Addr::from(u32::from_be(key.ip4)),
        host: v.flags & ENDPOINT_F_HOST != 0,
        id: v.lxc_id,
        sec_id: v.sec_id,
        flags: v.flags,
        ifindex: v.ifindex,
        mac: mac_string(mac_from_u64(v.mac)),
        node_mac: mac_string(mac_from_u64(v.node_mac)),
    })
}

/// Every entry of the `lxc` map pinned under `bpf_root`, by address.
pub fn entries(bpf_root: &Path) -> Result<Vec<LocalAddress>, MapsError> {
    let (map, _) = open::<EndpointKey, EndpointInfo>(bpf_root, &LXC)?;
    let mut out: Vec<LocalAddress> = collect(&map, LXC.name)?
        .iter()
        .filter_map(|(k, v)| decode(k, v))
        .collect();
    out.sort_by_key(|e| e.ip);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use lash_common::endpoint::mac_to_u64;

    use super::*;

    #[test]
    fn decodes_as_the_reference_listing_shows() {
        let key = EndpointKey::v4(u32::from(Ipv4Addr::new(172, 16, 0, 251)).to_be());
        let v = EndpointInfo {
            ifindex: 14,
            lxc_id: 663,
            sec_id: 11370,
            mac: mac_to_u64([0x12, 0x52, 0xe3, 0x7e, 0x87, 0x4f]),
            node_mac: mac_to_u64([0x2e, 0xe6, 0x8a, 0xa2, 0x06, 0x1e]),
            ..Default::default()
        };
        let e = decode(&key, &v).unwrap();
        assert_eq!(e.ip, Ipv4Addr::new(172, 16, 0, 251));
        assert_eq!((e.id, e.sec_id, e.ifindex, e.host), (663, 11370, 14, false));
        assert_eq!(e.mac, "12:52:E3:7E:87:4F");
        assert_eq!(e.node_mac, "2E:E6:8A:A2:06:1E");
        let host = EndpointInfo {
            flags: ENDPOINT_F_HOST,
            ..Default::default()
        };
        assert!(decode(&key, &host).unwrap().host);
        let v6 = EndpointKey { family: 2, ..key };
        assert_eq!(decode(&v6, &v), None);
    }
}
