//! Entering a container's network namespace (CNI_NETNS) for the work that
//! must happen inside it.
//!
//! A network namespace is per thread, and a netlink socket talks to the
//! namespace it was created in. So the work runs on a thread of its own that
//! enters the namespace first and makes its own netlink connection there;
//! the main thread never leaves the node's namespace (the agent's socket,
//! /proc/sys and the host-side veth are all there), and the entered thread
//! ends with the work.

use std::{
    fs::File,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    path::{Path, PathBuf},
};

/// `NS_GET_NSTYPE` (linux/nsfs.h): which kind of namespace an nsfs file is.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

#[derive(Debug, thiserror::Error)]
#[error("network namespace {}: {doing}: {cause}", path.display())]
pub struct NetnsError {
    pub path: PathBuf,
    pub doing: &'static str,
    // Not a `source`: the message carries it already.
    pub cause: io::Error,
}

/// An open network namespace.
pub struct Netns {
    path: PathBuf,
    file: File,
}

impl Netns {
    /// Opens `path` and makes sure it is a network namespace (a bind mount
    /// from `ip netns add`, or /proc/PID/ns/net), not just any file.
    pub fn open(path: &Path) -> Result<Netns, NetnsError> {
        let err = |doing, cause| NetnsError {
            path: path.to_path_buf(),
            doing,
            cause,
        };
        let file = File::open(path).map_err(|e| err("cannot open it", e))?;
        // SAFETY: an ioctl without argument on an fd we own.
        let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
        if kind < 0 {
            return Err(err("it is not a namespace", io::Error::last_os_error()));
        }
        if kind != libc::CLONE_NEWNET {
            return Err(err(
                "it is not a network namespace",
                io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        Ok(Netns {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Runs `work` on a new thread inside this namespace and waits for it.
    pub fn run<T: Send>(&self, work: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        std::thread::scope(|scope| {
            let thread = scope.spawn(|| {
                // SAFETY: a namespace fd we hold open; only this thread moves.
                if unsafe { libc::setns(self.file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(NetnsError {
                        path: self.path.clone(),
                        doing: "cannot enter it",
                        cause: io::Error::last_os_error(),
                    });
                }
                Ok(work())
            });
            match thread.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_path_is_named() {
        let err = Netns::open(Path::new("/nonexistent/netns/x"))
            .err()
            .unwrap();
        assert_eq!(err.cause.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("/nonexistent/netns/x"), "{err}");
    }

    #[test]
    fn a_plain_file_is_not_a_namespace() {
        let err = Netns::open(Path::new("/proc/self/status")).err().unwrap();
        assert!(err.to_string().contains("not a namespace"), "{err}");
    }

    #[test]
    fn another_kind_of_namespace_is_refused() {
        let err = Netns::open(Path::new("/proc/self/ns/uts")).err().unwrap();
        assert!(err.to_string().contains("not a network namespace"), "{err}");
    }

    #[test]
    fn work_runs_in_the_namespace_and_the_caller_stays() {
        // Our own namespace: entering it needs no privilege beyond what
        // setns asks, and proves the thread path end to end.
        let own = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let ns = Netns::open(Path::new("/proc/self/ns/net")).unwrap();
        let inside = ns.run(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap());
        match inside {
            Ok(inside) => assert_eq!(inside, own),
            // Unprivileged runs cannot setns at all; nothing to check then.
            Err(e) => assert_eq!(e.cause.raw_os_error(), Some(libc::EPERM), "{e}"),
        }
        assert_eq!(std::fs::read_link("/proc/thread-self/ns/net").unwrap(), own);
    }
}
