//! Per-program cost from the kernel's own accounting: kernel.bpf_stats_enabled
//! on for one measurement (it costs every program a clock read, so never
//! during the latency samples), then run_time_ns / run_cnt per program.

use std::{path::Path, process::Command};

use serde_json::Value;

use super::probe::run_ok;

const KNOB: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// bpf_stats on while this lives; the previous setting is put back on drop.
pub struct BpfStats {
    previous: String,
}

impl BpfStats {
    pub fn enable() -> anyhow::Result<Self> {
        let previous = std::fs::read_to_string(KNOB)?.trim().to_string();
        std::fs::write(KNOB, "1")?;
        Ok(BpfStats { previous })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(KNOB, &self.previous);
    }
}

/// Id of the program attached to `cgroup` for connect() of IPv4 sockets.
pub fn connect4_prog(cgroup: &Path) -> Option<u64> {
    let out = run_ok(
        Command::new("bpftool")
            .args(["-j", "cgroup", "show"])
            .arg(cgroup),
    )
    .ok()?;
    let progs: Value = serde_json::from_str(&out).ok()?;
    progs
        .as_array()?
        .iter()
        .find(|p| p["attach_type"] == "cgroup_inet4_connect")
        .and_then(|p| p["id"].as_u64())
}

/// (run_time_ns, run_cnt) of program `id` so far.
pub fn counters(id: u64) -> Option<(f64, f64)> {
    let out =
        run_ok(Command::new("bpftool").args(["-j", "prog", "show", "id", &id.to_string()])).ok()?;
    let info: Value = serde_json::from_str(&out).ok()?;
    Some((
        info["run_time_ns"].as_f64().unwrap_or(0.0),
        info["run_cnt"].as_f64().unwrap_or(0.0),
    ))
}

/// ns per run between two readings of `counters`.
pub fn ns_per_run(before: (f64, f64), after: (f64, f64)) -> Option<f64> {
    let runs = after.1 - before.1;
    (runs > 0.0).then(|| (after.0 - before.0) / runs)
}
