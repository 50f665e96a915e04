//! Which of the node's addresses open node ports: all of them and 127.0.0.1
//! by default, or those inside `--nodeport-addresses` (kube-proxy's flag: a
//! comma-separated list of CIDRs; 127.0.0.1 only if one of them holds it).

use std::{net::Ipv4Addr, str::FromStr};

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "{input:?} is not an IPv4 CIDR (expected ADDRESS/PREFIX, e.g. 192.168.0.0/16; IPv6 is not \
     served)"
)]
pub struct NodePortCidrError {
    input: String,
}

/// One IPv4 prefix of `--nodeport-addresses`. Host bits are ignored, as
/// kube-proxy's parser does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodePortCidr {
    network: u32,
    mask: u32,
}

impl NodePortCidr {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask == self.network
    }
}

impl FromStr for NodePortCidr {
    type Err = NodePortCidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || NodePortCidrError { input: s.into() };
        let (ip, prefix) = s.trim().split_once('/').ok_or_else(err)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| err())?;
        let prefix: u32 = prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(err)?;
        // A shift by 32 would overflow: /0 masks nothing.
        let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
        Ok(NodePortCidr {
            network: u32::from(ip) & mask,
            mask,
        })
    }
}

/// The addresses node ports open on, sorted: the node's `addresses` plus
/// 127.0.0.1, kept when no CIDR is given or one of `cidrs` holds them.
/// 0.0.0.0 is never one.
pub fn node_port_addresses(addresses: &[Ipv4Addr], cidrs: &[NodePortCidr]) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = addresses
        .iter()
        .copied()
        .chain([Ipv4Addr::LOCALHOST])
        .filter(|ip| !ip.is_unspecified())
        .filter(|ip| cidrs.is_empty() || cidrs.iter().any(|c| c.contains(*ip)))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn every_address_and_loopback_unless_limited() {
        let node = [ip("192.168.1.10"), ip("10.0.0.5"), ip("127.0.0.1")];
        assert_eq!(
            node_port_addresses(&node, &[]),
            [ip("10.0.0.5"), ip("127.0.0.1"), ip("192.168.1.10")]
        );
        // A namespace whose loopback has no address still gets 127.0.0.1.
        assert_eq!(
            node_port_addresses(&[ip("10.0.0.5")], &[]),
            [ip("10.0.0.5"), ip("127.0.0.1")]
        );
        let cases: [(&str, &[&str]); 5] = [
            ("192.168.0.0/16", &["192.168.1.10"]),
            ("192.168.1.10/32", &["192.168.1.10"]),
            ("10.0.0.0/8,127.0.0.0/8", &["10.0.0.5", "127.0.0.1"]),
            // Host bits are ignored.
            ("10.9.9.9/8", &["10.0.0.5"]),
            ("172.16.0.0/12", &[]),
        ];
        for (flag, want) in cases {
            let cidrs: Vec<NodePortCidr> = flag.split(',').map(|c| c.parse().unwrap()).collect();
            let want: Vec<Ipv4Addr> = want.iter().map(|s| ip(s)).collect();
            assert_eq!(node_port_addresses(&node, &cidrs), want, "{flag}");
        }
    }

    #[test]
    fn bad_cidrs_are_refused_by_name() {
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "fd00::/64",
            "primary",
            "10.0.0/8",
        ] {
            let e = bad.parse::<NodePortCidr>().unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
