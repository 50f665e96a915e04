//! `cargo xtask bench [--quick]`: lash against kube-proxy's iptables and
//! nftables rules and against no translation at all, measured side by side in
//! one run on one sandbox, and written to bench/results/latest.json.
//!
//! Every arm serves the same service set (services.rs): the measured Service
//! backed by real pods, plus N background Services with 3 endpoints each. The
//! client runs in the sandbox's node namespace pinned to CPU 0, the pods' servers
//! on CPU 1.

mod kube_proxy;
mod services;

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader, Write},
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use lash_tests::sandbox::{bin, Sandbox};
use serde_json::{json, Value};

use services::{Svc, POD_PORT, TARGET_PORT, TARGET_VIP};

const CLIENT_CPU: usize = 0;
const SERVER_CPU: usize = 1;

struct Plan {
    sizes: Vec<u32>,
    connects: usize,
    rr_millis: u64,
}

#[derive(Clone, Copy, PartialEq)]
enum Arm {
    Baseline,
    Iptables,
    Nftables,
    Lash,
}

impl Arm {
    fn name(self) -> &'static str {
        match self {
            Arm::Baseline => "baseline",
            Arm::Iptables => "iptables",
            Arm::Nftables => "nftables",
            Arm::Lash => "lash",
        }
    }
}

const ARMS: [Arm; 4] = [Arm::Baseline, Arm::Iptables, Arm::Nftables, Arm::Lash];

#[derive(Default)]
struct Results {
    dataplane: Vec<Value>,
    controlplane: Vec<Value>,
    lash: Vec<Value>,
}

fn ns_exec(sb: &Sandbox, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &sb.node_ns]).args(args);
    c
}

fn run_ok(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` and returns its wall time in ms.
fn timed(cmd: &mut Command) -> anyhow::Result<f64> {
    let start = Instant::now();
    run_ok(cmd)?;
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

fn probe_json(sb: &Sandbox, args: &[&str]) -> anyhow::Result<Value> {
    let mut c = Command::new(bin("lash-probe"));
    c.arg("--cgroup").arg(&sb.cgroup);
    c.args(["--netns", &sb.node_ns, "--cpu", &CLIENT_CPU.to_string()]);
    c.args(args);
    let out = run_ok(&mut c)?;
    Ok(serde_json::from_str(out.trim())?)
}

/// Connect latency and request rate through whatever the arm programmed.
fn measure_dataplane(sb: &Sandbox, plan: &Plan, addr: &str) -> anyhow::Result<(Value, Value)> {
    let c = probe_json(
        sb,
        &["bench-connect", addr, "--count", &plan.connects.to_string()],
    )?;
    if c["errors"].as_u64() != Some(0) {
        bail!("connects to {addr} failed: {c}");
    }
    let rr = probe_json(
        sb,
        &["bench-rr", addr, "--millis", &plan.rr_millis.to_string()],
    )?;
    Ok((c, rr))
}

/// Applies a change with `apply` and returns how long until a connect to the
/// target reaches one of the new backends (ms), polled from the client.
fn time_change(
    sb: &Sandbox,
    new_pods: &[&str],
    apply: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let addr = format!("{TARGET_VIP}:{TARGET_PORT}");
    let mut child = Command::new(bin("lash-probe"))
        .arg("--cgroup")
        .arg(&sb.cgroup)
        .args(["--netns", &sb.node_ns, "--cpu", &CLIENT_CPU.to_string()])
        .args([
            "wait-backend",
            &addr,
            "--backends",
            &new_pods.join(","),
            "--millis",
            "1800000",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line)?;
    if line.trim() != "ready" {
        bail!("wait-backend probe: {line:?}");
    }
    writeln!(stdin, "go")?;
    stdin.flush()?;
    if let Err(e) = apply() {
        // The probe would poll on inside the sandbox's cgroup and keep it from
        // being removed: end it (ours, by its id) before giving up.
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    line.clear();
    out.read_line(&mut line)?;
    child.wait()?;
    let v: Value =
        serde_json::from_str(line.trim()).with_context(|| format!("probe said {line:?}"))?;
    if v["ok"] != true {
        bail!("the change never reached the datapath: {v}");
    }
    Ok(v["elapsed_us"].as_f64().unwrap_or(0.0) / 1e3)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let kernel = run_ok(Command::new("uname").arg("-r")).unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {mem_gib:.0} GiB, Linux {}",
        kernel.trim()
    )
}

fn pod_names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("pod-{}", i + 1)).collect()
}

pub fn run(quick: bool, sizes: Vec<u32>, arms: Vec<String>) -> anyhow::Result<()> {
    let plan = if quick {
        Plan {
            sizes: vec![0, 1000],
            connects: 300,
            rr_millis: 200,
        }
    } else {
        Plan {
            sizes: vec![0, 1000, 10_000, 50_000],
            connects: 3000,
            rr_millis: 1000,
        }
    };
    let mut plan = plan;
    if !sizes.is_empty() {
        plan.sizes = sizes;
    }
    let arms: Vec<Arm> = ARMS
        .into_iter()
        .filter(|a| arms.is_empty() || arms.iter().any(|n| n == a.name()))
        .collect();
    // A partial run is for looking at, not the results of record.
    let partial = arms.len() < ARMS.len() || plan.sizes.len() < if quick { 2 } else { 4 };
    let mut sb = Sandbox::new("bench", 6).context("building the sandbox")?;
    sb.start_pod_servers_on(Some(SERVER_CPU))?;
    let pods: Vec<Ipv4Addr> = sb.pods.iter().map(|p| p.ip).collect();
    let mut results = Results::default();

    // An arm whose full sync took longer than this is not run at larger sizes:
    // its cost grows faster than linearly, and one run must stay affordable.
    const SKIP_AFTER_MS: f64 = 60_000.0;
    let mut too_slow: Vec<(Arm, u32, f64)> = Vec::new();
    for &n in &plan.sizes {
        eprintln!("bench: {n} background services");
        let before = services::all(n, services::target(&pods[0..3]));
        let after = services::all(n, services::target(&pods[3..6]));
        let old_t = services::target(&pods[0..3]);
        let new_t = services::target(&pods[3..6]);
        let new_names = pod_names(3..6);
        let new_names: Vec<&str> = new_names.iter().map(String::as_str).collect();
        let vip = format!("{TARGET_VIP}:{TARGET_PORT}");

        for &arm in &arms {
            eprintln!("bench:   {}", arm.name());
            if let Some((_, at, ms)) = too_slow.iter().find(|(a, _, _)| *a == arm) {
                let why = format!(
                    "not run: its full sync took {:.0} s at {at} services",
                    ms / 1e3
                );
                eprintln!("bench:   {} at {n}: {why}", arm.name());
                results
                    .controlplane
                    .push(json!({"services": n, "arm": arm.name(), "error": why}));
                continue;
            }
            let ctx = ArmCtx {
                n,
                arm,
                plan: &plan,
                before: &before,
                after: &after,
                old_t: &old_t,
                new_t: &new_t,
                new_names: &new_names,
                vip: &vip,
                pods: &pods,
            };
            let result = run_arm(&mut sb, &ctx, &mut results);
            if let Some(ms) = results
                .controlplane
                .iter()
                .rev()
                .find(|r| r["services"] == n && r["arm"] == arm.name())
                .and_then(|r| r["full_sync_ms"].as_f64())
            {
                if ms > SKIP_AFTER_MS {
                    too_slow.push((arm, n, ms));
                }
            }
            if let Err(e) = result {
                // One arm failing (a tool missing, a timeout at a size) must not
                // lose the others: record it, clean up, go on.
                eprintln!("bench:   {} at {n} failed: {e:#}", arm.name());
                results.controlplane.push(json!({
                    "services": n, "arm": arm.name(), "error": format!("{e:#}"),
                }));
                cleanup_arm(&mut sb, arm);
            }
        }
    }
    drop(sb);
    report(&results, quick, partial)
}

struct ArmCtx<'a> {
    n: u32,
    arm: Arm,
    plan: &'a Plan,
    before: &'a [Svc],
    after: &'a [Svc],
    old_t: &'a Svc,
    new_t: &'a Svc,
    new_names: &'a [&'a str],
    vip: &'a str,
    pods: &'a [Ipv4Addr],
}

/// Leaves the node as the next arm expects it: no rules, no agent, no pins.
fn cleanup_arm(sb: &mut Sandbox, arm: Arm) {
    match arm {
        Arm::Baseline => {}
        Arm::Iptables => {
            let empty = sb.work.join("iptables.empty");
            let _ = std::fs::write(&empty, "*nat\nCOMMIT\n");
            let _ = run_ok(ns_exec(sb, &["iptables-restore"]).arg(&empty));
        }
        Arm::Nftables => {
            let _ = run_ok(&mut ns_exec(
                sb,
                &["nft", "delete", "table", "ip", "kube-proxy"],
            ));
        }
        Arm::Lash => {
            let _ = sb.stop_agent(false);
            let _ = std::fs::remove_dir_all(&sb.bpf_root);
        }
    }
}

fn run_arm(sb: &mut Sandbox, c: &ArmCtx, results: &mut Results) -> anyhow::Result<()> {
    let (n, arm, work) = (c.n, c.arm, sb.work.clone());
    let (full_ms, addr): (Option<f64>, String) = match arm {
        Arm::Baseline => (None, format!("{}:{POD_PORT}", c.pods[0])),
        Arm::Iptables => {
            let full = work.join("iptables.rules");
            std::fs::write(&full, kube_proxy::iptables_full(c.before))?;
            let ms = timed(ns_exec(sb, &["iptables-restore"]).arg(&full))?;
            (Some(ms), c.vip.to_string())
        }
        Arm::Nftables => {
            let full = work.join("nft.rules");
            std::fs::write(&full, kube_proxy::nft_full(c.before))?;
            let ms = timed(ns_exec(sb, &["nft", "-f"]).arg(&full))?;
            (Some(ms), c.vip.to_string())
        }
        Arm::Lash => (Some(lash_full_sync(sb, c.before)?), c.vip.to_string()),
    };
    let stats = if arm == Arm::Lash {
        Some(BpfStats::enable()?)
    } else {
        None
    };
    let (conn, rr) = measure_dataplane(sb, c.plan, &addr)?;
    let per_call = match stats {
        Some(s) => s.finish(sb)?,
        None => None,
    };
    let row = json!({
        "services": n, "arm": arm.name(),
        "connect_p50_us": conn["p50_us"], "connect_p99_us": conn["p99_us"],
        "rr_per_s": rr["rate_per_s"],
    });
    eprintln!("bench:     {row}");
    results.dataplane.push(row);

    // One endpoint change at this size, until the datapath shows it.
    let one_change = match arm {
        Arm::Baseline => None,
        Arm::Iptables => {
            let f = work.join("iptables.change");
            std::fs::write(&f, kube_proxy::iptables_change(c.after, c.old_t, c.new_t))?;
            let ms = time_change(sb, c.new_names, || {
                run_ok(ns_exec(sb, &["iptables-restore", "--noflush"]).arg(&f)).map(drop)
            })?;
            Some(ms)
        }
        Arm::Nftables => {
            let f = work.join("nft.change");
            std::fs::write(&f, kube_proxy::nft_change(c.old_t, c.new_t))?;
            let ms = time_change(sb, c.new_names, || {
                run_ok(ns_exec(sb, &["nft", "-f"]).arg(&f)).map(drop)
            })?;
            Some(ms)
        }
        Arm::Lash => {
            let target_yaml = lash_manifest(std::slice::from_ref(c.new_t));
            let syncs = sb.syncs();
            let ms = time_change(sb, c.new_names, || {
                sb.write_manifest("target.yaml", &target_yaml)
            })?;
            // The status file is written after the maps: wait for it.
            sb.wait_synced_after(syncs, Duration::from_secs(5));
            let pid = sb.agent_pid().unwrap_or(0);
            // The agent's own time for that change (refresh, translate, map
            // writes), from its status: what of one_change_ms is ours.
            let agent_ms = std::fs::read_to_string(sb.state_dir().join("status.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .and_then(|v| v["last_sync_ms"].as_f64());
            let row = json!({
                "services": n, "agent_rss_mib": rss_mib(pid), "bpf_map_mib": map_memory_mib(&sb.bpf_root),
                "bpf_ns_per_connect": per_call, "agent_change_ms": agent_ms,
            });
            eprintln!("bench:     {row}");
            results.lash.push(row);
            Some(ms)
        }
    };
    cleanup_arm(sb, arm);
    if arm != Arm::Baseline {
        let row = json!({
            "services": n, "arm": arm.name(), "full_sync_ms": full_ms, "one_change_ms": one_change,
        });
        eprintln!("bench:     {row}");
        results.controlplane.push(row);
    }
    Ok(())
}

/// Writes the service set as manifests (JSON Lists of 1000 services, the
/// target alone in a YAML file of its own, as a user would edit it) and starts
/// a fresh agent on them. Returns the time from start until the agent reports
/// its first full sync: program load and map creation included.
fn lash_full_sync(sb: &mut Sandbox, svcs: &[Svc]) -> anyhow::Result<f64> {
    let dir = sb.manifests();
    for e in std::fs::read_dir(&dir)? {
        std::fs::remove_file(e?.path())?;
    }
    let (target, rest): (Vec<&Svc>, Vec<&Svc>) = svcs.iter().partition(|s| s.vip == TARGET_VIP);
    for (i, chunk) in rest.chunks(1000).enumerate() {
        std::fs::write(
            dir.join(format!("bulk-{i:03}.json")),
            lash_manifest_json(chunk),
        )?;
    }
    let t: Vec<Svc> = target.into_iter().cloned().collect();
    std::fs::write(dir.join("target.yaml"), lash_manifest(&t))?;

    let entries = (svcs.len() as u32 + 1) * 4;
    // The compiled-in default (65536) is the floor, as for a user.
    let map_max = entries.next_power_of_two().max(65536);
    let start = Instant::now();
    sb.start_agent_timeout(
        &["--lb-map-max", &map_max.to_string()],
        Duration::from_secs(600),
    )?;
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

/// Service + EndpointSlice documents for `svcs`, as YAML.
fn lash_manifest(svcs: &[Svc]) -> String {
    let mut out = String::with_capacity(svcs.len() * 700);
    for s in svcs {
        let (ns, name) = ns_name(s);
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec: {{clusterIP: {}, ports: [{{name: http, port: {}, protocol: TCP, targetPort: http}}]}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}-x, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {POD_PORT}, protocol: TCP}}]\nendpoints:\n",
            s.vip, s.port
        );
        for (ip, _) in &s.endpoints {
            let _ = writeln!(
                out,
                "- {{addresses: [\"{ip}\"], conditions: {{ready: true}}}}"
            );
        }
    }
    out
}

fn ns_name(s: &Svc) -> (&str, &str) {
    let (ns, rest) = s.name.split_once('/').unwrap_or(("default", &s.name));
    (ns, rest.split(':').next().unwrap_or(rest))
}

/// The same as a JSON v1 List, the shape `kubectl get -o json` writes and the
/// API server serves: what the agent will read in a cluster, without YAML's
/// parsing cost.
fn lash_manifest_json(svcs: &[&Svc]) -> String {
    let mut items = Vec::with_capacity(svcs.len() * 2);
    for s in svcs {
        let (ns, name) = ns_name(s);
        items.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": s.vip.to_string(),
                     "ports": [{"name": "http", "port": s.port, "protocol": "TCP", "targetPort": "http"}]},
        }));
        items.push(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-x"), "namespace": ns,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": POD_PORT, "protocol": "TCP"}],
            "endpoints": s.endpoints.iter().map(|(ip, _)| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}})).collect::<Vec<_>>(),
        }));
    }
    json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn map_memory_mib(root: &Path) -> Option<f64> {
    let mut total = 0u64;
    for m in [
        "lb4_services",
        "lb4_backends",
        "lb4_reverse_nat",
        "lb4_reverse_sk",
        "lb4_affinity",
    ] {
        let out = run_ok(
            Command::new("bpftool")
                .args(["-j", "map", "show", "pinned"])
                .arg(root.join(m)),
        )
        .ok()?;
        let v: Value = serde_json::from_str(&out).ok()?;
        total += v["bytes_memlock"].as_u64().unwrap_or(0);
    }
    Some(total as f64 / 1024.0 / 1024.0)
}

/// kernel.bpf_stats_enabled for the length of one measurement, restored after.
struct BpfStats {
    previous: String,
}

impl BpfStats {
    fn enable() -> anyhow::Result<Self> {
        let path = "/proc/sys/kernel/bpf_stats_enabled";
        let previous = std::fs::read_to_string(path)?.trim().to_string();
        std::fs::write(path, "1")?;
        Ok(BpfStats { previous })
    }

    /// Average ns per run of the connect4 program attached to the sandbox cgroup.
    fn finish(self, sb: &Sandbox) -> anyhow::Result<Option<f64>> {
        let out = run_ok(
            Command::new("bpftool")
                .args(["-j", "cgroup", "show"])
                .arg(&sb.cgroup),
        );
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.previous);
        let progs: Value = serde_json::from_str(&out?)?;
        let Some(id) = progs
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["attach_type"] == "cgroup_inet4_connect")
            .and_then(|p| p["id"].as_u64())
        else {
            return Ok(None);
        };
        let info: Value = serde_json::from_str(&run_ok(Command::new("bpftool").args([
            "-j",
            "prog",
            "show",
            "id",
            &id.to_string(),
        ]))?)?;
        let (ns, cnt) = (
            info["run_time_ns"].as_f64().unwrap_or(0.0),
            info["run_cnt"].as_f64().unwrap_or(0.0),
        );
        Ok((cnt > 0.0).then(|| ns / cnt))
    }
}

fn fmt_opt(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

fn report(r: &Results, quick: bool, partial: bool) -> anyhow::Result<()> {
    let machine = machine();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Machine: {machine}{}\n",
        if quick { " (quick run)" } else { "" }
    );
    let _ = writeln!(md, "| services | arm | connect p50 µs | connect p99 µs | p50 vs baseline | req/s on one connection |");
    let _ = writeln!(md, "|---:|---|---:|---:|---:|---:|");
    for row in &r.dataplane {
        let base = r
            .dataplane
            .iter()
            .find(|b| b["services"] == row["services"] && b["arm"] == "baseline")
            .and_then(|b| b["connect_p50_us"].as_f64())
            .unwrap_or(f64::NAN);
        let p50 = row["connect_p50_us"].as_f64().unwrap_or(f64::NAN);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.2}× | {} |",
            row["services"],
            row["arm"].as_str().unwrap_or(""),
            fmt_opt(&row["connect_p50_us"], 1),
            fmt_opt(&row["connect_p99_us"], 1),
            p50 / base,
            fmt_opt(&row["rr_per_s"], 0)
        );
    }
    let _ = writeln!(
        md,
        "\n| services | arm | full sync ms | one change ms (until the datapath shows it) |"
    );
    let _ = writeln!(md, "|---:|---|---:|---:|");
    for row in &r.controlplane {
        if let Some(e) = row["error"].as_str() {
            let _ = writeln!(
                md,
                "| {} | {} | {e} | |",
                row["services"],
                row["arm"].as_str().unwrap_or("")
            );
            continue;
        }
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            row["services"],
            row["arm"].as_str().unwrap_or(""),
            fmt_opt(&row["full_sync_ms"], 1),
            fmt_opt(&row["one_change_ms"], 1)
        );
    }
    let _ = writeln!(
        md,
        "\n| services | agent RSS MiB | BPF map MiB | connect4 program ns/call | agent's own time for the change, ms |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|");
    for row in &r.lash {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            row["services"],
            fmt_opt(&row["agent_rss_mib"], 1),
            fmt_opt(&row["bpf_map_mib"], 1),
            fmt_opt(&row["bpf_ns_per_connect"], 0),
            fmt_opt(&row["agent_change_ms"], 2)
        );
    }
    print!("{md}");

    let max_rss = r
        .lash
        .iter()
        .filter_map(|l| l["agent_rss_mib"].as_f64())
        .fold(0.0, f64::max);
    let json = json!({
        "machine": machine,
        "quick": quick,
        "dataplane": r.dataplane,
        "controlplane": r.controlplane,
        "lash": r.lash,
        "agent_rss_mib": max_rss,
    });
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/results");
    std::fs::create_dir_all(&dir)?;
    let name = if partial {
        "partial.json"
    } else if quick {
        "quick.json"
    } else {
        "latest.json"
    };
    std::fs::write(dir.join(name), serde_json::to_string_pretty(&json)?)?;
    std::fs::write(dir.join(name.replace(".json", ".md")), &md)?;
    eprintln!("bench: wrote {}", dir.join(name).display());
    Ok(())
}
