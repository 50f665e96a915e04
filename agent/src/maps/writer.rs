//! The writes the reconciler makes, as a trait: implemented by the pinned maps
//! ([`super::LbMaps`]) and by an in-memory fake in tests ([`super::fake`]).

use lash_common::{Lb4Backend, Lb4Key, Lb4ReverseNat, Lb4Service};
use thiserror::Error;

/// A failed map write.
#[derive(Debug, Error)]
#[error("{op} in {map}: {source}")]
pub struct MapWriteError {
    pub map: &'static str,
    pub op: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// How many entries each map the reconciler writes can hold.
#[derive(Clone, Copy, Debug)]
pub struct Capacity {
    pub services: usize,
    pub backends: usize,
    pub rev_nat: usize,
    pub affinity_match: usize,
}

/// Every write the reconciler needs. Deleting a key that is already gone is
/// success: the end state is the one wanted.
pub trait LbMapWriter {
    fn put_service(&mut self, key: &Lb4Key, value: &Lb4Service) -> Result<(), MapWriteError>;
    fn del_service(&mut self, key: &Lb4Key) -> Result<(), MapWriteError>;
    fn put_backend(&mut self, id: u32, value: &Lb4Backend) -> Result<(), MapWriteError>;
    fn del_backend(&mut self, id: u32) -> Result<(), MapWriteError>;
    /// `index` in host order; the encoding turns it into the key.
    fn put_rev_nat(&mut self, index: u16, value: &Lb4ReverseNat) -> Result<(), MapWriteError>;
    fn del_rev_nat(&mut self, index: u16) -> Result<(), MapWriteError>;
    /// Marks backend `id` as one of the service with rev-NAT `index` (host order).
    fn put_affinity_match(&mut self, id: u32, index: u16) -> Result<(), MapWriteError>;
    fn del_affinity_match(&mut self, id: u32, index: u16) -> Result<(), MapWriteError>;
    fn capacity(&self) -> Capacity;
}
