//! `agent status`: is the agent running, are the programs attached, how full
//! are the maps, and what went wrong last.

use std::{fmt::Write as _, path::Path};

use aya::maps::MapData;
use serde::Serialize;

use crate::{loader, maps, state};

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
}

#[derive(Debug, Serialize)]
pub struct MapStatus {
    pub name: &'static str,
    pub pinned: bool,
    pub entries: usize,
    pub max_entries: u32,
}

pub fn collect(bpf_root: &Path, state_dir: &Path) -> Status {
    let st = state::read_status(state_dir);
    let pid = st.as_ref().map(|s| s.pid);
    let counts = maps::LbMaps::open_pinned(bpf_root)
        .ok()
        .map(|m| m.entry_counts());
    let mut map_status = Vec::new();
    for (i, def) in lash_common::maps::ALL.iter().enumerate() {
        let name = def.name;
        let path = bpf_root.join(name);
        let (pinned, max) = match MapData::from_pin(&path) {
            Ok(data) => (true, data.info().map(|i| i.max_entries()).unwrap_or(0)),
            Err(_) => (false, 0),
        };
        map_status.push(MapStatus {
            name,
            pinned,
            entries: counts.and_then(|c| c.get(i).copied()).unwrap_or(0),
            max_entries: max,
        });
    }
    Status {
        agent_running: pid.is_some_and(state::pid_alive),
        pid,
        bpf_root: bpf_root.display().to_string(),
        attached_hooks: loader::attached_hooks(bpf_root),
        maps: map_status,
        last_sync_unix: st.as_ref().map(|s| s.last_sync_unix),
        syncs: st.as_ref().map(|s| s.syncs),
        errors: st.as_ref().map(|s| s.errors.clone()).unwrap_or_default(),
        warnings: st.map(|s| s.warnings).unwrap_or_default(),
    }
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
        let _ = writeln!(out, "Last sync:  {:.1}s ago ({n} since start)", now - t);
    }
    let _ = writeln!(out, "BPF root:   {}", s.bpf_root);
    let hooks = if s.attached_hooks.is_empty() {
        "none".to_string()
    } else {
        s.attached_hooks.join(" ")
    };
    let _ = writeln!(out, "Socket LB:  {hooks}");
    let _ = writeln!(out, "Maps:");
    for m in &s.maps {
        if m.pinned {
            let _ = writeln!(out, "  {:<18}{}/{}", m.name, m.entries, m.max_entries);
        } else {
            let _ = writeln!(out, "  {:<18}not pinned", m.name);
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
    out
}
