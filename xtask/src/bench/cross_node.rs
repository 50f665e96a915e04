//! Pod to pod across two nodes: one TCP stream's throughput (iperf3) and
//! request/response latency (qperf tcp_lat) from a pod on node 1 to a pod
//! on node 2, for each way of carrying pod traffic between nodes. Every arm
//! has the same shape of machine: two node namespaces, each with `eth0` on
//! an underlay bridge (in an underlay namespace of its own) at
//! 192.168.50.11 and .12, node `i`'s pods in 10.244.i.0/24.
//!
//! - `xnode-flannel`: flannel's VXLAN backend, built by hand: pods on a
//!   `cni0` bridge (the bridge plugin's way, MTU 1450); a kernel VXLAN device
//!   `flannel.1` (VNI 1, UDP 8472, no learning, MTU 1450) holding the node's
//!   pod network address as a /32; to the other node's range a route via its
//!   `flannel.1` address (onlink), a permanent neighbour entry with that
//!   device's MAC and an FDB entry sending the MAC to the node's address.
//! - `xnode-routes`: plain kernel routes, as Calico without encapsulation
//!   (BGP mode) programs them: pods wired as Calico workloads (veth with
//!   ee:ee:ee:ee:ee:ee, proxy ARP, a /32 route per pod), a route to the other
//!   node's range via its address, forwarding on.
//! - `xnode-lash-tunnel` and `xnode-lash-native`: the simulated cluster of
//!   the tests (lash_tests::cluster) with two nodes, one agent each, in
//!   `--routing-mode tunnel` and `native`; pods made by lash-cni ADD.
//!
//! The measurement (servers in pod 2 on one CPU, clients in pod 1, arms in
//! turns, medians) is pod_net.rs's. Each lash arm is compared with the kernel
//! baseline carrying traffic the same way (tunnel with flannel, native with
//! routes), every arm with plain routes.

use std::{net::Ipv4Addr, time::Duration};

use anyhow::{ensure, Context as _};
use lash_tests::{
    cluster::{Cluster, RoutingMode, TUNNEL_DEVICE},
    sandbox::tx_packets,
};
use serde_json::Value;

use super::namespaces::{ip, sysctl, Namespaces};
use super::pod_net::{self, Plan, Pods, CALICO_GW, CALICO_MAC};

pub const ARMS: [&str; 4] = [
    "xnode-flannel",
    "xnode-routes",
    "xnode-lash-tunnel",
    "xnode-lash-native",
];

/// The underlay's MTU and what VXLAN's headers take from it.
const UNDERLAY_MTU: u32 = 1500;
const VXLAN_OVERHEAD: u32 = 50;
/// flannel's VXLAN device, VNI and port (the Linux kernel's IANA port is
/// 4789; flannel, like Cilium, uses 8472).
const FLANNEL_DEVICE: &str = "flannel.1";
const FLANNEL_VNI: &str = "1";
const VXLAN_PORT: &str = "8472";
/// How long a lash cluster may take to agree on its nodes.
const CONVERGE: Duration = Duration::from_secs(30);

pub fn run(plan: &Plan, arms: &[&'static str]) -> anyhow::Result<Vec<Value>> {
    pod_net::measure(plan, arms, build, references)
}

/// Each lash arm against the kernel baseline that carries traffic its way,
/// every arm against plain routes.
fn references(arm: &str) -> Vec<(&'static str, &'static str)> {
    let matching = match arm {
        "xnode-flannel" | "xnode-lash-tunnel" => "xnode-flannel",
        _ => "xnode-routes",
    };
    vec![(matching, "kernel"), ("xnode-routes", "routes")]
}

/// Node `i`'s (from 1) underlay address: the tests' cluster's scheme, so
/// the lash arms and the kernel ones are addressed alike.
fn node_address(i: u8) -> Ipv4Addr {
    lash_tests::cluster::node_address(usize::from(i) - 1)
}

fn build(arm: &'static str) -> anyhow::Result<Pods> {
    match arm {
        "xnode-flannel" => kernel(arm, true),
        "xnode-routes" => kernel(arm, false),
        "xnode-lash-tunnel" => lash(arm, RoutingMode::Tunnel),
        "xnode-lash-native" => lash(arm, RoutingMode::Native),
        _ => unreachable!("not a cross-node arm: {arm}"),
    }
}

/// The two kernel baselines: an underlay, two nodes, a pod on each.
fn kernel(arm: &'static str, vxlan: bool) -> anyhow::Result<Pods> {
    let mut ns = Namespaces::new(arm)?;
    let underlay = ns.add("u")?;
    ip(&["-n", &underlay, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", &underlay, "link", "set", "br0", "up"])?;
    let mut nodes = Vec::new();
    for i in 1..=2u8 {
        let node = ns.add(&format!("n{i}"))?;
        let port = format!("n{i}");
        ip(&[
            "-n", &underlay, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &node,
        ])?;
        ip(&["-n", &underlay, "link", "set", &port, "master", "br0", "up"])?;
        let addr = format!("{}/24", node_address(i));
        ip(&["-n", &node, "addr", "add", &addr, "dev", "eth0"])?;
        ip(&["-n", &node, "link", "set", "eth0", "up"])?;
        sysctl(&node, "net.ipv4.ip_forward=1")?;
        nodes.push(node);
    }
    let mut pods = Vec::new();
    for i in 1..=2u8 {
        let node = &nodes[usize::from(i) - 1];
        let pod = ns.add(&format!("p{i}"))?;
        let addr = Ipv4Addr::new(10, 244, i, 10);
        if vxlan {
            flannel_node(node, i)?;
            bridge_pod(node, &pod, i, addr)?;
        } else {
            pod_net::calico_node(node)?;
            pod_net::calico_workload(node, &pod, "cali1", addr)?;
        }
        pods.push((pod, addr));
    }
    // Each node learns the other's range, as flanneld or BGP would tell it.
    for (i, j) in [(1u8, 2u8), (2, 1)] {
        let node = &nodes[usize::from(i) - 1];
        let range = format!("10.244.{j}.0/24");
        if vxlan {
            let gw = format!("10.244.{j}.0");
            ip(&[
                "-n",
                node,
                "route",
                "add",
                &range,
                "via",
                &gw,
                "dev",
                FLANNEL_DEVICE,
                "onlink",
            ])?;
            ip(&[
                "-n",
                node,
                "neigh",
                "add",
                &gw,
                "lladdr",
                &flannel_mac(j),
                "dev",
                FLANNEL_DEVICE,
                "nud",
                "permanent",
            ])?;
            super::probe::run_ok(std::process::Command::new("ip").args([
                "netns",
                "exec",
                node,
                "bridge",
                "fdb",
                "add",
                &flannel_mac(j),
                "dev",
                FLANNEL_DEVICE,
                "dst",
                &node_address(j).to_string(),
                "self",
                "permanent",
            ]))?;
        } else {
            let via = node_address(j).to_string();
            ip(&[
                "-n", node, "route", "add", &range, "via", &via, "dev", "eth0",
            ])?;
        }
    }
    let (client, server, server_ip) = (pods[0].0.clone(), pods[1].0.clone(), pods[1].1);
    Ok(Pods::new(arm, ns, client, server, server_ip))
}

/// Node `i`'s flannel.1 MAC: fixed, so the other node's entries can name it.
fn flannel_mac(i: u8) -> String {
    format!("02:f1:00:00:00:{i:02x}")
}

/// flannel's VXLAN device on node `i` and the pods' bridge.
fn flannel_node(node: &str, i: u8) -> anyhow::Result<()> {
    let mtu = (UNDERLAY_MTU - VXLAN_OVERHEAD).to_string();
    ip(&[
        "-n",
        node,
        "link",
        "add",
        FLANNEL_DEVICE,
        "address",
        &flannel_mac(i),
        "mtu",
        &mtu,
        "type",
        "vxlan",
        "id",
        FLANNEL_VNI,
        "local",
        &node_address(i).to_string(),
        "dev",
        "eth0",
        "dstport",
        VXLAN_PORT,
        "nolearning",
    ])?;
    ip(&[
        "-n",
        node,
        "addr",
        "add",
        &format!("10.244.{i}.0/32"),
        "dev",
        FLANNEL_DEVICE,
    ])?;
    ip(&["-n", node, "link", "set", FLANNEL_DEVICE, "up"])?;
    ip(&["-n", node, "link", "add", "cni0", "type", "bridge"])?;
    ip(&[
        "-n",
        node,
        "addr",
        "add",
        &format!("10.244.{i}.1/24"),
        "dev",
        "cni0",
    ])?;
    ip(&["-n", node, "link", "set", "cni0", "up"]).map(drop)
}

/// A pod on node `i`'s cni0 bridge, as the bridge plugin under flannel
/// makes it (MTU as flannel's subnet file gives it).
fn bridge_pod(node: &str, pod: &str, i: u8, addr: Ipv4Addr) -> anyhow::Result<()> {
    let mtu = (UNDERLAY_MTU - VXLAN_OVERHEAD).to_string();
    let veth = format!("veth{i}");
    ip(&[
        "-n", node, "link", "add", &veth, "mtu", &mtu, "type", "veth", "peer", "name", "eth0",
        "mtu", &mtu, "netns", pod,
    ])?;
    ip(&["-n", node, "link", "set", &veth, "master", "cni0", "up"])?;
    ip(&[
        "-n",
        pod,
        "addr",
        "add",
        &format!("{addr}/24"),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", pod, "link", "set", "eth0", "up"])?;
    let gw = format!("10.244.{i}.1");
    ip(&[
        "-n", pod, "route", "add", "default", "via", &gw, "dev", "eth0",
    ])
    .map(drop)
}

/// A two-node lash cluster with a pod on each node.
fn lash(arm: &'static str, mode: RoutingMode) -> anyhow::Result<Pods> {
    // Holds only the servers; the cluster owns its namespaces.
    let ns = Namespaces::new(arm)?;
    let tag = format!("b{}", &arm["xnode-lash-".len()..][..3]);
    let mut c = Cluster::new(&tag, 2, mode).with_context(|| format!("{arm}: the cluster"))?;
    let p1 = c.add_pod(0, "p1")?;
    let p2 = c.add_pod(1, "p2")?;
    c.wait_converged(CONVERGE)?;
    let ping = c.ping(&p1, p2.ip, 3, &[])?;
    ensure!(
        ping.all_answered(),
        "{arm}: p1 does not reach p2: {}\n{}",
        ping.output,
        c.agent_logs()
    );
    let mut pods = Pods::new(arm, ns, p1.netns.clone(), p2.netns.clone(), p2.ip);
    pods.cluster = Some(c);
    Ok(pods)
}

/// After the first round: the traffic went the way the arm says.
pub fn check_shape(pods: &Pods) -> anyhow::Result<()> {
    match pods.arm {
        "xnode-flannel" => {
            let node = node_ns_of_kernel_arm(pods, 1);
            ensure!(
                tx_packets(&node, FLANNEL_DEVICE)? > 1000,
                "xnode-flannel: node 1's {FLANNEL_DEVICE} sent (almost) nothing"
            );
        }
        // The gateway answered by proxy ARP, as on a Calico node.
        "xnode-routes" => {
            pod_net::check_neighbour(pods, &format!("{CALICO_GW} lladdr {CALICO_MAC}"))?
        }
        "xnode-lash-tunnel" => {
            let c = pods.cluster.as_ref().expect("a lash arm has its cluster");
            let node = &c.node(0).sb.node_ns;
            ensure!(
                tx_packets(node, TUNNEL_DEVICE)? > 1000,
                "xnode-lash-tunnel: node 1's {TUNNEL_DEVICE} sent (almost) nothing"
            );
            let fwd = ip(&["netns", "exec", node, "sysctl", "-n", "net.ipv4.ip_forward"])?;
            ensure!(
                fwd.trim() == "0",
                "xnode-lash-tunnel: ip_forward is on in node 1: the kernel could have carried it"
            );
        }
        "xnode-lash-native" => {
            let c = pods.cluster.as_ref().expect("a lash arm has its cluster");
            let routes = c.agent_routes(0);
            ensure!(
                routes.iter().any(|r| r["dst"] == "10.244.2.0/24"),
                "xnode-lash-native: node 1 has no agent route to node 2's pods: {routes:?}"
            );
        }
        _ => {}
    }
    Ok(())
}

/// Node `i`'s namespace in a kernel arm (made as `PREFIX-n{i}`).
fn node_ns_of_kernel_arm(pods: &Pods, i: u8) -> String {
    format!("{}-n{i}", pods.ns.prefix)
}
