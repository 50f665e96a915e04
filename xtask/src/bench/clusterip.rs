//! A ClusterIP connect from a pod, outside the cgroup the socket LB is
//! attached to: the packet path (lash: the tc programs on the pod's lxc;
//! kube-proxy: DNAT in the node's PREROUTING), on the same service set as the
//! socket-LB arms (services.rs) at each size.
//!
//! - `clusterip-iptables`: kube-proxy's iptables nat table (kube_proxy.rs,
//!   the same rules as the `iptables` arm) in the node namespace, forwarding
//!   on; the client runs in pod 4 and the target's backends are pods 1-3.
//! - `clusterip-lash`: the agent's tc path: the agent runs in the node
//!   namespace with a pod range (lash_node.rs), the four pods are made by
//!   the real lash-cni (ADD), the service set is written to the agent's
//!   manifest directory with the target backed by pods 1-3, and the client in
//!   pod 4 is in no socket-LB cgroup, so from_container on its lxc translates
//!   every packet (conntrack, reverse NAT on the way back). ip_forward stays
//!   0. The pods are DELeted at the end and the node checked empty.
//!
//! The client probe runs in the pod's namespace, pinned to CPU 0, in no
//! cgroup of the sandbox's; the pods' servers on CPU 1. Rounds rotate over
//! the arms as in the socket-LB bench; medians over rounds.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _};
use lash_tests::sandbox::{bin, wait_for, Pod, Sandbox};
use serde_json::{json, Value};

use super::probe::{ns_exec, run_ok, timed};
use super::services::{self, TARGET_PORT, TARGET_VIP};
use super::{check_interrupt, median, short, Plan, CLIENT_CPU, SERVER_CPU};

pub const ARMS: [&str; 2] = ["clusterip-iptables", "clusterip-lash"];

/// The lash arm's pod range.
const LASH_CIDR: &str = "10.244.5.0/24";

struct Node {
    arm: &'static str,
    sb: Sandbox,
    /// clusterip-lash: the pods lash-cni added (container id, namespace),
    /// DELeted at the end.
    lash_pods: Vec<(String, String)>,
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
                Ok(node) => ready.push(node),
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
        // DEL the lash pods; anything left fails the row.
        for node in ready.iter().filter(|n| !n.lash_pods.is_empty()) {
            let clean = node
                .lash_pods
                .iter()
                .try_for_each(|(id, ns)| super::lash_node::del(&node.sb, id, ns))
                .and_then(|()| super::lash_node::check_clean(&node.sb));
            if let Err(e) = clean {
                eprintln!("bench:   {} teardown failed: {e:#}", node.arm);
                if let Some(row) = rows
                    .iter_mut()
                    .find(|r| r["services"] == n && r["arm"] == node.arm)
                {
                    *row = json!({"services": n, "arm": node.arm, "error": format!("teardown: {}", short(&e))});
                }
            }
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
fn build(arm: &'static str, n: u32) -> anyhow::Result<Node> {
    let (sb, lash_pods, ms) = match arm {
        "clusterip-iptables" => {
            let mut sb = Sandbox::new(&format!("bench-{arm}"), 4)
                .with_context(|| format!("building the {arm} sandbox"))?;
            sb.start_pod_servers_on(Some(SERVER_CPU))?;
            let backends: Vec<_> = sb.pods[0..3].iter().map(|p| p.ip).collect();
            let svcs = services::all(n, services::target(&backends));
            // DNAT happens in PREROUTING; the translated packet is then
            // forwarded to the backend's lxc.
            run_ok(&mut ns_exec(
                &sb,
                &["sysctl", "-qw", "net.ipv4.ip_forward=1"],
            ))?;
            let rules = sb.work.join("iptables.rules");
            std::fs::write(&rules, super::kube_proxy::iptables_full(&svcs))?;
            let ms = timed(ns_exec(&sb, &["iptables-restore"]).arg(&rules))?;
            (sb, Vec::new(), ms)
        }
        "clusterip-lash" => lash_tc(arm, n)?,
        _ => unreachable!("not a ClusterIP arm: {arm}"),
    };
    let node = Node {
        arm,
        sb,
        lash_pods,
        full_sync_ms: ms,
        samples: Vec::new(),
    };
    // Fail fast if the Service does not answer from the pod.
    let once = probe(&node, &["tcp"])?;
    ensure!(
        once["ok"] == true,
        "{arm}: the target does not answer from a pod: {once}"
    );
    Ok(node)
}

/// The lash arm: a node with the agent (pod range, map capacity for the
/// service set), four pods made by lash-cni with servers in them, then the
/// service set (target on pods 1-3) written to the agent's manifests.
/// Returns the node, the pods to DEL and ms from writing the manifests until
/// the agent reports them all programmed.
#[allow(clippy::type_complexity)]
fn lash_tc(arm: &str, n: u32) -> anyhow::Result<(Sandbox, Vec<(String, String)>, f64)> {
    let total = n as usize + 1;
    let map_max = super::lash_arm::map_max(total).to_string();
    let mut sb = super::lash_node::start(
        &format!("bench-{arm}"),
        LASH_CIDR,
        &["--lb-map-max", &map_max],
    )?;
    let mut added = Vec::new();
    for i in 1..=4 {
        let netns = format!("{}-p{i}", sb.name);
        // The sandbox removes it with the rest.
        sb.add_netns(&netns)?;
        let id = format!("{}-{i}", sb.name);
        let a = super::lash_node::add(&sb, &id, &netns)?;
        added.push((id, netns.clone()));
        sb.pods.push(Pod {
            name: format!("pod-{i}"),
            netns,
            ip: a.ip,
            lxc: a.lxc,
        });
    }
    sb.start_pod_servers_on(Some(SERVER_CPU))?;
    let backends: Vec<_> = sb.pods[0..3].iter().map(|p| p.ip).collect();
    let svcs = services::all(n, services::target(&backends));
    let syncs = sb.syncs();
    let start = Instant::now();
    super::lash_arm::write_manifests(&sb, &svcs)?;
    // Done when a reconcile after the write reports every Service.
    let status = || {
        std::fs::read_to_string(sb.state_dir().join("status.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    };
    let done = wait_for(Duration::from_secs(600), || {
        status().filter(|s| {
            s["syncs"].as_u64().unwrap_or(0) > syncs
                && s["services"].as_u64().unwrap_or(0) >= total as u64
        })
    })
    .with_context(|| {
        format!(
            "the agent did not program {total} Services; status {:?}, log:\n{}",
            status(),
            sb.agent_log()
        )
    })?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    ensure!(
        done["errors"].as_array().is_none_or(Vec::is_empty),
        "agent errors: {}",
        done["errors"]
    );
    Ok((sb, added, ms))
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
