//! `agent endpoint list`: the node's endpoints in `cilium endpoint list`'s
//! columns (policy is not enforced yet, so both columns say Disabled; the
//! labels are the CNI attachment's until the Kubernetes source gives pods
//! theirs), with the lxc and its programs in the JSON form.

use std::fmt::Write as _;

use serde::Serialize;

use crate::endpoints::{links::LXC_PROGRAMS, EndpointView};

#[derive(Debug, Serialize)]
pub struct Row {
    #[serde(flatten)]
    pub endpoint: EndpointView,
    /// `ready`, or what is missing.
    pub status: String,
}

/// `ready` when the lxc exists with the recorded index and carries both
/// programs; else what is wrong.
pub fn status_of(e: &EndpointView) -> String {
    let r = &e.record;
    if crate::endpoints::ifindex(&r.host_ifname) != Some(r.host_ifindex) {
        return format!("not-ready ({} is gone)", r.host_ifname);
    }
    let missing: Vec<String> = LXC_PROGRAMS
        .iter()
        .map(|(name, hook)| format!("{}:{name}", hook.as_str()))
        .filter(|p| !e.programs.contains(p))
        .collect();
    if missing.is_empty() {
        "ready".into()
    } else {
        format!("not-ready (missing {})", missing.join(", "))
    }
}

pub fn rows(views: Vec<EndpointView>) -> Vec<Row> {
    views
        .into_iter()
        .map(|endpoint| Row {
            status: status_of(&endpoint),
            endpoint,
        })
        .collect()
}

pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<18} {:<18} {:<10} {:<38} {:<6} {:<15} STATUS",
        "ENDPOINT",
        "POLICY (ingress)",
        "POLICY (egress)",
        "IDENTITY",
        "LABELS (source:key[=value])",
        "IPv6",
        "IPv4"
    );
    let _ = writeln!(
        out,
        "{:<10} {:<18} {:<18}",
        "", "ENFORCEMENT", "ENFORCEMENT"
    );
    for row in rows {
        let r = &row.endpoint.record;
        let short: String = r.container_id.chars().take(12).collect();
        let _ = writeln!(
            out,
            "{:<10} {:<18} {:<18} {:<10} {:<38} {:<6} {:<15} {}",
            r.id,
            "Disabled",
            "Disabled",
            r.identity,
            format!("cni:container={short}"),
            "",
            r.address,
            row.status
        );
        let _ = writeln!(
            out,
            "{:<10} {:<18} {:<18} {:<10} cni:interface={} lxc={}",
            "", "", "", "", r.ifname, r.host_ifname
        );
    }
    out
}
