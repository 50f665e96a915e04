//! The conntrack maps (`ct4_global` for TCP, `ct_any4_global` for the rest):
//! decoding for `agent bpf ct list global`, and the expiry sweep, the only
//! write the agent makes to them (the programs create and refresh entries;
//! LRU eviction alone would keep dead flows until the maps fill).

use std::{net::Ipv4Addr, path::Path};

use aya::maps::MapError;
use lash_common::{
    ct::*,
    maps::{MapDef, CT4_GLOBAL, CT_ANY4_GLOBAL},
};
use serde::Serialize;

use super::{
    pinned::{collect, deleted, open, Hash},
    MapWriteError, MapsError,
};

/// One entry, decoded: the packet's addresses and ports as the tuple holds
/// them (the tuple's `dport` field carries the packet's source port, see
/// common's `ct`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CtRow {
    pub proto: &'static str,
    /// OUT, IN, RELATED or SERVICE.
    pub dir: &'static str,
    pub src: String,
    pub dst: String,
    /// Monotonic seconds at which it expires.
    pub expires: u32,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub flags: u16,
    pub flag_names: Vec<&'static str>,
    pub rev_nat: u16,
    /// Service entries: the chosen backend.
    pub backend_id: u64,
    pub source_security_id: u32,
    pub ifindex: u16,
}

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "TCP",
        17 => "UDP",
        1 => "ICMP",
        132 => "SCTP",
        _ => "OTHER",
    }
}

fn dir_name(flags: u8) -> &'static str {
    if flags & TUPLE_F_SERVICE != 0 {
        "SERVICE"
    } else if flags & TUPLE_F_RELATED != 0 {
        "RELATED"
    } else if flags & TUPLE_F_IN != 0 {
        "IN"
    } else {
        "OUT"
    }
}

fn flag_names(f: u16) -> Vec<&'static str> {
    [
        (CT_F_RX_CLOSING, "RxClosing"),
        (CT_F_TX_CLOSING, "TxClosing"),
        (CT_F_LB_LOOPBACK, "LBLoopback"),
        (CT_F_SEEN_NON_SYN, "SeenNonSyn"),
        (CT_F_NODE_PORT, "NodePort"),
        (CT_F_FROM_TUNNEL, "FromTunnel"),
    ]
    .into_iter()
    .filter(|(bit, _)| f & bit != 0)
    .map(|(_, n)| n)
    .collect()
}

pub fn decode(k: &Ipv4CtTuple, v: &CtEntry) -> CtRow {
    let (daddr, saddr, pkt_sport, pkt_dport) = (k.daddr, k.saddr, k.dport, k.sport);
    let ip = |a: u32| Ipv4Addr::from(u32::from_be(a));
    CtRow {
        proto: proto_name(k.nexthdr),
        dir: dir_name(k.flags),
        src: format!("{}:{}", ip(saddr), u16::from_be(pkt_sport)),
        dst: format!("{}:{}", ip(daddr), u16::from_be(pkt_dport)),
        expires: v.lifetime,
        rx_packets: v.packets,
        rx_bytes: v.bytes,
        flags: v.flags,
        flag_names: flag_names(v.flags),
        rev_nat: u16::from_be(v.rev_nat_index),
        backend_id: v.backend_id,
        source_security_id: v.src_sec_id,
        ifindex: v.ifindex,
    }
}

/// Seconds on the clock the programs stamp lifetimes with
/// (bpf_ktime_get_coarse_ns: CLOCK_MONOTONIC_COARSE, the same time base as
/// CLOCK_MONOTONIC, at most a tick behind it).
pub fn monotonic_now() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u32
}

/// Both conntrack maps.
pub struct CtMaps {
    maps: [(MapDef, Hash<Ipv4CtTuple, CtEntry>); 2],
}

impl CtMaps {
    pub fn open(bpf_root: &Path) -> Result<Self, MapsError> {
        Ok(CtMaps {
            maps: [
                (CT4_GLOBAL, open(bpf_root, &CT4_GLOBAL)?.0),
                (CT_ANY4_GLOBAL, open(bpf_root, &CT_ANY4_GLOBAL)?.0),
            ],
        })
    }

    /// Every entry of both maps.
    pub fn rows(&self) -> Result<Vec<CtRow>, MapsError> {
        let mut out = Vec::new();
        for (def, map) in &self.maps {
            out.extend(collect(map, def.name)?.iter().map(|(k, v)| decode(k, v)));
        }
        Ok(out)
    }

    /// Deletes the entries whose lifetime ended before `now` (monotonic
    /// seconds). An entry is read again just before it goes, so a flow the
    /// datapath refreshed meanwhile keeps its entry. Returns how many went.
    pub fn sweep(&mut self, now: u32) -> Result<usize, MapWriteError> {
        let mut removed = 0;
        for (def, map) in &mut self.maps {
            let expired: Vec<Ipv4CtTuple> = map
                .iter()
                .filter_map(Result::ok)
                .filter(|(_, v)| v.lifetime < now)
                .map(|(k, _)| k)
                .collect();
            for k in expired {
                match map.get(&k, 0) {
                    Ok(v) if v.lifetime < now => {
                        deleted(map.remove(&k), def.name)?;
                        removed += 1;
                    }
                    Ok(_) | Err(MapError::KeyNotFound) => {}
                    Err(_) => {}
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tuple_prints_the_packets_own_direction() {
        let k = Ipv4CtTuple {
            daddr: u32::from(Ipv4Addr::new(1, 0, 0, 1)).to_be(),
            saddr: u32::from(Ipv4Addr::new(10, 244, 0, 213)).to_be(),
            // The packet's source port sits in `dport`.
            dport: 46486u16.to_be(),
            sport: 80u16.to_be(),
            nexthdr: 6,
            flags: TUPLE_F_OUT,
        };
        let v = CtEntry {
            packets: 4,
            bytes: 614,
            lifetime: 17755044,
            flags: CT_F_RX_CLOSING | CT_F_TX_CLOSING | CT_F_SEEN_NON_SYN,
            src_sec_id: 42837,
            ..Default::default()
        };
        let r = decode(&k, &v);
        assert_eq!((r.proto, r.dir), ("TCP", "OUT"));
        assert_eq!(r.src, "10.244.0.213:46486");
        assert_eq!(r.dst, "1.0.0.1:80");
        assert_eq!(r.flags, 0x13);
        assert_eq!(r.flag_names, ["RxClosing", "TxClosing", "SeenNonSyn"]);
        let svc = Ipv4CtTuple {
            flags: TUPLE_F_SERVICE,
            ..k
        };
        assert_eq!(decode(&svc, &v).dir, "SERVICE");
    }
}
