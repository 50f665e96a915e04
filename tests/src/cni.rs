//! Running the built `lash-cni` the way a container runtime does: exactly the
//! given `CNI_*` environment, the configuration on stdin, and the outcome
//! read back as the spec shapes it.
//!
//! The plugin makes and deletes links in the network namespace it runs in
//! (GC deletes every `lxc…` veth it does not know), so it never runs in the
//! machine's own: `run` gives it a fresh, empty namespace of its own, and
//! `run_in` the test's node namespace.

use std::{
    fs::File,
    io::Write,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::Path,
    process::{Command, Stdio},
};

use serde_json::Value;

use crate::sandbox::bin;

/// One plugin run.
pub struct CniRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the plugin with exactly `vars` as its environment and `stdin`, in a
/// network namespace of its own that ends with it.
pub fn run(vars: &[(&str, &str)], stdin: &str) -> CniRun {
    let mut cmd = plugin();
    // SAFETY: unshare and geteuid are async-signal-safe; nothing else runs
    // between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // Root gets the namespace directly; anyone else through a user
            // namespace (without one, an unprivileged plugin can change no
            // links anyway, so it may run where it is).
            let flags = if libc::geteuid() == 0 {
                libc::CLONE_NEWNET
            } else {
                libc::CLONE_NEWUSER | libc::CLONE_NEWNET
            };
            if libc::unshare(flags) != 0 && libc::geteuid() == 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    spawn(cmd, vars, stdin)
}

/// Runs the plugin inside the network namespace at `netns` (a node's, as
/// `ip netns add` makes them: /run/netns/NAME).
pub fn run_in(netns: &Path, vars: &[(&str, &str)], stdin: &str) -> CniRun {
    let ns = File::open(netns).unwrap_or_else(|e| panic!("opening {}: {e}", netns.display()));
    let fd = ns.as_raw_fd();
    let mut cmd = plugin();
    // SAFETY: setns is async-signal-safe; `ns` outlives the spawn below.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = spawn(cmd, vars, stdin);
    drop(ns);
    out
}

fn plugin() -> Command {
    let path = bin("lash-cni");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    Command::new(&path)
}

fn spawn(mut cmd: Command, vars: &[(&str, &str)], stdin: &str) -> CniRun {
    let mut child = cmd
        .env_clear()
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lash-cni");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    CniRun {
        success: out.status.success(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

impl CniRun {
    /// The error object of a failed run, after checking the spec's shape: a
    /// non-zero exit, one JSON object on stdout with `cniVersion`, `code`,
    /// `msg` and `details`, and a log line on stderr.
    pub fn error(&self) -> Value {
        assert!(
            !self.success,
            "expected failure, got success: {}",
            self.stdout
        );
        let err: Value = serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {:?}", self.stdout));
        for key in ["cniVersion", "msg", "details"] {
            assert!(err[key].is_string(), "{key} missing or not a string: {err}");
        }
        assert!(err["code"].is_u64(), "code missing: {err}");
        assert!(
            self.stderr.contains("lash-cni: error"),
            "stderr has no log line: {:?}",
            self.stderr
        );
        err
    }

    pub fn code(&self) -> u64 {
        self.error()["code"].as_u64().unwrap()
    }

    pub fn msg(&self) -> String {
        self.error()["msg"].as_str().unwrap().to_string()
    }

    /// Success as the spec wants it for DEL, GC and STATUS: exit 0, nothing
    /// on stdout.
    pub fn assert_quiet_success(&self, what: &str) {
        assert!(
            self.success && self.stdout.trim().is_empty(),
            "{what}: expected a silent success, got stdout {:?} stderr {:?}",
            self.stdout,
            self.stderr
        );
    }
}

/// Cilium's host-side name, as lash-cni gives it: "lxc" and the first 12
/// hex digits of sha256("<container id>:<ifname>"), written here from the
/// definition (not through the plugin's code) so a test can catch a change.
pub fn lxc_name(container: &str, ifname: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{container}:{ifname}"));
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("lxc{}", &hex[..12])
}

/// What a successful ADD gave a pod: its address and the node-side device.
pub struct Attached {
    pub ip: std::net::Ipv4Addr,
    pub lxc: String,
}

/// Where the agent of sandbox `sb` serves the CNI API.
pub fn agent_socket(sb: &crate::sandbox::Sandbox) -> std::path::PathBuf {
    lash_api::socket_path(&sb.state_dir())
}

/// The plugin configuration a runtime hands lash-cni for sandbox `sb`'s
/// agent (CNI 1.0.0).
pub fn plugin_conf(sb: &crate::sandbox::Sandbox) -> Value {
    serde_json::json!({"cniVersion": "1.0.0", "name": "lash", "type": "lash-cni",
                       "agentSocket": agent_socket(sb)})
}

/// lash-cni COMMAND for container `id` whose namespace is `netns_name` (an
/// `ip netns` name), run inside the sandbox's node namespace as a runtime on
/// that node would; its result (Null when it prints none). Errors instead
/// of panicking: cleanup calls it too.
fn on_node(
    sb: &crate::sandbox::Sandbox,
    command: &str,
    id: &str,
    netns_name: &str,
) -> anyhow::Result<Value> {
    use anyhow::Context as _;
    let plugin = bin("lash-cni");
    let mut child = crate::netns::in_netns(&sb.node_ns, &plugin, None)?
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", crate::netns::netns_path(netns_name))
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
        .write_all(plugin_conf(sb).to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        anyhow::bail!(
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

/// lash-cni ADD of the pod namespace `netns_name` on sandbox `sb`'s node;
/// checks the address it reports is the one the pod's eth0 got.
pub fn add_on_node(
    sb: &crate::sandbox::Sandbox,
    id: &str,
    netns_name: &str,
) -> anyhow::Result<Attached> {
    use anyhow::Context as _;
    let r = on_node(sb, "ADD", id, netns_name)?;
    let addr = r["ips"][0]["address"]
        .as_str()
        .with_context(|| format!("ADD result without an address: {r}"))?;
    let ip = addr
        .split('/')
        .next()
        .unwrap_or(addr)
        .parse()
        .with_context(|| format!("ADD result address {addr:?}"))?;
    let lxc = r["interfaces"][0]["name"]
        .as_str()
        .with_context(|| format!("ADD result without the host interface: {r}"))?
        .to_string();
    let shown = crate::sandbox::ip(&["-n", netns_name, "-4", "-o", "addr", "show", "dev", "eth0"])?;
    anyhow::ensure!(
        shown.contains(addr),
        "ADD said {addr}, {netns_name} has: {shown}"
    );
    Ok(Attached { ip, lxc })
}

/// lash-cni DEL of the pod namespace `netns_name` on sandbox `sb`'s node.
pub fn del_on_node(sb: &crate::sandbox::Sandbox, id: &str, netns_name: &str) -> anyhow::Result<()> {
    on_node(sb, "DEL", id, netns_name).map(drop)
}
