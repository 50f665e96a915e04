//! A node for the lash pod arms: a sandbox (its own node namespace, cgroup,
//! bpffs dir and state dir) with the release agent running inside the node
//! namespace with a `--pod-cidr`, and pods attached by the real lash-cni
//! binary, run the way a container runtime runs it. The sandbox's drop
//! removes all of it (agent, pins, namespaces, dirs) also on an error; the
//! arms DEL their pods themselves at the end and check nothing is left.

use std::path::PathBuf;

use anyhow::{ensure, Context as _};
use lash_tests::sandbox::Sandbox;
use serde_json::Value;

use super::namespaces::ip;

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
    lash_tests::cni::agent_socket(sb)
}

/// A sysctl's value inside the node namespace.
pub fn sysctl(sb: &Sandbox, key: &str) -> anyhow::Result<String> {
    Ok(ip(&["netns", "exec", &sb.node_ns, "sysctl", "-n", key])?
        .trim()
        .to_string())
}

/// An attached pod: its address and node-side device, from the ADD result.
pub use lash_tests::cni::Attached as Added;

/// lash-cni ADD for the pod namespace `netns_name` (an `ip netns` name), run
/// in the node namespace as the runtime would.
pub fn add(sb: &Sandbox, id: &str, netns_name: &str) -> anyhow::Result<Added> {
    lash_tests::cni::add_on_node(sb, id, netns_name)
}

/// lash-cni DEL for the pod namespace `netns_name`.
pub fn del(sb: &Sandbox, id: &str, netns_name: &str) -> anyhow::Result<()> {
    lash_tests::cni::del_on_node(sb, id, netns_name)
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
