//! `cargo xtask demo`: the main job on an embedded default. A sandbox node with
//! 6 pods serving HTTP, a Service + EndpointSlice manifest, the agent running
//! standalone, a client spreading requests over the pods, and the agent's view
//! of the maps. Cleans up on exit and on Ctrl-C.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{bail, Context as _};
use lash_tests::{
    manifests::{endpoint_slice, service, Cond},
    sandbox::Sandbox,
};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn check() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted; sandbox removed");
    }
    Ok(())
}

fn section(title: &str) {
    println!("\n=== {title}");
}

pub fn run(hold: bool) -> anyhow::Result<()> {
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_sigint as *const () as libc::sighandler_t);
    }
    let vip = Ipv4Addr::new(10, 96, 0, 10);
    let mut sb = Sandbox::new("demo", 6).context("building the sandbox")?;
    section("sandbox");
    println!(
        "node namespace {} with client cgroup {}",
        sb.node_ns,
        sb.cgroup.display()
    );
    for p in &sb.pods {
        println!(
            "  {}  {:<12} netns {}  via {}",
            p.name, p.ip, p.netns, p.lxc
        );
    }
    sb.start_pod_servers()?;
    check()?;

    let ips: Vec<(Ipv4Addr, Cond)> = sb.pods.iter().map(|p| (p.ip, Cond::Ready)).collect();
    let manifest = format!(
        "{}---\n{}",
        service("web", vip),
        endpoint_slice("web", &ips)
    );
    sb.write_manifest("web.yaml", &manifest)?;
    section(&format!(
        "manifest {}",
        sb.manifests().join("web.yaml").display()
    ));
    print!("{manifest}");

    sb.start_agent(&[])?;
    check()?;
    section("agent status");
    print!("{}", sb.agent_cli(&["status"])?);

    section("client: 60 HTTP requests to 10.96.0.10:80, one connection each");
    let lines = sb.probe("tcp", "10.96.0.10:80", 60)?;
    let mut hist: BTreeMap<String, usize> = BTreeMap::new();
    for l in &lines {
        let key = l["backend"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("error: {}", l["error"]));
        *hist.entry(key).or_default() += 1;
    }
    for (backend, n) in &hist {
        println!("  {backend:<8} {n:>3} {}", "#".repeat(*n));
    }
    println!(
        "  getpeername() in the client: {}",
        lines[0]["peer"].as_str().unwrap_or("?")
    );
    check()?;

    section("client: 5 datagrams to 10.96.0.10:53/UDP from one socket");
    for l in sb.probe("udp", "10.96.0.10:53", 5)? {
        println!(
            "  reply from {} served by {}",
            l["from"].as_str().unwrap_or("?"),
            l["backend"].as_str().unwrap_or("?")
        );
    }

    section("agent bpf lb list");
    print!("{}", sb.agent_cli(&["bpf", "lb", "list"])?);
    section("agent service list");
    print!("{}", sb.agent_cli(&["service", "list"])?);
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
            "  {} --bpf-root {} --state-dir {} status",
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
    sb.stop_agent(false)?;
    drop(sb);
    section("cleaned up: namespaces, cgroup, pinned maps and links removed");
    if hist.len() != 6 {
        bail!("expected all 6 backends to answer, got {hist:?}");
    }
    Ok(())
}
