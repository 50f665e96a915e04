//! The cluster's Nodes, in compact form: each node's InternalIP and pod
//! ranges. This node's range feeds IPAM; every node goes to the mesh as a
//! [`ClusterNode`] (tunnel endpoints, routes to the others).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher::Event;
use serde::Serialize;

use crate::model::ClusterNode;

/// What lash keeps of a Node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    pub name: String,
    /// The first IPv4 InternalIP, the address other nodes reach it on.
    pub internal_ip: Option<Ipv4Addr>,
    /// `spec.podCIDRs` (or the older `spec.podCIDR`), as written.
    pub pod_cidrs: Vec<String>,
}

impl NodeInfo {
    pub fn of(node: &Node) -> Self {
        let internal_ip = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| {
                a.iter()
                    .filter(|a| a.type_ == "InternalIP")
                    .find_map(|a| a.address.parse::<Ipv4Addr>().ok())
            });
        let spec = node.spec.as_ref();
        let mut pod_cidrs = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
        if pod_cidrs.is_empty() {
            pod_cidrs.extend(spec.and_then(|s| s.pod_cidr.clone()));
        }
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            internal_ip,
            pod_cidrs,
        }
    }

    /// The first IPv4 pod range, the one IPAM hands addresses out of.
    pub fn ipv4_pod_cidr(&self) -> Option<&str> {
        self.pod_cidrs.iter().map(String::as_str).find(|c| {
            c.split('/')
                .next()
                .is_some_and(|a| a.parse::<Ipv4Addr>().is_ok())
        })
    }
}

impl NodeInfo {
    /// The model's view: the first IPv4 range parsed, or why it could not be.
    pub fn to_model(&self) -> ClusterNode {
        let (mut pod_cidr, mut problem) = (None, None);
        match self.ipv4_pod_cidr() {
            None => problem = Some("no IPv4 pod range (spec.podCIDRs)".to_string()),
            Some(text) => match parse_cidr(text) {
                Some(c) => pod_cidr = Some(c),
                None => problem = Some(format!("pod range {text:?} is not an IPv4 CIDR")),
            },
        }
        if self.internal_ip.is_none() && problem.is_none() {
            problem = Some("no IPv4 InternalIP (status.addresses)".to_string());
        }
        ClusterNode {
            name: self.name.clone(),
            address: self.internal_ip,
            pod_cidr,
            problem,
        }
    }
}

/// `10.244.1.0/24` -> its base (host bits must be zero) and length.
fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, bits) = text.split_once('/')?;
    let (ip, bits): (Ipv4Addr, u8) = (ip.parse().ok()?, bits.parse().ok()?);
    if bits == 0 || bits > 32 {
        return None;
    }
    let mask = u32::MAX << (32 - u32::from(bits));
    (u32::from(ip) & !mask == 0).then_some((ip, bits))
}

#[derive(Debug, Default)]
pub struct NodeIndex {
    nodes: BTreeMap<String, NodeInfo>,
    relisting: Option<BTreeSet<String>>,
    listed: bool,
}

impl NodeIndex {
    /// Takes in a watcher event, with the same relist rule as Services:
    /// nodes missing from a list are dropped when the list is whole.
    pub fn event(&mut self, ev: Event<Node>) {
        match ev {
            Event::Init => self.relisting = Some(BTreeSet::new()),
            Event::InitApply(n) => {
                let info = NodeInfo::of(&n);
                if let Some(seen) = self.relisting.as_mut() {
                    seen.insert(info.name.clone());
                }
                self.nodes.insert(info.name.clone(), info);
            }
            Event::Apply(n) => {
                let info = NodeInfo::of(&n);
                self.nodes.insert(info.name.clone(), info);
            }
            Event::Delete(n) => {
                self.nodes.remove(&NodeInfo::of(&n).name);
            }
            Event::InitDone => {
                self.listed = true;
                if let Some(seen) = self.relisting.take() {
                    self.nodes.retain(|name, _| seen.contains(name));
                }
            }
        }
    }

    pub fn listed(&self) -> bool {
        self.listed
    }

    pub fn relisting(&self) -> bool {
        self.relisting.is_some()
    }

    pub fn get(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Every node, in the model's form, by name.
    pub fn all(&self) -> Vec<ClusterNode> {
        self.nodes.values().map(NodeInfo::to_model).collect()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn node(name: &str, ip: &str, cidrs: &[&str]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidrs: Some(cidrs.iter().map(|c| c.to_string()).collect()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![
                    NodeAddress {
                        type_: "Hostname".into(),
                        address: name.into(),
                    },
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: ip.into(),
                    },
                ]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_node_gives_its_internal_ip_and_first_ipv4_range() {
        let n = NodeInfo::of(&node("a", "192.168.1.10", &["fd00::/64", "10.244.1.0/24"]));
        assert_eq!(n.internal_ip, Some(Ipv4Addr::new(192, 168, 1, 10)));
        assert_eq!(n.ipv4_pod_cidr(), Some("10.244.1.0/24"));
        let bare = NodeInfo::of(&Node::default());
        assert_eq!((bare.internal_ip, bare.ipv4_pod_cidr()), (None, None));
    }

    #[test]
    fn a_node_becomes_a_cluster_node_or_says_why_not() {
        let n = NodeInfo::of(&node("a", "192.168.1.10", &["10.244.1.0/24"])).to_model();
        assert_eq!(n.pod_cidr, Some((Ipv4Addr::new(10, 244, 1, 0), 24)));
        assert_eq!(n.address, Some(Ipv4Addr::new(192, 168, 1, 10)));
        assert_eq!(n.problem, None);
        let bad = NodeInfo::of(&node("b", "192.168.1.11", &["10.244.1.7/24"])).to_model();
        assert_eq!(bad.pod_cidr, None);
        assert!(bad.problem.unwrap().contains("10.244.1.7/24"));
        let none = NodeInfo::of(&node("c", "192.168.1.12", &[])).to_model();
        assert!(none.problem.unwrap().contains("no IPv4 pod range"));
    }

    #[test]
    fn a_relist_drops_the_nodes_it_did_not_list() {
        let mut idx = NodeIndex::default();
        idx.event(Event::Init);
        idx.event(Event::InitApply(node("a", "10.0.0.1", &["10.244.0.0/24"])));
        idx.event(Event::InitApply(node("b", "10.0.0.2", &["10.244.1.0/24"])));
        idx.event(Event::InitDone);
        assert!(idx.listed() && idx.len() == 2);
        idx.event(Event::Init);
        idx.event(Event::InitApply(node("b", "10.0.0.3", &["10.244.1.0/24"])));
        assert_eq!(idx.len(), 2, "nothing dropped before the list is whole");
        idx.event(Event::InitDone);
        assert!(idx.get("a").is_none());
        assert_eq!(
            idx.get("b").unwrap().internal_ip,
            Some(Ipv4Addr::new(10, 0, 0, 3))
        );
    }
}
