//! What translation knows of the node it runs on: which endpoints are its
//! own (traffic policies Local), which zone it is in (topology hints), and
//! which of its addresses open node ports. Given once at start (`agent run
//! --node-name`, `--zone`, `--nodeport-addresses` and the addresses the node
//! has then).

use std::net::Ipv4Addr;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeContext {
    /// The node's name as EndpointSlices give it (`endpoints[].nodeName`).
    pub name: String,
    /// The node's zone (`topology.kubernetes.io/zone`); empty: zone hints
    /// are not used, every endpoint counts alike.
    pub zone: String,
    /// The addresses a Service's nodePort is opened on, sorted: the node's
    /// own IPv4 addresses (127.0.0.1 among them) that `--nodeport-addresses`
    /// allows.
    pub node_port_addresses: Vec<Ipv4Addr>,
}

impl NodeContext {
    pub fn knows_zone(&self) -> bool {
        !self.zone.is_empty()
    }
}
