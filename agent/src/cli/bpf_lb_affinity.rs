//! `agent bpf lb affinity list`: lb4_affinity, the clients of services with
//! ClientIP session affinity and the backend each got last.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use serde::Serialize;

use crate::maps::{
    ct::monotonic_now,
    lb4_affinity::{self, Client},
    lb4_backends, lb4_reverse_nat, LbMaps, MapsError,
};

#[derive(Debug, Serialize)]
pub struct Row {
    /// "netns:COOKIE" (socket LB) or the client's address (per packet).
    pub client: String,
    pub rev_nat: u16,
    /// The service frontend the rev-NAT index names ("" if gone).
    pub service: String,
    pub backend_id: u32,
    pub backend: String,
    /// Seconds since the client's last new connection to the service.
    pub idle_seconds: u64,
}

pub fn rows(root: &Path, maps: &LbMaps) -> Result<Vec<Row>, MapsError> {
    let frontends: BTreeMap<u16, String> = maps
        .rev_nat_entries()?
        .into_iter()
        .map(|(k, v)| {
            let (ip, port) = lb4_reverse_nat::addr_of(&v);
            (k, format!("{ip}:{port}"))
        })
        .collect();
    let backends: BTreeMap<u32, String> = maps
        .backend_entries()?
        .into_iter()
        .filter_map(|(id, b)| Some((id, lb4_backends::addr_of(&b)?.to_string())))
        .collect();
    let now = u64::from(monotonic_now());
    let mut out: Vec<Row> = lb4_affinity::entries(root)?
        .into_iter()
        .map(|a| Row {
            client: match a.client {
                Client::Netns(c) => format!("netns:{c}"),
                Client::Address(ip) => ip.to_string(),
            },
            rev_nat: a.rev_nat,
            service: frontends.get(&a.rev_nat).cloned().unwrap_or_default(),
            backend_id: a.backend_id,
            backend: backends.get(&a.backend_id).cloned().unwrap_or_default(),
            idle_seconds: now.saturating_sub(a.last_used),
        })
        .collect();
    out.sort_by(|a, b| (a.rev_nat, &a.client).cmp(&(b.rev_nat, &b.client)));
    Ok(out)
}

pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24}{:<30}{:<30}IDLE",
        "CLIENT", "SERVICE (REVNAT_ID)", "BACKEND (ID)"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<24}{:<30}{:<30}{}s",
            r.client,
            format!("{} ({})", r.service, r.rev_nat),
            format!("{} ({})", r.backend, r.backend_id),
            r.idle_seconds
        );
    }
    out
}
