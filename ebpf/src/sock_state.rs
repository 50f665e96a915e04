//! A socket's own record of the services it was sent to (lb4_sock_state).
//!
//! The record is socket-local storage: the kernel allocates it on the socket's
//! first translated connect or datagram and frees it when the socket goes. So
//! it cannot be evicted by other sockets (a shared LRU table could be, by any
//! burst of short connections), and it never has to be cleaned up or sized.
//! A socket holds up to SOCK_LB_ENTRIES services at once; only a socket that
//! uses more than that loses its own oldest entry.

use core::ptr;

use aya_ebpf::{
    bindings::BPF_SK_STORAGE_GET_F_CREATE, helpers::bpf_sk_storage_get, programs::SockAddrContext,
};
use lash_common::{
    SockLbEntry, SockLbState, SOCK_EV_ENTRY_REUSED, SOCK_EV_NO_STATE, SOCK_LB_ENTRIES,
    SOCK_LB_RETIRED,
};

use crate::maps::{count_event, LB4_SOCK_STATE};

/// `SOCK_LB_ENTRIES` is a power of two, so `& MASK` keeps an index in bounds
/// in a way the verifier can see.
const MASK: usize = SOCK_LB_ENTRIES - 1;
const _: () = assert!(SOCK_LB_ENTRIES.is_power_of_two());

#[inline(always)]
fn storage(ctx: &SockAddrContext, flags: u64) -> *mut SockLbState {
    // SAFETY: the kernel hands a valid bpf_sock_addr whose `sk` is the socket
    // of the call; the helper checks the map and returns null or a value of
    // the map's value type.
    unsafe {
        let sk = (*ctx.sock_addr).__bindgen_anon_1.sk;
        bpf_sk_storage_get(LB4_SOCK_STATE.as_ptr(), sk.cast(), ptr::null_mut(), flags).cast()
    }
}

/// The socket's record, created (zeroed) if it has none yet. None only when
/// the kernel has no memory for it: counted, and the caller goes on without.
#[inline(always)]
pub fn get_or_create(ctx: &SockAddrContext) -> Option<&'static mut SockLbState> {
    let p = storage(ctx, u64::from(BPF_SK_STORAGE_GET_F_CREATE));
    if p.is_null() {
        count_event(SOCK_EV_NO_STATE);
        return None;
    }
    // SAFETY: non-null storage of this socket; the socket (and so the value)
    // outlives the program run, and the hooks that write it run under the
    // socket lock.
    Some(unsafe { &mut *p })
}

/// The socket's record, if any translation ever gave it one.
#[inline(always)]
pub fn get(ctx: &SockAddrContext) -> Option<&'static SockLbState> {
    let p = storage(ctx, 0);
    // SAFETY: see get_or_create.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// The live (not retired) entry for a frontend.
#[inline(always)]
pub fn find_frontend(state: &SockLbState, address: u32, port: u16) -> Option<usize> {
    let mut i = 0;
    while i < SOCK_LB_ENTRIES {
        let e = &state.entries[i];
        if e.frontend_address == address
            && e.frontend_port == port
            && e.flags & SOCK_LB_RETIRED == 0
        {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The entry (live or retired) of the backend a reply came from.
#[inline(always)]
pub fn find_backend(state: &SockLbState, address: u32, port: u16) -> Option<SockLbEntry> {
    let mut i = 0;
    while i < SOCK_LB_ENTRIES {
        let e = &state.entries[i];
        if e.frontend_address != 0 && e.backend_address == address && e.backend_port == port {
            return Some(*e);
        }
        i += 1;
    }
    None
}

/// Records `entry` as the socket's choice for its frontend. `current` is the
/// frontend's live entry, if any. A TCP socket has one peer at a time, so its
/// entry is overwritten; a UDP socket that moves to another backend keeps the
/// old entry as retired while there is room, so replies still on their way
/// from the old backend show the frontend too.
#[inline(always)]
pub fn record(state: &mut SockLbState, current: Option<usize>, entry: SockLbEntry, keep_old: bool) {
    let slot = match current {
        Some(i) if !keep_old => i,
        Some(i) => match free_slot(state) {
            Some(f) => {
                state.entries[i & MASK].flags |= SOCK_LB_RETIRED;
                f
            }
            None => i,
        },
        None => match free_slot(state).or_else(|| retired_slot(state)) {
            Some(f) => f,
            None => {
                // Every entry is a live service of this socket: reuse them in
                // turn, and say so.
                let n = state.next as usize;
                state.next = state.next.wrapping_add(1);
                count_event(SOCK_EV_ENTRY_REUSED);
                n
            }
        },
    };
    state.entries[slot & MASK] = entry;
}

#[inline(always)]
fn free_slot(state: &SockLbState) -> Option<usize> {
    let mut i = 0;
    while i < SOCK_LB_ENTRIES {
        if state.entries[i].frontend_address == 0 {
            return Some(i);
        }
        i += 1;
    }
    None
}

#[inline(always)]
fn retired_slot(state: &SockLbState) -> Option<usize> {
    let mut i = 0;
    while i < SOCK_LB_ENTRIES {
        if state.entries[i].flags & SOCK_LB_RETIRED != 0 {
            return Some(i);
        }
        i += 1;
    }
    None
}
