//! The kernel routes to the other nodes' pod ranges, marked with lash's
//! own route protocol number so they are found again (after a restart too)
//! and no one else's routes are touched: `ip route show proto 199`.
//!
//! - native routing: `<range> via <node address>`, the underlay carries pod
//!   addresses;
//! - tunnel routing: `<range> dev lash_vxlan src <this node's gateway>`, for
//!   what the node itself sends (pods' packets are encapsulated by
//!   from-container before any route is looked at); replies come back to the
//!   gateway address, inside this node's pod range, so through the tunnel.

use std::net::Ipv4Addr;

use futures::TryStreamExt;
use rtnetlink::{
    packet_route::{
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol},
        AddressFamily,
    },
    Handle, RouteMessageBuilder,
};

use crate::node::netlink::{errno, nl, NodeNetError};

/// lash's route protocol number (iproute2 prints it as a number).
pub const ROUTE_PROTOCOL: u8 = 199;

/// The main routing table.
const MAIN_TABLE: u8 = 254;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Via {
    Gateway(Ipv4Addr),
    Device { ifindex: u32, src: Ipv4Addr },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeerRoute {
    pub dst: (Ipv4Addr, u8),
    pub via: Via,
}

fn message(r: &PeerRoute) -> RouteMessage {
    let b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(r.dst.0, r.dst.1)
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL));
    match r.via {
        Via::Gateway(gw) => b.gateway(gw).build(),
        Via::Device { ifindex, src } => b.output_interface(ifindex).pref_source(src).build(),
    }
}

/// Reads a listed route back as ours, if it is one of ours in the main table.
fn decode(m: &RouteMessage) -> Option<PeerRoute> {
    if m.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL)
        || m.header.address_family != AddressFamily::Inet
        || m.header.table != MAIN_TABLE
    {
        return None;
    }
    let (mut dst, mut gw, mut oif, mut src) = (None, None, None, None);
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(*ip),
            RouteAttribute::PrefSource(RouteAddress::Inet(ip)) => src = Some(*ip),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let dst = (dst?, m.header.destination_prefix_length);
    let via = match (gw, oif, src) {
        (Some(g), _, _) => Via::Gateway(g),
        (None, Some(ifindex), Some(src)) => Via::Device { ifindex, src },
        // Ours but of no shape we make: listed so that it is removed.
        (None, Some(ifindex), None) => Via::Device {
            ifindex,
            src: Ipv4Addr::UNSPECIFIED,
        },
        _ => return None,
    };
    Some(PeerRoute { dst, via })
}

/// lash's routes in the main table now.
pub async fn list(handle: &Handle) -> Result<Vec<(PeerRoute, RouteMessage)>, NodeNetError> {
    let mut out = Vec::new();
    let mut routes = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Some(m) = routes.try_next().await.map_err(nl("listing routes"))? {
        if let Some(r) = decode(&m) {
            out.push((r, m));
        }
    }
    Ok(out)
}

/// Adds (or replaces: another next hop for the same range) `r`.
pub async fn add(handle: &Handle, r: &PeerRoute) -> Result<(), NodeNetError> {
    handle
        .route()
        .add(message(r))
        .replace()
        .execute()
        .await
        .map_err(nl(format!(
            "adding the route to {}/{} ({:?})",
            r.dst.0, r.dst.1, r.via
        )))
}

/// Removes a listed route; one already gone is fine.
pub async fn remove(handle: &Handle, m: RouteMessage) -> Result<(), NodeNetError> {
    match handle.route().del(m).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::ESRCH) => Ok(()),
        Err(e) => Err(nl("removing a route")(e)),
    }
}
