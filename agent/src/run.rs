//! `agent run`: load and attach the programs, then keep the maps equal to what
//! the manifest directory says, on every change and on a slow timer.

use std::{
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use notify::Watcher as _;
use tracing::{error, info, warn};

use crate::{
    k8s::{index::ServiceIndex, manifests::ManifestDir},
    lb::reconcile::{Change, Programmed, Reconciler},
    loader::{self, MapSizes},
    maps::LbMaps,
    state::{self, AgentStatus},
};

pub struct RunConfig {
    pub manifests: PathBuf,
    pub bpf_root: PathBuf,
    pub cgroup: PathBuf,
    pub state_dir: PathBuf,
    pub sizes: MapSizes,
    /// Full resync period, a safety net behind the directory watch.
    pub resync: Duration,
}

/// Standalone control plane: the manifest directory and its index.
struct Control {
    source: ManifestDir,
    index: ServiceIndex,
    /// Errors of files that do not parse, from the last refresh.
    file_errors: Vec<String>,
}

impl Control {
    /// Reads what changed on disk; returns the frontend changes it causes.
    fn refresh(&mut self) -> Vec<Change> {
        match self.source.refresh() {
            Ok(r) => {
                self.file_errors = r.errors;
                self.index.apply_files(r.changed)
            }
            Err(e) => {
                // Keep everything as it is: an unreadable directory says nothing
                // about what should be served.
                self.file_errors = vec![e.to_string()];
                Vec::new()
            }
        }
    }

    fn errors(&self) -> Vec<String> {
        let mut all = self.file_errors.clone();
        all.extend(self.index.errors());
        all
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub async fn run(cfg: RunConfig) -> anyhow::Result<()> {
    let mut ebpf = loader::load(&cfg.bpf_root, cfg.sizes)?;
    // Check the pinned maps (layout, size) before any program goes live on them.
    let mut maps = LbMaps::open_pinned(&cfg.bpf_root)?;
    loader::check_sizes(&cfg.bpf_root, cfg.sizes)?;
    loader::attach_sock_programs(&mut ebpf, &cfg.bpf_root, &cfg.cgroup)?;
    info!(bpf_root = %cfg.bpf_root.display(), cgroup = %cfg.cgroup.display(), "socket programs attached");

    let programmed = Programmed::from_entries(maps.services_entries()?, maps.backend_entries()?);
    info!(
        services = programmed.services.len(),
        backends = programmed.backends.len(),
        "recovered programmed state from the pinned maps"
    );
    let mut reconciler = Reconciler::new(programmed);
    let mut control = Control {
        source: ManifestDir::new(&cfg.manifests),
        index: ServiceIndex::default(),
        file_errors: Vec::new(),
    };

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
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
            let _ = tx.send(());
        }
    })
    .context("creating the manifest directory watcher")?;
    watcher
        .watch(&cfg.manifests, notify::RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", cfg.manifests.display()))?;

    let mut status = AgentStatus {
        pid: std::process::id(),
        bpf_root: cfg.bpf_root.clone(),
        cgroup: cfg.cgroup.clone(),
        manifests: cfg.manifests.clone(),
        ..Default::default()
    };
    // Errors of the last full reconcile stand until the next one; an
    // incremental apply adds its own.
    let mut reconcile_errors: Vec<String> = Vec::new();
    let mut full_due: Option<Instant> = None;
    let mut sync = |full: bool, status: &mut AgentStatus, full_due: &mut Option<Instant>| {
        let started = Instant::now();
        let changes = control.refresh();
        let report = if full {
            reconcile_errors.clear();
            let r = reconciler.reconcile(&control.index.desired(), &mut maps);
            // A full sync parses and drops a lot at once; give the freed heap
            // back to the system so RSS shows what the agent keeps.
            // SAFETY: malloc_trim only releases free memory.
            unsafe { libc::malloc_trim(0) };
            r
        } else if changes.is_empty() {
            Default::default()
        } else {
            reconciler.apply(&changes, &mut maps)
        };
        // A failed incremental change is retried by a full reconcile soon. A
        // later change that goes through must not cancel that retry.
        if full {
            *full_due = None;
        } else if !report.errors.is_empty() {
            full_due.get_or_insert_with(|| Instant::now() + Duration::from_secs(1));
        }
        reconcile_errors.extend(report.errors.iter().cloned());
        let mut errors: Vec<String> = control.errors();
        errors.extend(reconcile_errors.iter().cloned());
        errors.sort();
        errors.dedup();
        // Log an error when it appears, not on every sync it persists through
        // (the status keeps the full current list).
        for e in errors.iter().filter(|e| !status.errors.contains(e)) {
            error!("{e}");
        }
        let elapsed = started.elapsed();
        if report.services_written
            + report.services_removed
            + report.backends_added
            + report.backends_removed
            > 0
        {
            info!(
                full,
                written = report.services_written,
                removed = report.services_removed,
                backends_added = report.backends_added,
                backends_removed = report.backends_removed,
                ms = elapsed.as_secs_f64() * 1e3,
                "reconciled"
            );
        }
        status.syncs += 1;
        status.last_sync_unix = unix_now();
        status.last_sync_ms = elapsed.as_secs_f64() * 1e3;
        status.services = reconciler.programmed().services.len();
        status.backends = reconciler.programmed().backends.len();
        status.errors = errors;
        if let Err(e) = state::write_status(&cfg.state_dir, status) {
            warn!("writing status to {}: {e}", cfg.state_dir.display());
        }
    };
    sync(true, &mut status, &mut full_due);
    info!(manifests = %cfg.manifests.display(), "watching for changes");

    let mut resync = tokio::time::interval(cfg.resync);
    resync.tick().await;
    let mut retry = tokio::time::interval(Duration::from_millis(500));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            Some(()) = rx.recv() => {
                // A file written in several steps sends several events; let the
                // writer finish, then take every event so far as one change.
                tokio::time::sleep(Duration::from_millis(2)).await;
                while rx.try_recv().is_ok() {}
                sync(false, &mut status, &mut full_due);
            }
            _ = resync.tick() => sync(true, &mut status, &mut full_due),
            _ = retry.tick(), if full_due.is_some_and(|t| Instant::now() >= t) => {
                sync(true, &mut status, &mut full_due);
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    info!("exiting; the datapath stays programmed and attached (`agent uninstall` removes it)");
    Ok(())
}
