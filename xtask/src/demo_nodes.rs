//! `cargo xtask demo --nodes N`: seed 004's exercise, "the way of a packet"
//! from a pod on one node to a pod on another, on a simulated cluster (N node
//! namespaces joined by an underlay bridge, an agent in each, tunnel
//! routing). Each step prints what a Cilium user looks up by hand and what
//! lash shows for it: the route in the pod, the ARP answer (the lxc's MAC),
//! the lxc's tc program, the ipcache entry with its tunnel endpoint, the
//! VXLAN packets on the underlay, the delivery on the other node; then a
//! Service with a backend on every node, reached from the first. Everything
//! is removed on exit and on Ctrl-C.

use std::{net::Ipv4Addr, process::Command};

use anyhow::{ensure, Context as _};
use lash_tests::{
    cluster::{Cluster, ClusterPod, RoutingMode},
    manifests::{endpoint_slice, service, Cond},
    sandbox::POD_TCP_PORT,
};

use crate::demo::{check, install_interrupt, section};

/// Prints `$ what` and the command's output (stdout and stderr).
fn show(what: &str, cmd: &mut Command) -> anyhow::Result<String> {
    println!("$ {what}");
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.trim().is_empty() {
        print!("{err}");
    }
    ensure!(out.status.success(), "{what} failed ({})", out.status);
    Ok(text)
}

fn in_ns(ns: &str, program: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]).args(args);
    c
}

fn agent(cluster: &Cluster, i: usize, args: &[&str]) -> anyhow::Result<String> {
    println!(
        "$ agent {}        # on {}",
        args.join(" "),
        cluster.node(i).name
    );
    let out = cluster.node(i).sb.agent_cli(args)?;
    print!("{out}");
    Ok(out)
}

/// A MAC as `ip` prints it, from one line of `ip link show`.
fn link_mac(text: &str) -> Option<String> {
    let at = text.find("link/ether ")? + "link/ether ".len();
    Some(text[at..].split_whitespace().next()?.to_lowercase())
}

pub fn run(nodes: usize, hold: bool) -> anyhow::Result<()> {
    ensure!(nodes >= 2, "--nodes wants 2 or more");
    install_interrupt();
    let mut cluster =
        Cluster::new("demo-nodes", nodes, RoutingMode::Tunnel).context("building the cluster")?;
    section("the cluster");
    println!(
        "{} nodes, each a network namespace with its own agent, joined by a bridge in {} (the underlay, MTU 1500); routing: tunnel",
        nodes, cluster.underlay
    );
    for i in 0..nodes {
        let n = cluster.node(i);
        println!("  {:<8} {:<15} pods {}", n.name, n.addr, n.pod_cidr);
    }
    agent(&cluster, 0, &["node", "list"])?;
    check()?;

    section("step 1: a client pod on node-1, a server pod on node-2");
    let client = cluster.add_pod(0, "curl")?;
    let server = cluster.add_pod(1, "httpbin")?;
    cluster.serve(&server)?;
    println!(
        "curl on node-1: {} (lxc {}); httpbin on node-2: {} (lxc {})",
        client.ip, client.lxc, server.ip, server.lxc
    );
    check()?;

    section("step 2-3: the client reaches the server");
    let target = format!("{}:{POD_TCP_PORT}", server.ip);
    let answers = cluster.probe(&client, "tcp", &target, &["--count", "3"])?;
    for a in &answers {
        println!("  {a}");
    }
    ensure!(
        answers.iter().all(|a| a["backend"] == "httpbin"),
        "not every request reached httpbin: {answers:?}"
    );
    check()?;

    section("step 3.1: the route in the pod: everything goes to the gateway");
    show(
        &format!("ip route get {}        # in curl", server.ip),
        &mut in_ns(
            &client.netns,
            "ip",
            &["route", "get", &server.ip.to_string()],
        ),
    )?;

    section("step 3.2-3.4: who answers for the gateway: the lxc (ARP responder)");
    let neigh = show(
        "ip neigh        # in curl",
        &mut in_ns(&client.netns, "ip", &["neigh", "show", "dev", "eth0"]),
    )?;
    let own = show(
        "ip link show eth0        # in curl: the pod's own MAC",
        &mut in_ns(&client.netns, "ip", &["link", "show", "eth0"]),
    )?;
    let lxc = show(
        &format!("ip link show {}        # on node-1", client.lxc),
        &mut in_ns(
            &cluster.node(0).sb.node_ns,
            "ip",
            &["link", "show", &client.lxc],
        ),
    )?;
    let lxc_mac = link_mac(&lxc).context("the lxc's MAC")?;
    println!(
        "-> the gateway's MAC in the pod is the lxc's ({lxc_mac}): {}; not the pod's own ({})",
        if neigh.to_lowercase().contains(&lxc_mac) {
            "yes"
        } else {
            "NO"
        },
        link_mac(&own).unwrap_or_default()
    );
    ensure!(
        neigh.to_lowercase().contains(&lxc_mac),
        "the pod's neighbour entry is not the lxc's MAC"
    );
    check()?;

    section("step 3.5-3.7: the program on the lxc (the pod's egress is the lxc's ingress)");
    agent(&cluster, 0, &["endpoint", "list"])?;
    let eps: serde_json::Value = serde_json::from_str(
        &cluster
            .node(0)
            .sb
            .agent_cli(&["endpoint", "list", "-o", "json"])?,
    )?;
    let programs = eps
        .as_array()
        .and_then(|a| a.iter().find(|e| e["host_ifname"] == client.lxc.as_str()))
        .map(|e| e["programs"].clone())
        .unwrap_or_default();
    println!(
        "-> the tcx programs the kernel has on {} (agent endpoint list -o json): {programs}",
        client.lxc
    );
    ensure!(
        programs.to_string().contains("ingress:from_container"),
        "from_container is not on the lxc's ingress"
    );
    check()?;

    section("step 3.8: where the tunnel goes: the ipcache entry and the tunnel map");
    let get = agent(
        &cluster,
        0,
        &["bpf", "ipcache", "get", &server.ip.to_string()],
    )?;
    let node2 = cluster.node(1).addr.to_string();
    ensure!(
        get.contains(&format!("tunnelendpoint={node2}")),
        "ipcache get does not name node-2 ({node2}) as tunnel endpoint"
    );
    agent(&cluster, 0, &["bpf", "tunnel", "list"])?;
    show(
        "ip route show proto 199        # on node-1: the node's own traffic into the tunnel",
        &mut in_ns(
            &cluster.node(0).sb.node_ns,
            "ip",
            &["route", "show", "proto", "199"],
        ),
    )?;
    check()?;

    section("the packets on the underlay, while curl asks httpbin");
    let (r, frames) = cluster.capture("udp port 8472", || {
        cluster.probe(&client, "tcp", &target, &["--count", "1"])
    })?;
    r?;
    let identity = cluster.identity(&client)?;
    let mut vxlan = 0;
    for f in frames.iter().take(6) {
        if let Some(v) = &f.vxlan {
            vxlan += 1;
            let inner = v
                .inner
                .as_ref()
                .map(|p| format!("{} > {} proto {}", p.src, p.dst, p.proto))
                .unwrap_or_default();
            println!(
                "  {} > {} UDP {:?}  VXLAN vni {}  [ {inner} ]",
                f.ip.src, f.ip.dst, f.ip.ports, v.vni
            );
        }
    }
    println!(
        "-> {} frames, all VXLAN on 8472 between node addresses; VNI {identity} is curl's identity (agent endpoint list); pod addresses only inside",
        frames.len()
    );
    ensure!(vxlan > 0, "no VXLAN frame seen on the underlay");
    check()?;

    section("step 4: on node-2: the endpoint the packet is delivered to");
    let eps = agent(&cluster, 1, &["bpf", "endpoint", "list"])?;
    ensure!(
        eps.contains(&server.ip.to_string()),
        "node-2's lxc map has no entry for httpbin"
    );
    show(
        &format!(
            "ip link show {}        # on node-2: nodemac is this lxc's",
            server.lxc
        ),
        &mut in_ns(
            &cluster.node(1).sb.node_ns,
            "ip",
            &["link", "show", &server.lxc],
        ),
    )?;
    let nodes2 = agent(&cluster, 1, &["node", "list"])?;
    ensure!(
        nodes2.contains("ingress:from_overlay"),
        "from_overlay is not on node-2's lash_vxlan"
    );
    println!("-> lash_vxlan's ingress program (from_overlay) delivers into the pod with bpf_redirect_peer");
    agent(&cluster, 1, &["bpf", "metrics", "list"])?;
    check()?;

    section("a Service with a backend on every node, from curl on node-1");
    let mut backends: Vec<ClusterPod> = Vec::new();
    for i in 0..nodes {
        let p = cluster.add_pod(i, &format!("web-{}", i + 1))?;
        cluster.serve(&p)?;
        backends.push(p);
    }
    let vip = Ipv4Addr::new(10, 96, 0, 20);
    let ips: Vec<(Ipv4Addr, Cond)> = backends.iter().map(|p| (p.ip, Cond::Ready)).collect();
    cluster.write_manifest_everywhere("web.yaml", &service("web", vip))?;
    cluster.write_manifest_everywhere("web-slice.yaml", &endpoint_slice("web", &ips))?;
    let frontend = format!("{vip}:80/TCP");
    let programmed = lash_tests::sandbox::wait_for(std::time::Duration::from_secs(10), || {
        (0..nodes)
            .all(|i| {
                cluster
                    .node(i)
                    .sb
                    .programmed_backends(&frontend)
                    .map(|b| b.len())
                    == Some(nodes)
            })
            .then_some(())
    });
    ensure!(
        programmed.is_some(),
        "the Service was not programmed on every node"
    );
    agent(&cluster, 0, &["service", "list"])?;
    let answers = cluster.probe(&client, "tcp", &format!("{vip}:80"), &["--count", "30"])?;
    let mut counts = std::collections::BTreeMap::new();
    for a in &answers {
        *counts
            .entry(a["backend"].as_str().unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    println!("30 requests from curl (per-packet translation on node-1's lxc): {counts:?}");
    ensure!(
        counts.len() == nodes,
        "not every node's backend answered: {counts:?}"
    );

    if hold {
        section("holding");
        println!("the cluster stays up until Ctrl-C; node namespaces:");
        for i in 0..nodes {
            println!("  {}  {}", cluster.node(i).name, cluster.node(i).sb.node_ns);
        }
        // Ctrl-C is how a user ends the hold: not an error.
        while check().is_ok() {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    section("done: removing the cluster");
    drop(cluster);
    println!("removed: pods (CNI DEL), agents, namespaces, cgroups, pinned maps, the underlay");
    Ok(())
}
