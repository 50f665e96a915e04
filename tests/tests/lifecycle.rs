//! The agent's life cycle on a node: one agent per --bpf-root, a crash in the
//! middle of a link hand-over or of a service's first writes, and uninstall.
//! Crashes are real aborts at named points (`LASH_FAILPOINT`, see
//! agent/src/failpoint.rs), and each test checks what the next agent finds and
//! finishes. Needs root; `cargo xtask test` runs it.

use std::{
    net::Ipv4Addr,
    process::{Command, Output},
};

use lash_tests::{
    manifests::{endpoint_slice, service, Cond},
    sandbox::Sandbox,
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const HTTP: &str = "10.96.0.10:80";

fn web(tag: &str) -> Sandbox {
    let mut sb = Sandbox::new(tag, 2).expect("sandbox");
    sb.start_pod_servers().expect("pod servers");
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
    sb
}

/// `agent run` on the sandbox with a failpoint armed; returns once it exited.
fn run_until_crash(sb: &Sandbox, failpoint: &str) -> Output {
    let out = sb
        .agent_cmd()
        .env("LASH_FAILPOINT", failpoint)
        .args(["run", "--manifests"])
        .arg(sb.manifests())
        .arg("--cgroup")
        .arg(&sb.cgroup)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("failpoint {failpoint}: aborting")),
        "the agent did not reach failpoint {failpoint}: {err}"
    );
    out
}

fn map_entries(sb: &Sandbox, name: &str) -> u64 {
    sb.status_json()["maps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in agent status"))["entries"]
        .as_u64()
        .unwrap()
}

fn link_pins(sb: &Sandbox) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(sb.bpf_root.join("links"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn serves(sb: &Sandbox) -> bool {
    sb.probe("tcp", HTTP, 3)
        .unwrap()
        .iter()
        .all(|l| l["ok"] == true)
}

#[test]
fn second_agent_and_uninstall_are_refused_while_an_agent_runs() {
    let mut sb = web("lock");
    let pid = sb.agent_pid().unwrap();
    // Another agent on the same --bpf-root, even with its own state dir.
    let other_state = sb.work.join("other-state");
    let out = Command::new(lash_tests::sandbox::bin("agent"))
        .arg("--bpf-root")
        .arg(&sb.bpf_root)
        .arg("--state-dir")
        .arg(&other_state)
        .args(["run", "--manifests"])
        .arg(sb.manifests())
        .arg("--cgroup")
        .arg(&sb.cgroup)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("another agent (pid {pid}) is running")),
        "{err}"
    );
    // The refused agent attached nothing: one program per hook, as before.
    let hooks = sb.status_json()["attached_hooks"].as_array().unwrap().len();
    assert_eq!(sb.attached_programs(), hooks);

    let out = sb.agent_cmd().arg("uninstall").output().unwrap();
    assert!(
        !out.status.success(),
        "uninstall went through under a running agent"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("pid {pid}")), "{err}");
    assert!(
        serves(&sb),
        "a refused uninstall must leave the datapath alone"
    );

    sb.agent_cli(&["uninstall", "--force"]).unwrap();
    assert!(!sb.bpf_root.exists(), "pins left: {:?}", link_pins(&sb));
    assert_eq!(sb.attached_programs(), 0);
    sb.stop_agent(false).unwrap();
}

#[test]
fn crash_in_the_middle_of_a_hand_over_is_finished_by_the_next_agent() {
    let mut sb = web("handover");
    let hooks = sb.status_json()["attached_hooks"].as_array().unwrap().len();
    let first_hook = "connect4";
    sb.stop_agent(false).unwrap();

    // Dies with the new link pinned next to the old one: both attached.
    run_until_crash(&sb, "hand-over-pinned-new");
    let pins = link_pins(&sb);
    assert!(pins.contains(&format!("{first_hook}_new")), "{pins:?}");
    assert_eq!(sb.attached_programs(), hooks + 1);
    assert!(serves(&sb));
    sb.start_agent(&[]).unwrap();
    assert!(
        !link_pins(&sb).iter().any(|p| p.ends_with("_new")),
        "{:?}",
        link_pins(&sb)
    );
    assert_eq!(
        sb.attached_programs(),
        hooks,
        "the half-done link was retired"
    );
    assert!(serves(&sb));
    sb.stop_agent(false).unwrap();

    // Dies after retiring the old link, before renaming the new one: the hook
    // is served by the `_new` link alone.
    run_until_crash(&sb, "hand-over-retired-old");
    let pins = link_pins(&sb);
    assert!(
        pins.contains(&format!("{first_hook}_new")) && !pins.contains(&first_hook.to_string()),
        "{pins:?}"
    );
    assert!(serves(&sb), "the new link keeps serving the hook");
    // uninstall (no agent running) removes that pin too.
    sb.agent_cli(&["uninstall"]).unwrap();
    assert!(!sb.bpf_root.exists());
    assert_eq!(sb.attached_programs(), 0);

    // And the same crash, then a restart, finishes the rename.
    sb.start_agent(&[]).unwrap();
    sb.stop_agent(false).unwrap();
    run_until_crash(&sb, "hand-over-retired-old");
    sb.start_agent(&[]).unwrap();
    let pins = link_pins(&sb);
    assert!(!pins.iter().any(|p| p.ends_with("_new")), "{pins:?}");
    assert_eq!(sb.attached_programs(), hooks);
    assert_eq!(
        sb.status_json()["attached_hooks"].as_array().unwrap().len(),
        hooks
    );
    assert!(serves(&sb));
}

#[test]
fn crash_after_a_new_services_first_write_leaves_nothing_after_restart() {
    let mut sb = web("revnat");
    let rev_nat = map_entries(&sb, "lb4_reverse_nat");
    let matches = map_entries(&sb, "lb4_affinity_match");
    assert_eq!(rev_nat, 2, "web has two frontends");
    sb.stop_agent(false).unwrap();

    // A new Service; the agent dies right after writing its reverse-NAT entry.
    sb.write_manifest(
        "api.yaml",
        &format!(
            "{}---\n{}",
            service("api", Ipv4Addr::new(10, 96, 0, 20)),
            endpoint_slice("api", &[(sb.pods[0].ip, Cond::Ready)])
        ),
    )
    .unwrap();
    run_until_crash(&sb, "after-rev-nat");
    assert_eq!(map_entries(&sb, "lb4_reverse_nat"), rev_nat + 1);
    assert!(serves(&sb));

    // The Service is gone again before the next agent starts: what the crash
    // left must not outlive it.
    std::fs::remove_file(sb.manifests().join("api.yaml")).unwrap();
    sb.start_agent(&[]).unwrap();
    assert_eq!(map_entries(&sb, "lb4_reverse_nat"), rev_nat);
    assert_eq!(map_entries(&sb, "lb4_affinity_match"), matches);
    assert!(sb.status_json()["errors"].as_array().unwrap().is_empty());
    assert!(serves(&sb));
}
