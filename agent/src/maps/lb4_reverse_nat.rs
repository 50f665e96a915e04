//! lb4_reverse_nat: rev_nat_index (network order) -> service frontend. The
//! index is the "service ID" of `agent service list`.

use std::net::Ipv4Addr;

use lash_common::Lb4ReverseNat;

use crate::model::L4Addr;

pub fn key(rev_nat_index: u16) -> u16 {
    rev_nat_index.to_be()
}

pub fn index_of(key: u16) -> u16 {
    u16::from_be(key)
}

pub fn value(frontend: &L4Addr) -> Lb4ReverseNat {
    Lb4ReverseNat {
        address: u32::from(frontend.ip).to_be(),
        port: frontend.port.to_be(),
    }
}

/// (address, port) of an entry, host order.
pub fn addr_of(v: &Lb4ReverseNat) -> (Ipv4Addr, u16) {
    let (a, p) = ({ v.address }, { v.port });
    (Ipv4Addr::from(u32::from_be(a)), u16::from_be(p))
}
