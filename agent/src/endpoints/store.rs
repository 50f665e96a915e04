//! The endpoint records on disk: `<state-dir>/endpoints.json`, rewritten
//! whole and durably after every change. A restarted agent reads them to
//! know which lxc links and map entries are its own.

use std::{
    collections::BTreeMap,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const FILE_NAME: &str = "endpoints.json";

/// One pod attachment the datapath serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub id: u16,
    pub container_id: String,
    pub ifname: String,
    pub address: Ipv4Addr,
    /// The lxc, in the agent's network namespace.
    pub host_ifname: String,
    pub host_ifindex: u32,
    pub host_mac: [u8; 6],
    pub pod_mac: [u8; 6],
    pub netns: String,
    pub identity: u32,
    pub created_unix: u64,
}

impl EndpointRecord {
    /// `containerID:ifname`, the key records are held by.
    pub fn owner(&self) -> String {
        lash_api::Attachment::new(&self.container_id, &self.ifname).owner()
    }
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("endpoint records {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("endpoint records {path} do not parse (fix or remove the file): {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Debug)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    pub fn new(state_dir: &Path) -> Self {
        Store {
            path: state_dir.join(FILE_NAME),
        }
    }

    /// The records by owner; none when there is no file yet.
    pub fn load(&self) -> Result<BTreeMap<String, EndpointRecord>, StoreError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let list: Vec<EndpointRecord> =
            serde_json::from_str(&text).map_err(|source| StoreError::Corrupt {
                path: self.path.clone(),
                source,
            })?;
        Ok(list.into_iter().map(|r| (r.owner(), r)).collect())
    }

    pub fn save(&self, records: &BTreeMap<String, EndpointRecord>) -> Result<(), StoreError> {
        let list: Vec<&EndpointRecord> = records.values().collect();
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(&list).map_err(|e| io(e.into()))?;
        crate::durable::replace(&self.path, &bytes).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::TempDir;

    #[test]
    fn records_survive_a_reload() {
        let dir = TempDir::new("endpoints-store");
        let store = Store::new(&dir.0);
        assert!(store.load().unwrap().is_empty(), "no file: no records");
        let r = EndpointRecord {
            id: 7,
            container_id: "abc".into(),
            ifname: "eth0".into(),
            address: Ipv4Addr::new(10, 200, 0, 9),
            host_ifname: "lxc0123456789ab".into(),
            host_ifindex: 12,
            host_mac: [2, 0, 0, 0, 0, 1],
            pod_mac: [2, 0, 0, 0, 0, 2],
            netns: "/run/netns/x".into(),
            identity: 256,
            created_unix: 1,
        };
        let mut all = BTreeMap::new();
        all.insert(r.owner(), r.clone());
        store.save(&all).unwrap();
        assert_eq!(store.load().unwrap(), all);
        fs::write(dir.0.join(FILE_NAME), b"{").unwrap();
        assert!(matches!(store.load(), Err(StoreError::Corrupt { .. })));
    }
}
