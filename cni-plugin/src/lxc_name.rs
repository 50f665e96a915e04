//! The host-side veth's name, as Cilium names it, so tools and habits built
//! around Cilium's `lxc…` devices find ours.
//!
//! What Cilium does (read in cilium/cilium, plugins/cilium-cni/cmd/cmd.go and
//! pkg/datapath/connector): the plugin builds an id from the container id and
//! the pod-side interface name joined by ':' (`CNI_CONTAINERID:CNI_IFNAME`),
//! takes the SHA-256 of that string as lowercase hex, and keeps as many hex
//! digits as fit in IFNAMSIZ (16) minus the length of its temporary prefix
//! "tmp" minus the terminating NUL: 12. So the name is "lxc" + 12 hex digits,
//! 15 characters (e.g. `lxcfc90a8580fd6` in `cilium monitor` output). Our
//! datapath reference says 11 digits; 11 would give 14 characters, and the
//! arithmetic above and real device names say 12.

use sha2::{Digest, Sha256};

const PREFIX: &str = "lxc";
const HEX_DIGITS: usize = 12;

/// The host-side device name for the attachment (container id, ifname).
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let digest = Sha256::digest(format!("{container_id}:{ifname}").as_bytes());
    let mut name = String::with_capacity(PREFIX.len() + HEX_DIGITS);
    name.push_str(PREFIX);
    for byte in digest.iter().take(HEX_DIGITS / 2) {
        name.push_str(&format!("{byte:02x}"));
    }
    name
}

/// Whether `name` has the shape `host_veth_name` gives: "lxc" and 12
/// lowercase hex digits.
pub fn is_host_veth_name(name: &str) -> bool {
    name.strip_prefix(PREFIX).is_some_and(|hex| {
        hex.len() == HEX_DIGITS && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_sha256_of_id_colon_ifname() {
        // Expected values from `printf 'abc123:eth0' | sha256sum`, cut to 12.
        assert_eq!(host_veth_name("abc123", "eth0"), "lxcc69fce2d2430");
        assert_eq!(host_veth_name("3f2b9c0e1d4a", "net1"), "lxcccc005d0fadd");
    }

    #[test]
    fn fits_the_kernel_limit() {
        let name = host_veth_name(&"f".repeat(64), "eth0");
        assert_eq!(name.len(), 15);
        assert!(crate::env::check_ifname(&name).is_ok());
    }

    #[test]
    fn recognises_its_own_shape_only() {
        assert!(is_host_veth_name(&host_veth_name("abc", "eth0")));
        for other in [
            "lxcbr0",
            "lxc_health",
            "lxc1",
            "lxc0123456789AB",
            "lxc0123456789abc",
            "eth0",
        ] {
            assert!(!is_host_veth_name(other), "{other}");
        }
    }

    #[test]
    fn the_interface_name_matters() {
        assert_ne!(host_veth_name("abc", "eth0"), host_veth_name("abc", "eth1"));
    }
}
