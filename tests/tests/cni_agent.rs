//! The built `lash-cni` binary against a real agent serving its local API:
//! STATUS succeeds silently while the agent can give addresses and says 50
//! once it is gone; GC keeps the listed attachments' addresses and frees the
//! rest; DEL frees the attachment's address and succeeds again when there is
//! nothing left to free; an ADD that fails gives its address back; an agent
//! without a pod CIDR is named as such.
//! Needs root (the sandbox); `cargo xtask test` runs it.

use std::net::Ipv4Addr;

use lash_api::{
    v1::{AllocateAddressRequest, StatusRequest},
    Attachment,
};
use lash_tests::{cni::CniRun, sandbox::Sandbox};
use serde_json::{json, Value};

const CIDR: &str = "10.244.11.0/24";

fn cni(vars: &[(&str, &str)], stdin: &Value) -> CniRun {
    lash_tests::cni::run(vars, &stdin.to_string())
}

fn id(i: usize) -> String {
    format!("{i:064x}")
}

fn del(conf: &Value, i: usize) -> CniRun {
    let container = id(i);
    // No CNI_NETNS: the runtime leaves it out once the namespace is gone.
    cni(
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", &container),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ],
        conf,
    )
}

/// Who holds an address, as the agent's ipam.json says.
fn allocations(sb: &Sandbox) -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(sb.state_dir().join("ipam.json")).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    file["allocations"].as_object().cloned().unwrap_or_default()
}

fn ipam_used(sb: &Sandbox) -> Value {
    sb.status_json()["ipam"]["used"].clone()
}

/// A runtime for one use of the API client, dropped right after: the
/// client's connection lives on it, and the agent waits for open
/// connections to close before it exits.
fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn status_gc_and_del_against_the_agent() {
    let mut sb = Sandbox::new("cniagent", 0).expect("sandbox");
    sb.start_agent(&["--pod-cidr", CIDR]).expect("agent");
    let socket = lash_api::socket_path(&sb.state_dir());
    let socket_str = socket.to_str().unwrap().to_string();
    let plugin = json!({"cniVersion": "1.1.0", "name": "lash", "type": "lash-cni",
                        "agentSocket": socket_str});
    let list = json!({"cniVersion": "1.1.0", "name": "lash",
                      "plugins": [{"type": "lash-cni", "agentSocket": socket_str}]});

    // Five attachments hold addresses, as five ADDs would have left them.
    let got: Vec<Ipv4Addr> = client_runtime().block_on(async {
        let mut c = lash_api::connect(&socket).await.expect("connecting");
        let mut got = Vec::new();
        for i in 0..5 {
            let reply = c
                .allocate_address(AllocateAddressRequest {
                    attachment: Some(Attachment::new(&id(i), "eth0")),
                })
                .await
                .expect("allocate")
                .into_inner();
            got.push(reply.address.parse().unwrap());
        }
        got
    });

    // STATUS: ADD can be served, so exit 0 and print nothing. Both shapes.
    for conf in [&list, &plugin] {
        cni(&[("CNI_COMMAND", "STATUS")], conf).assert_quiet_success("STATUS");
    }

    // GC: attachments 0, 1 and 2 are alive (under either key name), 3 and 4
    // are not.
    let mut gc = list.clone();
    gc["cni.dev/valid-attachments"] = json!([
        {"containerID": id(0), "ifname": "eth0"},
        {"containerID": id(1), "ifname": "eth0"},
    ]);
    gc["cni.dev/attachments"] = gc["cni.dev/valid-attachments"].clone();
    let gc_env = [("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")];
    let mut spec_name_only = plugin.clone();
    spec_name_only["cni.dev/attachments"] = json!([
        {"containerID": id(0), "ifname": "eth0"},
        {"containerID": id(1), "ifname": "eth0"},
        {"containerID": id(2), "ifname": "eth0"},
    ]);
    cni(&gc_env, &spec_name_only).assert_quiet_success("GC (cni.dev/attachments)");
    assert_eq!(allocations(&sb).len(), 3, "{:?}", allocations(&sb));
    cni(&gc_env, &gc).assert_quiet_success("GC");
    let held = allocations(&sb);
    assert_eq!(held.len(), 2, "{held:?}");
    for i in 0..2 {
        let owner = Attachment::new(&id(i), "eth0").owner();
        assert_eq!(
            held[&owner].as_str().unwrap().parse::<Ipv4Addr>().unwrap(),
            got[i],
            "GC moved a live attachment's address"
        );
    }

    // DEL: frees the address; again, and for an attachment that never had
    // one, it still succeeds.
    del(&plugin, 0).assert_quiet_success("DEL");
    let held = allocations(&sb);
    assert!(
        !held.contains_key(&Attachment::new(&id(0), "eth0").owner()),
        "{held:?}"
    );
    assert_eq!(held.len(), 1);
    del(&plugin, 0).assert_quiet_success("second DEL");
    del(&plugin, 42).assert_quiet_success("DEL of an attachment without an address");
    assert_eq!(ipam_used(&sb), 1);
    let used = client_runtime().block_on(async {
        let mut c = lash_api::connect(&socket).await.unwrap();
        c.status(StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .addresses_used
    });
    assert_eq!(used, 1);

    // ADD into a namespace that does not exist: the plugin's own code,
    // naming the path, and the address it was given is released again.
    let missing = "/run/netns/lash-cni-agent-test-none";
    let add = cni(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", &id(7)),
            ("CNI_NETNS", missing),
            ("CNI_IFNAME", "eth0"),
        ],
        &plugin,
    );
    assert_eq!(add.code(), 102);
    assert!(add.msg().contains(missing), "{}", add.msg());
    assert_eq!(allocations(&sb).len(), 1, "{:?}", allocations(&sb));

    // An agent without a pod CIDR: STATUS says it cannot serve ADD (50) and
    // why; DEL gets the plugin's own "no pod CIDR" code.
    sb.stop_agent(false).unwrap();
    sb.start_agent(&[]).expect("agent without --pod-cidr");
    let status = cni(&[("CNI_COMMAND", "STATUS")], &list);
    assert_eq!(status.code(), 50);
    assert!(status.msg().contains("--pod-cidr"), "{}", status.msg());
    assert_eq!(del(&plugin, 1).code(), 101);

    // No agent: STATUS 50 and DEL 11, both naming the socket.
    sb.stop_agent(false).unwrap();
    let status = cni(&[("CNI_COMMAND", "STATUS")], &list);
    assert_eq!(status.code(), 50);
    assert!(status.msg().contains(&socket_str), "{}", status.msg());
    let gone = del(&plugin, 1);
    assert_eq!(gone.code(), 11);
    assert!(gone.msg().contains(&socket_str), "{}", gone.msg());
}
