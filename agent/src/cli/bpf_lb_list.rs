//! `agent bpf lb list`: lb4_services as Cilium's `cilium bpf lb list` shows it,
//! one frontend then its slots; a two-scope service's internal scope follows
//! its external one, its address marked `/i` as Cilium marks it.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use crate::{
    maps::{
        lb4_backends,
        lb4_services::{self, Scope},
        LbMaps, MapsError,
    },
    model::L4Addr,
};

#[derive(Debug, Serialize)]
pub struct Row {
    /// The frontend, `/i` appended for the internal scope.
    pub service: String,
    /// "external" or "internal".
    pub scope: &'static str,
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
    entries.sort_by_key(|(k, _)| {
        (
            lb4_services::frontend_of(k),
            lb4_services::scope_of(k),
            k.backend_slot,
        )
    });
    let mut rows = Vec::new();
    for (k, v) in entries {
        let (Some(fe), Some(scope)) = (lb4_services::frontend_of(&k), lb4_services::scope_of(&k))
        else {
            continue;
        };
        let (service, scope) = match scope {
            Scope::External => (fe.to_string(), "external"),
            Scope::Internal => (format!("{fe}/i"), "internal"),
        };
        let rev_nat = lb4_services::rev_nat_of(&v);
        if k.backend_slot == 0 {
            rows.push(Row {
                service,
                scope,
                slot: 0,
                rev_nat,
                backend: "0.0.0.0:0".into(),
                backend_id: 0,
                count: v.count,
                flags: flag_names(v.flags, v.flags2),
            });
        } else {
            let backend = backends
                .get(&v.backend_id)
                .and_then(lb4_backends::addr_of)
                .map(|a: L4Addr| a.to_string())
                .unwrap_or_else(|| format!("<missing backend {}>", v.backend_id));
            rows.push(Row {
                service,
                scope,
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

/// Cilium's words for a service's flags, in its order: the type, then the
/// policies, scopes, affinity and routability.
pub fn flag_names(flags: u8, flags2: u8) -> Vec<&'static str> {
    use lash_common::*;
    let mut out = vec![type_name(flags)];
    if flags & SVC_FLAG_EXT_LOCAL_SCOPE != 0 {
        out.push("Local");
    }
    if flags2 & SVC_FLAG2_INT_LOCAL_SCOPE != 0 {
        out.push("InternalLocal");
    }
    if flags2 & SVC_FLAG2_TWO_SCOPES != 0 {
        out.push("two-scopes");
    }
    if flags & SVC_FLAG_AFFINITY != 0 {
        out.push("sessionAffinity");
    }
    if flags & SVC_FLAG_SOURCE_RANGE != 0 {
        out.push("check source-range");
    }
    if flags & SVC_FLAG_ROUTABLE == 0 {
        out.push("non-routable");
    }
    out
}

/// The service type a frontend's flags say, as Cilium names it.
pub fn type_name(flags: u8) -> &'static str {
    use lash_common::*;
    if flags & SVC_FLAG_LOADBALANCER != 0 {
        "LoadBalancer"
    } else if flags & SVC_FLAG_NODEPORT != 0 {
        "NodePort"
    } else if flags & SVC_FLAG_EXTERNAL_IP != 0 {
        "ExternalIPs"
    } else if flags & SVC_FLAG_HOSTPORT != 0 {
        "HostPort"
    } else {
        "ClusterIP"
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use lash_common::*;

    #[test]
    fn flags_read_as_cilium_prints_them() {
        assert_eq!(flag_names(0, 0), ["ClusterIP", "non-routable"]);
        assert_eq!(
            flag_names(
                SVC_FLAG_NODEPORT
                    | SVC_FLAG_ROUTABLE
                    | SVC_FLAG_EXT_LOCAL_SCOPE
                    | SVC_FLAG_AFFINITY,
                SVC_FLAG2_TWO_SCOPES
            ),
            ["NodePort", "Local", "two-scopes", "sessionAffinity"]
        );
        assert_eq!(
            flag_names(0, SVC_FLAG2_INT_LOCAL_SCOPE),
            ["ClusterIP", "InternalLocal", "non-routable"]
        );
        assert_eq!(
            flag_names(SVC_FLAG_EXTERNAL_IP | SVC_FLAG_ROUTABLE, 0),
            ["ExternalIPs"]
        );
        assert_eq!(
            flag_names(SVC_FLAG_LOADBALANCER | SVC_FLAG_ROUTABLE, 0),
            ["LoadBalancer"]
        );
    }
}
