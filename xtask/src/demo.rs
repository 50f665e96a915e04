//! `cargo xtask demo`: the main job on an embedded default. A sandbox node
//! with the agent running standalone on a pod CIDR, 6 pods (and a client pod)
//! made by podman through lash-cni, a Service + EndpointSlice manifest over
//! them, clients spreading requests over the pods (from the node through
//! socket LB, from a pod through the tc path), and the agent's view of
//! endpoints, ipcache, services, conntrack and drops. Cleans up on exit and
//! on Ctrl-C.
//!
//! With `--k8s` the agent watches a Kubernetes API instead (the stand-in API
//! server of tests/kmock, in the node namespace): its pod range comes from
//! its Node object, the Service and slice are applied with kubectl, and
//! scale-like edits of the slice are shown reaching the datapath live.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{bail, Context as _};
use lash_tests::{
    apiserver::ApiServer,
    manifests::{endpoint_slice, service, Cond},
    podman::{Container, Podman},
    sandbox::{Sandbox, POD_TCP_PORT, POD_UDP_PORT},
};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C and SIGTERM set a flag the demo checks between steps, so its
/// drops remove what it made.
pub fn install_interrupt() {
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_sigint as *const () as libc::sighandler_t);
    }
}

pub fn check() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted; sandbox removed");
    }
    Ok(())
}

pub fn section(title: &str) {
    println!("\n=== {title}");
}

const POD_CIDR: &str = "10.244.0.0/24";
const PODS: usize = 6;

/// The node's name in the Kubernetes demo: its Node object carries the pod range.
const NODE: &str = "demo-node";

fn node_manifest() -> String {
    format!(
        "apiVersion: v1
kind: Node
metadata:
  name: {NODE}
spec:
  podCIDR: {POD_CIDR}
  podCIDRs: [\"{POD_CIDR}\"]
status:
  addresses:
  - type: InternalIP
    address: 192.168.0.10
"
    )
}

pub fn run(hold: bool, k8s: bool) -> anyhow::Result<()> {
    install_interrupt();
    let vip = Ipv4Addr::new(10, 96, 0, 10);
    let mut sb = Sandbox::new("demo", 0).context("building the sandbox")?;
    section("sandbox");
    println!(
        "node namespace {} (forwarding off: only lash carries pod traffic), client cgroup {}",
        sb.node_ns,
        sb.cgroup.display()
    );
    // The API server (with --k8s) lives in the node namespace too; dropped
    // after the containers, before the sandbox.
    let api = if k8s {
        let api = ApiServer::start(&sb)?;
        section(&format!(
            "Kubernetes API (stand-in) at http://127.0.0.1:{} in the node namespace; kubectl apply -f node.yaml",
            api.port
        ));
        print!("{}", node_manifest());
        print!("{}", api.apply(&node_manifest())?);
        sb.kubeconfig = Some(api.kubeconfig.clone());
        sb.start_agent(&["--node-name", NODE])?;
        Some(api)
    } else {
        sb.start_agent(&["--pod-cidr", POD_CIDR])?;
        None
    };
    check()?;

    let network = format!("lash-demo-{}", std::process::id());
    section(&format!(
        "podman run x{PODS} --network {network}  (its only CNI plugin: lash-cni)"
    ));
    // Dropped before the sandbox: containers go first.
    let mut pm = Podman::new(&sb, &network)?;
    let mut pods = Vec::new();
    for i in 1..=PODS + 1 {
        let name = if i > PODS {
            "client".to_string()
        } else {
            format!("pod-{i}")
        };
        let (tcp, udp) = (POD_TCP_PORT.to_string(), POD_UDP_PORT.to_string());
        let cmd = [
            "/probe/lash-podserver",
            "--name",
            &name,
            "--tcp",
            &tcp,
            "--udp",
            &udp,
        ];
        pm.run(&Container {
            name: &name,
            in_lb_cgroup: false,
            cmd: &cmd,
        })?;
        let ip: Ipv4Addr = pm.ip_of(&name)?.parse()?;
        println!("  {name:<7} {ip}");
        pods.push((name, ip));
        check()?;
    }

    let ips: Vec<(Ipv4Addr, Cond)> = pods[..PODS]
        .iter()
        .map(|(_, ip)| (*ip, Cond::Ready))
        .collect();
    let manifest = format!(
        "{}---\n{}",
        service("web", vip),
        endpoint_slice("web", &ips)
    );
    let syncs = sb.syncs();
    match &api {
        Some(api) => {
            section("kubectl apply -f web.yaml");
            print!("{manifest}");
            print!("{}", api.apply(&manifest)?);
        }
        None => {
            sb.write_manifest("web.yaml", &manifest)?;
            section(&format!(
                "manifest {}",
                sb.manifests().join("web.yaml").display()
            ));
            print!("{manifest}");
        }
    }
    if !sb.wait_synced_after(syncs, std::time::Duration::from_secs(10)) {
        bail!("the agent did not pick up the Service");
    }
    section("agent status");
    print!("{}", sb.agent_cli(&["status"])?);
    section("agent endpoint list");
    print!("{}", sb.agent_cli(&["endpoint", "list"])?);
    section("agent bpf endpoint list");
    print!("{}", sb.agent_cli(&["bpf", "endpoint", "list"])?);
    section("agent bpf ipcache list");
    print!("{}", sb.agent_cli(&["bpf", "ipcache", "list"])?);

    section("client on the node, in the socket-LB cgroup: 60 HTTP requests to 10.96.0.10:80");
    let lines = sb.probe("tcp", "10.96.0.10:80", 60)?;
    let hist = histogram(&lines);
    println!(
        "  getpeername() in the client: {}",
        lines[0]["peer"].as_str().unwrap_or("?")
    );
    check()?;

    section("client pod, outside that cgroup (the tc path): 30 HTTP requests to 10.96.0.10:80");
    let out = pm.exec_ok(
        "client",
        &["/probe/lash-probe", "tcp", "10.96.0.10:80", "--count", "30"],
    )?;
    let pod_lines: Vec<serde_json::Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let pod_hist = histogram(&pod_lines);
    println!(
        "  getpeername() in the pod: {}",
        pod_lines[0]["peer"].as_str().unwrap_or("?")
    );
    check()?;

    if let Some(api) = &api {
        scale_live(&sb, api, &pods[..PODS])?;
    }

    section("client: 5 datagrams to 10.96.0.10:53/UDP from one socket");
    for l in sb.probe("udp", "10.96.0.10:53", 5)? {
        println!(
            "  reply from {} served by {}",
            l["from"].as_str().unwrap_or("?"),
            l["backend"].as_str().unwrap_or("?")
        );
    }

    section("inside pod-1: the gateway's neighbour entry is pod-1's lxc MAC (the ARP responder)");
    print!(
        "{}",
        pm.exec_ok("pod-1", &["ip", "neigh", "show", "10.244.0.1"])?
    );
    let endpoints: serde_json::Value =
        serde_json::from_str(&sb.agent_cli(&["endpoint", "list", "-o", "json"])?)?;
    let pod1 = pods[0].1.to_string();
    if let Some(e) = endpoints
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["address"] == pod1.as_str())
    {
        println!(
            "pod-1's lxc on the node: {} {}",
            e["host_ifname"].as_str().unwrap_or("?"),
            e["host_mac"].as_str().unwrap_or("?")
        );
    }
    section("agent bpf lb list");
    print!("{}", sb.agent_cli(&["bpf", "lb", "list"])?);
    section("agent service list");
    print!("{}", sb.agent_cli(&["service", "list"])?);
    section(
        "agent bpf ct list global (the client pod's flows: SERVICE entries remember the backend)",
    );
    let ct = sb.agent_cli(&["bpf", "ct", "list", "global"])?;
    for l in ct.lines().filter(|l| l.contains("SERVICE")).take(4) {
        println!("{l}");
    }
    section("agent bpf metrics list");
    print!("{}", sb.agent_cli(&["bpf", "metrics", "list"])?);
    section("bpftool map dump pinned .../lb4_services (the raw bytes, Cilium's layout)");
    let dump = Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(sb.bpf_root.join("lb4_services"))
        .output()?;
    print!("{}", String::from_utf8_lossy(&dump.stdout));

    if hold {
        section("holding; try these, then Ctrl-C to clean up");
        let agent = lash_tests::sandbox::bin("agent");
        println!(
            "  nsenter --net=/run/netns/{} {} --bpf-root {} --state-dir {} endpoint list",
            sb.node_ns,
            agent.display(),
            sb.bpf_root.display(),
            sb.state_dir().display()
        );
        println!(
            "  edit {} and watch `bpf lb list` follow",
            sb.manifests().join("web.yaml").display()
        );
        while !INTERRUPTED.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    drop(pm);
    sb.stop_agent(false)?;
    drop(api);
    drop(sb);
    section("cleaned up: containers, namespaces, cgroups, pinned maps and links removed");
    if hist.len() != PODS || pod_hist.len() < 2 {
        bail!("expected requests spread over the pods, got {hist:?} and {pod_hist:?}");
    }
    Ok(())
}

/// Scale-like edits of the slice through the API: down to two pods, then
/// back to all, each shown reaching the datapath (how long it took, where
/// the next requests go).
fn scale_live(sb: &Sandbox, api: &ApiServer, pods: &[(String, Ipv4Addr)]) -> anyhow::Result<()> {
    for keep in [2, pods.len()] {
        let ips: Vec<(Ipv4Addr, Cond)> = pods[..keep]
            .iter()
            .map(|(_, ip)| (*ip, Cond::Ready))
            .collect();
        section(&format!(
            "kubectl apply: the EndpointSlice now names {keep} pods (a scale to {keep})"
        ));
        let t = std::time::Instant::now();
        print!("{}", api.apply(&endpoint_slice("web", &ips))?);
        let want: std::collections::BTreeSet<String> =
            ips.iter().map(|(ip, _)| ip.to_string()).collect();
        let mut seen = None;
        while t.elapsed() < std::time::Duration::from_secs(10) {
            let p = sb
                .programmed_backends("10.96.0.10:80/TCP")
                .unwrap_or_default();
            if p == want {
                seen = Some(t.elapsed());
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let Some(took) = seen else {
            bail!("the agent did not follow the slice to {keep} pods");
        };
        println!(
            "  in the maps {:.0} ms after kubectl started (kubectl's own run included)",
            took.as_secs_f64() * 1e3
        );
        println!("  30 requests from the node:");
        let hist = histogram(&sb.probe("tcp", "10.96.0.10:80", 30)?);
        if hist.len() != keep {
            bail!("expected requests spread over {keep} pods, got {hist:?}");
        }
        check()?;
    }
    Ok(())
}

/// Requests per backend, printed as bars.
fn histogram(lines: &[serde_json::Value]) -> BTreeMap<String, usize> {
    let mut hist: BTreeMap<String, usize> = BTreeMap::new();
    for l in lines {
        let key = l["backend"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("error: {}", l["error"]));
        *hist.entry(key).or_default() += 1;
    }
    for (backend, n) in &hist {
        println!("  {backend:<8} {n:>3} {}", "#".repeat(*n));
    }
    hist
}
