//! The Kubernetes API as a source: the watches' events go through the same
//! [`ServiceIndex`] as manifest files, and the frontend changes they cause go
//! to the map owner.
//!
//! What keeps the datapath whole while the API misbehaves:
//! - nothing is sent before every watched kind has been listed in full once,
//!   and the first thing sent is a full reconcile of that picture (so a
//!   restarted agent writes only what differs from the pinned maps);
//! - while a kind is being relisted (after a 410 or a reconnect), changes are
//!   held and sent as one command when the list is whole, so no Service is
//!   ever missing in between;
//! - an API that cannot be reached changes nothing: the maps stay as they
//!   are, and the status says since when the API has been down.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::{FutureExt as _, StreamExt as _};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::{
    datapath::{self, Command, Outcome, SourceState},
    k8s::{
        api_picture::{ApiPicture, Kind},
        api_watch::{self, ApiEvent},
        index::ServiceIndex,
        node_context::NodeContext,
        nodes::NodeIndex,
    },
    model::{Change, L4Addr},
    state::ApiHealth,
    telemetry::Telemetry,
};

use super::nodes_out::{self, NodesTx};

/// How often an unreachable API is asked whether it is back.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Events taken in one go before the changes are sent: a burst (a list, a
/// busy moment) becomes one command instead of one per object.
const BATCH: usize = 1024;

#[derive(Debug, Error)]
#[error("the Kubernetes watches ended")]
pub struct WatchEnded;

pub struct KubeSource {
    client: kube::Client,
    index: ServiceIndex,
    picture: ApiPicture,
    nodes: NodeIndex,
    /// Frontend changes not sent yet, the last per frontend.
    pending: BTreeMap<L4Addr, Change>,
    /// When the oldest of `pending` was learned.
    pending_since: Option<Instant>,
    /// The first full reconcile has been sent.
    full_sent: bool,
    health: ApiHealth,
    nodes_tx: Option<NodesTx>,
    telemetry: Arc<Telemetry>,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn frontend(c: &Change) -> L4Addr {
    match c {
        Change::Upsert(d) => d.frontend,
        Change::Remove(fe) => *fe,
    }
}

impl KubeSource {
    pub fn new(
        client: kube::Client,
        server: String,
        node_name: String,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        KubeSource {
            client,
            index: ServiceIndex::default(),
            picture: ApiPicture::default(),
            nodes: NodeIndex::default(),
            pending: BTreeMap::new(),
            pending_since: None,
            full_sent: false,
            health: ApiHealth {
                server,
                node_name,
                ..Default::default()
            },
            nodes_tx: None,
            telemetry,
        }
    }

    /// Publishes the watched Nodes on `tx` once listed, and on every change.
    pub fn with_nodes_out(mut self, tx: NodesTx) -> Self {
        self.nodes_tx = Some(tx);
        self
    }

    /// Translates for `node` (its name, zone and node-port addresses).
    pub fn with_node(mut self, node: NodeContext) -> Self {
        self.index = ServiceIndex::new(node);
        self
    }

    fn state(&self) -> SourceState {
        let mut errors = self.index.errors();
        if let (Some(since), Some(e)) = (self.health.down_since_unix, &self.health.last_error) {
            errors.push(format!(
                "the Kubernetes API at {} cannot be reached (for {:.0} s): {e}; the datapath keeps its last programming",
                self.health.server,
                unix_now() - since
            ));
        }
        SourceState {
            errors,
            warnings: self.index.warnings(),
            other_proxy: self.index.other_proxy(),
            api: Some(self.health.clone()),
        }
    }

    /// Takes in a batch of events (what the watches had ready at once: a
    /// page of a list, a busy moment). The objects' changes go through the
    /// index together, so a Service and its slices listed in one page are
    /// translated once. Returns whether the API's health changed.
    fn take(&mut self, events: Vec<ApiEvent>) -> bool {
        let was = self.health.clone();
        let mut files = Vec::new();
        for ev in events {
            if ev.proves_reachable() {
                self.health.down_since_unix = None;
            }
            if ev.is_list_done() {
                self.health.lists += 1;
            }
            match ev {
                ApiEvent::Error(resource, e) => {
                    if self.health.down_since_unix.is_none() {
                        warn!(resource, "Kubernetes watch failed: {e}");
                    }
                    self.health.down_since_unix.get_or_insert_with(unix_now);
                    self.health.last_error = Some(format!("watching {resource}: {e}"));
                }
                ApiEvent::Expired(resource) => {
                    info!(resource, "watch history expired (410); listing again");
                }
                ApiEvent::Node(e) => self.nodes.event(e),
                ev => files.extend(self.picture.take(ev)),
            }
        }
        if !files.is_empty() {
            let changes = self.index.apply_files(files);
            if !changes.is_empty() && self.pending_since.is_none() {
                self.pending_since = Some(Instant::now());
                self.telemetry.health.queued(SystemTime::now());
            }
            for c in changes {
                self.pending.insert(frontend(&c), c);
            }
        }
        self.telemetry
            .metrics
            .set_api_up(self.health.down_since_unix.is_none());
        self.health.synced = self.synced();
        self.health.services = self.picture.count(Kind::Service);
        self.health.endpoint_slices = self.picture.count(Kind::Slice);
        self.health.nodes = self.nodes.len();
        let me = self.nodes.get(&self.health.node_name);
        self.health.node_pod_cidr = me.and_then(|n| n.ipv4_pod_cidr().map(str::to_string));
        self.health.node_ip = me.and_then(|n| n.internal_ip.map(|ip| ip.to_string()));
        // A relist's nodes are published when the list is whole: the mesh
        // removes what a published list lacks.
        if let Some(tx) = &self.nodes_tx {
            if self.nodes.listed() && !self.nodes.relisting() {
                nodes_out::publish(tx, self.nodes.all());
            }
        }
        self.health != was
    }

    /// Every watched kind has been listed in full once.
    fn synced(&self) -> bool {
        self.picture.synced() && self.nodes.listed()
    }

    /// A list is under way: changes wait for it to be whole.
    fn relisting(&self) -> bool {
        self.picture.relisting() || self.nodes.relisting()
    }

    /// Sends a sync and waits for the owner's outcome; then the changes are
    /// in the maps: health and programming latency take note.
    async fn send(
        &mut self,
        tx: &datapath::Sender,
        cmd: Command,
        done: oneshot::Receiver<Outcome>,
    ) -> Option<Outcome> {
        let full = matches!(cmd, Command::Resync { .. });
        let triggers = self.picture.take_triggers();
        tx.send(cmd).await.ok()?;
        let outcome = done.await.ok()?;
        let now = SystemTime::now();
        self.telemetry.health.updated(now, full);
        for t in triggers {
            // A trigger stamped by a clock ahead of ours counts as 0.
            let secs = now.duration_since(t).unwrap_or_default().as_secs_f64();
            self.telemetry.metrics.observe_programming(secs);
        }
        Some(outcome)
    }

    /// Sends what is due: the first full reconcile once every kind is listed,
    /// then the pending changes whenever no list is under way. Returns the
    /// owner's outcome of what was sent, if anything was.
    async fn flush(&mut self, tx: &datapath::Sender, health_moved: bool) -> Option<Outcome> {
        if !self.synced() || (self.full_sent && self.relisting()) {
            if health_moved {
                let _ = tx
                    .send(Command::Status {
                        source: self.state(),
                    })
                    .await;
            }
            return None;
        }
        if !self.full_sent {
            return self.full(tx).await;
        }
        if self.pending.is_empty() {
            if health_moved {
                let _ = tx
                    .send(Command::Status {
                        source: self.state(),
                    })
                    .await;
            }
            return None;
        }
        let changes: Vec<Change> = std::mem::take(&mut self.pending).into_values().collect();
        let since = self.pending_since.take().unwrap_or_else(Instant::now);
        let (done, outcome) = oneshot::channel();
        let cmd = Command::Apply {
            changes,
            source: self.state(),
            since,
            done: Some(done),
        };
        self.send(tx, cmd, outcome).await
    }

    /// A full reconcile of everything known (only once every kind is listed).
    async fn full(&mut self, tx: &datapath::Sender) -> Option<Outcome> {
        let since = self.pending_since.take().unwrap_or_else(Instant::now);
        self.pending.clear();
        let (done, outcome) = oneshot::channel();
        let cmd = Command::Resync {
            desired: tokio::task::block_in_place(|| self.index.desired()),
            source: self.state(),
            since,
            done: Some(done),
        };
        if !self.full_sent {
            info!(
                services = self.health.services,
                endpoint_slices = self.health.endpoint_slices,
                "initial lists complete; programming the datapath"
            );
        }
        self.full_sent = true;
        self.send(tx, cmd, outcome).await
    }

    /// Runs until `stop` fires or the owner goes away.
    pub async fn run(
        mut self,
        tx: datapath::Sender,
        resync: Duration,
        mut stop: mpsc::Receiver<()>,
    ) -> Result<(), WatchEnded> {
        info!(server = %self.health.server, "watching the Kubernetes API");
        let events = api_watch::watch(self.client.clone());
        let mut events = std::pin::pin!(events);
        // Until the first lists complete, the status says so.
        let _ = tx
            .send(Command::Status {
                source: self.state(),
            })
            .await;
        let mut resync_timer = tokio::time::interval(resync);
        resync_timer.tick().await;
        let mut probe = tokio::time::interval(PROBE_INTERVAL);
        let mut retry = tokio::time::interval(Duration::from_millis(500));
        // A change the owner could not program is retried by a full sync soon.
        let mut full_due: Option<Instant> = None;
        loop {
            tokio::select! {
                ev = events.next() => {
                    let Some(ev) = ev else { return Err(WatchEnded) };
                    // Take what else is ready now, so a burst is one batch
                    // and one command.
                    let mut batch = vec![ev];
                    while batch.len() < BATCH {
                        match events.next().now_or_never() {
                            Some(Some(ev)) => batch.push(ev),
                            Some(None) => return Err(WatchEnded),
                            None => break,
                        }
                    }
                    let moved = tokio::task::block_in_place(|| self.take(batch));
                    if let Some(o) = self.flush(&tx, moved).await {
                        if !o.errors.is_empty() {
                            full_due.get_or_insert_with(|| Instant::now() + Duration::from_secs(1));
                        }
                    }
                }
                _ = probe.tick(), if self.health.down_since_unix.is_some() => {
                    // The watches may have nothing to say once they are back:
                    // ask the server directly whether it answers.
                    if api_watch::reachable(&self.client).await.is_ok() {
                        info!("the Kubernetes API answers again");
                        self.health.down_since_unix = None;
                        self.telemetry.metrics.set_api_up(true);
                        let _ = tx.send(Command::Status { source: self.state() }).await;
                    }
                }
                _ = resync_timer.tick(), if self.full_sent && !self.relisting() => {
                    self.full(&tx).await;
                    full_due = None;
                }
                _ = retry.tick(), if full_due.is_some_and(|t| Instant::now() >= t) && !self.relisting() => {
                    self.full(&tx).await;
                    full_due = None;
                }
                _ = stop.recv() => return Ok(()),
            }
        }
    }
}
