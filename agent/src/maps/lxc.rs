//! The `lxc` map: this node's local addresses, pods (how to deliver to them)
//! and the node's own (flag host): the encoding the endpoint manager writes
//! through, and the decoding the CLI reads through.

use std::{net::Ipv4Addr, path::Path};

use lash_common::{
    endpoint::{
        mac_from_u64, mac_to_u64, EndpointInfo, EndpointKey, ENDPOINT_F_HOST, ENDPOINT_KEY_IPV4,
    },
    maps::LXC,
};
use serde::Serialize;

use super::{
    pinned::{collect, deleted, open, write_err, Hash},
    MapWriteError, MapsError,
};

/// What a pod's entry says: the datapath delivers to `ip` through the lxc
/// `ifindex`, rewriting the MACs to `node_mac` (source) and `mac` (destination).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodEntry {
    pub ip: Ipv4Addr,
    pub id: u16,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub node_mac: [u8; 6],
    pub sec_id: u32,
}

pub fn key(ip: Ipv4Addr) -> EndpointKey {
    EndpointKey::v4(u32::from(ip).to_be())
}

pub fn encode_pod(p: &PodEntry) -> (EndpointKey, EndpointInfo) {
    (
        key(p.ip),
        EndpointInfo {
            ifindex: p.ifindex,
            lxc_id: p.id,
            mac: mac_to_u64(p.mac),
            node_mac: mac_to_u64(p.node_mac),
            sec_id: p.sec_id,
            ..Default::default()
        },
    )
}

/// The entry of one of the node's own addresses: the flag and nothing else.
pub fn encode_host(ip: Ipv4Addr) -> (EndpointKey, EndpointInfo) {
    (
        key(ip),
        EndpointInfo {
            flags: ENDPOINT_F_HOST,
            ..Default::default()
        },
    )
}

/// The pinned `lxc` map, for writing.
pub struct LxcMap(Hash<EndpointKey, EndpointInfo>);

impl LxcMap {
    pub fn open(bpf_root: &Path) -> Result<Self, MapsError> {
        Ok(LxcMap(open(bpf_root, &LXC)?.0))
    }

    pub fn put(&mut self, (k, v): (EndpointKey, EndpointInfo)) -> Result<(), MapWriteError> {
        self.0
            .insert(k, v, 0)
            .map_err(|e| write_err(LXC.name, "update", e))
    }

    pub fn remove(&mut self, ip: Ipv4Addr) -> Result<(), MapWriteError> {
        deleted(self.0.remove(&key(ip)), LXC.name)
    }

    pub fn entries(&self) -> Result<Vec<(EndpointKey, EndpointInfo)>, MapsError> {
        collect(&self.0, LXC.name)
    }
}

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
    use super::*;

    #[test]
    fn a_pod_entry_round_trips() {
        let p = PodEntry {
            ip: Ipv4Addr::new(10, 200, 0, 7),
            id: 3,
            ifindex: 41,
            mac: [0x12, 0x52, 0xe3, 0x7e, 0x87, 0x4f],
            node_mac: [0x2e, 0xe6, 0x8a, 0xa2, 0x06, 0x1e],
            sec_id: 256,
        };
        let (k, v) = encode_pod(&p);
        assert_eq!(k.ip4.to_ne_bytes(), [10, 200, 0, 7], "network order");
        let e = decode(&k, &v).unwrap();
        assert_eq!(
            (e.ip, e.id, e.ifindex, e.sec_id, e.host),
            (p.ip, 3, 41, 256, false)
        );
        assert_eq!(e.node_mac, "2E:E6:8A:A2:06:1E");
        let (hk, hv) = encode_host(Ipv4Addr::new(10, 200, 0, 1));
        assert!(decode(&hk, &hv).unwrap().host);
    }

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
