//! `agent bpf endpoint list`: the `lxc` map as `cilium bpf endpoint list`
//! shows it: a pod's id, identity, flags, lxc ifindex and both MACs, or
//! `(localhost)` for the node's own addresses.

use std::fmt::Write as _;

use crate::maps::lxc::LocalAddress;

pub fn table(entries: &[LocalAddress]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<17} LOCAL ENDPOINT INFO", "IP ADDRESS");
    for e in entries {
        let addr = format!("{}:0", e.ip);
        if e.host {
            let _ = writeln!(out, "{addr:<17} (localhost)");
        } else {
            let _ = writeln!(
                out,
                "{addr:<17} id={:<5} sec_id={:<5} flags=0x{:04x} ifindex={:<3} mac={} nodemac={}",
                e.id, e.sec_id, e.flags, e.ifindex, e.mac, e.node_mac
            );
        }
    }
    out
}
