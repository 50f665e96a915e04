//! ADD, CHECK, DEL and GC of the built `lash-cni` against a real agent, both
//! running in a test-made node namespace, with container namespaces the
//! test makes (`ip netns add`) and removes. What is looked at is what the
//! kernel and the agent hold afterwards: the veth pair (names, MACs, up),
//! the /32 and the routes inside the container, the host route and
//! rp_filter on the node, the agent's endpoint and its addresses; and that a
//! failed ADD leaves none of it behind.
//! Needs root (the sandbox); `cargo xtask test` runs it.

use std::{net::Ipv4Addr, path::PathBuf, process::Command};

use lash_api::{
    v1::{GetEndpointRequest, ListEndpointsRequest, StatusRequest},
    Attachment,
};
use lash_tests::{
    cni::{lxc_name, CniRun},
    sandbox::{ip_json, Sandbox},
};
use serde_json::{json, Value};

/// The programs the agent attaches to every lxc, as `Endpoint.programs`
/// names them.
const PROGRAMS: [&str; 2] = ["ingress:from_container", "egress:to_container"];

fn id(i: usize) -> String {
    format!("{i:064x}")
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The link `name` in `ns`, if there.
fn link(ns: &str, name: &str) -> Option<Value> {
    ip_json(ns, &["link", "show"])
        .into_iter()
        .find(|l| l["ifname"] == name)
}

/// A sysctl of the namespace `ns`, read from inside it.
fn sysctl(ns: &str, key: &str) -> String {
    ip(&["netns", "exec", ns, "sysctl", "-n", key])
        .trim()
        .to_string()
}

/// A container's network namespace, removed on drop.
struct Container {
    name: String,
}

impl Container {
    fn new(tag: &str) -> Container {
        let name = format!("lash-cniadd-{tag}-{}", std::process::id());
        ip(&["netns", "add", &name]);
        Container { name }
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The sandbox's node, its agent (inside the node namespace) and the plugin
/// configuration that reaches it.
struct Node {
    sb: Sandbox,
    socket: PathBuf,
    conf: Value,
}

impl Node {
    fn new(tag: &str, cidr: &str) -> Node {
        let mut sb = Sandbox::new(tag, 0).expect("sandbox");
        // (The sandbox runs the agent inside the node namespace.)
        sb.start_agent(&["--pod-cidr", cidr]).expect("agent");
        let socket = lash_api::socket_path(&sb.state_dir());
        let conf = json!({"cniVersion": "1.0.0", "name": "lash", "type": "lash-cni",
                          "agentSocket": socket.to_str().unwrap()});
        Node { sb, socket, conf }
    }

    fn ns(&self) -> &str {
        &self.sb.node_ns
    }

    fn cni(&self, vars: &[(&str, &str)], conf: &Value) -> CniRun {
        lash_tests::cni::run_in(&self.sb.node_netns_path(), vars, &conf.to_string())
    }

    fn add(&self, container: &str, netns: &str, ifname: &str) -> CniRun {
        self.cni(
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", container),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", ifname),
                ("CNI_PATH", "/opt/cni/bin"),
            ],
            &self.conf,
        )
    }

    fn check(&self, container: &str, netns: &str, prev: &Value) -> CniRun {
        let mut conf = self.conf.clone();
        conf["prevResult"] = prev.clone();
        self.cni(
            &[
                ("CNI_COMMAND", "CHECK"),
                ("CNI_CONTAINERID", container),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/opt/cni/bin"),
            ],
            &conf,
        )
    }

    fn del(&self, container: &str, netns: Option<&str>) -> CniRun {
        let mut vars = vec![
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", container),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ];
        if let Some(ns) = netns {
            vars.push(("CNI_NETNS", ns));
        }
        self.cni(&vars, &self.conf)
    }

    fn gc(&self, alive: &[usize]) -> CniRun {
        let mut conf = self.conf.clone();
        conf["cniVersion"] = json!("1.1.0");
        conf["cni.dev/valid-attachments"] = alive
            .iter()
            .map(|&i| json!({"containerID": id(i), "ifname": "eth0"}))
            .collect();
        self.cni(
            &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
            &conf,
        )
    }

    /// Who holds an address, as the agent's ipam.json says.
    fn allocations(&self) -> serde_json::Map<String, Value> {
        let text = std::fs::read_to_string(self.sb.state_dir().join("ipam.json")).unwrap();
        let file: Value = serde_json::from_str(&text).unwrap();
        file["allocations"].as_object().cloned().unwrap_or_default()
    }

    /// The node's lxc veths.
    fn lxc_links(&self) -> Vec<String> {
        ip_json(self.ns(), &["link", "show", "type", "veth"])
            .iter()
            .filter_map(|l| l["ifname"].as_str())
            .filter(|n| n.starts_with("lxc"))
            .map(str::to_string)
            .collect()
    }

    /// A runtime for one use of the API client, dropped right after: the
    /// agent waits for open connections to close before it exits.
    fn api<T>(
        &self,
        f: impl AsyncFnOnce(&mut lash_api::v1::cni_client::CniClient<tonic::transport::Channel>) -> T,
    ) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let mut c = lash_api::connect(&self.socket).await.expect("connecting");
                f(&mut c).await
            })
    }

    fn endpoint(&self, container: &str) -> Option<lash_api::v1::Endpoint> {
        self.api(async |c| {
            match c
                .get_endpoint(GetEndpointRequest {
                    attachment: Some(Attachment::new(container, "eth0")),
                })
                .await
            {
                Ok(e) => Some(e.into_inner()),
                Err(s) if s.code() == tonic::Code::NotFound => None,
                Err(s) => panic!("GetEndpoint: {s}"),
            }
        })
    }

    fn endpoint_owners(&self) -> Vec<String> {
        let mut owners: Vec<String> = self
            .api(async |c| {
                c.list_endpoints(ListEndpointsRequest {})
                    .await
                    .expect("ListEndpoints")
                    .into_inner()
                    .endpoints
            })
            .into_iter()
            .map(|e| e.attachment.unwrap_or_default().owner())
            .collect();
        owners.sort();
        owners
    }
}

fn succeeded(run: &CniRun, what: &str) -> Value {
    assert!(
        run.success,
        "{what} failed: stdout {} stderr {}",
        run.stdout, run.stderr
    );
    serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("{what}: stdout is not JSON ({e}): {:?}", run.stdout))
}

fn mac_of(link: &Value) -> String {
    link["address"].as_str().unwrap().to_string()
}

fn assert_local_unicast(mac: &str) {
    let first = u8::from_str_radix(&mac[..2], 16).unwrap();
    assert_eq!(
        first & 0x03,
        0x02,
        "{mac} is not locally administered unicast"
    );
}

#[test]
fn add_check_and_del_against_the_agent() {
    let node = Node::new("cniadd", "10.244.12.0/24");
    let pod = Container::new("c1");
    let container = id(1);
    let lxc = lxc_name(&container, "eth0");

    // A node whose `all` value is strict: the lxc's own 0 would not count
    // (the kernel uses the larger), so ADD sets `all` to 0 as well.
    ip(&[
        "netns",
        "exec",
        node.ns(),
        "sysctl",
        "-qw",
        "net.ipv4.conf.all.rp_filter=1",
    ]);
    let add = node.add(&container, &pod.path(), "eth0");
    assert!(
        add.stderr.contains("net.ipv4.conf.all.rp_filter"),
        "{}",
        add.stderr
    );
    let result = succeeded(&add, "ADD");
    let gateway: Ipv4Addr = node
        .api(async |c| {
            c.status(StatusRequest {})
                .await
                .unwrap()
                .into_inner()
                .gateway
        })
        .parse()
        .unwrap();

    // The result, in the configuration's version.
    assert_eq!(result["cniVersion"], "1.0.0");
    let interfaces = result["interfaces"].as_array().unwrap();
    assert_eq!(interfaces.len(), 2, "{result}");
    assert_eq!(interfaces[0]["name"], lxc.as_str());
    assert!(interfaces[0].get("sandbox").is_none(), "{result}");
    assert_eq!(interfaces[1]["name"], "eth0");
    assert_eq!(interfaces[1]["sandbox"], pod.path());
    let ips = result["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 1, "{result}");
    let address = ips[0]["address"].as_str().unwrap();
    let pod_ip: Ipv4Addr = address.strip_suffix("/32").expect("a /32").parse().unwrap();
    assert_eq!(pod_ip.octets()[..3], [10, 244, 12], "{address}");
    assert_eq!(ips[0]["gateway"], gateway.to_string());
    assert_eq!(ips[0]["interface"], 1);
    assert!(
        ips[0].get("version").is_none(),
        "1.0.0 has no ips[].version"
    );
    assert_eq!(
        result["routes"],
        json!([{"dst": format!("{gateway}/32")}, {"dst": "0.0.0.0/0", "gw": gateway.to_string()}])
    );
    assert_eq!(
        node.allocations()[&Attachment::new(&container, "eth0").owner()],
        pod_ip.to_string()
    );

    // The host end: up, with the MAC the result names, its own rp_filter
    // off and the effective value 0, and the node's route to the pod.
    let host = link(node.ns(), &lxc).expect("host veth");
    assert_eq!(mac_of(&host), interfaces[0]["mac"].as_str().unwrap());
    assert_local_unicast(&mac_of(&host));
    assert!(
        host["flags"].as_array().unwrap().contains(&json!("UP")),
        "{host}"
    );
    assert_eq!(host["link_type"], "ether");
    assert_eq!(
        sysctl(node.ns(), &format!("net.ipv4.conf.{lxc}.rp_filter")),
        "0"
    );
    assert_eq!(sysctl(node.ns(), "net.ipv4.conf.all.rp_filter"), "0");
    let routes = ip_json(node.ns(), &["route", "show", &format!("{pod_ip}/32")]);
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0]["dev"], lxc.as_str());
    assert_eq!(routes[0]["scope"], "link");
    // No address on the lxc, no bridge, no proxy ARP.
    assert!(ip_json(node.ns(), &["-4", "addr", "show", "dev", &lxc])
        .iter()
        .all(|l| l["addr_info"].as_array().is_none_or(Vec::is_empty)));
    assert!(host.get("master").is_none(), "{host}");
    assert_eq!(
        sysctl(node.ns(), &format!("net.ipv4.conf.{lxc}.proxy_arp")),
        "0"
    );

    // The pod end: eth0 in the container, up, with its MAC, the /32, a
    // link-scope route to the gateway and the default route via it.
    let eth0 = link(&pod.name, "eth0").expect("eth0 in the container");
    assert_eq!(mac_of(&eth0), interfaces[1]["mac"].as_str().unwrap());
    assert_local_unicast(&mac_of(&eth0));
    assert_ne!(mac_of(&eth0), mac_of(&host));
    assert!(
        eth0["flags"].as_array().unwrap().contains(&json!("UP")),
        "{eth0}"
    );
    let addrs = ip_json(&pod.name, &["-4", "addr", "show", "dev", "eth0"]);
    let inet: Vec<(String, u64)> = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["local"].as_str().unwrap().to_string(),
                a["prefixlen"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(inet, vec![(pod_ip.to_string(), 32)]);
    let routes = ip_json(&pod.name, &["-4", "route", "show"]);
    assert!(
        routes.iter().any(|r| r["dst"] == gateway.to_string()
            && r["dev"] == "eth0"
            && r["scope"] == "link"
            && r.get("gateway").is_none()),
        "{routes:?}"
    );
    assert!(
        routes.iter().any(|r| r["dst"] == "default"
            && r["gateway"] == gateway.to_string()
            && r["dev"] == "eth0"),
        "{routes:?}"
    );
    // The peer's other end is the lxc: the pod's eth0 links to its ifindex.
    assert_eq!(eth0["link_index"], host["ifindex"], "{eth0}");

    // The agent made the lxc an endpoint, with its programs attached.
    let endpoint = node.endpoint(&container).expect("an endpoint after ADD");
    assert_eq!(endpoint.address, pod_ip.to_string());
    assert_eq!(endpoint.host_ifname, lxc);
    assert_eq!(
        u64::from(endpoint.host_ifindex),
        host["ifindex"].as_u64().unwrap()
    );
    assert_eq!(endpoint.host_mac, mac_of(&host));
    assert_eq!(endpoint.pod_mac, mac_of(&eth0));
    assert_eq!(endpoint.netns, pod.path());
    for program in PROGRAMS {
        assert!(
            endpoint.programs.iter().any(|p| p == program),
            "{:?}",
            endpoint.programs
        );
    }

    // CHECK with the result as prevResult: all in place.
    node.check(&container, &pod.path(), &result)
        .assert_quiet_success("CHECK");
    // Take the default route away: CHECK names exactly that.
    ip(&["-n", &pod.name, "route", "del", "default"]);
    let check = node.check(&container, &pod.path(), &result);
    assert_eq!(check.code(), 103, "{}", check.stdout);
    assert_eq!(
        check.msg(),
        format!(
            "CHECK of {container}/eth0: {} has no default route via {gateway} dev eth0",
            pod.path()
        )
    );
    // A MAC other than ADD reported is named too.
    let mut other = result.clone();
    other["interfaces"][1]["mac"] = json!("02:00:00:00:00:99");
    let check = node.check(&container, &pod.path(), &other);
    assert_eq!(check.code(), 103);
    assert!(
        check.msg().contains("prevResult says 02:00:00:00:00:99"),
        "{}",
        check.msg()
    );

    // DEL: the veth (both ends), the host route, the endpoint and the
    // address go.
    node.del(&container, Some(&pod.path()))
        .assert_quiet_success("DEL");
    assert!(link(node.ns(), &lxc).is_none());
    assert!(link(&pod.name, "eth0").is_none());
    assert!(ip_json(node.ns(), &["route", "show", &format!("{pod_ip}/32")]).is_empty());
    assert!(node.allocations().is_empty(), "{:?}", node.allocations());
    assert!(node.endpoint(&container).is_none());
    // Again, and once the namespace is gone (no CNI_NETNS, or a stale one).
    node.del(&container, Some(&pod.path()))
        .assert_quiet_success("second DEL");
    let gone = pod.path();
    drop(pod);
    node.del(&container, None)
        .assert_quiet_success("DEL without a netns");
    node.del(&container, Some(&gone))
        .assert_quiet_success("DEL with a netns that is gone");
    // CHECK of an attachment that is gone fails.
    let pod = Container::new("c1b");
    assert_ne!(node.check(&container, &pod.path(), &result).code(), 0);
}

#[test]
fn gc_removes_what_no_live_attachment_owns() {
    let node = Node::new("cnigc", "10.244.13.0/24");
    let pods: Vec<Container> = (1..=3).map(|i| Container::new(&format!("g{i}"))).collect();
    for (i, pod) in pods.iter().enumerate() {
        succeeded(&node.add(&id(i + 1), &pod.path(), "eth0"), "ADD");
    }
    // A crash mid-ADD left a veth of ours; another program's lxc device is
    // not ours.
    let stray = "lxc0123456789ab";
    ip(&[
        "-n",
        node.ns(),
        "link",
        "add",
        stray,
        "type",
        "veth",
        "peer",
        "name",
        "strayp",
    ]);
    ip(&[
        "-n",
        node.ns(),
        "link",
        "add",
        "lxcbr0",
        "type",
        "veth",
        "peer",
        "name",
        "brp",
    ]);

    node.gc(&[1, 3]).assert_quiet_success("GC");

    let mut want = vec![
        lxc_name(&id(1), "eth0"),
        lxc_name(&id(3), "eth0"),
        "lxcbr0".to_string(),
    ];
    want.sort();
    let mut have = node.lxc_links();
    have.sort();
    assert_eq!(have, want);
    assert!(
        link(&pods[1].name, "eth0").is_none(),
        "the dead pod's end went with its lxc"
    );
    assert!(link(&pods[0].name, "eth0").is_some());
    let mut owners: Vec<String> = node.allocations().keys().cloned().collect();
    owners.sort();
    let mut live = vec![
        Attachment::new(&id(1), "eth0").owner(),
        Attachment::new(&id(3), "eth0").owner(),
    ];
    live.sort();
    assert_eq!(owners, live);
    assert_eq!(node.endpoint_owners(), live);

    // Nothing alive: every one of ours goes, the other program's stays.
    node.gc(&[]).assert_quiet_success("GC of everything");
    assert_eq!(node.lxc_links(), vec!["lxcbr0".to_string()]);
    assert!(node.allocations().is_empty());
    assert!(node.endpoint_owners().is_empty());
}

#[test]
fn a_failed_add_leaves_nothing_behind() {
    let node = Node::new("cniaddfail", "10.244.14.0/24");
    let nothing_left = |what: &str| {
        assert!(
            node.lxc_links().is_empty(),
            "{what}: {:?}",
            node.lxc_links()
        );
        assert!(
            node.allocations().is_empty(),
            "{what}: {:?}",
            node.allocations()
        );
    };

    // A namespace that does not exist: 102, named, after the address was
    // given and taken back.
    let missing = format!("/run/netns/lash-cniadd-none-{}", std::process::id());
    let run = node.add(&id(1), &missing, "eth0");
    assert_eq!(run.code(), 102, "{}", run.stdout);
    assert!(run.msg().contains(&missing), "{}", run.msg());
    nothing_left("missing netns");

    // A file that is not a network namespace.
    let run = node.add(&id(1), "/proc/self/ns/uts", "eth0");
    assert_eq!(run.code(), 102, "{}", run.stdout);
    nothing_left("not a netns");

    // An interface name the kernel cannot take: bad environment (4).
    let pod = Container::new("f1");
    let run = node.add(&id(2), &pod.path(), "sixteen-chars-xx");
    assert_eq!(run.code(), 4, "{}", run.stdout);
    nothing_left("long ifname");

    // The container already has a default route: configuring the pod end
    // fails after the veth was made, the host end set up and the address
    // given. All of it is undone.
    // (A veth inside the container: this kernel has no dummy devices.)
    ip(&[
        "-n", &pod.name, "link", "add", "d0", "type", "veth", "peer", "name", "d0p",
    ]);
    ip(&["-n", &pod.name, "link", "set", "d0", "up"]);
    ip(&["-n", &pod.name, "route", "add", "default", "dev", "d0"]);
    let run = node.add(&id(3), &pod.path(), "eth0");
    assert_eq!(run.code(), 5, "{}", run.stdout);
    assert!(run.msg().contains("default route"), "{}", run.msg());
    assert!(run.msg().contains("File exists"), "{}", run.msg());
    nothing_left("pod side failed");
    assert!(link(&pod.name, "eth0").is_none());
    // The node's route to the address went with the lxc.
    assert!(ip_json(node.ns(), &["route", "show", "10.244.14.0/24"]).is_empty());

    // An interface name already taken inside the container.
    let run = node.add(&id(4), &pod.path(), "d0");
    assert_eq!(run.code(), 5, "{}", run.stdout);
    assert!(run.msg().contains("File exists"), "{}", run.msg());
    nothing_left("ifname taken");

    // A leftover lxc of the same attachment (a crashed ADD) is replaced.
    ip(&["-n", &pod.name, "route", "del", "default"]);
    let lxc = lxc_name(&id(5), "eth0");
    ip(&[
        "-n",
        node.ns(),
        "link",
        "add",
        &lxc,
        "type",
        "veth",
        "peer",
        "name",
        "leftover",
    ]);
    let result = succeeded(
        &node.add(&id(5), &pod.path(), "eth0"),
        "ADD over a leftover",
    );
    assert_eq!(result["interfaces"][0]["name"], lxc.as_str());
    assert!(
        link(node.ns(), "leftover").is_none(),
        "the old pair is gone"
    );
    node.del(&id(5), Some(&pod.path()))
        .assert_quiet_success("DEL");
    nothing_left("after DEL");
}
