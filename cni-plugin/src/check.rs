//! CHECK: is the attachment still as ADD made it? The result ADD printed
//! (`prevResult`) says what to expect; the node's namespace, the container's
//! and the agent say what is. Every difference is named in one error.

use std::net::{IpAddr, Ipv4Addr};

use lash_api::v1::Endpoint;
use netlink_packet_route::route::RouteScope;

use crate::{
    error::CniError,
    host_net,
    mac::Mac,
    netns::Netns,
    pod_net::{self, PodSide},
    result::AddResult,
    rtnl::{self, NetError},
    verbs::Call,
};

/// The programs the agent attaches to every lxc, as `Endpoint.programs`
/// names them.
pub const PROGRAMS: [&str; 2] = ["ingress:from_container", "egress:to_container"];

/// What ADD made, by `prevResult`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    host: String,
    host_mac: Option<Mac>,
    ifname: String,
    netns: String,
    pod_mac: Option<Mac>,
    address: Ipv4Addr,
    gateway: Ipv4Addr,
}

/// The host end as found.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostSide {
    ifindex: u32,
    mac: Option<Mac>,
    has_pod_route: bool,
    rp_filter: u32,
}

pub fn check(call: &Call, prev: &AddResult) -> Result<(), CniError> {
    let netns_path = call.netns_path();
    let expected = expected(
        prev,
        call.host_ifname(),
        call.ifname(),
        &netns_path.to_string_lossy(),
    )
    .map_err(|problem| CniError::InvalidConfig {
        field: "prevResult".into(),
        problem,
    })?;
    let endpoint = call
        .agent
        .get_endpoint(call.attachment())
        .map_err(|p| call.agent_failed(p))?;
    let netns = Netns::open(netns_path).map_err(|e| call.netns_failed(e))?;
    let host = rtnl::with_handle(async |h| {
        let Some(link) = rtnl::link_by_name(h, &expected.host).await? else {
            return Ok(None);
        };
        let ifindex = link.header.index;
        Ok(Some(HostSide {
            ifindex,
            mac: rtnl::link_mac(&link),
            has_pod_route: host_net::has_pod_route(h, ifindex, expected.address).await?,
            rp_filter: host_net::effective_rp_filter(&expected.host)?,
        }))
    })
    .map_err(|e| call.net_failed(e))?;
    let ifname = call.ifname();
    let pod = netns
        .run(|| rtnl::with_handle(async |h| pod_net::inspect(h, ifname).await))
        .map_err(|e| call.netns_failed(e))?
        .map_err(|e: NetError| call.net_failed(e))?;
    let missing = compare(&expected, host.as_ref(), pod.as_ref(), endpoint.as_ref());
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CniError::CheckMismatch {
            what: call.what.clone(),
            missing,
        })
    }
}

/// Reads what ADD reported for this attachment: the pod's interface (named
/// CNI_IFNAME, with a sandbox), its IPv4 address and gateway, and the lxc.
fn expected(prev: &AddResult, host: String, ifname: &str, netns: &str) -> Result<Expected, String> {
    let pod_index = prev
        .interfaces
        .iter()
        .position(|i| i.name == ifname && i.sandbox.is_some())
        .ok_or_else(|| format!("has no interface {ifname} inside a sandbox"))?;
    let mac = |i: usize| -> Result<Option<Mac>, String> {
        prev.interfaces[i]
            .mac
            .as_deref()
            .map(|m| m.parse().map_err(|e| format!("interfaces[{i}].mac: {e}")))
            .transpose()
    };
    let pod_mac = mac(pod_index)?;
    let host_mac = match prev
        .interfaces
        .iter()
        .position(|i| i.name == host && i.sandbox.is_none())
    {
        Some(i) => mac(i)?,
        None => None,
    };
    let ip = prev
        .ips
        .iter()
        .find(|ip| ip.address.addr.is_ipv4() && ip.interface.is_none_or(|i| i == pod_index))
        .ok_or_else(|| format!("has no IPv4 address for {ifname}"))?;
    let IpAddr::V4(address) = ip.address.addr else {
        unreachable!("filtered to IPv4 above")
    };
    let gateway = ip
        .gateway
        .or_else(|| {
            prev.routes
                .iter()
                .find(|r| r.dst.prefix_len == 0 && r.dst.addr.is_ipv4())
                .and_then(|r| r.gw)
        })
        .and_then(|g| match g {
            IpAddr::V4(g) => Some(g),
            IpAddr::V6(_) => None,
        })
        .ok_or_else(|| format!("has no IPv4 gateway for {ifname}"))?;
    Ok(Expected {
        host,
        host_mac,
        ifname: ifname.to_string(),
        netns: netns.to_string(),
        pod_mac,
        address,
        gateway,
    })
}

/// Every way what is found differs from what ADD made, in words.
fn compare(
    want: &Expected,
    host: Option<&HostSide>,
    pod: Option<&PodSide>,
    endpoint: Option<&Endpoint>,
) -> Vec<String> {
    let mut missing = Vec::new();
    let (lxc, ifname, netns, ip, gw) = (
        &want.host,
        &want.ifname,
        &want.netns,
        want.address,
        want.gateway,
    );
    match host {
        None => missing.push(format!("host interface {lxc} is missing")),
        Some(h) => {
            if let (Some(want_mac), got) = (want.host_mac, h.mac) {
                if got != Some(want_mac) {
                    missing.push(format!(
                        "{lxc} has MAC {}, prevResult says {want_mac}",
                        show(got)
                    ));
                }
            }
            if !h.has_pod_route {
                missing.push(format!("the node has no route {ip}/32 dev {lxc}"));
            }
            if h.rp_filter != 0 {
                missing.push(format!(
                    "{lxc}'s effective rp_filter is {}, not 0",
                    h.rp_filter
                ));
            }
        }
    }
    match pod {
        None => missing.push(format!("{ifname} is missing in {netns}")),
        Some(p) => {
            if let Some(want_mac) = want.pod_mac {
                if p.mac != Some(want_mac) {
                    missing.push(format!(
                        "{ifname} in {netns} has MAC {}, prevResult says {want_mac}",
                        show(p.mac)
                    ));
                }
            }
            if !p.addresses.contains(&(ip, 32)) {
                missing.push(format!("{ifname} in {netns} lacks address {ip}/32"));
            }
            let gateway_route = p.routes.iter().any(|r| {
                r.dst == gw
                    && r.prefix_len == 32
                    && r.gateway.is_none()
                    && r.oif == Some(p.ifindex)
                    && r.scope == RouteScope::Link
            });
            if !gateway_route {
                missing.push(format!(
                    "{netns} has no route {gw}/32 dev {ifname} scope link"
                ));
            }
            let default_route = p
                .routes
                .iter()
                .any(|r| r.prefix_len == 0 && r.gateway == Some(gw) && r.oif == Some(p.ifindex));
            if !default_route {
                missing.push(format!(
                    "{netns} has no default route via {gw} dev {ifname}"
                ));
            }
        }
    }
    match endpoint {
        None => missing.push("the agent has no endpoint for this attachment".to_string()),
        Some(e) => {
            if e.address != ip.to_string() {
                missing.push(format!(
                    "the agent's endpoint has address {:?}, not {ip}",
                    e.address
                ));
            }
            if e.host_ifname != *lxc {
                missing.push(format!(
                    "the agent's endpoint is on {:?}, not {lxc}",
                    e.host_ifname
                ));
            }
            if let Some(h) = host {
                if e.host_ifindex != h.ifindex {
                    missing.push(format!(
                        "the agent's endpoint has ifindex {}, {lxc} is {}",
                        e.host_ifindex, h.ifindex
                    ));
                }
            }
            for program in PROGRAMS {
                if !e.programs.iter().any(|p| p == program) {
                    missing.push(format!("program {program} is not attached to {lxc}"));
                }
            }
        }
    }
    missing
}

fn show(mac: Option<Mac>) -> String {
    mac.map_or_else(|| "none".to_string(), |m| m.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::pod_net::Route4;

    const LXC: &str = "lxcc69fce2d2430";

    fn prev() -> AddResult {
        AddResult::from_json(&json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": LXC, "mac": "02:00:00:00:00:01"},
                {"name": "eth0", "mac": "0a:00:00:00:00:02", "sandbox": "/run/netns/pod"}
            ],
            "ips": [{"address": "10.244.1.5/32", "gateway": "10.244.1.1", "interface": 1}],
            "routes": [{"dst": "10.244.1.1/32"}, {"dst": "0.0.0.0/0", "gw": "10.244.1.1"}]
        }))
        .unwrap()
    }

    fn want() -> Expected {
        expected(&prev(), LXC.into(), "eth0", "/run/netns/pod").unwrap()
    }

    fn host() -> HostSide {
        HostSide {
            ifindex: 7,
            mac: Some(Mac([2, 0, 0, 0, 0, 1])),
            has_pod_route: true,
            rp_filter: 0,
        }
    }

    fn pod() -> PodSide {
        let gw = Ipv4Addr::new(10, 244, 1, 1);
        PodSide {
            ifindex: 2,
            mac: Some(Mac([0x0a, 0, 0, 0, 0, 2])),
            addresses: vec![(Ipv4Addr::new(10, 244, 1, 5), 32)],
            routes: vec![
                Route4 {
                    dst: gw,
                    prefix_len: 32,
                    gateway: None,
                    oif: Some(2),
                    scope: RouteScope::Link,
                },
                Route4 {
                    dst: Ipv4Addr::UNSPECIFIED,
                    prefix_len: 0,
                    gateway: Some(gw),
                    oif: Some(2),
                    scope: RouteScope::Universe,
                },
            ],
        }
    }

    fn endpoint() -> Endpoint {
        Endpoint {
            address: "10.244.1.5".into(),
            host_ifname: LXC.into(),
            host_ifindex: 7,
            programs: PROGRAMS.map(String::from).to_vec(),
            ..Endpoint::default()
        }
    }

    #[test]
    fn reads_what_add_reported() {
        let w = want();
        assert_eq!(w.pod_mac, Some(Mac([0x0a, 0, 0, 0, 0, 2])));
        assert_eq!(w.host_mac, Some(Mac([2, 0, 0, 0, 0, 1])));
        assert_eq!(w.address, Ipv4Addr::new(10, 244, 1, 5));
        assert_eq!(w.gateway, Ipv4Addr::new(10, 244, 1, 1));
        let err = expected(&prev(), LXC.into(), "net1", "/run/netns/pod").unwrap_err();
        assert!(err.contains("net1"), "{err}");
    }

    #[test]
    fn all_in_place_is_no_complaint() {
        let none: Vec<String> = Vec::new();
        assert_eq!(
            compare(&want(), Some(&host()), Some(&pod()), Some(&endpoint())),
            none
        );
    }

    #[test]
    fn each_difference_is_named() {
        let w = want();
        let found = |h: Option<&HostSide>, p: Option<&PodSide>, e: Option<&Endpoint>| {
            compare(&w, h, p, e).join(" | ")
        };

        let m = found(None, Some(&pod()), Some(&endpoint()));
        assert!(
            m.contains(&format!("host interface {LXC} is missing")),
            "{m}"
        );

        let m = found(Some(&host()), None, Some(&endpoint()));
        assert_eq!(m, "eth0 is missing in /run/netns/pod");

        let m = found(Some(&host()), Some(&pod()), None);
        assert_eq!(m, "the agent has no endpoint for this attachment");

        let mut p = pod();
        p.mac = Some(Mac([0x0a, 0, 0, 0, 0, 9]));
        p.addresses.clear();
        p.routes.remove(1);
        let m = found(Some(&host()), Some(&p), Some(&endpoint()));
        assert!(
            m.contains("has MAC 0a:00:00:00:00:09, prevResult says 0a:00:00:00:00:02"),
            "{m}"
        );
        assert!(m.contains("lacks address 10.244.1.5/32"), "{m}");
        assert!(
            m.contains("no default route via 10.244.1.1 dev eth0"),
            "{m}"
        );
        assert!(!m.contains("scope link"), "{m}");

        let mut p = pod();
        p.routes[0].scope = RouteScope::Universe;
        let m = found(Some(&host()), Some(&p), Some(&endpoint()));
        assert_eq!(
            m,
            "/run/netns/pod has no route 10.244.1.1/32 dev eth0 scope link"
        );

        let mut h = host();
        h.has_pod_route = false;
        h.rp_filter = 1;
        let m = found(Some(&h), Some(&pod()), Some(&endpoint()));
        assert!(m.contains("no route 10.244.1.5/32 dev"), "{m}");
        assert!(m.contains("rp_filter is 1"), "{m}");

        let mut e = endpoint();
        e.programs.retain(|p| p != "egress:to_container");
        e.host_ifindex = 8;
        let m = found(Some(&host()), Some(&pod()), Some(&e));
        assert!(
            m.contains("program egress:to_container is not attached"),
            "{m}"
        );
        assert!(!m.contains("ingress:from_container"), "{m}");
        assert!(m.contains("ifindex 8"), "{m}");
    }
}
