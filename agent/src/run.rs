//! `agent run`: take the lock, load and attach the programs, start the map
//! owner and the sources, and wait for a signal.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tracing::{debug, info, warn};

use crate::{
    datapath,
    endpoints::Manager,
    ipam::{Ipam, Ipv4Cidr},
    k8s::{api_watch, node_context::NodeContext},
    lb::{Programmed, Reconciler},
    loader::{self, MapSizes},
    lock,
    maps::{
        ct::{self, CtMaps},
        LbMaps,
    },
    mesh::{Mesh, MeshConfig, RoutingMode},
    node::{self, vxlan},
    sources::{
        cni_api::{self, CniApi},
        kube_api::KubeSource,
        manifest_dir::ManifestSource,
        nodes_out,
    },
    state::{self, AgentStatus},
    telemetry::{http, Telemetry},
};

/// How long calls in flight on the CNI API may take to finish at shutdown.
const API_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How often the node's own addresses are re-read for the host entries.
const HOST_ADDRESS_POLL: Duration = Duration::from_secs(2);

/// Where Services and EndpointSlices come from.
pub enum SourceChoice {
    Manifests(PathBuf),
    /// The API server of this kubeconfig, or in-cluster without one.
    Kubernetes {
        kubeconfig: Option<PathBuf>,
    },
}

pub struct RunConfig {
    pub source: SourceChoice,
    pub bpf_root: PathBuf,
    pub cgroup: PathBuf,
    pub state_dir: PathBuf,
    pub sizes: MapSizes,
    /// The node's pod range; `None` runs without IPAM.
    pub pod_cidr: Option<Ipv4Cidr>,
    /// Full resync period, a safety net behind the directory watch.
    pub resync: Duration,
    /// Period of the conntrack expiry sweep.
    pub ct_gc_interval: Duration,
    /// This node's name: its Node object (for the pod range) and the
    /// `nodeName` of the endpoints local to traffic policies Local.
    pub node_name: String,
    /// This node's zone (topology hints; empty: none used).
    pub zone: String,
    /// `--nodeport-addresses`: the node addresses node ports open on (empty:
    /// all of them, 127.0.0.1 included).
    pub nodeport_cidrs: Vec<node::node_ports::NodePortCidr>,
    /// Where `/healthz` and `/metrics` are served.
    pub healthz_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// How pods reach other nodes.
    pub routing_mode: RoutingMode,
}

/// The node's way to other nodes, set up before the programs load (they
/// are loaded knowing the tunnel device): in tunnel routing lash_vxlan,
/// made with the MTU of the underlay as far as it is known yet (the mesh
/// follows this node's address once its Node is read); in native routing
/// IPv4 forwarding on, and no lash_vxlan.
async fn prepare_routing(mode: RoutingMode) -> anyhow::Result<(Option<u32>, Option<u32>)> {
    match mode {
        RoutingMode::Tunnel => {
            let mtu = vxlan::overlay_mtu(vxlan::underlay_mtu(None).await?);
            let ifindex = vxlan::ensure_vxlan(mtu).await?;
            info!(
                device = vxlan::VXLAN_DEVICE,
                ifindex, mtu, "tunnel device ready"
            );
            Ok((Some(ifindex), Some(mtu)))
        }
        RoutingMode::Native => {
            if vxlan::remove_vxlan().await? {
                info!(
                    device = vxlan::VXLAN_DEVICE,
                    "removed: native routing needs no tunnel"
                );
            }
            if vxlan::enable_forwarding()? {
                info!("IPv4 forwarding turned on for native routing");
            }
            Ok((None, None))
        }
    }
}

/// Puts this agent's overlay programs on lash_vxlan (into the links an
/// earlier agent pinned, else new ones), or in native routing removes any
/// pinned there before.
fn attach_overlay(
    ebpf: &mut aya::Ebpf,
    bpf_root: &std::path::Path,
    tunnel: bool,
) -> anyhow::Result<()> {
    use crate::endpoints::links::{self, OVERLAY};
    let dev = vxlan::VXLAN_DEVICE;
    if !tunnel {
        links::detach_set(bpf_root, OVERLAY, dev)?;
        return Ok(());
    }
    links::load(ebpf, OVERLAY)?;
    // A link whose device was replaced cannot take a program: start anew.
    if let Err(e) = links::take_over_set(ebpf, bpf_root, OVERLAY, dev) {
        debug!("taking over {dev}'s links: {e}; attaching anew");
        links::attach_set(ebpf, bpf_root, OVERLAY, dev)?;
    }
    info!(device = dev, "overlay programs attached");
    Ok(())
}

/// The endpoint manager, with the node's side of the pod network in place:
/// `lash_host` holding the gateway (when there is a pod range), the node's
/// own addresses marked as the host's, and the endpoints an earlier agent
/// left taken over.
async fn start_endpoints(
    ebpf: aya::Ebpf,
    cfg: &RunConfig,
    pod_cidr: Option<Ipv4Cidr>,
) -> anyhow::Result<(Arc<Mutex<Manager>>, Vec<Ipv4Addr>)> {
    let mut manager = Manager::open(ebpf, &cfg.bpf_root, &cfg.state_dir, pod_cidr)?;
    if let Some(cidr) = pod_cidr {
        node::ensure_host_device(cidr.gateway()).await?;
        info!(device = node::HOST_DEVICE, gateway = %cidr.gateway(), "host device ready");
    }
    let addresses = node::ipv4_addresses().await?;
    let restored = tokio::task::spawn_blocking(move || {
        manager.set_host_addresses(&addresses)?;
        let restored = manager.restore()?;
        Ok::<_, anyhow::Error>((manager, restored, addresses))
    })
    .await??;
    let (manager, restored, addresses) = restored;
    info!(
        taken_over = restored.taken_over,
        gone = restored.gone.len(),
        swept = restored.swept,
        "endpoints restored"
    );
    Ok((Arc::new(Mutex::new(manager)), addresses))
}

/// Every `interval`, re-reads the node's own IPv4 addresses and, when they
/// changed, makes them the host entries of `lxc` and `ipcache`: an address
/// moved by the operator (or DHCP) stops being "host" to the programs and
/// the new one starts, without a restart. Polling rather than address
/// events keeps one code path for start and change. Until the next poll an
/// old address is still the host's to the programs (its identity, and no
/// pod may claim it): harmless for two seconds, as nothing else holds it.
async fn follow_host_addresses(
    endpoints: Arc<Mutex<Manager>>,
    mut known: Vec<Ipv4Addr>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = match node::ipv4_addresses().await {
            Ok(a) => a,
            Err(e) => {
                warn!("reading the node's addresses: {e}");
                continue;
            }
        };
        if now == known {
            continue;
        }
        let (endpoints, addresses) = (endpoints.clone(), now.clone());
        let r = tokio::task::spawn_blocking(move || {
            endpoints
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .set_host_addresses(&addresses)
        })
        .await;
        match r {
            Ok(Ok(())) => {
                info!(was = ?known, now = ?now, "the node's addresses changed; host entries follow");
                known = now;
            }
            Ok(Err(e)) => warn!("updating host entries: {e}"),
            Err(e) => warn!("host address task: {e}"),
        }
    }
}

/// Every `interval`, deletes the conntrack entries whose lifetime has ended
/// (the agent's only write to those maps; the programs own the rest).
async fn sweep_conntrack(bpf_root: PathBuf, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let root = bpf_root.clone();
        let r = tokio::task::spawn_blocking(move || {
            let mut ct = CtMaps::open(&root)?;
            Ok::<_, anyhow::Error>(ct.sweep(ct::monotonic_now())?)
        })
        .await;
        match r {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => debug!(removed = n, "expired conntrack entries removed"),
            Ok(Err(e)) => warn!("conntrack sweep: {e}"),
            Err(e) => warn!("conntrack sweep task: {e}"),
        }
    }
}

/// Serves `/healthz` or `/metrics` on `addr`. An address still held (by the
/// agent this one takes over from, during a hand-over) is retried every
/// second rather than failing the agent: the datapath matters more.
async fn keep_serving(addr: SocketAddr, what: &'static str, telemetry: Arc<Telemetry>) {
    let mut warned = false;
    let listener = loop {
        match http::bind(addr, what).await {
            Ok(l) => break l,
            Err(e) => {
                if !warned {
                    warn!("{e}; retrying every second");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    match what {
        "healthz" => http::serve_health(listener, telemetry).await,
        _ => http::serve_metrics(listener, telemetry).await,
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The pod range when none is given: this node's Node's `spec.podCIDRs`,
/// else (the API not answering) the range the saved pool was made for, else
/// none (no pod network until a restart finds one).
async fn node_pod_cidr(
    client: &kube::Client,
    node: &str,
    state_dir: &std::path::Path,
) -> Option<Ipv4Cidr> {
    let stored = Ipam::stored_cidr(state_dir);
    for attempt in 1..=3 {
        match api_watch::this_node(client, node).await {
            Ok(Some(info)) => {
                let Some(text) = info.ipv4_pod_cidr() else {
                    warn!(
                        node,
                        "the Node has no IPv4 pod range (spec.podCIDRs): no pod network"
                    );
                    return None;
                };
                match text.parse::<Ipv4Cidr>() {
                    Ok(c) => {
                        info!(node, cidr = %c, "pod range from the Node");
                        return Some(c);
                    }
                    Err(e) => {
                        warn!(
                            node,
                            "the Node's pod range {text:?} is not usable: {e}; no pod network"
                        );
                        return None;
                    }
                }
            }
            Ok(None) => {
                warn!(
                    node,
                    "no Node of this name (--node-name): no pod range from the API"
                );
                break;
            }
            Err(e) if attempt < 3 => {
                debug!(node, "reading the Node: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => warn!(node, "reading the Node: {e}"),
        }
    }
    if let Some(c) = stored {
        info!(cidr = %c, "pod range from the saved pool");
    }
    stored
}

pub async fn run(cfg: RunConfig) -> anyhow::Result<()> {
    loader::prepare_bpf_root(&cfg.bpf_root)?;
    let _lock = lock::acquire(&cfg.bpf_root, &cfg.state_dir)?;
    let kube = match &cfg.source {
        SourceChoice::Kubernetes { kubeconfig } => {
            Some(api_watch::client(kubeconfig.as_deref()).await?)
        }
        SourceChoice::Manifests(_) => None,
    };
    let pod_cidr = match (cfg.pod_cidr, &kube) {
        (Some(c), _) => Some(c),
        (None, Some((client, _))) => node_pod_cidr(client, &cfg.node_name, &cfg.state_dir).await,
        (None, None) => None,
    };
    // Before anything is loaded: a state file for another range stops the
    // agent with the datapath untouched.
    let ipam = match pod_cidr {
        Some(cidr) => {
            let ipam = Ipam::open(&cfg.state_dir, cidr)?;
            let u = ipam.usage();
            info!(cidr = %u.cidr, gateway = %u.gateway, used = u.used, total = u.total, "IPAM ready");
            Some(Arc::new(ipam))
        }
        None => None,
    };
    // Check the pinned maps (layout, size) before any program goes live on them.
    loader::check_pinned_maps(&cfg.bpf_root, cfg.sizes)?;
    let (tunnel_ifindex, tunnel_mtu) = prepare_routing(cfg.routing_mode).await?;
    let settings = loader::NodeSettings {
        routing: match cfg.routing_mode {
            RoutingMode::Tunnel => lash_common::tunnel::ROUTING_TUNNEL,
            RoutingMode::Native => lash_common::tunnel::ROUTING_NATIVE,
        },
        tunnel_ifindex: tunnel_ifindex.unwrap_or(0),
        pod_cidr_bits: pod_cidr.map_or(24, |c| u32::from(c.prefix())),
    };
    let mut ebpf = loader::load(&cfg.bpf_root, cfg.sizes, settings)?;
    let maps = LbMaps::open_pinned(&cfg.bpf_root)?;
    loader::attach_sock_programs(&mut ebpf, &cfg.bpf_root, &cfg.cgroup)?;
    info!(bpf_root = %cfg.bpf_root.display(), cgroup = %cfg.cgroup.display(), "socket programs attached");
    attach_overlay(&mut ebpf, &cfg.bpf_root, tunnel_ifindex.is_some())?;
    let (endpoints, host_addresses) = start_endpoints(ebpf, &cfg, pod_cidr).await?;

    let programmed = Programmed::from_entries(
        maps.services_entries()?,
        maps.backend_entries()?,
        maps.rev_nat_entries()?.into_iter().map(|(index, _)| index),
        maps.affinity_match_entries()?,
    );
    info!(
        services = programmed.services.len(),
        backends = programmed.backends.len(),
        leftover_rev_nat = programmed.orphan_rev_nats.len(),
        leftover_affinity_match = programmed.orphan_matches.len(),
        "recovered programmed state from the pinned maps"
    );

    // One status, written by the map owner after every command and by the CNI
    // API after every change of IPAM use.
    let status = Arc::new(Mutex::new(AgentStatus {
        pid: std::process::id(),
        bpf_root: cfg.bpf_root.clone(),
        cgroup: cfg.cgroup.clone(),
        manifests: match &cfg.source {
            SourceChoice::Manifests(dir) => dir.clone(),
            SourceChoice::Kubernetes { .. } => PathBuf::new(),
        },
        ipam: ipam.as_ref().map(|i| i.usage()),
        endpoints: Some(
            endpoints
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .summary(),
        ),
        ..Default::default()
    }));
    // kube-proxy's health timeout: twice its sync period.
    let telemetry = Arc::new(Telemetry::new(cfg.bpf_root.clone(), cfg.resync * 2));
    let listeners = [
        tokio::spawn(keep_serving(cfg.healthz_addr, "healthz", telemetry.clone())),
        tokio::spawn(keep_serving(cfg.metrics_addr, "metrics", telemetry.clone())),
    ];
    let publish = {
        // IPAM use is the API's to update: the map owner never waits on the
        // IPAM lock (held while its file is synced).
        let (status, state_dir) = (status.clone(), cfg.state_dir.clone());
        let telemetry = telemetry.clone();
        let mut syncs_seen = 0;
        move |snap: &datapath::Snapshot| {
            if snap.syncs != syncs_seen {
                syncs_seen = snap.syncs;
                telemetry.metrics.observe_sync(
                    snap.last_full,
                    snap.last_sync_ms / 1e3,
                    snap.last_sync_errors,
                );
            }
            let mut status = status.lock().unwrap_or_else(|e| e.into_inner());
            status.syncs = snap.syncs;
            status.last_sync_unix = unix_now();
            status.last_sync_ms = snap.last_sync_ms;
            status.last_event_ms = snap.last_event_ms;
            status.services = snap.services;
            status.backends = snap.backends;
            status.errors = snap.errors.clone();
            status.warnings = snap.warnings.clone();
            status.other_proxy = snap.other_proxy.clone();
            status.kubernetes = snap.api.clone();
            status.map_writes = snap.map_writes;
            if let Err(e) = state::write_status(&state_dir, &status) {
                warn!("writing status to {}: {e}", state_dir.display());
            }
        }
    };
    let api_changed = {
        let (status, ipam, state_dir) = (status.clone(), ipam.clone(), cfg.state_dir.clone());
        let endpoints = endpoints.clone();
        move || {
            let summary = endpoints
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .summary();
            let mut status = status.lock().unwrap_or_else(|e| e.into_inner());
            status.ipam = ipam.as_ref().map(|i| i.usage());
            status.endpoints = Some(summary);
            // Before the first sync there is no status file to update yet.
            if status.syncs > 0 {
                if let Err(e) = state::write_status(&state_dir, &status) {
                    warn!("writing status to {}: {e}", state_dir.display());
                }
            }
        }
    };
    let (tx, owner) = datapath::spawn(Reconciler::new(programmed), maps, publish);

    let (api_stop_tx, api_stop_rx) = tokio::sync::mpsc::channel(1);
    let mut api = CniApi::new(ipam.clone(), endpoints.clone(), Arc::new(api_changed));
    if tunnel_ifindex.is_some() {
        api = api.with_pod_mtu_of(vxlan::VXLAN_DEVICE);
    }
    let socket = lash_api::socket_path(&cfg.state_dir);
    let api_task = tokio::spawn(async move { cni_api::serve(api, &socket, api_stop_rx).await });

    let ct_gc = tokio::spawn(sweep_conntrack(cfg.bpf_root.clone(), cfg.ct_gc_interval));

    // The addresses start_endpoints read after the host device was up, so
    // its gateway address is one of them. Node ports and the mesh take them
    // once: an address added later needs a restart to open node ports (only
    // the host entries follow, below).
    let node_ctx = NodeContext {
        name: cfg.node_name.clone(),
        zone: cfg.zone.clone(),
        node_port_addresses: node::node_ports::node_port_addresses(
            &host_addresses,
            &cfg.nodeport_cidrs,
        ),
    };
    info!(
        node = %node_ctx.name,
        zone = %node_ctx.zone,
        node_port_addresses = ?node_ctx.node_port_addresses,
        "translating Services for this node"
    );

    // The other nodes: the sources publish, the mesh programs.
    let (nodes_tx, nodes_rx) = nodes_out::channel();
    let mesh = Mesh::open(MeshConfig {
        mode: cfg.routing_mode,
        node_name: cfg.node_name.clone(),
        own_cidr: pod_cidr.map(|c| (c.network(), c.prefix())),
        own_gateway: pod_cidr.map(|c| c.gateway()),
        own_addresses: host_addresses.clone(),
        tunnel_ifindex,
        bpf_root: cfg.bpf_root.clone(),
        state_dir: cfg.state_dir.clone(),
    })?;
    let mesh_task = tokio::spawn(mesh.run(nodes_rx, tunnel_mtu));
    let host_follow = tokio::spawn(follow_host_addresses(
        endpoints.clone(),
        host_addresses,
        HOST_ADDRESS_POLL,
    ));

    let (stop_tx, stop_rx) = tokio::sync::mpsc::channel(1);
    let source = match &cfg.source {
        SourceChoice::Manifests(dir) => {
            let s = ManifestSource::new(dir.clone(), telemetry.clone())
                .with_node(node_ctx)
                .with_nodes_out(nodes_tx);
            let resync = cfg.resync;
            tokio::spawn(async move {
                s.run(tx, resync, stop_rx)
                    .await
                    .map_err(anyhow::Error::from)
            })
        }
        SourceChoice::Kubernetes { .. } => {
            let (client, server) = kube.expect("made above for this source");
            let s = KubeSource::new(client, server, cfg.node_name.clone(), telemetry.clone())
                .with_node(node_ctx)
                .with_nodes_out(nodes_tx);
            let resync = cfg.resync;
            tokio::spawn(async move {
                s.run(tx, resync, stop_rx)
                    .await
                    .map_err(anyhow::Error::from)
            })
        }
    };
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut source = std::pin::pin!(source);
    let mut api_task = std::pin::pin!(api_task);
    let result = tokio::select! {
        r = &mut source => r?,
        r = &mut api_task => r?.map_err(anyhow::Error::from),
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = sigterm.recv() => Ok(()),
    };
    // The API stops taking connections at once, but its graceful shutdown
    // waits for every open one to close, and an idle client may never close
    // its own: give the calls in flight a moment, then end it.
    let _ = api_stop_tx.send(()).await;
    if !api_task.is_finished()
        && tokio::time::timeout(API_SHUTDOWN_GRACE, &mut api_task)
            .await
            .is_err()
    {
        // Dropping the serving future unlinks the socket.
        api_task.abort();
        let _ = (&mut api_task).await;
    }
    // Stop the source; the owner ends once its last sender is gone, after
    // finishing the command in hand (never in the middle of a write order).
    let _ = stop_tx.send(()).await;
    if !source.is_finished() {
        let _ = source.await;
    }
    ct_gc.abort();
    host_follow.abort();
    mesh_task.abort();
    for l in listeners {
        l.abort();
    }
    tokio::task::spawn_blocking(move || owner.join()).await.ok();
    info!("exiting; the datapath stays programmed and attached (`agent uninstall` removes it)");
    result
}
