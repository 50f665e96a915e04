//! `agent bpf endpoint list` decodes the pinned `lxc` map the way
//! `cilium bpf endpoint list` prints it. The entries are written with bpftool,
//! byte for byte in Cilium's `endpoint_key`/`endpoint_info` layouts, so the
//! test checks the decoding against the layout, not against our own encoder.
//! Needs root; `cargo xtask test` runs it.

use lash_tests::sandbox::{bpftool, Sandbox};
use serde_json::{json, Value};

fn update(sb: &Sandbox, key: &str, value: &str) {
    let path = sb.bpf_root.join("lxc");
    let mut args = vec![
        "map",
        "update",
        "pinned",
        path.to_str().unwrap(),
        "key",
        "hex",
    ];
    args.extend(key.split_whitespace());
    args.extend(["value", "hex"]);
    args.extend(value.split_whitespace());
    bpftool(args);
}

#[test]
fn the_lxc_map_lists_as_cilium_shows_it() {
    let mut sb = Sandbox::new("eplist", 0).expect("sandbox");
    sb.start_agent(&[]).expect("agent");
    // Before any pod: the node's own addresses only (in the sandbox's node
    // namespace, loopback's), which the agent marks as the host's at start.
    assert_eq!(
        sb.agent_cli(&["bpf", "endpoint", "list"]).unwrap(),
        "IP ADDRESS        LOCAL ENDPOINT INFO\n\
         127.0.0.1:0       (localhost)\n"
    );
    // 172.16.0.251: ifindex 14, id 663, identity 11370, the pod's and the
    // lxc's MACs (the reference listing's example).
    update(
        &sb,
        "ac 10 00 fb  00 00 00 00 00 00 00 00 00 00 00 00  01 00 00 00",
        "0e 00 00 00  00 00  97 02  00 00 00 00  00 00 00 00 \
         12 52 e3 7e 87 4f 00 00  2e e6 8a a2 06 1e 00 00 \
         6a 2c 00 00  00 00 00 00 00 00 00 00 00 00 00 00",
    );
    // 192.168.10.10: the node's own address (flags = host).
    update(
        &sb,
        "c0 a8 0a 0a  00 00 00 00 00 00 00 00 00 00 00 00  01 00 00 00",
        "00 00 00 00  00 00  00 00  01 00 00 00  00 00 00 00 \
         00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00 \
         00 00 00 00  00 00 00 00 00 00 00 00 00 00 00 00",
    );
    let table = sb.agent_cli(&["bpf", "endpoint", "list"]).unwrap();
    assert_eq!(
        table,
        "IP ADDRESS        LOCAL ENDPOINT INFO\n\
         127.0.0.1:0       (localhost)\n\
         172.16.0.251:0    id=663   sec_id=11370 flags=0x0000 ifindex=14  mac=12:52:E3:7E:87:4F nodemac=2E:E6:8A:A2:06:1E\n\
         192.168.10.10:0   (localhost)\n"
    );
    let json: Value = serde_json::from_str(
        &sb.agent_cli(&["bpf", "endpoint", "list", "-o", "json"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        json[1],
        json!({"ip": "172.16.0.251", "host": false, "id": 663, "sec_id": 11370, "flags": 0,
               "ifindex": 14, "mac": "12:52:E3:7E:87:4F", "node_mac": "2E:E6:8A:A2:06:1E"})
    );
    assert_eq!(
        (json[0]["host"].clone(), json[2]["host"].clone()),
        (json!(true), json!(true))
    );
    // The agent's status counts the map like any other.
    let status = sb.status_json().to_string();
    assert!(status.contains("\"lxc\""), "{status}");
    sb.stop_agent(false).unwrap();
}
