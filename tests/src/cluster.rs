//! A simulated cluster on this machine: N nodes, each a sandbox (its own node
//! namespace, cgroup, bpffs directory, state and manifest directory) running
//! its own agent, joined by an underlay the cluster makes for itself: a Linux
//! bridge in an underlay namespace, one veth per node (`eth0` in the node's
//! namespace). Pods are namespaces attached by the real `lash-cni` ADD, run
//! in their node's namespace as a runtime on that node would run it.
//!
//! Node `i` (0-based) is `node-{i+1}` at 192.168.50.{11+i}/24 with pod range
//! 10.244.{i+1}.0/24; every node's Node manifest is written into every node's
//! manifest directory, as the API server would show every Node to every
//! agent. Everything the cluster makes is removed on drop, also when a test
//! panics half-way: pods (CNI DEL while their agent runs), then the
//! sandboxes (agents and servers by their pids, pins, namespaces, cgroups),
//! then the underlay.
//!
//! No traffic leaves the test's namespaces: pods and nodes reach only each
//! other over the underlay bridge, which leads nowhere else.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _};
use serde_json::Value;

use crate::{
    capture::{Capture, Frame},
    cni, manifests,
    sandbox::{bin, ip, ip_json, Sandbox},
};

/// How nodes carry pod traffic to each other (the agent's --routing-mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoutingMode {
    Tunnel,
    Native,
}

impl RoutingMode {
    pub fn arg(self) -> &'static str {
        match self {
            RoutingMode::Tunnel => "tunnel",
            RoutingMode::Native => "native",
        }
    }
}

/// The underlay's MTU (a veth's default); pods in tunnel mode get 50 less.
pub const UNDERLAY_MTU: u32 = 1500;
/// The VXLAN device the agent makes in tunnel mode.
pub const TUNNEL_DEVICE: &str = "lash_vxlan";
/// The bridge in the underlay namespace every node's veth is a port of.
const BRIDGE: &str = "br0";
/// The routing protocol the agent's kernel routes carry (`ip route ...
/// proto`): 199, known to `ip` only by number.
pub const ROUTE_PROTO: &str = "199";

/// Node `i`'s underlay address at first.
pub fn node_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 50, 11 + i as u8)
}

pub fn node_name(i: usize) -> String {
    format!("node-{}", i + 1)
}

/// Node `i`'s pod range, as `--pod-cidr` and the Node's podCIDR give it.
pub fn pod_cidr(i: usize) -> String {
    format!("10.244.{}.0/24", i + 1)
}

pub struct ClusterNode {
    pub sb: Sandbox,
    pub name: String,
    /// Its InternalIP now (changed by `set_node_address`).
    pub addr: Ipv4Addr,
    pub pod_cidr: String,
    /// The first address of the pod range: the node's own address towards
    /// its pods, and the source of its traffic to other nodes' pods.
    pub gateway: Ipv4Addr,
    /// False once `remove_node` took its Node out of the others' view.
    pub member: bool,
    agent_args: Vec<String>,
}

impl ClusterNode {
    /// The pod range's network address, as the tunnel map keys it.
    pub fn pod_prefix(&self) -> Ipv4Addr {
        let (base, _) = self.pod_cidr.split_once('/').expect("a CIDR");
        base.parse().expect("an IPv4 CIDR")
    }
}

/// A pod attached by lash-cni: a namespace of its own with `eth0`.
#[derive(Clone, Debug)]
pub struct ClusterPod {
    pub name: String,
    /// The container id the runtime passed to the plugin.
    pub id: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    /// Its host-side device in the node namespace.
    pub lxc: String,
    /// Index of its node.
    pub node: usize,
}

/// What `ping` printed and whether every echo came back.
#[derive(Debug)]
pub struct Ping {
    pub transmitted: u32,
    pub received: u32,
    pub output: String,
}

impl Ping {
    pub fn all_answered(&self) -> bool {
        self.transmitted > 0 && self.received == self.transmitted
    }
}

pub struct Cluster {
    pub mode: RoutingMode,
    /// The underlay namespace, holding the bridge.
    pub underlay: String,
    pub nodes: Vec<ClusterNode>,
    pods: Vec<ClusterPod>,
    underlay_made: bool,
    next_pod: usize,
}

impl Cluster {
    /// Builds `n` nodes joined by the underlay, writes every Node manifest
    /// into every node's manifest directory and starts each agent in
    /// `mode`; returns once every agent has synced.
    pub fn new(tag: &str, n: usize, mode: RoutingMode) -> anyhow::Result<Self> {
        ensure!((1..=50).contains(&n), "a cluster of {n} nodes");
        let mut c = Cluster {
            mode,
            underlay: format!("lash-{tag}-{}-underlay", std::process::id()),
            nodes: Vec::new(),
            pods: Vec::new(),
            underlay_made: false,
            next_pod: 0,
        };
        // From here on, drop removes whatever was made.
        c.build(tag, n)?;
        Ok(c)
    }

    fn build(&mut self, tag: &str, n: usize) -> anyhow::Result<()> {
        let u = self.underlay.clone();
        ip(&["netns", "add", &u])?;
        self.underlay_made = true;
        ip(&["-n", &u, "link", "set", "lo", "up"])?;
        sysctl(&u, "net.ipv6.conf.all.disable_ipv6=1")?;
        sysctl(&u, "net.ipv6.conf.default.disable_ipv6=1")?;
        ip(&["-n", &u, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["-n", &u, "link", "set", BRIDGE, "up"])?;
        for i in 0..n {
            let sb = Sandbox::new(&format!("{tag}-n{}", i + 1), 0)
                .with_context(|| format!("building node {}", i + 1))?;
            let node = ClusterNode {
                name: node_name(i),
                addr: node_address(i),
                pod_cidr: pod_cidr(i),
                gateway: Ipv4Addr::new(10, 244, i as u8 + 1, 1),
                member: true,
                agent_args: Vec::new(),
                sb,
            };
            // The bridge port: named after the node in the underlay (the
            // sandbox's own links are sink0 and lxc*, in other namespaces).
            let port = format!("n{}", i + 1);
            let ns = node.sb.node_ns.clone();
            self.nodes.push(node);
            ip(&[
                "-n", &u, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &u, "link", "set", &port, "master", BRIDGE, "up"])?;
            // Deleting the first address of a subnet takes the others with
            // it unless they are promoted: set_node_address relies on that.
            sysctl(&ns, "net.ipv4.conf.eth0.promote_secondaries=1")?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", node_address(i)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        for i in 0..n {
            self.write_node_everywhere(i)?;
        }
        for i in 0..n {
            let node = &mut self.nodes[i];
            node.agent_args = vec![
                "--pod-cidr".into(),
                node.pod_cidr.clone(),
                "--node-name".into(),
                node.name.clone(),
                "--routing-mode".into(),
                self.mode.arg().into(),
            ];
            let args: Vec<&str> = node.agent_args.iter().map(String::as_str).collect();
            node.sb.spawn_agent(&args)?;
        }
        for i in 0..n {
            self.wait_agent_synced(i)?;
        }
        Ok(())
    }

    fn wait_agent_synced(&self, i: usize) -> anyhow::Result<()> {
        let sb = &self.nodes[i].sb;
        if crate::sandbox::wait_for(Duration::from_secs(20), || (sb.syncs() >= 1).then_some(()))
            .is_none()
        {
            bail!(
                "{}'s agent did not report a sync within 20 s; log:\n{}",
                self.nodes[i].name,
                sb.agent_log()
            );
        }
        Ok(())
    }

    pub fn node(&self, i: usize) -> &ClusterNode {
        &self.nodes[i]
    }

    /// Indexes of the nodes still in the cluster.
    pub fn members(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].member)
            .collect()
    }

    fn node_manifest(&self, i: usize) -> String {
        let n = &self.nodes[i];
        manifests::node(&n.name, &n.pod_cidr, n.addr)
    }

    /// Writes node `i`'s Node manifest into every member's directory.
    fn write_node_everywhere(&self, i: usize) -> anyhow::Result<()> {
        let text = self.node_manifest(i);
        let file = manifests::node_file(&self.nodes[i].name);
        for j in self.members() {
            self.nodes[j].sb.write_manifest(&file, &text)?;
        }
        Ok(())
    }

    /// Writes a manifest (a Service, a slice) into every member's directory.
    pub fn write_manifest_everywhere(&self, file: &str, text: &str) -> anyhow::Result<()> {
        for j in self.members() {
            self.nodes[j].sb.write_manifest(file, text)?;
        }
        Ok(())
    }

    // --- pods ---------------------------------------------------------------

    /// A pod `name` on node `i`: a namespace attached by lash-cni ADD run in
    /// the node's namespace. Removed with the cluster (or by `remove_pod`).
    pub fn add_pod(&mut self, i: usize, name: &str) -> anyhow::Result<ClusterPod> {
        self.next_pod += 1;
        let id = format!("{:032x}{:032x}", std::process::id(), self.next_pod);
        let sb = &mut self.nodes[i].sb;
        let netns = format!("{}-{name}", sb.name);
        // The sandbox owns the namespace: it goes with the node whatever
        // happens to the cluster's own bookkeeping.
        sb.add_netns(&netns)?;
        sysctl(&netns, "net.ipv6.conf.all.disable_ipv6=1")?;
        sysctl(&netns, "net.ipv6.conf.default.disable_ipv6=1")?;
        let attached = cni::add_on_node(sb, &id, &netns)
            .with_context(|| format!("attaching pod {name} on {}", self.nodes[i].name))?;
        let pod = ClusterPod {
            name: name.to_string(),
            id,
            netns,
            ip: attached.ip,
            lxc: attached.lxc,
            node: i,
        };
        self.pods.push(pod.clone());
        Ok(pod)
    }

    /// CNI DEL of `pod` and removal of its namespace.
    pub fn remove_pod(&mut self, pod: &ClusterPod) -> anyhow::Result<()> {
        self.pods.retain(|p| p.id != pod.id);
        cni::del_on_node(&self.nodes[pod.node].sb, &pod.id, &pod.netns)?;
        ip(&["netns", "del", &pod.netns]).map(drop)
    }

    /// Starts a lash-podserver in `pod` answering with the pod's name (HTTP
    /// on sandbox::POD_TCP_PORT, UDP on sandbox::POD_UDP_PORT).
    pub fn serve(&mut self, pod: &ClusterPod) -> anyhow::Result<()> {
        self.nodes[pod.node]
            .sb
            .start_server(&pod.netns, &pod.name, None)
    }

    /// `program` to be run inside `pod`'s namespace.
    pub fn pod_cmd(
        &self,
        pod: &ClusterPod,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> anyhow::Result<Command> {
        crate::netns::in_netns(&pod.netns, program, None)
    }

    /// `ping -c COUNT DST EXTRA...` from `pod` (200 ms apart, 1 s to wait for
    /// each answer); whatever the outcome, as counted by ping.
    pub fn ping(
        &self,
        pod: &ClusterPod,
        dst: Ipv4Addr,
        count: u32,
        extra: &[&str],
    ) -> anyhow::Result<Ping> {
        ping_in(&pod.netns, dst, count, extra)
    }

    /// `ping` from node `i`'s own namespace.
    pub fn ping_from_node(
        &self,
        i: usize,
        dst: Ipv4Addr,
        count: u32,
        extra: &[&str],
    ) -> anyhow::Result<Ping> {
        ping_in(&self.nodes[i].sb.node_ns, dst, count, extra)
    }

    /// lash-probe MODE ADDR from `pod` (`extra`: --count, --size): its JSON
    /// lines, one per attempt.
    pub fn probe(
        &self,
        pod: &ClusterPod,
        mode: &str,
        addr: &str,
        extra: &[&str],
    ) -> anyhow::Result<Vec<Value>> {
        let out = Command::new(bin("lash-probe"))
            .args(["--netns", &pod.netns, mode, addr])
            .args(extra)
            .output()
            .context("running lash-probe")?;
        ensure!(
            out.status.success(),
            "lash-probe {mode} {addr} from {}: {}",
            pod.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).with_context(|| format!("probe line {l:?}")))
            .collect()
    }

    /// The pod's eth0 MTU.
    pub fn pod_mtu(&self, pod: &ClusterPod) -> anyhow::Result<u64> {
        let links = ip_json(&pod.netns, &["link", "show", "eth0"]);
        links
            .first()
            .and_then(|l| l["mtu"].as_u64())
            .with_context(|| format!("no MTU for eth0 in {}", pod.netns))
    }

    // --- the underlay -------------------------------------------------------

    /// Captures what enters the underlay bridge (from any node) while `f`
    /// runs, with tcpdump's `filter`; the frames as decoded IPv4 packets.
    pub fn capture<T>(
        &self,
        filter: &str,
        f: impl FnOnce() -> T,
    ) -> anyhow::Result<(T, Vec<Frame>)> {
        let cap = Capture::start(&self.underlay, "any", filter)?;
        let out = f();
        // The last packets of `f` may still be on their way through a veth.
        std::thread::sleep(Duration::from_millis(200));
        Ok((out, cap.finish()?))
    }

    // --- changes to the cluster ---------------------------------------------

    /// Takes node `i` out of the cluster: its Node manifest is deleted from
    /// every other node's directory (as a deleted Node disappears from the
    /// others' watches). Its agent and pods stay as they are.
    pub fn remove_node(&mut self, i: usize) -> anyhow::Result<()> {
        let file = manifests::node_file(&self.nodes[i].name);
        self.nodes[i].member = false;
        for j in self.members() {
            std::fs::remove_file(self.nodes[j].sb.manifests().join(&file))
                .with_context(|| format!("removing {file} from {}", self.nodes[j].name))?;
        }
        Ok(())
    }

    /// Brings a removed node `i` back: its Node manifest into every other
    /// member's directory again (its own directory kept them all).
    pub fn rejoin_node(&mut self, i: usize) -> anyhow::Result<()> {
        self.nodes[i].member = true;
        self.write_node_everywhere(i)
    }

    /// Moves node `i` to underlay address `addr`: the new address is added
    /// to its eth0, its Node manifest rewritten everywhere (its own
    /// directory included) and the old address removed.
    pub fn set_node_address(&mut self, i: usize, addr: Ipv4Addr) -> anyhow::Result<()> {
        let ns = self.nodes[i].sb.node_ns.clone();
        let old = self.nodes[i].addr;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])?;
        self.nodes[i].addr = addr;
        self.write_node_everywhere(i)?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "del",
            &format!("{old}/24"),
            "dev",
            "eth0",
        ])?;
        Ok(())
    }

    /// Stops node `i`'s agent (SIGTERM; SIGKILL if `kill`).
    pub fn stop_agent(&mut self, i: usize, kill: bool) -> anyhow::Result<()> {
        self.nodes[i].sb.stop_agent(kill)
    }

    /// Starts node `i`'s agent again with the arguments it had, and waits
    /// for its first sync.
    pub fn start_agent(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let args: Vec<&str> = node.agent_args.iter().map(String::as_str).collect();
        node.sb.spawn_agent(&args)?;
        self.wait_agent_synced(i)
    }

    pub fn restart_agent(&mut self, i: usize) -> anyhow::Result<()> {
        self.stop_agent(i, false)?;
        self.start_agent(i)
    }

    // --- what each node's agent shows ---------------------------------------

    /// `agent ARGS -o json` on node `i`, parsed.
    pub fn agent_json(&self, i: usize, args: &[&str]) -> anyhow::Result<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.nodes[i].sb.agent_cli(&all)?;
        serde_json::from_str(&out).with_context(|| format!("agent {all:?} on node {i}: {out:?}"))
    }

    /// The security identity node `pod.node`'s agent gave `pod`, from its
    /// `bpf endpoint list`.
    pub fn identity(&self, pod: &ClusterPod) -> anyhow::Result<u32> {
        let list = self.agent_json(pod.node, &["bpf", "endpoint", "list"])?;
        list.as_array()
            .into_iter()
            .flatten()
            .find(|e| e["ip"] == pod.ip.to_string())
            .and_then(|e| e["sec_id"].as_u64())
            .map(|v| v as u32)
            .with_context(|| format!("no endpoint for {} in {list}", pod.ip))
    }

    /// Node `i`'s dropped packets by reason (`agent bpf metrics list`):
    /// (reason, direction) -> packets, forwarded packets left out.
    pub fn drops(
        &self,
        i: usize,
    ) -> anyhow::Result<std::collections::BTreeMap<(u64, String), u64>> {
        let rows = self.agent_json(i, &["bpf", "metrics", "list"])?;
        Ok(rows
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["reason"].as_u64() != Some(0))
            .map(|r| {
                (
                    (
                        r["reason"].as_u64().unwrap_or(0),
                        r["direction"].as_str().unwrap_or("?").to_string(),
                    ),
                    r["packets"].as_u64().unwrap_or(0),
                )
            })
            .collect())
    }

    /// Node `i`'s kernel routes that the agent made (by their protocol).
    pub fn agent_routes(&self, i: usize) -> Vec<Value> {
        ip_json(
            &self.nodes[i].sb.node_ns,
            &["route", "show", "proto", ROUTE_PROTO],
        )
    }

    /// What node `i` shows that differs from the cluster as it now is, or
    /// None when it agrees everywhere: its node list, its tunnel map, the
    /// ipcache entries of other nodes' pod ranges and addresses, and its
    /// routes (with nothing left for a removed node or an old address).
    pub fn disagreement(&self, i: usize) -> Option<String> {
        let mut wrong = Vec::new();
        fn differs(what: &str, want: &dyn std::fmt::Debug, got: &dyn std::fmt::Debug) -> String {
            format!("{what}: want {want:?}, got {got:?}")
        }
        let remote: Vec<&ClusterNode> = self
            .members()
            .into_iter()
            .filter(|&j| j != i)
            .map(|j| &self.nodes[j])
            .collect();
        let me = &self.nodes[i];

        // agent node list: every member, itself marked local.
        let want: BTreeSet<(String, String, String, bool)> = self
            .members()
            .into_iter()
            .map(|j| {
                let n = &self.nodes[j];
                (
                    n.name.clone(),
                    n.addr.to_string(),
                    n.pod_cidr.clone(),
                    j == i,
                )
            })
            .collect();
        match self.agent_json(i, &["node", "list"]) {
            Ok(v) => {
                let got: BTreeSet<(String, String, String, bool)> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|n| {
                        (
                            n["name"].as_str().unwrap_or("?").to_string(),
                            n["address"].as_str().unwrap_or("?").to_string(),
                            n["pod_cidr"].as_str().unwrap_or("?").to_string(),
                            n["local"].as_bool().unwrap_or(false),
                        )
                    })
                    .collect();
                if got != want {
                    wrong.push(differs("node list", &want, &got));
                }
            }
            Err(e) => wrong.push(format!("node list: {e:#}")),
        }

        // bpf tunnel list: each other member's pod range to its address.
        let want: BTreeSet<(String, String)> = remote
            .iter()
            .map(|n| (n.pod_prefix().to_string(), n.addr.to_string()))
            .collect();
        match self.agent_json(i, &["bpf", "tunnel", "list"]) {
            Ok(v) => {
                let got: BTreeSet<(String, String)> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        (
                            t["prefix"].as_str().unwrap_or("?").to_string(),
                            t["endpoint"].as_str().unwrap_or("?").to_string(),
                        )
                    })
                    .collect();
                if got != want {
                    wrong.push(differs("tunnel map", &want, &got));
                }
            }
            Err(e) => wrong.push(format!("tunnel list: {e:#}")),
        }

        // bpf ipcache list: other members' pod ranges (tunnel endpoint: the
        // node) and addresses (remote-node); nothing else in the cluster's
        // pod space but its own range's entries, nothing else on the
        // underlay but its own address.
        match self.agent_json(i, &["bpf", "ipcache", "list"]) {
            Ok(v) => {
                let entries = v.as_array().cloned().unwrap_or_default();
                let mut ranges = BTreeSet::new();
                let mut nodes = BTreeSet::new();
                for e in &entries {
                    let prefix = e["prefix"].as_str().and_then(|p| {
                        let (a, b) = p.split_once('/')?;
                        Some((a.parse::<Ipv4Addr>().ok()?, b.parse::<u8>().ok()?))
                    });
                    let Some((addr, bits)) = prefix else {
                        wrong.push(format!("ipcache entry without a prefix: {e}"));
                        continue;
                    };
                    let o = addr.octets();
                    let tunnel = e["tunnel_endpoint"].as_str().unwrap_or("").to_string();
                    let identity = e["identity"].as_u64().unwrap_or(0);
                    if o[0] == 10 && o[1] == 244 && o[2] != me.gateway.octets()[2] {
                        ranges.insert((format!("{addr}/{bits}"), tunnel));
                    } else if o[0..3] == [192, 168, 50] && addr != me.addr {
                        nodes.insert((format!("{addr}/{bits}"), identity));
                    }
                }
                let want_ranges: BTreeSet<(String, String)> = remote
                    .iter()
                    .map(|n| (n.pod_cidr.clone(), n.addr.to_string()))
                    .collect();
                if ranges != want_ranges {
                    wrong.push(differs(
                        "ipcache: other nodes' pod ranges",
                        &want_ranges,
                        &ranges,
                    ));
                }
                let want_nodes: BTreeSet<(String, u64)> = remote
                    .iter()
                    .map(|n| (format!("{}/32", n.addr), 6))
                    .collect();
                if nodes != want_nodes {
                    wrong.push(differs(
                        "ipcache: other nodes' addresses",
                        &want_nodes,
                        &nodes,
                    ));
                }
            }
            Err(e) => wrong.push(format!("ipcache list: {e:#}")),
        }

        // The agent's kernel routes: one per other member's pod range, via
        // the node (native) or into the tunnel from the node's gateway.
        let want: BTreeSet<String> = remote
            .iter()
            .map(|n| match self.mode {
                RoutingMode::Native => format!("{} via {} dev eth0", n.pod_cidr, n.addr),
                RoutingMode::Tunnel => {
                    format!("{} dev {TUNNEL_DEVICE} src {}", n.pod_cidr, me.gateway)
                }
            })
            .collect();
        let got: BTreeSet<String> = self
            .agent_routes(i)
            .iter()
            .map(|r| {
                let mut s = r["dst"].as_str().unwrap_or("?").to_string();
                if let Some(gw) = r["gateway"].as_str() {
                    s.push_str(&format!(" via {gw}"));
                }
                s.push_str(&format!(" dev {}", r["dev"].as_str().unwrap_or("?")));
                if let Some(src) = r["prefsrc"].as_str() {
                    s.push_str(&format!(" src {src}"));
                }
                s
            })
            .collect();
        if got != want {
            wrong.push(differs("routes", &want, &got));
        }

        (!wrong.is_empty()).then(|| format!("{}: {}", me.name, wrong.join("; ")))
    }

    /// Waits until every member agrees with the cluster as it now is; the
    /// time it took, or what was still wrong at `timeout`, with the logs.
    pub fn wait_converged(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            let wrong: Vec<String> = self
                .members()
                .into_iter()
                .filter_map(|i| self.disagreement(i))
                .collect();
            if wrong.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!(
                    "not converged after {timeout:?}:\n{}\n{}",
                    wrong.join("\n"),
                    self.agent_logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every agent's log, headed by its node's name (for failure messages).
    pub fn agent_logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {} agent log ---\n{}", n.name, n.sb.agent_log()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn sysctl(ns: &str, setting: &str) -> anyhow::Result<()> {
    ip(&["netns", "exec", ns, "sysctl", "-qw", setting]).map(drop)
}

fn ping_in(ns: &str, dst: Ipv4Addr, count: u32, extra: &[&str]) -> anyhow::Result<Ping> {
    let out = crate::netns::in_netns(ns, "ping", None)?
        .args(["-n", "-q", "-c", &count.to_string(), "-i", "0.2", "-W", "1"])
        .args(extra)
        .arg(dst.to_string())
        .output()
        .context("running ping (apt-get install iputils-ping)")?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // "3 packets transmitted, 3 received, 0% packet loss, time 402ms"
    let count_before = |word: &str| -> u32 {
        output
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .and_then(|l| {
                l.split(", ")
                    .find(|part| part.contains(word))
                    .and_then(|part| part.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0)
    };
    Ok(Ping {
        transmitted: count_before("transmitted"),
        received: count_before("received"),
        output,
    })
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Pods first, while their agents run: DEL frees the address and the
        // endpoint. A node whose agent is down gets none; its namespaces go
        // with the sandbox, the lxc with them.
        for pod in std::mem::take(&mut self.pods).iter().rev() {
            let sb = &self.nodes[pod.node].sb;
            if sb.agent_pid().is_some() {
                let _ = cni::del_on_node(sb, &pod.id, &pod.netns);
            }
        }
        // Each sandbox: agent and servers by pid, pins, namespaces, cgroup.
        self.nodes.clear();
        if self.underlay_made {
            let _ = ip(&["netns", "del", &self.underlay]);
        }
    }
}
