//! `agent service list`: one line per frontend with its ID (the reverse-NAT
//! index), its type and numbered backends, like `cilium service list`. A
//! two-scope service lists its internal scope's backends after the external
//! ones, marked: those are the ones connections from inside get.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use crate::maps::{
    lb4_backends, lb4_reverse_nat,
    lb4_services::{self, Scope},
    LbMaps, MapsError,
};

#[derive(Debug, Serialize)]
pub struct Service {
    pub id: u16,
    pub frontend: String,
    #[serde(rename = "type")]
    pub type_: String,
    /// Cilium's words for the frontend's flags (policies, scopes, affinity).
    pub flags: Vec<&'static str>,
    pub backends: Vec<Backend>,
}

#[derive(Debug, Serialize)]
pub struct Backend {
    /// "external" or "internal" (the backend set of traffic from inside the
    /// cluster, for a service with two scopes).
    pub scope: &'static str,
    pub slot: u16,
    pub id: u32,
    pub address: String,
    pub state: &'static str,
}

pub fn services(maps: &LbMaps) -> Result<Vec<Service>, MapsError> {
    let backends: BTreeMap<u32, lash_common::Lb4Backend> =
        maps.backend_entries()?.into_iter().collect();
    let rev: BTreeMap<u16, (std::net::Ipv4Addr, u16)> = maps
        .rev_nat_entries()?
        .into_iter()
        .map(|(k, v)| (k, lb4_reverse_nat::addr_of(&v)))
        .collect();
    let mut by_fe: BTreeMap<crate::model::L4Addr, Service> = BTreeMap::new();
    let mut slots = Vec::new();
    for (k, v) in maps.services_entries()? {
        let (Some(fe), Some(scope)) = (lb4_services::frontend_of(&k), lb4_services::scope_of(&k))
        else {
            continue;
        };
        if k.backend_slot == 0 {
            if scope == Scope::Internal {
                continue; // the external slot 0 speaks for the service
            }
            let id = lb4_services::rev_nat_of(&v);
            // A frontend whose reverse-NAT entry disagrees is shown, marked.
            let consistent = rev.get(&id) == Some(&(fe.ip, fe.port));
            let type_ = super::bpf_lb_list::type_name(v.flags);
            let mut flags = super::bpf_lb_list::flag_names(v.flags, v.flags2);
            flags.remove(0);
            flags.retain(|f| *f != "non-routable");
            by_fe.insert(
                fe,
                Service {
                    id,
                    frontend: fe.to_string(),
                    type_: if consistent {
                        type_.to_string()
                    } else {
                        format!("{type_} (revnat missing)")
                    },
                    flags,
                    backends: Vec::new(),
                },
            );
        } else {
            slots.push((fe, scope, k.backend_slot, v.backend_id));
        }
    }
    slots.sort();
    for (fe, scope, slot, id) in slots {
        let Some(svc) = by_fe.get_mut(&fe) else {
            continue;
        };
        let (address, state) = match backends.get(&id) {
            Some(b) => (
                lb4_backends::addr_of(b)
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                lb4_backends::state_name(b.flags),
            ),
            None => (String::new(), "missing"),
        };
        svc.backends.push(Backend {
            scope: match scope {
                Scope::External => "external",
                Scope::Internal => "internal",
            },
            slot,
            id,
            address,
            state,
        });
    }
    let mut out: Vec<Service> = by_fe.into_values().collect();
    out.sort_by_key(|s| s.id);
    Ok(out)
}

pub fn table(services: &[Service]) -> String {
    let mut out = String::new();
    // Columns as wide as their longest entry (node-port frontends are long).
    let fw = services
        .iter()
        .map(|s| s.frontend.len() + 2)
        .max()
        .unwrap_or(0)
        .max(24);
    let tw = services
        .iter()
        .map(|s| s.type_.len() + 2)
        .max()
        .unwrap_or(0)
        .max(15);
    let _ = writeln!(
        out,
        "{:<5}{:<fw$}{:<tw$}Backend",
        "ID", "Frontend", "Service Type"
    );
    for s in services {
        let mut first = true;
        let lines: Vec<String> = if s.backends.is_empty() {
            vec!["(none)".into()]
        } else {
            s.backends
                .iter()
                .map(|b| {
                    let internal = if b.scope == "internal" {
                        " [internal]"
                    } else {
                        ""
                    };
                    format!("{} => {} ({}){internal}", b.slot, b.address, b.state)
                })
                .collect()
        };
        for l in lines {
            if first {
                let _ = writeln!(out, "{:<5}{:<fw$}{:<tw$}{}", s.id, s.frontend, s.type_, l);
                first = false;
            } else {
                let _ = writeln!(out, "{:<5}{:<fw$}{:<tw$}{}", "", "", "", l);
            }
        }
    }
    out
}
