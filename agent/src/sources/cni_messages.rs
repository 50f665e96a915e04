//! Between the API's endpoint messages and the endpoint manager's types:
//! parsing what lash-cni sends (addresses, MACs) with errors that say which
//! field was wrong, and the manager's errors as gRPC statuses.

use std::net::Ipv4Addr;

use lash_api::{v1::Endpoint, Attachment};
use tonic::Status;

use crate::endpoints::{EndpointError, EndpointSpec, EndpointView};

/// `aa:bb:cc:dd:ee:ff` (either case).
pub fn parse_mac(field: &str, s: &str) -> Result<[u8; 6], Status> {
    let bad =
        || Status::invalid_argument(format!("{field} {s:?} is not a MAC (aa:bb:cc:dd:ee:ff)"));
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next().ok_or_else(bad)?;
        if p.len() != 2 {
            return Err(bad());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
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
        host_mac: mac_string(r.host_mac),
        pod_mac: mac_string(r.pod_mac),
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
    fn macs_parse_and_print_back() {
        let m = parse_mac("pod_mac", "0A:1b:2c:3d:4e:5f").unwrap();
        assert_eq!(m, [0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f]);
        assert_eq!(mac_string(m), "0a:1b:2c:3d:4e:5f");
        for bad in [
            "",
            "0a:1b:2c:3d:4e",
            "0a:1b:2c:3d:4e:5f:00",
            "0a:1b:2c:3d:4e:zz",
            "a:1b:2c:3d:4e:5f",
        ] {
            let e = parse_mac("pod_mac", bad).unwrap_err();
            assert!(e.message().contains("pod_mac"), "{bad}: {}", e.message());
        }
    }
}
