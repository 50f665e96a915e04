//! Idempotent toolchain install (the recipe of shared/toolchain.md): Debian's
//! rustc 1.96 ships a prebuilt `core` for bpfel-unknown-none, and bpf-linker is
//! built against the same LLVM major (22).

use std::{path::Path, process::Command};

use anyhow::{bail, Context as _};

const APT_PACKAGES: &[&str] = &[
    "rustc-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "libpolly-22-dev",
    "clang-22",
    "lld-22",
    "libzstd-dev",
    "zlib1g-dev",
    "bpftool",
    "iproute2",
    "iptables",
    "nftables",
    // A real CNI client for the pod tests and the demo (toolchain.md, 7).
    "podman",
    "runc",
    "busybox-static",
    // The pod networking benches (bench/pod_net.rs, bench/cni_latency.rs):
    // throughput, latency, and the reference CNI plugins in /usr/lib/cni.
    "iperf3",
    "qperf",
    "containernetworking-plugins",
    // The multi-node tests (tests/tests/multi_node.rs): ping with
    // don't-fragment across nodes, captures on the cluster's underlay.
    "iputils-ping",
    "tcpdump",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

/// KMock, from PyPI, under the stand-in Kubernetes API server the integration
/// tests run (tests/kmock/): no kube-apiserver binary is packaged here.
const KMOCK_VERSION: &str = "0.8";

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn bpf_linker_ok() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
        .unwrap_or(false)
}

fn kmock_ok() -> bool {
    Command::new("python3")
        .args(["-c", "import kmock"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

pub fn setup() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if !missing.is_empty() {
        eprintln!("xtask setup: installing {}", missing.join(" "));
        run(Command::new("apt-get").arg("update").arg("-qq"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    if !Path::new("/usr/lib/rustlib/bpfel-unknown-none").exists() {
        bail!("/usr/lib/rustlib/bpfel-unknown-none is missing after installing libstd-rust-web-dev-bpf");
    }
    if !bpf_linker_ok() {
        eprintln!("xtask setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22");
        let path = format!(
            "/usr/lib/llvm-22/bin:{}",
            std::env::var("PATH").unwrap_or_default()
        );
        run(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
                .args(["--no-default-features", "--features", "llvm-22"])
                .env("PATH", path)
                .env("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22"),
        )?;
        if !bpf_linker_ok() {
            bail!(
                "bpf-linker {BPF_LINKER_VERSION} is still not on PATH (is ~/.cargo/bin on PATH?)"
            );
        }
    }
    if !kmock_ok() {
        eprintln!("xtask setup: installing kmock {KMOCK_VERSION} for python3");
        let pkg = format!("kmock=={KMOCK_VERSION}");
        // Debian's own python3 marks itself externally managed and refuses
        // a plain `pip install`; a python3 from elsewhere (pyenv) takes it.
        if run(Command::new("python3").args(["-m", "pip", "install", "-q", &pkg])).is_err() {
            run(Command::new("python3").args([
                "-m",
                "pip",
                "install",
                "-q",
                "--break-system-packages",
                &pkg,
            ]))?;
        }
        if !kmock_ok() {
            bail!("python3 still cannot import kmock after installing it");
        }
    }
    Ok(())
}
