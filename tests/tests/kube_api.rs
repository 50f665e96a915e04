//! The agent with the Kubernetes API as its source: the stand-in API server
//! (tests/kmock) in the sandbox's node namespace, kube-rs's watchers in the
//! agent, kubectl making the changes. Each change reaches the maps and the
//! datapath (connects through socket LB spread over exactly the backends the
//! slice names); a 410 relist and an API outage in the middle lose nothing.
//! Needs root; `cargo xtask test` runs it.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use lash_tests::{
    apiserver::ApiServer,
    manifests::{endpoint_slice, service, Cond},
    sandbox::{wait_for, Sandbox},
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const HTTP: &str = "10.96.0.10:80";

/// The addresses of the pods that answered `n` connects to the VIP (all
/// must succeed; each pod's server answers with its name).
fn reached(sb: &Sandbox, n: usize) -> BTreeSet<String> {
    sb.probe("tcp", HTTP, n)
        .unwrap()
        .iter()
        .map(|l| {
            assert_eq!(l["ok"], true, "connect failed: {l}");
            let name = l["backend"].as_str().unwrap();
            let pod = sb.pods.iter().find(|p| p.name == name);
            pod.unwrap_or_else(|| panic!("no pod {name}"))
                .ip
                .to_string()
        })
        .collect()
}

/// The backend addresses `agent service list` shows for the HTTP frontend.
fn programmed(sb: &Sandbox) -> Option<BTreeSet<String>> {
    sb.programmed_backends("10.96.0.10:80/TCP")
}

fn ips(sb: &Sandbox, which: &[usize]) -> BTreeSet<String> {
    which.iter().map(|&i| sb.pods[i].ip.to_string()).collect()
}

fn slice_of(sb: &Sandbox, which: &[usize]) -> String {
    let eps: Vec<(Ipv4Addr, Cond)> = which
        .iter()
        .map(|&i| (sb.pods[i].ip, Cond::Ready))
        .collect();
    endpoint_slice("web", &eps)
}

/// Waits until the agent programs exactly `want` behind the VIP.
fn wait_programmed(sb: &Sandbox, api: &ApiServer, want: &BTreeSet<String>) {
    let got = wait_for(Duration::from_secs(15), || {
        programmed(sb).filter(|p| p == want)
    });
    assert!(
        got.is_some(),
        "backends never became {want:?} (now {:?})\nagent log:\n{}\napi log:\n{}",
        programmed(sb),
        sb.agent_log(),
        api.log()
    );
}

/// Three pods, the API server holding the web Service over all three (the
/// cluster exists before the agent: its first sync is the full list), and
/// the agent watching it.
fn cluster(tag: &str) -> (Sandbox, ApiServer) {
    let mut sb = Sandbox::new(tag, 3).expect("sandbox");
    sb.start_pod_servers().expect("pod servers");
    let api = ApiServer::start(&sb).expect("API server");
    api.apply(&format!(
        "{}---\n{}",
        service("web", VIP),
        slice_of(&sb, &[0, 1, 2])
    ))
    .expect("apply");
    sb.kubeconfig = Some(api.kubeconfig.clone());
    sb.start_agent(&[]).expect("agent");
    (sb, api)
}

#[test]
fn kubectl_changes_reach_the_datapath_through_watches_410s_and_outages() {
    let (sb, api) = cluster("kapi");

    let all = ips(&sb, &[0, 1, 2]);
    wait_programmed(&sb, &api, &all);
    assert_eq!(reached(&sb, 60), all, "spread over the three pods");
    let status = sb.status_json();
    assert_eq!(status["kubernetes"]["synced"], true, "{status}");
    assert!(
        status["kubernetes"]["down_since_unix"].is_null(),
        "{status}"
    );

    // An edit of the slice (a scale-down): only pod 0 is left.
    let t = Instant::now();
    api.apply(&slice_of(&sb, &[0])).expect("scale down");
    wait_programmed(&sb, &api, &ips(&sb, &[0]));
    eprintln!("scale-down reached the maps in {:?}", t.elapsed());
    assert_eq!(reached(&sb, 20), ips(&sb, &[0]));

    // The server forgets its history: the watches get 410 and relist.
    let lists_before = sb.status_json()["kubernetes"]["lists"].as_u64().unwrap();
    api.control("/lash-test/compact").expect("compact");
    api.apply(&slice_of(&sb, &[0, 1])).expect("scale up");
    wait_programmed(&sb, &api, &ips(&sb, &[0, 1]));
    assert!(
        wait_for(Duration::from_secs(10), || {
            (sb.status_json()["kubernetes"]["lists"].as_u64().unwrap() > lists_before).then_some(())
        })
        .is_some(),
        "no relist after the compaction:\n{}",
        sb.agent_log()
    );
    assert_eq!(reached(&sb, 40), ips(&sb, &[0, 1]));

    // An outage: the datapath keeps serving, the status says since when.
    api.control("/lash-test/outage?seconds=4").expect("outage");
    let down = wait_for(Duration::from_secs(10), || {
        let s = sb.status_json();
        s["kubernetes"]["down_since_unix"].as_f64().map(|_| s)
    });
    assert!(
        down.is_some(),
        "status never said the API is down:\n{}",
        sb.agent_log()
    );
    assert!(sb.agent_cli(&["status"]).unwrap().contains("UNREACHABLE"));
    assert_eq!(
        reached(&sb, 20),
        ips(&sb, &[0, 1]),
        "served during the outage"
    );
    // Back: a change made after the outage reaches the maps, and the API is
    // reachable again.
    let back = wait_for(Duration::from_secs(20), || {
        api.apply(&slice_of(&sb, &[2])).ok()
    });
    assert!(
        back.is_some(),
        "the API server did not come back:\n{}",
        api.log()
    );
    wait_programmed(&sb, &api, &ips(&sb, &[2]));
    assert!(
        wait_for(Duration::from_secs(15), || {
            sb.status_json()["kubernetes"]["down_since_unix"]
                .is_null()
                .then_some(())
        })
        .is_some(),
        "status still says down:\n{}",
        sb.agent_log()
    );
    assert_eq!(reached(&sb, 20), ips(&sb, &[2]));

    // Deleting the Service removes its frontends.
    api.kubectl(&["delete", "service", "web"]).expect("delete");
    assert!(
        wait_for(Duration::from_secs(15), || programmed(&sb)
            .is_none()
            .then_some(()))
        .is_some(),
        "the frontend is still programmed:\n{}",
        sb.agent_log()
    );
    let list = sb.agent_cli(&["bpf", "lb", "list"]).unwrap();
    assert!(!list.contains("10.96.0.10"), "{list}");
}

/// Connects to the VIP in a loop from another thread until `stop`: how many
/// succeeded and which failed.
fn connect_loop(
    sb: &Sandbox,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    let (cgroup, ns) = (sb.cgroup.clone(), sb.node_ns.clone());
    std::thread::spawn(move || {
        let (mut ok, mut failed) = (0, Vec::new());
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let out = std::process::Command::new(lash_tests::sandbox::bin("lash-probe"))
                .arg("--cgroup")
                .arg(&cgroup)
                .args(["--netns", &ns, "tcp", HTTP, "--count", "50"])
                .output()
                .expect("lash-probe");
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let v: serde_json::Value = serde_json::from_str(line).expect("probe JSON");
                if v["ok"] == true {
                    ok += 1;
                } else {
                    failed.push(line.to_string());
                }
            }
        }
        (ok, failed)
    })
}

#[test]
fn agent_restarts_drop_no_connection_and_rewrite_nothing() {
    let (mut sb, api) = cluster("krestart");
    wait_programmed(&sb, &api, &ips(&sb, &[0, 1, 2]));
    let first = sb.status_json()["map_writes"].as_u64().unwrap();
    assert!(first > 0, "the first agent programmed the Service");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let looping = connect_loop(&sb, stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    for kill in [true, false] {
        // SIGKILL, then SIGTERM: either way the datapath stays, and the next
        // agent finds the maps already right.
        sb.stop_agent(kill).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        sb.start_agent(&[]).expect("agent restart");
        let status = sb.status_json();
        assert_eq!(status["kubernetes"]["synced"], true, "{status}");
        assert_eq!(
            status["map_writes"],
            0,
            "a restart with nothing changed wrote to the maps (kill: {kill}): {status}\n{}",
            sb.agent_log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = looping.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} connects failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        ok >= 100,
        "only {ok} connects were made across the restarts"
    );
    eprintln!("{ok} connects across two restarts, none failed");
    // And the restarted agent still follows the API.
    api.apply(&slice_of(&sb, &[1])).expect("scale down");
    wait_programmed(&sb, &api, &ips(&sb, &[1]));
}
