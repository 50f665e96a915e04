//! The ADD result (and the `prevResult` a runtime hands back to DEL and
//! CHECK): interfaces, addresses, routes, DNS, written in the config's own
//! `cniVersion`.
//!
//! What differs between the versions we speak:
//! - 0.3.0, 0.3.1, 0.4.0: each entry of `ips` carries `"version": "4"|"6"`;
//!   1.0.0 dropped it.
//! - 1.1.0 added `mtu`, `socketPath`, `pciID` to interfaces and `mtu`,
//!   `advmss`, `priority`, `table`, `scope` to routes; older versions never
//!   show them.
//!
//! Reading is lenient where versions differ (a `version` in `ips` is checked
//! against the address if present, not required), strict where the spec
//! fixes a shape (an address is CIDR, an interface index is a number).

use std::{fmt, net::IpAddr, str::FromStr};

use serde_json::{json, Map, Value};

use crate::version::CniVersion;

/// An address with its prefix length, host bits kept ("10.0.1.5/24").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not in CIDR notation (address/length)"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} in {s:?} is not an IP address"))?;
        let prefix_len: u8 = len
            .parse()
            .map_err(|_| format!("prefix length {len:?} in {s:?} is not a number"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(format!("prefix length {prefix_len} in {s:?} is over {max}"));
        }
        Ok(Cidr { addr, prefix_len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    /// The netns path for an interface inside the container; None on the host.
    pub sandbox: Option<String>,
    /// 1.1.0 only.
    pub mtu: Option<u32>,
    /// 1.1.0 only.
    pub socket_path: Option<String>,
    /// 1.1.0 only.
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    pub address: Cidr,
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: Cidr,
    pub gw: Option<IpAddr>,
    /// The rest are 1.1.0 only.
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub priority: Option<u32>,
    pub table: Option<u32>,
    pub scope: Option<u32>,
}

impl Route {
    pub fn new(dst: Cidr, gw: Option<IpAddr>) -> Route {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub domain: Option<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

/// Where in a result a value was wrong, relative to the result's root
/// ("ips[0].address"), and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

fn bad(field: impl Into<String>, problem: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        problem: problem.into(),
    }
}

impl AddResult {
    /// The result as `version` writes it.
    pub fn to_json(&self, version: CniVersion) -> Value {
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version.as_str()));
        if !self.interfaces.is_empty() {
            let list = self.interfaces.iter().map(|i| interface_json(i, version));
            out.insert("interfaces".into(), Value::Array(list.collect()));
        }
        if !self.ips.is_empty() {
            let list = self.ips.iter().map(|ip| ip_json(ip, version));
            out.insert("ips".into(), Value::Array(list.collect()));
        }
        if !self.routes.is_empty() {
            let list = self.routes.iter().map(|r| route_json(r, version));
            out.insert("routes".into(), Value::Array(list.collect()));
        }
        out.insert("dns".into(), dns_json(&self.dns));
        Value::Object(out)
    }

    /// Reads a result written in any version we speak (a `prevResult`).
    pub fn from_json(value: &Value) -> Result<AddResult, FieldError> {
        let obj = value
            .as_object()
            .ok_or_else(|| bad("", "must be an object"))?;
        let mut result = AddResult::default();
        for (i, v) in array(obj, "interfaces", "")?.iter().enumerate() {
            result
                .interfaces
                .push(read_interface(v, &format!("interfaces[{i}]"))?);
        }
        for (i, v) in array(obj, "ips", "")?.iter().enumerate() {
            let at = format!("ips[{i}]");
            let ip = read_ip(v, &at)?;
            if let Some(idx) = ip.interface {
                if idx >= result.interfaces.len() {
                    return Err(bad(
                        format!("{at}.interface"),
                        format!(
                            "is {idx}, but there are {} interfaces",
                            result.interfaces.len()
                        ),
                    ));
                }
            }
            result.ips.push(ip);
        }
        for (i, v) in array(obj, "routes", "")?.iter().enumerate() {
            result.routes.push(read_route(v, &format!("routes[{i}]"))?);
        }
        if let Some(dns) = obj.get("dns") {
            result.dns = read_dns(dns)?;
        }
        Ok(result)
    }
}

fn interface_json(i: &Interface, version: CniVersion) -> Value {
    let mut o = Map::new();
    o.insert("name".into(), json!(i.name));
    if let Some(mac) = &i.mac {
        o.insert("mac".into(), json!(mac));
    }
    if version.has_link_details() {
        if let Some(mtu) = i.mtu {
            o.insert("mtu".into(), json!(mtu));
        }
    }
    if let Some(sandbox) = &i.sandbox {
        o.insert("sandbox".into(), json!(sandbox));
    }
    if version.has_link_details() {
        if let Some(p) = &i.socket_path {
            o.insert("socketPath".into(), json!(p));
        }
        if let Some(p) = &i.pci_id {
            o.insert("pciID".into(), json!(p));
        }
    }
    Value::Object(o)
}

fn ip_json(ip: &IpConfig, version: CniVersion) -> Value {
    let mut o = Map::new();
    if version.ips_carry_family() {
        let family = if ip.address.addr.is_ipv4() { "4" } else { "6" };
        o.insert("version".into(), json!(family));
    }
    o.insert("address".into(), json!(ip.address.to_string()));
    if let Some(gw) = ip.gateway {
        o.insert("gateway".into(), json!(gw.to_string()));
    }
    if let Some(idx) = ip.interface {
        o.insert("interface".into(), json!(idx));
    }
    Value::Object(o)
}

fn route_json(r: &Route, version: CniVersion) -> Value {
    let mut o = Map::new();
    o.insert("dst".into(), json!(r.dst.to_string()));
    if let Some(gw) = r.gw {
        o.insert("gw".into(), json!(gw.to_string()));
    }
    if version.has_link_details() {
        for (key, v) in [
            ("mtu", r.mtu),
            ("advmss", r.advmss),
            ("priority", r.priority),
            ("table", r.table),
            ("scope", r.scope),
        ] {
            if let Some(v) = v {
                o.insert(key.into(), json!(v));
            }
        }
    }
    Value::Object(o)
}

fn dns_json(d: &Dns) -> Value {
    let mut o = Map::new();
    if !d.nameservers.is_empty() {
        o.insert("nameservers".into(), json!(d.nameservers));
    }
    if let Some(domain) = &d.domain {
        o.insert("domain".into(), json!(domain));
    }
    if !d.search.is_empty() {
        o.insert("search".into(), json!(d.search));
    }
    if !d.options.is_empty() {
        o.insert("options".into(), json!(d.options));
    }
    Value::Object(o)
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

fn object<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>, FieldError> {
    v.as_object().ok_or_else(|| bad(at, "must be an object"))
}

fn array<'a>(o: &'a Map<String, Value>, key: &str, at: &str) -> Result<&'a [Value], FieldError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(bad(join(at, key), "must be an array")),
    }
}

fn opt_str<'a>(
    o: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<&'a str>, FieldError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(join(at, key), "must be a string")),
    }
}

fn opt_u32(o: &Map<String, Value>, key: &str, at: &str) -> Result<Option<u32>, FieldError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| bad(join(at, key), "must be an unsigned 32-bit number")),
    }
}

fn opt_ip(o: &Map<String, Value>, key: &str, at: &str) -> Result<Option<IpAddr>, FieldError> {
    opt_str(o, key, at)?
        .map(|s| {
            s.parse()
                .map_err(|_| bad(join(at, key), format!("{s:?} is not an IP address")))
        })
        .transpose()
}

fn cidr(o: &Map<String, Value>, key: &str, at: &str) -> Result<Cidr, FieldError> {
    let s = opt_str(o, key, at)?.ok_or_else(|| bad(join(at, key), "is missing"))?;
    s.parse().map_err(|e| bad(join(at, key), e))
}

fn strings(o: &Map<String, Value>, key: &str, at: &str) -> Result<Vec<String>, FieldError> {
    array(o, key, at)?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(format!("{}[{i}]", join(at, key)), "must be a string"))
        })
        .collect()
}

fn read_interface(v: &Value, at: &str) -> Result<Interface, FieldError> {
    let o = object(v, at)?;
    let name = opt_str(o, "name", at)?.ok_or_else(|| bad(join(at, "name"), "is missing"))?;
    Ok(Interface {
        name: name.to_string(),
        mac: opt_str(o, "mac", at)?.map(str::to_string),
        sandbox: opt_str(o, "sandbox", at)?.map(str::to_string),
        mtu: opt_u32(o, "mtu", at)?,
        socket_path: opt_str(o, "socketPath", at)?.map(str::to_string),
        pci_id: opt_str(o, "pciID", at)?.map(str::to_string),
    })
}

fn read_ip(v: &Value, at: &str) -> Result<IpConfig, FieldError> {
    let o = object(v, at)?;
    let address = cidr(o, "address", at)?;
    if let Some(family) = opt_str(o, "version", at)? {
        let expected = if address.addr.is_ipv4() { "4" } else { "6" };
        if family != expected {
            return Err(bad(
                join(at, "version"),
                format!("is {family:?} but the address {address} is IPv{expected}"),
            ));
        }
    }
    let interface = match o.get("interface") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| bad(join(at, "interface"), "must be an index (unsigned number)"))?,
        ),
    };
    Ok(IpConfig {
        address,
        gateway: opt_ip(o, "gateway", at)?,
        interface,
    })
}

fn read_route(v: &Value, at: &str) -> Result<Route, FieldError> {
    let o = object(v, at)?;
    Ok(Route {
        dst: cidr(o, "dst", at)?,
        gw: opt_ip(o, "gw", at)?,
        mtu: opt_u32(o, "mtu", at)?,
        advmss: opt_u32(o, "advmss", at)?,
        priority: opt_u32(o, "priority", at)?,
        table: opt_u32(o, "table", at)?,
        scope: opt_u32(o, "scope", at)?,
    })
}

fn read_dns(v: &Value) -> Result<Dns, FieldError> {
    let o = object(v, "dns")?;
    Ok(Dns {
        nameservers: strings(o, "nameservers", "dns")?,
        domain: opt_str(o, "domain", "dns")?.map(str::to_string),
        search: strings(o, "search", "dns")?,
        options: strings(o, "options", "dns")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod's result as lash will build it: the host-side lxc, the pod's
    /// eth0, a /32 and routes via the gateway.
    fn sample() -> AddResult {
        AddResult {
            interfaces: vec![
                Interface {
                    name: "lxc0123456789ab".into(),
                    mac: Some("2e:e6:8a:a2:06:1e".into()),
                    mtu: Some(1500),
                    ..Interface::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("12:52:e3:7e:87:4f".into()),
                    sandbox: Some("/run/netns/pod".into()),
                    mtu: Some(1500),
                    ..Interface::default()
                },
            ],
            ips: vec![IpConfig {
                address: "10.244.1.5/32".parse().unwrap(),
                gateway: Some("10.244.1.1".parse().unwrap()),
                interface: Some(1),
            }],
            routes: vec![
                Route::new("10.244.1.1/32".parse().unwrap(), None),
                Route {
                    mtu: Some(1450),
                    ..Route::new(
                        "0.0.0.0/0".parse().unwrap(),
                        Some("10.244.1.1".parse().unwrap()),
                    )
                },
            ],
            dns: Dns::default(),
        }
    }

    #[test]
    fn v1_1_0_shape() {
        assert_eq!(
            sample().to_json(CniVersion::V1_1_0),
            json!({
                "cniVersion": "1.1.0",
                "interfaces": [
                    {"name": "lxc0123456789ab", "mac": "2e:e6:8a:a2:06:1e", "mtu": 1500},
                    {"name": "eth0", "mac": "12:52:e3:7e:87:4f", "mtu": 1500, "sandbox": "/run/netns/pod"}
                ],
                "ips": [{"address": "10.244.1.5/32", "gateway": "10.244.1.1", "interface": 1}],
                "routes": [
                    {"dst": "10.244.1.1/32"},
                    {"dst": "0.0.0.0/0", "gw": "10.244.1.1", "mtu": 1450}
                ],
                "dns": {}
            })
        );
    }

    #[test]
    fn v1_0_0_drops_what_1_1_0_added() {
        assert_eq!(
            sample().to_json(CniVersion::V1_0_0),
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "lxc0123456789ab", "mac": "2e:e6:8a:a2:06:1e"},
                    {"name": "eth0", "mac": "12:52:e3:7e:87:4f", "sandbox": "/run/netns/pod"}
                ],
                "ips": [{"address": "10.244.1.5/32", "gateway": "10.244.1.1", "interface": 1}],
                "routes": [{"dst": "10.244.1.1/32"}, {"dst": "0.0.0.0/0", "gw": "10.244.1.1"}],
                "dns": {}
            })
        );
    }

    #[test]
    fn v0_x_ips_carry_their_family() {
        for v in [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0] {
            let out = sample().to_json(v);
            assert_eq!(out["cniVersion"], v.as_str());
            assert_eq!(out["ips"][0]["version"], "4");
            assert!(out["interfaces"][0].get("mtu").is_none());
        }
        let mut r = sample();
        r.ips[0].address = "fd00::5/128".parse().unwrap();
        r.ips[0].gateway = None;
        assert_eq!(r.to_json(CniVersion::V0_3_1)["ips"][0]["version"], "6");
        assert!(r.to_json(CniVersion::V1_0_0)["ips"][0]
            .get("version")
            .is_none());
    }

    #[test]
    fn round_trips_through_every_version() {
        for v in CniVersion::ALL {
            let back = AddResult::from_json(&sample().to_json(v)).unwrap();
            let mut expected = sample();
            if !v.has_link_details() {
                for i in &mut expected.interfaces {
                    i.mtu = None;
                }
                expected.routes[1].mtu = None;
            }
            assert_eq!(back, expected, "{v}");
        }
    }

    #[test]
    fn dns_is_read_and_written() {
        let r = AddResult {
            dns: Dns {
                nameservers: vec!["10.96.0.10".into()],
                domain: Some("cluster.local".into()),
                search: vec!["default.svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            },
            ..AddResult::default()
        };
        let v = r.to_json(CniVersion::V1_0_0);
        assert_eq!(v["dns"]["options"], json!(["ndots:5"]));
        assert_eq!(AddResult::from_json(&v).unwrap(), r);
    }

    #[test]
    fn reading_names_the_bad_field() {
        let cases = [
            (json!([]), "", "must be an object"),
            (
                json!({"interfaces": [{}]}),
                "interfaces[0].name",
                "is missing",
            ),
            (
                json!({"ips": [{"address": "10.0.0.1"}]}),
                "ips[0].address",
                "CIDR",
            ),
            (
                json!({"ips": [{"address": "10.0.0.1/33"}]}),
                "ips[0].address",
                "over 32",
            ),
            (
                json!({"ips": [{"version": "6", "address": "10.0.0.1/32"}]}),
                "ips[0].version",
                "IPv4",
            ),
            (
                json!({"ips": [{"address": "10.0.0.1/32", "interface": 0}]}),
                "ips[0].interface",
                "0 interfaces",
            ),
            (
                json!({"routes": [{"dst": "0.0.0.0/0", "gw": "x"}]}),
                "routes[0].gw",
                "not an IP",
            ),
            (
                json!({"routes": [{"dst": "0.0.0.0/0", "mtu": -1}]}),
                "routes[0].mtu",
                "unsigned",
            ),
            (
                json!({"dns": {"nameservers": [1]}}),
                "dns.nameservers[0]",
                "string",
            ),
        ];
        for (value, field, problem) in cases {
            let err = AddResult::from_json(&value).unwrap_err();
            assert_eq!(err.field, field, "{value}");
            assert!(err.problem.contains(problem), "{value}: {}", err.problem);
        }
    }

    #[test]
    fn cidr_parse_and_display() {
        let c: Cidr = "192.168.1.3/24".parse().unwrap();
        assert_eq!(c.prefix_len, 24);
        assert_eq!(c.to_string(), "192.168.1.3/24");
        assert_eq!(
            "fd00::1/64".parse::<Cidr>().unwrap().to_string(),
            "fd00::1/64"
        );
        assert!("fd00::1/129".parse::<Cidr>().is_err());
        assert!("1.2.3.4/x".parse::<Cidr>().is_err());
    }
}
