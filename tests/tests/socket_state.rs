//! What the socket programs remember per socket, end to end: a UDP socket's
//! backend survives slot moves, its reverse view survives other sockets'
//! churn, and IPv6 sockets reach IPv4 Services through v4-mapped addresses.
//! The real agent and programs on a sandbox of the test's own; needs root,
//! `cargo xtask test` runs it.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsStr,
    io::{BufRead, BufReader, Write},
    net::Ipv4Addr,
    process::{Child, ChildStdin, ChildStdout, Stdio},
    time::{Duration, Instant},
};

use lash_tests::{
    manifests::{endpoint_slice, service, Cond},
    sandbox::{bpftool, Sandbox},
};
use serde_json::Value;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const HTTP: &str = "10.96.0.10:80";
const DNS: &str = "10.96.0.10:53";
const DNS_FRONTEND: &str = "10.96.0.10:53/UDP";
const ECONNREFUSED: i64 = 111;

/// A sandbox with `pods` pods serving, the web Service over all of them, and
/// the agent running.
fn web(tag: &str, pods: usize) -> Sandbox {
    let mut sb = Sandbox::new(tag, pods).expect("sandbox");
    sb.start_pod_servers().expect("pod servers");
    let ips: Vec<Ipv4Addr> = sb.pods.iter().map(|p| p.ip).collect();
    write_web(&sb, &ips, "");
    sb.start_agent(&[]).expect("agent");
    sb
}

/// The web Service with the pods at `ips` as its endpoints, plus `extra`
/// manifests in the same file.
fn write_web(sb: &Sandbox, ips: &[Ipv4Addr], extra: &str) {
    let eps: Vec<(Ipv4Addr, Cond)> = ips.iter().map(|ip| (*ip, Cond::Ready)).collect();
    sb.write_manifest(
        "web.yaml",
        &format!(
            "{}---\n{}{extra}",
            service("web", VIP),
            endpoint_slice("web", &eps)
        ),
    )
    .expect("manifest");
}

/// Rewrites the web slice to `ips` and waits for the agent to apply it.
fn set_endpoints(sb: &Sandbox, ips: &[Ipv4Addr]) {
    let before = sb.syncs();
    write_web(sb, ips, "");
    assert!(
        sb.wait_synced_after(before, Duration::from_secs(5)),
        "agent did not reconcile the change; log:\n{}",
        sb.agent_log()
    );
}

/// Slot -> backend pod name of `frontend`, from `agent bpf lb list -o json`.
fn slots(sb: &Sandbox, frontend: &str) -> BTreeMap<u64, String> {
    let rows: Value =
        serde_json::from_str(&sb.agent_cli(&["bpf", "lb", "list", "-o", "json"]).unwrap()).unwrap();
    let pod_of: BTreeMap<String, String> = sb
        .pods
        .iter()
        .map(|p| (p.ip.to_string(), p.name.clone()))
        .collect();
    rows.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["service"] == frontend && r["slot"].as_u64().unwrap() > 0)
        .map(|r| {
            let backend = r["backend"].as_str().unwrap();
            let ip = backend.split(':').next().unwrap();
            let pod = pod_of.get(ip).cloned().unwrap_or_else(|| backend.into());
            (r["slot"].as_u64().unwrap(), pod)
        })
        .collect()
}

/// A running `lash-probe udp-hold`: long-lived unconnected UDP sockets that
/// send one datagram each per round.
struct UdpHold {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
    started: bool,
}

impl UdpHold {
    fn start(sb: &Sandbox, addr: &str, sockets: usize) -> Self {
        let mut child = sb
            .probe_cmd("udp-hold", addr)
            .args(["--count", &sockets.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("udp-hold probe");
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        UdpHold {
            child,
            stdin,
            out,
            started: false,
        }
    }

    /// One datagram per socket: each socket's reply (backend name, source shown
    /// to the application). Every reply must have come back.
    fn round(&mut self) -> Vec<Value> {
        if self.started {
            writeln!(self.stdin).unwrap();
        }
        self.started = true;
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        let socks = v["sockets"].as_array().unwrap().clone();
        for s in &socks {
            assert_eq!(s["ok"], true, "a datagram got no reply: {s}");
        }
        socks
    }
}

impl Drop for UdpHold {
    fn drop(&mut self) {
        // Our own child, by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn backend(reply: &Value) -> String {
    reply["backend"].as_str().unwrap().to_string()
}

/// Checks a round against what each socket should be on: sockets whose backend
/// is still in the service must be on it; the others on some backend of
/// `serving`. Replies must show the VIP. Returns the sockets' backends.
fn check_round(round: &[Value], expected: &[String], serving: &BTreeSet<String>) -> Vec<String> {
    let mut now = Vec::new();
    for (i, (r, want)) in round.iter().zip(expected).enumerate() {
        assert_eq!(
            r["from"], DNS,
            "socket {i}: reply not shown from the VIP: {r}"
        );
        let got = backend(r);
        assert!(
            serving.contains(&got),
            "socket {i} on {got}, not in {serving:?}"
        );
        if serving.contains(want) {
            assert_eq!(
                &got, want,
                "socket {i} left its backend {want}, still in the service"
            );
        }
        now.push(got);
    }
    now
}

#[test]
fn udp_socket_keeps_its_backend_while_other_backends_come_and_go() {
    let sb = web("affinity", 6);
    // 60 sockets over 6 backends: every backend has some (all but certainly),
    // so whichever backend a change moves to another slot carries sockets.
    let mut hold = UdpHold::start(&sb, DNS, 60);
    let all: BTreeSet<String> = sb.pods.iter().map(|p| p.name.clone()).collect();
    let mut on = check_round(&hold.round(), &vec![String::new(); 60], &all);
    assert!(
        on.iter().collect::<BTreeSet<_>>().len() >= 4,
        "60 sockets should spread over the backends: {on:?}"
    );
    let ip_of: BTreeMap<String, Ipv4Addr> =
        sb.pods.iter().map(|p| (p.name.clone(), p.ip)).collect();
    let mut serving = all.clone();
    let mut moved_sockets = 0;

    // Twice: take out the backend in slot 1, so the tail backend moves into
    // the hole. Sockets on the moved backend must stay on it.
    for _ in 0..2 {
        let before = slots(&sb, DNS_FRONTEND);
        let gone = before[&1].clone();
        serving.remove(&gone);
        let ips: Vec<Ipv4Addr> = serving.iter().map(|n| ip_of[n]).collect();
        set_endpoints(&sb, &ips);
        let after = slots(&sb, DNS_FRONTEND);
        let moved: BTreeSet<String> = after
            .iter()
            .filter(|(slot, pod)| before.get(slot) != Some(pod))
            .map(|(_, pod)| pod.clone())
            .collect();
        assert!(
            !moved.is_empty(),
            "removing slot 1 moved no backend ({before:?} -> {after:?}): the case is not exercised"
        );
        moved_sockets += on.iter().filter(|b| moved.contains(*b)).count();
        on = check_round(&hold.round(), &on, &serving);
        // Later datagrams stay where the first one after the change went.
        on = check_round(&hold.round(), &on, &serving);
    }
    assert!(
        moved_sockets > 0,
        "no socket sat on a backend that changed slot: nothing was proven"
    );

    // Backends coming back take slots too; nobody moves.
    serving = all.clone();
    let ips: Vec<Ipv4Addr> = serving.iter().map(|n| ip_of[n]).collect();
    set_endpoints(&sb, &ips);
    on = check_round(&hold.round(), &on, &serving);

    // A socket moves when its own backend goes, and only then.
    let most = on
        .iter()
        .fold(BTreeMap::<&String, usize>::new(), |mut m, b| {
            *m.entry(b).or_default() += 1;
            m
        })
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(b, _)| b.clone())
        .unwrap();
    serving.remove(&most);
    let ips: Vec<Ipv4Addr> = serving.iter().map(|n| ip_of[n]).collect();
    set_endpoints(&sb, &ips);
    let now = check_round(&hold.round(), &on, &serving);
    for (i, (was, is)) in on.iter().zip(&now).enumerate() {
        if *was == most {
            assert_ne!(is, &most, "socket {i} still on removed {most}");
        }
    }
    // ...and then sticks to its new backend.
    check_round(&hold.round(), &now, &serving);
    assert_eq!(sb.sink_tx_packets().unwrap(), 0);
}

/// The churn Service: 10.96.0.20:80 on port 9 of every pod, where nothing
/// listens, so each connect is refused at once (but translated all the same).
fn churn_manifests(sb: &Sandbox) -> String {
    let eps: String = sb
        .pods
        .iter()
        .map(|p| {
            format!(
                "- addresses: [\"{}\"]\n  conditions: {{ready: true, serving: true, terminating: false}}\n",
                p.ip
            )
        })
        .collect();
    format!(
        "---
apiVersion: v1
kind: Service
metadata:
  name: churn
  namespace: default
spec:
  type: ClusterIP
  clusterIP: 10.96.0.20
  ports:
  - name: discard
    port: 80
    protocol: TCP
    targetPort: 9
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: churn-abcde
  namespace: default
  labels:
    kubernetes.io/service-name: churn
addressType: IPv4
ports:
- name: discard
  port: 9
  protocol: TCP
endpoints:
{eps}"
    )
}

/// The lb4_sock_events counters, summed over CPUs.
fn sock_events(sb: &Sandbox) -> Vec<u64> {
    let path = sb.bpf_root.join("lb4_sock_events");
    let v = bpftool([
        OsStr::new("map"),
        OsStr::new("dump"),
        OsStr::new("pinned"),
        path.as_os_str(),
    ]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    // BTF-less dumps show the bytes as hex strings.
                    c["value"].as_u64().unwrap_or_else(|| {
                        let bytes: Vec<u8> = c["value"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|b| {
                                u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16)
                                    .unwrap()
                            })
                            .collect();
                        u64::from_le_bytes(bytes.try_into().unwrap())
                    })
                })
                .sum()
        })
        .collect()
}

#[test]
fn tcp_churn_does_not_disturb_a_live_udp_sockets_reverse_view() {
    let mut sb = Sandbox::new("churn", 3).expect("sandbox");
    sb.start_pod_servers().expect("pod servers");
    let ips: Vec<Ipv4Addr> = sb.pods.iter().map(|p| p.ip).collect();
    write_web(&sb, &ips, &churn_manifests(&sb));
    sb.start_agent(&[]).expect("agent");

    // The per-socket state is socket-local storage: nothing to size, nothing
    // to evict.
    let state = sb.map_show("lb4_sock_state");
    assert_eq!(state["type"], "sk_storage", "{state}");

    let mut hold = UdpHold::start(&sb, DNS, 4);
    let first: Vec<String> = hold.round().iter().map(backend).collect();
    let all: BTreeSet<String> = sb.pods.iter().map(|p| p.name.clone()).collect();
    check_round(&hold.round(), &first, &all);

    // More connects than the old shared table (65536 entries) had room for.
    let start = Instant::now();
    let out = sb.probe("tcp-churn", "10.96.0.20:80", 100_000).unwrap();
    let churn = &out[0];
    eprintln!("churn: {churn} (wall {:?})", start.elapsed());
    assert_eq!(churn["other_errors"], 0, "{churn}");
    // Refused by a pod (so translated): nothing listens on port 9.
    assert_eq!(churn["refused"], 100_000, "{churn}");

    // The live sockets still show the VIP on their replies, from their backend.
    check_round(&hold.round(), &first, &all);
    // No socket went without state, and none outgrew its entries.
    assert_eq!(sock_events(&sb), vec![0, 0]);
    assert_eq!(sb.sink_tx_packets().unwrap(), 0);
    drop(hold);
    sb.stop_agent(false).unwrap();
}

#[test]
fn ipv6_sockets_reach_ipv4_services_through_v4_mapped_addresses() {
    let sb = web("v6", 6);
    let mapped_http = "[::ffff:10.96.0.10]:80";
    let mapped_dns = "[::ffff:10.96.0.10]:53";

    let lines = sb.probe("tcp6", HTTP, 30).unwrap();
    let mut seen = BTreeSet::new();
    for l in &lines {
        assert_eq!(l["ok"], true, "{l}");
        // getpeername() of the IPv6 socket shows the mapped VIP.
        assert_eq!(l["peer"], mapped_http, "{l}");
        seen.insert(backend(l));
    }
    assert!(seen.len() >= 3, "30 connects over 6 backends: {seen:?}");

    // Unconnected UDP: one backend per socket, replies from the mapped VIP.
    let lines = sb.probe("udp6", DNS, 10).unwrap();
    let per_socket: BTreeSet<String> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["ok"], true, "{l}");
            assert_eq!(l["from"], mapped_dns, "{l}");
            backend(l)
        })
        .collect();
    assert_eq!(per_socket.len(), 1, "{per_socket:?}");
    // Connected UDP: getpeername() too.
    for l in sb.probe("udp6-connected", DNS, 5).unwrap() {
        assert_eq!(l["ok"], true, "{l}");
        assert_eq!(l["peer"], mapped_dns, "{l}");
    }
    // A mapped address that is not a Service is left alone.
    let direct = format!("{}:8080", sb.pods[2].ip);
    let direct_mapped = format!("[::ffff:{}]:8080", sb.pods[2].ip);
    for l in sb.probe("tcp6", &direct, 2).unwrap() {
        assert_eq!(l["backend"], "pod-3", "{l}");
        assert_eq!(l["peer"], direct_mapped, "{l}");
    }
    assert_eq!(
        sb.sink_tx_packets().unwrap(),
        0,
        "a packet left towards the VIP"
    );

    // A Service without backends refuses IPv6 sockets too, at once.
    set_endpoints(&sb, &[]);
    for l in sb.probe("tcp6", HTTP, 3).unwrap() {
        assert_eq!(l["ok"], false, "{l}");
        assert_eq!(l["errno"], ECONNREFUSED, "{l}");
        assert!(l["elapsed_us"].as_u64().unwrap() < 500_000, "{l}");
    }
    for l in sb.probe("udp6", DNS, 2).unwrap() {
        assert_eq!(l["ok"], false, "{l}");
    }
    assert_eq!(
        sb.sink_tx_packets().unwrap(),
        0,
        "a packet left towards the VIP"
    );
}
