//! The built `lash-cni` binary against the CNI spec (1.1.0), the way a
//! runtime drives it: `CNI_*` variables, a configuration on stdin, a result or
//! an error object on stdout and the exit status. No agent runs here, so
//! every verb but VERSION ends in "agent unavailable" (11, or 50 for STATUS)
//! once its input is valid; what is tested here is that input is judged as
//! the spec says and that each failure names what was wrong. cni_agent.rs
//! drives the same binary against a real agent.
//!
//! Needs no root. Needs the binary: `cargo build --workspace --bins`.

use std::{os::unix::net::UnixListener, path::PathBuf};

use lash_tests::cni::CniRun;
use serde_json::{json, Value};

fn cni(vars: &[(&str, &str)], stdin: &str) -> CniRun {
    lash_tests::cni::run(vars, stdin)
}

const MINIMAL_PLUGIN: &str = r#"{"cniVersion":"1.0.0","name":"lash","type":"lash-cni"}"#;
const MINIMAL_LIST: &str =
    r#"{"cniVersion":"1.0.0","name":"lash","plugins":[{"type":"lash-cni"}]}"#;
const DEFAULT_SOCKET: &str = "/run/lash/cni.sock";

fn add_env(command: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "3f2b9c0e1d4a"),
        ("CNI_NETNS", "/run/netns/cni-test"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
}

/// A scratch directory of this test's own.
fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lash-cni-spec-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn with_socket(conf: &str, socket: &str) -> String {
    let mut v: Value = serde_json::from_str(conf).unwrap();
    match v.get_mut("plugins") {
        Some(plugins) => plugins[0]["agentSocket"] = json!(socket),
        None => v["agentSocket"] = json!(socket),
    }
    v.to_string()
}

fn at_version(conf: &str, version: &str) -> String {
    let mut v: Value = serde_json::from_str(conf).unwrap();
    v["cniVersion"] = json!(version);
    v.to_string()
}

#[test]
fn version_lists_what_we_speak_in_the_requested_version() {
    let run = cni(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"0.4.0"}"#);
    assert!(run.success, "{}", run.stdout);
    let v: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(
        v,
        json!({"cniVersion": "0.4.0",
               "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );

    let run = cni(&[("CNI_COMMAND", "VERSION")], "");
    assert!(run.success);
    let v: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(v["cniVersion"], "1.1.0");
}

#[test]
fn environment_errors_are_4_and_name_the_variables() {
    let run = cni(&[], MINIMAL_PLUGIN);
    assert_eq!(run.code(), 4);
    assert!(run.msg().contains("CNI_COMMAND"));

    let run = cni(&[("CNI_COMMAND", "SETUP")], MINIMAL_PLUGIN);
    assert_eq!(run.code(), 4);
    assert!(run.error()["details"]
        .as_str()
        .unwrap()
        .contains("\"SETUP\""));

    let run = cni(&[("CNI_COMMAND", "ADD")], MINIMAL_PLUGIN);
    assert_eq!(run.code(), 4);
    let m = run.msg();
    for var in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
        assert!(m.contains(var), "{var} not in {m:?}");
    }

    let mut env = add_env("ADD");
    env.retain(|(k, _)| *k != "CNI_IFNAME");
    env.push(("CNI_IFNAME", "eth0:1"));
    let run = cni(&env, MINIMAL_PLUGIN);
    assert_eq!(run.code(), 4);
    assert_eq!(run.msg(), "invalid environment: CNI_IFNAME");

    // GC needs CNI_PATH and nothing about an attachment.
    let run = cni(&[("CNI_COMMAND", "GC")], &at_version(MINIMAL_LIST, "1.1.0"));
    assert_eq!(run.code(), 4);
    assert!(run.msg().contains("CNI_PATH"));
}

#[test]
fn undecodable_configuration_is_6() {
    for stdin in ["", "{", "not json", "[]", "\"lash\""] {
        let run = cni(&add_env("ADD"), stdin);
        assert_eq!(run.code(), 6, "{stdin:?}");
    }
}

#[test]
fn invalid_configuration_is_7_and_names_the_field() {
    let cases = [
        (r#"{"cniVersion":"1.0.0","type":"lash-cni"}"#, "name"),
        (r#"{"name":"lash","type":"lash-cni"}"#, "cniVersion"),
        (r#"{"cniVersion":"1.0.0","name":"lash"}"#, "type"),
        (
            r#"{"cniVersion":"1.0.0","name":"lash","type":"lash-cni","agentSocket":"cni.sock"}"#,
            "agentSocket",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"lash","type":"lash-cni","prevResult":{"ips":[{"address":"10.0.0.5"}]}}"#,
            "prevResult.ips[0].address",
        ),
        // ADD takes one plugin's configuration, not the list.
        (MINIMAL_LIST, "plugins"),
    ];
    for (conf, field) in cases {
        let run = cni(&add_env("ADD"), conf);
        assert_eq!(run.code(), 7, "{conf}");
        let m = run.msg();
        assert!(m.contains(field), "{field} not in {m:?}");
    }
}

#[test]
fn unsupported_versions_are_1() {
    for v in ["0.2.0", "1.2.0"] {
        let run = cni(&add_env("ADD"), &at_version(MINIMAL_PLUGIN, v));
        assert_eq!(run.code(), 1, "{v}");
        assert!(run.msg().contains(v));
        // Answered in the latest version, since we do not speak the asked one.
        assert_eq!(run.error()["cniVersion"], "1.1.0");
    }
    // CHECK is 0.4.0's; STATUS and GC are 1.1.0's.
    let run = cni(&add_env("CHECK"), &at_version(MINIMAL_PLUGIN, "0.3.1"));
    assert_eq!(run.code(), 1);
    let run = cni(&[("CNI_COMMAND", "STATUS")], MINIMAL_LIST);
    assert_eq!(run.code(), 1);
    assert!(run.msg().contains("1.1.0"));
    let run = cni(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        MINIMAL_LIST,
    );
    assert_eq!(run.code(), 1);
}

#[test]
fn minimal_add_is_accepted_and_waits_for_the_agent() {
    let run = cni(&add_env("ADD"), MINIMAL_PLUGIN);
    assert_eq!(run.code(), 11);
    let err = run.error();
    // Answered in the configuration's own version.
    assert_eq!(err["cniVersion"], "1.0.0");
    let m = run.msg();
    assert!(m.contains(DEFAULT_SOCKET), "{m}");
    assert!(m.contains("ADD of 3f2b9c0e1d4a/eth0"), "{m}");
}

#[test]
fn attachment_verbs_name_the_socket_they_could_not_reach() {
    let dir = scratch("unreachable");
    let socket = dir.join("cni.sock");
    let socket = socket.to_str().unwrap();
    let conf = with_socket(MINIMAL_PLUGIN, socket);

    let run = cni(&add_env("ADD"), &conf);
    assert_eq!(run.code(), 11);
    assert!(run.msg().contains(socket));
    assert!(run.error()["details"]
        .as_str()
        .unwrap()
        .contains("No such file"));

    // DEL without a netns (it is gone) is still valid input.
    let run = cni(
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "3f2b9c0e1d4a"),
            ("CNI_IFNAME", "eth0"),
        ],
        &conf,
    );
    assert_eq!(run.code(), 11);

    let mut check: Value = serde_json::from_str(&conf).unwrap();
    check["prevResult"] = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": "/run/netns/cni-test"}],
        "ips": [{"address": "10.244.1.5/32", "gateway": "10.244.1.1", "interface": 0}]
    });
    let run = cni(&add_env("CHECK"), &check.to_string());
    assert_eq!(run.code(), 11);
    // CHECK without prevResult is an invalid configuration.
    let run = cni(&add_env("CHECK"), &conf);
    assert_eq!(run.code(), 7);
    assert!(run.msg().contains("prevResult"));

    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn status_and_gc_take_the_list_at_1_1_0() {
    let dir = scratch("status");
    let socket = dir.join("cni.sock");
    let socket = socket.to_str().unwrap();
    let list = with_socket(&at_version(MINIMAL_LIST, "1.1.0"), socket);

    let run = cni(&[("CNI_COMMAND", "STATUS")], &list);
    assert_eq!(run.code(), 50);
    assert!(run.msg().contains(socket));
    assert_eq!(run.error()["cniVersion"], "1.1.0");

    let mut gc: Value = serde_json::from_str(&list).unwrap();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "3f2b9c0e1d4a", "ifname": "eth0"}]);
    let run = cni(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        &gc.to_string(),
    );
    assert_eq!(run.code(), 11);
    assert!(run.msg().contains(socket));

    // GC without the list of live attachments cannot know what to keep.
    let run = cni(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        &list,
    );
    assert_eq!(run.code(), 7);
    assert!(
        run.msg().contains("cni.dev/valid-attachments"),
        "{}",
        run.msg()
    );

    // The plugin-configuration shape libcni sends is accepted too.
    let plugin = with_socket(&at_version(MINIMAL_PLUGIN, "1.1.0"), socket);
    let run = cni(&[("CNI_COMMAND", "STATUS")], &plugin);
    assert_eq!(run.code(), 50);

    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_listener_that_is_not_our_agent_is_still_unavailable() {
    let dir = scratch("listener");
    let socket = dir.join("cni.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    // Takes each connection and hangs up: no gRPC spoken here.
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    let socket = socket.to_str().unwrap();

    let run = cni(&add_env("ADD"), &with_socket(MINIMAL_PLUGIN, socket));
    assert_eq!(run.code(), 11);
    assert!(run.msg().contains(socket), "{}", run.msg());

    let list = with_socket(&at_version(MINIMAL_LIST, "1.1.0"), socket);
    let run = cni(&[("CNI_COMMAND", "STATUS")], &list);
    assert_eq!(run.code(), 50);

    std::fs::remove_dir_all(dir).unwrap();
}
