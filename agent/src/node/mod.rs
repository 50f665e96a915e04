//! The node's own network, as the datapath needs it: the host device that
//! holds the pods' gateway address, and the node's addresses (which the
//! `lxc` map marks as the host's). Netlink through rtnetlink.

pub mod host_device;

pub use host_device::{ensure_host_device, ipv4_addresses, HOST_DEVICE};
