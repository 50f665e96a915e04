//! Issue 9's cluster tests: three nodes on this machine (lash_tests::cluster),
//! each its own namespace, agent, bpffs directory, cgroup and pod range,
//! joined by a bridge in an underlay namespace; pods made by lash-cni.
//!
//! - pods reach pods on other nodes (ping, HTTP, UDP) in both routing modes;
//!   the underlay carries VXLAN on 8472 with the source pod's identity as
//!   VNI and no pod address in the clear (tunnel), or the pod addresses
//!   themselves (native);
//! - a ClusterIP Service with a backend on each node is reached from a pod on
//!   every node (the per-packet path) and from every node's own namespace
//!   (socket LB), and every backend is used, in both modes; a pod that is
//!   the backend it reaches (hairpin) gets its answers from the VIP;
//! - a node removed (and brought back), a node moving to another address, a
//!   node's agent restarted: the others keep working and converge, with
//!   nothing stale in node list, tunnel map, ipcache or routes;
//! - the tunnel carries full-size pod packets (1400 bytes and the pod MTU's
//!   worth) without fragments or drops; pods get the underlay MTU minus 50.
//!
//! Needs root; `cargo xtask test` runs it (`--test-threads=1`).

use std::{collections::BTreeSet, net::Ipv4Addr, time::Duration};

use lash_tests::{
    capture::{Frame, VXLAN_PORT},
    cluster::{Cluster, ClusterPod, RoutingMode, TUNNEL_DEVICE, UNDERLAY_MTU},
    manifests::{self, Cond},
    sandbox::{ip_json, POD_TCP_PORT, POD_UDP_PORT},
};
use serde_json::Value;

/// How long a change may take to reach every node's maps and routes.
const CONVERGE: Duration = Duration::from_secs(10);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 50);

/// Three nodes with a pod each (p1 on node-1, ...), each pod serving HTTP
/// and UDP under its name; returns once every node sees the other two.
fn three_nodes(tag: &str, mode: RoutingMode) -> (Cluster, Vec<ClusterPod>) {
    let mut c = Cluster::new(tag, 3, mode).unwrap_or_else(|e| panic!("cluster: {e:#}"));
    let mut pods = Vec::new();
    for i in 0..3 {
        let p = c
            .add_pod(i, &format!("p{}", i + 1))
            .unwrap_or_else(|e| panic!("pod on node {i}: {e:#}"));
        c.serve(&p).expect("pod server");
        pods.push(p);
    }
    converge(&c);
    (c, pods)
}

fn converge(c: &Cluster) {
    if let Err(e) = c.wait_converged(CONVERGE) {
        panic!("{e:#}");
    }
}

fn in_pod_space(a: Ipv4Addr) -> bool {
    a.octets()[..2] == [10, 244]
}

fn assert_ping(c: &Cluster, from: &ClusterPod, to: Ipv4Addr) {
    let p = c.ping(from, to, 3, &[]).expect("ping");
    assert!(
        p.all_answered(),
        "{} ({}) -> {to}: {}\n{}",
        from.name,
        from.ip,
        p.output,
        c.agent_logs()
    );
}

/// One HTTP request and one UDP datagram from `from` to `to`'s server,
/// answered by `to` (by name; UDP's reply from `to`'s own address).
fn assert_http_udp(c: &Cluster, from: &ClusterPod, to: &ClusterPod) {
    let tcp = c
        .probe(from, "tcp", &format!("{}:{POD_TCP_PORT}", to.ip), &[])
        .expect("probe");
    assert!(
        tcp.len() == 1 && tcp[0]["ok"] == true && tcp[0]["backend"] == to.name.as_str(),
        "HTTP {} -> {}: {tcp:?}\n{}",
        from.name,
        to.name,
        c.agent_logs()
    );
    let udp = c
        .probe(from, "udp", &format!("{}:{POD_UDP_PORT}", to.ip), &[])
        .expect("probe");
    assert!(
        udp.len() == 1
            && udp[0]["ok"] == true
            && udp[0]["backend"] == to.name.as_str()
            && udp[0]["from"] == format!("{}:{POD_UDP_PORT}", to.ip).as_str(),
        "UDP {} -> {}: {udp:?}\n{}",
        from.name,
        to.name,
        c.agent_logs()
    );
}

fn assert_reach(c: &Cluster, from: &ClusterPod, to: &ClusterPod) {
    assert_ping(c, from, to.ip);
    assert_http_udp(c, from, to);
}

/// Every pod reaches every pod on another node.
fn assert_all_pairs(c: &Cluster, pods: &[&ClusterPod]) {
    for a in pods {
        for b in pods {
            if a.node != b.node {
                assert_reach(c, a, b);
            }
        }
    }
}

/// What `agent bpf ipcache get IP` on node `i` answers: the prefix and
/// tunnel endpoint of the entry it picks.
fn ipcache_get(c: &Cluster, i: usize, ip: Ipv4Addr) -> (String, String) {
    let v = c
        .agent_json(i, &["bpf", "ipcache", "get", &ip.to_string()])
        .expect("ipcache get");
    (
        v["entry"]["prefix"].as_str().unwrap_or("").to_string(),
        v["entry"]["tunnel_endpoint"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

/// The frames between `a` and `b` whose packet (inner, for VXLAN) went
/// from `a` to `b`.
fn inner_from_to(frames: &[Frame], a: Ipv4Addr, b: Ipv4Addr) -> Vec<&Frame> {
    frames
        .iter()
        .filter(|f| {
            f.vxlan
                .as_ref()
                .and_then(|v| v.inner.as_ref())
                .is_some_and(|i| i.src == a && i.dst == b)
        })
        .collect()
}

fn pod_to_pod(tag: &str, mode: RoutingMode) {
    let (c, pods) = three_nodes(tag, mode);
    let all: Vec<&ClusterPod> = pods.iter().collect();
    assert_all_pairs(&c, &all);

    // `ipcache get` answers for a remote pod with its node as the tunnel
    // endpoint (the entry of the node's pod range).
    for (i, j) in [(0, 1), (1, 2), (2, 0)] {
        assert_eq!(
            ipcache_get(&c, i, pods[j].ip),
            (c.node(j).pod_cidr.clone(), c.node(j).addr.to_string()),
            "ipcache get {} on {}",
            pods[j].ip,
            c.node(i).name
        );
    }

    // What the underlay carries for p1 <-> p2: ICMP, TCP and UDP both ways.
    let (p1, p2) = (&pods[0], &pods[1]);
    let ((), frames) = c.capture("", || assert_reach(&c, p1, p2)).expect("capture");
    let protos = |fs: &[&Frame], inner: bool| -> BTreeSet<u8> {
        fs.iter()
            .map(|f| match (inner, &f.vxlan) {
                (true, Some(v)) => v.inner.as_ref().map_or(0, |i| i.proto),
                _ => f.ip.proto,
            })
            .collect()
    };
    let want_protos: BTreeSet<u8> = [1, 6, 17].into();
    match mode {
        RoutingMode::Tunnel => {
            let in_clear: Vec<&Frame> = frames
                .iter()
                .filter(|f| in_pod_space(f.ip.src) || in_pod_space(f.ip.dst))
                .collect();
            assert!(
                in_clear.is_empty(),
                "pod addresses in the clear on the underlay: {in_clear:#?}"
            );
            for (src, dst, a, b) in [(p1, p2, 0, 1), (p2, p1, 1, 0)] {
                let vni = c.identity(src).expect("identity");
                let fs = inner_from_to(&frames, src.ip, dst.ip);
                assert_eq!(
                    protos(&fs, true),
                    want_protos,
                    "{} -> {} inside VXLAN; all frames: {frames:#?}",
                    src.name,
                    dst.name
                );
                for f in &fs {
                    assert_eq!(
                        (
                            f.ip.src,
                            f.ip.dst,
                            f.udp_dport(),
                            f.vxlan.as_ref().map(|v| v.vni)
                        ),
                        (c.node(a).addr, c.node(b).addr, Some(VXLAN_PORT), Some(vni)),
                        "{} -> {}: outer addresses, port and VNI (the source's identity {vni})",
                        src.name,
                        dst.name
                    );
                }
            }
            for p in &pods {
                assert_eq!(
                    c.pod_mtu(p).expect("mtu"),
                    u64::from(UNDERLAY_MTU - 50),
                    "{}'s eth0",
                    p.name
                );
            }
        }
        RoutingMode::Native => {
            let tunnelled: Vec<&Frame> = frames
                .iter()
                .filter(|f| f.udp_dport() == Some(VXLAN_PORT))
                .collect();
            assert!(tunnelled.is_empty(), "VXLAN in native mode: {tunnelled:#?}");
            for (src, dst) in [(p1, p2), (p2, p1)] {
                let fs: Vec<&Frame> = frames
                    .iter()
                    .filter(|f| f.ip.src == src.ip && f.ip.dst == dst.ip)
                    .collect();
                assert_eq!(
                    protos(&fs, false),
                    want_protos,
                    "{} -> {} on the underlay with pod addresses; all frames: {frames:#?}",
                    src.name,
                    dst.name
                );
            }
            for p in &pods {
                assert_eq!(
                    c.pod_mtu(p).expect("mtu"),
                    u64::from(UNDERLAY_MTU),
                    "{}'s eth0",
                    p.name
                );
            }
        }
    }
}

#[test]
fn tunnel_pod_to_pod_across_nodes() {
    pod_to_pod("mn-tun-p2p", RoutingMode::Tunnel);
}

#[test]
fn native_pod_to_pod_across_nodes() {
    pod_to_pod("mn-nat-p2p", RoutingMode::Native);
}

/// The backends (by name) that answered `lines`, all of which must be ok.
fn answered(lines: &[Value], what: &str) -> BTreeSet<String> {
    for l in lines {
        assert!(l["ok"] == true, "{what}: {l}");
    }
    lines
        .iter()
        .filter_map(|l| l["backend"].as_str().map(str::to_string))
        .collect()
}

fn service_across_nodes(tag: &str, mode: RoutingMode) {
    let (c, pods) = three_nodes(tag, mode);
    let ready: Vec<(Ipv4Addr, Cond)> = pods.iter().map(|p| (p.ip, Cond::Ready)).collect();
    c.write_manifest_everywhere("svc.yaml", &manifests::service("spread", VIP))
        .expect("service");
    c.write_manifest_everywhere("slice.yaml", &manifests::endpoint_slice("spread", &ready))
        .expect("slice");
    let want_ips: BTreeSet<String> = pods.iter().map(|p| p.ip.to_string()).collect();
    for i in 0..3 {
        let sb = &c.node(i).sb;
        let got = lash_tests::sandbox::wait_for(CONVERGE, || {
            sb.programmed_backends(&format!("{VIP}:80/TCP"))
                .filter(|b| *b == want_ips)
        });
        assert!(
            got.is_some(),
            "{}: backends not programmed\n{}",
            c.node(i).name,
            c.agent_logs()
        );
    }
    let names: BTreeSet<String> = pods.iter().map(|p| p.name.clone()).collect();
    let (http, dns) = (format!("{VIP}:80"), format!("{VIP}:53"));
    // From a pod on every node: the per-packet path (pods are outside the
    // cgroup socket LB is attached to). Each UDP datagram from a fresh
    // socket, so the flows spread too; a connected socket takes a reply
    // only from the VIP, so an answer shows the reverse translation.
    for p in &pods {
        for (mode, addr) in [("tcp", &http), ("udp-connected", &dns)] {
            let lines = c.probe(p, mode, addr, &["--count", "30"]).expect("probe");
            assert_eq!(
                answered(&lines, &format!("{mode} from {}", p.name)),
                names,
                "{mode} from {} to {addr}: not every backend answered\n{}",
                p.name,
                c.agent_logs()
            );
        }
    }
    // From every node's own namespace, in the cgroup socket LB serves.
    for i in 0..3 {
        for (mode, addr) in [("tcp", &http), ("udp-connected", &dns)] {
            let lines = c.node(i).sb.probe(mode, addr, 30).expect("probe");
            assert_eq!(
                answered(&lines, &format!("{mode} from {}", c.node(i).name)),
                names,
                "{mode} from {}'s namespace to {addr}: not every backend answered\n{}",
                c.node(i).name,
                c.agent_logs()
            );
            for l in &lines {
                assert_eq!(l["peer"], addr.as_str(), "the peer socket LB shows");
            }
        }
    }
}

#[test]
fn tunnel_service_backends_on_every_node() {
    service_across_nodes("mn-tun-svc", RoutingMode::Tunnel);
}

#[test]
fn native_service_backends_on_every_node() {
    service_across_nodes("mn-nat-svc", RoutingMode::Native);
}

/// A pod that is the only backend of the Service it reaches (the
/// per-packet path, "hairpin"): every answer is its own and comes back from
/// the VIP; conntrack shows the flow from 169.254.42.1, flagged LBLoopback;
/// and a packet to 169.254.42.1 that belongs to no such flow is dropped as
/// unroutable rather than sent anywhere.
#[test]
fn hairpin_through_a_service() {
    let mut c = Cluster::new("mn-hairpin", 1, RoutingMode::Tunnel)
        .unwrap_or_else(|e| panic!("cluster: {e:#}"));
    let p1 = c.add_pod(0, "p1").expect("pod");
    c.serve(&p1).expect("pod server");
    c.write_manifest_everywhere("svc.yaml", &manifests::service("self", VIP))
        .expect("service");
    c.write_manifest_everywhere(
        "slice.yaml",
        &manifests::endpoint_slice("self", &[(p1.ip, Cond::Ready)]),
    )
    .expect("slice");
    let want: BTreeSet<String> = [p1.ip.to_string()].into();
    let sb = &c.node(0).sb;
    assert!(
        lash_tests::sandbox::wait_for(CONVERGE, || {
            sb.programmed_backends(&format!("{VIP}:80/TCP"))
                .filter(|b| *b == want)
        })
        .is_some(),
        "backend not programmed\n{}",
        c.agent_logs()
    );
    for (mode, addr) in [
        ("tcp", format!("{VIP}:80")),
        ("udp-connected", format!("{VIP}:53")),
    ] {
        let lines = c.probe(&p1, mode, &addr, &["--count", "5"]).expect("probe");
        assert_eq!(
            answered(&lines, &format!("{mode} from p1 to itself")),
            ["p1".to_string()].into(),
            "{mode}: {lines:?}\n{}",
            c.agent_logs()
        );
        for l in &lines {
            assert_eq!(
                l["peer"],
                addr.as_str(),
                "{mode}: the reply not from the VIP"
            );
        }
    }
    let ct = c
        .agent_json(0, &["bpf", "ct", "list", "global"])
        .expect("ct list");
    let hairpin: Vec<&Value> = ct
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["dir"] == "OUT")
        .filter(|r| {
            r["src"]
                .as_str()
                .is_some_and(|s| s.starts_with("169.254.42.1:"))
        })
        .collect();
    assert!(
        hairpin.iter().any(|r| r["proto"] == "TCP")
            && hairpin.iter().any(|r| r["proto"] == "UDP")
            && hairpin.iter().all(|r| r["dst"]
                .as_str()
                .is_some_and(|d| d.starts_with(&format!("{}:", p1.ip)))
                && r["flag_names"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|n| n == "LBLoopback"))),
        "hairpin flows in conntrack: {hairpin:#?}\nall: {ct:#}"
    );
    // The loopback address outside a hairpin flow: dropped, counted.
    let before = c.drops(0).expect("drops");
    let ping = c
        .ping(&p1, Ipv4Addr::new(169, 254, 42, 1), 2, &[])
        .expect("ping");
    assert_eq!(ping.received, 0, "{}", ping.output);
    let after = c.drops(0).expect("drops");
    let unroutable = |d: &std::collections::BTreeMap<(u64, String), u64>| {
        d.get(&(151, "EGRESS".to_string())).copied().unwrap_or(0)
    };
    assert!(
        unroutable(&after) >= unroutable(&before) + 2,
        "pings to 169.254.42.1 not dropped as unroutable: {before:?} -> {after:?}"
    );
}

fn node_removed_and_back(tag: &str, mode: RoutingMode) {
    let (mut c, pods) = three_nodes(tag, mode);
    let (p1, p2, p3) = (&pods[0], &pods[1], &pods[2]);
    c.remove_node(2).expect("remove node-3");
    // Node-1 and node-2 forget node-3 entirely (converge checks the exact
    // node list, tunnel map, ipcache and routes) and still talk.
    converge(&c);
    assert_all_pairs(&c, &[p1, p2]);
    // Nothing carries node-1's traffic to node-3's pods any more.
    let gone = c.ping(p1, p3.ip, 2, &[]).expect("ping");
    assert_eq!(gone.received, 0, "p1 still reaches p3: {}", gone.output);
    // Brought back, it is everywhere again.
    c.rejoin_node(2).expect("rejoin");
    converge(&c);
    assert_all_pairs(&c, &[p1, p2, p3]);
}

#[test]
fn tunnel_node_removed_and_back() {
    node_removed_and_back("mn-tun-rm", RoutingMode::Tunnel);
}

#[test]
fn native_node_removed_and_back() {
    node_removed_and_back("mn-nat-rm", RoutingMode::Native);
}

fn node_address_changes(tag: &str, mode: RoutingMode) {
    let (mut c, pods) = three_nodes(tag, mode);
    let old = c.node(1).addr;
    let new = Ipv4Addr::new(192, 168, 50, 22);
    c.set_node_address(1, new).expect("new address");
    // Converged: node-2 at its new address everywhere, the old one nowhere.
    converge(&c);
    let all: Vec<&ClusterPod> = pods.iter().collect();
    let ((), frames) = c
        .capture("", || assert_all_pairs(&c, &all))
        .expect("capture");
    let stale: Vec<&Frame> = frames
        .iter()
        .filter(|f| f.ip.src == old || f.ip.dst == old)
        .collect();
    assert!(stale.is_empty(), "the old address still in use: {stale:#?}");
    if mode == RoutingMode::Tunnel {
        for (a, b) in [(0, 1), (1, 2)] {
            let fs = inner_from_to(&frames, pods[a].ip, pods[b].ip);
            assert!(
                !fs.is_empty(),
                "p{} -> p{}: no VXLAN: {frames:#?}",
                a + 1,
                b + 1
            );
            for f in fs {
                assert_eq!((f.ip.src, f.ip.dst), (c.node(a).addr, c.node(b).addr));
            }
        }
    }
}

#[test]
fn tunnel_node_address_changes() {
    node_address_changes("mn-tun-addr", RoutingMode::Tunnel);
}

#[test]
fn native_node_address_changes() {
    node_address_changes("mn-nat-addr", RoutingMode::Native);
}

/// Each node's tunnel map, ipcache and agent routes, for comparing before
/// and after a restart.
fn node_state(c: &Cluster) -> Vec<(Value, Value, Vec<Value>)> {
    (0..c.nodes.len())
        .map(|i| {
            (
                c.agent_json(i, &["bpf", "tunnel", "list"])
                    .expect("tunnel list"),
                c.agent_json(i, &["bpf", "ipcache", "list"])
                    .expect("ipcache list"),
                c.agent_routes(i),
            )
        })
        .collect()
}

fn agent_restarts(tag: &str, mode: RoutingMode) {
    let (mut c, pods) = three_nodes(tag, mode);
    let all: Vec<&ClusterPod> = pods.iter().collect();
    let before = node_state(&c);
    for kill in [false, true] {
        c.stop_agent(1, kill).expect("stop node-2's agent");
        // With node-2's agent down, node-1 and node-3 still talk, and the
        // datapath node-2's agent left behind still serves its pod.
        assert_all_pairs(&c, &all);
        c.start_agent(1).expect("start node-2's agent");
        converge(&c);
        assert_eq!(
            node_state(&c),
            before,
            "tunnel map, ipcache and routes after node-2's agent {} and came back",
            if kill { "was killed" } else { "stopped" }
        );
        assert_all_pairs(&c, &all);
    }
}

#[test]
fn tunnel_agent_restarts() {
    agent_restarts("mn-tun-rst", RoutingMode::Tunnel);
}

#[test]
fn native_agent_restarts() {
    agent_restarts("mn-nat-rst", RoutingMode::Native);
}

#[test]
fn tunnel_carries_full_size_packets() {
    let mut c = Cluster::new("mn-tun-mtu", 2, RoutingMode::Tunnel)
        .unwrap_or_else(|e| panic!("cluster: {e:#}"));
    let p1 = c.add_pod(0, "p1").expect("pod");
    let p2 = c.add_pod(1, "p2").expect("pod");
    c.serve(&p2).expect("server");
    converge(&c);
    let pod_mtu = UNDERLAY_MTU - 50;
    for (p, i) in [(&p1, 0), (&p2, 1)] {
        assert_eq!(
            c.pod_mtu(p).expect("mtu"),
            u64::from(pod_mtu),
            "{}'s eth0",
            p.name
        );
        let dev = ip_json(&c.node(i).sb.node_ns, &["link", "show", TUNNEL_DEVICE]);
        assert_eq!(
            dev[0]["mtu"],
            pod_mtu,
            "{TUNNEL_DEVICE} on {}",
            c.node(i).name
        );
    }
    let drops_before: Vec<_> = (0..2).map(|i| c.drops(i).expect("metrics")).collect();
    // 1400 bytes of ICMP payload and of UDP, and the most the pod's MTU
    // allows (28 bytes of headers), all with don't-fragment.
    let largest = (pod_mtu - 28).to_string();
    let ((), frames) = c
        .capture("", || {
            for size in ["1400", largest.as_str()] {
                let p = c
                    .ping(&p1, p2.ip, 3, &["-M", "do", "-s", size])
                    .expect("ping");
                assert!(
                    p.all_answered(),
                    "ping -s {size}: {}\n{}",
                    p.output,
                    c.agent_logs()
                );
            }
            let udp = c
                .probe(
                    &p1,
                    "udp",
                    &format!("{}:{POD_UDP_PORT}", p2.ip),
                    &["--size", "1400"],
                )
                .expect("probe");
            assert!(udp[0]["ok"] == true, "1400-byte datagram: {udp:?}");
        })
        .expect("capture");
    let fragments: Vec<&Frame> = frames.iter().filter(|f| f.ip.fragment).collect();
    assert!(
        fragments.is_empty(),
        "fragments on the underlay: {fragments:#?}"
    );
    // The full-size inner packets crossed whole: outer packets of exactly
    // the underlay's MTU, and the 1400-byte ones.
    let inner: BTreeSet<(u8, u16)> = inner_from_to(&frames, p1.ip, p2.ip)
        .iter()
        .filter_map(|f| f.vxlan.as_ref()?.inner.as_ref().map(|i| (i.proto, i.len)))
        .collect();
    for want in [(1, 1428), (1, pod_mtu as u16), (17, 1428)] {
        assert!(
            inner.contains(&want),
            "no inner (protocol, length) {want:?}: {inner:?}"
        );
    }
    let outer_max = frames.iter().map(|f| f.ip.len).max().unwrap_or(0);
    assert_eq!(
        u32::from(outer_max),
        UNDERLAY_MTU,
        "largest packet on the underlay"
    );
    let drops_after: Vec<_> = (0..2).map(|i| c.drops(i).expect("metrics")).collect();
    assert_eq!(
        drops_after, drops_before,
        "drops during the full-size traffic"
    );
}
