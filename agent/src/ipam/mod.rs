//! IPAM: the addresses of this node's pods, taken from `--pod-cidr`.
//!
//! `cidr.rs` is the range (which addresses pods may get), `pool.rs` the
//! allocator (pure: who holds what, round-robin), `store.rs` the file that
//! makes it survive restarts. `Ipam` ties them together behind one mutex for
//! the CNI's requests, which arrive concurrently: each change is saved before
//! it is answered, so an address the agent handed out is never forgotten.
//!
//! An owner is a string naming one interface of one container (the CNI's
//! container id and interface name); the allocator does not look inside it.
//!
//! **Architecture invariant:** ipam/ knows neither the maps nor the CNI wire
//! format: it hands out addresses and remembers them.

mod cidr;
mod pool;
mod store;

use std::{
    collections::HashSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use cidr::Ipv4Cidr;
use pool::Pool;
use store::Store;

#[derive(Debug, Error)]
pub enum IpamError {
    #[error("no free pod address in {cidr}: all {capacity} are in use")]
    Exhausted { cidr: Ipv4Cidr, capacity: u64 },
    #[error(
        "{path} holds {held} allocation(s) from {stored}, but --pod-cidr is {wanted}; \
         refusing to start rather than forget them (run with --pod-cidr {stored}, or remove \
         the file once no pod uses those addresses)"
    )]
    CidrMismatch {
        path: PathBuf,
        stored: Ipv4Cidr,
        wanted: Ipv4Cidr,
        held: usize,
    },
    #[error("{path} is not a readable IPAM state file: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} is not a valid IPAM state file: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("IPAM state {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What `agent status` shows of IPAM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub cidr: Ipv4Cidr,
    pub gateway: Ipv4Addr,
    /// Addresses held by pods.
    pub used: u64,
    /// Addresses pods may hold: the range less network, gateway, broadcast.
    pub total: u64,
}

/// The node's allocator, shared by the agent's request handlers.
#[derive(Debug)]
pub struct Ipam {
    pool: Mutex<Pool>,
    store: Store,
}

impl Ipam {
    /// The allocator for `cidr`, with what `state_dir` remembers of it. The
    /// file is written at once, so an unwritable state dir stops `agent run`
    /// rather than the first pod.
    pub fn open(state_dir: &Path, cidr: Ipv4Cidr) -> Result<Self, IpamError> {
        let store = Store::new(state_dir);
        let pool = store.load(cidr)?;
        store.save(&pool)?;
        Ok(Self {
            pool: Mutex::new(pool),
            store,
        })
    }

    /// The range of the pool saved in `state_dir`, if any.
    pub fn stored_cidr(state_dir: &Path) -> Option<Ipv4Cidr> {
        Store::new(state_dir).stored_cidr()
    }

    pub fn usage(&self) -> Usage {
        let pool = self.lock();
        let cidr = pool.cidr();
        Usage {
            cidr,
            gateway: cidr.gateway(),
            used: pool.used(),
            total: cidr.pod_capacity(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        // A change is made on a copy and swapped in only once saved, so a
        // panic while the lock was held cannot have left the pool half done.
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on a copy of the pool; if it changed anything, saves the
    /// copy and only then makes it the pool. A failed save changes nothing.
    fn change<T>(&self, f: impl FnOnce(&mut Pool) -> Result<T, IpamError>) -> Result<T, IpamError> {
        let mut pool = self.lock();
        let mut next = pool.clone();
        let out = f(&mut next)?;
        if next != *pool {
            self.store.save(&next)?;
            *pool = next;
        }
        Ok(out)
    }
}

// The CNI's requests reach these through the agent's API (sources/cni_api.rs).
impl Ipam {
    /// The address of `owner`: the one it holds, else a new one (saved).
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr, IpamError> {
        self.change(|p| p.allocate(owner))
    }

    /// Frees the address of `owner`; `Ok(None)` if it held none.
    pub fn release(&self, owner: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        self.change(|p| Ok(p.release(owner)))
    }

    /// Frees every address whose owner is not in `keep` (CNI GC).
    pub fn retain(&self, keep: &HashSet<String>) -> Result<Vec<(String, Ipv4Addr)>, IpamError> {
        self.change(|p| Ok(p.retain(keep)))
    }
}

/// A fresh directory under the system temp dir, removed on drop.
#[cfg(test)]
pub(crate) struct TempDir(pub PathBuf);

#[cfg(test)]
impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "lash-ipam-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

#[cfg(test)]
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, sync::Arc, thread};

    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    fn on_disk(dir: &Path) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(store::FILE_NAME)).unwrap()).unwrap()
    }

    #[test]
    fn fifty_threads_get_fifty_distinct_addresses_then_release_them_all() {
        let dir = TempDir::new("threads");
        let ipam = Arc::new(Ipam::open(&dir.0, cidr("10.244.0.0/24")).unwrap());
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let ipam = Arc::clone(&ipam);
                thread::spawn(move || {
                    let owner = format!("container-{i}/eth0");
                    let addr = ipam.allocate(&owner).unwrap();
                    // A retried ADD gets the same address.
                    assert_eq!(ipam.allocate(&owner).unwrap(), addr);
                    (owner, addr)
                })
            })
            .collect();
        let got: BTreeMap<String, Ipv4Addr> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(got.len(), 50);
        let distinct: HashSet<Ipv4Addr> = got.values().copied().collect();
        assert_eq!(distinct.len(), 50, "an address was handed out twice");
        assert!(!distinct.contains(&Ipv4Addr::new(10, 244, 0, 1)));
        assert_eq!(ipam.usage().used, 50);
        assert_eq!(
            on_disk(&dir.0)["allocations"].as_object().unwrap().len(),
            50
        );

        let handles: Vec<_> = got
            .into_iter()
            .map(|(owner, addr)| {
                let ipam = Arc::clone(&ipam);
                thread::spawn(move || assert_eq!(ipam.release(&owner).unwrap(), Some(addr)))
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(ipam.usage().used, 0);
        assert_eq!(on_disk(&dir.0)["allocations"], serde_json::json!({}));
    }

    #[test]
    fn addresses_survive_a_restart() {
        let dir = TempDir::new("restart");
        let c = cidr("10.244.3.0/24");
        let ipam = Ipam::open(&dir.0, c).unwrap();
        let a = ipam.allocate("a/eth0").unwrap();
        let b = ipam.allocate("b/eth0").unwrap();
        ipam.release("a/eth0").unwrap();
        drop(ipam);

        let ipam = Ipam::open(&dir.0, c).unwrap();
        assert_eq!(ipam.allocate("b/eth0").unwrap(), b);
        // a's address was the one freed last time: not handed out again yet.
        assert_ne!(ipam.allocate("c/eth0").unwrap(), a);
        let freed = ipam.retain(&["c/eth0".to_string()].into()).unwrap();
        assert_eq!(freed, vec![("b/eth0".to_string(), b)]);
        assert_eq!(
            ipam.usage(),
            Usage {
                cidr: c,
                gateway: Ipv4Addr::new(10, 244, 3, 1),
                used: 1,
                total: 253,
            }
        );
        drop(ipam);
        assert!(matches!(
            Ipam::open(&dir.0, cidr("10.244.4.0/24")),
            Err(IpamError::CidrMismatch { held: 1, .. })
        ));
    }

    #[test]
    fn a_failed_save_changes_nothing() {
        let dir = TempDir::new("failsave");
        let ipam = Ipam::open(&dir.0, cidr("10.0.0.0/29")).unwrap();
        ipam.allocate("a").unwrap();
        // The state dir turns into a file: the next save cannot happen.
        std::fs::remove_dir_all(&dir.0).unwrap();
        std::fs::write(&dir.0, "").unwrap();
        assert!(matches!(ipam.allocate("b"), Err(IpamError::Io { .. })));
        assert!(matches!(ipam.release("a"), Err(IpamError::Io { .. })));
        assert_eq!(ipam.usage().used, 1);
        std::fs::remove_file(&dir.0).unwrap();
        std::fs::create_dir_all(&dir.0).unwrap();
        // Nothing was taken by the failed call: b gets the next address.
        assert_eq!(ipam.allocate("b").unwrap(), Ipv4Addr::new(10, 0, 0, 3));
    }
}
