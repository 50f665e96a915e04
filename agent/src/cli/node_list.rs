//! `agent node list`: every node the agent knows, where it is, its pod
//! range, and whether it answered the agent's last probe; a node the agent
//! does not route to says why.

use std::fmt::Write as _;

use crate::mesh::NodesFile;

fn dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// `tunnel_programs`: what the kernel has attached to lash_vxlan now (tunnel
/// routing), as `hook:program`.
pub fn table(f: &NodesFile, tunnel_programs: Option<&[String]>) -> String {
    let mut out = String::new();
    let routing = f.routing.map_or("-", |r| r.as_str());
    let mtu = f
        .tunnel_mtu
        .map(|m| format!(", tunnel MTU {m}"))
        .unwrap_or_default();
    let programs = tunnel_programs
        .map(|p| format!(", lash_vxlan programs: {}", p.join(" ")))
        .unwrap_or_default();
    let _ = writeln!(out, "Routing: {routing}{mtu}{programs}");
    let _ = writeln!(
        out,
        "{:<20} {:<16} {:<19} REACHABLE",
        "NAME", "ADDRESS", "POD CIDR"
    );
    for n in &f.nodes {
        let reach = if n.local {
            "(local)".to_string()
        } else if let Some(p) = &n.problem {
            format!("not routed: {p}")
        } else {
            match n.reachable {
                Some(true) => "yes".into(),
                Some(false) => "no".into(),
                None => "not probed yet".into(),
            }
        };
        let _ = writeln!(
            out,
            "{:<20} {:<16} {:<19} {reach}",
            n.name,
            dash(n.address),
            dash(n.pod_cidr.clone())
        );
    }
    if let Some(e) = &f.error {
        let _ = writeln!(out, "Last programming error: {e}");
    }
    out
}
