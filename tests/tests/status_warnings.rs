//! `agent status` names, per Service, the fields lash does not serve yet,
//! while the part of the Service it does serve (the ClusterIP) still works.
//! Needs root; `cargo xtask test` runs it.

use std::{collections::BTreeSet, net::Ipv4Addr, time::Duration};

use lash_tests::{
    manifests::{endpoint_slice, service, sticky_node_port_service, Cond},
    sandbox::Sandbox,
};
use serde_json::Value;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const HTTP: &str = "10.96.0.10:80";

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn ignored_fields_are_warned_per_service_and_the_cluster_ip_still_works() {
    let mut sb = Sandbox::new("warn", 3).expect("sandbox");
    sb.start_pod_servers().expect("pod servers");
    let ips: Vec<(Ipv4Addr, Cond)> = sb.pods.iter().map(|p| (p.ip, Cond::Ready)).collect();
    let slice = endpoint_slice("web", &ips);
    sb.write_manifest(
        "web.yaml",
        &format!(
            "{}---\n{slice}",
            sticky_node_port_service("web", VIP, 30080)
        ),
    )
    .expect("manifest");
    sb.start_agent(&[]).expect("agent");

    // The table: both warnings, each naming the Service and the field.
    let table = sb.agent_cli(&["status"]).unwrap();
    let block: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.starts_with("Warnings:"))
        .collect();
    assert_eq!(block.first(), Some(&"Warnings:"), "{table}");
    for field in ["spec.sessionAffinity=ClientIP", "spec.type=NodePort"] {
        let want = format!("  Service default/web: {field} is not served yet");
        assert!(
            block.iter().any(|l| l.starts_with(&want)),
            "no line starting {want:?} under Warnings:\n{table}\nagent log:\n{}",
            sb.agent_log()
        );
    }
    // JSON: the same two, and they are not errors.
    let status = sb.status_json();
    let warnings = strings(&status["warnings"]);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings
        .iter()
        .all(|w| w.starts_with("Service default/web: ")));
    assert_eq!(strings(&status["errors"]), Vec::<String>::new());

    // The ClusterIP is served, balanced per connection (no client affinity):
    // 30 connects from one client reach more than one of the three pods.
    let lines = sb.probe("tcp", HTTP, 30).unwrap();
    let mut seen = BTreeSet::new();
    for l in &lines {
        assert_eq!(l["ok"], true, "probe failed: {l}");
        seen.insert(l["backend"].as_str().unwrap().to_string());
    }
    assert!(seen.len() > 1, "one client, one backend: {seen:?}");
    assert_eq!(
        sb.sink_tx_packets().unwrap(),
        0,
        "a packet left with the VIP"
    );

    // The fields go from the manifest: so do the warnings.
    let syncs = sb.syncs();
    sb.write_manifest("web.yaml", &format!("{}---\n{slice}", service("web", VIP)))
        .unwrap();
    assert!(
        sb.wait_synced_after(syncs, Duration::from_secs(5)),
        "agent did not reconcile the edit; log:\n{}",
        sb.agent_log()
    );
    assert_eq!(strings(&sb.status_json()["warnings"]), Vec::<String>::new());
    let table = sb.agent_cli(&["status"]).unwrap();
    assert!(table.contains("Warnings:   none"), "{table}");
    assert!(sb
        .probe("tcp", HTTP, 3)
        .unwrap()
        .iter()
        .all(|l| l["ok"] == true));
}
