//! The `k8s-watch` arm: the agent fed by the Kubernetes API through its real
//! watch path (a release agent's kube-rs watchers against the stand-in API
//! server, tests/kmock, in the sandbox's node namespace), on the socket-LB
//! arms' service set (services.rs: N Services with 3 endpoints each plus the
//! target), loaded into the server in one request before the agent starts.
//!
//! How each figure is taken:
//! - Initial sync: from just before `agent run` is spawned (program load and
//!   map creation included, as in the manifest arm's full sync) to the stamp
//!   (`last_sync_unix`) of the first status write showing a sync and
//!   `kubernetes.synced`, the file polled every 2 ms. Beside it the agent's
//!   own `last_event_ms` for that sync: from the first listed object that
//!   changed anything to the maps holding the whole set. The agent is
//!   started a few times, each on a fresh node (`agent uninstall` between,
//!   so no start finds the maps already right); the median is the figure,
//!   with the spread.
//! - The API server's lists: the lists the watchers make (kube-rs's pages of
//!   500, their label selectors; Services, EndpointSlices, Nodes) made by the
//!   bench on one connection before the agent starts, the median of a few
//!   passes. The watchers list the kinds side by side, but the stand-in is
//!   one Python process answering one request at a time, so the sum is its
//!   share of the initial sync.
//! - One change: a merge PATCH of the target's EndpointSlice over a kept-alive
//!   HTTP connection from the bench (no client process to start), moving its
//!   endpoints between pods 1-3 and pods 4-6, timed by the client probe as
//!   for the other arms (time_change): from its go, sent just before the
//!   request, until a connect from the client reaches a new pod. Each change
//!   starts once the agent's status shows the one before it. Percentiles
//!   are nearest-rank: with 50 changes p99 is the slowest.
//! - RSS: the agent's VmRSS once it is synced and the server shows its three
//!   watches open, at each start: the median and the largest.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{ensure, Context as _};
use lash_tests::{
    apiserver::ApiServer,
    sandbox::{wait_for, Sandbox},
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::probe::time_change;
use super::services;
use super::{check_interrupt, lash_arm, median, percentile, short, SERVER_CPU};

pub const ARMS: [&str; 1] = ["k8s-watch"];

pub struct Plan {
    pub sizes: Vec<u32>,
    /// Endpoint changes timed per size.
    pub changes: usize,
    /// Passes of the plain lists (the median is kept).
    pub lists: usize,
    /// Agent starts on a fresh node, each timed to its first sync.
    pub starts: usize,
}

/// What the agent's watchers list (agent/src/k8s/api_watch.rs): path and
/// label selector.
const LISTS: [(&str, &str); 3] = [
    (
        "/api/v1/services",
        "!service.kubernetes.io/service-proxy-name",
    ),
    (
        "/apis/discovery.k8s.io/v1/endpointslices",
        "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless",
    ),
    ("/api/v1/nodes", ""),
];
/// kube-rs's watcher lists in pages of this many.
const PAGE: usize = 500;
/// The target's EndpointSlice (lash_arm::objects names it NAME-x).
const TARGET_SLICE: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/target-x";

pub fn method(plan: &Plan) -> String {
    format!(
        "a release agent with --kubeconfig, its kube-rs watchers against the stand-in API server (tests/kmock, Python, one process) in the sandbox's node namespace, the service set loaded before the agent starts (/lash-test/load); initial sync: from spawning `agent run` (program load included) to the status stamp of its first sync with kubernetes.synced (status polled every 2 ms), and the agent's own first-event-to-maps time, median over {} starts each on a fresh node (agent uninstall between), with min-max; API server's lists: the watchers' paged lists (pages of {PAGE}, their selectors) made by the bench before the agent starts, median of {} passes; changes: {} merge PATCHes of the target's EndpointSlice over a kept-alive HTTP connection from the bench, moving its endpoints between pods 1-3 and 4-6, each timed from the probe's go (sent just before the request) until a connect from the client (CPU 0) reaches a new pod, nearest-rank percentiles; RSS: VmRSS once synced with the three watches open, median and largest over the starts; the manifest-directory lash arm's figures at the same size from the same run where it ran",
        plan.starts, plan.lists, plan.changes
    )
}

pub fn run(plan: &Plan) -> anyhow::Result<Vec<Value>> {
    let mut rows = Vec::new();
    for &n in &plan.sizes {
        check_interrupt()?;
        eprintln!("bench:   k8s-watch at {n} background services");
        match one_size(plan, n) {
            Ok(row) => {
                eprintln!("bench:     {row}");
                rows.push(row);
            }
            Err(e) => {
                eprintln!("bench:   k8s-watch at {n} failed: {e:#}");
                rows.push(json!({"services": n, "arm": "k8s-watch", "error": short(&e)}));
            }
        }
    }
    Ok(rows)
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn one_size(plan: &Plan, n: u32) -> anyhow::Result<Value> {
    let mut sb = Sandbox::new("bench-kwatch", 6).context("building the sandbox")?;
    sb.start_pod_servers_on(Some(SERVER_CPU))?;
    let pods: Vec<Ipv4Addr> = sb.pods.iter().map(|p| p.ip).collect();
    // The two sets the target's endpoints move between, and the pods'
    // names, which their servers answer with.
    let sets = [services::target(&pods[0..3]), services::target(&pods[3..6])];
    let names: Vec<Vec<String>> = [0..3, 3..6]
        .into_iter()
        .map(|r| sb.pods[r].iter().map(|p| p.name.clone()).collect())
        .collect();

    let api = ApiServer::start(&sb)?;
    let svcs = services::all(n, sets[0].clone());
    let objects: Vec<Value> = svcs.iter().flat_map(lash_arm::objects).collect();
    let started = Instant::now();
    let loaded = api.load(&objects)?;
    let load_ms = ms(started);
    ensure!(
        loaded["loaded"].as_u64() == Some(objects.len() as u64),
        "the server loaded {loaded}"
    );
    drop(objects);
    let mut passes = Vec::new();
    let mut list_bytes = 0;
    for _ in 0..plan.lists {
        check_interrupt()?;
        let (took, bytes) = list_once(&api)?;
        passes.push(took);
        list_bytes = bytes;
    }
    let list_ms = median(passes);

    sb.kubeconfig = Some(api.kubeconfig.clone());
    let mut starts = Vec::new();
    for k in 0..plan.starts {
        check_interrupt()?;
        if k > 0 {
            // A fresh node each time: no pinned map for the agent to find
            // already right.
            sb.stop_agent(false)?;
            sb.agent_cli(&["uninstall"])?;
        }
        let s = start(&mut sb, &api, svcs.len())?;
        eprintln!(
            "bench:     start {k}: synced at {:.1} ms (seen at {:.1}), first event to maps {:.1} ms, RSS {:.1} MiB",
            s.initial_ms, s.seen_ms, s.event_ms, s.rss_mib
        );
        starts.push(s);
    }
    let map_mib = lash_arm::map_memory_mib(&sb.bpf_root);
    let col = |f: fn(&Start) -> f64| -> Vec<f64> { starts.iter().map(f).collect() };
    let (initial, rss) = (col(|s| s.initial_ms), col(|s| s.rss_mib));

    let (mut changes, mut answers, mut agent) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..plan.changes {
        check_interrupt()?;
        // The first change moves the endpoints to pods 4-6, the next back.
        let to = (i + 1) % 2;
        let body = serde_json::to_vec(&json!({"endpoints": lash_arm::slice_endpoints(&sets[to])}))?;
        let wanted: Vec<&str> = names[to].iter().map(String::as_str).collect();
        let mut conn = api.connect()?;
        let syncs = sb.syncs();
        let mut answered = f64::NAN;
        let took = time_change(&sb, &wanted, || {
            let t = Instant::now();
            let (code, answer) =
                conn.request("PATCH", TARGET_SLICE, "application/merge-patch+json", &body)?;
            answered = ms(t);
            ensure!(
                code == 200,
                "PATCH {TARGET_SLICE}: HTTP {code}: {}",
                String::from_utf8_lossy(&answer)
            );
            Ok(())
        })
        .with_context(|| format!("change {i}"))?;
        // The status is written after the maps: the next change starts
        // from a quiet agent.
        ensure!(
            sb.wait_synced_after(syncs, Duration::from_secs(5)),
            "no sync in the status after change {i}"
        );
        changes.push(took);
        answers.push(answered);
        agent.push(lash_arm::status_ms(&sb, "last_event_ms").unwrap_or(f64::NAN));
    }
    let _ = sb.stop_agent(false);
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (change_p50, change_p99) = (
        percentile(&mut changes, 50.0),
        percentile(&mut changes, 99.0),
    );
    let (agent_p50, agent_p99) = (percentile(&mut agent, 50.0), percentile(&mut agent, 99.0));
    Ok(json!({
        "services": n, "arm": "k8s-watch",
        "endpoints": svcs.iter().map(|s| s.endpoints.len()).sum::<usize>(),
        "load_ms": load_ms,
        "server_list_ms": list_ms,
        "server_list_mib": list_bytes as f64 / 1024.0 / 1024.0,
        "starts": starts.len(),
        "initial_sync_ms": median(initial.clone()),
        "initial_sync_min_ms": min(&initial),
        "initial_sync_max_ms": max(&initial),
        "initial_sync_seen_ms": median(col(|s| s.seen_ms)),
        "agent_event_ms": median(col(|s| s.event_ms)),
        "agent_sync_ms": median(col(|s| s.sync_ms)),
        "agent_rss_mib": median(rss.clone()),
        "agent_rss_max_mib": max(&rss),
        "bpf_map_mib": map_mib,
        "changes": changes.len(),
        "change_p50_ms": change_p50,
        "change_p99_ms": change_p99,
        "change_max_ms": changes.last(),
        "patch_answer_p50_ms": percentile(&mut answers, 50.0),
        "agent_change_p50_ms": agent_p50,
        "agent_change_p99_ms": agent_p99,
    }))
}

/// One start of the agent on the loaded server.
struct Start {
    /// From the spawn to the status stamp of the first full sync.
    initial_ms: f64,
    /// From the spawn to the bench reading that status.
    seen_ms: f64,
    /// The agent's own: first listed object to maps, and the map writes.
    event_ms: f64,
    sync_ms: f64,
    /// Once synced with the three watches open.
    rss_mib: f64,
}

/// Starts the agent on the API server and waits for its first full sync
/// (`frontends` programmed) and its watches.
fn start(sb: &mut Sandbox, api: &ApiServer, frontends: usize) -> anyhow::Result<Start> {
    let spawned = unix_now();
    sb.spawn_agent(&["--lb-map-max", &lash_arm::map_max(frontends).to_string()])?;
    let pid = sb.agent_pid().unwrap_or(0);
    let status = wait_status(sb, pid, Duration::from_secs(180), |s| {
        s["syncs"].as_u64() >= Some(1) && s["kubernetes"]["synced"] == true
    })
    .with_context(|| format!("the agent did not sync; its log:\n{}", log_tail(sb)))?;
    // The bench sees the file up to a poll late; the agent's own stamp is
    // the figure, the bench's sighting a check on it.
    let seen_ms = (unix_now() - spawned) * 1e3;
    ensure!(
        status["services"].as_u64() >= Some(frontends as u64),
        "the first sync programmed {} of {frontends} frontends",
        status["services"]
    );
    wait_for(Duration::from_secs(30), || watches_open(api).then_some(()))
        .context("the agent's three watches did not open")?;
    let f = |key: &str| status[key].as_f64().unwrap_or(f64::NAN);
    Ok(Start {
        initial_ms: (f("last_sync_unix") - spawned) * 1e3,
        seen_ms,
        event_ms: f("last_event_ms"),
        sync_ms: f("last_sync_ms"),
        rss_mib: lash_arm::rss_mib(pid).unwrap_or(f64::NAN),
    })
}

/// The agent's status.json, parsed.
fn status(sb: &Sandbox) -> Option<Value> {
    let text = std::fs::read_to_string(sb.state_dir().join("status.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Polls the status every 2 ms until `ok` holds; gives up early if the
/// agent has exited.
fn wait_status(
    sb: &Sandbox,
    pid: u32,
    timeout: Duration,
    ok: impl Fn(&Value) -> bool,
) -> Option<Value> {
    let end = Instant::now() + timeout;
    while Instant::now() < end && alive(pid) {
        if let Some(s) = status(sb).filter(|s| ok(s)) {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// Whether our child `pid` still runs (not exited, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn log_tail(sb: &Sandbox) -> String {
    let log = sb.agent_log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Whether the server has the agent's three watches open.
fn watches_open(api: &ApiServer) -> bool {
    let state = api
        .connect()
        .and_then(|mut c| c.request("GET", "/lash-test/state", "application/json", b""))
        .ok()
        .and_then(|(_, body)| serde_json::from_slice::<Value>(&body).ok());
    let Some(state) = state else { return false };
    ["services", "endpointslices.discovery.k8s.io", "nodes"]
        .iter()
        .all(|k| state["openWatches"][k].as_u64() >= Some(1))
}

#[derive(Deserialize)]
struct Page {
    metadata: PageMeta,
}

#[derive(Deserialize)]
struct PageMeta {
    #[serde(rename = "continue")]
    next: Option<String>,
}

/// One pass of the watchers' lists on one connection: ms and bytes read.
/// Only a page's `continue` is parsed (the items are skipped), so the time
/// is the server's and the transfer's.
fn list_once(api: &ApiServer) -> anyhow::Result<(f64, usize)> {
    let mut conn = api.connect()?;
    let started = Instant::now();
    let mut bytes = 0;
    for (path, selector) in LISTS {
        let mut next: Option<String> = None;
        loop {
            let mut query = format!("{path}?limit={PAGE}");
            if !selector.is_empty() {
                query += &format!("&labelSelector={}", encode(selector));
            }
            if let Some(token) = &next {
                query += &format!("&continue={}", encode(token));
            }
            let (code, body) = conn.request("GET", &query, "application/json", b"")?;
            ensure!(
                code == 200,
                "GET {query}: HTTP {code}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
            bytes += body.len();
            next = serde_json::from_slice::<Page>(&body)?.metadata.next;
            if next.is_none() {
                break;
            }
        }
    }
    Ok((ms(started), bytes))
}

/// Percent-encoding of a query value (everything but RFC 3986's unreserved).
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
