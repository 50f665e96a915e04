//! The `metrics` map: packets and bytes the tc programs forwarded or dropped,
//! by reason and direction, one value per CPU (summed here).

use std::path::Path;

use aya::maps::{MapData, MapError, PerCpuHashMap};
use lash_common::{
    maps::METRICS,
    metrics::{
        reason_name, MetricsKey, MetricsValue, METRIC_EGRESS, METRIC_INGRESS, METRIC_SERVICE,
    },
};
use serde::Serialize;

use super::{
    pinned::{open_map, typed},
    MapsError,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MetricsRow {
    pub reason: u8,
    pub reason_name: &'static str,
    pub direction: &'static str,
    pub packets: u64,
    pub bytes: u64,
    pub line: u16,
    pub file: u8,
}

fn direction(d: u8) -> &'static str {
    match d {
        METRIC_INGRESS => "INGRESS",
        METRIC_EGRESS => "EGRESS",
        METRIC_SERVICE => "SERVICE",
        _ => "UNKNOWN",
    }
}

pub fn row(k: &MetricsKey, per_cpu: &[MetricsValue]) -> MetricsRow {
    MetricsRow {
        reason: k.reason,
        reason_name: reason_name(k.reason),
        direction: direction(k.dir),
        packets: per_cpu.iter().map(|v| v.count).sum(),
        bytes: per_cpu.iter().map(|v| v.bytes).sum(),
        line: k.line,
        file: k.file,
    }
}

/// Every counter, summed over CPUs, by reason then direction.
pub fn rows(bpf_root: &Path) -> Result<Vec<MetricsRow>, MapsError> {
    let (map, _) = open_map(bpf_root, &METRICS)?;
    let map: PerCpuHashMap<MapData, MetricsKey, MetricsValue> = typed(bpf_root, &METRICS, map)?;
    let mut out = Vec::new();
    for item in map.iter() {
        match item {
            Ok((k, values)) => out.push(row(&k, &values)),
            Err(MapError::KeyNotFound) => continue,
            Err(source) => {
                return Err(MapsError::Read {
                    name: METRICS.name,
                    source,
                })
            }
        }
    }
    out.sort_by_key(|r| (r.reason, r.direction, r.line));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use lash_common::metrics::DROP_INVALID_SIP;

    use super::*;

    #[test]
    fn counters_are_summed_over_cpus_and_named() {
        let k = MetricsKey {
            reason: DROP_INVALID_SIP,
            dir: METRIC_EGRESS,
            ..Default::default()
        };
        let r = row(
            &k,
            &[
                MetricsValue {
                    count: 2,
                    bytes: 120,
                },
                MetricsValue {
                    count: 1,
                    bytes: 60,
                },
            ],
        );
        assert_eq!(
            (r.reason_name, r.direction),
            ("Invalid source ip", "EGRESS")
        );
        assert_eq!((r.packets, r.bytes), (3, 180));
    }
}
