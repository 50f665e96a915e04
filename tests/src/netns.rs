//! Entering a named network namespace (as `ip netns add` makes them) and a
//! cgroup, from inside a helper process or between fork and exec of a child.
//! Done in the process itself instead of through `ip netns exec`, which
//! remounts /sys and hides the cgroup mount.

use std::{
    fs::File,
    os::{fd::AsRawFd, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

/// Where `ip netns add` puts its namespace files.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/var/run/netns").join(name)
}

/// `program` to be run inside namespace `ns` (and on one CPU if given).
///
/// The child enters the namespace itself between fork and exec, as a
/// container runtime does, rather than through `ip netns exec`: that adds an
/// exec and remounts /sys, and the child keeps the pid we spawned (so we end
/// it by that pid).
pub fn in_netns(
    ns: &str,
    program: impl AsRef<std::ffi::OsStr>,
    cpu: Option<usize>,
) -> anyhow::Result<Command> {
    let f = File::open(netns_path(ns)).with_context(|| format!("opening netns {ns}"))?;
    let mut cmd = Command::new(program);
    // SAFETY: between fork and exec only setns and sched_setaffinity are
    // called (plain system calls, async-signal-safe) on memory the closure
    // owns; the namespace file stays open in the closure until exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(cpu) = cpu {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// Moves the calling (single-threaded) process into network namespace `name`.
pub fn enter(name: &str) -> anyhow::Result<()> {
    let path = netns_path(name);
    let f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: a valid namespace fd; the process has one thread at this point.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("setns {name}"));
    }
    Ok(())
}

/// Moves the calling process into the cgroup v2 directory `cgroup`.
pub fn join_cgroup(cgroup: &Path) -> anyhow::Result<()> {
    std::fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string())
        .with_context(|| format!("joining cgroup {}", cgroup.display()))
}

/// Pins the calling process to one CPU, so a client and its servers do not
/// compete for the same core in benchmarks.
pub fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within its bounds for
    // cpu < CPU_SETSIZE, which sched_setaffinity then checks against the machine.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error()).context(format!("pinning to CPU {cpu}"));
        }
    }
    Ok(())
}
