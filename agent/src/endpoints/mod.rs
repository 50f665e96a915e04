//! The node's endpoints: pod attachments lash-cni made (a veth whose host
//! side is an `lxc*`), turned into what the datapath needs: an `lxc` entry
//! (how to deliver to the pod), an `ipcache` entry (what the address is), and
//! the tc programs on the lxc (`links.rs`). Records on disk (`store.rs`) let a
//! restarted agent take its endpoints over without touching their traffic.
//!
//! Architecture invariant: the [`Manager`] is the one writer of `lxc` and
//! `ipcache`, and it writes in the order the programs need: map entries
//! before the programs are attached (a pod's first packet passes the source
//! check), programs detached before the entries go (no program ever runs for
//! an lxc it knows nothing of). The veth itself is lash-cni's to make and
//! remove; the manager only checks it exists here.

pub mod links;
pub mod store;

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    ffi::CString,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use aya::Ebpf;
use lash_common::endpoint::IDENTITY_HOST;
use serde::Serialize;
use thiserror::Error;
use tracing::{info, warn};

use crate::{
    ipam::Ipv4Cidr,
    maps::{
        ipcache::{self, IpcacheMap},
        lxc::{self, LxcMap, PodEntry},
        MapWriteError, MapsError,
    },
};
use links::LinkErr;
pub use store::EndpointRecord;
use store::{Store, StoreError};

/// The security identity every pod gets until labels give pods their own
/// (the Kubernetes source): the first identity past the reserved ones.
pub const POD_IDENTITY: u32 = 256;

/// Endpoint ids run 1..=MAX_ID, as Cilium's do.
const MAX_ID: u16 = 4095;

/// What lash-cni made and asks the datapath to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSpec {
    pub container_id: String,
    pub ifname: String,
    pub address: Ipv4Addr,
    pub host_ifname: String,
    pub host_ifindex: u32,
    pub host_mac: [u8; 6],
    pub pod_mac: [u8; 6],
    pub netns: String,
}

/// An endpoint as the agent sees it now: its record and the programs the
/// kernel has attached to its lxc.
#[derive(Clone, Debug, Serialize)]
pub struct EndpointView {
    #[serde(flatten)]
    pub record: EndpointRecord,
    pub programs: Vec<String>,
}

#[derive(Debug, Error)]
pub enum EndpointError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    /// The lxc is not where the agent looks: not in its network namespace, or
    /// another interface by now.
    #[error("{0}")]
    NotHere(String),
    #[error("no endpoint id left (all {MAX_ID} in use)")]
    IdsExhausted,
    #[error(transparent)]
    Write(#[from] MapWriteError),
    // Boxed: aya's errors are large, and every Result here carries them.
    #[error(transparent)]
    Maps(Box<MapsError>),
    #[error(transparent)]
    Links(Box<LinkErr>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<MapsError> for EndpointError {
    fn from(e: MapsError) -> Self {
        EndpointError::Maps(Box::new(e))
    }
}

impl From<LinkErr> for EndpointError {
    fn from(e: LinkErr) -> Self {
        EndpointError::Links(Box::new(e))
    }
}

/// Endpoints at a glance, for `agent status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Summary {
    pub endpoints: usize,
    /// tcx links pinned for them (two per endpoint when all is well).
    pub links_pinned: usize,
}

/// What [`Manager::restore`] found.
#[derive(Debug, Default)]
pub struct Restored {
    pub taken_over: usize,
    /// Endpoints whose lxc vanished while no agent ran.
    pub gone: Vec<String>,
    /// Pins and map entries no record owned (a crash mid-create).
    pub swept: usize,
}

pub struct Manager {
    ebpf: Ebpf,
    bpf_root: PathBuf,
    pod_cidr: Option<Ipv4Cidr>,
    lxc: LxcMap,
    ipcache: IpcacheMap,
    store: Store,
    records: BTreeMap<String, EndpointRecord>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The endpoints recorded under `state_dir`, as they are now: what the CLI
/// shows, read without the agent.
pub fn recorded(state_dir: &Path) -> Result<Vec<EndpointView>, EndpointError> {
    let mut v: Vec<EndpointView> = Store::new(state_dir)
        .load()?
        .into_values()
        .map(|r| EndpointView {
            programs: links::attached(&r.host_ifname).unwrap_or_default(),
            record: r,
        })
        .collect();
    v.sort_by_key(|e| e.record.id);
    Ok(v)
}

/// The index of `ifname` in this network namespace, if it exists.
pub fn ifindex(ifname: &str) -> Option<u32> {
    let c = CString::new(ifname).ok()?;
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

impl Manager {
    /// Loads the lxc programs of `ebpf` and reads the records; nothing is
    /// attached or written until [`Manager::restore`].
    pub fn open(
        mut ebpf: Ebpf,
        bpf_root: &Path,
        state_dir: &Path,
        pod_cidr: Option<Ipv4Cidr>,
    ) -> Result<Self, EndpointError> {
        links::load(&mut ebpf, links::LXC)?;
        let store = Store::new(state_dir);
        let records = store.load()?;
        Ok(Manager {
            ebpf,
            bpf_root: bpf_root.into(),
            pod_cidr,
            lxc: LxcMap::open(bpf_root)?,
            ipcache: IpcacheMap::open(bpf_root)?,
            store,
            records,
        })
    }

    /// Takes over the endpoints an earlier agent left: this agent's programs
    /// go into their pinned links, their entries are written again (in case
    /// the maps were made anew). An endpoint whose lxc is gone is dropped
    /// (its address stays with IPAM until the runtime's DEL or GC); pins and
    /// pod entries nobody owns are removed.
    pub fn restore(&mut self) -> Result<Restored, EndpointError> {
        let mut report = Restored::default();
        let owners: Vec<String> = self.records.keys().cloned().collect();
        for owner in owners {
            let r = self.records[&owner].clone();
            if ifindex(&r.host_ifname) != Some(r.host_ifindex) {
                warn!(endpoint = r.id, lxc = %r.host_ifname, "the endpoint's lxc is gone; dropping the endpoint");
                self.remove_datapath(&r)?;
                self.records.remove(&owner);
                report.gone.push(owner);
                continue;
            }
            self.write_entries(&r)?;
            links::take_over(&mut self.ebpf, &self.bpf_root, &r.host_ifname)?;
            report.taken_over += 1;
        }
        let live: BTreeSet<&str> = self
            .records
            .values()
            .map(|r| r.host_ifname.as_str())
            .collect();
        for ifname in links::pinned_ifnames(&self.bpf_root) {
            if !live.contains(ifname.as_str()) {
                links::detach(&self.bpf_root, &ifname)?;
                report.swept += 1;
            }
        }
        let addresses: BTreeSet<Ipv4Addr> = self.records.values().map(|r| r.address).collect();
        for (k, v) in self.lxc.entries()? {
            let Some(e) = lxc::decode(&k, &v) else {
                continue;
            };
            if !e.host && !addresses.contains(&e.ip) {
                self.lxc.remove(e.ip)?;
                report.swept += 1;
            }
        }
        for e in self.ipcache.entries()? {
            if e.bits == 32 && e.identity == POD_IDENTITY && !addresses.contains(&e.ip) {
                self.ipcache.remove_host(e.ip)?;
                report.swept += 1;
            }
        }
        self.store.save(&self.records)?;
        Ok(report)
    }

    /// Makes `addresses` the node's own in `lxc` (flag host) and `ipcache`
    /// (identity host), removing host entries for addresses no longer here.
    pub fn set_host_addresses(&mut self, addresses: &[Ipv4Addr]) -> Result<(), EndpointError> {
        let want: BTreeSet<Ipv4Addr> = addresses.iter().copied().collect();
        for ip in &want {
            self.lxc.put(lxc::encode_host(*ip))?;
            self.ipcache
                .put(ipcache::encode_local(*ip, IDENTITY_HOST))?;
        }
        for (k, v) in self.lxc.entries()? {
            let Some(e) = lxc::decode(&k, &v) else {
                continue;
            };
            if e.host && !want.contains(&e.ip) {
                self.lxc.remove(e.ip)?;
                self.ipcache.remove_host(e.ip)?;
            }
        }
        Ok(())
    }

    fn check(&self, spec: &EndpointSpec) -> Result<(), EndpointError> {
        let invalid = |m: String| Err(EndpointError::Invalid(m));
        if spec.container_id.is_empty() || spec.ifname.is_empty() {
            return invalid("an endpoint needs a container id and an interface name".into());
        }
        if spec.host_ifname.is_empty() || spec.host_ifname.len() > 15 {
            return invalid(format!(
                "host interface name {:?} is not a Linux interface name (1 to 15 bytes)",
                spec.host_ifname
            ));
        }
        if let Some(cidr) = self.pod_cidr {
            if !cidr.is_pod_address(spec.address) {
                return invalid(format!(
                    "address {} is not a pod address of this node's range {cidr}",
                    spec.address
                ));
            }
        }
        match ifindex(&spec.host_ifname) {
            Some(i) if i == spec.host_ifindex => Ok(()),
            Some(i) => Err(EndpointError::NotHere(format!(
                "{} has index {i} here, not {}: the plugin and the agent must share a network namespace",
                spec.host_ifname, spec.host_ifindex
            ))),
            None => Err(EndpointError::NotHere(format!(
                "no interface {} in the agent's network namespace: the plugin and the agent must share one",
                spec.host_ifname
            ))),
        }
    }

    fn free_id(&self) -> Result<u16, EndpointError> {
        let used: BTreeSet<u16> = self.records.values().map(|r| r.id).collect();
        (1..=MAX_ID)
            .find(|id| !used.contains(id))
            .ok_or(EndpointError::IdsExhausted)
    }

    fn write_entries(&mut self, r: &EndpointRecord) -> Result<(), EndpointError> {
        self.lxc.put(lxc::encode_pod(&PodEntry {
            ip: r.address,
            id: r.id,
            ifindex: r.host_ifindex,
            mac: r.pod_mac,
            node_mac: r.host_mac,
            sec_id: r.identity,
        }))?;
        self.ipcache
            .put(ipcache::encode_local(r.address, r.identity))?;
        Ok(())
    }

    /// Programs first, then entries: see the module's invariant.
    fn remove_datapath(&mut self, r: &EndpointRecord) -> Result<(), EndpointError> {
        links::detach(&self.bpf_root, &r.host_ifname)?;
        self.lxc.remove(r.address)?;
        self.ipcache.remove_host(r.address)?;
        Ok(())
    }

    fn view(&self, r: &EndpointRecord) -> EndpointView {
        EndpointView {
            record: r.clone(),
            programs: links::attached(&r.host_ifname).unwrap_or_default(),
        }
    }

    /// Serves `spec`: entries written, programs attached and pinned, record
    /// saved; on any failure, whatever was done is undone. Asking again for
    /// the same attachment replaces its endpoint, keeping its id.
    pub fn create(&mut self, spec: EndpointSpec) -> Result<EndpointView, EndpointError> {
        self.check(&spec)?;
        let owner = lash_api::Attachment::new(&spec.container_id, &spec.ifname).owner();
        if let Some(other) = self
            .records
            .values()
            .find(|r| r.address == spec.address && r.owner() != owner)
        {
            return Err(EndpointError::Conflict(format!(
                "address {} is endpoint {}'s ({}/{})",
                spec.address, other.id, other.container_id, other.ifname
            )));
        }
        let id = match self.records.get(&owner) {
            Some(old) => {
                let (old, id) = (old.clone(), old.id);
                self.remove_datapath(&old)?;
                self.records.remove(&owner);
                id
            }
            None => self.free_id()?,
        };
        let record = EndpointRecord {
            id,
            container_id: spec.container_id,
            ifname: spec.ifname,
            address: spec.address,
            host_ifname: spec.host_ifname,
            host_ifindex: spec.host_ifindex,
            host_mac: spec.host_mac,
            pod_mac: spec.pod_mac,
            netns: spec.netns,
            identity: POD_IDENTITY,
            created_unix: unix_now(),
        };
        let done = self.write_entries(&record).and_then(|()| {
            // Tests crash here: entries written, nothing attached or recorded.
            crate::failpoint::hit("endpoint-create-entries-written");
            links::attach(&mut self.ebpf, &self.bpf_root, &record.host_ifname)?;
            self.records.insert(owner.clone(), record.clone());
            self.store.save(&self.records)?;
            Ok(())
        });
        if let Err(e) = done {
            self.records.remove(&owner);
            if let Err(undo) = self.remove_datapath(&record) {
                warn!(endpoint = id, "undoing a failed endpoint create: {undo}");
            }
            return Err(e);
        }
        info!(endpoint = id, address = %record.address, lxc = %record.host_ifname, "endpoint created");
        Ok(self.view(&record))
    }

    /// Removes `owner`'s endpoint; None when it has none.
    pub fn delete(&mut self, owner: &str) -> Result<Option<EndpointView>, EndpointError> {
        let Some(r) = self.records.get(owner).cloned() else {
            return Ok(None);
        };
        let view = self.view(&r);
        self.remove_datapath(&r)?;
        self.records.remove(owner);
        self.store.save(&self.records)?;
        info!(endpoint = r.id, address = %r.address, "endpoint deleted");
        Ok(Some(view))
    }

    pub fn get(&self, owner: &str) -> Option<EndpointView> {
        self.records.get(owner).map(|r| self.view(r))
    }

    pub fn list(&self) -> Vec<EndpointView> {
        let mut v: Vec<EndpointView> = self.records.values().map(|r| self.view(r)).collect();
        v.sort_by_key(|e| e.record.id);
        v
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn summary(&self) -> Summary {
        Summary {
            endpoints: self.records.len(),
            links_pinned: self
                .records
                .values()
                .map(|r| links::pinned_hooks(&self.bpf_root, &r.host_ifname))
                .sum(),
        }
    }

    /// Deletes every endpoint whose owner is not in `keep` (CNI GC); goes on
    /// past a failure and returns the first one after trying all.
    pub fn retain(&mut self, keep: &HashSet<String>) -> Result<Vec<EndpointView>, EndpointError> {
        let stale: Vec<String> = self
            .records
            .keys()
            .filter(|o| !keep.contains(*o))
            .cloned()
            .collect();
        let mut deleted = Vec::new();
        let mut first_err = None;
        for owner in stale {
            match self.delete(&owner) {
                Ok(Some(v)) => deleted.push(v),
                Ok(None) => {}
                Err(e) => {
                    warn!(owner, "GC of an endpoint: {e}");
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(deleted),
        }
    }
}
