//! Loads the kernel programs, creates or reuses the pinned maps, and attaches
//! the socket programs to a cgroup through pinned links.
//!
//! Pinned links are what let the datapath outlive the agent: while the agent
//! restarts, connects to a VIP are still translated from the maps as they were.
//! A new agent attaches its programs next to the old ones, then retires the old
//! links, so there is no moment with nothing attached.

use std::{
    ffi::CString,
    fs,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        CgroupAttachMode, CgroupSockAddr,
    },
    Ebpf, EbpfLoader,
};
use lash_common::maps::{self, MapDef, Sizing};
use thiserror::Error;

/// The object agent/build.rs compiled from ebpf/.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lash.bpf.o"));

/// The socket programs, by the function names in ebpf/src/sock.rs, and the
/// hook each is attached to. The IPv6 hooks serve IPv6 sockets that reach IPv4
/// Services through v4-mapped addresses.
pub const SOCK_PROGRAMS: [(&str, &str); 8] = [
    ("sock4_connect", "connect4"),
    ("sock4_sendmsg", "sendmsg4"),
    ("sock4_recvmsg", "recvmsg4"),
    ("sock4_getpeername", "getpeername4"),
    ("sock6_connect", "connect6"),
    ("sock6_sendmsg", "sendmsg6"),
    ("sock6_recvmsg", "recvmsg6"),
    ("sock6_getpeername", "getpeername6"),
];

/// bpffs magic number (statfs f_type).
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("{path} is not on a bpf filesystem; mount one (mount -t bpf bpf /sys/fs/bpf) or pick another --bpf-root")]
    NotBpffs { path: PathBuf },
    #[error("creating {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mounting bpffs at {path}: {source}")]
    Mount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the eBPF object (maps pinned under {root}): {source}")]
    Load {
        root: PathBuf,
        #[source]
        source: aya::EbpfError,
    },
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("opening cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "pinned map {name} holds {pinned} entries but {wanted} were asked for; \
         run `agent uninstall` (drops the programmed services) to resize"
    )]
    SizeMismatch {
        name: &'static str,
        pinned: u32,
        wanted: u32,
    },
    #[error(
        "pinned map {name} has {pinned:?} byte keys and values, this agent expects {wanted:?}; \
         run `agent uninstall` to replace it"
    )]
    LayoutMismatch {
        name: &'static str,
        pinned: (u32, u32),
        wanted: (u32, u32),
    },
    #[error("pinning link of {name} at {path}: {source}")]
    Pin {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Map sizes, for clusters bigger than the compiled-in defaults.
#[derive(Clone, Copy, Debug)]
pub struct MapSizes {
    /// Capacity of every map whose [`Sizing`] is `LbMapMax`.
    pub lb_map_max: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        MapSizes {
            lb_map_max: maps::LB_MAP_MAX_DEFAULT,
        }
    }
}

impl MapSizes {
    /// The capacity `def` gets under these sizes.
    pub fn of(&self, def: &MapDef) -> u32 {
        match def.sizing {
            Sizing::LbMapMax => self.lb_map_max,
            Sizing::Fixed => def.max_entries,
        }
    }
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: c is a valid C string and st a properly sized out-parameter.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Makes sure `root` exists on a bpffs. Mounts /sys/fs/bpf if the root is below
/// it and nothing is mounted there yet, as a node agent is expected to.
pub fn prepare_bpf_root(root: &Path) -> Result<(), LoadError> {
    let sys_bpf = Path::new("/sys/fs/bpf");
    if root.starts_with(sys_bpf) && !is_bpffs(sys_bpf) {
        let src = CString::new("bpf").expect("no NUL");
        let target = CString::new("/sys/fs/bpf").expect("no NUL");
        // SAFETY: valid C strings; no data argument.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                src.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(LoadError::Mount {
                path: sys_bpf.into(),
                source: std::io::Error::last_os_error(),
            });
        }
    }
    fs::create_dir_all(root.join("links")).map_err(|source| LoadError::CreateDir {
        path: root.into(),
        source,
    })?;
    if !is_bpffs(root) {
        return Err(LoadError::NotBpffs { path: root.into() });
    }
    Ok(())
}

/// The node's settings the programs are loaded with (read-only globals in
/// the object: ebpf/src/config.rs).
#[derive(Clone, Copy, Debug)]
pub struct NodeSettings {
    /// `lash_common::tunnel::ROUTING_*`.
    pub routing: u32,
    /// lash_vxlan's ifindex (tunnel routing), else 0.
    pub tunnel_ifindex: u32,
    /// The prefix length of every node's pod range.
    pub pod_cidr_bits: u32,
}

/// Loads the object with its maps pinned under `root` (reusing pins that exist).
pub fn load(root: &Path, sizes: MapSizes, node: NodeSettings) -> Result<Ebpf, LoadError> {
    prepare_bpf_root(root)?;
    let mut loader = EbpfLoader::new();
    loader.default_map_pin_directory(root);
    loader
        .override_global("LASH_ROUTING", &node.routing, true)
        .override_global("LASH_TUNNEL_IFINDEX", &node.tunnel_ifindex, true)
        .override_global("LASH_POD_CIDR_BITS", &node.pod_cidr_bits, true);
    for def in maps::ALL {
        loader.map_max_entries(def.name, sizes.of(def));
    }
    loader.load(OBJECT).map_err(|source| LoadError::Load {
        root: root.into(),
        source,
    })
}

/// A pinned map is reused as it is, whatever size or layout was asked for;
/// refuse one that differs from the table instead of silently running with
/// another capacity or misreading its bytes.
pub fn check_pinned_maps(root: &Path, sizes: MapSizes) -> Result<(), LoadError> {
    for def in maps::ALL {
        let (name, wanted) = (def.name, sizes.of(def));
        let Some(info) = aya::maps::MapData::from_pin(root.join(name))
            .ok()
            .and_then(|m| m.info().ok())
        else {
            continue;
        };
        if (info.key_size(), info.value_size()) != (def.key_size, def.value_size) {
            return Err(LoadError::LayoutMismatch {
                name,
                pinned: (info.key_size(), info.value_size()),
                wanted: (def.key_size, def.value_size),
            });
        }
        let pinned = Some(info.max_entries());
        if let Some(pinned) = pinned {
            if pinned != wanted {
                return Err(LoadError::SizeMismatch {
                    name,
                    pinned,
                    wanted,
                });
            }
        }
    }
    Ok(())
}

pub fn link_pin_path(root: &Path, hook: &str) -> PathBuf {
    root.join("links").join(hook)
}

/// Attaches every socket program to `cgroup` and pins the links under
/// `root/links/<hook>`, replacing links an earlier agent left there.
pub fn attach_sock_programs(ebpf: &mut Ebpf, root: &Path, cgroup: &Path) -> Result<(), LoadError> {
    for hook in finish_interrupted_hand_overs(root) {
        tracing::warn!(
            hook,
            "finished a link hand-over an earlier agent left half done"
        );
    }
    let cg = fs::File::open(cgroup).map_err(|source| LoadError::Cgroup {
        path: cgroup.into(),
        source,
    })?;
    for (name, hook) in SOCK_PROGRAMS {
        let prog_err = |source| LoadError::Program { name, source };
        let prog: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or(LoadError::Program {
                name,
                source: aya::programs::ProgramError::UnexpectedProgramType,
            })?
            .try_into()
            .map_err(prog_err)?;
        prog.load().map_err(prog_err)?;
        // Through bpf_link (kernel >= 5.7) the kernel takes no flags and always
        // allows several programs per hook, which the hand-over below relies on.
        let link_id = prog
            .attach(&cg, CgroupAttachMode::Single)
            .map_err(prog_err)?;
        let link = prog.take_link(link_id).map_err(prog_err)?;
        let fd_link = FdLink::try_from(link).map_err(|e| LoadError::Pin {
            name,
            path: link_pin_path(root, hook),
            source: Box::new(e),
        })?;

        hand_over(root, hook, name, fd_link)?;
    }
    Ok(())
}

/// Pin path of a link that is replacing the one at `hook` (bpffs refuses
/// names with a dot).
fn new_link_pin_path(root: &Path, hook: &str) -> PathBuf {
    root.join("links").join(format!("{hook}{NEW_SUFFIX}"))
}

const NEW_SUFFIX: &str = "_new";

/// Makes `link` the pinned link of `hook`, retiring the one an earlier agent
/// left there without a moment where neither is attached: the new link is
/// pinned under a temporary name first, then the old one is unpinned (which
/// detaches it), then the new pin takes the final name.
/// [`finish_interrupted_hand_overs`] knows what a crash between the steps leaves.
pub fn hand_over(
    root: &Path,
    hook: &'static str,
    name: &'static str,
    link: FdLink,
) -> Result<(), LoadError> {
    let final_path = link_pin_path(root, hook);
    let tmp_path = new_link_pin_path(root, hook);
    let pin_err = |path: &Path, e: Box<dyn std::error::Error + Send + Sync>| LoadError::Pin {
        name,
        path: path.into(),
        source: e,
    };
    let pinned = link
        .pin(&tmp_path)
        .map_err(|e| pin_err(&tmp_path, Box::new(e)))?;
    crate::failpoint::hit("hand-over-pinned-new");
    if final_path.exists() {
        // Dropping the unpinned old link detaches it.
        if let Ok(old) = PinnedLink::from_pin(&final_path) {
            let _ = old.unpin();
        } else {
            let _ = fs::remove_file(&final_path);
        }
    }
    crate::failpoint::hit("hand-over-retired-old");
    fs::rename(&tmp_path, &final_path).map_err(|e| pin_err(&final_path, Box::new(e)))?;
    drop(pinned);
    Ok(())
}

/// Finishes what an agent that died in the middle of [`hand_over`] left under
/// `root/links`: a `<hook>_new` pin next to the old `<hook>` pin is a new link
/// that never took over (unpinned: the old one keeps serving until this
/// agent's own hand-over); a `<hook>_new` pin alone is a new link whose
/// predecessor was already retired (renamed into place, so the hook never goes
/// without a program). Returns the hooks it touched.
pub fn finish_interrupted_hand_overs(root: &Path) -> Vec<String> {
    let mut touched = Vec::new();
    let Ok(dir) = fs::read_dir(root.join("links")) else {
        return touched;
    };
    for entry in dir.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(hook) = file.strip_suffix(NEW_SUFFIX) else {
            continue;
        };
        let final_path = link_pin_path(root, hook);
        if final_path.exists() {
            match PinnedLink::from_pin(entry.path()) {
                Ok(link) => {
                    let _ = link.unpin();
                }
                Err(_) => {
                    let _ = fs::remove_file(entry.path());
                }
            }
        } else {
            let _ = fs::rename(entry.path(), &final_path);
        }
        touched.push(hook.to_string());
    }
    touched
}

/// Which hooks have a pinned link under `root`.
pub fn attached_hooks(root: &Path) -> Vec<&'static str> {
    SOCK_PROGRAMS
        .iter()
        .filter(|(_, hook)| link_pin_path(root, hook).exists())
        .map(|(_, hook)| *hook)
        .collect()
}

#[derive(Debug, Error)]
pub enum UninstallError {
    #[error(transparent)]
    Running(#[from] crate::lock::LockError),
    #[error("removing {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Detaches the programs and removes every pin under `root`: the node goes back
/// to having no socket load balancing. Refused while an agent runs on `root`
/// (it would re-create what this removes) unless `force`.
pub fn uninstall(root: &Path, state_dir: &Path, force: bool) -> Result<(), UninstallError> {
    if !root.exists() {
        return Ok(());
    }
    // Held until the pins are gone, so no agent can start in between.
    let _lock = match crate::lock::acquire(root, state_dir) {
        Ok(l) => Some(l),
        Err(_) if force => None,
        Err(e) => return Err(e.into()),
    };
    // Every link pin, including a `_new` one an interrupted hand-over left.
    if let Ok(dir) = fs::read_dir(root.join("links")) {
        for entry in dir.flatten() {
            match PinnedLink::from_pin(entry.path()) {
                Ok(link) => {
                    let _ = link.unpin();
                }
                Err(_) => {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }
    // The tc programs' links, one directory per device (unpinning detaches).
    let tc_dirs = [
        crate::endpoints::links::LXC.dir,
        crate::endpoints::links::OVERLAY.dir,
    ];
    for set_dir in tc_dirs {
        if let Ok(dir) = fs::read_dir(root.join(set_dir)) {
            for dev in dir.flatten() {
                for pin in fs::read_dir(dev.path()).into_iter().flatten().flatten() {
                    let _ = fs::remove_file(pin.path());
                }
                let _ = fs::remove_dir(dev.path());
            }
        }
    }
    for def in maps::ALL {
        let _ = fs::remove_file(root.join(def.name));
    }
    let rm = |path: PathBuf| match fs::remove_dir(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(UninstallError::Remove { path, source: e })
        }
        _ => Ok(()),
    };
    rm(root.join("links"))?;
    for set_dir in tc_dirs {
        rm(root.join(set_dir))?;
    }
    rm(root.to_path_buf())
}
