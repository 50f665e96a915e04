//! `lash_vxlan`, the node's end of the tunnel (tunnel routing): a VXLAN
//! device in external (collect_md) mode on UDP 8472, so one device serves
//! every other node, the programs choosing the outer destination and VNI
//! per packet. NOARP: the node's own routes to other pod ranges point at
//! the device, and its egress program sets the tunnel key; nobody on the
//! other side would answer an ARP request.
//!
//! Its MTU is the underlay's minus VXLAN's 50 bytes, and the pods get the
//! same, so no pod sends what the tunnel would have to fragment.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use lash_common::tunnel::{VXLAN_OVERHEAD, VXLAN_PORT};
use rtnetlink::{
    packet_route::{address::AddressAttribute, link::LinkAttribute, route::RouteAttribute},
    Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder,
};

use super::netlink::{connect, errno, link_index, nl, NodeNetError};

pub const VXLAN_DEVICE: &str = "lash_vxlan";

/// The MTU assumed for the underlay when nothing tells better.
const DEFAULT_UNDERLAY_MTU: u32 = 1500;

/// Makes `lash_vxlan` exist as it must be (external, port 8472, NOARP) with
/// `mtu`, and up; returns its ifindex. A device of that name made otherwise
/// is replaced.
pub async fn ensure_vxlan(mtu: u32) -> Result<u32, NodeNetError> {
    let handle = connect()?;
    if let Some(index) = link_index(&handle, VXLAN_DEVICE).await? {
        if !is_ours(&handle, index).await? {
            handle
                .link()
                .del(index)
                .execute()
                .await
                .map_err(nl(format!("replacing {VXLAN_DEVICE}")))?;
        }
    }
    if link_index(&handle, VXLAN_DEVICE).await?.is_none() {
        // VNI 0 here: in external mode the programs set it per packet.
        let msg = LinkVxlan::new(VXLAN_DEVICE, 0)
            .port(VXLAN_PORT)
            .collect_metadata(true)
            .learning(false)
            .mtu(mtu)
            .arp(false)
            .build();
        match handle.link().add(msg).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(nl(format!("creating {VXLAN_DEVICE}"))(e)),
        }
    }
    let index = link_index(&handle, VXLAN_DEVICE)
        .await?
        .ok_or_else(|| nl(format!("finding {VXLAN_DEVICE}"))(rtnetlink::Error::RequestFailed))?;
    set_mtu_and_up(&handle, index, mtu).await?;
    Ok(index)
}

async fn set_mtu_and_up(handle: &Handle, index: u32, mtu: u32) -> Result<(), NodeNetError> {
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .mtu(mtu)
                .arp(false)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(nl(format!("setting {VXLAN_DEVICE} up with MTU {mtu}")))
}

/// Whether the device at `index` is a VXLAN device on our port: another kind
/// of device under our name is not something to send packets into.
async fn is_ours(handle: &Handle, index: u32) -> Result<bool, NodeNetError> {
    use rtnetlink::packet_route::link::{InfoData, InfoVxlan, LinkInfo};
    let mut links = handle.link().get().match_index(index).execute();
    let Some(msg) = links.try_next().await.map_err(nl("reading lash_vxlan"))? else {
        return Ok(false);
    };
    let mut vxlan = false;
    let mut port_ok = false;
    let mut external = false;
    for attr in &msg.attributes {
        if let LinkAttribute::LinkInfo(infos) = attr {
            for info in infos {
                if let LinkInfo::Data(InfoData::Vxlan(v)) = info {
                    vxlan = true;
                    for x in v {
                        match x {
                            InfoVxlan::Port(p) => port_ok = *p == VXLAN_PORT,
                            InfoVxlan::CollectMetadata(c) => external = *c,
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    Ok(vxlan && port_ok && external)
}

/// Removes `lash_vxlan` if it exists (native routing needs none; a device
/// left from a tunnel-mode run would still take UDP 8472).
pub async fn remove_vxlan() -> Result<bool, NodeNetError> {
    let handle = connect()?;
    let Some(index) = link_index(&handle, VXLAN_DEVICE).await? else {
        return Ok(false);
    };
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(nl(format!("removing {VXLAN_DEVICE}"))(e)),
    }
}

/// Sets `lash_vxlan`'s MTU (the underlay's became known or changed).
pub async fn set_vxlan_mtu(mtu: u32) -> Result<(), NodeNetError> {
    let handle = connect()?;
    let index = link_index(&handle, VXLAN_DEVICE)
        .await?
        .ok_or_else(|| nl(format!("finding {VXLAN_DEVICE}"))(rtnetlink::Error::RequestFailed))?;
    set_mtu_and_up(&handle, index, mtu).await
}

/// The overlay MTU for an underlay MTU.
pub fn overlay_mtu(underlay: u32) -> u32 {
    underlay.saturating_sub(VXLAN_OVERHEAD)
}

async fn link_mtu(handle: &Handle, index: u32) -> Result<Option<u32>, NodeNetError> {
    let mut links = handle.link().get().match_index(index).execute();
    let Some(msg) = links.try_next().await.map_err(nl("reading a link"))? else {
        return Ok(None);
    };
    Ok(msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    }))
}

/// The underlay's MTU: that of the device holding `node_ip` when it is
/// known and here, else that of the default route's device, else 1500.
pub async fn underlay_mtu(node_ip: Option<Ipv4Addr>) -> Result<u32, NodeNetError> {
    let handle = connect()?;
    if let Some(ip) = node_ip {
        let mut addrs = handle.address().get().execute();
        while let Some(msg) = addrs.try_next().await.map_err(nl("listing addresses"))? {
            let holds = msg
                .attributes
                .iter()
                .any(|a| matches!(a, AddressAttribute::Local(IpAddr::V4(a)) if *a == ip));
            if holds {
                if let Some(m) = link_mtu(&handle, msg.header.index).await? {
                    return Ok(m);
                }
            }
        }
    }
    let mut routes = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Some(r) = routes.try_next().await.map_err(nl("listing routes"))? {
        if r.header.destination_prefix_length != 0 {
            continue;
        }
        let oif = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        });
        if let Some(i) = oif {
            if let Some(m) = link_mtu(&handle, i).await? {
                return Ok(m);
            }
        }
    }
    Ok(DEFAULT_UNDERLAY_MTU)
}

/// Turns IPv4 forwarding on in this network namespace: native routing hands
/// packets between the underlay and the pods' devices through the kernel
/// (and the datapath's FIB lookup refuses to forward where it is off).
pub fn enable_forwarding() -> std::io::Result<bool> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(path)?.trim() == "1" {
        return Ok(false);
    }
    std::fs::write(path, "1")?;
    Ok(true)
}

/// The MTU of device `name` in this network namespace (an ioctl on a
/// socket of this namespace: /sys may show another one's devices).
pub fn device_mtu(name: &str) -> std::io::Result<u32> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::other(format!(
            "{name:?}: not a device name"
        )));
    }
    // SAFETY: plain socket call; closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: all zeroes is a valid ifreq.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: a socket of ours and an ifreq with a NUL-terminated name.
    let r = unsafe { libc::ioctl(fd, libc::SIOCGIFMTU, &mut req) };
    let err = std::io::Error::last_os_error();
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    if r < 0 {
        return Err(err);
    }
    // SAFETY: SIOCGIFMTU fills the mtu member.
    Ok(unsafe { req.ifr_ifru.ifru_mtu } as u32)
}
