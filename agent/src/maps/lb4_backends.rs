//! lb4_backends: backend id (host order) -> backend address and state.

use std::net::Ipv4Addr;

use lash_common::{
    Lb4Backend, BE_STATE_ACTIVE, BE_STATE_MAINTENANCE, BE_STATE_QUARANTINED, BE_STATE_TERMINATING,
};

use crate::model::{BackendState, L4Addr, Proto};

pub fn value(addr: &L4Addr, state: BackendState) -> Lb4Backend {
    Lb4Backend {
        address: u32::from(addr.ip).to_be(),
        port: addr.port.to_be(),
        proto: addr.proto.number(),
        flags: state.to_flags(),
        cluster_id: 0,
        pad: [0; 3],
    }
}

pub fn addr_of(v: &Lb4Backend) -> Option<L4Addr> {
    Some(L4Addr {
        ip: Ipv4Addr::from(u32::from_be(v.address)),
        port: u16::from_be(v.port),
        proto: Proto::from_number(v.proto)?,
    })
}

pub fn state_of(v: &Lb4Backend) -> Option<BackendState> {
    match v.flags {
        BE_STATE_ACTIVE => Some(BackendState::Active),
        BE_STATE_TERMINATING => Some(BackendState::Terminating),
        _ => None,
    }
}

/// The state as `cilium service list` prints it.
pub fn state_name(flags: u8) -> &'static str {
    match flags {
        BE_STATE_ACTIVE => "active",
        BE_STATE_TERMINATING => "terminating",
        BE_STATE_QUARANTINED => "quarantined",
        BE_STATE_MAINTENANCE => "maintenance",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_orders_bytes() {
        let a = L4Addr {
            ip: Ipv4Addr::new(10, 244, 1, 69),
            port: 53,
            proto: Proto::Udp,
        };
        let v = value(&a, BackendState::Terminating);
        // SAFETY: repr(C) Pod without padding.
        let b = unsafe { std::slice::from_raw_parts(&v as *const _ as *const u8, 12) };
        assert_eq!(b, [10, 244, 1, 69, 0, 53, 17, 1, 0, 0, 0, 0]);
        assert_eq!(addr_of(&v), Some(a));
        assert_eq!(state_of(&v), Some(BackendState::Terminating));
        assert_eq!(state_name(v.flags), "terminating");
    }
}
