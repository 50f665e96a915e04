//! lb4_services: (frontend, slot) -> service entry (slot 0) or backend id.

use std::net::Ipv4Addr;

use lash_common::{Lb4Key, Lb4Service, LB_LOOKUP_SCOPE_EXT};

use crate::model::{L4Addr, Proto};

/// The key of `slot` of the service at `frontend` (slot 0: the service itself).
pub fn key(frontend: &L4Addr, slot: u16) -> Lb4Key {
    Lb4Key {
        address: u32::from(frontend.ip).to_be(),
        dport: frontend.port.to_be(),
        backend_slot: slot,
        proto: frontend.proto.number(),
        scope: LB_LOOKUP_SCOPE_EXT,
        pad: [0; 2],
    }
}

/// The frontend a key belongs to; None for protocols we never write.
pub fn frontend_of(key: &Lb4Key) -> Option<L4Addr> {
    Some(L4Addr {
        ip: Ipv4Addr::from(u32::from_be(key.address)),
        port: u16::from_be(key.dport),
        proto: Proto::from_number(key.proto)?,
    })
}

/// Slot 0: how many backend slots follow, and the reverse-NAT index.
pub fn frontend_value(count: u16, rev_nat_index: u16, flags: u8) -> Lb4Service {
    Lb4Service {
        backend_id: 0,
        count,
        rev_nat_index: rev_nat_index.to_be(),
        flags,
        flags2: 0,
        qcount: 0,
    }
}

/// Slots 1..=count: one backend each. rev_nat_index is repeated, as Cilium does,
/// so a dumped slot tells which service it belongs to.
pub fn slot_value(backend_id: u32, rev_nat_index: u16) -> Lb4Service {
    Lb4Service {
        backend_id,
        count: 0,
        rev_nat_index: rev_nat_index.to_be(),
        flags: 0,
        flags2: 0,
        qcount: 0,
    }
}

/// rev_nat_index of a value, in host order.
pub fn rev_nat_of(v: &Lb4Service) -> u16 {
    u16::from_be(v.rev_nat_index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: T is a repr(C) Pod without padding (checked in lash-common).
        unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()).to_vec() }
    }

    /// The seeds' dump: VIP 10.254.224.248:80, 6 backends, RevNAT 8, backend 34.
    #[test]
    fn encodes_like_ciliums_dump() {
        let fe = L4Addr {
            ip: Ipv4Addr::new(10, 254, 224, 248),
            port: 80,
            proto: Proto::Tcp,
        };
        let mut k0 = key(&fe, 0);
        // Cilium's dump shows proto 0 (any); ours carries the protocol in byte 8.
        assert_eq!(
            bytes(&k0)[..8],
            [0x0a, 0xfe, 0xe0, 0xf8, 0x00, 0x50, 0x00, 0x00]
        );
        assert_eq!(bytes(&k0)[8], 6);
        k0.proto = 0;
        assert_eq!(
            bytes(&k0),
            [0x0a, 0xfe, 0xe0, 0xf8, 0x00, 0x50, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            bytes(&frontend_value(6, 8, 0)),
            [0, 0, 0, 0, 0x06, 0x00, 0x00, 0x08, 0, 0, 0, 0]
        );
        assert_eq!(bytes(&key(&fe, 1))[6..8], [0x01, 0x00]);
        assert_eq!(
            bytes(&slot_value(34, 8)),
            [0x22, 0, 0, 0, 0, 0, 0x00, 0x08, 0, 0, 0, 0]
        );
        assert_eq!(frontend_of(&key(&fe, 3)), Some(fe));
        assert_eq!(rev_nat_of(&frontend_value(6, 8, 0)), 8);
    }
}
