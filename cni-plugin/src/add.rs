//! ADD: an address from the agent, the veth pair, the pod side configured
//! inside CNI_NETNS, the host side up with its route, then the agent makes
//! the lxc an endpoint. Any failure undoes every step taken so far, in
//! reverse, before the error is reported.

use std::net::{IpAddr, Ipv4Addr};

use lash_api::v1::Endpoint;

use crate::{
    agent::Lease,
    error::CniError,
    host_net,
    mac::Mac,
    netns::Netns,
    pod_net,
    result::{AddResult, Cidr, Interface, IpConfig, Route},
    rtnl::{self, NetError},
    verbs::Call,
    veth,
};

pub fn add(call: &Call) -> Result<AddResult, CniError> {
    let lease = call
        .agent
        .allocate(call.attachment())
        .map_err(|p| call.agent_failed(p))?;
    let mut undo = Undo {
        address: true,
        ..Undo::default()
    };
    match build(call, lease, &mut undo) {
        Ok(result) => Ok(result),
        Err(cause) => Err(undo.run(call, cause)),
    }
}

/// What ADD has made so far, for a rollback.
#[derive(Default)]
struct Undo {
    address: bool,
    veth: bool,
    endpoint: bool,
}

impl Undo {
    /// Removes what was made, last first, and returns the error to report:
    /// `cause`, plus whatever could not be removed.
    fn run(self, call: &Call, cause: CniError) -> CniError {
        let mut leftovers = Vec::new();
        if self.endpoint {
            if let Err(p) = call.agent.delete_endpoint(call.attachment()) {
                leftovers.push(format!("deleting the endpoint: {p}"));
            }
        }
        if self.veth {
            let host = call.host_ifname();
            if let Err(e) = rtnl::with_handle(async |h| veth::delete(h, &host).await) {
                leftovers.push(e.to_string());
            }
        }
        if self.address {
            if let Err(p) = call.agent.release(call.attachment()) {
                leftovers.push(format!("releasing the address: {p}"));
            }
        }
        if leftovers.is_empty() {
            cause
        } else {
            CniError::RollbackIncomplete {
                cause: Box::new(cause),
                leftovers,
            }
        }
    }
}

/// The two ends as made.
struct Ends {
    host: String,
    host_mac: Mac,
    host_ifindex: u32,
    pod_mac: Mac,
}

fn build(call: &Call, lease: Lease, undo: &mut Undo) -> Result<AddResult, CniError> {
    let netns_path = call.netns_path();
    let netns = Netns::open(netns_path).map_err(|e| call.netns_failed(e))?;
    let random = || Mac::random().map_err(|e| NetError::io("choosing a random MAC", e));
    let (host_mac, pod_mac) = (
        random().map_err(|e| call.net_failed(e))?,
        random().map_err(|e| call.net_failed(e))?,
    );
    let host = call.host_ifname();

    // From here the veth may exist: a rollback deletes it by name, which is
    // harmless if it never came to be.
    undo.veth = true;
    let host_ifindex = rtnl::with_handle(async |h| {
        // A crash between this step and the endpoint leaves the lxc behind;
        // the runtime's retry of the ADD meets it here.
        veth::delete(h, &host).await?;
        veth::create(
            h,
            &veth::Pair {
                host: &host,
                host_mac,
                pod: call.ifname(),
                pod_mac,
                pod_netns: &netns,
                mtu: lease.mtu,
            },
        )
        .await?;
        rtnl::link_by_name(h, &host)
            .await?
            .map(|l| l.header.index)
            .ok_or_else(|| NetError {
                doing: format!("finding {host} after creating it"),
                reason: "it is not there".into(),
                errno: None,
            })
    })
    .map_err(|e| call.net_failed(e))?;

    netns
        .run(|| {
            rtnl::with_handle(async |h| {
                pod_net::configure(h, call.ifname(), lease.address, lease.gateway).await
            })
        })
        .map_err(|e| call.netns_failed(e))?
        .map_err(|e| call.net_failed(e))?;

    rtnl::with_handle(async |h| {
        host_net::up(h, host_ifindex, &host).await?;
        if host_net::disable_rp_filter(&host)? {
            eprintln!(
                "lash-cni: net.ipv4.conf.all.rp_filter was not 0; set it to 0 so that {host}'s 0 \
                 takes effect (the kernel uses the larger of the two)"
            );
        }
        host_net::add_pod_route(h, host_ifindex, &host, lease.address).await
    })
    .map_err(|e| call.net_failed(e))?;

    let ends = Ends {
        host,
        host_mac,
        host_ifindex,
        pod_mac,
    };
    undo.endpoint = true;
    call.agent
        .create_endpoint(endpoint(call, &ends, lease.address))
        .map_err(|p| call.agent_failed(p))?;

    Ok(result(
        &ends,
        call.ifname(),
        &netns_path.to_string_lossy(),
        lease,
    ))
}

fn endpoint(call: &Call, ends: &Ends, address: Ipv4Addr) -> Endpoint {
    Endpoint {
        attachment: Some(call.attachment()),
        address: address.to_string(),
        host_ifname: ends.host.clone(),
        host_ifindex: ends.host_ifindex,
        host_mac: ends.host_mac.to_string(),
        pod_mac: ends.pod_mac.to_string(),
        netns: call.netns_path().to_string_lossy().into_owned(),
        ..Endpoint::default()
    }
}

/// Index of the pod's interface in the result's `interfaces`.
const POD_INTERFACE: usize = 1;

/// The result: the lxc and the pod's interface (with the MACs runtimes such
/// as Podman read), the /32 on the pod's interface, and its two routes.
fn result(ends: &Ends, ifname: &str, sandbox: &str, lease: Lease) -> AddResult {
    let gateway = IpAddr::V4(lease.gateway);
    AddResult {
        interfaces: vec![
            Interface {
                name: ends.host.clone(),
                mac: Some(ends.host_mac.to_string()),
                ..Interface::default()
            },
            Interface {
                name: ifname.to_string(),
                mac: Some(ends.pod_mac.to_string()),
                sandbox: Some(sandbox.to_string()),
                ..Interface::default()
            },
        ],
        ips: vec![IpConfig {
            address: Cidr {
                addr: IpAddr::V4(lease.address),
                prefix_len: 32,
            },
            gateway: Some(gateway),
            interface: Some(POD_INTERFACE),
        }],
        routes: vec![
            Route::new(
                Cidr {
                    addr: gateway,
                    prefix_len: 32,
                },
                None,
            ),
            Route::new(
                Cidr {
                    addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    prefix_len: 0,
                },
                Some(gateway),
            ),
        ],
        ..AddResult::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::version::CniVersion;

    #[test]
    fn result_carries_both_ends_the_address_and_the_routes() {
        let ends = Ends {
            host: "lxcc69fce2d2430".into(),
            host_mac: Mac([0x02, 0, 0, 0, 0, 1]),
            host_ifindex: 7,
            pod_mac: Mac([0x0a, 0, 0, 0, 0, 2]),
        };
        let lease = Lease {
            address: Ipv4Addr::new(10, 244, 1, 5),
            gateway: Ipv4Addr::new(10, 244, 1, 1),
            mtu: None,
        };
        let r = result(&ends, "eth0", "/run/netns/pod", lease);
        assert_eq!(
            r.to_json(CniVersion::V1_0_0),
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "lxcc69fce2d2430", "mac": "02:00:00:00:00:01"},
                    {"name": "eth0", "mac": "0a:00:00:00:00:02", "sandbox": "/run/netns/pod"}
                ],
                "ips": [{"address": "10.244.1.5/32", "gateway": "10.244.1.1", "interface": 1}],
                "routes": [{"dst": "10.244.1.1/32"}, {"dst": "0.0.0.0/0", "gw": "10.244.1.1"}],
                "dns": {}
            })
        );
        // 0.x results say the family of each address.
        assert_eq!(r.to_json(CniVersion::V0_3_1)["ips"][0]["version"], "4");
        // What CHECK will be handed back reads as what was written.
        assert_eq!(
            AddResult::from_json(&r.to_json(CniVersion::V1_1_0)).unwrap(),
            r
        );
    }
}
