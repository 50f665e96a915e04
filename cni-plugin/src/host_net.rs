//! The host end of a pod's veth, in the node's namespace: up, reverse-path
//! filtering off, and a /32 route to the pod through it, so the node's own
//! processes (kubelet probes, hostNetwork pods) reach the pod. No address,
//! no bridge, no proxy ARP: the datapath answers the pod's ARP for the
//! gateway and forwards its packets.

use std::net::Ipv4Addr;

use futures::TryStreamExt;
use netlink_packet_route::{
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteScope},
    AddressFamily,
};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use crate::rtnl::NetError;

/// Brings the link up.
pub async fn up(h: &Handle, ifindex: u32, name: &str) -> Result<(), NetError> {
    h.link()
        .change(LinkUnspec::new_with_index(ifindex).up().build())
        .execute()
        .await
        .map_err(|e| NetError::netlink(format!("bringing {name} up"), e))
}

fn rp_filter_path(ifname: &str) -> String {
    format!("/proc/sys/net/ipv4/conf/{ifname}/rp_filter")
}

/// Turns reverse-path filtering off on `ifname`: packets from the pod come
/// from an address the node routes through this device anyway, but the
/// datapath also hands the lxc packets it redirected from elsewhere.
///
/// The kernel uses the larger of the device's value and `all`'s, so a
/// non-zero `all` is set to 0 as well (the device values, which each
/// interface keeps, then decide). Returns whether `all` had to change.
pub fn disable_rp_filter(ifname: &str) -> Result<bool, NetError> {
    let write = |path: &str| {
        std::fs::write(path, "0").map_err(|e| NetError::io(format!("writing 0 to {path}"), e))
    };
    write(&rp_filter_path(ifname))?;
    let all = rp_filter_path("all");
    let current =
        std::fs::read_to_string(&all).map_err(|e| NetError::io(format!("reading {all}"), e))?;
    if current.trim() == "0" {
        return Ok(false);
    }
    write(&all)?;
    Ok(true)
}

/// The effective rp_filter value of `ifname` (the larger of its own and
/// `all`'s), for CHECK.
pub fn effective_rp_filter(ifname: &str) -> Result<u32, NetError> {
    let read = |name: &str| -> Result<u32, NetError> {
        let path = rp_filter_path(name);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| NetError::io(format!("reading {path}"), e))?;
        text.trim().parse().map_err(|_| NetError {
            doing: format!("reading {path}"),
            reason: format!("{text:?} is not a number"),
            errno: None,
        })
    };
    Ok(read(ifname)?.max(read("all")?))
}

fn pod_route(ifindex: u32, pod_ip: Ipv4Addr) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(pod_ip, 32)
        .output_interface(ifindex)
        .scope(RouteScope::Link)
        .build()
}

/// `<pod ip>/32 dev <lxc> scope link`. Replaces a route to the same address
/// a crashed ADD may have left through another device.
pub async fn add_pod_route(
    h: &Handle,
    ifindex: u32,
    name: &str,
    pod_ip: Ipv4Addr,
) -> Result<(), NetError> {
    h.route()
        .add(pod_route(ifindex, pod_ip))
        .replace()
        .execute()
        .await
        .map_err(|e| NetError::netlink(format!("adding route {pod_ip}/32 dev {name}"), e))
}

/// Whether the main table routes `pod_ip`/32 through `ifindex`.
pub async fn has_pod_route(h: &Handle, ifindex: u32, pod_ip: Ipv4Addr) -> Result<bool, NetError> {
    let routes: Vec<RouteMessage> = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(|e| NetError::netlink("listing the node's routes", e))?;
    Ok(routes.iter().any(|r| {
        r.header.address_family == AddressFamily::Inet
            && r.header.destination_prefix_length == 32
            && r.attributes.iter().any(
                |a| matches!(a, RouteAttribute::Destination(RouteAddress::Inet(d)) if *d == pod_ip),
            )
            && r.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == ifindex))
    }))
}
