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

/// The frame's first `LEN` bytes for direct reads and writes (no helper
/// call per field): a pointer to them, after pulling them into the skb's
/// linear part if a sender left headers outside it; None when the frame is
/// shorter than LEN. Any helper that writes the packet invalidates the pointer: take
/// a new one after it.
#[inline(always)]
fn linear<const LEN: usize>(ctx: &TcContext) -> Option<*mut u8> {
    // LEN is a constant so that the verifier, which only trusts a bounds
    // check at a constant offset, can see every read below it is in bounds.
    if ctx.data() + LEN > ctx.data_end() {
        ctx.pull_data(LEN as u32).ok()?;
        if ctx.data() + LEN > ctx.data_end() {
            return None;
        }
    }
    Some(ctx.data() as *mut u8)
}

/// The EtherType of the frame in `ctx`.
#[inline(always)]
pub fn ethertype(ctx: &TcContext) -> Option<u16> {
    let d = linear::<ETH_HLEN>(ctx)?;
    // SAFETY: the first ETH_HLEN bytes are in bounds (checked by linear).
    Some(unsafe { u16::from_be_bytes([*d.add(12), *d.add(13)]) })
}

/// Reads the IPv4 header (and the ports of TCP and UDP) of the frame in
/// `ctx`, whose EtherType the caller checked.
#[inline(always)]
pub fn parse(ctx: &TcContext) -> Result<Packet, i32> {
    let invalid = DROP_INVALID as i32;
    let d = linear::<{ IP + 20 }>(ctx).ok_or(invalid)?;
    // SAFETY: the IPv4 header's 20 bytes are in bounds (checked by linear).
    let h = unsafe { *(d.add(IP) as *const [u8; 20]) };
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
        // Ports lead both headers; TCP's flags are byte 13 of its 20.
        let flags_at = if p.is_tcp() { TCP_FLAGS } else { 0 };
        let (ports, flags) = if ihl == 5 {
            // The common case, at constant offsets the verifier can bound:
            // read in place.
            const L4: usize = IP + 20;
            let d = if p.is_tcp() {
                linear::<{ L4 + 20 }>(ctx)
            } else {
                linear::<{ L4 + 8 }>(ctx)
            }
            .ok_or(invalid)?;
            // SAFETY: in bounds (checked by linear): 8 bytes at least.
            let ports = unsafe { *(d.add(L4) as *const [u8; 4]) };
            let flags = if p.is_tcp() {
                // SAFETY: TCP's 20 bytes are in bounds (checked by linear).
                unsafe { *d.add(L4 + TCP_FLAGS) }
            } else {
                0
            };
            (ports, flags)
        } else {
            // IP options move the L4 header by a variable offset: through
            // the load helper, which bounds it for us.
            let ports = ctx.load::<[u8; 4]>(p.l4_off).map_err(|_| invalid)?;
            let flags = ctx.load::<u8>(p.l4_off + flags_at).map_err(|_| invalid)?;
            if p.is_tcp() {
                ctx.load::<u8>(p.l4_off + 19).map_err(|_| invalid)?;
            }
            (ports, flags)
        };
        p.sport = u16::from_ne_bytes([ports[0], ports[1]]);
        p.dport = u16::from_ne_bytes([ports[2], ports[3]]);
        if p.is_tcp() {
            p.tcp_flags = flags;
        }
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
    let d = linear::<{ IP + 20 }>(ctx).ok_or(DROP_WRITE_ERROR as i32)?;
    let ttl = p.ttl - 1;
    // RFC 1624's incremental update of the header checksum, worked out here
    // on the 16-bit word TTL and protocol share, and written in place with
    // the TTL. (Through bpf_l3_csum_replace plus a one-byte store, pod-to-pod
    // TCP throughput measured about half; why is not known yet.)
    // SAFETY: the IPv4 header is in bounds (checked by linear).
    unsafe {
        let csum = u16::from_be_bytes([*d.add(IP_CSUM), *d.add(IP_CSUM + 1)]);
        let old_word = u32::from(u16::from_be_bytes([p.ttl, p.proto]));
        let new_word = u32::from(u16::from_be_bytes([ttl, p.proto]));
        let mut sum = u32::from(!csum) + (!old_word & 0xffff) + new_word;
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        let [c0, c1] = (!(sum as u16)).to_be_bytes();
        *d.add(IP_TTL) = ttl;
        *d.add(IP_CSUM) = c0;
        *d.add(IP_CSUM + 1) = c1;
    }
    p.ttl = ttl;
    Ok(())
}

/// Sets the Ethernet destination and source MACs.
#[inline(always)]
pub fn set_macs(ctx: &TcContext, dst: [u8; 6], src: [u8; 6]) -> Result<(), i32> {
    let d = linear::<ETH_HLEN>(ctx).ok_or(DROP_WRITE_ERROR as i32)?;
    // SAFETY: the Ethernet header is in bounds (checked by linear).
    unsafe {
        *(d as *mut [u8; 6]) = dst;
        *(d.add(6) as *mut [u8; 6]) = src;
    }
    Ok(())
}

/// Source and destination address of the IPv4 frame in `ctx` (EtherType
/// checked by the caller), without judging the rest: for what only routes
/// by address, fragments included.
#[inline(always)]
pub fn addresses(ctx: &TcContext) -> Option<(u32, u32)> {
    let d = linear::<{ IP + 20 }>(ctx)?;
    // SAFETY: the IPv4 header's 20 bytes are in bounds (checked by linear).
    let h = unsafe { *(d.add(IP) as *const [u8; 20]) };
    Some((
        u32::from_ne_bytes([h[12], h[13], h[14], h[15]]),
        u32::from_ne_bytes([h[16], h[17], h[18], h[19]]),
    ))
}
