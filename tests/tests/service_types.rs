//! Services as kube-proxy serves them, end to end through socket LB: node
//! ports on 127.0.0.1 and on a node address, `--nodeport-addresses`,
//! ClientIP session affinity, and traffic policies Local (Cilium's two
//! scopes). The real agent and programs run in a sandbox of the test's own
//! (a node namespace, a cgroup, pods in their namespaces); the client runs in
//! the sandbox's cgroup inside its node namespace, so every address here,
//! 127.0.0.1 and the node address included, is the sandbox's. Needs root;
//! `cargo xtask test` runs it.

use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use lash_tests::sandbox::{ip, Sandbox};
use serde_json::Value;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const HTTP: &str = "10.96.0.10:80";
/// An address of the node namespace (on its loopback device), standing for
/// the node's own IP.
const NODE_IP: &str = "192.168.77.1";
const NODE_PORT: u16 = 30080;
const ECONNREFUSED: i64 = 111;

/// Service `web`: ClusterIP VIP, http 80 -> targetPort http (node port
/// 30080), dns 53/UDP -> 5353 (node port 30053), with `extra` spec lines.
fn web(extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  type: NodePort
  clusterIP: {VIP}
{extra}  ports:
  - {{name: http, port: 80, protocol: TCP, targetPort: http, nodePort: {NODE_PORT}}}
  - {{name: dns, port: 53, protocol: UDP, targetPort: 5353, nodePort: 30053}}
"
    )
}

/// The slice of `web` over `pods` (address and node name each), all ready.
fn slice(pods: &[(Ipv4Addr, &str)]) -> String {
    let mut eps = String::new();
    for (ip, node) in pods {
        eps += &format!(
            "- addresses: [\"{ip}\"]\n  nodeName: {node}\n  conditions: {{ready: true, serving: true, terminating: false}}\n"
        );
    }
    format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abcde
  namespace: default
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
ports:
- {{name: http, port: 8080, protocol: TCP}}
- {{name: dns, port: 5353, protocol: UDP}}
endpoints:
{eps}"
    )
}

/// A sandbox with `pods` pods serving, the node address on the node's
/// loopback, and the manifest `web(extra)` over every pod (the first on
/// node-a, the others on node-b). The agent is not started yet.
fn sandbox(tag: &str, pods: usize, extra: &str) -> Sandbox {
    let mut sb = Sandbox::new(tag, pods).expect("sandbox");
    ip(&[
        "-n",
        &sb.node_ns,
        "addr",
        "add",
        &format!("{NODE_IP}/32"),
        "dev",
        "lo",
    ])
    .expect("node address");
    sb.start_pod_servers().expect("pod servers");
    write_web(&sb, extra);
    sb
}

/// (pod address, node name) of every pod: the first on node-a.
fn placement(sb: &Sandbox) -> Vec<(Ipv4Addr, &'static str)> {
    sb.pods
        .iter()
        .enumerate()
        .map(|(i, p)| (p.ip, if i == 0 { "node-a" } else { "node-b" }))
        .collect()
}

fn write_web(sb: &Sandbox, extra: &str) {
    sb.write_manifest(
        "web.yaml",
        &format!("{}---\n{}", web(extra), slice(&placement(sb))),
    )
    .expect("manifest");
}

/// Rewrites the manifest and waits for the agent to apply it.
fn edit(sb: &Sandbox, text: &str) {
    let before = sb.syncs();
    sb.write_manifest("web.yaml", text).unwrap();
    assert!(
        sb.wait_synced_after(before, Duration::from_secs(5)),
        "agent did not reconcile the change; log:\n{}",
        sb.agent_log()
    );
}

/// Backend name -> connections, every probe line a success.
fn backends(lines: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        assert_eq!(l["ok"], true, "probe failed: {l}");
        *m.entry(l["backend"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    m
}

fn tcp(sb: &Sandbox, addr: &str, n: usize) -> Vec<Value> {
    sb.probe("tcp", addr, n).unwrap()
}

/// The `bpf lb list` line of frontend `fe` (its slot 0).
fn lb_line(list: &str, fe: &str) -> Option<String> {
    list.lines()
        .find(|l| l.starts_with(&format!("{fe} ")))
        .map(str::to_string)
}

#[test]
fn node_port_is_reached_on_loopback_and_on_node_addresses() {
    let mut sb = sandbox("nodeport", 3, "");
    sb.start_agent(&[]).expect("agent");
    let lo = format!("127.0.0.1:{NODE_PORT}");
    let node = format!("{NODE_IP}:{NODE_PORT}");

    // 127.0.0.1 and the node address on the node port: balanced over the
    // three pods, and getpeername() shows what the application dialled.
    for addr in [&lo, &node] {
        let lines = tcp(&sb, addr, 30);
        let seen = backends(&lines);
        assert!(seen.len() > 1, "{addr}: 30 connects, one backend: {seen:?}");
        for l in &lines {
            assert_eq!(l["peer"], addr.as_str(), "{l}");
        }
    }
    // The pods' gateway is a node address too.
    assert_eq!(
        backends(&tcp(&sb, &format!("169.254.1.1:{NODE_PORT}"), 3))
            .values()
            .sum::<usize>(),
        3
    );
    // The UDP node port, and the ClusterIP as before.
    for l in sb.probe("udp", "127.0.0.1:30053", 3).unwrap() {
        assert_eq!(l["ok"], true, "{l}");
        assert_eq!(l["from"], "127.0.0.1:30053", "{l}");
    }
    assert_eq!(backends(&tcp(&sb, HTTP, 5)).values().sum::<usize>(), 5);
    assert_eq!(
        sb.sink_tx_packets().unwrap(),
        0,
        "a packet left with the VIP"
    );

    // The listings name the type as Cilium's do.
    let list = sb.agent_cli(&["bpf", "lb", "list"]).unwrap();
    eprintln!("{list}{}", sb.agent_cli(&["service", "list"]).unwrap());
    for fe in [format!("{lo}/TCP"), format!("{node}/TCP")] {
        let l = lb_line(&list, &fe).unwrap_or_else(|| panic!("{fe} missing:\n{list}"));
        assert!(l.ends_with("[NodePort]"), "{l}");
    }
    let l = lb_line(&list, "10.96.0.10:80/TCP").unwrap();
    assert!(l.ends_with("[ClusterIP, non-routable]"), "{l}");
    let json: Value =
        serde_json::from_str(&sb.agent_cli(&["service", "list", "-o", "json"]).unwrap()).unwrap();
    let of = |fe: &str| {
        json.as_array()
            .unwrap()
            .iter()
            .find(|s| s["frontend"] == fe)
            .unwrap_or_else(|| panic!("{fe} not listed: {json}"))
            .clone()
    };
    assert_eq!(of(&format!("{node}/TCP"))["type"], "NodePort");
    assert_eq!(
        of(&format!("{node}/TCP"))["backends"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(of("10.96.0.10:80/TCP")["type"], "ClusterIP");
    let status = sb.status_json();
    assert_eq!(status["warnings"], serde_json::json!([]), "{status}");
    assert_eq!(status["errors"], serde_json::json!([]), "{status}");

    // --nodeport-addresses keeps the node address and drops 127.0.0.1: after
    // a restart the loopback frontend is gone (nothing listens there, so the
    // kernel refuses), the node address still serves.
    sb.stop_agent(false).unwrap();
    sb.start_agent(&["--nodeport-addresses", "192.168.77.0/24"])
        .expect("agent");
    let list = sb.agent_cli(&["bpf", "lb", "list"]).unwrap();
    assert!(lb_line(&list, &format!("{lo}/TCP")).is_none(), "{list}");
    assert!(lb_line(&list, &format!("{node}/TCP")).is_some(), "{list}");
    for l in tcp(&sb, &lo, 2) {
        assert_eq!(l["ok"], false, "{l}");
        assert_eq!(l["errno"], ECONNREFUSED, "{l}");
    }
    assert_eq!(backends(&tcp(&sb, &node, 5)).values().sum::<usize>(), 5);
}

#[test]
fn session_affinity_sticks_each_client_to_one_backend() {
    let sticky =
        "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n";
    let mut sb = sandbox("affinity", 3, sticky);
    sb.start_agent(&[]).expect("agent");
    let lo = format!("127.0.0.1:{NODE_PORT}");

    // Thirty connections of one client (the sandbox's namespace) to the
    // ClusterIP and to the node port: one backend each.
    let mut chosen = BTreeMap::new();
    for addr in [HTTP, lo.as_str()] {
        let seen = backends(&tcp(&sb, addr, 30));
        assert_eq!(seen.len(), 1, "{addr}: one client, one backend: {seen:?}");
        chosen.insert(addr, seen.into_keys().next().unwrap());
    }
    let list = sb.agent_cli(&["bpf", "lb", "list"]).unwrap();
    let l = lb_line(&list, "10.96.0.10:80/TCP").unwrap();
    assert!(l.contains("sessionAffinity"), "{l}");
    // One affinity entry per (client namespace, frontend), naming the backend.
    let aff: Value = serde_json::from_str(
        &sb.agent_cli(&["bpf", "lb", "affinity", "list", "-o", "json"])
            .unwrap(),
    )
    .unwrap();
    let rows = aff.as_array().unwrap();
    eprintln!(
        "{}",
        sb.agent_cli(&["bpf", "lb", "affinity", "list"]).unwrap()
    );
    assert!(rows.len() >= 2, "{aff}");
    assert!(
        rows.iter()
            .all(|r| r["client"].as_str().unwrap().starts_with("netns:")),
        "socket LB keys clients by namespace: {aff}"
    );
    let http_row = rows
        .iter()
        .find(|r| r["service"] == "10.96.0.10:80")
        .unwrap_or_else(|| panic!("no entry for the ClusterIP: {aff}"));
    let pod_of = |name: &str| {
        let i: usize = name.trim_start_matches("pod-").parse().unwrap();
        format!("{}:8080/TCP", sb.pods[i - 1].ip)
    };
    assert_eq!(http_row["backend"], pod_of(&chosen[HTTP]), "{aff}");

    // The chosen backend leaves: the client moves on, and sticks again.
    let stay: Vec<(Ipv4Addr, &str)> = placement(&sb)
        .into_iter()
        .filter(|(ip, _)| pod_of(&chosen[HTTP]) != format!("{ip}:8080/TCP"))
        .collect();
    edit(&sb, &format!("{}---\n{}", web(sticky), slice(&stay)));
    let seen = backends(&tcp(&sb, HTTP, 20));
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(!seen.contains_key(&chosen[HTTP]), "{seen:?}");

    // Affinity off: connections spread again.
    edit(&sb, &format!("{}---\n{}", web(""), slice(&placement(&sb))));
    let seen = backends(&tcp(&sb, HTTP, 30));
    assert!(seen.len() > 1, "{seen:?}");
}

#[test]
fn traffic_policies_local_use_this_nodes_endpoints_from_inside() {
    // pod-1 is on node-a (this node), pod-2 and pod-3 on node-b.
    let mut sb = sandbox("policy", 3, "  internalTrafficPolicy: Local\n");
    sb.start_agent(&["--node-name", "node-a"]).expect("agent");
    let lo = format!("127.0.0.1:{NODE_PORT}");

    // internalTrafficPolicy Local: the ClusterIP and (from inside, which is
    // where every socket here is) the node port reach pod-1 only.
    for addr in [HTTP, lo.as_str()] {
        let seen = backends(&tcp(&sb, addr, 20));
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            ["pod-1"],
            "{addr}: {seen:?}"
        );
    }
    // The node port has two scopes: external all three, internal pod-1.
    let list = sb.agent_cli(&["bpf", "lb", "list"]).unwrap();
    eprintln!("{list}");
    let l = lb_line(&list, &format!("{lo}/TCP")).unwrap();
    assert!(
        l.contains("NodePort") && l.contains("InternalLocal") && l.contains("two-scopes"),
        "{l}"
    );
    assert!(lb_line(&list, &format!("{lo}/TCP/i")).is_some(), "{list}");

    // externalTrafficPolicy Local instead: from inside, the node port uses
    // its internal scope, every node's endpoints.
    edit(
        &sb,
        &format!(
            "{}---\n{}",
            web("  externalTrafficPolicy: Local\n"),
            slice(&placement(&sb))
        ),
    );
    let seen = backends(&tcp(&sb, &lo, 30));
    assert_eq!(seen.len(), 3, "{seen:?}");
    let l = lb_line(
        &sb.agent_cli(&["bpf", "lb", "list"]).unwrap(),
        &format!("{lo}/TCP"),
    )
    .unwrap();
    assert!(l.contains("Local") && l.contains("two-scopes"), "{l}");

    // Local with no endpoint on this node: refused at once, as kube-proxy
    // drops it; nothing leaves towards the VIP.
    let elsewhere: Vec<(Ipv4Addr, &str)> = sb.pods.iter().map(|p| (p.ip, "node-b")).collect();
    edit(
        &sb,
        &format!(
            "{}---\n{}",
            web("  internalTrafficPolicy: Local\n"),
            slice(&elsewhere)
        ),
    );
    for addr in [HTTP, lo.as_str()] {
        for l in tcp(&sb, addr, 3) {
            assert_eq!(l["ok"], false, "{addr}: {l}");
            assert_eq!(l["errno"], ECONNREFUSED, "{addr}: {l}");
        }
    }
    assert_eq!(sb.sink_tx_packets().unwrap(), 0);
}
