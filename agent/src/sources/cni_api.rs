//! The agent's local gRPC API for lash-cni (api/proto/lash/v1/cni.proto),
//! on a unix socket under the state dir, mode 0600.
//!
//! It serves addresses from IPAM and endpoints from the endpoint manager
//! (the one writer of the lxc and ipcache maps and of the lxc programs'
//! links); both do their work off the runtime.

use std::{
    collections::HashSet,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use lash_api::{
    v1::{
        cni_server::{Cni, CniServer},
        AllocateAddressReply, AllocateAddressRequest, CreateEndpointReply, CreateEndpointRequest,
        DeleteEndpointReply, DeleteEndpointRequest, Endpoint, GetEndpointRequest,
        ListEndpointsReply, ListEndpointsRequest, ReleaseAddressReply, ReleaseAddressRequest,
        Released, RetainAddressesReply, RetainAddressesRequest, RetainEndpointsReply,
        RetainEndpointsRequest, StatusReply, StatusRequest,
    },
    Attachment,
};
use thiserror::Error;
use tokio::{net::UnixListener, sync::mpsc};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};
use tracing::info;

use super::cni_messages as messages;
use crate::{
    endpoints::{EndpointError, Manager},
    ipam::{Ipam, IpamError},
};

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("listening on {path}: {source}")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("serving the CNI API on {path}: {source}")]
    Serve {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
}

/// The handlers. `changed` is called after every successful IPAM call, off
/// the runtime, so the status the agent publishes follows the allocations.
pub struct CniApi {
    ipam: Option<Arc<Ipam>>,
    endpoints: Arc<Mutex<Manager>>,
    changed: Arc<dyn Fn() + Send + Sync>,
    /// The device whose MTU pods get (lash_vxlan in tunnel routing), read
    /// at every allocation since it follows the underlay's.
    mtu_of: Option<&'static str>,
}

impl CniApi {
    /// Pods get `device`'s MTU.
    pub fn with_pod_mtu_of(mut self, device: &'static str) -> Self {
        self.mtu_of = Some(device);
        self
    }

    pub fn new(
        ipam: Option<Arc<Ipam>>,
        endpoints: Arc<Mutex<Manager>>,
        changed: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        CniApi {
            ipam,
            endpoints,
            changed,
            mtu_of: None,
        }
    }

    /// Runs an endpoint call off the runtime (netlink queries, map writes,
    /// a synced file), one at a time; `changed` follows a success.
    async fn with_endpoints<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Manager) -> Result<T, EndpointError> + Send + 'static,
    ) -> Result<T, Status> {
        let (endpoints, changed) = (self.endpoints.clone(), self.changed.clone());
        let r = tokio::task::spawn_blocking(move || {
            let mut m = endpoints.lock().unwrap_or_else(|e| e.into_inner());
            let r = f(&mut m);
            drop(m);
            if r.is_ok() {
                changed();
            }
            r
        })
        .await
        .map_err(|e| Status::internal(format!("endpoint task: {e}")))?;
        r.map_err(messages::status)
    }

    fn ipam(&self) -> Result<Arc<Ipam>, Status> {
        self.ipam.clone().ok_or_else(|| {
            Status::failed_precondition(
                "this agent runs without --pod-cidr: it has no pod addresses to give",
            )
        })
    }

    /// Runs an IPAM call off the runtime: it writes and syncs the state file,
    /// and so does the status update that follows it.
    async fn with_ipam<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Ipam) -> Result<T, IpamError> + Send + 'static,
    ) -> Result<T, Status> {
        let ipam = self.ipam()?;
        let changed = self.changed.clone();
        let r = tokio::task::spawn_blocking(move || {
            let r = f(&ipam);
            if r.is_ok() {
                changed();
            }
            r
        })
        .await
        .map_err(|e| Status::internal(format!("IPAM task: {e}")))?;
        r.map_err(|e| match e {
            IpamError::Exhausted { .. } => Status::resource_exhausted(e.to_string()),
            e => Status::internal(e.to_string()),
        })
    }
}

/// The attachment of a request, with both names present.
fn attachment(a: Option<Attachment>) -> Result<Attachment, Status> {
    let a = a.ok_or_else(|| Status::invalid_argument("no attachment in the request"))?;
    if a.container_id.is_empty() || a.ifname.is_empty() {
        return Err(Status::invalid_argument(format!(
            "attachment needs a container id and an interface name, got {:?} and {:?}",
            a.container_id, a.ifname
        )));
    }
    Ok(a)
}

/// The owner keys of a GC's `keep` list, each attachment checked.
fn owners(keep: Vec<Attachment>) -> Result<HashSet<String>, Status> {
    keep.into_iter()
        .map(|a| attachment(Some(a)).map(|a| a.owner()))
        .collect()
}

#[tonic::async_trait]
impl Cni for CniApi {
    async fn allocate_address(
        &self,
        req: Request<AllocateAddressRequest>,
    ) -> Result<Response<AllocateAddressReply>, Status> {
        let owner = attachment(req.into_inner().attachment)?.owner();
        let (ip, usage) = self
            .with_ipam(move |ipam| Ok((ipam.allocate(&owner)?, ipam.usage())))
            .await?;
        Ok(Response::new(AllocateAddressReply {
            address: ip.to_string(),
            prefix_len: u32::from(usage.cidr.prefix()),
            gateway: usage.gateway.to_string(),
            mtu: match self.mtu_of {
                Some(dev) => crate::node::vxlan::device_mtu(dev).map_err(|e| {
                    Status::unavailable(format!("reading {dev}'s MTU for the pod: {e}"))
                })?,
                None => 0,
            },
        }))
    }

    async fn release_address(
        &self,
        req: Request<ReleaseAddressRequest>,
    ) -> Result<Response<ReleaseAddressReply>, Status> {
        let owner = attachment(req.into_inner().attachment)?.owner();
        let released = self.with_ipam(move |ipam| ipam.release(&owner)).await?;
        Ok(Response::new(ReleaseAddressReply {
            released: released.map(|ip| ip.to_string()).unwrap_or_default(),
        }))
    }

    async fn retain_addresses(
        &self,
        req: Request<RetainAddressesRequest>,
    ) -> Result<Response<RetainAddressesReply>, Status> {
        let keep = owners(req.into_inner().keep)?;
        let freed = self.with_ipam(move |ipam| ipam.retain(&keep)).await?;
        let released = freed
            .into_iter()
            .map(|(owner, ip)| Released {
                attachment: Some(Attachment::from_owner(&owner)),
                address: ip.to_string(),
            })
            .collect();
        Ok(Response::new(RetainAddressesReply { released }))
    }

    async fn status(&self, _req: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let reply = match &self.ipam {
            Some(ipam) => {
                let u = ipam.usage();
                StatusReply {
                    pod_cidr: u.cidr.to_string(),
                    gateway: u.gateway.to_string(),
                    addresses_used: u.used as u32,
                    addresses_total: u.total as u32,
                    endpoints: self.endpoints.lock().map(|m| m.len()).unwrap_or(0) as u32,
                }
            }
            None => StatusReply::default(),
        };
        Ok(Response::new(reply))
    }

    async fn create_endpoint(
        &self,
        req: Request<CreateEndpointRequest>,
    ) -> Result<Response<CreateEndpointReply>, Status> {
        let e = req
            .into_inner()
            .endpoint
            .ok_or_else(|| Status::invalid_argument("no endpoint in the request"))?;
        attachment(e.attachment.clone())?;
        let spec = messages::spec(e)?;
        let view = self.with_endpoints(move |m| m.create(spec)).await?;
        Ok(Response::new(CreateEndpointReply {
            endpoint: Some(messages::message(&view)),
        }))
    }

    async fn delete_endpoint(
        &self,
        req: Request<DeleteEndpointRequest>,
    ) -> Result<Response<DeleteEndpointReply>, Status> {
        let owner = attachment(req.into_inner().attachment)?.owner();
        let deleted = self.with_endpoints(move |m| m.delete(&owner)).await?;
        Ok(Response::new(DeleteEndpointReply {
            deleted: deleted.as_ref().map(messages::message),
        }))
    }

    async fn get_endpoint(
        &self,
        req: Request<GetEndpointRequest>,
    ) -> Result<Response<Endpoint>, Status> {
        let a = attachment(req.into_inner().attachment)?;
        let owner = a.owner();
        match self.with_endpoints(move |m| Ok(m.get(&owner))).await? {
            Some(v) => Ok(Response::new(messages::message(&v))),
            None => Err(Status::not_found(format!(
                "no endpoint for {}/{}",
                a.container_id, a.ifname
            ))),
        }
    }

    async fn list_endpoints(
        &self,
        _req: Request<ListEndpointsRequest>,
    ) -> Result<Response<ListEndpointsReply>, Status> {
        let all = self.with_endpoints(|m| Ok(m.list())).await?;
        Ok(Response::new(ListEndpointsReply {
            endpoints: all.iter().map(messages::message).collect(),
        }))
    }

    async fn retain_endpoints(
        &self,
        req: Request<RetainEndpointsRequest>,
    ) -> Result<Response<RetainEndpointsReply>, Status> {
        let keep = owners(req.into_inner().keep)?;
        let deleted = self.with_endpoints(move |m| m.retain(&keep)).await?;
        Ok(Response::new(RetainEndpointsReply {
            deleted: deleted.iter().map(messages::message).collect(),
        }))
    }
}

/// Serves `api` on `socket` until `stop` fires. A socket file left by an
/// earlier agent is replaced (the agent lock says no other agent runs here).
pub async fn serve(
    api: CniApi,
    socket: &Path,
    mut stop: mpsc::Receiver<()>,
) -> Result<(), ServeError> {
    let listen_err = |source| ServeError::Listen {
        path: socket.to_path_buf(),
        source,
    };
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(listen_err(e)),
    }
    let listener = UnixListener::bind(socket).map_err(listen_err)?;
    // Removed however serving ends, an abort at shutdown included.
    let _socket_file = SocketFile(socket.to_path_buf());
    // Only root on the node may allocate addresses or make endpoints.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(listen_err)?;
    info!(socket = %socket.display(), "CNI API listening");
    let result = tonic::transport::Server::builder()
        .add_service(CniServer::new(api))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
            let _ = stop.recv().await;
        })
        .await
        .map_err(|source| ServeError::Serve {
            path: socket.to_path_buf(),
            source,
        });
    result
}

/// The socket's path, unlinked on drop.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
