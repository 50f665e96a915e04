//! The pinned maps as the agent sees them: one module per map with its
//! encoding (key and value from and to the model's types), the writer trait
//! the reconciler writes through, the handle on the pinned maps, and (in
//! tests) an in-memory fake of them.
//!
//! Architecture invariant: maps/ knows the model and the byte layouts, never
//! where desired state comes from (k8s/) nor in which order writes must happen
//! (lb/).

pub mod ct;
pub mod ipcache;
pub mod lb4_affinity;
pub mod lb4_affinity_match;
pub mod lb4_backends;
pub mod lb4_reverse_nat;
pub mod lb4_services;
pub mod lxc;
pub mod metrics;
mod pinned;
pub mod tunnel;
mod writer;

#[cfg(test)]
pub mod fake;

pub use pinned::{fill, LbMaps, MapsError};
pub use writer::{Capacity, LbMapWriter, MapWriteError};
