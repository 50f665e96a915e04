//! The `metrics` map: every packet the tc programs forward or drop is counted
//! by reason (0 = forwarded, else the drop code) and direction.

use aya_ebpf::bindings::BPF_NOEXIST;
use lash_common::metrics::{MetricsKey, MetricsValue};

use crate::maps::METRICS;

/// Adds one packet of `bytes` to {reason, dir}.
#[inline(always)]
pub fn count(reason: u8, dir: u8, bytes: u32) {
    let key = MetricsKey {
        reason,
        dir,
        line: 0,
        file: 0,
        reserved: [0; 3],
    };
    match METRICS.get_ptr_mut(&key) {
        // SAFETY: this CPU's copy of the value, valid while the map lives. A
        // run preempted by another on this CPU could lose an increment: the
        // counts are for operators, not for decisions.
        Some(v) => unsafe {
            (*v).count += 1;
            (*v).bytes += u64::from(bytes);
        },
        None => {
            let first = MetricsValue {
                count: 1,
                bytes: u64::from(bytes),
            };
            // A full map (1024 reason/direction pairs cannot fill it) or a
            // racing first insert only loses this one count.
            let _ = METRICS.insert(&key, &first, u64::from(BPF_NOEXIST));
        }
    }
}
