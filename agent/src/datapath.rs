//! The one owner of the maps. A single thread holds the map handles and the
//! [`Reconciler`]; sources (the manifest directory today, the Kubernetes API
//! and the CNI next) send it [`Command`]s over a channel and never touch a map
//! themselves. One writer means one write order, and a full sync of 50k
//! Services (seconds) runs on its own thread instead of stalling the runtime.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{error, info};

use lash_common::{Lb4Backend, Lb4Key, Lb4ReverseNat, Lb4Service};

use crate::{
    lb::{Reconciler, Report},
    maps::{Capacity, LbMapWriter, MapWriteError},
    model::{Change, DesiredService},
};

/// What a source knows beyond the services themselves: its input errors
/// (files that do not parse, invalid fields, clashes) and warnings (fields
/// that are not served), current as of this command.
#[derive(Clone, Debug, Default)]
pub struct SourceState {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// Services labelled for another proxy: left alone, listed apart.
    pub other_proxy: Vec<String>,
    /// The Kubernetes API's health, when that is the source.
    pub api: Option<crate::state::ApiHealth>,
}

pub enum Command {
    /// Bring a few frontends to a new state.
    Apply {
        changes: Vec<Change>,
        source: SourceState,
        /// When the source learned of the change (the file event), so the
        /// status can say how long it took to reach the datapath.
        since: Instant,
        done: Option<oneshot::Sender<Outcome>>,
    },
    /// Bring the maps to exactly this desired set.
    Resync {
        desired: Vec<DesiredService>,
        source: SourceState,
        since: Instant,
        done: Option<oneshot::Sender<Outcome>>,
    },
    /// No change to the maps: only the source's own state moved (its API
    /// went down or came back, a list is still under way).
    Status { source: SourceState },
}

/// What the owner tells a source after a command.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Programming errors of this command (a full resync is due if any).
    pub errors: Vec<String>,
}

/// The picture after each command, for whoever reports status.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub syncs: u64,
    /// The owner's own time for the last command: map writes.
    pub last_sync_ms: f64,
    /// From the source seeing the change to the maps holding it: reading and
    /// translating the change, the queue, and the writes.
    pub last_event_ms: f64,
    pub services: usize,
    pub backends: usize,
    /// Source errors plus the programming errors still standing.
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub other_proxy: Vec<String>,
    /// The Kubernetes API's health, when that is the source.
    pub api: Option<crate::state::ApiHealth>,
    /// Whether the last sync was a full one, and how many frontends it
    /// could not program.
    pub last_full: bool,
    pub last_sync_errors: usize,
    /// Map writes (puts and deletes) since the agent started.
    pub map_writes: u64,
}

/// The owner thread's handle: send commands here.
pub type Sender = mpsc::Sender<Command>;

/// The maps, with every write counted: what `map_writes` in the status
/// reports, so a restart that changed nothing can be seen to write nothing.
struct Counted<M> {
    maps: M,
    writes: u64,
}

impl<M: LbMapWriter> Counted<M> {
    fn count<T>(&mut self, r: Result<T, MapWriteError>) -> Result<T, MapWriteError> {
        self.writes += 1;
        r
    }
}

impl<M: LbMapWriter> LbMapWriter for Counted<M> {
    fn put_service(&mut self, k: &Lb4Key, v: &Lb4Service) -> Result<(), MapWriteError> {
        let r = self.maps.put_service(k, v);
        self.count(r)
    }
    fn del_service(&mut self, k: &Lb4Key) -> Result<(), MapWriteError> {
        let r = self.maps.del_service(k);
        self.count(r)
    }
    fn put_backend(&mut self, id: u32, v: &Lb4Backend) -> Result<(), MapWriteError> {
        let r = self.maps.put_backend(id, v);
        self.count(r)
    }
    fn del_backend(&mut self, id: u32) -> Result<(), MapWriteError> {
        let r = self.maps.del_backend(id);
        self.count(r)
    }
    fn put_rev_nat(&mut self, i: u16, v: &Lb4ReverseNat) -> Result<(), MapWriteError> {
        let r = self.maps.put_rev_nat(i, v);
        self.count(r)
    }
    fn del_rev_nat(&mut self, i: u16) -> Result<(), MapWriteError> {
        let r = self.maps.del_rev_nat(i);
        self.count(r)
    }
    fn put_affinity_match(&mut self, id: u32, i: u16) -> Result<(), MapWriteError> {
        let r = self.maps.put_affinity_match(id, i);
        self.count(r)
    }
    fn del_affinity_match(&mut self, id: u32, i: u16) -> Result<(), MapWriteError> {
        let r = self.maps.del_affinity_match(id, i);
        self.count(r)
    }
    fn capacity(&self) -> Capacity {
        self.maps.capacity()
    }
}

/// Starts the owner thread over `maps`. `publish` is called after every
/// command with the new snapshot (the agent writes its status file there).
/// The thread ends when every sender is dropped.
pub fn spawn<M, P>(
    mut reconciler: Reconciler,
    maps: M,
    mut publish: P,
) -> (Sender, std::thread::JoinHandle<()>)
where
    M: LbMapWriter + Send + 'static,
    P: FnMut(&Snapshot) + Send + 'static,
{
    // Sources wait when the owner is behind instead of queueing without end.
    let (tx, mut rx) = mpsc::channel::<Command>(64);
    let handle = std::thread::Builder::new()
        .name("lash-datapath".into())
        .spawn(move || {
            let mut maps = Counted { maps, writes: 0 };
            let mut snap = Snapshot::default();
            // Errors of the last full reconcile stand until the next one; an
            // incremental apply adds its own.
            let mut standing: Vec<String> = Vec::new();
            while let Some(cmd) = rx.blocking_recv() {
                let started = Instant::now();
                let (full, report, source, since, done) = match cmd {
                    Command::Status { source } => {
                        // Not a sync: the maps and the sync counters stay.
                        let mut errors = source.errors;
                        errors.extend(standing.iter().cloned());
                        errors.sort();
                        errors.dedup();
                        snap.errors = errors;
                        snap.warnings = source.warnings;
                        snap.other_proxy = source.other_proxy;
                        snap.api = source.api;
                        publish(&snap);
                        continue;
                    }
                    Command::Apply {
                        changes,
                        source,
                        since,
                        done,
                    } => (
                        false,
                        reconciler.apply(&changes, &mut maps),
                        source,
                        since,
                        done,
                    ),
                    Command::Resync {
                        desired,
                        source,
                        since,
                        done,
                    } => {
                        let r = reconciler.reconcile(&desired, &mut maps);
                        drop(desired);
                        standing.clear();
                        // A full sync drops a lot at once; give the freed heap
                        // back so RSS shows what the agent keeps.
                        trim_heap();
                        (true, r, source, since, done)
                    }
                };
                let elapsed = started.elapsed();
                let since_event = since.elapsed();
                log_report(full, &report, elapsed);
                standing.extend(report.errors.iter().cloned());
                let mut errors = source.errors;
                errors.extend(standing.iter().cloned());
                errors.sort();
                errors.dedup();
                // Log an error when it appears, not on every sync it persists
                // through (the status keeps the full current list).
                for e in errors.iter().filter(|e| !snap.errors.contains(e)) {
                    error!("{e}");
                }
                snap.syncs += 1;
                snap.last_full = full;
                snap.map_writes = maps.writes;
                snap.last_sync_errors = report.errors.len();
                snap.last_sync_ms = elapsed.as_secs_f64() * 1e3;
                snap.last_event_ms = since_event.as_secs_f64() * 1e3;
                snap.services = reconciler.programmed().services.len();
                snap.backends = reconciler.programmed().backends.len();
                snap.errors = errors;
                snap.warnings = source.warnings;
                snap.other_proxy = source.other_proxy;
                snap.api = source.api;
                publish(&snap);
                if let Some(done) = done {
                    let _ = done.send(Outcome {
                        errors: report.errors,
                    });
                }
            }
        })
        .expect("spawning the datapath thread");
    (tx, handle)
}

fn log_report(full: bool, report: &Report, elapsed: Duration) {
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
}

fn trim_heap() {
    // SAFETY: malloc_trim only releases free memory.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(test)]
mod tests {
    use std::{
        net::Ipv4Addr,
        sync::{
            atomic::{AtomicU64, Ordering},
            Arc,
        },
    };

    use super::*;
    use crate::{
        lb::Programmed,
        maps::{fake::FakeMaps, Capacity, MapWriteError},
        model::{BackendState, L4Addr, Proto, ServiceKind},
    };
    use lash_common::{Lb4Backend, Lb4Key, Lb4ReverseNat, Lb4Service};

    /// The fake maps, each write slowed down like a loaded node's.
    struct SlowMaps(FakeMaps, Duration);

    impl LbMapWriter for SlowMaps {
        fn put_service(&mut self, k: &Lb4Key, v: &Lb4Service) -> Result<(), MapWriteError> {
            std::thread::sleep(self.1);
            self.0.put_service(k, v)
        }
        fn del_service(&mut self, k: &Lb4Key) -> Result<(), MapWriteError> {
            self.0.del_service(k)
        }
        fn put_backend(&mut self, id: u32, v: &Lb4Backend) -> Result<(), MapWriteError> {
            self.0.put_backend(id, v)
        }
        fn del_backend(&mut self, id: u32) -> Result<(), MapWriteError> {
            self.0.del_backend(id)
        }
        fn put_rev_nat(&mut self, i: u16, v: &Lb4ReverseNat) -> Result<(), MapWriteError> {
            self.0.put_rev_nat(i, v)
        }
        fn del_rev_nat(&mut self, i: u16) -> Result<(), MapWriteError> {
            self.0.del_rev_nat(i)
        }
        fn put_affinity_match(&mut self, id: u32, i: u16) -> Result<(), MapWriteError> {
            self.0.put_affinity_match(id, i)
        }
        fn del_affinity_match(&mut self, id: u32, i: u16) -> Result<(), MapWriteError> {
            self.0.del_affinity_match(id, i)
        }
        fn capacity(&self) -> Capacity {
            self.0.capacity()
        }
    }

    fn desired(n: u32) -> Vec<DesiredService> {
        (0..n)
            .map(|i| {
                DesiredService::plain(
                    format!("ns/svc-{i}:http"),
                    L4Addr {
                        ip: Ipv4Addr::from(0x0a60_0000 + i),
                        port: 80,
                        proto: Proto::Tcp,
                    },
                    ServiceKind::ClusterIP,
                    vec![(
                        L4Addr {
                            ip: Ipv4Addr::from(0x0af4_0000 + i),
                            port: 8080,
                            proto: Proto::Tcp,
                        },
                        BackendState::Active,
                    )],
                )
            })
            .collect()
    }

    /// A long full sync runs on the owner's thread: a timer task on the
    /// runtime keeps ticking meanwhile, and the sync still completes.
    #[test]
    fn long_full_sync_does_not_stall_the_runtime() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let maps = SlowMaps(
                FakeMaps::with_capacity(4096, 4096, 4096),
                Duration::from_millis(1),
            );
            let snaps = Arc::new(AtomicU64::new(0));
            let seen = snaps.clone();
            let (tx, handle) = spawn(Reconciler::new(Programmed::default()), maps, move |s| {
                seen.store(s.services as u64, Ordering::SeqCst)
            });
            let ticks = Arc::new(AtomicU64::new(0));
            let t = ticks.clone();
            let ticker = tokio::spawn(async move {
                let mut iv = tokio::time::interval(Duration::from_millis(10));
                loop {
                    iv.tick().await;
                    t.fetch_add(1, Ordering::SeqCst);
                }
            });
            let (done_tx, done_rx) = oneshot::channel();
            let started = Instant::now();
            tx.send(Command::Resync {
                desired: desired(600),
                source: SourceState::default(),
                since: Instant::now(),
                done: Some(done_tx),
            })
            .await
            .unwrap();
            // While the sync runs (600 services x 2 slow writes >= 1.2 s),
            // the runtime serves the ticker.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mid = ticks.load(Ordering::SeqCst);
            assert!(
                mid >= 25,
                "the runtime stalled during a full sync: {mid} ticks in 500 ms"
            );
            let outcome = done_rx.await.unwrap();
            assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
            assert!(started.elapsed() >= Duration::from_millis(1200));
            assert_eq!(snaps.load(Ordering::SeqCst), 600);
            ticker.abort();
            drop(tx);
            handle.join().unwrap();
        });
    }
}
