//! The floor for a connect4 program (ebpf/src/floor.rs): one hash lookup of
//! the destination in a copy of lash's lb4_services (same capacity, same
//! entries, so the same table walk and cache footprint), and nothing else.
//! Built at run time (lash_tests::ebpf; the object is no part of the agent) and attached
//! to the no-translation arm's cgroup only while bpf_stats are read, so the
//! arm's own samples stay free of any program.

use std::{net::Ipv4Addr, path::Path};

use anyhow::Context as _;
use aya::{
    maps::{HashMap, Map, MapData},
    programs::{links::CgroupAttachMode, CgroupSockAddr},
    Ebpf, EbpfLoader,
};
use lash_common::{Lb4Key, Lb4Service, LB_LOOKUP_SCOPE_EXT};

/// The floor object, built from ebpf/ (cargo's cache makes a rebuild cheap).
pub fn build() -> anyhow::Result<Vec<u8>> {
    lash_tests::ebpf::object("lash-floor")
}

/// The floor program attached to a cgroup; dropping it drops the Ebpf, which
/// detaches the link and unloads the program.
pub struct Floor {
    _ebpf: Ebpf,
    pub prog_id: u32,
}

impl Floor {
    /// Loads the object with floor_services sized and filled as the pinned
    /// lb4_services under `lash_root`, makes sure the lookup hits (`dst` over
    /// TCP) and attaches it to `cgroup`.
    pub fn attach(
        object: &[u8],
        lash_root: &Path,
        cgroup: &Path,
        dst: Ipv4Addr,
        port: u16,
    ) -> anyhow::Result<Self> {
        let pinned = MapData::from_pin(lash_root.join("lb4_services"))
            .context("opening lash's pinned lb4_services")?;
        let max_entries = pinned.info()?.max_entries();
        let lash_services: HashMap<_, Lb4Key, Lb4Service> =
            HashMap::try_from(Map::from_map_data(pinned)?)?;
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("floor_services", max_entries)
            .load(object)
            .context("loading the floor object")?;
        let mut services: HashMap<_, Lb4Key, Lb4Service> = HashMap::try_from(
            ebpf.map_mut("floor_services")
                .context("no floor_services map")?,
        )?;
        for entry in lash_services.iter() {
            let (k, v) = entry?;
            services.insert(k, v, 0)?;
        }
        let key = Lb4Key {
            address: u32::from(dst).to_be(),
            dport: port.to_be(),
            backend_slot: 0,
            proto: 6,
            scope: LB_LOOKUP_SCOPE_EXT,
            pad: [0; 2],
        };
        services.insert(key, Lb4Service::default(), 0)?;
        let prog: &mut CgroupSockAddr = ebpf
            .program_mut("floor_connect4")
            .context("no floor_connect4 program")?
            .try_into()?;
        prog.load()?;
        let cg = std::fs::File::open(cgroup)
            .with_context(|| format!("opening cgroup {}", cgroup.display()))?;
        prog.attach(&cg, CgroupAttachMode::Single)?;
        let prog_id = prog.info()?.id();
        Ok(Floor {
            _ebpf: ebpf,
            prog_id,
        })
    }
}
