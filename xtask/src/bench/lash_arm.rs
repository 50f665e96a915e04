//! The lash arm: the service set as manifests, a fresh release agent on them,
//! and what the agent says about itself (status.json, RSS, map memory).

use std::{
    fmt::Write as _,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use lash_tests::sandbox::Sandbox;
use serde_json::{json, Value};

use super::probe::run_ok;
use super::services::{Svc, POD_PORT, TARGET_VIP};

/// Writes the service set as manifests (JSON Lists of 1000 services, the
/// target alone in a YAML file of its own, as a user would edit it) and starts
/// a fresh agent on them. Returns the time from start until the agent reports
/// its first full sync: program load and map creation included.
pub fn full_sync(sb: &mut Sandbox, svcs: &[Svc]) -> anyhow::Result<f64> {
    write_manifests(sb, svcs)?;
    let start = Instant::now();
    sb.start_agent_timeout(
        &["--lb-map-max", &map_max(svcs.len()).to_string()],
        Duration::from_secs(600),
    )?;
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

/// Replaces the sandbox's manifests with `svcs`: JSON Lists of 1000
/// services, the target alone in a YAML file of its own.
pub fn write_manifests(sb: &Sandbox, svcs: &[Svc]) -> anyhow::Result<()> {
    let dir = sb.manifests();
    for e in std::fs::read_dir(&dir)? {
        std::fs::remove_file(e?.path())?;
    }
    let (target, rest): (Vec<&Svc>, Vec<&Svc>) = svcs.iter().partition(|s| s.vip == TARGET_VIP);
    for (i, chunk) in rest.chunks(1000).enumerate() {
        // Renamed into place, so the agent's watch never reads half a file.
        sb.write_manifest(&format!("bulk-{i:03}.json"), &manifest_json(chunk))?;
    }
    let t: Vec<Svc> = target.into_iter().cloned().collect();
    sb.write_manifest("target.yaml", &manifest(&t))
}

/// `--lb-map-max` for `services` Services: room for all of them, the
/// compiled-in default (65536) the floor, as for a user.
pub fn map_max(services: usize) -> u32 {
    let entries = (services as u32 + 1) * 4;
    entries.next_power_of_two().max(65536)
}

/// Service + EndpointSlice documents for `svcs`, as YAML.
pub fn manifest(svcs: &[Svc]) -> String {
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

/// A Service's namespace and name (its `name` is "namespace/name:port").
pub fn ns_name(s: &Svc) -> (&str, &str) {
    let (ns, rest) = s.name.split_once('/').unwrap_or(("default", &s.name));
    (ns, rest.split(':').next().unwrap_or(rest))
}

/// The same as a JSON v1 List, the shape `kubectl get -o json` writes and the
/// API server serves: what the agent will read in a cluster, without YAML's
/// parsing cost.
fn manifest_json(svcs: &[&Svc]) -> String {
    let items: Vec<Value> = svcs.iter().flat_map(|s| objects(s)).collect();
    json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

/// The Service and its EndpointSlice (named NAME-x), typed, as the manifests
/// hold them and the API server is loaded with.
pub fn objects(s: &Svc) -> [Value; 2] {
    let (ns, name) = ns_name(s);
    [
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": s.vip.to_string(),
                     "ports": [{"name": "http", "port": s.port, "protocol": "TCP", "targetPort": "http"}]},
        }),
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-x"), "namespace": ns,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": POD_PORT, "protocol": "TCP"}],
            "endpoints": slice_endpoints(s),
        }),
    ]
}

/// An EndpointSlice's `endpoints` for the Service's backends, all ready.
pub fn slice_endpoints(s: &Svc) -> Value {
    s.endpoints
        .iter()
        .map(|(ip, _)| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}}))
        .collect()
}

pub fn rss_mib(pid: u32) -> Option<f64> {
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

/// Memory the kernel charges for every map of the table (lash_common::maps).
pub fn map_memory_mib(root: &Path) -> Option<f64> {
    let mut total = 0u64;
    for m in lash_common::maps::ALL {
        let out = run_ok(
            Command::new("bpftool")
                .args(["-j", "map", "show", "pinned"])
                .arg(root.join(m.name)),
        )
        .ok()?;
        let v: Value = serde_json::from_str(&out).ok()?;
        total += v["bytes_memlock"].as_u64().unwrap_or(0);
    }
    Some(total as f64 / 1024.0 / 1024.0)
}

/// A number field of the agent's status.json.
pub fn status_ms(sb: &Sandbox, field: &str) -> Option<f64> {
    std::fs::read_to_string(sb.state_dir().join("status.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v[field].as_f64())
}
