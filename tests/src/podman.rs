//! Podman as the CNI client (../shared/toolchain.md, 7): containers on a
//! sandbox's lash network, made by the real runtime calling lash-cni.
//!
//! Everything podman keeps lives under the sandbox's work dir (its storage,
//! run dir, config and CNI config), podman itself runs inside the sandbox's
//! node namespace (nsenter, so /sys stays visible to the plugin), and every
//! container names the test's own network: a packet our programs fail to
//! handle dies in the node namespace, never on the machine's routes.
//!
//! The containers' root is a busybox tree; the host's libraries and the
//! test binaries (lash-probe, lash-podserver) are bind-mounted read-only so
//! a container can run them. A container may be put under the sandbox's
//! cgroup (`--cgroup-parent`), where the socket programs apply, or left
//! outside it, where only the tc programs see its traffic.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{bail, Context as _};

use crate::sandbox::{bin, Sandbox};

const APPLETS: &[&str] = &[
    "sh", "ip", "ping", "wget", "httpd", "sleep", "cat", "echo", "nc", "arp", "mkdir", "hostname",
];

pub struct Podman {
    work: PathBuf,
    node_ns: String,
    /// The sandbox cgroup's name under the v2 root: `--cgroup-parent`.
    cgroup_name: String,
    /// The sandbox's cgroup itself.
    cgroup: PathBuf,
    pub network: String,
    containers: Vec<String>,
}

/// What `podman run` gets for a container.
pub struct Container<'a> {
    pub name: &'a str,
    /// Under the sandbox's cgroup, where socket load balancing applies.
    pub in_lb_cgroup: bool,
    pub cmd: &'a [&'a str],
}

impl Podman {
    /// Podman for `sb`, with one CNI network `network` whose only plugin is
    /// lash-cni talking to `sb`'s agent; `plugin_conf` adds keys to the
    /// plugin's entry.
    pub fn new(sb: &Sandbox, network: &str) -> anyhow::Result<Self> {
        let work = sb.work.join("podman");
        let p = Podman {
            work: work.clone(),
            node_ns: sb.node_ns.clone(),
            cgroup_name: sb
                .cgroup
                .file_name()
                .context("the sandbox cgroup has a name")?
                .to_string_lossy()
                .into_owned(),
            cgroup: sb.cgroup.clone(),
            network: network.into(),
            containers: Vec::new(),
        };
        let rootfs = p.rootfs();
        std::fs::create_dir_all(rootfs.join("bin"))?;
        for d in [
            "lib", "lib64", "usr/lib", "probe", "tmp", "etc", "proc", "sys", "dev",
        ] {
            std::fs::create_dir_all(rootfs.join(d))?;
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .context("busybox-static is needed (xtask setup installs it)")?;
        for a in APPLETS {
            let link = rootfs.join("bin").join(a);
            if !link.exists() {
                std::os::unix::fs::symlink("busybox", link)?;
            }
        }
        let plugins = work.join("plugins");
        std::fs::create_dir_all(&plugins)?;
        std::fs::copy(bin("lash-cni"), plugins.join("lash-cni"))
            .context("the lash-cni binary (cargo build)")?;
        let cni = work.join("cni");
        std::fs::create_dir_all(&cni)?;
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": network,
            "plugins": [{
                "type": "lash-cni",
                "agentSocket": lash_api::socket_path(&sb.state_dir()),
            }],
        });
        std::fs::write(
            cni.join(format!("{network}.conflist")),
            serde_json::to_vec_pretty(&conflist)?,
        )?;
        std::fs::write(
            p.conf(),
            format!(
                "[containers]\ncgroupns = \"host\"\n\
                 default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
                 [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n\
                 [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\n",
                plugins.display()
            ),
        )?;
        Ok(p)
    }

    fn rootfs(&self) -> PathBuf {
        self.work.join("rootfs")
    }

    fn conf(&self) -> PathBuf {
        self.work.join("containers.conf")
    }

    /// `podman` with this sandbox's storage and config, in the node namespace.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.node_ns))
            .arg("podman")
            .arg("--root")
            .arg(self.work.join("storage"))
            .arg("--runroot")
            .arg(self.work.join("run"))
            .arg("--cni-config-dir")
            .arg(self.work.join("cni"))
            .env("CONTAINERS_CONF", self.conf());
        c
    }

    fn output(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.cmd()
            .args(args)
            .output()
            .with_context(|| format!("running podman {args:?}"))
    }

    /// Starts a detached container on the lash network.
    pub fn run(&mut self, c: &Container) -> anyhow::Result<()> {
        let probe_dir = bin("lash-probe")
            .parent()
            .map(Path::to_path_buf)
            .context("test binaries' dir")?
            .canonicalize()?;
        let mut args: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            c.name.into(),
            "--hostname".into(),
            c.name.into(),
            "--network".into(),
            self.network.clone(),
            "--tmpfs".into(),
            "/tmp".into(),
        ];
        for (host, inside) in [
            ("/lib".into(), "/lib"),
            ("/lib64".into(), "/lib64"),
            ("/usr/lib".into(), "/usr/lib"),
            (probe_dir, "/probe"),
        ] {
            args.push("-v".into());
            args.push(format!("{}:{inside}:ro", host.display()));
        }
        if c.in_lb_cgroup {
            args.push(format!("--cgroup-parent=/{}", self.cgroup_name));
        }
        args.push("--rootfs".into());
        args.push(self.rootfs().display().to_string());
        args.extend(c.cmd.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.containers.push(c.name.into());
        let out = self.output(&refs)?;
        if !out.status.success() {
            bail!(
                "podman run {}: {}",
                c.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Runs `cmd` in container `name`; its output, whatever the exit status.
    pub fn exec(&self, name: &str, cmd: &[&str]) -> anyhow::Result<Output> {
        let mut args = vec!["exec", name];
        args.extend(cmd);
        self.output(&args)
    }

    /// `exec` that must succeed; its stdout.
    pub fn exec_ok(&self, name: &str, cmd: &[&str]) -> anyhow::Result<String> {
        let out = self.exec(name, cmd)?;
        if !out.status.success() {
            bail!(
                "{cmd:?} in {name} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The container's IPv4 address on eth0.
    pub fn ip_of(&self, name: &str) -> anyhow::Result<String> {
        let out = self.exec_ok(name, &["ip", "-4", "-o", "addr", "show", "eth0"])?;
        out.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .map(str::to_string)
            .with_context(|| format!("no IPv4 address on eth0 of {name}: {out}"))
    }

    /// The container's init pid, as the machine sees it.
    pub fn pid_of(&self, name: &str) -> anyhow::Result<u32> {
        let out = self.output(&["inspect", "-f", "{{.State.Pid}}", name])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    }

    /// `podman rm -f` (the runtime's CNI DEL runs here).
    pub fn rm(&mut self, name: &str) -> anyhow::Result<()> {
        let out = self.output(&["rm", "-f", "-t", "0", name])?;
        self.containers.retain(|c| c != name);
        if !out.status.success() {
            bail!("podman rm {name}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }
}

/// Removes `dir` and every cgroup below it, deepest first.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for Podman {
    fn drop(&mut self) {
        for c in std::mem::take(&mut self.containers) {
            let _ = self.output(&["rm", "-f", "-t", "0", &c]);
        }
        // The containers' cgroups under the sandbox's (the sandbox removes
        // only its own, which must be empty by then); on a hybrid layout
        // runc made the parent in every v1 hierarchy too, conmon's under it.
        if let Ok(children) = std::fs::read_dir(&self.cgroup) {
            for c in children.flatten() {
                if c.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    remove_cgroup_tree(&c.path());
                }
            }
        }
        if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
            if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
                for h in rd.flatten() {
                    if h.file_name() != "unified" {
                        remove_cgroup_tree(&h.path().join(&self.cgroup_name));
                    }
                }
            }
        }
        // podman's run dir may hold mounts (shm); unmount before removing.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let prefix = self.work.display().to_string();
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|m| m.starts_with(&prefix))
                .collect();
            points.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in points {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.work);
    }
}
