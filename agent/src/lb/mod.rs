//! Load balancing: turns desired services into ordered writes to the maps.
//!
//! - `programmed`: the picture of what the maps hold, read back at start;
//! - `admission`: whether a service fits (the one capacity rule);
//! - `writes`: the write-order contract for one service or backend;
//! - `slots`: which backend goes into which slot;
//! - `reconcile`: the [`Reconciler`], full and incremental.
//!
//! Architecture invariant: lb/ knows the model and writes through
//! [`crate::maps::LbMapWriter`]; it knows nothing of Kubernetes, files or
//! tasks. One [`Reconciler`] exists per agent, owned by the datapath thread
//! (datapath.rs), the one writer of the maps.

mod admission;
mod programmed;
mod reconcile;
mod slots;
mod writes;

pub use programmed::Programmed;
pub use reconcile::{Reconciler, Report};
