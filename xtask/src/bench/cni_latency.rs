//! CNI ADD and DEL latency: a plugin chain run the way a container runtime
//! runs it (no cnitool exists): `CNI_*` variables, each plugin's config on
//! stdin with `name`, `cniVersion` and the previous plugin's result as
//! `prevResult`, inside a node namespace of the bench's own, for container
//! namespaces the bench made. ADDs then DELs, one at a time and many at once.
//!
//! An arm is a directory of plugin binaries and a conflist:
//! - `cni-bridge`: the reference plugins (containernetworking-plugins in
//!   /usr/lib/cni), `bridge` with `host-local` IPAM on a private range, its
//!   state in a temp dir (`dataDir`), no masquerade (no iptables).
//! - `cni-lash`: the release lash-cni against the release agent, which runs
//!   inside the arm's node namespace with a pod range (lash_node.rs); after
//!   the DELs the node has no lxc device, the agent no endpoint and its IPAM
//!   no address in use.
//!
//! A call's time is the runtime's view: fork and exec of each plugin in the
//! chain, its work, and reading its result. One unmeasured ADD and DEL go
//! first, so the bridge (made by the first ADD) and the page cache are warm.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Barrier},
    time::Instant,
};

use anyhow::{bail, ensure, Context as _};
use lash_tests::sandbox::{bin, Sandbox};
use serde_json::{json, Value};

use super::namespaces::{in_netns, ip, netns_path, Namespaces};
use super::{check_interrupt, percentile, short};

pub const ARMS: [&str; 2] = ["cni-bridge", "cni-lash"];

/// Where Debian's containernetworking-plugins puts the reference plugins.
const REFERENCE_DIR: &str = "/usr/lib/cni";
const BRIDGE: &str = "benchbr0";

pub struct Plan {
    pub sequential: usize,
    pub parallel: usize,
}

/// One arm: the chain to run and where its plugins are.
pub struct CniArm {
    pub name: &'static str,
    pub bin_dir: PathBuf,
    pub conflist: Value,
    /// Removed after the arm (plugin state such as host-local's files).
    pub work: PathBuf,
    /// cni-lash: the node the agent runs in (its namespace is where the
    /// chain runs), dropped with the arm.
    pub agent: Option<Sandbox>,
}

/// The lash arm's pod range: room for the 100 sequential pods.
const LASH_CIDR: &str = "10.244.4.0/24";

pub fn run(plan: &Plan, arms: &[&'static str]) -> anyhow::Result<Vec<Value>> {
    let mut rows = Vec::new();
    for &arm in arms {
        check_interrupt()?;
        eprintln!("bench:   {arm}");
        let mut ns = Namespaces::new(arm)?;
        let made = match arm {
            "cni-bridge" => ns
                .add("node")
                .and_then(|node| Ok((reference_arm(&ns.prefix)?, node))),
            "cni-lash" => lash_arm().map(|a| {
                let node = a.agent.as_ref().expect("lash has a node").node_ns.clone();
                (a, node)
            }),
            _ => unreachable!("not a CNI arm: {arm}"),
        };
        let measured = match made {
            Ok((cni, node)) => {
                let r = measure(plan, &cni, &mut ns, &node);
                let work = cni.work.clone();
                // Namespaces first (their veths go with them), then the
                // agent's node (its drop removes its dirs), then the state.
                drop(ns);
                drop(cni);
                let _ = std::fs::remove_dir_all(&work);
                r.and_then(|rows| {
                    ensure!(!work.exists(), "{} was not removed", work.display());
                    Ok(rows)
                })
            }
            Err(e) => Err(e),
        };
        let prefix = format!("lash-bench-{arm}-{}", std::process::id());
        let left = super::namespaces::left_over(&prefix);
        ensure!(left.is_empty(), "namespaces left after {arm}: {left:?}");
        match measured {
            Ok(r) => rows.extend(r),
            Err(e) => {
                eprintln!("bench:   {arm} failed: {e:#}");
                rows.push(json!({"arm": arm, "error": short(&e)}));
            }
        }
    }
    for row in &rows {
        eprintln!("bench:     {row}");
    }
    Ok(rows)
}

/// bridge + host-local on 10.250.0.0/16, state under a temp dir.
fn reference_arm(prefix: &str) -> anyhow::Result<CniArm> {
    let work = std::env::temp_dir().join(prefix);
    std::fs::create_dir_all(&work)?;
    for p in ["bridge", "host-local"] {
        let path = Path::new(REFERENCE_DIR).join(p);
        ensure!(
            path.exists(),
            "{} missing (cargo xtask setup installs containernetworking-plugins)",
            path.display()
        );
    }
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": "lash-bench",
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.250.0.0/16"}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": work.join("host-local"),
            },
        }],
    });
    Ok(CniArm {
        name: "cni-bridge",
        bin_dir: REFERENCE_DIR.into(),
        conflist,
        work,
        agent: None,
    })
}

/// The lash-cni arm: the same measurement with `bin_dir` = the bench's
/// (release) binaries and a conflist of `{"type": "lash-cni", "agentSocket":
/// ...}`, against the agent running in its node namespace.
fn lash_arm() -> anyhow::Result<CniArm> {
    let sb = super::lash_node::start("bench-cni-lash-node", LASH_CIDR, &[])?;
    let plugin = bin("lash-cni");
    ensure!(plugin.exists(), "{} missing", plugin.display());
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": "lash-bench",
        "plugins": [{"type": "lash-cni", "agentSocket": super::lash_node::socket(&sb)}],
    });
    Ok(CniArm {
        name: "cni-lash",
        bin_dir: plugin.parent().context("lash-cni's directory")?.into(),
        conflist,
        work: sb.work.clone(),
        agent: Some(sb),
    })
}

/// One plugin run inside `node`: its result (or error) as JSON.
fn call(
    cni: &CniArm,
    node: &str,
    command: &str,
    id: &str,
    netns: &Path,
    conf: &Value,
) -> anyhow::Result<Value> {
    let kind = conf["type"].as_str().context("plugin without a type")?;
    let mut child = in_netns(node, cni.bin_dir.join(kind), None)?
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &cni.bin_dir)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {kind}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(conf.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{kind} {command} {id}: {} {}",
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if stdout.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&stdout).with_context(|| format!("{kind} {command}: {stdout:?}"))
}

/// The chain's ADD (plugins in order) or DEL (in reverse, each with the
/// ADD's final result as prevResult, as the spec has the runtime do); ms.
fn chain(
    cni: &CniArm,
    node: &str,
    command: &str,
    id: &str,
    netns: &Path,
    add_result: Option<&Value>,
) -> anyhow::Result<(f64, Value)> {
    let list = &cni.conflist;
    let mut plugins: Vec<&Value> = list["plugins"]
        .as_array()
        .context("conflist without plugins")?
        .iter()
        .collect();
    if command == "DEL" {
        plugins.reverse();
    }
    let start = Instant::now();
    let mut prev = add_result.cloned();
    for p in plugins {
        let mut conf = p.clone();
        conf["name"] = list["name"].clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        if let Some(r) = &prev {
            conf["prevResult"] = r.clone();
        }
        let r = call(cni, node, command, id, netns, &conf)?;
        if command == "ADD" {
            prev = Some(r);
        }
    }
    Ok((
        start.elapsed().as_secs_f64() * 1e3,
        prev.unwrap_or(Value::Null),
    ))
}

fn measure(
    plan: &Plan,
    cni: &CniArm,
    ns: &mut Namespaces,
    node: &str,
) -> anyhow::Result<Vec<Value>> {
    let pods = plan.sequential.max(plan.parallel);
    let mut netns: Vec<PathBuf> = Vec::new();
    for i in 0..pods {
        netns.push(netns_path(&ns.add(&format!("c{i}"))?));
    }
    let arm_name = ns.prefix.clone();
    let id = |i: usize| format!("{arm_name}-{i}");
    // The node's own veths (the lash sandbox's sink0): not the plugin's.
    let own = node_veths(node)?;

    // Warm-up, unmeasured.
    let (_, r) = chain(cni, node, "ADD", &id(0), &netns[0], None)?;
    chain(cni, node, "DEL", &id(0), &netns[0], Some(&r))?;

    let mut rows = Vec::new();
    // One at a time.
    let mut adds = Vec::new();
    let mut results = Vec::new();
    for (i, n) in netns.iter().enumerate().take(plan.sequential) {
        check_interrupt()?;
        let (ms, r) = chain(cni, node, "ADD", &id(i), n, None)?;
        check_added(&r, n)?;
        adds.push(ms);
        results.push(r);
    }
    let mut dels = Vec::new();
    for (i, n) in netns.iter().enumerate().take(plan.sequential) {
        check_interrupt()?;
        dels.push(chain(cni, node, "DEL", &id(i), n, Some(&results[i]))?.0);
    }
    check_clean(cni, node, &netns, &own)?;
    rows.push(row(cni, "sequential", adds, dels));

    // All at once: each call on a thread of its own, released together.
    check_interrupt()?;
    let go = |command: &'static str, results: Option<Vec<Value>>| {
        let barrier = Arc::new(Barrier::new(plan.parallel));
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..plan.parallel)
                .map(|i| {
                    let (barrier, n, id) = (barrier.clone(), &netns[i], id(i));
                    let prev = results.as_ref().map(|r| r[i].clone());
                    s.spawn(move || {
                        barrier.wait();
                        chain(cni, node, command, &id, n, prev.as_ref())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("CNI call thread"))
                .collect::<anyhow::Result<Vec<(f64, Value)>>>()
        })
    };
    let added = go("ADD", None)?;
    for (r, n) in added.iter().zip(&netns) {
        check_added(&r.1, n)?;
    }
    let results: Vec<Value> = added.iter().map(|a| a.1.clone()).collect();
    let adds = added.iter().map(|a| a.0).collect();
    let dels = go("DEL", Some(results))?.iter().map(|d| d.0).collect();
    check_clean(cni, node, &netns, &own)?;
    rows.push(row(cni, "parallel", adds, dels));
    Ok(rows)
}

fn row(cni: &CniArm, mode: &str, mut adds: Vec<f64>, mut dels: Vec<f64>) -> Value {
    json!({
        "arm": cni.name, "mode": mode, "calls": adds.len(),
        "add_p50_ms": percentile(&mut adds, 50.0), "add_p99_ms": percentile(&mut adds, 99.0),
        "del_p50_ms": percentile(&mut dels, 50.0), "del_p99_ms": percentile(&mut dels, 99.0),
    })
}

/// An ADD's result names an address, and the container has eth0 with it.
fn check_added(result: &Value, netns: &Path) -> anyhow::Result<()> {
    let addr = result["ips"][0]["address"]
        .as_str()
        .with_context(|| format!("ADD result without an address: {result}"))?;
    let name = netns.file_name().unwrap_or_default().to_string_lossy();
    let shown = ip(&["-n", &name, "-4", "-o", "addr", "show", "dev", "eth0"])?;
    ensure!(shown.contains(addr), "ADD said {addr}, {name} has: {shown}");
    Ok(())
}

/// The node's veth names.
fn node_veths(node: &str) -> anyhow::Result<Vec<String>> {
    Ok(ip(&["-n", node, "-o", "link", "show", "type", "veth"])?
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect())
}

/// After the DELs: no container has an eth0 left, no veth but the node's
/// own (`own`) is left in the node, and no address is still reserved in the
/// plugin's state (host-local's files; lash: the agent's endpoints and IPAM).
fn check_clean(cni: &CniArm, node: &str, netns: &[PathBuf], own: &[String]) -> anyhow::Result<()> {
    for n in netns {
        let name = n.file_name().unwrap_or_default().to_string_lossy();
        let links = ip(&["-n", &name, "-o", "link", "show"])?;
        ensure!(!links.contains("eth0"), "{name} still has eth0 after DEL");
    }
    let veths: Vec<String> = node_veths(node)?
        .into_iter()
        .filter(|v| !own.contains(v))
        .collect();
    ensure!(veths.is_empty(), "veths left in the node: {veths:?}");
    if let Some(sb) = &cni.agent {
        super::lash_node::check_clean(sb)?;
    }
    // host-local keeps one file per reserved address (named by the address)
    // next to its bookkeeping (lock, last_reserved_ip.N).
    let dir = cni.work.join("host-local");
    if dir.exists() {
        for e in walk(&dir)? {
            let file = e.file_name().unwrap_or_default().to_string_lossy();
            ensure!(
                file.parse::<std::net::Ipv4Addr>().is_err(),
                "host-local still holds {}",
                e.display()
            );
        }
    }
    Ok(())
}

fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}
