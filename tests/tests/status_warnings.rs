//! `agent status` names, per Service, the fields lash does not serve yet,
//! while the part of the Service it does serve (the ClusterIP) still works;
//! a Service labelled for another proxy is listed apart and left alone.
//! Needs root; `cargo xtask test` runs it.

use std::{collections::BTreeSet, net::Ipv4Addr, time::Duration};

use lash_tests::{
    manifests::{endpoint_slice, other_proxy_service, service, service_with_unserved_fields, Cond},
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
        &format!("{}---\n{slice}", service_with_unserved_fields("web", VIP)),
    )
    .expect("manifest");
    sb.write_manifest(
        "theirs.yaml",
        &other_proxy_service("theirs", Ipv4Addr::new(10, 96, 0, 99), "other-proxy"),
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
    for field in [
        "spec.ports[].protocol=SCTP is not served",
        "spec.ipFamilies/clusterIPs/externalIPs: IPv6 is not served yet",
    ] {
        let want = format!("  Service default/web: {field}");
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
    // Another proxy's Service: listed apart, neither warned nor programmed.
    assert_eq!(
        strings(&status["other_proxy"]),
        ["Service default/theirs: for another proxy (other-proxy)"]
    );
    assert!(
        table.contains("Left alone:\n  Service default/theirs: for another proxy (other-proxy)\n"),
        "{table}"
    );
    let list = sb.agent_cli(&["bpf", "lb", "list"]).unwrap();
    assert!(!list.contains("10.96.0.99"), "{list}");

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
