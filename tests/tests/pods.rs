//! Pods made by a real CNI client: podman, inside the sandbox's node
//! namespace, on a network whose only plugin is lash-cni. The node forwards
//! nothing itself (ip_forward 0, no proxy ARP, no bridge), so whatever pods
//! reach, our programs carried: the ARP responder, local delivery into the
//! peer's namespace, per-packet service translation for a pod outside the
//! socket-LB cgroup (to a ClusterIP and to a node port on the gateway),
//! reverse translation of the replies; the node's own
//! processes reach pods too. `podman rm` leaves nothing behind. Needs root and podman; `cargo xtask test` runs it.

use std::{net::Ipv4Addr, time::Duration};

use lash_tests::{
    manifests::{endpoint_slice, service, Cond},
    podman::{Container, Podman},
    sandbox::{ip, Sandbox, POD_TCP_PORT, POD_UDP_PORT},
};
use serde_json::Value;

const CIDR: &str = "10.244.8.0/24";
const GATEWAY: &str = "10.244.8.1";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 8, 10);

fn server(name: &str) -> Vec<String> {
    vec![
        "/probe/lash-podserver".into(),
        "--name".into(),
        name.into(),
        "--tcp".into(),
        POD_TCP_PORT.to_string(),
        "--udp".into(),
        POD_UDP_PORT.to_string(),
    ]
}

fn sysctl(sb: &Sandbox, key: &str) -> String {
    ip(&["netns", "exec", &sb.node_ns, "sysctl", "-n", key])
        .unwrap()
        .trim()
        .to_string()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn lxc_links(sb: &Sandbox) -> Vec<String> {
    ip(&["-n", &sb.node_ns, "-o", "link", "show"])
        .unwrap()
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with("lxc"))
        .collect()
}

#[test]
fn pods_reach_each_other_and_services_through_our_programs_only() {
    let mut sb = Sandbox::new("pods", 0).expect("sandbox");
    // Nothing but our programs may carry pod traffic in the node namespace.
    assert_eq!(sysctl(&sb, "net.ipv4.ip_forward"), "0");
    assert_eq!(sysctl(&sb, "net.ipv4.conf.all.proxy_arp"), "0");
    sb.start_agent(&["--pod-cidr", CIDR]).expect("agent");
    let network = format!("lash-test-{}", std::process::id());
    let mut pm = Podman::new(&sb, &network).expect("podman");

    // inside: in the socket-LB cgroup; outside and backend: not.
    for (name, in_lb_cgroup) in [("inside", true), ("outside", false), ("backend", false)] {
        let cmd = server(name);
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        pm.run(&Container {
            name,
            in_lb_cgroup,
            cmd: &cmd,
        })
        .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", sb.agent_log()));
    }
    let ips: Vec<Ipv4Addr> = ["inside", "outside", "backend"]
        .iter()
        .map(|c| pm.ip_of(c).unwrap().parse().unwrap())
        .collect();
    for ip in &ips {
        assert_eq!(ip.octets()[..3], [10, 244, 8], "{ip} is not from {CIDR}");
    }
    assert!(
        ips[0] != ips[1] && ips[1] != ips[2] && ips[0] != ips[2],
        "{ips:?}"
    );
    let endpoints: Value =
        serde_json::from_str(&sb.agent_cli(&["endpoint", "list", "-o", "json"]).unwrap()).unwrap();
    let endpoints = endpoints.as_array().unwrap();
    assert_eq!(endpoints.len(), 3, "{endpoints:?}");
    for e in endpoints {
        assert_eq!(e["status"], "ready", "{e}");
        // No proxy ARP on the lxcs either.
        let lxc = e["host_ifname"].as_str().unwrap();
        assert_eq!(sysctl(&sb, &format!("net.ipv4.conf.{lxc}.proxy_arp")), "0");
    }

    // Pod to pod: ping and HTTP, both ways.
    let (inside, outside, backend) = (ips[0].to_string(), ips[1].to_string(), ips[2].to_string());
    pm.exec_ok("inside", &["ping", "-c", "2", "-W", "2", &outside])
        .expect("inside pings outside");
    pm.exec_ok("outside", &["ping", "-c", "2", "-W", "2", &inside])
        .expect("outside pings inside");
    // The node's own processes (probes, kubelet) reach pods too: out
    // through the pod's /32 route and its lxc, back through from_container
    // to the stack.
    ip(&[
        "netns",
        "exec",
        &sb.node_ns,
        "busybox",
        "ping",
        "-c",
        "2",
        "-W",
        "2",
        &backend,
    ])
    .expect("the node pings a pod");
    let body = pm
        .exec_ok(
            "inside",
            &[
                "wget",
                "-q",
                "-O",
                "-",
                &format!("http://{outside}:{POD_TCP_PORT}/"),
            ],
        )
        .expect("HTTP inside -> outside");
    assert_eq!(body.trim(), "outside");
    // The pod's gateway resolves to its own lxc's MAC: the ARP responder
    // answered (nothing else in the node answers for the gateway on an lxc).
    let neigh = pm
        .exec_ok("inside", &["ip", "neigh", "show", GATEWAY])
        .unwrap()
        .to_lowercase();
    let inside_ep = endpoints
        .iter()
        .find(|e| e["address"] == inside.as_str())
        .unwrap();
    let lxc_mac = inside_ep["host_mac"].as_str().unwrap().to_lowercase();
    assert!(
        neigh.contains(&format!("lladdr {lxc_mac}")),
        "gateway neighbour {neigh:?}, lxc MAC {lxc_mac}"
    );

    // A Service backed by the backend pod: its ClusterIP, and its node port
    // on the node's addresses (the pods' gateway among them).
    let syncs = sb.syncs();
    let node_port = service("web", VIP)
        .replace("  type: ClusterIP\n", "  type: NodePort\n")
        .replace(
            "    targetPort: http\n",
            "    targetPort: http\n    nodePort: 30080\n",
        );
    sb.write_manifest("web.yaml", &node_port).unwrap();
    sb.write_manifest(
        "web-slice.yaml",
        &endpoint_slice("web", &[(ips[2], Cond::Ready)]),
    )
    .unwrap();
    assert!(sb.wait_synced_after(syncs, Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(300));
    for client in ["inside", "outside"] {
        // TCP: the backend answers, and the client's peer is the VIP.
        let out = pm
            .exec_ok(
                client,
                &[
                    "/probe/lash-probe",
                    "tcp",
                    &format!("{VIP}:80"),
                    "--count",
                    "3",
                ],
            )
            .unwrap_or_else(|e| panic!("{client}: {e}"));
        for r in json_lines(&out) {
            assert_eq!(r["ok"], true, "{client}: {r}");
            assert_eq!(r["backend"], "backend", "{client}: {r}");
            assert_eq!(r["peer"], format!("{VIP}:80"), "{client}: {r}");
        }
        // UDP: the reply comes from the VIP.
        let out = pm
            .exec_ok(
                client,
                &[
                    "/probe/lash-probe",
                    "udp",
                    &format!("{VIP}:53"),
                    "--count",
                    "2",
                ],
            )
            .unwrap_or_else(|e| panic!("{client}: {e}"));
        for r in json_lines(&out) {
            assert_eq!(r["ok"], true, "{client}: {r}");
            assert_eq!(r["backend"], "backend", "{client}: {r}");
            assert_eq!(r["from"], format!("{VIP}:53"), "{client}: {r}");
        }
    }
    // The node port on the gateway (a node address): socket LB for the pod
    // in the cgroup, the per-packet path for the other, the frontend as the
    // peer either way.
    let gw_port = format!("{GATEWAY}:30080");
    for client in ["inside", "outside"] {
        let out = pm
            .exec_ok(
                client,
                &["/probe/lash-probe", "tcp", &gw_port, "--count", "3"],
            )
            .unwrap_or_else(|e| panic!("{client}: {e}"));
        for r in json_lines(&out) {
            assert_eq!(r["ok"], true, "{client}: {r}");
            assert_eq!(r["backend"], "backend", "{client}: {r}");
            assert_eq!(r["peer"], gw_port, "{client}: {r}");
        }
    }
    // The outside pod's flows went through per-packet translation: its
    // conntrack service entries are there, the inside pod's are not (socket
    // LB translated those at connect()).
    let ct = sb.agent_cli(&["bpf", "ct", "list", "global"]).unwrap();
    assert!(
        ct.lines()
            .any(|l| l.contains("SERVICE") && l.contains(&format!("{outside}:"))),
        "{ct}"
    );
    assert!(
        ct.lines().any(|l| l.contains("SERVICE")
            && l.contains(&format!("{outside}:"))
            && l.contains(&gw_port)),
        "no per-packet node-port entry: {ct}"
    );
    assert!(
        !ct.lines()
            .any(|l| l.contains("SERVICE") && l.contains(&format!("{inside}:"))),
        "{ct}"
    );
    let metrics = sb.agent_cli(&["bpf", "metrics", "list"]).unwrap();
    assert!(metrics.contains("Forwarded"), "{metrics}");

    // podman rm: the runtime's DEL leaves nothing behind.
    for c in ["inside", "outside", "backend"] {
        pm.rm(c).unwrap();
    }
    assert_eq!(lxc_links(&sb), Vec::<String>::new(), "veths left");
    let left = sb.agent_cli(&["endpoint", "list", "-o", "json"]).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&left).unwrap(),
        Value::Array(vec![])
    );
    let lxc = sb
        .agent_cli(&["bpf", "endpoint", "list", "-o", "json"])
        .unwrap();
    let lxc: Value = serde_json::from_str(&lxc).unwrap();
    assert!(
        lxc.as_array().unwrap().iter().all(|e| e["host"] == true),
        "pod entries left in lxc: {lxc}"
    );
    let ipc = sb.agent_cli(&["bpf", "ipcache", "list"]).unwrap();
    assert!(
        !ipc.contains("identity=256"),
        "pod entries left in ipcache: {ipc}"
    );
    let status = sb.status_json();
    assert_eq!(status["ipam"]["used"], 0, "{status}");
    assert_eq!(status["endpoints"]["links_pinned"], 0, "{status}");
    let pins = std::fs::read_dir(sb.bpf_root.join("endpoints"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(pins, 0, "tcx link pins left");
    drop(pm);
    sb.stop_agent(false).unwrap();
}
