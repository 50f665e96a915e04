//! `cargo xtask bench [--quick]`: lash against kube-proxy's iptables and
//! nftables rules and against no translation at all, measured side by side in
//! one run, written to bench/results/.
//!
//! How it stays fair:
//! - Every arm serves the same service set (services.rs): the measured Service
//!   backed by real pods, plus N background Services with 3 endpoints each.
//! - Every arm gets a node namespace of its own, built fresh for each size: no
//!   NAT table, conntrack hook or program is left by another arm.
//! - The arms take turns: each round measures every arm once, starting with a
//!   different arm each round, so warm-up and drift favour none. A row's
//!   numbers are medians over its rounds (the samples column).
//! - The client runs pinned to CPU 0, the pods' servers to CPU 1.
//! - Program cost (bpf_stats) is read in a phase of its own, with the floor
//!   program (floor.rs) attached to the no-translation arm.
//!
//! Then the agent fed by the Kubernetes API (kube_watch.rs: initial sync,
//! event to datapath, RSS, through kube-rs's watchers and the stand-in API
//! server), pod networking (pod_net.rs: pod to pod throughput and latency),
//! CNI ADD/DEL latency (cni_latency.rs), each arm in namespaces of its own,
//! and from-container's cost per packet (packet.rs, BPF_PROG_TEST_RUN).

mod clusterip;
mod cni_latency;
mod cross_node;
mod floor;
mod kube_proxy;
mod kube_watch;
mod lash_arm;
mod lash_node;
mod namespaces;
mod packet;
mod pod_net;
mod probe;
mod report;
mod services;
mod stats;

use std::{
    net::Ipv4Addr,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{bail, Context as _};
use lash_tests::sandbox::Sandbox;
use serde_json::{json, Value};

use probe::{ns_exec, probe_json, run_ok, time_change, timed};
use services::{Svc, POD_PORT, TARGET_PORT, TARGET_VIP};

const CLIENT_CPU: usize = 0;
const SERVER_CPU: usize = 1;

/// Up to this many Services the nftables arm loads its table in one
/// transaction, as kube-proxy does. Beyond it, the kernel's cost for the
/// per-service anonymous vmaps grows with the square of the transaction
/// (measured: 10k Services in one transaction 62 s, in ten of 1000 13 s), so
/// the 50k run would take about half an hour; there the table goes in
/// transactions of NFT_PER_TX Services, and the row says how many.
const NFT_ONE_TX_MAX: u32 = 10_000;
const NFT_PER_TX: usize = 1000;

struct Plan {
    sizes: Vec<u32>,
    rounds: usize,
    connects: usize,
    rr_millis: u64,
}

#[derive(Clone, Copy, PartialEq)]
enum Arm {
    Baseline,
    Iptables,
    Nftables,
    Lash,
}

impl Arm {
    fn name(self) -> &'static str {
        match self {
            Arm::Baseline => "baseline",
            Arm::Iptables => "iptables",
            Arm::Nftables => "nftables",
            Arm::Lash => "lash",
        }
    }
}

const ARMS: [Arm; 4] = [Arm::Baseline, Arm::Iptables, Arm::Nftables, Arm::Lash];

#[derive(Default)]
pub struct Results {
    dataplane: Vec<Value>,
    controlplane: Vec<Value>,
    lash: Vec<Value>,
    pod_net: Vec<Value>,
    cross_node: Vec<Value>,
    cni: Vec<Value>,
    packet: Vec<Value>,
    clusterip: Vec<Value>,
    kube_watch: Vec<Value>,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Fails once SIGINT or SIGTERM has come: the error unwinds through the
/// arms, whose drops remove what they made. (Children in our process group
/// get the SIGINT too and end, which fails the measurement they were in.)
fn check_interrupt() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted; the bench's namespaces are being removed");
    }
    Ok(())
}

/// Every arm `--arms` can name.
fn all_arm_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = ARMS.iter().map(|a| a.name()).collect();
    names.extend(pod_net::ARMS);
    names.extend(cross_node::ARMS);
    names.extend(cni_latency::ARMS);
    names.extend(clusterip::ARMS);
    names.extend(packet::ARMS);
    names.extend(kube_watch::ARMS);
    names
}

/// The arms of one bench (`all`) that the run chose, in that bench's order.
fn of_chosen(all: &[&'static str], chosen: &[&'static str]) -> Vec<&'static str> {
    all.iter().copied().filter(|a| chosen.contains(a)).collect()
}

/// One arm at one size: its own sandbox, programmed, with its samples.
struct Node {
    arm: Arm,
    sb: Sandbox,
    /// Where the client connects (`client_addr`).
    addr: String,
    samples: Vec<(f64, f64, f64)>,
}

pub fn run(quick: bool, sizes: Vec<u32>, arms: Vec<String>) -> anyhow::Result<()> {
    let mut plan = if quick {
        Plan {
            sizes: vec![0, 1000],
            rounds: 5,
            connects: 200,
            rr_millis: 300,
        }
    } else {
        Plan {
            sizes: vec![0, 1000, 10_000, 50_000],
            rounds: 7,
            connects: 1000,
            rr_millis: 1000,
        }
    };
    let full_sizes = plan.sizes.len();
    let kube_plan = kube_watch::Plan {
        // One size of its own unless sizes are given: 10k Services (30k
        // endpoints) is where issue 8 sets its goals.
        sizes: if !sizes.is_empty() {
            sizes.clone()
        } else if quick {
            vec![1000]
        } else {
            vec![10_000]
        },
        changes: if quick { 10 } else { 50 },
        lists: if quick { 3 } else { 5 },
        starts: 3,
    };
    if !sizes.is_empty() {
        plan.sizes = sizes;
    }
    let known = all_arm_names();
    if let Some(bad) = arms.iter().find(|a| !known.contains(&a.as_str())) {
        bail!("no arm {bad:?}; the arms are {}", known.join(", "));
    }
    let chosen: Vec<&'static str> = known
        .iter()
        .copied()
        .filter(|a| arms.is_empty() || arms.iter().any(|n| n == a))
        .collect();
    // A partial run is for looking at, not the results of record.
    let partial = chosen.len() < known.len() || plan.sizes.len() < full_sizes;
    let arms: Vec<Arm> = ARMS
        .into_iter()
        .filter(|a| chosen.contains(&a.name()))
        .collect();
    let pod_arms = of_chosen(&pod_net::ARMS, &chosen);
    let cni_arms = of_chosen(&cni_latency::ARMS, &chosen);
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }

    let mut results = Results::default();
    if !arms.is_empty() {
        let floor_object = floor::build().context("building the floor program")?;
        for &n in &plan.sizes {
            check_interrupt()?;
            eprintln!("bench: {n} background services");
            run_size(&plan, n, &arms, &floor_object, &mut results)?;
        }
    }
    if chosen.contains(&"k8s-watch") {
        eprintln!("bench: the agent on the Kubernetes API (k8s-watch)");
        results.kube_watch = kube_watch::run(&kube_plan)?;
    }
    let cip_arms = of_chosen(&clusterip::ARMS, &chosen);
    if !cip_arms.is_empty() {
        eprintln!("bench: ClusterIP from a pod (packet path)");
        results.clusterip = clusterip::run(&plan, &cip_arms)?;
    }
    let pod_plan = if quick {
        pod_net::Plan {
            rounds: 2,
            iperf_secs: 1,
            lat_secs: 1,
        }
    } else {
        pod_net::Plan {
            rounds: 5,
            iperf_secs: 5,
            lat_secs: 3,
        }
    };
    if !pod_arms.is_empty() {
        eprintln!("bench: pod to pod");
        results.pod_net = pod_net::run(&pod_plan, &pod_arms)?;
    }
    let xnode_arms = of_chosen(&cross_node::ARMS, &chosen);
    if !xnode_arms.is_empty() {
        eprintln!("bench: pod to pod across nodes");
        results.cross_node = cross_node::run(&pod_plan, &xnode_arms)?;
    }
    let cni_plan = if quick {
        cni_latency::Plan {
            sequential: 20,
            parallel: 5,
        }
    } else {
        cni_latency::Plan {
            sequential: 100,
            parallel: 20,
        }
    };
    if !cni_arms.is_empty() {
        eprintln!("bench: CNI ADD/DEL latency");
        results.cni = cni_latency::run(&cni_plan, &cni_arms)?;
    }
    let packet_plan = if quick {
        packet::Plan {
            rounds: 3,
            runs: 2_000,
        }
    } else {
        packet::Plan {
            rounds: 5,
            runs: 20_000,
        }
    };
    if chosen.contains(&"per-packet") {
        eprintln!("bench: from-container per packet");
        let object = lash_tests::ebpf::object("lash").context("building the lash object")?;
        let floor_object = floor::build().context("building the floor object")?;
        results.packet = packet::run(&packet_plan, &object, &floor_object)?;
    }
    let head = json!({
        "machine": report::machine(),
        "tools": report::tools(),
        "quick": quick,
        "rounds": plan.rounds,
        "connects_per_sample": plan.connects,
        "rr_millis_per_sample": plan.rr_millis,
        "method": format!(
            "each arm in a fresh node namespace of its own per size; {} rounds, each arm once per round in rotating order; per sample {} connects and {} ms of requests on one connection; medians over samples",
            plan.rounds, plan.connects, plan.rr_millis
        ),
        "pod_net_method": format!(
            "each arm in namespaces of its own; {} rounds, each arm once per round in rotating order; per sample two iperf3 TCP streams of {} s each (the machine's default congestion control, then cubic) from pod 1 (CPU {CLIENT_CPU}) to pod 2 (servers on CPU {SERVER_CPU}), then qperf tcp_lat for {} s from pod 1 on CPU {CLIENT_CPU} and again on CPU {SERVER_CPU}; medians over samples",
            pod_plan.rounds, pod_plan.iperf_secs, pod_plan.lat_secs
        ),
        "cross_node_method": format!(
            "two nodes (namespaces) on an underlay bridge, a pod on each; the kernel baselines built by hand as flannel (VXLAN backend, cni0 bridge) and Calico without encapsulation (routes via the other node) program them, lash as a two-node cluster with an agent per node; {} rounds, each arm once per round in rotating order; per sample two iperf3 TCP streams of {} s each (the machine's default congestion control, then cubic) from the pod on node 1 (CPU {CLIENT_CPU}) to the pod on node 2 (servers on CPU {SERVER_CPU}), then qperf tcp_lat for {} s from node 1's pod on CPU {CLIENT_CPU} and again on CPU {SERVER_CPU}; medians over samples",
            pod_plan.rounds, pod_plan.iperf_secs, pod_plan.lat_secs
        ),
        "cni_method": format!(
            "the chain run as a runtime runs it (CNI_* variables, config on stdin, setns into the node namespace between fork and exec), after one unmeasured ADD and DEL; {} ADDs one at a time then their DELs, then {} ADDs released at once then their DELs; nearest-rank percentiles",
            cni_plan.sequential, cni_plan.parallel
        ),
        "clusterip_method": format!(
            "client in a pod outside the sandbox's cgroup (CPU {CLIENT_CPU}), target backed by 3 other pods (servers on CPU {SERVER_CPU}), each arm in a fresh sandbox per size; {} rounds of {} connects and {} ms of requests on one connection; medians over rounds",
            plan.rounds, plan.connects, plan.rr_millis
        ),
        "kube_watch_method": kube_watch::method(&kube_plan),
        "packet_method": format!(
            "BPF_PROG_TEST_RUN of from_container and of a pass-through tc program (tc_pass: returns TC_ACT_OK) on the same 54-byte TCP frames (a SYN opening a flow and an ACK in the middle of one, to a local pod and to a ClusterIP), one run per call on a fresh copy of the frame (the kernel's repeat would rerun on the rewritten packet), {} calls per sample (median of the kernel's per-call time, timer reads included), {} samples per program and frame in rotating order, on a thread in a network namespace of its own; medians",
            packet_plan.runs, packet_plan.rounds
        ),
    });
    let name = if partial {
        "partial"
    } else if quick {
        "quick"
    } else {
        "latest"
    };
    report::write(&results, head, name)
}

fn run_size(
    plan: &Plan,
    n: u32,
    arms: &[Arm],
    floor_object: &[u8],
    results: &mut Results,
) -> anyhow::Result<()> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut pods: Vec<Ipv4Addr> = Vec::new();
    for &arm in arms {
        let mut sb = Sandbox::new(&format!("bench-{}", arm.name()), 6)
            .with_context(|| format!("building the {} sandbox", arm.name()))?;
        sb.start_pod_servers_on(Some(SERVER_CPU))?;
        // Every sandbox numbers its pods alike.
        pods = sb.pods.iter().map(|p| p.ip).collect();
        nodes.push(Node {
            arm,
            sb,
            addr: client_addr(arm, &pods),
            samples: Vec::new(),
        });
    }
    let (old_t, new_t) = (services::target(&pods[0..3]), services::target(&pods[3..6]));
    let before = services::all(n, old_t.clone());
    let after = services::all(n, new_t.clone());

    // Program every arm, one at a time (nothing else runs meanwhile).
    let mut ready: Vec<Node> = Vec::new();
    for mut node in nodes {
        check_interrupt()?;
        eprintln!("bench:   {} full sync", node.arm.name());
        match full_sync(&mut node, &before, n) {
            Ok(row) => {
                eprintln!("bench:     {row}");
                if node.arm != Arm::Baseline {
                    results.controlplane.push(row);
                }
                ready.push(node);
            }
            Err(e) => {
                // One arm failing (a tool missing, a timeout) must not lose
                // the others: record it and go on without it.
                eprintln!("bench:   {} at {n} failed: {e:#}", node.arm.name());
                results
                    .controlplane
                    .push(json!({"services": n, "arm": node.arm.name(), "error": short(&e)}));
            }
        }
    }

    // The rounds: every arm once per round, the first arm rotating.
    for round in 0..plan.rounds {
        let arms_up = ready.len();
        for k in 0..arms_up {
            check_interrupt()?;
            let node = &mut ready[(round + k) % arms_up];
            let c = probe_json(
                &node.sb,
                &[
                    "bench-connect",
                    &node.addr,
                    "--count",
                    &plan.connects.to_string(),
                ],
            )?;
            anyhow::ensure!(
                c["errors"].as_u64() == Some(0),
                "{}: connects failed: {c}",
                node.arm.name()
            );
            let rr = probe_json(
                &node.sb,
                &[
                    "bench-rr",
                    &node.addr,
                    "--millis",
                    &plan.rr_millis.to_string(),
                ],
            )?;
            node.samples.push((
                c["p50_us"].as_f64().unwrap_or(f64::NAN),
                c["p99_us"].as_f64().unwrap_or(f64::NAN),
                rr["rate_per_s"].as_f64().unwrap_or(f64::NAN),
            ));
        }
    }
    for node in &ready {
        let col =
            |f: fn(&(f64, f64, f64)) -> f64| -> Vec<f64> { node.samples.iter().map(f).collect() };
        let rr = col(|s| s.2);
        let row = json!({
            "services": n, "arm": node.arm.name(), "samples": node.samples.len(),
            "connect_p50_us": median(col(|s| s.0)), "connect_p99_us": median(col(|s| s.1)),
            "rr_per_s": median(rr.clone()),
            "rr_min": rr.iter().copied().fold(f64::INFINITY, f64::min),
            "rr_max": rr.iter().copied().fold(0.0, f64::max),
        });
        eprintln!("bench:     {row}");
        results.dataplane.push(row);
    }

    // Program cost: lash's connect4 next to the floor, same connects, same phase.
    let per_call = program_cost(plan, &ready, floor_object, pods[0]);
    if let Err(e) = &per_call {
        eprintln!("bench:   program cost at {n} not measured: {e:#}");
    }
    let (lash_ns, floor_ns) = per_call.unwrap_or((None, None));

    // One endpoint change per arm, until the datapath shows it.
    let new_names: Vec<String> = (3..6).map(|i| format!("pod-{}", i + 1)).collect();
    let new_names: Vec<&str> = new_names.iter().map(String::as_str).collect();
    for node in ready.iter_mut().filter(|n| n.arm != Arm::Baseline) {
        let changed = one_change(node, &after, &old_t, &new_t, &new_names);
        let row = results
            .controlplane
            .iter_mut()
            .rev()
            .find(|r| r["services"] == n && r["arm"] == node.arm.name())
            .expect("pushed at full sync");
        match changed {
            Ok(ms) => row["one_change_ms"] = json!(ms),
            Err(e) => {
                eprintln!("bench:   {} change at {n} failed: {e:#}", node.arm.name());
                row["one_change_error"] = json!(short(&e));
            }
        }
        if node.arm == Arm::Lash {
            let sb = &node.sb;
            let row = json!({
                "services": n,
                "agent_rss_mib": lash_arm::rss_mib(sb.agent_pid().unwrap_or(0)),
                "bpf_map_mib": lash_arm::map_memory_mib(&sb.bpf_root),
                "lash_ns_per_connect": lash_ns, "floor_ns_per_connect": floor_ns,
                "agent_event_ms": lash_arm::status_ms(sb, "last_event_ms"),
                "agent_sync_ms": lash_arm::status_ms(sb, "last_sync_ms"),
            });
            eprintln!("bench:     {row}");
            results.lash.push(row);
        }
    }
    for mut node in ready {
        if node.arm == Arm::Lash {
            let _ = node.sb.stop_agent(false);
        }
        // Dropping the sandbox removes its namespaces, cgroup and pins.
    }
    Ok(())
}

/// An error as one line for the tables (the log has it whole).
fn short(e: &anyhow::Error) -> String {
    let s = format!("{e:#}");
    let line = s.lines().next().unwrap_or("");
    line.chars().take(200).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Nearest-rank percentile of `v` (sorted in place).
fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Where the client connects: the VIP, or the first pod for no translation.
fn client_addr(arm: Arm, pods: &[Ipv4Addr]) -> String {
    match arm {
        Arm::Baseline => format!("{}:{POD_PORT}", pods[0]),
        _ => format!("{TARGET_VIP}:{TARGET_PORT}"),
    }
}

/// Programs `node`'s arm with the whole service set; returns its control-plane row.
fn full_sync(node: &mut Node, svcs: &[Svc], n: u32) -> anyhow::Result<Value> {
    let work = node.sb.work.clone();
    let sb = &mut node.sb;
    let (ms, transactions) = match node.arm {
        Arm::Baseline => return Ok(json!({"services": n, "arm": "baseline"})),
        Arm::Iptables => {
            let full = work.join("iptables.rules");
            std::fs::write(&full, kube_proxy::iptables_full(svcs))?;
            (timed(ns_exec(sb, &["iptables-restore"]).arg(&full))?, 1)
        }
        Arm::Nftables => {
            let per_tx = (n > NFT_ONE_TX_MAX).then_some(NFT_PER_TX);
            let txs = kube_proxy::nft_full(svcs, per_tx);
            let mut ms = 0.0;
            for (i, tx) in txs.iter().enumerate() {
                let f = work.join(format!("nft-{i:03}.rules"));
                std::fs::write(&f, tx)?;
                ms += timed(ns_exec(sb, &["nft", "-f"]).arg(&f))?;
                let _ = std::fs::remove_file(&f);
            }
            (ms, txs.len())
        }
        Arm::Lash => (lash_arm::full_sync(sb, svcs)?, 1),
    };
    Ok(
        json!({"services": n, "arm": node.arm.name(), "full_sync_ms": ms, "transactions": transactions}),
    )
}

/// The target Service's endpoints move from pods 1-3 to pods 4-6; ms until a
/// connect from the client reaches one of the new pods.
fn one_change(
    node: &mut Node,
    after: &[Svc],
    old_t: &Svc,
    new_t: &Svc,
    new_names: &[&str],
) -> anyhow::Result<f64> {
    let sb = &node.sb;
    let work = sb.work.clone();
    match node.arm {
        Arm::Baseline => unreachable!("no translation, nothing to change"),
        Arm::Iptables => {
            let f = work.join("iptables.change");
            std::fs::write(&f, kube_proxy::iptables_change(after, old_t, new_t))?;
            time_change(sb, new_names, || {
                run_ok(ns_exec(sb, &["iptables-restore", "--noflush"]).arg(&f)).map(drop)
            })
        }
        Arm::Nftables => {
            let f = work.join("nft.change");
            std::fs::write(&f, kube_proxy::nft_change(old_t, new_t))?;
            time_change(sb, new_names, || {
                run_ok(ns_exec(sb, &["nft", "-f"]).arg(&f)).map(drop)
            })
        }
        Arm::Lash => {
            let target_yaml = lash_arm::manifest(std::slice::from_ref(new_t));
            let syncs = sb.syncs();
            let ms = time_change(sb, new_names, || {
                sb.write_manifest("target.yaml", &target_yaml)
            })?;
            // The status file is written after the maps: wait for it.
            sb.wait_synced_after(syncs, Duration::from_secs(5));
            Ok(ms)
        }
    }
}

/// ns per connect4 run of lash's program and of the floor program, read over
/// the same number of connects in one phase with bpf_stats on.
fn program_cost(
    plan: &Plan,
    nodes: &[Node],
    floor_object: &[u8],
    pod: Ipv4Addr,
) -> anyhow::Result<(Option<f64>, Option<f64>)> {
    let (Some(lash), Some(base)) = (
        nodes.iter().find(|n| n.arm == Arm::Lash),
        nodes.iter().find(|n| n.arm == Arm::Baseline),
    ) else {
        return Ok((None, None));
    };
    let floor = floor::Floor::attach(
        floor_object,
        &lash.sb.bpf_root,
        &base.sb.cgroup,
        pod,
        POD_PORT,
    )?;
    let lash_prog =
        stats::connect4_prog(&lash.sb.cgroup).context("lash's connect4 not attached")?;
    let count = plan.connects.to_string();
    let _on = stats::BpfStats::enable()?;
    let mut per_call = [None, None];
    for (i, (node, id)) in [(lash, lash_prog), (base, u64::from(floor.prog_id))]
        .into_iter()
        .enumerate()
    {
        let before = stats::counters(id).context("reading program stats")?;
        probe_json(&node.sb, &["bench-connect", &node.addr, "--count", &count])?;
        let after = stats::counters(id).context("reading program stats")?;
        per_call[i] = stats::ns_per_run(before, after);
    }
    Ok((per_call[0], per_call[1]))
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 50.0), 50.0);
        assert_eq!(percentile(&mut v, 99.0), 99.0);
        let mut v: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut v, 99.0), 20.0);
        assert_eq!(percentile(&mut v, 50.0), 10.0);
    }
}
