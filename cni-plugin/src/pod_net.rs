//! The pod's end of the veth, configured and read back from inside the
//! container's namespace (callers run these on a `Netns::run` thread with a
//! connection of its own): up, the address as a /32, a link-scope /32 route
//! to the gateway, and the default route via the gateway. The /32 keeps the
//! pod from assuming any neighbour is on its link: everything goes to the
//! gateway, which the datapath answers for on the lxc.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope},
    AddressFamily,
};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use crate::{
    mac::Mac,
    rtnl::{self, NetError},
};

/// One IPv4 route of the main table, as much of it as CHECK looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route4 {
    pub dst: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub scope: RouteScope,
}

/// The pod's interface as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSide {
    pub ifindex: u32,
    pub mac: Option<Mac>,
    /// IPv4 addresses on the interface, with prefix lengths.
    pub addresses: Vec<(Ipv4Addr, u8)>,
    /// The namespace's IPv4 main-table routes (all of them, not only the
    /// interface's: which device a route uses is part of what is checked).
    pub routes: Vec<Route4>,
}

/// Configures the pod's interface `ifname`, made by veth::create.
pub async fn configure(
    h: &Handle,
    ifname: &str,
    address: Ipv4Addr,
    gateway: Ipv4Addr,
) -> Result<u32, NetError> {
    let link = rtnl::link_by_name(h, ifname)
        .await?
        .ok_or_else(|| NetError {
            doing: format!("finding {ifname} in the container"),
            reason: "it is not there".into(),
            errno: None,
        })?;
    let index = link.header.index;
    // The datapath serves IPv4 only and drops any other L3 protocol a pod
    // sends (counted as 139, unknown L3): so the pod is told to send no IPv6
    // on this interface (no router or neighbour solicitations), before it is
    // up. Where the kernel has no IPv6, there is nothing to turn off. The
    // sysctl is the namespace's of this thread, the container's.
    let v6 = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    if std::path::Path::new(&v6).exists() {
        std::fs::write(&v6, "1").map_err(|e| NetError::io(format!("writing 1 to {v6}"), e))?;
    }
    h.link()
        .change(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| NetError::netlink(format!("bringing {ifname} up"), e))?;
    h.address()
        .add(index, IpAddr::V4(address), 32)
        .execute()
        .await
        .map_err(|e| NetError::netlink(format!("adding {address}/32 to {ifname}"), e))?;
    let to_gateway = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(gateway, 32)
        .output_interface(index)
        .scope(RouteScope::Link)
        .build();
    h.route().add(to_gateway).execute().await.map_err(|e| {
        NetError::netlink(
            format!("adding route {gateway}/32 dev {ifname} scope link"),
            e,
        )
    })?;
    let default = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
        .gateway(gateway)
        .output_interface(index)
        .build();
    h.route().add(default).execute().await.map_err(|e| {
        NetError::netlink(
            format!("adding default route via {gateway} dev {ifname}"),
            e,
        )
    })?;
    Ok(index)
}

/// What `ifname` looks like now; None when it is not there.
pub async fn inspect(h: &Handle, ifname: &str) -> Result<Option<PodSide>, NetError> {
    let Some(link) = rtnl::link_by_name(h, ifname).await? else {
        return Ok(None);
    };
    let index = link.header.index;
    let addresses: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(|e| NetError::netlink(format!("listing the addresses of {ifname}"), e))?;
    let routes: Vec<RouteMessage> = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(|e| NetError::netlink("listing the container's routes", e))?;
    Ok(Some(PodSide {
        ifindex: index,
        mac: rtnl::link_mac(&link),
        addresses: addresses.iter().filter_map(ipv4_address).collect(),
        routes: routes.iter().filter_map(main_ipv4_route).collect(),
    }))
}

fn ipv4_address(m: &AddressMessage) -> Option<(Ipv4Addr, u8)> {
    if m.header.family != AddressFamily::Inet {
        return None;
    }
    m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(ip)) => Some((*ip, m.header.prefix_len)),
        _ => None,
    })
}

fn main_ipv4_route(r: &RouteMessage) -> Option<Route4> {
    if r.header.address_family != AddressFamily::Inet {
        return None;
    }
    let table = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let mut route = Route4 {
        dst: Ipv4Addr::UNSPECIFIED,
        prefix_len: r.header.destination_prefix_length,
        gateway: None,
        oif: None,
        scope: r.header.scope,
    };
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => route.dst = *d,
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => route.gateway = Some(*g),
            RouteAttribute::Oif(i) => route.oif = Some(*i),
            _ => {}
        }
    }
    Some(route)
}
