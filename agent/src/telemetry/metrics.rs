//! The agent's Prometheus metrics. Most are kept as events happen (syncs,
//! network-programming latency); the maps' fill and the datapath's packet
//! counters are read from the pinned maps at each scrape, so they are never
//! staler than the scrape itself.

use std::{path::PathBuf, sync::Mutex};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

use crate::maps;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncLabels {
    /// "full" (everything compared) or "incremental" (a few frontends).
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabels {
    map: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PacketLabels {
    reason: &'static str,
    direction: &'static str,
}

pub struct Metrics {
    registry: Registry,
    bpf_root: PathBuf,
    /// From the change's trigger time (an EndpointSlice's
    /// `endpoints.kubernetes.io/last-change-trigger-time`) to the maps
    /// holding it: kube-proxy's network-programming latency.
    programming: Histogram,
    /// The map owner's own time per sync (map writes).
    sync_duration: Family<SyncLabels, Histogram>,
    syncs: Family<SyncLabels, Counter>,
    sync_errors: Counter,
    api_up: Gauge,
    map_entries: Family<MapLabels, Gauge>,
    map_capacity: Family<MapLabels, Gauge>,
    packets: Family<PacketLabels, Counter>,
    bytes: Family<PacketLabels, Counter>,
    /// Scrapes run one at a time: each brings the map-derived counters up
    /// to the maps' totals.
    scrape: Mutex<()>,
}

impl Metrics {
    pub fn new(bpf_root: PathBuf) -> Self {
        let mut registry = Registry::with_prefix("lash");
        // 1 ms to about 65 s: a change reaches the maps in milliseconds here,
        // where kube-proxy's own buckets start at a quarter of a second.
        let programming = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register(
            "network_programming_duration_seconds",
            "From an EndpointSlice's last-change-trigger-time to the datapath holding the change",
            programming.clone(),
        );
        let sync_duration = Family::<SyncLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        registry.register(
            "sync_duration_seconds",
            "The map owner's time to write one sync into the maps",
            sync_duration.clone(),
        );
        let syncs = Family::<SyncLabels, Counter>::default();
        registry.register("syncs", "Syncs written to the maps", syncs.clone());
        let sync_errors = Counter::default();
        registry.register(
            "sync_errors",
            "Frontends a sync could not program (full map, bad input)",
            sync_errors.clone(),
        );
        let api_up = Gauge::default();
        registry.register(
            "kubernetes_api_up",
            "1 while the Kubernetes API answers (0 without one)",
            api_up.clone(),
        );
        let map_entries = Family::<MapLabels, Gauge>::default();
        registry.register(
            "map_entries",
            "Entries in each pinned map",
            map_entries.clone(),
        );
        let map_capacity = Family::<MapLabels, Gauge>::default();
        registry.register(
            "map_capacity",
            "Capacity of each pinned map",
            map_capacity.clone(),
        );
        let packets = Family::<PacketLabels, Counter>::default();
        registry.register(
            "datapath_packets",
            "Packets the tc programs forwarded (reason FORWARDED) or dropped, by reason and direction",
            packets.clone(),
        );
        let bytes = Family::<PacketLabels, Counter>::default();
        registry.register(
            "datapath_bytes",
            "Bytes the tc programs forwarded or dropped, by reason and direction",
            bytes.clone(),
        );
        Metrics {
            registry,
            bpf_root,
            programming,
            sync_duration,
            syncs,
            sync_errors,
            api_up,
            map_entries,
            map_capacity,
            packets,
            bytes,
            scrape: Mutex::new(()),
        }
    }

    pub fn observe_sync(&self, full: bool, seconds: f64, errors: usize) {
        let l = SyncLabels {
            kind: if full { "full" } else { "incremental" },
        };
        self.sync_duration.get_or_create(&l).observe(seconds);
        self.syncs.get_or_create(&l).inc();
        self.sync_errors.inc_by(errors as u64);
    }

    pub fn observe_programming(&self, seconds: f64) {
        self.programming.observe(seconds);
    }

    pub fn set_api_up(&self, up: bool) {
        self.api_up.set(i64::from(up));
    }

    /// The text exposition, with the map-derived values read now.
    pub fn scrape(&self) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        for def in lash_common::maps::ALL {
            if let Some(f) = maps::fill(&self.bpf_root.join(def.name)) {
                let l = MapLabels { map: def.name };
                self.map_entries.get_or_create(&l).set(f.entries as i64);
                self.map_capacity
                    .get_or_create(&l)
                    .set(i64::from(f.max_entries));
            }
        }
        // No metrics map yet (no pod network): no packet counters.
        if let Ok(rows) = maps::metrics::rows(&self.bpf_root) {
            // Rows may split a reason by source line: sum them first.
            let mut totals = std::collections::BTreeMap::new();
            for r in rows {
                let t: &mut (u64, u64) = totals.entry((r.reason_name, r.direction)).or_default();
                t.0 += r.packets;
                t.1 += r.bytes;
            }
            for ((reason, direction), (packets, bytes)) in totals {
                let l = PacketLabels { reason, direction };
                let p = self.packets.get_or_create(&l);
                p.inc_by(packets.saturating_sub(p.get()));
                let b = self.bytes.get_or_create(&l);
                b.inc_by(bytes.saturating_sub(b.get()));
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
