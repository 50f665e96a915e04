//! Project tasks: `cargo xtask setup | build | test | demo`.
//!
//! Every task first runs `setup`, which installs what the build needs on a
//! Debian 12 machine (as root) and does nothing when it is already there.

mod bench;
mod demo;
mod demo_nodes;
mod setup;

use std::process::Command;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the toolchain: Debian's rustc with the BPF core, LLVM 22,
    /// bpf-linker, bpftool, iproute2.
    Setup,
    /// Build the eBPF object and every binary.
    Build,
    /// Run every test: unit tests, then the root integration tests.
    Test,
    /// Standalone agent on a sandbox of 6 pods: shows the load spread.
    Demo {
        /// Keep the sandbox up until Ctrl-C, to look around.
        #[arg(long)]
        hold: bool,
        /// The agent watches a Kubernetes API (a stand-in server in the
        /// sandbox) instead of a manifest directory.
        #[arg(long, conflicts_with = "nodes")]
        k8s: bool,
        /// A simulated cluster of N nodes (tunnel routing): the way of a
        /// packet from a pod on one node to a pod on another.
        #[arg(long)]
        nodes: Option<usize>,
    },
    /// lash vs kube-proxy's iptables and nftables rules vs no translation,
    /// then pod networking (on a node and across nodes), CNI latency and
    /// from-container per packet.
    Bench {
        /// 0 and 1000 services, fewer samples: a smoke test under 3 minutes.
        #[arg(long)]
        quick: bool,
        /// Only these numbers of background services (comma-separated).
        #[arg(long, value_delimiter = ',')]
        sizes: Vec<u32>,
        /// Only these arms: baseline, iptables, nftables, lash (socket LB);
        /// pod-veth, pod-calico, pod-lash (pod to pod); xnode-flannel,
        /// xnode-routes, xnode-lash-tunnel, xnode-lash-native (pod to pod
        /// across two nodes); cni-bridge, cni-lash
        /// (CNI ADD/DEL); clusterip-iptables, clusterip-lash (packet-path
        /// ClusterIP); per-packet (from-container test runs); k8s-watch (the
        /// agent on the Kubernetes API: initial sync, event to datapath, RSS).
        #[arg(long, value_delimiter = ',')]
        arms: Vec<String>,
    },
}

pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .status()
        .with_context(|| format!("running cargo {args:?}"))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn bin_dir(profile: &str) -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join(profile)
}

fn build() -> anyhow::Result<()> {
    setup::setup()?;
    cargo(&["build", "--workspace", "--bins"])
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::setup(),
        Cmd::Build => build(),
        Cmd::Test => {
            build()?;
            cargo(&["test", "--workspace", "--exclude", "lash-tests"])?;
            // The integration tests build sandboxes of namespaces and load
            // programs; one at a time keeps them clear of each other on 2 cores.
            cargo(&["test", "-p", "lash-tests", "--", "--test-threads=1"])
        }
        Cmd::Demo { hold, k8s, nodes } => {
            build()?;
            match nodes {
                Some(n) => demo_nodes::run(n, hold),
                None => demo::run(hold, k8s),
            }
        }
        Cmd::Bench { quick, sizes, arms } => {
            setup::setup()?;
            // Release binaries: the agent's speed is part of what is measured.
            cargo(&["build", "--workspace", "--bins", "--release"])?;
            std::env::set_var("LASH_BIN_DIR", bin_dir("release"));
            bench::run(quick, sizes, arms)
        }
    }
}
