//! Entering a named network namespace (as `ip netns add` makes them) and a
//! cgroup, from inside a helper process. Done in the process itself instead of
//! through `ip netns exec`, which remounts /sys and hides the cgroup mount.

use std::{fs::File, os::fd::AsRawFd, path::Path};

use anyhow::Context as _;

/// Moves the calling (single-threaded) process into network namespace `name`.
pub fn enter(name: &str) -> anyhow::Result<()> {
    let path = Path::new("/var/run/netns").join(name);
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
