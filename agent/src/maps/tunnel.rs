//! The `tunnel_map`: a remote node's pod-range base address -> the node's
//! address. Written by the mesh (the other nodes' owner), listed by
//! `agent bpf tunnel list` as Cilium's `bpf tunnel list` shows it.

use std::{net::Ipv4Addr, path::Path};

use lash_common::{
    endpoint::ENDPOINT_KEY_IPV4,
    maps::TUNNEL_MAP,
    tunnel::{TunnelKey, TunnelValue},
};
use serde::Serialize;

use super::{
    pinned::{collect, deleted, open, write_err, Hash},
    MapWriteError, MapsError,
};

/// One entry, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct TunnelEntry {
    /// The remote pod range's base address.
    pub prefix: Ipv4Addr,
    /// The node carrying it.
    pub endpoint: Ipv4Addr,
}

pub fn encode(e: &TunnelEntry) -> (TunnelKey, TunnelValue) {
    (
        TunnelKey::v4(u32::from(e.prefix).to_be()),
        TunnelValue::v4(u32::from(e.endpoint).to_be()),
    )
}

pub fn decode(k: &TunnelKey, v: &TunnelValue) -> Option<TunnelEntry> {
    (k.family == ENDPOINT_KEY_IPV4).then(|| TunnelEntry {
        prefix: Ipv4Addr::from(u32::from_be(k.ip4)),
        endpoint: Ipv4Addr::from(u32::from_be(v.ip4)),
    })
}

/// The pinned `tunnel_map`.
pub struct TunnelMap(Hash<TunnelKey, TunnelValue>);

impl TunnelMap {
    pub fn open(bpf_root: &Path) -> Result<Self, MapsError> {
        Ok(TunnelMap(open(bpf_root, &TUNNEL_MAP)?.0))
    }

    pub fn put(&mut self, e: &TunnelEntry) -> Result<(), MapWriteError> {
        let (k, v) = encode(e);
        self.0
            .insert(k, v, 0)
            .map_err(|err| write_err(TUNNEL_MAP.name, "update", err))
    }

    pub fn remove(&mut self, prefix: Ipv4Addr) -> Result<(), MapWriteError> {
        let k = TunnelKey::v4(u32::from(prefix).to_be());
        deleted(self.0.remove(&k), TUNNEL_MAP.name)
    }

    /// Every entry, by prefix.
    pub fn entries(&self) -> Result<Vec<TunnelEntry>, MapsError> {
        let mut out: Vec<TunnelEntry> = collect(&self.0, TUNNEL_MAP.name)?
            .iter()
            .filter_map(|(k, v)| decode(k, v))
            .collect();
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_network_order_and_round_trip() {
        let e = TunnelEntry {
            prefix: Ipv4Addr::new(10, 0, 1, 0),
            endpoint: Ipv4Addr::new(192, 168, 56, 12),
        };
        let (k, v) = encode(&e);
        assert_eq!(k.ip4.to_ne_bytes(), [10, 0, 1, 0]);
        assert_eq!(v.ip4.to_ne_bytes(), [192, 168, 56, 12]);
        assert_eq!((k.family, v.family), (ENDPOINT_KEY_IPV4, ENDPOINT_KEY_IPV4));
        assert_eq!(decode(&k, &v), Some(e));
    }
}
