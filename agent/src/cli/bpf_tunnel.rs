//! `agent bpf tunnel list`: the tunnel map as `cilium bpf tunnel list` shows
//! it: a remote pod range's base address and the node that carries it.

use std::fmt::Write as _;

use crate::maps::tunnel::TunnelEntry;

pub fn table(entries: &[TunnelEntry]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<18} VALUE", "TUNNEL");
    for e in entries {
        let _ = writeln!(out, "{:<18} {}:0", e.prefix.to_string(), e.endpoint);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_look_like_ciliums() {
        let t = table(&[TunnelEntry {
            prefix: "10.0.1.0".parse().unwrap(),
            endpoint: "192.168.56.12".parse().unwrap(),
        }]);
        assert_eq!(t.lines().nth(1), Some("10.0.1.0           192.168.56.12:0"));
    }
}
