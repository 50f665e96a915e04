//! lb4_affinity: (client, service) -> the backend the client got last and
//! when. The programs write it (ClientIP session affinity); the agent only
//! reads it, for listings and tests, and never needs to clean it: it is an
//! LRU, and an entry counts only while its backend is still in the service
//! (lb4_affinity_match) and its timeout has not passed.

use std::{net::Ipv4Addr, path::Path};

use lash_common::{maps::LB4_AFFINITY, Lb4AffinityKey, Lb4AffinityValue, AFFINITY_F_NETNS};
use serde::Serialize;

use super::pinned::{collect, open, MapsError};

/// Who a client is: a network namespace (socket LB) or an address (the
/// per-packet path).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Client {
    Netns(u64),
    Address(Ipv4Addr),
}

/// One entry, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Affinity {
    pub client: Client,
    /// Host order.
    pub rev_nat: u16,
    pub backend_id: u32,
    /// Monotonic seconds (the conntrack clock) of the client's last new
    /// connection.
    pub last_used: u64,
}

pub fn decode(k: &Lb4AffinityKey, v: &Lb4AffinityValue) -> Affinity {
    let client = if k.flags & AFFINITY_F_NETNS != 0 {
        Client::Netns(k.client_id)
    } else {
        // The address's four bytes in wire order sit first in memory.
        let b = k.client_id.to_le_bytes();
        Client::Address(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    };
    Affinity {
        client,
        rev_nat: u16::from_be(k.rev_nat_id),
        backend_id: v.backend_id,
        last_used: v.last_used,
    }
}

/// Every entry of the map pinned under `root`.
pub fn entries(root: &Path) -> Result<Vec<Affinity>, MapsError> {
    let (map, _) = open::<Lb4AffinityKey, Lb4AffinityValue>(root, &LB4_AFFINITY)?;
    Ok(collect(&map, LB4_AFFINITY.name)?
        .iter()
        .map(|(k, v)| decode(k, v))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes the per-packet program writes for client 10.244.0.7 of
    /// service 3 (Cilium's union: the address first, in wire order).
    #[test]
    fn client_address_and_netns_keys() {
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&[10, 244, 0, 7]);
        k[8..10].copy_from_slice(&3u16.to_be_bytes());
        // SAFETY: 16 bytes into a repr(C) Pod of 16 bytes.
        let key: Lb4AffinityKey = unsafe { std::mem::transmute(k) };
        let v = Lb4AffinityValue {
            last_used: 1234,
            backend_id: 34,
            pad: 0,
        };
        assert_eq!(
            decode(&key, &v),
            Affinity {
                client: Client::Address(Ipv4Addr::new(10, 244, 0, 7)),
                rev_nat: 3,
                backend_id: 34,
                last_used: 1234,
            }
        );
        let netns = Lb4AffinityKey {
            client_id: 0x1000_0000_0001,
            rev_nat_id: 3u16.to_be(),
            flags: AFFINITY_F_NETNS,
            pad1: 0,
            pad2: 0,
        };
        // SAFETY: as above, the other way.
        let b: [u8; 16] = unsafe { std::mem::transmute(netns) };
        assert_eq!(b[10], 1, "the netns flag is byte 10");
        assert_eq!(decode(&netns, &v).client, Client::Netns(0x1000_0000_0001));
    }
}
