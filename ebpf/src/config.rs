//! The node's settings, fixed when the agent loads the object: read-only
//! globals the loader writes (`EbpfLoader::set_global`) before the kernel
//! sees the programs, so the verifier knows their values and prunes the
//! branches another mode would take. An object loaded without them (tests,
//! the bench's floor) hands packets for other nodes to the stack.
//!
//! They are read through `read_volatile`: the compiler must not fold the
//! defaults written here into the code.

use lash_common::tunnel::ROUTING_STACK;

/// What to do with a packet for another node (`ROUTING_*`).
#[unsafe(no_mangle)]
static LASH_ROUTING: u32 = ROUTING_STACK;

/// ifindex of `lash_vxlan` (tunnel routing).
#[unsafe(no_mangle)]
static LASH_TUNNEL_IFINDEX: u32 = 0;

/// Prefix length of every node's pod range: the tunnel map's keys are
/// addresses masked to it.
#[unsafe(no_mangle)]
static LASH_POD_CIDR_BITS: u32 = 24;

#[inline(always)]
pub fn routing() -> u32 {
    // SAFETY: a read of a static the loader initialised.
    unsafe { core::ptr::read_volatile(&LASH_ROUTING) }
}

#[inline(always)]
pub fn tunnel_ifindex() -> u32 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&LASH_TUNNEL_IFINDEX) }
}

#[inline(always)]
pub fn pod_cidr_bits() -> u32 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&LASH_POD_CIDR_BITS) }
}
