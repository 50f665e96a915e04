//! The pod's veth pair, made and removed from the node's namespace: the
//! host end (`lxc…`) stays here, the peer is created directly inside the
//! container's namespace under CNI_IFNAME (so it never appears, even for a
//! moment, under a name that could clash with one of the node's links).

use std::os::fd::AsRawFd;

use netlink_packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::{
    mac::Mac,
    netns::Netns,
    rtnl::{self, NetError},
};

pub struct Pair<'a> {
    pub host: &'a str,
    pub host_mac: Mac,
    pub pod: &'a str,
    pub pod_mac: Mac,
    pub pod_netns: &'a Netns,
    /// Both ends' MTU; None: the kernel's default.
    pub mtu: Option<u32>,
}

/// Creates the pair, both ends down.
pub async fn create(h: &Handle, pair: &Pair<'_>) -> Result<(), NetError> {
    let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(pair.pod)
        .address(pair.pod_mac.0.to_vec())
        .setns_by_fd(pair.pod_netns.fd().as_raw_fd());
    let mut host = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(
        netlink_packet_route::link::InfoKind::Veth,
    )
    .name(pair.host.to_string())
    .address(pair.host_mac.0.to_vec());
    if let Some(mtu) = pair.mtu {
        peer = peer.mtu(mtu);
        host = host.mtu(mtu);
    }
    let message = host
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
        .build();
    h.link().add(message).execute().await.map_err(|e| {
        NetError::netlink(
            format!(
                "creating veth {} with peer {} in {}",
                pair.host,
                pair.pod,
                pair.pod_netns.path().display()
            ),
            e,
        )
    })
}

/// Deletes the link called `name` (for a veth, its peer goes with it).
/// Returns whether there was one.
pub async fn delete(h: &Handle, name: &str) -> Result<bool, NetError> {
    let Some(link) = rtnl::link_by_name(h, name).await? else {
        return Ok(false);
    };
    match h.link().del(link.header.index).execute().await {
        Ok(()) => Ok(true),
        Err(e) => {
            let e = NetError::netlink(format!("deleting link {name}"), e);
            // Gone between the lookup and the delete: what we wanted.
            if e.is_no_device() {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}
