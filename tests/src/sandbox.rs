//! A throw-away node: a "node" network namespace with a client cgroup, and pods
//! in namespaces of their own, each wired to the node by a veth pair named like
//! the CNI's (lxcN on the node side, eth0 in the pod), plus a bpffs directory and
//! a work directory for manifests and agent state.
//!
//! Everything is created under names unique to the sandbox and removed on drop,
//! also when a test fails half-way. No address is ever reached from the
//! machine's root namespace: the client runs inside the node namespace, and the
//! service range is routed there into a sink namespace that drops everything,
//! so an untranslated packet goes nowhere (and is counted on the way).

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

/// The service range, routed into the sink namespace from the node.
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// Next hop of the service range: a static neighbour on sink0.
const SINK_GW: &str = "169.254.2.2";
/// The address every lxc device answers for: the pods' default gateway.
const GATEWAY: &str = "169.254.1.1";
pub const POD_TCP_PORT: u16 = 8080;
pub const POD_UDP_PORT: u16 = 5353;

pub struct Pod {
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    pub lxc: String,
}

pub struct Sandbox {
    pub name: String,
    pub node_ns: String,
    pub pods: Vec<Pod>,
    pub cgroup: PathBuf,
    pub bpf_root: PathBuf,
    pub work: PathBuf,
    /// When set, the agent watches the API server of this kubeconfig
    /// instead of the manifest directory.
    pub kubeconfig: Option<PathBuf>,
    namespaces: Vec<String>,
    servers: Vec<Child>,
    agent: Option<Child>,
}

/// Where the workspace's binaries are: $LASH_BIN_DIR, else target/debug.
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("LASH_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug").join(name)
}

/// Packets device `dev` in namespace `ns` has sent (its tx counter).
pub fn tx_packets(ns: &str, dev: &str) -> anyhow::Result<u64> {
    let out = ip(&["-n", ns, "-s", "-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v[0]["stats64"]["tx"]["packets"]
        .as_u64()
        .with_context(|| format!("no tx counter for {dev} in {ns}: {out}"))
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").args(args))
}

/// `ip -j -n NS ARGS`, parsed (an empty answer is an empty list). Panics on
/// failure, as `bpftool` does: test support.
pub fn ip_json(ns: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["-j", "-n", ns];
    all.extend_from_slice(args);
    let out = ip(&all).unwrap_or_else(|e| panic!("{e:#}"));
    if out.trim().is_empty() {
        return Vec::new();
    }
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip {all:?} gave {out:?}: {e}"))
}

/// `bpftool -j ARGS`, parsed; an empty answer (an update, a cgroup with
/// nothing attached) is Null. Panics with bpftool's message on failure: this
/// is test support, and the test should stop there.
pub fn bpftool<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> serde_json::Value {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .expect("running bpftool");
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&out.stdout).expect("bpftool's JSON")
}

/// Polls `f` every 5 ms until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Sandbox {
    /// A node with `pods` pods at 10.244.0.11, .12, ... Requires root.
    pub fn new(tag: &str, pods: usize) -> anyhow::Result<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("sandboxes need root (network namespaces, cgroups, bpffs)");
        }
        let name = format!("lash-{tag}-{}", std::process::id());
        let cg_root = Path::new("/sys/fs/cgroup/unified");
        let cg_root = if cg_root.join("cgroup.procs").exists() {
            cg_root
        } else {
            Path::new("/sys/fs/cgroup")
        };
        let mut sb = Sandbox {
            node_ns: format!("{name}-node"),
            pods: Vec::new(),
            cgroup: cg_root.join(&name),
            bpf_root: Path::new("/sys/fs/bpf").join(&name),
            work: std::env::temp_dir().join(&name),
            namespaces: Vec::new(),
            servers: Vec::new(),
            agent: None,
            kubeconfig: None,
            name,
        };
        // From here on, drop cleans up whatever was made.
        sb.build(pods)?;
        Ok(sb)
    }

    fn build(&mut self, pods: usize) -> anyhow::Result<()> {
        std::fs::create_dir_all(self.work.join("manifests"))?;
        std::fs::create_dir_all(&self.cgroup)
            .with_context(|| format!("creating cgroup {}", self.cgroup.display()))?;
        let node = self.node_ns.clone();
        self.add_netns(&node)?;
        // The service range routes into a sink namespace that drops whatever
        // arrives: a connect() to a VIP finds a route (as on a real node, where
        // kube-proxy's DNAT comes after the route lookup), and an untranslated
        // packet is counted on sink0 and dies inside the sandbox.
        // IPv6 off, so the only packets on sink0 are the ones we look for.
        let sink = format!("{}-sink", self.name);
        self.add_netns(&sink)?;
        for ns in [&node, &sink] {
            for scope in ["all", "default"] {
                run(Command::new("ip")
                    .args(["netns", "exec", ns, "sysctl", "-qw"])
                    .arg(format!("net.ipv6.conf.{scope}.disable_ipv6=1")))?;
            }
        }
        ip(&[
            "-n", &node, "link", "add", "sink0", "type", "veth", "peer", "name", "eth0", "netns",
            &sink,
        ])?;
        ip(&["-n", &sink, "link", "set", "eth0", "up"])?;
        ip(&["-n", &node, "link", "set", "sink0", "up"])?;
        ip(&[
            "-n",
            &node,
            "neigh",
            "add",
            SINK_GW,
            "lladdr",
            "02:00:00:00:00:02",
            "dev",
            "sink0",
            "nud",
            "permanent",
        ])?;
        ip(&[
            "-n",
            &node,
            "route",
            "add",
            SERVICE_CIDR,
            "via",
            SINK_GW,
            "dev",
            "sink0",
            "onlink",
        ])?;
        for i in 1..=pods {
            let pod = Pod {
                name: format!("pod-{i}"),
                netns: format!("{}-p{i}", self.name),
                ip: Ipv4Addr::new(10, 244, 0, 10 + i as u8),
                lxc: format!("lxc{i}"),
            };
            self.add_netns(&pod.netns)?;
            let (ns, lxc, addr) = (&pod.netns, &pod.lxc, format!("{}/32", pod.ip));
            ip(&[
                "-n", &node, "link", "add", lxc, "type", "veth", "peer", "name", "eth0", "netns",
                ns,
            ])?;
            ip(&[
                "-n",
                &node,
                "addr",
                "add",
                &format!("{GATEWAY}/32"),
                "dev",
                lxc,
            ])?;
            ip(&["-n", &node, "link", "set", lxc, "up"])?;
            ip(&["-n", &node, "route", "add", &addr, "dev", lxc])?;
            ip(&["-n", ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                ns,
                "route",
                "add",
                &format!("{GATEWAY}/32"),
                "dev",
                "eth0",
                "scope",
                "link",
            ])?;
            ip(&[
                "-n", ns, "route", "add", "default", "via", GATEWAY, "dev", "eth0",
            ])?;
            self.pods.push(pod);
        }
        Ok(())
    }

    /// Makes network namespace `name` (loopback up), removed with the sandbox.
    pub fn add_netns(&mut self, name: &str) -> anyhow::Result<()> {
        ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    pub fn manifests(&self) -> PathBuf {
        self.work.join("manifests")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.work.join("state")
    }

    /// Writes a manifest atomically (a dot-file renamed into place), as a
    /// careful editor or `kubectl`-like tool would.
    pub fn write_manifest(&self, file: &str, text: &str) -> anyhow::Result<()> {
        // Written next to the directory and renamed in: one event, the
        // complete file. A temporary file inside it would wake the agent on
        // its own, and a sync of "nothing changed yet" would count as the
        // sync a test waits for.
        let tmp = self.work.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, self.manifests().join(file))?;
        Ok(())
    }

    /// Starts a lash-podserver in every pod and waits until each listens.
    pub fn start_pod_servers(&mut self) -> anyhow::Result<()> {
        self.start_pod_servers_on(None)
    }

    /// The same, with the servers pinned to one CPU (benchmarks).
    pub fn start_pod_servers_on(&mut self, cpu: Option<usize>) -> anyhow::Result<()> {
        let pods: Vec<(String, String)> = self
            .pods
            .iter()
            .map(|p| (p.netns.clone(), p.name.clone()))
            .collect();
        for (netns, name) in pods {
            self.start_server(&netns, &name, cpu)?;
        }
        Ok(())
    }

    /// Starts a lash-podserver answering as `name` in namespace `netns` (TCP
    /// on POD_TCP_PORT, UDP on POD_UDP_PORT) and waits until it listens; it
    /// is ended with the sandbox.
    pub fn start_server(
        &mut self,
        netns: &str,
        name: &str,
        cpu: Option<usize>,
    ) -> anyhow::Result<()> {
        let mut cmd = Command::new(bin("lash-podserver"));
        if let Some(cpu) = cpu {
            cmd.args(["--cpu", &cpu.to_string()]);
        }
        let mut child = cmd
            .args(["--netns", netns, "--name", name])
            .args([
                "--tcp",
                &POD_TCP_PORT.to_string(),
                "--udp",
                &POD_UDP_PORT.to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin("lash-podserver").display()))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        self.servers.push(child);
        if line.trim() != "ready" {
            bail!("pod server in {netns} did not start");
        }
        Ok(())
    }

    /// Base command for the agent binary on this sandbox's bpffs and state
    /// dirs, run inside the node namespace: what the agent makes for pods
    /// (`lash_host`, the lxcs' programs) and the addresses it reads as the
    /// node's own must be the sandbox's, never the machine's. nsenter, not
    /// `ip netns exec`, keeps /sys (bpffs, cgroups) visible, and execs the
    /// agent in place, so the child's pid is the agent's.
    pub fn agent_cmd(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.node_ns))
            .arg(bin("agent"))
            .arg("--bpf-root")
            .arg(&self.bpf_root)
            .arg("--state-dir")
            .arg(self.state_dir());
        c
    }

    /// The node namespace's path, where a CNI plugin must run to make pods'
    /// veths next to the agent.
    pub fn node_netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.node_ns)
    }

    /// Runs an agent CLI command and returns its stdout.
    pub fn agent_cli(&self, args: &[&str]) -> anyhow::Result<String> {
        run(self.agent_cmd().args(args))
    }

    /// The backend IPs `agent service list` shows behind `frontend`
    /// ("10.96.0.10:80/TCP"); None while the frontend is not programmed.
    pub fn programmed_backends(
        &self,
        frontend: &str,
    ) -> Option<std::collections::BTreeSet<String>> {
        let out = self.agent_cli(&["service", "list", "-o", "json"]).ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let svc = v.as_array()?.iter().find(|s| s["frontend"] == frontend)?;
        Some(
            svc["backends"]
                .as_array()?
                .iter()
                .filter_map(|b| b["address"].as_str()?.split(':').next().map(str::to_string))
                .collect(),
        )
    }

    /// Number of reconciles the running agent has finished, from its status.
    pub fn syncs(&self) -> u64 {
        std::fs::read_to_string(self.state_dir().join("status.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["syncs"].as_u64())
            .unwrap_or(0)
    }

    /// Starts `agent run` on this sandbox and waits for its first reconcile.
    pub fn start_agent(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        self.start_agent_timeout(extra, Duration::from_secs(20))
    }

    /// The same, waiting up to `timeout` for the first reconcile.
    pub fn start_agent_timeout(&mut self, extra: &[&str], timeout: Duration) -> anyhow::Result<()> {
        self.start_agent_with(extra, &[], timeout)
    }

    /// `start_agent` with extra environment variables for the agent (a
    /// failpoint: `LASH_FAILPOINT`).
    pub fn start_agent_env(&mut self, extra: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
        self.start_agent_with(extra, env, Duration::from_secs(20))
    }

    fn start_agent_with(
        &mut self,
        extra: &[&str],
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        self.spawn_agent_with(extra, env)?;
        if wait_for(timeout, || (self.syncs() >= 1).then_some(())).is_none() {
            bail!(
                "agent did not report a sync within {timeout:?}; log:\n{}",
                self.agent_log()
            );
        }
        Ok(())
    }

    /// Starts `agent run` without waiting for anything (an agent that is not
    /// meant to sync, or whose first sync the test watches itself).
    pub fn spawn_agent(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        self.spawn_agent_with(extra, &[])
    }

    fn spawn_agent_with(&mut self, extra: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(self.state_dir().join("status.json"));
        let log = std::fs::File::create(self.work.join("agent.log"))?;
        let source = match &self.kubeconfig {
            Some(k) => ["--kubeconfig".into(), k.clone()],
            None => ["--manifests".into(), self.manifests()],
        };
        let child = self
            .agent_cmd()
            .envs(env.iter().copied())
            .arg("run")
            .args(source)
            .arg("--cgroup")
            .arg(&self.cgroup)
            .args(extra)
            .stderr(log)
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin("agent").display()))?;
        self.agent = Some(child);
        Ok(())
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.work.join("agent.log")).unwrap_or_default()
    }

    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// Stops the agent we started (SIGTERM, or SIGKILL if `kill`) and reaps it.
    pub fn stop_agent(&mut self, kill: bool) -> anyhow::Result<()> {
        if let Some(mut child) = self.agent.take() {
            let sig = if kill { libc::SIGKILL } else { libc::SIGTERM };
            // SAFETY: signalling our own child by its pid.
            unsafe { libc::kill(child.id() as i32, sig) };
            child.wait()?;
        }
        Ok(())
    }

    /// Waits until the agent has finished a reconcile that started after now.
    pub fn wait_synced_after(&self, since: u64, timeout: Duration) -> bool {
        wait_for(timeout, || (self.syncs() > since).then_some(())).is_some()
    }

    /// bpftool's view of the map pinned as `name` under the sandbox's bpffs.
    pub fn map_show(&self, name: &str) -> serde_json::Value {
        bpftool([
            OsStr::new("map"),
            OsStr::new("show"),
            OsStr::new("pinned"),
            self.bpf_root.join(name).as_os_str(),
        ])
    }

    /// Programs attached to the sandbox's cgroup, by the kernel's account.
    pub fn attached_programs(&self) -> usize {
        bpftool([
            OsStr::new("cgroup"),
            OsStr::new("show"),
            self.cgroup.as_os_str(),
        ])
        .as_array()
        .map_or(0, Vec::len)
    }

    /// `agent status -o json`, parsed.
    pub fn status_json(&self) -> serde_json::Value {
        let out = self
            .agent_cli(&["status", "-o", "json"])
            .expect("agent status");
        serde_json::from_str(&out).expect("agent status -o json")
    }

    /// IPv4 packets the node sent towards the service range untranslated.
    pub fn sink_tx_packets(&self) -> anyhow::Result<u64> {
        tx_packets(&self.node_ns, "sink0")
    }

    /// A probe command inside the node namespace and the client cgroup.
    pub fn probe_cmd(&self, mode: &str, addr: &str) -> Command {
        let mut c = Command::new(bin("lash-probe"));
        c.arg("--cgroup")
            .arg(&self.cgroup)
            .args(["--netns", &self.node_ns, mode, addr]);
        c
    }

    /// Runs the probe and returns its JSON lines.
    pub fn probe(
        &self,
        mode: &str,
        addr: &str,
        count: usize,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let out = run(self
            .probe_cmd(mode, addr)
            .args(["--count", &count.to_string()]))?;
        out.lines()
            .map(|l| serde_json::from_str(l).with_context(|| format!("probe line {l:?}")))
            .collect()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Our processes first (by the ids we started), so the cgroup empties.
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        for mut s in self.servers.drain(..) {
            let _ = s.kill();
            let _ = s.wait();
        }
        // Removing the pins detaches the links and frees the maps: no process
        // of ours holds them any more.
        let _ = std::fs::remove_dir_all(&self.bpf_root);
        for ns in self.namespaces.drain(..).rev() {
            let _ = ip(&["netns", "del", &ns]);
        }
        // A cgroup can be removed once its last process has exited, which the
        // kernel notes asynchronously.
        let _ = wait_for(Duration::from_secs(5), || {
            (!self.cgroup.exists() || std::fs::remove_dir(&self.cgroup).is_ok()).then_some(())
        });
        let _ = std::fs::remove_dir_all(&self.work);
    }
}
