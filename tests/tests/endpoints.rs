//! The agent's endpoint API on a real veth: CreateEndpoint writes the lxc
//! and ipcache entries and attaches both lxc programs through pinned tcx
//! links; bad requests are refused with the field named and nothing written;
//! a restarted agent keeps every endpoint attached and drops the one whose
//! lxc vanished while it was down; DeleteEndpoint and RetainEndpoints leave
//! nothing behind. The agent runs in the sandbox's node namespace, where it
//! also makes `lash_host` with the gateway. Needs root; `cargo xtask test`
//! runs it.

use lash_api::{
    v1::{
        CreateEndpointRequest, DeleteEndpointRequest, Endpoint, GetEndpointRequest,
        ListEndpointsRequest, RetainEndpointsRequest,
    },
    Attachment,
};
use lash_tests::sandbox::{ip, Sandbox};
use serde_json::Value;

const CIDR: &str = "10.244.7.0/24";

struct Veth {
    host: String,
    ifindex: u32,
    host_mac: String,
    pod_mac: String,
    netns: String,
}

/// A pod namespace with a veth into the node, the way lash-cni makes one
/// (here with `ip`: this test is about the agent, not the plugin).
fn veth(sb: &mut Sandbox, n: u32) -> Veth {
    let netns = format!("{}-ep{n}", sb.name);
    sb.add_netns(&netns).unwrap();
    let host = format!("lxctest{n:08x}");
    ip(&[
        "-n",
        &sb.node_ns,
        "link",
        "add",
        &host,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &netns,
    ])
    .unwrap();
    ip(&["-n", &sb.node_ns, "link", "set", &host, "up"]).unwrap();
    let link = |ns: &str, dev: &str| -> Value {
        let out = ip(&["-n", ns, "-j", "link", "show", dev]).unwrap();
        serde_json::from_str::<Value>(&out).unwrap()[0].clone()
    };
    let h = link(&sb.node_ns, &host);
    let p = link(&netns, "eth0");
    Veth {
        ifindex: h["ifindex"].as_u64().unwrap() as u32,
        host_mac: h["address"].as_str().unwrap().into(),
        pod_mac: p["address"].as_str().unwrap().into(),
        host,
        netns,
    }
}

fn endpoint(v: &Veth, container: &str, address: &str) -> Endpoint {
    Endpoint {
        attachment: Some(Attachment::new(container, "eth0")),
        address: address.into(),
        host_ifname: v.host.clone(),
        host_ifindex: v.ifindex,
        host_mac: v.host_mac.clone(),
        pod_mac: v.pod_mac.clone(),
        netns: v.netns.clone(),
        ..Default::default()
    }
}

fn create(e: Endpoint) -> CreateEndpointRequest {
    CreateEndpointRequest { endpoint: Some(e) }
}

fn programs(e: &Endpoint) -> Vec<&str> {
    let mut p: Vec<&str> = e.programs.iter().map(String::as_str).collect();
    p.sort();
    p
}

const BOTH: [&str; 2] = ["egress:to_container", "ingress:from_container"];

fn endpoint_list(sb: &Sandbox) -> Vec<Value> {
    let out = sb
        .agent_cli(&["bpf", "endpoint", "list", "-o", "json"])
        .unwrap();
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap()
}

fn lxc_entry(sb: &Sandbox, ip: &str) -> Option<Value> {
    endpoint_list(sb).into_iter().find(|e| e["ip"] == ip)
}

fn ipcache_has(sb: &Sandbox, ip: &str) -> bool {
    let dump = lash_tests::sandbox::bpftool([
        "map".as_ref(),
        "dump".as_ref(),
        "pinned".as_ref(),
        sb.bpf_root.join("ipcache").as_os_str(),
    ]);
    let want: Vec<Value> = ip
        .split('.')
        .map(|o| Value::from(format!("0x{:02x}", o.parse::<u8>().unwrap())))
        .collect();
    dump.as_array().unwrap().iter().any(|e| {
        let key = e["key"].as_array().unwrap();
        key[0] == "0x40" && key[8..12] == want[..]
    })
}

fn pins(sb: &Sandbox, host: &str) -> usize {
    std::fs::read_dir(sb.bpf_root.join("endpoints").join(host))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn endpoints_are_attached_restored_and_removed_whole() {
    let mut sb = Sandbox::new("endpoints", 0).expect("sandbox");
    sb.start_agent(&["--pod-cidr", CIDR]).expect("agent");

    // lash_host holds the gateway in the node namespace, and the node's own
    // addresses are host entries.
    let addrs = ip(&["-n", &sb.node_ns, "-j", "addr", "show", "lash_host"]).unwrap();
    assert!(addrs.contains("\"10.244.7.1\""), "{addrs}");
    let gw = lxc_entry(&sb, "10.244.7.1").expect("the gateway is a host entry");
    assert_eq!(gw["host"], true);

    let a = veth(&mut sb, 1);
    let b = veth(&mut sb, 2);
    let gone = veth(&mut sb, 3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let socket = lash_api::socket_path(&sb.state_dir());
    let mut c = rt.block_on(lash_api::connect(&socket)).expect("connecting");

    // Refusals name what is wrong and write nothing.
    let mut wrong_index = endpoint(&a, "ca", "10.244.7.10");
    wrong_index.host_ifindex += 1000;
    let err = rt
        .block_on(c.create_endpoint(create(wrong_index)))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    let err = rt
        .block_on(c.create_endpoint(create(endpoint(&a, "ca", "10.9.9.9"))))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("10.9.9.9"), "{err:?}");
    let mut bad_mac = endpoint(&a, "ca", "10.244.7.10");
    bad_mac.pod_mac = "zz".into();
    let err = rt.block_on(c.create_endpoint(create(bad_mac))).unwrap_err();
    assert!(err.message().contains("pod_mac"), "{err:?}");
    assert!(lxc_entry(&sb, "10.244.7.10").is_none());
    assert_eq!(pins(&sb, &a.host), 0);

    // Created: entries written, both programs attached and pinned.
    let ea = rt
        .block_on(c.create_endpoint(create(endpoint(&a, "ca", "10.244.7.10"))))
        .expect("create a")
        .into_inner()
        .endpoint
        .unwrap();
    assert!(ea.id > 0);
    assert_eq!(programs(&ea), BOTH);
    let e = lxc_entry(&sb, "10.244.7.10").expect("lxc entry");
    assert_eq!(e["id"], ea.id);
    assert_eq!(e["ifindex"], a.ifindex);
    assert_eq!(e["mac"].as_str().unwrap().to_lowercase(), a.pod_mac);
    assert_eq!(e["node_mac"].as_str().unwrap().to_lowercase(), a.host_mac);
    assert!(ipcache_has(&sb, "10.244.7.10"));
    assert_eq!(pins(&sb, &a.host), 2);
    // An address already taken by another attachment is refused.
    let err = rt
        .block_on(c.create_endpoint(create(endpoint(&b, "cb", "10.244.7.10"))))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");
    let eb = rt
        .block_on(c.create_endpoint(create(endpoint(&b, "cb", "10.244.7.11"))))
        .expect("create b")
        .into_inner()
        .endpoint
        .unwrap();
    assert_ne!(ea.id, eb.id);
    rt.block_on(c.create_endpoint(create(endpoint(&gone, "cgone", "10.244.7.12"))))
        .expect("create the one whose lxc will vanish");
    let status = sb.status_json();
    assert_eq!(status["endpoints"]["endpoints"], 3, "{status}");
    assert_eq!(status["endpoints"]["links_pinned"], 6, "{status}");
    drop(c);

    // Restart; meanwhile one lxc disappears.
    sb.stop_agent(false).unwrap();
    ip(&["-n", &sb.node_ns, "link", "del", &gone.host]).unwrap();
    sb.start_agent(&["--pod-cidr", CIDR, "--ct-gc-interval", "1"])
        .expect("agent again");
    let mut c = rt.block_on(lash_api::connect(&socket)).expect("connecting");
    let get = |c: &mut lash_api::v1::cni_client::CniClient<_>, id: &str| {
        rt.block_on(c.get_endpoint(GetEndpointRequest {
            attachment: Some(Attachment::new(id, "eth0")),
        }))
    };
    let ea2 = get(&mut c, "ca").expect("a survives").into_inner();
    assert_eq!((ea2.id, programs(&ea2)), (ea.id, BOTH.to_vec()));
    assert_eq!(pins(&sb, &a.host), 2);
    let err = get(&mut c, "cgone").unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(lxc_entry(&sb, "10.244.7.12").is_none(), "stale lxc entry");
    assert!(!ipcache_has(&sb, "10.244.7.12"), "stale ipcache entry");
    assert_eq!(pins(&sb, &gone.host), 0);

    // Delete: programs, pins, entries gone; again is no error.
    let del = |c: &mut lash_api::v1::cni_client::CniClient<_>, id: &str| {
        rt.block_on(c.delete_endpoint(DeleteEndpointRequest {
            attachment: Some(Attachment::new(id, "eth0")),
        }))
        .expect("delete")
        .into_inner()
    };
    assert!(del(&mut c, "ca").deleted.is_some());
    assert!(del(&mut c, "ca").deleted.is_none());
    assert!(lxc_entry(&sb, "10.244.7.10").is_none());
    assert!(!ipcache_has(&sb, "10.244.7.10"));
    assert_eq!(pins(&sb, &a.host), 0);
    let tc = ip(&["-n", &sb.node_ns, "link", "show", &a.host]).unwrap();
    assert!(
        !tc.is_empty(),
        "the veth is lash-cni's to remove, not the agent's"
    );

    // GC keeps what is listed and removes the rest.
    rt.block_on(c.create_endpoint(create(endpoint(&a, "ca", "10.244.7.10"))))
        .expect("create a again");
    let gc = rt
        .block_on(c.retain_endpoints(RetainEndpointsRequest {
            keep: vec![Attachment::new("cb", "eth0")],
        }))
        .expect("retain")
        .into_inner();
    assert_eq!(gc.deleted.len(), 1);
    let left = rt
        .block_on(c.list_endpoints(ListEndpointsRequest {}))
        .unwrap()
        .into_inner()
        .endpoints;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].address, "10.244.7.11");
    assert!(lxc_entry(&sb, "10.244.7.10").is_none());
    assert_eq!(pins(&sb, &a.host), 0);
    // The listings of the node maps answer in their shapes.
    let list = sb.agent_cli(&["endpoint", "list"]).unwrap();
    assert!(list.starts_with("ENDPOINT"), "{list}");
    assert!(
        list.contains("10.244.7.11") && list.contains("ready"),
        "{list}"
    );
    let ipc = sb.agent_cli(&["bpf", "ipcache", "list"]).unwrap();
    assert!(ipc.contains("10.244.7.11/32      identity=256 "), "{ipc}");
    assert!(ipc.contains("10.244.7.1/32       identity=1 "), "{ipc}");
    let get = sb
        .agent_cli(&["bpf", "ipcache", "get", "10.244.7.11"])
        .unwrap();
    assert!(get.starts_with("10.244.7.11 maps to identity 256"), "{get}");
    let world = sb
        .agent_cli(&["bpf", "ipcache", "get", "192.0.2.1"])
        .unwrap();
    assert!(
        world.starts_with("192.0.2.1 maps to identity 2 (world"),
        "{world}"
    );
    // The conntrack sweep (every second here) deletes what expired and
    // keeps the rest: two TCP entries written as the programs would, one
    // whose lifetime (monotonic seconds, bytes 32..36 of the value) is long
    // past, one far ahead.
    let ct = sb.bpf_root.join("ct4_global");
    let entry = |sport: u8, lifetime: [u8; 4]| {
        let mut args: Vec<String> = ["map", "update", "pinned"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(ct.display().to_string());
        args.push("key".into());
        args.push("hex".into());
        // daddr 10.244.7.11, saddr 10.244.7.10, the packet's ports, TCP, OUT.
        for b in [10, 244, 7, 11, 10, 244, 7, 10, 0x9c, sport, 0, 80, 6, 0] {
            args.push(format!("{b:02x}"));
        }
        args.push("value".into());
        args.push("hex".into());
        let mut v = [0u8; 56];
        v[32..36].copy_from_slice(&lifetime);
        args.extend(v.iter().map(|b| format!("{b:02x}")));
        lash_tests::sandbox::bpftool(args);
    };
    entry(0x41, 1u32.to_le_bytes());
    entry(0x42, 0x7fff_0000u32.to_le_bytes());
    let swept = lash_tests::sandbox::wait_for(std::time::Duration::from_secs(5), || {
        let list = sb.agent_cli(&["bpf", "ct", "list", "global"]).unwrap();
        (!list.contains(":40001 ->")).then_some(list)
    })
    .expect("the expired entry is swept");
    assert!(
        swept.contains("TCP OUT 10.244.7.10:40002 -> 10.244.7.11:80"),
        "{swept}"
    );
    let metrics = sb.agent_cli(&["bpf", "metrics", "list"]).unwrap();
    assert!(metrics.starts_with("REASON"), "{metrics}");
    drop(c);
    sb.stop_agent(false).unwrap();
    // Uninstall detaches the lxc programs too.
    sb.agent_cli(&["uninstall"]).unwrap();
    assert!(!sb.bpf_root.join("endpoints").exists());
    assert!(!sb.bpf_root.exists());
}
