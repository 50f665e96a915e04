//! lb4_services: (frontend, scope, slot) -> service entry (slot 0) or backend
//! id. A service has its external scope always and an internal scope when its
//! two traffic policies give different backends (flag two-scopes on the
//! external slot 0).

use std::net::Ipv4Addr;

use lash_common::{
    Lb4Key, Lb4Service, LB_LOOKUP_SCOPE_EXT, LB_LOOKUP_SCOPE_INT, SVC_FLAG2_INT_LOCAL_SCOPE,
    SVC_FLAG2_TWO_SCOPES, SVC_FLAG_AFFINITY, SVC_FLAG_EXTERNAL_IP, SVC_FLAG_EXT_LOCAL_SCOPE,
    SVC_FLAG_LOADBALANCER, SVC_FLAG_NODEPORT, SVC_FLAG_ROUTABLE,
};

use crate::model::{DesiredService, L4Addr, Proto, ServiceKind};

/// Which backend set of a service a key addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    External,
    Internal,
}

impl Scope {
    fn number(self) -> u8 {
        match self {
            Scope::External => LB_LOOKUP_SCOPE_EXT,
            Scope::Internal => LB_LOOKUP_SCOPE_INT,
        }
    }
}

/// The key of `slot` of the external scope of the service at `frontend`
/// (slot 0: the service itself).
pub fn key(frontend: &L4Addr, slot: u16) -> Lb4Key {
    key_in(frontend, Scope::External, slot)
}

/// The key of `slot` of `scope` of the service at `frontend`.
pub fn key_in(frontend: &L4Addr, scope: Scope, slot: u16) -> Lb4Key {
    Lb4Key {
        address: u32::from(frontend.ip).to_be(),
        dport: frontend.port.to_be(),
        backend_slot: slot,
        proto: frontend.proto.number(),
        scope: scope.number(),
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

/// The scope a key addresses; None for scopes we never write.
pub fn scope_of(key: &Lb4Key) -> Option<Scope> {
    match key.scope {
        LB_LOOKUP_SCOPE_EXT => Some(Scope::External),
        LB_LOOKUP_SCOPE_INT => Some(Scope::Internal),
        _ => None,
    }
}

/// What slot 0 says of a service besides its count and rev-NAT index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Head {
    pub flags: u8,
    pub flags2: u8,
    /// Session-affinity timeout in seconds (0 without affinity), carried in
    /// slot 0's backend id as Cilium does.
    pub affinity_timeout: u32,
}

impl Head {
    /// Cilium's flags for a desired frontend: its kind, routable for every
    /// kind but ClusterIP, the local scopes of its policies, session
    /// affinity, and two-scopes when it has an internal backend set.
    pub fn of(svc: &DesiredService) -> Self {
        let mut flags = match svc.kind {
            ServiceKind::ClusterIP => 0,
            ServiceKind::NodePort => SVC_FLAG_NODEPORT,
            ServiceKind::ExternalIP => SVC_FLAG_EXTERNAL_IP,
            ServiceKind::LoadBalancer => SVC_FLAG_LOADBALANCER,
        };
        if svc.kind != ServiceKind::ClusterIP {
            flags |= SVC_FLAG_ROUTABLE;
        }
        if svc.policy.external_local {
            flags |= SVC_FLAG_EXT_LOCAL_SCOPE;
        }
        if svc.affinity_timeout.is_some() {
            flags |= SVC_FLAG_AFFINITY;
        }
        let mut flags2 = 0;
        if svc.policy.internal_local {
            flags2 |= SVC_FLAG2_INT_LOCAL_SCOPE;
        }
        if svc.internal.is_some() {
            flags2 |= SVC_FLAG2_TWO_SCOPES;
        }
        Head {
            flags,
            flags2,
            affinity_timeout: svc.affinity_timeout.unwrap_or(0),
        }
    }

    /// The head slot 0 carries.
    pub fn read(v: &Lb4Service) -> Self {
        Head {
            flags: v.flags,
            flags2: v.flags2,
            affinity_timeout: if v.flags & SVC_FLAG_AFFINITY != 0 {
                v.backend_id
            } else {
                0
            },
        }
    }

    pub fn two_scopes(&self) -> bool {
        self.flags2 & SVC_FLAG2_TWO_SCOPES != 0
    }
}

/// Slot 0: how many backend slots follow, the reverse-NAT index and the head.
pub fn frontend_value(count: u16, rev_nat_index: u16, head: Head) -> Lb4Service {
    Lb4Service {
        backend_id: head.affinity_timeout,
        count,
        rev_nat_index: rev_nat_index.to_be(),
        flags: head.flags,
        flags2: head.flags2,
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
            bytes(&frontend_value(6, 8, Head::default())),
            [0, 0, 0, 0, 0x06, 0x00, 0x00, 0x08, 0, 0, 0, 0]
        );
        assert_eq!(bytes(&key(&fe, 1))[6..8], [0x01, 0x00]);
        assert_eq!(
            bytes(&slot_value(34, 8)),
            [0x22, 0, 0, 0, 0, 0, 0x00, 0x08, 0, 0, 0, 0]
        );
        assert_eq!(frontend_of(&key(&fe, 3)), Some(fe));
        assert_eq!(rev_nat_of(&frontend_value(6, 8, Head::default())), 8);
    }

    /// A NodePort frontend with externalTrafficPolicy=Local, ClientIP
    /// affinity (10800 s) and an internal scope: Cilium's flag bits, the
    /// timeout in slot 0's backend id, the scope in byte 9 of the key.
    #[test]
    fn node_port_two_scopes_affinity_head() {
        use crate::model::{BackendState, DesiredService, TrafficPolicy};
        let fe = L4Addr {
            ip: Ipv4Addr::new(192, 168, 1, 10),
            port: 30080,
            proto: Proto::Tcp,
        };
        let be = L4Addr {
            ip: Ipv4Addr::new(10, 244, 0, 5),
            port: 8080,
            proto: Proto::Tcp,
        };
        let svc = DesiredService {
            policy: TrafficPolicy {
                external_local: true,
                internal_local: false,
            },
            internal: Some(vec![(be, BackendState::Active)]),
            affinity_timeout: Some(10800),
            ..DesiredService::plain("default/web".into(), fe, ServiceKind::NodePort, vec![])
        };
        let head = Head::of(&svc);
        // NodePort 0x02 | local scope 0x04 | affinity 0x10 | routable 0x40.
        assert_eq!(head.flags, 0x56);
        assert_eq!(head.flags2, 0x20, "two scopes");
        assert_eq!(
            bytes(&frontend_value(0, 3, head)),
            [0x30, 0x2a, 0, 0, 0, 0, 0x00, 0x03, 0x56, 0x20, 0, 0]
        );
        assert_eq!(Head::read(&frontend_value(0, 3, head)), head);
        let k = key_in(&fe, Scope::Internal, 2);
        assert_eq!(bytes(&k), [192, 168, 1, 10, 0x75, 0x80, 2, 0, 6, 1, 0, 0]);
        assert_eq!(scope_of(&k), Some(Scope::Internal));
        assert_eq!(scope_of(&key(&fe, 0)), Some(Scope::External));

        // A ClusterIP with internalTrafficPolicy=Local: one scope, flags2 bit 4.
        let cip = DesiredService {
            policy: TrafficPolicy {
                external_local: false,
                internal_local: true,
            },
            ..DesiredService::plain("default/web".into(), fe, ServiceKind::ClusterIP, vec![])
        };
        assert_eq!(
            Head::of(&cip),
            Head {
                flags: 0,
                flags2: 0x10,
                affinity_timeout: 0
            }
        );
    }
}
