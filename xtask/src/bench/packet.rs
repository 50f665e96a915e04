//! Per-packet cost of from-container (ebpf/src/lxc.rs), through
//! BPF_PROG_TEST_RUN on a crafted frame. Nothing is sent anywhere, and the
//! runs happen on a thread that first moves into a network namespace of its
//! own (the test run's device is that namespace's lo).
//!
//! One run per BPF_PROG_TEST_RUN call, `runs` calls per sample, the median
//! of the kernel's per-call time: the kernel's own repeat loop runs the
//! program again on the same skb, which keeps what the previous run wrote
//! (from_container decrements the TTL and DNATs the service frame), so after
//! 63 runs every packet would take the TTL-exceeded drop and the service
//! frame would no longer be addressed to the service. A call's time includes
//! the kernel's timer reads; the pass-through measured the same way carries
//! the same, and the difference to it is the figure the goal is about.
//!
//! Four frames a pod sends: a TCP SYN to another local pod (local delivery)
//! and one to a ClusterIP (the service path), and an ACK of each of those
//! flows (a packet in the middle of a connection, which conntrack looks up
//! as a possible reply first, as SYNs are not), with the pods in `lxc` and the
//! Service in the lb4 maps as the agent writes them. The goal is at
//! most 100 ns over a pass-through tc program: `tc_pass` of the floor object
//! (ebpf/src/floor.rs, returns TC_ACT_OK and nothing else) runs on the same
//! frames, in the same rotation, and each from_container row gets its
//! difference to the pass-through on that frame.

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
/// tc verdicts (linux/pkt_cls.h).
const TC_ACT_OK: u32 = 0;
const TC_ACT_REDIRECT: u32 = 7;

pub struct Plan {
    pub rounds: usize,
    /// BPF_PROG_TEST_RUN calls (one run each) per sample.
    pub runs: u32,
}

/// The programs measured, in the rows' order.
const PROGRAMS: [&str; 2] = ["from_container", "pass-through"];

pub fn run(plan: &Plan, object: &[u8], floor_object: &[u8]) -> anyhow::Result<Vec<Value>> {
    let (rounds, runs) = (plan.rounds, plan.runs);
    let object = object.to_vec();
    let floor_object = floor_object.to_vec();
    // A thread of its own: unshare moves only the calling thread.
    #[allow(clippy::type_complexity)]
    let measured = std::thread::spawn(
        move || -> anyhow::Result<Vec<(&str, String, Vec<f64>, u32)>> {
            // SAFETY: unshare only changes this thread's namespaces.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error()).context("unshare(CLONE_NEWNET)");
            }
            let pins = PinDir::new("bench-pkt")?;
            // The test runs' skb comes in on this namespace's lo: pod 1's lxc,
            // so that from_container's source check passes and the whole path
            // (translation, conntrack, redirect) is what is measured.
            // SAFETY: a NUL-terminated name.
            let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
            anyhow::ensure!(lo != 0, "no lo in the test namespace");
            let ebpf = load(&object, &pins.path, lo)?;
            let from_container: &SchedClassifier = ebpf
                .program("from_container")
                .context("no from_container")?
                .try_into()?;
            let mut floor = EbpfLoader::new()
                .load(&floor_object)
                .context("loading the floor object")?;
            let pass: &mut SchedClassifier = floor
                .program_mut("tc_pass")
                .context("no tc_pass in the floor object")?
                .try_into()?;
            pass.load().context("loading tc_pass")?;
            let pass: &SchedClassifier = pass;
            let progs = [from_container, pass];
            let frames = [
                ("local delivery", tcp_frame(POD1, POD2, POD_PORT, TCP_SYN)),
                ("service", tcp_frame(POD1, VIP, VIP_PORT, TCP_SYN)),
                (
                    "local delivery, mid-flow",
                    tcp_frame(POD1, POD2, POD_PORT, TCP_ACK),
                ),
                ("service, mid-flow", tcp_frame(POD1, VIP, VIP_PORT, TCP_ACK)),
            ];
            // Every (program, frame) pair, program-major as the rows go.
            let pairs: Vec<(usize, usize)> = (0..progs.len())
                .flat_map(|p| (0..frames.len()).map(move |f| (p, f)))
                .collect();
            let mut out: Vec<(&str, String, Vec<f64>, u32)> = pairs
                .iter()
                .map(|&(p, f)| (PROGRAMS[p], frames[f].0.to_string(), Vec::new(), 0))
                .collect();
            for round in 0..rounds {
                for k in 0..pairs.len() {
                    check_interrupt()?;
                    let i = (round + k) % pairs.len();
                    let (p, f) = pairs[i];
                    let mut per_run = Vec::with_capacity(runs as usize);
                    let mut first = None;
                    for _ in 0..runs {
                        let mut opts = TestRunOptions::new();
                        opts.data_in = Some(&frames[f].1);
                        opts.repeat = 1;
                        let r = progs[p].test_run(opts).context("BPF_PROG_TEST_RUN")?;
                        // Every run must take the path measured (see `run`).
                        let first = *first.get_or_insert(r.return_value);
                        if r.return_value != first {
                            anyhow::bail!(
                                "{} on {}: verdict {} after {first}",
                                PROGRAMS[p],
                                frames[f].0,
                                r.return_value,
                            );
                        }
                        out[i].3 = r.return_value;
                        per_run.push(r.duration.as_nanos() as f64);
                    }
                    out[i].2.push(median(per_run));
                }
            }
            Ok(out)
        },
    )
    .join()
    .map_err(|_| anyhow::anyhow!("the test-run thread panicked"))?;
    let mut rows = Vec::new();
    match measured {
        Ok(m) => {
            for (program, packet, ns, verdict) in m {
                // Both frames end in local delivery to pod 2 (the service
                // one after DNAT): anything but a redirect means a shorter
                // path (a drop) was timed, not the datapath.
                let want = if program == "from_container" {
                    TC_ACT_REDIRECT
                } else {
                    TC_ACT_OK
                };
                if verdict != want {
                    rows.push(json!({"program": program, "packet": packet,
                        "error": format!("verdict {verdict}, expected {want}: not the path to measure")}));
                    continue;
                }
                rows.push(json!({
                    "program": program, "packet": packet, "samples": ns.len(),
                    "runs": runs, "verdict": verdict,
                    "ns_per_packet": median(ns.clone()),
                    "ns_min": ns.iter().copied().fold(f64::INFINITY, f64::min),
                    "ns_max": ns.iter().copied().fold(0.0, f64::max),
                }));
            }
            // from_container over the pass-through, frame by frame.
            let pass: Vec<(Value, f64)> = rows
                .iter()
                .filter(|r| r["program"] == "pass-through")
                .filter_map(|r| Some((r["packet"].clone(), r["ns_per_packet"].as_f64()?)))
                .collect();
            for row in rows.iter_mut().filter(|r| r["program"] == "from_container") {
                let over = pass
                    .iter()
                    .find(|(packet, _)| *packet == row["packet"])
                    .zip(row["ns_per_packet"].as_f64())
                    .map(|((_, p), x)| x - p);
                if let Some(over) = over {
                    row["ns_over_pass_through"] = json!(over);
                }
            }
        }
        Err(e) => rows.push(json!({"program": "from_container", "error": short(&e)})),
    }
    for row in &rows {
        eprintln!("bench:     {row}");
    }
    Ok(rows)
}

/// The lash object with its maps pinned under `pins`, the two pods in `lxc`
/// (pod 1's lxc being `lxc1`, the device the test runs come in on),
/// VIP:80 -> pod 2:8080 in the lb4 maps, from_container loaded.
fn load(object: &[u8], pins: &Path, lxc1: u32) -> anyhow::Result<Ebpf> {
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
                // Pod 2's lxc only matters to the redirect, which a test run
                // does not carry out (bpf_redirect_peer just records it).
                ifindex: if i == 0 { lxc1 } else { 10 },
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

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// An Ethernet frame from pod 1 to its lxc: IPv4 + TCP with `flags` to
/// `dst:port`, checksums right (the datapath may check or update them).
fn tcp_frame(src: Ipv4Addr, dst: Ipv4Addr, port: u16, flags: u8) -> Vec<u8> {
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
    tcp[13] = flags;
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
        let f = tcp_frame(POD1, VIP, VIP_PORT, TCP_SYN);
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
