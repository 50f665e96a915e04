//! The other nodes: **the one owner of what this node programs to reach
//! them**: their entries in `ipcache` (pod range with its tunnel endpoint,
//! node address as remote-node), `tunnel_map`, and the kernel routes to
//! their pod ranges (`routes.rs`). Sources publish the cluster's nodes
//! (`sources::nodes_out`); the mesh works out the peers (`plan.rs`), writes
//! what differs, and removes what no published list has any more.
//!
//! Architecture invariant: the ipcache has two writers over disjoint
//! prefixes. The endpoint manager writes this node's /32s (pods, the node's
//! own addresses); the mesh writes everything another node carries: any
//! prefix shorter than /32, any entry with a tunnel endpoint, any entry with
//! identity remote-node. Nothing is removed before a source has published a
//! whole list, so a restarted agent changes nothing until it knows the
//! cluster again.
//!
//! Writes go in the order the datapath needs: map entries before the route
//! that leads packets to them, the route removed before the entries.

pub mod plan;
pub mod probe;
pub mod routes;

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use lash_common::endpoint::IDENTITY_REMOTE_NODE;
use thiserror::Error;
use tracing::{info, warn};

use crate::{
    durable,
    endpoints::POD_IDENTITY,
    maps::{
        ipcache::{self, IpcacheEntry, IpcacheMap},
        tunnel::{TunnelEntry, TunnelMap},
        MapWriteError, MapsError,
    },
    model::ClusterNode,
    node::{
        netlink::{connect, NodeNetError},
        vxlan,
    },
    sources::nodes_out::NodesRx,
};
pub use plan::{NodeView, Peer, RoutingMode};
use routes::{PeerRoute, Via};

/// How often the mesh probes the other nodes and re-checks its programming
/// (a route someone deleted comes back).
const TICK: Duration = Duration::from_secs(5);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum MeshError {
    // Boxed: aya's errors are large, and every Result here carries them.
    #[error(transparent)]
    Maps(Box<MapsError>),
    #[error(transparent)]
    Write(#[from] MapWriteError),
    #[error(transparent)]
    Net(#[from] NodeNetError),
    #[error("writing {path}: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<MapsError> for MeshError {
    fn from(e: MapsError) -> Self {
        MeshError::Maps(Box::new(e))
    }
}

/// ipcache entries the mesh wants: (address, prefix bits) -> (identity,
/// tunnel endpoint).
type IpcacheWants = BTreeMap<(Ipv4Addr, u32), (u32, Option<Ipv4Addr>)>;

pub struct MeshConfig {
    pub mode: RoutingMode,
    pub node_name: String,
    /// This node's pod range.
    pub own_cidr: Option<(Ipv4Addr, u8)>,
    /// The pods' gateway on lash_host: the source address of the node's own
    /// traffic into the tunnel.
    pub own_gateway: Option<Ipv4Addr>,
    /// This node's addresses (another node claiming one is refused).
    pub own_addresses: Vec<Ipv4Addr>,
    /// lash_vxlan (tunnel routing).
    pub tunnel_ifindex: Option<u32>,
    pub bpf_root: PathBuf,
    pub state_dir: PathBuf,
}

/// The file `agent node list` reads.
pub fn views_path(state_dir: &Path) -> PathBuf {
    state_dir.join("nodes.json")
}

/// What `agent node list` shows: the routing mode and every node.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct NodesFile {
    pub routing: Option<RoutingMode>,
    /// lash_vxlan's MTU (tunnel routing).
    pub tunnel_mtu: Option<u32>,
    pub nodes: Vec<NodeView>,
    /// The last programming error, if the last attempt failed.
    pub error: Option<String>,
}

pub fn read_views(state_dir: &Path) -> std::io::Result<NodesFile> {
    let text = std::fs::read_to_string(views_path(state_dir))?;
    serde_json::from_str(&text).map_err(std::io::Error::other)
}

/// Whether an ipcache entry is the mesh's (see the invariant above).
pub fn owns(e: &IpcacheEntry) -> bool {
    e.bits < 32 || e.tunnel_endpoint.is_some() || e.identity == IDENTITY_REMOTE_NODE
}

pub struct Mesh {
    cfg: MeshConfig,
    ipcache: IpcacheMap,
    tunnel: TunnelMap,
    /// The last published list (None: none yet).
    nodes: Option<Vec<ClusterNode>>,
    peers: Vec<(String, Peer)>,
    views: Vec<NodeView>,
    reachable: BTreeMap<String, bool>,
    tunnel_mtu: Option<u32>,
    error: Option<String>,
}

impl Mesh {
    pub fn open(cfg: MeshConfig) -> Result<Self, MeshError> {
        Ok(Mesh {
            ipcache: IpcacheMap::open(&cfg.bpf_root)?,
            tunnel: TunnelMap::open(&cfg.bpf_root)?,
            cfg,
            nodes: None,
            peers: Vec::new(),
            views: Vec::new(),
            reachable: BTreeMap::new(),
            tunnel_mtu: None,
            error: None,
        })
    }

    /// The ipcache entries, tunnel entries and routes the peers need.
    fn desired(&self) -> (IpcacheWants, Vec<TunnelEntry>, Vec<PeerRoute>) {
        let tunnel = self.cfg.mode == RoutingMode::Tunnel;
        let mut ip = BTreeMap::new();
        let mut tun = Vec::new();
        let mut rts = Vec::new();
        for (_, p) in &self.peers {
            ip.insert(
                (p.cidr.0, u32::from(p.cidr.1)),
                (POD_IDENTITY, Some(p.address)),
            );
            // In tunnel routing the node itself is reached through the
            // tunnel too, so no pod address crosses the underlay in clear.
            ip.insert(
                (p.address, 32),
                (IDENTITY_REMOTE_NODE, tunnel.then_some(p.address)),
            );
            tun.push(TunnelEntry {
                prefix: p.cidr.0,
                endpoint: p.address,
            });
            let via = match (self.cfg.mode, self.cfg.tunnel_ifindex, self.cfg.own_gateway) {
                (RoutingMode::Native, _, _) => Some(Via::Gateway(p.address)),
                (RoutingMode::Tunnel, Some(ifindex), Some(src)) => {
                    Some(Via::Device { ifindex, src })
                }
                // No pod range here: nothing of this node's to route back to.
                (RoutingMode::Tunnel, _, _) => None,
            };
            if let Some(via) = via {
                rts.push(PeerRoute { dst: p.cidr, via });
            }
        }
        (ip, tun, rts)
    }

    /// Makes maps and routes what the last published list asks, in order.
    async fn program(&mut self) -> Result<usize, MeshError> {
        let Some(nodes) = &self.nodes else {
            return Ok(0);
        };
        let (peers, views) = plan::plan(
            &self.cfg.node_name,
            self.cfg.own_cidr,
            &self.cfg.own_addresses,
            nodes,
        );
        self.peers = peers;
        self.views = views;
        self.follow_own_mtu().await;
        let (want_ip, want_tun, want_routes) = self.desired();
        let mut writes = 0;

        // Entries first: a route only ever leads to a known node.
        let have_ip: IpcacheWants = self
            .ipcache
            .entries()?
            .into_iter()
            .filter(owns)
            .map(|e| ((e.ip, e.bits), (e.identity, e.tunnel_endpoint)))
            .collect();
        for (&(ip, bits), &(identity, endpoint)) in &want_ip {
            if have_ip.get(&(ip, bits)) != Some(&(identity, endpoint)) {
                self.ipcache
                    .put(ipcache::encode_remote(ip, bits as u8, identity, endpoint))?;
                writes += 1;
            }
        }
        let have_tun = self.tunnel.entries()?;
        for e in &want_tun {
            if !have_tun.contains(e) {
                self.tunnel.put(e)?;
                writes += 1;
            }
        }

        let handle = connect()?;
        let have_routes = routes::list(&handle).await?;
        for r in &want_routes {
            if !have_routes.iter().any(|(h, _)| h == r) {
                routes::add(&handle, r).await?;
                writes += 1;
            }
        }
        for (h, msg) in have_routes {
            if !want_routes.contains(&h) && !want_routes.iter().any(|w| w.dst == h.dst) {
                routes::remove(&handle, msg).await?;
                writes += 1;
            }
        }

        // Then what no node has any more.
        for &(ip, bits) in have_ip.keys() {
            if !want_ip.contains_key(&(ip, bits)) {
                self.ipcache.remove_prefix(ip, bits)?;
                writes += 1;
            }
        }
        for e in have_tun {
            if !want_tun.iter().any(|w| w.prefix == e.prefix) {
                self.tunnel.remove(e.prefix)?;
                writes += 1;
            }
        }
        Ok(writes)
    }

    /// In tunnel routing, lash_vxlan's MTU follows the underlay device that
    /// holds this node's address, once the node's own object names it.
    async fn follow_own_mtu(&mut self) {
        if self.cfg.mode != RoutingMode::Tunnel {
            return;
        }
        let me = self.views.iter().find(|v| v.local).and_then(|v| v.address);
        let Some(me) = me else { return };
        match vxlan::underlay_mtu(Some(me)).await {
            Ok(underlay) => {
                let mtu = vxlan::overlay_mtu(underlay);
                if self.tunnel_mtu != Some(mtu) {
                    match vxlan::set_vxlan_mtu(mtu).await {
                        Ok(()) => {
                            info!(underlay, mtu, "tunnel MTU set from this node's address");
                            self.tunnel_mtu = Some(mtu);
                        }
                        Err(e) => warn!("setting the tunnel MTU: {e}"),
                    }
                }
            }
            Err(e) => warn!("reading the underlay MTU: {e}"),
        }
    }

    /// One echo per peer, all at once.
    async fn probe(&mut self) {
        let mut tasks = Vec::new();
        for (name, p) in &self.peers {
            let (name, addr) = (name.clone(), p.address);
            tasks.push(tokio::task::spawn_blocking(move || {
                (name, probe::ping(addr, PROBE_TIMEOUT).unwrap_or(false))
            }));
        }
        self.reachable.clear();
        for t in tasks {
            if let Ok((name, ok)) = t.await {
                self.reachable.insert(name, ok);
            }
        }
    }

    fn write_views(&self) -> Result<(), MeshError> {
        let mut nodes = self.views.clone();
        for v in &mut nodes {
            v.reachable = self.reachable.get(&v.name).copied();
        }
        let file = NodesFile {
            routing: Some(self.cfg.mode),
            tunnel_mtu: self.tunnel_mtu,
            nodes,
            error: self.error.clone(),
        };
        let path = views_path(&self.cfg.state_dir);
        let text = serde_json::to_vec_pretty(&file).unwrap_or_default();
        durable::replace(&path, &text).map_err(|source| MeshError::State { path, source })
    }

    async fn program_logged(&mut self) {
        match self.program().await {
            Ok(0) => self.error = None,
            Ok(writes) => {
                self.error = None;
                info!(
                    peers = self.peers.len(),
                    writes, "programmed the routes to the other nodes"
                );
            }
            Err(e) => {
                warn!("programming the other nodes: {e}; retrying in {TICK:?}");
                self.error = Some(e.to_string());
            }
        }
    }

    /// Runs until the sources' channel closes: programs each published list,
    /// and every tick re-checks the programming and probes the peers.
    pub async fn run(mut self, mut rx: NodesRx, initial_mtu: Option<u32>) {
        self.tunnel_mtu = initial_mtu;
        let _ = self.write_views();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let nodes = rx.borrow_and_update().clone();
                    if nodes.is_some() {
                        self.nodes = nodes;
                        self.program_logged().await;
                        if let Err(e) = self.write_views() {
                            warn!("{e}");
                        }
                    }
                }
                _ = tick.tick() => {
                    self.program_logged().await;
                    self.probe().await;
                    if let Err(e) = self.write_views() {
                        warn!("{e}");
                    }
                }
            }
        }
    }
}

/// What `agent uninstall` removes besides the pins: lash's routes to other
/// nodes and lash_vxlan, so the node is left with no path into a datapath
/// that is gone. Returns how many routes were removed and whether the
/// device was there.
pub async fn remove_network() -> Result<(usize, bool), NodeNetError> {
    let handle = connect()?;
    let ours = routes::list(&handle).await?;
    let n = ours.len();
    for (_, msg) in ours {
        routes::remove(&handle, msg).await?;
    }
    Ok((n, vxlan::remove_vxlan().await?))
}
