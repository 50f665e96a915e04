//! Fields of a Service that lash reads past although they change which
//! connections reach which endpoint on a kube-proxy node. `agent status`
//! names each one per Service, so nobody takes a missing feature for a bug.
//!
//! Kept as a bit set per Service: the index holds every Service of the
//! cluster, and nearly all of them set none of these fields.
//!
//! Warned about (each leaves traffic a user asked for unserved, or served
//! differently):
//! - a port with `protocol: SCTP`: that port is not programmed (the
//!   Service's TCP and UDP ports are);
//! - a NodePort or LoadBalancer Service port without `nodePort` (standalone
//!   mode allocates none; with `allocateLoadBalancerNodePorts: false` a
//!   LoadBalancer is meant to have none and is not warned about);
//! - `spec.loadBalancerSourceRanges`: every source reaches the load-balancer
//!   addresses;
//! - `spec.healthCheckNodePort` (LoadBalancer with
//!   externalTrafficPolicy=Local): nothing answers the health checks;
//! - IPv6 (a v6 ClusterIP, external IP or load-balancer address, `ipFamilies`
//!   naming IPv6, `RequireDualStack`): only IPv4 is programmed;
//! - topology asked for (`trafficDistribution`, the topology-mode annotation
//!   set to Auto) on an agent that knows no zone (`--zone`): zone hints are
//!   not used.
//!
//! Served, so not warned about any more: node ports, external IPs,
//! load-balancer ingress addresses, `sessionAffinity: ClientIP` with its
//! timeout, both traffic policies, zone hints (see `translate`).
//!
//! Not warned about either:
//! - `spec.publishNotReadyAddresses`: the EndpointSlice controller acts on it
//!   by writing `ready: true` on the endpoints, which translation reads.
//! - `ports[].appProtocol`: a hint for L7 proxies; kube-proxy ignores it too.
//! - `spec.loadBalancerClass`, `loadBalancerIP`, ingress `ipMode: Proxy` and
//!   hostname-only ingress: what kube-proxy programs for them, lash does.
//! - ExternalName and headless Services: DNS serves them, and a proxy has
//!   nothing to balance (kube-proxy programs nothing for them either); their
//!   other fields go unused by any node proxy.
//! - Services labelled `service.kubernetes.io/service-proxy-name`: another
//!   proxy's (listed apart in `agent status`, not warned).

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;

use super::{
    node_context::NodeContext,
    translate::{asks_for_topology, other_proxy},
};

/// One ignored field each; the order is the order of the warnings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ignored(u16);

impl Ignored {
    pub const SCTP: Ignored = Ignored(1 << 0);
    pub const NODE_PORT_UNSET: Ignored = Ignored(1 << 1);
    pub const SOURCE_RANGES: Ignored = Ignored(1 << 2);
    pub const HEALTH_CHECK: Ignored = Ignored(1 << 3);
    pub const IPV6: Ignored = Ignored(1 << 4);
    pub const NO_ZONE: Ignored = Ignored(1 << 5);

    /// Each field, what the warning says about it.
    const TEXTS: [(Ignored, &'static str); 6] = [
        (
            Ignored::SCTP,
            "spec.ports[].protocol=SCTP is not served (those ports are not programmed; the \
             Service's TCP and UDP ports are)",
        ),
        (
            Ignored::NODE_PORT_UNSET,
            "spec.ports[].nodePort is not set (standalone mode allocates no node ports; write \
             them into the manifest): those ports get no node port",
        ),
        (
            Ignored::SOURCE_RANGES,
            "spec.loadBalancerSourceRanges is not served yet (every source reaches the \
             load-balancer addresses and node ports)",
        ),
        (
            Ignored::HEALTH_CHECK,
            "spec.healthCheckNodePort is not served yet (nothing answers the load balancer's \
             health checks)",
        ),
        (
            Ignored::IPV6,
            "spec.ipFamilies/clusterIPs/externalIPs: IPv6 is not served yet (only IPv4 \
             addresses are programmed)",
        ),
        (
            Ignored::NO_ZONE,
            "spec.trafficDistribution/topology-mode: zone hints are not used (this agent runs \
             without --zone; endpoints in every zone are used alike)",
        ),
    ];

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, other: Ignored) -> bool {
        self.0 & other.0 == other.0
    }

    fn add(&mut self, other: Ignored, when: bool) {
        if when {
            self.0 |= other.0;
        }
    }

    /// One line per field, naming the Service.
    pub fn warnings<'a>(self, ns: &'a str, name: &'a str) -> impl Iterator<Item = String> + 'a {
        Self::TEXTS
            .into_iter()
            .filter(move |(bit, _)| self.contains(*bit))
            .map(move |(_, text)| format!("Service {ns}/{name}: {text}"))
    }
}

fn is_v6(ip: &str) -> bool {
    matches!(ip.parse::<IpAddr>(), Ok(IpAddr::V6(_)))
}

/// The fields of `svc` that would change its traffic on a kube-proxy node
/// and that lash, on `node`, does not act on.
pub fn ignored_fields(node: &NodeContext, svc: &Service) -> Ignored {
    let mut out = Ignored::default();
    let Some(spec) = svc.spec.as_ref() else {
        return out;
    };
    let ips: Vec<&String> = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.as_ref())
        .collect();
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if kind == "ExternalName" || ips.iter().any(|ip| ip.as_str() == "None") {
        return out; // nothing to balance, for any node proxy
    }
    if other_proxy(svc).is_some() {
        return out; // another proxy's business
    }
    let ports = spec.ports.iter().flatten();
    out.add(
        Ignored::SCTP,
        ports.clone().any(|p| p.protocol.as_deref() == Some("SCTP")),
    );
    let wants_node_ports = kind == "NodePort"
        || (kind == "LoadBalancer" && spec.allocate_load_balancer_node_ports != Some(false));
    out.add(
        Ignored::NODE_PORT_UNSET,
        wants_node_ports
            && ports
                .clone()
                .any(|p| p.protocol.as_deref() != Some("SCTP") && p.node_port.unwrap_or(0) == 0),
    );
    out.add(
        Ignored::SOURCE_RANGES,
        kind == "LoadBalancer"
            && spec
                .load_balancer_source_ranges
                .as_ref()
                .is_some_and(|v| !v.is_empty()),
    );
    out.add(
        Ignored::HEALTH_CHECK,
        kind == "LoadBalancer" && spec.health_check_node_port.unwrap_or(0) != 0,
    );
    let lb_v6 = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .is_some_and(|i| i.iter().any(|i| i.ip.as_deref().is_some_and(is_v6)));
    out.add(
        Ignored::IPV6,
        ips.iter().any(|ip| is_v6(ip))
            || spec.external_ips.iter().flatten().any(|ip| is_v6(ip))
            || lb_v6
            || spec.ip_families.iter().flatten().any(|f| f == "IPv6")
            || spec.ip_family_policy.as_deref() == Some("RequireDualStack"),
    );
    let topology = asks_for_topology(svc);
    out.add(Ignored::NO_ZONE, topology && !node.knows_zone());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::manifests::parse;

    fn zoned() -> NodeContext {
        NodeContext {
            zone: "zone-a".into(),
            ..Default::default()
        }
    }

    /// The warnings of a Service `default/web` with `extra` lines added to a
    /// plain ClusterIP spec (and `status`), read the way the agent reads
    /// manifests (trimmed), on `node`.
    fn warnings_on(node: &NodeContext, extra_meta: &str, extra_spec: &str) -> Vec<String> {
        let yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\n{extra_meta}\
             spec:\n  clusterIP: 10.96.0.20\n  ports:\n  - {{name: http, port: 80}}\n{extra_spec}"
        );
        let objs = parse(&yaml).expect("test YAML parses");
        assert_eq!(objs.services.len(), 1);
        ignored_fields(node, &objs.services[0])
            .warnings("default", "web")
            .collect()
    }

    fn warnings_with(extra_meta: &str, extra_spec: &str) -> Vec<String> {
        warnings_on(&zoned(), extra_meta, extra_spec)
    }

    #[test]
    fn a_plain_cluster_ip_service_has_no_warnings() {
        assert_eq!(warnings_with("", ""), Vec::<String>::new());
        // Defaults written out are not warnings either.
        let defaults =
            "  type: ClusterIP\n  sessionAffinity: None\n  internalTrafficPolicy: Cluster\n\
                        \x20 ipFamilies: [IPv4]\n  ipFamilyPolicy: SingleStack\n  externalIPs: []\n\
                        \x20 publishNotReadyAddresses: true\n";
        let annotations = "  annotations:\n    service.kubernetes.io/topology-mode: Disabled\n    \
                           example.com/owner: team-a\n";
        assert_eq!(warnings_with(annotations, defaults), Vec::<String>::new());
    }

    /// What lash serves now gives no warning.
    #[test]
    fn served_fields_are_not_warned() {
        let served = [
            "  type: NodePort\n  externalTrafficPolicy: Local\n  ports:\n  - {name: http, port: 80, nodePort: 30080}\n",
            "  type: LoadBalancer\n  ports:\n  - {name: http, port: 80, nodePort: 30080}\n",
            "  type: LoadBalancer\n  allocateLoadBalancerNodePorts: false\n  loadBalancerClass: x\n",
            "  externalIPs: [192.0.2.10]\n",
            "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n",
            "  internalTrafficPolicy: Local\n",
            "  trafficDistribution: PreferClose\n",
        ];
        for spec in served {
            let w = if spec.contains("ports:") {
                // Its own ports instead of the base spec's.
                let yaml = format!(
                    "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\n\
                     spec:\n  clusterIP: 10.96.0.20\n{spec}"
                );
                let objs = parse(&yaml).unwrap();
                ignored_fields(&zoned(), &objs.services[0])
                    .warnings("default", "web")
                    .collect::<Vec<_>>()
            } else {
                warnings_with("", spec)
            };
            assert_eq!(w, Vec::<String>::new(), "{spec}");
        }
        let w = warnings_with(
            "  annotations: {service.kubernetes.io/topology-mode: Auto}\n",
            "",
        );
        assert_eq!(w, Vec::<String>::new());
    }

    #[test]
    fn each_unserved_field_is_one_warning_naming_service_and_field() {
        let cases: [(&str, &str, &str, &str); 8] = [
            ("", "  - {name: sig, port: 9, protocol: SCTP}\n", "protocol=SCTP", "TCP and UDP ports are"),
            ("", "  type: NodePort\n", "nodePort is not set", "allocates no node ports"),
            ("", "  type: LoadBalancer\n  allocateLoadBalancerNodePorts: false\n  loadBalancerSourceRanges: [10.0.0.0/8]\n", "spec.loadBalancerSourceRanges", "every source"),
            ("", "  type: LoadBalancer\n  allocateLoadBalancerNodePorts: false\n  externalTrafficPolicy: Local\n  healthCheckNodePort: 31000\n", "spec.healthCheckNodePort", "health checks"),
            ("", "  ipFamilies: [IPv4, IPv6]\n  ipFamilyPolicy: PreferDualStack\n", "IPv6", "only IPv4"),
            ("", "  externalIPs: ['2001:db8::1']\n", "IPv6", "only IPv4"),
            ("", "  trafficDistribution: PreferClose\n", "zone hints are not used", "--zone"),
            ("  annotations: {service.kubernetes.io/topology-aware-hints: auto}\n", "", "zone hints are not used", "--zone"),
        ];
        for (meta, spec, field, instead) in cases {
            // The topology rows only warn on an agent without --zone.
            let node = if field.contains("zone") {
                NodeContext::default()
            } else {
                zoned()
            };
            let w = warnings_on(&node, meta, spec);
            assert_eq!(w.len(), 1, "{meta}{spec}: {w:?}");
            let w = &w[0];
            assert!(w.starts_with("Service default/web: "), "{w}");
            assert!(w.contains(field), "{w} does not name {field}");
            assert!(
                w.contains("not served") || w.contains("not set") || w.contains("not used"),
                "{w}"
            );
            assert!(w.contains(instead), "{w} does not say {instead:?}");
        }
    }

    #[test]
    fn ipv6_cluster_ips_and_required_dual_stack_are_warned() {
        for spec in [
            "  clusterIPs: [10.96.0.20, 'fd00::20']\n",
            "  ipFamilyPolicy: RequireDualStack\n",
        ] {
            let w = warnings_with("", spec);
            assert_eq!(w.len(), 1, "{spec}: {w:?}");
            assert!(w[0].contains("IPv6"), "{w:?}");
        }
    }

    #[test]
    fn several_fields_give_several_warnings() {
        let w = warnings_with(
            "",
            "  - {port: 9, protocol: SCTP}\n  type: NodePort\n  externalIPs: ['2001:db8::1']\n",
        );
        assert_eq!(w.len(), 3, "{w:?}");
    }

    #[test]
    fn headless_external_name_and_other_proxy_services_have_no_warnings() {
        for (meta, spec) in [
            (
                "",
                "{clusterIP: None, sessionAffinity: ClientIP, ports: [{port: 80, protocol: SCTP}]}",
            ),
            (
                "",
                "{type: ExternalName, externalName: example.com, ipFamilies: [IPv6]}",
            ),
            (
                ", labels: {service.kubernetes.io/service-proxy-name: other}",
                "{type: NodePort, clusterIP: 10.96.0.9, ports: [{port: 80, protocol: SCTP}]}",
            ),
        ] {
            let yaml = format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: x{meta}}}\nspec: {spec}\n"
            );
            let objs = parse(&yaml).unwrap();
            assert!(
                ignored_fields(&zoned(), &objs.services[0]).is_empty(),
                "{spec}"
            );
        }
    }
}
