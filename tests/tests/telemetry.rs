//! `/healthz` (kube-proxy's meaning, port 10256) and `/metrics` (Prometheus
//! text, 9962), served on the node namespace's loopback: healthy once the
//! first sync is in the maps, never before; the counters and map fill match
//! what was programmed. Needs root; `cargo xtask test` runs it.

use std::{net::Ipv4Addr, time::Duration};

use lash_tests::{
    http,
    manifests::{endpoint_slice, service, Cond},
    sandbox::{wait_for, Sandbox},
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// The value of the sample `name` (with its labels, as exposed) in `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn healthz_and_metrics_tell_the_truth_about_the_last_sync() {
    let mut sb = Sandbox::new("telem", 2).expect("sandbox");
    let ips: Vec<(Ipv4Addr, Cond)> = sb.pods.iter().map(|p| (p.ip, Cond::Ready)).collect();
    sb.write_manifest(
        "web.yaml",
        &format!(
            "{}---\n{}",
            service("web", VIP),
            endpoint_slice("web", &ips)
        ),
    )
    .expect("manifest");
    sb.start_agent(&[]).expect("agent");
    let ns = sb.node_ns.clone();

    let (code, body) = wait_for(Duration::from_secs(10), || {
        http::get_in(&ns, "127.0.0.1:10256", "/healthz").ok()
    })
    .expect("healthz answers");
    assert_eq!(code, 200, "{body}\n{}", sb.agent_log());
    let v: serde_json::Value = serde_json::from_str(&body).expect("healthz JSON");
    assert!(
        v["lastUpdated"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 20),
        "{v}"
    );
    assert!(v["currentTime"].as_str().is_some(), "{v}");
    let (code, _) = http::get_in(&ns, "127.0.0.1:10256", "/nothing").unwrap();
    assert_eq!(code, 404);

    let (code, text) = http::get_in(&ns, "127.0.0.1:9962", "/metrics").expect("metrics");
    assert_eq!(code, 200);
    assert!(
        sample(&text, "lash_syncs_total{kind=\"full\"}").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // Two ports (TCP 80, UDP 53), each a frontend entry plus one slot per
    // backend (2 pods): 2 * (1 + 2) entries.
    assert_eq!(
        sample(&text, "lash_map_entries{map=\"lb4_services\"}"),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "lash_map_entries{map=\"lb4_backends\"}"),
        Some(4.0),
        "{text}"
    );
    assert!(
        sample(&text, "lash_map_capacity{map=\"lb4_services\"}").is_some_and(|n| n > 6.0),
        "{text}"
    );
    assert!(
        text.contains("lash_sync_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE lash_network_programming_duration_seconds histogram"),
        "{text}"
    );
    assert_eq!(sample(&text, "lash_sync_errors_total"), Some(0.0), "{text}");
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with EOF"
    );

    // A change: the sync counter moves and the fill follows.
    let before = sb.syncs();
    sb.write_manifest(
        "web.yaml",
        &format!(
            "{}---\n{}",
            service("web", VIP),
            endpoint_slice("web", &ips[..1])
        ),
    )
    .unwrap();
    assert!(sb.wait_synced_after(before, Duration::from_secs(10)));
    let (_, text) = http::get_in(&ns, "127.0.0.1:9962", "/metrics").unwrap();
    assert_eq!(
        sample(&text, "lash_map_entries{map=\"lb4_services\"}"),
        Some(4.0),
        "{text}"
    );
    assert!(
        sample(&text, "lash_syncs_total{kind=\"incremental\"}").is_some_and(|n| n >= 1.0),
        "{text}"
    );
}

#[test]
fn an_unreachable_api_at_start_is_unhealthy_and_programs_nothing() {
    let mut sb = Sandbox::new("apidown", 1).expect("sandbox");
    // Nothing listens on this port in the fresh node namespace.
    let kubeconfig = sb.work.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:1\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: t\n",
    )
    .unwrap();
    sb.kubeconfig = Some(kubeconfig);
    sb.spawn_agent(&[]).expect("agent");
    let ns = sb.node_ns.clone();
    let status = wait_for(Duration::from_secs(20), || {
        let s = sb.status_json();
        s["kubernetes"]["down_since_unix"].as_f64().map(|_| s)
    })
    .unwrap_or_else(|| panic!("status never said the API is down:\n{}", sb.agent_log()));
    assert_eq!(status["kubernetes"]["synced"], false, "{status}");
    assert_eq!(status["syncs"], 0, "no sync without the lists: {status}");
    let table = sb.agent_cli(&["status"]).unwrap();
    assert!(table.contains("UNREACHABLE"), "{table}");
    assert!(table.contains("initial lists not complete"), "{table}");
    let (code, _) = wait_for(Duration::from_secs(10), || {
        http::get_in(&ns, "127.0.0.1:10256", "/healthz").ok()
    })
    .expect("healthz answers");
    assert_eq!(code, 503);
    let (_, text) = http::get_in(&ns, "127.0.0.1:9962", "/metrics").unwrap();
    assert_eq!(sample(&text, "lash_kubernetes_api_up"), Some(0.0), "{text}");
}
