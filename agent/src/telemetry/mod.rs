//! What the agent tells monitoring: `/healthz` with kube-proxy's meaning
//! (`health.rs`), Prometheus metrics (`metrics.rs`), and the two small HTTP
//! listeners that serve them (`http.rs`).

pub mod health;
pub mod http;
pub mod metrics;

use std::{path::PathBuf, time::Duration};

/// Health and metrics, shared by the sources, the map owner's publisher and
/// the listeners.
pub struct Telemetry {
    pub health: health::Health,
    pub metrics: metrics::Metrics,
}

impl Telemetry {
    /// `health_timeout`: how long a change may wait for the maps before
    /// `/healthz` fails (kube-proxy: twice its sync period).
    pub fn new(bpf_root: PathBuf, health_timeout: Duration) -> Self {
        Telemetry {
            health: health::Health::new(health_timeout),
            metrics: metrics::Metrics::new(bpf_root),
        }
    }
}
