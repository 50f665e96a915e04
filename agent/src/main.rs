//! lash agent: the per-node daemon and its CLI.

mod cli;
mod datapath;
mod durable;
mod endpoints;
mod failpoint;
mod ipam;
mod k8s;
mod lb;
mod loader;
mod lock;
mod mac;
mod maps;
mod mesh;
mod model;
mod node;
mod run;
mod sources;
mod state;
mod telemetry;

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use cli::Output;

#[derive(Parser)]
#[command(
    name = "agent",
    version,
    about = "lash: eBPF service load balancing for Kubernetes nodes"
)]
struct Cli {
    /// bpffs directory holding the pinned maps and links.
    #[arg(
        long,
        global = true,
        default_value = "/sys/fs/bpf/lash",
        env = "LASH_BPF_ROOT"
    )]
    bpf_root: PathBuf,
    /// Where the running agent reports its status.
    #[arg(
        long,
        global = true,
        default_value = lash_api::DEFAULT_STATE_DIR,
        env = "LASH_STATE_DIR"
    )]
    state_dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent: attach the programs and keep the maps in sync.
    Run(RunArgs),
    /// Inspect BPF maps.
    Bpf {
        #[command(subcommand)]
        cmd: BpfCmd,
    },
    /// The node's pod endpoints.
    Endpoint {
        #[command(subcommand)]
        cmd: EndpointListCmd,
    },
    /// Services as the datapath sees them.
    Service {
        #[command(subcommand)]
        cmd: ServiceCmd,
    },
    /// The cluster's nodes as this agent routes to them.
    Node {
        #[command(subcommand)]
        cmd: NodeCmd,
    },
    /// Agent, programs and maps at a glance.
    Status {
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Detach the programs and remove the pinned maps and links.
    Uninstall {
        /// Even while an agent runs on this --bpf-root (it keeps running,
        /// with nothing attached, until stopped).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Directory of Service and EndpointSlice manifests (standalone mode).
    #[arg(long, required_unless_present_any = ["kubeconfig", "k8s"], conflicts_with_all = ["kubeconfig", "k8s"])]
    manifests: Option<PathBuf>,
    /// Watch Services and EndpointSlices on the API server this kubeconfig
    /// names, instead of a manifest directory.
    #[arg(long, conflicts_with = "k8s")]
    kubeconfig: Option<PathBuf>,
    /// Watch the Kubernetes API with the pod's service account (in-cluster;
    /// outside a pod, KUBECONFIG or ~/.kube/config).
    #[arg(long)]
    k8s: bool,
    /// cgroup v2 to attach the socket programs to.
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// Capacity of every map sized by it (lb4_services, lb4_backends and
    /// lb4_affinity_match; see `agent status`), in entries.
    #[arg(long, default_value_t = lash_common::maps::LB_MAP_MAX_DEFAULT)]
    lb_map_max: u32,
    /// Seconds between full resyncs behind the directory watch.
    #[arg(long, default_value_t = 30)]
    resync_seconds: u64,
    /// This node's pod range (IPv4, e.g. 10.244.0.0/24): the agent hands out
    /// pod addresses from it; its first address is the node's gateway.
    /// Without it the agent does no IPAM.
    #[arg(long)]
    pod_cidr: Option<ipam::Ipv4Cidr>,
    /// Seconds between sweeps of expired conntrack entries.
    #[arg(long, default_value_t = 30)]
    ct_gc_interval: u64,
    /// This node's name: the Node object that gives the pod range when
    /// --pod-cidr is not set (Kubernetes source), and the `nodeName` of
    /// EndpointSlice endpoints that are local to traffic policies Local.
    /// Default: $NODE_NAME, else the host name.
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// This node's zone (`topology.kubernetes.io/zone`), for Services that
    /// ask for topology (zone hints). Empty: hints are not used.
    #[arg(long, default_value = "")]
    zone: String,
    /// Open node ports only on the node addresses inside these CIDRs
    /// (comma-separated, kube-proxy's flag); 127.0.0.1 only if one holds it.
    /// Default: every node address and 127.0.0.1.
    #[arg(long, value_delimiter = ',')]
    nodeport_addresses: Vec<node::node_ports::NodePortCidr>,
    /// Where `/healthz` answers, with kube-proxy's meaning (its port; a
    /// DaemonSet whose probes come from elsewhere sets 0.0.0.0:10256).
    #[arg(long, default_value = "127.0.0.1:10256")]
    healthz_addr: std::net::SocketAddr,
    /// Where Prometheus metrics are served (`/metrics`).
    #[arg(long, default_value = "127.0.0.1:9962")]
    metrics_addr: std::net::SocketAddr,
    /// How pods reach other nodes: `tunnel` (VXLAN on UDP 8472) or `native`
    /// (kernel routes to each node's pod range via its address).
    #[arg(long, default_value = "tunnel")]
    routing_mode: mesh::RoutingMode,
}

#[derive(Subcommand)]
enum BpfCmd {
    Lb {
        #[command(subcommand)]
        cmd: LbCmd,
    },
    Endpoint {
        #[command(subcommand)]
        cmd: EndpointCmd,
    },
    Ipcache {
        #[command(subcommand)]
        cmd: IpcacheCmd,
    },
    Ct {
        #[command(subcommand)]
        cmd: CtCmd,
    },
    Metrics {
        #[command(subcommand)]
        cmd: MetricsCmd,
    },
    /// The tunnel map: remote pod ranges and the nodes carrying them.
    Tunnel {
        #[command(subcommand)]
        cmd: TunnelCmd,
    },
}

#[derive(Subcommand)]
enum TunnelCmd {
    List {
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    List {
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Subcommand)]
enum CtCmd {
    /// List connection tracking entries (TCP and the rest).
    List {
        /// The table to list; only the node-wide one exists.
        #[arg(value_parser = ["global"])]
        table: String,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Subcommand)]
enum MetricsCmd {
    /// List forwarded and dropped packets by reason and direction.
    List {
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Subcommand)]
enum EndpointListCmd {
    /// List endpoints: id, identity, address, lxc and whether its programs
    /// are attached (run it in the agent's network namespace).
    List {
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Subcommand)]
enum IpcacheCmd {
    /// List the ipcache: every prefix with its identity and tunnel endpoint.
    List {
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// The entry the datapath uses for IP (the kernel's longest-prefix match).
    Get {
        ip: std::net::Ipv4Addr,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Subcommand)]
enum EndpointCmd {
    /// List the lxc map: local pods (endpoint id, identity, lxc ifindex, MACs)
    /// and the node's own addresses.
    List {
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Subcommand)]
enum LbCmd {
    /// List lb4_services: every frontend and its backend slots.
    List {
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Session affinity (lb4_affinity).
    Affinity {
        #[command(subcommand)]
        cmd: AffinityCmd,
    },
}

#[derive(Subcommand)]
enum AffinityCmd {
    /// List each client of a ClientIP-affinity service and its backend.
    List {
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Subcommand)]
enum ServiceCmd {
    /// List services with their IDs and backends.
    List {
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
}

/// The cgroup v2 root: /sys/fs/cgroup/unified on hybrid hosts.
fn default_cgroup() -> PathBuf {
    let unified = PathBuf::from("/sys/fs/cgroup/unified");
    if unified.join("cgroup.procs").exists() {
        unified
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// The kernel's host name (what the kubelet names its Node by default).
fn host_name() -> String {
    // Lower case, as the kubelet names its Node from it.
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            let source = match args.manifests {
                Some(dir) => run::SourceChoice::Manifests(dir),
                None => run::SourceChoice::Kubernetes {
                    kubeconfig: args.kubeconfig,
                },
            };
            let cfg = run::RunConfig {
                source,
                bpf_root: cli.bpf_root,
                cgroup: args.cgroup.unwrap_or_else(default_cgroup),
                state_dir: cli.state_dir,
                sizes: loader::MapSizes {
                    lb_map_max: args.lb_map_max,
                },
                resync: Duration::from_secs(args.resync_seconds.max(1)),
                pod_cidr: args.pod_cidr,
                ct_gc_interval: Duration::from_secs(args.ct_gc_interval.max(1)),
                node_name: args.node_name.unwrap_or_else(host_name),
                zone: args.zone,
                nodeport_cidrs: args.nodeport_addresses,
                healthz_addr: args.healthz_addr,
                metrics_addr: args.metrics_addr,
                routing_mode: args.routing_mode,
            };
            // Multi-threaded: sources and the API keep answering while the
            // map owner's thread (datapath.rs) runs a long sync.
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(run::run(cfg))
        }
        Cmd::Bpf {
            cmd: BpfCmd::Lb {
                cmd: LbCmd::List { output },
            },
        } => {
            let maps = maps::LbMaps::open_pinned(&cli.bpf_root)?;
            let rows = cli::bpf_lb_list::rows(&maps)?;
            match output {
                Output::Table => print!("{}", cli::bpf_lb_list::table(&rows)),
                Output::Json => print_json(&rows)?,
            }
            Ok(())
        }
        Cmd::Bpf {
            cmd:
                BpfCmd::Lb {
                    cmd:
                        LbCmd::Affinity {
                            cmd: AffinityCmd::List { output },
                        },
                },
        } => {
            let maps = maps::LbMaps::open_pinned(&cli.bpf_root)?;
            let rows = cli::bpf_lb_affinity::rows(&cli.bpf_root, &maps)?;
            match output {
                Output::Table => print!("{}", cli::bpf_lb_affinity::table(&rows)),
                Output::Json => print_json(&rows)?,
            }
            Ok(())
        }
        Cmd::Bpf {
            cmd: BpfCmd::Endpoint {
                cmd: EndpointCmd::List { output },
            },
        } => {
            let entries = maps::lxc::entries(&cli.bpf_root)?;
            match output {
                Output::Table => print!("{}", cli::bpf_endpoint_list::table(&entries)),
                Output::Json => print_json(&entries)?,
            }
            Ok(())
        }
        Cmd::Bpf {
            cmd: BpfCmd::Ipcache { cmd },
        } => {
            let map = maps::ipcache::IpcacheMap::open(&cli.bpf_root)?;
            match cmd {
                IpcacheCmd::List { output } => {
                    let entries = map.entries()?;
                    match output {
                        Output::Table => print!("{}", cli::bpf_ipcache::table(&entries)),
                        Output::Json => print_json(&entries)?,
                    }
                }
                IpcacheCmd::Get { ip, output } => {
                    let l = cli::bpf_ipcache::lookup(ip, map.lookup(ip)?);
                    match output {
                        Output::Table => print!("{}", cli::bpf_ipcache::get_text(&l)),
                        Output::Json => print_json(&l)?,
                    }
                }
            }
            Ok(())
        }
        Cmd::Bpf {
            cmd: BpfCmd::Ct {
                cmd: CtCmd::List { table: _, output },
            },
        } => {
            let rows = maps::ct::CtMaps::open(&cli.bpf_root)?.rows()?;
            match output {
                Output::Table => print!("{}", cli::bpf_ct_metrics::ct_table(&rows)),
                Output::Json => print_json(&rows)?,
            }
            Ok(())
        }
        Cmd::Bpf {
            cmd: BpfCmd::Metrics {
                cmd: MetricsCmd::List { output },
            },
        } => {
            let rows = maps::metrics::rows(&cli.bpf_root)?;
            match output {
                Output::Table => print!("{}", cli::bpf_ct_metrics::metrics_table(&rows)),
                Output::Json => print_json(&rows)?,
            }
            Ok(())
        }
        Cmd::Bpf {
            cmd: BpfCmd::Tunnel {
                cmd: TunnelCmd::List { output },
            },
        } => {
            let entries = maps::tunnel::TunnelMap::open(&cli.bpf_root)?.entries()?;
            match output {
                Output::Table => print!("{}", cli::bpf_tunnel::table(&entries)),
                Output::Json => print_json(&entries)?,
            }
            Ok(())
        }
        Cmd::Node {
            cmd: NodeCmd::List { output },
        } => {
            let f = mesh::read_views(&cli.state_dir).with_context(|| {
                format!(
                    "reading {} (written by a running agent)",
                    mesh::views_path(&cli.state_dir).display()
                )
            })?;
            let programs = (f.routing == Some(mesh::RoutingMode::Tunnel))
                .then(|| endpoints::links::attached(node::vxlan::VXLAN_DEVICE).unwrap_or_default());
            match output {
                Output::Table => print!("{}", cli::node_list::table(&f, programs.as_deref())),
                Output::Json => print_json(&f.nodes)?,
            }
            Ok(())
        }
        Cmd::Endpoint {
            cmd: EndpointListCmd::List { output },
        } => {
            let rows = cli::endpoint_list::rows(endpoints::recorded(&cli.state_dir)?);
            match output {
                Output::Table => print!("{}", cli::endpoint_list::table(&rows)),
                Output::Json => print_json(&rows)?,
            }
            Ok(())
        }
        Cmd::Service {
            cmd: ServiceCmd::List { output },
        } => {
            let maps = maps::LbMaps::open_pinned(&cli.bpf_root)?;
            let svcs = cli::service_list::services(&maps)?;
            match output {
                Output::Table => print!("{}", cli::service_list::table(&svcs)),
                Output::Json => print_json(&svcs)?,
            }
            Ok(())
        }
        Cmd::Status { output } => {
            let s = cli::status::collect(&cli.bpf_root, &cli.state_dir);
            match output {
                Output::Table => print!("{}", cli::status::table(&s)),
                Output::Json => print_json(&s)?,
            }
            Ok(())
        }
        Cmd::Uninstall { force } => {
            loader::uninstall(&cli.bpf_root, &cli.state_dir, force)
                .with_context(|| format!("uninstalling {}", cli.bpf_root.display()))?;
            let (routes, device) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(mesh::remove_network())
                .context("removing the routes to other nodes and the tunnel device")?;
            if routes > 0 || device {
                eprintln!(
                    "removed {routes} route(s) to other nodes{}",
                    if device { " and lash_vxlan" } else { "" }
                );
            }
            Ok(())
        }
    }
}
