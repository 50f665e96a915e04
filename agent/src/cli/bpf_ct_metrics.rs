//! `agent bpf ct list global` and `agent bpf metrics list`, in the shapes
//! `cilium bpf ct list global` and `cilium bpf metrics list` print.

use std::fmt::Write as _;

use crate::maps::{ct::CtRow, metrics::MetricsRow};

pub fn ct_table(rows: &[CtRow]) -> String {
    let mut out = String::new();
    for r in rows {
        let flags = if r.flag_names.is_empty() {
            String::new()
        } else {
            format!(" [ {} ]", r.flag_names.join(" "))
        };
        let backend = if r.dir == "SERVICE" {
            format!(" BackendID={}", r.backend_id)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{} {} {} -> {} expires={} RxPackets={} RxBytes={} Flags=0x{:04x}{flags} RevNAT={}{backend} SourceSecurityID={} IfIndex={}",
            r.proto, r.dir, r.src, r.dst, r.expires, r.rx_packets, r.rx_bytes, r.flags, r.rev_nat,
            r.source_security_id, r.ifindex
        );
    }
    out
}

pub fn metrics_table(rows: &[MetricsRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<36} {:<11} {:<9} {:<9} {:<6} FILE",
        "REASON", "DIRECTION", "PACKETS", "BYTES", "LINE"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<36} {:<11} {:<9} {:<9} {:<6} {}",
            r.reason_name, r.direction, r.packets, r.bytes, r.line, r.file
        );
    }
    out
}
