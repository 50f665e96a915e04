//! IPv4 frames on a tc hook: the header fields the datapath decides on, and
//! the rewrites it makes (addresses, ports, TTL, MACs), each with its
//! checksum updates. Errors are drop codes.
//!
//! Addresses and ports are kept as the bytes appear on the wire (a `u32`
//! built with `from_ne_bytes`), the same "network order" the maps use.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use lash_common::{
    metrics::{DROP_FRAG_NOSUPPORT, DROP_INVALID, DROP_WRITE_ERROR},
    IPPROTO_TCP, IPPROTO_UDP,
};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;

// Offsets from the start of the frame (the IPv4 header follows Ethernet).
const IP: usize = ETH_HLEN;
const IP_TTL: usize = IP + 8;
const IP_CSUM: usize = IP + 10;
const IP_SADDR: usize = IP + 12;
const IP_DADDR: usize = IP + 16;

/// More-fragments bit and fragment offset of the `frag_off` field.
const IP_MF_OFFSET: u16 = 0x3fff;

// Offsets inside the L4 header.
const TCP_FLAGS: usize = 13;
const TCP_CSUM: usize = 16;
const UDP_CSUM: usize = 6;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Which end of the flow a rewrite changes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    Source,
    Destination,
}

/// What the datapath reads of an IPv4 packet.
#[derive(Clone, Copy)]
pub struct Packet {
    pub saddr: u32,
    pub daddr: u32,
    pub proto: u8,
    pub ttl: u8,
    /// Offset of the L4 header in the frame: IP options are skipped, not
    /// refused.
    pub l4_off: usize,
    /// TCP and UDP ports, wire order; 0 for other protocols.
    pub sport: u16,
    pub dport: u16,
    /// TCP flags byte (FIN, SYN, RST, PSH, ACK, ...); 0 for other protocols.
    pub tcp_flags: u8,
    /// Length of the whole frame, for counters.
    pub len: u32,
}

impl Packet {
    #[inline(always)]
    pub fn is_tcp(&self) -> bool {
        self.proto == IPPROTO_TCP
    }

    /// TCP and UDP: the protocols with ports (services, port-aware conntrack).
    #[inline(always)]
    pub fn has_ports(&self) -> bool {
        self.proto == IPPROTO_TCP || self.proto == IPPROTO_UDP
    }

    /// Where the L4 checksum sits and the flags its updates need: a UDP
    /// checksum of 0 means "none" and must stay 0 (MARK_MANGLED_0 also keeps
    /// a computed 0 from turning into "none").
    #[inline(always)]
    fn l4_csum(&self) -> Option<(usize, u64)> {
        match self.proto {
            IPPROTO_TCP => Some((self.l4_off + TCP_CSUM, 0)),
            IPPROTO_UDP => Some((self.l4_off + UDP_CSUM, u64::from(BPF_F_MARK_MANGLED_0))),
            _ => None,
        }
    }
}

/// Reads the IPv4 header (and the ports of TCP and UDP) of the frame in
/// `ctx`, whose EtherType the caller checked.
#[inline(always)]
pub fn parse(ctx: &TcContext) -> Result<Packet, i32> {
    let invalid = DROP_INVALID as i32;
    let h = ctx.load::<[u8; 20]>(IP).map_err(|_| invalid)?;
    let (version, ihl) = (h[0] >> 4, usize::from(h[0] & 0x0f));
    if version != 4 || ihl < 5 {
        return Err(invalid);
    }
    let mut p = Packet {
        saddr: u32::from_ne_bytes([h[12], h[13], h[14], h[15]]),
        daddr: u32::from_ne_bytes([h[16], h[17], h[18], h[19]]),
        proto: h[9],
        ttl: h[8],
        l4_off: IP + ihl * 4,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        len: ctx.len(),
    };
    if p.has_ports() {
        // Without a fragment table only a whole datagram has its ports where
        // we look: fragments are refused, as Cilium does with its fragment
        // tracking off (TCP never fragments here: DF and the pod MTU).
        if u16::from_be_bytes([h[6], h[7]]) & IP_MF_OFFSET != 0 {
            return Err(DROP_FRAG_NOSUPPORT as i32);
        }
        let ports = if p.is_tcp() {
            let t = ctx.load::<[u8; 20]>(p.l4_off).map_err(|_| invalid)?;
            p.tcp_flags = t[TCP_FLAGS];
            [t[0], t[1], t[2], t[3]]
        } else {
            let u = ctx.load::<[u8; 8]>(p.l4_off).map_err(|_| invalid)?;
            [u[0], u[1], u[2], u[3]]
        };
        p.sport = u16::from_ne_bytes([ports[0], ports[1]]);
        p.dport = u16::from_ne_bytes([ports[2], ports[3]]);
    }
    Ok(p)
}

/// Replaces the source or destination address, with the IPv4 header
/// checksum and the TCP/UDP checksum (which covers the address through its
/// pseudo-header).
#[inline(always)]
pub fn set_addr(ctx: &TcContext, p: &mut Packet, end: End, new: u32) -> Result<(), i32> {
    let (off, old) = match end {
        End::Source => (IP_SADDR, p.saddr),
        End::Destination => (IP_DADDR, p.daddr),
    };
    if old == new {
        return Ok(());
    }
    let werr = |_| DROP_WRITE_ERROR as i32;
    if let Some((csum, flags)) = p.l4_csum() {
        ctx.l4_csum_replace(
            csum,
            u64::from(old),
            u64::from(new),
            flags | u64::from(BPF_F_PSEUDO_HDR) | 4,
        )
        .map_err(werr)?;
    }
    ctx.l3_csum_replace(IP_CSUM, u64::from(old), u64::from(new), 4)
        .map_err(werr)?;
    ctx.store(off, &new, 0).map_err(werr)?;
    match end {
        End::Source => p.saddr = new,
        End::Destination => p.daddr = new,
    }
    Ok(())
}

/// Replaces the source or destination port of a TCP or UDP packet, with its
/// L4 checksum.
#[inline(always)]
pub fn set_port(ctx: &TcContext, p: &mut Packet, end: End, new: u16) -> Result<(), i32> {
    let (at, old) = match end {
        End::Source => (0, p.sport),
        End::Destination => (2, p.dport),
    };
    if old == new {
        return Ok(());
    }
    let Some((csum, flags)) = p.l4_csum() else {
        return Err(DROP_INVALID as i32);
    };
    let werr = |_| DROP_WRITE_ERROR as i32;
    ctx.l4_csum_replace(csum, u64::from(old), u64::from(new), flags | 2)
        .map_err(werr)?;
    ctx.store(p.l4_off + at, &new, 0).map_err(werr)?;
    match end {
        End::Source => p.sport = new,
        End::Destination => p.dport = new,
    }
    Ok(())
}

/// Takes one off the TTL (the caller checked it is above 1), with the header
/// checksum: TTL and protocol form one 16-bit word of it.
#[inline(always)]
pub fn dec_ttl(ctx: &TcContext, p: &mut Packet) -> Result<(), i32> {
    let werr = |_| DROP_WRITE_ERROR as i32;
    let ttl = p.ttl - 1;
    // TTL, protocol and header checksum are four adjacent bytes: the new
    // checksum is worked out here (RFC 1624's incremental update, on the
    // 16-bit word TTL and protocol share) and the four go back in one
    // store. (Through bpf_l3_csum_replace plus a one-byte store, pod-to-pod
    // TCP throughput measured about half of this; why is not known yet.)
    let csum = ctx
        .load::<[u8; 2]>(IP_CSUM)
        .map(u16::from_be_bytes)
        .map_err(werr)?;
    let old_word = u32::from(u16::from_be_bytes([p.ttl, p.proto]));
    let new_word = u32::from(u16::from_be_bytes([ttl, p.proto]));
    let mut sum = u32::from(!csum) + (!old_word & 0xffff) + new_word;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    let new_csum = !(sum as u16);
    let [c0, c1] = new_csum.to_be_bytes();
    ctx.store(IP_TTL, &[ttl, p.proto, c0, c1], 0).map_err(werr)?;
    p.ttl = ttl;
    Ok(())
}

/// Sets the Ethernet destination and source MACs.
#[inline(always)]
pub fn set_macs(ctx: &TcContext, dst: [u8; 6], src: [u8; 6]) -> Result<(), i32> {
    let macs = [
        dst[0], dst[1], dst[2], dst[3], dst[4], dst[5], src[0], src[1], src[2], src[3], src[4],
        src[5],
    ];
    ctx.store(0, &macs, 0).map_err(|_| DROP_WRITE_ERROR as i32)
}
