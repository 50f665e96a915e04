//! How the plugin reaches the lash agent: its local gRPC API (lash-api,
//! api/proto/lash/v1/cni.proto) on a unix socket on the node (`agentSocket`
//! in the config, /run/lash/cni.sock by default: the agent's default
//! `--state-dir` is /run/lash).
//!
//! One plugin run makes one or two calls, so each call builds a
//! current-thread runtime, connects, asks, and is bounded by a deadline: a
//! stuck agent, or a socket some other program listens on, must not hang the
//! runtime's ADD or DEL. Every way a call can fail is an `AgentProblem`,
//! which knows the CNI code it deserves.

use std::{
    future::Future,
    io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use lash_api::{
    v1::{
        cni_client::CniClient, ReleaseAddressRequest, Released, RetainAddressesRequest,
        StatusReply, StatusRequest,
    },
    Attachment,
};
use tonic::{transport::Channel, Code};

/// Where the agent listens unless the config says otherwise: the socket
/// under the agent's default state dir.
pub fn default_socket() -> PathBuf {
    lash_api::socket_path(Path::new(lash_api::DEFAULT_STATE_DIR))
}

/// How long one call may take, connecting included. The agent answers from
/// memory and one fsync of its IPAM file; ten seconds is an agent in
/// trouble, and the runtime's own timeout for the whole verb is longer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Plugin-specific CNI codes (the spec leaves 100 and up to plugins).
pub mod codes {
    /// The node's pod CIDR has no free address. No well-known code fits: 11
    /// ("try again later") would have the runtime retry at once what only a
    /// deleted pod or a larger range fixes, and 5 (I/O) or 7 (config) would
    /// point at the wrong thing.
    pub const RANGE_EXHAUSTED: u32 = 100;
    /// The agent runs without `--pod-cidr`, so it has no addresses to give:
    /// a node misconfiguration, not a transient state.
    pub const NO_POD_CIDR: u32 = 101;

    // The spec reserves codes below 100 for itself.
    const _: () = assert!(RANGE_EXHAUSTED >= 100 && NO_POD_CIDR >= 100);
}

#[derive(Debug, thiserror::Error)]
pub enum AgentProblem {
    #[error("the lash agent is unreachable at {}", socket.display())]
    Unreachable {
        socket: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },

    #[error(
        "the lash agent at {} did not answer within {}s",
        socket.display(),
        after.as_secs()
    )]
    Silent { socket: PathBuf, after: Duration },

    /// The agent (or whatever listens there) answered with an error.
    #[error("the lash agent at {} refused: {}", socket.display(), status.message())]
    Refused {
        socket: PathBuf,
        #[source]
        status: tonic::Status,
    },

    #[error("the lash agent at {} has no --pod-cidr: it gives no pod addresses", socket.display())]
    NoPodCidr { socket: PathBuf },

    #[error("the pod CIDR {cidr} has no free address ({used} of {total} in use)")]
    RangeFull { cidr: String, used: u32, total: u32 },

    #[error("cannot start the client runtime")]
    Runtime(#[source] io::Error),
}

impl AgentProblem {
    /// The CNI error code for a verb that failed this way.
    pub fn code(&self) -> u32 {
        match self {
            AgentProblem::Unreachable { .. } | AgentProblem::Silent { .. } => 11,
            AgentProblem::Refused { status, .. } => match status.code() {
                Code::ResourceExhausted => codes::RANGE_EXHAUSTED,
                Code::FailedPrecondition => codes::NO_POD_CIDR,
                // The agent found a request field bad: we built it from the
                // environment and the configuration.
                Code::InvalidArgument => 7,
                // The agent's own state (its IPAM file) could not be written.
                Code::Internal | Code::DataLoss => 5,
                // Unavailable, Unknown (a listener that does not speak
                // gRPC), Unimplemented (an older agent), and the rest: the
                // agent is not serving us now.
                _ => 11,
            },
            AgentProblem::NoPodCidr { .. } => codes::NO_POD_CIDR,
            AgentProblem::RangeFull { .. } => codes::RANGE_EXHAUSTED,
            AgentProblem::Runtime(_) => 5,
        }
    }
}

/// The agent at one socket.
pub struct Agent {
    socket: PathBuf,
}

impl Agent {
    pub fn new(socket: &Path) -> Agent {
        Agent {
            socket: socket.to_path_buf(),
        }
    }

    /// The agent's IPAM state, or why it cannot be had.
    pub fn status(&self) -> Result<StatusReply, AgentProblem> {
        self.call(|mut c| async move { c.status(StatusRequest {}).await })
    }

    /// Whether the agent can serve an ADD now: it answers, has a pod CIDR,
    /// and has an address left.
    pub fn ready_for_add(&self) -> Result<(), AgentProblem> {
        let s = self.status()?;
        if s.pod_cidr.is_empty() {
            return Err(AgentProblem::NoPodCidr {
                socket: self.socket.clone(),
            });
        }
        if s.addresses_used >= s.addresses_total {
            return Err(AgentProblem::RangeFull {
                cidr: s.pod_cidr,
                used: s.addresses_used,
                total: s.addresses_total,
            });
        }
        Ok(())
    }

    /// Frees the attachment's address; None when it held none.
    pub fn release(&self, attachment: Attachment) -> Result<Option<Ipv4Addr>, AgentProblem> {
        let reply = self.call(|mut c| async move {
            c.release_address(ReleaseAddressRequest {
                attachment: Some(attachment),
            })
            .await
        })?;
        // The agent sends dotted IPv4 or nothing; anything else is a
        // release that happened, reported oddly, which DEL need not fail on.
        Ok(reply.released.parse().ok())
    }

    /// Frees every address whose attachment is not in `keep`.
    pub fn retain(&self, keep: Vec<Attachment>) -> Result<Vec<Released>, AgentProblem> {
        let reply =
            self.call(
                |mut c| async move { c.retain_addresses(RetainAddressesRequest { keep }).await },
            )?;
        Ok(reply.released)
    }

    /// Connects and runs one request under the deadline.
    fn call<T, F, Fut>(&self, request: F) -> Result<T, AgentProblem>
    where
        F: FnOnce(CniClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(AgentProblem::Runtime)?;
        let socket = &self.socket;
        rt.block_on(async {
            let exchange = async {
                let client = lash_api::connect(socket).await.map_err(|source| {
                    AgentProblem::Unreachable {
                        socket: socket.clone(),
                        source,
                    }
                })?;
                request(client)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|status| AgentProblem::Refused {
                        socket: socket.clone(),
                        status,
                    })
            };
            tokio::time::timeout(CALL_TIMEOUT, exchange)
                .await
                .unwrap_or_else(|_| {
                    Err(AgentProblem::Silent {
                        socket: socket.clone(),
                        after: CALL_TIMEOUT,
                    })
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lash-cni-agent-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn default_socket_is_where_a_default_agent_listens() {
        assert_eq!(default_socket(), Path::new("/run/lash/cni.sock"));
    }

    #[test]
    fn missing_socket_is_unreachable_and_named() {
        let dir = temp_dir("missing");
        let socket = dir.join("cni.sock");
        let problem = Agent::new(&socket).status().unwrap_err();
        assert!(
            matches!(problem, AgentProblem::Unreachable { .. }),
            "{problem:?}"
        );
        assert_eq!(problem.code(), 11);
        assert!(problem.to_string().contains(&*socket.to_string_lossy()));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_listener_that_hangs_up_is_try_again() {
        let dir = temp_dir("hangup");
        let socket = dir.join("cni.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        // Accepts and closes at once: not our agent, or one going down.
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                drop(conn);
            }
        });
        let problem = Agent::new(&socket).status().unwrap_err();
        assert_eq!(problem.code(), 11, "{problem:?}");
        assert!(problem.to_string().contains(&*socket.to_string_lossy()));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn grpc_codes_map_to_cni_codes() {
        let refused = |code| AgentProblem::Refused {
            socket: PathBuf::from("/run/lash/cni.sock"),
            status: tonic::Status::new(code, "x"),
        };
        let cases = [
            (Code::ResourceExhausted, codes::RANGE_EXHAUSTED),
            (Code::FailedPrecondition, codes::NO_POD_CIDR),
            (Code::InvalidArgument, 7),
            (Code::Internal, 5),
            (Code::Unavailable, 11),
            (Code::Unimplemented, 11),
            (Code::Unknown, 11),
        ];
        for (grpc, cni) in cases {
            assert_eq!(refused(grpc).code(), cni, "{grpc:?}");
        }
    }
}
