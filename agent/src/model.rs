//! The load-balancing model: what services and backends the datapath should
//! serve, independent of where that came from (Kubernetes objects, the CNI,
//! tests) and of how it is stored (maps/).
//!
//! Architecture invariant: the model knows neither Kubernetes nor BPF maps. It
//! depends on nothing in the agent; sources (`k8s/`) produce [`DesiredService`]s
//! and [`Change`]s, `lb/` turns them into ordered map writes through `maps/`.
//!
//! The precedence rule every layer must agree on lives here, once:
//! [`DesiredService::outranks`] (two Services claiming one frontend: the first
//! name wins). The other one, "a backend shared by several services is active
//! if any of them wants it active", is kept by the reconciler alone
//! (`Reconciler::wanted_state`), the only place that sees all services.

use std::{fmt, net::Ipv4Addr};

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => lash_common::IPPROTO_TCP,
            Proto::Udp => lash_common::IPPROTO_UDP,
        }
    }

    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            lash_common::IPPROTO_TCP => Some(Proto::Tcp),
            lash_common::IPPROTO_UDP => Some(Proto::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        })
    }
}

/// An address:port/protocol: a service frontend or a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct L4Addr {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub proto: Proto,
}

impl fmt::Display for L4Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.ip, self.port, self.proto)
    }
}

/// Whether a backend takes new connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    Active,
    /// Shutting down; used only when a service has no active backend left.
    Terminating,
}

impl BackendState {
    pub fn to_flags(self) -> u8 {
        match self {
            BackendState::Active => lash_common::BE_STATE_ACTIVE,
            BackendState::Terminating => lash_common::BE_STATE_TERMINATING,
        }
    }
}

/// The kind of frontend, as users know it from `kubectl get svc` and from
/// Cilium's service listings: one Kubernetes Service gives frontends of
/// several kinds (a NodePort Service has its ClusterIP and its node ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Default)]
pub enum ServiceKind {
    #[default]
    ClusterIP,
    /// A node address (or 127.0.0.1) on the Service's nodePort.
    NodePort,
    /// One of `spec.externalIPs` on the service port.
    ExternalIP,
    /// One of `status.loadBalancer.ingress` on the service port.
    LoadBalancer,
}

/// Whether a traffic policy keeps connections on this node's endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Default)]
pub struct TrafficPolicy {
    /// externalTrafficPolicy=Local: what enters through this frontend from
    /// outside the cluster goes to this node's endpoints only.
    pub external_local: bool,
    /// internalTrafficPolicy=Local: what comes from inside the cluster goes
    /// to this node's endpoints only.
    pub internal_local: bool,
}

/// One frontend the datapath must serve and the backends behind it, in the
/// order the source gave them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredService {
    /// "namespace/name:port-name", for messages.
    pub name: String,
    pub frontend: L4Addr,
    pub kind: ServiceKind,
    /// The backends of the frontend's one scope, or, with `internal`, of
    /// its external scope (traffic from outside the cluster).
    pub backends: Vec<(L4Addr, BackendState)>,
    /// When the two traffic policies give this frontend different backend
    /// sets: the internal scope's (traffic from inside the cluster, which is
    /// all traffic lash's programs see).
    pub internal: Option<Vec<(L4Addr, BackendState)>>,
    pub policy: TrafficPolicy,
    /// ClientIP session affinity: a client keeps its backend for this many
    /// seconds after its last new connection.
    pub affinity_timeout: Option<u32>,
}

impl DesiredService {
    /// A frontend with one scope, no policy and no affinity.
    #[cfg(test)]
    pub fn plain(
        name: String,
        frontend: L4Addr,
        kind: ServiceKind,
        backends: Vec<(L4Addr, BackendState)>,
    ) -> Self {
        DesiredService {
            name,
            frontend,
            kind,
            backends,
            internal: None,
            policy: TrafficPolicy::default(),
            affinity_timeout: None,
        }
    }

    /// Whether `self` owns a frontend that `other` claims too: the name that
    /// sorts first wins, so the outcome does not depend on the order in which
    /// objects arrived (a full reconcile and a stream of changes agree).
    pub fn outranks(&self, other: &DesiredService) -> bool {
        (&self.name, self.frontend) < (&other.name, other.frontend)
    }

    /// The error reported for the loser of a frontend clash.
    pub fn clash_error(loser: &str, frontend: &L4Addr, owner: &str) -> String {
        format!("service {loser}: frontend {frontend} is already taken by {owner}; ignored")
    }
}

/// One frontend to bring to a new state: program it as given, or remove it.
/// What sources send to the map owner for an incremental change.
#[derive(Clone, Debug)]
pub enum Change {
    Upsert(DesiredService),
    Remove(L4Addr),
}

/// A node of the cluster as the pod network sees it: the address other nodes
/// reach it on and the pod range it carries. Sources send every node they
/// know, this one included; `mesh/` routes to the others.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ClusterNode {
    pub name: String,
    pub address: Option<Ipv4Addr>,
    /// The IPv4 pod range (base, prefix length).
    pub pod_cidr: Option<(Ipv4Addr, u8)>,
    /// Why the node's pod range was not usable, as its object wrote it.
    pub problem: Option<String>,
}
