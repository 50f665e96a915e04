//! Running commands in an arm's node namespace and measuring through the
//! client probe (tests/src/bin/lash-probe.rs), pinned to the client CPU.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context as _};
use lash_tests::sandbox::{bin, Sandbox};
use serde_json::Value;

use super::services::{TARGET_PORT, TARGET_VIP};
use super::CLIENT_CPU;

pub fn ns_exec(sb: &Sandbox, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &sb.node_ns]).args(args);
    c
}

pub fn run_ok(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` and returns its wall time in ms.
pub fn timed(cmd: &mut Command) -> anyhow::Result<f64> {
    let start = Instant::now();
    run_ok(cmd)?;
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

pub fn probe_json(sb: &Sandbox, args: &[&str]) -> anyhow::Result<Value> {
    let mut c = Command::new(bin("lash-probe"));
    c.arg("--cgroup").arg(&sb.cgroup);
    c.args(["--netns", &sb.node_ns, "--cpu", &CLIENT_CPU.to_string()]);
    c.args(args);
    let out = run_ok(&mut c)?;
    Ok(serde_json::from_str(out.trim())?)
}

/// Applies a change with `apply` and returns how long until a connect to the
/// target reaches one of the new backends (ms), polled from the client.
pub fn time_change(
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
