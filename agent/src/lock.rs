//! One agent per --bpf-root. Two agents writing the same maps would each
//! believe its own picture of them and undo each other's writes, so `agent
//! run` takes an exclusive lock and refuses to start when another holds it,
//! naming that agent's pid; `agent uninstall` refuses while it is held.
//!
//! The lock is a `flock` on the bpf-root directory itself (so two agents with
//! different --state-dir still collide), and the holder's pid is written to
//! `<state-dir>/agent.lock` for people reading the state dir. The kernel drops
//! a flock when its process dies, however it dies: no stale lock after a crash.

use std::{
    fs,
    os::fd::AsRawFd,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LockError {
    #[error("another agent (pid {pid}) is running on --bpf-root {root}; stop it first")]
    HeldBy { pid: u32, root: PathBuf },
    #[error(
        "another agent is running on --bpf-root {root} (its pid could not be found); stop it first"
    )]
    Held { root: PathBuf },
    #[error("locking {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held for as long as the agent runs; dropping it releases the lock.
#[derive(Debug)]
pub struct AgentLock {
    _dir: fs::File,
    pid_file: PathBuf,
}

impl Drop for AgentLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.pid_file);
    }
}

/// Takes the lock on `bpf_root` (which must exist) for this process.
pub fn acquire(bpf_root: &Path, state_dir: &Path) -> Result<AgentLock, LockError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LockError::Io { path, source }
    };
    let dir = fs::File::open(bpf_root).map_err(io(bpf_root))?;
    // SAFETY: a valid open descriptor; LOCK_NB makes it fail instead of wait.
    if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io(bpf_root)(err));
        }
        return Err(match holder(bpf_root) {
            Some(pid) => LockError::HeldBy {
                pid,
                root: bpf_root.into(),
            },
            None => LockError::Held {
                root: bpf_root.into(),
            },
        });
    }
    fs::create_dir_all(state_dir).map_err(io(state_dir))?;
    let pid_file = state_dir.join("agent.lock");
    fs::write(
        &pid_file,
        format!("{}\n{}\n", std::process::id(), bpf_root.display()),
    )
    .map_err(io(&pid_file))?;
    Ok(AgentLock {
        _dir: dir,
        pid_file,
    })
}

/// The pid holding a lock on `bpf_root`, if any (from /proc/locks, where the
/// kernel lists every flock with its owner and inode).
pub fn holder(bpf_root: &Path) -> Option<u32> {
    let meta = fs::metadata(bpf_root).ok()?;
    let ino = meta.ino();
    let locks = fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        // "1: FLOCK  ADVISORY  WRITE 1234 00:1f:5678 0 EOF"
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(1) != Some(&"FLOCK") {
            return None;
        }
        let dev_ino = f.get(5)?;
        let file_ino: u64 = dev_ino.rsplit(':').next()?.parse().ok()?;
        (file_ino == ino).then(|| f.get(4)?.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_naming_the_holder() {
        let base = std::env::temp_dir().join(format!("lash-lock-test-{}", std::process::id()));
        let root = base.join("bpf");
        fs::create_dir_all(&root).unwrap();
        let first = acquire(&root, &base.join("state")).unwrap();
        // A second open file description conflicts with the first's flock,
        // even in the same process.
        let err = acquire(&root, &base.join("state2")).unwrap_err();
        assert!(
            matches!(err, LockError::HeldBy { pid, .. } if pid == std::process::id()),
            "{err}"
        );
        assert!(err.to_string().contains(&std::process::id().to_string()));
        drop(first);
        let again = acquire(&root, &base.join("state")).unwrap();
        drop(again);
        let _ = fs::remove_dir_all(&base);
    }
}
