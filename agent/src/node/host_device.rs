//! `lash_host`, the node's side of every pod's route: a veth pair
//! (`lash_host` and its peer `lash_net`, as Cilium's cilium_host and
//! cilium_net; this kernel has no `dummy`) with the pod CIDR's gateway
//! address on `lash_host` as a /32. Pods never ARP for it through the stack:
//! the lxc's ARP responder answers for every address but the pod's own, and
//! their packets to the gateway reach the node's stack through the lxc.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::{packet_route::address::AddressAttribute, LinkUnspec, LinkVeth};

use super::netlink::{connect, errno, link_index, nl, NodeNetError};

pub const HOST_DEVICE: &str = "lash_host";
pub const NET_DEVICE: &str = "lash_net";

/// Makes `lash_host`/`lash_net` exist, be up, and hold `gateway`/32; what is
/// already there is kept.
pub async fn ensure_host_device(gateway: Ipv4Addr) -> Result<(), NodeNetError> {
    let handle = connect()?;
    if link_index(&handle, HOST_DEVICE).await?.is_none() {
        match handle
            .link()
            .add(LinkVeth::new(HOST_DEVICE, NET_DEVICE).build())
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(nl(format!("creating {HOST_DEVICE}"))(e)),
        }
    }
    for name in [HOST_DEVICE, NET_DEVICE] {
        let index = link_index(&handle, name)
            .await?
            .ok_or_else(|| nl(format!("finding {name}"))(rtnetlink::Error::RequestFailed))?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(nl(format!("setting {name} up")))?;
        if name == HOST_DEVICE {
            match handle
                .address()
                .add(index, IpAddr::V4(gateway), 32)
                .execute()
                .await
            {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(nl(format!("adding {gateway}/32 to {name}"))(e)),
            }
        }
    }
    Ok(())
}

/// Every IPv4 address of this network namespace, loopback's included.
pub async fn ipv4_addresses() -> Result<Vec<Ipv4Addr>, NodeNetError> {
    let handle = connect()?;
    let mut out = Vec::new();
    let mut addrs = handle.address().get().execute();
    while let Some(msg) = addrs.try_next().await.map_err(nl("listing addresses"))? {
        for attr in msg.attributes {
            if let AddressAttribute::Local(IpAddr::V4(ip)) = attr {
                out.push(ip);
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}
