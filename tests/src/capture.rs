//! Packet captures inside a test's own namespaces: tcpdump writes pcap to a
//! pipe for the length of a closure, and the frames are decoded here (IPv4,
//! UDP and TCP ports, VXLAN's VNI and the packet it carries), so a test can
//! say what crossed a link without reading tcpdump's text.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    net::Ipv4Addr,
    process::{Child, Stdio},
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{bail, ensure, Context as _};

/// The UDP port VXLAN runs on in lash (and Cilium, and the Linux default).
pub const VXLAN_PORT: u16 = 8472;

/// An IPv4 packet as it crossed the link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4Packet {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    /// The IP header's total length.
    pub len: u16,
    pub dont_fragment: bool,
    /// A fragment: more fragments follow, or an offset other than 0.
    pub fragment: bool,
    /// Source and destination port of TCP and UDP (of a first fragment).
    pub ports: Option<(u16, u16)>,
}

/// One captured frame: an IPv4 packet, and what it carries when it is VXLAN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub ip: Ipv4Packet,
    pub vxlan: Option<Vxlan>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vxlan {
    pub vni: u32,
    /// The inner packet, when the inner frame is IPv4 (not ARP).
    pub inner: Option<Ipv4Packet>,
}

impl Frame {
    pub fn udp_dport(&self) -> Option<u16> {
        (self.ip.proto == 17).then_some(self.ip.ports?.1)
    }
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_8021Q: u16 = 0x8100;
const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_LINUX_SLL: u32 = 113;
const LINKTYPE_LINUX_SLL2: u32 = 276;
/// The packet type of a cooked header for what the link sent.
const PACKET_OUTGOING: u16 = 4;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// The IPv4 packet starting at `b` (possibly cut at the snap length), and
/// its payload.
fn ipv4(b: &[u8]) -> Option<(Ipv4Packet, &[u8])> {
    if b.first()? >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(b[0] & 0x0f) * 4;
    let frag = be16(b, 6)?;
    let proto = *b.get(9)?;
    let offset = frag & 0x1fff;
    let l4 = b.get(ihl..)?;
    let ports = match proto {
        6 | 17 if offset == 0 => Some((be16(l4, 0)?, be16(l4, 2)?)),
        _ => None,
    };
    let pkt = Ipv4Packet {
        src: Ipv4Addr::new(b[12], b[13], b[14], b[15]),
        dst: Ipv4Addr::new(*b.get(16)?, b[17], b[18], b[19]),
        proto,
        len: be16(b, 2)?,
        dont_fragment: frag & 0x4000 != 0,
        fragment: frag & 0x2000 != 0 || offset != 0,
        ports,
    };
    Some((pkt, l4))
}

/// The IPv4 packet behind an Ethernet header (one VLAN tag allowed).
fn ethernet(b: &[u8]) -> Option<(Ipv4Packet, &[u8])> {
    let mut ty = be16(b, 12)?;
    let mut at = 14;
    if ty == ETH_P_8021Q {
        ty = be16(b, 16)?;
        at = 18;
    }
    (ty == ETH_P_IP).then_some(())?;
    ipv4(b.get(at..)?)
}

fn frame(ip: Ipv4Packet, l4: &[u8]) -> Frame {
    let vxlan = (ip.proto == 17 && ip.ports.is_some_and(|(_, d)| d == VXLAN_PORT))
        .then(|| {
            let hdr = l4.get(8..16)?;
            let vni = u32::from_be_bytes([0, hdr[4], hdr[5], hdr[6]]);
            let inner = l4.get(16..).and_then(ethernet).map(|(p, _)| p);
            Some(Vxlan { vni, inner })
        })
        .flatten();
    Frame { ip, vxlan }
}

/// Decodes a pcap stream (as `tcpdump -w -` writes it, either byte order,
/// Ethernet or Linux cooked headers); frames that are not IPv4 are left out.
pub fn parse_pcap(data: &[u8]) -> anyhow::Result<Vec<Frame>> {
    ensure!(data.len() >= 24, "pcap stream of {} bytes", data.len());
    let magic = u32::from_le_bytes(data[0..4].try_into()?);
    let swap = match magic {
        0xa1b2c3d4 | 0xa1b23c4d => false,
        0xd4c3b2a1 | 0x4d3cb2a1 => true,
        m => bail!("not a pcap stream (magic {m:#x})"),
    };
    let u32_at = |at: usize| -> Option<u32> {
        let raw: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        Some(if swap {
            u32::from_be_bytes(raw)
        } else {
            u32::from_le_bytes(raw)
        })
    };
    let link = u32_at(20).context("pcap header")?;
    let mut frames = Vec::new();
    let mut at = 24;
    // A record cut short is the end of what tcpdump flushed before it stopped.
    while let (Some(incl), Some(_orig)) = (u32_at(at + 8), u32_at(at + 12)) {
        let start = at + 16;
        let Some(rec) = data.get(start..start + incl as usize) else {
            break;
        };
        at = start + incl as usize;
        let ip = match link {
            LINKTYPE_ETHERNET => ethernet(rec),
            // Cooked headers (`-i any`) say in which direction the frame
            // crossed its link: only what links received is kept, so a
            // frame forwarded by a bridge counts once, not once per port.
            LINKTYPE_LINUX_SLL
                if be16(rec, 14) == Some(ETH_P_IP) && be16(rec, 0) != Some(PACKET_OUTGOING) =>
            {
                ipv4(rec.get(16..).unwrap_or(&[]))
            }
            LINKTYPE_LINUX_SLL2
                if be16(rec, 0) == Some(ETH_P_IP)
                    && rec.get(10).map(|&t| u16::from(t)) != Some(PACKET_OUTGOING) =>
            {
                ipv4(rec.get(20..).unwrap_or(&[]))
            }
            LINKTYPE_LINUX_SLL | LINKTYPE_LINUX_SLL2 => None,
            other => bail!("pcap link type {other} not decoded"),
        };
        if let Some((ip, l4)) = ip {
            frames.push(frame(ip, l4));
        }
    }
    Ok(frames)
}

/// A tcpdump running in a namespace of the test's, writing pcap to a pipe
/// that a thread drains. Ended by its pid on `finish` or on drop.
pub struct Capture {
    child: Child,
    reader: Option<JoinHandle<Vec<u8>>>,
}

impl Capture {
    /// Starts tcpdump in namespace `ns` on `iface` (`any` for every link:
    /// then only what links received is decoded, so a frame crossing a
    /// bridge is seen once, on the port it came in by) with the capture
    /// `filter`, and returns once it listens.
    pub fn start(ns: &str, iface: &str, filter: &str) -> anyhow::Result<Self> {
        let mut cmd = crate::netns::in_netns(ns, "tcpdump", None)?;
        // Immediate mode: without it libpcap hands packets over in blocks
        // (after up to a second), and whatever is still in a block when
        // tcpdump is told to stop is lost.
        cmd.args([
            "-i",
            iface,
            "-nn",
            "--immediate-mode",
            "-U",
            "-s",
            "256",
            "-w",
            "-",
        ]);
        if !filter.is_empty() {
            cmd.arg(filter);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tcpdump (apt-get install tcpdump)")?;
        let mut out = child.stdout.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.read_to_end(&mut buf);
            buf
        });
        let mut cap = Capture {
            child,
            reader: Some(reader),
        };
        // tcpdump says "listening on IFACE" on stderr once its socket is
        // bound: from then on nothing the test sends is missed.
        let mut err = BufReader::new(cap.child.stderr.take().expect("piped"));
        let mut said = String::new();
        loop {
            let mut line = String::new();
            if err.read_line(&mut line)? == 0 {
                bail!("tcpdump in {ns} exited: {said}");
            }
            said.push_str(&line);
            if line.contains("listening on") {
                break;
            }
        }
        // Keep draining stderr so tcpdump never blocks on it.
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Ok(cap)
    }

    /// Stops tcpdump (it flushes what it has) and decodes the frames.
    pub fn finish(mut self) -> anyhow::Result<Vec<Frame>> {
        self.stop();
        let data = self
            .reader
            .take()
            .expect("reader")
            .join()
            .map_err(|_| anyhow::anyhow!("capture reader panicked"))?;
        parse_pcap(&data)
    }

    fn stop(&mut self) {
        // SAFETY: signalling our own child by its pid; it is not reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let gone = crate::sandbox::wait_for(Duration::from_secs(3), || {
            self.child.try_wait().ok().flatten()
        });
        if gone.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_header(src: [u8; 4], dst: [u8; 4], proto: u8, len: u16, frag: u16) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, proto, 0, 0];
        h[2..4].copy_from_slice(&len.to_be_bytes());
        h[6..8].copy_from_slice(&frag.to_be_bytes());
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h
    }

    fn eth(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ETH_P_IP.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn pcap(link: u32, frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in [0xa1b2c3d4u32, 0x0004_0002, 0, 0, 256, link] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for f in frames {
            for v in [0u32, 0, f.len() as u32, f.len() as u32] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(f);
        }
        out
    }

    #[test]
    fn decodes_vxlan_and_its_inner_packet() {
        let inner = ipv4_header([10, 244, 1, 5], [10, 244, 2, 7], 1, 1428, 0x4000);
        let mut vx = vec![0x08, 0, 0, 0, 0, 0x01, 0x00, 0];
        vx.extend_from_slice(&eth(&inner));
        let mut udp = vec![0u8; 8];
        udp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        udp[2..4].copy_from_slice(&VXLAN_PORT.to_be_bytes());
        udp.extend_from_slice(&vx);
        let mut outer = ipv4_header([192, 168, 50, 11], [192, 168, 50, 12], 17, 1478, 0);
        outer.extend_from_slice(&udp);
        // The same packet behind cooked (SLL2) headers, as `-i any` gives:
        // received by one port, sent by another (left out).
        let mut sll2 = vec![0u8; 20];
        sll2[0..2].copy_from_slice(&ETH_P_IP.to_be_bytes());
        sll2[10] = 3;
        sll2.extend_from_slice(&outer);
        let mut sent = sll2.clone();
        sent[10] = PACKET_OUTGOING as u8;
        for (link, f) in [
            (LINKTYPE_ETHERNET, vec![eth(&outer)]),
            (LINKTYPE_LINUX_SLL2, vec![sll2, sent]),
        ] {
            let got = parse_pcap(&pcap(link, &f)).unwrap();
            assert_eq!(got.len(), 1);
            let v = got[0].vxlan.as_ref().expect("vxlan");
            assert_eq!(v.vni, 256);
            let i = v.inner.as_ref().expect("inner");
            assert_eq!(
                (i.src, i.dst, i.len, i.dont_fragment),
                (
                    "10.244.1.5".parse().unwrap(),
                    "10.244.2.7".parse().unwrap(),
                    1428,
                    true
                )
            );
            assert_eq!(got[0].udp_dport(), Some(VXLAN_PORT));
            assert!(!got[0].ip.fragment);
        }
    }

    #[test]
    fn fragments_have_no_ports_and_a_cut_record_ends_the_stream() {
        let second = ipv4_header([10, 0, 0, 1], [10, 0, 0, 2], 17, 100, 0x00b9);
        let mut data = pcap(LINKTYPE_ETHERNET, &[eth(&second)]);
        data.extend_from_slice(&[1, 2, 3]);
        let got = parse_pcap(&data).unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].ip.fragment && got[0].ip.ports.is_none() && got[0].vxlan.is_none());
        assert!(parse_pcap(b"not a capture at all, no").is_err());
    }
}
