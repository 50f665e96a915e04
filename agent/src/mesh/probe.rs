//! Whether another node answers: one ICMP echo to its address (what
//! `agent node list` shows as REACHABLE). A raw socket, since the agent
//! runs as root and ping sockets may be closed to it by
//! net.ipv4.ping_group_range.

use std::{
    net::Ipv4Addr,
    sync::atomic::{AtomicU16, Ordering},
    time::{Duration, Instant},
};

static SEQ: AtomicU16 = AtomicU16::new(1);

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request with `id` and `seq`.
fn echo_request(id: u16, seq: u16) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = 8; // echo request
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..16].copy_from_slice(b"lash-hi!");
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// Whether a received datagram (IPv4 header included, as raw sockets give
/// it) is the reply from `from` to our id and seq.
fn is_reply(buf: &[u8], from: Ipv4Addr, id: u16, seq: u16) -> bool {
    if buf.len() < 20 {
        return false;
    }
    let ihl = usize::from(buf[0] & 0x0f) * 4;
    let src = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
    let icmp = &buf[ihl.min(buf.len())..];
    icmp.len() >= 8
        && src == from
        && icmp[0] == 0
        && u16::from_be_bytes([icmp[4], icmp[5]]) == id
        && u16::from_be_bytes([icmp[6], icmp[7]]) == seq
}

/// Sends one echo to `to` and waits up to `timeout` for its reply.
pub fn ping(to: Ipv4Addr, timeout: Duration) -> std::io::Result<bool> {
    // SAFETY: plain socket call; the fd is closed below on every path.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let r = ping_on(fd, to, timeout);
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    r
}

fn ping_on(fd: i32, to: Ipv4Addr, timeout: Duration) -> std::io::Result<bool> {
    let id = (std::process::id() & 0xffff) as u16;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let req = echo_request(id, seq);
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(to).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: a valid buffer and address of the sizes given.
    let sent = unsafe {
        libc::sendto(
            fd,
            req.as_ptr().cast(),
            req.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        // No route, network unreachable: not reachable, not an error.
        return Ok(false);
    }
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
        if n <= 0 {
            continue;
        }
        // SAFETY: a buffer of the size given.
        let got = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if got > 0 && is_reply(&buf[..got as usize], to, id, seq) {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_checksums_to_zero_and_its_reply_is_recognised() {
        let req = echo_request(0x1234, 7);
        assert_eq!(checksum(&req), 0);
        let mut reply = vec![
            0x45u8, 0, 0, 36, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
        ];
        let mut icmp = req.to_vec();
        icmp[0] = 0;
        reply.extend_from_slice(&icmp);
        let from = Ipv4Addr::new(10, 0, 0, 2);
        assert!(is_reply(&reply, from, 0x1234, 7));
        assert!(!is_reply(&reply, from, 0x1234, 8));
        assert!(!is_reply(&reply, Ipv4Addr::new(10, 0, 0, 3), 0x1234, 7));
    }
}
