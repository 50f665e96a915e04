//! The connection to the Kubernetes API: a client (in-cluster or from a
//! kubeconfig) and one stream of watch events for every kind lash reads,
//! each through kube-rs's watcher with its backoff (it lists, watches,
//! resumes from the last resourceVersion, and relists after a 410).

use std::path::{Path, PathBuf};

use futures::{Stream, StreamExt};
use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{watcher, WatchStreamExt},
    Api, Client,
};
use thiserror::Error;

use super::{api_picture::Kind, nodes::NodeInfo};

/// Objects labelled for another proxy are that proxy's, as kube-proxy
/// leaves them alone; slices of headless Services have nothing to serve.
/// The same labels kube-proxy's own watches filter on.
const SERVICE_SELECTOR: &str = "!service.kubernetes.io/service-proxy-name";
const SLICE_SELECTOR: &str =
    "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("reading the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("configuring the Kubernetes client: {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("configuring the Kubernetes client from {path}: {source}")]
    FromKubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("creating the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client for the API server named in `kubeconfig`, or, without one, the
/// in-cluster service account (then `KUBECONFIG` and ~/.kube/config).
/// Returns the client and the server's URL, for status.
pub async fn client(kubeconfig: Option<&Path>) -> Result<(Client, String), ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|source| ClientError::Kubeconfig {
                path: path.into(),
                source,
            })?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|source| ClientError::FromKubeconfig {
                    path: path.into(),
                    source,
                })?
        }
        None => kube::Config::infer().await?,
    };
    let server = config.cluster_url.to_string();
    Ok((Client::try_from(config)?, server))
}

/// One event from any of the watches.
pub enum ApiEvent {
    Service(watcher::Event<Service>),
    Slice(watcher::Event<EndpointSlice>),
    Node(watcher::Event<Node>),
    /// A watch failed (it retries by itself, with backoff); the resource.
    Error(&'static str, String),
    /// The server no longer has the history a watch asked to resume from
    /// (410 Gone): the watcher lists afresh. Not an outage.
    Expired(&'static str),
}

/// A watcher failure as an event: 410 is the normal end of a watch's
/// history, anything else means the API is not answering as it should.
fn failure(resource: &'static str, e: watcher::Error) -> ApiEvent {
    match &e {
        watcher::Error::WatchError(status) if status.code == 410 => ApiEvent::Expired(resource),
        _ => ApiEvent::Error(resource, e.to_string()),
    }
}

impl ApiEvent {
    /// The end of a full list of some kind.
    pub fn is_list_done(&self) -> bool {
        matches!(
            self,
            ApiEvent::Service(watcher::Event::InitDone)
                | ApiEvent::Slice(watcher::Event::InitDone)
                | ApiEvent::Node(watcher::Event::InitDone)
        )
    }

    /// Whether the event could only have come from an API server that
    /// answered (a list's start is announced before its request is made).
    pub fn proves_reachable(&self) -> bool {
        !matches!(
            self,
            ApiEvent::Error(..)
                | ApiEvent::Expired(..)
                | ApiEvent::Service(watcher::Event::Init)
                | ApiEvent::Slice(watcher::Event::Init)
                | ApiEvent::Node(watcher::Event::Init)
        )
    }
}

/// Every watched kind's events, merged. The stream never ends on its own:
/// failures come as `Error` events and the watches retry.
pub fn watch(client: Client) -> impl Stream<Item = ApiEvent> + Send {
    let services = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default().labels(SERVICE_SELECTOR),
    )
    .default_backoff()
    .map(|r| match r {
        Ok(ev) => ApiEvent::Service(ev),
        Err(e) => failure(Kind::Service.resource(), e),
    });
    let slices = watcher(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(SLICE_SELECTOR),
    )
    .default_backoff()
    .map(|r| match r {
        Ok(ev) => ApiEvent::Slice(ev),
        Err(e) => failure(Kind::Slice.resource(), e),
    });
    let nodes = watcher(Api::<Node>::all(client), watcher::Config::default())
        .default_backoff()
        .map(|r| match r {
            Ok(ev) => ApiEvent::Node(ev),
            Err(e) => failure("nodes", e),
        });
    futures::stream::select(futures::stream::select(services, slices), nodes)
}

/// This node's Node object, compact; Ok(None) when the API says there is no
/// such node.
pub async fn this_node(client: &Client, name: &str) -> Result<Option<NodeInfo>, String> {
    Api::<Node>::all(client.clone())
        .get_opt(name)
        .await
        .map(|n| n.as_ref().map(NodeInfo::of))
        .map_err(|e| e.to_string())
}

/// Whether the API server answers at all (used to notice it is back when no
/// watch has anything to say).
pub async fn reachable(client: &Client) -> Result<(), String> {
    client
        .apiserver_version()
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
