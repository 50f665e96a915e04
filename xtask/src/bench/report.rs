//! The results: a markdown summary printed and written next to the JSON, in
//! bench/results/ (latest.* for a full run of record, quick.* for --quick,
//! partial.* for a run limited to some arms or sizes).

use std::{fmt::Write as _, path::Path, process::Command};

use serde_json::{json, Value};

use super::probe::run_ok;
use super::Results;

pub fn machine() -> String {
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

/// The tools the kube-proxy arms ran on: `iptables --version` names its
/// backend (nf_tables or legacy), and the nft version.
pub fn tools() -> Value {
    let version = |cmd: &str| {
        run_ok(Command::new(cmd).arg("--version"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|e| format!("unavailable: {e:#}"))
    };
    let iptables = version("iptables");
    let backend = if iptables.contains("nf_tables") {
        "nft"
    } else if iptables.contains("legacy") {
        "legacy"
    } else {
        "unknown"
    };
    let first_line = |s: String| s.lines().next().unwrap_or("").to_string();
    let cni_plugins = run_ok(Command::new("dpkg-query").args([
        "-W",
        "-f=${Version}",
        "containernetworking-plugins",
    ]))
    .map(|v| format!("containernetworking-plugins {v}"))
    .unwrap_or_else(|e| format!("unavailable: {e:#}"));
    // The pod benches' first iperf3 stream uses the machine's default.
    let cc = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unavailable: {e}"));
    json!({
        "iptables": iptables, "iptables_backend": backend, "nft": version("nft"),
        "iperf3": first_line(version("iperf3")), "qperf": first_line(version("qperf")),
        "cni_plugins": cni_plugins, "tcp_congestion_control": cc,
    })
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

fn markdown(r: &Results, head: &Value) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "Machine: {}", head["machine"].as_str().unwrap_or(""));
    let _ = writeln!(
        md,
        "Tools: {} (backend: {}); {}",
        head["tools"]["iptables"].as_str().unwrap_or(""),
        head["tools"]["iptables_backend"].as_str().unwrap_or(""),
        head["tools"]["nft"].as_str().unwrap_or("")
    );
    if !r.pod_net.is_empty() || !r.cross_node.is_empty() || !r.cni.is_empty() {
        let _ = writeln!(
            md,
            "Pod tools: {}; {}; {}; the machine's TCP congestion control: {}",
            head["tools"]["iperf3"].as_str().unwrap_or(""),
            head["tools"]["qperf"].as_str().unwrap_or(""),
            head["tools"]["cni_plugins"].as_str().unwrap_or(""),
            head["tools"]["tcp_congestion_control"]
                .as_str()
                .unwrap_or("?")
        );
    }
    if !r.dataplane.is_empty() || !r.controlplane.is_empty() {
        socket_lb(&mut md, r, head);
    }
    if !r.kube_watch.is_empty() {
        kube_watch(&mut md, r, head);
    }
    if !r.pod_net.is_empty() {
        pod_net(&mut md, r, head);
    }
    if !r.cross_node.is_empty() {
        cross_node(&mut md, r, head);
    }
    if !r.cni.is_empty() {
        cni(&mut md, r, head);
    }
    if !r.clusterip.is_empty() {
        clusterip(&mut md, r, head);
    }
    if !r.packet.is_empty() {
        packet(&mut md, r, head);
    }
    md
}

/// The socket-LB tables: data plane, control plane, lash's own figures.
fn socket_lb(md: &mut String, r: &Results, head: &Value) {
    let _ = writeln!(md, "Method: {}\n", head["method"].as_str().unwrap_or(""));
    let _ = writeln!(
        md,
        "| services | arm | samples | connect p50 µs | connect p99 µs | p50 vs no translation | req/s on one connection (median) | req/s min–max |"
    );
    let _ = writeln!(md, "|---:|---|---:|---:|---:|---:|---:|---:|");
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
            "| {} | {} | {} | {} | {} | {:.2}× | {} | {}–{} |",
            row["services"],
            row["arm"].as_str().unwrap_or(""),
            row["samples"],
            num(&row["connect_p50_us"], 1),
            num(&row["connect_p99_us"], 1),
            p50 / base,
            num(&row["rr_per_s"], 0),
            num(&row["rr_min"], 0),
            num(&row["rr_max"], 0),
        );
    }
    let _ = writeln!(
        md,
        "\n| services | arm | full sync ms | transactions | one change ms (until the datapath shows it) |"
    );
    let _ = writeln!(md, "|---:|---|---:|---:|---:|");
    for row in &r.controlplane {
        let arm = row["arm"].as_str().unwrap_or("");
        if let Some(e) = row["error"].as_str() {
            let _ = writeln!(md, "| {} | {arm} | failed: {e} | | |", row["services"]);
            continue;
        }
        let _ = writeln!(
            md,
            "| {} | {arm} | {} | {} | {} |",
            row["services"],
            num(&row["full_sync_ms"], 1),
            row["transactions"]
                .as_u64()
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into()),
            row["one_change_error"]
                .as_str()
                .map(|e| format!("failed: {e}"))
                .unwrap_or_else(|| num(&row["one_change_ms"], 1))
        );
    }
    let _ = writeln!(
        md,
        "\n| services | agent RSS MiB | BPF map MiB | lash connect4 ns/call | floor (one lookup) ns/call | change: file event to maps, ms | change: map owner's own time, ms |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|");
    for row in &r.lash {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row["services"],
            num(&row["agent_rss_mib"], 1),
            num(&row["bpf_map_mib"], 1),
            num(&row["lash_ns_per_connect"], 0),
            num(&row["floor_ns_per_connect"], 0),
            num(&row["agent_event_ms"], 2),
            num(&row["agent_sync_ms"], 2),
        );
    }
}

/// The agent on the Kubernetes API, with the manifest-directory lash arm's
/// figures at the same size beside it when that arm ran too.
fn kube_watch(md: &mut String, r: &Results, head: &Value) {
    let _ = writeln!(
        md,
        "\nThe agent on the Kubernetes API (k8s-watch): {}\n",
        head["kube_watch_method"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        md,
        "| services | endpoints | initial sync ms (min–max) | agent: first event to maps, ms | API server's lists ms | manifest arm: full sync ms | changes | change p50 ms | change p99 ms | PATCH answered p50 ms | agent: event to maps p50 ms | manifest arm: one change ms | agent RSS MiB (largest) | manifest arm: agent RSS MiB |"
    );
    let _ = writeln!(
        md,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    // The manifest arm's rows at this size, from the socket-LB part of the run.
    let manifest = |n: &Value, key: &str| {
        let mut rows = r
            .controlplane
            .iter()
            .chain(&r.lash)
            .filter(|row| row["services"] == *n && (row["arm"] == "lash" || row["arm"].is_null()))
            .peekable();
        if rows.peek().is_none() {
            return "not in this run".to_string();
        }
        num(&json!(rows.find_map(|row| row[key].as_f64())), 1)
    };
    for row in &r.kube_watch {
        let n = &row["services"];
        if let Some(why) = not_measured(row) {
            let _ = writeln!(md, "| {n} | {why} |{}", " |".repeat(12));
            continue;
        }
        let initial = format!(
            "{} ({}–{})",
            num(&row["initial_sync_ms"], 1),
            num(&row["initial_sync_min_ms"], 1),
            num(&row["initial_sync_max_ms"], 1)
        );
        let rss = format!(
            "{} ({})",
            num(&row["agent_rss_mib"], 1),
            num(&row["agent_rss_max_mib"], 1)
        );
        let _ = writeln!(
            md,
            "| {n} | {} | {initial} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {rss} | {} |",
            row["endpoints"],
            num(&row["agent_event_ms"], 1),
            num(&row["server_list_ms"], 1),
            manifest(n, "full_sync_ms"),
            row["changes"],
            num(&row["change_p50_ms"], 2),
            num(&row["change_p99_ms"], 2),
            num(&row["patch_answer_p50_ms"], 2),
            num(&row["agent_change_p50_ms"], 2),
            manifest(n, "one_change_ms"),
            manifest(n, "agent_rss_mib"),
        );
    }
    let _ = writeln!(
        md,
        "\nGoals (issue 8), stated at 10k Services / 30k endpoints: initial sync at most 1 s, event to datapath p99 at most 10 ms, agent RSS at most 64 MiB.\n"
    );
    for row in r
        .kube_watch
        .iter()
        .filter(|row| not_measured(row).is_none())
    {
        let n = row["services"].as_u64().unwrap_or(0);
        let at = if n == 10_000 {
            String::new()
        } else {
            format!(" (measured at {n}, not at the goals' 10k)")
        };
        let f = |key: &str| row[key].as_f64();
        let _ = writeln!(
            md,
            "- {n} services: initial sync (median of {} starts) {} ms ({}; slowest start {} ms; the API server's own lists {} ms of it); change p99 {} ms ({}); agent RSS, largest of the starts, {} MiB ({}){at}",
            row["starts"],
            num(&row["initial_sync_ms"], 1),
            mark(f("initial_sync_ms").map(|x| x <= 1000.0)),
            num(&row["initial_sync_max_ms"], 1),
            num(&row["server_list_ms"], 1),
            num(&row["change_p99_ms"], 2),
            mark(f("change_p99_ms").map(|x| x <= 10.0)),
            num(&row["agent_rss_max_mib"], 1),
            mark(f("agent_rss_max_mib").map(|x| x <= 64.0)),
        );
    }
}

/// A row that was not measured, as one table line's text.
fn not_measured(row: &Value) -> Option<String> {
    if let Some(why) = row["skipped"].as_str() {
        return Some(format!("skipped: {why}"));
    }
    row["error"].as_str().map(|e| format!("failed: {e}"))
}

/// A goal's mark, from the measured numbers (None: a side was not measured).
fn mark(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "**met**",
        Some(false) => "**not met**",
        None => "not measured",
    }
}

/// The row of `arm` (and `mode`, when given) with a number at `key`.
fn find<'a>(rows: &'a [Value], arm: &str, mode: Option<&str>) -> Option<&'a Value> {
    rows.iter()
        .find(|r| r["arm"] == arm && mode.is_none_or(|m| r["mode"] == m))
}

fn ratio(v: &Value) -> String {
    v.as_f64()
        .map(|x| format!("{x:.2}×"))
        .unwrap_or_else(|| "-".into())
}

/// The pod benches' table: per arm its samples, then per figure the median,
/// the range and the ratio to each of `refs` (`{figure}_vs_{tag}`, headed
/// `vs {header}`).
fn pod_table(md: &mut String, rows: &[Value], refs: [(&str, &str); 2]) {
    let figures = [
        ("gbit_s", "Gbit/s, default CC", 2),
        ("gbit_s_cubic", "Gbit/s, cubic", 2),
        ("lat_us", "tcp_lat µs, 2 CPUs", 1),
        ("lat_one_cpu_us", "tcp_lat µs, one CPU", 1),
    ];
    let _ = write!(md, "| arm | samples |");
    for (_, title, _) in figures {
        let _ = write!(
            md,
            " {title} | min–max | vs {} | vs {} |",
            refs[0].1, refs[1].1
        );
    }
    let _ = writeln!(md, "\n|---|---:|{}", "---:|".repeat(4 * figures.len()));
    for row in rows {
        let arm = row["arm"].as_str().unwrap_or("");
        if let Some(why) = not_measured(row) {
            let _ = writeln!(md, "| {arm} | {why} |{}", " |".repeat(4 * figures.len()));
            continue;
        }
        let _ = write!(md, "| {arm} | {} |", row["samples"]);
        for (key, _, digits) in figures {
            let _ = write!(
                md,
                " {} | {}–{} | {} | {} |",
                num(&row[key], digits),
                num(&row[format!("{key}_min")], digits),
                num(&row[format!("{key}_max")], digits),
                ratio(&row[format!("{key}_vs_{}", refs[0].0)]),
                ratio(&row[format!("{key}_vs_{}", refs[1].0)]),
            );
        }
        let _ = writeln!(md);
    }
}

fn pod_net(md: &mut String, r: &Results, head: &Value) {
    let _ = writeln!(
        md,
        "\nPod to pod: {}\n",
        head["pod_net_method"].as_str().unwrap_or("")
    );
    pod_table(
        md,
        &r.pod_net,
        [("calico", "Calico-shaped"), ("veth", "bare veth")],
    );
    let _ = writeln!(
        md,
        "\nGoals (issue 7), pod-lash against pod-calico: tcp_lat is one-way (half a round trip); \"2 CPUs\": client on CPU 0 and servers on CPU 1, so each message also pays a cross-CPU wakeup; \"one CPU\": both on CPU 1.\n"
    );
    let lash = find(&r.pod_net, "pod-lash", None);
    let vs = |key: &str| lash.and_then(|l| l[format!("{key}_vs_calico")].as_f64());
    for (what, key, met) in [
        (
            "throughput (default CC) at least 1.15×",
            "gbit_s",
            vs("gbit_s").map(|x| x >= 1.15),
        ),
        (
            "throughput (cubic) at least 1.15×",
            "gbit_s_cubic",
            vs("gbit_s_cubic").map(|x| x >= 1.15),
        ),
        (
            "latency (2 CPUs) at most 0.6×",
            "lat_us",
            vs("lat_us").map(|x| x <= 0.6),
        ),
        (
            "latency (one CPU) at most 0.6×",
            "lat_one_cpu_us",
            vs("lat_one_cpu_us").map(|x| x <= 0.6),
        ),
    ] {
        let _ = writeln!(
            md,
            "- {what} pod-calico's: {} ({})",
            ratio(&json!(vs(key))),
            mark(met)
        );
    }
}

fn cross_node(md: &mut String, r: &Results, head: &Value) {
    let _ = writeln!(
        md,
        "\nPod to pod across nodes: {}\n",
        head["cross_node_method"].as_str().unwrap_or("")
    );
    pod_table(
        md,
        &r.cross_node,
        [("kernel", "matching kernel"), ("routes", "routes")],
    );
    let _ = writeln!(
        md,
        "\nGoals (issue 9), each lash arm against the kernel baseline carrying traffic its way (xnode-lash-tunnel against xnode-flannel, xnode-lash-native against xnode-routes): throughput at least 1.1×, latency at most 0.8×.\n"
    );
    for (arm, baseline) in [
        ("xnode-lash-tunnel", "xnode-flannel"),
        ("xnode-lash-native", "xnode-routes"),
    ] {
        let row = find(&r.cross_node, arm, None);
        let vs = |key: &str| row.and_then(|l| l[format!("{key}_vs_kernel")].as_f64());
        let _ = writeln!(
            md,
            "- {arm} against {baseline}: throughput (default CC) {} ({}), (cubic) {} ({}), latency 2 CPUs {} ({}), one CPU {} ({})",
            ratio(&json!(vs("gbit_s"))),
            mark(vs("gbit_s").map(|x| x >= 1.1)),
            ratio(&json!(vs("gbit_s_cubic"))),
            mark(vs("gbit_s_cubic").map(|x| x >= 1.1)),
            ratio(&json!(vs("lat_us"))),
            mark(vs("lat_us").map(|x| x <= 0.8)),
            ratio(&json!(vs("lat_one_cpu_us"))),
            mark(vs("lat_one_cpu_us").map(|x| x <= 0.8)),
        );
    }
}

fn cni(md: &mut String, r: &Results, head: &Value) {
    let _ = writeln!(
        md,
        "\nCNI ADD/DEL latency: {}\n",
        head["cni_method"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        md,
        "| arm | calls | ADD p50 ms | ADD p99 ms | DEL p50 ms | DEL p99 ms |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|");
    for row in &r.cni {
        let arm = row["arm"].as_str().unwrap_or("");
        if let Some(why) = not_measured(row) {
            let _ = writeln!(md, "| {arm} | {why} | | | | |");
            continue;
        }
        let _ = writeln!(
            md,
            "| {arm} | {} {} | {} | {} | {} | {} |",
            row["calls"],
            row["mode"].as_str().unwrap_or(""),
            num(&row["add_p50_ms"], 2),
            num(&row["add_p99_ms"], 2),
            num(&row["del_p50_ms"], 2),
            num(&row["del_p99_ms"], 2),
        );
    }
    let _ = writeln!(
        md,
        "\nGoal (issue 7): cni-lash ADD p50 at most 10 ms and below cni-bridge's.\n"
    );
    for mode in ["sequential", "parallel"] {
        let p50 = |arm| find(&r.cni, arm, Some(mode)).and_then(|row| row["add_p50_ms"].as_f64());
        let (lash, bridge) = (p50("cni-lash"), p50("cni-bridge"));
        let _ = writeln!(
            md,
            "- {mode}: cni-lash ADD p50 {} ms; at most 10 ms: {}; below cni-bridge's {} ms: {}",
            num(&json!(lash), 2),
            mark(lash.map(|x| x <= 10.0)),
            num(&json!(bridge), 2),
            mark(lash.zip(bridge).map(|(l, b)| l < b)),
        );
    }
}

pub fn write(r: &Results, head: Value, name: &str) -> anyhow::Result<()> {
    let md = markdown(r, &head);
    print!("{md}");
    let max_rss = r
        .lash
        .iter()
        .filter_map(|l| l["agent_rss_mib"].as_f64())
        .fold(0.0, f64::max);
    let mut json = head;
    json["dataplane"] = json!(r.dataplane);
    json["controlplane"] = json!(r.controlplane);
    json["lash"] = json!(r.lash);
    json["pod_net"] = json!(r.pod_net);
    json["cross_node"] = json!(r.cross_node);
    json["cni"] = json!(r.cni);
    json["packet"] = json!(r.packet);
    json["clusterip"] = json!(r.clusterip);
    json["kube_watch"] = json!(r.kube_watch);
    json["agent_rss_mib"] = json!(max_rss);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/results");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(&json)?,
    )?;
    std::fs::write(dir.join(format!("{name}.md")), &md)?;
    eprintln!(
        "bench: wrote {}",
        dir.join(format!("{name}.json")).display()
    );
    Ok(())
}

fn packet(md: &mut String, r: &Results, head: &Value) {
    let _ = writeln!(
        md,
        "\nPer packet: {}\n",
        head["packet_method"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        md,
        "| program | packet | samples | verdict | ns/packet (median) | min–max | ns over pass-through |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|");
    for row in &r.packet {
        let program = row["program"].as_str().unwrap_or("");
        if let Some(why) = not_measured(row) {
            let packet = row["packet"].as_str().unwrap_or("");
            let _ = writeln!(md, "| {program} | {packet} | {why} | | | | |");
            continue;
        }
        let _ = writeln!(
            md,
            "| {program} | {} | {} | {} | {} | {}–{} | {} |",
            row["packet"].as_str().unwrap_or(""),
            row["samples"],
            row["verdict"],
            num(&row["ns_per_packet"], 1),
            num(&row["ns_min"], 1),
            num(&row["ns_max"], 1),
            num(&row["ns_over_pass_through"], 1),
        );
    }
    let _ = writeln!(
        md,
        "\nGoal (issue 7): from_container at most 100 ns per packet over a pass-through tc program.\n"
    );
    for packet in [
        "local delivery",
        "service",
        "local delivery, mid-flow",
        "service, mid-flow",
    ] {
        let over = r
            .packet
            .iter()
            .find(|row| row["program"] == "from_container" && row["packet"] == packet)
            .and_then(|row| row["ns_over_pass_through"].as_f64());
        let _ = writeln!(
            md,
            "- {packet}: {} ns over ({})",
            num(&json!(over), 1),
            mark(over.map(|x| x <= 100.0))
        );
    }
}

fn clusterip(md: &mut String, r: &Results, head: &Value) {
    let _ = writeln!(
        md,
        "\nClusterIP from a pod (the packet path, no socket LB): {}\n",
        head["clusterip_method"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        md,
        "| services | arm | samples | connect p50 µs | connect p99 µs | p50 vs clusterip-iptables | req/s on one connection | full sync ms |"
    );
    let _ = writeln!(md, "|---:|---|---:|---:|---:|---:|---:|---:|");
    for row in &r.clusterip {
        let arm = row["arm"].as_str().unwrap_or("");
        if let Some(why) = not_measured(row) {
            let _ = writeln!(md, "| {} | {arm} | {why} | | | | | |", row["services"]);
            continue;
        }
        let base = r
            .clusterip
            .iter()
            .find(|b| b["services"] == row["services"] && b["arm"] == "clusterip-iptables")
            .and_then(|b| b["connect_p50_us"].as_f64());
        let vs = match (row["connect_p50_us"].as_f64(), base) {
            (Some(x), Some(b)) => json!(x / b),
            _ => Value::Null,
        };
        let _ = writeln!(
            md,
            "| {} | {arm} | {} | {} | {} | {} | {} | {} |",
            row["services"],
            row["samples"],
            num(&row["connect_p50_us"], 1),
            num(&row["connect_p99_us"], 1),
            ratio(&vs),
            num(&row["rr_per_s"], 0),
            num(&row["full_sync_ms"], 1),
        );
    }
}
