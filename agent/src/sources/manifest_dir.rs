//! The manifest directory as a source: watches the directory, turns each
//! change into frontend changes through the [`ServiceIndex`], and sends them to
//! the map owner; a full resync on a slow timer is the safety net behind the
//! watch, and one second after a change that could not be programmed.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use notify::Watcher as _;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tracing::info;

use crate::{
    datapath::{self, Command, Outcome, SourceState},
    k8s::{
        index::ServiceIndex, manifests::ManifestDir, node_context::NodeContext, nodes::NodeInfo,
    },
    model::Change,
    telemetry::Telemetry,
};

use super::nodes_out::{self, NodesTx};

#[derive(Debug, Error)]
#[error("watching the manifest directory {dir}: {source}")]
pub struct WatchError {
    dir: PathBuf,
    #[source]
    source: notify::Error,
}

pub struct ManifestSource {
    dir: PathBuf,
    source: ManifestDir,
    index: ServiceIndex,
    /// Errors of files that do not parse, from the last refresh.
    file_errors: Vec<String>,
    /// The Node objects of each file (a broken file keeps its last good ones).
    nodes: BTreeMap<PathBuf, Vec<NodeInfo>>,
    nodes_tx: Option<NodesTx>,
    telemetry: Arc<Telemetry>,
}

impl ManifestSource {
    pub fn new(dir: PathBuf, telemetry: Arc<Telemetry>) -> Self {
        ManifestSource {
            source: ManifestDir::new(&dir),
            dir,
            index: ServiceIndex::default(),
            file_errors: Vec::new(),
            nodes: BTreeMap::new(),
            nodes_tx: None,
            telemetry,
        }
    }

    /// Publishes the directory's Node objects on `tx` after every refresh.
    pub fn with_nodes_out(mut self, tx: NodesTx) -> Self {
        self.nodes_tx = Some(tx);
        self
    }

    /// Translates for `node` (its name, zone and node-port addresses).
    pub fn with_node(mut self, node: NodeContext) -> Self {
        self.index = ServiceIndex::new(node);
        self
    }

    /// Reads what changed on disk; returns the frontend changes it causes.
    fn refresh(&mut self) -> Vec<Change> {
        match self.source.refresh() {
            Ok(mut r) => {
                self.file_errors = r.errors;
                for c in &mut r.changed {
                    let nodes = std::mem::take(&mut c.new.nodes);
                    if nodes.is_empty() {
                        self.nodes.remove(&c.path);
                    } else {
                        self.nodes.insert(c.path.clone(), nodes);
                    }
                }
                if let Some(tx) = &self.nodes_tx {
                    let all = self.nodes.values().flatten().map(NodeInfo::to_model);
                    nodes_out::publish(tx, all.collect());
                }
                self.index.apply_files(r.changed)
            }
            Err(e) => {
                // Keep everything as it is: an unreadable directory says
                // nothing about what should be served.
                self.file_errors = vec![e.to_string()];
                Vec::new()
            }
        }
    }

    fn state(&self) -> SourceState {
        let mut errors = self.file_errors.clone();
        errors.extend(self.index.errors());
        SourceState {
            errors,
            warnings: self.index.warnings(),
            other_proxy: self.index.other_proxy(),
            api: None,
        }
    }

    async fn send(
        &self,
        tx: &datapath::Sender,
        full: bool,
        changes: Vec<Change>,
        since: Instant,
    ) -> Option<Outcome> {
        let (done, outcome) = oneshot::channel();
        let source = self.state();
        let cmd = if full {
            Command::Resync {
                desired: tokio::task::block_in_place(|| self.index.desired()),
                source,
                since,
                done: Some(done),
            }
        } else {
            Command::Apply {
                changes,
                source,
                since,
                done: Some(done),
            }
        };
        self.telemetry
            .health
            .queued(SystemTime::now() - since.elapsed());
        tx.send(cmd).await.ok()?;
        let o = outcome.await.ok()?;
        self.telemetry.health.updated(SystemTime::now(), full);
        Some(o)
    }

    /// A full sync: everything on disk, all of it sent.
    async fn full(&mut self, tx: &datapath::Sender) -> Option<Outcome> {
        let since = Instant::now();
        tokio::task::block_in_place(|| self.refresh());
        self.send(tx, true, Vec::new(), since).await
    }

    /// Runs until `stop` fires or the owner goes away. The first full sync is
    /// done (and programmed) before this returns the first time it yields.
    pub async fn run(
        mut self,
        tx: datapath::Sender,
        resync: Duration,
        mut stop: mpsc::Receiver<()>,
    ) -> Result<(), WatchError> {
        let (ev_tx, mut events) = mpsc::unbounded_channel::<()>();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            // Our own reads show up as access events; only changes matter.
            let changed = ev.is_ok_and(|e| {
                matches!(
                    e.kind,
                    notify::EventKind::Create(_)
                        | notify::EventKind::Modify(_)
                        | notify::EventKind::Remove(_)
                )
            });
            if changed {
                let _ = ev_tx.send(());
            }
        })
        .map_err(|source| WatchError {
            dir: self.dir.clone(),
            source,
        })?;
        watcher
            .watch(&self.dir, notify::RecursiveMode::NonRecursive)
            .map_err(|source| WatchError {
                dir: self.dir.clone(),
                source,
            })?;

        self.full(&tx).await;
        info!(manifests = %self.dir.display(), "watching for changes");

        let mut resync_timer = tokio::time::interval(resync);
        resync_timer.tick().await;
        let mut retry = tokio::time::interval(Duration::from_millis(500));
        // A failed incremental change is retried by a full sync soon. A later
        // change that goes through must not cancel that retry.
        let mut full_due: Option<Instant> = None;
        loop {
            tokio::select! {
                Some(()) = events.recv() => {
                    let since = Instant::now();
                    // A file written in several steps sends several events; let
                    // the writer finish, then take every event so far as one.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    while events.try_recv().is_ok() {}
                    let changes = tokio::task::block_in_place(|| self.refresh());
                    if let Some(o) = self.send(&tx, false, changes, since).await {
                        if !o.errors.is_empty() {
                            full_due.get_or_insert_with(|| Instant::now() + Duration::from_secs(1));
                        }
                    }
                }
                _ = resync_timer.tick() => {
                    self.full(&tx).await;
                    full_due = None;
                }
                _ = retry.tick(), if full_due.is_some_and(|t| Instant::now() >= t) => {
                    self.full(&tx).await;
                    full_due = None;
                }
                _ = stop.recv() => return Ok(()),
            }
        }
    }
}
