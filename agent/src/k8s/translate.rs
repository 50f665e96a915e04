//! Services + EndpointSlices -> desired frontends and backends, the way
//! kube-proxy reads them:
//! - one frontend per (IPv4 ClusterIP, service port);
//! - backends from the EndpointSlices labelled `kubernetes.io/service-name`,
//!   matched to the service port by port name and protocol; the slice port
//!   carries the resolved target port, so named targetPorts need nothing more;
//! - ready endpoints only, or serving+terminating ones when none is ready.

use std::{collections::BTreeMap, net::Ipv4Addr};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

use crate::lb::{BackendState, DesiredService, L4Addr, Proto, ServiceKind};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The desired services of one Kubernetes Service, or why it has none.
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

fn proto(p: Option<&String>) -> Result<Proto, String> {
    match p.map(String::as_str).unwrap_or("TCP") {
        "TCP" => Ok(Proto::Tcp),
        "UDP" => Ok(Proto::Udp),
        other => Err(format!(
            "protocol {other} is not supported (TCP and UDP are)"
        )),
    }
}

/// Translates every service; slices are matched by namespace and label.
pub fn translate(services: &[Service], slices: &[EndpointSlice]) -> Vec<Translated> {
    // (namespace, service name) -> slices
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        if s.address_type != "IPv4" {
            continue;
        }
        let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let ns = s
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        by_service.entry((ns, svc.clone())).or_default().push(s);
    }
    services
        .iter()
        .map(|svc| {
            let ns = svc
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            let name = svc.metadata.name.clone().unwrap_or_default();
            let slices = by_service
                .get(&(ns, name))
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            Translated {
                service: ns_name(svc.metadata.namespace.as_ref(), svc.metadata.name.as_ref()),
                result: translate_one(svc, slices),
            }
        })
        .collect()
}

fn translate_one(svc: &Service, slices: &[&EndpointSlice]) -> Result<Vec<DesiredService>, String> {
    let id = ns_name(svc.metadata.namespace.as_ref(), svc.metadata.name.as_ref());
    if svc.metadata.name.is_none() {
        return Err("metadata.name is missing".into());
    }
    let spec = svc.spec.as_ref().ok_or("spec is missing")?;
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    match kind {
        "ClusterIP" | "NodePort" | "LoadBalancer" => {}
        "ExternalName" => return Ok(Vec::new()), // DNS only, nothing to balance
        other => return Err(format!("spec.type {other:?} is not a Service type")),
    }
    let mut ips: Vec<&String> = spec.cluster_ips.iter().flatten().collect();
    if ips.is_empty() {
        ips.extend(spec.cluster_ip.as_ref());
    }
    if ips.iter().any(|ip| ip.as_str() == "None") {
        return Ok(Vec::new()); // headless: clients resolve pods directly
    }
    if ips.is_empty() || ips.iter().all(|ip| ip.is_empty()) {
        return Err(
            "spec.clusterIP is not set (standalone mode does not allocate ClusterIPs; \
                    write the address into the manifest)"
                .into(),
        );
    }
    let mut v4 = Vec::new();
    for ip in ips {
        match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) => v4.push(a),
            Ok(std::net::IpAddr::V6(_)) => {} // IPv6 is not served yet
            Err(_) => return Err(format!("spec.clusterIP {ip:?} is not an IP address")),
        }
    }

    let ports = spec.ports.as_deref().unwrap_or(&[]);
    if ports.is_empty() {
        return Err("spec.ports is empty".into());
    }
    let mut out = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let where_ = format!("spec.ports[{i}]");
        let port = u16::try_from(p.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{where_}.port {} is not a port number", p.port))?;
        let proto = proto(p.protocol.as_ref()).map_err(|e| format!("{where_}: {e}"))?;
        let port_name = p.name.clone().unwrap_or_default();
        let backends = backends_for(slices, &port_name, proto);
        for ip in &v4 {
            out.push(DesiredService {
                name: if port_name.is_empty() {
                    id.clone()
                } else {
                    format!("{id}:{port_name}")
                },
                frontend: L4Addr {
                    ip: *ip,
                    port,
                    proto,
                },
                kind: ServiceKind::ClusterIP,
                backends: backends.clone(),
            });
        }
    }
    Ok(out)
}

/// The backends for one service port: ready endpoints, else serving and
/// terminating ones (so a rolling update does not drop to zero at the end).
fn backends_for(
    slices: &[&EndpointSlice],
    port_name: &str,
    proto: Proto,
) -> Vec<(L4Addr, BackendState)> {
    let mut ready = Vec::new();
    let mut terminating = Vec::new();
    for slice in slices {
        let Some(port) = slice.ports.iter().flatten().find_map(|sp| {
            let name_matches = sp.name.as_deref().unwrap_or("") == port_name;
            let proto_matches = self::proto(sp.protocol.as_ref()).ok() == Some(proto);
            (name_matches && proto_matches)
                .then_some(sp.port)
                .flatten()
                .and_then(|p| u16::try_from(p).ok())
        }) else {
            continue;
        };
        for ep in &slice.endpoints {
            // kube-proxy uses the first address of an endpoint.
            let Some(ip) = ep
                .addresses
                .first()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let c = ep.conditions.as_ref();
            // Unknown readiness counts as ready (API documentation).
            let is_ready = c.and_then(|c| c.ready).unwrap_or(true);
            let is_serving = c.and_then(|c| c.serving).unwrap_or(is_ready);
            let is_terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let addr = L4Addr { ip, port, proto };
            if is_ready {
                ready.push((addr, BackendState::Active));
            } else if is_serving && is_terminating {
                terminating.push((addr, BackendState::Terminating));
            }
        }
    }
    if ready.is_empty() {
        terminating
    } else {
        ready
    }
}
