//! Between the API's endpoint messages and the endpoint manager's types:
//! parsing what lash-cni sends (addresses, MACs) with errors that say which
//! field was wrong, and the manager's errors as gRPC statuses.

use std::net::Ipv4Addr;

use lash_api::{v1::Endpoint, Attachment};
use tonic::Status;

use crate::endpoints::{EndpointError, EndpointSpec, EndpointView};

fn parse_mac(field: &str, s: &str) -> Result<[u8; 6], Status> {
    crate::mac::parse(s).ok_or_else(|| {
        Status::invalid_argument(format!("{field} {s:?} is not a MAC (aa:bb:cc:dd:ee:ff)"))
    })
}

pub fn spec(e: Endpoint) -> Result<EndpointSpec, Status> {
    let a = e
        .attachment
        .ok_or_else(|| Status::invalid_argument("the endpoint has no attachment"))?;
    let address: Ipv4Addr = e.address.parse().map_err(|_| {
        Status::invalid_argument(format!("address {:?} is not an IPv4 address", e.address))
    })?;
    Ok(EndpointSpec {
        container_id: a.container_id,
        ifname: a.ifname,
        address,
        host_ifname: e.host_ifname,
        host_ifindex: e.host_ifindex,
        host_mac: parse_mac("host_mac", &e.host_mac)?,
        pod_mac: parse_mac("pod_mac", &e.pod_mac)?,
        netns: e.netns,
    })
}

pub fn message(v: &EndpointView) -> Endpoint {
    let r = &v.record;
    Endpoint {
        attachment: Some(Attachment::new(&r.container_id, &r.ifname)),
        id: u32::from(r.id),
        address: r.address.to_string(),
        host_ifname: r.host_ifname.clone(),
        host_ifindex: r.host_ifindex,
        host_mac: crate::mac::format(r.host_mac),
        pod_mac: crate::mac::format(r.pod_mac),
        netns: r.netns.clone(),
        identity: r.identity,
        programs: v.programs.clone(),
    }
}

pub fn status(e: EndpointError) -> Status {
    let msg = e.to_string();
    match e {
        EndpointError::Invalid(_) => Status::invalid_argument(msg),
        EndpointError::Conflict(_) => Status::already_exists(msg),
        EndpointError::NotHere(_) => Status::failed_precondition(msg),
        EndpointError::IdsExhausted => Status::resource_exhausted(msg),
        _ => Status::internal(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_mac_names_its_field() {
        let e = parse_mac("pod_mac", "zz").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("pod_mac"), "{}", e.message());
    }
}
