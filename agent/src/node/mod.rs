//! The node's own network, as the datapath needs it: the host device that
//! holds the pods' gateway address, the node's addresses (which the `lxc`
//! map marks as the host's, and node ports open on).
//! Netlink through rtnetlink.

pub mod host_device;
pub mod node_ports;

pub use host_device::{ensure_host_device, ipv4_addresses, HOST_DEVICE};
