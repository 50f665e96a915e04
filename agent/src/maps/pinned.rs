//! The handle on the pinned maps: opened from a bpffs directory by the agent
//! (once its loader has created or reused the pins) and by every CLI command.

use std::{
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
};

use aya::maps::{HashMap, Map, MapData, MapError};
use lash_common::{
    maps::{MapDef, LB4_AFFINITY_MATCH, LB4_BACKENDS, LB4_REVERSE_NAT, LB4_SERVICES},
    Lb4AffinityMatch, Lb4Backend, Lb4Key, Lb4ReverseNat, Lb4Service,
};
use thiserror::Error;

use super::{
    lb4_affinity_match, lb4_reverse_nat,
    writer::{Capacity, LbMapWriter, MapWriteError},
};

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

/// Handles on the maps the agent writes and the CLI reads.
pub struct LbMaps {
    pub services: Hash<Lb4Key, Lb4Service>,
    pub backends: Hash<u32, Lb4Backend>,
    pub rev_nat: Hash<u16, Lb4ReverseNat>,
    pub affinity_match: Hash<Lb4AffinityMatch, u8>,
    capacity: Capacity,
}

/// The map pinned for `def` under `root`, as aya's untyped handle, and its
/// capacity; the typed views (hash, LRU hash, LPM trie, per-CPU hash) come
/// from it.
pub(crate) fn open_map(root: &Path, def: &MapDef) -> Result<(Map, u32), MapsError> {
    let name = def.name;
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
    Ok((map, max))
}

/// A typed view of `map` (opened for `def` under `root`), or the layout error
/// naming it.
pub(crate) fn typed<M: TryFrom<Map, Error = MapError>>(
    root: &Path,
    def: &MapDef,
    map: Map,
) -> Result<M, MapsError> {
    M::try_from(map).map_err(|source| MapsError::Layout {
        name: def.name,
        path: root.join(def.name),
        source,
    })
}

pub(crate) fn open<K: aya::Pod, V: aya::Pod>(
    root: &Path,
    def: &MapDef,
) -> Result<(Hash<K, V>, u32), MapsError> {
    let (map, max) = open_map(root, def)?;
    Ok((typed(root, def, map)?, max))
}

impl LbMaps {
    /// Opens the maps pinned under `bpf_root`.
    pub fn open_pinned(bpf_root: &Path) -> Result<Self, MapsError> {
        let (services, max_services) = open(bpf_root, &LB4_SERVICES)?;
        let (backends, max_backends) = open(bpf_root, &LB4_BACKENDS)?;
        let (rev_nat, max_rev_nat) = open(bpf_root, &LB4_REVERSE_NAT)?;
        let (affinity_match, max_match) = open(bpf_root, &LB4_AFFINITY_MATCH)?;
        Ok(LbMaps {
            services,
            backends,
            rev_nat,
            affinity_match,
            capacity: Capacity {
                services: max_services as usize,
                backends: max_backends as usize,
                rev_nat: max_rev_nat as usize,
                affinity_match: max_match as usize,
            },
        })
    }

    pub fn services_entries(&self) -> Result<Vec<(Lb4Key, Lb4Service)>, MapsError> {
        collect(&self.services, LB4_SERVICES.name)
    }

    pub fn backend_entries(&self) -> Result<Vec<(u32, Lb4Backend)>, MapsError> {
        collect(&self.backends, LB4_BACKENDS.name)
    }

    /// Reverse-NAT entries, keyed by the index in host order.
    pub fn rev_nat_entries(&self) -> Result<Vec<(u16, Lb4ReverseNat)>, MapsError> {
        Ok(collect(&self.rev_nat, LB4_REVERSE_NAT.name)?
            .into_iter()
            .map(|(k, v)| (lb4_reverse_nat::index_of(k), v))
            .collect())
    }

    /// (backend id, rev-NAT index in host order) of every affinity-match entry.
    pub fn affinity_match_entries(&self) -> Result<Vec<(u32, u16)>, MapsError> {
        Ok(collect(&self.affinity_match, LB4_AFFINITY_MATCH.name)?
            .into_iter()
            .map(|(k, _)| lb4_affinity_match::parts(&k))
            .collect())
    }
}

/// All entries of a map. An entry deleted while we iterate is skipped, not an
/// error: the kernel and the agent write concurrently.
pub(crate) fn collect<K: aya::Pod, V: aya::Pod>(
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

/// Size and fill of any pinned map, whatever its types: what `agent status`
/// shows for every row of the map table.
#[derive(Clone, Copy, Debug)]
pub struct MapFill {
    pub entries: usize,
    pub max_entries: u32,
}

/// Counts the entries of the map pinned at `path` by walking its keys with
/// BPF_MAP_GET_NEXT_KEY (hash maps have no cheaper count). None if it is not
/// pinned or cannot be read.
pub fn fill(path: &Path) -> Option<MapFill> {
    let data = MapData::from_pin(path).ok()?;
    let info = data.info().ok()?;
    let key_size = info.key_size() as usize;
    let max_entries = info.max_entries();
    let fd = data.fd().as_fd().as_raw_fd();
    let mut cur: Option<Vec<u8>> = None;
    let mut next = vec![0u8; key_size.max(1)];
    let mut entries = 0usize;
    // Bounded: a map changing under us could in theory keep the walk going.
    for _ in 0..=(u64::from(max_entries) * 2) {
        #[repr(C)]
        struct GetNextKey {
            map_fd: u32,
            pad: u32,
            key: u64,
            next_key: u64,
        }
        let attr = GetNextKey {
            map_fd: fd as u32,
            pad: 0,
            key: cur.as_ref().map_or(0, |k| k.as_ptr() as u64),
            next_key: next.as_mut_ptr() as u64,
        };
        const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
        // SAFETY: attr is a valid bpf_attr prefix for this command; the key
        // buffers are key_size bytes long and outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_GET_NEXT_KEY,
                &attr as *const GetNextKey,
                std::mem::size_of::<GetNextKey>(),
            )
        };
        if rc != 0 {
            break;
        }
        entries += 1;
        cur = Some(next.clone());
    }
    Some(MapFill {
        entries,
        max_entries,
    })
}

pub(crate) fn write_err(map: &'static str, op: &'static str, e: MapError) -> MapWriteError {
    let source = match e {
        MapError::SyscallError(s) => s.io_error,
        other => std::io::Error::other(other.to_string()),
    };
    MapWriteError { map, op, source }
}

/// Deleting what is already gone is success: the end state is the one wanted.
pub(crate) fn deleted(r: Result<(), MapError>, map: &'static str) -> Result<(), MapWriteError> {
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
    fn put_affinity_match(&mut self, id: u32, index: u16) -> Result<(), MapWriteError> {
        self.affinity_match
            .insert(lb4_affinity_match::key(id, index), 0, 0)
            .map_err(|e| write_err(LB4_AFFINITY_MATCH.name, "update", e))
    }
    fn del_affinity_match(&mut self, id: u32, index: u16) -> Result<(), MapWriteError> {
        deleted(
            self.affinity_match
                .remove(&lb4_affinity_match::key(id, index)),
            LB4_AFFINITY_MATCH.name,
        )
    }
    fn capacity(&self) -> Capacity {
        self.capacity
    }
}
