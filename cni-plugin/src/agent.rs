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
        cni_client::CniClient, AllocateAddressReply, AllocateAddressRequest, CreateEndpointRequest,
        DeleteEndpointRequest, Endpoint, GetEndpointRequest, ReleaseAddressRequest, Released,
        RetainAddressesRequest, RetainEndpointsRequest, StatusReply, StatusRequest,
    },
    Attachment,
};
use tonic::{transport::Channel, Code};

use crate::error::codes;

/// Where the agent listens unless the config says otherwise: the socket
/// under the agent's default state dir.
pub fn default_socket() -> PathBuf {
    lash_api::socket_path(Path::new(lash_api::DEFAULT_STATE_DIR))
}

/// How long one call may take, connecting included. The agent answers from
/// memory and one fsync of its IPAM file; ten seconds is an agent in
/// trouble, and the runtime's own timeout for the whole verb is longer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

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

    /// The agent answered, with something we cannot use.
    #[error(
        "the lash agent at {} answered {field} {value:?}, which is not an IPv4 address",
        socket.display()
    )]
    BadReply {
        socket: PathBuf,
        field: &'static str,
        value: String,
    },

    #[error("cannot start the client runtime")]
    Runtime(#[source] io::Error),
}

impl AgentProblem {
    /// An agent that does not serve the call at all: one without endpoint
    /// support. Such an agent holds no endpoints, so for DEL and GC there is
    /// nothing to remove; ADD and CHECK, which need one, still fail (11).
    fn is_unimplemented(&self) -> bool {
        matches!(self, AgentProblem::Refused { status, .. } if status.code() == Code::Unimplemented)
    }

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
            // An agent that answers nonsense will not answer better soon.
            AgentProblem::BadReply { .. } | AgentProblem::Runtime(_) => 5,
        }
    }
}

/// An address the agent gave an attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub gateway: Ipv4Addr,
    /// The MTU of the pod's veth; None: the kernel's default.
    pub mtu: Option<u32>,
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

    /// The attachment's address (the same one again if it has one already)
    /// and the gateway the pod routes through.
    pub fn allocate(&self, attachment: Attachment) -> Result<Lease, AgentProblem> {
        let reply: AllocateAddressReply = self.call(|mut c| async move {
            c.allocate_address(AllocateAddressRequest {
                attachment: Some(attachment),
            })
            .await
        })?;
        let parse = |field, value: &str| {
            value
                .parse::<Ipv4Addr>()
                .map_err(|_| AgentProblem::BadReply {
                    socket: self.socket.clone(),
                    field,
                    value: value.to_string(),
                })
        };
        Ok(Lease {
            address: parse("address", &reply.address)?,
            gateway: parse("gateway", &reply.gateway)?,
            mtu: (reply.mtu != 0).then_some(reply.mtu),
        })
    }

    /// Makes the host-side veth an endpoint; the agent's view of it back.
    pub fn create_endpoint(&self, endpoint: Endpoint) -> Result<Endpoint, AgentProblem> {
        let reply = self.call(|mut c| async move {
            c.create_endpoint(CreateEndpointRequest {
                endpoint: Some(endpoint),
            })
            .await
        })?;
        Ok(reply.endpoint.unwrap_or_default())
    }

    /// Removes the attachment's endpoint; None when it had none.
    pub fn delete_endpoint(
        &self,
        attachment: Attachment,
    ) -> Result<Option<Endpoint>, AgentProblem> {
        let reply = self.call(|mut c| async move {
            c.delete_endpoint(DeleteEndpointRequest {
                attachment: Some(attachment),
            })
            .await
        });
        match reply {
            Ok(reply) => Ok(reply.deleted),
            Err(p) if p.is_unimplemented() => Ok(None),
            Err(p) => Err(p),
        }
    }

    /// The attachment's endpoint as the agent sees it; None when it has none.
    pub fn get_endpoint(&self, attachment: Attachment) -> Result<Option<Endpoint>, AgentProblem> {
        let reply = self.call(|mut c| async move {
            c.get_endpoint(GetEndpointRequest {
                attachment: Some(attachment),
            })
            .await
        });
        match reply {
            Ok(endpoint) => Ok(Some(endpoint)),
            Err(AgentProblem::Refused { status, .. }) if status.code() == Code::NotFound => {
                Ok(None)
            }
            Err(p) => Err(p),
        }
    }

    /// Removes every endpoint whose attachment is not in `keep`.
    pub fn retain_endpoints(&self, keep: Vec<Attachment>) -> Result<Vec<Endpoint>, AgentProblem> {
        let reply = self
            .call(|mut c| async move { c.retain_endpoints(RetainEndpointsRequest { keep }).await });
        match reply {
            Ok(reply) => Ok(reply.deleted),
            Err(p) if p.is_unimplemented() => Ok(Vec::new()),
            Err(p) => Err(p),
        }
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
