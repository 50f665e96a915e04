//! A ClusterIP connect from a pod, outside the cgroup the socket LB is
//! attached to: the packet path (lash: the tc programs on the pod's lxc;
//! kube-proxy: DNAT in the node's PREROUTING), on the same service set as the
//! socket-LB arms (services.rs) at each size.
//!
//! - `clusterip-iptables`: kube-proxy's iptables nat table (kube_proxy.rs,
//!   the same rules as the `iptables` arm) in the node namespace, forwarding
//!   on; the client runs in pod 4 and the target's backends are pods 1-3.
//! - `clusterip-lash`: the agent's tc path; `lash_tc` says it is not there
//!   yet, and the report shows the arm skipped.
//!
//! The client probe runs in the pod's namespace, pinned to CPU 0, in no
//! cgroup of the sandbox's; the pods' servers on CPU 1. Rounds rotate over
//! the arms as in the socket-LB bench; medians over rounds.

use std::process::Command;

use anyhow::{ensure, Context as _};
use lash_tests::sandbox::{bin, Pod, Sandbox};
use serde_json::{json, Value};

use super::probe::{ns_exec, run_ok, timed};
use super::services::{self, Svc, TARGET_PORT, TARGET_VIP};
use super::{check_interrupt, median, short, Plan, CLIENT_CPU, SERVER_CPU};

pub const ARMS: [&str; 2] = ["clusterip-iptables", "clusterip-lash"];

/// Why an arm was not measured; the report shows it as skipped.
pub struct Skipped(pub String);

struct Node {
    arm: &'static str,
    sb: Sandbox,
    /// Programming the whole service set, ms.
    full_sync_ms: f64,
    samples: Vec<(f64, f64, f64)>,
}

pub fn run(plan: &Plan, arms: &[&'static str]) -> anyhow::Result<Vec<Value>> {
    let mut rows = Vec::new();
    for &n in &plan.sizes {
        eprintln!("bench:   {n} background services");
        let mut ready = Vec::new();
        // Rows of arms not measured go after the measured ones.
        let mut not_measured = Vec::new();
        for &arm in arms {
            check_interrupt()?;
            match build(arm, n) {
                Ok(Ok(node)) => ready.push(node),
                Ok(Err(Skipped(why))) => {
                    eprintln!("bench:   {arm} skipped: {why}");
                    not_measured.push(json!({"services": n, "arm": arm, "skipped": why}));
                }
                Err(e) => {
                    eprintln!("bench:   {arm} at {n} failed: {e:#}");
                    not_measured.push(json!({"services": n, "arm": arm, "error": short(&e)}));
                }
            }
        }
        for round in 0..plan.rounds {
            let up = ready.len();
            for k in 0..up {
                check_interrupt()?;
                let node = &mut ready[(round + k) % up];
                let c = probe(
                    node,
                    &["bench-connect", "--count", &plan.connects.to_string()],
                )?;
                ensure!(
                    c["errors"].as_u64() == Some(0),
                    "{}: connects failed: {c}",
                    node.arm
                );
                let rr = probe(node, &["bench-rr", "--millis", &plan.rr_millis.to_string()])?;
                node.samples.push((
                    c["p50_us"].as_f64().unwrap_or(f64::NAN),
                    c["p99_us"].as_f64().unwrap_or(f64::NAN),
                    rr["rate_per_s"].as_f64().unwrap_or(f64::NAN),
                ));
            }
        }
        for node in &ready {
            let col = |f: fn(&(f64, f64, f64)) -> f64| -> Vec<f64> {
                node.samples.iter().map(f).collect()
            };
            let row = json!({
                "services": n, "arm": node.arm, "samples": node.samples.len(),
                "connect_p50_us": median(col(|s| s.0)), "connect_p99_us": median(col(|s| s.1)),
                "rr_per_s": median(col(|s| s.2)), "full_sync_ms": node.full_sync_ms,
            });
            eprintln!("bench:     {row}");
            rows.push(row);
        }
        rows.append(&mut not_measured);
        // Dropping the sandboxes ends their servers and removes them.
    }
    Ok(rows)
}

/// The client: the last pod, backing no Service.
fn client(sb: &Sandbox) -> &Pod {
    sb.pods.last().expect("a sandbox with pods")
}

/// One arm at `n` background Services: its sandbox, programmed, servers up,
/// and the target answering from the client pod.
fn build(arm: &'static str, n: u32) -> anyhow::Result<Result<Node, Skipped>> {
    let mut sb = Sandbox::new(&format!("bench-{arm}"), 4)
        .with_context(|| format!("building the {arm} sandbox"))?;
    sb.start_pod_servers_on(Some(SERVER_CPU))?;
    let backends: Vec<_> = sb.pods[0..3].iter().map(|p| p.ip).collect();
    let svcs = services::all(n, services::target(&backends));
    let ms = match arm {
        "clusterip-iptables" => {
            // DNAT happens in PREROUTING; the translated packet is then
            // forwarded to the backend's lxc.
            run_ok(&mut ns_exec(
                &sb,
                &["sysctl", "-qw", "net.ipv4.ip_forward=1"],
            ))?;
            let rules = sb.work.join("iptables.rules");
            std::fs::write(&rules, super::kube_proxy::iptables_full(&svcs))?;
            timed(ns_exec(&sb, &["iptables-restore"]).arg(&rules))?
        }
        "clusterip-lash" => match lash_tc(&mut sb, &svcs) {
            Ok(ms) => ms,
            Err(s) => return Ok(Err(s)),
        },
        _ => unreachable!("not a ClusterIP arm: {arm}"),
    };
    let node = Node {
        arm,
        sb,
        full_sync_ms: ms,
        samples: Vec::new(),
    };
    // Fail fast if the Service does not answer from the pod.
    let once = probe(&node, &["tcp"])?;
    ensure!(
        once["ok"] == true,
        "{arm}: the target does not answer from a pod: {once}"
    );
    Ok(Ok(node))
}

/// The lash arm: the agent serving `svcs` on `sb`'s node, with its tc
/// programs on the pods' lxc devices; returns ms to its first full sync.
///
/// TODO(pod datapath): needs from-container's per-packet service translation
/// (and to-container's reverse NAT) attached by the agent to the lxc devices
/// (lash_arm::full_sync starts the agent on the manifests). Until then the
/// arm is reported as skipped.
pub fn lash_tc(_sb: &mut Sandbox, _svcs: &[Svc]) -> Result<f64, Skipped> {
    Err(Skipped(
        "not available yet: needs from-container's service translation on the lxc devices".into(),
    ))
}

/// lash-probe MODE to the target from the client pod (no cgroup of ours).
fn probe(node: &Node, args: &[&str]) -> anyhow::Result<Value> {
    let addr = format!("{TARGET_VIP}:{TARGET_PORT}");
    let mut c = Command::new(bin("lash-probe"));
    c.args(["--netns", &client(&node.sb).netns]);
    c.args(["--cpu", &CLIENT_CPU.to_string()]);
    c.arg(args[0]).arg(&addr).args(&args[1..]);
    let out = run_ok(&mut c)?;
    let line = out.lines().last().unwrap_or("");
    serde_json::from_str(line.trim()).with_context(|| format!("probe said {out:?}"))
}
