//! How the plugin reaches the lash agent: a unix socket on the node
//! (`agentSocket` in the config, /run/lash/cni.sock by default).
//!
//! The agent does not serve a CNI API yet, so this module can only tell
//! whether someone listens there. Both outcomes are failures the runtime can
//! act on: nobody listening (the agent is down or starting), or a listener we
//! have no protocol for (this plugin is older or newer than that agent). The
//! verbs turn either into "try again later" (11), or 50 for STATUS.

use std::{io, os::unix::net::UnixStream, path::Path, path::PathBuf};

/// Where the agent listens unless the config says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/lash/cni.sock";

#[derive(Debug, thiserror::Error)]
pub enum AgentProblem {
    #[error("the lash agent is unreachable at {}", socket.display())]
    Unreachable {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "something listens at {} but this lash-cni has no agent API to speak to it",
        socket.display()
    )]
    NoApi { socket: PathBuf },
}

/// Connects to the agent. There is no request to send yet, so a connection
/// that succeeds still ends in `NoApi`.
pub fn reach(socket: &Path) -> AgentProblem {
    match UnixStream::connect(socket) {
        Ok(_stream) => AgentProblem::NoApi {
            socket: socket.to_path_buf(),
        },
        Err(source) => AgentProblem::Unreachable {
            socket: socket.to_path_buf(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lash-cni-agent-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn missing_socket_is_unreachable_and_named() {
        let dir = temp_dir("missing");
        let socket = dir.join("cni.sock");
        let problem = reach(&socket);
        assert!(matches!(problem, AgentProblem::Unreachable { .. }));
        assert!(problem.to_string().contains(&*socket.to_string_lossy()));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_listener_without_our_api_is_reported_as_such() {
        let dir = temp_dir("listener");
        let socket = dir.join("cni.sock");
        let _listener = UnixListener::bind(&socket).unwrap();
        assert!(matches!(reach(&socket), AgentProblem::NoApi { .. }));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
