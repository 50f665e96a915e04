//! `agent status`: is the agent running, are the programs attached, how full
//! are the maps, and what went wrong last.

use std::{fmt::Write as _, path::Path};

use serde::Serialize;

use crate::{endpoints, ipam, loader, maps, state};

#[derive(Debug, Serialize)]
pub struct Status {
    pub agent_running: bool,
    pub pid: Option<u32>,
    pub bpf_root: String,
    pub attached_hooks: Vec<&'static str>,
    pub maps: Vec<MapStatus>,
    pub last_sync_unix: Option<f64>,
    pub syncs: Option<u64>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// Services labelled for another proxy (left alone, not warnings).
    pub other_proxy: Vec<String>,
    /// Pod addresses, as the agent last reported them; `null` when it runs
    /// without --pod-cidr.
    pub ipam: Option<ipam::Usage>,
    /// Endpoints and their pinned program links, as the agent last reported.
    pub endpoints: Option<endpoints::Summary>,
    /// The Kubernetes API, when the agent watches one.
    pub kubernetes: Option<state::ApiHealth>,
    /// Service map writes since the agent started.
    pub map_writes: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct MapStatus {
    pub name: &'static str,
    pub kind: &'static str,
    pub pinned: bool,
    pub entries: usize,
    pub max_entries: u32,
}

pub fn collect(bpf_root: &Path, state_dir: &Path) -> Status {
    let st = state::read_status(state_dir);
    let pid = st.as_ref().map(|s| s.pid);
    // One row per entry of the map table, whatever the map's types.
    let map_status = lash_common::maps::ALL
        .iter()
        .map(|def| {
            let fill = maps::fill(&bpf_root.join(def.name));
            MapStatus {
                name: def.name,
                kind: def.kind.as_str(),
                pinned: fill.is_some(),
                entries: fill.map_or(0, |f| f.entries),
                max_entries: fill.map_or(0, |f| f.max_entries),
            }
        })
        .collect();
    Status {
        agent_running: pid.is_some_and(state::pid_alive),
        pid,
        bpf_root: bpf_root.display().to_string(),
        attached_hooks: loader::attached_hooks(bpf_root),
        maps: map_status,
        last_sync_unix: st.as_ref().map(|s| s.last_sync_unix),
        syncs: st.as_ref().map(|s| s.syncs),
        errors: st.as_ref().map(|s| s.errors.clone()).unwrap_or_default(),
        warnings: st.as_ref().map(|s| s.warnings.clone()).unwrap_or_default(),
        other_proxy: st
            .as_ref()
            .map(|s| s.other_proxy.clone())
            .unwrap_or_default(),
        endpoints: st.as_ref().and_then(|s| s.endpoints),
        kubernetes: st.as_ref().and_then(|s| s.kubernetes.clone()),
        map_writes: st.as_ref().map(|s| s.map_writes),
        ipam: st.and_then(|s| s.ipam),
    }
}

/// The API's state in one line: whether it answers, whether the first lists
/// are complete, what is known.
fn kubernetes_line(k: &state::ApiHealth) -> String {
    let reach = match k.down_since_unix {
        None => "reachable".to_string(),
        Some(since) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(since);
            format!(
                "UNREACHABLE for {:.0}s (datapath unchanged since): {}",
                now - since,
                k.last_error.as_deref().unwrap_or("no answer")
            )
        }
    };
    let sync = if k.synced {
        format!(
            "{} Services, {} EndpointSlices, {} Nodes, {} full lists",
            k.services, k.endpoint_slices, k.nodes, k.lists
        )
    } else {
        "initial lists not complete: nothing programmed or removed yet".to_string()
    };
    let node = format!(
        "node {} (pod range {}, address {})",
        k.node_name,
        k.node_pod_cidr.as_deref().unwrap_or("none"),
        k.node_ip.as_deref().unwrap_or("none")
    );
    format!("{} {reach}; {sync}; {node}", k.server)
}

pub fn table(s: &Status) -> String {
    let mut out = String::new();
    let agent = match (s.agent_running, s.pid) {
        (true, Some(pid)) => format!("running (pid {pid})"),
        (false, Some(pid)) => {
            format!("not running (last pid {pid}); the datapath keeps the last programmed state")
        }
        _ => "never started with this --state-dir".into(),
    };
    let _ = writeln!(out, "Agent:      {agent}");
    if let (Some(t), Some(n)) = (s.last_sync_unix, s.syncs) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(t);
        let _ = writeln!(
            out,
            "Last sync:  {:.1}s ago ({n} since start, {} map writes)",
            now - t,
            s.map_writes.unwrap_or(0)
        );
    }
    let _ = writeln!(out, "BPF root:   {}", s.bpf_root);
    if let Some(k) = &s.kubernetes {
        let _ = writeln!(out, "Kubernetes: {}", kubernetes_line(k));
    }
    let hooks = if s.attached_hooks.is_empty() {
        "none".to_string()
    } else {
        s.attached_hooks.join(" ")
    };
    let _ = writeln!(out, "Socket LB:  {hooks}");
    if let Some(u) = &s.ipam {
        let _ = writeln!(
            out,
            "IPAM:       {} (gateway {}), {}/{} addresses in use",
            u.cidr, u.gateway, u.used, u.total
        );
    }
    if let Some(e) = &s.endpoints {
        let _ = writeln!(
            out,
            "Endpoints:  {} (lxc programs: {} of {} links pinned)",
            e.endpoints,
            e.links_pinned,
            e.endpoints * crate::endpoints::links::LXC_PROGRAMS.len()
        );
    }
    let _ = writeln!(out, "Maps:");
    for m in &s.maps {
        if m.pinned {
            let _ = writeln!(
                out,
                "  {:<20}{:<14}{}/{}",
                m.name, m.kind, m.entries, m.max_entries
            );
        } else {
            let _ = writeln!(out, "  {:<20}{:<14}not pinned", m.name, m.kind);
        }
    }
    if s.errors.is_empty() {
        let _ = writeln!(out, "Errors:     none");
    } else {
        let _ = writeln!(out, "Errors:");
        for e in &s.errors {
            let _ = writeln!(out, "  {e}");
        }
    }
    if s.warnings.is_empty() {
        let _ = writeln!(out, "Warnings:   none");
    } else {
        let _ = writeln!(out, "Warnings:");
        for w in &s.warnings {
            let _ = writeln!(out, "  {w}");
        }
    }
    // Only when there are some: most clusters have none.
    if !s.other_proxy.is_empty() {
        let _ = writeln!(out, "Left alone:");
        for o in &s.other_proxy {
            let _ = writeln!(out, "  {o}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(ipam: Option<ipam::Usage>) -> Status {
        Status {
            agent_running: true,
            pid: Some(1),
            bpf_root: "/sys/fs/bpf/lash".into(),
            attached_hooks: vec![],
            maps: vec![],
            last_sync_unix: None,
            syncs: None,
            errors: vec![],
            warnings: vec![],
            other_proxy: vec![],
            ipam,
            endpoints: None,
            kubernetes: None,
            map_writes: None,
        }
    }

    #[test]
    fn ipam_is_shown_only_when_configured() {
        assert!(!table(&status(None)).contains("IPAM"));
        let usage = ipam::Usage {
            cidr: "10.244.0.0/24".parse().unwrap(),
            gateway: "10.244.0.1".parse().unwrap(),
            used: 3,
            total: 253,
        };
        let s = status(Some(usage));
        assert!(table(&s)
            .contains("IPAM:       10.244.0.0/24 (gateway 10.244.0.1), 3/253 addresses in use\n"));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json["ipam"],
            serde_json::json!({"cidr": "10.244.0.0/24", "gateway": "10.244.0.1", "used": 3, "total": 253})
        );
        assert!(serde_json::to_value(status(None)).unwrap()["ipam"].is_null());
    }
}
