//! Rules shaped as kube-proxy writes them, for the same service set: its
//! iptables mode (iptables-restore input: KUBE-SERVICES -> KUBE-SVC-* with
//! `statistic --mode random` -> KUBE-SEP-* DNAT) and its nftables mode (the
//! base chains, sets and maps of its golden test output, a `service-ips`
//! verdict map filled by elements, `numgen random` over endpoint chains, one
//! transaction). Written from the shape of kube-proxy's output, not its code.

use std::{
    collections::hash_map::DefaultHasher,
    fmt::Write as _,
    hash::{Hash, Hasher},
};

use super::services::Svc;

/// kube-proxy names chains by a hash of the service port (and endpoint): 16
/// characters of base32. Any stable hash gives the same shape.
fn chain_hash(parts: &[&str]) -> String {
    const B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    let mut x = h.finish() as u128 | ((parts.len() as u128) << 64);
    let mut out = String::with_capacity(16);
    for _ in 0..16 {
        out.push(B32[(x & 31) as usize] as char);
        x >>= 5;
        if x == 0 {
            let mut h2 = DefaultHasher::new();
            out.hash(&mut h2);
            x = h2.finish() as u128;
        }
    }
    out
}

fn svc_chain(s: &Svc) -> String {
    format!("KUBE-SVC-{}", chain_hash(&[&s.name, "tcp"]))
}

fn sep_chain(s: &Svc, ep: &(std::net::Ipv4Addr, u16)) -> String {
    format!(
        "KUBE-SEP-{}",
        chain_hash(&[&s.name, "tcp", &format!("{}:{}", ep.0, ep.1)])
    )
}

const POD_CIDR: &str = "10.244.0.0/16";

fn iptables_service_rules(out: &mut String, s: &Svc) {
    let svc = svc_chain(s);
    let n = s.endpoints.len();
    let _ = writeln!(
        out,
        "-A {svc} ! -s {POD_CIDR} -d {}/32 -p tcp -m comment --comment \"{} cluster IP\" -m tcp --dport {} -j KUBE-MARK-MASQ",
        s.vip, s.name, s.port
    );
    for (i, ep) in s.endpoints.iter().enumerate() {
        let sep = sep_chain(s, ep);
        let remaining = n - i;
        if remaining > 1 {
            let _ = writeln!(
                out,
                "-A {svc} -m comment --comment \"{} -> {}:{}\" -m statistic --mode random --probability {:.11} -j {sep}",
                s.name,
                ep.0,
                ep.1,
                1.0 / remaining as f64
            );
        } else {
            let _ = writeln!(
                out,
                "-A {svc} -m comment --comment \"{} -> {}:{}\" -j {sep}",
                s.name, ep.0, ep.1
            );
        }
    }
    for ep in &s.endpoints {
        let sep = sep_chain(s, ep);
        let _ = writeln!(
            out,
            "-A {sep} -s {}/32 -m comment --comment \"{}\" -j KUBE-MARK-MASQ",
            ep.0, s.name
        );
        let _ = writeln!(
            out,
            "-A {sep} -p tcp -m comment --comment \"{}\" -m tcp -j DNAT --to-destination {}:{}",
            s.name, ep.0, ep.1
        );
    }
}

fn kube_services_rules(out: &mut String, svcs: &[Svc]) {
    for s in svcs {
        let _ = writeln!(
            out,
            "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"{} cluster IP\" -m tcp --dport {} -j {}",
            s.vip,
            s.name,
            s.port,
            svc_chain(s)
        );
    }
    let _ = writeln!(
        out,
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
    );
}

/// The whole nat table, as one iptables-restore input (a full sync).
pub fn iptables_full(svcs: &[Svc]) -> String {
    let mut out = String::with_capacity(svcs.len() * 1200);
    out.push_str("*nat\n");
    for c in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    for s in svcs {
        let _ = writeln!(out, ":{} - [0:0]", svc_chain(s));
        for ep in &s.endpoints {
            let _ = writeln!(out, ":{} - [0:0]", sep_chain(s, ep));
        }
    }
    out.push_str(
        "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
    );
    out.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
    );
    out.push_str("-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n");
    out.push_str("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n");
    out.push_str("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n");
    out.push_str("-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n");
    out.push_str("-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n");
    kube_services_rules(&mut out, svcs);
    for s in svcs {
        iptables_service_rules(&mut out, s);
    }
    out.push_str("COMMIT\n");
    out
}

/// One service's endpoints changed from `old` to `new`: what kube-proxy's
/// partial sync restores with --noflush. KUBE-SERVICES is rewritten whole (it
/// always is), the service chain is refilled, the old endpoint chains go.
pub fn iptables_change(svcs_after: &[Svc], old: &Svc, new: &Svc) -> String {
    let mut out = String::new();
    out.push_str("*nat\n:KUBE-SERVICES - [0:0]\n");
    let _ = writeln!(out, ":{} - [0:0]", svc_chain(new));
    for ep in &new.endpoints {
        let _ = writeln!(out, ":{} - [0:0]", sep_chain(new, ep));
    }
    // Chains to delete are declared (which flushes them) first, as kube-proxy
    // does: a chain must be empty to go.
    for ep in &old.endpoints {
        if !new.endpoints.contains(ep) {
            let _ = writeln!(out, ":{} - [0:0]", sep_chain(old, ep));
        }
    }
    kube_services_rules(&mut out, svcs_after);
    iptables_service_rules(&mut out, new);
    for ep in &old.endpoints {
        if !new.endpoints.contains(ep) {
            let _ = writeln!(out, "-X {}", sep_chain(old, ep));
        }
    }
    out.push_str("COMMIT\n");
    out
}

/// `service-XXXXXXXX-ns/name/tcp/port`, as kube-proxy names a service chain.
fn nft_svc_chain(s: &Svc) -> String {
    format!(
        "service-{}-{}",
        &chain_hash(&[&s.name, "tcp"])[..8],
        nft_port_name(s)
    )
}

/// `endpoint-XXXXXXXX-ns/name/tcp/port__ip/port`.
fn nft_ep_chain(s: &Svc, ep: &(std::net::Ipv4Addr, u16)) -> String {
    format!(
        "endpoint-{}-{}__{}/{}",
        &chain_hash(&[&s.name, &ep.0.to_string()])[..8],
        nft_port_name(s),
        ep.0,
        ep.1
    )
}

/// "ns/name:port" -> "ns/name/tcp/port".
fn nft_port_name(s: &Svc) -> String {
    let (svc, port) = s.name.split_once(':').unwrap_or((&s.name, "p"));
    format!("{svc}/tcp/{port}")
}

/// The table, its sets, maps and base chains, as kube-proxy's golden test
/// shows them for an IPv4 proxier (NodePort address set left empty: the
/// bench has no NodePorts).
const NFT_BASE: &str = r#"add table ip kube-proxy { comment "rules for kube-proxy" ; }
add set ip kube-proxy cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }
add set ip kube-proxy nodeport-ips { type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }
add map ip kube-proxy firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }
add map ip kube-proxy no-endpoint-nodeports { type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }
add map ip kube-proxy no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }
add map ip kube-proxy service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }
add chain ip kube-proxy cluster-ips-check
add chain ip kube-proxy filter-prerouting-pre-dnat { type filter hook prerouting priority -110 ; }
add chain ip kube-proxy filter-output-pre-dnat { type filter hook output priority -110 ; }
add chain ip kube-proxy filter-forward { type filter hook forward priority 0 ; }
add chain ip kube-proxy filter-input { type filter hook input priority 0 ; }
add chain ip kube-proxy filter-output { type filter hook output priority 0 ; }
add chain ip kube-proxy firewall-check
add chain ip kube-proxy mark-for-masquerade
add chain ip kube-proxy masquerading
add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }
add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }
add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }
add chain ip kube-proxy nodeport-endpoints-check
add chain ip kube-proxy reject-chain { comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }
add chain ip kube-proxy services
add chain ip kube-proxy service-endpoints-check
add rule ip kube-proxy cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
add rule ip kube-proxy cluster-ips-check ip daddr { 10.96.0.0/12 } drop comment "Drop traffic to unallocated ClusterIPs"
add rule ip kube-proxy filter-prerouting-pre-dnat ct state new jump firewall-check
add rule ip kube-proxy filter-forward ct state new jump service-endpoints-check
add rule ip kube-proxy filter-forward ct state new jump cluster-ips-check
add rule ip kube-proxy filter-input ct state new jump nodeport-endpoints-check
add rule ip kube-proxy filter-input ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output-pre-dnat ct state new jump firewall-check
add rule ip kube-proxy filter-output ct state new jump cluster-ips-check
add rule ip kube-proxy firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000
add rule ip kube-proxy masquerading mark and 0x4000 == 0 return
add rule ip kube-proxy masquerading mark set mark xor 0x4000
add rule ip kube-proxy masquerading masquerade fully-random
add rule ip kube-proxy nat-output jump services
add rule ip kube-proxy nat-postrouting jump masquerading
add rule ip kube-proxy nat-prerouting jump services
add rule ip kube-proxy nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports
add rule ip kube-proxy reject-chain reject
add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
add rule ip kube-proxy service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
"#;

/// One service's chains and rules: the service chain (masquerade check, then
/// `numgen random` over a vmap of endpoint chains) and one chain per endpoint
/// (hairpin masquerade, DNAT). `flush` for chains that already exist. Every
/// chain is declared before a rule refers to it, as one transaction needs.
fn nft_service_chains(out: &mut String, s: &Svc, flush: bool) {
    let svc = nft_svc_chain(s);
    let eps: Vec<String> = s.endpoints.iter().map(|ep| nft_ep_chain(s, ep)).collect();
    for c in std::iter::once(&svc).chain(&eps) {
        let _ = writeln!(out, "add chain ip kube-proxy {c}");
        if flush {
            let _ = writeln!(out, "flush chain ip kube-proxy {c}");
        }
    }
    let _ = writeln!(
        out,
        "add rule ip kube-proxy {svc} ip daddr {} ip saddr != {POD_CIDR} jump mark-for-masquerade",
        s.vip
    );
    let arms: Vec<String> = eps
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{i} : goto {c}"))
        .collect();
    let _ = writeln!(
        out,
        "add rule ip kube-proxy {svc} numgen random mod {} vmap {{ {} }}",
        s.endpoints.len(),
        arms.join(" , ")
    );
    for (ep, c) in s.endpoints.iter().zip(&eps) {
        let _ = writeln!(
            out,
            "add rule ip kube-proxy {c} ip saddr {} jump mark-for-masquerade",
            ep.0
        );
        let _ = writeln!(
            out,
            "add rule ip kube-proxy {c} meta l4proto tcp dnat to {}:{}",
            ep.0, ep.1
        );
    }
}

fn nft_service_elements(out: &mut String, s: &Svc) {
    let _ = writeln!(out, "add element ip kube-proxy cluster-ips {{ {} }}", s.vip);
    let _ = writeln!(
        out,
        "add element ip kube-proxy service-ips {{ {} . tcp . {} : goto {} }}",
        s.vip,
        s.port,
        nft_svc_chain(s)
    );
}

/// The whole table as `nft -f` inputs, one transaction each: everything in
/// one (what kube-proxy sends on a full sync) when `per_tx` is None, else the
/// base and then `per_tx` services per transaction.
pub fn nft_full(svcs: &[Svc], per_tx: Option<usize>) -> Vec<String> {
    let per_tx = per_tx.unwrap_or(svcs.len().max(1));
    let mut txs = vec![NFT_BASE.to_string()];
    for chunk in svcs.chunks(per_tx) {
        let mut out = String::with_capacity(chunk.len() * 1500);
        for s in chunk {
            nft_service_chains(&mut out, s, false);
            nft_service_elements(&mut out, s);
        }
        txs.push(out);
    }
    if per_tx >= svcs.len() {
        // One transaction: the base goes in with the rest.
        let all = txs.concat();
        return vec![all];
    }
    txs
}

/// One service's endpoints changed: kube-proxy's nftables mode rewrites just
/// that service's chain and endpoint chains, in one transaction, and deletes
/// the chains of endpoints that went.
pub fn nft_change(old: &Svc, new: &Svc) -> String {
    let mut out = String::new();
    nft_service_chains(&mut out, new, true);
    for ep in &old.endpoints {
        if !new.endpoints.contains(ep) {
            let c = nft_ep_chain(old, ep);
            let _ = writeln!(out, "flush chain ip kube-proxy {c}");
            let _ = writeln!(out, "delete chain ip kube-proxy {c}");
        }
    }
    out
}
