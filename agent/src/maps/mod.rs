//! The pinned maps, one module each for encoding, and the handle that opens
//! them from a bpffs directory (the CLI) or takes them from a loaded object (the
//! agent).

pub mod lb4_backends;
pub mod lb4_reverse_nat;
pub mod lb4_services;

use std::path::{Path, PathBuf};

use aya::maps::{HashMap, Map, MapData, MapError};
use lash_common::{
    maps::{LB4_AFFINITY, LB4_BACKENDS, LB4_REVERSE_NAT, LB4_REVERSE_SK, LB4_SERVICES},
    Ipv4RevnatEntry, Ipv4RevnatTuple, Lb4AffinityKey, Lb4AffinityVal, Lb4Backend, Lb4Key,
    Lb4ReverseNat, Lb4Service,
};
use thiserror::Error;

use crate::lb::reconcile::{Capacity, LbMapWriter, MapWriteError};

#[derive(Debug, Error)]
pub enum MapsError {
    #[error(
        "map {name} is not pinned at {path} (is --bpf-root right, and has `agent run` started once?)"
    )]
    NotPinned { name: &'static str, path: PathBuf },
    #[error("opening map {name} at {path}: {source}")]
    Open {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: MapError,
    },
    #[error("map {name} in {path} does not have the layout this agent expects: {source}")]
    Layout {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: MapError,
    },
    #[error("reading map {name}: {source}")]
    Read {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

pub type Hash<K, V> = HashMap<MapData, K, V>;

/// Handles on the load-balancing maps.
pub struct LbMaps {
    pub services: Hash<Lb4Key, Lb4Service>,
    pub backends: Hash<u32, Lb4Backend>,
    pub rev_nat: Hash<u16, Lb4ReverseNat>,
    pub reverse_sk: Hash<Ipv4RevnatTuple, Ipv4RevnatEntry>,
    pub affinity: Hash<Lb4AffinityKey, Lb4AffinityVal>,
    capacity: Capacity,
}

fn open<K: aya::Pod, V: aya::Pod>(
    root: &Path,
    name: &'static str,
) -> Result<(Hash<K, V>, u32), MapsError> {
    let path = root.join(name);
    if !path.exists() {
        return Err(MapsError::NotPinned { name, path });
    }
    let data = MapData::from_pin(&path).map_err(|source| MapsError::Open {
        name,
        path: path.clone(),
        source,
    })?;
    let max = data.info().map(|i| i.max_entries()).unwrap_or(0);
    let map = Map::from_map_data(data).map_err(|source| MapsError::Open {
        name,
        path: path.clone(),
        source,
    })?;
    let hash = HashMap::try_from(map).map_err(|source| MapsError::Layout { name, path, source })?;
    Ok((hash, max))
}

impl LbMaps {
    /// Opens the maps pinned under `bpf_root`. The agent itself opens them the
    /// same way once its loader has created or reused the pins.
    pub fn open_pinned(bpf_root: &Path) -> Result<Self, MapsError> {
        let (services, max_services) = open(bpf_root, LB4_SERVICES.name)?;
        let (backends, max_backends) = open(bpf_root, LB4_BACKENDS.name)?;
        let (rev_nat, max_rev_nat) = open(bpf_root, LB4_REVERSE_NAT.name)?;
        let (reverse_sk, _) = open(bpf_root, LB4_REVERSE_SK.name)?;
        let (affinity, _) = open(bpf_root, LB4_AFFINITY.name)?;
        Ok(LbMaps {
            services,
            backends,
            rev_nat,
            reverse_sk,
            affinity,
            capacity: Capacity {
                services: max_services as usize,
                backends: max_backends as usize,
                rev_nat: max_rev_nat as usize,
            },
        })
    }

    pub fn services_entries(&self) -> Result<Vec<(Lb4Key, Lb4Service)>, MapsError> {
        collect(&self.services, LB4_SERVICES.name)
    }

    pub fn backend_entries(&self) -> Result<Vec<(u32, Lb4Backend)>, MapsError> {
        collect(&self.backends, LB4_BACKENDS.name)
    }

    pub fn rev_nat_entries(&self) -> Result<Vec<(u16, Lb4ReverseNat)>, MapsError> {
        collect(&self.rev_nat, LB4_REVERSE_NAT.name)
    }

    /// Entries per map, in the order of [`ALL`]. Walks every key: BPF hash
    /// maps have no cheap count.
    pub fn entry_counts(&self) -> [usize; 5] {
        [
            self.services.keys().filter(Result::is_ok).count(),
            self.backends.keys().filter(Result::is_ok).count(),
            self.rev_nat.keys().filter(Result::is_ok).count(),
            self.reverse_sk.keys().filter(Result::is_ok).count(),
            self.affinity.keys().filter(Result::is_ok).count(),
        ]
    }
}

/// All entries of a map. An entry deleted while we iterate is skipped, not an
/// error: the kernel and the agent write concurrently.
fn collect<K: aya::Pod, V: aya::Pod>(
    map: &Hash<K, V>,
    name: &'static str,
) -> Result<Vec<(K, V)>, MapsError> {
    let mut out = Vec::new();
    for item in map.iter() {
        match item {
            Ok(kv) => out.push(kv),
            Err(MapError::KeyNotFound) => continue,
            Err(source) => return Err(MapsError::Read { name, source }),
        }
    }
    Ok(out)
}

fn write_err(map: &'static str, op: &'static str, e: MapError) -> MapWriteError {
    let source = match e {
        MapError::SyscallError(s) => s.io_error,
        other => std::io::Error::other(other.to_string()),
    };
    MapWriteError { map, op, source }
}

/// Deleting what is already gone is success: the end state is the one wanted.
fn deleted(r: Result<(), MapError>, map: &'static str) -> Result<(), MapWriteError> {
    match r {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(s)) if s.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(write_err(map, "delete", e)),
    }
}

impl LbMapWriter for LbMaps {
    fn put_service(&mut self, key: &Lb4Key, value: &Lb4Service) -> Result<(), MapWriteError> {
        self.services
            .insert(key, value, 0)
            .map_err(|e| write_err(LB4_SERVICES.name, "update", e))
    }
    fn del_service(&mut self, key: &Lb4Key) -> Result<(), MapWriteError> {
        deleted(self.services.remove(key), LB4_SERVICES.name)
    }
    fn put_backend(&mut self, id: u32, value: &Lb4Backend) -> Result<(), MapWriteError> {
        self.backends
            .insert(id, value, 0)
            .map_err(|e| write_err(LB4_BACKENDS.name, "update", e))
    }
    fn del_backend(&mut self, id: u32) -> Result<(), MapWriteError> {
        deleted(self.backends.remove(&id), LB4_BACKENDS.name)
    }
    fn put_rev_nat(&mut self, index: u16, value: &Lb4ReverseNat) -> Result<(), MapWriteError> {
        self.rev_nat
            .insert(lb4_reverse_nat::key(index), value, 0)
            .map_err(|e| write_err(LB4_REVERSE_NAT.name, "update", e))
    }
    fn del_rev_nat(&mut self, index: u16) -> Result<(), MapWriteError> {
        deleted(
            self.rev_nat.remove(&lb4_reverse_nat::key(index)),
            LB4_REVERSE_NAT.name,
        )
    }
    fn capacity(&self) -> Capacity {
        self.capacity
    }
}
