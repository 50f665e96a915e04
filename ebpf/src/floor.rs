//! The benchmark's floors, never loaded by the agent:
//! - a cgroup/connect4 program that does one hash lookup of the destination,
//!   keyed as lb4_services is, and nothing else. `cargo xtask bench` attaches
//!   it next to lash and reads both programs' ns per call from bpf_stats in
//!   the same run: what lash costs above the least any map-driven connect4
//!   program can cost;
//! - `tc_pass`, a tc program that only returns TC_ACT_OK: the pass-through
//!   next to which from_container's per-packet cost is measured
//!   (BPF_PROG_TEST_RUN on the same frames).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::TC_ACT_OK,
    macros::{cgroup_sock_addr, classifier, map},
    maps::HashMap,
    programs::{SockAddrContext, TcContext},
};
use lash_common::{maps as def, Lb4Key, Lb4Service, LB_LOOKUP_SCOPE_EXT};

/// Same key and value as lb4_services; the bench sizes and fills it as lash's
/// lb4_services, plus the address it connects to, so the lookup hits in a
/// table as big as the one lash's first lookup walks.
#[map(name = "floor_services")]
static FLOOR_SERVICES: HashMap<Lb4Key, Lb4Service> =
    HashMap::with_max_entries(def::LB4_SERVICES.max_entries, 0);

#[cgroup_sock_addr(connect4)]
pub fn floor_connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel hands a valid bpf_sock_addr to connect4 programs.
    let (address, port) = unsafe { ((*ctx.sock_addr).user_ip4, (*ctx.sock_addr).user_port) };
    let key = Lb4Key {
        address,
        dport: port as u16,
        backend_slot: 0,
        proto: 6,
        scope: LB_LOOKUP_SCOPE_EXT,
        pad: [0; 2],
    };
    // SAFETY: the value is only read; volatile so the lookup is not optimised away.
    let hit = unsafe { FLOOR_SERVICES.get(&key) }.is_some();
    unsafe { core::ptr::read_volatile(&hit) };
    1
}

#[classifier]
pub fn tc_pass(_ctx: TcContext) -> i32 {
    TC_ACT_OK as i32
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
