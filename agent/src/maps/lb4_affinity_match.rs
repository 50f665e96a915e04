//! lb4_affinity_match: (backend id, rev-NAT index) -> 0, present while the
//! backend sits in one of the service's slots. The socket programs check it
//! before reusing a UDP socket's earlier backend, so a choice survives slots
//! being moved around but not the backend leaving the service.

use lash_common::Lb4AffinityMatch;

/// The key for backend `id` of the service with rev-NAT `index` (host order).
pub fn key(id: u32, index: u16) -> Lb4AffinityMatch {
    Lb4AffinityMatch {
        backend_id: id,
        rev_nat_id: index.to_be(),
        pad: 0,
    }
}

/// (backend id, rev-NAT index in host order) of a key.
pub fn parts(k: &Lb4AffinityMatch) -> (u32, u16) {
    (k.backend_id, u16::from_be(k.rev_nat_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_id_host_order_rev_nat_network_order() {
        let k = key(34, 8);
        // SAFETY: repr(C) Pod without padding (checked in lash-common).
        let b: [u8; 8] = unsafe { std::mem::transmute(k) };
        assert_eq!(b, [0x22, 0, 0, 0, 0x00, 0x08, 0, 0]);
        assert_eq!(parts(&k), (34, 8));
    }
}
