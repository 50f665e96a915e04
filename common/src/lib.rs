//! Map keys and values shared by the kernel programs (ebpf/) and the agent.
//!
//! Every type is `#[repr(C)]`, `Copy`, and spells out its padding so the bytes a
//! `bpftool map dump` prints match Cilium's struct layouts field for field
//! (see ARCHITECTURE.md, "Map layouts"). Byte order follows Cilium: addresses,
//! ports and `rev_nat_index` in network order; backend ids, counts and slots in
//! host order.
//!
//! Architecture invariant: this crate knows nothing of user space. It is `no_std`,
//! has no dependencies but (behind the `user` feature) aya's `Pod` marker.
#![no_std]

pub mod ct;
pub mod endpoint;
pub mod lb;
pub mod maps;
pub mod metrics;
pub mod tunnel;

pub use lb::*;
