//! The pool on disk: `<state-dir>/ipam.json`, the range and who holds what.
//! Rewritten whole after every change, through a temporary file that is
//! synced and renamed, so a crash or power cut leaves either the old file or
//! the new one, never half of one: losing an allocation would hand a live
//! pod's address to the next pod.

use std::{
    collections::BTreeMap,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{IpamError, Ipv4Cidr, Pool};

pub const FILE_NAME: &str = "ipam.json";

/// The file's layout.
#[derive(Serialize, Deserialize)]
struct OnDisk {
    cidr: Ipv4Cidr,
    /// Where round-robin resumes after a restart.
    #[serde(default)]
    last: Option<Ipv4Addr>,
    allocations: BTreeMap<String, Ipv4Addr>,
}

#[derive(Debug)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join(FILE_NAME),
        }
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> IpamError {
        let path = path.to_path_buf();
        move |source| IpamError::Io { path, source }
    }

    /// The range of the saved pool, if there is a readable one: what a
    /// restarted agent keeps serving when nothing else names the range.
    pub fn stored_cidr(&self) -> Option<Ipv4Cidr> {
        let text = fs::read_to_string(&self.path).ok()?;
        serde_json::from_str::<OnDisk>(&text).ok().map(|d| d.cidr)
    }

    /// The saved pool for `cidr`, or an empty one if there is no file yet.
    /// A file for another range is refused, not dropped: its owners may be
    /// running pods.
    pub fn load(&self, cidr: Ipv4Cidr) -> Result<Pool, IpamError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Pool::new(cidr)),
            Err(e) => return Err(self.io(&self.path)(e)),
        };
        let disk: OnDisk = serde_json::from_str(&text).map_err(|source| IpamError::Corrupt {
            path: self.path.clone(),
            source,
        })?;
        if disk.cidr != cidr {
            return Err(IpamError::CidrMismatch {
                path: self.path.clone(),
                stored: disk.cidr,
                wanted: cidr,
                held: disk.allocations.len(),
            });
        }
        Pool::from_parts(cidr, disk.allocations, disk.last).map_err(|reason| IpamError::Invalid {
            path: self.path.clone(),
            reason,
        })
    }

    /// Replaces the file with `pool`, durably (see [`crate::durable`]).
    pub fn save(&self, pool: &Pool) -> Result<(), IpamError> {
        let disk = OnDisk {
            cidr: pool.cidr(),
            last: pool.last(),
            allocations: pool.allocations().clone(),
        };
        let bytes = serde_json::to_vec_pretty(&disk).map_err(|e| self.io(&self.path)(e.into()))?;
        crate::durable::replace(&self.path, &bytes).map_err(self.io(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::TempDir;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn saved_pool_reloads_the_same_and_leaves_no_temporary_file() {
        let dir = TempDir::new("reload");
        let store = Store::new(&dir.0);
        let c = cidr("10.244.0.0/24");
        let mut pool = store.load(c).unwrap();
        assert_eq!(pool, Pool::new(c), "no file yet: an empty pool");
        pool.allocate("a/eth0").unwrap();
        pool.allocate("b/eth0").unwrap();
        pool.release("a/eth0");
        store.save(&pool).unwrap();

        let names: Vec<String> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [FILE_NAME]);
        let back = Store::new(&dir.0).load(c).unwrap();
        assert_eq!(back, pool);
        // Round-robin resumes where it was: b has .3, a's .2 is not reused.
        let mut back = back;
        assert_eq!(back.allocate("c/eth0").unwrap().octets()[3], 4);
    }

    #[test]
    fn save_replaces_the_file_whole() {
        let dir = TempDir::new("replace");
        let store = Store::new(&dir.0);
        let c = cidr("10.244.0.0/24");
        let mut pool = Pool::new(c);
        for i in 0..20 {
            pool.allocate(&format!("c{i}/eth0")).unwrap();
        }
        store.save(&pool).unwrap();
        let big = fs::metadata(store.path()).unwrap().len();
        pool.retain(&Default::default());
        store.save(&pool).unwrap();
        // A shorter file, nothing of the old one left after its end.
        assert!(fs::metadata(store.path()).unwrap().len() < big);
        assert_eq!(store.load(c).unwrap().used(), 0);
    }

    #[test]
    fn another_range_on_disk_is_refused() {
        let dir = TempDir::new("mismatch");
        let store = Store::new(&dir.0);
        let mut pool = Pool::new(cidr("10.244.0.0/24"));
        pool.allocate("a/eth0").unwrap();
        store.save(&pool).unwrap();
        let err = store.load(cidr("10.244.1.0/24")).unwrap_err();
        assert!(matches!(err, IpamError::CidrMismatch { held: 1, .. }));
        let msg = err.to_string();
        for part in ["10.244.0.0/24", "10.244.1.0/24", FILE_NAME] {
            assert!(msg.contains(part), "{part} not in: {msg}");
        }
        // The file is untouched.
        assert_eq!(store.load(cidr("10.244.0.0/24")).unwrap(), pool);
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = TempDir::new("corrupt");
        let store = Store::new(&dir.0);
        let c = cidr("10.244.0.0/24");
        for text in ["", "{\"cidr\": \"10.244.0.0/24\", \"allocations\": {", "[]"] {
            fs::write(store.path(), text).unwrap();
            let err = store.load(c).unwrap_err();
            assert!(matches!(err, IpamError::Corrupt { .. }), "{text:?}: {err}");
            assert!(
                err.to_string()
                    .contains(&store.path().display().to_string()),
                "{err}"
            );
        }
        // Well-formed JSON that breaks the pool's rules is refused too.
        fs::write(
            store.path(),
            r#"{"cidr": "10.244.0.0/24", "allocations": {"a/eth0": "10.244.0.255"}}"#,
        )
        .unwrap();
        let err = store.load(c).unwrap_err();
        assert!(matches!(err, IpamError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("10.244.0.255"), "{err}");
    }
}
