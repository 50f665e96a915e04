//! The node's own network, as the datapath needs it: the host device that
//! holds the pods' gateway address, the node's addresses (which the `lxc`
//! map marks as the host's, and node ports open on).
//! `vxlan.rs` is the tunnel's device. Netlink through rtnetlink
//! (`netlink.rs`).

pub mod host_device;
pub mod netlink;
pub mod node_ports;
pub mod vxlan;

pub use host_device::{ensure_host_device, ipv4_addresses, HOST_DEVICE};
