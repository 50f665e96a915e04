//! Service and EndpointSlice manifests for sandboxes, as a user would write them.

use std::net::Ipv4Addr;

/// A ClusterIP Service `name` at `vip` with an HTTP port (80 -> targetPort
/// "http") and a DNS-like UDP port (53 -> 5353).
pub fn service(name: &str, vip: Ipv4Addr) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
spec:
  type: ClusterIP
  clusterIP: {vip}
  selector:
    app: {name}
  ports:
  - name: http
    port: 80
    protocol: TCP
    targetPort: http
  - name: dns
    port: 53
    protocol: UDP
    targetPort: 5353
"
    )
}

/// The endpoint condition of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    Ready,
    Terminating,
}

/// An EndpointSlice for Service `name` with the pods at `ips`, serving the
/// named port "http" on 8080/TCP and "dns" on 5353/UDP.
pub fn endpoint_slice(name: &str, ips: &[(Ipv4Addr, Cond)]) -> String {
    let mut eps = String::new();
    for (ip, cond) in ips {
        let (ready, serving, terminating) = match cond {
            Cond::Ready => (true, true, false),
            Cond::Terminating => (false, true, true),
        };
        eps.push_str(&format!(
            "- addresses: [\"{ip}\"]
  conditions: {{ready: {ready}, serving: {serving}, terminating: {terminating}}}
"
        ));
    }
    let endpoints = if ips.is_empty() {
        "endpoints: []\n".to_string()
    } else {
        format!("endpoints:\n{eps}")
    };
    format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-abcde
  namespace: default
  labels:
    kubernetes.io/service-name: {name}
addressType: IPv4
ports:
- name: http
  port: 8080
  protocol: TCP
- name: dns
  port: 5353
  protocol: UDP
{endpoints}"
    )
}

/// The `service` above with fields lash does not serve yet on a Service
/// whose ClusterIP it does: an SCTP port and an IPv6 external IP.
pub fn service_with_unserved_fields(name: &str, vip: Ipv4Addr) -> String {
    service(name, vip)
        .replace(
            "  type: ClusterIP\n",
            "  type: ClusterIP\n  externalIPs: ['2001:db8::10']\n",
        )
        .replace(
            "    targetPort: 5353\n",
            "    targetPort: 5353\n  - name: sig\n    port: 3868\n    protocol: SCTP\n",
        )
}

/// The `service` above labelled for another proxy: not ours to serve.
pub fn other_proxy_service(name: &str, vip: Ipv4Addr, proxy: &str) -> String {
    service(name, vip).replace(
        "  namespace: default\n",
        &format!("  namespace: default\n  labels:\n    service.kubernetes.io/service-proxy-name: {proxy}\n"),
    )
}

/// A Node as the API server would hold it, reduced to what lash reads: its
/// name, pod range and InternalIP. File name by convention: `node-NAME.yaml`.
pub fn node(name: &str, pod_cidr: &str, address: Ipv4Addr) -> String {
    format!(
        "apiVersion: v1
kind: Node
metadata:
  name: {name}
spec:
  podCIDR: {pod_cidr}
  podCIDRs: [{pod_cidr}]
status:
  addresses:
  - type: InternalIP
    address: {address}
  - type: Hostname
    address: {name}
"
    )
}

/// The file a Node's manifest is kept in.
pub fn node_file(name: &str) -> String {
    format!("node-{name}.yaml")
}
