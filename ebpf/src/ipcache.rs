//! ipcache lookups: what a remote address is (its security identity, and
//! later the node that carries it).

use aya_ebpf::maps::lpm_trie::Key;
use lash_common::endpoint::{IpcacheKey, RemoteEndpointInfo, IDENTITY_WORLD};

use crate::maps::IPCACHE;

/// The longest-prefix entry for `addr` (network order), if any.
#[inline(always)]
pub fn lookup(addr: u32) -> Option<RemoteEndpointInfo> {
    let k = IpcacheKey::v4(addr, 32);
    // SAFETY: aya's LPM key is `prefix_len: u32` followed by the data, packed
    // (alignment 1): exactly the 24 bytes of IpcacheKey, whose `prefixlen`
    // comes first. Only read for the duration of the lookup.
    let key: &Key<[u8; 20]> = unsafe { &*(&k as *const IpcacheKey).cast() };
    IPCACHE.get(key).copied()
}

/// The security identity of `addr`: world when the ipcache does not know it.
#[inline(always)]
pub fn identity(addr: u32) -> u32 {
    lookup(addr).map_or(IDENTITY_WORLD, |i| i.sec_identity)
}
