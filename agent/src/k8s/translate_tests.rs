//! Translation tests: Service + EndpointSlices (YAML, as users write them)
//! -> the DesiredServices the datapath gets. The tables further down walk
//! issue 8's list of what kube-proxy serves, one row per case.

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
            DesiredService::plain(
                "shop/web:http".into(),
                addr("10.96.0.20:80", Proto::Tcp),
                ServiceKind::ClusterIP,
                // The named targetPort resolved through the slice's "http" port,
                // from both slices; the UDP "http" port is not TCP's.
                active(
                    &["10.244.1.5:8080", "10.244.2.7:8080", "10.244.3.9:8080"],
                    Proto::Tcp
                ),
            ),
            DesiredService::plain(
                "shop/web:metrics".into(),
                addr("10.96.0.20:9090", Proto::Tcp),
                ServiceKind::ClusterIP,
                // Only the first slice has a "metrics" port.
                active(&["10.244.1.5:9091", "10.244.2.7:9091"], Proto::Tcp),
            ),
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
            "clusterIP: 10.96.0.7\nports: [{port: 80}, {port: 9, protocol: QUIC}]",
            &["spec.ports[1]", "QUIC"],
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

// ---------------------------------------------------------------------------
// Issue 8, section 2: one table row per case, on a node that knows itself.
// ---------------------------------------------------------------------------

/// Node `node-a` in zone `zone-a`, node ports on 127.0.0.1 and 192.168.1.10.
fn node_a() -> NodeContext {
    NodeContext {
        name: "node-a".into(),
        zone: "zone-a".into(),
        node_port_addresses: vec![
            "127.0.0.1".parse().unwrap(),
            "192.168.1.10".parse().unwrap(),
        ],
    }
}

/// One desired frontend as a line: `KIND FRONTEND => BACKENDS`, then the
/// internal scope, the local policies and the affinity timeout when set.
/// A terminating backend is marked `~`.
fn line(d: &DesiredService) -> String {
    let list = |v: &[(L4Addr, BackendState)]| {
        let items: Vec<String> = v
            .iter()
            .map(|(a, s)| {
                let mark = if *s == BackendState::Terminating {
                    "~"
                } else {
                    ""
                };
                format!("{mark}{}:{}", a.ip, a.port)
            })
            .collect();
        format!("[{}]", items.join(" "))
    };
    let mut out = format!("{:?} {} => {}", d.kind, d.frontend, list(&d.backends));
    if let Some(int) = &d.internal {
        out += &format!(" internal {}", list(int));
    }
    if d.policy.external_local {
        out += " ext-local";
    }
    if d.policy.internal_local {
        out += " int-local";
    }
    if let Some(t) = d.affinity_timeout {
        out += &format!(" affinity {t}s");
    }
    out
}

/// The lines of the one Service in `yaml`, translated on `node`.
fn lines_on(node: &NodeContext, yaml: &str) -> Result<Vec<String>, String> {
    let objs = parse(&dedent(yaml)).expect("test YAML parses");
    let mut t = translate_on(node, &objs.services, &objs.slices);
    assert_eq!(t.len(), 1, "one service expected");
    Ok(t.remove(0).result?.iter().map(line).collect())
}

/// A slice of `svc` in `default` with ports http 8080/TCP and dns 5353/UDP
/// and the endpoints given as YAML list items.
fn slice_yaml(name: &str, svc: &str, endpoints: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}
  labels: {{kubernetes.io/service-name: {svc}}}
addressType: IPv4
ports:
- {{name: http, port: 8080, protocol: TCP}}
- {{name: dns, port: 5353, protocol: UDP}}
endpoints:
{}",
        dedent(endpoints)
    )
}

/// Service `web` in `default`: ClusterIP 10.96.0.10, http 80 -> "http"
/// (TCP) and dns 53 -> 5353 (UDP), with `extra` spec lines and `ports` lines
/// after its own.
fn web_yaml(extra: &str, port_extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  clusterIP: 10.96.0.10
{}
  ports:
  - {{name: http, port: 80, targetPort: http{port_extra}}}
  - {{name: dns, port: 53, targetPort: 5353, protocol: UDP}}
",
        dedent(extra)
            .lines()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// Endpoints: .1 ready on node-a, .2 ready on node-b, .3 serving and
/// terminating on node-a, .4 not ready on node-b.
const MIXED: &str = "
    - addresses: [10.244.0.1]
      nodeName: node-a
      conditions: {ready: true}
    - addresses: [10.244.0.2]
      nodeName: node-b
      conditions: {ready: true}
    - addresses: [10.244.0.3]
      nodeName: node-a
      conditions: {ready: false, serving: true, terminating: true}
    - addresses: [10.244.0.4]
      nodeName: node-b
      conditions: {ready: false, serving: false}
";

#[track_caller]
fn check_table(rows: &[(&str, NodeContext, String, &[&str])]) {
    for (title, node, yaml, want) in rows {
        let got = lines_on(node, yaml).unwrap_or_else(|e| panic!("{title}: {e}"));
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, want, "{title}");
    }
}

fn svc_and_slices(svc: &str, slices: &[String]) -> String {
    let mut parts = vec![svc.to_string()];
    parts.extend(slices.iter().cloned());
    parts
        .iter()
        .map(|p| format!("{}\n", p.trim_end()))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Items 1 and 2: ClusterIP with several ports, named target ports, TCP and
/// UDP (SCTP ports left out, the rest served); node ports on every node-port
/// address; LoadBalancer node ports and ingress addresses; external IPs.
#[test]
fn frontends_of_each_service_type() {
    let eps = "
        - addresses: [10.244.0.1]
        - addresses: [10.244.0.2]
    ";
    let slices = [slice_yaml("web-1", "web", eps)];
    let only_192 = NodeContext {
        node_port_addresses: vec!["192.168.1.10".parse().unwrap()],
        ..node_a()
    };
    let rows: Vec<(&str, NodeContext, String, &[&str])> = vec![
        (
            "ClusterIP, TCP by named targetPort and UDP; an SCTP port is left out",
            node_a(),
            svc_and_slices(
                &web_yaml("", "").replace(
                    "  - {name: dns,",
                    "  - {name: sig, port: 9, protocol: SCTP}\n  - {name: dns,",
                ),
                &slices,
            ),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [10.244.0.1:8080 10.244.0.2:8080]",
                "ClusterIP 10.96.0.10:53/UDP => [10.244.0.1:5353 10.244.0.2:5353]",
            ],
        ),
        (
            "NodePort: the ClusterIP, then each node-port address on the nodePort",
            node_a(),
            svc_and_slices(&web_yaml("type: NodePort", ", nodePort: 30080"), &slices),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [10.244.0.1:8080 10.244.0.2:8080]",
                "NodePort 127.0.0.1:30080/TCP => [10.244.0.1:8080 10.244.0.2:8080]",
                "NodePort 192.168.1.10:30080/TCP => [10.244.0.1:8080 10.244.0.2:8080]",
                // The dns port has no nodePort (warned: standalone allocates none).
                "ClusterIP 10.96.0.10:53/UDP => [10.244.0.1:5353 10.244.0.2:5353]",
            ],
        ),
        (
            "NodePort with --nodeport-addresses keeping one address",
            only_192,
            svc_and_slices(&web_yaml("type: NodePort", ", nodePort: 30080"), &slices),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [10.244.0.1:8080 10.244.0.2:8080]",
                "NodePort 192.168.1.10:30080/TCP => [10.244.0.1:8080 10.244.0.2:8080]",
                "ClusterIP 10.96.0.10:53/UDP => [10.244.0.1:5353 10.244.0.2:5353]",
            ],
        ),
        (
            "LoadBalancer: node ports and the IPv4 ingress addresses (not ipMode Proxy)",
            node_a(),
            svc_and_slices(
                &format!(
                    "{}status:
  loadBalancer:
    ingress:
    - ip: 203.0.113.7
    - ip: 203.0.113.8
      ipMode: Proxy
    - ip: '2001:db8::7'
    - hostname: lb.example.com
",
                    web_yaml("type: LoadBalancer", ", nodePort: 30080")
                ),
                &slices,
            ),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [10.244.0.1:8080 10.244.0.2:8080]",
                "NodePort 127.0.0.1:30080/TCP => [10.244.0.1:8080 10.244.0.2:8080]",
                "NodePort 192.168.1.10:30080/TCP => [10.244.0.1:8080 10.244.0.2:8080]",
                "LoadBalancer 203.0.113.7:80/TCP => [10.244.0.1:8080 10.244.0.2:8080]",
                "ClusterIP 10.96.0.10:53/UDP => [10.244.0.1:5353 10.244.0.2:5353]",
                "LoadBalancer 203.0.113.7:53/UDP => [10.244.0.1:5353 10.244.0.2:5353]",
            ],
        ),
        (
            "LoadBalancer with allocateLoadBalancerNodePorts=false: no node ports",
            node_a(),
            svc_and_slices(
                &format!(
                    "{}status:\n  loadBalancer:\n    ingress: [{{ip: 203.0.113.7}}]\n",
                    web_yaml(
                        "type: LoadBalancer\nallocateLoadBalancerNodePorts: false",
                        ""
                    )
                ),
                &slices,
            ),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [10.244.0.1:8080 10.244.0.2:8080]",
                "LoadBalancer 203.0.113.7:80/TCP => [10.244.0.1:8080 10.244.0.2:8080]",
                "ClusterIP 10.96.0.10:53/UDP => [10.244.0.1:5353 10.244.0.2:5353]",
                "LoadBalancer 203.0.113.7:53/UDP => [10.244.0.1:5353 10.244.0.2:5353]",
            ],
        ),
        (
            "externalIPs on a ClusterIP Service, IPv6 ones skipped",
            node_a(),
            svc_and_slices(
                &web_yaml("externalIPs: [198.51.100.4, '2001:db8::4']", ""),
                &slices,
            ),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [10.244.0.1:8080 10.244.0.2:8080]",
                "ExternalIP 198.51.100.4:80/TCP => [10.244.0.1:8080 10.244.0.2:8080]",
                "ClusterIP 10.96.0.10:53/UDP => [10.244.0.1:5353 10.244.0.2:5353]",
                "ExternalIP 198.51.100.4:53/UDP => [10.244.0.1:5353 10.244.0.2:5353]",
            ],
        ),
        (
            "an external IP that is also a node address on the same port: one frontend",
            NodeContext {
                node_port_addresses: vec!["192.168.1.10".parse().unwrap()],
                ..node_a()
            },
            svc_and_slices(
                &web_yaml(
                    "type: NodePort\nexternalIPs: [192.168.1.10]",
                    ", nodePort: 80",
                ),
                &slices,
            ),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [10.244.0.1:8080 10.244.0.2:8080]",
                "NodePort 192.168.1.10:80/TCP => [10.244.0.1:8080 10.244.0.2:8080]",
                "ClusterIP 10.96.0.10:53/UDP => [10.244.0.1:5353 10.244.0.2:5353]",
                "ExternalIP 192.168.1.10:53/UDP => [10.244.0.1:5353 10.244.0.2:5353]",
            ],
        ),
    ];
    check_table(&rows);
}

/// Item 3: ClientIP affinity on every frontend, default 10800 s.
#[test]
fn session_affinity_and_its_timeout() {
    let slices = [slice_yaml("web-1", "web", "- addresses: [10.244.0.1]")];
    let rows: Vec<(&str, NodeContext, String, &[&str])> = vec![
        (
            "ClientIP without a config: 10800 s",
            node_a(),
            svc_and_slices(&web_yaml("sessionAffinity: ClientIP", ""), &slices),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [10.244.0.1:8080] affinity 10800s",
                "ClusterIP 10.96.0.10:53/UDP => [10.244.0.1:5353] affinity 10800s",
            ],
        ),
        (
            "ClientIP with timeoutSeconds, on node ports too",
            node_a(),
            svc_and_slices(
                &web_yaml(
                    "type: NodePort\nsessionAffinity: ClientIP\nsessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}",
                    ", nodePort: 30080",
                ),
                &slices,
            ),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [10.244.0.1:8080] affinity 60s",
                "NodePort 127.0.0.1:30080/TCP => [10.244.0.1:8080] affinity 60s",
                "NodePort 192.168.1.10:30080/TCP => [10.244.0.1:8080] affinity 60s",
                "ClusterIP 10.96.0.10:53/UDP => [10.244.0.1:5353] affinity 60s",
            ],
        ),
        (
            "sessionAffinity None",
            node_a(),
            svc_and_slices(&web_yaml("sessionAffinity: None", ""), &slices),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [10.244.0.1:8080]",
                "ClusterIP 10.96.0.10:53/UDP => [10.244.0.1:5353]",
            ],
        ),
    ];
    check_table(&rows);
}

/// Items 4 and 5: traffic policies as Cilium's two scopes, and the
/// terminating fallback in each set.
#[test]
fn traffic_policies_and_terminating_endpoints() {
    let mixed = [slice_yaml("web-1", "web", MIXED)];
    // Only the terminating one is on node-a.
    let none_ready_here = [slice_yaml(
        "web-1",
        "web",
        "
        - addresses: [10.244.0.2]
          nodeName: node-b
          conditions: {ready: true}
        - addresses: [10.244.0.3]
          nodeName: node-a
          conditions: {ready: false, serving: true, terminating: true}
        ",
    )];
    let nothing_here = [slice_yaml(
        "web-1",
        "web",
        "
        - addresses: [10.244.0.2]
          nodeName: node-b
        ",
    )];
    let np = |extra: &str| web_yaml(&format!("type: NodePort\n{extra}"), ", nodePort: 30080");
    let rows: Vec<(&str, NodeContext, String, &[&str])> = vec![
        (
            "Cluster/Cluster: ready endpoints of every node, one scope",
            node_a(),
            svc_and_slices(&np(""), &mixed),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [10.244.0.1:8080 10.244.0.2:8080]",
                "NodePort 127.0.0.1:30080/TCP => [10.244.0.1:8080 10.244.0.2:8080]",
                "NodePort 192.168.1.10:30080/TCP => [10.244.0.1:8080 10.244.0.2:8080]",
                "ClusterIP 10.96.0.10:53/UDP => [10.244.0.1:5353 10.244.0.2:5353]",
            ],
        ),
        (
            "internalTrafficPolicy Local: the ClusterIP has this node's only; node ports \
             get two scopes (external: all, internal: this node's)",
            node_a(),
            svc_and_slices(&np("internalTrafficPolicy: Local"), &mixed),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [10.244.0.1:8080] int-local",
                "NodePort 127.0.0.1:30080/TCP => [10.244.0.1:8080 10.244.0.2:8080] internal [10.244.0.1:8080] int-local",
                "NodePort 192.168.1.10:30080/TCP => [10.244.0.1:8080 10.244.0.2:8080] internal [10.244.0.1:8080] int-local",
                "ClusterIP 10.96.0.10:53/UDP => [10.244.0.1:5353] int-local",
            ],
        ),
        (
            "externalTrafficPolicy Local: node ports' external scope is this node's, \
             their internal scope all; the ClusterIP is untouched",
            node_a(),
            svc_and_slices(&np("externalTrafficPolicy: Local"), &mixed),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [10.244.0.1:8080 10.244.0.2:8080]",
                "NodePort 127.0.0.1:30080/TCP => [10.244.0.1:8080] internal [10.244.0.1:8080 10.244.0.2:8080] ext-local",
                "NodePort 192.168.1.10:30080/TCP => [10.244.0.1:8080] internal [10.244.0.1:8080 10.244.0.2:8080] ext-local",
                "ClusterIP 10.96.0.10:53/UDP => [10.244.0.1:5353 10.244.0.2:5353]",
            ],
        ),
        (
            "both Local: one scope, this node's",
            node_a(),
            svc_and_slices(
                &np("externalTrafficPolicy: Local\ninternalTrafficPolicy: Local"),
                &mixed,
            ),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [10.244.0.1:8080] int-local",
                "NodePort 127.0.0.1:30080/TCP => [10.244.0.1:8080] ext-local int-local",
                "NodePort 192.168.1.10:30080/TCP => [10.244.0.1:8080] ext-local int-local",
                "ClusterIP 10.96.0.10:53/UDP => [10.244.0.1:5353] int-local",
            ],
        ),
        (
            "Local with no ready endpoint here: this node's serving+terminating one",
            node_a(),
            svc_and_slices(&web_yaml("internalTrafficPolicy: Local", ""), &none_ready_here),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [~10.244.0.3:8080] int-local",
                "ClusterIP 10.96.0.10:53/UDP => [~10.244.0.3:5353] int-local",
            ],
        ),
        (
            "Local with no endpoint here at all: no backends (the frontend refuses)",
            node_a(),
            svc_and_slices(&web_yaml("internalTrafficPolicy: Local", ""), &nothing_here),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [] int-local",
                "ClusterIP 10.96.0.10:53/UDP => [] int-local",
            ],
        ),
        (
            "Local on a node with another name: nothing is local",
            NodeContext {
                name: "node-c".into(),
                ..node_a()
            },
            svc_and_slices(&web_yaml("internalTrafficPolicy: Local", ""), &mixed),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [] int-local",
                "ClusterIP 10.96.0.10:53/UDP => [] int-local",
            ],
        ),
    ];
    check_table(&rows);
}

/// Item 5: serving+terminating endpoints only when no ready one exists.
#[test]
fn terminating_endpoints_only_without_ready_ones() {
    let rows: Vec<(&str, NodeContext, String, &[&str])> = vec![
        (
            "some ready: the ready ones only",
            node_a(),
            svc_and_slices(&web_yaml("", ""), &[slice_yaml("web-1", "web", MIXED)]),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [10.244.0.1:8080 10.244.0.2:8080]",
                "ClusterIP 10.96.0.10:53/UDP => [10.244.0.1:5353 10.244.0.2:5353]",
            ],
        ),
        (
            "none ready: the serving and terminating ones, marked terminating",
            node_a(),
            svc_and_slices(
                &web_yaml("", ""),
                &[slice_yaml(
                    "web-1",
                    "web",
                    "
                    - addresses: [10.244.0.3]
                      conditions: {ready: false, serving: true, terminating: true}
                    - addresses: [10.244.0.4]
                      conditions: {ready: false, serving: false, terminating: true}
                    - addresses: [10.244.0.5]
                      conditions: {ready: false, serving: true, terminating: false}
                    ",
                )],
            ),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [~10.244.0.3:8080]",
                "ClusterIP 10.96.0.10:53/UDP => [~10.244.0.3:5353]",
            ],
        ),
    ];
    check_table(&rows);
}

/// Item 6: headless, selectorless with hand-made slices, endpoints over
/// several slices, zone hints.
#[test]
fn headless_selectorless_split_slices_and_zone_hints() {
    let hinted = |zones: [&str; 3]| {
        let mut eps = String::new();
        for (i, z) in zones.iter().enumerate() {
            eps += &format!("- addresses: [10.244.0.{}]\n", i + 1);
            if !z.is_empty() {
                eps += &format!("  hints: {{forZones: [{{name: {z}}}]}}\n");
            }
        }
        slice_yaml("web-1", "web", &eps)
    };
    let prefer_close = web_yaml("trafficDistribution: PreferClose", "");
    let rows: Vec<(&str, NodeContext, String, &[&str])> = vec![
        (
            "a Service without selector and hand-made slices, endpoints over two slices",
            node_a(),
            svc_and_slices(
                &web_yaml("", ""),
                &[
                    slice_yaml("web-manual-1", "web", "- addresses: [192.0.2.1]"),
                    slice_yaml("web-manual-2", "web", "- addresses: [192.0.2.2]\n- addresses: [192.0.2.3]"),
                ],
            ),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [192.0.2.1:8080 192.0.2.2:8080 192.0.2.3:8080]",
                "ClusterIP 10.96.0.10:53/UDP => [192.0.2.1:5353 192.0.2.2:5353 192.0.2.3:5353]",
            ],
        ),
        (
            "PreferClose, every endpoint hinted, some for this zone: those only",
            node_a(),
            svc_and_slices(&prefer_close, &[hinted(["zone-a", "zone-b", "zone-a"])]),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [10.244.0.1:8080 10.244.0.3:8080]",
                "ClusterIP 10.96.0.10:53/UDP => [10.244.0.1:5353 10.244.0.3:5353]",
            ],
        ),
        (
            "PreferClose, one endpoint without hints: all",
            node_a(),
            svc_and_slices(&prefer_close, &[hinted(["zone-a", "zone-b", ""])]),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [10.244.0.1:8080 10.244.0.2:8080 10.244.0.3:8080]",
                "ClusterIP 10.96.0.10:53/UDP => [10.244.0.1:5353 10.244.0.2:5353 10.244.0.3:5353]",
            ],
        ),
        (
            "PreferClose, no endpoint hinted for this zone: all",
            node_a(),
            svc_and_slices(&prefer_close, &[hinted(["zone-b", "zone-b", "zone-c"])]),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [10.244.0.1:8080 10.244.0.2:8080 10.244.0.3:8080]",
                "ClusterIP 10.96.0.10:53/UDP => [10.244.0.1:5353 10.244.0.2:5353 10.244.0.3:5353]",
            ],
        ),
        (
            "PreferClose on a node without --zone: all",
            NodeContext {
                zone: String::new(),
                ..node_a()
            },
            svc_and_slices(&prefer_close, &[hinted(["zone-a", "zone-b", "zone-a"])]),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [10.244.0.1:8080 10.244.0.2:8080 10.244.0.3:8080]",
                "ClusterIP 10.96.0.10:53/UDP => [10.244.0.1:5353 10.244.0.2:5353 10.244.0.3:5353]",
            ],
        ),
        (
            "hints without trafficDistribution or the annotation: all",
            node_a(),
            svc_and_slices(&web_yaml("", ""), &[hinted(["zone-a", "zone-b", "zone-a"])]),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [10.244.0.1:8080 10.244.0.2:8080 10.244.0.3:8080]",
                "ClusterIP 10.96.0.10:53/UDP => [10.244.0.1:5353 10.244.0.2:5353 10.244.0.3:5353]",
            ],
        ),
        (
            "the topology-mode annotation Auto does what PreferClose does",
            node_a(),
            svc_and_slices(
                &web_yaml("", "").replace(
                    "metadata: {name: web, namespace: default}",
                    "metadata: {name: web, namespace: default, annotations: {service.kubernetes.io/topology-mode: Auto}}",
                ),
                &[hinted(["zone-a", "zone-b", "zone-b"])],
            ),
            &[
                "ClusterIP 10.96.0.10:80/TCP => [10.244.0.1:8080]",
                "ClusterIP 10.96.0.10:53/UDP => [10.244.0.1:5353]",
            ],
        ),
    ];
    check_table(&rows);

    // Headless: nothing, and no error.
    let headless = web_yaml("", "").replace("clusterIP: 10.96.0.10", "clusterIP: None");
    assert_eq!(
        lines_on(
            &node_a(),
            &svc_and_slices(&headless, &[hinted(["", "", ""])])
        ),
        Ok(vec![])
    );
}

/// Topology hints narrow ready endpoints; the terminating fallback is taken
/// whole (kube-proxy's rule), and a not-ready endpoint without hints does not
/// switch topology off.
#[test]
fn zone_hints_look_at_ready_endpoints_only() {
    let eps = "
        - addresses: [10.244.0.1]
          hints: {forZones: [{name: zone-a}]}
        - addresses: [10.244.0.2]
          hints: {forZones: [{name: zone-b}]}
        - addresses: [10.244.0.3]
          conditions: {ready: false, serving: true, terminating: true}
    ";
    let got = lines_on(
        &node_a(),
        &svc_and_slices(
            &web_yaml("trafficDistribution: PreferClose", ""),
            &[slice_yaml("web-1", "web", eps)],
        ),
    )
    .unwrap();
    assert_eq!(got[0], "ClusterIP 10.96.0.10:80/TCP => [10.244.0.1:8080]");

    let terminating = "
        - addresses: [10.244.0.3]
          hints: {forZones: [{name: zone-b}]}
          conditions: {ready: false, serving: true, terminating: true}
        - addresses: [10.244.0.4]
          hints: {forZones: [{name: zone-a}]}
          conditions: {ready: false, serving: true, terminating: true}
    ";
    let got = lines_on(
        &node_a(),
        &svc_and_slices(
            &web_yaml("trafficDistribution: PreferClose", ""),
            &[slice_yaml("web-1", "web", terminating)],
        ),
    )
    .unwrap();
    assert_eq!(
        got[0],
        "ClusterIP 10.96.0.10:80/TCP => [~10.244.0.3:8080 ~10.244.0.4:8080]"
    );
}

/// Item 7: a Service labelled for another proxy gives nothing and is no
/// error.
#[test]
fn another_proxys_service_gives_nothing() {
    let svc = web_yaml("type: NodePort", ", nodePort: 30080").replace(
        "metadata: {name: web, namespace: default}",
        "metadata: {name: web, namespace: default, labels: {service.kubernetes.io/service-proxy-name: other-proxy}}",
    );
    assert_eq!(
        lines_on(
            &node_a(),
            &svc_and_slices(
                &svc,
                &[slice_yaml("web-1", "web", "- addresses: [10.244.0.1]")]
            )
        ),
        Ok(vec![])
    );
}

#[test]
fn invalid_node_ports_and_external_ips_are_errors_naming_the_field() {
    for (extra, port_extra, needles) in [
        (
            "type: NodePort",
            ", nodePort: 70000",
            &["spec.ports[0].nodePort", "70000"][..],
        ),
        (
            "externalIPs: [not-an-ip]",
            "",
            &["spec.externalIPs[0]", "not-an-ip"],
        ),
    ] {
        let e = err_of(one(&web_yaml(extra, port_extra)));
        for n in needles {
            assert!(e.contains(n), "{extra}: {e:?} does not mention {n:?}");
        }
    }
}
