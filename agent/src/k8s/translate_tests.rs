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
