//! The ARP responder of from-container on crafted frames, through
//! BPF_PROG_TEST_RUN: the program runs on a frame and hands back the frame
//! and its verdict; nothing is sent anywhere. Needs root (loading programs,
//! bpffs); `cargo xtask test` runs it.

use std::net::Ipv4Addr;

use aya::{
    maps::HashMap,
    programs::{SchedClassifier, TestRun, TestRunOptions},
    EbpfLoader,
};
use lash_common::endpoint::{mac_to_u64, EndpointInfo, EndpointKey, ENDPOINT_F_HOST};
use lash_tests::ebpf::{object, PinDir};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

const POD_MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0x00, 0x0b];
const LXC_MAC: [u8; 6] = [0x2e, 0xe6, 0x8a, 0xa2, 0x06, 0x1e];
const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 11);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// BPF_PROG_TEST_RUN runs tc programs on the loopback device unless told
/// otherwise: the endpoint's lxc is ifindex 1 here.
const LXC_IFINDEX: u32 = 1;

fn arp(
    op: u16,
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    sha: [u8; 6],
    spa: Ipv4Addr,
    tha: [u8; 6],
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&eth_src);
    f.extend_from_slice(&[0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa.octets());
    f
}

fn request(spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    arp(1, [0xff; 6], POD_MAC, POD_MAC, spa, [0; 6], tpa)
}

struct Harness {
    _pins: PinDir,
    ebpf: aya::Ebpf,
}

impl Harness {
    /// The object loaded with its maps pinned in a bpffs directory of the
    /// test's own, the pod's endpoint (and the node's own address) in `lxc`,
    /// from_container loaded.
    fn new(tag: &str, endpoint_ifindex: u32) -> Self {
        // A network namespace of the test's own, so nothing the programs do
        // could concern the machine's (test runs move no packets anyway).
        // SAFETY: unshare only changes this thread's namespaces.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
        let obj = object("lash").expect("building the eBPF object");
        let pins = PinDir::new(tag).expect("bpffs dir");
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pins.path)
            .load(&obj)
            .expect("loading the object");
        let mut lxc: HashMap<_, EndpointKey, EndpointInfo> =
            HashMap::try_from(ebpf.map_mut("lxc").expect("lxc map")).unwrap();
        let pod = EndpointInfo {
            ifindex: endpoint_ifindex,
            lxc_id: 663,
            mac: mac_to_u64(POD_MAC),
            node_mac: mac_to_u64(LXC_MAC),
            ..Default::default()
        };
        lxc.insert(EndpointKey::v4(u32::from(POD_IP).to_be()), pod, 0)
            .unwrap();
        let host = EndpointInfo {
            flags: ENDPOINT_F_HOST,
            ..Default::default()
        };
        lxc.insert(EndpointKey::v4(u32::from(GATEWAY).to_be()), host, 0)
            .unwrap();
        let prog: &mut SchedClassifier = ebpf
            .program_mut("from_container")
            .expect("from_container")
            .try_into()
            .unwrap();
        prog.load().expect("the verifier takes from_container");
        Harness { _pins: pins, ebpf }
    }

    /// Runs from_container on `frame`: (verdict, frame as it left).
    fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        let prog: &SchedClassifier = self
            .ebpf
            .program("from_container")
            .unwrap()
            .try_into()
            .unwrap();
        let mut out = vec![0u8; 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }
}

#[test]
fn a_request_for_any_other_address_is_answered_with_the_lxc_mac() {
    let h = Harness::new("arp-answer", LXC_IFINDEX);
    let (verdict, out) = h.run(&request(POD_IP, GATEWAY));
    assert_eq!(verdict, TC_ACT_REDIRECT, "sent back out of the lxc");
    // Every byte of the reply: to the requester, from the lxc; op 2; the
    // asked address now owned by the lxc MAC; the requester as target.
    let want = arp(2, POD_MAC, LXC_MAC, LXC_MAC, GATEWAY, POD_MAC, POD_IP);
    assert_eq!(out, want);
    // Any address at all, not only the gateway: every packet goes to the lxc.
    let other = Ipv4Addr::new(10, 244, 0, 12);
    let (verdict, out) = h.run(&request(POD_IP, other));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(
        out,
        arp(2, POD_MAC, LXC_MAC, LXC_MAC, other, POD_MAC, POD_IP)
    );
}

#[test]
fn a_request_for_the_pods_own_address_passes_untouched() {
    let h = Harness::new("arp-own", LXC_IFINDEX);
    let frame = request(POD_IP, POD_IP);
    let (verdict, out) = h.run(&frame);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, frame);
    // A reply from the pod is not ours to answer either.
    let reply = arp(2, LXC_MAC, POD_MAC, POD_MAC, POD_IP, LXC_MAC, GATEWAY);
    assert_eq!(h.run(&reply), (TC_ACT_OK, reply));
}

#[test]
fn no_answers_in_another_endpoints_name() {
    // The sender is a known pod, but behind another lxc.
    let h = Harness::new("arp-spoof", 42);
    let (verdict, _) = h.run(&request(POD_IP, GATEWAY));
    assert_eq!(verdict, TC_ACT_SHOT);
    // A sender that is no endpoint at all, and one that is the node itself.
    let (verdict, _) = h.run(&request(Ipv4Addr::new(10, 244, 0, 99), GATEWAY));
    assert_eq!(verdict, TC_ACT_SHOT);
    let (verdict, _) = h.run(&request(GATEWAY, POD_IP));
    assert_eq!(verdict, TC_ACT_SHOT);
    // A truncated ARP frame.
    let (verdict, _) = h.run(&request(POD_IP, GATEWAY)[..30]);
    assert_eq!(verdict, TC_ACT_SHOT);
}
