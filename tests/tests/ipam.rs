//! `agent run --pod-cidr`: the running agent reports its pod range in
//! `agent status`, keeps the range in its state dir, and refuses to start on
//! another range rather than forget the addresses it handed out. Needs root;
//! `cargo xtask test` runs it.

use lash_tests::sandbox::Sandbox;
use serde_json::{json, Value};

const CIDR: &str = "10.244.7.0/24";

#[test]
fn status_shows_the_pod_range_and_another_range_is_refused() {
    let mut sb = Sandbox::new("ipam", 0).expect("sandbox");
    sb.start_agent(&["--pod-cidr", CIDR]).expect("agent");

    let status = sb.status_json();
    assert_eq!(
        status["ipam"],
        json!({"cidr": CIDR, "gateway": "10.244.7.1", "used": 0, "total": 253}),
        "agent log:\n{}",
        sb.agent_log()
    );
    let table = sb.agent_cli(&["status"]).unwrap();
    assert!(
        table.contains("IPAM:       10.244.7.0/24 (gateway 10.244.7.1), 0/253 addresses in use"),
        "{table}"
    );
    // The range is on disk from the start, before any pod asked.
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(sb.state_dir().join("ipam.json")).expect("ipam.json"),
    )
    .unwrap();
    assert_eq!(file["cidr"], CIDR);
    assert_eq!(file["allocations"], json!({}));
    sb.stop_agent(false).unwrap();

    // Another range on the same state dir: refused before anything loads,
    // the message naming both ranges and the file.
    let out = sb
        .agent_cmd()
        .args(["run", "--manifests"])
        .arg(sb.manifests())
        .arg("--cgroup")
        .arg(&sb.cgroup)
        .args(["--pod-cidr", "10.244.8.0/24"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on another range: {err}");
    for part in [CIDR, "10.244.8.0/24", "ipam.json"] {
        assert!(err.contains(part), "{part:?} not in: {err}");
    }

    // Without --pod-cidr there is no IPAM, and status says so.
    sb.start_agent(&[]).expect("agent without IPAM");
    assert_eq!(sb.status_json()["ipam"], Value::Null);
    assert!(!sb.agent_cli(&["status"]).unwrap().contains("IPAM"));
}
