//! The node's own network, as the datapath needs it: the host device that
//! holds the pods' gateway address, the node's addresses (which the `lxc`
//! map marks as the host's, and node ports open on), and the node's name.
//! Netlink through rtnetlink.

pub mod host_device;
pub mod node_ports;

/// The node's name when `--node-name` is not given: the host name, lower
/// case, as kube-proxy and the kubelet default to it.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its length; the kernel NUL-terminates
    // names shorter than it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).trim().to_lowercase()
}

pub use host_device::{ensure_host_device, ipv4_addresses, HOST_DEVICE};
