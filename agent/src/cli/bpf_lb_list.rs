//! `agent bpf lb list`: lb4_services as Cilium's `cilium bpf lb list` shows it,
//! one frontend then its slots.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use crate::{
    maps::{lb4_backends, lb4_services, LbMaps, MapsError},
    model::L4Addr,
};

#[derive(Debug, Serialize)]
pub struct Row {
    pub service: String,
    pub slot: u16,
    pub rev_nat: u16,
    /// The backend of a slot; "0.0.0.0:0" for slot 0 (the frontend itself).
    pub backend: String,
    pub backend_id: u32,
    /// For slot 0: how many slots follow.
    pub count: u16,
    pub flags: Vec<&'static str>,
}

pub fn rows(maps: &LbMaps) -> Result<Vec<Row>, MapsError> {
    let backends: BTreeMap<u32, lash_common::Lb4Backend> =
        maps.backend_entries()?.into_iter().collect();
    let mut entries = maps.services_entries()?;
    entries.sort_by_key(|(k, _)| (lb4_services::frontend_of(k), k.backend_slot));
    let mut rows = Vec::new();
    for (k, v) in entries {
        let Some(fe) = lb4_services::frontend_of(&k) else {
            continue;
        };
        let rev_nat = lb4_services::rev_nat_of(&v);
        if k.backend_slot == 0 {
            rows.push(Row {
                service: fe.to_string(),
                slot: 0,
                rev_nat,
                backend: "0.0.0.0:0".into(),
                backend_id: 0,
                count: v.count,
                flags: flag_names(v.flags),
            });
        } else {
            let backend = backends
                .get(&v.backend_id)
                .and_then(lb4_backends::addr_of)
                .map(|a: L4Addr| a.to_string())
                .unwrap_or_else(|| format!("<missing backend {}>", v.backend_id));
            rows.push(Row {
                service: fe.to_string(),
                slot: k.backend_slot,
                rev_nat,
                backend,
                backend_id: v.backend_id,
                count: 0,
                flags: Vec::new(),
            });
        }
    }
    Ok(rows)
}

fn flag_names(flags: u8) -> Vec<&'static str> {
    use lash_common::*;
    let mut out = Vec::new();
    if flags
        & (SVC_FLAG_NODEPORT | SVC_FLAG_EXTERNAL_IP | SVC_FLAG_LOADBALANCER | SVC_FLAG_HOSTPORT)
        == 0
    {
        out.push("ClusterIP");
    }
    if flags & SVC_FLAG_NODEPORT != 0 {
        out.push("NodePort");
    }
    if flags & SVC_FLAG_EXTERNAL_IP != 0 {
        out.push("ExternalIPs");
    }
    if flags & SVC_FLAG_LOADBALANCER != 0 {
        out.push("LoadBalancer");
    }
    if flags & SVC_FLAG_HOSTPORT != 0 {
        out.push("HostPort");
    }
    if flags & SVC_FLAG_AFFINITY != 0 {
        out.push("sessionAffinity");
    }
    if flags & SVC_FLAG_ROUTABLE == 0 {
        out.push("non-routable");
    }
    out
}

pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let w = rows
        .iter()
        .map(|r| r.service.len())
        .max()
        .unwrap_or(0)
        .max(15)
        + 3;
    let _ = writeln!(
        out,
        "{:<w$}{}",
        "SERVICE ADDRESS", "BACKEND ADDRESS (REVNAT_ID) (SLOT)"
    );
    for r in rows {
        if r.slot == 0 {
            let _ = writeln!(
                out,
                "{:<w$}{} ({}) ({}) [{}]",
                r.service,
                r.backend,
                r.rev_nat,
                r.slot,
                r.flags.join(", ")
            );
        } else {
            let _ = writeln!(out, "{:<w$}{} ({}) ({})", "", r.backend, r.rev_nat, r.slot);
        }
    }
    out
}
