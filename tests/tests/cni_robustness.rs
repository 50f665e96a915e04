//! lash-cni and the agent under stress and failure, through the built
//! plugin binary and a real agent in a sandbox node namespace, with
//! container namespaces the test makes:
//! - 50 ADDs at once, then 50 DELs at once: every pod gets its own address
//!   and a ready endpoint, and afterwards nothing of any of them is left
//!   (veths, endpoints, `lxc`/`ipcache` entries, addresses, link pins);
//! - the agent dying inside CreateEndpoint (a failpoint aborts it after the
//!   map entries are written): ADD says "try again" (11) and removes its
//!   veth; the restarted agent plus GC clear the rest, and the ADD works
//!   when retried (also straight after the restart, with no GC between);
//! - the agent killed or stopped: pods keep talking (the pinned tcx links
//!   keep the programs attached; the node forwards nothing itself), and the
//!   restarted agent serves CHECK and lists both endpoints ready.
//!
//! (STATUS 50 and ADD 11 without an agent are in cni_spec.rs and
//! cni_agent.rs.)
//! Needs root (the sandbox); `cargo xtask test` runs it.

use std::{collections::BTreeSet, net::Ipv4Addr, path::PathBuf, process::Command};

use lash_api::Attachment;
use lash_tests::{
    cni::{lxc_name, CniRun},
    sandbox::{ip_json, Sandbox},
};
use serde_json::{json, Value};

/// The programs the agent attaches to every lxc, as the endpoint listing
/// names them.
const PROGRAMS: [&str; 2] = ["ingress:from_container", "egress:to_container"];

/// The identity every pod's ipcache entry carries.
const POD_IDENTITY: u64 = 256;

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

fn has_link(ns: &str, name: &str) -> bool {
    ip_json(ns, &["link", "show"])
        .iter()
        .any(|l| l["ifname"] == name)
}

/// A container's network namespace, removed on drop (its end of the veth,
/// and so the pair, goes with it).
struct Container {
    name: String,
}

impl Container {
    fn new(tag: &str) -> Container {
        let name = format!("lash-cnirob-{tag}-{}", std::process::id());
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

/// The sandbox's node, its agent (inside the node namespace, dropped with
/// the sandbox) and the plugin configuration that reaches it.
struct Node {
    sb: Sandbox,
    cidr: String,
    socket: PathBuf,
    conf: Value,
}

impl Node {
    /// A node whose agent is not started yet.
    fn new(tag: &str, cidr: &str) -> Node {
        let sb = Sandbox::new(tag, 0).expect("sandbox");
        let socket = lash_api::socket_path(&sb.state_dir());
        let conf = json!({"cniVersion": "1.0.0", "name": "lash", "type": "lash-cni",
                          "agentSocket": socket.to_str().unwrap()});
        Node {
            sb,
            cidr: cidr.to_string(),
            socket,
            conf,
        }
    }

    fn start(&mut self) {
        let cidr = self.cidr.clone();
        self.sb.start_agent(&["--pod-cidr", &cidr]).expect("agent");
    }

    fn started(tag: &str, cidr: &str) -> Node {
        let mut node = Node::new(tag, cidr);
        node.start();
        node
    }

    fn ns(&self) -> &str {
        &self.sb.node_ns
    }

    fn socket(&self) -> &str {
        self.socket.to_str().unwrap()
    }

    fn cni(&self, vars: &[(&str, &str)], conf: &Value) -> CniRun {
        lash_tests::cni::run_in(&self.sb.node_netns_path(), vars, &conf.to_string())
    }

    fn add(&self, container: &str, netns: &str) -> CniRun {
        self.cni(
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", container),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", "eth0"),
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

    fn del(&self, container: &str, netns: &str) -> CniRun {
        self.cni(
            &[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", container),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/opt/cni/bin"),
            ],
            &self.conf,
        )
    }

    /// GC at 1.1.0 with nothing alive.
    fn gc_all(&self) -> CniRun {
        let mut conf = self.conf.clone();
        conf["cniVersion"] = json!("1.1.0");
        conf["cni.dev/valid-attachments"] = json!([]);
        self.cni(
            &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
            &conf,
        )
    }

    fn cli_json(&self, args: &[&str]) -> Value {
        let out = self
            .sb
            .agent_cli(args)
            .unwrap_or_else(|e| panic!("agent {args:?}: {e}"));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("agent {args:?} gave {out:?}: {e}"))
    }

    /// `agent endpoint list -o json`.
    fn endpoints(&self) -> Vec<Value> {
        self.cli_json(&["endpoint", "list", "-o", "json"])
            .as_array()
            .cloned()
            .expect("a list of endpoints")
    }

    /// Pod (not host) entries of the `lxc` map, by address.
    fn lxc_pod_entries(&self) -> BTreeSet<String> {
        self.cli_json(&["bpf", "endpoint", "list", "-o", "json"])
            .as_array()
            .expect("a list of lxc entries")
            .iter()
            .filter(|e| e["host"] != true)
            .map(|e| e["ip"].as_str().unwrap().to_string())
            .collect()
    }

    /// /32s of the `ipcache` map with the pods' identity, by address.
    fn ipcache_pod_entries(&self) -> BTreeSet<String> {
        self.cli_json(&["bpf", "ipcache", "list", "-o", "json"])
            .as_array()
            .expect("a list of ipcache entries")
            .iter()
            .filter(|e| e["identity"] == POD_IDENTITY)
            .filter_map(|e| e["prefix"].as_str()?.strip_suffix("/32"))
            .map(str::to_string)
            .collect()
    }

    fn ipam_used(&self) -> Value {
        self.sb.status_json()["ipam"]["used"].clone()
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

    /// Link pins under <bpf-root>/endpoints, one directory per lxc.
    fn pinned_lxcs(&self) -> Vec<String> {
        std::fs::read_dir(self.sb.bpf_root.join("endpoints"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// None of any pod is left: no veth, endpoint, pod entry in `lxc` or
    /// `ipcache`, address or link pin. Reads the maps and the records
    /// without the agent's help, and IPAM through its status.
    fn assert_nothing_left(&self, what: &str) {
        assert_eq!(self.lxc_links(), Vec::<String>::new(), "{what}: veths left");
        assert_eq!(self.endpoints(), Vec::<Value>::new(), "{what}: endpoints");
        assert_eq!(
            self.lxc_pod_entries(),
            BTreeSet::new(),
            "{what}: pod entries in lxc"
        );
        assert_eq!(
            self.ipcache_pod_entries(),
            BTreeSet::new(),
            "{what}: pod /32s in ipcache"
        );
        assert_eq!(self.ipam_used(), 0, "{what}: addresses in use");
        assert!(
            self.allocations().is_empty(),
            "{what}: {:?}",
            self.allocations()
        );
        assert_eq!(
            self.pinned_lxcs(),
            Vec::<String>::new(),
            "{what}: link pins"
        );
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

/// The pod's address in an ADD result.
fn address_of(result: &Value) -> Ipv4Addr {
    result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.strip_suffix("/32"))
        .unwrap_or_else(|| panic!("no /32 in {result}"))
        .parse()
        .unwrap()
}

/// The endpoint of `container` in a listing is ready with both programs.
fn assert_ready(endpoints: &[Value], container: &str, address: Ipv4Addr) {
    let e = endpoints
        .iter()
        .find(|e| e["container_id"] == container)
        .unwrap_or_else(|| panic!("no endpoint for {container} in {endpoints:?}"));
    assert_eq!(e["address"], address.to_string(), "{e}");
    assert_eq!(e["status"], "ready", "{e}");
    for p in PROGRAMS {
        assert!(
            e["programs"].as_array().unwrap().iter().any(|x| x == p),
            "{container}: {p} not attached: {e}"
        );
    }
}

/// One ping from inside `from` to `to` (busybox's: the machine has no
/// other, and the podman tests need it anyway). Three tries: the very first
/// echo may wait on the pod's neighbour entry for the gateway.
fn pings(from: &Container, to: Ipv4Addr) -> bool {
    (0..3).any(|_| {
        Command::new("ip")
            .args(["netns", "exec", &from.name, "busybox", "ping", "-c1", "-W2"])
            .arg(to.to_string())
            .output()
            .expect("running ping")
            .status
            .success()
    })
}

#[test]
fn fifty_parallel_adds_then_fifty_parallel_dels() {
    const N: usize = 50;
    let node = Node::started("cnirob50", "10.244.21.0/24");
    let pods: Vec<Container> = (0..N).map(|i| Container::new(&format!("p{i}"))).collect();

    // Each ADD a plugin process of its own, all at once.
    let adds: Vec<CniRun> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let node = &node;
                s.spawn(move || node.add(&id(i), &pod.path()))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let addresses: Vec<Ipv4Addr> = adds
        .iter()
        .enumerate()
        .map(|(i, run)| address_of(&succeeded(run, &format!("ADD {i}"))))
        .collect();
    let unique: BTreeSet<Ipv4Addr> = addresses.iter().copied().collect();
    assert_eq!(unique.len(), N, "addresses given twice: {addresses:?}");
    for a in &addresses {
        assert_eq!(a.octets()[..3], [10, 244, 21], "{a} is not in the pod CIDR");
    }

    // 50 endpoints, each ready with both programs, on 50 lxcs.
    let endpoints = node.endpoints();
    assert_eq!(endpoints.len(), N);
    for (i, a) in addresses.iter().enumerate() {
        assert_ready(&endpoints, &id(i), *a);
    }
    let ids: BTreeSet<u64> = endpoints
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), N, "endpoint ids given twice");
    let mut links = node.lxc_links();
    links.sort();
    let mut want: Vec<String> = (0..N).map(|i| lxc_name(&id(i), "eth0")).collect();
    want.sort();
    assert_eq!(links, want);
    let strings: BTreeSet<String> = addresses.iter().map(ToString::to_string).collect();
    assert_eq!(node.lxc_pod_entries(), strings);
    assert_eq!(node.ipcache_pod_entries(), strings);
    assert_eq!(node.ipam_used(), N);
    assert_eq!(node.pinned_lxcs().len(), N);

    // And all of them away again, at once.
    let dels: Vec<CniRun> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let node = &node;
                s.spawn(move || node.del(&id(i), &pod.path()))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, run) in dels.iter().enumerate() {
        run.assert_quiet_success(&format!("DEL {i}"));
    }
    node.assert_nothing_left("after 50 DELs");
    for pod in &pods {
        assert!(!has_link(&pod.name, "eth0"), "{}: eth0 left", pod.name);
    }
}

#[test]
fn the_agent_dying_mid_add_is_try_again_and_gc_clears_the_rest() {
    let mut node = Node::new("cnirobcrash", "10.244.22.0/24");
    let cidr = node.cidr.clone();
    node.sb
        .start_agent_env(
            &["--pod-cidr", &cidr],
            &[("LASH_FAILPOINT", "endpoint-create-entries-written")],
        )
        .expect("agent with the failpoint");
    let pod = Container::new("crash");
    let container = id(1);

    // The agent aborts inside CreateEndpoint: the plugin sees the
    // connection die under it, which is "try again later", naming the
    // agent's socket.
    let add = node.add(&container, &pod.path());
    assert_eq!(add.code(), 11, "{}", add.stdout);
    let msg = add.msg();
    assert!(msg.contains("lash agent"), "{msg}");
    assert!(msg.contains(node.socket()), "{msg}");
    assert!(msg.contains(&format!("ADD of {container}/eth0")), "{msg}");
    // It did die there, and no other way.
    node.sb.stop_agent(true).unwrap();
    let log = node.sb.agent_log();
    assert!(
        log.contains("failpoint endpoint-create-entries-written: aborting"),
        "{log}"
    );
    // The plugin removed its veth, both ends.
    assert_eq!(node.lxc_links(), Vec::<String>::new());
    assert!(!has_link(&pod.name, "eth0"));
    // What the crash itself left: the address (the agent could not be asked
    // to give it back) and the pod's map entries, with no endpoint record.
    let held = node.allocations();
    let owner = Attachment::new(&container, "eth0").owner();
    let address = held
        .get(&owner)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("the crash should leave the address held: {held:?}"))
        .to_string();
    assert_eq!(node.lxc_pod_entries(), BTreeSet::from([address.clone()]));
    assert_eq!(
        node.ipcache_pod_entries(),
        BTreeSet::from([address.clone()])
    );
    assert_eq!(node.endpoints(), Vec::<Value>::new());

    // Restarted normally, the agent sweeps entries no record owns; the
    // runtime's GC (nothing alive) frees the address.
    node.start();
    assert_eq!(node.lxc_pod_entries(), BTreeSet::new(), "restore's sweep");
    assert_eq!(
        node.ipcache_pod_entries(),
        BTreeSet::new(),
        "restore's sweep"
    );
    assert!(node.allocations().contains_key(&owner), "GC's to free");
    node.gc_all().assert_quiet_success("GC");
    node.assert_nothing_left("after restart and GC");

    // The runtime retries the ADD: it works.
    let result = succeeded(&node.add(&container, &pod.path()), "ADD again");
    let again = address_of(&result);
    assert_ready(&node.endpoints(), &container, again);
    node.check(&container, &pod.path(), &result)
        .assert_quiet_success("CHECK");
    node.del(&container, &pod.path())
        .assert_quiet_success("DEL");
    node.assert_nothing_left("after DEL");

    // Again, and this time the runtime retries the ADD as soon as the agent
    // is back, with no GC between: the held address is the one it gets.
    node.sb.stop_agent(false).unwrap();
    node.sb
        .start_agent_env(
            &["--pod-cidr", &cidr],
            &[("LASH_FAILPOINT", "endpoint-create-entries-written")],
        )
        .expect("agent with the failpoint");
    let add = node.add(&container, &pod.path());
    assert_eq!(add.code(), 11, "{}", add.stdout);
    node.sb.stop_agent(true).unwrap();
    let held = node.allocations()[&owner].as_str().unwrap().to_string();
    node.start();
    let result = succeeded(&node.add(&container, &pod.path()), "ADD retried");
    assert_eq!(address_of(&result).to_string(), held);
    assert_ready(&node.endpoints(), &container, address_of(&result));
    assert_eq!(node.lxc_pod_entries(), BTreeSet::from([held.clone()]));
    assert_eq!(node.ipcache_pod_entries(), BTreeSet::from([held]));
    node.check(&container, &pod.path(), &result)
        .assert_quiet_success("CHECK after the retry");
    node.del(&container, &pod.path())
        .assert_quiet_success("DEL");
    node.assert_nothing_left("after the retry's DEL");
}

#[test]
fn endpoints_keep_working_across_agent_restarts() {
    let mut node = Node::started("cnirobrestart", "10.244.23.0/24");
    // The node forwards nothing itself: only the lxc programs'
    // bpf_redirect_peer carries a pod's packet to another pod.
    assert_eq!(
        ip(&[
            "netns",
            "exec",
            node.ns(),
            "sysctl",
            "-n",
            "net.ipv4.ip_forward"
        ])
        .trim(),
        "0"
    );
    let (a, b) = (Container::new("a"), Container::new("b"));
    let (ida, idb) = (id(0xa), id(0xb));
    let ra = succeeded(&node.add(&ida, &a.path()), "ADD a");
    let rb = succeeded(&node.add(&idb, &b.path()), "ADD b");
    let (ipa, ipb) = (address_of(&ra), address_of(&rb));
    assert!(pings(&a, ipb), "a does not reach b after ADD");
    assert!(pings(&b, ipa), "b does not reach a after ADD");

    for kill in [true, false] {
        let how = if kill { "SIGKILL" } else { "SIGTERM" };
        node.sb.stop_agent(kill).unwrap();
        // No agent at all (the plugin's STATUS says so): the pinned links
        // hold the programs.
        let mut status = node.conf.clone();
        status["cniVersion"] = json!("1.1.0");
        let status = node.cni(&[("CNI_COMMAND", "STATUS")], &status);
        assert_eq!(status.code(), 50, "STATUS with no agent ({how})");
        let mut pinned = node.pinned_lxcs();
        pinned.sort();
        let mut want = vec![lxc_name(&ida, "eth0"), lxc_name(&idb, "eth0")];
        want.sort();
        assert_eq!(pinned, want, "pins after {how}");
        assert!(pings(&a, ipb), "a does not reach b with no agent ({how})");
        assert!(pings(&b, ipa), "b does not reach a with no agent ({how})");

        node.start();
        assert!(pings(&a, ipb), "a does not reach b after restart ({how})");
        assert!(pings(&b, ipa), "b does not reach a after restart ({how})");
        node.check(&ida, &a.path(), &ra)
            .assert_quiet_success(&format!("CHECK a after {how}"));
        node.check(&idb, &b.path(), &rb)
            .assert_quiet_success(&format!("CHECK b after {how}"));
        let endpoints = node.endpoints();
        assert_eq!(endpoints.len(), 2, "{endpoints:?}");
        assert_ready(&endpoints, &ida, ipa);
        assert_ready(&endpoints, &idb, ipb);
        let status = node.sb.status_json();
        assert_eq!(status["endpoints"]["links_pinned"], 4, "{status}");
    }

    node.del(&ida, &a.path()).assert_quiet_success("DEL a");
    node.del(&idb, &b.path()).assert_quiet_success("DEL b");
    node.assert_nothing_left("after DEL");
}
