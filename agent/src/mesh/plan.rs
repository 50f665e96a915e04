//! What the other nodes should be programmed as, worked out from the
//! sources' node list without touching anything: which nodes are peers
//! (routed to), and why the rest are not.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::model::ClusterNode;

/// How packets reach other nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoutingMode {
    /// VXLAN to the node's address (Cilium's default).
    Tunnel,
    /// Kernel routes to each node's pod range via its address.
    Native,
}

impl RoutingMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RoutingMode::Tunnel => "tunnel",
            RoutingMode::Native => "native",
        }
    }
}

impl std::str::FromStr for RoutingMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tunnel" => Ok(RoutingMode::Tunnel),
            "native" => Ok(RoutingMode::Native),
            _ => Err(format!("routing mode {s:?}: tunnel or native")),
        }
    }
}

/// Another node the datapath routes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub address: Ipv4Addr,
    pub cidr: (Ipv4Addr, u8),
}

/// One node as `agent node list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    pub address: Option<Ipv4Addr>,
    /// `10.244.2.0/24`.
    pub pod_cidr: Option<String>,
    /// This node.
    pub local: bool,
    /// Answered the last probe; None: not probed (this node, or not routed).
    pub reachable: Option<bool>,
    /// Why the node is not routed to.
    pub problem: Option<String>,
}

fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let bits = a.1.min(b.1);
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(bits))
    };
    u32::from(a.0) & mask == u32::from(b.0) & mask
}

pub fn cidr_text((ip, bits): (Ipv4Addr, u8)) -> String {
    format!("{ip}/{bits}")
}

/// The peers among `nodes` (everyone but `me` with an address and a pod
/// range that collides with nobody's), and a view of every node. Nodes are
/// taken by name, so of two claiming one range the first name keeps it.
pub fn plan(
    me: &str,
    own_cidr: Option<(Ipv4Addr, u8)>,
    own_addresses: &[Ipv4Addr],
    nodes: &[ClusterNode],
) -> (Vec<(String, Peer)>, Vec<NodeView>) {
    let mut sorted: Vec<&ClusterNode> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut peers: Vec<(String, Peer)> = Vec::new();
    let mut views = Vec::new();
    for n in sorted {
        let mut view = NodeView {
            name: n.name.clone(),
            address: n.address,
            pod_cidr: n.pod_cidr.map(cidr_text),
            local: n.name == me,
            reachable: None,
            problem: n.problem.clone(),
        };
        if !view.local && view.problem.is_none() {
            match (n.address, n.pod_cidr) {
                (Some(address), Some(cidr)) => {
                    if own_cidr.is_some_and(|own| overlaps(own, cidr)) {
                        view.problem = Some(format!(
                            "pod range {} overlaps this node's {}",
                            cidr_text(cidr),
                            cidr_text(own_cidr.expect("checked"))
                        ));
                    } else if own_addresses.contains(&address) {
                        view.problem = Some(format!("address {address} is this node's own"));
                    } else if let Some((other, _)) =
                        peers.iter().find(|(_, p)| overlaps(p.cidr, cidr))
                    {
                        view.problem = Some(format!(
                            "pod range {} overlaps node {other}'s",
                            cidr_text(cidr)
                        ));
                    } else if let Some((other, _)) =
                        peers.iter().find(|(_, p)| p.address == address)
                    {
                        view.problem = Some(format!("address {address} is node {other}'s too"));
                    } else {
                        peers.push((n.name.clone(), Peer { address, cidr }));
                    }
                }
                _ => view.problem = Some("no address or pod range".into()),
            }
        }
        views.push(view);
    }
    (peers, views)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: [u8; 4], cidr: [u8; 3]) -> ClusterNode {
        ClusterNode {
            name: name.into(),
            address: Some(Ipv4Addr::from(ip)),
            pod_cidr: Some((Ipv4Addr::new(cidr[0], cidr[1], cidr[2], 0), 24)),
            problem: None,
        }
    }

    #[test]
    fn every_other_node_is_a_peer_and_this_one_is_local() {
        let nodes = [
            node("n2", [192, 168, 50, 12], [10, 244, 2]),
            node("n1", [192, 168, 50, 11], [10, 244, 1]),
            node("n3", [192, 168, 50, 13], [10, 244, 3]),
        ];
        let own = Some((Ipv4Addr::new(10, 244, 1, 0), 24));
        let (peers, views) = plan("n1", own, &[Ipv4Addr::new(192, 168, 50, 11)], &nodes);
        let names: Vec<&str> = peers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["n2", "n3"]);
        assert_eq!(peers[0].1.address, Ipv4Addr::new(192, 168, 50, 12));
        assert!(views[0].local && views[0].problem.is_none());
        assert_eq!(views.len(), 3);
    }

    #[test]
    fn colliding_nodes_are_refused_with_the_reason() {
        let mut bad = node("n9", [192, 168, 50, 19], [10, 244, 2]);
        bad.problem = None;
        let nodes = [
            node("n2", [192, 168, 50, 12], [10, 244, 2]),
            node("n3", [192, 168, 50, 12], [10, 244, 3]),
            node("n4", [192, 168, 50, 14], [10, 244, 1]),
            node("n5", [192, 168, 50, 11], [10, 244, 5]),
            bad,
            ClusterNode {
                name: "n6".into(),
                address: None,
                pod_cidr: None,
                problem: Some("no IPv4 pod range (spec.podCIDRs)".into()),
            },
        ];
        let own = Some((Ipv4Addr::new(10, 244, 1, 0), 24));
        let (peers, views) = plan("n1", own, &[Ipv4Addr::new(192, 168, 50, 11)], &nodes);
        assert_eq!(peers.len(), 1, "{views:#?}");
        let why = |n: &str| {
            views
                .iter()
                .find(|v| v.name == n)
                .and_then(|v| v.problem.clone())
                .unwrap_or_default()
        };
        assert!(why("n3").contains("node n2's too"));
        assert!(why("n4").contains("overlaps this node's"));
        assert!(why("n5").contains("this node's own"));
        assert!(why("n9").contains("overlaps node n2's"));
        assert!(why("n6").contains("spec.podCIDRs"));
    }
}
