//! Socket-level load balancing, end to end: the real agent loads the real
//! programs into a cgroup of the test's own, and a client in a network
//! namespace of the test's own connects to a Service VIP served by real servers
//! in pod namespaces. Needs root; `cargo xtask test` runs it.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader, Write},
    net::Ipv4Addr,
    process::Stdio,
    time::{Duration, Instant},
};

use lash_tests::{
    manifests::{endpoint_slice, service, Cond},
    sandbox::{Sandbox, POD_TCP_PORT},
};
use serde_json::Value;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const HTTP: &str = "10.96.0.10:80";
const DNS: &str = "10.96.0.10:53";
const ECONNREFUSED: i64 = 111;

/// A sandbox with `pods` pods serving, the web Service over all of them, and the
/// agent running.
fn web(tag: &str, pods: usize) -> Sandbox {
    web_with(tag, pods, &[])
}

/// The same, with extra `agent run` flags.
fn web_with(tag: &str, pods: usize, agent_args: &[&str]) -> Sandbox {
    let mut sb = Sandbox::new(tag, pods).expect("sandbox");
    sb.start_pod_servers().expect("pod servers");
    let ips: Vec<(Ipv4Addr, Cond)> = sb.pods.iter().map(|p| (p.ip, Cond::Ready)).collect();
    sb.write_manifest(
        "web.yaml",
        &format!(
            "{}---\n{}",
            service("web", VIP),
            endpoint_slice("web", &ips)
        ),
    )
    .expect("manifest");
    sb.start_agent(agent_args).expect("agent");
    sb
}

fn backends(lines: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        assert_eq!(l["ok"], true, "probe failed: {l}");
        *m.entry(l["backend"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    m
}

/// Rewrites the slice to the given pods and waits for the agent to apply it.
fn set_endpoints(sb: &Sandbox, ips: &[(Ipv4Addr, Cond)]) -> Duration {
    let before = sb.syncs();
    let start = Instant::now();
    sb.write_manifest(
        "web.yaml",
        &format!("{}---\n{}", service("web", VIP), endpoint_slice("web", ips)),
    )
    .unwrap();
    assert!(
        sb.wait_synced_after(before, Duration::from_secs(5)),
        "agent did not reconcile the change; log:\n{}",
        sb.agent_log()
    );
    start.elapsed()
}

#[test]
fn tcp_connects_spread_over_all_six_backends() {
    let sb = web("spread", 6);
    let lines = sb.probe("tcp", HTTP, 60).unwrap();
    let seen = backends(&lines);
    assert_eq!(
        seen.len(),
        6,
        "60 connects should reach all 6 backends, got {seen:?}"
    );
    assert_eq!(
        sb.sink_tx_packets().unwrap(),
        0,
        "a packet left with the VIP as destination"
    );
    // getpeername() shows the VIP the application asked for, not the backend.
    for l in &lines {
        assert_eq!(l["peer"], HTTP, "{l}");
    }
    // An address that is not a service is left alone.
    let direct = format!("{}:{POD_TCP_PORT}", sb.pods[2].ip);
    let lines = sb.probe("tcp", &direct, 3).unwrap();
    assert_eq!(backends(&lines), BTreeMap::from([("pod-3".to_string(), 3)]));
    assert!(lines.iter().all(|l| l["peer"] == direct.as_str()));

    // The CLI shows the frontend and its six slots.
    let list = sb.agent_cli(&["bpf", "lb", "list"]).unwrap();
    assert!(list.starts_with("SERVICE ADDRESS"), "{list}");
    let http_block: Vec<&str> = list
        .lines()
        .skip_while(|l| !l.starts_with("10.96.0.10:80/TCP"))
        .take(7)
        .collect();
    assert!(
        http_block[0].contains("0.0.0.0:0") && http_block[0].contains("(0)"),
        "{list}"
    );
    for pod in &sb.pods {
        let want = format!("{}:{POD_TCP_PORT}/TCP", pod.ip);
        assert!(
            http_block.iter().any(|l| l.contains(&want)),
            "{want} missing in\n{list}"
        );
    }
    let json: Value =
        serde_json::from_str(&sb.agent_cli(&["service", "list", "-o", "json"]).unwrap()).unwrap();
    let http = json
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["frontend"] == "10.96.0.10:80/TCP")
        .expect("http frontend listed");
    assert_eq!(http["backends"].as_array().unwrap().len(), 6);
    assert!(http["backends"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["state"] == "active"));
}

#[test]
fn removed_backend_is_never_chosen_after_reconcile() {
    let sb = web("remove", 6);
    assert_eq!(backends(&sb.probe("tcp", HTTP, 60).unwrap()).len(), 6);

    let five: Vec<(Ipv4Addr, Cond)> = sb.pods[..5].iter().map(|p| (p.ip, Cond::Ready)).collect();
    let took = set_endpoints(&sb, &five);
    eprintln!("endpoint change reconciled {took:?} after the write");
    let seen = backends(&sb.probe("tcp", HTTP, 100).unwrap());
    assert!(
        !seen.contains_key("pod-6"),
        "removed pod-6 still chosen: {seen:?}"
    );
    assert_eq!(seen.len(), 5, "{seen:?}");
    let list = sb.agent_cli(&["bpf", "lb", "list"]).unwrap();
    assert!(!list.contains(&sb.pods[5].ip.to_string()), "{list}");

    // When nothing is ready, serving+terminating endpoints take over.
    set_endpoints(
        &sb,
        &[
            (sb.pods[0].ip, Cond::Terminating),
            (sb.pods[1].ip, Cond::Terminating),
        ],
    );
    let seen = backends(&sb.probe("tcp", HTTP, 30).unwrap());
    assert_eq!(
        seen.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from(["pod-1".into(), "pod-2".into()])
    );
    let svc = sb.agent_cli(&["service", "list"]).unwrap();
    assert!(svc.contains("(terminating)"), "{svc}");
}

#[test]
fn service_without_backends_refuses_at_once() {
    let sb = web("empty", 2);
    set_endpoints(&sb, &[]);
    for l in sb.probe("tcp", HTTP, 5).unwrap() {
        assert_eq!(l["ok"], false, "{l}");
        assert_eq!(l["errno"], ECONNREFUSED, "{l}");
        // Refused by the program, not after a SYN timeout.
        assert!(l["elapsed_us"].as_u64().unwrap() < 500_000, "{l}");
    }
    // UDP to it fails on send instead of leaving with the VIP as destination.
    for l in sb.probe("udp", DNS, 2).unwrap() {
        assert_eq!(l["ok"], false, "{l}");
    }
    // Nothing left towards the VIP: anything untranslated would have been
    // routed into the sink.
    assert_eq!(sb.sink_tx_packets().unwrap(), 0);
}

#[test]
fn udp_sticks_to_one_backend_and_replies_come_from_the_vip() {
    let sb = web("udp", 6);
    let mut per_socket = BTreeSet::new();
    for _ in 0..8 {
        let lines = sb.probe("udp", DNS, 10).unwrap();
        let seen = backends(&lines);
        assert_eq!(
            seen.len(),
            1,
            "one unconnected socket, one backend: {seen:?}"
        );
        per_socket.extend(seen.into_keys());
        // recvfrom() reports the VIP, not the backend.
        for l in &lines {
            assert_eq!(l["from"], DNS, "{l}");
        }
    }
    assert!(
        per_socket.len() > 1,
        "8 sockets all on one backend: {per_socket:?}"
    );
    // Connected UDP: getpeername() shows the VIP too.
    for l in sb.probe("udp-connected", DNS, 5).unwrap() {
        assert_eq!(l["ok"], true, "{l}");
        assert_eq!(l["peer"], DNS, "{l}");
    }
}

fn map_ids(sb: &Sandbox) -> BTreeMap<String, u64> {
    let mut ids = BTreeMap::new();
    for m in ["lb4_services", "lb4_backends", "lb4_reverse_nat"] {
        let v = sb.map_show(m);
        ids.insert(m.to_string(), v["id"].as_u64().unwrap());
    }
    ids
}

#[test]
fn agent_restart_keeps_maps_and_established_connections() {
    let mut sb = web("restart", 6);
    let ids_before = map_ids(&sb);
    let list_before = sb.agent_cli(&["bpf", "lb", "list"]).unwrap();

    let mut hold = sb
        .probe_cmd("hold", HTTP)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = hold.stdin.take().unwrap();
    let mut out = BufReader::new(hold.stdout.take().unwrap());
    let mut next = || -> Value {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    };
    let first = next();
    assert_eq!(first["ok"], true, "{first}");

    sb.stop_agent(true).unwrap(); // as hard as it gets: SIGKILL
                                  // The CLI reads the maps, not the agent.
    assert_eq!(sb.agent_cli(&["bpf", "lb", "list"]).unwrap(), list_before);
    assert!(sb.agent_cli(&["status"]).unwrap().contains("not running"));
    // With the agent gone, the pinned links and maps keep serving.
    let seen = backends(&sb.probe("tcp", HTTP, 30).unwrap());
    assert!(seen.len() >= 3, "{seen:?}");
    writeln!(stdin).unwrap();
    let during = next();
    assert_eq!(during["ok"], true, "{during}");
    assert_eq!(during["backend"], first["backend"]);

    sb.start_agent(&[]).unwrap();
    assert_eq!(
        map_ids(&sb),
        ids_before,
        "restart must reuse the pinned maps"
    );
    assert_eq!(
        sb.agent_cli(&["bpf", "lb", "list"]).unwrap(),
        list_before,
        "same ids, slots and rev-NAT"
    );
    writeln!(stdin).unwrap();
    let after = next();
    assert_eq!(after["ok"], true, "{after}");
    assert_eq!(
        after["backend"], first["backend"],
        "the established connection kept its backend"
    );
    // Only one program per hook after the hand-over.
    let status: Value = sb.status_json();
    assert_eq!(status["agent_running"], true);
    // connect, sendmsg, recvmsg and getpeername, each for AF_INET and for
    // AF_INET6 sockets (v4-mapped addresses).
    let hooks = status["attached_hooks"].as_array().unwrap().len();
    assert_eq!(hooks, 8, "{status}");
    assert_eq!(sb.attached_programs(), hooks, "old links retired");

    drop(stdin);
    let _ = hold.wait();
}

#[test]
fn malformed_manifest_is_reported_and_loses_nothing() {
    let sb = web("badyaml", 3);
    let before = sb.agent_cli(&["bpf", "lb", "list"]).unwrap();
    let syncs = sb.syncs();
    std::fs::write(
        sb.manifests().join("web.yaml"),
        "apiVersion: v1\nkind: Service\nspec: [unclosed\n",
    )
    .unwrap();
    assert!(sb.wait_synced_after(syncs, Duration::from_secs(5)));
    let status: Value = sb.status_json();
    let errors = status["errors"].to_string();
    assert!(
        errors.contains("web.yaml") && errors.contains("document 1"),
        "{errors}"
    );
    assert_eq!(sb.agent_cli(&["bpf", "lb", "list"]).unwrap(), before);
    assert_eq!(
        backends(&sb.probe("tcp", HTTP, 5).unwrap())
            .values()
            .sum::<usize>(),
        5
    );

    // A Service with an invalid field keeps its earlier programming too.
    let syncs = sb.syncs();
    let bad = service("web", VIP).replace("port: 80", "port: 70000");
    let ips: Vec<(Ipv4Addr, Cond)> = sb.pods.iter().map(|p| (p.ip, Cond::Ready)).collect();
    sb.write_manifest(
        "web.yaml",
        &format!("{bad}---\n{}", endpoint_slice("web", &ips)),
    )
    .unwrap();
    assert!(sb.wait_synced_after(syncs, Duration::from_secs(5)));
    let status = sb.agent_cli(&["status"]).unwrap();
    assert!(
        status.contains("Service default/web") && status.contains("spec.ports[0].port"),
        "{status}"
    );
    assert_eq!(sb.agent_cli(&["bpf", "lb", "list"]).unwrap(), before);
}

#[test]
fn full_map_is_reported_and_leaves_no_half_programmed_service() {
    // Room for one frontend with six slots (7 entries), not for two.
    let mut sb = web_with("full", 6, &["--lb-map-max", "10"]);
    let status = sb.agent_cli(&["status"]).unwrap();
    assert!(
        status.contains("maps full") && status.contains("default/web:http"),
        "{status}"
    );
    let list = sb.agent_cli(&["bpf", "lb", "list"]).unwrap();
    assert!(
        list.contains("10.96.0.10:53/UDP") && !list.contains("10.96.0.10:80/TCP"),
        "{list}"
    );
    // The service that fit works; the one that did not is simply not a service.
    assert_eq!(
        backends(&sb.probe("udp", DNS, 3).unwrap())
            .values()
            .sum::<usize>(),
        3
    );
    for l in sb.probe("tcp", HTTP, 2).unwrap() {
        assert_eq!(l["ok"], false);
        assert_ne!(
            l["errno"], ECONNREFUSED,
            "no half-written frontend may answer: {l}"
        );
    }
    // ...so its SYNs went out untranslated, into the sink: the counter works.
    assert!(sb.sink_tx_packets().unwrap() > 0);
    // A restart asking for another size is refused with a clear message, and
    // the datapath stays as it was.
    sb.stop_agent(false).unwrap();
    let out = sb
        .agent_cmd()
        .args(["run", "--lb-map-max", "20", "--manifests"])
        .arg(sb.manifests())
        .arg("--cgroup")
        .arg(&sb.cgroup)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lb4_services holds 10 entries but 20"),
        "{err}"
    );
    assert_eq!(sb.agent_cli(&["bpf", "lb", "list"]).unwrap(), list);
}

#[test]
fn uninstall_detaches_the_programs_and_removes_the_pins() {
    let mut sb = web("uninstall", 2);
    assert_eq!(
        backends(&sb.probe("tcp", HTTP, 4).unwrap())
            .values()
            .sum::<usize>(),
        4
    );
    sb.stop_agent(false).unwrap();
    sb.agent_cli(&["uninstall"]).unwrap();
    assert!(
        !sb.bpf_root.exists(),
        "pins left under {}",
        sb.bpf_root.display()
    );
    assert_eq!(sb.attached_programs(), 0, "still attached");
    // The VIP is an ordinary address again: the connect goes out untranslated
    // (into the sandbox's sink) instead of reaching a pod.
    let sink_before = sb.sink_tx_packets().unwrap();
    for l in sb.probe("tcp", HTTP, 1).unwrap() {
        assert_eq!(l["ok"], false, "{l}");
    }
    assert!(sb.sink_tx_packets().unwrap() > sink_before);
    // And the CLI says what is missing.
    let err = sb.agent_cmd().args(["bpf", "lb", "list"]).output().unwrap();
    assert!(!err.status.success());
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("is not pinned"),
        "{err:?}"
    );
}
