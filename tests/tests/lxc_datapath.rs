//! The IPv4 path of from_container and to_container on crafted frames,
//! through BPF_PROG_TEST_RUN: verdicts, the bytes that leave (checksums
//! recomputed here, independently), conntrack entries and metrics. Nothing
//! is sent anywhere. Needs root (loading programs, bpffs); `cargo xtask test`
//! runs it.

use std::{collections::HashSet, net::Ipv4Addr};

use aya::{
    maps::{HashMap, PerCpuHashMap},
    programs::{SchedClassifier, TestRun, TestRunOptions},
    EbpfLoader,
};
use lash_common::{
    ct::{
        CtEntry, Ipv4CtTuple, CT_F_RX_CLOSING, CT_F_SEEN_NON_SYN, CT_F_TX_CLOSING, TUPLE_F_OUT,
        TUPLE_F_SERVICE,
    },
    endpoint::{mac_to_u64, EndpointInfo, EndpointKey, ENDPOINT_F_HOST},
    metrics::{MetricsKey, MetricsValue, METRIC_EGRESS, METRIC_INGRESS},
    Lb4AffinityKey, Lb4AffinityMatch, Lb4AffinityValue, Lb4Backend, Lb4Key, Lb4ReverseNat,
    Lb4Service, IPPROTO_TCP, IPPROTO_UDP, LB_LOOKUP_SCOPE_EXT, LB_LOOKUP_SCOPE_INT,
    SVC_FLAG2_TWO_SCOPES, SVC_FLAG_AFFINITY, SVC_FLAG_EXT_LOCAL_SCOPE, SVC_FLAG_NODEPORT,
    SVC_FLAG_ROUTABLE,
};
use lash_tests::ebpf::{object, PinDir};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

/// BPF_PROG_TEST_RUN runs tc programs on the loopback device: endpoints that
/// send here sit behind ifindex 1.
const HERE: u32 = 1;

const A_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 11);
const A_MAC: [u8; 6] = [0x0a, 0x58, 0, 0, 0, 0x0b];
const A_LXC_MAC: [u8; 6] = [0x2e, 0, 0, 0, 0, 0x0b];
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 12);
const B_MAC: [u8; 6] = [0x0a, 0x58, 0, 0, 0, 0x0c];
const B_LXC_MAC: [u8; 6] = [0x2e, 0, 0, 0, 0, 0x0c];
const B_IFINDEX: u32 = HERE;
/// A pod behind another lxc than the one frames come in on.
const C_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 13);
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);

/// VIP:80/TCP and VIP:53/UDP -> pod B (8080 and 5353).
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// VIP3:80/TCP -> three remote backends.
const VIP3: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
const REMOTE_BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 244, 1, 2),
    Ipv4Addr::new(10, 244, 1, 3),
    Ipv4Addr::new(10, 244, 1, 4),
];
/// VIP0:80/TCP: a frontend without backends.
const VIP0: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 12);

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

fn be32(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

fn be16(port: u16) -> u16 {
    port.to_be()
}

// ---------------------------------------------------------------- frames

fn csum_fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// The TCP/UDP checksum of `l4` (its checksum field zeroed) between two
/// addresses.
fn l4_csum(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    csum_fold(sum16(&pseudo) + sum16(l4))
}

#[derive(Clone, Copy)]
struct Pkt {
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    proto: u8,
    ttl: u8,
    tcp_flags: u8,
    /// IPv4 option bytes (a multiple of 4).
    options: usize,
    /// UDP: send without a checksum (0).
    udp_no_csum: bool,
}

fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Pkt {
    Pkt {
        src,
        sport,
        dst,
        dport,
        proto: IPPROTO_TCP,
        ttl: 64,
        tcp_flags: flags,
        options: 0,
        udp_no_csum: false,
    }
}

fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Pkt {
    Pkt {
        proto: IPPROTO_UDP,
        tcp_flags: 0,
        ..tcp(src, sport, dst, dport, 0)
    }
}

const PAYLOAD: &[u8] = b"lash datapath test payload!";

impl Pkt {
    /// Ethernet (pod -> its lxc) + IPv4 + TCP/UDP + payload, every checksum
    /// right.
    fn frame(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&self.sport.to_be_bytes());
        l4.extend_from_slice(&self.dport.to_be_bytes());
        if self.proto == IPPROTO_TCP {
            l4.extend_from_slice(&1000u32.to_be_bytes());
            l4.extend_from_slice(&0u32.to_be_bytes());
            l4.extend_from_slice(&[5 << 4, self.tcp_flags, 0xfa, 0xf0, 0, 0, 0, 0]);
        } else {
            l4.extend_from_slice(&((8 + PAYLOAD.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        }
        l4.extend_from_slice(PAYLOAD);
        let at = if self.proto == IPPROTO_TCP { 16 } else { 6 };
        if !self.udp_no_csum {
            let c = l4_csum(self.src.octets(), self.dst.octets(), self.proto, &l4);
            l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        let ihl = 5 + self.options / 4;
        let mut ip = vec![0x40 | ihl as u8, 0];
        ip.extend_from_slice(&((ihl * 4 + l4.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, self.ttl, self.proto, 0, 0]);
        ip.extend_from_slice(&self.src.octets());
        ip.extend_from_slice(&self.dst.octets());
        ip.extend(std::iter::repeat_n(1u8, self.options)); // NOP options
        let c = csum_fold(sum16(&ip));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut f = Vec::new();
        f.extend_from_slice(&A_LXC_MAC);
        f.extend_from_slice(&A_MAC);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&l4);
        f
    }
}

/// What a frame that left says, every checksum checked from scratch.
#[derive(Debug, PartialEq, Eq)]
struct Out {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    ttl: u8,
    /// The UDP checksum field was 0.
    no_l4_csum: bool,
}

fn decode(f: &[u8]) -> Out {
    assert_eq!(&f[12..14], &[0x08, 0x00]);
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let ip = &f[14..14 + ihl];
    assert_eq!(csum_fold(sum16(ip)), 0, "IPv4 header checksum");
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let l4 = &f[14 + ihl..14 + total];
    let proto = ip[9];
    let (src, dst) = (
        [ip[12], ip[13], ip[14], ip[15]],
        [ip[16], ip[17], ip[18], ip[19]],
    );
    let at = if proto == IPPROTO_TCP { 16 } else { 6 };
    let stored = u16::from_be_bytes([l4[at], l4[at + 1]]);
    let no_l4_csum = proto == IPPROTO_UDP && stored == 0;
    if !no_l4_csum {
        let mut zeroed = l4.to_vec();
        zeroed[at..at + 2].copy_from_slice(&[0, 0]);
        let want = l4_csum(src, dst, proto, &zeroed);
        // UDP sends a computed 0 as 0xffff.
        let want = if proto == IPPROTO_UDP && want == 0 {
            0xffff
        } else {
            want
        };
        assert_eq!(stored, want, "L4 checksum");
    }
    Out {
        dst_mac: f[0..6].try_into().unwrap(),
        src_mac: f[6..12].try_into().unwrap(),
        src: src.into(),
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dst: dst.into(),
        dport: u16::from_be_bytes([l4[2], l4[3]]),
        ttl: ip[8],
        no_l4_csum,
    }
}

// ---------------------------------------------------------------- harness

struct Harness {
    _pins: PinDir,
    ebpf: aya::Ebpf,
}

fn monotonic_secs() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-parameter.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
        0
    );
    ts.tv_sec as u32
}

impl Harness {
    /// The object loaded with its maps pinned in a bpffs directory of the
    /// test's own; pods A, B (local, behind the test-run device) and C
    /// (behind another lxc), the node's address, and the services above.
    fn new(tag: &str) -> Self {
        // SAFETY: unshare only changes this thread's namespaces.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
        let obj = object("lash").expect("building the eBPF object");
        let pins = PinDir::new(tag).expect("bpffs dir");
        let ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pins.path)
            .load(&obj)
            .expect("loading the object");
        let mut h = Harness { _pins: pins, ebpf };
        h.endpoints();
        h.services();
        for name in ["from_container", "to_container"] {
            let prog: &mut SchedClassifier =
                h.ebpf.program_mut(name).expect(name).try_into().unwrap();
            prog.load()
                .unwrap_or_else(|e| panic!("the verifier takes {name}: {e:?}"));
        }
        h
    }

    fn endpoints(&mut self) {
        let mut lxc: HashMap<_, EndpointKey, EndpointInfo> =
            HashMap::try_from(self.ebpf.map_mut("lxc").unwrap()).unwrap();
        let pod = |ifindex, id, mac, node_mac| EndpointInfo {
            ifindex,
            lxc_id: id,
            mac: mac_to_u64(mac),
            node_mac: mac_to_u64(node_mac),
            sec_id: 1000 + u32::from(id),
            ..Default::default()
        };
        lxc.insert(
            EndpointKey::v4(be32(A_IP)),
            pod(HERE, 11, A_MAC, A_LXC_MAC),
            0,
        )
        .unwrap();
        lxc.insert(
            EndpointKey::v4(be32(B_IP)),
            pod(B_IFINDEX, 12, B_MAC, B_LXC_MAC),
            0,
        )
        .unwrap();
        lxc.insert(
            EndpointKey::v4(be32(C_IP)),
            pod(42, 13, A_MAC, A_LXC_MAC),
            0,
        )
        .unwrap();
        let host = EndpointInfo {
            flags: ENDPOINT_F_HOST,
            ..Default::default()
        };
        lxc.insert(EndpointKey::v4(be32(NODE_IP)), host, 0).unwrap();
    }

    /// Writes a service as the agent does: frontend (slot 0), slots,
    /// backends, rev-NAT and membership entries.
    fn service(
        &mut self,
        vip: Ipv4Addr,
        port: u16,
        proto: u8,
        rev: u16,
        backends: &[(u32, Ipv4Addr, u16)],
    ) {
        let rev = rev.to_be();
        {
            let mut svcs: HashMap<_, Lb4Key, Lb4Service> =
                HashMap::try_from(self.ebpf.map_mut("lb4_services").unwrap()).unwrap();
            let key = |slot| Lb4Key {
                address: be32(vip),
                dport: be16(port),
                backend_slot: slot,
                proto,
                scope: 0,
                pad: [0; 2],
            };
            let fe = Lb4Service {
                count: backends.len() as u16,
                rev_nat_index: rev,
                ..Default::default()
            };
            svcs.insert(key(0), fe, 0).unwrap();
            for (i, (id, _, _)) in backends.iter().enumerate() {
                let slot = Lb4Service {
                    backend_id: *id,
                    rev_nat_index: rev,
                    ..Default::default()
                };
                svcs.insert(key(i as u16 + 1), slot, 0).unwrap();
            }
        }
        {
            let mut bes: HashMap<_, u32, Lb4Backend> =
                HashMap::try_from(self.ebpf.map_mut("lb4_backends").unwrap()).unwrap();
            for (id, ip, p) in backends {
                let be = Lb4Backend {
                    address: be32(*ip),
                    port: be16(*p),
                    proto,
                    ..Default::default()
                };
                bes.insert(*id, be, 0).unwrap();
            }
        }
        {
            let mut m: HashMap<_, Lb4AffinityMatch, u8> =
                HashMap::try_from(self.ebpf.map_mut("lb4_affinity_match").unwrap()).unwrap();
            for (id, _, _) in backends {
                let k = Lb4AffinityMatch {
                    backend_id: *id,
                    rev_nat_id: rev,
                    pad: 0,
                };
                m.insert(k, 0, 0).unwrap();
            }
        }
        let mut rn: HashMap<_, u16, Lb4ReverseNat> =
            HashMap::try_from(self.ebpf.map_mut("lb4_reverse_nat").unwrap()).unwrap();
        let fe = Lb4ReverseNat {
            address: be32(vip),
            port: be16(port),
        };
        rn.insert(rev, fe, 0).unwrap();
    }

    /// Writes one scope of a service: slot 0 with `flags`, `flags2` and the
    /// affinity `timeout`, then one slot per backend id. Backends, rev-NAT
    /// and match entries are `backends`' and `matches`' to write.
    #[allow(clippy::too_many_arguments)]
    fn scope(
        &mut self,
        vip: Ipv4Addr,
        port: u16,
        rev: u16,
        scope: u8,
        (flags, flags2, timeout): (u8, u8, u32),
        ids: &[u32],
    ) {
        let mut svcs: HashMap<_, Lb4Key, Lb4Service> =
            HashMap::try_from(self.ebpf.map_mut("lb4_services").unwrap()).unwrap();
        let key = |slot| Lb4Key {
            address: be32(vip),
            dport: be16(port),
            backend_slot: slot,
            proto: IPPROTO_TCP,
            scope,
            pad: [0; 2],
        };
        let fe = Lb4Service {
            backend_id: timeout,
            count: ids.len() as u16,
            rev_nat_index: rev.to_be(),
            flags,
            flags2,
            qcount: 0,
        };
        svcs.insert(key(0), fe, 0).unwrap();
        for (i, id) in ids.iter().enumerate() {
            let slot = Lb4Service {
                backend_id: *id,
                rev_nat_index: rev.to_be(),
                ..Default::default()
            };
            svcs.insert(key(i as u16 + 1), slot, 0).unwrap();
        }
    }

    /// TCP backends `(id, address)` on port 8080, members of service `rev`
    /// when `member`.
    fn backends(&mut self, rev: u16, backends: &[(u32, Ipv4Addr)], member: bool) {
        {
            let mut bes: HashMap<_, u32, Lb4Backend> =
                HashMap::try_from(self.ebpf.map_mut("lb4_backends").unwrap()).unwrap();
            for (id, ip) in backends {
                let be = Lb4Backend {
                    address: be32(*ip),
                    port: be16(8080),
                    proto: IPPROTO_TCP,
                    ..Default::default()
                };
                bes.insert(*id, be, 0).unwrap();
            }
        }
        let mut m: HashMap<_, Lb4AffinityMatch, u8> =
            HashMap::try_from(self.ebpf.map_mut("lb4_affinity_match").unwrap()).unwrap();
        for (id, _) in backends {
            let k = Lb4AffinityMatch {
                backend_id: *id,
                rev_nat_id: rev.to_be(),
                pad: 0,
            };
            if member {
                m.insert(k, 0, 0).unwrap();
            } else {
                let _ = m.remove(&k);
            }
        }
    }

    fn rev_nat(&mut self, rev: u16, vip: Ipv4Addr, port: u16) {
        let mut rn: HashMap<_, u16, Lb4ReverseNat> =
            HashMap::try_from(self.ebpf.map_mut("lb4_reverse_nat").unwrap()).unwrap();
        let fe = Lb4ReverseNat {
            address: be32(vip),
            port: be16(port),
        };
        rn.insert(rev.to_be(), fe, 0).unwrap();
    }

    /// The affinity entry of client address `client` for service `rev`.
    fn affinity(&self, client: Ipv4Addr, rev: u16) -> Option<Lb4AffinityValue> {
        let m: HashMap<_, Lb4AffinityKey, Lb4AffinityValue> =
            HashMap::try_from(self.ebpf.map("lb4_affinity").unwrap()).unwrap();
        m.get(&affinity_key(client, rev), 0).ok()
    }

    fn set_affinity(&mut self, client: Ipv4Addr, rev: u16, backend_id: u32, last_used: u64) {
        let mut m: HashMap<_, Lb4AffinityKey, Lb4AffinityValue> =
            HashMap::try_from(self.ebpf.map_mut("lb4_affinity").unwrap()).unwrap();
        let v = Lb4AffinityValue {
            last_used,
            backend_id,
            pad: 0,
        };
        m.insert(affinity_key(client, rev), v, 0).unwrap();
    }

    fn services(&mut self) {
        self.service(VIP, 80, IPPROTO_TCP, 1, &[(1, B_IP, 8080)]);
        self.service(VIP, 53, IPPROTO_UDP, 2, &[(2, B_IP, 5353)]);
        let remote: Vec<_> = REMOTE_BACKENDS
            .iter()
            .enumerate()
            .map(|(i, ip)| (10 + i as u32, *ip, 8080))
            .collect();
        self.service(VIP3, 80, IPPROTO_TCP, 3, &remote);
        self.service(VIP0, 80, IPPROTO_TCP, 4, &[]);
    }

    /// Runs program `prog` on `frame`: (verdict, frame as it left).
    fn run(&self, prog: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        let prog: &SchedClassifier = self.ebpf.program(prog).unwrap().try_into().unwrap();
        let mut out = vec![0u8; 512];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    fn run_from(&self, p: &Pkt) -> (u32, Vec<u8>) {
        self.run("from_container", &p.frame())
    }

    fn run_to(&self, p: &Pkt) -> (u32, Vec<u8>) {
        self.run("to_container", &p.frame())
    }

    /// Packets counted as {reason, dir}, summed over CPUs.
    fn metric(&self, reason: u8, dir: u8) -> u64 {
        let m: PerCpuHashMap<_, MetricsKey, MetricsValue> =
            PerCpuHashMap::try_from(self.ebpf.map("metrics").unwrap()).unwrap();
        let key = MetricsKey {
            reason,
            dir,
            ..Default::default()
        };
        m.get(&key, 0)
            .map(|v| v.iter().map(|c| c.count).sum())
            .unwrap_or(0)
    }

    fn ct(&self, map: &str, key: &Ipv4CtTuple) -> Option<CtEntry> {
        let m: HashMap<_, Ipv4CtTuple, CtEntry> =
            HashMap::try_from(self.ebpf.map(map).unwrap()).unwrap();
        m.get(key, 0).ok()
    }
}

/// The per-packet path's affinity key: the client's address bytes first.
fn affinity_key(client: Ipv4Addr, rev: u16) -> Lb4AffinityKey {
    let mut id = [0u8; 8];
    id[..4].copy_from_slice(&client.octets());
    Lb4AffinityKey {
        client_id: u64::from_ne_bytes(id),
        rev_nat_id: rev.to_be(),
        flags: 0,
        pad1: 0,
        pad2: 0,
    }
}

/// The conntrack key of an entry created by a packet `src:sport -> dst:dport`
/// (lash_common::ct's convention: addresses as they are, the port fields
/// hold the packet's port bytes as they are, so `dport` is the source port).
fn ct_key(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    proto: u8,
    flags: u8,
) -> Ipv4CtTuple {
    Ipv4CtTuple {
        daddr: be32(dst),
        saddr: be32(src),
        dport: be16(sport),
        sport: be16(dport),
        nexthdr: proto,
        flags,
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn pod_to_pod_on_the_node_is_redirected_into_the_peer() {
    let h = Harness::new("lxc-local");
    for p in [
        tcp(A_IP, 40000, B_IP, 8080, TCP_SYN),
        udp(A_IP, 40000, B_IP, 5353),
        Pkt {
            options: 8,
            ..tcp(A_IP, 40001, B_IP, 8080, TCP_SYN)
        },
    ] {
        let (verdict, out) = h.run_from(&p);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let o = decode(&out);
        assert_eq!(
            o,
            Out {
                dst_mac: B_MAC,
                src_mac: B_LXC_MAC,
                src: A_IP,
                sport: p.sport,
                dst: B_IP,
                dport: p.dport,
                ttl: 63,
                no_l4_csum: false,
            }
        );
        // Nothing but MACs, TTL and the header checksum changed.
        let f = p.frame();
        assert_eq!(out.len(), f.len());
        let changed: Vec<usize> = (0..f.len()).filter(|&i| f[i] != out[i]).collect();
        assert!(
            changed
                .iter()
                .all(|&i| i < 12 || i == 22 || i == 24 || i == 25),
            "unexpected bytes changed: {changed:?}"
        );
    }
    assert_eq!(h.metric(0, METRIC_EGRESS), 3);

    // The flow has its OUT entry: no translation, the sender's identity,
    // 60 s (a SYN alone) from now.
    let now = monotonic_secs();
    let e = h
        .ct(
            "ct4_global",
            &ct_key(A_IP, 40000, B_IP, 8080, IPPROTO_TCP, TUPLE_F_OUT),
        )
        .expect("OUT entry of the TCP flow");
    assert_eq!((e.packets, e.rev_nat_index, e.src_sec_id), (1, 0, 1011));
    assert!(
        (now + 59..=now + 61).contains(&e.lifetime),
        "{} vs {now}",
        e.lifetime
    );
    assert_eq!(e.flags & CT_F_SEEN_NON_SYN, 0);
    let e = h
        .ct(
            "ct_any4_global",
            &ct_key(A_IP, 40000, B_IP, 5353, IPPROTO_UDP, TUPLE_F_OUT),
        )
        .expect("OUT entry of the UDP flow");
    assert!((now + 59..=now + 61).contains(&e.lifetime));

    // The handshake done, the flow lives 8000 s.
    let (verdict, _) = h.run_from(&tcp(A_IP, 40000, B_IP, 8080, TCP_ACK));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let e = h
        .ct(
            "ct4_global",
            &ct_key(A_IP, 40000, B_IP, 8080, IPPROTO_TCP, TUPLE_F_OUT),
        )
        .unwrap();
    assert_eq!(e.packets, 2);
    assert_ne!(e.flags & CT_F_SEEN_NON_SYN, 0);
    assert!((now + 7999..=now + 8001).contains(&e.lifetime));

    // FIN one way keeps it alive; FIN both ways leaves it 10 s.
    let key = ct_key(A_IP, 40000, B_IP, 8080, IPPROTO_TCP, TUPLE_F_OUT);
    h.run_from(&tcp(A_IP, 40000, B_IP, 8080, TCP_FIN | TCP_ACK));
    let e = h.ct("ct4_global", &key).unwrap();
    assert_eq!(
        e.flags & (CT_F_TX_CLOSING | CT_F_RX_CLOSING),
        CT_F_TX_CLOSING
    );
    assert!((now + 7999..=now + 8001).contains(&e.lifetime));
    h.run_from(&tcp(B_IP, 8080, A_IP, 40000, TCP_FIN | TCP_ACK));
    let e = h.ct("ct4_global", &key).unwrap();
    assert_eq!(
        e.flags & (CT_F_TX_CLOSING | CT_F_RX_CLOSING),
        CT_F_TX_CLOSING | CT_F_RX_CLOSING
    );
    assert!((now + 9..=now + 11).contains(&e.lifetime));
    // A new SYN on the same ports opens it again.
    h.run_from(&tcp(A_IP, 40000, B_IP, 8080, TCP_SYN));
    let e = h.ct("ct4_global", &key).unwrap();
    assert_eq!(
        e.flags & (CT_F_TX_CLOSING | CT_F_RX_CLOSING | CT_F_SEEN_NON_SYN),
        0
    );
    assert!((now + 59..=now + 61).contains(&e.lifetime));
    // One RST closes both ways.
    h.run_from(&tcp(B_IP, 8080, A_IP, 40000, TCP_RST));
    let e = h.ct("ct4_global", &key).unwrap();
    assert!((now + 9..=now + 11).contains(&e.lifetime));
}

#[test]
fn a_source_that_is_not_the_lxcs_pod_is_dropped() {
    let h = Harness::new("lxc-sip");
    // C is a pod, but behind another lxc.
    let (verdict, _) = h.run_from(&tcp(C_IP, 40000, B_IP, 8080, TCP_SYN));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(h.metric(132, METRIC_EGRESS), 1);
    // No endpoint at all, and the node's own address.
    let spoofed = Ipv4Addr::new(10, 244, 0, 99);
    assert_eq!(
        h.run_from(&tcp(spoofed, 40000, B_IP, 8080, TCP_SYN)).0,
        TC_ACT_SHOT
    );
    assert_eq!(h.run_from(&udp(NODE_IP, 40000, B_IP, 5353)).0, TC_ACT_SHOT);
    assert_eq!(h.metric(132, METRIC_EGRESS), 3);
    assert_eq!(h.metric(0, METRIC_EGRESS), 0);
}

#[test]
fn a_vip_is_translated_to_its_backend_and_remembered() {
    let h = Harness::new("lxc-svc");
    let p = tcp(A_IP, 40100, VIP, 80, TCP_SYN);
    let (verdict, out) = h.run_from(&p);
    assert_eq!(
        verdict, TC_ACT_REDIRECT,
        "the backend is pod B, on this node"
    );
    let o = decode(&out);
    assert_eq!((o.src, o.sport, o.dst, o.dport), (A_IP, 40100, B_IP, 8080));
    assert_eq!((o.dst_mac, o.src_mac, o.ttl), (B_MAC, B_LXC_MAC, 63));

    let svc = h
        .ct(
            "ct4_global",
            &ct_key(A_IP, 40100, VIP, 80, IPPROTO_TCP, TUPLE_F_SERVICE),
        )
        .expect("SERVICE entry keyed by the untranslated packet");
    assert_eq!((svc.backend_id, svc.rev_nat_index), (1, 1u16.to_be()));
    let out_entry = h
        .ct(
            "ct4_global",
            &ct_key(A_IP, 40100, B_IP, 8080, IPPROTO_TCP, TUPLE_F_OUT),
        )
        .expect("OUT entry keyed by the translated packet");
    assert_eq!(out_entry.rev_nat_index, 1u16.to_be());

    // The next packet of the flow: same translation, same entries.
    let (verdict, out2) = h.run_from(&tcp(A_IP, 40100, VIP, 80, TCP_ACK));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let o2 = decode(&out2);
    assert_eq!((o2.dst, o2.dport), (B_IP, 8080));
    let svc = h
        .ct(
            "ct4_global",
            &ct_key(A_IP, 40100, VIP, 80, IPPROTO_TCP, TUPLE_F_SERVICE),
        )
        .unwrap();
    assert_eq!(svc.packets, 2);

    // UDP, with a checksum and without one (which stays without).
    for no_csum in [false, true] {
        let p = Pkt {
            udp_no_csum: no_csum,
            ..udp(A_IP, 40200 + u16::from(no_csum), VIP, 53)
        };
        let (verdict, out) = h.run_from(&p);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let o = decode(&out);
        assert_eq!((o.dst, o.dport, o.no_l4_csum), (B_IP, 5353, no_csum));
        assert!(h
            .ct(
                "ct_any4_global",
                &ct_key(A_IP, p.sport, VIP, 53, IPPROTO_UDP, TUPLE_F_SERVICE)
            )
            .is_some());
    }

    // IP options do not move the ports we rewrite.
    let p = Pkt {
        options: 12,
        ..tcp(A_IP, 40300, VIP, 80, TCP_SYN)
    };
    let o = decode(&h.run_from(&p).1);
    assert_eq!((o.src, o.sport, o.dst, o.dport), (A_IP, 40300, B_IP, 8080));
}

#[test]
fn flows_spread_over_backends_and_each_keeps_its_own() {
    let h = Harness::new("lxc-spread");
    let mut used = HashSet::new();
    for sport in 41000..41060u16 {
        let (verdict, out) = h.run_from(&tcp(A_IP, sport, VIP3, 80, TCP_SYN));
        assert_eq!(verdict, TC_ACT_OK, "remote backends go to the stack");
        let first = decode(&out);
        assert!(REMOTE_BACKENDS.contains(&first.dst));
        assert_eq!(first.dport, 8080);
        assert_eq!(first.ttl, 64, "the stack routes it, not us");
        for _ in 0..3 {
            let again = decode(&h.run_from(&tcp(A_IP, sport, VIP3, 80, TCP_ACK)).1);
            assert_eq!(again.dst, first.dst, "flow {sport} changed backend");
        }
        used.insert(first.dst);
    }
    assert!(used.len() > 1, "60 flows all went to {used:?}");
}

#[test]
fn replies_of_a_local_backend_come_from_the_vip() {
    let h = Harness::new("lxc-rev");
    let (verdict, _) = h.run_from(&tcp(A_IP, 40400, VIP, 80, TCP_SYN));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    // B answers through its own lxc (here, the same test device).
    let reply = Pkt {
        ..tcp(B_IP, 8080, A_IP, 40400, TCP_SYN | TCP_ACK)
    };
    let (verdict, out) = h.run_from(&reply);
    assert_eq!(verdict, TC_ACT_REDIRECT, "A is local too");
    let o = decode(&out);
    assert_eq!((o.src, o.sport, o.dst, o.dport), (VIP, 80, A_IP, 40400));
    assert_eq!((o.dst_mac, o.src_mac), (A_MAC, A_LXC_MAC));
    let e = h
        .ct(
            "ct4_global",
            &ct_key(A_IP, 40400, B_IP, 8080, IPPROTO_TCP, TUPLE_F_OUT),
        )
        .unwrap();
    assert_eq!(e.packets, 2, "the reply counted on the client's entry");
    assert_eq!(e.rx_flags_seen, TCP_SYN | TCP_ACK);
    // The reply created no entry of its own.
    assert!(h
        .ct(
            "ct4_global",
            &ct_key(B_IP, 8080, A_IP, 40400, IPPROTO_TCP, TUPLE_F_OUT)
        )
        .is_none());

    // UDP without a checksum keeps none on the way back.
    let p = Pkt {
        udp_no_csum: true,
        ..udp(A_IP, 40401, VIP, 53)
    };
    h.run_from(&p);
    let reply = Pkt {
        udp_no_csum: true,
        ..udp(B_IP, 5353, A_IP, 40401)
    };
    let o = decode(&h.run_from(&reply).1);
    assert_eq!((o.src, o.sport, o.no_l4_csum), (VIP, 53, true));
    // And one with a checksum gets it right.
    h.run_from(&udp(A_IP, 40402, VIP, 53));
    let o = decode(&h.run_from(&udp(B_IP, 5353, A_IP, 40402)).1);
    assert_eq!((o.src, o.sport, o.no_l4_csum), (VIP, 53, false));

    // A pod talking to B directly (no VIP) keeps B as the source.
    h.run_from(&tcp(A_IP, 40403, B_IP, 8080, TCP_SYN));
    let o = decode(
        &h.run_from(&tcp(B_IP, 8080, A_IP, 40403, TCP_SYN | TCP_ACK))
            .1,
    );
    assert_eq!((o.src, o.sport), (B_IP, 8080));
}

#[test]
fn replies_from_the_stack_come_from_the_vip_in_to_container() {
    let h = Harness::new("lxc-rev-in");
    let (verdict, out) = h.run_from(&tcp(A_IP, 40500, VIP3, 80, TCP_SYN));
    assert_eq!(verdict, TC_ACT_OK);
    let backend = decode(&out).dst;
    let (verdict, out) = h.run_to(&tcp(backend, 8080, A_IP, 40500, TCP_SYN | TCP_ACK));
    assert_eq!(verdict, TC_ACT_OK);
    let o = decode(&out);
    assert_eq!((o.src, o.sport, o.dst, o.dport), (VIP3, 80, A_IP, 40500));
    assert_eq!(o.ttl, 64, "the stack routed it already");
    assert_eq!(h.metric(0, METRIC_INGRESS), 1);

    // Anything else the stack delivers passes untouched.
    for p in [
        tcp(Ipv4Addr::new(1, 1, 1, 1), 443, A_IP, 40501, TCP_ACK),
        tcp(backend, 8080, A_IP, 40999, TCP_ACK),
    ] {
        let f = p.frame();
        assert_eq!(h.run("to_container", &f), (TC_ACT_OK, f));
    }
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&B_LXC_MAC);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    assert_eq!(h.run("to_container", &arp), (TC_ACT_OK, arp.clone()));
}

#[test]
fn drops_carry_their_reason() {
    let h = Harness::new("lxc-drops");
    // A frontend without backends never leaves as a VIP.
    let (verdict, _) = h.run_from(&tcp(A_IP, 40600, VIP0, 80, TCP_SYN));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(h.metric(158, METRIC_EGRESS), 1);
    // IPv6 (off here): unknown L3.
    let mut v6 = tcp(A_IP, 40600, B_IP, 8080, TCP_SYN).frame();
    v6[12..14].copy_from_slice(&[0x86, 0xdd]);
    assert_eq!(h.run("from_container", &v6).0, TC_ACT_SHOT);
    assert_eq!(h.metric(139, METRIC_EGRESS), 1);
    // TTL 1 cannot be routed one more hop.
    let p = Pkt {
        ttl: 1,
        ..tcp(A_IP, 40601, B_IP, 8080, TCP_SYN)
    };
    assert_eq!(h.run_from(&p).0, TC_ACT_SHOT);
    assert_eq!(h.metric(196, METRIC_EGRESS), 1);
    // A truncated TCP header.
    let f = tcp(A_IP, 40602, B_IP, 8080, TCP_SYN).frame();
    assert_eq!(h.run("from_container", &f[..40]).0, TC_ACT_SHOT);
    assert_eq!(h.metric(134, METRIC_EGRESS), 1);
    assert_eq!(h.metric(0, METRIC_EGRESS), 0);
}

#[test]
fn destinations_off_the_node_or_on_the_node_itself_go_to_the_stack() {
    let h = Harness::new("lxc-stack");
    for p in [
        tcp(A_IP, 40700, Ipv4Addr::new(1, 1, 1, 1), 443, TCP_SYN),
        udp(A_IP, 40701, NODE_IP, 53),
        tcp(A_IP, 40702, Ipv4Addr::new(10, 244, 1, 7), 8080, TCP_SYN),
    ] {
        let f = p.frame();
        assert_eq!(h.run("from_container", &f), (TC_ACT_OK, f));
    }
    assert_eq!(h.metric(0, METRIC_EGRESS), 3);
    assert!(h
        .ct(
            "ct4_global",
            &ct_key(
                A_IP,
                40700,
                Ipv4Addr::new(1, 1, 1, 1),
                443,
                IPPROTO_TCP,
                TUPLE_F_OUT
            )
        )
        .is_some());
}

/// A node port (the node's address) with externalTrafficPolicy=Local and
/// internalTrafficPolicy=Cluster: two scopes. A pod's packet is traffic from
/// inside, so it gets the internal scope's backends, never the external
/// scope's; a two-scope frontend whose internal scope is missing drops
/// instead of leaving untranslated.
#[test]
fn a_node_port_is_served_from_its_internal_scope() {
    let mut h = Harness::new("lxc-nodeport");
    let head = (
        SVC_FLAG_NODEPORT | SVC_FLAG_ROUTABLE | SVC_FLAG_EXT_LOCAL_SCOPE,
        SVC_FLAG2_TWO_SCOPES,
        0,
    );
    // External scope: pod B only (this node's); internal: the remote three.
    h.backends(20, &[(20, B_IP)], false);
    let remote: Vec<(u32, Ipv4Addr)> = REMOTE_BACKENDS
        .iter()
        .enumerate()
        .map(|(i, ip)| (21 + i as u32, *ip))
        .collect();
    h.backends(20, &remote, true);
    h.rev_nat(20, NODE_IP, 30080);
    let ids: Vec<u32> = remote.iter().map(|(id, _)| *id).collect();
    h.scope(NODE_IP, 30080, 20, LB_LOOKUP_SCOPE_INT, head, &ids);
    h.scope(NODE_IP, 30080, 20, LB_LOOKUP_SCOPE_EXT, head, &[20]);
    let mut used = HashSet::new();
    for sport in 42000..42030u16 {
        let (verdict, out) = h.run_from(&tcp(A_IP, sport, NODE_IP, 30080, TCP_SYN));
        assert_eq!(verdict, TC_ACT_OK, "remote backends go to the stack");
        let o = decode(&out);
        assert!(REMOTE_BACKENDS.contains(&o.dst), "{o:?}");
        assert_eq!(o.dport, 8080);
        used.insert(o.dst);
    }
    assert!(used.len() > 1, "30 flows all went to {used:?}");

    // The internal scope gone with the flag still set: dropped (158).
    let mut svcs: HashMap<_, Lb4Key, Lb4Service> =
        HashMap::try_from(h.ebpf.map_mut("lb4_services").unwrap()).unwrap();
    let int0 = Lb4Key {
        address: be32(NODE_IP),
        dport: be16(30080),
        backend_slot: 0,
        proto: IPPROTO_TCP,
        scope: LB_LOOKUP_SCOPE_INT,
        pad: [0; 2],
    };
    svcs.remove(&int0).unwrap();
    let dropped = h.metric(158, METRIC_EGRESS);
    let (verdict, _) = h.run_from(&tcp(A_IP, 42100, NODE_IP, 30080, TCP_SYN));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(h.metric(158, METRIC_EGRESS), dropped + 1);
}

/// ClientIP affinity on the per-packet path: a client's new flows go to the
/// backend it got last, while that backend is in the service and the
/// timeout has not passed; the entry is keyed by the client's address.
#[test]
fn client_affinity_holds_new_flows_while_valid() {
    let mut h = Harness::new("lxc-affinity");
    let vip = Ipv4Addr::new(10, 96, 0, 30);
    let remote: Vec<(u32, Ipv4Addr)> = REMOTE_BACKENDS
        .iter()
        .enumerate()
        .map(|(i, ip)| (31 + i as u32, *ip))
        .collect();
    let ids: Vec<u32> = remote.iter().map(|(id, _)| *id).collect();
    h.backends(30, &remote, true);
    h.rev_nat(30, vip, 80);
    h.scope(
        vip,
        80,
        30,
        LB_LOOKUP_SCOPE_EXT,
        (SVC_FLAG_AFFINITY, 0, 60),
        &ids,
    );
    let backend_of = |h: &Harness, sport| {
        let (verdict, out) = h.run_from(&tcp(A_IP, sport, vip, 80, TCP_SYN));
        assert_eq!(verdict, TC_ACT_OK);
        decode(&out).dst
    };

    // Thirty new flows of one client: one backend, remembered by address.
    let first = backend_of(&h, 43000);
    for sport in 43001..43030u16 {
        assert_eq!(backend_of(&h, sport), first, "flow {sport}");
    }
    let entry = h
        .affinity(A_IP, 30)
        .expect("an entry keyed by the client's address");
    let first_id = remote.iter().find(|(_, ip)| *ip == first).unwrap().0;
    assert_eq!(entry.backend_id, first_id);
    let now = u64::from(monotonic_secs());
    assert!(entry.last_used.abs_diff(now) <= 2, "{entry:?} vs {now}");

    // A valid entry the client did not make itself is honoured too.
    let other = remote.iter().find(|(_, ip)| *ip != first).unwrap();
    h.set_affinity(A_IP, 30, other.0, now);
    for sport in 43100..43110u16 {
        assert_eq!(backend_of(&h, sport), other.1);
    }

    // Expired (older than the timeout): a fresh random choice, so over ten
    // tries not always the old backend.
    let mut moved = false;
    for i in 0..10u16 {
        h.set_affinity(A_IP, 30, other.0, now - 600);
        moved |= backend_of(&h, 43200 + i) != other.1;
    }
    assert!(moved, "an expired affinity was honoured ten times");

    // The backend left the service (no match entry): not honoured either.
    let mut moved = false;
    h.backends(30, &[*other], false);
    for i in 0..10u16 {
        h.set_affinity(A_IP, 30, other.0, now);
        moved |= backend_of(&h, 43300 + i) != other.1;
    }
    assert!(moved, "a backend out of the service was kept ten times");
}
