//! The `ipcache` map (an LPM trie): what every address is, by prefix: its
//! security identity and, for a remote pod, the node carrying it. The
//! endpoint manager writes the node's pods and own addresses; the CLI lists
//! it and answers "which entry would the datapath use for this address".
//!
//! aya's LPM trie handle splits a key into its prefix length and the rest, so
//! the 24-byte [`IpcacheKey`] travels here as (prefixlen, the 20 bytes after
//! it); the bytes are the same the programs see.

use std::{net::Ipv4Addr, path::Path};

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    MapData, MapError,
};
use lash_common::{
    endpoint::{IpcacheKey, RemoteEndpointInfo, ENDPOINT_KEY_IPV4},
    maps::IPCACHE,
};
use serde::Serialize;

use super::{
    pinned::{deleted, open_map, typed, write_err},
    MapWriteError, MapsError,
};

/// The part of an [`IpcacheKey`] after `prefixlen`.
type KeyData = [u8; 20];

fn to_trie_key(k: &IpcacheKey) -> Key<KeyData> {
    // SAFETY: IpcacheKey is repr(C), 24 bytes without implicit padding.
    let bytes: [u8; 24] = unsafe { std::mem::transmute(*k) };
    let mut data = [0u8; 20];
    data.copy_from_slice(&bytes[4..]);
    Key::new(k.prefixlen, data)
}

fn from_trie_key(k: &Key<KeyData>) -> IpcacheKey {
    let mut bytes = [0u8; 24];
    bytes[..4].copy_from_slice(&k.prefix_len().to_ne_bytes());
    bytes[4..].copy_from_slice(&k.data());
    // SAFETY: every byte pattern is a valid IpcacheKey (all integer fields).
    unsafe { std::mem::transmute(bytes) }
}

/// One entry, decoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IpcacheEntry {
    /// `10.0.1.18/32`.
    pub prefix: String,
    #[serde(skip)]
    pub ip: Ipv4Addr,
    #[serde(skip)]
    pub bits: u32,
    pub identity: u32,
    pub encrypt_key: u8,
    /// The node carrying the prefix; None for local and world.
    pub tunnel_endpoint: Option<Ipv4Addr>,
    pub flags: u8,
}

impl IpcacheEntry {
    /// Whether `ip` falls in this entry's prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.bits == 0 {
            0
        } else {
            u32::MAX << (32 - self.bits.min(32))
        };
        u32::from(ip) & mask == u32::from(self.ip) & mask
    }
}

pub fn decode(k: &IpcacheKey, v: &RemoteEndpointInfo) -> Option<IpcacheEntry> {
    if k.family != ENDPOINT_KEY_IPV4 {
        return None;
    }
    let ip = Ipv4Addr::from(u32::from_be(k.ip4));
    let bits = k.bits();
    Some(IpcacheEntry {
        prefix: format!("{ip}/{bits}"),
        ip,
        bits,
        identity: v.sec_identity,
        encrypt_key: v.key,
        tunnel_endpoint: (v.tunnel_endpoint != 0)
            .then(|| Ipv4Addr::from(u32::from_be(v.tunnel_endpoint))),
        flags: v.flags,
    })
}

/// The entry for a local address (a pod or the node's own): identity only.
pub fn encode_local(ip: Ipv4Addr, identity: u32) -> (IpcacheKey, RemoteEndpointInfo) {
    (
        IpcacheKey::v4(u32::from(ip).to_be(), 32),
        RemoteEndpointInfo {
            sec_identity: identity,
            ..Default::default()
        },
    )
}

/// The entry for a prefix another node carries: `identity`, and the node
/// the tunnel goes to (None in native routing for the node's own address).
pub fn encode_remote(
    ip: Ipv4Addr,
    bits: u8,
    identity: u32,
    tunnel_endpoint: Option<Ipv4Addr>,
) -> (IpcacheKey, RemoteEndpointInfo) {
    (
        IpcacheKey::v4(u32::from(ip).to_be(), u32::from(bits)),
        RemoteEndpointInfo {
            sec_identity: identity,
            tunnel_endpoint: tunnel_endpoint.map_or(0, |t| u32::from(t).to_be()),
            ..Default::default()
        },
    )
}

/// The pinned `ipcache` map.
pub struct IpcacheMap(LpmTrie<MapData, KeyData, RemoteEndpointInfo>);

impl IpcacheMap {
    pub fn open(bpf_root: &Path) -> Result<Self, MapsError> {
        let (map, _) = open_map(bpf_root, &IPCACHE)?;
        Ok(IpcacheMap(typed(bpf_root, &IPCACHE, map)?))
    }

    pub fn put(&mut self, (k, v): (IpcacheKey, RemoteEndpointInfo)) -> Result<(), MapWriteError> {
        self.0
            .insert(&to_trie_key(&k), v, 0)
            .map_err(|e| write_err(IPCACHE.name, "update", e))
    }

    /// Removes the /32 of `ip`.
    pub fn remove_host(&mut self, ip: Ipv4Addr) -> Result<(), MapWriteError> {
        self.remove_prefix(ip, 32)
    }

    /// Removes the entry of exactly `ip/bits`.
    pub fn remove_prefix(&mut self, ip: Ipv4Addr, bits: u32) -> Result<(), MapWriteError> {
        let k = IpcacheKey::v4(u32::from(ip).to_be(), bits);
        deleted(self.0.remove(&to_trie_key(&k)), IPCACHE.name)
    }

    /// Every entry, by prefix.
    pub fn entries(&self) -> Result<Vec<IpcacheEntry>, MapsError> {
        let mut out = Vec::new();
        for item in self.0.iter() {
            match item {
                Ok((k, v)) => out.extend(decode(&from_trie_key(&k), &v)),
                Err(MapError::KeyNotFound) => continue,
                Err(source) => {
                    return Err(MapsError::Read {
                        name: IPCACHE.name,
                        source,
                    })
                }
            }
        }
        out.sort_by_key(|e| (e.ip, e.bits));
        Ok(out)
    }

    /// What the datapath gets for `ip`: the kernel's own longest-prefix
    /// lookup, with the prefix that matched (found among the entries, since
    /// the kernel answers with the value only). None: a miss, that is world.
    pub fn lookup(&self, ip: Ipv4Addr) -> Result<Option<IpcacheEntry>, MapsError> {
        let k = IpcacheKey::v4(u32::from(ip).to_be(), 32);
        let v = match self.0.get(&to_trie_key(&k), 0) {
            Ok(v) => v,
            Err(MapError::KeyNotFound) => return Ok(None),
            Err(MapError::SyscallError(s)) if s.io_error.raw_os_error() == Some(libc::ENOENT) => {
                return Ok(None)
            }
            Err(source) => {
                return Err(MapsError::Read {
                    name: IPCACHE.name,
                    source,
                })
            }
        };
        let best = self
            .entries()?
            .into_iter()
            .filter(|e| e.contains(ip))
            .max_by_key(|e| e.bits);
        Ok(best.or_else(|| {
            // Raced with a write: still say what the kernel said.
            decode(&k, &v)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trie_keys_carry_the_same_bytes() {
        let k = IpcacheKey::v4(u32::from(Ipv4Addr::new(10, 0, 1, 0)).to_be(), 24);
        let t = to_trie_key(&k);
        assert_eq!(t.prefix_len(), 56);
        assert_eq!(
            &t.data()[..4],
            &[0, 0, 0, ENDPOINT_KEY_IPV4],
            "cluster id, pad, family"
        );
        assert_eq!(&t.data()[4..8], &[10, 0, 1, 0], "network order");
        assert_eq!(from_trie_key(&t), k);
    }

    #[test]
    fn decodes_as_the_reference_listing_shows() {
        let k = IpcacheKey::v4(u32::from(Ipv4Addr::new(10, 0, 1, 18)).to_be(), 32);
        let v = RemoteEndpointInfo {
            sec_identity: 19520,
            tunnel_endpoint: u32::from(Ipv4Addr::new(192, 168, 10, 101)).to_be(),
            ..Default::default()
        };
        let e = decode(&k, &v).unwrap();
        assert_eq!(e.prefix, "10.0.1.18/32");
        assert_eq!(e.identity, 19520);
        assert_eq!(e.tunnel_endpoint, Some(Ipv4Addr::new(192, 168, 10, 101)));
        assert!(e.contains(Ipv4Addr::new(10, 0, 1, 18)));
        assert!(!e.contains(Ipv4Addr::new(10, 0, 1, 19)));
        let wide = decode(
            &IpcacheKey::v4(u32::from(Ipv4Addr::new(10, 0, 1, 0)).to_be(), 24),
            &v,
        )
        .unwrap();
        assert!(wide.contains(Ipv4Addr::new(10, 0, 1, 200)));
        assert!(!wide.contains(Ipv4Addr::new(10, 0, 2, 1)));
    }
}
