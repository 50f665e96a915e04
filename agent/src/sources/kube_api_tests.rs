//! The Kubernetes source against kube-rs's own mock of the API (tower_test),
//! for what the stand-in API server in tests/kmock cannot be made to do on
//! cue: a list split in pages, a watch that ends in 410 Gone right after the
//! list, the relist that follows. The map owner is played by the test: it
//! receives the source's commands and answers them.

use std::{collections::BTreeSet, net::Ipv4Addr, sync::Arc, time::Duration};

use http::{Request, Response};
use kube::client::Body;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::kube_api::KubeSource;
use crate::{
    datapath::{Command, Outcome},
    model::{Change, L4Addr, Proto},
    telemetry::Telemetry,
};

fn service(name: &str, vip: &str, rv: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": rv},
        "spec": {"clusterIP": vip, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    })
}

fn slice(name: &str, ip: &str, rv: &str) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-1"), "namespace": "default", "resourceVersion": rv,
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    })
}

fn node(name: &str, ip: &str, cidr: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "resourceVersion": "3"},
        "spec": {"podCIDRs": [cidr]},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]}
    })
}

fn list(kind: &str, items: Vec<Value>, rv: &str, cont: Option<&str>) -> Value {
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({"apiVersion": "v1", "kind": kind, "metadata": meta, "items": items})
}

fn ok(v: &Value) -> Response<Body> {
    Response::builder()
        .status(200)
        .body(Body::from(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

fn frontend(ip: [u8; 4]) -> L4Addr {
    L4Addr {
        ip: Ipv4Addr::from(ip),
        port: 80,
        proto: Proto::Tcp,
    }
}

/// The fake API server: Services are listed in two pages, their first watch
/// ends at once with 410 Gone, and the relist finds the cluster changed.
/// Every other watch stays open without an event.
async fn api_server(mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>) {
    let mut service_lists = 0;
    let mut service_watches = 0;
    // Watches we never answer: they must stay pending, not fail.
    let mut open = Vec::new();
    while let Some((req, send)) = handle.next_request().await {
        let uri = req.uri().to_string();
        let watch = uri.contains("watch=true");
        let resp = if uri.starts_with("/api/v1/services") && !watch {
            service_lists += 1;
            if uri.contains("continue=page2") {
                list(
                    "ServiceList",
                    vec![service("c", "10.96.0.3", "6")],
                    "10",
                    None,
                )
            } else if service_lists == 1 {
                list(
                    "ServiceList",
                    vec![service("a", "10.96.0.1", "5")],
                    "10",
                    Some("page2"),
                )
            } else {
                // After the 410: a and c are gone, b is new.
                list(
                    "ServiceList",
                    vec![service("b", "10.96.0.2", "21")],
                    "22",
                    None,
                )
            }
        } else if uri.starts_with("/api/v1/services") {
            service_watches += 1;
            if service_watches == 1 {
                // The resourceVersion of the list is already compacted away.
                let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                    "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410}});
                send.send_response(ok(&gone));
                continue;
            }
            open.push(send);
            continue;
        } else if uri.starts_with("/apis/discovery.k8s.io/v1/endpointslices") && !watch {
            list(
                "EndpointSliceList",
                vec![
                    slice("a", "10.244.0.5", "7"),
                    slice("b", "10.244.0.6", "8"),
                    slice("c", "10.244.0.7", "9"),
                ],
                "11",
                None,
            )
        } else if uri.starts_with("/api/v1/nodes") && !watch {
            list(
                "NodeList",
                vec![
                    node("node-1", "192.168.50.11", "10.244.1.0/24"),
                    node("node-2", "192.168.50.12", "10.244.2.0/24"),
                ],
                "12",
                None,
            )
        } else {
            open.push(send);
            continue;
        };
        send.send_response(ok(&resp));
    }
}

/// The next command that is not a status update, answered as the owner would.
async fn next_sync(rx: &mut mpsc::Receiver<Command>) -> (bool, Vec<Change>, BTreeSet<L4Addr>) {
    loop {
        let cmd = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a command within 10 s")
            .expect("the source is running");
        match cmd {
            Command::Status { .. } => continue,
            Command::Resync { desired, done, .. } => {
                let _ = done.unwrap().send(Outcome { errors: vec![] });
                return (true, vec![], desired.iter().map(|d| d.frontend).collect());
            }
            Command::Apply { changes, done, .. } => {
                let _ = done.unwrap().send(Outcome { errors: vec![] });
                return (false, changes, BTreeSet::new());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_lists_and_a_410_relist_reach_the_owner_whole_and_at_once() {
    let (mock, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(api_server(handle));
    let client = kube::Client::new(mock, "default");
    let telemetry = Arc::new(Telemetry::new(
        "/nonexistent".into(),
        Duration::from_secs(60),
    ));
    let (nodes_tx, nodes_rx) = super::nodes_out::channel();
    let source = KubeSource::new(client, "mock".into(), "node-1".into(), telemetry.clone())
        .with_nodes_out(nodes_tx);
    let (tx, mut rx) = mpsc::channel(16);
    let (_stop_tx, stop_rx) = mpsc::channel(1);
    let task = tokio::spawn(source.run(tx, Duration::from_secs(3600), stop_rx));

    // First: one full reconcile with both pages of the list (a and c),
    // whatever the order the watches' first events came in.
    let (full, _, desired) = next_sync(&mut rx).await;
    assert!(full, "the first sync is a full one");
    assert_eq!(
        desired,
        BTreeSet::from([frontend([10, 96, 0, 1]), frontend([10, 96, 0, 3])]),
        "both pages of the first list"
    );
    // The listed Nodes went to the mesh, in the model's form.
    let nodes = nodes_rx
        .borrow()
        .clone()
        .expect("nodes published once listed");
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["node-1", "node-2"]);
    assert_eq!(nodes[1].pod_cidr, Some((Ipv4Addr::new(10, 244, 2, 0), 24)));
    // Healthy once the source has the owner's answer.
    let healthy = async {
        while !telemetry
            .health
            .verdict(std::time::SystemTime::now())
            .healthy
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), healthy)
        .await
        .expect("healthy after the first sync");

    // Then the 410 and the relist: a and c removed, b added, in one command,
    // so no moment has the relist's picture half applied.
    let (full, changes, _) = next_sync(&mut rx).await;
    assert!(!full, "a relist sends only what changed");
    let mut removed = BTreeSet::new();
    let mut upserted = BTreeSet::new();
    for c in &changes {
        match c {
            Change::Remove(fe) => removed.insert(*fe),
            Change::Upsert(d) => upserted.insert(d.frontend),
        };
    }
    assert_eq!(
        removed,
        BTreeSet::from([frontend([10, 96, 0, 1]), frontend([10, 96, 0, 3])])
    );
    assert_eq!(upserted, BTreeSet::from([frontend([10, 96, 0, 2])]));
    let b = changes
        .iter()
        .find_map(|c| match c {
            Change::Upsert(d) => Some(d),
            _ => None,
        })
        .unwrap();
    assert_eq!(b.backends.len(), 1, "b's slice, listed before, serves it");
    task.abort();
}
