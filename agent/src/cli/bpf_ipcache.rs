//! `agent bpf ipcache list` and `agent bpf ipcache get IP`: the ipcache as
//! `cilium bpf ipcache list` shows it, and the entry the datapath's own
//! longest-prefix lookup picks for one address.

use std::{fmt::Write as _, net::Ipv4Addr};

use serde::Serialize;

use crate::maps::ipcache::IpcacheEntry;

fn describe(e: &IpcacheEntry) -> String {
    let tunnel = e
        .tunnel_endpoint
        .map_or_else(|| "0.0.0.0".to_string(), |t| t.to_string());
    let flags = if e.flags & 1 != 0 {
        "skiptunnel"
    } else {
        "<none>"
    };
    format!(
        "identity={} encryptkey={} tunnelendpoint={tunnel} flags={flags}",
        e.identity, e.encrypt_key
    )
}

pub fn table(entries: &[IpcacheEntry]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<19} IDENTITY", "IP PREFIX/ADDRESS");
    for e in entries {
        let _ = writeln!(out, "{:<19} {}", e.prefix, describe(e));
    }
    out
}

/// The answer to `get`: the address asked, and the entry or world.
#[derive(Debug, Serialize)]
pub struct Lookup {
    pub ip: Ipv4Addr,
    /// None: no prefix holds it, the datapath treats it as world (2).
    pub entry: Option<IpcacheEntry>,
    pub identity: u32,
}

pub fn lookup(ip: Ipv4Addr, entry: Option<IpcacheEntry>) -> Lookup {
    Lookup {
        ip,
        identity: entry
            .as_ref()
            .map_or(lash_common::endpoint::IDENTITY_WORLD, |e| e.identity),
        entry,
    }
}

pub fn get_text(l: &Lookup) -> String {
    match &l.entry {
        Some(e) => format!(
            "{} maps to identity {} (longest prefix {}: {})\n",
            l.ip,
            e.identity,
            e.prefix,
            describe(e)
        ),
        None => format!(
            "{} maps to identity {} (world: no prefix in the ipcache holds it)\n",
            l.ip, l.identity
        ),
    }
}
