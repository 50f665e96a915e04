//! lash kernel programs. One object, loaded and attached by the agent.
//!
//! - `sock`: cgroup/connect, sendmsg, recvmsg and getpeername, for IPv4 and for
//!   IPv6 sockets using v4-mapped addresses (socket-level LB).
//! - `sock_state`: each socket's own record of its services and backends.
//! - `lb`: service and backend lookups shared by the socket programs.
//! - `lxc`: the tc programs of a pod's host-side veth; `arp` its ARP responder.
//! - `ipv4`: header parsing and rewrites (addresses, ports, TTL, MACs) with
//!   their checksums; `conntrack`: the flow table; `nat`: per-packet service
//!   translation and its reverse; `ipcache`: what an address is; `metrics`:
//!   forward and drop counters.
//! - `overlay`: the tc programs of `lash_vxlan`; `tunnel`: which node
//!   carries an address, and the VXLAN tunnel key; `fib`: native routing's
//!   forwarding by the kernel's FIB; `config`: the node's settings, fixed
//!   at load.
//! - `maps`: every map, one place, with the pinned names bpftool shows.
#![no_std]
#![no_main]

mod arp;
mod config;
mod conntrack;
mod fib;
mod ipcache;
mod ipv4;
mod lb;
mod lxc;
mod maps;
mod metrics;
mod nat;
mod overlay;
mod sock;
mod sock_state;
mod tunnel;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach a panic, so this is
    // never called; it only has to exist for a no_std binary.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
