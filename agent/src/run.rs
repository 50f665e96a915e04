//! `agent run`: load and attach the programs, then keep the maps equal to what
//! the manifest directory says, on every change and on a slow timer.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use notify::Watcher as _;
use tracing::{error, info, warn};

use crate::{
    k8s::{manifests::ManifestDir, translate},
    lb::{
        reconcile::{Programmed, Reconciler},
        DesiredService,
    },
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

/// Standalone control plane: the manifest directory and the last good
/// translation of every Service in it.
struct Control {
    source: ManifestDir,
    /// "namespace/name" -> its frontends as last translated without error.
    last_good: BTreeMap<String, Vec<DesiredService>>,
}

impl Control {
    /// The desired services now, and the errors met getting them.
    fn desired(&mut self) -> (Vec<DesiredService>, Vec<String>) {
        let snap = match self.source.load() {
            Ok(s) => s,
            Err(e) => {
                // Keep everything as it is: an unreadable directory says nothing
                // about what should be served.
                let all = self.last_good.values().flatten().cloned().collect();
                return (all, vec![e.to_string()]);
            }
        };
        let mut errors = snap.errors;
        let mut now: BTreeMap<String, Vec<DesiredService>> = BTreeMap::new();
        for (t, file) in translate::translate(&snap.services, &snap.slices)
            .into_iter()
            .zip(&snap.service_files)
        {
            match t.result {
                Ok(v) => {
                    now.insert(t.service, v);
                }
                Err(e) => {
                    let kept = self.last_good.get(&t.service).cloned();
                    errors.push(format!(
                        "{}: Service {}: {e}; {}",
                        file.display(),
                        t.service,
                        if kept.is_some() {
                            "keeping its previous programming"
                        } else {
                            "not programmed"
                        }
                    ));
                    if let Some(k) = kept {
                        now.insert(t.service, k);
                    }
                }
            }
        }
        self.last_good = now;
        (self.last_good.values().flatten().cloned().collect(), errors)
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
        last_good: BTreeMap::new(),
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
    let mut sync = |status: &mut AgentStatus| {
        let started = Instant::now();
        let (desired, mut errors) = control.desired();
        let report = reconciler.reconcile(&desired, &mut maps);
        errors.extend(report.errors.iter().cloned());
        for e in &errors {
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
    sync(&mut status);
    info!(manifests = %cfg.manifests.display(), "watching for changes");

    let mut resync = tokio::time::interval(cfg.resync);
    resync.tick().await;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            Some(()) = rx.recv() => {
                // Editors write a file in several steps; let them finish, then
                // take every event so far as one change.
                tokio::time::sleep(Duration::from_millis(10)).await;
                while rx.try_recv().is_ok() {}
                sync(&mut status);
            }
            _ = resync.tick() => sync(&mut status),
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    info!("exiting; the datapath stays programmed and attached (`agent uninstall` removes it)");
    Ok(())
}
