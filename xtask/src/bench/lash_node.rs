//! A node for the lash pod arms: a sandbox (its own node namespace, cgroup,
//! bpffs dir and state dir) with the release agent running inside the node
//! namespace with a `--pod-cidr`, and pods attached by the real lash-cni
//! binary, run the way a container runtime runs it. The sandbox's drop
//! removes all of it (agent, pins, namespaces, dirs) also on an error; the
//! arms DEL their pods themselves at the end and check nothing is left.

use std::{
    io::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{bail, ensure, Context as _};
use lash_tests::sandbox::{bin, Sandbox};
use serde_json::{json, Value};

use super::namespaces::{in_netns, ip};

/// A sandbox with 0 stand-in pods and the agent serving pods from `cidr`;
/// `extra` goes to `agent run` as well. The node forwards nothing itself.
pub fn start(tag: &str, cidr: &str, extra: &[&str]) -> anyhow::Result<Sandbox> {
    let mut sb = Sandbox::new(tag, 0).with_context(|| format!("building the {tag} sandbox"))?;
    let mut args = vec!["--pod-cidr", cidr];
    args.extend_from_slice(extra);
    sb.start_agent(&args)?;
    ensure!(
        sysctl(&sb, "net.ipv4.ip_forward")? == "0",
        "ip_forward is on in the lash node: the kernel, not lash, could carry the traffic"
    );
    Ok(sb)
}

/// Where the agent serves the CNI API.
pub fn socket(sb: &Sandbox) -> PathBuf {
    sb.state_dir().join("cni.sock")
}

/// The plugin configuration lash-cni gets on stdin (CNI 1.0.0).
pub fn conf(sb: &Sandbox) -> Value {
    json!({"cniVersion": "1.0.0", "name": "lash-bench", "type": "lash-cni",
           "agentSocket": socket(sb)})
}

/// A sysctl's value inside the node namespace.
pub fn sysctl(sb: &Sandbox, key: &str) -> anyhow::Result<String> {
    Ok(ip(&["netns", "exec", &sb.node_ns, "sysctl", "-n", key])?
        .trim()
        .to_string())
}

/// lash-cni COMMAND for container `id` with its namespace at `netns`, run
/// inside the node namespace; its result (Null when it prints none).
fn cni(sb: &Sandbox, command: &str, id: &str, netns: &Path) -> anyhow::Result<Value> {
    let plugin = bin("lash-cni");
    let mut child = in_netns(&sb.node_ns, &plugin, None)?
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", plugin.parent().unwrap_or(Path::new("/")))
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", plugin.display()))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(conf(sb).to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "lash-cni {command} {id}: {} {}\nagent log:\n{}",
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim(),
            sb.agent_log()
        );
    }
    if stdout.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&stdout).with_context(|| format!("lash-cni {command}: {stdout:?}"))
}

/// An attached pod: its address and node-side device, from the ADD result.
pub struct Added {
    pub ip: Ipv4Addr,
    pub lxc: String,
}

/// lash-cni ADD for the pod namespace `netns_name` (an `ip netns` name).
pub fn add(sb: &Sandbox, id: &str, netns_name: &str) -> anyhow::Result<Added> {
    let r = cni(sb, "ADD", id, &super::namespaces::netns_path(netns_name))?;
    let addr = r["ips"][0]["address"]
        .as_str()
        .with_context(|| format!("ADD result without an address: {r}"))?;
    let ip: Ipv4Addr = addr
        .split('/')
        .next()
        .unwrap_or(addr)
        .parse()
        .with_context(|| format!("ADD result address {addr:?}"))?;
    let lxc = r["interfaces"][0]["name"]
        .as_str()
        .with_context(|| format!("ADD result without the host interface: {r}"))?
        .to_string();
    let shown = ip_show(netns_name)?;
    ensure!(
        shown.contains(addr),
        "ADD said {addr}, {netns_name} has: {shown}"
    );
    Ok(Added { ip, lxc })
}

fn ip_show(netns_name: &str) -> anyhow::Result<String> {
    ip(&["-n", netns_name, "-4", "-o", "addr", "show", "dev", "eth0"])
}

/// lash-cni DEL for the pod namespace `netns_name`.
pub fn del(sb: &Sandbox, id: &str, netns_name: &str) -> anyhow::Result<()> {
    cni(sb, "DEL", id, &super::namespaces::netns_path(netns_name)).map(drop)
}

/// The node's lxc devices.
pub fn lxc_links(sb: &Sandbox) -> anyhow::Result<Vec<String>> {
    Ok(ip(&["-n", &sb.node_ns, "-o", "link", "show"])?
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with("lxc"))
        .collect())
}

/// After the DELs: no lxc device, no endpoint the agent knows, no address
/// its IPAM holds.
pub fn check_clean(sb: &Sandbox) -> anyhow::Result<()> {
    let links = lxc_links(sb)?;
    ensure!(links.is_empty(), "lxc devices left after DEL: {links:?}");
    let list = sb.agent_cli(&["endpoint", "list", "-o", "json"])?;
    let list: Value = serde_json::from_str(&list).context("agent endpoint list -o json")?;
    ensure!(
        list.as_array().is_some_and(Vec::is_empty),
        "endpoints left after DEL: {list}"
    );
    let status: Value = serde_json::from_str(&sb.agent_cli(&["status", "-o", "json"])?)
        .context("agent status -o json")?;
    ensure!(
        status["ipam"]["used"] == 0,
        "IPAM still holds addresses after DEL: {}",
        status["ipam"]
    );
    Ok(())
}
