//! The tc programs of one lxc, attached as tcx links and pinned under
//! `<bpf-root>/endpoints/<lxc>/`: `from_container` on the lxc's ingress (what
//! the pod sends), `to_container` on its egress (what the stack delivers to
//! the pod). The pins keep the programs attached when the agent exits; a
//! restarted agent swaps its freshly loaded programs into the same links,
//! so traffic never meets an lxc without a program.

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        links::{FdLink, LinkError, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
        LinkOrder, ProgramError, SchedClassifier, TcAttachType,
    },
    sys::SyscallError,
    Ebpf,
};
use thiserror::Error;

/// The programs of an lxc: (program name, hook).
pub const LXC_PROGRAMS: [(&str, Hook); 2] = [
    ("from_container", Hook::Ingress),
    ("to_container", Hook::Egress),
];

/// The programs of the VXLAN device (tunnel routing).
pub const OVERLAY_PROGRAMS: [(&str, Hook); 2] = [
    ("from_overlay", Hook::Ingress),
    ("to_overlay", Hook::Egress),
];

/// A set of tc programs for one device, and the directory under which each
/// device's links are pinned (`<dir>/<ifname>/<hook>`).
#[derive(Clone, Copy)]
pub struct ProgramSet {
    pub programs: &'static [(&'static str, Hook)],
    /// Under the bpf root.
    pub dir: &'static str,
}

pub const LXC: ProgramSet = ProgramSet {
    programs: &LXC_PROGRAMS,
    dir: "endpoints",
};

pub const OVERLAY: ProgramSet = ProgramSet {
    programs: &OVERLAY_PROGRAMS,
    dir: "overlay",
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    pub const fn as_str(self) -> &'static str {
        match self {
            Hook::Ingress => "ingress",
            Hook::Egress => "egress",
        }
    }

    const fn tc(self) -> TcAttachType {
        match self {
            Hook::Ingress => TcAttachType::Ingress,
            Hook::Egress => TcAttachType::Egress,
        }
    }
}

#[derive(Debug, Error)]
pub enum LinkErr {
    #[error("program {name} is not in the object or not a tc program: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("attaching {name} to {hook} of {ifname}: {source}")]
    Attach {
        name: &'static str,
        hook: &'static str,
        ifname: String,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("pinning the {hook} link of {ifname} at {path}: {source}")]
    Pin {
        hook: &'static str,
        ifname: String,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("removing the {hook} link pin {path}: {source}")]
    Unpin {
        hook: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("asking which programs are attached to {ifname}: {source}")]
    Query {
        ifname: String,
        #[source]
        source: Box<ProgramError>,
    },
}

/// `<bpf-root>/endpoints`, where every lxc's links are pinned.
pub fn endpoints_dir(bpf_root: &Path) -> PathBuf {
    bpf_root.join(LXC.dir)
}

fn pin_path(bpf_root: &Path, set: ProgramSet, ifname: &str, hook: Hook) -> PathBuf {
    bpf_root.join(set.dir).join(ifname).join(hook.as_str())
}

/// Loads the programs of `set` into the kernel (once per agent).
pub fn load(ebpf: &mut Ebpf, set: ProgramSet) -> Result<(), LinkErr> {
    for &(name, _) in set.programs {
        program(ebpf, name)?
            .load()
            .map_err(|source| LinkErr::Program {
                name,
                source: Box::new(source),
            })?;
    }
    Ok(())
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut SchedClassifier, LinkErr> {
    ebpf.program_mut(name)
        .ok_or(LinkErr::Program {
            name,
            source: Box::new(ProgramError::UnexpectedProgramType),
        })?
        .try_into()
        .map_err(|source| LinkErr::Program {
            name,
            source: Box::new(source),
        })
}

fn not_found(e: &LinkError) -> bool {
    matches!(e, LinkError::SyscallError(SyscallError { io_error, .. })
        if io_error.kind() == io::ErrorKind::NotFound)
}

/// Attaches both programs to `ifname` and pins the links. Links an earlier
/// endpoint of the same name left pinned are detached first: they may belong
/// to an interface that no longer exists.
pub fn attach(ebpf: &mut Ebpf, bpf_root: &Path, ifname: &str) -> Result<(), LinkErr> {
    attach_set(ebpf, bpf_root, LXC, ifname)
}

/// [`attach`] for any program set.
pub fn attach_set(
    ebpf: &mut Ebpf,
    bpf_root: &Path,
    set: ProgramSet,
    ifname: &str,
) -> Result<(), LinkErr> {
    detach_set(bpf_root, set, ifname)?;
    for &(name, hook) in set.programs {
        attach_one(ebpf, bpf_root, set, ifname, name, hook)?;
    }
    Ok(())
}

/// A new tcx link of program `name` on `hook` of `ifname`, pinned.
fn attach_one(
    ebpf: &mut Ebpf,
    bpf_root: &Path,
    set: ProgramSet,
    ifname: &str,
    name: &'static str,
    hook: Hook,
) -> Result<(), LinkErr> {
    let dir = bpf_root.join(set.dir).join(ifname);
    std::fs::create_dir_all(&dir).map_err(|e| LinkErr::Pin {
        hook: hook.as_str(),
        ifname: ifname.into(),
        path: dir.clone(),
        source: Box::new(e),
    })?;
    let prog = program(ebpf, name)?;
    let attach_err = attach_error(name, hook, ifname);
    let id = prog
        .attach_with_options(
            ifname,
            hook.tc(),
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(attach_err)?;
    let link = prog.take_link(id).map_err(attach_err)?;
    pin(link, pin_path(bpf_root, set, ifname, hook), ifname, hook)
}

/// The error of attaching program `name` to `hook` of `ifname`, for map_err.
fn attach_error<'a>(
    name: &'static str,
    hook: Hook,
    ifname: &'a str,
) -> impl Fn(ProgramError) -> LinkErr + Copy + 'a {
    move |source| LinkErr::Attach {
        name,
        hook: hook.as_str(),
        ifname: ifname.into(),
        source: Box::new(source),
    }
}

fn pin(link: SchedClassifierLink, path: PathBuf, ifname: &str, hook: Hook) -> Result<(), LinkErr> {
    let pin_err = |source: Box<dyn std::error::Error + Send + Sync>| LinkErr::Pin {
        hook: hook.as_str(),
        ifname: ifname.into(),
        path: path.clone(),
        source,
    };
    let fd = FdLink::try_from(link).map_err(|e| pin_err(Box::new(e)))?;
    fd.pin(&path).map_err(|e| pin_err(Box::new(e)))?;
    Ok(())
}

/// Puts this agent's programs into the links pinned for `ifname` (a restart:
/// the kernel swaps the program in place, the lxc is never without one). A
/// hook without a pinned link gets a fresh one.
pub fn take_over(ebpf: &mut Ebpf, bpf_root: &Path, ifname: &str) -> Result<(), LinkErr> {
    take_over_set(ebpf, bpf_root, LXC, ifname)
}

/// [`take_over`] for any program set.
pub fn take_over_set(
    ebpf: &mut Ebpf,
    bpf_root: &Path,
    set: ProgramSet,
    ifname: &str,
) -> Result<(), LinkErr> {
    for &(name, hook) in set.programs {
        let path = pin_path(bpf_root, set, ifname, hook);
        match PinnedLink::from_pin(&path) {
            Ok(old) => {
                let prog = program(ebpf, name)?;
                let attach_err = attach_error(name, hook, ifname);
                let link =
                    SchedClassifierLink::try_from(FdLink::from(old)).map_err(|e| LinkErr::Pin {
                        hook: hook.as_str(),
                        ifname: ifname.into(),
                        path: path.clone(),
                        source: Box::new(e),
                    })?;
                let id = prog.attach_to_link(link).map_err(attach_err)?;
                // The pin keeps the link; our handle may go.
                drop(prog.take_link(id).map_err(attach_err)?);
            }
            Err(e) if not_found(&e) => attach_one(ebpf, bpf_root, set, ifname, name, hook)?,
            Err(e) => {
                return Err(LinkErr::Pin {
                    hook: hook.as_str(),
                    ifname: ifname.into(),
                    path,
                    source: Box::new(e),
                })
            }
        }
    }
    Ok(())
}

/// Unpins (and so detaches) the links of `ifname`; what is already gone is
/// not an error.
pub fn detach(bpf_root: &Path, ifname: &str) -> Result<(), LinkErr> {
    detach_set(bpf_root, LXC, ifname)
}

/// [`detach`] for any program set.
pub fn detach_set(bpf_root: &Path, set: ProgramSet, ifname: &str) -> Result<(), LinkErr> {
    for &(_, hook) in set.programs {
        let path = pin_path(bpf_root, set, ifname, hook);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(LinkErr::Unpin {
                    hook: hook.as_str(),
                    path,
                    source,
                })
            }
        }
    }
    let _ = std::fs::remove_dir(bpf_root.join(set.dir).join(ifname));
    Ok(())
}

/// How many of `ifname`'s links are pinned.
pub fn pinned_hooks(bpf_root: &Path, ifname: &str) -> usize {
    LXC_PROGRAMS
        .iter()
        .filter(|(_, hook)| pin_path(bpf_root, LXC, ifname, *hook).exists())
        .count()
}

/// Names of the lxcs with a pin directory.
pub fn pinned_ifnames(bpf_root: &Path) -> Vec<String> {
    std::fs::read_dir(endpoints_dir(bpf_root))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What the kernel has attached to `ifname` now, as `hook:program` (tcx
/// links only, whoever made them).
pub fn attached(ifname: &str) -> Result<Vec<String>, LinkErr> {
    let mut out = Vec::new();
    for hook in [Hook::Ingress, Hook::Egress] {
        let (_, progs) =
            SchedClassifier::query_tcx(ifname, hook.tc()).map_err(|source| LinkErr::Query {
                ifname: ifname.into(),
                source: Box::new(source),
            })?;
        for p in progs {
            let name = p.name_as_str().unwrap_or("?").to_owned();
            out.push(format!("{}:{name}", hook.as_str()));
        }
    }
    Ok(out)
}
