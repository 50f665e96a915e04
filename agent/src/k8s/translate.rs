//! Services + EndpointSlices -> desired frontends and backends, the way
//! kube-proxy reads them:
//! - frontends: each IPv4 ClusterIP on each service port; for NodePort and
//!   LoadBalancer Services each node-port address of this node on each
//!   nodePort; each IPv4 `spec.externalIPs` and `status.loadBalancer.ingress`
//!   address on each service port. SCTP ports are left out (warned, see
//!   `ignored`), the Service's other ports are served;
//! - backends from the EndpointSlices labelled `kubernetes.io/service-name`,
//!   matched to the service port by port name and protocol; the slice port
//!   carries the resolved target port, so named targetPorts need nothing more;
//! - which endpoints, kube-proxy's rules: ready ones, or serving+terminating
//!   ones when none is ready; this node's only where a traffic policy says
//!   Local (nothing when it has none: the frontend refuses); the ones hinted
//!   for this node's zone when the Service asks for topology
//!   (`trafficDistribution`, or the topology-mode annotation set to Auto), the
//!   node knows its zone, every ready endpoint carries hints and one is
//!   hinted here;
//! - ClusterIP frontends follow `internalTrafficPolicy`; the others follow
//!   `externalTrafficPolicy`, and when the two policies differ they get a
//!   second, internal backend set (Cilium's two scopes), which is what
//!   connections from inside the cluster use;
//! - `sessionAffinity: ClientIP` with its timeout (default 10800 s);
//! - Services labelled `service.kubernetes.io/service-proxy-name` belong to
//!   another proxy and give nothing.

use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

use super::node_context::NodeContext;
use crate::model::{BackendState, DesiredService, L4Addr, Proto, ServiceKind, TrafficPolicy};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// A Service carrying this label is served by the proxy it names, never by
/// kube-proxy (nor by us).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// The annotation that asks for zone hints before `trafficDistribution`
/// (the second name is the one before Kubernetes 1.27).
pub const TOPOLOGY_ANNOTATIONS: [&str; 2] = [
    "service.kubernetes.io/topology-mode",
    "service.kubernetes.io/topology-aware-hints",
];

/// Whether the Service asks for zone-aware routing: `trafficDistribution`
/// set, or the topology annotation (either name) at "Auto" ("Disabled" or
/// nothing is the default; other values are not acted on, by kube-proxy
/// either).
pub fn asks_for_topology(svc: &Service) -> bool {
    let set = svc
        .spec
        .as_ref()
        .and_then(|s| s.traffic_distribution.as_deref())
        .is_some_and(|t| !t.is_empty());
    set || svc.metadata.annotations.as_ref().is_some_and(|a| {
        TOPOLOGY_ANNOTATIONS
            .iter()
            .any(|k| a.get(*k).is_some_and(|v| v.eq_ignore_ascii_case("auto")))
    })
}
/// `sessionAffinityConfig.clientIP.timeoutSeconds` when not given.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

/// The desired services of one Kubernetes Service, or why it has none.
#[cfg(test)]
#[derive(Debug)]
pub struct Translated {
    /// "namespace/name".
    pub service: String,
    pub result: Result<Vec<DesiredService>, String>,
}

fn ns_name(ns: Option<&String>, name: Option<&String>) -> String {
    format!(
        "{}/{}",
        ns.map(String::as_str).unwrap_or("default"),
        name.map(String::as_str).unwrap_or("<unnamed>")
    )
}

/// The protocol of a port: Ok(None) for SCTP, which is valid Kubernetes but
/// not served.
fn proto(p: Option<&String>) -> Result<Option<Proto>, String> {
    match p.map(String::as_str).unwrap_or("TCP") {
        "TCP" => Ok(Some(Proto::Tcp)),
        "UDP" => Ok(Some(Proto::Udp)),
        "SCTP" => Ok(None),
        other => Err(format!(
            "protocol {other} is not a Service protocol (TCP, UDP or SCTP)"
        )),
    }
}

/// (namespace, name) of a Service.
pub fn service_key(svc: &Service) -> (String, String) {
    (
        svc.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

/// The proxy a Service is labelled for, if it is another proxy's.
pub fn other_proxy(svc: &Service) -> Option<&str> {
    svc.metadata
        .labels
        .as_ref()?
        .get(SERVICE_PROXY_NAME_LABEL)
        .map(String::as_str)
}

/// (namespace, service name) a slice serves, if it is an IPv4 slice labelled
/// with its Service.
pub fn slice_service(slice: &EndpointSlice) -> Option<(String, String)> {
    if slice.address_type != "IPv4" {
        return None;
    }
    let svc = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    let ns = slice
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    Some((ns, svc.clone()))
}

/// Translates every service on `node`; slices are matched by namespace and
/// label. The agent goes through `index`, which translates only what changed.
#[cfg(test)]
pub fn translate_on(
    node: &NodeContext,
    services: &[Service],
    slices: &[EndpointSlice],
) -> Vec<Translated> {
    let mut by_service: std::collections::BTreeMap<(String, String), Vec<&EndpointSlice>> =
        Default::default();
    for s in slices {
        if let Some(key) = slice_service(s) {
            by_service.entry(key).or_default().push(s);
        }
    }
    services
        .iter()
        .map(|svc| {
            let slices = by_service
                .get(&service_key(svc))
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            Translated {
                service: ns_name(svc.metadata.namespace.as_ref(), svc.metadata.name.as_ref()),
                result: translate_one(node, svc, slices),
            }
        })
        .collect()
}

/// `translate_on` a node that knows nothing of itself (no name, zone or
/// node-port addresses).
#[cfg(test)]
pub fn translate(services: &[Service], slices: &[EndpointSlice]) -> Vec<Translated> {
    translate_on(&NodeContext::default(), services, slices)
}

/// The frontends of one Service, given the slices that belong to it. The
/// agent does the same in two steps (`service_frontends`, `join`) through
/// the index.
#[cfg(test)]
pub fn translate_one(
    node: &NodeContext,
    svc: &Service,
    slices: &[&EndpointSlice],
) -> Result<Vec<DesiredService>, String> {
    let facts: Vec<SliceFacts> = slices.iter().map(|s| slice_facts(node, s)).collect();
    let facts: Vec<&SliceFacts> = facts.iter().collect();
    Ok(join(&service_frontends(node, svc)?, &facts))
}

/// One frontend of a Service before its backends are known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// "namespace/name" or "namespace/name:port-name".
    pub name: String,
    /// The port's name, which the EndpointSlice ports repeat.
    pub port_name: String,
    pub frontend: L4Addr,
    pub kind: ServiceKind,
}

/// How a Service picks its endpoints, the same for all its ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointRules {
    pub policy: TrafficPolicy,
    pub affinity_timeout: Option<u32>,
    /// The Service asks for topology (trafficDistribution, or the annotation
    /// set to Auto); used only if the endpoints allow it.
    pub topology: bool,
}

/// What a Service asks for: its frontends, and how their endpoints are chosen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceFrontends {
    pub ports: Vec<ServicePort>,
    pub rules: EndpointRules,
}

/// What of an EndpointSlice translation reads: its ports and its endpoints'
/// first addresses and conditions. A few dozen bytes instead of the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceFacts {
    pub ports: Vec<(String, Proto, u16)>,
    pub endpoints: Vec<(Ipv4Addr, Conditions)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conditions {
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// On this node (its slice's `nodeName` is ours).
    pub local: bool,
    pub zone: ZoneHint,
}

/// What an endpoint's zone hints say about this node's zone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ZoneHint {
    /// No hints (or this node knows no zone, so hints say nothing).
    #[default]
    None,
    /// Hinted for this node's zone.
    Here,
    /// Hinted for other zones only.
    Elsewhere,
}

pub fn slice_facts(node: &NodeContext, slice: &EndpointSlice) -> SliceFacts {
    let mut ports: Vec<(String, Proto, u16)> = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|sp| {
            let proto = proto(sp.protocol.as_ref()).ok()??;
            let port = u16::try_from(sp.port?).ok()?;
            Some((sp.name.clone().unwrap_or_default(), proto, port))
        })
        .collect();
    ports.shrink_to_fit();
    let mut endpoints: Vec<(Ipv4Addr, Conditions)> = slice
        .endpoints
        .iter()
        .filter_map(|ep| {
            // kube-proxy uses the first address of an endpoint.
            let ip = ep.addresses.first()?.parse::<Ipv4Addr>().ok()?;
            let c = ep.conditions.as_ref();
            // Unknown readiness counts as ready (API documentation).
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let zone = match ep.hints.as_ref().and_then(|h| h.for_zones.as_ref()) {
                _ if !node.knows_zone() => ZoneHint::None,
                None => ZoneHint::None,
                Some(z) if z.is_empty() => ZoneHint::None,
                Some(z) if z.iter().any(|z| z.name == node.zone) => ZoneHint::Here,
                Some(_) => ZoneHint::Elsewhere,
            };
            Some((
                ip,
                Conditions {
                    ready,
                    serving: c.and_then(|c| c.serving).unwrap_or(ready),
                    terminating: c.and_then(|c| c.terminating).unwrap_or(false),
                    local: !node.name.is_empty()
                        && ep.node_name.as_deref() == Some(node.name.as_str()),
                    zone,
                },
            ))
        })
        .collect();
    endpoints.shrink_to_fit();
    SliceFacts { ports, endpoints }
}

/// Whether a policy field says Local.
fn is_local(policy: Option<&String>) -> bool {
    policy.map(String::as_str) == Some("Local")
}

/// The IPv4 addresses among `ips`; `field` names them in errors. IPv6 ones
/// are skipped (warned about by `ignored`).
fn ipv4_of<'a>(
    ips: impl Iterator<Item = &'a String>,
    field: &str,
) -> Result<Vec<Ipv4Addr>, String> {
    let mut out = Vec::new();
    for (i, ip) in ips.enumerate() {
        match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => out.push(a),
            Ok(IpAddr::V6(_)) => {}
            Err(_) => return Err(format!("{field}[{i}] {ip:?} is not an IP address")),
        }
    }
    Ok(out)
}

/// The frontends a Service asks for, or why it cannot be served. Empty for
/// Services with nothing to balance (headless, ExternalName) and for those
/// of another proxy.
pub fn service_frontends(node: &NodeContext, svc: &Service) -> Result<ServiceFrontends, String> {
    let id = ns_name(svc.metadata.namespace.as_ref(), svc.metadata.name.as_ref());
    if svc.metadata.name.is_none() {
        return Err("metadata.name is missing".into());
    }
    if other_proxy(svc).is_some() {
        return Ok(ServiceFrontends::default());
    }
    let spec = svc.spec.as_ref().ok_or("spec is missing")?;
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    match kind {
        "ClusterIP" | "NodePort" | "LoadBalancer" => {}
        "ExternalName" => return Ok(ServiceFrontends::default()), // DNS only
        other => return Err(format!("spec.type {other:?} is not a Service type")),
    }
    let mut ips: Vec<&String> = spec.cluster_ips.iter().flatten().collect();
    if ips.is_empty() {
        ips.extend(spec.cluster_ip.as_ref());
    }
    if ips.iter().any(|ip| ip.as_str() == "None") {
        // Headless: clients resolve pods directly.
        return Ok(ServiceFrontends::default());
    }
    if ips.is_empty() || ips.iter().all(|ip| ip.is_empty()) {
        return Err(
            "spec.clusterIP is not set (standalone mode does not allocate ClusterIPs; \
                    write the address into the manifest)"
                .into(),
        );
    }
    let mut cluster_ips = Vec::new();
    for ip in ips {
        match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => cluster_ips.push(a),
            Ok(IpAddr::V6(_)) => {} // IPv6 is not served (warned)
            Err(_) => return Err(format!("spec.clusterIP {ip:?} is not an IP address")),
        }
    }
    let external_ips = ipv4_of(spec.external_ips.iter().flatten(), "spec.externalIPs")?;
    // Addresses the load balancer says it has; with ipMode Proxy the load
    // balancer itself delivers to the nodes, so kube-proxy leaves them alone.
    let lb_ips: Vec<Ipv4Addr> = if kind == "LoadBalancer" {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        let ips: Vec<&String> = ingress
            .into_iter()
            .flatten()
            .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
            .filter_map(|i| i.ip.as_ref())
            .collect();
        ipv4_of(ips.into_iter(), "status.loadBalancer.ingress")?
    } else {
        Vec::new()
    };
    let node_ports = kind == "NodePort" || kind == "LoadBalancer";

    let ports = spec.ports.as_deref().unwrap_or(&[]);
    if ports.is_empty() {
        return Err("spec.ports is empty".into());
    }
    let mut out: Vec<ServicePort> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let where_ = format!("spec.ports[{i}]");
        let port = u16::try_from(p.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{where_}.port {} is not a port number", p.port))?;
        let Some(proto) = proto(p.protocol.as_ref()).map_err(|e| format!("{where_}: {e}"))? else {
            continue; // SCTP: warned, the other ports are served
        };
        let node_port = match p.node_port {
            None | Some(0) => None,
            Some(n) => Some(
                u16::try_from(n)
                    .ok()
                    .ok_or_else(|| format!("{where_}.nodePort {n} is not a port number"))?,
            ),
        };
        let port_name = p.name.clone().unwrap_or_default();
        let name = if port_name.is_empty() {
            id.clone()
        } else {
            format!("{id}:{port_name}")
        };
        let mut add = |ip: Ipv4Addr, port: u16, kind: ServiceKind| {
            let frontend = L4Addr { ip, port, proto };
            // One frontend once, the first kind that names it (an external
            // IP that is also a node address, say).
            if !out.iter().any(|p| p.frontend == frontend) {
                out.push(ServicePort {
                    name: name.clone(),
                    port_name: port_name.clone(),
                    frontend,
                    kind,
                });
            }
        };
        for ip in &cluster_ips {
            add(*ip, port, ServiceKind::ClusterIP);
        }
        if let (true, Some(np)) = (node_ports, node_port) {
            for ip in &node.node_port_addresses {
                add(*ip, np, ServiceKind::NodePort);
            }
        }
        for ip in &external_ips {
            add(*ip, port, ServiceKind::ExternalIP);
        }
        for ip in &lb_ips {
            add(*ip, port, ServiceKind::LoadBalancer);
        }
    }
    out.shrink_to_fit();

    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
    });
    let topology = asks_for_topology(svc);
    Ok(ServiceFrontends {
        ports: out,
        rules: EndpointRules {
            policy: TrafficPolicy {
                external_local: is_local(spec.external_traffic_policy.as_ref()),
                internal_local: is_local(spec.internal_traffic_policy.as_ref()),
            },
            affinity_timeout,
            topology,
        },
    })
}

/// A Service's frontends with the backends its slices give each.
pub fn join(svc: &ServiceFrontends, slices: &[&SliceFacts]) -> Vec<DesiredService> {
    let rules = svc.rules;
    let mut out: Vec<DesiredService> = Vec::with_capacity(svc.ports.len());
    // Frontends of one port share their endpoint sets: work them out once.
    let mut sets: Option<(&str, Proto, EndpointSets)> = None;
    for p in &svc.ports {
        let fresh =
            !matches!(&sets, Some((n, pr, _)) if *n == p.port_name && *pr == p.frontend.proto);
        if fresh {
            sets = Some((
                &p.port_name,
                p.frontend.proto,
                endpoint_sets(slices, &p.port_name, p.frontend.proto, rules.topology),
            ));
        }
        let (_, _, e) = sets.as_ref().expect("set above");
        let (backends, internal, policy) = match p.kind {
            // Traffic to a ClusterIP comes from inside the cluster.
            ServiceKind::ClusterIP => (
                e.pick(rules.policy.internal_local),
                None,
                TrafficPolicy {
                    external_local: false,
                    internal_local: rules.policy.internal_local,
                },
            ),
            ServiceKind::NodePort | ServiceKind::ExternalIP | ServiceKind::LoadBalancer => {
                let ext = e.pick(rules.policy.external_local);
                let internal = (rules.policy.external_local != rules.policy.internal_local)
                    .then(|| e.pick(rules.policy.internal_local));
                (ext, internal, rules.policy)
            }
        };
        out.push(DesiredService {
            name: p.name.clone(),
            frontend: p.frontend,
            kind: p.kind,
            backends,
            internal,
            policy,
            affinity_timeout: rules.affinity_timeout,
        });
    }
    out
}

/// The two endpoint sets of one service port, as kube-proxy categorizes
/// them: the cluster-wide one and this node's.
struct EndpointSets {
    cluster: Vec<(L4Addr, BackendState)>,
    local: Vec<(L4Addr, BackendState)>,
}

impl EndpointSets {
    fn pick(&self, local: bool) -> Vec<(L4Addr, BackendState)> {
        let mut v = if local {
            self.local.clone()
        } else {
            self.cluster.clone()
        };
        v.shrink_to_fit();
        v
    }
}

/// The endpoints of one service port: ready ones, else serving and
/// terminating ones (so a rolling update does not drop to zero at the end),
/// for the cluster and for this node alike; zone hints narrow the cluster's
/// ready ones when the Service asks for topology and every ready endpoint
/// is hinted, one of them for this node's zone (kube-proxy's rule). The slice
/// port carries the resolved target port, so named targetPorts need nothing
/// more.
fn endpoint_sets(
    slices: &[&SliceFacts],
    port_name: &str,
    proto: Proto,
    topology: bool,
) -> EndpointSets {
    let mut all: Vec<(L4Addr, Conditions)> = Vec::new();
    for slice in slices {
        let Some(port) = slice
            .ports
            .iter()
            .find(|(n, p, _)| n == port_name && *p == proto)
            .map(|(_, _, port)| *port)
        else {
            continue;
        };
        all.extend(slice.endpoints.iter().map(|(ip, c)| {
            (
                L4Addr {
                    ip: *ip,
                    port,
                    proto,
                },
                *c,
            )
        }));
    }
    let use_topology = topology
        && all
            .iter()
            .filter(|(_, c)| c.ready)
            .all(|(_, c)| c.zone != ZoneHint::None)
        && all.iter().any(|(_, c)| c.ready && c.zone == ZoneHint::Here);
    // Ready endpoints that pass `ready_too`, else serving+terminating ones
    // that pass `keep`.
    let choose = |ready_too: &dyn Fn(&Conditions) -> bool, keep: &dyn Fn(&Conditions) -> bool| {
        let ready: Vec<(L4Addr, BackendState)> = all
            .iter()
            .filter(|(_, c)| c.ready && ready_too(c))
            .map(|(a, _)| (*a, BackendState::Active))
            .collect();
        if !ready.is_empty() {
            return ready;
        }
        all.iter()
            .filter(|(_, c)| c.serving && c.terminating && keep(c))
            .map(|(a, _)| (*a, BackendState::Terminating))
            .collect()
    };
    EndpointSets {
        // Topology narrows the ready endpoints only; the terminating
        // fallback is taken whole, as kube-proxy does.
        cluster: choose(&|c| !use_topology || c.zone == ZoneHint::Here, &|_| true),
        local: choose(&|c| c.local, &|c| c.local),
    }
}

#[cfg(test)]
#[path = "translate_tests.rs"]
mod tests;
