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
