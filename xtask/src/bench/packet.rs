//! Per-packet cost of from-container (ebpf/src/lxc.rs), through
//! BPF_PROG_TEST_RUN: the kernel runs the program `repeat` times on a crafted
//! frame and reports the mean time per run. Nothing is sent anywhere, and the
//! runs happen on a thread that first moves into a network namespace of its
//! own (the test run's device is that namespace's lo).
//!
//! Two frames a pod sends: a TCP SYN to another local pod (local delivery)
//! and one to a ClusterIP (the service path), with the pods in `lxc` and the
//! Service in the lb4 maps as the agent writes them. The goal is at
//! most 100 ns over a pass-through tc program, which needs such a program in
//! ebpf/ (not there yet: the row says skipped).

use std::{net::Ipv4Addr, path::Path};

use anyhow::Context as _;
use aya::{
    maps::HashMap,
    programs::{SchedClassifier, TestRun, TestRunOptions},
    Ebpf, EbpfLoader,
};
use lash_common::{
    endpoint::{mac_to_u64, EndpointInfo, EndpointKey},
    Lb4Backend, Lb4Key, Lb4ReverseNat, Lb4Service, IPPROTO_TCP, LB_LOOKUP_SCOPE_EXT,
};
use lash_tests::ebpf::PinDir;
use serde_json::{json, Value};

use super::{check_interrupt, median, short};

pub const ARMS: [&str; 1] = ["per-packet"];

const POD1: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 11);
const POD2: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 12);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const VIP_PORT: u16 = 80;
const POD_PORT: u16 = 8080;
const POD1_MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0x00, 0x0b];
const POD2_MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0x00, 0x0c];
const LXC1_MAC: [u8; 6] = [0x2e, 0xe6, 0x8a, 0xa2, 0x06, 0x1e];
const LXC2_MAC: [u8; 6] = [0x2e, 0xe6, 0x8a, 0xa2, 0x06, 0x1f];

pub struct Plan {
    pub rounds: usize,
    pub repeat: u32,
}

pub fn run(plan: &Plan, object: &[u8]) -> anyhow::Result<Vec<Value>> {
    let (rounds, repeat) = (plan.rounds, plan.repeat);
    let object = object.to_vec();
    // A thread of its own: unshare moves only the calling thread.
    let measured = std::thread::spawn(move || -> anyhow::Result<Vec<(String, Vec<f64>, u32)>> {
        // SAFETY: unshare only changes this thread's namespaces.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("unshare(CLONE_NEWNET)");
        }
        let pins = PinDir::new("bench-pkt")?;
        let ebpf = load(&object, &pins.path)?;
        let prog: &SchedClassifier = ebpf
            .program("from_container")
            .context("no from_container")?
            .try_into()?;
        let frames = [
            ("local delivery", tcp_syn(POD1, POD2, POD_PORT)),
            ("service", tcp_syn(POD1, VIP, VIP_PORT)),
        ];
        let mut out: Vec<(String, Vec<f64>, u32)> = frames
            .iter()
            .map(|(name, _)| (name.to_string(), Vec::new(), 0))
            .collect();
        for round in 0..rounds {
            for k in 0..frames.len() {
                check_interrupt()?;
                let i = (round + k) % frames.len();
                let mut opts = TestRunOptions::new();
                opts.data_in = Some(&frames[i].1);
                opts.repeat = repeat;
                let r = prog.test_run(opts).context("BPF_PROG_TEST_RUN")?;
                out[i].1.push(r.duration.as_nanos() as f64);
                out[i].2 = r.return_value;
            }
        }
        Ok(out)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the test-run thread panicked"))?;
    let mut rows = Vec::new();
    match measured {
        Ok(m) => {
            for (packet, ns, verdict) in m {
                rows.push(json!({
                    "program": "from_container", "packet": packet, "samples": ns.len(),
                    "repeat": repeat, "verdict": verdict,
                    "ns_per_packet": median(ns.clone()),
                    "ns_min": ns.iter().copied().fold(f64::INFINITY, f64::min),
                    "ns_max": ns.iter().copied().fold(0.0, f64::max),
                }));
            }
        }
        Err(e) => rows.push(json!({"program": "from_container", "error": short(&e)})),
    }
    // TODO(pod datapath): a pass-through classifier (returns TC_ACT_OK and
    // nothing else) in ebpf/, measured on the same frames; the rows above
    // then get ns over it.
    rows.push(json!({
        "program": "pass-through",
        "skipped": "needs a pass-through tc program in ebpf/ (none there yet)",
    }));
    for row in &rows {
        eprintln!("bench:     {row}");
    }
    Ok(rows)
}

/// The lash object with its maps pinned under `pins`, the two pods in `lxc`,
/// VIP:80 -> pod 2:8080 in the lb4 maps, from_container loaded.
fn load(object: &[u8], pins: &Path) -> anyhow::Result<Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pins)
        .load(object)
        .context("loading the lash object")?;
    {
        let mut lxc: HashMap<_, EndpointKey, EndpointInfo> =
            HashMap::try_from(ebpf.map_mut("lxc").context("no lxc map")?)?;
        for (i, (ip, mac, node_mac)) in [(POD1, POD1_MAC, LXC1_MAC), (POD2, POD2_MAC, LXC2_MAC)]
            .into_iter()
            .enumerate()
        {
            let info = EndpointInfo {
                // Test runs happen on lo (ifindex 1); the pods' lxcs would be
                // other devices, whose index only matters to a redirect.
                ifindex: 10 + i as u32,
                lxc_id: 100 + i as u16,
                mac: mac_to_u64(mac),
                node_mac: mac_to_u64(node_mac),
                ..Default::default()
            };
            lxc.insert(EndpointKey::v4(u32::from(ip).to_be()), info, 0)?;
        }
    }
    // As the agent's map writer lays a Service out: slot 0 the frontend
    // (count of backends), slot 1 the backend id, the backend, its reverse NAT.
    let key = |slot: u16| Lb4Key {
        address: u32::from(VIP).to_be(),
        dport: VIP_PORT.to_be(),
        backend_slot: slot,
        proto: IPPROTO_TCP,
        scope: LB_LOOKUP_SCOPE_EXT,
        pad: [0; 2],
    };
    let rev_nat: u16 = 1;
    {
        let mut svc: HashMap<_, Lb4Key, Lb4Service> =
            HashMap::try_from(ebpf.map_mut("lb4_services").context("no lb4_services")?)?;
        let frontend = Lb4Service {
            count: 1,
            rev_nat_index: rev_nat.to_be(),
            ..Default::default()
        };
        svc.insert(key(0), frontend, 0)?;
        let slot = Lb4Service {
            backend_id: 1,
            rev_nat_index: rev_nat.to_be(),
            ..Default::default()
        };
        svc.insert(key(1), slot, 0)?;
    }
    {
        let mut be: HashMap<_, u32, Lb4Backend> =
            HashMap::try_from(ebpf.map_mut("lb4_backends").context("no lb4_backends")?)?;
        let backend = Lb4Backend {
            address: u32::from(POD2).to_be(),
            port: POD_PORT.to_be(),
            proto: IPPROTO_TCP,
            ..Default::default()
        };
        be.insert(1, backend, 0)?;
    }
    {
        let mut rn: HashMap<_, u16, Lb4ReverseNat> = HashMap::try_from(
            ebpf.map_mut("lb4_reverse_nat")
                .context("no lb4_reverse_nat")?,
        )?;
        let r = Lb4ReverseNat {
            address: u32::from(VIP).to_be(),
            port: VIP_PORT.to_be(),
        };
        rn.insert(rev_nat, r, 0)?;
    }
    let prog: &mut SchedClassifier = ebpf
        .program_mut("from_container")
        .context("no from_container")?
        .try_into()?;
    prog.load().context("loading from_container")?;
    Ok(ebpf)
}

/// An Ethernet frame from pod 1 to its lxc: IPv4 + TCP SYN to `dst:port`,
/// checksums right (the datapath may check or update them).
fn tcp_syn(src: Ipv4Addr, dst: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(54);
    f.extend_from_slice(&LXC1_MAC);
    f.extend_from_slice(&POD1_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = IPPROTO_TCP;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = checksum(&ip, 0);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&port.to_be_bytes());
    tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    // The pseudo-header: addresses, protocol, TCP length.
    let mut pseudo = 0u32;
    for w in src.octets().chunks(2).chain(dst.octets().chunks(2)) {
        pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    pseudo += u32::from(IPPROTO_TCP) + 20;
    let sum = checksum(&tcp, pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&tcp);
    f
}

/// The Internet checksum of `data` with `sum` already added in.
fn checksum(data: &[u8], mut sum: u32) -> u16 {
    for w in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_checksums_verify() {
        let f = tcp_syn(POD1, VIP, VIP_PORT);
        assert_eq!(f.len(), 54);
        // A header with its checksum in sums to 0xffff, i.e. checksum 0.
        assert_eq!(checksum(&f[14..34], 0), 0);
        let mut pseudo = 0u32;
        for w in f[26..34].chunks(2) {
            pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        pseudo += u32::from(IPPROTO_TCP) + 20;
        assert_eq!(checksum(&f[34..54], pseudo), 0);
    }
}
