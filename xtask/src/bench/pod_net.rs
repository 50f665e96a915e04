//! Pod to pod on one node: one TCP stream's throughput (iperf3) and
//! request/response latency (qperf tcp_lat) between two pod namespaces, for
//! each way of wiring them:
//!
//! - `pod-veth`: the two pods on the two ends of one veth pair, nothing in
//!   between: the floor any wiring through a node pays on top of.
//! - `pod-calico`: kernel routing shaped as Calico does it: each pod a veth
//!   into the node namespace whose node end has MAC ee:ee:ee:ee:ee:ee and
//!   proxy_arp on, a /32 route per pod on the node, forwarding on, and the
//!   pods' default route via 169.254.1.1 (a link-scope route to it on eth0).
//! - `pod-lash`: pods made by the real lash-cni (ADD), served by the agent's
//!   tc programs on their lxc devices; the agent runs inside a node namespace
//!   of its own (lash_node.rs) with ip_forward 0 there, so only the BPF path
//!   (bpf_redirect_peer) can carry the traffic. Both pods are DELeted at the
//!   end and the node checked empty.
//!
//! The servers run in pod 2 pinned to one CPU, the clients in pod 1 on the
//! other; the arms take turns over the rounds as in the socket-LB bench, and
//! a row's numbers are medians over its rounds.

use std::{
    net::Ipv4Addr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _};
use serde_json::{json, Value};

use super::namespaces::{in_netns, ip, listening, sysctl, Namespaces};
use super::probe::run_ok;
use super::{check_interrupt, median, short, CLIENT_CPU, SERVER_CPU};
use lash_tests::sandbox::Sandbox;

pub const ARMS: [&str; 3] = ["pod-veth", "pod-calico", "pod-lash"];

const IPERF_PORT: u16 = 5201;
/// qperf's control port (its default).
const QPERF_PORT: u16 = 19765;
/// The node-side MAC every Calico workload interface has.
pub(super) const CALICO_MAC: &str = "ee:ee:ee:ee:ee:ee";
/// The pods' gateway in Calico's scheme: no interface holds it; the node
/// answers ARP for it by proxy.
pub(super) const CALICO_GW: &str = "169.254.1.1";

/// A row's figures, in the order of `Pods::samples`.
const METRICS: [&str; 4] = ["gbit_s", "gbit_s_cubic", "lat_us", "lat_one_cpu_us"];

/// The congestion control of the second iperf3 stream: Linux's own default
/// (and Debian's). The first stream uses the machine's default, whatever it
/// is (`tcp_congestion_control` in the results); on this VM that is BBR,
/// whose view of a path with an RTT of a few µs depends on how ACKs arrive
/// more than on what the path costs, so both are measured.
const SECOND_CC: &str = "cubic";

pub struct Plan {
    pub rounds: usize,
    pub iperf_secs: u32,
    pub lat_secs: u32,
}

/// The lash arm's pod range.
const LASH_CIDR: &str = "10.244.3.0/24";

/// Two wired pods with the servers running in pod 2.
pub(super) struct Pods {
    pub arm: &'static str,
    /// pod-lash: the node with the agent, and the pods' container ids with
    /// their namespaces (for the DELs).
    pub lash: Option<(Sandbox, Vec<(String, String)>)>,
    /// The namespaces the arm made and the servers it started: dropped
    /// (servers ended) before the cluster below.
    pub ns: Namespaces,
    /// The cross-node lash arms: the simulated cluster the pods are on
    /// (its drop DELs them and removes the nodes).
    pub cluster: Option<lash_tests::cluster::Cluster>,
    /// The namespace the clients run in (pod 1's).
    pub client: String,
    /// The namespace the servers run in (pod 2's).
    pub server: String,
    pub server_ip: Ipv4Addr,
    /// Per round: Gbit/s with the default congestion control and with
    /// cubic, tcp_lat µs across CPUs, tcp_lat µs on one CPU.
    pub samples: Vec<[f64; 4]>,
}

impl Pods {
    /// Pod 1 and pod 2 as wired in `ns`, the servers to be started in pod 2.
    pub fn new(
        arm: &'static str,
        ns: Namespaces,
        client: String,
        server: String,
        server_ip: Ipv4Addr,
    ) -> Self {
        Pods {
            arm,
            lash: None,
            ns,
            cluster: None,
            client,
            server,
            server_ip,
            samples: Vec::new(),
        }
    }
}

/// For a row's arm, the arms it is compared with and the tag of each ratio
/// (`{metric}_vs_{tag}`).
pub(super) type References = fn(&str) -> Vec<(&'static str, &'static str)>;

pub fn run(plan: &Plan, arms: &[&'static str]) -> anyhow::Result<Vec<Value>> {
    measure(plan, arms, build, |_| {
        vec![("pod-calico", "calico"), ("pod-veth", "veth")]
    })
}

/// Builds every arm with `build`, measures them in turns and returns a row
/// per arm with medians, ranges and ratios to its `references`.
pub(super) fn measure(
    plan: &Plan,
    arms: &[&'static str],
    build: fn(&'static str) -> anyhow::Result<Pods>,
    references: References,
) -> anyhow::Result<Vec<Value>> {
    let mut rows = Vec::new();
    let mut ready: Vec<Pods> = Vec::new();
    for &arm in arms {
        check_interrupt()?;
        match build(arm).and_then(start_servers) {
            Ok(pods) => ready.push(pods),
            Err(e) => {
                eprintln!("bench:   {arm} failed: {e:#}");
                rows.push(json!({"arm": arm, "error": short(&e)}));
            }
        }
    }
    for round in 0..plan.rounds {
        let up = ready.len();
        for k in 0..up {
            check_interrupt()?;
            let pods = &mut ready[(round + k) % up];
            // An interrupt ends the tools too (one process group): say so
            // rather than report their failure.
            let gbit = iperf(pods, plan.iperf_secs, None)
                .or_else(|e| check_interrupt().and(Err(e)))
                .with_context(|| format!("{}: iperf3", pods.arm))?;
            let cubic = iperf(pods, plan.iperf_secs, Some(SECOND_CC))
                .or_else(|e| check_interrupt().and(Err(e)))
                .with_context(|| format!("{}: iperf3 -C {SECOND_CC}", pods.arm))?;
            let lat = qperf_lat(pods, plan.lat_secs, CLIENT_CPU)
                .or_else(|e| check_interrupt().and(Err(e)))
                .with_context(|| format!("{}: qperf tcp_lat", pods.arm))?;
            let lat1 = qperf_lat(pods, plan.lat_secs, SERVER_CPU)
                .or_else(|e| check_interrupt().and(Err(e)))
                .with_context(|| format!("{}: qperf tcp_lat on one CPU", pods.arm))?;
            eprintln!(
                "bench:   {} round {}: {gbit:.2} Gbit/s ({SECOND_CC}: {cubic:.2}), {lat:.1} µs, one CPU {lat1:.1} µs",
                pods.arm,
                round + 1
            );
            if round == 0 {
                check_shape(pods)?;
            }
            pods.samples.push([gbit, cubic, lat, lat1]);
        }
    }
    for pods in &ready {
        let mut row = json!({"arm": pods.arm, "samples": pods.samples.len()});
        for (i, key) in METRICS.iter().enumerate() {
            let v: Vec<f64> = pods.samples.iter().map(|s| s[i]).collect();
            row[*key] = json!(median(v.clone()));
            row[format!("{key}_min")] = json!(v.iter().copied().fold(f64::INFINITY, f64::min));
            row[format!("{key}_max")] = json!(v.iter().copied().fold(0.0, f64::max));
        }
        rows.push(row);
    }
    // DEL the lash pods and check the node is left empty; a failure there
    // fails the arm's row.
    for pods in &mut ready {
        if let Some((sb, added)) = pods.lash.take() {
            if let Err(e) = lash_teardown(&sb, &added) {
                eprintln!("bench:   {} teardown failed: {e:#}", pods.arm);
                if let Some(row) = rows.iter_mut().find(|r| r["arm"] == pods.arm) {
                    *row = json!({"arm": pods.arm, "error": format!("teardown: {}", short(&e))});
                }
            }
        }
    }
    drop(ready);
    // Ratios against the two references, where both sides were measured.
    let value = |rows: &[Value], arm: &str, key: &str| {
        rows.iter()
            .find(|r| r["arm"] == arm)
            .and_then(|r| r[key].as_f64())
    };
    let refs: Vec<Value> = rows.clone();
    for row in rows.iter_mut() {
        let arm = row["arm"].as_str().unwrap_or("").to_string();
        for (reference, tag) in references(&arm) {
            for key in METRICS {
                if let (Some(x), Some(r)) = (row[key].as_f64(), value(&refs, reference, key)) {
                    row[format!("{key}_vs_{tag}")] = json!(x / r);
                }
            }
        }
    }
    for row in &rows {
        eprintln!("bench:     {row}");
    }
    Ok(rows)
}

/// Builds one arm's namespaces and wiring.
fn build(arm: &'static str) -> anyhow::Result<Pods> {
    let mut ns = Namespaces::new(arm)?;
    let mut lash = None;
    let made = match arm {
        "pod-veth" => veth(&mut ns)?,
        "pod-calico" => calico(&mut ns)?,
        "pod-lash" => {
            let p1 = ns.add("p1")?;
            let p2 = ns.add("p2")?;
            // On an error the sandbox's and `ns`'s drops remove everything.
            let (sb, added, ip2) = lash_wire(&ns.prefix, [&p1, &p2])?;
            lash = Some((sb, added));
            (p1, ip2)
        }
        _ => unreachable!("not a pod arm: {arm}"),
    };
    // Pod 2 is always the last namespace made.
    let server = ns.names().last().expect("pod 2 made last").clone();
    let mut pods = Pods::new(arm, ns, made.0, server, made.1);
    pods.lash = lash;
    Ok(pods)
}

/// The floor: pod 1 and pod 2 on the two ends of one veth pair.
fn veth(ns: &mut Namespaces) -> anyhow::Result<(String, Ipv4Addr)> {
    let p1 = ns.add("p1")?;
    let p2 = ns.add("p2")?;
    let (a1, a2) = (Ipv4Addr::new(10, 244, 2, 11), Ipv4Addr::new(10, 244, 2, 12));
    ip(&[
        "-n", &p1, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &p2,
    ])?;
    for (p, a) in [(&p1, a1), (&p2, a2)] {
        ip(&["-n", p, "addr", "add", &format!("{a}/24"), "dev", "eth0"])?;
        ip(&["-n", p, "link", "set", "eth0", "up"])?;
    }
    Ok((p1, a2))
}

/// Calico-shaped kernel routing through a node namespace.
fn calico(ns: &mut Namespaces) -> anyhow::Result<(String, Ipv4Addr)> {
    let node = ns.add("node")?;
    calico_node(&node)?;
    let mut addrs = Vec::new();
    for i in 1..=2u8 {
        let pod = ns.add(&format!("p{i}"))?;
        let addr = Ipv4Addr::new(10, 244, 1, 10 + i);
        calico_workload(&node, &pod, &format!("cali{i}"), addr)?;
        addrs.push((pod, addr));
    }
    Ok((addrs[0].0.clone(), addrs[1].1))
}

/// A node as Calico sets it up for its workloads: forwarding on, and
/// 169.254.1.1 routed somewhere other than the workloads' interfaces.
pub(super) fn calico_node(node: &str) -> anyhow::Result<()> {
    sysctl(node, "net.ipv4.ip_forward=1")?;
    // Proxy ARP answers for an address routed out of another interface than
    // the one asking: on a Calico node that is the default route out of the
    // uplink; this node has none to spare, so 169.254.1.1 is routed on lo.
    ip(&[
        "-n",
        node,
        "route",
        "add",
        &format!("{CALICO_GW}/32"),
        "dev",
        "lo",
    ])
    .map(drop)
}

/// Pod namespace `pod` wired to `node` as a Calico workload: a veth whose
/// node end `cali` has MAC ee:ee:ee:ee:ee:ee and proxy ARP, a /32 route to
/// the pod on the node, the pod's default route via 169.254.1.1.
pub(super) fn calico_workload(
    node: &str,
    pod: &str,
    cali: &str,
    addr: Ipv4Addr,
) -> anyhow::Result<()> {
    ip(&[
        "-n", node, "link", "add", cali, "address", CALICO_MAC, "type", "veth", "peer", "name",
        "eth0", "netns", pod,
    ])?;
    sysctl(node, &format!("net.ipv4.conf.{cali}.proxy_arp=1"))?;
    // As Calico sets it: the kernel otherwise delays proxy ARP replies by up
    // to 0.8 s.
    sysctl(node, &format!("net.ipv4.neigh.{cali}.proxy_delay=0"))?;
    ip(&["-n", node, "link", "set", cali, "up"])?;
    ip(&[
        "-n",
        node,
        "route",
        "add",
        &format!("{addr}/32"),
        "dev",
        cali,
        "scope",
        "link",
    ])?;
    ip(&[
        "-n",
        pod,
        "addr",
        "add",
        &format!("{addr}/32"),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", pod, "link", "set", "eth0", "up"])?;
    ip(&[
        "-n", pod, "route", "add", CALICO_GW, "dev", "eth0", "scope", "link",
    ])?;
    ip(&[
        "-n", pod, "route", "add", "default", "via", CALICO_GW, "dev", "eth0",
    ])
    .map(drop)
}

/// After traffic has flowed, the arm is what it says: in the Calico-shaped
/// arm pod 1 reached its gateway through a neighbour entry with the node's
/// ee:ee:ee:ee:ee:ee (proxy ARP answered), in the veth arm pod 2 directly.
fn check_shape(pods: &Pods) -> anyhow::Result<()> {
    if pods.arm.starts_with("xnode-") {
        return super::cross_node::check_shape(pods);
    }
    let want = match pods.arm {
        "pod-calico" => format!("{CALICO_GW} lladdr {CALICO_MAC}"),
        "pod-veth" => format!("{} lladdr", pods.server_ip),
        "pod-lash" => {
            // Still no forwarding in the node: the tc programs carried it.
            let (sb, _) = pods.lash.as_ref().expect("pod-lash has its node");
            let fwd = super::lash_node::sysctl(sb, "net.ipv4.ip_forward")?;
            ensure!(fwd == "0", "pod-lash: ip_forward became {fwd} in the node");
            return Ok(());
        }
        _ => return Ok(()),
    };
    check_neighbour(pods, &want)
}

/// Pod 1 reached its next hop through the neighbour entry `want` (an
/// address and the MAC the arm's wiring gives it).
pub(super) fn check_neighbour(pods: &Pods, want: &str) -> anyhow::Result<()> {
    let neigh = ip(&["-n", &pods.client, "neigh", "show", "dev", "eth0"])?;
    ensure!(
        neigh.contains(want),
        "{}: pod 1's neighbours are not as the arm is built ({want:?} missing): {neigh}",
        pods.arm
    );
    Ok(())
}

/// The lash arm's wiring: a node (sandbox) with the agent running in it
/// with a pod range, and the two pod namespaces the bench made attached by
/// lash-cni ADD. Returns the node, the (container id, namespace) pairs and
/// pod 2's address.
#[allow(clippy::type_complexity)]
fn lash_wire(
    prefix: &str,
    pods: [&str; 2],
) -> anyhow::Result<(Sandbox, Vec<(String, String)>, Ipv4Addr)> {
    let sb = super::lash_node::start("bench-pod-lash-node", LASH_CIDR, &[])?;
    let mut added = Vec::new();
    let mut ip2 = Ipv4Addr::UNSPECIFIED;
    for (i, pod) in pods.into_iter().enumerate() {
        let id = format!("{prefix}-p{}", i + 1);
        let a = super::lash_node::add(&sb, &id, pod)?;
        added.push((id, pod.to_string()));
        ip2 = a.ip;
    }
    Ok((sb, added, ip2))
}

/// DEL both pods, then nothing of them may be left on the node.
fn lash_teardown(sb: &Sandbox, added: &[(String, String)]) -> anyhow::Result<()> {
    for (id, netns) in added {
        super::lash_node::del(sb, id, netns)?;
    }
    super::lash_node::check_clean(sb)
}

/// Starts iperf3 and qperf servers in pod 2 (pinned to the server CPU).
fn start_servers(mut pods: Pods) -> anyhow::Result<Pods> {
    let server_ns = pods.server.clone();
    let bind = pods.server_ip.to_string();
    for (program, args, port) in [
        (
            "iperf3",
            vec!["-s", "-B", bind.as_str(), "-p", "5201"],
            IPERF_PORT,
        ),
        ("qperf", vec![], QPERF_PORT),
    ] {
        let child = in_netns(&server_ns, program, Some(SERVER_CPU))?
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {program} (cargo xtask setup installs it)"))?;
        let pid = pods.ns.adopt(child);
        let up = Instant::now() + Duration::from_secs(5);
        while !listening(pid, port) {
            if Instant::now() > up {
                bail!("{program} in {server_ns} not listening on {port} after 5 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(pods)
}

fn client(pods: &Pods, program: &str, cpu: usize) -> anyhow::Result<Command> {
    in_netns(&pods.client, program, Some(cpu))
}

/// One TCP stream from pod 1 to pod 2 for `secs`, with congestion control
/// `cc` (None: the namespace's default): Gbit/s received.
fn iperf(pods: &Pods, secs: u32, cc: Option<&str>) -> anyhow::Result<f64> {
    let mut cmd = client(pods, "iperf3", CLIENT_CPU)?;
    cmd.args([
        "-c",
        &pods.server_ip.to_string(),
        "-p",
        &IPERF_PORT.to_string(),
        "-t",
        &secs.to_string(),
        "-J",
    ]);
    if let Some(cc) = cc {
        cmd.args(["-C", cc]);
    }
    let out = run_ok(&mut cmd)?;
    let v: Value = serde_json::from_str(&out).context("iperf3's JSON")?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3: {e}");
    }
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .context("no end.sum_received in iperf3's JSON")
}

/// qperf tcp_lat from pod 1 (on `cpu`) to pod 2 for `secs`: one-way latency
/// in µs (half the round trip of one-byte messages, as qperf reports it).
///
/// Measured twice: client and server on different CPUs, as pods mostly are,
/// where every message also pays a cross-CPU wakeup (tens of µs on this VM,
/// more when the machine is busy), and both on the server's CPU, where what
/// is left is mostly the stack and the datapath the arms differ in.
fn qperf_lat(pods: &Pods, secs: u32, cpu: usize) -> anyhow::Result<f64> {
    let out = run_ok(client(pods, "qperf", cpu)?.args([
        &pods.server_ip.to_string(),
        "-t",
        &secs.to_string(),
        "tcp_lat",
    ]))?;
    parse_qperf_latency(&out).with_context(|| format!("qperf said {out:?}"))
}

/// "tcp_lat:\n    latency  =  33.8 us\n" -> 33.8 (µs; ns, ms and sec scaled).
fn parse_qperf_latency(out: &str) -> Option<f64> {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("latency"))?;
    let mut words = line.split('=').nth(1)?.split_whitespace();
    let x: f64 = words.next()?.parse().ok()?;
    let scale = match words.next()? {
        "ns" => 1e-3,
        "us" => 1.0,
        "ms" => 1e3,
        "sec" | "s" => 1e6,
        _ => return None,
    };
    Some(x * scale)
}

#[cfg(test)]
mod tests {
    use super::parse_qperf_latency;

    #[test]
    fn qperf_units() {
        assert_eq!(
            parse_qperf_latency("tcp_lat:\n    latency  =  33.8 us\n"),
            Some(33.8)
        );
        assert_eq!(
            parse_qperf_latency("tcp_lat:\n    latency  =  1.5 ms\n"),
            Some(1500.0)
        );
        assert_eq!(parse_qperf_latency("tcp_lat:\n    failed\n"), None);
    }
}
