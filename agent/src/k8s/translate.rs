//! Services + EndpointSlices -> desired frontends and backends, the way
//! kube-proxy reads them:
//! - one frontend per (IPv4 ClusterIP, service port);
//! - backends from the EndpointSlices labelled `kubernetes.io/service-name`,
//!   matched to the service port by port name and protocol; the slice port
//!   carries the resolved target port, so named targetPorts need nothing more;
//! - ready endpoints only, or serving+terminating ones when none is ready.

use std::net::Ipv4Addr;

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

use crate::model::{BackendState, DesiredService, L4Addr, Proto, ServiceKind};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

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

fn proto(p: Option<&String>) -> Result<Proto, String> {
    match p.map(String::as_str).unwrap_or("TCP") {
        "TCP" => Ok(Proto::Tcp),
        "UDP" => Ok(Proto::Udp),
        other => Err(format!(
            "protocol {other} is not supported (TCP and UDP are)"
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

/// Translates every service; slices are matched by namespace and label. The
/// agent goes through `index`, which translates only what changed.
#[cfg(test)]
pub fn translate(services: &[Service], slices: &[EndpointSlice]) -> Vec<Translated> {
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
                result: translate_one(svc, slices),
            }
        })
        .collect()
}

/// The frontends of one Service, given the slices that belong to it. The
/// agent does the same in two steps (`service_ports`, `join`) through the index.
#[cfg(test)]
pub fn translate_one(
    svc: &Service,
    slices: &[&EndpointSlice],
) -> Result<Vec<DesiredService>, String> {
    let facts: Vec<SliceFacts> = slices.iter().map(|s| slice_facts(s)).collect();
    let facts: Vec<&SliceFacts> = facts.iter().collect();
    Ok(join(&service_ports(svc)?, &facts))
}

/// One frontend of a Service before its backends are known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// "namespace/name" or "namespace/name:port-name".
    pub name: String,
    /// The port's name, which the EndpointSlice ports repeat.
    pub port_name: String,
    pub frontend: L4Addr,
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
}

pub fn slice_facts(slice: &EndpointSlice) -> SliceFacts {
    let mut ports: Vec<(String, Proto, u16)> = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|sp| {
            let proto = proto(sp.protocol.as_ref()).ok()?;
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
            Some((
                ip,
                Conditions {
                    ready,
                    serving: c.and_then(|c| c.serving).unwrap_or(ready),
                    terminating: c.and_then(|c| c.terminating).unwrap_or(false),
                },
            ))
        })
        .collect();
    endpoints.shrink_to_fit();
    SliceFacts { ports, endpoints }
}

/// The frontends a Service asks for, or why it cannot be served. Empty for
/// Services with nothing to balance (headless, ExternalName).
pub fn service_ports(svc: &Service) -> Result<Vec<ServicePort>, String> {
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
        for ip in &v4 {
            out.push(ServicePort {
                name: if port_name.is_empty() {
                    id.clone()
                } else {
                    format!("{id}:{port_name}")
                },
                port_name: port_name.clone(),
                frontend: L4Addr {
                    ip: *ip,
                    port,
                    proto,
                },
            });
        }
    }
    out.shrink_to_fit();
    Ok(out)
}

/// A Service's frontends with the backends its slices give each.
pub fn join(ports: &[ServicePort], slices: &[&SliceFacts]) -> Vec<DesiredService> {
    let mut out: Vec<DesiredService> = ports
        .iter()
        .map(|p| DesiredService {
            name: p.name.clone(),
            frontend: p.frontend,
            kind: ServiceKind::ClusterIP,
            backends: backends_for(slices, &p.port_name, p.frontend.proto),
        })
        .collect();
    out.shrink_to_fit();
    out
}

/// The backends for one service port: ready endpoints, else serving and
/// terminating ones (so a rolling update does not drop to zero at the end).
/// The slice port carries the resolved target port, so named targetPorts
/// need nothing more.
fn backends_for(
    slices: &[&SliceFacts],
    port_name: &str,
    proto: Proto,
) -> Vec<(L4Addr, BackendState)> {
    let mut ready = Vec::new();
    let mut terminating = Vec::new();
    for slice in slices {
        let Some(port) = slice
            .ports
            .iter()
            .find(|(n, p, _)| n == port_name && *p == proto)
            .map(|(_, _, port)| *port)
        else {
            continue;
        };
        for (ip, c) in &slice.endpoints {
            let addr = L4Addr {
                ip: *ip,
                port,
                proto,
            };
            if c.ready {
                ready.push((addr, BackendState::Active));
            } else if c.serving && c.terminating {
                terminating.push((addr, BackendState::Terminating));
            }
        }
    }
    let mut chosen = if ready.is_empty() { terminating } else { ready };
    chosen.shrink_to_fit();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::manifests::parse;

    /// Strips the indentation common to all non-blank lines, so YAML can sit
    /// indented in the test source.
    fn dedent(s: &str) -> String {
        let indent = s
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.len() - l.trim_start().len())
            .min()
            .unwrap_or(0);
        s.lines()
            .map(|l| l.get(indent..).unwrap_or("").trim_end())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn translate_yaml(yaml: &str) -> Vec<Translated> {
        let objs = parse(&dedent(yaml)).expect("test YAML parses");
        translate(&objs.services, &objs.slices)
    }

    /// The result for the one service in `yaml`.
    fn one(yaml: &str) -> Result<Vec<DesiredService>, String> {
        let mut t = translate_yaml(yaml);
        assert_eq!(t.len(), 1, "one service expected");
        t.remove(0).result
    }

    fn addr(s: &str, proto: Proto) -> L4Addr {
        let (ip, port) = s.split_once(':').unwrap();
        L4Addr {
            ip: ip.parse().unwrap(),
            port: port.parse().unwrap(),
            proto,
        }
    }

    fn active(addrs: &[&str], proto: Proto) -> Vec<(L4Addr, BackendState)> {
        addrs
            .iter()
            .map(|a| (addr(a, proto), BackendState::Active))
            .collect()
    }

    #[track_caller]
    fn err_of(r: Result<Vec<DesiredService>, String>) -> String {
        match r {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => e,
        }
    }

    const WEB: &str = "
        apiVersion: v1
        kind: Service
        metadata:
          name: web
          namespace: shop
        spec:
          clusterIP: 10.96.0.20
          ports:
          - name: http
            port: 80
            targetPort: web-http
          - name: metrics
            port: 9090
            targetPort: 9091
    ";

    #[test]
    fn multi_port_service_matches_slice_ports_by_name() {
        let slices = "
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: web-abc
              namespace: shop
              labels:
                kubernetes.io/service-name: web
            addressType: IPv4
            ports:
            - name: metrics
              port: 9091
              protocol: TCP
            - name: http
              port: 5353
              protocol: UDP
            - name: http
              port: 8080
            endpoints:
            - addresses: [10.244.1.5]
              conditions: {ready: true}
            - addresses: [10.244.2.7]
              conditions: {ready: true}
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: web-def
              namespace: shop
              labels:
                kubernetes.io/service-name: web
            addressType: IPv4
            ports:
            - name: http
              port: 8080
            endpoints:
            - addresses: [10.244.3.9]
        ";
        let t = translate_yaml(&format!("{}\n---\n{}", dedent(WEB), dedent(slices)));
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].service, "shop/web");
        let got = t[0].result.as_ref().unwrap();
        assert_eq!(
            got,
            &[
                DesiredService {
                    name: "shop/web:http".into(),
                    frontend: addr("10.96.0.20:80", Proto::Tcp),
                    kind: ServiceKind::ClusterIP,
                    // The named targetPort resolved through the slice's "http" port,
                    // from both slices; the UDP "http" port is not TCP's.
                    backends: active(
                        &["10.244.1.5:8080", "10.244.2.7:8080", "10.244.3.9:8080"],
                        Proto::Tcp
                    ),
                },
                DesiredService {
                    name: "shop/web:metrics".into(),
                    frontend: addr("10.96.0.20:9090", Proto::Tcp),
                    kind: ServiceKind::ClusterIP,
                    // Only the first slice has a "metrics" port.
                    backends: active(&["10.244.1.5:9091", "10.244.2.7:9091"], Proto::Tcp),
                },
            ]
        );
    }

    #[test]
    fn udp_and_tcp_on_the_same_port() {
        let r = one("
            apiVersion: v1
            kind: Service
            metadata: {name: kube-dns, namespace: kube-system}
            spec:
              clusterIP: 10.96.0.10
              ports:
              - {name: dns, port: 53, protocol: UDP}
              - {name: dns-tcp, port: 53, protocol: TCP}
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: kube-dns-1
              namespace: kube-system
              labels: {kubernetes.io/service-name: kube-dns}
            addressType: IPv4
            ports:
            - {name: dns-tcp, port: 53, protocol: TCP}
            - {name: dns, port: 53, protocol: UDP}
            endpoints:
            - addresses: [10.244.0.3]
        ")
        .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].name, "kube-system/kube-dns:dns");
        assert_eq!(r[0].frontend, addr("10.96.0.10:53", Proto::Udp));
        assert_eq!(r[0].backends, active(&["10.244.0.3:53"], Proto::Udp));
        assert_eq!(r[1].frontend, addr("10.96.0.10:53", Proto::Tcp));
        assert_eq!(r[1].backends, active(&["10.244.0.3:53"], Proto::Tcp));
    }

    #[test]
    fn unnamed_port_matches_unnamed_slice_port() {
        let r = one("
            apiVersion: v1
            kind: Service
            metadata: {name: echo}
            spec:
              clusterIP: 10.96.0.5
              ports: [{port: 80, targetPort: 8080}]
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: echo-1
              labels: {kubernetes.io/service-name: echo}
            addressType: IPv4
            ports: [{port: 8080}]
            endpoints: [{addresses: [10.244.0.8]}]
        ")
        .unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].name, "default/echo", "no port suffix");
        assert_eq!(r[0].backends, active(&["10.244.0.8:8080"], Proto::Tcp));
    }

    const ECHO_SVC: &str = "
        apiVersion: v1
        kind: Service
        metadata: {name: echo}
        spec:
          clusterIP: 10.96.0.5
          ports: [{port: 80}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: echo-1
          labels: {kubernetes.io/service-name: echo}
        addressType: IPv4
        ports: [{port: 8080}]
    ";

    fn backends_of(endpoints: &str) -> Vec<(L4Addr, BackendState)> {
        let r = one(&format!("{}\n{}", dedent(ECHO_SVC), dedent(endpoints))).unwrap();
        assert_eq!(r.len(), 1);
        r.into_iter().next().unwrap().backends
    }

    #[test]
    fn only_ready_endpoints_when_some_are_ready() {
        let b = backends_of(
            "
            endpoints:
            - addresses: [10.244.0.1]
              conditions: {ready: true, serving: true, terminating: false}
            - addresses: [10.244.0.2]
              conditions: {ready: false, serving: true, terminating: true}
            - addresses: [10.244.0.3]
              conditions: {ready: false, serving: false, terminating: false}
            - addresses: [10.244.0.4]
              conditions: {ready: true}
            ",
        );
        assert_eq!(
            b,
            active(&["10.244.0.1:8080", "10.244.0.4:8080"], Proto::Tcp)
        );
    }

    #[test]
    fn serving_terminating_endpoints_when_none_is_ready() {
        let b = backends_of(
            "
            endpoints:
            - addresses: [10.244.0.2]
              conditions: {ready: false, serving: true, terminating: true}
            - addresses: [10.244.0.3]
              conditions: {ready: false, serving: false, terminating: true}
            - addresses: [10.244.0.5]
              conditions: {ready: false, serving: true, terminating: false}
            - addresses: [10.244.0.6]
              conditions: {ready: false, terminating: true}
            - addresses: [10.244.0.7]
              conditions: {ready: false, serving: true, terminating: true}
            ",
        );
        assert_eq!(
            b,
            [
                (
                    addr("10.244.0.2:8080", Proto::Tcp),
                    BackendState::Terminating
                ),
                (
                    addr("10.244.0.7:8080", Proto::Tcp),
                    BackendState::Terminating
                ),
            ]
        );
    }

    #[test]
    fn not_ready_not_serving_endpoints_are_excluded() {
        let b = backends_of(
            "
            endpoints:
            - addresses: [10.244.0.3]
              conditions: {ready: false, serving: false, terminating: true}
            - addresses: [10.244.0.4]
              conditions: {ready: false}
            ",
        );
        assert_eq!(b, []);
    }

    #[test]
    fn endpoints_without_conditions_count_as_ready() {
        let b = backends_of(
            "
            endpoints:
            - addresses: [10.244.0.1]
            - addresses: [10.244.0.2]
              conditions: {}
            - addresses: [10.244.0.3]
              conditions: {serving: true, terminating: false}
            - addresses: ['not-an-ip']
            - addresses: []
            ",
        );
        assert_eq!(
            b,
            active(
                &["10.244.0.1:8080", "10.244.0.2:8080", "10.244.0.3:8080"],
                Proto::Tcp
            )
        );
    }

    #[test]
    fn slices_of_other_services_and_namespaces_are_ignored() {
        let t = translate_yaml(
            "
            apiVersion: v1
            kind: Service
            metadata: {name: echo, namespace: a}
            spec: {clusterIP: 10.96.0.5, ports: [{port: 80}]}
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: echo, namespace: b}
            spec: {clusterIP: 10.96.0.6, ports: [{port: 80}]}
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: echo-a
              namespace: a
              labels: {kubernetes.io/service-name: echo}
            addressType: IPv4
            ports: [{port: 8080}]
            endpoints: [{addresses: [10.244.0.1]}]
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: other-a
              namespace: a
              labels: {kubernetes.io/service-name: other}
            addressType: IPv4
            ports: [{port: 8080}]
            endpoints: [{addresses: [10.244.0.2]}]
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: unlabelled
              namespace: b
            addressType: IPv4
            ports: [{port: 8080}]
            endpoints: [{addresses: [10.244.0.3]}]
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: echo-b-v6
              namespace: b
              labels: {kubernetes.io/service-name: echo}
            addressType: IPv6
            ports: [{port: 8080}]
            endpoints: [{addresses: ['fd00::4']}]
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: echo-c
              namespace: c
              labels: {kubernetes.io/service-name: echo}
            addressType: IPv4
            ports: [{port: 8080}]
            endpoints: [{addresses: [10.244.0.5]}]
            ",
        );
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].service, "a/echo");
        let a = t[0].result.as_ref().unwrap();
        assert_eq!(a[0].backends, active(&["10.244.0.1:8080"], Proto::Tcp));
        assert_eq!(t[1].service, "b/echo");
        let b = t[1].result.as_ref().unwrap();
        assert_eq!(
            b.len(),
            1,
            "a service without endpoints still has a frontend"
        );
        assert_eq!(b[0].frontend, addr("10.96.0.6:80", Proto::Tcp));
        assert_eq!(b[0].backends, []);
    }

    #[test]
    fn headless_and_external_name_have_no_frontends() {
        let r = one("
            apiVersion: v1
            kind: Service
            metadata: {name: db}
            spec:
              clusterIP: None
              ports: [{port: 5432}]
        ");
        assert_eq!(r, Ok(vec![]));
        let r = one("
            apiVersion: v1
            kind: Service
            metadata: {name: db}
            spec:
              clusterIPs: [None]
              ports: [{port: 5432}]
        ");
        assert_eq!(r, Ok(vec![]));
        let r = one("
            apiVersion: v1
            kind: Service
            metadata: {name: ext}
            spec:
              type: ExternalName
              externalName: example.com
        ");
        assert_eq!(r, Ok(vec![]));
    }

    fn svc_with_spec(spec: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: bad, namespace: ns}}\nspec:\n{}",
            dedent(spec)
                .lines()
                .map(|l| format!("  {l}\n"))
                .collect::<String>()
        )
    }

    #[test]
    fn invalid_services_are_errors_naming_the_field() {
        let cases = [
            ("ports: [{port: 80}]", &["spec.clusterIP", "not set"][..]),
            (
                "clusterIP: ''\nports: [{port: 80}]",
                &["spec.clusterIP", "not set"],
            ),
            (
                "clusterIP: 10.96.0.300\nports: [{port: 80}]",
                &["spec.clusterIP", "10.96.0.300", "not an IP address"],
            ),
            (
                "clusterIP: 10.96.0.7\nports: [{port: 80}, {port: 9, protocol: SCTP}]",
                &["spec.ports[1]", "SCTP"],
            ),
            (
                "clusterIP: 10.96.0.7\nports: [{port: 0}]",
                &["spec.ports[0].port", "0"],
            ),
            (
                "clusterIP: 10.96.0.7\nports: [{port: 80}, {port: 70000}]",
                &["spec.ports[1].port", "70000"],
            ),
            ("clusterIP: 10.96.0.7", &["spec.ports"]),
            ("clusterIP: 10.96.0.7\nports: []", &["spec.ports"]),
            (
                "type: Bogus\nclusterIP: 10.96.0.7\nports: [{port: 80}]",
                &["spec.type", "Bogus"],
            ),
        ];
        for (spec, needles) in cases {
            let yaml = svc_with_spec(spec);
            let e = err_of(one(&yaml));
            for n in needles {
                assert!(e.contains(n), "{spec:?}: {e:?} does not mention {n:?}");
            }
        }
        // No spec at all.
        let e = err_of(one("apiVersion: v1\nkind: Service\nmetadata: {name: x}"));
        assert!(e.contains("spec"), "{e}");
    }

    #[test]
    fn an_invalid_service_does_not_affect_others() {
        let yaml = format!(
            "{}\n---\n{}",
            svc_with_spec("ports: [{port: 80}]"),
            dedent(ECHO_SVC)
        );
        let t = translate_yaml(&yaml);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].service, "ns/bad");
        assert!(t[0].result.is_err());
        assert_eq!(t[1].service, "default/echo");
        assert_eq!(t[1].result.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn ipv6_cluster_ips_are_ignored() {
        let dual = one("
            apiVersion: v1
            kind: Service
            metadata: {name: dual}
            spec:
              clusterIP: fd00::30
              clusterIPs: [fd00::30, 10.96.0.30]
              ipFamilies: [IPv6, IPv4]
              ports: [{port: 80}]
        ")
        .unwrap();
        assert_eq!(dual.len(), 1);
        assert_eq!(dual[0].frontend, addr("10.96.0.30:80", Proto::Tcp));

        let v6 = one("
            apiVersion: v1
            kind: Service
            metadata: {name: v6}
            spec:
              clusterIP: fd00::31
              ports: [{port: 80}]
        ");
        assert_eq!(v6, Ok(vec![]));
    }
}
