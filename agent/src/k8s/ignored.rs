//! Fields of a Service that lash reads past although they change which
//! connections reach which endpoint on a kube-proxy node. `agent status`
//! names each one per Service, so nobody takes a missing feature for a bug.
//!
//! Kept as a bit set per Service: the index holds every Service of the
//! cluster, and nearly all of them set none of these fields.
//!
//! Warned about (each changes where traffic lash does serve goes, or leaves
//! traffic a user asked for unserved):
//! - `spec.type` NodePort and LoadBalancer: no node port, no load-balancer
//!   address. The warning covers the fields that only act on that traffic:
//!   `ports[].nodePort`, `loadBalancerIP`, `loadBalancerSourceRanges`,
//!   `loadBalancerClass`, `healthCheckNodePort`, `status.loadBalancer`.
//! - `spec.externalIPs`: connections to them are not balanced.
//! - `spec.sessionAffinity: ClientIP` (its `sessionAffinityConfig` only
//!   tunes it): backends are picked per connection.
//! - `spec.internalTrafficPolicy: Local`: endpoints on other nodes are used.
//! - IPv6 (a v6 ClusterIP, `ipFamilies` naming IPv6, `RequireDualStack`):
//!   only IPv4 ClusterIPs are programmed.
//! - `spec.trafficDistribution` and the topology-mode annotation: zone hints
//!   are not read, every endpoint counts alike.
//!
//! Not warned about:
//! - `spec.externalTrafficPolicy`: it only governs traffic that arrives
//!   through node ports, load-balancer addresses or external IPs, which lash
//!   does not serve and already warns about.
//! - `spec.publishNotReadyAddresses`: the EndpointSlice controller acts on it
//!   by writing `ready: true` on the endpoints, which translation reads.
//! - `ports[].appProtocol`: a hint for L7 proxies; kube-proxy ignores it too.
//! - ExternalName and headless Services: DNS serves them, and a proxy has
//!   nothing to balance (kube-proxy programs nothing for them either); their
//!   other fields go unused by any node proxy.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;

/// Annotations that ask the EndpointSlice controller for zone hints (the
/// second is the name before Kubernetes 1.27). The manifest reader keeps
/// these two and drops the other annotations.
pub const TOPOLOGY_ANNOTATIONS: [&str; 2] = [
    "service.kubernetes.io/topology-mode",
    "service.kubernetes.io/topology-aware-hints",
];

/// One ignored field each; the order is the order of the warnings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ignored(u16);

impl Ignored {
    pub const NODE_PORT: Ignored = Ignored(1 << 0);
    pub const LOAD_BALANCER: Ignored = Ignored(1 << 1);
    pub const EXTERNAL_IPS: Ignored = Ignored(1 << 2);
    pub const SESSION_AFFINITY: Ignored = Ignored(1 << 3);
    pub const INTERNAL_LOCAL: Ignored = Ignored(1 << 4);
    pub const IPV6: Ignored = Ignored(1 << 5);
    pub const TRAFFIC_DISTRIBUTION: Ignored = Ignored(1 << 6);
    pub const TOPOLOGY_ANNOTATION: Ignored = Ignored(1 << 7);

    /// Each field, what the warning says about it.
    const TEXTS: [(Ignored, &'static str); 8] = [
        (
            Ignored::NODE_PORT,
            "spec.type=NodePort is not served yet (no node port is opened; only the ClusterIP is)",
        ),
        (
            Ignored::LOAD_BALANCER,
            "spec.type=LoadBalancer is not served yet (no node port, load-balancer address or \
             source range is programmed; only the ClusterIP is)",
        ),
        (
            Ignored::EXTERNAL_IPS,
            "spec.externalIPs is not served yet (connections to those addresses are not balanced; \
             only the ClusterIP is)",
        ),
        (
            Ignored::SESSION_AFFINITY,
            "spec.sessionAffinity=ClientIP is not served yet (connections are balanced per \
             connection, not per client)",
        ),
        (
            Ignored::INTERNAL_LOCAL,
            "spec.internalTrafficPolicy=Local is not served yet (connections go to endpoints on \
             every node)",
        ),
        (
            Ignored::IPV6,
            "spec.ipFamilies/clusterIPs: IPv6 is not served yet (only IPv4 ClusterIPs are \
             programmed)",
        ),
        (
            Ignored::TRAFFIC_DISTRIBUTION,
            "spec.trafficDistribution is not served yet (endpoints in every zone are used alike)",
        ),
        (
            Ignored::TOPOLOGY_ANNOTATION,
            "metadata.annotations[service.kubernetes.io/topology-mode] is not served yet \
             (topology hints are not read; endpoints in every zone are used alike)",
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

/// The fields of `svc` that would change its traffic on a kube-proxy node
/// and that lash does not act on.
pub fn ignored_fields(svc: &Service) -> Ignored {
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
    out.add(Ignored::NODE_PORT, kind == "NodePort");
    out.add(Ignored::LOAD_BALANCER, kind == "LoadBalancer");
    out.add(
        Ignored::EXTERNAL_IPS,
        spec.external_ips.as_ref().is_some_and(|v| !v.is_empty()),
    );
    out.add(
        Ignored::SESSION_AFFINITY,
        spec.session_affinity.as_deref() == Some("ClientIP"),
    );
    out.add(
        Ignored::INTERNAL_LOCAL,
        spec.internal_traffic_policy.as_deref() == Some("Local"),
    );
    out.add(
        Ignored::IPV6,
        ips.iter()
            .any(|ip| matches!(ip.parse::<IpAddr>(), Ok(IpAddr::V6(_))))
            || spec.ip_families.iter().flatten().any(|f| f == "IPv6")
            || spec.ip_family_policy.as_deref() == Some("RequireDualStack"),
    );
    out.add(
        Ignored::TRAFFIC_DISTRIBUTION,
        spec.traffic_distribution
            .as_deref()
            .is_some_and(|t| !t.is_empty()),
    );
    // "Auto" asks the controller for hints; "Disabled" or nothing is the
    // default, and other values are not acted on.
    out.add(
        Ignored::TOPOLOGY_ANNOTATION,
        svc.metadata.annotations.as_ref().is_some_and(|a| {
            TOPOLOGY_ANNOTATIONS
                .iter()
                .any(|k| a.get(*k).is_some_and(|v| v.eq_ignore_ascii_case("auto")))
        }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::manifests::parse;

    /// The warnings of a Service `default/web` with `extra` lines added to a
    /// plain ClusterIP spec, read the way the agent reads manifests (trimmed).
    fn warnings_with(extra_meta: &str, extra_spec: &str) -> Vec<String> {
        let yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\n{extra_meta}\
             spec:\n  clusterIP: 10.96.0.20\n  ports:\n  - {{name: http, port: 80}}\n{extra_spec}"
        );
        let objs = parse(&yaml).expect("test YAML parses");
        assert_eq!(objs.services.len(), 1);
        ignored_fields(&objs.services[0])
            .warnings("default", "web")
            .collect()
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

    #[test]
    fn each_ignored_field_is_one_warning_naming_service_and_field() {
        let cases: [(&str, &str, &str, &str); 9] = [
            ("", "  type: NodePort\n  externalTrafficPolicy: Local\n", "spec.type=NodePort", "node port"),
            ("", "  type: LoadBalancer\n  loadBalancerSourceRanges: [10.0.0.0/8]\n", "spec.type=LoadBalancer", "load-balancer address"),
            ("", "  externalIPs: [192.0.2.10]\n", "spec.externalIPs", "not balanced"),
            ("", "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n", "spec.sessionAffinity=ClientIP", "per connection"),
            ("", "  internalTrafficPolicy: Local\n", "spec.internalTrafficPolicy=Local", "every node"),
            ("", "  ipFamilies: [IPv4, IPv6]\n  ipFamilyPolicy: PreferDualStack\n", "IPv6", "only IPv4"),
            ("", "  trafficDistribution: PreferClose\n", "spec.trafficDistribution", "every zone"),
            ("  annotations: {service.kubernetes.io/topology-mode: Auto}\n", "", "topology-mode", "hints are not read"),
            ("  annotations: {service.kubernetes.io/topology-aware-hints: auto}\n", "", "topology-mode", "hints are not read"),
        ];
        for (meta, spec, field, instead) in cases {
            let w = warnings_with(meta, spec);
            assert_eq!(w.len(), 1, "{meta}{spec}: {w:?}");
            let w = &w[0];
            assert!(w.starts_with("Service default/web: "), "{w}");
            assert!(w.contains(field), "{w} does not name {field}");
            assert!(w.contains("not served yet"), "{w}");
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
            "  type: NodePort\n  sessionAffinity: ClientIP\n  externalIPs: [192.0.2.10]\n",
        );
        assert_eq!(w.len(), 3, "{w:?}");
    }

    #[test]
    fn headless_and_external_name_services_have_no_warnings() {
        for spec in [
            "{clusterIP: None, sessionAffinity: ClientIP, ports: [{port: 80}]}",
            "{type: ExternalName, externalName: example.com, sessionAffinity: ClientIP}",
        ] {
            let yaml =
                format!("apiVersion: v1\nkind: Service\nmetadata: {{name: x}}\nspec: {spec}\n");
            let objs = parse(&yaml).unwrap();
            assert!(ignored_fields(&objs.services[0]).is_empty(), "{spec}");
        }
    }
}
