//! The floor for a connect4 program (ebpf/src/floor.rs): one hash lookup of
//! the destination, keyed and sized as lb4_services, and nothing else.
//! Built here at run time (the object is no part of the agent) and attached
//! to the no-translation arm's cgroup only while bpf_stats are read, so the
//! arm's own samples stay free of any program.

#[path = "../../../ebpf/cargo_cmd.rs"]
mod cargo_cmd;

use std::{net::Ipv4Addr, path::Path};

use anyhow::{bail, Context as _};
use aya::{
    maps::HashMap,
    programs::{links::CgroupAttachMode, CgroupSockAddr},
    Ebpf,
};
use lash_common::{Lb4Key, Lb4Service, LB_LOOKUP_SCOPE_EXT};

/// Builds the floor object (cargo's cache makes a rebuild cheap) and returns
/// its bytes.
pub fn build() -> anyhow::Result<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target_dir = root.join("target/ebpf-floor");
    let mut cmd =
        cargo_cmd::command(&root.join("ebpf"), &target_dir).map_err(anyhow::Error::msg)?;
    let status = cmd.status().context("running cargo for ebpf/")?;
    if !status.success() {
        bail!("building ebpf/ for the floor program failed ({status})");
    }
    let obj = cargo_cmd::object(&target_dir, "lash-floor");
    std::fs::read(&obj).with_context(|| format!("reading {}", obj.display()))
}

/// The floor program attached to a cgroup; dropping it drops the Ebpf, which
/// detaches the link and unloads the program.
pub struct Floor {
    _ebpf: Ebpf,
    pub prog_id: u32,
}

impl Floor {
    /// Loads the object, fills the one entry its lookup will hit (`dst` over
    /// TCP) and attaches it to `cgroup`.
    pub fn attach(object: &[u8], cgroup: &Path, dst: Ipv4Addr, port: u16) -> anyhow::Result<Self> {
        let mut ebpf = Ebpf::load(object).context("loading the floor object")?;
        let mut services: HashMap<_, Lb4Key, Lb4Service> = HashMap::try_from(
            ebpf.map_mut("floor_services")
                .context("no floor_services map")?,
        )?;
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
