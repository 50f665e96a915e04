//! The agent's local API, shared by the agent (server) and lash-cni (client):
//! the generated gRPC types and the unix socket plumbing both sides agree on.

use std::path::{Path, PathBuf};

pub mod v1 {
    tonic::include_proto!("lash.v1");
}

pub use v1::Attachment;

/// The agent's `--state-dir` unless told otherwise; lash-cni looks for the
/// socket under it by default.
pub const DEFAULT_STATE_DIR: &str = "/run/lash";

/// Name of the socket under the agent's `--state-dir`.
pub const SOCKET_NAME: &str = "cni.sock";

/// Where the agent with state dir `state_dir` listens.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

impl Attachment {
    pub fn new(container_id: &str, ifname: &str) -> Self {
        Attachment {
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }

    /// The key IPAM holds an attachment's address by: `containerID:ifname`.
    pub fn owner(&self) -> String {
        format!("{}:{}", self.container_id, self.ifname)
    }

    /// The attachment of an `owner()` key (interface names have no colon).
    pub fn from_owner(owner: &str) -> Self {
        let (container_id, ifname) = owner.rsplit_once(':').unwrap_or((owner, ""));
        Attachment::new(container_id, ifname)
    }
}

/// A client of the agent listening on `socket`. Fails at once when nothing
/// listens there (the plugin maps that to CNI error 11).
pub async fn connect(
    socket: &Path,
) -> Result<v1::cni_client::CniClient<tonic::transport::Channel>, tonic::transport::Error> {
    let socket = socket.to_path_buf();
    // The URI is required by the API but unused: the connector below decides
    // where the bytes go.
    let channel = tonic::transport::Endpoint::from_static("http://agent.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await?;
    Ok(v1::cni_client::CniClient::new(channel))
}
