//! Network namespaces the pod benches make for themselves (all named
//! `lash-bench-*-PID-*`), the processes they start inside them, and their
//! removal: on drop, so also on an error or an interrupt half-way.

use std::process::{Child, Command};

use anyhow::bail;

use super::probe::run_ok;

/// Where namespaces live and how a child is started in one: shared with
/// the test support (the multi-node cluster attaches pods the same way).
pub use lash_tests::netns::{in_netns, netns_path};

/// Runs `ip ARGS`.
pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    run_ok(Command::new("ip").args(args))
}

/// `sysctl -qw SETTING` inside namespace `ns`.
pub fn sysctl(ns: &str, setting: &str) -> anyhow::Result<()> {
    run_ok(Command::new("ip").args(["netns", "exec", ns, "sysctl", "-qw", setting])).map(drop)
}

/// Namespaces and server processes of one bench arm; dropping it ends the
/// processes (by the ids we started) and deletes the namespaces, with
/// whatever devices were in them.
pub struct Namespaces {
    /// `lash-bench-TAG-PID`: every namespace name starts with it.
    pub prefix: String,
    names: Vec<String>,
    children: Vec<Child>,
}

impl Namespaces {
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("the pod benches need root (network namespaces)");
        }
        Ok(Namespaces {
            prefix: format!("lash-bench-{tag}-{}", std::process::id()),
            names: Vec::new(),
            children: Vec::new(),
        })
    }

    /// Makes `PREFIX-SUFFIX` with lo up and IPv6 off (no router solicitations
    /// or DAD on the links being measured); returns its name.
    pub fn add(&mut self, suffix: &str) -> anyhow::Result<String> {
        let name = format!("{}-{suffix}", self.prefix);
        ip(&["netns", "add", &name])?;
        self.names.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        for scope in ["all", "default"] {
            sysctl(&name, &format!("net.ipv6.conf.{scope}.disable_ipv6=1"))?;
        }
        Ok(name)
    }

    /// Keeps `child` to be ended on drop.
    pub fn adopt(&mut self, child: Child) -> u32 {
        let id = child.id();
        self.children.push(child);
        id
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for mut c in self.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.names.drain(..).rev() {
            let _ = ip(&["netns", "del", &ns]);
        }
    }
}

/// Namespaces whose names start with `prefix` (to check that none is left).
pub fn left_over(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a process (by pid) has a TCP socket listening on `port`, read
/// from its own view of the network (/proc/PID/net/tcp{,6} show the
/// namespace it is in): no probe connection is needed to see a server is up.
pub fn listening(pid: u32, port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["tcp", "tcp6"].iter().any(|f| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{f}"))
            .map(|t| {
                t.lines().skip(1).any(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    // local_address is column 1, st column 3; 0A is LISTEN.
                    cols.len() > 3 && cols[1].ends_with(&want) && cols[3] == "0A"
                })
            })
            .unwrap_or(false)
    })
}
